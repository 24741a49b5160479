"""The /player page, and a real browser seeking in a video through the proxy.

The browser is Debian's headless Chromium (scripts/install-system-deps.sh installs it), driven
over its DevTools protocol on a pipe (``--remote-debugging-pipe``: NUL-terminated JSON on file
descriptors 3 and 4), so the tests need no browser driver and no network.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypercorn.trio import serve
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

from tests.support.devtools import DevTools, open_chromium
from tests.support.servers import origin_config, proxy_config, start_app
from trio_range.origin.app import create_app as create_origin
from trio_range.origin.player import render_page
from trio_range.proxy.app import create_app as create_proxy
from trio_range.server.app import RangeApp
from trio_range.server.serving import hypercorn_config

ROOT = Path(__file__).resolve().parents[2]
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
    nursery: trio.Nursery, folder: Path, *, ignore_range: bool = False, **proxy_overrides: Any
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
    proxy = proxy_config(origin, **proxy_overrides)
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

# Seek, wait for "seeked" (or SEEK_BOUND_MS), note where playback stands, then watch it advance
# for up to SEEK_BOUND_MS. Bounded in the page, so a seek that never completes still returns.
# The bound must stay below what the link (tests/support/devtools.py) needs to reach the first
# target from byte 0, or a server without ranges could pass.
SEEK_BOUND_MS = 8000
SEEK = """(async (target) => {
  const v = document.getElementById("video");
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const seeked = new Promise((resolve) => v.addEventListener("seeked", resolve, {once: true}));
  v.currentTime = target;
  const bound = sleep(SEEK_BOUND_MS).then(() => false);
  const completed = await Promise.race([seeked.then(() => true), bound]);
  const landed = v.currentTime;
  const deadline = performance.now() + (completed ? SEEK_BOUND_MS : 0);
  while (v.currentTime < landed + 0.5 && !v.ended && performance.now() < deadline) {
    await sleep(50);
  }
  return {completed, landed, after: v.currentTime, paused: v.paused, seeking: v.seeking};
})(%s)""".replace("SEEK_BOUND_MS", str(SEEK_BOUND_MS))

SEEK_TARGETS_S = [240.0, 150.0, 470.0]  # middle, back, and 10 s before the end
SEEK_TOLERANCE_S = 1.0  # keyframes are 1 s apart; Chromium lands on the exact time anyway


async def wait_for(devtools: DevTools, condition: str, *, timeout_s: float = 30.0) -> Any:
    """Poll a JavaScript condition on the video until it holds; returns the video's state.

    Generous: Chromium starting playback on a loaded machine; it returns as soon as it holds.
    """
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
    nursery: trio.Nursery,
    tmp_path: Path,
    long_clip: Path,
    *,
    ignore_range: bool = False,
    **proxy_overrides: Any,
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Run the player scenario; returns the seek records and the proxy's stats around it.

    It ends by leaving the page, which aborts the player's open requests, and waits (30 s at
    most, generous for a loaded machine) until neither the proxy nor the origin has an active
    stream left.
    """
    folder = media_folder(tmp_path)
    shutil.copyfile(long_clip, folder / "long.mp4")
    origin, proxy = await start_origin_and_proxy(
        nursery, folder, ignore_range=ignore_range, **proxy_overrides
    )
    before = await stats_of(proxy)
    # Only a hang reaches this bound: every wait inside has its own, and the seeks are bounded
    # in the page (3 x 2 x SEEK_BOUND_MS at most).
    with trio.fail_after(180):
        async with open_chromium(tmp_path / "profile") as devtools:
            records = await play_and_seek(devtools, proxy)
            await devtools.call("Page.navigate", url="about:blank")
            with trio.fail_after(30):
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


async def test_browser_plays_and_seeks_through_a_paced_proxy(
    nursery: trio.Nursery, tmp_path: Path, long_clip: Path
) -> None:
    # Issue 16's video setting: a burst of about 4 s of video, then 1.25 x its bitrate
    # (the sample: 1 153 690 B in 15 s, 76 913 B/s). Each seek's new request gets its burst.
    bitrate = (SAMPLE.stat().st_size + 14) // 15
    records, before, after = await browse(
        nursery,
        tmp_path,
        long_clip,
        limit_rate_bytes_per_s=bitrate * 5 // 4,
        limit_rate_after_bytes=bitrate * 4,
    )
    assert not seek_failures(records), seek_failures(records)
    assert not serving_failures(before, after), serving_failures(before, after)
    paced = after["shaping"]["paced_streams"] - before["shaping"]["paced_streams"]
    assert paced >= len(SEEK_TARGETS_S)
    assert after["shaping"]["pacing_wait_s"] > 0


async def test_browser_test_fails_against_a_server_that_ignores_range(
    nursery: trio.Nursery, tmp_path: Path, long_clip: Path
) -> None:
    # The same scenario and checks against the origin with Range deleted from every request:
    # the test above must be able to fail, and here it does.
    records, before, after = await browse(nursery, tmp_path, long_clip, ignore_range=True)
    # Each check fails on its own: the player cannot reach the first target in time (it must
    # read the file from byte 0 over the 1 MB/s link), and the proxy counted 200s, not 206s.
    assert seek_failures(records), records
    assert any("media answered with 200" in failure for failure in serving_failures(before, after))
    assert after["ranges"]["ignored"] > before["ranges"]["ignored"]
