"""Hypercorn's keep-alive timer as one task per connection (installed by _hypercorn_hooks).

It is the object Hypercorn's ``TCPServer`` calls as its ``idle_task`` (``restart`` and ``stop``,
the ``TrioSingleTask`` interface); the hooks module puts it there. Nothing here touches
Hypercorn's internals.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio


class KeepAliveTimer:
    """Hypercorn's keep-alive timer as one task per connection, not one task per request.

    Replaces ``TCPServer.idle_task`` (a ``TrioSingleTask``), which starts a task
    (``nursery.start``, under a lock) each time a connection turns idle and cancels it when the
    next request arrives: 15 % of a trivial request's CPU under py-spy. Here the first
    ``restart`` starts one watcher task; later calls only note the new deadline, which the
    watcher reads when it wakes (a stale, earlier deadline wakes it once more). The behaviour
    is Hypercorn's: an idle connection closes when it has been idle for the keep-alive timeout,
    or at once when the server shuts down; a busy one is left to its response (Hypercorn closes
    it after that response during shutdown).
    """

    def __init__(
        self, timeout: float, terminated: Any, close: Callable[[], Awaitable[None]]
    ) -> None:
        self._timeout = timeout
        self._terminated = terminated
        self._close = close
        self._deadline = math.inf  # when an idle connection closes; inf while busy
        self._watcher: trio.CancelScope | None = None
        self._waiting: trio.CancelScope | None = None
        self._turned_idle = trio.Event()

    async def restart(self, task_group: Any, action: object) -> None:
        """The connection turned idle (``action`` is Hypercorn's timeout task: not needed)."""
        self._deadline = trio.current_time() + self._timeout
        if self._watcher is None:
            self._watcher = trio.CancelScope()
            task_group.spawn(self._watch)
        elif self._waiting is not None and self._waiting.deadline == math.inf:
            self._waiting.deadline = self._deadline
        # Otherwise the watcher wakes at an earlier deadline and moves on to this one: moving
        # a cancel scope's deadline twice per request costs more than one wake per timeout.
        self._turned_idle.set()

    async def stop(self) -> None:
        """The connection is busy with a request (the watcher sees it when it wakes)."""
        self._deadline = math.inf

    def close(self) -> None:
        """The connection ended: the watcher ends too, and the timer lets go of the connection.

        The close callback is a bound method of the connection's server, which holds this
        timer: a reference cycle that kept each closed connection's objects until a full
        garbage collection. A watcher that wakes after this has nothing left to close.
        """
        self._deadline = math.inf
        self._close = _closed
        if self._watcher is None:
            self._watcher = trio.CancelScope()
        self._watcher.cancel()

    async def _watch(self) -> None:
        assert self._watcher is not None
        with self._watcher:
            while True:
                with trio.CancelScope(deadline=self._deadline) as self._waiting:
                    await self._terminated.wait()
                self._waiting = None
                idle = self._deadline != math.inf
                if self._terminated.is_set():
                    if idle:
                        break  # idle at shutdown
                    # Shutdown while busy: wait until the response is over.
                    self._turned_idle = trio.Event()
                    await self._turned_idle.wait()
                elif idle and self._deadline <= trio.current_time():
                    break  # idle past the timeout
                # Else woken at a deadline a later request moved: wait for the current one.
            with trio.CancelScope(shield=True):
                await self._close()


async def _closed() -> None:
    """The close callback of a closed timer: the connection has ended already."""
