"""Throughput and memory of `trio-range origin` against nginx, serving the same 1 GiB file.

    python -m benchmarks.origin_throughput [--rounds 3] [--file-size 1GiB] [--range-size 256MiB]

Measures, per server, in interleaved rounds (so drift on a shared machine hits both alike):
(a) MB/s of a whole-file GET, (b) MB/s of one Range GET, (c) the server's peak resident memory
while it streams the whole file. Prints medians and the trio_range/nginx ratio and writes
benchmarks/results/origin_throughput.json. See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from benchmarks._harness import (
    CLIENTS,
    BenchmarkError,
    Fetch,
    Fetcher,
    RssSampler,
    Server,
    cpu_seconds,
    find_nginx,
    free_port,
    reset_peak_rss,
    run_and_save,
    run_server,
    status_kib,
    write_nginx_conf,
)
from trio_range.media_files import expected_bytes, format_size, parse_size, write_deterministic_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
HOST = "127.0.0.1"
SEED = 0
# Not block- or page-aligned, so an off-by-one in the range engine shows in the sample check.
RANGE_START = 123_456_789
REQUEST_DEADLINE_S = 120.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.origin_throughput")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--file-size", type=parse_size, default=parse_size("1GiB"))
    parser.add_argument("--range-size", type=parse_size, default=parse_size("256MiB"))
    parser.add_argument(
        "--client",
        choices=["auto", *CLIENTS],
        default="auto",
        help="HTTP client; auto measures each against nginx and keeps the faster",
    )
    parser.add_argument(
        "--nginx",
        metavar="PATH",
        help="nginx binary (default: nginx on PATH, else /usr/sbin/nginx)",
    )
    parser.add_argument(
        "--time-limit-s", type=float, default=900.0, help="give up after this long (default 900)"
    )
    parser.add_argument(
        "--output", type=pathlib.Path, default=RESULTS_DIR / "origin_throughput.json"
    )
    args = parser.parse_args(argv)
    if args.range_size > args.file_size - RANGE_START:
        parser.error("--range-size does not fit in --file-size after the range start")
    return run_and_save(run, args)


def run(args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.monotonic() + args.time_limit_s
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.2f} before starting; other work will skew figures")
    media_dir = RESULTS_DIR / "media"
    file_name = f"deterministic-{format_size(args.file_size)}.bin"
    ensure_file(media_dir / file_name, args.file_size)
    url_path = f"/media/{file_name}"
    range_end = RANGE_START + args.range_size - 1  # inclusive, as on the wire

    nginx = args.nginx if args.nginx is not None else find_nginx()
    if nginx is None or not os.access(nginx, os.X_OK):
        print(
            f"nginx not found ({nginx or 'not on PATH, not /usr/sbin/nginx'}): "
            "measuring trio_range alone, no ratios"
        )
        nginx = None

    with tempfile.TemporaryDirectory(prefix="origin-throughput-") as scratch_name:
        scratch = pathlib.Path(scratch_name)
        origin_port = free_port()
        trio_range = ROOT / ".venv" / "bin" / "trio-range"
        if not trio_range.exists():
            raise BenchmarkError(f"{trio_range} not found: run `make` or `pip install -e .`")
        origin_argv = [
            str(trio_range),
            "origin",
            "--host",
            HOST,
            "--port",
            str(origin_port),
            "--media-dir",
            str(media_dir),
        ]
        with run_server(
            "trio_range",
            origin_argv,
            host=HOST,
            port=origin_port,
            log_path=RESULTS_DIR / "logs" / "origin.log",
            ready_path=url_path,
        ) as origin:
            servers = [origin]
            if nginx is None:
                return measure(servers, args, url_path, range_end, deadline, nginx=None)
            nginx_port = free_port()
            conf = write_nginx_conf(
                scratch / "nginx", host=HOST, port=nginx_port, media_dir=media_dir
            )
            nginx_argv = [nginx, "-p", str(scratch / "nginx"), "-e", "stderr", "-c", str(conf)]
            with run_server(
                "nginx",
                nginx_argv,
                host=HOST,
                port=nginx_port,
                log_path=RESULTS_DIR / "logs" / "nginx.log",
                ready_path=url_path,
            ) as nginx_server:
                servers.append(nginx_server)
                return measure(servers, args, url_path, range_end, deadline, nginx=nginx_server)


def ensure_file(path: pathlib.Path, size: int) -> None:
    """Make the test file unless one of the right size and content is already there."""
    if path.exists() and path.stat().st_size == size and sample_matches(path, size):
        print(f"using {path.relative_to(ROOT)}")
        return
    print(f"writing {path.relative_to(ROOT)} ({format_size(size)}) ...", end=" ", flush=True)
    started = time.perf_counter()
    write_deterministic_file(path, size, seed=SEED)
    seconds = time.perf_counter() - started
    print(f"{size / seconds / 1e6:.0f} MB/s")


def sample_matches(path: pathlib.Path, size: int) -> bool:
    with open(path, "rb") as file:
        for start in (0, size // 3, max(0, size - 4096)):
            file.seek(start)
            length = min(4096, size - start)
            if file.read(length) != expected_bytes(size, start, length, seed=SEED):
                return False
    return True


def measure(
    servers: list[Server],
    args: argparse.Namespace,
    url_path: str,
    range_end: int,
    deadline: float,
    *,
    nginx: Server | None,
) -> dict[str, Any]:
    size = args.file_size
    range_header = {"Range": f"bytes={RANGE_START}-{range_end}"}

    def check_time() -> None:
        if time.monotonic() > deadline:
            raise BenchmarkError(f"time limit of {args.time_limit_s} s reached")

    # Warm-up: pulls the file into the page cache (both servers read the same file) and runs
    # each server's code paths once before the clock matters.
    for server in servers:
        check_time()
        checked(CLIENTS["socket"], server, url_path, {}, size, 0, size)

    client_name, calibration = pick_client(args.client, nginx, url_path, size, check_time)
    fetcher = CLIENTS[client_name]

    per_server: dict[str, dict[str, Any]] = {
        s.name: {
            "whole_mb_s": [],
            "whole_cpu_percent": [],
            "range_mb_s": [],
            "peak_rss_kib": [],
            "sampled_rss_kib": [],
        }
        for s in servers
    }
    for server in servers:
        per_server[server.name]["rss_at_rest_kib"] = status_kib(server.process.pid, "VmRSS")
    hwm_reset = True
    for round_index in range(args.rounds):
        print(f"round {round_index + 1}/{args.rounds}", flush=True)
        for server in servers:
            check_time()
            hwm_reset = reset_peak_rss(server.process.pid) and hwm_reset
            cpu_before = cpu_seconds(server.process.pid)
            with RssSampler(server.process.pid) as sampler:
                fetch = checked(fetcher, server, url_path, {}, size, 0, size)
            cpu_used = cpu_seconds(server.process.pid) - cpu_before
            row = per_server[server.name]
            row["whole_mb_s"].append(fetch.mb_per_s)
            row["whole_cpu_percent"].append(100 * cpu_used / fetch.seconds)
            row["peak_rss_kib"].append(status_kib(server.process.pid, "VmHWM"))
            row["sampled_rss_kib"].append(sampler.peak_kib)
        for server in servers:
            check_time()
            fetch = checked(
                fetcher, server, url_path, range_header, size, RANGE_START, args.range_size
            )
            per_server[server.name]["range_mb_s"].append(fetch.mb_per_s)

    medians = {
        name: {
            "whole_mb_s": statistics.median(row["whole_mb_s"]),
            "range_mb_s": statistics.median(row["range_mb_s"]),
            "whole_cpu_percent": statistics.median(row["whole_cpu_percent"]),
            "peak_rss_mib": statistics.median(row["peak_rss_kib"]) / 1024,
            "rest_rss_mib": row["rss_at_rest_kib"] / 1024,
        }
        for name, row in per_server.items()
    }
    ratios = (
        {
            measure: medians["trio_range"][measure] / medians["nginx"][measure]
            for measure in (
                "whole_mb_s",
                "range_mb_s",
                "whole_cpu_percent",
                "peak_rss_mib",
                "rest_rss_mib",
            )
        }
        if nginx is not None
        else None
    )
    print_table(medians, ratios, size, args.range_size, client_name, calibration)
    if not hwm_reset:
        print("note: could not reset VmHWM; peak RSS is each server's lifetime peak")
    return {
        "benchmark": "origin_throughput",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python -m benchmarks.origin_throughput " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "load_average_1min_at_end": os.getloadavg()[0],
        },
        "file_size_bytes": size,
        "range": {"start": RANGE_START, "length": args.range_size},
        "rounds": args.rounds,
        "client": client_name,
        "client_calibration_mb_s": calibration,
        "nginx": nginx is not None,
        "peak_rss_reset_per_run": hwm_reset,
        "runs": per_server,
        "medians": medians,
        "ratios_trio_range_over_nginx": ratios,
    }


def pick_client(
    choice: str, nginx: Server | None, url_path: str, size: int, check_time: Any
) -> tuple[str, dict[str, float]]:
    """Measure each client against nginx, the fastest server here, and keep the faster one.

    A client slower than nginx would cap nginx's figure and flatter the ratio.
    """
    if nginx is None:
        return ("socket" if choice == "auto" else choice), {}
    calibration: dict[str, float] = {}
    for name, fetcher in CLIENTS.items():
        check_time()
        calibration[name] = checked(fetcher, nginx, url_path, {}, size, 0, size).mb_per_s
    print(
        "client alone against nginx, whole file: "
        + ", ".join(f"{name} {mb_s:.0f} MB/s" for name, mb_s in calibration.items())
    )
    if choice == "auto":
        choice = max(calibration, key=lambda name: calibration[name])
    return choice, calibration


def checked(
    fetcher: Fetcher,
    server: Server,
    path: str,
    headers: dict[str, str],
    size: int,
    start: int,
    length: int,
) -> Fetch:
    """Fetch, then check status, length, Content-Range and the bytes at both ends."""
    fetch = fetcher(server.host, server.port, path, headers, REQUEST_DEADLINE_S)
    where = f"{server.name} GET {path} {headers or ''}"
    partial = "Range" in headers
    if fetch.status != (206 if partial else 200):
        raise BenchmarkError(f"{where}: status {fetch.status}")
    if fetch.body_bytes != length:
        raise BenchmarkError(f"{where}: {fetch.body_bytes} bytes, expected {length}")
    if partial:
        content_range = f"bytes {start}-{start + length - 1}/{size}"
        if fetch.headers.get("content-range") != content_range:
            raise BenchmarkError(
                f"{where}: Content-Range {fetch.headers.get('content-range')!r}, "
                f"expected {content_range!r}"
            )
    if fetch.first != expected_bytes(size, start, len(fetch.first), seed=SEED):
        raise BenchmarkError(f"{where}: wrong bytes at the start of the body")
    tail_start = start + length - len(fetch.last)
    if fetch.last != expected_bytes(size, tail_start, len(fetch.last), seed=SEED):
        raise BenchmarkError(f"{where}: wrong bytes at the end of the body")
    return fetch


def print_table(
    medians: dict[str, dict[str, float]],
    ratios: dict[str, float] | None,
    size: int,
    range_size: int,
    client: str,
    calibration: dict[str, float],
) -> None:
    names = list(medians)
    rows = [
        (f"whole {format_size(size)} GET, MB/s", "whole_mb_s", "{:.0f}"),
        (f"{format_size(range_size)} Range GET, MB/s", "range_mb_s", "{:.0f}"),
        ("server CPU in whole GET, % of a core", "whole_cpu_percent", "{:.0f}"),
        (f"peak RSS streaming {format_size(size)}, MiB", "peak_rss_mib", "{:.1f}"),
        ("RSS at rest after warm-up, MiB", "rest_rss_mib", "{:.1f}"),
    ]
    header = f"{'median':<36}" + "".join(f"{n:>12}" for n in names)
    if ratios is not None:
        header += f"{'trio_range/nginx':>18}"
    print()
    print(header)
    print("-" * len(header))
    for label, key, fmt in rows:
        line = f"{label:<36}" + "".join(f"{fmt.format(medians[n][key]):>12}" for n in names)
        if ratios is not None:
            line += f"{ratios[key]:>18.2f}"
        print(line)
    if calibration:
        print(f"client: {client} ({calibration[client]:.0f} MB/s alone against nginx)")
    else:
        print(f"client: {client}")


if __name__ == "__main__":
    sys.exit(main())
