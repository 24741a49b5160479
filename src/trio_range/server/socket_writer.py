"""A connection's socket writes: one non-blocking attempt first, the lock only when it is short.

Hypercorn's trio worker writes every piece of a response (head, body, the empty end) under the
connection's ``send_lock``, in a shielded cancel scope, with ``SocketStream.send_all``, which
yields to the scheduler after each successful send: three scheduler passes, three lock
acquisitions and three cancel scopes for a small response (issue 13, about a fifth of a small
request's CPU). A write that the kernel takes whole needs none of that. :class:`SocketWriter`
tries each write once, non-blocking and without yielding, when no other write is under way;
only a write the kernel takes in part (a slow reader: the socket buffer is full) takes the lock
and waits for the socket, each wait shielded as Hypercorn shields its writes, so a cancelled
response never leaves half a message on the wire.

Fairness: a response whose writes never block would never yield either, and one fast stream
would starve every other connection of this worker, and could not be cancelled; the writer
yields after every :data:`FAIRNESS_BYTES` written without a wait, between writes, and lets a
cancel in at the start of the next write: a write that raises ``Cancelled`` wrote nothing, so
the bytes a caller counts when its writes return are the bytes that left.

It also holds a response head (:meth:`hold`) until the next write, so a small response's head
and body leave in one ``send`` (one syscall, one packet). Every write sends a held head first,
whatever writes it (a body, a file region, the end), and :meth:`flush` sends it when the
connection closes.

Pieces are bytes, or :class:`~trio_range.server.file_region.KernelRegion` items the kernel
moves itself (a file region with ``sendfile(2)``, a spliced upstream body with ``splice(2)``:
connection.py's ``_ObservedSend`` hands them to the server's ``send_file``).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence

import trio

from trio_range.server.file_region import FileRegion, KernelRegion

# Bytes a connection writes without yielding to other tasks, at most (issue 13: "a checkpoint
# at least every 1 MiB written").
FAIRNESS_BYTES = 1 << 20

# A file region (or bytes) this small right after a held head is sent with the head.
COALESCE_REGION_BYTES = 16 * 1024

Piece = bytes | bytearray | memoryview | KernelRegion


class SocketWriter:
    """Writes to one connection's socket; all of the connection's writes go through it."""

    __slots__ = (
        "_closed",
        "_held",
        "_lock",
        "_socket",
        "_unyielded",
        "_yielded",
        "locked_writes",
    )

    def __init__(
        self,
        sock: trio.socket.SocketType,
        lock: trio.Lock,
        closed: Callable[[], Awaitable[None]],
    ) -> None:
        self._socket = sock
        self._lock = lock
        # Called when a write finds the peer gone (Hypercorn's protocol is told it closed).
        self._closed = closed
        self._held = b""
        self._unyielded = 0
        self._yielded = False  # a fairness checkpoint held a cancel back
        # Writes that could not complete at once and went the locked, waiting way.
        self.locked_writes = 0

    def hold(self, head: bytes) -> None:
        """Keep ``head`` (a response head) to send with the next write."""
        self._held += head

    @property
    def holding(self) -> bool:
        """Whether a head waits for the next write."""
        return bool(self._held)

    async def flush(self) -> None:
        """Send a held head now (the connection is closing)."""
        if self._held:
            await self.write(())

    async def write(self, pieces: Sequence[Piece]) -> int:
        """Write ``pieces`` in order; returns the bytes of the last kernel region written.

        A kernel region writes itself (``send_to``) under the lock, since it may wait for the
        socket; shielded if it says so (a file region; a splice waits on its upstream and is
        cancelled with its request). A region's count is short only if the peer went away part
        way (its protocol is then told, as Hypercorn reports a failed write); a file or an
        upstream that ends early raises StreamAborted.
        """
        if self._yielded:
            # The cancel the last fairness checkpoint held back gets in here, before any byte.
            self._yielded = False
            await trio.lowlevel.checkpoint_if_cancelled()
        # Bytes at the end of pieces[0] that belong to a file region (one read into memory).
        region_tail = 0
        if self._held:
            first = pieces[0] if pieces else None
            if isinstance(first, FileRegion) and first.count <= COALESCE_REGION_BYTES:
                # A small region after a held head: one read from the page cache and one send
                # for both beat a send and a sendfile (the app sends only cached regions).
                data = os.pread(first.fd, first.count, first.offset)
                if len(data) < first.count:
                    raise first.short(len(data))
                pieces = [self._held + data, *pieces[1:]]
                region_tail = first.count
            elif isinstance(first, bytes) and len(first) <= COALESCE_REGION_BYTES:
                # Small bytes after a held head (a relayed small body): one send for both.
                pieces = [self._held + first, *pieces[1:]]
            else:
                pieces = [self._held, *pieces]
            self._held = b""
        owned = False
        if self._lock.locked():
            # Another task is part way through a write: wait for it, as Hypercorn does.
            await self._lock.acquire()
            owned = True
        region_written = 0
        try:
            fd = self._socket.fileno()
            for index, piece in enumerate(pieces):
                if isinstance(piece, KernelRegion):
                    if not owned:
                        self._lock.acquire_nowait()
                        owned = True
                    try:
                        with trio.CancelScope(shield=piece.shielded):
                            region_written = await piece.send_to(self._socket)
                    except (OSError, trio.ClosedResourceError):
                        region_written = 0
                    if region_written < piece.count:
                        await self._closed()
                        return region_written
                    self._unyielded += piece.count
                    continue
                done = 0
                size = len(piece)
                while done < size:
                    try:
                        done += _write_once(fd, piece, done)
                        continue
                    except BlockingIOError:
                        pass
                    except InterruptedError:
                        continue
                    except OSError:
                        # EPIPE, ECONNRESET, or a socket already closed (EBADF).
                        await self._closed()
                        return _region_part(
                            region_written, piece, done, region_tail if index == 0 else 0
                        )
                    if not owned:
                        # Part of the write is left: from here on, as Hypercorn writes.
                        self._lock.acquire_nowait()
                        owned = True
                        self.locked_writes += 1
                    self._unyielded = 0
                    try:
                        with trio.CancelScope(shield=True):
                            await trio.lowlevel.wait_writable(self._socket)
                    except (trio.ClosedResourceError, trio.BrokenResourceError):
                        await self._closed()
                        return _region_part(
                            region_written, piece, done, region_tail if index == 0 else 0
                        )
                if region_tail and index == 0:
                    region_written = region_tail
                self._unyielded += size
        finally:
            if owned:
                self._lock.release()
        if self._unyielded >= FAIRNESS_BYTES:
            # After the write, never inside it. Shielded: this write's bytes left, and the
            # caller must see it return to count them; a cancel gets in at the next write.
            self._unyielded = 0
            self._yielded = True
            await trio.lowlevel.cancel_shielded_checkpoint()
        return region_written


def _region_part(written: int, piece: Piece, done: int, region_tail: int) -> int:
    """The region bytes written when a write of bytes stopped at ``done``."""
    if region_tail:
        return max(0, done - (len(piece) - region_tail))
    return written


def _write_once(fd: int, piece: bytes | bytearray | memoryview, done: int) -> int:
    """One non-blocking write of ``piece`` from byte ``done``; the bytes the kernel took."""
    if done:
        with memoryview(piece) as view:
            return os.write(fd, view[done:])
    return os.write(fd, piece)
