"""The proxy's slice cache over real sockets: our origin, nginx and a scripted upstream."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import file_data
from tests.support.multipart_reader import parse_byteranges
from tests.support.nginx import open_nginx
from tests.support.servers import proxy_config, start_app, start_origin
from trio_range.proxy.app import create_app

SLICE = 64 * 1024
VIDEO = file_data(40 * SLICE + 12345, seed=11)


async def start_cached_proxy(
    nursery: trio.Nursery, upstream: str, cache_dir: Path, **overrides: Any
) -> str:
    overrides.setdefault("slice_size_bytes", SLICE)
    config = proxy_config(upstream, cache_dir=str(cache_dir), **overrides)
    return await start_app(nursery, create_app(config), config)


async def stats_of(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        return (await client.get(url + "/stats")).json()  # type: ignore[no-any-return]


def upstream_206s(stats: dict[str, Any]) -> int:
    return int(stats["requests"]["by_status"].get("206", 0))


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` (the cache folder: nothing wakes us when a file lands), bounded."""
    with trio.fail_after(10):
        while not predicate():
            await trio.sleep(0.01)


def has_slice(cache_dir: Path, index: int) -> bool:
    return any(p.suffix == f".{index}" for p in slice_files(cache_dir))


def slice_files(cache_dir: Path) -> list[Path]:
    return sorted(p for p in (cache_dir / "objects").rglob("*") if p.suffix[1:].isdigit())


