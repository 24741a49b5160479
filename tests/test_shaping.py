"""Traffic shaping over real sockets (issue 16): paced downloads, the upstream's rate, CPU.

Timing assertions are lower bounds (pacing can only make a download slower, however loaded
the machine is) with generous upper bounds, and each has an unpaced twin that is far faster,
so they fail without pacing and hold on a busy machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import file_data
from tests.proxy.test_proxy import start_proxy, stats_of
from tests.support.faulty_upstream import open_faulty_upstream
from tests.support.processes import TRIO_RANGE, start_process, stop_gracefully
from tests.support.servers import origin_config, raw_chunks, start_app, start_origin
from trio_range.origin.app import create_app as create_origin

MiB = 1024 * 1024
MEDIA = Path(__file__).resolve().parents[1] / "media"


async def timed_get(
    url: str, headers: dict[str, str] | None = None
) -> tuple[float, httpx.Response]:
    began = trio.current_time()
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.get(url, headers=headers)
    return trio.current_time() - began, response


@pytest.fixture
def big_media(tmp_path: Path) -> Path:
    (tmp_path / "16m.bin").write_bytes(file_data(16 * MiB, seed=16))
    (tmp_path / "4m.bin").write_bytes(file_data(4 * MiB, seed=4))
    return tmp_path


async def test_16_mib_with_a_2_mib_burst_at_4_mib_per_s_takes_3_5_s(
    nursery: trio.Nursery, big_media: Path
) -> None:
    paced = await start_origin(
        nursery, media_dir=big_media, limit_rate_bytes_per_s=4 * MiB, limit_rate_after_bytes=2 * MiB
    )
    unpaced = await start_origin(nursery, media_dir=big_media)
    fast, whole = await timed_get(unpaced + "/media/16m.bin")
    slow, response = await timed_get(paced + "/media/16m.bin")
    assert response.content == whole.content == (big_media / "16m.bin").read_bytes()
    # (16 - 2) MiB at 4 MiB/s: 3.5 s. Never faster; slower only on a very loaded machine.
    assert 3.0 <= slow <= 30.0, slow
    assert fast < 3.0, fast
    stats = await stats_of(paced)
    assert stats["shaping"]["paced_streams"] == 1
    assert 2.5 <= stats["shaping"]["pacing_wait_s"] <= slow
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(paced + "/metrics")).text
    assert "\ntrio_range_paced_streams_total 1.0\n" in metrics
    assert "\ntrio_range_pacing_wait_seconds_total " in metrics
    assert '\ntrio_range_refused_total{limit="max_connections_per_client"} 0.0\n' in metrics


async def test_the_proxy_paces_relayed_chunks(nursery: trio.Nursery, big_media: Path) -> None:
    origin = await start_origin(nursery, media_dir=big_media)
    proxy = await start_proxy(
        nursery, origin, limit_rate_bytes_per_s=2 * MiB, limit_rate_after_bytes=MiB
    )
    took, response = await timed_get(proxy + "/media/4m.bin", {"Range": "bytes=0-"})
    assert response.status_code == 206
    assert response.content == (big_media / "4m.bin").read_bytes()
    assert 1.2 <= took <= 30.0, took  # (4 - 1) MiB at 2 MiB/s: 1.5 s


async def test_the_cached_proxy_paces_misses_and_hits(
    nursery: trio.Nursery, big_media: Path, tmp_path: Path
) -> None:
    origin = await start_origin(nursery, media_dir=big_media)
    proxy = await start_proxy(
        nursery,
        origin,
        cache_dir=str(tmp_path / "cache"),
        limit_rate_bytes_per_s=2 * MiB,
        limit_rate_after_bytes=MiB,
    )
    for expected in ("miss", "hit"):
        took, response = await timed_get(proxy + "/media/4m.bin")
        assert response.content == (big_media / "4m.bin").read_bytes()
        assert 1.2 <= took <= 30.0, (expected, took)  # (4 - 1) MiB at 2 MiB/s: 1.5 s
        stats = await stats_of(proxy)
        assert stats["cache"][expected] == 1, stats["cache"]
    assert stats["shaping"]["paced_streams"] == 2


async def test_a_video_is_paced_at_a_multiple_of_its_bitrate_reading_its_header_once(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trio_range.origin.shaping as shaping
    from trio_range.http import media_duration

    reads: list[int] = []
    original = media_duration.media_duration_s

    def counted(read: Any, size: int) -> float:
        reads.append(size)
        return original(read, size)

    monkeypatch.setattr(shaping, "media_duration_s", counted)
    url = await start_origin(nursery, media_dir=MEDIA, limit_rate_bitrate_factor=8.0)
    size = (MEDIA / "sample.mp4").stat().st_size
    # 8 x (1 153 690 B / 15 s) = 615 301 B/s: the whole file in 1.875 s.
    took, response = await timed_get(url + "/media/sample.mp4")
    assert response.content == (MEDIA / "sample.mp4").read_bytes()
    assert 1.5 <= took <= 30.0, took
    took, response = await timed_get(url + "/media/sample.mp4", {"Range": f"bytes={size - 1000}-"})
    assert response.status_code == 206
    assert reads == [size]  # one header read for both requests
    # A file that is not a video is not paced (there is no fixed rate).
    took, response = await timed_get(url + "/media/README.md")
    assert response.status_code == 200
    assert reads == [size]


# --- the upstream's X-Accel-Limit-Rate -------------------------------------------------------


async def rate_setting_upstream(nursery: trio.Nursery, media_dir: Path) -> str:
    """An origin that answers with the X-Accel-Limit-Rate values the request's X-Test-Rate
    lists (one field per comma-separated value), as an upstream that sets a rate would."""
    config = origin_config(media_dir=media_dir)
    app = create_origin(config)

    @app.after_request
    async def set_rate(response: Any) -> Any:
        from quart import request

        for value in filter(None, request.headers.get("X-Test-Rate", "").split(",")):
            response.headers.add("X-Accel-Limit-Rate", value)
        return response

    return await start_app(nursery, app, config)


@pytest.mark.parametrize(
    ("trust", "configured", "upstream_says", "paced"),
    [
        (True, 0, "1048576", True),  # trusted: the upstream's 1 MiB/s
        (False, 0, "1048576", False),  # untrusted: ignored (and still stripped)
        (True, 1048576, "0", False),  # trusted 0: this response unpaced
        (True, 1048576, "", True),  # no field: the configured rate
        (True, 0, "fast", False),  # garbage: the configured rate (none)
        (True, 1048576, "fast", True),  # garbage: the configured rate
        (True, 0, "1048576,2097152", False),  # disagreeing fields: garbage
        (True, 0, "1048576,1048576", True),  # agreeing fields: one value
    ],
)
async def test_x_accel_limit_rate(
    nursery: trio.Nursery,
    big_media: Path,
    trust: bool,
    configured: int,
    upstream_says: str,
    paced: bool,
) -> None:
    upstream = await rate_setting_upstream(nursery, big_media)
    proxy = await start_proxy(
        nursery, upstream, trust_upstream_rate=trust, limit_rate_bytes_per_s=configured
    )
    took, response = await timed_get(proxy + "/media/4m.bin", {"X-Test-Rate": upstream_says})
    assert response.content == (big_media / "4m.bin").read_bytes()
    assert "x-accel-limit-rate" not in response.headers
    if paced:
        assert 3.0 <= took <= 30.0, took  # 4 MiB at 1 MiB/s, no burst: 4 s
    else:
        assert took < 3.0, took


# --- disconnects and CPU ----------------------------------------------------------------------


async def test_leaving_a_paced_stream_reaches_the_upstream_at_once(nursery: trio.Nursery) -> None:
    async with open_faulty_upstream("stream_forever") as upstream:
        proxy = await start_proxy(nursery, upstream.url, limit_rate_bytes_per_s=64 * 1024)
        async with httpx.AsyncClient() as client, client.stream("GET", proxy + "/x") as response:
            async with raw_chunks(response) as chunks:
                async for _ in chunks:
                    break
                # Now the proxy is asleep waiting for tokens, neither reading nor writing.
                await trio.sleep(0.3)
                left_at = trio.current_time()
        with trio.fail_after(20):
            await upstream.peer_gone.wait()
        assert upstream.peer_gone_at is not None
        # Milliseconds on an idle machine; the bound is for a loaded one. (A sleep that ignored
        # cancellation would still end here, at the next write after its 0.25 s wait: the
        # cancellation itself is checked under the autojump clock in tests/server/test_pacing.py.)
        took = upstream.peer_gone_at - left_at
        print(f"paced proxy: client left, upstream connection closed {took * 1000:.1f} ms later")
        assert 0 <= took < 2.0


async def test_leaving_a_paced_origin_stream_ends_it_at_once(
    nursery: trio.Nursery, big_media: Path
) -> None:
    url = await start_origin(nursery, media_dir=big_media, limit_rate_bytes_per_s=64 * 1024)
    async with httpx.AsyncClient() as client:
        async with client.stream("GET", url + "/media/16m.bin") as response:
            async with raw_chunks(response) as chunks:
                async for _ in chunks:
                    break
                await trio.sleep(0.3)  # the origin sleeps for tokens (16 m.bin takes 256 s)
                left_at = trio.current_time()
        with trio.fail_after(20):
            while (await client.get(url + "/stats")).json()["streams"]["aborted"] != 1:
                await trio.sleep(0.001)
        took = trio.current_time() - left_at
    print(f"paced origin: client left, stream counted aborted {took * 1000:.1f} ms later")
    assert took < 2.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_ten_paced_streams_use_almost_no_cpu(big_media: Path, nursery: trio.Nursery) -> None:
    process, urls = await start_process(
        nursery,
        [*TRIO_RANGE, "origin", "--port", "0", "--media-dir", str(big_media), "--no-access-log"],
        {"TRIO_RANGE_ORIGIN_LIMIT_RATE_BYTES_PER_S": str(MiB)},
    )
    try:
        before = cpu_seconds(process.pid)
        began = trio.current_time()

        async def download() -> None:
            took, response = await timed_get(urls[0] + "/media/4m.bin")
            assert len(response.content) == 4 * MiB
            assert took >= 3.0

        async with trio.open_nursery() as downloads:
            for _ in range(10):
                downloads.start_soon(download)
        spent = cpu_seconds(process.pid) - before
        took = trio.current_time() - began
    finally:
        await stop_gracefully(process, 15)
    print(f"ten paced 4 MiB streams at 1 MiB/s: {took:.1f} s, server CPU {spent:.2f} s")
    # 40 MiB at 10 MiB/s in all: ~4 s of sleeping. A writer that polled would burn those 4 s.
    assert spent < 1.5, spent


# --- per-client limits -------------------------------------------------------------------------


async def request_on(stream: trio.SocketStream, headers: bytes = b"") -> bytes:
    """GET /healthz on an open connection with ``Connection: close``; what came back."""
    await stream.send_all(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers + b"\r\n"
    )
    received = b""
    with trio.fail_after(10):
        while chunk := await stream.receive_some(65536):
            received += chunk
    return received


async def test_connections_past_the_per_client_limit_get_503(
    nursery: trio.Nursery, big_media: Path
) -> None:
    url = await start_origin(nursery, media_dir=big_media, max_connections_per_client=2)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    held = [await trio.open_tcp_stream(host, int(port)) for _ in range(2)]
    try:
        async with await trio.open_tcp_stream(host, int(port)) as third:
            # X-Forwarded-For changes nothing: no proxy is trusted.
            answer = await request_on(third, b"X-Forwarded-For: 10.9.9.9\r\n")
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"\r\nRetry-After: 1\r\n" in answer
        async with held[0]:
            assert (await request_on(held[0])).startswith(b"HTTP/1.1 200 ")
        # Once one of them is closed, a new connection is served (the server notices the close
        # when it does: a bounded retry, not a sleep).
        with trio.fail_after(10):
            while True:
                async with await trio.open_tcp_stream(host, int(port)) as again:
                    if (await request_on(again)).startswith(b"HTTP/1.1 200 "):
                        break
                await trio.sleep(0.01)
    finally:
        for stream in held:
            await stream.aclose()
    stats = await stats_of(url)
    assert stats["refused"]["max_connections_per_client"] >= 1
    assert stats["refused"]["max_connections"] == 0


async def test_behind_a_trusted_proxy_the_forwarded_client_is_limited_per_request(
    nursery: trio.Nursery, big_media: Path
) -> None:
    url = await start_origin(
        nursery,
        media_dir=big_media,
        max_connections_per_client=1,
        trusted_proxies="127.0.0.0/8",
        limit_rate_bytes_per_s=64 * 1024,  # so that a download stays in flight
    )
    host, port = url.removeprefix("http://").rsplit(":", 1)
    # The trusted proxy's own connections are not limited: it carries many clients.
    idle = [await trio.open_tcp_stream(host, int(port)) for _ in range(3)]
    async with httpx.AsyncClient() as client:
        a = {"X-Forwarded-For": "10.0.0.1", "Range": "bytes=0-0"}
        one = url + "/media/4m.bin"

        async def status(forwarded_for: str) -> int:
            answer = await client.get(one, headers={**a, "X-Forwarded-For": forwarded_for})
            return answer.status_code

        forwarded = {"X-Forwarded-For": "10.0.0.1"}
        async with client.stream("GET", one, headers=forwarded) as in_flight:
            assert in_flight.status_code == 200
            again = await client.get(one, headers=a)
            assert again.status_code == 503
            assert again.headers["retry-after"] == "1"
            assert again.text == "Too Many Connections From This Client\n"
            # Another client, and the same client written by a spoofing client in front of a
            # proxy that appended the real address (the rightmost untrusted entry counts).
            assert await status("10.0.0.2") == 206
            assert await status("10.0.0.1, 10.0.0.3") == 206
            # A chain through a second trusted proxy still names the first untrusted address.
            assert await status("10.0.0.1, 127.0.0.5") == 503
            # Monitoring answers whatever the limits.
            assert (await client.get(url + "/healthz", headers=a)).status_code == 200
        # The download ended: its client may come back.
        assert await status("10.0.0.1") == 206
    for stream in idle:
        await stream.aclose()
    stats = await stats_of(url)
    assert stats["refused"]["max_connections_per_client"] == 2
