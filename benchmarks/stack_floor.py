"""The request-rate floor of the stack: what a do-nothing app costs on each server.

    python -m benchmarks.stack_floor                  # 3 interleaved rounds of 6 s per server
    python -m benchmarks.stack_floor --rounds 5 --seconds 10

Every candidate answers every request with the same 4 KiB 206 and does nothing else, on one
process, driven by wrk (``-t1 -c64``, keep-alive). The figures are requests/s and the server's
CPU milliseconds per request; the ratios are to aiohttp's. They say how much of trio_range's
per-request cost is the stack it must run on (Hypercorn's trio worker, Quart-Trio), which no
change in trio_range can take out:

- ``hypercorn-trio``: a raw ASGI app under ``hypercorn -k trio``;
- ``hypercorn-asyncio``: the same app under ``hypercorn -k asyncio``;
- ``quart-trio``: a Quart-Trio app with one route, under ``hypercorn -k trio``;
- ``aiohttp``: an aiohttp app with one route (the design trio_range replaces).

Writes benchmarks/results/stack_floor.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
from collections.abc import Sequence
from typing import Any

from benchmarks._harness import (
    HOST,
    RESULTS_DIR,
    ROOT,
    ServerGroup,
    cpu_seconds,
    free_port,
    load_1min,
    print_table,
    ratio_cell,
    rotated,
    run_benchmark,
)
from benchmarks._load import wrk_fixed_request

BODY_BYTES = 4096
CANDIDATES = ("hypercorn-trio", "hypercorn-asyncio", "quart-trio", "aiohttp")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--wrk", default="wrk")
    parser.add_argument("--output", type=pathlib.Path, default=RESULTS_DIR / "stack_floor.json")
    return run_benchmark(run, parser.parse_args(argv))


def _argv(name: str, port: int) -> list[str]:
    python = str(ROOT / ".venv" / "bin" / "python")
    bind = ["--bind", f"{HOST}:{port}"]
    if name == "aiohttp":
        return [python, "-m", "benchmarks.floor_apps", "aiohttp", str(port)]
    worker = "asyncio" if name == "hypercorn-asyncio" else "trio"
    app = "quart_app" if name == "quart-trio" else "asgi_app"
    return [python, "-m", "hypercorn", "-k", worker, *bind, f"benchmarks.floor_apps:{app}"]


def _wrk(args: argparse.Namespace, port: int, pid: int) -> dict[str, float]:
    before = cpu_seconds(pid)
    requests, per_s = wrk_fixed_request(
        args.wrk, f"http://{HOST}:{port}/media/x", args.concurrency, args.seconds
    )
    cpu = cpu_seconds(pid) - before
    return {"requests_per_s": per_s, "cpu_ms_per_request": 1000 * cpu / requests}


def run(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in CANDIDATES}
    for round_number in range(args.rounds):
        print(f"round {round_number + 1}/{args.rounds} (load {load_1min():.2f})", flush=True)
        for name in rotated(CANDIDATES, round_number):
            port = free_port()
            with ServerGroup("stack-floor", ready_path="/media/x") as group:
                server = group.start(name, _argv(name, port), port)
                runs[name].append(_wrk(args, port, server.process.pid))
    medians = {
        name: {key: statistics.median(run[key] for run in results) for key in results[0]}
        for name, results in runs.items()
    }
    base = medians["aiohttp"]
    print_table(
        f"per-request floor, c={args.concurrency}, median of {args.rounds}",
        [("server", "<20"), ("req/s", ">10"), ("CPU ms/req", ">12"), ("req/s vs aiohttp", ">18")],
        [
            [
                name,
                f"{medians[name]['requests_per_s']:.0f}",
                f"{medians[name]['cpu_ms_per_request']:.3f}",
                ratio_cell(medians[name]["requests_per_s"] / base["requests_per_s"]),
            ]
            for name in CANDIDATES
        ],
    )
    print(json.dumps({"load_1min_end": load_1min()}))
    settings = {key: str(value) for key, value in vars(args).items()}
    return {"runs": runs, "medians": medians, "body_bytes": BODY_BYTES, "args": settings}


if __name__ == "__main__":
    sys.exit(main())
