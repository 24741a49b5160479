"""Same-run baselines from the code before issue 13 (commit d49b32f): CPU per request, old vs new.

    python -m benchmarks.old_commit                          # both rows, 3 rounds of 10 s
    python -m benchmarks.old_commit --only origin --rounds 3 --seconds 10
    python -m benchmarks.old_commit --commit d49b32f --only proxy

Issue 13's targets compare today's CPU per request with the code's before the issue, in the
same run (two separate runs on a shared 2-core machine differ by more than the change). The
old ``src/`` is extracted from this repository's own git (``git archive``) into a temporary
directory and started with PYTHONPATH pointing at it, on the same interpreter, libraries and
media; without a git checkout or without the commit the rows say why they are missing.

- ``origin``: ``trio-range origin`` today and at the commit, on the same file, under the load
  of the ``origin_rate`` row (wrk, c=64, random 4 KiB ranges); each origin process's CPU
  seconds over the run (``/proc``, not wall time) per request.
- ``proxy``: the proxy's server side alone. Each version's ``trio-range proxy`` runs with its
  upstream client replaced by an in-memory constant transport (benchmarks/_constant_upstream.py:
  a 206 of the asked bytes, no I/O, no upstream process), so the proxy process's CPU per
  request is its server side (request, relay logic, response) plus the httpx ``Response`` each
  version makes (the old one also an ``httpx.Request``, which today's relay no longer builds);
  the upstream client (issue 14's own row, ``upstream_cpu``) is out of it. The injection
  changes nothing in either version's code: the launcher swaps
  the class each version builds its client from (``httpx2.AsyncHTTPTransport`` at the commit,
  ``proxy.upstream.UpstreamTransport`` today, whose ``open_response`` the constant transport
  also answers) before the app is made.

Rounds are interleaved, their order rotated each round; the figures are medians over rounds.
benchmarks/targets.py shows them as the rows ``origin_cpu_old`` and ``proxy_server_side``.
"""

from __future__ import annotations

import argparse
import io
import os
import pathlib
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from typing import Any

from benchmarks._harness import (
    HOST,
    MEDIA_DIR,
    ROOT,
    BenchmarkError,
    Candidate,
    Clock,
    Server,
    ServerGroup,
    _trio_range_argv,
    add_run_options,
    find_wrk,
    free_port,
    load_1min,
    media_file,
    print_table,
    ratio_cell,
    results_header,
    rotated,
    run_benchmark,
)
from benchmarks._load import run_wrk
from trio_range.media_files import parse_size

PRE_ISSUE_13 = "d49b32f"
CONCURRENCY = 64  # as the origin_rate row
# Never connected: the constant transport answers instead (a port nothing listens on).
UNUSED_UPSTREAM = f"http://{HOST}:9"


def extract_source(commit: str, into: pathlib.Path) -> tuple[pathlib.Path | None, str]:
    """``commit``'s ``src/`` extracted under ``into``, or None and why it cannot be."""
    try:
        inside = _git("rev-parse", "--git-dir")
    except OSError as error:
        return None, f"git not runnable: {error}"
    if inside.returncode != 0:
        return None, f"{ROOT} is not a git checkout"
    if _git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}").returncode != 0:
        return None, f"commit {commit} is not in this repository"
    archive = _git("archive", "--format=tar", commit, "src")
    if archive.returncode != 0:
        return None, f"git archive {commit} failed: {archive.stderr.decode(errors='replace')}"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into / "src", ""


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, timeout=120)


def package_location(pythonpath: str) -> str:
    """Where ``trio_range`` is imported from with this PYTHONPATH (the run records it)."""
    python = ROOT / ".venv" / "bin" / "python"
    done = subprocess.run(
        [str(python if python.exists() else sys.executable), "-c", _WHERE],
        env={**os.environ, "PYTHONPATH": pythonpath},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


_WHERE = "import trio_range, os; print(os.path.dirname(trio_range.__file__))"


def current_pythonpath() -> str:
    """The PYTHONPATH today's servers run with: this process's, plus the repository (for
    ``python -m benchmarks._constant_upstream``)."""
    return os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(ROOT)) if p)


def start_origin(group: ServerGroup, name: str, pythonpath: str | None) -> Server:
    """``trio-range origin`` on MEDIA_DIR; with ``pythonpath``, the code found there."""
    port = free_port()
    argv = _trio_range_argv("origin", "--port", str(port), "--media-dir", str(MEDIA_DIR))
    env = None if pythonpath is None else {"PYTHONPATH": pythonpath}
    return group.start(name, argv, port, env=env)


def start_constant_proxy(group: ServerGroup, name: str, pythonpath: str) -> Server:
    """``trio-range proxy`` of the code on ``pythonpath``, its upstream a constant transport."""
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks._constant_upstream", "proxy", "--host", HOST]
    argv += ["--access-log", "false", "--port", str(port), "--upstream", UNUSED_UPSTREAM]
    return group.start(name, argv, port, env={"PYTHONPATH": pythonpath})


