"""QuartFastPath (server/_quart_hooks.py): Quart's dispatch, minus what nothing registered needs.

The fast path skips blueprint hook lists, signals without receivers and the URL adapter's
host comparison only when they are empty or moot; each test registers the thing skipped and
checks that Quart's behaviour comes back, over a real server and client.
"""

from __future__ import annotations

from typing import Any

import blinker
import httpx
import pytest
import trio
from quart import Blueprint, Response, after_this_request, g
from quart.signals import (
    appcontext_tearing_down,
    request_finished,
    request_started,
    request_tearing_down,
)
from quart.typing import ResponseTypes

from tests.support.servers import origin_config, start_app
from trio_range.server._quart_hooks import QuartFastPath
from trio_range.server.app import RangeApp


def _app(seen: list[str]) -> RangeApp:
    app = RangeApp(__name__)
    blueprint = Blueprint("bp", __name__)

    @app.route("/plain")
    async def plain() -> Response:
        return Response("plain")

    @blueprint.route("/hooked/<int:number>")
    async def hooked(number: int) -> Response:
        seen.append(f"view {number} {g.value}")

        def after_this(response: ResponseTypes) -> ResponseTypes:
            response.headers["X-After-This"] = "1"
            return response

        after_this_request(after_this)
        return Response("hooked")

    @blueprint.url_value_preprocessor
    def preprocess(endpoint: str | None, values: dict[str, Any] | None) -> None:
        seen.append(f"preprocess {endpoint} {values}")

    @blueprint.before_request
    def before() -> None:  # a sync hook: ensure_async asks Quart, which runs it in a thread
        g.value = "from-before"

    @blueprint.after_request
    async def after(response: Response) -> Response:
        response.headers["X-Blueprint-After"] = "1"
        return response

    @blueprint.teardown_request
    async def teardown(exc: BaseException | None) -> None:
        seen.append("teardown bp")

    @app.teardown_appcontext
    async def teardown_app(exc: BaseException | None) -> None:
        seen.append("teardown app")

    app.register_blueprint(blueprint)
    return app


async def _get(url: str, path: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(url + path, headers=headers)


async def test_blueprint_hooks_and_after_this_request_still_run(nursery: trio.Nursery) -> None:
    seen: list[str] = []
    config = origin_config()
    url = await start_app(nursery, _app(seen), config)
    response = await _get(url, "/hooked/7")
    assert response.status_code == 200
    assert response.text == "hooked"
    assert response.headers["X-Blueprint-After"] == "1"
    assert response.headers["X-After-This"] == "1"
    # (Quart-Trio runs the sync hook in a thread with an app context of its own, whose
    # teardown adds one more "teardown app", in an order that is Quart's business.)
    assert set(seen) == {
        "preprocess bp.hooked {'number': 7}",
        "view 7 from-before",
        "teardown bp",
        "teardown app",
    }
    assert seen.index("preprocess bp.hooked {'number': 7}") < seen.index("view 7 from-before")
    assert seen.index("view 7 from-before") < seen.index("teardown bp")
    # The app's own route on the same app: hooks of the blueprint stay out of it.
    plain = await _get(url, "/plain")
    assert plain.text == "plain"
    assert "X-Blueprint-After" not in plain.headers


@pytest.mark.parametrize(
    "signal", [request_started, request_finished, request_tearing_down, appcontext_tearing_down]
)
async def test_a_signal_with_a_receiver_is_still_sent(
    nursery: trio.Nursery, signal: blinker.base.NamedSignal
) -> None:
    received: list[object] = []

    async def receiver(sender: object, **kwargs: object) -> None:
        received.append(sender)

    app = _app([])
    config = origin_config()
    url = await start_app(nursery, app, config)
    signal.connect(receiver, app)
    try:
        response = await _get(url, "/plain")
    finally:
        signal.disconnect(receiver, app)
    assert response.text == "plain"
    assert received == [app]


async def test_signals_without_receivers_are_not_sent(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the fast path saves: Quart sends its signals on every request whether or not anyone
    # listens (appcontext_pushed/popped are sent by Quart's AppContext, outside the app).
    sent: list[str] = []
    original = blinker.Signal.send_async

    async def send_async(self: blinker.Signal, *args: Any, **kwargs: Any) -> Any:
        sent.append(getattr(self, "name", "?"))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(blinker.Signal, "send_async", send_async)
    app = RangeApp(__name__)

    @app.route("/plain")
    async def plain() -> Response:
        return Response("plain")

    config = origin_config()
    url = await start_app(nursery, app, config)
    assert (await _get(url, "/plain")).text == "plain"
    assert "appcontext-pushed" in sent  # the count sees Quart's sends
    skipped = {"request-started", "request-finished", "request-tearing-down"}
    assert not skipped & set(sent)
    assert "appcontext-tearing-down" not in sent


async def test_routes_match_with_a_default_port_in_host_and_with_server_name(
    nursery: trio.Nursery,
) -> None:
    app = _app([])
    config = origin_config()
    url = await start_app(nursery, app, config)
    assert (await _get(url, "/plain", Host="example.test:80")).text == "plain"
    assert (await _get(url, "/plain", Host="EXAMPLE.test")).text == "plain"
    assert (await _get(url, "/nowhere")).status_code == 404
    # With a SERVER_NAME, Quart's own adapter decides (a mismatching host finds no route).
    app.config["SERVER_NAME"] = "served.test"
    with pytest.warns(UserWarning, match="doesn't match configured server name"):
        assert (await _get(url, "/plain", Host="other.test")).status_code == 404
    assert (await _get(url, "/plain", Host="served.test")).text == "plain"


def test_ensure_async_returns_coroutine_functions_as_they_are_and_wraps_the_rest() -> None:
    app = RangeApp(__name__)

    async def coroutine_function() -> None: ...

    def plain_function() -> None: ...

    class Holder:
        async def method(self) -> None: ...

    holder = Holder()
    assert app.ensure_async(coroutine_function) is coroutine_function
    bound = holder.method
    assert app.ensure_async(bound) is bound
    wrapped: object = app.ensure_async(plain_function)
    assert wrapped is not plain_function
    assert isinstance(app, QuartFastPath)
