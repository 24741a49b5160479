"""`trio-range proxy` against its own origin and against nginx proxy_pass, in one run.

    python -m benchmarks.proxy_throughput [--rounds 3] [--rate-seconds 5] [--tries 50]

The figures of issue 3 ("Figures for the closing note"), each with its same-run baseline and
ratio, medians over interleaved rounds (the order of the candidates rotates every round, so
drift on a shared machine hits them alike):

1. MB/s of one whole-file GET (1 GiB) through each candidate path.
2. Requests/s and p99 latency of random 4 KiB Range GETs at concurrency 1, 16 and 64 (wrk and
   benchmarks/random_ranges.lua, a fixed time per point).
3. The proxy's peak RSS (VmHWM) with 8 concurrent whole-file streams and with one slow reader,
   against nginx proxy_pass under the same load, and its RSS at rest.
4. The time from a client leaving mid-stream to the origin seeing its own disconnect: origin
   and proxy run in this process (one ``trio.run``, one clock), 50 tries each.

The candidate paths (every server is one process on 127.0.0.1):

- ``proxy>origin``: client -> trio-range proxy -> trio-range origin
- ``origin``:       client -> trio-range origin (what the relay hop costs)
- ``nginx>nginx``:  client -> nginx proxy_pass (``proxy_buffering off``, keep-alive upstream)
                    -> nginx static (the same file, ``sendfile``)
- ``proxy>nginx``:  client -> trio-range proxy -> nginx static (the proxy alone, with the
                    fastest upstream here; ``--no-proxy-to-nginx`` leaves it out)

Writes benchmarks/results/proxy_throughput.json. benchmarks/README.md says what each figure
means. Nothing in src/ is patched or configured beyond its command-line flags.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import trio

from benchmarks._harness import (
    BenchmarkError,
    Fetch,
    RssSampler,
    Server,
    _parse_head,
    _read_head,
    cpu_seconds,
    fetch_socket,
    find_nginx,
    free_port,
    process_tree,
    reset_peak_rss,
    run_and_save,
    run_server,
    spawn_server,
    status_kib,
    stop,
    wait_until_serving,
    write_nginx_conf,
    write_nginx_proxy_conf,
)
from benchmarks.origin_throughput import RESULTS_DIR, ROOT, checked, ensure_file
from trio_range.config import OriginConfig, ProxyConfig
from trio_range.media_files import format_size, parse_size
from trio_range.origin.app import create_app as create_origin
from trio_range.proxy.app import create_app as create_proxy
from trio_range.server.exchange import Exchange, ExchangeObserver
from trio_range.server.serving import serve_app

HOST = "127.0.0.1"
LUA_SCRIPT = ROOT / "benchmarks" / "random_ranges.lua"
LOG_DIR = RESULTS_DIR / "logs"
SMALL_RANGE_BYTES = 4096
# A response head is a few hundred bytes: more than this per request means wrk got something
# other than 4 KiB ranges (a 200 with the whole file, error pages).
MAX_HEAD_BYTES_PER_REQUEST = 2048
SLOW_TICK_S = 0.1
DISCONNECT_READ_BYTES = 1 << 20
DISCONNECT_TRY_TIMEOUT_S = 10.0

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One path from the client to the file."""

    name: str
    entry: Server  # where the client connects
    tiers: tuple[Server, ...]  # every server process on the path, proxy first
    description: str

    @property
    def proxy(self) -> Server | None:
        """The relaying process, if the path has one."""
        return self.tiers[0] if len(self.tiers) > 1 else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.proxy_throughput")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--file-size", type=parse_size, default=parse_size("1GiB"))
    parser.add_argument(
        "--rate-seconds", type=float, default=5.0, help="wrk duration per point (default 5)"
    )
    parser.add_argument(
        "--concurrency",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[1, 16, 64],
        help="wrk connections per point, comma-separated (default 1,16,64)",
    )
    parser.add_argument("--streams", type=int, default=8, help="concurrent streams (default 8)")
    parser.add_argument("--slow-seconds", type=float, default=10.0, help="slow reader duration")
    parser.add_argument(
        "--slow-rate", type=parse_size, default=parse_size("1MiB"), help="slow reader bytes/s"
    )
    parser.add_argument("--tries", type=int, default=50, help="disconnect tries per candidate")
    parser.add_argument(
        "--figures",
        default="stream,ranges,memory,disconnect",
        help="which figures to take, comma-separated (default all four)",
    )
    parser.add_argument(
        "--no-proxy-to-nginx",
        action="store_true",
        help="leave out the trio-range proxy in front of nginx static",
    )
    parser.add_argument("--nginx", metavar="PATH", help="nginx binary (default: found on PATH)")
    parser.add_argument("--wrk", metavar="PATH", help="wrk binary (default: found on PATH)")
    parser.add_argument(
        "--time-limit-s", type=float, default=1800.0, help="give up after this long (default 1800)"
    )
    parser.add_argument(
        "--output", type=pathlib.Path, default=RESULTS_DIR / "proxy_throughput.json"
    )
    args = parser.parse_args(argv)
    figures = set(args.figures.split(","))
    unknown = figures - {"stream", "ranges", "memory", "disconnect"}
    if unknown:
        parser.error(f"unknown figures: {', '.join(sorted(unknown))}")
    args.figures = figures
    return run_and_save(run, args)


