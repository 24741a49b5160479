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
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from benchmarks._harness import (
    BenchmarkError,
    cpu_seconds,
    free_port,
    run_and_save,
    run_server,
)
from benchmarks.origin_throughput import RESULTS_DIR, ROOT
from benchmarks.proxy_throughput import load_1min, rotated

HOST = "127.0.0.1"
BODY_BYTES = 4096
CANDIDATES = ("hypercorn-trio", "hypercorn-asyncio", "quart-trio", "aiohttp")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--wrk", default="wrk")
    parser.add_argument("--output", type=pathlib.Path, default=RESULTS_DIR / "stack_floor.json")
    return run_and_save(run, parser.parse_args(argv))


def _argv(name: str, port: int) -> list[str]:
    python = str(ROOT / ".venv" / "bin" / "python")
    bind = ["--bind", f"{HOST}:{port}"]
    if name == "aiohttp":
        return [python, "-m", "benchmarks.floor_apps", "aiohttp", str(port)]
    worker = "asyncio" if name == "hypercorn-asyncio" else "trio"
    app = "quart_app" if name == "quart-trio" else "asgi_app"
    return [python, "-m", "hypercorn", "-k", worker, *bind, f"benchmarks.floor_apps:{app}"]


def _wrk(args: argparse.Namespace, port: int, pid: int) -> dict[str, float]:
    argv = [args.wrk, "-t1", f"-c{args.concurrency}", f"-d{args.seconds:g}s"]
    argv.append(f"http://{HOST}:{port}/media/x")
    before = cpu_seconds(pid)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=args.seconds + 60)
    cpu = cpu_seconds(pid) - before
    requests = [line for line in done.stdout.splitlines() if "requests in" in line]
    rates = [line for line in done.stdout.splitlines() if line.startswith("Requests/sec:")]
    if done.returncode != 0 or not requests or not rates or "Non-2xx" in done.stdout:
        raise BenchmarkError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    count = int(requests[0].split()[0])
    return {"requests_per_s": float(rates[0].split()[1]), "cpu_ms_per_request": 1000 * cpu / count}


def run(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in CANDIDATES}
    for round_number in range(args.rounds):
        print(f"round {round_number + 1}/{args.rounds} (load {load_1min():.2f})", flush=True)
        for name in rotated(CANDIDATES, round_number):
            port = free_port(HOST)
            with run_server(
                name,
                _argv(name, port),
                host=HOST,
                port=port,
                log_path=RESULTS_DIR / "logs" / f"stack_floor-{name}.log",
                ready_path="/media/x",
            ) as server:
                runs[name].append(_wrk(args, port, server.process.pid))
    medians = {
        name: {key: statistics.median(run[key] for run in results) for key in results[0]}
        for name, results in runs.items()
    }
    base = medians["aiohttp"]
    print(f"\nper-request floor, c={args.concurrency}, median of {args.rounds}")
    print(f"{'server':<20}{'req/s':>10}{'CPU ms/req':>12}{'req/s vs aiohttp':>18}")
    for name in CANDIDATES:
        figure = medians[name]
        ratio = figure["requests_per_s"] / base["requests_per_s"]
        print(
            f"{name:<20}{figure['requests_per_s']:>10.0f}"
            f"{figure['cpu_ms_per_request']:>12.3f}{ratio:>17.2f}x"
        )
    print(json.dumps({"load_1min_end": load_1min()}))
    settings = {key: str(value) for key, value in vars(args).items()}
    return {"runs": runs, "medians": medians, "body_bytes": BODY_BYTES, "args": settings}


if __name__ == "__main__":
    sys.exit(main())
