"""One upstream fetch of one slice, shared by every request that needs it (request collapsing).

A :class:`Fill` runs in the cache's own nursery (opened for the app's lifetime, see
cache.py), never in a request's: the first request leaving does not cancel it for the others.
Requests hold it through a :class:`Waiter`; they see the answer's head as soon as it arrives
(:meth:`Waiter.head`) and then the slice's bytes as they arrive (:meth:`Waiter.chunks`), not
after the fill. When the last waiter gives up on an unfinished fill (its client left) and no
waiter got its bytes from it, the fill is cancelled and its partial slice dropped: nothing of
it was written to disk. A fill holds at most its one slice in memory, whatever the number of
waiters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import trio

from trio_range.errors import StreamAborted, UpstreamError
from trio_range.http.cache_policy import SliceAnswer


class FillCancelled(StreamAborted):
    """Every waiter left: the fill stopped (only a late joiner could see this)."""


class Fill:
    """The state of one slice fetch: its head, the bytes so far, how it ended."""

    def __init__(self, key: str, index: int, on_idle: Callable[[Fill], None]) -> None:
        self.key = key
        self.index = index
        self.cancel_scope = trio.CancelScope()
        self.answer: SliceAnswer | None = None
        self.error: Exception | None = None
        self.buffer = bytearray()
        self.finished = False
        self.waiters = 0
        # Some waiter got every byte it wanted from this fill: the slice is worth keeping.
        self.wanted = False
        self.head_ready = trio.Event()
        self.progress = trio.Event()
        self._on_idle = on_idle

    @property
    def complete(self) -> bool:
        """Every byte of the slice arrived (it may not be on disk yet)."""
        answer = self.answer
        return answer is not None and answer.length > 0 and len(self.buffer) == answer.length

    # --- the fill task's side ----------------------------------------------------------------

    def set_answer(self, answer: SliceAnswer) -> None:
        self.answer = answer
        self.head_ready.set()

    def append(self, chunk: bytes) -> None:
        self.buffer += chunk
        self._wake()

    def finish(self, error: Exception | None = None) -> None:
        """The fill ended: complete (``error`` None) or failed; waiters wake either way."""
        if self.finished:
            return
        if error is None and self.answer is None:
            error = UpstreamError("the upstream gave no answer")
        self.error = error
        self.finished = True
        self.head_ready.set()
        self._wake()

    def _wake(self) -> None:
        self.progress.set()
        self.progress = trio.Event()

    # --- the waiters' side -------------------------------------------------------------------

    def join(self) -> Waiter:
        self.waiters += 1
        return Waiter(self)

    def leave(self) -> None:
        self.waiters -= 1
        if self.waiters == 0 and not self.finished and not self.wanted:
            # Every waiter gave up before getting its bytes (clients that left): stop the
            # fetch and drop what arrived. A fill some waiter was served from (a short range
            # at the start of the slice) goes on to the end, so the slice is stored.
            self.cancel_scope.cancel()
            self._on_idle(self)


class Waiter:
    """One request's hold on a fill; :meth:`release` (idempotent) lets it go."""

    __slots__ = ("_released", "fill")

    def __init__(self, fill: Fill) -> None:
        self.fill = fill
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.fill.leave()

    async def head(self) -> SliceAnswer:
        """The upstream's answer to the slice request, once its head has arrived.

        Raises the fill's error if it failed before a head (UpstreamError: a 502/503/504).
        """
        fill = self.fill
        await fill.head_ready.wait()
        if fill.answer is None:
            assert fill.error is not None
            raise fill.error
        return fill.answer

    async def chunks(self, offset: int, length: int) -> AsyncIterator[bytes]:
        """Bytes ``[offset, offset + length)`` of the slice, each piece as soon as it arrived.

        A fill that fails or stops first raises StreamAborted: the answer's head is out, so
        the client connection is aborted rather than sent short.
        """
        fill = self.fill
        position, stop = offset, offset + length
        while position < stop:
            available = min(len(fill.buffer), stop)
            if available > position:
                # A copy of what arrived (bounded by the slice): the buffer may grow meanwhile.
                with memoryview(fill.buffer) as view:
                    piece = bytes(view[position:available])
                position = available
                yield piece
                continue
            if fill.finished:
                error = fill.error or StreamAborted("slice ended early")
                if isinstance(error, StreamAborted):
                    raise error
                raise StreamAborted(f"slice fill failed: {error}") from error
            await fill.progress.wait()
        fill.wanted = True
