"""Running an app under Hypercorn's trio worker, from our configuration."""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from trio_range.config import ProxyConfig, ServerConfig
from trio_range.connection import RangeApp

log = logging.getLogger("trio_range")


def hypercorn_config(config: ServerConfig) -> HypercornConfig:
    """The Hypercorn settings that carry out ``config``."""
    hc = HypercornConfig()
    host = f"[{config.host}]" if ":" in config.host else config.host
    hc.bind = [f"{host}:{config.port}"]
    hc.keep_alive_timeout = config.keep_alive_timeout_s
    # Our own access log line carries range, bytes and outcome; Hypercorn's would repeat it.
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.include_server_header = False
    # A proxy relays the upstream's Date (and adds its own only to its local answers).
    hc.include_date_header = not isinstance(config, ProxyConfig)
    return hc


async def serve_app(
    app: RangeApp,
    config: ServerConfig,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until cancelled or ``shutdown_trigger`` returns; reports the bound URLs.

    Usage: ``urls = await nursery.start(serve_app, app, config)``. With ``port=0`` the kernel
    picks a free port and the reported URL says which. When ``shutdown_trigger`` returns, the
    server stops accepting and gives in-flight requests Hypercorn's graceful timeout.
    """
    await serve(
        app, hypercorn_config(config), shutdown_trigger=shutdown_trigger, task_status=task_status
    )


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
