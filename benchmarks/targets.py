"""The performance targets table: every target, next to its baselines, measured in one run.

    python -m benchmarks.targets                     # every row, 3 rounds (~15 min)
    python -m benchmarks.targets --quick             # 1 round, short durations: checks the harness
    python -m benchmarks.targets --only origin_stream,proxy_rate

The rows (``--only`` names), each against the baselines its target names (the targets came with
issue 8; issues 13 and 14 added rows and made some stricter), candidates interleaved and their
order rotated every round, medians over ``--rounds``:

- ``origin_stream``: trio-range origin, one whole-file GET (1 GiB), vs nginx ``sendfile``.
- ``proxy_stream``:  the same through trio-range proxy -> origin, vs the aiohttp pair
                     (benchmarks/aiohttp_baseline.py), vs nginx proxy_pass -> nginx, and vs
                     nginx proxy_pass with ``proxy_buffer_size 256k; proxy_buffers 4 256k``
                     (its default page-sized buffers make it look three times slower);
                     and the proxy process's CPU per GB vs the aiohttp proxy process's.
- ``origin_rate``:   random 4 KiB ranges, wrk at c=64, origin vs aiohttp ``FileResponse``; and
                     the origin process's CPU per request over those runs (reported).
- ``origin_cpu_old``: the origin process's CPU per request under that load, vs the code before
                     issue 13 (d49b32f, extracted from this repository's git and run beside it:
                     benchmarks/old_commit.py).
- ``proxy_server_side``: the proxy process's CPU per request with its upstream client replaced
                     by an in-memory constant answer (so only its server side), vs d49b32f's
                     proxy the same way (benchmarks/old_commit.py, _constant_upstream.py).
- ``origin_p99``:    p99 latency of those ranges at c=16, origin vs aiohttp ``FileResponse``.
- ``passes``:        scheduler passes and Python calls per request (exact counts, in this
                     process: benchmarks/_passes.py), the origin on trio_range's server vs the
                     same app on stock ``hypercorn.trio.serve`` (issue 13).
- ``proxy_rate``:    the same through the proxy pair vs the aiohttp pair.
- ``proxy_p99``:     p99 latency of those ranges at c=16, proxy pair vs aiohttp pair.
- ``memory``:        the proxy's peak RSS with 8 concurrent whole-file streams and with one
                     slow reader (the aiohttp proxy beside it for reference), each proxy
                     started by the row; and the shared proxy's RSS at rest after a c=64 run.
- ``disconnect``:    client leaves mid-stream -> the origin sees its own disconnect
                     (benchmarks.proxy_throughput's in-process method; nginx for reference).
- ``upstream_cpu``:  the proxy's upstream client alone: CPU per small request of
                     trio_range's transport vs httpx2's, same upstream, same run
                     (benchmarks/upstream_client.py).
- ``workers``:       ``hypercorn -k trio -w 2`` vs ``-w 1`` for the proxy, many clients: the
                     throughput ratio and CPU per request and per GB, split by process.
- ``cache_stream``:  the cached proxy (issue 15), the whole file, every slice a hit, vs the
                     origin direct.
- ``cache_rate``:    random 4 KiB ranges at c=64 through the cached proxy, all hits, vs the
                     origin direct.
- ``cache_viewers``: 50 viewers of one file at once through a cold cache: bytes the cache
                     fetched upstream over the file size (request collapsing).
- ``cache_first_byte``: an upstream limited to 20 MB/s (nginx ``limit_rate``): the time to
                     the first body byte of a 4 KiB range on a miss and on a hit.

Prints one table (figure, baseline, ratio, target, met) and writes
benchmarks/results/targets.json. A row whose baseline is not installed says so and prints no
ratio. See benchmarks/README.md, "targets". Nothing in src/ is patched (``proxy_server_side``
swaps, in the proxy processes it starts, the class their upstream client is built from).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import pathlib
import resource
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks._disconnect import measure_disconnects
from benchmarks._harness import (
    HOST,
    MEDIA_DIR,
    ROOT,
    BenchmarkError,
    Candidate,
    Clock,
    Server,
    ServerGroup,
    _trio_range_argv,
    _write_nginx_conf,
    add_run_options,
    check_small_range,
    checked,
    cpu_seconds_each,
    fetch_socket,
    find_nginx,
    find_wrk,
    free_port,
    load_1min,
    media_file,
    nginx_argv,
    nginx_version,
    print_table,
    ratio_cell,
    read_head,
    results_header,
    rotated,
    rss_kib,
    run_benchmark,
)
from benchmarks._load import concurrent_streams, memory_rounds, run_wrk, stream_rounds
from benchmarks._passes import measure as measure_in_process
from benchmarks.old_commit import PRE_ISSUE_13, compare, extract_source
from benchmarks.upstream_client import measure_client_cpu
from trio_range.media_files import format_size, parse_size

MEASURES = (
    "origin_stream",
    "proxy_stream",
    "origin_rate",
    "origin_p99",
    "origin_cpu_old",
    "proxy_server_side",
    "passes",
    "proxy_rate",
    "proxy_p99",
    "memory",
    "disconnect",
    "upstream_cpu",
    "workers",
    # issue 15: the slice cache
    "cache_stream",
    "cache_rate",
    "cache_viewers",
    "cache_first_byte",
)
# Issue 14: the proxy's peak RSS under 8 x 1 GiB streams and under a slow reader.
RSS_LIMIT_MIB = 48.0
# "Flat": the proxy's RSS from the first to the last second of the slow read.
RSS_GROWTH_LIMIT_MIB = 1.0
# Issue 14: client disconnect -> the origin sees it.
DISCONNECT_MEDIAN_LIMIT_MS = 2.0
DISCONNECT_MAX_LIMIT_MS = 10.0
# Issue 14: the proxy process's CPU per GB relayed, over the aiohttp proxy process's.
PROXY_CPU_PER_GB_RATIO = 0.5
# passes: requests per count (exact figures: no rounds), and issue 13's targets.
PASSES_REQUESTS, PASSES_REQUESTS_QUICK = 2000, 300
CALLS_LIMIT = 1200.0

# Server names, started on first use (a subset of rows starts only what it needs).
ORIGIN, PROXY = "origin", "proxy"
NGINX, NGINX_PROXY, NGINX_PROXY_256K = "nginx", "nginx-proxy", "nginx-proxy-256k"
AIO_ORIGIN, AIO_PROXY = "aiohttp-origin", "aiohttp-proxy"
# The memory row's own proxies, started by that row: the shared ones have served the load of the
# rows before it, whose leftovers (benchmarks/README.md, "memory") are not streaming memory.
PROXY_MEMORY, AIO_PROXY_MEMORY = "proxy-memory", "aiohttp-proxy-memory"
PROXY_W1, PROXY_W2 = "proxy-w1", "proxy-w2"
# issue 15: cached proxies (each its own cache folder) and a slow upstream.
CACHED, CACHED_COLD = "cached-proxy", "cached-proxy-cold"
SLOW_NGINX, SLOW_CACHED = "nginx-20MBps", "cached-proxy-slow"
VIEWERS = 50
SLOW_RATE = "20m"  # nginx limit_rate: 20 MB/s per connection


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.targets")
    parser.add_argument(
        "--only", help=f"comma-separated rows to measure (default all: {','.join(MEASURES)})"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="check the harness: 1 round, 2 s wrk points, a 256 MiB file, 10 disconnect tries, "
        "a 3 s slow reader (figures not for quoting)",
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3; quick 1)")
    parser.add_argument(
        "--rate-seconds", type=float, help="wrk duration per point (default 10; quick 2)"
    )
    parser.add_argument(
        "--file-size", type=parse_size, help="the streamed file (default 1GiB; quick 256MiB)"
    )
    parser.add_argument("--streams", type=int, default=8, help="memory: concurrent streams")
    parser.add_argument("--slow-seconds", type=float, help="memory: slow reader (default 10)")
    parser.add_argument(
        "--slow-rate", type=parse_size, default=parse_size("1MiB"), help="slow reader bytes/s"
    )
    parser.add_argument("--tries", type=int, help="disconnect tries (default 50; quick 10)")
    parser.add_argument(
        "--worker-clients", type=int, default=128, help="workers: wrk connections (default 128)"
    )
    parser.add_argument(
        "--worker-streams", type=int, default=4, help="workers: concurrent whole-file streams"
    )
    add_run_options(parser, "targets", time_limit_s=2400.0, wrk=True)
    args = parser.parse_args(argv)
    quick = args.quick

    def default(name: str, full: Any, short: Any) -> None:
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)

    default("rounds", 3, 1)
    default("rate_seconds", 10.0, 2.0)
    default("file_size", parse_size("1GiB"), parse_size("256MiB"))
    default("slow_seconds", 10.0, 3.0)
    default("tries", 50, 10)
    only = MEASURES if args.only is None else tuple(args.only.split(","))
    unknown = set(only) - set(MEASURES)
    if unknown:
        parser.error(f"unknown rows: {', '.join(sorted(unknown))}; known: {', '.join(MEASURES)}")
    args.only = [m for m in MEASURES if m in only]
    return run_benchmark(run, args)


# --- servers ------------------------------------------------------------------------------------


class Servers:
    """Every server a row may need, started on first use and stopped when ``group`` closes.

    ``get`` returns None for a baseline that is not installed (nginx, aiohttp); ``missing``
    says why, for the table.
    """

    def __init__(self, group: ServerGroup, nginx: str | None) -> None:
        self.group = group
        self.nginx = nginx
        self.started: dict[str, Server] = {}
        self.missing: dict[str, str] = {}
        if nginx is None:
            for name in (NGINX, NGINX_PROXY, NGINX_PROXY_256K, SLOW_NGINX, SLOW_CACHED):
                self.missing[name] = "nginx not found"
        if importlib.util.find_spec("aiohttp") is None:
            reason = "aiohttp not installed (pip install -e '.[bench]')"
            for name in (AIO_ORIGIN, AIO_PROXY, AIO_PROXY_MEMORY):
                self.missing[name] = reason

    def get(self, name: str) -> Server | None:
        if name in self.missing:
            return None
        if name not in self.started:
            self.started[name] = self._start(name)
        return self.started[name]

    def need(self, name: str) -> Server:
        server = self.get(name)
        if server is None:
            raise BenchmarkError(f"{name}: {self.missing[name]}")
        return server

    def _start(self, name: str) -> Server:
        if name == ORIGIN:
            return self.group.start_origin(name)
        if name in (PROXY, PROXY_MEMORY):
            return self.group.start_proxy(name, self.need(ORIGIN))
        if name in (NGINX, NGINX_PROXY, NGINX_PROXY_256K):
            assert self.nginx is not None
            upstream = None if name == NGINX else self.need(NGINX)
            buffers = 256 if name == NGINX_PROXY_256K else None
            return self.group.start_nginx(
                self.nginx, name, upstream=upstream, proxy_buffer_kib=buffers
            )
        if name in (CACHED, CACHED_COLD, SLOW_CACHED):
            return self._start_cached(name)
        if name == SLOW_NGINX:
            return self._start_slow_nginx()
        port = free_port()
        env: dict[str, str] | None = None
        python = sys.executable
        if name == AIO_ORIGIN:
            argv = [python, "-m", "benchmarks.aiohttp_baseline", "origin", "--port", str(port)]
            argv += ["--media-dir", str(MEDIA_DIR)]
        elif name in (AIO_PROXY, AIO_PROXY_MEMORY):
            argv = [python, "-m", "benchmarks.aiohttp_baseline", "proxy", "--port", str(port)]
            argv += ["--upstream", self.need(AIO_ORIGIN).url]
        elif name in (PROXY_W1, PROXY_W2):
            # As docs/deployment.md runs it: plain hypercorn, settings from the environment.
            workers = "1" if name == PROXY_W1 else "2"
            hypercorn = ROOT / ".venv" / "bin" / "hypercorn"
            argv = [str(hypercorn), "-k", "trio", "-w", workers, "-b", f"{HOST}:{port}"]
            argv.append("trio_range.proxy:create_app()")
            env = {
                "TRIO_RANGE_PROXY_UPSTREAM": self.need(ORIGIN).url,
                "TRIO_RANGE_PROXY_ACCESS_LOG": "false",
            }
        else:
            raise BenchmarkError(f"unknown server {name}")
        return self.group.start(name, argv, port, env=env)

    # --- issue 15 ---
    def _start_cached(self, name: str) -> Server:
        """``trio-range proxy --cache-dir`` (a fresh folder) in front of the origin or nginx."""
        upstream = self.need(SLOW_NGINX if name == SLOW_CACHED else ORIGIN)
        cache_dir = self.group._scratch_dir() / f"{name}-cache"
        port = free_port()
        options = ["--port", str(port), "--upstream", upstream.url, "--cache-dir", str(cache_dir)]
        options += ["--cache-max-bytes", str(4 * 1024**3)]
        return self.group.start(name, _trio_range_argv("proxy", *options), port)

    def _start_slow_nginx(self) -> Server:
        if self.nginx is None:
            raise BenchmarkError("nginx not found")
        port = free_port()
        conf = _write_nginx_conf(
            self.group._scratch_dir() / SLOW_NGINX,
            1024,
            f"""\
    sendfile on;
    server {{
        listen {HOST}:{port};
        location /media/ {{ alias {MEDIA_DIR.resolve()}/; limit_rate {SLOW_RATE}; }}
    }}
