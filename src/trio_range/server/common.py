"""What both servers share: health, statistics, error pages and the access log.

Error responses are short plain-text bodies that name the status, never a path or a traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterable, Iterable
from typing import Any

from quart import Response
from werkzeug.exceptions import HTTPException

from trio_range.config import ServerConfig
from trio_range.server._quart_hooks import bare_response
from trio_range.server._werkzeug_hooks import headers_of
from trio_range.server.app import RangeApp
from trio_range.server.exchange import Exchange
from trio_range.serving_loop_settings import plain_hypercorn_note
from trio_range.stats.factory import make_store, run_store_with_app
from trio_range.stats.routes import install_stats_routes
from trio_range.stats.store import StatsStore

access_log = logging.getLogger("trio_range.access")
log = logging.getLogger("trio_range")


def plain(status: int, text: str, **headers: str) -> Response:
    response = Response(text + "\n", status=status, content_type="text/plain; charset=utf-8")
    for name, value in headers.items():
        response.headers[name.replace("_", "-")] = value
    return response


class FieldsResponse(Response):
    """A response whose fields are exactly those given (:func:`fields_response`)."""

    # No Content-Type of Quart's (text/html) where the fields name none (a 304).
    default_mimetype = None  # type: ignore[assignment]


def fields_response(
    status: int,
    fields: Iterable[tuple[str, str]],
    body: AsyncIterable[object] | None,
    response_class: type[FieldsResponse] = FieldsResponse,
) -> Response:
    """A response whose header fields are exactly ``fields``; ``body`` its items, or None.

    ``Response(bytes)`` would add a Content-Length of its own and ``Response`` a Content-Type,
    which then had to be deleted field by field (about 20 Python calls per small range
    request, issue 13): here the fields go in once, checked as Werkzeug's ``Headers.add``
    checks them (server/_werkzeug_hooks.py).
    A body-less answer (HEAD, 304) passes None, never ``b""``: its Content-Length announces
    the GET's length, not 0. ``body`` is async: Quart iterates a sync one with asyncio only.
    """
    if body is None:
        # Quart's body of bytes, given as a body: Response(b"") would set Content-Length: 0,
        # and an empty list would go through Quart's asyncio-only sync-iterable wrapper.
        body = response_class.data_body_class(b"")
    return bare_response(response_class, body, status, headers_of(fields))


def not_found() -> Response:
    return plain(404, "Not Found")


def json_response(value: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(value, separators=(",", ":")), status=status, content_type="application/json"
    )


class ExchangeRecorder:
    """The app's observer: counts each exchange in the store and writes its access log line.

    Requests to the monitoring endpoints (/healthz, the stats and metrics paths, the dashboard's
    script) are logged but not counted: they describe the server, not its traffic, and a
    dashboard polling every second would otherwise chart itself.
    """

    __slots__ = ("access_log", "store", "uncounted_paths", "uncounted_prefix")

    def __init__(
        self,
        store: StatsStore,
        *,
        access_log: bool,
        uncounted_paths: frozenset[str] = frozenset(),
        uncounted_prefix: str | None = None,
    ) -> None:
        self.store = store
        self.access_log = access_log
        self.uncounted_paths = uncounted_paths
        self.uncounted_prefix = uncounted_prefix

    def _counted(self, exchange: Exchange) -> bool:
        path = exchange.path
        if path in self.uncounted_paths:
            return False
        return self.uncounted_prefix is None or not path.startswith(self.uncounted_prefix)

    def response_started(self, exchange: Exchange) -> None:
        if self._counted(exchange):
            self.store.response_started(exchange)

    def exchange_finished(self, exchange: Exchange) -> None:
        if self._counted(exchange):
            self.store.exchange_finished(exchange)
        if self.access_log:
            duration = (exchange.finished_at or exchange.started_at) - exchange.started_at
            access_log.info(
                "method=%s path=%s status=%d range=%s range_outcome=%s bytes=%d "
                "duration_ms=%.1f outcome=%s%s%s",
                exchange.method,
                json.dumps(exchange.path),
                exchange.status,
                json.dumps(exchange.range_header),
                exchange.range_outcome,
                exchange.bytes_sent,
                duration * 1000,
                exchange.outcome,
                f" cache={exchange.cache}" if exchange.cache else "",
                f" detail={json.dumps(exchange.detail)}" if exchange.detail else "",
            )


def install_common_routes(
    app: RangeApp,
    *,
    role: str,
    access_log: bool,
    config: ServerConfig | None = None,
    store: StatsStore | None = None,
) -> StatsStore:
    """Add /healthz, statistics, metrics, the error pages and the observer to ``app``.

    Served by plain Hypercorn rather than ``serve_app``, the app logs at start-up which
    settings do nothing there (``serving_loop_settings.plain_hypercorn_note``).

    ``config`` defaults to ``app.config["TRIO_RANGE"]`` (its stats_path, metrics_path and
    stats_token); ``store`` to the one ``config.stats_backend`` names (``make_store``). Returns
    the store, which the proxy also feeds (upstream requests and errors, its connections gauge).
    """
    if config is None:
        found = app.config.get("TRIO_RANGE")
        config = found if isinstance(found, ServerConfig) else ServerConfig()
    stats = store if store is not None else make_store(config, role)
    run_store_with_app(app, stats)  # a shared store's pusher lives in the app's lifespan
    app.observer = ExchangeRecorder(
        stats,
        access_log=access_log,
        uncounted_paths=frozenset(
            path for path in ("/healthz", config.stats_path, config.metrics_path) if path
        ),
        uncounted_prefix=config.stats_path + "/" if config.stats_path else None,
    )
    app.url_map.merge_slashes = False  # "//x" is not found, never redirected with the path echoed
    app.extensions["trio_range.stats"] = stats

    @app.before_serving
    async def note_settings_plain_hypercorn_ignores() -> None:
        # serve_app (trio-range origin, proxy, demo) registers its connections before the
        # lifespan starts. Without them Hypercorn's own loop serves the app and some settings
        # do nothing: say so once, at WARNING, as nothing configures our logger under
        # Hypercorn and Python's last-resort handler prints WARNING and above only.
        if "trio_range.connections" not in app.extensions:
            log.warning("%s", plain_hypercorn_note(config))

    @app.route("/healthz", methods=["GET", "HEAD"], provide_automatic_options=False)
    async def healthz() -> Response:
        return plain(200, "ok")

    install_stats_routes(app, stats, config)

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
