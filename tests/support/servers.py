"""Real servers for tests: Hypercorn started in the test's nursery on 127.0.0.1:0."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, cast

import httpx
import trio

from trio_range.config import OriginConfig, ProxyConfig, ServerConfig
from trio_range.server.app import RangeApp
from trio_range.server.serving import serve_app


async def start_app(nursery: trio.Nursery, app: RangeApp, config: ServerConfig) -> str:
    """Serve ``app`` in ``nursery`` on a free loopback port; returns its base URL."""
    urls: list[str] = await nursery.start(serve_app, app, config)
    return urls[0]


def origin_config(**overrides: Any) -> OriginConfig:
    """An origin config for tests: a free port, no access log unless asked."""
    overrides.setdefault("port", 0)
    overrides.setdefault("access_log", False)
    return dataclasses.replace(OriginConfig(), **overrides)


def proxy_config(upstream: str, **overrides: Any) -> ProxyConfig:
    overrides.setdefault("port", 0)
    overrides.setdefault("access_log", False)
    return dataclasses.replace(ProxyConfig(), upstream=upstream, **overrides)


async def start_origin(nursery: trio.Nursery, **overrides: Any) -> str:
    from trio_range.origin.app import create_app

    config = origin_config(**overrides)
    return await start_app(nursery, create_app(config), config)


async def raw_exchange(url: str, request: bytes, *, timeout_s: float = 10.0) -> bytes:
    """Send ``request`` as raw bytes and read until the server closes (bounded in time)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    received = bytearray()
    with trio.fail_after(timeout_s):
        stream = await trio.open_tcp_stream(host.strip("[]"), int(port))
        async with stream:
            await stream.send_all(request)
            while chunk := await stream.receive_some(65536):
                received += chunk
    return bytes(received)


def raw_chunks(response: httpx.Response) -> aclosing[AsyncGenerator[bytes]]:
    """``response.aiter_raw()`` closed on exit, so leaving early finalizes it at once."""
    return aclosing(cast(AsyncGenerator[bytes], response.aiter_raw()))


# What Debian's headless Chromium needs here, and nothing that talks to the outside world
# (without the background-networking flags it keeps trying to reach Google's hosts).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def assert_idle_connection_closes(url: str, path: bytes, body: bytes) -> None:
    """GET ``path`` on a keep-alive connection, then expect the server to close it when idle.

    Stock Quart-Trio cancels Hypercorn re-arming its keep-alive timer, so the connection would
    stay open forever; RangeHTTPConnection does not cancel a complete response.
    """
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        # Generous for a loaded machine: a connection the server never closes fails it anyway.
        with trio.fail_after(10):
            while not received.endswith(body):
                received += await stream.receive_some(65536)
            # Idle now: the server must close it after the keep-alive timeout.
            assert await stream.receive_some(65536) == b""