""",
        )
        return self.group.start(SLOW_NGINX, nginx_argv(self.nginx, conf), port)

    # --- end issue 15 ---

    def candidate(self, name: str, *names: str) -> Candidate | None:
        """The path client -> names[0] -> names[1] ...; None if a server is missing."""
        servers = [self.get(each) for each in names]
        if any(server is None for server in servers):
            return None
        tiers = tuple(server for server in servers if server is not None)
        return Candidate(name, tiers, " -> ".join(["client", *names]))

    def why_missing(self, *names: str) -> str:
        return "; ".join(sorted({self.missing[n] for n in names if n in self.missing}))


# --- the rows -----------------------------------------------------------------------------------


Row = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Target:
    """What a row must reach: a ratio to its baseline, a limit on our own figure, or nothing
    (report only). The table's text is written from the same numbers that judge the row."""

    at_least_ratio: float | None = None
    at_most_ratio: float | None = None
    at_most: float | None = None
    # What the table says for a row with no target.
    report: str = "report"

    def describe(self, unit: str) -> str:
        if self.at_least_ratio is not None:
            return f">= {self.at_least_ratio}x"
        if self.at_most_ratio is not None:
            return f"<= {self.at_most_ratio}x"
        if self.at_most is not None:
            return f"<= {self.at_most:g} {unit}"
        return self.report

    def met(self, value: float | None, ratio: float | None) -> bool | None:
        """None when there is nothing to judge: no target, or a ratio target with no ratio."""
        if self.at_least_ratio is not None:
            return None if ratio is None else ratio >= self.at_least_ratio
        if self.at_most_ratio is not None:
            return None if ratio is None else ratio <= self.at_most_ratio
        if self.at_most is not None:
            return None if value is None else value <= self.at_most
        return None


