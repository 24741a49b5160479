"""The proxy's one upstream: an HTTP client held for the app's lifetime.

This module and ``_httpx_hooks`` are the only ones that import the HTTP client library, and
:func:`map_upstream_errors` is the one place where its exceptions become ours, for the header
phase and the body alike, as httpcore itself does it.

The client is httpx2 (httpx's maintained fork, same API): httpcore 1.0.9, under httpx 0.28.1,
leaks a pool slot for good when a request is cancelled while it waits for a new connection
(httpcore issue 1093), and a proxy cancels requests all the time, since every client
disconnect cancels its relay. httpcore2 reclaims those connections; docs/design.md records the
measurement that chose it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import AsyncExitStack, aclosing, contextmanager
from typing import Any, cast

import httpx2 as httpx
import trio

from trio_range.config import ProxyConfig
from trio_range.errors import StreamAborted, UpstreamError, UpstreamTimeout
from trio_range.proxy._httpx_hooks import (
    UPSTREAM_READ_BYTES,
    pool_connection_count,
    set_upstream_read_size,
)

log = logging.getLogger("trio_range.proxy")

set_upstream_read_size(UPSTREAM_READ_BYTES)

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


@contextmanager
def map_upstream_errors(stats_error: Any = None, *, in_body: bool = False) -> Iterator[None]:
    """Translate the client library's failures into our errors, counting each in the stats.

    Before the response head (``in_body`` False): no free pool connection is
    UpstreamUnavailable (503), a timeout UpstreamTimeout (504), anything else UpstreamError
    (502). In the body: StreamAborted, so the client connection is aborted and the client sees
    a broken transfer, not a short one that looks complete.
    """
    try:
        yield
    except httpx.HTTPError as error:
        if isinstance(error, httpx.PoolTimeout) and not in_body:
            raise UpstreamUnavailable(f"no upstream connection free: {error!r}") from error
        kind = _error_kind(error)
        if stats_error is not None:
            stats_error(kind)
        if in_body:
            raise StreamAborted(f"upstream body {kind}: {type(error).__name__}: {error}") from error
        if kind == "timeout":
            raise UpstreamTimeout(f"upstream too slow: {type(error).__name__}") from error
        raise UpstreamError(f"upstream failed: {type(error).__name__}: {error}") from error


def _is_stale_connection(error: Exception) -> bool:
    # An upstream may close an idle keep-alive connection just as we reuse it (nginx after its
    # keepalive_timeout): the request fails before any response byte arrived.
    return isinstance(error, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError)


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
        self.response_timeout_s = config.response_timeout_s
        self._stack = AsyncExitStack()
        self._transport = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(
                max_connections=config.pool_size, max_keepalive_connections=config.pool_size
            ),
            retries=0,
        )
        self._timeouts = httpx.Timeout(
            connect=config.connect_timeout_s,
            read=config.read_timeout_s,
            write=config.read_timeout_s,
            pool=config.pool_timeout_s,
        ).as_dict()

    async def __aenter__(self) -> Upstream:
        await self._stack.enter_async_context(self._transport)
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Shielded, as every cleanup: closing the pool must finish even when the app's
        # lifespan is being cancelled, or its connections are left to the garbage collector.
        with trio.CancelScope(shield=True):
            await self._stack.aclose()

    def open_connections(self) -> int:
        """Connections the pool holds now (idle or busy)."""
        return pool_connection_count(self._transport)

    async def open(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        *,
        stats_error: Any = None,
    ) -> httpx.Response:
        """Send the request and return once the response head arrived (body not read).

        The caller owns the response and must ``aclose`` it. A GET or HEAD that fails on a
        reused connection before any response byte is retried once on a fresh one.
        """
        request = httpx.Request(
            method,
            self.base_url + target,
            # As the bytes they arrived as: field values may carry obs-text (RFC 9110 §5.5),
            # which httpx refuses in str headers.
            headers=[(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers],
            extensions={
                # The target exactly as the client sent it: httpx would remove dot segments.
                "target": target.encode("latin-1"),
                "timeout": self._timeouts,
            },
        )
        try:
            # The deadline covers the pool wait, connect, send and the response head. Cancelling
            # there is safe with httpcore2, which reclaims the half-made connection.
            with trio.fail_after(self.response_timeout_s), map_upstream_errors(stats_error):
                try:
                    response = await self._transport.handle_async_request(request)
                except httpx.TimeoutException:
                    raise
                except httpx.HTTPError as error:
                    if not _is_stale_connection(error):
                        raise
                    log.info("retrying %s %s once after %r", method, target, error)
                    response = await self._transport.handle_async_request(request)
        except trio.TooSlowError:
            if stats_error is not None:
                stats_error("timeout")
            raise UpstreamTimeout(f"no response head within {self.response_timeout_s} s") from None
        response.request = request
        return response


async def relay_body(response: httpx.Response, *, stats_error: Any = None) -> AsyncGenerator[bytes]:
    """The upstream body, chunk by chunk, untouched (no decoding).

    A body that fails or ends early raises StreamAborted (:func:`map_upstream_errors`).
    """
    # No chunk_size: each upstream read is relayed as it arrives, so a slow upstream streams
    # instead of being buffered up to a chunk size.
    chunks = cast(Any, response.aiter_raw())
    with map_upstream_errors(stats_error, in_body=True):
        async with aclosing(chunks):
            async for chunk in chunks:
                yield chunk