class Clock:
    """The run's overall deadline and its load-average log."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.deadline = time.monotonic() + limit_s
        self.loads: list[dict[str, Any]] = []

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise BenchmarkError(f"time limit of {self.limit_s} s reached")

    def record_load(self, when: str) -> float:
        load = os.getloadavg()
        self.loads.append({"when": when, "load_1_5_15": [round(x, 2) for x in load]})
        return load[0]

    def print_loads(self) -> None:
        """One line with the load averages recorded during the run."""
        print(
            "\nload average (1, 5, 15 min): "
            + "; ".join(
                f"{entry['when']} {' '.join(f'{x:.2f}' for x in entry['load_1_5_15'])}"
                for entry in self.loads
            )
        )


def run(args: argparse.Namespace) -> dict[str, Any]:
    clock = Clock(args.time_limit_s)
    load = clock.record_load("start")
    if load > 0.5:
        print(f"warning: load average {load:.2f} before starting; other work will skew figures")
    nginx = args.nginx if args.nginx is not None else find_nginx()
    if nginx is None or not os.access(nginx, os.X_OK):
        raise BenchmarkError("nginx not found: every figure here needs its nginx baseline")
    wrk = args.wrk if args.wrk is not None else shutil.which("wrk")
    if "ranges" in args.figures and wrk is None:
        raise BenchmarkError(
            "wrk not found: apt-get install -y wrk (or leave out --figures ranges)"
        )
    media_dir = RESULTS_DIR / "media"
    file_name = f"deterministic-{format_size(args.file_size)}.bin"
    ensure_file(media_dir / file_name, args.file_size)
    path = f"/media/{file_name}"
    results: dict[str, Any] = {
        "benchmark": "proxy_throughput",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python -m benchmarks.proxy_throughput " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "nginx": nginx_version(nginx),
            "wrk": wrk,
        },
        "file_size_bytes": args.file_size,
        "rounds": args.rounds,
    }
    with tempfile.TemporaryDirectory(prefix="proxy-throughput-") as scratch_name:
        scratch = pathlib.Path(scratch_name)
        if args.figures & {"stream", "ranges", "memory"}:
            with contextlib.ExitStack() as stack:
                candidates = start_candidates(stack, args, nginx, media_dir, scratch, path)
                results["candidates"] = {c.name: c.description for c in candidates}
                warm_up(candidates, path, args.file_size, clock)
                if "stream" in args.figures:
                    clock.record_load("stream")
                    results["stream"] = stream_figure(candidates, path, args, clock)
                if "ranges" in args.figures:
                    assert wrk is not None
                    clock.record_load("ranges")
                    results["ranges"] = ranges_figure(candidates, path, args, clock, wrk)
                if "memory" in args.figures:
                    clock.record_load("memory")
                    results["memory"] = memory_figure(candidates, path, args, clock)
        if "disconnect" in args.figures:
            clock.record_load("disconnect")
            results["disconnect"] = disconnect_figure(media_dir, path, args, clock, nginx, scratch)
    clock.record_load("end")
    results["load_averages"] = clock.loads
    clock.print_loads()
    return results


def nginx_version(nginx: str) -> str:
    done = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10, check=False)
    return (done.stderr or done.stdout).strip()


# --- servers ---------------------------------------------------------------------------------


def start_candidates(
    stack: contextlib.ExitStack,
    args: argparse.Namespace,
    nginx: str,
    media_dir: pathlib.Path,
    scratch: pathlib.Path,
    path: str,
) -> list[Candidate]:
    """Start every server (stopped when ``stack`` closes) and name the paths through them."""
    trio_range = ROOT / ".venv" / "bin" / "trio-range"
    if not trio_range.exists():
        raise BenchmarkError(f"{trio_range} not found: run `make` or `pip install -e .`")
    # nginx logs nothing per request either: like for like.
    quiet = ["--host", HOST, "--access-log", "false"]

    def start(name: str, argv: list[str], port: int) -> Server:
        return stack.enter_context(
            run_server(
                name,
                argv,
                host=HOST,
                port=port,
                log_path=LOG_DIR / f"proxy-throughput-{name}.log",
                ready_path=path,
            )
        )

    def start_nginx(name: str, conf: pathlib.Path, port: int) -> Server:
        return start(name, [nginx, "-p", str(conf.parent), "-e", "stderr", "-c", str(conf)], port)

    port = free_port()
    origin = start(
        "origin",
        [str(trio_range), "origin", *quiet, "--port", str(port), "--media-dir", str(media_dir)],
        port,
    )
    port = free_port()
    conf = write_nginx_conf(
        scratch / "nginx-static", host=HOST, port=port, media_dir=media_dir, worker_connections=1024
    )
    nginx_static = start_nginx("nginx-static", conf, port)

    def start_proxy(name: str, upstream: Server) -> Server:
        port = free_port()
        upstream_url = f"http://{HOST}:{upstream.port}"
        argv = [str(trio_range), "proxy", *quiet, "--port", str(port), "--upstream", upstream_url]
        return start(name, argv, port)

    proxy = start_proxy("proxy", origin)
    port = free_port()
    conf = write_nginx_proxy_conf(
        scratch / "nginx-proxy", host=HOST, port=port, upstream_port=nginx_static.port
    )
    nginx_proxy = start_nginx("nginx-proxy", conf, port)
    candidates = [
        Candidate(
            "proxy>origin",
            proxy,
            (proxy, origin),
            "client -> trio-range proxy -> trio-range origin",
        ),
        Candidate("origin", origin, (origin,), "client -> trio-range origin"),
        Candidate(
            "nginx>nginx",
            nginx_proxy,
            (nginx_proxy, nginx_static),
            "client -> nginx proxy_pass (proxy_buffering off, keep-alive upstream) -> nginx static",
        ),
    ]
    if not args.no_proxy_to_nginx:
        proxy_nginx = start_proxy("proxy-to-nginx", nginx_static)
        candidates.append(
            Candidate(
                "proxy>nginx",
                proxy_nginx,
                (proxy_nginx, nginx_static),
                "client -> trio-range proxy -> nginx static",
            )
        )
    for candidate in candidates:
        print(f"{candidate.name:>12}: {candidate.description} (port {candidate.entry.port})")
    return candidates


def warm_up(candidates: list[Candidate], path: str, size: int, clock: Clock) -> None:
    """Page cache, code paths and first connections, before any clock matters.

    Also checks that every path answers a 4 KiB range with the right bytes: wrk counts
    responses, it does not check them.
    """
    print("warming up (one whole-file GET per path) ...", flush=True)
    for candidate in candidates:
        clock.check()
        checked(fetch_socket, candidate.entry, path, {}, size, 0, size)
        start = 987_654_321 % (size - SMALL_RANGE_BYTES)
        header = {"Range": f"bytes={start}-{start + SMALL_RANGE_BYTES - 1}"}
        checked(fetch_socket, candidate.entry, path, header, size, start, SMALL_RANGE_BYTES)


def rotated(items: Sequence[T], shift: int) -> list[T]:
    """``items`` starting at ``shift``: each round puts another candidate first."""
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


def load_1min() -> float:
    return round(os.getloadavg()[0], 2)


# --- figure 1: one whole-file stream ------------------------------------------------------------


def stream_rounds(
    candidates: list[Candidate], path: str, size: int, rounds: int, clock: Clock, title: str
) -> dict[str, list[dict[str, Any]]]:
    """One checked whole-file GET per candidate per round, order rotated; MB/s and CPU."""
    runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in candidates}
    for round_index in range(rounds):
        print(f"{title} round {round_index + 1}/{rounds}", flush=True)
        for candidate in rotated(candidates, round_index):
            clock.check()
            before = [cpu_seconds(tier.process.pid) for tier in candidate.tiers]
            fetch = checked(fetch_socket, candidate.entry, path, {}, size, 0, size)
            after = [cpu_seconds(tier.process.pid) for tier in candidate.tiers]
            runs[candidate.name].append(
                {
                    "mb_s": fetch.mb_per_s,
                    "cpu_percent": {
                        tier.name: round(100 * (b - a) / fetch.seconds, 1)
                        for tier, a, b in zip(candidate.tiers, before, after, strict=True)
                    },
                    "load_1min": load_1min(),
                }
            )
    return runs


def stream_figure(
    candidates: list[Candidate], path: str, args: argparse.Namespace, clock: Clock
) -> dict[str, Any]:
    size = args.file_size
    runs = stream_rounds(candidates, path, size, args.rounds, clock, "stream")
    medians: dict[str, dict[str, float | None]] = {}
    for candidate in candidates:
        rows = runs[candidate.name]
        tiers = candidate.tiers
        medians[candidate.name] = {
            "mb_s": statistics.median(r["mb_s"] for r in rows),
            "first_tier_cpu_percent": statistics.median(
                r["cpu_percent"][tiers[0].name] for r in rows
            ),
            "upstream_cpu_percent": (
                statistics.median(r["cpu_percent"][tiers[1].name] for r in rows)
                if len(tiers) > 1
                else None
            ),
        }
    ratios = baseline_ratios(medians, "mb_s")
    print_table(
        f"1. whole {format_size(size)} GET, median of {args.rounds}",
        [c.name for c in candidates],
        [
            ("MB/s (higher is better)", {n: m["mb_s"] for n, m in medians.items()}, "{:.0f}"),
            (
                "CPU of the first server, % of a core",
                {n: m["first_tier_cpu_percent"] for n, m in medians.items()},
                "{:.0f}",
            ),
            (
                "CPU of its upstream, % of a core",
                {n: m["upstream_cpu_percent"] for n, m in medians.items()},
                "{:.0f}",
            ),
        ],
        {"MB/s (higher is better)": ratios},
    )
    return {"runs": runs, "medians": medians, "ratios": ratios}


def baseline_ratios(medians: dict[str, dict[str, Any]], key: str) -> dict[str, float]:
    """The proxy's figure over each same-run baseline: the origin direct, nginx proxy_pass."""
    ours = medians["proxy>origin"][key]
    return {
        f"proxy>origin / {baseline}": ours / medians[baseline][key]
        for baseline in ("origin", "nginx>nginx")
        if medians[baseline][key]
    }


