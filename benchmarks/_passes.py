"""In-process per-request figures of a server: scheduler passes, Python calls, CPU (issue 13).

The server runs in this process (``trio.run``); the client is a plain blocking-socket loop in
a thread, so nothing it does is a trio task. Each request is a random 4 KiB range of a 1 MiB
file, keep-alive, over ``connections`` connections driven round-robin (one request in flight
on each), every answer checked. Per request:

- **scheduler passes**: trio task steps (an ``Instrument``'s ``before_task_step``), exact for
  one connection; with many, several requests share some passes.
- **Python calls**: ``cProfile``'s total call count in the server's thread (a separate run).
- **CPU**: the server thread's CPU time (``time.thread_time``), no profiler; the one figure here
  that the machine's load moves, and only a little (it is not wall time). The wall-clock rate
  is recorded too, for reference only.

Two servers: ``ours`` (the origin on trio_range's ``serve_app``) and ``stock`` (the same origin
app on ``hypercorn.trio.serve``, as ``hypercorn -k trio`` runs it): the baseline of the same run.
"""

from __future__ import annotations

import cProfile
import pathlib
import pstats
import random
import socket
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from benchmarks._harness import ratio_cell
from trio_range.config import OriginConfig
from trio_range.origin.app import create_app
from trio_range.server.serving import serve_app

T = TypeVar("T")

SERVERS = ("ours", "stock")

FILE_BYTES = 1 << 20
RANGE_BYTES = 4096
WARM_UP_REQUESTS = 50


class PassCounter(trio.abc.Instrument):
    """Counts trio task steps: one per pass of a task through the scheduler."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1


def measure(requests: int, connections: int, seed: int, server: str = "ours") -> dict[str, float]:
    """The per-request figures of ``server`` (one of :data:`SERVERS`) for ``requests`` over
    ``connections`` connections."""
    if server not in SERVERS:
        raise ValueError(f"server must be one of {SERVERS}, got {server!r}")
    with tempfile.TemporaryDirectory(prefix="hot-path-") as media:
        data = random.Random(seed).randbytes(FILE_BYTES)
        (pathlib.Path(media) / "f.bin").write_bytes(data)
        config = OriginConfig(port=0, access_log=False, media_dir=pathlib.Path(media))
        return trio.run(_measure, config, data, requests, connections, seed, server)


async def _start(nursery: trio.Nursery, config: OriginConfig, server: str) -> str:
    app = create_app(config)
    if server == "ours":
        urls: list[str] = await nursery.start(serve_app, app, config)
        return urls[0]
    hc = HypercornConfig()
    hc.bind = [f"{config.host}:0"]
    hc.accesslog = None
    hc.errorlog = None
    binds: list[str] = await nursery.start(partial(hypercorn_serve, app, hc, mode="asgi"))
    return binds[0]


async def _measure(
    config: OriginConfig, data: bytes, requests: int, connections: int, seed: int, server: str
) -> dict[str, float]:
    async with trio.open_nursery() as nursery:
        url = await _start(nursery, config, server)
        figures = await measure_url(url, data, requests, connections, seed)
        nursery.cancel_scope.cancel()
    return figures


def figures_row(
    server: str, connections: int, each: dict[str, float], baseline: dict[str, float] | None
) -> list[str]:
    """One table row of :func:`measure_url`'s figures, CPU as a ratio to ``baseline``'s."""
    cpu = each["cpu_us_per_request"]
    return [
        server,
        str(connections),
        f"{each['passes_per_request']:.2f}",
        f"{each['calls_per_request']:.0f}",
        f"{cpu:.0f}",
        ratio_cell(cpu / baseline["cpu_us_per_request"] if baseline else None),
        f"{each['requests_per_s']:.0f}",
    ]


async def counted_runs(
    client: Any, requests: int, cpu_clock: Callable[[], T]
) -> tuple[PassCounter, cProfile.Profile, tuple[T, T], float]:
    """Warm ``client`` up, then three runs of ``requests``, one figure each, so that neither
    the instrument nor the profiler weighs on the CPU figure: the scheduler passes (an
    instrument), the calls (cProfile), then ``cpu_clock`` before and after, and the wall time.
    """
    await trio.to_thread.run_sync(client.run, WARM_UP_REQUESTS)
    counter = PassCounter()
    trio.lowlevel.add_instrument(counter)
    try:
        await trio.to_thread.run_sync(client.run, requests)
    finally:
        trio.lowlevel.remove_instrument(counter)
    profile = cProfile.Profile()
    profile.enable()
    try:
        await trio.to_thread.run_sync(client.run, requests)
    finally:
        profile.disable()
    cpu_before, wall_before = cpu_clock(), time.perf_counter()
    await trio.to_thread.run_sync(client.run, requests)
    return counter, profile, (cpu_before, cpu_clock()), time.perf_counter() - wall_before


async def measure_url(
    url: str,
    data: bytes,
    requests: int,
    connections: int,
    seed: int,
    target: bytes = b"/media/f.bin",
    on_profile: Callable[[cProfile.Profile], None] | None = None,
) -> dict[str, float]:
    """The figures of the server at ``url``, run by this ``trio.run`` (which counts its passes
    and its CPU), answering random 4 KiB ranges of ``target`` (whose bytes are ``data``);
    ``on_profile`` is given the profile the calls were counted with (to print it)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    address = (host, int(port))
    client = _Client(address, data, connections, seed, target)
    try:
        counter, profile, (cpu_before, cpu_after), wall = await counted_runs(
            client, requests, time.thread_time
        )
        cpu = cpu_after - cpu_before
    finally:
        client.close()
    if on_profile is not None:
        on_profile(profile)
    calls = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
    return {
        "passes_per_request": counter.steps / requests,
        "calls_per_request": calls / requests,
        "cpu_us_per_request": 1e6 * cpu / requests,
        "requests_per_s": requests / wall,
    }


