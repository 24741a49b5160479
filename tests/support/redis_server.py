"""A real redis-server for tests and benchmarks, owned by the task that opens it.

    async with open_redis(tmp_path) as server:
        ...  # point stores at server.url
        await server.stop()      # Redis gone mid-run
        await server.start()     # back, same port, empty (no persistence)

redis-server runs in the foreground on a free loopback port with its working directory in
``tmp_path``, ``--save ''`` and ``--appendonly no``: nothing is written, and a restart starts
empty (the hardest case for the shared statistics store). It is a child of the test, killed and
reaped when the block exits, even on cancellation. Debian's redis-server comes from
scripts/install-system-deps.sh.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tests.support.faulty_upstream import unused_port

__all__ = ["RedisServer", "open_redis"]

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


class RedisServer:
    def __init__(self, directory: Path) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not installed: run `make system-deps`")
        self.executable = executable
        self.directory = directory
        self.port = unused_port()
        self.process: trio.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start on ``self.port`` and return once it answers PING."""
        assert self.process is None, "already running"
        self.process = await trio.lowlevel.open_process(
            [
                self.executable,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--logfile",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with trio.fail_after(START_TIMEOUT_S):
            while not await self.answers_ping():
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}")
                await trio.sleep(0.01)

    async def answers_ping(self) -> bool:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        except OSError:
            return False
        async with stream:
            with trio.move_on_after(1):
                await stream.send_all(b"PING\r\n")
                return (await stream.receive_some(64)).startswith(b"+PONG")
        return False

    async def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop it (SIGTERM: a clean exit; SIGKILL: a crash) and reap it."""
        process, self.process = self.process, None
        if process is None:
            return
        with trio.CancelScope(shield=True):
            process.send_signal(signum)
            with trio.move_on_after(STOP_TIMEOUT_S):
                await process.wait()
                return
            process.kill()
            await process.wait()


@asynccontextmanager
async def open_redis(directory: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(directory)
    try:
        await server.start()
        yield server
    finally:
        await server.stop(signal.SIGKILL)
