"""The bytes of a served file: the one place that decides between sendfile and reading.

A response body is a sequence of segments (multipart framing as bytes, file ranges as
:class:`~trio_range.http.ranges.ByteRange`). Each file range goes out in regions of at most
``region_bytes``. A region whose pages are in the page cache (:func:`pages_cached`) is yielded
as a :class:`~trio_range.server.file_region.FileRegion`, which the server writes with
sendfile, when the server can (``sendfile``); any other region is read into bytes
(:func:`read_region`) in pieces of ``chunk_bytes``, so memory per stream stays one piece:
inline with ``preadv(RWF_NOWAIT)`` when the pages are cached, in a worker thread when they are
not (sendfile or a read on a cache miss would block the event loop on the disk).
"""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator

import trio

from trio_range.http.ranges import ByteRange
from trio_range.server.file_region import FileRegion, file_regions

_HAS_NOWAIT = hasattr(os, "RWF_NOWAIT") and hasattr(os, "preadv")
_PAGE = os.sysconf("SC_PAGESIZE") if hasattr(os, "sysconf") else 4096


async def file_body(
    segments: tuple[bytes | ByteRange, ...],
    fd: int,
    *,
    region_bytes: int,
    chunk_bytes: int,
    sendfile: bool,
) -> AsyncIterator[bytes | FileRegion]:
    """The body items of ``segments`` of the open file ``fd``."""
    for segment in segments:
        if isinstance(segment, bytes):
            yield segment
            continue
        for region in file_regions(fd, segment.start, segment.length, region_bytes):
            if sendfile and pages_cached(region):
                yield region
            else:
                for piece in region.pieces(chunk_bytes):
                    yield await read_region(piece)


def pages_cached(region: FileRegion) -> bool:
    """Whether the region's first and last pages are in the page cache.

    A one-byte ``preadv(RWF_NOWAIT)`` of each answers without blocking. Pages in between are
    assumed to follow (readahead fills whole windows); a region evicted in its middle costs one
    blocking disk read on the event loop.
    """
    if not _HAS_NOWAIT or region.count == 0:
        return False
    probe = bytearray(1)
    last = region.offset + region.count - 1
    for offset in {region.offset, last - last % _PAGE}:
        try:
            if os.preadv(region.fd, [probe], offset, os.RWF_NOWAIT) != 1:
                return False
        except OSError:  # EAGAIN: not cached; EOPNOTSUPP: this filesystem cannot tell
            return False
    return True


def _pread(fd: int, offset: int, length: int) -> bytes:
    return os.pread(fd, length, offset)


async def read_region(region: FileRegion) -> bytes:
    """The region's bytes; raises StreamAborted if the file ends first."""
    fd, offset, length = region.fd, region.offset, region.count
    data = b""
    if _HAS_NOWAIT:
        buffer = bytearray(length)
        try:
            got = os.preadv(fd, [buffer], offset, os.RWF_NOWAIT)
        except BlockingIOError:
            got = 0
        except OSError as error:
            if error.errno != errno.EOPNOTSUPP:  # this filesystem has no RWF_NOWAIT
                raise
            got = 0
        if got == length:
            await trio.lowlevel.checkpoint()
            return bytes(buffer)
        data = bytes(buffer[:got])
    if len(data) < length:
        data += await trio.to_thread.run_sync(_pread, fd, offset + len(data), length - len(data))
    if len(data) < length:
        raise region.short(len(data))
    return data
