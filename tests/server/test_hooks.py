"""The private internals the hooks modules rely on still exist with the shape they expect.

Each hooks module, one per library (``server/_hypercorn_hooks.py``, ``server/_quart_hooks.py``,
``server/_h11_hooks.py``, ``server/_werkzeug_hooks.py``, ``proxy/_httpx_hooks.py``), lists what
it touches in ``HOOKED``. After a dependency upgrade
(``make lock``), this is the test that fails first and names the hook, instead of a server
whose keep-alive timer, sendfile path or byte accounting silently stopped working.
"""

from __future__ import annotations

import inspect
import socket
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any

import h11
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import HTTPStream
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from quart.asgi import ASGIHTTPConnection
from quart.globals import request_ctx
from quart.wrappers.request import Body
from quart_trio import QuartTrio

from trio_range.proxy import _httpx_hooks
from trio_range.server import _h11_hooks, _hypercorn_hooks, _quart_hooks, _werkzeug_hooks
from trio_range.server.app import RangeApp
from trio_range.server.hooks_check import Hook, problems

HOOK_MODULES = [_hypercorn_hooks, _quart_hooks, _h11_hooks, _werkzeug_hooks, _httpx_hooks]


@pytest.mark.parametrize("module", HOOK_MODULES, ids=lambda m: m.__name__.rpartition(".")[2])
def test_every_hooked_attribute_still_has_the_shape_the_hook_expects(module: ModuleType) -> None:
    hooks: tuple[Hook, ...] = module.HOOKED
    assert hooks, "a hooks module lists what it touches"
    assert problems(hooks) == []


def test_the_check_names_a_renamed_attribute_and_a_changed_signature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What an upgrade that renamed TCPServer._read_data and reshaped handle_messages looks like.
    monkeypatch.delattr(TCPServer, "_read_data")

    async def handle_messages(self: object, receive: object) -> None: ...

    monkeypatch.setattr(ASGIHTTPConnection, "handle_messages", handle_messages)
    assert problems(_hypercorn_hooks.HOOKED) == [
        "hypercorn.trio.tcp_server.TCPServer._read_data: missing"
    ]
    assert problems(_quart_hooks.HOOKED) == [
        "quart.asgi.ASGIHTTPConnection.handle_messages: parameters ('self', 'receive'), "
        "the hook expects ('self', 'request', 'receive')"
    ]


async def test_hypercorn_instance_attributes_the_hooks_use_exist() -> None:
    # Attributes set in __init__ cannot be checked on the class: build the objects.
    config = HypercornConfig()
    context = WorkerContext(None)
    assert callable(context.terminated.set)
    assert callable(context.terminated.wait)

    async def _app(scope: object, receive: object, send: object) -> None: ...

    async def _send(event: object) -> None: ...

    # Stand-ins: only the objects' construction is exercised, never a call.
    app: Any = _app
    send: Any = _send
    state: Any = {}

    left, right = trio.socket.socketpair(socket.AF_UNIX)
    with left, right:
        stream = trio.SocketStream(left)
        server = _hypercorn_hooks.ConnectionServer(app, config, context, state, stream)
        assert isinstance(server.idle_task, _hypercorn_hooks._KeepAliveTimer)
        assert isinstance(server.send_lock, trio.Lock)
        assert server.stream is stream  # type: ignore[comparison-overlap]
        assert server.config is config
        assert server.context is context
        async with TaskGroup() as task_group:
            wrapper = ProtocolWrapper(
                app, config, context, task_group, state, False, None, None, send
            )
            assert isinstance(wrapper.protocol, H11Protocol)
            assert isinstance(wrapper.protocol.connection, h11.Connection)
            assert wrapper.protocol.config is config
            assert isinstance(wrapper.protocol.keep_alive_requests, int)
            http_stream = HTTPStream(app, config, context, task_group, False, None, None, send, 1)
            assert http_stream.closed is False
            assert _hypercorn_hooks.client_gone(http_stream.app_send) is False
            http_stream.closed = True
            assert _hypercorn_hooks.client_gone(http_stream.app_send) is True


async def test_quart_instance_attributes_the_hooks_use_exist() -> None:
    # QuartFastPath.process_response reads after_this_request's list on the request context.
    app = RangeApp(__name__)
    async with app.test_request_context("/"):
        assert request_ctx._after_request_functions == []
        # current_request: the object behind Quart's proxy, through Werkzeug's method.
        assert _quart_hooks.current_request() is request_ctx.request


def test_hypercorn_code_the_issue_13_hooks_rely_on_is_unchanged() -> None:
    # What the hot path hooks assume of code, not only of names (a signature cannot say it):
    # TCPServer.run sets _task_group before _read_data runs, where ConnectionServer swaps in
    # its spawn_app; HTTPStream spawns through that task group and posts http.disconnect
    # through the app_put it returned (AppQueue.put); H11Protocol frames a response as
    # _WireFormat.stream_send (which holds the head) does in its place.
    run = inspect.getsource(TCPServer.run)
    assert run.index("self._task_group = task_group") < run.index("await self._read_data()")
    handle = inspect.getsource(HTTPStream.handle)
    assert "self.app_put = await self.task_group.spawn_app(" in handle
    assert 'await self.app_put({"type": "http.disconnect"})' in handle
    # _install_protocol_check calls Hypercorn's check only for these two: nothing else in it
    # switches protocols.
    check = inspect.getsource(H11Protocol._check_protocol)
    assert check.count("raise ") == 2
    assert 'if sanitised_name == "upgrade":' in check
    assert 'event.method == b"PRI"' in check
    send_h11_event = inspect.getsource(H11Protocol._send_h11_event)
    assert "data = self.connection.send(event)" in send_h11_event
    assert "await self.send(RawData(data=data))" in send_h11_event
    # Quart-Trio's requests keep their body in a quart Body (complete_empty_body completes it).
    assert issubclass(QuartTrio.request_class.body_class, Body)


def test_the_hooked_libraries_are_the_versions_the_lock_pins() -> None:
    # The hooks are checked against these releases; pyproject stops below the next minor one.
    lock = (Path(__file__).parents[2] / "requirements" / "lock.txt").read_text()
    for name in ("hypercorn", "quart", "quart-trio", "h11", "trio"):
        assert f"\n{name}=={version(name)} " in lock, name