def make_row(
    measure: str,
    label: str,
    value: float | None,
    unit: str,
    target: Target,
    *,
    baseline: str,
    baseline_value: float | None,
    missing: str = "",
) -> Row:
    """One line of the table: the figure, its baseline, their ratio, the target and the verdict.

    Without a baseline value (not installed: ``missing`` says why) there is no ratio, and a
    target that is a ratio gets no verdict.
    """
    ratio = None
    if value is not None and baseline_value:
        ratio = value / baseline_value
    return {
        "measure": measure,
        "figure": label,
        "unit": unit,
        "value": value,
        "baseline": baseline,
        "baseline_value": baseline_value,
        "baseline_missing": missing or None,
        "ratio": ratio,
        "target": target.describe(unit),
        "met": target.met(value, ratio),
    }


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(run[key] for run in runs))


def wrk_rounds(
    wrk: str,
    candidates: list[Candidate],
    path: str,
    size: int,
    concurrency: int,
    args: argparse.Namespace,
    clock: Clock,
    title: str,
) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in candidates}
    for candidate in candidates:  # warm-up: connections, pools, code paths
        check_small_range(candidate, path, size)
        run_wrk(wrk, candidate, path, size, concurrency, 1.0, seed=0)
    for round_index in range(args.rounds):
        print(f"{title} round {round_index + 1}/{args.rounds}", flush=True)
        for candidate in rotated(candidates, round_index):
            clock.check()
            result = run_wrk(
                wrk, candidate, path, size, concurrency, args.rate_seconds, seed=round_index + 1
            )
            runs[candidate.name].append(result)
    return runs


class Context:
    """What every row needs: the servers, the file, the options, the clock, wrk."""

    def __init__(
        self,
        servers: Servers,
        args: argparse.Namespace,
        clock: Clock,
        wrk: str | None,
        path: str,
    ) -> None:
        self.servers = servers
        self.args = args
        self.clock = clock
        self.wrk = wrk
        self.path = path
        self.size: int = args.file_size

    def need_wrk(self) -> str:
        if self.wrk is None:
            raise BenchmarkError("wrk not found: apt-get install -y wrk (or leave out its rows)")
        return self.wrk


def measure_origin_stream(ctx: Context) -> tuple[list[Row], dict[str, Any]]:
    s = ctx.servers
    ours = s.candidate("origin", ORIGIN)
    nginx = s.candidate("nginx", NGINX)
    assert ours is not None
    candidates = [c for c in (ours, nginx) if c is not None]
    runs = stream_rounds(
        candidates, ctx.path, ctx.size, ctx.args.rounds, ctx.clock, "origin_stream"
    )
    medians = {name: median_of(r, "mb_s") for name, r in runs.items()}
    rows = [
        make_row(
            "origin_stream",
            f"origin, {format_size(ctx.size)} file, one client",
            medians["origin"],
            "MB/s",
            Target(at_least_ratio=0.9),
            baseline="nginx sendfile",
            baseline_value=medians.get("nginx"),
            missing=s.why_missing(NGINX),
        )
    ]
    return rows, {"runs": runs, "medians_mb_s": medians}


