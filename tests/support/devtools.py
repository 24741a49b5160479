"""A minimal Chromium DevTools client over a pipe, for the tests that drive a real browser."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from tests.support.servers import CHROMIUM_FLAGS

# Chromium reads commands on fd 3 and writes answers on fd 4. subprocess can only keep fds
# open, not renumber them, so a tiny exec wrapper moves our pipe ends there.
_EXEC_WITH_PIPE = (
    "import os, sys; r, w = int(sys.argv[1]), int(sys.argv[2]); "
    "os.dup2(r, 3); os.dup2(w, 4); os.execv(sys.argv[3], sys.argv[3:])"
)


# 1 MB/s (8 Mbit/s): 13 times the clip's bitrate, so playback never waits with ranges, but
# reaching the middle of the 37 MB clip from byte 0 takes 18 s (12 s even from the 6 MiB
# Chromium may already hold), past the seek's 8 s bound however fast the machine is; and a
# seek with ranges, well under a second unloaded, has 8 s on a loaded machine.
LINK_BYTES_PER_S = 1_000_000


class DevTools:
    """A minimal DevTools protocol client: one call at a time; events are dropped."""

    def __init__(self, to_browser: trio.lowlevel.FdStream, from_browser: trio.lowlevel.FdStream):
        self._send = to_browser
        self._receive = from_browser
        self._ids = itertools.count(1)
        self._buffer = b""
        self.session_id: str | None = None

    async def _message(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = await self._receive.receive_some(1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)  # type: ignore[no-any-return]

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command (to the attached page, if any) and return its result."""
        call_id = next(self._ids)
        command: dict[str, Any] = {"id": call_id, "method": method, "params": params}
        if self.session_id is not None and not method.startswith(("Target.", "Browser.")):
            command["sessionId"] = self.session_id
        await self._send.send_all(json.dumps(command).encode() + b"\0")
        while True:
            message = await self._message()
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]  # type: ignore[no-any-return]

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page, awaited if it is a promise."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def open_page(self, url: str) -> None:
        """Navigate the browser's one tab to ``url``, with the HTTP cache off, on a slow link.

        Without a cache every byte the player reads crosses the proxy, as on a first visit:
        a seek into a part already downloaded would otherwise be answered from Chromium's disk
        cache (after a 304 revalidation) and never reach the server as a range request.
        The link is throttled to ``LINK_BYTES_PER_S``: on loopback, a player facing a server
        without ranges re-reads the file from byte 0 on each seek fast enough to look fine.
        """
        if self.session_id is None:
            targets = await self.call("Target.getTargets")
            page = next(t for t in targets["targetInfos"] if t["type"] == "page")
            attached = await self.call(
                "Target.attachToTarget", targetId=page["targetId"], flatten=True
            )
            self.session_id = attached["sessionId"]
            await self.call("Network.enable")
            await self.call("Network.setCacheDisabled", cacheDisabled=True)
            await self.call(
                "Network.emulateNetworkConditions",
                offline=False,
                latency=0,
                downloadThroughput=LINK_BYTES_PER_S,
                uploadThroughput=-1,
            )
        await self.call("Page.navigate", url=url)


def chromium_command() -> str:
    found = shutil.which("chromium")
    assert found, "chromium is missing: run scripts/install-system-deps.sh (make system-deps)"
    return found


@asynccontextmanager
async def open_chromium(user_data_dir: Path) -> AsyncIterator[DevTools]:
    """A fresh headless Chromium (its own profile), closed and reaped on exit."""
    commands_read, commands_write = os.pipe()
    answers_read, answers_write = os.pipe()
    child_ends = (commands_read, answers_write)
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-c",
            _EXEC_WITH_PIPE,
            str(commands_read),
            str(answers_write),
            chromium_command(),
            *CHROMIUM_FLAGS,
            "--remote-debugging-pipe",
            f"--user-data-dir={user_data_dir}",
            "about:blank",
        ],
        pass_fds=child_ends,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for fd in child_ends:
        os.close(fd)
    devtools = DevTools(
        trio.lowlevel.FdStream(commands_write), trio.lowlevel.FdStream(answers_read)
    )
    try:
        yield devtools
    finally:
        with trio.CancelScope(shield=True):
            with trio.move_on_after(5):
                await devtools.call("Browser.close")
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            await devtools._send.aclose()
            await devtools._receive.aclose()
