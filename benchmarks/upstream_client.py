"""The proxy with httpx 0.28.1 against the proxy with httpx2 2.16.2 as its upstream client.

    python -m benchmarks.upstream_client [--rounds 3] [--file-size 512MiB] [--rate-seconds 5]

One `trio-range origin` serves one deterministic file; two `trio-range proxy` processes relay
it, identical except for the upstream client: one as shipped (httpx2/httpcore2), one started by
a launcher that makes ``import httpx2`` return httpx 0.28.1 (httpcore 1.0.9) before trio_range
is imported, so src/ stays as it is. In interleaved rounds (the order alternates, so drift on a
shared machine hits both alike) it measures (a) MB/s of the whole file relayed through the
proxy, (b) requests/s of 4 KiB Range GETs over ``CONCURRENCY`` keep-alive connections for a
fixed time. Prints the medians and the httpx2/httpx ratio. docs/upstream-client.md records a run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterator, Sequence

from benchmarks._harness import (
    HOST,
    MEDIA_DIR,
    NO_ACCESS_LOG,
    SEED,
    SMALL_RANGE_BYTES,
    BenchmarkError,
    Server,
    ServerGroup,
    checked,
    fetch_socket,
    free_port,
    media_file,
    rotated,
    run_benchmark,
)
from trio_range.media_files import expected_bytes, format_size, parse_size

CONCURRENCY = 16
LIBRARIES = ("httpx", "httpx2")

# The proxy's command line, run by ``python -c``. For "httpx" it aliases the module first: the
# two packages have the same API (httpx2 is a fork of httpx), and trio_range.proxy.upstream is the
# only module that imports it. It prints which library answered, so the log proves it.
LAUNCHER = """
import sys
if sys.argv[1] == "httpx":
    import httpx
    sys.modules["httpx2"] = httpx
import trio_range.proxy.upstream
client = trio_range.proxy.upstream.httpx
print("upstream client:", client.__name__, client.__version__, flush=True)
from trio_range.cli import main
sys.exit(main(sys.argv[2:]))
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.upstream_client")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--file-size", type=parse_size, default=parse_size("512MiB"))
    parser.add_argument(
        "--rate-seconds", type=float, default=5.0, help="duration of each small-request run"
    )
    return run_benchmark(run, parser.parse_args(argv))


@contextlib.contextmanager
def run_servers() -> Iterator[dict[str, Server]]:
    """Our origin on MEDIA_DIR and one proxy per library in front of it."""
    origin_port = free_port()
    cli = [sys.executable, "-m", "trio_range.cli"]
    listen = ["--host", HOST, *NO_ACCESS_LOG]
    origin_argv = [*cli, "origin", *listen, "--port", str(origin_port)]
    origin_argv += ["--media-dir", str(MEDIA_DIR)]
    with ServerGroup("upstream-client", ready_path="/healthz") as group:
        group.start("origin", origin_argv, origin_port)
        proxies = {}
        for library in LIBRARIES:
            port = free_port()
            argv = [sys.executable, "-c", LAUNCHER, library, "proxy", *listen, "--port", str(port)]
            argv += ["--upstream", f"http://{HOST}:{origin_port}"]
            proxies[library] = group.start(f"proxy-{library}", argv, port)
            first_line = proxies[library].log_path.read_text().partition("\n")[0]
            if f"upstream client: {library} " not in first_line:
                raise BenchmarkError(f"proxy-{library} runs the wrong client: {first_line!r}")
            print(f"proxy-{library}: {first_line}")
        yield proxies


def run(args: argparse.Namespace) -> None:
    size = args.file_size
    path = f"/media/{media_file(size).name}"
    with run_servers() as proxies:
        measure(proxies, path, size, args)


