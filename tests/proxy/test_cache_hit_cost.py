"""A cache hit costs what the origin's own request costs (issue 15's ``cache_rate`` target).

Counts only (Python calls, files opened), never durations: benchmarks/cache_hot_path.py has
the figures; these fail if a hit's cost climbs back.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import file_data
from tests.proxy.test_cache import SLICE, slice_files, start_cached_proxy, wait_until
from tests.server.test_serving import open_client
from tests.support.servers import start_origin

BIG = file_data(3_000_000)  # media_dir's big.bin
SLICES = -(-len(BIG) // SLICE)
RANGE_BYTES = 4096
REQUESTS = 40


async def _ranges(url: str, starts: list[int]) -> None:
    """Keep-alive GETs of 4 KiB ranges of big.bin on one connection, each answer checked."""
    stream = await open_client(url)
    async with stream:
        buffer = b""
        for start in starts:
            await stream.send_all(
                b"GET /media/big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=%d-%d\r\n\r\n"
                % (start, start + RANGE_BYTES - 1)
            )
            while b"\r\n\r\n" not in buffer:
                buffer += await stream.receive_some(65536)
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 206"), head
            while len(buffer) < RANGE_BYTES:
                buffer += await stream.receive_some(65536)
            body, buffer = buffer[:RANGE_BYTES], buffer[RANGE_BYTES:]
            assert body == BIG[start : start + RANGE_BYTES]


async def _calls(url: str, starts: list[int]) -> int:
    await _ranges(url, starts[:5])  # warm: the connection's tasks, caches
    profile = cProfile.Profile()
    profile.enable()
    try:
        await _ranges(url, starts)
    finally:
        profile.disable()
    return int(pstats.Stats(profile).total_calls)  # type: ignore[attr-defined]


async def test_a_hit_opens_no_file_and_costs_about_the_origins_python_calls(
    nursery: trio.Nursery, media_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    origin = await start_origin(nursery, media_dir=media_dir)
    cache_dir = tmp_path / "cache"
    proxy = await start_cached_proxy(nursery, origin, cache_dir, cache_default_ttl_s=3600.0)
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.get(proxy + "/media/big.bin")).content == BIG
    await wait_until(lambda: len(slice_files(cache_dir)) == SLICES)
    pick = random.Random(3)
    starts = [pick.randrange(len(BIG) - RANGE_BYTES) for _ in range(REQUESTS)]
    await _ranges(proxy, starts)  # every slice these touch is open now

    opened: list[str] = []
    real_open = os.open

    def counting_open(path: Any, *args: Any, **kwargs: Any) -> int:
        opened.append(os.fsdecode(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting_open)
    await _ranges(proxy, starts)
    assert not [path for path in opened if str(cache_dir) in path]  # no slice file opened

    origin_calls = await _calls(origin, starts)
    hit_calls = await _calls(proxy, starts)
    # The hit's three more fields (Via, Date, Age, which RFC 9110/9111 ask of a cache's answer:
    # about 11 calls each through Werkzeug, Hypercorn and h11) against the origin's path
    # resolution and file open: 5.2-6.1% more calls here (920-924 vs 871-878 per request with
    # this client's, after the h11 and Quart cuts of issue 13; 5.0% at 1250 vs 1190 before
    # them); 7.6% more before the hit kept its files open, over an origin 30% dearer. The
    # bound leaves room for what varies with the clock (the Date formatted once a second), not
    # for a per-hit regression.
    assert hit_calls <= 1.08 * origin_calls, (hit_calls / REQUESTS, origin_calls / REQUESTS)
