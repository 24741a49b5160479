"""Bytes spliced from one socket to the client's, as a response body item (Linux ``splice(2)``).

The proxy relays a body of known length from a plain-TCP upstream to a plain-TCP client
without the bytes entering Python: ``splice`` moves them from the upstream socket into a pipe
and from the pipe into the client socket, in the kernel. A :class:`SpliceRegion` is a
:class:`~trio_range.server.file_region.KernelRegion`, so it reaches the client the way the
origin's file regions do: h11 frames it by its length (counted against the Content-Length),
and the server's writer calls :meth:`SpliceRegion.send_to` under the send lock.

Unlike a file region, a splice waits on the upstream, so its write is not shielded: a client
disconnect cancels it where it waits, within milliseconds, and :attr:`SpliceRegion.moved`
still says what the kernel delivered (the statistics stay exact within one region).
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import trio

from trio_range.errors import StreamAborted
from trio_range.server.file_region import SENDFILE_REGION_BYTES, KernelRegion

SPLICE_AVAILABLE = sys.platform == "linux" and hasattr(os, "splice")

_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
# A pipe of 1 MiB (Linux's default pipe-max-size) takes a 256 KiB+ burst from the upstream in
# one splice; the default 64 KiB pipe would need four times the calls.
PIPE_BYTES = 1024 * 1024


class Pipe:
    """A non-blocking pipe for splicing, as large as the system allows up to PIPE_BYTES."""

    __slots__ = ("read_fd", "size", "write_fd")

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self.size = fcntl.fcntl(self.write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            self.size = fcntl.fcntl(self.write_fd, fcntl.F_GETPIPE_SZ)

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


@dataclasses.dataclass(slots=True, eq=False)
class SpliceRegion(KernelRegion):
    """The next ``count`` bytes of ``source`` (a connected socket) as a body item."""

    source: socket.socket
    pipe: Pipe
    count: int
    read_timeout_s: float
    # Told "timeout" or "truncated" when the source fails (the error is raised in the send).
    on_failure: Callable[[str], object] | None = None
    moved: int = 0  # bytes the kernel delivered to the client socket so far
    # The region this one was cut from (pacing): told what this one moved, since its owner
    # (the transport's relay_items) reads ``moved`` on the region it yielded.
    parent: SpliceRegion | None = None

    shielded: ClassVar[bool] = False

    def __len__(self) -> int:
        return self.count

    async def send_to(self, sock: Any) -> int:
        """Move the region to the client socket ``sock``; the bytes delivered.

        That is all of them, or fewer if the client went away (EPIPE, ECONNRESET). Raises
        StreamAborted if the source ends, fails or is silent past ``read_timeout_s``.
        """
        try:
            await splice_region(self, sock)
        finally:
            if self.parent is not None:
                self.parent.moved += self.moved
        return self.moved

    def cut(self, start: int, count: int) -> SpliceRegion:
        """The next ``count`` bytes of the source, as a region of their own.

        Pacing (server/pacing.py) sends a region in the pieces a rate allows, in order; a
        socket's bytes come in sequence, so ``start`` must be where the region has got to.
        What a piece moves is added to this region's ``moved``.
        """
        if start != self.moved:
            raise ValueError(f"a spliced region is cut in order: at {self.moved}, not {start}")
        return SpliceRegion(
            self.source, self.pipe, count, self.read_timeout_s, self.on_failure, parent=self
        )


def splice_regions(
    source: socket.socket,
    pipe: Pipe,
    length: int,
    read_timeout_s: float,
    on_failure: Callable[[str], object] | None = None,
) -> Iterator[SpliceRegion]:
    """``length`` bytes of ``source`` as regions of at most SENDFILE_REGION_BYTES.

    Regions, not one: the connection counts a region's bytes when it is sent, so the
    statistics of a long relay move on every 2 MiB.
    """
    while length > 0:
        count = min(length, SENDFILE_REGION_BYTES)
        yield SpliceRegion(source, pipe, count, read_timeout_s, on_failure)
        length -= count


def _failed(region: SpliceRegion, kind: str, message: str) -> StreamAborted:
    if region.on_failure is not None:
        region.on_failure(kind)
    return StreamAborted(f"upstream body {kind}: {message}")


async def splice_region(region: SpliceRegion, sock: Any) -> None:
    """The splice loop: fill the pipe from the source, drain it into ``sock``, until done.

    ``region.moved`` is updated as the kernel delivers, so a cancellation (the client left)
    leaves it exact. Bytes still in the pipe then make the source's connection unusable; its
    owner closes it, since the region did not finish.
    """
    source, out = region.source.fileno(), sock.fileno()
    pipe_in, pipe_out = region.pipe.write_fd, region.pipe.read_fd
    capacity = region.pipe.size
    to_read = region.count  # not yet pulled from the source
    in_pipe = 0
    while region.moved < region.count:
        if to_read and in_pipe < capacity:
            try:
                pulled = os.splice(source, pipe_in, min(to_read, capacity - in_pipe), flags=_FLAGS)
            except BlockingIOError:
                if not in_pipe:
                    # Nothing to pass on and nothing arrived: wait for the source.
                    with trio.move_on_after(region.read_timeout_s) as waited:
                        await trio.lowlevel.wait_readable(source)
                    if waited.cancelled_caught:
                        raise _failed(region, "timeout", "no bytes in time") from None
                    continue
                pulled = 0  # the pipe's slots are full before its bytes: drain it first
            except OSError as error:
                raise _failed(region, "truncated", repr(error)) from error
            else:
                if not pulled:
                    missing = region.count - region.moved - in_pipe
                    raise _failed(region, "truncated", f"ended {missing} bytes short")
            to_read -= pulled
            in_pipe += pulled
        if in_pipe:
            try:
                pushed = os.splice(pipe_out, out, in_pipe, flags=_FLAGS)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(out)
                continue
            except (BrokenPipeError, ConnectionResetError):
                return  # the client went away; moved says how far it got
            in_pipe -= pushed
            region.moved += pushed
