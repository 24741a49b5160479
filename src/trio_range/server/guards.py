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
from trio_range.server.app import RangeApp
from trio_range.server.common import not_found, plain

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
        scope = request.scope
        raw_path: bytes = scope.get("raw_path") or b""
        query: bytes = scope.get("query_string", b"")
        names = [name.lower() for name, _ in scope["headers"]]
        if b"transfer-encoding" in names and b"content-length" in names:
            # RFC 9112 §6.1: such a message "ought to be handled as an error", and the server
            # "MUST close the connection after responding": the bytes after the body are a
            # request smuggled past whoever framed the message by its Content-Length.
            log.warning("400: both Transfer-Encoding and Content-Length")
            return plain(400, "Bad Request", Connection="close")
        # h11 enforces its limit only across reads: a header block that arrives in one read
        # passes whatever its size (docs/references.md), so the limit is checked here again.
        if len(raw_path) + len(query) > config.max_header_bytes:
            log.warning("414: request target of %d bytes", len(raw_path) + len(query))
            return plain(414, "URI Too Long")
        size = request_head_bytes(request.method, raw_path, query, list(scope["headers"]))
        if size > config.max_header_bytes:
            log.warning("431: request head of %d bytes", size)
            return plain(431, "Request Header Fields Too Large")
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
            return plain(503, "Service Unavailable", Retry_After="1")
        return None
