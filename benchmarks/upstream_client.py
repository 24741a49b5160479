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
import pathlib
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence

from benchmarks._harness import (
    BenchmarkError,
    Server,
    fetch_socket,
    free_port,
    run_server,
)
from trio_range.media_files import expected_bytes, format_size, parse_size, write_deterministic_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / "benchmarks" / "results" / "logs"
HOST = "127.0.0.1"
SEED = 0
CONCURRENCY = 16
SMALL_RANGE_BYTES = 4096
REQUEST_DEADLINE_S = 120.0
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
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="upstream-client-") as scratch:
            media_dir = pathlib.Path(scratch)
            name = f"deterministic-{format_size(args.file_size)}.bin"
            print(f"writing {format_size(args.file_size)} test file in {media_dir} ...")
            write_deterministic_file(media_dir / name, args.file_size, seed=SEED)
            with run_servers(media_dir) as proxies:
                run(proxies, f"/media/{name}", args)
    except BenchmarkError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    return 0


@contextlib.contextmanager
def run_servers(media_dir: pathlib.Path) -> Iterator[dict[str, Server]]:
    """Our origin on ``media_dir`` and one proxy per library in front of it."""
    origin_port = free_port()
    cli = [sys.executable, "-m", "trio_range.cli"]
    quiet = ["--host", HOST, "--access-log", "false"]
    origin_argv = [*cli, "origin", *quiet, "--port", str(origin_port)]
    origin_argv += ["--media-dir", str(media_dir)]
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            run_server(
                "origin",
                origin_argv,
                host=HOST,
                port=origin_port,
                log_path=LOG_DIR / "upstream-client-origin.log",
                ready_path="/healthz",
            )
        )
        proxies = {}
        for library in LIBRARIES:
            port = free_port()
            argv = [sys.executable, "-c", LAUNCHER, library, "proxy", *quiet, "--port", str(port)]
            argv += ["--upstream", f"http://{HOST}:{origin_port}"]
            proxies[library] = stack.enter_context(
                run_server(
                    f"proxy-{library}",
                    argv,
                    host=HOST,
                    port=port,
                    log_path=LOG_DIR / f"upstream-client-proxy-{library}.log",
                    ready_path="/healthz",
                )
            )
            first_line = proxies[library].log_path.read_text().partition("\n")[0]
            if f"upstream client: {library} " not in first_line:
                raise BenchmarkError(f"proxy-{library} runs the wrong client: {first_line!r}")
            print(f"proxy-{library}: {first_line}")
        yield proxies


def run(proxies: dict[str, Server], path: str, args: argparse.Namespace) -> None:
    size = args.file_size
    throughput: dict[str, list[float]] = {library: [] for library in LIBRARIES}
    rate: dict[str, list[float]] = {library: [] for library in LIBRARIES}
    for library in LIBRARIES:  # warm-up: page cache, imports, first connections
        relay_whole_file(proxies[library], path, size)
        small_range_rate(proxies[library], path, size, 1.0)
    for round_index in range(args.rounds):
        order = LIBRARIES if round_index % 2 == 0 else LIBRARIES[::-1]
        for library in order:
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
    fetch = fetch_socket(proxy.host, proxy.port, path, {}, REQUEST_DEADLINE_S)
    if fetch.status != 200 or fetch.body_bytes != size:
        raise BenchmarkError(f"{proxy.name}: status {fetch.status}, {fetch.body_bytes} bytes")
    tail = len(fetch.last)
    if fetch.first != expected_bytes(size, 0, len(fetch.first), seed=SEED) or (
        fetch.last != expected_bytes(size, size - tail, tail, seed=SEED)
    ):
        raise BenchmarkError(f"{proxy.name}: relayed bytes differ from the file")
    return fetch.mb_per_s


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