def measure_proxy_stream(ctx: Context) -> tuple[list[Row], dict[str, Any]]:
    s = ctx.servers
    ours = s.candidate("proxy>origin", PROXY, ORIGIN)
    aio = s.candidate("aiohttp pair", AIO_PROXY, AIO_ORIGIN)
    nginx = s.candidate("nginx>nginx", NGINX_PROXY, NGINX)
    nginx_256k = s.candidate("nginx(256k)>nginx", NGINX_PROXY_256K, NGINX)
    assert ours is not None
    candidates = [c for c in (ours, aio, nginx, nginx_256k) if c is not None]
    runs = stream_rounds(candidates, ctx.path, ctx.size, ctx.args.rounds, ctx.clock, "proxy_stream")
    medians = {name: median_of(r, "mb_s") for name, r in runs.items()}
    # The relaying process alone (the origins are not counted): CPU seconds per GB it carried.
    cpu_per_gb = {
        name: statistics.median(run["cpu_s"][server] / (run["bytes"] / 1e9) for run in runs[name])
        for name, server in (("proxy>origin", PROXY), ("aiohttp pair", AIO_PROXY))
        if name in runs
    }
    label = f"proxy, {format_size(ctx.size)} through it, one client"
    rows = [
        make_row(
            "proxy_stream",
            label,
            medians["proxy>origin"],
            "MB/s",
            Target(at_least_ratio=at_least),
            baseline=baseline,
            baseline_value=medians.get(baseline_name),
            missing=s.why_missing(server),
        )
        for baseline, baseline_name, server, at_least in (
            # Issue 14: twice the aiohttp pair (issue 8 asked for 1.0x).
            ("aiohttp pair", "aiohttp pair", AIO_PROXY, 2.0),
            ("nginx proxy_pass", "nginx>nginx", NGINX_PROXY, 0.5),
            # Issue 14's target, against nginx with buffers fit for a relay.
            ("nginx proxy_pass (256k)", "nginx(256k)>nginx", NGINX_PROXY_256K, 1.3),
        )
    ]
    rows.append(
        make_row(
            "proxy_stream",
            "proxy CPU per GB (proxy process)",
            cpu_per_gb["proxy>origin"],
            "s",
            Target(at_most_ratio=PROXY_CPU_PER_GB_RATIO),
            baseline="aiohttp proxy process",
            baseline_value=cpu_per_gb.get("aiohttp pair"),
            missing=s.why_missing(AIO_PROXY),
        )
    )
    return rows, {"runs": runs, "medians_mb_s": medians, "proxy_cpu_s_per_gb": cpu_per_gb}


def rate_medians(
    ctx: Context, measure: str, ours: Candidate, baseline: Candidate | None, concurrency: int
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, float]]]:
    candidates = [c for c in (ours, baseline) if c is not None]
    entries = {c.name: c.entry.name for c in candidates}
    runs = wrk_rounds(
        ctx.need_wrk(), candidates, ctx.path, ctx.size, concurrency, ctx.args, ctx.clock, measure
    )
    medians = {
        name: {
            "requests_per_s": median_of(r, "requests_per_s"),
            "p99_ms": statistics.median(x["latency_p99_us"] / 1000 for x in r),
            "p50_ms": statistics.median(x["latency_p50_us"] / 1000 for x in r),
            "errors": sum(x["errors"] for x in r),
            # The server the client meets (the origin, or the proxy of a pair), over the run.
            "entry_cpu_us_per_request": statistics.median(
                1e6 * x["cpu_s"][entries[name]] / x["requests"] for x in r
            ),
        }
        for name, r in runs.items()
    }
    errors = {name: m["errors"] for name, m in medians.items() if m["errors"]}
    if errors:
        print(f"warning: wrk counted errors in {measure}: {errors}")
    return runs, medians


def measure_origin_rate(ctx: Context) -> tuple[list[Row], dict[str, Any]]:
    label = "origin, random 4 KiB ranges, c=64"
    target = Target(at_least_ratio=1.0)
    rows, details = _origin_wrk(ctx, "origin_rate", 64, label, "requests_per_s", "req/s", target)
    # Issue 13's target (<= 0.5x the pre-issue code's CPU per request) is origin_cpu_old's:
    # here aiohttp's FileResponse origin is the same-run reference, reported, not judged.
    medians = details["medians"]
    rows.append(
        make_row(
            "origin_rate",
            "origin CPU per request, c=64 (origin process)",
            medians["origin"]["entry_cpu_us_per_request"],
            "us",
            Target(report="report (see README)"),
            baseline="aiohttp FileResponse",
            baseline_value=medians.get("aiohttp FileResponse", {}).get("entry_cpu_us_per_request"),
            missing=ctx.servers.why_missing(AIO_ORIGIN),
        )
    )
    return rows, details


def measure_origin_p99(ctx: Context) -> tuple[list[Row], dict[str, Any]]:
    label = "origin, p99 of 4 KiB ranges, c=16"
    target = Target(at_most_ratio=1.0)
    return _origin_wrk(ctx, "origin_p99", 16, label, "p99_ms", "ms", target)


def _origin_wrk(
    ctx: Context,
    measure: str,
    concurrency: int,
    label: str,
    key: str,
    unit: str,
    target: Target,
) -> tuple[list[Row], dict[str, Any]]:
    """The origin against aiohttp's ``FileResponse`` under wrk; one row, our ``key`` over theirs."""
    s = ctx.servers
    ours = s.candidate("origin", ORIGIN)
    aio = s.candidate("aiohttp FileResponse", AIO_ORIGIN)
    assert ours is not None
    runs, medians = rate_medians(ctx, measure, ours, aio, concurrency)
    base = medians.get("aiohttp FileResponse", {})
    rows = [
        make_row(
            measure,
            label,
            medians["origin"][key],
            unit,
            target,
            baseline="aiohttp FileResponse",
            baseline_value=base.get(key),
            missing=s.why_missing(AIO_ORIGIN),
        )
    ]
    return rows, {"runs": runs, "medians": medians}


def measure_passes(ctx: Context) -> tuple[list[Row], dict[str, Any]]:
    """Exact per-request counts, ours and stock Hypercorn's, one connection (issue 13)."""
    requests = PASSES_REQUESTS_QUICK if ctx.args.quick else PASSES_REQUESTS
    figures = {}
    for server in ("ours", "stock"):
        ctx.clock.check()
        figures[server] = measure_in_process(requests, 1, seed=1, server=server)
    ours, stock = figures["ours"], figures["stock"]
    baseline = "same app, stock hypercorn -k trio"
    rows = [
        make_row(
            "passes",
            "origin, scheduler passes per request (exact)",
            ours["passes_per_request"],
            "passes",
            Target(at_most_ratio=0.5),
            baseline=baseline,
            baseline_value=stock["passes_per_request"],
        ),
        make_row(
            "passes",
            "origin, Python calls per request (cProfile)",
            ours["calls_per_request"],
            "calls",
            Target(at_most=CALLS_LIMIT),
            baseline=baseline,
            baseline_value=stock["calls_per_request"],
        ),
    ]
    return rows, {"requests": requests, "figures": figures}


