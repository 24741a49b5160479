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
import statistics
import sys
from collections.abc import Sequence
from typing import Any

from benchmarks._harness import (
    CLIENTS,
    Clock,
    RssSampler,
    Server,
    ServerGroup,
    add_run_options,
    checked,
    cpu_seconds,
    find_nginx,
    hwm_kib,
    media_file,
    print_table,
    ratio_cell,
    reset_peak_rss,
    results_header,
    rss_kib,
    run_benchmark,
)
from trio_range.media_files import format_size, parse_size

# Not block- or page-aligned, so an off-by-one in the range engine shows in the sample check.
RANGE_START = 123_456_789


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
    add_run_options(parser, "origin_throughput", time_limit_s=900.0, wrk=False)
    args = parser.parse_args(argv)
    if args.range_size > args.file_size - RANGE_START:
        parser.error("--range-size does not fit in --file-size after the range start")
    return run_benchmark(run, args)


def run(args: argparse.Namespace) -> dict[str, Any]:
    clock = Clock(args.time_limit_s)
    url_path = f"/media/{media_file(args.file_size).name}"
    range_end = RANGE_START + args.range_size - 1  # inclusive, as on the wire

    nginx = find_nginx(args.nginx)
    if nginx is None:
        print(
            f"nginx not found ({args.nginx or 'not on PATH, not /usr/sbin/nginx'}): "
            "measuring trio_range alone, no ratios"
        )

    with ServerGroup("origin-throughput", ready_path=url_path) as group:
        servers = [group.start_origin("trio_range")]
        nginx_server = None
        if nginx is not None:
            nginx_server = group.start_nginx(nginx, "nginx")
            servers.append(nginx_server)
        return measure(servers, args, url_path, range_end, clock, nginx=nginx_server)


def measure(
    servers: list[Server],
    args: argparse.Namespace,
    url_path: str,
    range_end: int,
    clock: Clock,
    *,
    nginx: Server | None,
) -> dict[str, Any]:
    size = args.file_size
    range_header = {"Range": f"bytes={RANGE_START}-{range_end}"}

    # Warm-up: pulls the file into the page cache (both servers read the same file) and runs
    # each server's code paths once before the clock matters.
    for server in servers:
        clock.check()
        checked(CLIENTS["socket"], server, url_path, {}, size, 0, size)

    client_name, calibration = pick_client(args.client, nginx, url_path, size, clock)
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
        per_server[server.name]["rss_at_rest_kib"] = rss_kib(server)
    hwm_reset = True
    for round_index in range(args.rounds):
        print(f"round {round_index + 1}/{args.rounds}", flush=True)
        for server in servers:
            clock.check()
            hwm_reset = reset_peak_rss(server.process.pid) and hwm_reset
            cpu_before = cpu_seconds(server.process.pid)
            with RssSampler(server.process.pid) as sampler:
                fetch = checked(fetcher, server, url_path, {}, size, 0, size)
            cpu_used = cpu_seconds(server.process.pid) - cpu_before
            row = per_server[server.name]
            row["whole_mb_s"].append(fetch.mb_per_s)
            row["whole_cpu_percent"].append(100 * cpu_used / fetch.seconds)
            row["peak_rss_kib"].append(hwm_kib(server))
            row["sampled_rss_kib"].append(sampler.peak_kib)
        for server in servers:
            clock.check()
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
    print_medians(medians, ratios, size, args.range_size, client_name, calibration)
    if not hwm_reset:
        print("note: could not reset VmHWM; peak RSS is each server's lifetime peak")
    return {
        **results_header("origin_throughput", load_average_1min_at_end=os.getloadavg()[0]),
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
    choice: str, nginx: Server | None, url_path: str, size: int, clock: Clock
) -> tuple[str, dict[str, float]]:
    """Measure each client against nginx, the fastest server here, and keep the faster one.

    A client slower than nginx would cap nginx's figure and flatter the ratio.
    """
    if nginx is None:
        return ("socket" if choice == "auto" else choice), {}
    calibration: dict[str, float] = {}
    for name, fetcher in CLIENTS.items():
        clock.check()
        calibration[name] = checked(fetcher, nginx, url_path, {}, size, 0, size).mb_per_s
    print(
        "client alone against nginx, whole file: "
        + ", ".join(f"{name} {mb_s:.0f} MB/s" for name, mb_s in calibration.items())
    )
    if choice == "auto":
        choice = max(calibration, key=lambda name: calibration[name])
    return choice, calibration


def print_medians(
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
    columns = [("median", "<36"), *((name, ">12") for name in names)]
    if ratios is not None:
        columns.append(("trio_range/nginx", ">18"))
    print_table(
        "",
        columns,
        [
            [label, *(fmt.format(medians[n][key]) for n in names)]
            + ([ratio_cell(ratios[key])] if ratios is not None else [])
            for label, key, fmt in rows
        ],
    )
    if calibration:
        print(f"client: {client} ({calibration[client]:.0f} MB/s alone against nginx)")
    else:
        print(f"client: {client}")


if __name__ == "__main__":
    sys.exit(main())
