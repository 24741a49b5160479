"""QuartFastPath's own push of Quart's contexts, bodies and responses (server/_quart_hooks.py).

The app's request and app contexts are pushed as two context variable sets instead of Quart's
async push and pop; a request without a body gets a body complete from the start; responses
of given fields skip Werkzeug's status parsing. Each test checks what a view or a hook sees
is what Quart gives it, over a real server and client where the behaviour is served.
"""

from __future__ import annotations

import gc
import random
import weakref
from pathlib import Path
from typing import Any

import blinker
import httpx
import pytest
import trio
from quart import Response, current_app, g, has_app_context, has_request_context, request
from quart.signals import appcontext_popped, appcontext_pushed
from quart_trio.wrappers.request import TrioBody
from werkzeug.datastructures import Headers

from tests.proxy.test_cache_hit_cost import BIG, RANGE_BYTES, REQUESTS, _calls
from tests.support.servers import origin_config, start_app, start_origin
from trio_range.server._quart_hooks import bare_response
from trio_range.server.app import RangeApp
from trio_range.server.common import FieldsResponse
from trio_range.server.keep_alive import KeepAliveTimer


async def _get(url: str, path: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(url + path, headers=headers)


async def _start(nursery: trio.Nursery, app: RangeApp, seen: list[str]) -> str:
    url = await start_app(nursery, app, origin_config())
    seen.clear()  # the app context of the app's startup was torn down too
    return url


def _app(seen: list[str]) -> RangeApp:
    app = RangeApp(__name__)

    @app.before_request
    async def before() -> Response | None:
        g.before = "ran"
        if request.path == "/refused":
            return Response("refused by before_request", status=403)
        return None

    @app.after_request
    async def after(response: Response) -> Response:
        response.headers["X-After"] = g.before
        return response

    @app.teardown_request
    async def teardown(exc: BaseException | None) -> None:
        seen.append(f"teardown request {type(exc).__name__}")

    @app.teardown_appcontext
    async def teardown_app(exc: BaseException | None) -> None:
        seen.append(f"teardown app {type(exc).__name__}")

    @app.route("/after-await")
    async def after_await() -> Response:
        await trio.lowlevel.checkpoint()
        await trio.sleep(0.001)
        assert has_request_context()
        assert has_app_context()
        assert current_app._get_current_object() is app  # type: ignore[attr-defined]
        body = await request.get_data()
        return Response(f"{request.method} {request.path} {request.host} {g.before} {body!r}")

    @app.route("/echo", methods=["POST"])
    async def echo() -> Response:
        return Response(await request.get_data())

    @app.route("/forever")
    async def forever() -> Response:
        seen.append("forever started")
        await trio.sleep_forever()
        raise AssertionError("not reached")

    @app.route("/fails")
    async def fails() -> Response:
        raise RuntimeError("a view that fails")

    return app


async def test_views_and_hooks_see_the_request_app_and_g_after_an_await(
    nursery: trio.Nursery,
) -> None:
    seen: list[str] = []
    url = await _start(nursery, _app(seen), seen)
    response = await _get(url, "/after-await", Host="first.test")
    assert response.text == "GET /after-await first.test ran b''"
    assert response.headers["X-After"] == "ran"
    # The adapter is remembered by Host: another Host is its own request, with its own host.
    response = await _get(url, "/after-await", Host="second.test:8080")
    assert response.text == "GET /after-await second.test:8080 ran b''"
    assert seen == ["teardown request NoneType", "teardown app NoneType"] * 2
    # The contexts are gone after the request: no leftover context in the serving task.
    assert not has_request_context()


async def test_a_before_request_hook_answers_and_teardown_still_runs(
    nursery: trio.Nursery,
) -> None:
    seen: list[str] = []
    url = await _start(nursery, _app(seen), seen)
    response = await _get(url, "/refused")
    assert (response.status_code, response.text) == (403, "refused by before_request")
    assert response.headers["X-After"] == "ran"
    assert seen == ["teardown request NoneType", "teardown app NoneType"]


async def test_a_failing_view_is_a_500_and_teardown_sees_it_handled(
    nursery: trio.Nursery,
) -> None:
    seen: list[str] = []
    url = await _start(nursery, _app(seen), seen)
    response = await _get(url, "/fails")
    assert response.status_code == 500
    # Quart handles the error inside the contexts: the teardown hooks see no exception.
    assert seen == ["teardown request NoneType", "teardown app NoneType"]


async def test_a_request_body_still_reaches_the_view(nursery: trio.Nursery) -> None:
    url = await start_app(nursery, _app([]), origin_config())
    async with httpx.AsyncClient() as client:
        sized = await client.post(url + "/echo", content=b"sized body")

        async def chunks() -> Any:
            yield b"chunked "
            yield b"body"

        chunked = await client.post(url + "/echo", content=chunks())
    assert sized.text == "sized body"
    assert chunked.text == "chunked body"


async def test_teardown_runs_when_the_client_leaves_mid_request(nursery: trio.Nursery) -> None:
    seen: list[str] = []
    url = await _start(nursery, _app(seen), seen)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
    with trio.fail_after(10):
        while "forever started" not in seen:
            await trio.sleep(0.01)
    await stream.aclose()
    with trio.fail_after(10):
        while len(seen) < 3:
            await trio.sleep(0.01)
    assert seen == ["forever started", "teardown request Cancelled", "teardown app Cancelled"]


@pytest.mark.parametrize("signal", [appcontext_pushed, appcontext_popped])
async def test_app_context_signals_with_a_receiver_are_still_sent(
    nursery: trio.Nursery, signal: blinker.base.NamedSignal
) -> None:
    received: list[object] = []

    async def receiver(sender: object, **kwargs: object) -> None:
        received.append(sender)

    seen: list[str] = []
    app = _app(seen)
    url = await _start(nursery, app, seen)
    signal.connect(receiver, app)
    try:
        response = await _get(url, "/after-await", Host="signal.test")
    finally:
        signal.disconnect(receiver, app)
    assert response.text == "GET /after-await signal.test ran b''"
    assert received == [app]
    assert seen == ["teardown request NoneType", "teardown app NoneType"]


@pytest.mark.parametrize("status", [200, 206, 304, 416, 599])
def test_bare_response_is_the_response_quart_builds(status: int) -> None:
    body = FieldsResponse.data_body_class(b"data")
    fields = [("Content-Length", "4"), ("ETag", '"x"')]
    ours = bare_response(FieldsResponse, body, status, Headers(fields))
    quarts = FieldsResponse(body, status=status, headers=Headers(fields))
    assert vars(ours) == vars(quarts)


async def test_bare_response_wraps_an_iterable_and_defers_to_quart_for_the_rest() -> None:
    async def items() -> Any:
        yield b"a"

    generator = items()
    ours = bare_response(FieldsResponse, generator, 200, Headers())
    quarts = FieldsResponse(items(), status=200)
    assert type(ours.response) is type(quarts.response)
    assert ours.response.iter is generator  # type: ignore[attr-defined]
    assert ours.timeout is quarts.timeout
    # Bytes: Quart sets them as data, with their Content-Length.
    data = bare_response(FieldsResponse, b"abc", 200, Headers())  # type: ignore[arg-type]
    assert (await data.get_data(), data.headers["Content-Length"]) == (b"abc", "3")
    # A class with a default Content-Type: Quart's __init__ adds it.
    made = bare_response(Response, Response.data_body_class(b""), 200, Headers())
    assert made.headers["Content-Type"] == "text/html; charset=utf-8"


def test_a_trio_body_still_has_the_attributes_the_complete_empty_body_sets() -> None:
    # _CompleteEmptyBody sets these itself (its two events are one shared set event).
    assert set(vars(TrioBody(None, None))) == {
        "_data",
        "_complete",
        "_has_data",
        "_max_content_length",
        "_must_raise",
    }


def test_a_closed_keep_alive_timer_lets_go_of_its_connection() -> None:
    # The timer's close callback is a bound method of the connection's server, which holds
    # the timer: a cycle. Once closed, the timer drops it, so the server (as far as the timer
    # goes) is freed by reference counting, without waiting for a full collection.
    class Server:
        def __init__(self) -> None:
            self.timer = KeepAliveTimer(5.0, trio.Event(), self.close)

        async def close(self) -> None: ...

    server = Server()
    timer = server.timer
    alive = weakref.ref(server)
    enabled = gc.isenabled()
    gc.disable()
    try:
        timer.close()
        del server
        assert alive() is None
    finally:
        if enabled:
            gc.enable()


async def test_a_small_range_request_costs_at_most_its_python_calls(
    nursery: trio.Nursery, media_dir: Path
) -> None:
    # Exact counts (cProfile), client included: 4 KiB ranges on one keep-alive connection.
    # Quart's own context push and pop, Werkzeug's get_host, status parsing and body events
    # made 1118 here; without them 1051-1058 (Quart's context push alone is about 17 more);
    # with h11's state machine skipped too (server/_h11_hooks.py ServerConnection) 869-873.
    # The margin covers what varies with the clock (the Date formatted once a second, a
    # keep-alive deadline woken once more), not the cuts undone.
    url = await start_origin(nursery, media_dir=media_dir)
    pick = random.Random(5)
    starts = [pick.randrange(len(BIG) - RANGE_BYTES) for _ in range(REQUESTS)]
    calls = await _calls(url, starts) / REQUESTS
    assert calls <= 895, calls
