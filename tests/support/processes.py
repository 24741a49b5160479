"""Starting the servers as users do, as real processes, and stopping them with a signal."""

from __future__ import annotations

import os
import re
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


async def stop_gracefully(process: trio.Process, signum: int) -> int:
    process.send_signal(signum)
    with trio.fail_after(15):
        return await process.wait()
