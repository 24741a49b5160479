"""QuartFastPath's remembered URL adapters (server/_quart_hooks.py): the same routing answers.

A request binds the same adapter and gets the same match as an earlier request with the same
scheme, host, root, method, path and query; each gets its own view arguments, and what
Werkzeug raises (a redirect, a 404, a 405) is raised again every time. Over a real server.
"""

from __future__ import annotations

from typing import Any

import httpx
import trio
from quart import Response, request

from tests.support.servers import origin_config, start_app
from trio_range.server import _quart_hooks
from trio_range.server.app import RangeApp


def _app(seen: list[dict[str, Any]]) -> RangeApp:
    app = RangeApp(__name__)

    @app.route("/items/<int:number>/")
    async def item(number: int) -> Response:
        args = request.view_args
        assert args is not None
        seen.append(dict(args))
        args["number"] = -1  # a view that changes its arguments changes nobody else's
        return Response(f"item {number}")

    return app


async def _get(url: str, path: str, method: str = "GET") -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.request(method, url + path)


async def test_a_repeated_request_is_routed_as_the_first(nursery: trio.Nursery) -> None:
    seen: list[dict[str, Any]] = []
    app = _app(seen)
    url = await start_app(nursery, app, origin_config())
    for _ in range(3):
        response = await _get(url, "/items/7/")
        assert (response.status_code, response.text) == (200, "item 7")
    assert seen == [{"number": 7}] * 3
    other = await _get(url, "/items/8/?x=1")
    assert other.text == "item 8"
    assert len(app._adapters) == 2


async def test_routing_failures_are_raised_again_each_time(nursery: trio.Nursery) -> None:
    app = _app([])
    url = await start_app(nursery, app, origin_config())
    for _ in range(2):
        # The slash-appending redirect (answered by the guards as a 308), a 404 and a 405.
        assert (await _get(url, "/items/7")).status_code == 308
        assert (await _get(url, "/items/x/")).status_code == 404
        assert (await _get(url, "/items/7/", "DELETE")).status_code == 405


async def test_the_memory_is_bounded(nursery: trio.Nursery) -> None:
    app = _app([])
    url = await start_app(nursery, app, origin_config())
    async with httpx.AsyncClient() as client:
        for number in range(_quart_hooks.MAX_REMEMBERED_ADAPTERS + 3):
            response = await client.get(f"{url}/items/{number}/")
            assert response.text == f"item {number}"
    assert len(app._adapters) <= _quart_hooks.MAX_REMEMBERED_ADAPTERS
