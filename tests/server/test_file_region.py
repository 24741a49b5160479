"""File regions as body items: cutting, the page-cache probe, sendfile and the read fallback."""

from __future__ import annotations

import ctypes
import mmap
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import file_data
from tests.support.multipart_reader import parse_byteranges
from tests.support.servers import origin_config, start_app
from trio_range.errors import StreamAborted
from trio_range.origin.app import create_app
from trio_range.server import file_body, file_region
from trio_range.server.file_body import pages_cached, read_region
from trio_range.server.file_region import (
    SENDFILE_REGION_BYTES,
    FileRegion,
    FileRegionChain,
    KernelRegion,
    file_regions,
    sendfile_region,
)

DATA = file_data(3_000_000, seed=11)


@pytest.fixture
def data_fd(tmp_path: Path) -> Iterator[int]:
    path = tmp_path / "data.bin"
    path.write_bytes(DATA)
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def resident_pages(fd: int, offset: int = 0, length: int | None = None) -> int:
    """How many of the file's pages (of those holding ``[offset, offset + length)``, by default
    all) are in the page cache: mincore, which reads nothing.

    Not our probe: a missed RWF_NOWAIT read starts the kernel's readahead, so probing to check
    an eviction would undo it.
    """
    start = offset - offset % mmap.PAGESIZE
    size = (os.fstat(fd).st_size if length is None else offset + length) - start
    address = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, start)
    if address is None or address == ctypes.c_void_p(-1).value:
        raise OSError(ctypes.get_errno(), "mmap failed")
    try:
        vector = ctypes.create_string_buffer(-(-size // mmap.PAGESIZE))
        if _libc.mincore(address, size, vector) != 0:
            raise OSError(ctypes.get_errno(), "mincore failed")
        return sum(byte & 1 for byte in vector.raw)
    finally:
        _libc.munmap(address, size)


def evict(fd: int) -> None:
    """Drop the file's pages from the page cache, and check that they are gone."""
    # Pages still on a per-CPU LRU list, or arriving from a readahead in flight, are dropped
    # on a later try; the cache must stay empty for a moment before the test goes on.
    for _ in range(50):
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        if resident_pages(fd) == 0:
            time.sleep(0.02)
            if resident_pages(fd) == 0:
                return
        time.sleep(0.01)
    # tmpfs, for one, keeps its pages: these tests need pytest's tmp directory on a disk.
    raise AssertionError(f"{resident_pages(fd)} pages still cached after POSIX_FADV_DONTNEED")


@given(
    start=st.integers(0, 10_000),
    length=st.integers(0, 10_000),
    chunk=st.integers(1, 3_000),
)
def test_file_regions_cover_the_range_exactly_in_bounded_pieces(
    start: int, length: int, chunk: int
) -> None:
    regions = list(file_regions(3, start, length, chunk))
    assert all(r.fd == 3 and 0 < r.count <= chunk for r in regions)
    position = start
    for region in regions:
        assert region.offset == position
        position += region.count
    assert position == start + length


# The probe is a one-byte RWF_NOWAIT read, and Linux starts a read of a missing page for it
# before it gives up: when that read finishes at once (seen on this project's VMs under disk
# load, about one probe in ten), the probe finds the page and rightly answers "cached". An
# evicted region is therefore probed again after a new eviction, a bounded number of times; a
# probe that read the pages in must have them in the cache when it says so.
EVICTION_ATTEMPTS = 10


def probed_cold_after_eviction(fd: int, region: FileRegion) -> bool:
    """Evict ``fd``, probe ``region``; whether the probe saw it cold (else it read it in)."""
    evict(fd)
    if not pages_cached(region):
        return True
    # It said "cached": only true if its own read brought the probed pages in.
    for probed in (region.offset, region.offset + region.count - 1):
        assert resident_pages(fd, probed, 1) == 1, probed
    return False


def test_the_probe_sees_cached_pages_and_evicted_ones(data_fd: int) -> None:
    region = FileRegion(data_fd, 1_000_000, 600_000)
    os.pread(data_fd, region.count, region.offset)
    assert pages_cached(region)
    assert any(probed_cold_after_eviction(data_fd, region) for _ in range(EVICTION_ATTEMPTS))
    assert not pages_cached(FileRegion(data_fd, len(DATA), 10))  # past the end
    assert not pages_cached(FileRegion(data_fd, 0, 0))


async def test_read_region_reads_cached_and_cold_pages_and_refuses_a_short_file(
    data_fd: int,
) -> None:
    region = FileRegion(data_fd, 123_457, 700_001)
    expected = DATA[region.offset : region.offset + region.count]
    assert await read_region(region) == expected  # cached: read on the loop
    evict(data_fd)
    assert await read_region(region) == expected  # cold: read in a thread
    with pytest.raises(StreamAborted, match="bytes short"):
        await read_region(FileRegion(data_fd, len(DATA) - 100, 1000))


async def sent_through(
    left: trio.socket.SocketType, right: trio.socket.SocketType, region: KernelRegion
) -> bytes:
    """What ``right`` receives of ``region`` written to ``left`` (which must write it all)."""
    received = bytearray()

    async def read_all() -> None:
        while len(received) < region.count:
            received.extend(await right.recv(65536))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            assert await region.send_to(left) == region.count
    return bytes(received)


async def test_sendfile_region_writes_the_bytes_through_a_full_socket(data_fd: int) -> None:
    left, right = trio.socket.socketpair()
    with left, right:
        # Small buffers: the region is written in many sendfile calls with waits in between.
        left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        region = FileRegion(data_fd, 5, 1_500_000)
        assert await sent_through(left, right, region) == DATA[5 : 5 + region.count]

        with pytest.raises(StreamAborted, match="bytes short"):
            await sendfile_region(left, FileRegion(data_fd, len(DATA) - 10, 20))
        right.close()
        # The peer is gone: EPIPE or ECONNRESET soon, and the bytes written before it.
        with trio.fail_after(5):
            while (written := await sendfile_region(left, FileRegion(data_fd, 0, 100_000))) > 0:
                assert written <= 100_000
        assert written == 0


@given(
    counts=st.lists(st.integers(1, 1000), min_size=1, max_size=4),
    cut=st.tuples(st.integers(0, 4000), st.integers(0, 4000)),
)
def test_a_chain_cut_is_the_same_bytes_of_the_same_files(
    counts: list[int], cut: tuple[int, int]
) -> None:
    parts = tuple(FileRegion(fd, 10 * fd, count) for fd, count in enumerate(counts, 3))
    chain = FileRegionChain.of(parts)
    assert len(chain) == sum(counts)
    start = min(cut[0], chain.count)
    count = min(cut[1], chain.count - start)

    def positions(regions: tuple[FileRegion, ...]) -> list[tuple[int, int]]:
        return [(r.fd, r.offset + i) for r in regions for i in range(r.count)]

    piece = chain.cut(start, count)
    assert piece.count == count
    assert all(part.count > 0 for part in piece.parts)
    assert positions(piece.parts) == positions(parts)[start : start + count]


async def test_a_chain_sends_its_files_in_order_and_stops_at_a_gone_peer(
    data_fd: int,
) -> None:
    chain = FileRegionChain.of((FileRegion(data_fd, 7, 900_000), FileRegion(data_fd, 3, 50)))
    left, right = trio.socket.socketpair()
    with left, right:
        left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        assert await sent_through(left, right, chain) == DATA[7:900_007] + DATA[3:53]
        right.close()
        with trio.fail_after(5):
            while (written := await chain.send_to(left)) > 0:
                assert written < chain.count
        assert written == 0


class _Spy:
    """Counts calls to a real function and calls it."""

    def __init__(self, function: object) -> None:
        self.function = function
        self.calls = 0

    async def __call__(self, *args: object) -> object:
        self.calls += 1
        return await self.function(*args)  # type: ignore[operator]


@pytest.mark.parametrize("cold", [False, True])
async def test_origin_sends_cached_pages_with_sendfile_and_reads_cold_ones(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cold: bool
) -> None:
    (tmp_path / "data.bin").write_bytes(DATA)
    sendfile = _Spy(file_region.sendfile_region)
    # FileRegion.send_to, called by the server's writer, writes with this function.
    monkeypatch.setattr("trio_range.server.file_region.sendfile_region", sendfile)
    reads = _Spy(file_body.read_region)
    monkeypatch.setattr("trio_range.server.file_body.read_region", reads)
    probes: list[bool] = []

    def probe(region: FileRegion) -> bool:
        probes.append(pages_cached(region))
        return probes[-1]

    monkeypatch.setattr("trio_range.server.file_body.pages_cached", probe)
    config = origin_config(media_dir=tmp_path, chunk_size_bytes=256 * 1024)
    url = await start_app(nursery, create_app(config), config)
    async with httpx.AsyncClient() as client:
        if not cold:
            assert (await client.get(url + "/media/data.bin")).content == DATA  # warms too
        fd = os.open(tmp_path / "data.bin", os.O_RDONLY)
        try:
            # Cold: evicted again if the first region's probe read it in (the note above
            # probed_cold_after_eviction says why that happens).
            for _ in range(EVICTION_ATTEMPTS if cold else 1):
                if cold:
                    evict(fd)
                probes.clear()
                sendfile.calls = reads.calls = 0
                whole = await client.get(url + "/media/data.bin")
                parts = await client.get(
                    url + "/media/data.bin", headers={"Range": "bytes=0-99, 1000000-1600000, -7"}
                )
                if not (cold and probes[0]):
                    break
        finally:
            os.close(fd)
    assert probes[0] is not cold, probes
    assert whole.content == DATA
    assert [
        data for _, _, data in parse_byteranges(parts.content, parts.headers["content-type"])
    ] == [
        DATA[0:100],
        DATA[1_000_000:1_600_001],
        DATA[-7:],
    ]
    if cold:
        # A region whose pages are cold is read (in a thread), never sent with sendfile, which
        # would block the event loop on the disk; reading it starts the kernel's readahead, so
        # the regions after it are usually cached again. The cold region is read in pieces of
        # the chunk size, not whole: memory per stream stays one chunk.
        assert reads.calls >= SENDFILE_REGION_BYTES // (256 * 1024)
    else:
        assert reads.calls == 0
        # Regions of SENDFILE_REGION_BYTES for the whole file, one per part for the ranges.
        assert sendfile.calls == -(-len(DATA) // SENDFILE_REGION_BYTES) + 3


async def test_origin_under_stock_hypercorn_reads_regions_into_bytes(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # `hypercorn -k trio 'trio_range.origin:create_app()'` has no sendfile writer.
    (tmp_path / "data.bin").write_bytes(DATA)
    app = create_app(origin_config(media_dir=tmp_path, chunk_size_bytes=64 * 1024))
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    urls = await nursery.start(serve, app, config)
    async with httpx.AsyncClient() as client:
        whole = await client.get(urls[0] + "/media/data.bin")
        part = await client.get(urls[0] + "/media/data.bin", headers={"Range": "bytes=7-70006"})
    assert whole.content == DATA
    assert (part.status_code, part.content) == (206, DATA[7:70007])