def measure(proxies: dict[str, Server], path: str, size: int, args: argparse.Namespace) -> None:
    throughput: dict[str, list[float]] = {library: [] for library in LIBRARIES}
    rate: dict[str, list[float]] = {library: [] for library in LIBRARIES}
    for library in LIBRARIES:  # warm-up: page cache, imports, first connections
        relay_whole_file(proxies[library], path, size)
        small_range_rate(proxies[library], path, size, 1.0)
    for round_index in range(args.rounds):
        for library in rotated(LIBRARIES, round_index):
            mb_per_s = relay_whole_file(proxies[library], path, size)
            per_s = small_range_rate(proxies[library], path, size, args.rate_seconds)
            throughput[library].append(mb_per_s)
            rate[library].append(per_s)
            print(
                f"round {round_index + 1} {library:7} relay {mb_per_s:7.1f} MB/s   "
                f"4 KiB ranges x{CONCURRENCY} {per_s:7.1f} req/s"
            )
    print(f"\nmedians of {args.rounds} ({format_size(size)} relay; 4 KiB ranges, {CONCURRENCY}")
    print(f"connections, {args.rate_seconds:g} s each):")
    for library in LIBRARIES:
        print(
            f"  {library:7} relay {statistics.median(throughput[library]):7.1f} MB/s   "
            f"small ranges {statistics.median(rate[library]):7.1f} req/s"
        )
    relay_ratio = statistics.median(throughput["httpx2"]) / statistics.median(throughput["httpx"])
    rate_ratio = statistics.median(rate["httpx2"]) / statistics.median(rate["httpx"])
    print(f"  httpx2/httpx: relay {relay_ratio:.3f}, small ranges {rate_ratio:.3f}")


def relay_whole_file(proxy: Server, path: str, size: int) -> float:
    """MB/s of one whole-file GET through ``proxy``, its first and last bytes checked."""
    return checked(fetch_socket, proxy, path, {}, size, 0, size).mb_per_s


def small_range_rate(proxy: Server, path: str, size: int, seconds: float) -> float:
    """Requests/s of 4 KiB Range GETs over CONCURRENCY keep-alive connections."""
    stop_at = time.monotonic() + seconds
    counts = [0] * CONCURRENCY
    errors: list[BaseException] = []

    def client(index: int) -> None:
        rng = random.Random(index)
        try:
            with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
                reader = sock.makefile("rb")
                while time.monotonic() < stop_at:
                    start = rng.randrange(0, size - SMALL_RANGE_BYTES)
                    end = start + SMALL_RANGE_BYTES - 1
                    sock.sendall(
                        f"GET {path} HTTP/1.1\r\nHost: {proxy.host}\r\n"
                        f"Range: bytes={start}-{end}\r\n\r\n".encode()
                    )
                    body = read_response(reader, proxy.name)
                    if counts[index] == 0 and body != expected_bytes(
                        size, start, SMALL_RANGE_BYTES, seed=SEED
                    ):
                        raise BenchmarkError(f"{proxy.name}: wrong bytes for {start}-{end}")
                    counts[index] += 1
        except BaseException as error:  # reported by the caller, after every thread ended
            errors.append(error)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CONCURRENCY)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    elapsed = time.perf_counter() - started
    if errors or any(thread.is_alive() for thread in threads):
        raise BenchmarkError(f"{proxy.name}: small-range clients failed: {errors[:3]!r}")
    return sum(counts) / elapsed


def read_response(reader: io.BufferedReader, name: str) -> bytes:
    """One 206 response from a keep-alive connection: its body (Content-Length framed)."""
    status_line = reader.readline()
    if not status_line.startswith(b"HTTP/1.1 206"):
        raise BenchmarkError(f"{name}: expected a 206, got {status_line!r}")
    length = None
    while (line := reader.readline()) not in (b"\r\n", b""):
        field, _, value = line.partition(b":")
        if field.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise BenchmarkError(f"{name}: a 206 without Content-Length")
    return reader.read(length)


if __name__ == "__main__":
    sys.exit(main())
