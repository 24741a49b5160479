"""The aiohttp baselines of issue 8: a minimal origin and a minimal streaming proxy.

    python -m benchmarks.aiohttp_baseline origin --port P --media-dir DIR
    python -m benchmarks.aiohttp_baseline proxy --port P --upstream http://127.0.0.1:Q

Written for the benchmark only, the way the aiohttp design this project replaces would be
written with stock aiohttp and nothing tuned:

- origin: ``web.FileResponse`` on ``DIR/<name>`` at ``/media/<name>`` (aiohttp's own Range,
  If-Range and conditional handling; it sends the file with ``loop.sendfile`` where it can).
- proxy: one ``aiohttp.ClientSession`` (pooled keep-alive connections, no decompression), each
  request forwarded with its Range and If-Range, the answer relayed chunk by chunk through a
  ``web.StreamResponse`` as the chunks arrive (``iter_any``), with the upstream's status,
  Content-Length and range fields.

Neither logs per request (``access_log=None``), like the other candidates. aiohttp is only a
benchmark extra (``pip install -e '.[bench]'``); src/ never imports it.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import AsyncIterator, Sequence

import aiohttp
from aiohttp import web

# Fields relayed from the upstream's answer: what a range client needs, nothing hop-by-hop.
RELAYED_RESPONSE_FIELDS = (
    "Content-Type",
    "Content-Range",
    "Accept-Ranges",
    "ETag",
    "Last-Modified",
)
FORWARDED_REQUEST_FIELDS = ("Range", "If-Range", "If-None-Match", "If-Modified-Since")


def origin_app(media_dir: pathlib.Path) -> web.Application:
    root = media_dir.resolve()

    async def media(request: web.Request) -> web.StreamResponse:
        path = (root / request.match_info["name"]).resolve()
        if path.parent != root or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/media/{name}", media)
    return app


def proxy_app(upstream: str) -> web.Application:
    base = upstream.rstrip("/")
    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def session_context(app: web.Application) -> AsyncIterator[None]:
        # No total timeout: a 1 GiB stream to a slow reader takes as long as it takes.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        ) as session:
            app[session_key] = session
            yield

    async def relay(request: web.Request) -> web.StreamResponse:
        headers = {
            name: request.headers[name]
            for name in FORWARDED_REQUEST_FIELDS
            if name in request.headers
        }
        headers["Accept-Encoding"] = "identity"
        session = request.app[session_key]
        async with session.get(base + request.path_qs, headers=headers) as upstream_response:
            response = web.StreamResponse(status=upstream_response.status)
            for name in RELAYED_RESPONSE_FIELDS:
                if name in upstream_response.headers:
                    response.headers[name] = upstream_response.headers[name]
            if upstream_response.content_length is not None:
                response.content_length = upstream_response.content_length
            await response.prepare(request)
            async for chunk in upstream_response.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.cleanup_ctx.append(session_context)
    app.router.add_get("/{tail:.*}", relay)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.aiohttp_baseline")
    parser.add_argument("role", choices=["origin", "proxy"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--media-dir", type=pathlib.Path, help="origin: the folder served")
    parser.add_argument("--upstream", help="proxy: base URL of the origin")
    args = parser.parse_args(argv)
    if args.role == "origin":
        if args.media_dir is None:
            parser.error("origin needs --media-dir")
        app = origin_app(args.media_dir)
    else:
        if args.upstream is None:
            parser.error("proxy needs --upstream")
        app = proxy_app(args.upstream)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
