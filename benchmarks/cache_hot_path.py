"""A cache hit's per-request cost next to the origin's, in figures load does not move (issue 15).

    python -m benchmarks.cache_hot_path                   # 1000 requests, 1 and 16 connections
    python -m benchmarks.cache_hot_path --file-mib 64 --requests 5000 --profile 25

The ``cache_rate`` target (cached proxy, random 4 KiB ranges, all hits, >= 0.9x the origin
direct) compares two request paths: the origin's (path resolution, stat, range plan, one
sendfile) and a hit's (the proxy's request path, the cache lookup, the slice's file, one
sendfile). Both run in this process, the cached proxy in front of the origin, the cache warmed
first (every slice on disk), so no request of the measured runs reaches the origin: scheduler
passes, Python calls and CPU per request are counted as benchmarks/_passes.py counts them for
the origin, for the origin direct and for the hit, in the same run. ``--profile N`` prints the
hit's N functions with the most calls of their own (where the calls per request go).
"""

from __future__ import annotations

import argparse
import cProfile
import pathlib
import pstats
import random
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import trio

from benchmarks._harness import (
    RESULTS_DIR,
    BenchmarkError,
    print_table,
    run_benchmark,
)
from benchmarks._passes import cpu_per_request, figures_row, measure_url
from trio_range.config import OriginConfig, ProxyConfig
from trio_range.origin.app import create_app as create_origin
from trio_range.proxy.app import create_app as create_proxy
from trio_range.server.serving import serve_app

TARGET = b"/media/f.bin"
WARM_TIMEOUT_S = 60.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cache_hot_path")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--connections", default="1,16", help="comma-separated counts")
    parser.add_argument("--file-mib", type=int, default=16, help="file size (1 MiB slices)")
    parser.add_argument(
        "--cpu-rounds", type=int, default=5, help="CPU samples of each, alternated (min kept)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", type=int, default=0, help="print the N busiest functions")
    parser.add_argument("--output", type=pathlib.Path, default=RESULTS_DIR / "cache_hot_path.json")
    return run_benchmark(run, parser.parse_args(argv))


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = random.Random(args.seed).randbytes(args.file_mib << 20)
    results: dict[str, Any] = {"requests": args.requests, "file_bytes": len(data), "figures": {}}
    rows = []
    with tempfile.TemporaryDirectory(prefix="cache-hot-path-media-") as scratch:
        media = pathlib.Path(scratch)
        (media / "f.bin").write_bytes(data)
        for connections in (int(c) for c in args.connections.split(",")):
            figures = trio.run(_measure, args, data, media, connections)
            results["figures"][str(connections)] = figures
            for server, each in figures.items():
                rows.append(figures_row(server, connections, each, figures["origin"]))
    print_table(
        f"cache hit vs origin, {args.requests} random 4 KiB ranges of {args.file_mib} MiB",
        [
            ("server", "<14"),
            ("connections", "<12"),
            ("passes/req", ">11"),
            ("calls/req", ">10"),
            (f"CPU us/req (min of {args.cpu_rounds})", ">24"),
            ("CPU vs origin", ">14"),
            ("req/s (noisy)", ">14"),
        ],
        rows,
    )
    return results


async def _measure(
    args: argparse.Namespace, data: bytes, media: pathlib.Path, connections: int
) -> dict[str, dict[str, Any]]:
    origin_config = OriginConfig(port=0, access_log=False, media_dir=media)
    with tempfile.TemporaryDirectory(prefix="cache-hot-path-") as cache_dir:
        async with trio.open_nursery() as nursery:
            origin_urls: list[str] = await nursery.start(
                serve_app, create_origin(origin_config), origin_config
            )
            proxy_config = ProxyConfig(
                port=0,
                access_log=False,
                upstream=origin_urls[0],
                cache_dir=cache_dir,
                cache_max_bytes=max(4 * len(data), 1 << 30),
                cache_default_ttl_s=24 * 3600.0,  # every request of the run a hit
            )
            proxy_urls: list[str] = await nursery.start(
                serve_app, create_proxy(proxy_config), proxy_config
            )
            proxy = proxy_urls[0]
            await _warm(proxy, data, pathlib.Path(cache_dir))
            before = await _cache_counts(proxy)
            figures: dict[str, dict[str, Any]] = {
                "origin": await measure_url(origin_urls[0], data, args.requests, connections, 1),
                "cache hit": await measure_url(
                    proxy,
                    data,
                    args.requests,
                    connections,
                    1,
                    on_profile=_printer(args, connections),
                ),
            }
            # CPU is the one figure load moves: samples of both, alternated, the least of each.
            samples: dict[str, list[float]] = {"origin": [], "cache hit": []}
            for _ in range(args.cpu_rounds):
                for name, url in (("origin", origin_urls[0]), ("cache hit", proxy)):
                    cpu = await cpu_per_request(url, data, args.requests, connections, 3)
                    samples[name].append(cpu)
            for name, cpus in samples.items():
                figures[name]["cpu_us_per_request_samples"] = cpus
                figures[name]["cpu_us_per_request"] = min(cpus)
            after = await _cache_counts(proxy)
            nursery.cancel_scope.cancel()
    not_hits = {name: after[name] - before[name] for name in ("miss", "revalidated", "bypass")}
    if any(not_hits.values()):
        raise BenchmarkError(f"not every request was a hit: {not_hits}")
    return figures


def _printer(
    args: argparse.Namespace, connections: int
) -> Callable[[cProfile.Profile], None] | None:
    if not args.profile:
        return None

    def print_profile(profile: cProfile.Profile) -> None:
        print(f"\ncache hit, {connections} connection(s), {args.requests} requests:")
        pstats.Stats(profile).sort_stats("ncalls").print_stats(args.profile)

    return print_profile


async def _warm(url: str, data: bytes, cache_dir: pathlib.Path) -> None:
    """Fetch the whole file through the proxy, then wait until every slice is on disk."""
    slices = -(-len(data) // (1 << 20))
    async with httpx.AsyncClient(timeout=WARM_TIMEOUT_S) as client:
        response = await client.get(url + TARGET.decode())
        if response.content != data:
            raise BenchmarkError("the cached proxy sent wrong bytes while warming")

    def stored() -> int:
        return len([p for p in cache_dir.glob("objects/*/*") if p.suffix[1:].isdigit()])

    with trio.move_on_after(WARM_TIMEOUT_S):
        while True:  # the slices are written after the answer: poll, bounded
            if await trio.to_thread.run_sync(stored) >= slices:
                return
            await trio.sleep(0.05)
    raise BenchmarkError(f"the {slices} slices were not on disk after {WARM_TIMEOUT_S} s")


async def _cache_counts(url: str) -> dict[str, int]:
    async with httpx.AsyncClient(timeout=WARM_TIMEOUT_S) as client:
        stats = (await client.get(url + "/stats")).json()
    cache: dict[str, int] = stats.get("cache", {})
    return cache


if __name__ == "__main__":
    sys.exit(main())
