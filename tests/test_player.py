"""The /player page, and a real browser seeking in a video through the proxy.

The browser is Debian's headless Chromium (scripts/install-system-deps.sh installs it), driven
over its DevTools protocol on a pipe (``--remote-debugging-pipe``: NUL-terminated JSON on file
descriptors 3 and 4), so the tests need no browser driver and no network.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypercorn.trio import serve
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from tests.servers import CHROMIUM_FLAGS, origin_config, proxy_config, start_app
from trio_range.origin.app import create_app as create_origin
from trio_range.origin.player import render_page
from trio_range.proxy.app import create_app as create_proxy
from trio_range.server.connection import RangeApp
from trio_range.server.serving import hypercorn_config

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "media" / "sample.mp4"

# --- the page ------------------------------------------------------------------------------


async def test_player_page_is_served_by_the_origin_and_relayed_by_the_proxy(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    origin, proxy = await start_origin_and_proxy(nursery, media_folder(tmp_path))
    async with httpx.AsyncClient() as client:
        for base in (origin, proxy):
            page = await client.get(base + "/player")
            script = await client.get(base + "/player/player.js")
            head = await client.head(base + "/player")
            assert page.status_code == 200
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            assert "media-src 'self'" in page.headers["content-security-policy"]
            assert '<script src="/player/player.js">' in page.text
            assert 'data-default-file="sample.mp4"' in page.text
            assert script.status_code == 200
            assert script.headers["content-type"] == "text/javascript; charset=utf-8"
            assert 'fetch("/media/"' in script.text
            assert (head.status_code, head.content) == (200, b"")
        assert (await client.get(proxy + "/player")).headers["via"] == "1.1 trio-range"


def test_player_assets_load_nothing_from_another_host() -> None:
    # Offline use: no CDN, no absolute or protocol-relative URL anywhere in the page or script.
    from trio_range.assets import static_text

    for name in ("player.html", "player.js"):
        text = static_text(name)
        assert not re.search(r"https?:|(src|href)=\"//", text), name


def test_player_page_escapes_the_default_file_name() -> None:
    page = render_page('a"<b>.mp4')
    assert 'data-default-file="a&quot;&lt;b&gt;.mp4"' in page
    assert "<b>" not in page


# --- Chromium over the DevTools protocol ---------------------------------------------------


# Chromium reads commands on fd 3 and writes answers on fd 4. subprocess can only keep fds
# open, not renumber them, so a tiny exec wrapper moves our pipe ends there.
_EXEC_WITH_PIPE = (
    "import os, sys; r, w = int(sys.argv[1]), int(sys.argv[2]); "
    "os.dup2(r, 3); os.dup2(w, 4); os.execv(sys.argv[3], sys.argv[3:])"
)


# 2 MB/s (16 Mbit/s): 25 times the clip's bitrate, so playback never waits with ranges, but
# reaching the middle of the 37 MB clip from byte 0 takes 9 s, past the seek's 5 s bound.
LINK_BYTES_PER_S = 2_000_000


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


# --- servers for the browser ---------------------------------------------------------------


class RangeIgnoringApp:
    """An ASGI app in front of ours that deletes Range and If-Range from every request.

    It is a server without range support, as RFC 9110 §14.2 allows ("A server MAY ignore the
    Range header field"): every answer is 200 with the whole file. The browser test runs
    against it to prove that it notices when seeking does not use ranges.
    """

    def __init__(self, app: RangeApp) -> None:
        self.app = app

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "http":
            headers = [
                (name, value)
                for name, value in scope["headers"]
                if name.lower() not in (b"range", b"if-range")
            ]
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


def media_folder(tmp_path: Path) -> Path:
    """A media folder with the shipped sample and a text file the picker must not list."""
    folder = tmp_path / "media"
    folder.mkdir()
    shutil.copyfile(SAMPLE, folder / "sample.mp4")
    (folder / "notes.txt").write_text("not a video\n")
    return folder


LONG_CLIP_LOOPS = 32  # 32 x 15 s = 480 s, 37 MB: several times what Chromium reads ahead


@pytest.fixture(scope="session")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped sample looped to 8 minutes (stream copy, under a second), index in front.

    Chromium reads a few MiB ahead of the playback position (6 MiB was seen), so the 15 s
    sample is downloaded whole by its first request and a seek in it never reaches the server.
    In this clip, each seek below lands tens of MiB away from what was read, so the browser
    must ask for a new byte range.
    """
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-stream_loop",
            str(LONG_CLIP_LOOPS - 1),
            "-i",
            str(SAMPLE),
            "-c",
            "copy",
            "-movflags",
            "+faststart",
            str(path),
        ],
        check=True,
        timeout=60,
    )
    return path


