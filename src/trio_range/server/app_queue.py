"""The ASGI ``receive`` queue of one request: bounded, and no scheduler pass to put or take.

Hypercorn's trio worker gives each request a trio memory channel from the protocol to the app
(``TaskGroup.spawn_app``): a put and a receive each pass through the scheduler even when the
other side is ready, about 9 µs a round trip, two round trips for every GET (the empty request
body, then ``http.disconnect``). :class:`AppQueue` is the same bounded queue without those
passes: a put that finds room appends and wakes a waiting receiver; a receive that finds a
message takes it. Only a receive on an empty queue, or a put on a full one, waits, and
``receive`` stays a cancellation point (it raises ``Cancelled`` in a cancelled scope, like the
channel it replaces).

A request without a body needs no receiving task at all (connection.py): it calls
:func:`watch_disconnect`, and from then on the queue calls its callback on ``http.disconnect``
instead of storing it, and drops the (empty) request body messages.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import trio

ASGIMessage = Any  # hypercorn.typing.ASGIReceiveEvent, a union of TypedDicts


class AppQueue:
    """Messages from Hypercorn's protocol to one request's app, at most ``size`` waiting."""

    __slots__ = ("_items", "_on_disconnect", "_receiver", "_room", "_size")

    def __init__(self, size: int) -> None:
        self._items: deque[ASGIMessage] = deque()
        self._size = max(size, 1)
        self._receiver: trio.Event | None = None
        self._room: trio.Event | None = None
        self._on_disconnect: Callable[[], None] | None = None

    async def put(self, message: ASGIMessage) -> None:
        """Hypercorn's ``app_put``: queue ``message``; waits only while the queue is full."""
        while self._on_disconnect is None and len(self._items) >= self._size:
            self._room = trio.Event()
            await self._room.wait()
        if self._on_disconnect is not None:
            if message["type"] == "http.disconnect":
                self._on_disconnect()
            return
        self._items.append(message)
        if self._receiver is not None:
            self._receiver.set()
            self._receiver = None

    async def receive(self) -> ASGIMessage:
        """The app's ``receive``: the next message, waiting for one if there is none."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._items:
            self._receiver = trio.Event()
            await self._receiver.wait()
        message = self._items.popleft()
        if self._room is not None:
            self._room.set()
            self._room = None
        return message

    def watch(self, on_disconnect: Callable[[], None]) -> None:
        """Call ``on_disconnect`` on ``http.disconnect`` (now if it came); drop other messages."""
        self._on_disconnect = on_disconnect
        disconnected = False
        for item in self._items:  # a loop, not any() of a generator: two calls fewer
            if item["type"] == "http.disconnect":
                disconnected = True
        self._items.clear()
        if self._room is not None:
            self._room.set()
            self._room = None
        if disconnected:
            on_disconnect()


def watch_disconnect(receive: Callable[..., Any], on_disconnect: Callable[[], None]) -> bool:
    """Have ``on_disconnect`` called when the client leaves, with no task reading ``receive``.

    False if ``receive`` is not an :class:`AppQueue`'s (another server): then a task must read
    it, as Quart-Trio does.
    """
    queue = getattr(receive, "__self__", None)
    if not isinstance(queue, AppQueue):
        return False
    queue.watch(on_disconnect)
    return True