def measure_against_old(ctx: Context, kind: str) -> tuple[list[Row], dict[str, Any]]:
    """CPU per request, today's vs the code before issue 13's, same run (old_commit.py)."""
    if kind == "origin":
        measure, label = "origin_cpu_old", "origin CPU per request, c=64 (origin process)"
    else:
        measure, label = "proxy_server_side", "proxy server side: CPU per request, c=64"
    baseline = f"the same at {PRE_ISSUE_13} (before issue 13)"
    with tempfile.TemporaryDirectory(prefix="old-commit-") as scratch:
        old_src, missing = extract_source(PRE_ISSUE_13, pathlib.Path(scratch))
        if old_src is None:
            row = make_row(
                measure,
                label,
                None,
                "us",
                Target(at_most_ratio=0.5),
                baseline=baseline,
                baseline_value=None,
                missing=missing,
            )
            return [row], {"missing": missing}
        today = ctx.servers.need(ORIGIN) if kind == "origin" else None
        found = compare(
            ctx.servers.group,
            kind,
            old_src,
            ctx.need_wrk(),
            ctx.path,
            ctx.size,
            rounds=ctx.args.rounds,
            seconds=ctx.args.rate_seconds,
            clock=ctx.clock,
            today=today,
        )
    medians = found["medians_us"]
    row = make_row(
        measure,
        label,
        medians["today"],
        "us",
        Target(at_most_ratio=0.5),
        baseline=baseline,
        baseline_value=medians["old"],
    )
    return [row], found


def measure_proxy_rate(ctx: Context) -> tuple[list[Row], dict[str, Any]]:
    label = "proxy, random 4 KiB ranges, c=64"
    target = Target(at_least_ratio=0.6)  # issue 14
    return _proxy_wrk(ctx, "proxy_rate", 64, label, "requests_per_s", "req/s", target)


def measure_proxy_p99(ctx: Context) -> tuple[list[Row], dict[str, Any]]:
    label = "proxy, p99 of 4 KiB ranges, c=16"
    target = Target(at_most_ratio=1.5)  # issue 14
    return _proxy_wrk(ctx, "proxy_p99", 16, label, "p99_ms", "ms", target)


def _proxy_wrk(
    ctx: Context,
    measure: str,
    concurrency: int,
    label: str,
    key: str,
    unit: str,
    target: Target,
) -> tuple[list[Row], dict[str, Any]]:
    """The proxy pair against the aiohttp pair under wrk; one row, our ``key`` over theirs."""
    s = ctx.servers
    ours = s.candidate("proxy>origin", PROXY, ORIGIN)
    aio = s.candidate("aiohttp pair", AIO_PROXY, AIO_ORIGIN)
    assert ours is not None
    runs, medians = rate_medians(ctx, measure, ours, aio, concurrency)
    row = make_row(
        measure,
        label,
        medians["proxy>origin"][key],
        unit,
        target,
        baseline="aiohttp pair",
        baseline_value=medians.get("aiohttp pair", {}).get(key),
        missing=s.why_missing(AIO_PROXY),
    )
    return [row], {"runs": runs, "medians": medians}


def measure_memory(ctx: Context) -> tuple[list[Row], dict[str, Any]]:
    s = ctx.servers
    # Proxies of the row's own, started here: the figure is about streaming (benchmarks/README.md).
    ours = s.candidate("proxy>origin", PROXY_MEMORY, ORIGIN)
    aio = s.candidate("aiohttp pair", AIO_PROXY_MEMORY, AIO_ORIGIN)
    assert ours is not None
    candidates = [c for c in (ours, aio) if c is not None]
    args = ctx.args
    runs, hwm_reset = memory_rounds(candidates, ctx.path, args, ctx.clock)
    medians = {
        name: {
            "streams_peak_rss_mib": median_of(r, "streams_peak_rss_kib") / 1024,
            "slow_peak_rss_mib": median_of(r, "slow_peak_rss_kib") / 1024,
            "slow_growth_mib": median_of(r, "slow_growth_kib") / 1024,
            "rest_rss_mib": median_of(r, "rest_rss_kib") / 1024,
        }
        for name, r in runs.items()
    }
    after_load = _rss_after_rate_run(ctx)
    for name, mib in after_load.items():
        medians[name]["rest_after_rate_rss_mib"] = mib
    mine, base = medians["proxy>origin"], medians.get("aiohttp pair", {})
    streams = f"{args.streams} x {format_size(ctx.size)}"
    rows = [
        make_row(
            "memory",
            label,
            mine.get(key),
            "MiB",
            target,
            baseline="aiohttp proxy (reference)",
            baseline_value=base.get(key),
            missing=s.why_missing(AIO_PROXY),
        )
        for label, key, target in (
            (
                f"proxy peak RSS, {streams} streams",
                "streams_peak_rss_mib",
                Target(at_most=RSS_LIMIT_MIB),
            ),
            (
                f"proxy peak RSS, slow reader {args.slow_seconds:g} s",
                "slow_peak_rss_mib",
                Target(at_most=RSS_LIMIT_MIB),
            ),
            (
                "proxy RSS growth over the slow read (flat)",
                "slow_growth_mib",
                Target(at_most=RSS_GROWTH_LIMIT_MIB),
            ),
            (
                "proxy RSS at rest after the c=64 request-rate run",
                "rest_after_rate_rss_mib",
                Target(),
            ),
        )
    ]
    details = {"runs": runs, "medians": medians, "peak_rss_reset_per_run": hwm_reset}
    if not hwm_reset:
        print("note: could not reset VmHWM; peaks are lifetime peaks")
    return rows, details


def _rss_after_rate_run(ctx: Context) -> dict[str, float]:
    """The shared proxies' RSS (MiB) at rest after a c=64 run of random 4 KiB ranges.

    The run is made here (``rate_seconds``), so the figure does not depend on which rows ran
    before; after ``proxy_rate`` it is a second such run, which adds little (what a c=64 run
    leaves is mostly the allocator's arenas it had to grow, benchmarks/README.md).
    """
    s = ctx.servers
    found: dict[str, float] = {}
    if ctx.wrk is None:
        return found  # the row says "no figure"; the streaming rows need no wrk
    for name, proxy, origin in (
        ("proxy>origin", PROXY, ORIGIN),
        ("aiohttp pair", AIO_PROXY, AIO_ORIGIN),
    ):
        candidate = s.candidate(name, proxy, origin)
        if candidate is None:
            continue
        ctx.clock.check()
        run_wrk(ctx.wrk, candidate, ctx.path, ctx.size, 64, ctx.args.rate_seconds, seed=64)
        found[name] = rss_kib(candidate.proxy) / 1024
    return found


