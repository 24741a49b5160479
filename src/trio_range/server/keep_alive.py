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
    ``restart`` starts one watcher task and later calls only move its deadline. The behaviour
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
        elif self._waiting is not None:
            self._waiting.deadline = self._deadline
        self._turned_idle.set()

    async def stop(self) -> None:
        """The connection is busy with a request."""
        self._deadline = math.inf
        if self._waiting is not None:
            self._waiting.deadline = math.inf

    def close(self) -> None:
        """The connection ended: the watcher ends too."""
        self._deadline = math.inf
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
                if self._deadline != math.inf:
                    break  # idle past the timeout, or idle at shutdown
                # Shutdown while busy: wait until the response is over.
                self._turned_idle = trio.Event()
                await self._turned_idle.wait()
            with trio.CancelScope(shield=True):
                await self._close()