# --- figure 2: small random ranges with wrk ---------------------------------------------------


def ranges_figure(
    candidates: list[Candidate],
    path: str,
    args: argparse.Namespace,
    clock: Clock,
    wrk: str,
) -> dict[str, Any]:
    size = args.file_size
    points = [(c, n) for n in args.concurrency for c in candidates]
    runs: dict[str, list[dict[str, Any]]] = {f"{c.name} c{n}": [] for c, n in points}
    for candidate in candidates:  # warm-up: connections, pools, the proxy's code paths
        run_wrk(wrk, candidate, path, size, 16, 1.0, seed=0)
    for round_index in range(args.rounds):
        print(f"ranges round {round_index + 1}/{args.rounds}", flush=True)
        for concurrency in args.concurrency:
            for candidate in rotated(candidates, round_index):
                clock.check()
                result = run_wrk(
                    wrk, candidate, path, size, concurrency, args.rate_seconds, seed=round_index + 1
                )
                runs[f"{candidate.name} c{concurrency}"].append(result)
    medians: dict[str, dict[str, float]] = {}
    for key, rows in runs.items():
        medians[key] = {
            "requests_per_s": statistics.median(r["requests_per_s"] for r in rows),
            "p99_ms": statistics.median(r["latency_p99_us"] / 1000 for r in rows),
            "p50_ms": statistics.median(r["latency_p50_us"] / 1000 for r in rows),
            "errors": sum(r["errors"] for r in rows),
        }
    names = [c.name for c in candidates]
    table_rows: list[tuple[str, dict[str, Any], str]] = []
    table_ratios: dict[str, dict[str, float]] = {}
    all_ratios: dict[str, dict[str, float]] = {}
    for concurrency in args.concurrency:
        at = {name: medians[f"{name} c{concurrency}"] for name in names}
        for label, key, fmt in (
            (f"c={concurrency} requests/s", "requests_per_s", "{:.0f}"),
            (f"c={concurrency} p99 ms", "p99_ms", "{:.2f}"),
            (f"c={concurrency} p50 ms", "p50_ms", "{:.2f}"),
        ):
            table_rows.append((label, {n: m[key] for n, m in at.items()}, fmt))
            if key != "p50_ms":
                table_ratios[label] = all_ratios[f"{key} c{concurrency}"] = baseline_ratios(at, key)
    errors = {key: m["errors"] for key, m in medians.items() if m["errors"]}
    print_table(
        f"2. random {SMALL_RANGE_BYTES} B ranges, wrk, {args.rate_seconds:g} s per point, "
        f"median of {args.rounds} (requests/s: higher is better; p99: lower is better)",
        names,
        table_rows,
        table_ratios,
    )
    if errors:
        print(f"warning: wrk counted errors (socket errors, timeouts, statuses >= 400): {errors}")
    return {"runs": runs, "medians": medians, "ratios": all_ratios, "errors": errors}


