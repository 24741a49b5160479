"""The Quart-Trio app class of both servers: requests served by :class:`RangeHTTPConnection`."""

from __future__ import annotations

from typing import Any

from quart.sessions import SecureCookieSessionInterface

from trio_range.server._quart_hooks import QuartFastPath
from trio_range.server.connection import RangeHTTPConnection
from trio_range.server.exchange import ExchangeObserver, NullObserver


class _NoSessions(SecureCookieSessionInterface):
    """No sessions: one shared read-only null session, never saved.

    Stock Quart builds a null session object for every request of an app without a secret
    key (2 % of a small range request's CPU, profiled). Writing to it raises, so one is enough.
    """

    def __init__(self) -> None:
        self._null = self.null_session_class()

    async def open_session(self, app: Any, request: Any) -> Any:
        return self._null

    async def save_session(self, app: Any, session: Any, response: Any) -> None:
        return None


class RangeApp(QuartFastPath):
    """A QuartTrio app whose requests run in :class:`RangeHTTPConnection`, dispatched without
    the steps nothing registered needs (:class:`~trio_range.server._quart_hooks.QuartFastPath`)."""

    asgi_http_class = RangeHTTPConnection
    session_interface = _NoSessions()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No /static/<path> route: the package's static files are served by their own routes,
        # and on the proxy every other path belongs to the upstream.
        kwargs.setdefault("static_folder", None)
        super().__init__(*args, **kwargs)
        # Quart cuts every response longer than RESPONSE_TIMEOUT (60 s by default); streams of
        # media legitimately last longer. RangeHTTPConnection ignores it; None documents that.
        self.config["RESPONSE_TIMEOUT"] = None
        self.observer: ExchangeObserver = NullObserver()
        # Requests being handled now (trio-safe: changed only synchronously).
        self.in_flight = 0
