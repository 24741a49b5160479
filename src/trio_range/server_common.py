"""What both servers share: health, statistics, error pages and the access log.

Error responses are short plain-text bodies that name the status, never a path or a traceback.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from quart import Response
from werkzeug.exceptions import HTTPException

from trio_range.connection import Exchange, RangeApp
from trio_range.stats import MemoryStatsStore

access_log = logging.getLogger("trio_range.access")
log = logging.getLogger("trio_range")


def plain(status: int, text: str, **headers: str) -> Response:
    response = Response(text + "\n", status=status, content_type="text/plain; charset=utf-8")
    for name, value in headers.items():
        response.headers[name.replace("_", "-")] = value
    return response


def not_found() -> Response:
    return plain(404, "Not Found")


def json_response(value: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(value, separators=(",", ":")), status=status, content_type="application/json"
    )


class AccessLogObserver:
    """Writes one structured line per finished exchange, then tells the next observer."""

    def __init__(self, inner: MemoryStatsStore, enabled: bool) -> None:
        self.inner = inner
        self.enabled = enabled

    def response_started(self, exchange: Exchange) -> None:
        self.inner.response_started(exchange)

    def exchange_finished(self, exchange: Exchange) -> None:
        self.inner.exchange_finished(exchange)
        if self.enabled:
            duration = (exchange.finished_at or exchange.started_at) - exchange.started_at
            access_log.info(
                "method=%s path=%s status=%d range=%s range_outcome=%s bytes=%d "
                "duration_ms=%.1f outcome=%s%s",
                exchange.method,
                json.dumps(exchange.path),
                exchange.status,
                json.dumps(exchange.range_header),
                exchange.range_outcome,
                exchange.bytes_sent,
                duration * 1000,
                exchange.outcome,
                f" detail={json.dumps(exchange.detail)}" if exchange.detail else "",
            )


def install_common_routes(app: RangeApp, *, role: str, access_log: bool) -> MemoryStatsStore:
    """Add /healthz, /stats, the error pages and the statistics observer to ``app``."""
    stats = MemoryStatsStore(role=role)
    app.observer = AccessLogObserver(stats, access_log)
    app.url_map.merge_slashes = False  # "//x" is not found, never redirected with the path echoed
    app.extensions["trio_range.stats"] = stats

    @app.route("/healthz", methods=["GET", "HEAD"], provide_automatic_options=False)
    async def healthz() -> Response:
        return plain(200, "ok")

    @app.route("/stats", methods=["GET", "HEAD"], provide_automatic_options=False)
    async def stats_view() -> Response:
        return json_response(stats.snapshot())

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        code = error.code or 500
        headers = {}
        if code == 405:
            headers["Allow"] = "GET, HEAD"
        return plain(code, error.name, **headers)

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        log.exception("unexpected error")
        return plain(500, "Internal Server Error")

    return stats
