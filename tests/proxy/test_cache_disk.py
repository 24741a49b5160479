"""The slice cache on disk: a crash mid-fill, damaged files, the byte bound and eviction."""

from __future__ import annotations

import signal
import socket
from functools import partial
from pathlib import Path

import httpx
import trio

from tests.conftest import file_data
from tests.proxy.test_cache import (
    SLICE,
    has_slice,
    slice_files,
    start_cached_proxy,
    stats_of,
    wait_until,
)
from tests.support.processes import TRIO_RANGE, start_process
from tests.support.range_upstream import open_range_upstream
from tests.support.servers import raw_chunks

DATA = file_data(4 * SLICE, seed=9)


async def start_proxy_process(
    nursery: trio.Nursery, upstream: str, cache_dir: Path, slice_size: int = SLICE
) -> tuple[trio.Process, str]:
    process, urls = await start_process(
        nursery,
        [
            *TRIO_RANGE,
            "proxy",
            "--port=0",
            f"--upstream={upstream}",
            f"--cache-dir={cache_dir}",
            f"--slice-size-bytes={slice_size}",
            "--no-access-log",
        ],
    )
    return process, urls[0]


async def test_sigkill_mid_fill_and_damaged_files_never_serve_a_partial_slice(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    async with open_range_upstream(DATA) as upstream:
        process, proxy = await start_proxy_process(nursery, upstream.url, cache_dir)
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(proxy + "/v", headers={"Range": f"bytes=0-{SLICE - 1}"})
            assert response.content == DATA[:SLICE]
            await wait_until(lambda: len(slice_files(cache_dir)) == 1)
            upstream.gate = trio.Event()
            try:
                async with (
                    client.stream("GET", proxy + "/v", headers={"Range": f"bytes={SLICE}-"}) as r,
                    raw_chunks(r) as chunks,
                ):
                    async for _ in chunks:
                        # Slice 1 is half-fetched: kill the proxy, no chance to clean up.
                        process.send_signal(signal.SIGKILL)
                        break
            except httpx.HTTPError:
                pass
            with trio.fail_after(10):
                await process.wait()
        # A torn write of slice 0 (as a crash of a non-atomic writer would leave), and a
        # leftover temporary file: the restart drops both.
        (stored,) = slice_files(cache_dir)
        stored.write_bytes(stored.read_bytes()[: SLICE // 2])
        (cache_dir / "tmp" / "leftover").write_bytes(b"partial")
        upstream.gate = None
        process, proxy = await start_proxy_process(nursery, upstream.url, cache_dir)
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(proxy + "/v")
            assert response.content == DATA
        # The answer can end before its fills have stored their slices (in the cache's nursery):
        # wait for all, then the start-up's leftover and the fills' files must all be gone.
        await wait_until(lambda: len(slice_files(cache_dir)) == len(DATA) // SLICE)
        await wait_until(lambda: not any((cache_dir / "tmp").iterdir()))  # fails past 10 s
        # Slice 0 came again (dropped at start-up), slice 1 again (killed mid-fill).
        served = upstream.ranges_served()
        assert served.count(f"bytes=0-{SLICE - 1}") == 2
        assert served.count(f"bytes={SLICE}-{2 * SLICE - 1}") == 2
        process.send_signal(signal.SIGKILL)
        await process.wait()


async def test_disk_stays_under_the_bound_and_an_evicted_slice_is_read_to_the_end(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    big_slice = 8 * 1024 * 1024  # larger than the socket buffers: the reader holds the file
    data = file_data(4 * big_slice, seed=4)
    cache_dir = tmp_path / "cache"
    bound = 2 * big_slice + 4096  # two slices and their headers: the working set is twice that
    async with open_range_upstream(data) as upstream:
        proxy = await start_cached_proxy(
            nursery, upstream.url, cache_dir, slice_size_bytes=big_slice, cache_max_bytes=bound
        )
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.get(proxy + "/v", headers={"Range": "bytes=0-0"})
            assert response.content == data[:1]
            await wait_until(lambda: len(slice_files(cache_dir)) == 1)
            # A slow reader of slice 0, served from disk: it reads the head and waits.
            host, port = proxy.removeprefix("http://").split(":")
            reader = socket.socket()
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(reader))
            await stream.socket.connect((host, int(port)))
            async with stream:
                await stream.send_all(
                    f"GET /v HTTP/1.1\r\nHost: x\r\nRange: bytes=0-{big_slice - 1}\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                received = await stream.receive_some(1)
                (slice0,) = slice_files(cache_dir)
                for index in (1, 2, 3):  # the rest of the object: slice 0 is evicted
                    start = index * big_slice
                    response = await client.get(
                        proxy + "/v", headers={"Range": f"bytes={start}-{start + 9}"}
                    )
                    assert response.content == data[start : start + 10]
                    # The fill goes on to the end of the slice (this client was served).
                    await wait_until(partial(has_slice, cache_dir, index))
                    assert sum(p.stat().st_size for p in slice_files(cache_dir)) <= bound
                assert not slice0.exists()
                with trio.fail_after(60):
                    while chunk := await stream.receive_some(1 << 20):
                        received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 206")
        assert body == data[:big_slice]
        cache = (await stats_of(proxy))["cache"]
        assert cache["evictions"] >= 2
        assert cache["disk_bytes"] <= bound


async def test_many_query_strings_cannot_grow_the_folder_past_the_bound(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    small = file_data(1000, seed=3)
    cache_dir = tmp_path / "cache"
    bound = 2 * SLICE
    async with open_range_upstream(small) as upstream:
        proxy = await start_cached_proxy(nursery, upstream.url, cache_dir, cache_max_bytes=bound)
        async with httpx.AsyncClient(timeout=30) as client:
            for number in range(200):  # each query string is an object: a slice and a record
                response = await client.get(f"{proxy}/v?q={number}")
                assert response.content == small
        files = [p for p in (cache_dir / "objects").rglob("*") if p.is_file()]
        assert sum(p.stat().st_size for p in files) <= bound
        cache = (await stats_of(proxy))["cache"]
        assert cache["disk_bytes"] <= bound
        assert cache["evictions"] > 0
