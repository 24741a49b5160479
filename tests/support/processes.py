"""Starting the servers as users do, as real processes, and stopping them with a signal.

Also what /proc tells about them (Linux only, as the project's machines are): a server's worker
processes, and pausing one of them with SIGSTOP until the kernel reports it stopped.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[2]
TRIO_RANGE = [sys.executable, "-m", "trio_range.cli"]
URL = re.compile(rb"http://127\.0\.0\.1:\d+")


async def start_process(
    nursery: trio.Nursery,
    command: list[str],
    env: dict[str, str] | None = None,
    *,
    output: bytearray | None = None,
) -> tuple[trio.Process, list[str]]:
    """Start ``command``, and return it with the URLs it printed once it is serving.

    ``output``, if given, receives what the process printed until then (stdout and stderr).
    """
    process = await trio.lowlevel.open_process(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )
    assert process.stdout is not None
    if output is None:
        output = bytearray()
    with trio.fail_after(20):
        while b"Running on" not in output or (
            b"demo" in " ".join(command).encode() and b"Ctrl-C stops both" not in output
        ):
            chunk = await process.stdout.receive_some(65536)
            assert chunk, output.decode(errors="replace")
            output += chunk
    return process, [url.decode() for url in URL.findall(output)]


async def wait_for_urls(process: trio.Process, urls: list[str], count: int) -> list[str]:
    """``urls`` (what :func:`start_process` returned) and what follows, until ``count`` URLs.

    A server with several workers prints its URL once per worker, when that worker listens.
    """
    assert process.stdout is not None
    urls = list(urls)
    output = b""
    with trio.fail_after(20):
        while len(urls) + len(URL.findall(output)) < count:
            chunk = await process.stdout.receive_some(65536)
            assert chunk, output.decode(errors="replace")
            output += chunk
    return urls + [url.decode() for url in URL.findall(output)]


async def stop_gracefully(process: trio.Process, signum: int) -> int:
    process.send_signal(signum)
    with trio.fail_after(15):
        return await process.wait()


def _stat_fields(stat_path: Path) -> list[str]:
    """The fields of a /proc ``stat`` file after ``comm``: [state, ppid, ...].

    ``comm`` is in parentheses and may itself hold spaces and parentheses, so the fields start
    after the last ``)``.
    """
    return stat_path.read_text().rpartition(")")[2].split()


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(entry / "stat")[1])
        except (FileNotFoundError, ProcessLookupError):
            continue  # it exited while we looked
        if ppid == pid:
            children.append(int(entry.name))
    return sorted(children)


def multiprocessing_workers(pid: int) -> list[int]:
    """The children ``pid`` started with multiprocessing's "spawn" to run a target.

    Their command line ends with ``--multiprocessing-fork``; multiprocessing's resource tracker,
    another child (``-c "from multiprocessing.resource_tracker import main; ..."``), does not.
    """
    workers = []
    for child in child_pids(pid):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if b"--multiprocessing-fork" in argv:
            workers.append(child)
    return workers


def thread_states(pid: int) -> set[str]:
    """The scheduler state of every thread of ``pid`` ("R", "S", "T" for stopped, ...)."""
    states = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            states.add(_stat_fields(task / "stat")[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that exited while we looked
    return states


async def pause_process(pid: int) -> None:
    """SIGSTOP ``pid`` and return once every one of its threads is stopped.

    A stopped process runs no code: it accepts no connection, even on a listening socket it
    shares with other processes, so those others accept every one.
    """
    os.kill(pid, signal.SIGSTOP)
    with trio.fail_after(10):
        while thread_states(pid) != {"T"}:
            await trio.sleep(0.01)


async def resume_process(pid: int) -> None:
    """SIGCONT ``pid`` and return once none of its threads is stopped any more."""
    os.kill(pid, signal.SIGCONT)
    with trio.fail_after(10):
        while "T" in thread_states(pid):
            await trio.sleep(0.01)
