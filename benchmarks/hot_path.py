"""The origin's per-request cost in figures a loaded machine does not move (issue 13).

    python -m benchmarks.hot_path                      # 1000 requests, 1 and 16 connections
    python -m benchmarks.hot_path --requests 5000 --connections 1,16 --servers ours

For trio_range's server and, as the same run's baseline, the same origin app on stock
``hypercorn.trio.serve``: scheduler passes, Python calls and CPU per request (how each is
counted: benchmarks/_passes.py). Writes benchmarks/results/hot_path.json.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

from benchmarks._harness import RESULTS_DIR, print_table, run_benchmark
from benchmarks._passes import SERVERS, figures_row, measure


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hot_path")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--connections", default="1,16", help="comma-separated counts")
    parser.add_argument("--servers", default=",".join(SERVERS), help="ours,stock or one")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=pathlib.Path, default=RESULTS_DIR / "hot_path.json")
    return run_benchmark(run, parser.parse_args(argv))


def run(args: argparse.Namespace) -> dict[str, Any]:
    servers = args.servers.split(",")
    results: dict[str, Any] = {"requests": args.requests, "figures": {}}
    rows = []
    for connections in (int(c) for c in args.connections.split(",")):
        figures = {
            server: measure(args.requests, connections, args.seed, server) for server in servers
        }
        results["figures"][str(connections)] = figures
        for server, each in figures.items():
            rows.append(figures_row(server, connections, each, figures.get("stock")))
    print_table(
        f"origin hot path, {args.requests} random 4 KiB ranges",
        [
            ("server", "<8"),
            ("connections", "<12"),
            ("passes/req", ">11"),
            ("calls/req", ">10"),
            ("CPU us/req", ">11"),
            ("CPU vs stock", ">13"),
            ("req/s (noisy)", ">14"),
        ],
        rows,
    )
    return results


if __name__ == "__main__":
    sys.exit(main())
