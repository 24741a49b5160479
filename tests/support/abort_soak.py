"""Abort soak: thousands of relays aborted at random phases, then the process's memory.

```sh
.venv/bin/python -m tests.support.abort_soak --aborts 10000            # part of make soak
.venv/bin/python -m tests.support.abort_soak --aborts 10000 --tracemalloc 15
```

Each client opens a connection to the proxy, asks for a large range of a deterministic file
and leaves at a random phase: before its request is complete, right after it (the relay is
waiting for the pool, the upstream's connect or its head), after the response head, or part
way through the body; half leave with a reset (SO_LINGER 0), half with a FIN. The origin and
the proxy run in this process (as ``trio-range demo`` runs them), or with ``--processes`` as
two ``trio-range`` processes, whose RSS is then the proxy's alone (the issue's measure).

RSS is read (after a full collection) once the first ``--warmup-aborts`` aborts are done and
again at the end: what the relays leave behind grows with their number, what a warm process
allocates once does not. The run fails when the end is more than ``--rss-tolerance-mib``
above the first figure, or when tasks or sockets are left. ``--tracemalloc N`` takes a
snapshot at both points and prints the N places (grouped by traceback) whose allocations grew.
"""

from __future__ import annotations

import argparse
import functools
import gc
import pathlib
import random
import socket
import struct
import sys
import tempfile
import tracemalloc
from collections.abc import Callable

import trio

from tests.support.processes import TRIO_RANGE, start_process
from tests.support.servers import origin_config, proxy_config, start_app
from tests.support.soak import count_tasks, rss_kib
from trio_range.media_files import write_deterministic_file
from trio_range.origin.app import create_app as create_origin
from trio_range.proxy.app import create_app as create_proxy

FILE_NAME = "abort.bin"
FILE_BYTES = 64 * 1024 * 1024
PHASES = ("mid request", "before head", "after head", "mid body")


async def abort_one(host: str, port: int, rng: random.Random, phase: str) -> None:
    """One relay, left at ``phase``."""
    start = rng.randrange(FILE_BYTES - 8 * 1024 * 1024)
    request = f"GET /media/{FILE_NAME} HTTP/1.1\r\nHost: x\r\nRange: bytes={start}-\r\n\r\n"
    stream = await trio.open_tcp_stream(host, port)
    try:
        if phase == "mid request":
            await stream.send_all(request.encode()[: rng.randrange(10, 40)])
            await trio.sleep(rng.uniform(0, 0.002))
            return
        await stream.send_all(request.encode())
        if phase == "before head":
            for _ in range(rng.randrange(30)):
                await trio.lowlevel.checkpoint()
            return
        received = 0
        wanted = 1 if phase == "after head" else rng.randrange(1, 4 * 1024 * 1024)
        while received < wanted:
            data = await stream.receive_some(65536)
            if not data:
                return
            received += len(data)
    finally:
        if rng.random() < 0.5:
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with trio.CancelScope(shield=True):
            await stream.aclose()


async def run_aborts(host: str, port: int, count: int, clients: int, rng: random.Random) -> None:
    """``count`` aborted relays, ``clients`` at a time."""
    left = iter(range(count))

    async def client() -> None:
        for _ in left:
            await abort_one(host, port, rng, rng.choice(PHASES))

    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(client)


def settled_rss_kib() -> int:
    gc.collect()
    return rss_kib(trimmed=True)  # memory in use, not glibc's kept free heap


