"""``trio-range demo``: origin and proxy in one process, one ``trio.run``, one nursery.

The proxy's upstream is the origin this process started, whatever port it got. Ctrl-C
cancels the nursery, which stops both servers.
"""

from __future__ import annotations

import dataclasses

import trio

from trio_range.config import OriginConfig, ProxyConfig
from trio_range.origin import create_app as create_origin
from trio_range.proxy import create_app as create_proxy
from trio_range.serving import serve_app

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


async def run_demo(origin_config: OriginConfig, proxy_config: ProxyConfig) -> None:
    async with trio.open_nursery() as nursery:
        origin_urls = await nursery.start(serve_app, create_origin(origin_config), origin_config)
        proxy_config = dataclasses.replace(proxy_config, upstream=origin_urls[0])
        proxy_urls = await nursery.start(serve_app, create_proxy(proxy_config), proxy_config)
        print(
            TOUR.format(origin=origin_urls[0], proxy=proxy_urls[0], media=origin_config.media_dir),
            flush=True,
        )