def measure_disconnect(ctx: Context) -> tuple[list[Row], dict[str, Any]]:
    nginx = ctx.servers.nginx
    if nginx is None:
        raise BenchmarkError("disconnect: proxy_throughput's method runs nginx beside; not found")
    delays = measure_disconnects(ctx.path, ctx.args.tries, ctx.clock, nginx)
    ms = {name: [d * 1000 for d in values] for name, values in delays.items()}
    ours, theirs = ms["proxy>origin"], ms.get("nginx>origin")
    summaries: tuple[tuple[str, Callable[[list[float]], float], float], ...] = (
        ("median", statistics.median, DISCONNECT_MEDIAN_LIMIT_MS),
        ("max", max, DISCONNECT_MAX_LIMIT_MS),
    )
    rows = [
        make_row(
            "disconnect",
            f"client disconnect -> origin sees it, {summary} of {len(ours)}",
            summarize(ours),
            "ms",
            Target(at_most=limit),
            baseline="nginx proxy_pass (reference)",
            baseline_value=summarize(theirs) if theirs else None,
        )
        for summary, summarize, limit in summaries
    ]
    return rows, {"delays_ms": ms}


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_split(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]], master: int
) -> dict[str, float]:
    """CPU seconds spent between two snapshots, by process: origin, proxy master, each worker."""
    split = {"origin": sum(after["origin"].values()) - sum(before["origin"].values())}
    proxy_before, proxy_after = before["proxy"], after["proxy"]
    split["proxy master"] = proxy_after.get(master, 0.0) - proxy_before.get(master, 0.0)
    helpers = 0.0
    workers = [pid for pid in sorted(proxy_after) if pid != master]
    for pid in workers:
        spent = proxy_after[pid] - proxy_before.get(pid, 0.0)
        if is_worker(pid):
            split[f"proxy worker {len(split) - 1}"] = spent
        else:
            helpers += spent
    # multiprocessing's resource tracker, which hypercorn's spawned workers bring along.
    split["proxy helpers"] = helpers
    return split


def is_worker(pid: int) -> bool:
    """A process hypercorn spawned to serve (not its multiprocessing resource tracker)."""
    try:
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"spawn_main" in cmdline


def measure_workers(ctx: Context) -> tuple[list[Row], dict[str, Any]]:
    """hypercorn -w 2 vs -w 1 in front of the same origin: rate and streams, CPU by process."""
    s = ctx.servers
    args = ctx.args
    wrk = ctx.need_wrk()
    origin = s.need(ORIGIN)
    configs: dict[str, Candidate] = {}
    for name, server_name in (("1 worker", PROXY_W1), ("2 workers", PROXY_W2)):
        candidate = s.candidate(name, server_name, ORIGIN)
        assert candidate is not None
        configs[name] = candidate
    for candidate in configs.values():
        check_small_range(candidate, ctx.path, ctx.size)
        run_wrk(wrk, candidate, ctx.path, ctx.size, args.worker_clients, 1.0, seed=0)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}

    def snapshot(candidate: Candidate) -> dict[str, dict[int, float]]:
        # The origin's tree is one process; its pid is not the proxy master's.
        proxy_tree = cpu_seconds_each(candidate.entry.process.pid)
        return {"origin": cpu_seconds_each(origin.process.pid), "proxy": proxy_tree}

    for round_index in range(args.rounds):
        print(f"workers round {round_index + 1}/{args.rounds}", flush=True)
        for name in rotated(list(configs), round_index):
            candidate = configs[name]
            master = candidate.entry.process.pid
            ctx.clock.check()
            before, wrk_before = snapshot(candidate), children_cpu_s()
            result = run_wrk(
                wrk,
                candidate,
                ctx.path,
                ctx.size,
                args.worker_clients,
                args.rate_seconds,
                seed=round_index + 1,
            )
            after, wrk_after = snapshot(candidate), children_cpu_s()
            rate_cpu = cpu_split(before, after, master)
            rate_cpu["load generator (wrk)"] = wrk_after - wrk_before
            ctx.clock.check()
            before, gen_before = snapshot(candidate), self_cpu_s()
            seconds = concurrent_streams(candidate, ctx.path, ctx.size, args.worker_streams)
            after, gen_after = snapshot(candidate), self_cpu_s()
            stream_cpu = cpu_split(before, after, master)
            stream_cpu["load generator (this process)"] = gen_after - gen_before
            gigabytes = args.worker_streams * ctx.size / 1e9
            runs[name].append(
                {
                    "requests": result["requests"],
                    "requests_per_s": result["requests_per_s"],
                    "errors": result["errors"],
                    "rate_cpu_ms_per_request": {
                        k: 1000 * v / result["requests"] for k, v in rate_cpu.items()
                    },
                    "streams_mb_s": gigabytes * 1000 / seconds,
                    "stream_cpu_s_per_gb": {k: v / gigabytes for k, v in stream_cpu.items()},
                    "load_1min": load_1min(),
                }
            )

    def proxy_total(split: dict[str, float]) -> float:
        return sum(v for k, v in split.items() if k.startswith("proxy"))

    medians: dict[str, dict[str, Any]] = {}
    for name, rows_of in runs.items():
        keys_rate = sorted({k for r in rows_of for k in r["rate_cpu_ms_per_request"]})
        keys_stream = sorted({k for r in rows_of for k in r["stream_cpu_s_per_gb"]})
        medians[name] = {
            "requests_per_s": median_of(rows_of, "requests_per_s"),
            "streams_mb_s": median_of(rows_of, "streams_mb_s"),
            "cpu_ms_per_request": {
                k: statistics.median(r["rate_cpu_ms_per_request"].get(k, 0.0) for r in rows_of)
                for k in keys_rate
            },
            "cpu_s_per_gb": {
                k: statistics.median(r["stream_cpu_s_per_gb"].get(k, 0.0) for r in rows_of)
                for k in keys_stream
            },
            "proxy_cpu_ms_per_request": statistics.median(
                proxy_total(r["rate_cpu_ms_per_request"]) for r in rows_of
            ),
            "proxy_cpu_s_per_gb": statistics.median(
                proxy_total(r["stream_cpu_s_per_gb"]) for r in rows_of
            ),
        }
    one, two = medians["1 worker"], medians["2 workers"]
    print_cpu_split(medians, args)
    # Two workers on two cores shared with the origin and the load cannot reach 2x; a second
    # worker must not cost more CPU for the same work.
    report = Target(report="report (ceiling < 2x)")
    per_worker = Target(at_most_ratio=1.0)
    rows = [
        make_row(
            "workers",
            label,
            two[key],
            unit,
            target,
            baseline="1 worker",
            baseline_value=one[key],
        )
        for label, key, unit, target in (
            (
                f"2 workers, c={args.worker_clients} 4 KiB ranges",
                "requests_per_s",
                "req/s",
                report,
            ),
            (
                f"2 workers, {args.worker_streams} concurrent streams",
                "streams_mb_s",
                "MB/s",
                report,
            ),
            ("2 workers, proxy CPU per request", "proxy_cpu_ms_per_request", "ms", per_worker),
            ("2 workers, proxy CPU per GB", "proxy_cpu_s_per_gb", "s", per_worker),
        )
    ]
    return rows, {"runs": runs, "medians": medians}


