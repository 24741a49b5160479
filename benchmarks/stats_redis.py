"""What the Redis statistics backend costs, and what a second worker buys.

    python -m benchmarks.stats_redis [--rounds 3] [--round-s 3] [--connections 16]

Starts a redis-server (free loopback port, no persistence) and, with ``wrk``, measures in
interleaved rounds so drift on a shared machine hits every variant alike:

1. the origin's request rate for 4 KiB ranges with the in-memory store against the Redis
   store (``hypercorn -k trio -w 1`` each, one at a time);
2. the proxy's aggregate request rate (Redis store) with ``-w 1`` against ``-w 2``, in front of
   one origin with ``-w 2``.

Prints each round and the medians. Every process is stopped on exit; every wait is bounded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from benchmarks._harness import (
    HOST,
    BenchmarkError,
    Server,
    ServerGroup,
    find_wrk,
    free_port,
    rotated,
    run_benchmark,
)
from benchmarks._load import wrk_fixed_request

FILE_NAME = "bench.bin"
FILE_BYTES = 16 * 1024 * 1024
RANGE = "bytes=4096-8191"


@contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    executable = shutil.which("redis-server")
    if executable is None:
        raise BenchmarkError("redis-server is not installed: run `make system-deps`")
    port = free_port()
    process = subprocess.Popen(
        [
            *(executable, "--bind", HOST, "--port", str(port), "--dir", str(directory)),
            *("--save", "", "--appendonly", "no", "--logfile", ""),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["redis-cli", "-p", str(port), "ping"], capture_output=True, check=False
            ).stdout.strip()
            != b"PONG"
        ):
            if time.monotonic() > deadline or process.poll() is not None:
                raise BenchmarkError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://{HOST}:{port}/0"
    finally:
        process.kill()
        process.wait(timeout=5)


@contextmanager
def hypercorn(
    role: str, port: int, workers: int, env: dict[str, str], name: str
) -> Iterator[Server]:
    """``hypercorn -k trio -w N`` serving ``role``, configured by ``env`` (its settings)."""
    argv = [sys.executable, "-m", "hypercorn", "-k", "trio", "-w", str(workers)]
    argv += ["-b", f"{HOST}:{port}", f"trio_range.{role}:create_app()"]
    with ServerGroup("stats-redis", ready_path="/") as group:
        yield group.start(name.replace(" ", "-"), argv, port, env=env)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round-s", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=16)
    return run_benchmark(run, parser.parse_args(argv))


def run(args: argparse.Namespace) -> None:
    wrk = find_wrk()
    if wrk is None:
        raise BenchmarkError("wrk is not installed (apt-get install wrk)")

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        root = Path(tmp)
        media = root / "media"
        media.mkdir()
        (media / FILE_NAME).write_bytes(os.urandom(FILE_BYTES))
        url = stack.enter_context(redis_server(root))
        origin_env = {
            "TRIO_RANGE_ORIGIN_MEDIA_DIR": str(media),
            "TRIO_RANGE_ORIGIN_DEFAULT_FILE": FILE_NAME,
            "TRIO_RANGE_ORIGIN_ACCESS_LOG": "false",
        }

        def measure(
            variants: dict[str, dict[str, str]], role: str, workers: dict[str, int]
        ) -> None:
            rates: dict[str, list[float]] = {name: [] for name in variants}
            for round_index in range(args.rounds):
                for name in rotated(list(variants), round_index):
                    port = free_port()
                    with hypercorn(role, port, workers[name], variants[name], name):
                        _, rate = wrk_fixed_request(
                            wrk,
                            f"http://{HOST}:{port}/",
                            args.connections,
                            args.round_s,
                            headers=[f"Range: {RANGE}"],
                        )
                    rates[name].append(rate)
                    print(f"round {round_index + 1} {name:>12}: {rate:8.0f} req/s", flush=True)
            medians = {name: statistics.median(values) for name, values in rates.items()}
            first, second = list(medians)
            print(
                f"median {first}: {medians[first]:.0f} req/s, {second}: {medians[second]:.0f} "
                f"req/s, {second}/{first} = {medians[second] / medians[first]:.2f}\n",
                flush=True,
            )

        print(f"origin, 4 KiB ranges, {args.connections} connections, memory vs Redis store")
        redis_env = {
            "TRIO_RANGE_ORIGIN_STATS_BACKEND": url,
            "TRIO_RANGE_ORIGIN_STATS_KEY_PREFIX": "bench",
        }
        measure(
            {"memory": origin_env, "redis": {**origin_env, **redis_env}},
            "origin",
            {"memory": 1, "redis": 1},
        )

        print("proxy (Redis store) in front of one origin -w 2: -w 1 vs -w 2")
        origin_port = free_port()
        stack.enter_context(hypercorn("origin", origin_port, 2, origin_env, "origin"))
        proxy_env = {
            "TRIO_RANGE_PROXY_UPSTREAM": f"http://{HOST}:{origin_port}",
            "TRIO_RANGE_PROXY_ACCESS_LOG": "false",
            "TRIO_RANGE_PROXY_STATS_BACKEND": url,
            "TRIO_RANGE_PROXY_STATS_KEY_PREFIX": "bench",
        }
        measure(
            {"1 worker": proxy_env, "2 workers": proxy_env},
            "proxy",
            {"1 worker": 1, "2 workers": 2},
        )


if __name__ == "__main__":
    sys.exit(main())
