"""The proxy's per-request cost in figures a loaded machine does not move (issue 14).

    python -m benchmarks.proxy_hot_path                   # 1000 requests, 1 and 16 connections
    python -m benchmarks.proxy_hot_path --requests 3000 --connections 16 --profile 25

A proxied random 4 KiB range of a 1 MiB file: client -> trio-range proxy -> trio-range origin.
The proxy runs in this process's ``trio.run``; the origin is a ``trio-range origin``
subprocess, so the proxy's figures hold the proxy alone: scheduler passes (an
instrument on the proxy's run only), Python calls (``cProfile`` in the proxy's thread) and the
proxy thread's CPU (``time.thread_time``). The client is benchmarks/_passes.py's blocking
loop in a thread. ``--profile N`` prints the N functions with the most own time.
Writes benchmarks/results/proxy_hot_path.json.
"""

from __future__ import annotations

import argparse
import io
import pathlib
import pstats
import random
import resource
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import trio

from benchmarks._harness import (
    HOST,
    NO_ACCESS_LOG,
    RESULTS_DIR,
    ServerGroup,
    free_port,
    print_table,
    run_benchmark,
)
from benchmarks._passes import FILE_BYTES, _Client, counted_runs
from trio_range.config import ProxyConfig
from trio_range.proxy.app import create_app as create_proxy
from trio_range.server.serving import serve_app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.proxy_hot_path")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--connections", default="1,16", help="comma-separated counts")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", type=int, default=0, help="print the top N by own time")
    parser.add_argument(
        "--profile-sort",
        default="tottime",
        choices=("tottime", "ncalls", "cumulative"),
        help="what --profile ranks by (ncalls: where the calls per request go)",
    )
    parser.add_argument("--output", type=pathlib.Path, default=RESULTS_DIR / "proxy_hot_path.json")
    return run_benchmark(run, parser.parse_args(argv))


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"requests": args.requests, "figures": {}}
    rows = []
    for connections in (int(c) for c in args.connections.split(",")):
        figures = measure(
            args.requests,
            connections,
            args.seed,
            profile_top=args.profile,
            profile_sort=args.profile_sort,
        )
        results["figures"][str(connections)] = figures
        rows.append(
            [
                str(connections),
                f"{figures['passes_per_request']:.2f}",
                f"{figures['calls_per_request']:.0f}",
                f"{figures['cpu_us_per_request']:.0f}",
                f"{figures['system_us_per_request']:.0f}",
                f"{figures['requests_per_s']:.0f}",
            ]
        )
    print_table(
        f"proxy hot path (proxy process only), {args.requests} random 4 KiB ranges",
        [
            ("connections", "<12"),
            ("passes/req", ">11"),
            ("calls/req", ">10"),
            ("CPU us/req", ">11"),
            ("of it kernel", ">13"),
            ("req/s (noisy)", ">14"),
        ],
        rows,
    )
    return results


def measure(
    requests: int,
    connections: int,
    seed: int,
    *,
    profile_top: int = 0,
    profile_sort: str = "tottime",
) -> dict[str, float]:
    """The proxy's per-request figures for ``requests`` over ``connections`` connections."""
    with tempfile.TemporaryDirectory(prefix="proxy-hot-path-") as media:
        data = random.Random(seed).randbytes(FILE_BYTES)
        (pathlib.Path(media) / "f.bin").write_bytes(data)
        with ServerGroup("proxy-hot-path", "/media/f.bin") as servers:
            port = free_port()
            origin = servers.start("origin", _origin_argv(pathlib.Path(media), port), port)
            config = ProxyConfig(port=0, access_log=False, upstream=origin.url)
            return trio.run(
                _measure, config, data, requests, connections, seed, (profile_top, profile_sort)
            )


def _origin_argv(media: pathlib.Path, port: int) -> list[str]:
    # This interpreter and its sys.path (PYTHONPATH included), so a worktree's code runs.
    return [
        sys.executable,
        "-c",
        "import sys; from trio_range.cli import main; sys.exit(main())",
        "origin",
        "--host",
        HOST,
        *NO_ACCESS_LOG,
        "--port",
        str(port),
        "--media-dir",
        str(media),
    ]


async def _measure(
    config: ProxyConfig,
    data: bytes,
    requests: int,
    connections: int,
    seed: int,
    profile_options: tuple[int, str],
) -> dict[str, float]:
    async with trio.open_nursery() as nursery:
        urls: list[str] = await nursery.start(serve_app, create_proxy(config), config)
        host, port = urls[0].removeprefix("http://").rsplit(":", 1)
        client = _Client((host, int(port)), data, connections, seed)
        try:
            counter, profile, cpu_pair, wall = await counted_runs(client, requests, _thread_cpu)
            (user_before, system_before), (user_after, system_after) = cpu_pair
            user, system = user_after - user_before, system_after - system_before
        finally:
            client.close()
        nursery.cancel_scope.cancel()
    stats = pstats.Stats(profile)
    profile_top, profile_sort = profile_options
    if profile_top:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(profile_sort).print_stats(profile_top)
        print(out.getvalue())
    return {
        "passes_per_request": counter.steps / requests,
        "calls_per_request": stats.total_calls / requests,  # type: ignore[attr-defined]
        "cpu_us_per_request": 1e6 * (user + system) / requests,
        "user_us_per_request": 1e6 * user / requests,
        "system_us_per_request": 1e6 * system / requests,
        "requests_per_s": requests / wall,
    }


def _thread_cpu() -> tuple[float, float]:
    """This thread's user and system CPU seconds: the system part is the kernel's share (the
    loopback sockets' TCP work is charged to the sending thread)."""
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime, usage.ru_stime


if __name__ == "__main__":
    sys.exit(main())