async def start_origin_and_proxy(
    nursery: trio.Nursery, folder: Path, *, ignore_range: bool = False
) -> tuple[str, str]:
    config = origin_config(media_dir=folder, default_file="sample.mp4")
    app = create_origin(config)
    if ignore_range:
        urls: list[str] = await nursery.start(
            serve, RangeIgnoringApp(app), hypercorn_config(config)
        )
        origin = urls[0]
    else:
        origin = await start_app(nursery, app, config)
    proxy = proxy_config(origin)
    return origin, await start_app(nursery, create_proxy(proxy), proxy)


async def stats_of(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        return (await client.get(url + "/stats")).json()  # type: ignore[no-any-return]


def streams_started(stats: dict[str, Any]) -> int:
    streams = stats["streams"]
    return sum(streams[key] for key in ("active", "completed", "aborted", "failed"))


# --- the browser scenario ------------------------------------------------------------------

VIDEO_STATE = """(() => {
  const v = document.getElementById("video");
  if (v === null) return null;  // the page is still loading
  return {src: v.currentSrc, time: v.currentTime, duration: v.duration,
          ready: v.readyState, paused: v.paused, error: v.error && v.error.code,
          options: [...document.getElementById("file").options].map((o) => o.value)};
})()"""

# Seek, wait for "seeked" (or 5 s), note where playback stands, then watch it advance for up
# to 5 s. Bounded in the page, so a seek that never completes still returns.
SEEK = """(async (target) => {
  const v = document.getElementById("video");
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const seeked = new Promise((resolve) => v.addEventListener("seeked", resolve, {once: true}));
  v.currentTime = target;
  const completed = await Promise.race([seeked.then(() => true), sleep(5000).then(() => false)]);
  const landed = v.currentTime;
  const deadline = performance.now() + (completed ? 5000 : 0);
  while (v.currentTime < landed + 0.5 && !v.ended && performance.now() < deadline) {
    await sleep(50);
  }
  return {completed, landed, after: v.currentTime, paused: v.paused, seeking: v.seeking};
})(%s)"""

SEEK_TARGETS_S = [240.0, 150.0, 470.0]  # middle, back, and 10 s before the end
SEEK_TOLERANCE_S = 1.0  # keyframes are 1 s apart; Chromium lands on the exact time anyway


async def wait_for(devtools: DevTools, condition: str, *, timeout_s: float = 10.0) -> Any:
    """Poll a JavaScript condition on the video until it holds; returns the video's state."""
    check = f"(() => {{ const v = {VIDEO_STATE}; return [v !== null && ({condition}), v]; }})()"
    with trio.fail_after(timeout_s):
        while True:
            holds, state = await devtools.evaluate(check)
            if holds:
                return state
            await trio.sleep(0.05)


async def play_and_seek(devtools: DevTools, proxy: str) -> list[dict[str, Any]]:
    """Open the player through the proxy, switch to the long clip, seek; one record per seek.

    Each record holds the seek's outcome in the page and the proxy streams started by it.
    """
    await devtools.open_page(proxy + "/player")
    # The page alone plays the shipped sample; the picker lists the folder's videos only.
    state = await wait_for(devtools, "v.time > 0.3 && !v.paused")
    assert state["src"] == proxy + "/media/sample.mp4"
    assert math.isclose(state["duration"], 15.0, abs_tol=0.1)
    assert state["options"] == ["long.mp4", "sample.mp4"]

    await devtools.evaluate(
        """(() => { const p = document.getElementById("file");
                   p.value = "long.mp4"; p.dispatchEvent(new Event("change")); })()"""
    )
    state = await wait_for(devtools, "v.src.endsWith('/long.mp4') && v.time > 0.3 && !v.paused")
    assert state["duration"] > SEEK_TARGETS_S[-1] + 5

    records = []
    for target in SEEK_TARGETS_S:
        before = streams_started(await stats_of(proxy))
        outcome = await devtools.evaluate(SEEK % target)
        outcome["target"] = target
        outcome["new_streams"] = streams_started(await stats_of(proxy)) - before
        records.append(outcome)
        if not (outcome["completed"] and abs(outcome["landed"] - target) <= SEEK_TOLERANCE_S):
            break  # the scenario has failed: no point in waiting for the others
    return records


def seek_failures(records: list[dict[str, Any]]) -> list[str]:
    """What went wrong with each seek, in words; empty when every seek worked."""
    failures = []
    for record in records:
        target = record["target"]
        if not record["completed"]:
            failures.append(f"seek to {target} s did not complete: {record}")
        elif abs(record["landed"] - target) > SEEK_TOLERANCE_S:
            failures.append(f"seek to {target} s landed at {record['landed']:.2f} s")
        elif record["after"] < record["landed"] + 0.5:
            failures.append(f"playback did not advance after the seek to {target} s: {record}")
        elif record["new_streams"] < 1:
            failures.append(f"seek to {target} s sent no new request through the proxy")
    if len(records) < len(SEEK_TARGETS_S):
        failures.append(f"stopped after {len(records)} of {len(SEEK_TARGETS_S)} seeks")
    return failures


def serving_failures(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What the proxy's statistics say went wrong; empty when every media answer was a 206."""
    by_status = {
        status: count - before["requests"]["by_status"].get(status, 0)
        for status, count in after["requests"]["by_status"].items()
    }
    ranges = {key: after["ranges"][key] - before["ranges"][key] for key in after["ranges"]}
    aborted = after["streams"]["aborted"] - before["streams"]["aborted"]
    failures = []
    # The page, its script and the listing are the only 200s: every media answer was a 206,
    # one for each file's first request and at least one per seek.
    if by_status.get("200") != 3:
        failures.append(f"media answered with 200, not 206: {by_status}")
    if by_status.get("206", 0) < 2 + len(SEEK_TARGETS_S):
        failures.append(f"fewer 206 answers than the first requests and the seeks: {by_status}")
    if ranges["single"] != by_status.get("206", 0) or ranges["ignored"]:
        failures.append(f"ranges were not all served as single ranges: {ranges}")
    # Chromium aborts the request it no longer needs on each seek (and on leaving the page).
    if aborted < len(SEEK_TARGETS_S):
        failures.append(f"only {aborted} streams were aborted for {len(SEEK_TARGETS_S)} seeks")
    return failures


async def browse(
    nursery: trio.Nursery, tmp_path: Path, long_clip: Path, *, ignore_range: bool = False
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Run the player scenario; returns the seek records and the proxy's stats around it.

    It ends by leaving the page, which aborts the player's open requests, and waits (5 s at
    most) until neither the proxy nor the origin has an active stream left.
    """
    folder = media_folder(tmp_path)
    shutil.copyfile(long_clip, folder / "long.mp4")
    origin, proxy = await start_origin_and_proxy(nursery, folder, ignore_range=ignore_range)
    before = await stats_of(proxy)
    with trio.fail_after(60):
        async with open_chromium(tmp_path / "profile") as devtools:
            records = await play_and_seek(devtools, proxy)
            await devtools.call("Page.navigate", url="about:blank")
            with trio.fail_after(5):
                while True:
                    after, at_origin = await stats_of(proxy), await stats_of(origin)
                    if after["streams"]["active"] == at_origin["streams"]["active"] == 0:
                        break
                    await trio.sleep(0.05)
    return records, before, after


async def test_browser_seeks_in_a_video_through_the_proxy_with_206_answers(
    nursery: trio.Nursery, tmp_path: Path, long_clip: Path
) -> None:
    records, before, after = await browse(nursery, tmp_path, long_clip)
    assert not seek_failures(records), seek_failures(records)
    assert not serving_failures(before, after), serving_failures(before, after)


async def test_browser_test_fails_against_a_server_that_ignores_range(
    nursery: trio.Nursery, tmp_path: Path, long_clip: Path
) -> None:
    # The same scenario and checks against the origin with Range deleted from every request:
    # the test above must be able to fail, and here it does.
    records, before, after = await browse(nursery, tmp_path, long_clip, ignore_range=True)
    # Each check fails on its own: the player cannot reach the first target in time (it must
    # read the file from byte 0 over the 2 MB/s link), and the proxy counted 200s, not 206s.
    assert seek_failures(records), records
    assert any("media answered with 200" in failure for failure in serving_failures(before, after))
    assert after["ranges"]["ignored"] > before["ranges"]["ignored"]
