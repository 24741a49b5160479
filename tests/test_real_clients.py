"""Real clients through the proxy: curl and wget resuming, ffprobe and ffmpeg seeking, httpx and
urllib reading ranges. Each talks to the proxy, which relays to our origin, over loopback.

The programs are Debian's (scripts/install-system-deps.sh installs curl, wget and ffmpeg); a
missing one fails its test with the command that installs it, never a skip.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import file_data
from tests.support.servers import proxy_config, start_app, start_origin
from trio_range.proxy.app import create_app as create_proxy

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "media" / "sample.mp4"
BIG = file_data(3_000_000)
INSTALL = "scripts/install-system-deps.sh (make system-deps) installs it"


def program(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is missing: {INSTALL}"
    return found


async def run(*command: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[bytes]:
    """Run a program in a worker thread (bounded in time), capturing its output."""
    return await trio.to_thread.run_sync(
        lambda: subprocess.run(
            [program(command[0]), *command[1:]],
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    )


@pytest.fixture
async def proxy_url(nursery: trio.Nursery, media_dir: Path) -> str:
    """The proxy in front of an origin serving ``media_dir`` plus the shipped sample video."""
    shutil.copyfile(SAMPLE, media_dir / "sample.mp4")
    origin = await start_origin(nursery, media_dir=media_dir, default_file="sample.mp4")
    config = proxy_config(origin)
    return await start_app(nursery, create_proxy(config), config)


async def interrupted_download(command: list[str], target: Path) -> int:
    """Run a rate-limited download into ``target`` and kill it as soon as it has written
    something; returns the bytes it wrote.

    Interrupted by what the client did, not by a deadline: a time limit on a loaded machine can
    cut a download before its first byte, or let a fast one finish.
    """
    process = await trio.lowlevel.open_process(
        [program(command[0]), *command[1:]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with trio.fail_after(30):
            while not size_of(target):
                await trio.sleep(0.01)
    finally:
        with trio.CancelScope(shield=True):
            process.kill()
            await process.wait()
    return size_of(target)


def size_of(path: Path) -> int:
    """The file's size, 0 while it does not exist."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


