"""A region of an open file as a response body item, and the server's way of sending it.

An app's body may yield :class:`FileRegion` items instead of bytes where the server offers
sendfile (:func:`can_send_file`): trio_range's own server (serving.py) writes them with
:func:`sendfile_region`, ``sendfile(2)`` on the event loop. The kernel hands page-cache pages
to the socket: no copy into Python, no bytes object, a few syscalls per region. Whether a
region is sent this way or read into bytes is the app's decision (server/file_body.py): only
it knows whether the pages are cached, and ``sendfile`` on a cache miss would block the event
loop on the disk.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import trio

from trio_range.errors import StreamAborted

# The largest region the origin makes. Sent with sendfile, a region costs no memory, and fewer,
# larger ones cost fewer Python steps: a 1 GiB file went out at 2.5 GB/s in 512 KiB regions and
# 3.2-4.8 GB/s in 2 MiB ones (nginx 4.4 GB/s; its sendfile_max_chunk is 2 MiB too). Regions that
# are read instead are read in pieces of the configured chunk size (FileRegion.pieces).
SENDFILE_REGION_BYTES = 2 * 1024 * 1024

# The key, in the ASGI scope's per-connection "state", of the connection's sendfile writer
# (``async (FileRegion) -> int``); absent under other servers.
SEND_FILE_KEY = "trio_range.send_file"


def can_send_file(scope: Mapping[str, Any]) -> bool:
    """Whether the server of this ASGI ``scope`` writes FileRegion body items with sendfile."""
    return SEND_FILE_KEY in scope.get("state", {})


class KernelRegion:
    """A body item whose bytes the kernel moves to the client socket, never entering Python.

    The server's writer (``ConnectionServer.send_file``) lets h11 frame it by its length and
    calls :meth:`send_to` with the client's socket, under the send lock; shielded if the class
    says so (a file region: a local read that always ends; a splice waits on a peer and is
    cancelled with its request instead, server/splice_region.py).
    """

    __slots__ = ()

    count: int
    shielded: ClassVar[bool] = True

    def __len__(self) -> int:
        # h11 frames a body item by its length; it passes the item itself through untouched
        # (Connection.send_with_data_passthrough), which is what lets it be a region.
        return self.count

    async def send_to(self, sock: Any) -> int:
        """Write the region to ``sock``; the bytes written (fewer if the peer went away)."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True, slots=True)
class FileRegion(KernelRegion):
    """``count`` bytes of the open file ``fd`` from ``offset``: a body item to send."""

    fd: int
    offset: int
    count: int

    def __len__(self) -> int:
        return self.count

    def cut(self, start: int, count: int) -> FileRegion:
        """``count`` bytes of the region from its byte ``start``: a region of the same file.

        Pacing (server/pacing.py) sends a region in the pieces a rate allows this way.
        """
        return FileRegion(self.fd, self.offset + start, count)

    async def send_to(self, sock: Any) -> int:
        return await sendfile_region(sock, self)

    def pieces(self, size: int) -> Iterator[FileRegion]:
        """The region cut into regions of at most ``size`` bytes."""
        return file_regions(self.fd, self.offset, self.count, size)

    def short(self, got: int) -> StreamAborted:
        """The error for a file that ended ``got`` bytes into this region (it shrank)."""
        end = self.offset + self.count
        return StreamAborted(f"file ended at byte {self.offset + got}, {end - got} bytes short")


@dataclasses.dataclass(frozen=True, slots=True)
class FileRegionChain(KernelRegion):
    """Regions of several open files sent one after the other as one body item.

    The slice cache keeps an object in files of one slice each (1 MiB by default): a chain
    lets it send regions as large as the origin's (:data:`SENDFILE_REGION_BYTES`) across slice
    boundaries, since each body item costs Python steps through the whole ASGI stack.
    """

    parts: tuple[FileRegion, ...]
    count: int

    def __len__(self) -> int:
        return self.count

    @classmethod
    def of(cls, parts: tuple[FileRegion, ...]) -> FileRegionChain:
        return cls(parts, sum(part.count for part in parts))

    async def send_to(self, sock: Any) -> int:
        written = 0
        for part in self.parts:
            sent = await sendfile_region(sock, part)
            written += sent
            if sent < part.count:
                break
        return written

    def cut(self, start: int, count: int) -> FileRegionChain:
        """``count`` bytes of the chain from its byte ``start`` (pacing, server/pacing.py)."""
        parts: list[FileRegion] = []
        position = 0
        for part in self.parts:
            begin, end = max(start, position), min(start + count, position + part.count)
            if begin < end:
                parts.append(part.cut(begin - position, end - begin))
            position += part.count
        return FileRegionChain.of(tuple(parts))


def file_regions(fd: int, start: int, length: int, chunk_size: int) -> Iterator[FileRegion]:
    """``[start, start + length)`` of ``fd`` as regions of at most ``chunk_size`` bytes."""
    end = start + length
    for offset in range(start, end, chunk_size):
        yield FileRegion(fd, offset, min(chunk_size, end - offset))


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