def print_cpu_split(medians: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nworkers: CPU by process, median of {args.rounds}")
    for key, unit in (("cpu_ms_per_request", "ms per request"), ("cpu_s_per_gb", "s per GB")):
        names = sorted({k for m in medians.values() for k in m[key]})
        print(f"  {unit:<16}" + "".join(f"{config:>12}" for config in medians))
        for process in names:
            values = "".join(f"{m[key].get(process, 0.0):>12.3f}" for m in medians.values())
            print(f"    {process:<30}{values}")


# --- issue 15: the slice cache ----------------------------------------------------------------


def cache_stats(server: Server) -> dict[str, Any]:
    with urllib.request.urlopen(server.url + "/stats", timeout=10) as answer:
        document: dict[str, Any] = json.load(answer)
    return document["cache"]  # type: ignore[no-any-return]


def settled_cache_stats(server: Server) -> dict[str, Any]:
    """The cache's figures once two readings 0.2 s apart agree (no fill running)."""
    deadline = time.monotonic() + 60
    previous = cache_stats(server)
    while True:
        time.sleep(0.2)
        current = cache_stats(server)
        if current == previous or time.monotonic() > deadline:
            return current
        previous = current


def warm_cache(candidate: Candidate, path: str, size: int) -> dict[str, Any]:
    """Fetch the whole file through the cached proxy, then wait until every slice is on disk."""
    checked(fetch_socket, candidate.entry, path, {}, size, 0, size)
    deadline = time.monotonic() + 120
    while (stats := cache_stats(candidate.entry))["disk_bytes"] < size:
        if time.monotonic() > deadline:
            raise BenchmarkError(f"cache: {stats['disk_bytes']} of {size} bytes stored")
        time.sleep(0.1)
    return stats


def all_hits(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """What the cache did between two readings: misses must stay 0 for an all-hits row."""
    return {key: after[key] - before[key] for key in ("hit", "miss", "bytes_from_upstream")}


def cached_and_origin(s: Servers) -> tuple[Candidate, Candidate]:
    cached = s.candidate("cached proxy", CACHED, ORIGIN)
    origin = s.candidate("origin", ORIGIN)
    if cached is None or origin is None:
        raise BenchmarkError("the cached proxy or the origin did not start")
    return cached, origin


def measure_cache_stream(ctx: Context) -> tuple[list[Row], dict[str, Any]]:
    cached, origin = cached_and_origin(ctx.servers)
    before = warm_cache(cached, ctx.path, ctx.size)
    runs = stream_rounds(
        [cached, origin], ctx.path, ctx.size, ctx.args.rounds, ctx.clock, "cache_stream"
    )
    cache = all_hits(before, cache_stats(cached.entry))
    medians = {name: median_of(r, "mb_s") for name, r in runs.items()}
    rows = [
        make_row(
            "cache_stream",
            f"cached proxy, {format_size(ctx.size)} file, all hits, one client",
            medians["cached proxy"],
            "MB/s",
            Target(at_least_ratio=0.9),
            baseline="origin direct",
            baseline_value=medians["origin"],
        )
    ]
    return rows, {"runs": runs, "medians": medians, "cache": cache}


def measure_cache_rate(ctx: Context) -> tuple[list[Row], dict[str, Any]]:
    cached, origin = cached_and_origin(ctx.servers)
    before = warm_cache(cached, ctx.path, ctx.size)
    runs, medians = rate_medians(ctx, "cache_rate", cached, origin, 64)
    cache = all_hits(before, cache_stats(cached.entry))
    rows = [
        make_row(
            "cache_rate",
            "cached proxy, random 4 KiB ranges, all hits, c=64",
            medians["cached proxy"]["requests_per_s"],
            "req/s",
            Target(at_least_ratio=0.9),
            baseline="origin direct",
            baseline_value=medians["origin"]["requests_per_s"],
        )
    ]
    return rows, {"runs": runs, "medians": medians, "cache": cache}


def measure_cache_viewers(ctx: Context) -> tuple[list[Row], dict[str, Any]]:
    size = min(ctx.size, parse_size("32MiB" if ctx.args.quick else "256MiB"))
    path = f"/media/{media_file(size).name}"
    cold = ctx.servers.candidate("cold cached proxy", CACHED_COLD, ORIGIN)
    assert cold is not None
    # The readiness probe's own fill may still run: start counting once the cache is quiet.
    before = settled_cache_stats(cold.entry)
    seconds = concurrent_streams(cold, path, size, VIEWERS)
    after = cache_stats(cold.entry)
    fetched = after["bytes_from_upstream"] - before["bytes_from_upstream"]
    rows = [
        make_row(
            "cache_viewers",
            f"{VIEWERS} viewers of one {format_size(size)} file, cold cache: upstream bytes "
            "per file size",
            fetched / size,
            "x",
            Target(at_most=1.05),
            baseline="",
            baseline_value=None,
        )
    ]
    details = {"seconds": seconds, "upstream_bytes": fetched, "size": size}
    return rows, {**details, "collapsed": after["collapsed"] - before["collapsed"]}


def first_byte_ms(server: Server, path: str, headers: dict[str, str]) -> float:
    """Milliseconds from sending a GET to its first body byte, on a fresh connection."""
    started = time.perf_counter()
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        lines = [f"GET {path} HTTP/1.1", f"Host: {server.host}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head, body = read_head(sock, time.monotonic() + 30)
        if not body:
            body = sock.recv(1)
        if not head.startswith(b"HTTP/1.1 206") or not body:
            raise BenchmarkError(f"GET {path}: not a 206 with a body: {head[:40]!r}")
        return (time.perf_counter() - started) * 1000


def measure_cache_first_byte(ctx: Context) -> tuple[list[Row], dict[str, Any]]:
    s = ctx.servers
    slow = s.get(SLOW_CACHED)
    if slow is None:
        raise BenchmarkError(f"cache_first_byte: {s.why_missing(SLOW_CACHED)}")
    tries = 5 if ctx.args.quick else 20
    misses, hits = [], []
    for attempt in range(tries):
        ctx.clock.check()
        start = (attempt * 7919 * 4096) % (ctx.size - 4096)
        headers = {"Range": f"bytes={start}-{start + 4095}"}
        # A new query is a new object for the cache (nginx ignores it): each is a miss.
        misses.append(first_byte_ms(slow, f"{ctx.path}?first-byte={attempt}", headers))
        hits.append(first_byte_ms(slow, f"{ctx.path}?first-byte={attempt}", headers))
    miss, hit = statistics.median(misses), statistics.median(hits)
    rows = [
        make_row(
            "cache_first_byte",
            "upstream at 20 MB/s: first body byte of a 4 KiB range, miss (hit as baseline)",
            miss,
            "ms",
            Target(report="report both"),
            baseline="hit",
            baseline_value=hit,
        )
    ]
    return rows, {"miss_ms": misses, "hit_ms": hits}


# --- end issue 15 ---


def measure_upstream_cpu(ctx: Context) -> tuple[list[Row], dict[str, Any]]:
    """CPU per small request of the proxy's upstream client, ours vs httpx2's (issue 14)."""
    origin = ctx.servers.need(ORIGIN)
    requests = 1000 if ctx.args.quick else 4000
    result = measure_client_cpu(
        origin, ctx.size, rounds=ctx.args.rounds, requests=requests, tasks=8
    )
    medians = result["medians_ms"]
    row = make_row(
        "upstream_cpu",
        "upstream-client CPU per small request",
        medians["trio_range"],
        "ms",
        Target(at_most_ratio=0.5),
        baseline="httpx2's transport",
        baseline_value=medians["httpx2"],
    )
    return [row], result


MEASURE_FUNCTIONS: dict[str, Callable[[Context], tuple[list[Row], dict[str, Any]]]] = {
    "origin_stream": measure_origin_stream,
    "proxy_stream": measure_proxy_stream,
    "origin_rate": measure_origin_rate,
    "origin_p99": measure_origin_p99,
    "origin_cpu_old": lambda ctx: measure_against_old(ctx, "origin"),
    "proxy_server_side": lambda ctx: measure_against_old(ctx, "proxy"),
    "passes": measure_passes,
    "proxy_rate": measure_proxy_rate,
    "proxy_p99": measure_proxy_p99,
    "memory": measure_memory,
    "disconnect": measure_disconnect,
    "upstream_cpu": measure_upstream_cpu,
    "workers": measure_workers,
    # issue 15
    "cache_stream": measure_cache_stream,
    "cache_rate": measure_cache_rate,
    "cache_viewers": measure_cache_viewers,
    "cache_first_byte": measure_cache_first_byte,
}


# --- the run ------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    clock = Clock(args.time_limit_s)
    nginx = find_nginx(args.nginx)
    if nginx is None:
        print("nginx not found: its rows print no ratio")
    wrk = find_wrk(args.wrk)
    file = media_file(args.file_size)
    warm_page_cache(file)
    path = f"/media/{file.name}"
    results: dict[str, Any] = {
        **results_header(
            "targets",
            nginx=nginx_version(nginx) if nginx else None,
            wrk=wrk,
            aiohttp=aiohttp_version(),
        ),
        "quick": args.quick,
        "file_size_bytes": args.file_size,
        "rounds": args.rounds,
        "rate_seconds": args.rate_seconds,
        "measures": {},
    }
    rows: list[Row] = []
    with ServerGroup("targets", ready_path=path) as group:
        servers = Servers(group, nginx)
        ctx = Context(servers, args, clock, wrk, path)
        for measure in args.only:
            clock.record_load(measure)
            print(f"\n== {measure} (load {load_1min():.2f})", flush=True)
            measure_rows, details = MEASURE_FUNCTIONS[measure](ctx)
            rows += measure_rows
            results["measures"][measure] = {"rows": measure_rows, **details}
        results["servers"] = {name: server.port for name, server in servers.started.items()}
        results["baselines_missing"] = servers.missing
    clock.record_load("end")
    results["rows"] = rows
    results["load_averages"] = clock.loads
    print_summary(rows, args)
    clock.print_loads()
    return results


def warm_page_cache(path: pathlib.Path) -> None:
    """Read the file once, so no candidate pays for the disk and the first one is not favoured."""
    with open(path, "rb", buffering=0) as file:
        while file.read(1 << 22):
            pass


def aiohttp_version() -> str | None:
    if importlib.util.find_spec("aiohttp") is None:
        return None
    import aiohttp

    return aiohttp.__version__


def print_summary(rows: list[Row], args: argparse.Namespace) -> None:
    mode = "quick (1 round, short; not for quoting)" if args.quick else f"median of {args.rounds}"
    lines: list[list[str] | str] = []
    for row in rows:
        value = "-" if row["value"] is None else f"{row['value']:.2f} {row['unit']}"
        base_value = "-" if row["baseline_value"] is None else f"{row['baseline_value']:.2f}"
        baseline = row["baseline"] or ""
        if row["baseline_missing"]:
            baseline = f"{baseline}: NOT FOUND"
        met = {True: "yes", False: "NO", None: "-"}[row["met"]]
        lines.append(
            [
                row["figure"],
                value,
                f"  {baseline}",
                base_value,
                ratio_cell(row["ratio"]),
                f"  {row['target']}",
                met,
            ]
        )
        if row["baseline_missing"]:
            lines.append(f"{'':<56}({row['baseline_missing']}: no ratio)")
    # The two-space gaps open the baseline and target cells, as their headings show.
    print_table(
        f"performance targets, {mode}, {os.cpu_count()} cores",
        [
            ("figure", "<54"),
            ("trio_range", ">13"),
            ("  baseline", "<30"),
            ("value", ">11"),
            ("ratio", ">8"),
            ("  target", "<24"),
            ("met", "<4"),
        ],
        lines,
    )


if __name__ == "__main__":
    sys.exit(main())