async def stats_of(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        return (await client.get(url + "/stats")).json()  # type: ignore[no-any-return]


async def settled_stats(url: str) -> dict[str, Any]:
    """The proxy's statistics once no stream is active (a client's aborted reads included)."""
    with trio.fail_after(10):
        while (stats := await stats_of(url))["streams"]["active"]:
            await trio.sleep(0.02)
    return stats


# --- resuming downloads --------------------------------------------------------------------


async def test_curl_resumes_an_interrupted_download_through_the_proxy(
    proxy_url: str, tmp_path: Path
) -> None:
    target = tmp_path / "big.bin"
    url = proxy_url + "/media/big.bin"
    # Interrupted for real: killed once it wrote part of the file. At 100 kB/s the whole file
    # would take 30 s, so it is cut long before.
    written = await interrupted_download(
        ["curl", "-sS", "--limit-rate", "100K", "-o", str(target), url], target
    )
    assert 0 < written < len(BIG)

    resumed = await run("curl", "-sS", "-C", "-", "-o", str(target), url)
    assert resumed.returncode == 0, resumed.stderr
    assert target.read_bytes() == BIG
    stats = await settled_stats(proxy_url)
    # The cut download (a 200: loopback socket buffers may have taken all of it, so the proxy
    # may count it complete) and the resume (a 206 for the rest).
    assert stats["requests"]["by_status"] == {"200": 1, "206": 1}
    assert stats["ranges"]["single"] == 1


async def test_wget_continues_an_interrupted_download_through_the_proxy(
    proxy_url: str, tmp_path: Path
) -> None:
    target = tmp_path / "big.bin"
    url = proxy_url + "/media/big.bin"
    # Interrupted for real: killed once it wrote part of the file (at 100 kB/s, long before
    # the 30 s the whole file would take).
    written = await interrupted_download(
        ["wget", "-q", "--limit-rate=100k", "-O", str(target), url], target
    )
    assert 0 < written < len(BIG)

    resumed = await run("wget", "-q", "-c", "-O", str(target), url)
    assert resumed.returncode == 0, resumed.stderr
    assert target.read_bytes() == BIG
    stats = await settled_stats(proxy_url)
    assert stats["requests"]["by_status"] == {"200": 1, "206": 1}
    assert stats["ranges"]["single"] == 1


# --- ffprobe and ffmpeg over HTTP ----------------------------------------------------------


async def test_ffprobe_reads_duration_and_streams_over_http_through_the_proxy(
    proxy_url: str,
) -> None:
    probe = await run(
        "ffprobe",
        "-v",
        "error",
        "-show_entries",
        "format=duration:stream=codec_type,codec_name,width,height",
        "-of",
        "json",
        proxy_url + "/media/sample.mp4",
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert float(found["format"]["duration"]) == pytest.approx(15.0, abs=0.05)
    streams = {(s["codec_type"], s["codec_name"]) for s in found["streams"]}
    assert streams == {("video", "h264"), ("audio", "aac")}
    video = next(s for s in found["streams"] if s["codec_type"] == "video")
    assert (video["width"], video["height"]) == (640, 360)
    # ffmpeg's http protocol always asks for a range (bytes=0-), and gets a 206.
    stats = await settled_stats(proxy_url)
    assert stats["requests"]["by_status"].get("200") is None
    assert stats["ranges"]["single"] >= 1


def frame_command(source: str, seconds: float) -> list[str]:
    """One decoded frame at ``seconds`` (input seeking, -ss before -i), as raw RGB on stdout."""
    return [
        "ffmpeg",
        "-v",
        "error",
        "-ss",
        str(seconds),
        "-i",
        source,
        "-frames:v",
        "1",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    ]


async def test_ffmpeg_seeks_over_http_through_the_proxy_with_ranges(proxy_url: str) -> None:
    over_http = await run(*frame_command(proxy_url + "/media/sample.mp4", 7))
    assert over_http.returncode == 0, over_http.stderr
    assert len(over_http.stdout) == 640 * 360 * 3
    # The same frame as from the local file (decoding is deterministic), and not the first one:
    # the frame near 7 s (its timestamp is burnt into the picture: 00:00:07.000 frame 175).
    local = await run(*frame_command(str(SAMPLE), 7))
    first = await run(*frame_command(str(SAMPLE), 0))
    assert over_http.stdout == local.stdout
    assert over_http.stdout != first.stdout
    # ffmpeg read the index from the start of the file, then jumped to the 7 s keyframe with a
    # second range request (the first one aborted): two 206s, never the whole file as a 200.
    stats = await settled_stats(proxy_url)
    assert stats["requests"]["by_status"].get("200") is None
    assert stats["requests"]["by_status"].get("206", 0) >= 2
    assert stats["ranges"]["single"] == stats["requests"]["by_status"]["206"]
    assert stats["bytes_sent"] < SAMPLE.stat().st_size


# --- Python clients ------------------------------------------------------------------------


async def test_httpx_reads_ranges_through_the_proxy(proxy_url: str) -> None:
    url = proxy_url + "/media/big.bin"
    async with httpx.AsyncClient() as client:
        middle = await client.get(url, headers={"Range": "bytes=1000000-1000999"})
        suffix = await client.get(url, headers={"Range": "bytes=-500"})
        streamed = bytearray()
        async with client.stream("GET", url, headers={"Range": "bytes=2000000-"}) as response:
            assert response.status_code == 206
            async for chunk in response.aiter_bytes():
                streamed += chunk
    assert (middle.status_code, middle.content) == (206, BIG[1_000_000:1_001_000])
    assert middle.headers["content-range"] == f"bytes 1000000-1000999/{len(BIG)}"
    assert (suffix.status_code, suffix.content) == (206, BIG[-500:])
    assert bytes(streamed) == BIG[2_000_000:]


def urllib_get(url: str, range_value: str | None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url)
    if range_value is not None:
        request.add_header("Range", range_value)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()


async def test_urllib_reads_ranges_through_the_proxy(proxy_url: str) -> None:
    url = proxy_url + "/media/big.bin"
    status, headers, body = await trio.to_thread.run_sync(urllib_get, url, "bytes=20-345")
    assert (status, body) == (206, BIG[20:346])
    assert headers["content-range"] == f"bytes 20-345/{len(BIG)}"
    assert headers["accept-ranges"] == "bytes"
    status, _, body = await trio.to_thread.run_sync(urllib_get, url + "?range=0-9", None)
    assert (status, body) == (206, BIG[:10])
    status, _, body = await trio.to_thread.run_sync(urllib_get, url, None)
    assert (status, body) == (200, BIG)
