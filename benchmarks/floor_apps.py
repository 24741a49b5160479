"""Do-nothing apps for benchmarks.stack_floor: each answers every request with one 4 KiB 206.

hypercorn -k trio benchmarks.floor_apps:asgi_app
hypercorn -k trio benchmarks.floor_apps:quart_app
python -m benchmarks.floor_apps aiohttp PORT
"""

from __future__ import annotations

import sys
from typing import Any

from quart import Response
from quart_trio import QuartTrio

BODY = b"x" * 4096
HEADERS = [(b"content-length", b"4096"), (b"content-type", b"application/octet-stream")]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 206, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


quart_app = QuartTrio(__name__, static_folder=None)


@quart_app.route("/media/<path:name>")
async def _quart_view(name: str) -> Response:
    return Response(BODY, status=206, content_type="application/octet-stream")


def _serve_aiohttp(port: int) -> None:
    from aiohttp import web

    async def view(request: web.Request) -> web.Response:
        return web.Response(body=BODY, status=206, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/media/{name:.*}", view)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    if sys.argv[1:2] != ["aiohttp"]:
        sys.exit("usage: python -m benchmarks.floor_apps aiohttp PORT")
    _serve_aiohttp(int(sys.argv[2]))