def run_wrk(
    wrk: str,
    candidate: Candidate,
    path: str,
    size: int,
    concurrency: int,
    seconds: float,
    *,
    seed: int,
) -> dict[str, Any]:
    """One wrk run: ``concurrency`` keep-alive connections on one wrk thread for ``seconds``.

    One thread: the machine has two cores and the servers need them more; one wrk thread makes
    far more requests per second than any server here answers (it keeps up with nginx).
    """
    entry = candidate.entry
    argv = [wrk, "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "10s"]
    argv += ["-s", str(LUA_SCRIPT), f"http://{entry.host}:{entry.port}{path}"]
    argv += ["--", str(size), str(SMALL_RANGE_BYTES), str(seed)]
    cpu_before = [cpu_seconds(tier.process.pid) for tier in candidate.tiers]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise BenchmarkError(f"wrk against {candidate.name} did not finish: {error}") from None
    cpu_after = [cpu_seconds(tier.process.pid) for tier in candidate.tiers]
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or len(lines) != 1:
        raise BenchmarkError(
            f"wrk against {candidate.name} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
    result: dict[str, Any] = json.loads(lines[0].removeprefix("RESULT "))
    requests = result["requests"]
    if requests == 0:
        raise BenchmarkError(f"wrk against {candidate.name}: no response at all")
    per_request = result["bytes"] / requests
    if not SMALL_RANGE_BYTES <= per_request <= SMALL_RANGE_BYTES + MAX_HEAD_BYTES_PER_REQUEST:
        raise BenchmarkError(
            f"wrk against {candidate.name}: {per_request:.0f} bytes per response; "
            f"expected {SMALL_RANGE_BYTES} B bodies (not 206 answers?)"
        )
    wall_s = result["duration_us"] / 1e6
    result["requests_per_s"] = requests / wall_s
    result["errors"] = sum(value for key, value in result.items() if key.startswith("errors_"))
    result["cpu_percent"] = {
        tier.name: round(100 * (b - a) / wall_s, 1)
        for tier, a, b in zip(candidate.tiers, cpu_before, cpu_after, strict=True)
    }
    result["concurrency"] = concurrency
    result["load_1min"] = load_1min()
    return result


# --- figure 3: the proxy's memory -------------------------------------------------------------


def memory_figure(
    candidates: list[Candidate], path: str, args: argparse.Namespace, clock: Clock
) -> dict[str, Any]:
    """Peak RSS of each proxy process with N concurrent streams and with one slow reader."""
    proxies = [c for c in candidates if c.name in ("proxy>origin", "nginx>nginx")]
    runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in proxies}
    rest_before = {c.name: rss_kib(proxy_of(c)) for c in proxies}
    hwm_reset = True
    for round_index in range(args.rounds):
        print(f"memory round {round_index + 1}/{args.rounds}", flush=True)
        for candidate in rotated(proxies, round_index):
            clock.check()
            proxy = proxy_of(candidate)
            row: dict[str, Any] = {"rest_rss_kib": rss_kib(proxy)}
            hwm_reset = reset_peak_rss(proxy.process.pid) and hwm_reset
            with RssSampler(proxy.process.pid) as sampler:
                seconds = concurrent_streams(candidate, path, args.file_size, args.streams)
            row["streams_peak_rss_kib"] = hwm_kib(proxy)
            row["streams_sampled_peak_rss_kib"] = sampler.peak_kib
            row["streams_total_mb_s"] = args.streams * args.file_size / seconds / 1e6
            clock.check()
            hwm_reset = reset_peak_rss(proxy.process.pid) and hwm_reset
            samples = slow_reader(candidate, path, args.slow_rate, args.slow_seconds)
            row["slow_peak_rss_kib"] = hwm_kib(proxy)
            row["slow_rss_samples_kib"] = samples  # one a second
            row["load_1min"] = load_1min()
            runs[candidate.name].append(row)
    rest_after = {c.name: rss_kib(proxy_of(c)) for c in proxies}
    medians = {
        name: {
            "rest_rss_mib": rest_before[name] / 1024,
            "streams_peak_rss_mib": statistics.median(r["streams_peak_rss_kib"] for r in rows)
            / 1024,
            "slow_peak_rss_mib": statistics.median(r["slow_peak_rss_kib"] for r in rows) / 1024,
            # Flat: what the RSS gained from the first to the last second of the slow read.
            "slow_growth_mib": statistics.median(
                (r["slow_rss_samples_kib"][-1] - r["slow_rss_samples_kib"][0]) for r in rows
            )
            / 1024,
            "rest_after_rss_mib": rest_after[name] / 1024,
            "streams_total_mb_s": statistics.median(r["streams_total_mb_s"] for r in rows),
        }
        for name, rows in runs.items()
    }
    ours, theirs = medians["proxy>origin"], medians["nginx>nginx"]
    ratios = {key: ours[key] / theirs[key] for key in ours if theirs[key]}
    streams = f"{args.streams} x {format_size(args.file_size)}"
    rows = [
        ("RSS at rest, MiB", "rest_rss_mib", "{:.1f}"),
        (f"peak RSS, {streams} streams, MiB", "streams_peak_rss_mib", "{:.1f}"),
        (f"peak RSS, slow reader {args.slow_seconds:g} s, MiB", "slow_peak_rss_mib", "{:.1f}"),
        ("RSS growth, 1st to last s of slow read, MiB", "slow_growth_mib", "{:.2f}"),
        ("RSS at rest after all rounds, MiB", "rest_after_rss_mib", "{:.1f}"),
        (f"{streams} streams together, MB/s", "streams_total_mb_s", "{:.0f}"),
    ]
    print_table(
        f"3. memory of the proxy process, median of {args.rounds} (lower is better)",
        list(medians),
        [(label, {n: m[key] for n, m in medians.items()}, fmt) for label, key, fmt in rows],
        {label: {"trio/nginx": ratios[key]} for label, key, _ in rows if key in ratios},
    )
    for name, rows_of in runs.items():
        last = " ".join(f"{kib / 1024:.1f}" for kib in rows_of[-1]["slow_rss_samples_kib"])
        print(f"  {name} RSS each second of the last slow read, MiB: {last}")
    if not hwm_reset:
        print("note: could not reset VmHWM; peaks are lifetime peaks")
    return {
        "runs": runs,
        "medians": medians,
        "ratios_trio_over_nginx": ratios,
        "peak_rss_reset_per_run": hwm_reset,
        "slow_reader_bytes_per_s": args.slow_rate,
        "streams": args.streams,
    }


def proxy_of(candidate: Candidate) -> Server:
    proxy = candidate.proxy
    if proxy is None:
        raise BenchmarkError(f"{candidate.name} has no proxy")
    return proxy


def rss_kib(server: Server) -> int:
    return sum(status_kib(pid, "VmRSS") for pid in process_tree(server.process.pid))


def hwm_kib(server: Server) -> int:
    return sum(status_kib(pid, "VmHWM") for pid in process_tree(server.process.pid))


def concurrent_streams(candidate: Candidate, path: str, size: int, count: int) -> float:
    """``count`` whole-file GETs at once, each checked; the wall time until the last ended."""
    # Eight 1 GiB streams share one proxy core: allow each far more than a single GET.
    deadline_s = 600.0

    def fetcher(host: str, port: int, p: str, headers: dict[str, str], _: float) -> Fetch:
        return fetch_socket(host, port, p, headers, deadline_s)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        futures = [
            pool.submit(checked, fetcher, candidate.entry, path, {}, size, 0, size)
            for _ in range(count)
        ]
        for future in concurrent.futures.as_completed(futures, timeout=deadline_s + 10):
            future.result()
    return time.perf_counter() - started


def slow_reader(candidate: Candidate, path: str, rate: int, seconds: float) -> list[int]:
    """Read a whole-file GET at ``rate`` bytes/s for ``seconds``, then leave.

    Returns the proxy's summed VmRSS at the end of each second. The socket's receive buffer is
    left as the kernel sizes it: bytes queued there are the kernel's, not the proxy's.
    """
    proxy = proxy_of(candidate)
    entry = candidate.entry
    per_tick = int(rate * SLOW_TICK_S)
    samples: list[int] = []
    buffer = bytearray(per_tick)
    with socket.create_connection((entry.host, entry.port), timeout=10) as sock:
        request = f"GET {path} HTTP/1.1\r\nHost: {entry.host}:{entry.port}\r\n\r\n"
        sock.sendall(request.encode("latin-1"))
        head, _ = _read_head(sock, time.monotonic() + 10)
        status, _ = _parse_head(head)
        if status != 200:
            raise BenchmarkError(f"slow reader through {candidate.name}: status {status}")
        started = time.monotonic()
        ticks = round(seconds / SLOW_TICK_S)
        per_second = round(1 / SLOW_TICK_S)
        for tick in range(1, ticks + 1):
            wanted = per_tick
            while wanted > 0:
                count = sock.recv_into(buffer, wanted)
                if count == 0:
                    raise BenchmarkError(f"{candidate.name} closed the slow reader's stream")
                wanted -= count
            time.sleep(max(0.0, started + tick * SLOW_TICK_S - time.monotonic()))
            if tick % per_second == 0:
                samples.append(rss_kib(proxy))
    time.sleep(0.5)  # let the proxy notice the disconnect before the next measurement
    return samples


# --- figure 4: disconnect propagation, in process ---------------------------------------------


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


def disconnect_figure(
    media_dir: pathlib.Path,
    path: str,
    args: argparse.Namespace,
    clock: Clock,
    nginx: str,
    scratch: pathlib.Path,
) -> dict[str, Any]:
    print(f"disconnect: {args.tries} tries per proxy, origin in this process", flush=True)
    # The in-process servers log through the root logger: keep their warnings, drop the rest.
    logging.basicConfig(level=logging.WARNING)
    delays = trio.run(_disconnect_tries, media_dir, path, args.tries, clock, nginx, scratch)
    medians = {
        name: {
            "median_ms": statistics.median(values) * 1000,
            "max_ms": max(values) * 1000,
            "min_ms": min(values) * 1000,
        }
        for name, values in delays.items()
    }
    ours, theirs = medians["proxy>origin"], medians["nginx>origin"]
    ratios = {key: ours[key] / theirs[key] for key in ours if theirs[key]}
    print_table(
        f"4. client disconnect -> origin sees its own, {args.tries} tries (lower is better)",
        list(medians),
        [
            (label, {n: m[key] for n, m in medians.items()}, "{:.2f}")
            for label, key in (
                ("median ms", "median_ms"),
                ("max ms", "max_ms"),
                ("min ms", "min_ms"),
            )
        ],
        {
            label: {"trio/nginx": ratios[key]}
            for label, key in (("median ms", "median_ms"), ("max ms", "max_ms"))
            if key in ratios
        },
    )
    return {
        "delays_s": delays,
        "medians": medians,
        "ratios_trio_over_nginx": ratios,
        "read_before_leaving_bytes": DISCONNECT_READ_BYTES,
    }


async def _disconnect_tries(
    media_dir: pathlib.Path,
    path: str,
    tries: int,
    clock: Clock,
    nginx: str,
    scratch: pathlib.Path,
) -> dict[str, list[float]]:
    """Origin and trio proxy in this trio run, nginx proxy_pass in front of the same origin."""
    origin_config = OriginConfig(host=HOST, port=0, media_dir=media_dir, access_log=False)
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
            [nginx, "-p", str(conf.parent), "-e", "stderr", "-c", str(conf)],
            host=HOST,
            port=nginx_port,
            log_path=LOG_DIR / "proxy-throughput-nginx-disconnect.log",
        )
        try:
            # Blocking, so in a thread: the origin answering nginx's probe runs in this loop.
            await trio.to_thread.run_sync(wait_until_serving, nginx_proxy, path, 20.0)
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
    """Start a whole-file GET, read DISCONNECT_READ_BYTES, leave; seconds until the origin knew."""
    watcher.reset()
    with trio.fail_after(DISCONNECT_TRY_TIMEOUT_S):
        stream = await trio.open_tcp_stream(HOST, port)
        try:
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
            received = bytearray()
            while len(received) < DISCONNECT_READ_BYTES:
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


# --- output -----------------------------------------------------------------------------------


def print_table(
    title: str,
    columns: list[str],
    rows: list[tuple[str, dict[str, Any], str]],
    ratios: dict[str, dict[str, float]],
) -> None:
    """One row per figure, one column per candidate, then the ratios of that row."""
    ratio_names = sorted({name for by_row in ratios.values() for name in by_row})
    width = max(len(label) for label, _, _ in rows) + 2
    header = f"{'':<{width}}" + "".join(f"{c:>13}" for c in columns)
    header += "".join(f"{r:>28}" for r in ratio_names)
    print(f"\n{title}")
    print(header)
    print("-" * len(header))
    for label, values, fmt in rows:
        line = f"{label:<{width}}"
        for column in columns:
            value = values.get(column)
            line += f"{'-' if value is None else fmt.format(value):>13}"
        for name in ratio_names:
            ratio = ratios.get(label, {}).get(name)
            line += f"{'' if ratio is None else f'{ratio:.2f}':>28}"
        print(line)


if __name__ == "__main__":
    sys.exit(main())