def cpu_rounds(
    wrk: str,
    candidates: list[Candidate],
    path: str,
    size: int,
    *,
    rounds: int,
    seconds: float,
    clock: Clock,
    title: str,
) -> dict[str, list[float]]:
    """Each candidate's entry-process CPU microseconds per request, one figure per round."""
    for candidate in candidates:  # warm-up: connections, code paths
        run_wrk(wrk, candidate, path, size, CONCURRENCY, 1.0, seed=0)
    figures: dict[str, list[float]] = {c.name: [] for c in candidates}
    for round_index in range(rounds):
        print(f"{title} round {round_index + 1}/{rounds} (load {load_1min():.2f})", flush=True)
        for candidate in rotated(candidates, round_index):
            clock.check()
            result = run_wrk(wrk, candidate, path, size, CONCURRENCY, seconds, seed=round_index + 1)
            cpu_s = result["cpu_s"][candidate.entry.name]
            figures[candidate.name].append(1e6 * cpu_s / result["requests"])
    return figures


def compare(
    group: ServerGroup,
    kind: str,
    old_src: pathlib.Path,
    wrk: str,
    path: str,
    size: int,
    *,
    rounds: int,
    seconds: float,
    clock: Clock,
    today: Server | None = None,
) -> dict[str, Any]:
    """``kind`` ("origin" or "proxy"), today's vs the old code's, CPU us per request.

    ``today``: today's server when the caller has it running already (the targets' origin).
    """
    old_path = os.pathsep.join([str(old_src), str(ROOT)])
    if kind == "origin":
        new = today or start_origin(group, "origin", None)
        old = start_origin(group, f"origin-{PRE_ISSUE_13}", old_path)
    elif kind == "proxy":
        new = today or start_constant_proxy(group, "proxy-constant", current_pythonpath())
        old = start_constant_proxy(group, f"proxy-constant-{PRE_ISSUE_13}", old_path)
    else:
        raise ValueError(f"kind must be origin or proxy, not {kind!r}")
    candidates = [Candidate("today", (new,), new.name), Candidate("old", (old,), old.name)]
    figures = cpu_rounds(
        wrk, candidates, path, size, rounds=rounds, seconds=seconds, clock=clock, title=kind
    )
    medians = {name: statistics.median(values) for name, values in figures.items()}
    # Each round's pair ran back to back: their ratio drifts less with the machine's load.
    round_ratios = [t / o for t, o in zip(figures["today"], figures["old"], strict=True)]
    return {
        "cpu_us_per_request": figures,
        "medians_us": medians,
        "ratio": medians["today"] / medians["old"],
        "round_ratios": round_ratios,
        "median_round_ratio": statistics.median(round_ratios),
        "old_code": package_location(old_path),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.old_commit")
    parser.add_argument("--only", default="origin,proxy", help="origin, proxy or both")
    parser.add_argument("--commit", default=PRE_ISSUE_13)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk duration per point")
    parser.add_argument("--file-size", type=parse_size, default=parse_size("1GiB"))
    add_run_options(parser, "old_commit", time_limit_s=1200.0, wrk=True)
    return run_benchmark(run, parser.parse_args(argv))


def run(args: argparse.Namespace) -> dict[str, Any]:
    wrk = find_wrk(args.wrk)
    if wrk is None:
        raise BenchmarkError("wrk not found: apt-get install -y wrk")
    clock = Clock(args.time_limit_s)
    file = media_file(args.file_size)
    path = f"/media/{file.name}"
    results: dict[str, Any] = {**results_header("old_commit", wrk=wrk), "commit": args.commit}
    rows = []
    with tempfile.TemporaryDirectory(prefix="old-commit-") as scratch:
        old_src, missing = extract_source(args.commit, pathlib.Path(scratch))
        if old_src is None:
            raise BenchmarkError(missing)
        with ServerGroup("old-commit", ready_path=path) as group:
            for kind in args.only.split(","):
                found = compare(
                    group,
                    kind,
                    old_src,
                    wrk,
                    path,
                    args.file_size,
                    rounds=args.rounds,
                    seconds=args.seconds,
                    clock=clock,
                )
                results[kind] = found
                medians = found["medians_us"]
                rows.append(
                    [
                        kind,
                        f"{medians['today']:.0f}",
                        f"{medians['old']:.0f}",
                        ratio_cell(found["ratio"]),
                    ]
                )
    print_table(
        f"CPU per request, c={CONCURRENCY} random 4 KiB ranges, today vs {args.commit}",
        [("process", "<8"), ("today us", ">9"), ("old us", ">9"), ("ratio", ">7")],
        rows,
    )
    return results


if __name__ == "__main__":
    sys.exit(main())
