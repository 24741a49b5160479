"""A region of an open file as a response body item, and the two ways of sending it.

The origin's body yields :class:`FileRegion` items, not bytes, so that the layer that writes
them chooses how:

- :func:`sendfile_region`: ``sendfile(2)`` on the event loop. The kernel hands page-cache
  pages to the socket: no copy into Python, no bytes object, a few syscalls per region. Used
  when the server offers it (``trio-range``'s own connection handler, serving.py) and the
  region's pages are cached (:func:`pages_cached`), since ``sendfile`` on a cache miss would
  block the event loop on the disk.
- :func:`read_region`: the bytes, read with ``preadv(RWF_NOWAIT)`` on the event loop when the
  pages are cached, in a worker thread when they are not. Used for cold pages and under servers
  without sendfile (``hypercorn -k trio`` with the app).
"""

from __future__ import annotations

import dataclasses
import errno
import os
from collections.abc import Iterator

import trio

from trio_range.errors import StreamAborted

_HAS_NOWAIT = hasattr(os, "RWF_NOWAIT") and hasattr(os, "preadv")
_PAGE = os.sysconf("SC_PAGESIZE") if hasattr(os, "sysconf") else 4096

# The largest region the origin makes. Sent with sendfile, a region costs no memory, and fewer,
# larger ones cost fewer Python steps: a 1 GiB file went out at 2.5 GB/s in 512 KiB regions and
# 3.2-4.8 GB/s in 2 MiB ones (nginx 4.4 GB/s; its sendfile_max_chunk is 2 MiB too). Regions that
# are read instead are read in pieces of the configured chunk size (FileRegion.pieces).
SENDFILE_REGION_BYTES = 2 * 1024 * 1024

# The key, in the ASGI scope's per-connection "state", of the connection's sendfile writer
# (``async (FileRegion) -> None``); absent under other servers.
SEND_FILE_KEY = "trio_range.send_file"


@dataclasses.dataclass(frozen=True, slots=True)
class FileRegion:
    """``count`` bytes of the open file ``fd`` from ``offset``: a body item to send."""

    fd: int
    offset: int
    count: int

    def __len__(self) -> int:
        # h11 frames a body item by its length; it passes the item itself through untouched
        # (Connection.send_with_data_passthrough), which is what lets it be a region.
        return self.count

    def pieces(self, size: int) -> Iterator[FileRegion]:
        """The region cut into regions of at most ``size`` bytes."""
        return file_regions(self.fd, self.offset, self.count, size)

    def short(self, got: int) -> StreamAborted:
        """The error for a file that ended ``got`` bytes into this region (it shrank)."""
        end = self.offset + self.count
        return StreamAborted(f"file ended at byte {self.offset + got}, {end - got} bytes short")


def file_regions(fd: int, start: int, length: int, chunk_size: int) -> Iterator[FileRegion]:
    """``[start, start + length)`` of ``fd`` as regions of at most ``chunk_size`` bytes."""
    end = start + length
    for offset in range(start, end, chunk_size):
        yield FileRegion(fd, offset, min(chunk_size, end - offset))


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


async def sendfile_region(sock: trio.socket.SocketType, region: FileRegion) -> int:
    """Write the region to the (non-blocking) socket with ``sendfile``; the bytes written.

    That is all of them, or fewer if the peer went away (EPIPE, ECONNRESET) part way: the
    statistics count what the kernel took, not the whole region. Raises StreamAborted if the
    file ends first.
    """
    out = sock.fileno()
    offset, remaining = region.offset, region.count
    while remaining:
        try:
            sent = os.sendfile(out, region.fd, offset, remaining)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
        except InterruptedError:
            continue
        if sent == 0:
            raise region.short(offset - region.offset)
        offset += sent
        remaining -= sent
    return offset - region.offset


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