@pytest.fixture
def video_dir(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    (root / "video.mp4").write_bytes(VIDEO)
    return root


@pytest.fixture(params=["origin", "nginx"])
async def cached(
    request: pytest.FixtureRequest, nursery: trio.Nursery, video_dir: Path, tmp_path: Path
) -> AsyncIterator[str]:
    """A cached proxy URL whose upstream serves ``video_dir`` under /media/."""
    if request.param == "origin":
        upstream = await start_origin(nursery, media_dir=video_dir)
        yield await start_cached_proxy(nursery, upstream, tmp_path / "cache")
        return
    async with open_nginx(root=video_dir.parent) as nginx:
        yield await start_cached_proxy(nursery, nginx.url, tmp_path / "cache")


@pytest.mark.parametrize(
    ("range_value", "start", "stop"),
    [
        (None, 0, len(VIDEO)),
        ("bytes=0-0", 0, 1),
        ("bytes=65535-65536", 65535, 65537),
        ("bytes=-100", len(VIDEO) - 100, len(VIDEO)),
        ("bytes=100000-", 100000, len(VIDEO)),
        ("bytes=5-1000000", 5, 1000001),
    ],
)
async def test_answers_from_the_cache_are_byte_exact_twice(
    cached: str, range_value: str | None, start: int, stop: int
) -> None:
    headers = {"Range": range_value} if range_value else {}
    async with httpx.AsyncClient() as client:
        for _ in range(2):
            response = await client.get(cached + "/media/video.mp4", headers=headers)
            assert response.status_code == (206 if range_value else 200)
            assert response.content == VIDEO[start:stop]
            assert response.headers["accept-ranges"] == "bytes"
            assert response.headers["etag"].startswith('"')
    stats = await stats_of(cached)
    assert stats["cache"]["miss"] == 1
    assert stats["cache"]["hit"] == 1


async def test_multipart_and_416_from_the_cache(cached: str) -> None:
    async with httpx.AsyncClient() as client:
        await client.get(cached + "/media/video.mp4", headers={"Range": "bytes=0-0"})
        response = await client.get(
            cached + "/media/video.mp4", headers={"Range": "bytes=0-99,700000-799999"}
        )
        assert response.status_code == 206
        parts = parse_byteranges(response.content, response.headers["content-type"])
        assert [data for _, _, data in parts] == [VIDEO[0:100], VIDEO[700000:800000]]
        response = await client.get(
            cached + "/media/video.mp4", headers={"Range": f"bytes={len(VIDEO)}-"}
        )
        assert response.status_code == 416
        assert response.headers["content-range"] == f"bytes */{len(VIDEO)}"


async def test_fifty_clients_seeking_at_random_fetch_each_slice_once(
    nursery: trio.Nursery, video_dir: Path, tmp_path: Path
) -> None:
    origin = await start_origin(nursery, media_dir=video_dir)
    proxy = await start_cached_proxy(nursery, origin, tmp_path / "cache")
    rng = random.Random(5)
    wanted = [
        [
            (a, min(a + rng.randrange(1, 3 * SLICE), len(VIDEO)))
            for a in (rng.randrange(len(VIDEO)) for _ in range(4))
        ]
        for _ in range(50)
    ]
    failures: list[str] = []

    async def viewer(ranges: list[tuple[int, int]]) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            for start, stop in ranges:
                response = await client.get(
                    proxy + "/media/video.mp4", headers={"Range": f"bytes={start}-{stop - 1}"}
                )
                if response.content != VIDEO[start:stop]:
                    failures.append(f"{start}-{stop}: {response.status_code}")

    with trio.fail_after(60):
        async with trio.open_nursery() as viewers:
            for ranges in wanted:
                viewers.start_soon(viewer, ranges)
    assert failures == []
    touched = {
        i for ranges in wanted for a, b in ranges for i in range(a // SLICE, (b - 1) // SLICE + 1)
    }
    assert upstream_206s(await stats_of(origin)) == len(touched)
    cache = (await stats_of(proxy))["cache"]
    assert cache["bytes_from_upstream"] == sum(min(SLICE, len(VIDEO) - i * SLICE) for i in touched)


async def test_stats_metrics_and_access_log_tell_hits_from_misses(
    nursery: trio.Nursery, video_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_range.access")
    origin = await start_origin(nursery, media_dir=video_dir)
    proxy = await start_cached_proxy(nursery, origin, tmp_path / "cache", access_log=True)
    async with httpx.AsyncClient() as client:
        for _ in range(3):
            response = await client.get(proxy + "/media/video.mp4", headers={"Range": "bytes=0-9"})
            assert response.content == VIDEO[:10]
            await wait_until(partial(has_slice, tmp_path / "cache", 0))
        await client.get(proxy + "/media/video.mp4", headers={"Authorization": "Basic eDp5"})
        metrics = (await client.get(proxy + "/metrics")).text
    cache = (await stats_of(proxy))["cache"]
    assert {k: cache[k] for k in ("hit", "miss", "revalidated", "bypass")} == {
        "hit": 2,
        "miss": 1,
        "revalidated": 0,
        "bypass": 1,
    }
    assert cache["hit_ratio"] == pytest.approx(2 / 3, abs=1e-3)
    assert cache["bytes_from_cache"] == 20
    assert cache["bytes_from_upstream"] == SLICE
    assert 0 < cache["disk_bytes"] < 2 * SLICE
    assert (cache["collapsed"], cache["evictions"]) == (0, 0)
    assert 'trio_range_cache_requests_total{result="hit"} 2.0' in metrics
    assert "trio_range_cache_bytes_from_upstream_total 65536.0" in metrics
    assert "trio_range_cache_disk_bytes " in metrics
    lines = [r.getMessage() for r in caplog.records if r.name == "trio_range.access"]
    cached = [line.rpartition("cache=")[2].split()[0] for line in lines if "cache=" in line]
    assert cached == ["miss", "hit", "hit", "bypass"]


async def test_the_origins_cache_control_sets_the_proxys_freshness(
    nursery: trio.Nursery, video_dir: Path, tmp_path: Path
) -> None:
    origin = await start_origin(nursery, media_dir=video_dir, cache_control="max-age=0")
    proxy = await start_cached_proxy(nursery, origin, tmp_path / "cache")
    async with httpx.AsyncClient() as client:
        direct = await client.get(origin + "/media/video.mp4", headers={"Range": "bytes=0-0"})
        assert direct.headers["cache-control"] == "max-age=0"
        for _ in range(3):
            response = await client.get(proxy + "/media/video.mp4", headers={"Range": "bytes=0-9"})
            assert response.content == VIDEO[:10]
            assert response.headers["cache-control"] == "max-age=0"
            # Stored before the next request, which then revalidates it (not joins its fill).
            await wait_until(partial(has_slice, tmp_path / "cache", 0))
    # Stale at once: every later answer was revalidated, by a 304 of the origin.
    assert (await stats_of(proxy))["cache"]["revalidated"] == 2
    assert (await stats_of(origin))["requests"]["by_status"]["304"] == 2


async def test_range_and_query_range_never_poison_other_answers_through(cached: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(cached + "/media/video.mp4?range=0-99")
        assert (response.status_code, response.content) == (206, VIDEO[:100])
        response = await client.get(cached + "/media/video.mp4", headers={"Range": "bytes=-7"})
        assert response.content == VIDEO[-7:]
        whole = await client.get(cached + "/media/video.mp4")
        assert (whole.status_code, whole.content) == (200, VIDEO)


async def test_head_and_preconditions_are_answered_from_the_record(
    nursery: trio.Nursery, video_dir: Path, tmp_path: Path
) -> None:
    origin = await start_origin(nursery, media_dir=video_dir)
    proxy = await start_cached_proxy(nursery, origin, tmp_path / "cache")
    url = proxy + "/media/video.mp4"
    async with httpx.AsyncClient() as client:
        unknown = await client.head(url)  # nothing known yet: relayed, no slice fetched
        assert (unknown.status_code, unknown.headers["content-length"]) == (200, str(len(VIDEO)))
        first = await client.get(url, headers={"Range": "bytes=0-0"})
        etag = first.headers["etag"]
        before = upstream_206s(await stats_of(origin))
        head = await client.head(url, headers={"Range": "bytes=10-19"})
        assert (head.status_code, head.headers["content-range"], head.content) == (
            206,
            f"bytes 10-19/{len(VIDEO)}",
            b"",
        )
        not_modified = await client.get(url, headers={"If-None-Match": etag})
        assert (not_modified.status_code, not_modified.headers["etag"]) == (304, etag)
        failed = await client.get(url, headers={"If-Match": '"other"'})
        assert failed.status_code == 412
        stale_range = await client.get(
            url, headers={"Range": "bytes=0-9", "If-Range": '"an old version"'}
        )
        assert (stale_range.status_code, stale_range.content) == (200, VIDEO)
        assert int(stale_range.headers["age"]) >= 0
    # None of these needed the upstream but the slices of the last whole answer.
    assert upstream_206s(await stats_of(origin)) == before + len(VIDEO) // SLICE


async def test_revalidation_through_nginx_gets_304s(
    nursery: trio.Nursery, video_dir: Path, tmp_path: Path
) -> None:
    async with open_nginx(root=video_dir.parent) as nginx:
        proxy = await start_cached_proxy(
            nursery, nginx.url, tmp_path / "cache", cache_default_ttl_s=0.0
        )
        async with httpx.AsyncClient() as client:
            for _ in range(3):
                response = await client.get(
                    proxy + "/media/video.mp4", headers={"Range": "bytes=100-199"}
                )
                assert response.content == VIDEO[100:200]
                await wait_until(partial(has_slice, tmp_path / "cache", 0))
        cache = (await stats_of(proxy))["cache"]
        assert (cache["miss"], cache["revalidated"], cache["hit"]) == (1, 2, 0)
        assert cache["bytes_from_upstream"] == SLICE  # the two 304s carried no slice


async def test_workers_sharing_a_cache_folder_serve_each_others_slices(
    nursery: trio.Nursery, video_dir: Path, tmp_path: Path
) -> None:
    origin = await start_origin(nursery, media_dir=video_dir)
    first = await start_cached_proxy(nursery, origin, tmp_path / "cache")
    second = await start_cached_proxy(nursery, origin, tmp_path / "cache")
    async with httpx.AsyncClient(timeout=30) as client:
        with trio.fail_after(30):
            async with trio.open_nursery() as both:
                for proxy in (first, second):  # both fill the same slices at once: no harm
                    both.start_soon(client.get, proxy + "/media/video.mp4")
        await wait_until(lambda: len(slice_files(tmp_path / "cache")) == len(VIDEO) // SLICE + 1)
        fetched = upstream_206s(await stats_of(origin))
        for proxy in (first, second):
            response = await client.get(proxy + "/media/video.mp4", headers={"Range": "bytes=9-"})
            assert response.content == VIDEO[9:]
    assert upstream_206s(await stats_of(origin)) == fetched  # every slice from the folder
