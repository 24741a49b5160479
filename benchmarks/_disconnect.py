"""How long a client's disconnect takes to reach the origin, through a proxy, in one clock.

The origin and trio_range's proxy run inside the benchmark's own ``trio.run``
(``trio_range.server.serving.serve_app``), so the instant the client leaves and the instant the
origin's exchange ends come from one clock; nginx proxy_pass in front of the same in-process
origin is the reference. The client, the proxy and the origin share one thread, so the
trio_range figure is an upper bound.
"""

from __future__ import annotations

import logging
import pathlib
import tempfile
from urllib.parse import urlsplit

import trio

from benchmarks._harness import (
    HOST,
    LOG_DIR,
    MEDIA_DIR,
    READY_TIMEOUT_S,
    BenchmarkError,
    Clock,
    free_port,
    nginx_argv,
    rotated,
    spawn_server,
    stop,
    wait_until_serving,
    write_nginx_proxy_conf,
)
from trio_range.config import OriginConfig, ProxyConfig
from trio_range.origin.app import create_app as create_origin
from trio_range.proxy.app import create_app as create_proxy
from trio_range.server.exchange import Exchange, ExchangeObserver
from trio_range.server.serving import serve_app

# What the client reads of a whole-file GET before it leaves.
READ_BEFORE_LEAVING_BYTES = 1 << 20
TRY_TIMEOUT_S = 10.0


def measure_disconnects(path: str, tries: int, clock: Clock, nginx: str) -> dict[str, list[float]]:
    """Seconds from each client leaving to the origin's exchange ending ``aborted``, per proxy.

    ``tries`` per proxy (``proxy>origin``, ``nginx>origin``), alternating; ``path`` is a
    ``media_file``.
    """
    print(f"disconnect: {tries} tries per proxy, origin in this process", flush=True)
    # The in-process servers log through the root logger: keep their warnings, drop the rest.
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="disconnect-") as scratch:
        return trio.run(_disconnect_tries, path, tries, clock, nginx, pathlib.Path(scratch))


class FinishWatcher:
    """Wraps the origin's observer: records when each exchange for the file ends, and how."""

    def __init__(self, inner: ExchangeObserver, path: str) -> None:
        self.inner = inner
        self.path = path
        self.finished: list[tuple[float, str]] = []
        self.event = trio.Event()

    def response_started(self, exchange: Exchange) -> None:
        self.inner.response_started(exchange)

    def exchange_finished(self, exchange: Exchange) -> None:
        self.inner.exchange_finished(exchange)
        # Readiness probes ask for bytes=0-0; the tries ask for the whole file.
        if exchange.path == self.path and exchange.range_header is None:
            self.finished.append((trio.current_time(), exchange.outcome))
            self.event.set()

    def reset(self) -> None:
        self.finished.clear()
        self.event = trio.Event()


async def _disconnect_tries(
    path: str, tries: int, clock: Clock, nginx: str, scratch: pathlib.Path
) -> dict[str, list[float]]:
    """Origin and trio proxy in this trio run, nginx proxy_pass in front of the same origin."""
    origin_config = OriginConfig(host=HOST, port=0, media_dir=MEDIA_DIR, access_log=False)
    origin_app = create_origin(origin_config)
    watcher = FinishWatcher(origin_app.observer, path)
    origin_app.observer = watcher
    async with trio.open_nursery() as nursery:
        origin_url = (await nursery.start(serve_app, origin_app, origin_config))[0]
        proxy_config = ProxyConfig(host=HOST, port=0, upstream=origin_url, access_log=False)
        proxy_url = (await nursery.start(serve_app, create_proxy(proxy_config), proxy_config))[0]
        nginx_port = free_port()
        conf = write_nginx_proxy_conf(
            scratch / "nginx-disconnect",
            host=HOST,
            port=nginx_port,
            upstream_port=urlsplit(origin_url).port or 0,
        )
        nginx_proxy = spawn_server(
            "nginx-proxy-disconnect",
            nginx_argv(nginx, conf),
            port=nginx_port,
            log_path=LOG_DIR / "disconnect-nginx-proxy.log",
        )
        try:
            # Blocking, so in a thread: the origin answering nginx's probe runs in this loop.
            await trio.to_thread.run_sync(wait_until_serving, nginx_proxy, path, READY_TIMEOUT_S)
            ports = {"proxy>origin": urlsplit(proxy_url).port or 0, "nginx>origin": nginx_port}
            delays: dict[str, list[float]] = {name: [] for name in ports}
            for attempt in range(tries):
                for name in rotated(list(ports), attempt):
                    clock.check()
                    delays[name].append(await _one_disconnect(ports[name], path, watcher))
        finally:
            stop(nginx_proxy.process)
            nursery.cancel_scope.cancel()
    return delays


async def _one_disconnect(port: int, path: str, watcher: FinishWatcher) -> float:
    """Start a whole-file GET, read READ_BEFORE_LEAVING_BYTES, leave; seconds until the origin
    knew."""
    watcher.reset()
    with trio.fail_after(TRY_TIMEOUT_S):
        stream = await trio.open_tcp_stream(HOST, port)
        try:
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
            received = bytearray()
            while len(received) < READ_BEFORE_LEAVING_BYTES:
                data = await stream.receive_some(1 << 16)
                if not data:
                    raise BenchmarkError(f"port {port} closed the stream early")
                received += data
            if not received.startswith(b"HTTP/1.1 200"):
                raise BenchmarkError(f"port {port}: {bytes(received[:40])!r}")
        finally:
            left_at = trio.current_time()
            await stream.aclose()
        await watcher.event.wait()
    seen_at, outcome = watcher.finished[0]
    if outcome != "aborted":
        raise BenchmarkError(f"the origin's exchange ended {outcome!r}, not 'aborted'")
    return seen_at - left_at
