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
import statistics
import sys
from collections.abc import Sequence
from typing import Any

from benchmarks._disconnect import READ_BEFORE_LEAVING_BYTES, measure_disconnects
from benchmarks._harness import (
    SMALL_RANGE_BYTES,
    BenchmarkError,
    Candidate,
    Clock,
    ServerGroup,
    add_run_options,
    check_small_range,
    checked,
    fetch_socket,
    find_nginx,
    find_wrk,
    media_file,
    nginx_version,
    print_table,
    ratio_cell,
    results_header,
    rotated,
    rss_kib,
    run_benchmark,
)
from benchmarks._load import memory_rounds, run_wrk, stream_rounds
from trio_range.media_files import format_size, parse_size


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
    add_run_options(parser, "proxy_throughput", time_limit_s=1800.0, wrk=True)
    args = parser.parse_args(argv)
    figures = set(args.figures.split(","))
    unknown = figures - {"stream", "ranges", "memory", "disconnect"}
    if unknown:
        parser.error(f"unknown figures: {', '.join(sorted(unknown))}")
    args.figures = figures
    return run_benchmark(run, args)


def run(args: argparse.Namespace) -> dict[str, Any]:
    clock = Clock(args.time_limit_s)
    nginx = find_nginx(args.nginx)
    if nginx is None:
        raise BenchmarkError("nginx not found: every figure here needs its nginx baseline")
    wrk = find_wrk(args.wrk)
    if "ranges" in args.figures and wrk is None:
        raise BenchmarkError(
            "wrk not found: apt-get install -y wrk (or leave out --figures ranges)"
        )
    path = f"/media/{media_file(args.file_size).name}"
    results: dict[str, Any] = {
        **results_header("proxy_throughput", nginx=nginx_version(nginx), wrk=wrk),
        "file_size_bytes": args.file_size,
        "rounds": args.rounds,
    }
    if args.figures & {"stream", "ranges", "memory"}:
        with ServerGroup("proxy-throughput", ready_path=path) as group:
            candidates = start_candidates(group, args, nginx)
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
        results["disconnect"] = disconnect_figure(path, args, clock, nginx)
    clock.record_load("end")
    results["load_averages"] = clock.loads
    clock.print_loads()
    return results


# --- servers ---------------------------------------------------------------------------------


def start_candidates(group: ServerGroup, args: argparse.Namespace, nginx: str) -> list[Candidate]:
    """Start every server (stopped when ``group`` closes) and name the paths through them."""
    origin = group.start_origin("origin")
    nginx_static = group.start_nginx(nginx, "nginx-static")
    proxy = group.start_proxy("proxy", origin)
    nginx_proxy = group.start_nginx(nginx, "nginx-proxy", upstream=nginx_static)
    candidates = [
        Candidate(
            "proxy>origin", (proxy, origin), "client -> trio-range proxy -> trio-range origin"
        ),
        Candidate("origin", (origin,), "client -> trio-range origin"),
        Candidate(
            "nginx>nginx",
            (nginx_proxy, nginx_static),
            "client -> nginx proxy_pass (proxy_buffering off, keep-alive upstream) -> nginx static",
        ),
    ]
    if not args.no_proxy_to_nginx:
        proxy_nginx = group.start_proxy("proxy-to-nginx", nginx_static)
        candidates.append(
            Candidate(
                "proxy>nginx",
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
        check_small_range(candidate, path, size)


# --- figure 1: one whole-file stream ------------------------------------------------------------


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
    print_figure(
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
    print_figure(
        f"2. random {SMALL_RANGE_BYTES} B ranges, wrk, {args.rate_seconds:g} s per point, "
        f"median of {args.rounds} (requests/s: higher is better; p99: lower is better)",
        names,
        table_rows,
        table_ratios,
    )
    if errors:
        print(f"warning: wrk counted errors (socket errors, timeouts, statuses >= 400): {errors}")
    return {"runs": runs, "medians": medians, "ratios": all_ratios, "errors": errors}


# --- figure 3: the proxy's memory -------------------------------------------------------------


def memory_figure(
    candidates: list[Candidate], path: str, args: argparse.Namespace, clock: Clock
) -> dict[str, Any]:
    """Peak RSS of each proxy process with N concurrent streams and with one slow reader."""
    proxies = [c for c in candidates if c.name in ("proxy>origin", "nginx>nginx")]
    rest_before = {c.name: rss_kib(c.proxy) for c in proxies}
    runs, hwm_reset = memory_rounds(proxies, path, args, clock)
    rest_after = {c.name: rss_kib(c.proxy) for c in proxies}
    medians = {
        name: {
            "rest_rss_mib": rest_before[name] / 1024,
            "streams_peak_rss_mib": statistics.median(r["streams_peak_rss_kib"] for r in rows)
            / 1024,
            "slow_peak_rss_mib": statistics.median(r["slow_peak_rss_kib"] for r in rows) / 1024,
            "slow_growth_mib": statistics.median(r["slow_growth_kib"] for r in rows) / 1024,
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
    print_figure(
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


# --- figure 4: disconnect propagation, in process ---------------------------------------------


def disconnect_figure(
    path: str, args: argparse.Namespace, clock: Clock, nginx: str
) -> dict[str, Any]:
    delays = measure_disconnects(path, args.tries, clock, nginx)
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
    print_figure(
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
        "read_before_leaving_bytes": READ_BEFORE_LEAVING_BYTES,
    }


# --- output -----------------------------------------------------------------------------------


def print_figure(
    title: str,
    columns: list[str],
    rows: list[tuple[str, dict[str, Any], str]],
    ratios: dict[str, dict[str, float]],
) -> None:
    """One row per figure, one column per candidate, then the ratios of that row."""
    ratio_names = sorted({name for by_row in ratios.values() for name in by_row})
    width = max(len(label) for label, _, _ in rows) + 2
    print_table(
        title,
        [("", f"<{width}"), *((c, ">13") for c in columns), *((r, ">28") for r in ratio_names)],
        [
            [
                label,
                *("-" if values.get(c) is None else fmt.format(values[c]) for c in columns),
                # Blank where the row has no ratios at all, "-" where one could not be taken.
                *(
                    ratio_cell(ratios[label].get(name)) if label in ratios else ""
                    for name in ratio_names
                ),
            ]
            for label, values, fmt in rows
        ],
    )


if __name__ == "__main__":
    sys.exit(main())
