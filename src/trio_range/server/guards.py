"""Limits checked before a request reaches its view: overload and oversized requests.

What a request head alone earns (400, 414, 431) is decided by :mod:`trio_range.http.limits`;
this module is its Quart glue, and holds the checks that need Quart's router or the app's
state (non-canonical paths, ``max_streams``). They run as a Quart ``before_request`` hook, so
their answers go through the app's error pages and after-request hooks (the proxy's Via
included), and they apply whether the app runs under ``trio-range`` or ``hypercorn -k trio``.
"""

from __future__ import annotations

import logging

from quart import Response
from werkzeug.routing import RequestRedirect

from trio_range.config import ServerConfig
from trio_range.http.limits import check_request_head
from trio_range.server._quart_hooks import current_request
from trio_range.server.app import RangeApp
from trio_range.server.client_limit import ForwardedClientLimit
from trio_range.server.common import not_found, plain
from trio_range.server.exchange import current_exchange

log = logging.getLogger("trio_range")

# Requests that must answer even when the server is saturated: orchestrators probe health and
# operators read statistics precisely then.
_EXEMPT_FROM_OVERLOAD = frozenset({"/healthz"})


def install_request_guards(app: RangeApp, config: ServerConfig) -> None:
    """Refuse bad request heads (400, 414, 431), answer non-canonical paths (404, 308), and
    refuse past ``max_streams`` or, behind a trusted proxy, ``max_connections_per_client``
    (503 with Retry-After)."""
    exempt = _EXEMPT_FROM_OVERLOAD | {config.stats_path, config.metrics_path}
    per_client = ForwardedClientLimit(config)

    def refused(limit: str) -> None:
        store = app.extensions.get("trio_range.stats")
        if store is not None:
            store.record_refusal(limit)

    @app.before_request
    async def guard() -> Response | None:
        # The request itself, looked up once: each attribute read through Quart's proxy is
        # a context lookup of its own (about 20 Python calls per request here, issue 13).
        request = current_request()
        scope = request.scope
        raw_path: bytes = scope.get("raw_path") or b""
        query: bytes = scope.get("query_string", b"")
        refusal = check_request_head(
            request.method, raw_path, query, scope["headers"], config.max_header_bytes
        )
        if refusal is not None:
            log.warning("%s", refusal.log_message)
            return plain(refusal.status, refusal.reason, **dict(refusal.headers))
        redirect = request.routing_exception
        if isinstance(redirect, RequestRedirect):
            # Werkzeug's router answers a non-canonical path (dot segments, "//") with a
            # redirect whose Location echoes the path: such a path names nothing we serve.
            if not redirect.new_url.endswith(request.path + "/"):
                log.warning("404: non-canonical path")
                return not_found()
            # The slash-appending redirect ("/media" -> "/media/") stays, but not Werkzeug's
            # page, which names this server by the Host it was asked for: behind a proxy, the
            # internal address. The raw target is used: a decoded path could carry CR/LF.
            location = raw_path.decode("latin-1") + "/"
            if query:
                location += "?" + query.decode("latin-1")
            return plain(308, "Permanent Redirect", Location=location)
        # in_flight counts this request too.
        if app.in_flight > config.max_streams and request.path not in exempt:
            log.warning(
                "503: %d requests in flight (max_streams %d)", app.in_flight - 1, config.max_streams
            )
            refused("max_streams")
            return plain(503, "Service Unavailable", Retry_After="1")
        if per_client.active and request.path not in exempt:
            client = per_client.admit(scope, current_exchange())
            if client is not None:
                log.warning(
                    "503: %s has %d requests in flight through a trusted proxy "
                    "(max_connections_per_client)",
                    client,
                    per_client.limit,
                )
                refused("max_connections_per_client")
                return plain(503, "Too Many Connections From This Client", Retry_After="1")
        return None
