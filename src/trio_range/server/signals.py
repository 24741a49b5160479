"""Signals: the first SIGINT or SIGTERM stops the servers gracefully, a second one at once."""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable

import trio

log = logging.getLogger("trio_range")


async def stop_on_signals(
    nursery: trio.Nursery, *, task_status: trio.TaskStatus[trio.Event] = trio.TASK_STATUS_IGNORED
) -> None:
    """Report an event that the first SIGINT or SIGTERM sets; a second one cancels ``nursery``.

    Servers given ``event.wait`` as their shutdown trigger then stop gracefully: Ctrl-C and
    ``docker stop`` end the process with status 0, not a traceback.
    """
    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started(stop)
        async for signum in signals:
            if stop.is_set():
                log.warning("second %s: stopping now", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                return
            log.info("%s: finishing in-flight requests", signal.Signals(signum).name)
            stop.set()


async def run_until_signalled(
    start_servers: Callable[[trio.Nursery, Callable[[], Awaitable[None]]], Awaitable[None]],
) -> None:
    """Run the servers that ``start_servers`` starts until a signal stops them gracefully."""
    async with trio.open_nursery() as nursery:
        stop = await nursery.start(stop_on_signals, nursery)
        async with trio.open_nursery() as servers:
            await start_servers(servers, stop.wait)
        nursery.cancel_scope.cancel()
