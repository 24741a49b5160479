"""The loads the benchmarks drive through a candidate path, each answer checked or counted.

Whole-file streams (one per candidate in interleaved rounds, or several at once), a slow
reader, the proxy's memory under both, and wrk: random small ranges with
``random_ranges.lua``, or one fixed request with no script. Blocking, like
``benchmarks._harness``; every wait has a deadline."""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import re
import socket
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from benchmarks._harness import (
    ROOT,
    SMALL_RANGE_BYTES,
    BenchmarkError,
    Candidate,
    Clock,
    Fetch,
    RssSampler,
    checked,
    cpu_seconds,
    fetch_socket,
    hwm_kib,
    load_1min,
    parse_head,
    read_head,
    reset_peak_rss,
    rotated,
    rss_kib,
)

LUA_SCRIPT = ROOT / "benchmarks" / "random_ranges.lua"
# A response head is a few hundred bytes: more than this per request means wrk got something
# other than small ranges (a 200 with the whole file, error pages).
MAX_HEAD_BYTES_PER_REQUEST = 2048
SLOW_TICK_S = 0.1
# Several 1 GiB streams share one proxy core: allow each far more than a single GET.
CONCURRENT_STREAMS_DEADLINE_S = 600.0


# --- whole-file streams ----------------------------------------------------------------------


def stream_rounds(
    candidates: list[Candidate], path: str, size: int, rounds: int, clock: Clock, title: str
) -> dict[str, list[dict[str, Any]]]:
    """One checked whole-file GET per candidate per round, order rotated; MB/s and CPU.

    Each run records the CPU seconds each server on the path spent over the GET (``cpu_s``,
    by server name) and the bytes it carried, for CPU per GB figures.
    """
    runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in candidates}
    for round_index in range(rounds):
        print(f"{title} round {round_index + 1}/{rounds}", flush=True)
        for candidate in rotated(candidates, round_index):
            clock.check()
            before = [cpu_seconds(tier.process.pid) for tier in candidate.tiers]
            fetch = checked(fetch_socket, candidate.entry, path, {}, size, 0, size)
            after = [cpu_seconds(tier.process.pid) for tier in candidate.tiers]
            runs[candidate.name].append(
                {
                    "mb_s": fetch.mb_per_s,
                    "cpu_percent": _cpu_percent(candidate, before, after, fetch.seconds),
                    "cpu_s": _cpu_spent(candidate, before, after),
                    "bytes": size,
                    "load_1min": load_1min(),
                }
            )
    return runs


def concurrent_streams(candidate: Candidate, path: str, size: int, count: int) -> float:
    """``count`` whole-file GETs at once, each checked; the wall time until the last ended."""
    deadline_s = CONCURRENT_STREAMS_DEADLINE_S

    def fetcher(host: str, port: int, p: str, headers: dict[str, str], _: float) -> Fetch:
        return fetch_socket(host, port, p, headers, deadline_s)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        futures = [
            pool.submit(checked, fetcher, candidate.entry, path, {}, size, 0, size)
            for _ in range(count)
        ]
        for future in concurrent.futures.as_completed(futures, timeout=deadline_s + 10):
            future.result()
    return time.perf_counter() - started


def slow_reader(candidate: Candidate, path: str, rate: int, seconds: float) -> list[int]:
    """Read a whole-file GET at ``rate`` bytes/s for ``seconds``, then leave.

    Returns the proxy's summed VmRSS at the end of each second. The socket's receive buffer is
    left as the kernel sizes it: bytes queued there are the kernel's, not the proxy's.
    """
    proxy = candidate.proxy
    entry = candidate.entry
    per_tick = int(rate * SLOW_TICK_S)
    samples: list[int] = []
    buffer = bytearray(per_tick)
    with socket.create_connection((entry.host, entry.port), timeout=10) as sock:
        request = f"GET {path} HTTP/1.1\r\nHost: {entry.host}:{entry.port}\r\n\r\n"
        sock.sendall(request.encode("latin-1"))
        head, _ = read_head(sock, time.monotonic() + 10)
        status, _ = parse_head(head)
        if status != 200:
            raise BenchmarkError(f"slow reader through {candidate.name}: status {status}")
        started = time.monotonic()
        ticks = round(seconds / SLOW_TICK_S)
        per_second = round(1 / SLOW_TICK_S)
        for tick in range(1, ticks + 1):
            wanted = per_tick
            while wanted > 0:
                count = sock.recv_into(buffer, wanted)
                if count == 0:
                    raise BenchmarkError(f"{candidate.name} closed the slow reader's stream")
                wanted -= count
            time.sleep(max(0.0, started + tick * SLOW_TICK_S - time.monotonic()))
            if tick % per_second == 0:
                samples.append(rss_kib(proxy))
    time.sleep(0.5)  # let the proxy notice the disconnect before the next measurement
    return samples


