"""What statistics cost: the origin's request rate for small ranges, stats on vs a no-op observer.

    python -m benchmarks.stats_overhead [--rounds 5] [--round-s 2] [--connections 16]

Starts two origins in subprocesses on loopback: one as shipped (the in-memory store behind
/stats and /metrics; access log off), one whose observer does nothing. A trio client keeps
``--connections`` keep-alive connections busy with 4 KiB Range GETs at random offsets of a
cached 64 MiB file, one server at a time, in interleaved rounds (on, off, off, on, ...) so drift
on a shared machine hits both alike. Prints each round, the medians, the ratio on/off, and the
store's own cost per exchange measured in-process. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack
from pathlib import Path

import trio

from benchmarks._harness import (
    HOST,
    BenchmarkError,
    Server,
    ServerGroup,
    free_port,
    rotated,
    run_benchmark,
)
from trio_range.config import OriginConfig
from trio_range.server.exchange import Exchange
from trio_range.stats.store import MemoryStatsStore

FILE_NAME = "bench.bin"
FILE_BYTES = 64 * 1024 * 1024
RANGE_BYTES = 4096
REQUEST_DEADLINE_S = 10.0


class NoOpObserver:
    """An observer that records nothing: the baseline."""

    def response_started(self, exchange: Exchange) -> None:
        pass

    def exchange_finished(self, exchange: Exchange) -> None:
        pass


def serve(stats: str, port: int, media_dir: Path) -> None:
    """Run one origin until killed (the subprocess side)."""
    from trio_range.origin.app import create_app
    from trio_range.server.serving import serve_app

    config = OriginConfig(
        host=HOST, port=port, media_dir=media_dir, default_file=FILE_NAME, access_log=False
    )
    config.validate()
    app = create_app(config)
    if stats == "off":
        app.observer = NoOpObserver()
    trio.run(serve_app, app, config)


# --- the client -------------------------------------------------------------------------------


async def _one_connection(port: int, stop_at: float, rng: random.Random, counts: list[int]) -> None:
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        buffer = bytearray()
        while trio.current_time() < stop_at:
            start = rng.randrange(0, FILE_BYTES - RANGE_BYTES)
            request = (
                f"GET /media/{FILE_NAME} HTTP/1.1\r\nHost: {HOST}\r\n"
                f"Range: bytes={start}-{start + RANGE_BYTES - 1}\r\n\r\n"
            ).encode()
            with trio.fail_after(REQUEST_DEADLINE_S):
                await stream.send_all(request)
                while (end := buffer.find(b"\r\n\r\n")) < 0:
                    buffer += await _receive(stream)
                head = bytes(buffer[:end]).lower()
                if not head.startswith(b"http/1.1 206"):
                    raise BenchmarkError(f"expected 206, got {head[:40]!r}")
                length = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                if length != RANGE_BYTES:
                    raise BenchmarkError(f"expected {RANGE_BYTES} bytes, announced {length}")
                while len(buffer) < end + 4 + length:
                    buffer += await _receive(stream)
                del buffer[: end + 4 + length]
            counts[0] += 1


async def _receive(stream: trio.SocketStream) -> bytes:
    data = await stream.receive_some(65536)
    if not data:
        raise BenchmarkError("the server closed the connection")
    return data


async def _load(port: int, seconds: float, connections: int, seed: int) -> float:
    counts = [0]
    started = trio.current_time()
    stop_at = started + seconds
    async with trio.open_nursery() as nursery:
        for index in range(connections):
            nursery.start_soon(_one_connection, port, stop_at, random.Random(seed + index), counts)
    return counts[0] / (trio.current_time() - started)


def request_rate(port: int, seconds: float, connections: int, seed: int) -> float:
    """Requests per second one server answered under ``connections`` busy connections."""
    return trio.run(_load, port, seconds, connections, seed)


# --- the store alone --------------------------------------------------------------------------


def store_cost_us(exchanges: int = 200_000) -> float:
    """Microseconds the in-memory store spends per exchange (both calls), in this process."""
    store = MemoryStatsStore("origin")
    exchange = Exchange(
        method="GET",
        path="/media/x",
        query="",
        range_header="bytes=0-4095",
        resources=AsyncExitStack(),
        started_at=1.0,
        status=206,
        declared_length=4096,
        bytes_sent=4096,
        first_byte_at=1.001,
        finished_at=1.002,
        outcome="completed",
        range_outcome="single",
    )
    started = time.perf_counter()
    for _ in range(exchanges):
        store.response_started(exchange)
        store.exchange_finished(exchange)
    return (time.perf_counter() - started) / exchanges * 1e6


# --- the run ----------------------------------------------------------------------------------


@contextlib.contextmanager
def origin(stats: str, media_dir: Path) -> Iterator[Server]:
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.stats_overhead", "--serve", stats]
    argv += ["--port", str(port), "--media-dir", str(media_dir)]
    with ServerGroup("stats-overhead", ready_path=f"/media/{FILE_NAME}") as group:
        yield group.start(f"stats-{stats}", argv, port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stats_overhead")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--round-s", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections")
    parser.add_argument("--serve", choices=["on", "off"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--media-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.media_dir)
        return 0
    if not 1 <= args.rounds <= 50 or not 0.2 <= args.round_s <= 60:
        parser.error("--rounds must be 1..50 and --round-s 0.2..60")
    return run_benchmark(run, args)


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="trio-range-bench-") as tmp:
        media_dir = Path(tmp) / "media"
        media_dir.mkdir()
        (media_dir / FILE_NAME).write_bytes(random.Random(0).randbytes(FILE_BYTES))
        rates: dict[str, list[float]] = {"on": [], "off": []}
        with origin("on", media_dir) as on, origin("off", media_dir) as off:
            servers = {"on": on, "off": off}
            for server in servers.values():  # warm-up: first imports and the page cache
                request_rate(server.port, 0.5, args.connections, seed=0)
            print(f"{'round':>5}  {'stats on req/s':>15}  {'stats off req/s':>15}")
            for round_index in range(args.rounds):
                for name in rotated(["on", "off"], round_index):
                    rate = request_rate(
                        servers[name].port, args.round_s, args.connections, seed=round_index
                    )
                    rates[name].append(rate)
                print(f"{round_index + 1:>5}  {rates['on'][-1]:>15.0f}  {rates['off'][-1]:>15.0f}")

    on_rate, off_rate = statistics.median(rates["on"]), statistics.median(rates["off"])
    print(
        f"median: stats on {on_rate:.0f} req/s, stats off {off_rate:.0f} req/s, "
        f"ratio on/off {on_rate / off_rate:.3f}"
    )
    print(f"per request: {(1 / on_rate - 1 / off_rate) * 1e6:+.1f} µs with stats on")
    print(f"the store alone: {store_cost_us():.2f} µs per exchange (in-process)")


if __name__ == "__main__":
    sys.exit(main())
