"""Upstream-client CPU per small request: httpx2's transport against trio_range's, same run.

    python -m benchmarks.upstream_client [--rounds 5] [--requests 4000] [--tasks 8] [--blocks 8]

One ``trio-range origin`` process serves a deterministic file. This process drives, in turn,
httpx2's ``AsyncHTTPTransport`` (what the proxy used until issue 14) and trio_range's
``UpstreamTransport`` (proxy/transport.py) with the same loop: ``--tasks`` tasks sharing one
transport (a pool as large as the tasks), each sending 4 KiB Range GETs at random offsets and
reading the body with ``aiter_raw``. The figure is this process's CPU time (user + system, from
``time.process_time``) per request: the client's cost alone, the origin's CPU is in another
process. Within a round both transports stay open and take turns in ``--blocks`` blocks
(A B B A ...): on a shared machine the load changes within seconds, and one client's whole
round running in a busier moment moved the ratio by a fifth. Rounds rotate who starts;
medians and the ratio ours / httpx2 are printed (``make bench`` shows the same row,
benchmarks/targets.py ``upstream_cpu``).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx2
import trio

from benchmarks._harness import (
    SEED,
    SMALL_RANGE_BYTES,
    BenchmarkError,
    Server,
    ServerGroup,
    media_file,
    rotated,
    run_benchmark,
)
from trio_range.media_files import expected_bytes, parse_size
from trio_range.proxy.transport import UpstreamTransport

CLIENTS = ("httpx2", "trio_range")


def make_transport(client: str, url: str, pool_size: int) -> httpx2.AsyncBaseTransport:
    if client == "httpx2":
        limits = httpx2.Limits(max_connections=pool_size, max_keepalive_connections=pool_size)
        return httpx2.AsyncHTTPTransport(limits=limits, retries=0)
    return UpstreamTransport(
        url,
        pool_size=pool_size,
        keep_alive_s=4.0,
        connect_timeout_s=5.0,
        read_timeout_s=60.0,
        pool_timeout_s=10.0,
    )


async def drive(
    transport: httpx2.AsyncBaseTransport, url: str, size: int, tasks: int, requests: int
) -> None:
    """``requests`` 4 KiB Range GETs through ``transport`` from ``tasks`` tasks."""
    left = iter(range(requests))
    checked: list[bool] = []
    # As the proxy sends them (proxy/upstream.py): the URL parsed once, the path as the
    # "target" extension, which both transports honour.
    base = httpx2.URL(url)
    target = {"target": base.raw_path}

    async def task(index: int) -> None:
        rng = random.Random(index)
        for _ in left:
            start = rng.randrange(0, size - SMALL_RANGE_BYTES)
            request = httpx2.Request(
                "GET",
                base,
                headers={"Range": f"bytes={start}-{start + SMALL_RANGE_BYTES - 1}"},
                extensions=target,
            )
            response = await transport.handle_async_request(request)
            try:
                body = b"".join([chunk async for chunk in response.aiter_raw()])
            finally:
                await response.aclose()
            if response.status_code != 206 or len(body) != SMALL_RANGE_BYTES:
                raise BenchmarkError(f"{response.status_code}, {len(body)} bytes for {start}")
            if not checked:
                checked.append(body == expected_bytes(size, start, SMALL_RANGE_BYTES, seed=SEED))

    async with trio.open_nursery() as nursery:
        for index in range(tasks):
            nursery.start_soon(task, index)
    if checked != [True]:
        raise BenchmarkError("wrong bytes in the first answer")


async def alternate(
    url: str, size: int, tasks: int, requests: int, blocks: int, first: int
) -> dict[str, float]:
    """CPU ms per request of each client, its ``requests`` run in ``blocks`` alternating blocks.

    Both transports live through the whole run (warm pools, one event loop), and the clients
    take turns block by block (A B B A ...), so a change in the machine's load during a round
    falls on both alike instead of on whichever ran last. ``first`` rotates who starts.
    """
    transports = {client: make_transport(client, url, tasks) for client in CLIENTS}
    cpu = dict.fromkeys(CLIENTS, 0.0)
    per_block = max(1, requests // blocks)
    async with transports["httpx2"], transports["trio_range"]:
        for block in range(blocks):
            for client in rotated(CLIENTS, first + block):
                started = time.process_time()
                await drive(transports[client], url, size, tasks, per_block)
                cpu[client] += time.process_time() - started
    return {client: cpu[client] * 1000 / (per_block * blocks) for client in CLIENTS}


def measure_client_cpu(
    origin: Server,
    size: int,
    *,
    rounds: int,
    requests: int,
    tasks: int,
    blocks: int = 8,
    report: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Medians of CPU ms per request for each client, and ``ratio`` = ours / httpx2."""
    url = f"{origin.url}/media/{media_file(size).name}"
    # Warm-up: imports, page cache, first connections.
    trio.run(alternate, url, size, tasks, min(requests, 500), 2, 0)
    runs: dict[str, list[float]] = {client: [] for client in CLIENTS}
    for round_index in range(rounds):
        figures = trio.run(alternate, url, size, tasks, requests, blocks, round_index)
        for client in CLIENTS:
            runs[client].append(figures[client])
            report(
                f"upstream_cpu round {round_index + 1} {client:10} {figures[client]:.3f} ms/request"
            )
    medians = {client: statistics.median(figures) for client, figures in runs.items()}
    return {
        "runs_ms": runs,
        "medians_ms": medians,
        "ratio": medians["trio_range"] / medians["httpx2"],
        "requests": requests,
        "tasks": tasks,
        "blocks": blocks,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.upstream_client")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--requests", type=int, default=4000, help="per client and round")
    parser.add_argument("--tasks", type=int, default=8, help="concurrent tasks, = pool size")
    parser.add_argument(
        "--blocks", type=int, default=8, help="alternating blocks per round (default 8)"
    )
    parser.add_argument("--file-size", type=parse_size, default=parse_size("64MiB"))
    return run_benchmark(run, parser.parse_args(argv))


def run(args: argparse.Namespace) -> None:
    media_file(args.file_size)  # before the origin starts: it serves the folder
    with ServerGroup("upstream-client", ready_path="/healthz") as group:
        origin = group.start_origin("origin")
        result = measure_client_cpu(
            origin,
            args.file_size,
            rounds=args.rounds,
            requests=args.requests,
            tasks=args.tasks,
            blocks=args.blocks,
        )
    medians = result["medians_ms"]
    print(f"\nmedians of {args.rounds} rounds, {args.requests} requests, {args.tasks} tasks:")
    for client in CLIENTS:
        print(f"  {client:10} {medians[client]:.3f} ms CPU per request")
    print(f"  trio_range / httpx2: {result['ratio']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
