"""Exchange resources know whether closing them awaits (server/exchange.Resources).

The connection closes a stack that awaits under a shielded, bounded scope, and one of
synchronous closes only without it (issue 13): each way to register must say which it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest
import trio

from trio_range.server.exchange import Resources


@contextmanager
def _sync_cm(closed: list[str]) -> Iterator[None]:
    yield
    closed.append("sync cm")


@asynccontextmanager
async def _async_cm(closed: list[str]) -> AsyncIterator[None]:
    yield
    await trio.lowlevel.checkpoint()
    closed.append("async cm")


async def test_synchronous_closes_only_do_not_await() -> None:
    closed: list[str] = []
    resources = Resources()
    resources.callback(closed.append, "callback")
    resources.enter_context(_sync_cm(closed))
    resources.push(lambda *exc: None)
    assert resources.awaits is False
    await resources.aclose()
    assert closed == ["sync cm", "callback"]


async def _close_later(closed: list[str]) -> None:
    await trio.lowlevel.checkpoint()
    closed.append("async callback")


async def _enter(resources: Resources, closed: list[str]) -> None:
    await resources.enter_async_context(_async_cm(closed))


async def _push_callback(resources: Resources, closed: list[str]) -> None:
    resources.push_async_callback(_close_later, closed)


async def _push_exit(resources: Resources, closed: list[str]) -> None:
    async def exit_(*exc: object) -> None:
        await _close_later(closed)

    resources.push_async_exit(exit_)


@pytest.mark.parametrize("register", [_enter, _push_callback, _push_exit])
async def test_each_async_registration_awaits(
    register: Callable[[Resources, list[str]], Awaitable[None]],
) -> None:
    closed: list[str] = []
    resources = Resources()
    resources.callback(closed.append, "callback")
    await register(resources, closed)
    assert resources.awaits is True
    await resources.aclose()
    assert closed[-1] == "callback"
    assert len(closed) == 2
