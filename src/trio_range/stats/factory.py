"""Choosing the statistics store a configuration asks for, and running its pusher with the app.

Servers import this module, never the Redis store itself: redis-py (5 MiB of RSS) and the
store's code are imported only when ``stats_backend`` names a Redis URL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGIReceiveEvent, ASGISendCallable, Scope

from trio_range.stats.store import MemoryStatsStore, StatsStore

if TYPE_CHECKING:
    from quart import Quart

    from trio_range.config import ServerConfig


@runtime_checkable
class PushingStore(Protocol):
    """A store with a background task of its own (the Redis store's pusher)."""

    async def run(self, *, task_status: Any = ...) -> None: ...

    async def aclose(self) -> None: ...


def make_store(config: ServerConfig, role: str) -> StatsStore:
    """The store ``config.stats_backend`` asks for: in memory, or shared through Redis."""
    if not config.stats_backend:
        return MemoryStatsStore(role=role)
    from trio_range.stats.redis_store import RedisStatsStore

    return RedisStatsStore(
        role,
        config.stats_backend,
        key_prefix=config.stats_key_prefix,
        push_interval_s=config.stats_push_interval_s,
    )


ASGIApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]


class _PusherInLifespan:
    """ASGI middleware: runs the store's pusher for as long as the app's lifespan runs.

    The lifespan call is a task of the server (Hypercorn's, or ``serving.serve_app``'s), alive
    from startup to shutdown: the pusher lives in a nursery opened by that call, which is a plain
    coroutine (not a generator, so nothing yields inside the nursery). On ``lifespan.shutdown``
    (sent once requests have finished) the pusher makes its last push before the app shuts down.
    """

    def __init__(self, app: ASGIApp, store: PushingStore) -> None:
        self.app = app
        self.store = store

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def receive_then_flush() -> ASGIReceiveEvent:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.store.aclose()
            return message

        async with trio.open_nursery() as nursery:
            await nursery.start(self.store.run)
            await self.app(scope, receive_then_flush, send)
            nursery.cancel_scope.cancel()


def run_store_with_app(app: Quart, store: StatsStore) -> None:
    """Give ``store``'s pusher (if it has one) to ``app``'s lifespan."""
    if isinstance(store, PushingStore):
        run_in_lifespan(app, store)


def run_in_lifespan(app: Quart, runner: PushingStore) -> None:
    """Run ``runner`` (a task and its closing) for as long as ``app``'s lifespan runs.

    The stats pusher uses it, and the proxy's slice cache, whose fills live in its nursery.
    """
    app.asgi_app = _PusherInLifespan(app.asgi_app, runner)  # type: ignore[method-assign]