def process_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def start_servers(
    nursery: trio.Nursery, args: argparse.Namespace, media_dir: pathlib.Path
) -> tuple[str, Callable[[], int]]:
    """The proxy's URL and how to read the RSS to watch (the proxy process's, or ours)."""
    if not args.processes:
        origin_cfg = origin_config(media_dir=media_dir, default_file=FILE_NAME)
        origin = await start_app(nursery, create_origin(origin_cfg), origin_cfg)
        proxy_cfg = proxy_config(origin, pool_size=args.clients)
        return await start_app(nursery, create_proxy(proxy_cfg), proxy_cfg), settled_rss_kib
    quiet = ["--port", "0", "--no-access-log"]
    origin_process, (origin,) = await start_process(
        nursery, [*TRIO_RANGE, "origin", *quiet, "--media-dir", str(media_dir)]
    )
    proxy_process, urls = await start_process(
        nursery, [*TRIO_RANGE, "proxy", *quiet, "--upstream", origin]
    )
    (proxy,) = {url for url in urls if url != origin}  # it may name its upstream too
    for process in (origin_process, proxy_process):
        nursery.start_soon(drain, process)
    return proxy, functools.partial(process_rss_kib, proxy_process.pid)


async def drain(process: trio.Process) -> None:
    """Read a server's output (warnings of aborted relays) so that it never blocks on it."""
    assert process.stdout is not None
    try:
        while await process.stdout.receive_some(65536):
            pass
    finally:
        process.kill()


async def abort_soak(args: argparse.Namespace, directory: pathlib.Path) -> list[str]:
    media_dir = directory / "media"
    media_path = media_dir / FILE_NAME
    if not media_path.exists():
        await trio.to_thread.run_sync(write_deterministic_file, media_path, FILE_BYTES)
    rng = random.Random(args.seed)
    problems: list[str] = []
    async with trio.open_nursery() as servers:
        proxy, measure = await start_servers(servers, args, media_dir)
        host, port = proxy.removeprefix("http://").rsplit(":", 1)
        what = "proxy process" if args.processes else "process"

        await run_aborts(host, int(port), args.warmup_aborts, args.clients, rng)
        await trio.sleep(0.5)  # the last relays' cleanup
        tasks_before = count_tasks()
        first = measure()
        if args.tracemalloc:
            tracemalloc.start(25)
            before = tracemalloc.take_snapshot()
        print(f"{what} RSS after the first {args.warmup_aborts} aborts: {first / 1024:.1f} MiB")

        await run_aborts(host, int(port), args.aborts - args.warmup_aborts, args.clients, rng)
        await trio.sleep(0.5)
        end = measure()
        print(f"{what} RSS after {args.aborts} aborts: {end / 1024:.1f} MiB")
        grown_mib = (end - first) / 1024
        print(f"RSS growth: {grown_mib:+.1f} MiB (tolerance {args.rss_tolerance_mib} MiB)")
        if args.tracemalloc:
            after = tracemalloc.take_snapshot()
            stats = after.compare_to(before, "traceback")
            print(f"tracemalloc: the {args.tracemalloc} places whose allocations grew most")
            for stat in stats[: args.tracemalloc]:
                print(f"  {stat.size_diff / 1024:+.1f} KiB in {stat.count_diff:+d} blocks")
                for line in stat.traceback.format(limit=6):
                    print("    " + line)
            tracemalloc.stop()
        if grown_mib > args.rss_tolerance_mib:
            problems.append(f"RSS grew {grown_mib:.1f} MiB over {args.aborts} aborts")
        if (tasks := count_tasks()) > tasks_before:
            problems.append(f"trio tasks {tasks_before} -> {tasks}")
        servers.cancel_scope.cancel()
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--aborts", type=int, default=10_000)
    parser.add_argument("--warmup-aborts", type=int, default=1_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--rss-tolerance-mib", type=float, default=2.0)
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="N")
    parser.add_argument(
        "--processes", action="store_true", help="the servers as trio-range processes"
    )
    args = parser.parse_args(argv)

    async def run() -> list[str]:
        with tempfile.TemporaryDirectory(prefix="trio-range-aborts-") as directory:
            return await abort_soak(args, pathlib.Path(directory))

    problems = trio.run(run)
    for problem in problems:
        print("PROBLEM:", problem)
    print("PASS" if not problems else "FAIL")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