def memory_rounds(
    candidates: list[Candidate], path: str, args: argparse.Namespace, clock: Clock
) -> tuple[dict[str, list[dict[str, Any]]], bool]:
    """The memory of each candidate's proxy process, in ``args.rounds`` rotated rounds.

    Per round: its RSS at rest; its peak RSS (VmHWM, reset before) while ``args.streams``
    whole-file GETs of ``args.file_size`` bytes run at once, each checked; its peak and its RSS
    each second while one client reads at ``args.slow_rate`` bytes/s for ``args.slow_seconds``.
    Also returns whether VmHWM could be reset before each load (if not, peaks are lifetime
    peaks).
    """
    runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in candidates}
    hwm_reset = True
    for round_index in range(args.rounds):
        print(f"memory round {round_index + 1}/{args.rounds}", flush=True)
        for candidate in rotated(candidates, round_index):
            clock.check()
            proxy = candidate.proxy
            row: dict[str, Any] = {"rest_rss_kib": rss_kib(proxy)}
            hwm_reset = reset_peak_rss(proxy.process.pid) and hwm_reset
            with RssSampler(proxy.process.pid) as sampler:
                seconds = concurrent_streams(candidate, path, args.file_size, args.streams)
            row["streams_peak_rss_kib"] = hwm_kib(proxy)
            row["streams_sampled_peak_rss_kib"] = sampler.peak_kib
            row["streams_total_mb_s"] = args.streams * args.file_size / seconds / 1e6
            clock.check()
            hwm_reset = reset_peak_rss(proxy.process.pid) and hwm_reset
            samples = slow_reader(candidate, path, args.slow_rate, args.slow_seconds)
            row["slow_peak_rss_kib"] = hwm_kib(proxy)
            row["slow_rss_samples_kib"] = samples  # one a second
            # Flat: what the RSS gained from the first to the last second of the slow read.
            row["slow_growth_kib"] = samples[-1] - samples[0] if samples else 0
            row["load_1min"] = load_1min()
            runs[candidate.name].append(row)
    return runs, hwm_reset


# --- wrk -------------------------------------------------------------------------------------


def run_wrk(
    wrk: str,
    candidate: Candidate,
    path: str,
    size: int,
    concurrency: int,
    seconds: float,
    *,
    seed: int,
) -> dict[str, Any]:
    """One wrk run of random small ranges: ``concurrency`` keep-alive connections on one wrk
    thread for ``seconds``. ``cpu_s`` in the result: each server's CPU seconds over the run.

    One thread: the machine has two cores and the servers need them more; one wrk thread makes
    far more requests per second than any server here answers (it keeps up with nginx).
    """
    entry = candidate.entry
    argv = [wrk, "-t1", f"-c{concurrency}", f"-d{_wrk_duration(seconds)}", "--timeout", "10s"]
    argv += ["-s", str(LUA_SCRIPT), f"http://{entry.host}:{entry.port}{path}"]
    argv += ["--", str(size), str(SMALL_RANGE_BYTES), str(seed)]
    cpu_before = [cpu_seconds(tier.process.pid) for tier in candidate.tiers]
    done = _run(argv, seconds, f"wrk against {candidate.name}")
    cpu_after = [cpu_seconds(tier.process.pid) for tier in candidate.tiers]
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or len(lines) != 1:
        raise BenchmarkError(
            f"wrk against {candidate.name} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
    result: dict[str, Any] = json.loads(lines[0].removeprefix("RESULT "))
    requests = result["requests"]
    if requests == 0:
        raise BenchmarkError(f"wrk against {candidate.name}: no response at all")
    per_request = result["bytes"] / requests
    if not SMALL_RANGE_BYTES <= per_request <= SMALL_RANGE_BYTES + MAX_HEAD_BYTES_PER_REQUEST:
        raise BenchmarkError(
            f"wrk against {candidate.name}: {per_request:.0f} bytes per response; "
            f"expected {SMALL_RANGE_BYTES} B bodies (not 206 answers?)"
        )
    wall_s = result["duration_us"] / 1e6
    result["requests_per_s"] = requests / wall_s
    result["errors"] = sum(value for key, value in result.items() if key.startswith("errors_"))
    result["cpu_percent"] = _cpu_percent(candidate, cpu_before, cpu_after, wall_s)
    result["cpu_s"] = _cpu_spent(candidate, cpu_before, cpu_after)
    result["concurrency"] = concurrency
    result["load_1min"] = load_1min()
    return result


def wrk_fixed_request(
    wrk: str, url: str, connections: int, seconds: float, headers: Sequence[str] = ()
) -> tuple[int, float]:
    """wrk with no script: ``connections`` keep-alive connections on one thread repeat one GET
    of ``url`` (with ``headers``, ``"Name: value"``) for ``seconds``.

    Returns the responses and the responses per second; fails unless every one was a 2xx.
    """
    argv = [wrk, "-t1", f"-c{connections}", f"-d{_wrk_duration(seconds)}"]
    for header in headers:
        argv += ["-H", header]
    argv.append(url)
    done = _run(argv, seconds, f"wrk against {url}")
    count = re.search(r"^\s*(\d+) requests in ", done.stdout, re.MULTILINE)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", done.stdout, re.MULTILINE)
    if done.returncode != 0 or count is None or rate is None or "Non-2xx" in done.stdout:
        raise BenchmarkError(
            f"wrk against {url} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
    return int(count.group(1)), float(rate.group(1))


def _wrk_duration(seconds: float) -> str:
    # wrk reads its -d as a whole number with a unit: "2.5s" is an error.
    return f"{max(1, round(seconds))}s"


def _run(argv: list[str], seconds: float, what: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise BenchmarkError(f"{what} did not finish: {error}") from None


def _cpu_spent(candidate: Candidate, before: list[float], after: list[float]) -> dict[str, float]:
    """Each server's CPU seconds between two readings, by server name."""
    return {tier.name: b - a for tier, a, b in zip(candidate.tiers, before, after, strict=True)}


def _cpu_percent(
    candidate: Candidate, before: list[float], after: list[float], wall_s: float
) -> dict[str, float]:
    """Each server's CPU over ``wall_s``, in % of one core."""
    return {
        tier.name: round(100 * (b - a) / wall_s, 1)
        for tier, a, b in zip(candidate.tiers, before, after, strict=True)
    }