async def cpu_per_request(
    url: str, data: bytes, requests: int, connections: int, seed: int
) -> float:
    """The server thread's CPU microseconds per request of ``requests`` (as :func:`measure_url`
    asks them, with no instrument and no profiler): one sample, for runs that take several."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    client = _Client((host, int(port)), data, connections, seed)
    try:
        await trio.to_thread.run_sync(client.run, WARM_UP_REQUESTS)
        before = time.thread_time()
        await trio.to_thread.run_sync(client.run, requests)
        return 1e6 * (time.thread_time() - before) / requests
    finally:
        client.close()


class _Client:
    """Keep-alive GETs of random 4 KiB ranges, round-robin over blocking sockets; checked."""

    def __init__(
        self,
        address: tuple[str, int],
        data: bytes,
        connections: int,
        seed: int,
        target: bytes = b"/media/f.bin",
    ) -> None:
        self._data = data
        self._target = target
        self._random = random.Random(seed)
        self._address = address
        self._socks = [socket.create_connection(address, timeout=30) for _ in range(connections)]
        self._buffers = [b""] * connections

    def close(self) -> None:
        for sock in self._socks:
            sock.close()

    def run(self, requests: int) -> None:
        sent = 0
        while sent < requests:
            batch = self._socks[: requests - sent]
            starts = []
            for sock in batch:
                start = self._random.randrange(0, len(self._data) - RANGE_BYTES)
                starts.append(start)
                sock.sendall(
                    b"GET %s HTTP/1.1\r\nHost: bench\r\nRange: bytes=%d-%d\r\n\r\n"
                    % (self._target, start, start + RANGE_BYTES - 1)
                )
            for index, start in enumerate(starts):
                body = self._response(index, self._socks[index])
                if body != self._data[start : start + RANGE_BYTES]:
                    raise AssertionError(f"wrong body for the range at {start}")
            sent += len(batch)

    def _response(self, index: int, sock: socket.socket) -> bytes:
        buffer = self._buffers[index]
        while b"\r\n\r\n" not in buffer:
            buffer += self._receive(sock)
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 206"):
            raise AssertionError(head.decode("latin-1"))
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(buffer) < length:
            buffer += self._receive(sock)
        self._buffers[index] = buffer[length:]
        if b"\r\nconnection: close" in head.lower():
            # Hypercorn's keep_alive_max_requests (1000): a new connection, as wrk would open.
            sock.close()
            self._socks[index] = socket.create_connection(self._address, timeout=30)
            self._buffers[index] = b""
        return buffer[:length]

    @staticmethod
    def _receive(sock: socket.socket) -> bytes:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("the server closed the connection")
        return chunk
