"""Running an app under Hypercorn's trio worker, from our configuration."""

from __future__ import annotations

import logging

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
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until cancelled; reports the bound URLs through ``task_status``.

    Usage: ``urls = await nursery.start(serve_app, app, config)``. With ``port=0`` the kernel
    picks a free port and the reported URL says which.
    """
    await serve(app, hypercorn_config(config), task_status=task_status)
