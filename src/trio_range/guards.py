"""Limits checked before a request reaches its view: overload and oversized requests.

They run as a Quart ``before_request`` hook, so their answers go through the app's error pages
and after-request hooks (the proxy's Via included), and they apply whether the app runs under
``trio-range`` or under ``hypercorn -k trio``.
"""

from __future__ import annotations

import logging

from quart import Response, request
from werkzeug.routing import RequestRedirect

from trio_range.config import ServerConfig
from trio_range.connection import RangeApp
from trio_range.server_common import not_found, plain

log = logging.getLogger("trio_range")

# Requests that must answer even when the server is saturated: orchestrators probe health and
# operators read statistics precisely then.
_EXEMPT_FROM_OVERLOAD = frozenset({"/healthz"})


def request_head_bytes(
    method: str, raw_path: bytes, query: bytes, headers: list[tuple[bytes, bytes]]
) -> int:
    """The size of the request line and header block as sent (CRLFs and ": " included)."""
    target = len(raw_path) + (len(query) + 1 if query else 0)
    line = len(method) + 1 + target + len(" HTTP/1.1\r\n")
    return line + sum(len(name) + len(value) + 4 for name, value in headers) + 2


def install_request_guards(app: RangeApp, config: ServerConfig) -> None:
    """Answer 414/431 to oversized requests and 503 with Retry-After past ``max_streams``."""
    exempt = _EXEMPT_FROM_OVERLOAD | {config.stats_path, config.metrics_path}

    @app.before_request
    async def guard() -> Response | None:
        # Werkzeug's router answers a non-canonical path (dot segments, "//") with a redirect
        # whose Location echoes the path: such a path names nothing we serve, so it is not
        # found. Only the harmless redirect that appends a slash ("/media" -> "/media/") stays.
        redirect = request.routing_exception
        if isinstance(redirect, RequestRedirect) and not redirect.new_url.endswith(
            request.path + "/"
        ):
            log.warning("404: non-canonical path")
            return not_found()
        scope = request.scope
        raw_path: bytes = scope.get("raw_path") or b""
        query: bytes = scope.get("query_string", b"")
        # h11 enforces its limit only across reads: a header block that arrives in one read
        # passes whatever its size (REFERENCES.md), so the limit is checked here again.
        if len(raw_path) + len(query) > config.max_header_bytes:
            log.warning("414: request target of %d bytes", len(raw_path) + len(query))
            return plain(414, "URI Too Long")
        size = request_head_bytes(request.method, raw_path, query, list(scope["headers"]))
        if size > config.max_header_bytes:
            log.warning("431: request head of %d bytes", size)
            return plain(431, "Request Header Fields Too Large")
        # in_flight counts this request too.
        if app.in_flight > config.max_streams and request.path not in exempt:
            log.warning(
                "503: %d requests in flight (max_streams %d)", app.in_flight - 1, config.max_streams
            )
            return plain(503, "Service Unavailable", Retry_After="1")
        return None
