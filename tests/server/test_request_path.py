"""The HTTP/1.1 request path hooks (issue 13): the same stream events as Hypercorn's own code."""

from __future__ import annotations

import socket
from typing import Any

import h11
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.events import EndBody, Event, StreamClosed
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import build_and_validate_headers
from hypothesis import given
from hypothesis import strategies as st

from trio_range.server import _h11_hooks, _hypercorn_hooks

NAMES = st.sampled_from([b"Content-Length", b"ETag", b" X-A", b"X-A ", b":status", b"A B", b""])
VALUES = st.sampled_from([b"1", b" 1", b"1 ", b"a b", b"\t", b"", b"x\r\ny", b"\x00"])
FIELDS = st.lists(st.tuples(NAMES, VALUES), max_size=4)


def _outcome(build: Any) -> tuple[str, object]:
    try:
        event = build()
    except (h11.LocalProtocolError, ValueError, IndexError) as error:  # Hypercorn: b"" name
        return (type(error).__name__, str(error))
    return ("built", (list(event.headers), event.status_code, event.reason))


@given(FIELDS)
def test_a_head_unchecked_by_the_stream_reaches_h11_as_hypercorns_checked_head(
    fields: list[tuple[bytes, bytes]],
) -> None:
    # Hypercorn: build_and_validate_headers in HTTPStream.app_send, then h11. Ours: the head as
    # the app sent it, checked by response_event, cleaned only when that check fails.
    ours = _outcome(
        lambda: _h11_hooks.response_event(200, fields, b"OK", build_and_validate_headers)
    )
    theirs = _outcome(
        lambda: h11.Response(
            status_code=200, headers=build_and_validate_headers(fields), reason=b"OK"
        )
    )
    assert ours == theirs


REQUESTS = [
    b"GET /a%20b?x=1 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\nX-Mixed-Case:  v \r\n\r\n",
    b"get / HTTP/1.0\r\nhost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n",  # to Hypercorn's own
]


async def _stream_events(data: bytes, ours: bool, raw: bool, monkeypatch: Any) -> list[Any]:
    seen: list[Any] = []

    async def handle(self: HTTPStream, event: Event) -> None:
        # Two runs, two sets of objects: each compared by what it is.
        made = [self.app, self.config, self.context, self.task_group, self.client, self.server]
        kinds = [type(each).__name__ for each in made]
        seen.append((kinds, self.scheme, self.stream_id, self.send.__qualname__, event))

    monkeypatch.setattr(HTTPStream, "handle", handle)
    config = HypercornConfig()
    config.h11_pass_raw_headers = raw
    app: Any = None
    state: Any = {}

    async def send(event: object) -> None: ...

    left, right = trio.socket.socketpair(socket.AF_UNIX)
    with left, right:
        async with TaskGroup() as task_group:
            wrapper = ProtocolWrapper(
                app, config, WorkerContext(None), task_group, state, False, None, None, send
            )
            protocol = wrapper.protocol
            assert isinstance(protocol, H11Protocol)
            if ours:
                _hypercorn_hooks._install_request_path(protocol)
            protocol.connection.receive_data(data)
            request = protocol.connection.next_event()
            assert isinstance(request, h11.Request)
            await protocol._create_stream(request)
            seen.append(protocol.keep_alive_requests)
    return seen


@pytest.mark.parametrize("raw", [False, True])
@pytest.mark.parametrize("data", REQUESTS)
async def test_a_request_makes_the_stream_event_hypercorn_makes(
    data: bytes, raw: bool, monkeypatch: Any
) -> None:
    ours = await _stream_events(data, True, raw, monkeypatch)
    theirs = await _stream_events(data, False, raw, monkeypatch)
    assert ours == theirs


@pytest.mark.parametrize("state", ["REQUEST", "CLOSED"])
async def test_a_stream_takes_a_body_end_and_its_close_as_hypercorns(state: str) -> None:
    async def events(kind: type[HTTPStream]) -> list[Any]:
        seen: list[Any] = []

        class Log:
            async def access(self, scope: object, response: object, took: float) -> None:
                seen.append(("access", scope, response))

        config: Any = HypercornConfig()
        config._log = Log()
        stream = kind(None, config, None, None, False, None, None, None, 1)  # type: ignore[arg-type]

        async def put(message: object) -> None:
            seen.append(message)

        scope: Any = {"s": 1}
        stream.app_put, stream.scope, stream.start_time = put, scope, 0.0
        stream.state = ASGIHTTPState[state]
        for event in (EndBody(stream_id=1), StreamClosed(stream_id=1), EndBody(stream_id=1)):
            await stream.handle(event)
            seen.append(stream.closed)
        return seen

    assert await events(_hypercorn_hooks._HTTPStream) == await events(HTTPStream)
