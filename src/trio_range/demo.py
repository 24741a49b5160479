"""``trio-range demo``: origin and proxy in one process, one ``trio.run``, one nursery.

The proxy's upstream is the origin this process started, whatever port it got. Ctrl-C (or
SIGTERM) stops both gracefully; a second one stops them at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from functools import partial

import trio

from trio_range.config import OriginConfig, ProxyConfig
from trio_range.origin.app import create_app as create_origin
from trio_range.proxy.app import create_app as create_proxy
from trio_range.server.serving import serve_app

TOUR = """\
trio_range demo: origin {origin} serving {media}, proxy {proxy} relaying to it.

Try:
  curl -I {proxy}/                                   # 200, Accept-Ranges: bytes, Via
  curl {proxy}/?range=20-345 | wc -c                 # 206, 326 bytes
  curl {proxy}/ -H "Range: bytes=0-99, 500-599"      # multipart/byteranges
  curl {proxy}/stats                                 # JSON usage statistics
  curl {origin}/media/                               # the media listing

Ctrl-C stops both.
"""


async def run_demo(
    origin_config: OriginConfig,
    proxy_config: ProxyConfig,
    nursery: trio.Nursery,
    stop: Callable[[], Awaitable[None]],
) -> None:
    """Start the origin, then the proxy in front of it, in ``nursery``; both stop on ``stop``."""
    serve = partial(serve_app, shutdown_trigger=stop)
    origin_urls = await nursery.start(serve, create_origin(origin_config), origin_config)
    proxy_config = dataclasses.replace(proxy_config, upstream=origin_urls[0])
    proxy_urls = await nursery.start(serve, create_proxy(proxy_config), proxy_config)
    print(
        TOUR.format(origin=origin_urls[0], proxy=proxy_urls[0], media=origin_config.media_dir),
        flush=True,
    )
