"""The proxy's one upstream: an HTTP client held for the app's lifetime.

The client API is httpx's (the ``httpx2`` package): its ``Request``, ``Response`` and exception
classes, over a transport of our own (transport.py, pool.py; docs/upstream-client.md says why).
This module, transport.py and pool.py are the only ones that import the client library, and
:func:`map_upstream_errors` is the one place where its exceptions become ours, for the header
phase and the body alike.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any

import httpx2 as httpx
import trio

from trio_range.config import ProxyConfig
from trio_range.errors import StreamAborted, UpstreamError, UpstreamTimeout
from trio_range.proxy.pool import ConnectionPool
from trio_range.proxy.transport import UpstreamBody, UpstreamTransport

log = logging.getLogger("trio_range.proxy")

Response = httpx.Response


class UpstreamUnavailable(UpstreamError):
    """No pool connection became free in time: the proxy itself is saturated."""

    status_hint = 503


def _error_kind(error: Exception) -> str:
    if isinstance(error, httpx.TimeoutException):
        return "timeout"
    if isinstance(error, httpx.ConnectError):
        return "connect"
    return "truncated"


class map_upstream_errors:  # lower case: used like the function it replaced
    """Translate the client library's failures into our errors, counting each in the stats.

    Before the response head (``in_body`` False): no free pool connection is
    UpstreamUnavailable (503), a timeout UpstreamTimeout (504), anything else UpstreamError
    (502). In the body: StreamAborted, so the client connection is aborted and the client sees
    a broken transfer, not a short one that looks complete.

    A class rather than a ``@contextmanager`` generator: it is entered twice per relayed
    request, and the generator's machinery was ten Python calls each time.
    """

    __slots__ = ("_in_body", "_stats_error")

    def __init__(self, stats_error: Any = None, *, in_body: bool = False) -> None:
        self._stats_error = stats_error
        self._in_body = in_body

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        if isinstance(error, httpx.HTTPError):
            raise self._mapped(error) from error

    def _mapped(self, error: httpx.HTTPError) -> UpstreamError | StreamAborted:
        if isinstance(error, httpx.PoolTimeout) and not self._in_body:
            return UpstreamUnavailable(f"no upstream connection free: {error!r}")
        kind = _error_kind(error)
        if self._stats_error is not None:
            self._stats_error(kind)
        if self._in_body:
            return StreamAborted(f"upstream body {kind}: {type(error).__name__}: {error}")
        if kind == "timeout":
            return UpstreamTimeout(f"upstream too slow: {type(error).__name__}")
        return UpstreamError(f"upstream failed: {type(error).__name__}: {error}")


def _has_host(fields: Sequence[tuple[str, str]]) -> bool:
    if fields and fields[0][0].lower() == "host":
        return True  # the relay's own order (request_headers_for_upstream): no scan
    return any(name.lower() == "host" for name, _ in fields)


class Upstream:
    """The pooled connections to the configured upstream; enter it with ``async with``.

    Requests go straight to httpx's transport (its connection pool), not through an
    ``AsyncClient``. The client layer would add a cookie jar shared by every relay, so one
    client's upstream cookies would be sent on every other client's requests, plus
    redirect, auth and event-hook steps a proxy never uses (6 % of a relayed small request's
    Python calls).
    """

    def __init__(self, config: ProxyConfig) -> None:
        self.base_url = config.upstream.rstrip("/")
        # Parsed once (httpx's URL parser was 15 % of a small request's client CPU).
        self._host = httpx.URL(self.base_url).netloc.decode("ascii")
        self.response_timeout_s = config.response_timeout_s
        self._transport = UpstreamTransport(
            self.base_url,
            pool_size=config.pool_size,
            keep_alive_s=config.upstream_keep_alive_s,
            connect_timeout_s=config.connect_timeout_s,
            read_timeout_s=config.read_timeout_s,
            pool_timeout_s=config.pool_timeout_s,
        )

    @property
    def pool(self) -> ConnectionPool:
        """The connection pool (its ``requests``, ``idle`` and ``active`` are public)."""
        return self._transport.pool

    async def __aenter__(self) -> Upstream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Synchronous: idle connections close now, busy ones when their response closes.
        await self._transport.aclose()

    def open_connections(self) -> int:
        """Connections the pool holds now (idle, busy or connecting)."""
        return self._transport.pool.open_count()

    async def open(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        *,
        stats_error: Any = None,
    ) -> httpx.Response:
        """Send the request and return once the response head arrived (body not read).

        The caller owns the response and must ``aclose`` it. A request that fails on a reused
        connection before any response byte is retried once on a new one (by the transport).
        """
        # The head is built from these texts at once (request_head.py): no httpx.Request.
        if not _has_host(headers):
            # What httpx adds to a request built from content; the relay's come with one first.
            headers = [("Host", self._host), *headers]
        # The deadline covers the pool wait, connect, send and the response head. Cancelling
        # anywhere there is safe: the transport's lease ends in a finally (pool.py). A plain
        # scope: trio.fail_after is the same scope inside a generator context manager.
        deadline = trio.current_time() + self.response_timeout_s
        with trio.CancelScope(deadline=deadline) as head:
            with map_upstream_errors(stats_error):
                # The target exactly as the client sent it (httpx would remove dot segments).
                return await self._transport.open_response(method, target, headers, deadline)
        assert head.cancelled_caught  # returned above otherwise
        if stats_error is not None:
            stats_error("timeout")
        raise UpstreamTimeout(f"no response head within {self.response_timeout_s} s")


async def relay_body(
    response: httpx.Response, *, stats_error: Any = None, splice: bool = False
) -> AsyncGenerator[Any]:
    """The upstream body, chunk by chunk, untouched (no decoding).

    With ``splice`` (the client side takes kernel regions), a Content-Length body from a
    plain-TCP upstream comes as :class:`~trio_range.server.splice_region.SpliceRegion` items
    the server moves with ``splice(2)``. A body that fails or ends early raises StreamAborted
    (:func:`map_upstream_errors`; a spliced region raises it in the server's send).
    """
    stream = response.stream
    with map_upstream_errors(stats_error, in_body=True):
        try:
            if isinstance(stream, UpstreamBody):
                # Each upstream read is relayed as it arrives (no chunk size): a slow upstream
                # streams.
                items: Any = stream.relay_items(splice=splice, on_failure=stats_error)
            else:
                items = response.aiter_raw()
            try:  # aclosing(items), without its context manager's three calls a request
                async for item in items:
                    yield item
            finally:
                await items.aclose()
        finally:
            await response_closer(response)()


def response_closer(response: httpx.Response) -> Callable[[], Awaitable[None]]:
    """What closes ``response``: for our transport's body, its own ``aclose`` (idempotent; it
    ends the lease), without httpx's ``Response.aclose`` wrapper (a context manager per call,
    a tenth of a small body's relay)."""
    stream = response.stream
    return stream.aclose if isinstance(stream, UpstreamBody) else response.aclose
