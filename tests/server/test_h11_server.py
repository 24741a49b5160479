"""ServerConnection (server/_h11_hooks.py) against a stock ``h11.Connection(h11.SERVER)``.

The same client bytes, split at random points, and the same random server actions go to both;
every returned event, every exception, every byte written and the whole observable state
(public attributes, and the private reader, writer and state machine the fallbacks run on)
must be equal after each step. A keep-alive exchange must not touch h11's state machine at all.
"""

from __future__ import annotations

import itertools
import types
from collections.abc import Callable
from typing import Any

import h11
import pytest
from h11 import _readers, _writers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_range.server._h11_hooks import ServerConnection, response_event

SIMPLE = st.sampled_from(
    [
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /b HTTP/1.1\r\nHost: x\r\nRange: bytes=0-3\r\nConnection: keep-alive\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: x\r\nContent-Length: 0\r\n\r\n",
    ]
)
EXTRAS = [
    b"Connection: close",
    b"Connection: keep-alive",
    b"connection: Keep-Alive, CLOSE",
    b"Expect: 100-continue",
    b"Upgrade: websocket",
    b"Upgrade: h2c",
    b"Content-Length: 0",
    b"Content-Length: 5",
    b"Content-Length: x",
    b"Transfer-Encoding: chunked",
    b"X-A: b",
    b"Host: other",
    b"Bad Header",
    b" folded",
]
GARBAGE = st.sampled_from(
    [b"\x00garbage\r\n\r\n", b"GET / HTTP/1.1\r\n", b"hello", b"\r\n", b"PRI * HTTP/2.0\r\n\r\n"]
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET", b"GET", b"HEAD", b"POST", b"CONNECT", b"OPTIONS"]))
    target = draw(st.sampled_from([b"/", b"*", b"example.com:443", b"/a?b"]))
    version = draw(st.sampled_from([b"1.1", b"1.1", b"1.0"]))
    lines = [b"%s %s HTTP/%s" % (method, target, version)]
    if draw(st.integers(0, 5)):
        lines.append(b"Host: x")
    extras = draw(st.lists(st.sampled_from(EXTRAS), max_size=draw(st.sampled_from([1, 1, 3]))))
    body = b""
    if b"Transfer-Encoding: chunked" in extras:
        body = b"5\r\nhello\r\n0\r\n\r\n"
    elif b"Content-Length: 5" in extras:
        body = b"hello"
    return b"\r\n".join([*lines, *extras]) + b"\r\n\r\n" + body


@st.composite
def client_chunks(draw: st.DrawFn) -> list[bytes]:
    messages = draw(
        st.lists(st.one_of(SIMPLE, requests(), requests(), GARBAGE), min_size=1, max_size=4)
    )
    data = b"".join(messages)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


RESPONSE_FIELDS = st.lists(
    st.sampled_from(
        [
            (b"Content-Length", b"0"),
            (b"Content-Length", b"5"),
            (b"content-length", b"3"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Connection", b"close"),
            (b"Connection", b"keep-alive"),
            (b"Host", b"h"),
            (b"X-A", b"1"),
            (b"Date", b"now"),
        ]
    ),
    max_size=4,
)
PLAIN = [
    (b"Host", b"h"),
    (b"ETag", b'"e"'),
    (b"Date", b"now"),
    (b"X-A", b"1"),
    (b"Content-Range", b"bytes 0-2/9"),
]
ACTIONS = ["next"] * 4 + ["feed"] * 2 + ["respond"] * 2 + ["data"] * 2 + ["eom"] * 2
ACTIONS += ["cycle"] * 2 + ["passthrough", "failed", "info", "close", "late"]


def _event(value: Any) -> Any:
    """An event, sentinel or write as comparable plain data."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, list):  # send_with_data_passthrough's pieces
        return ("pieces", b"".join(value))
    if value in (h11.NEED_DATA, h11.PAUSED):
        return value
    fields = {
        name: getattr(value, name)
        for name in ("method", "target", "http_version", "status_code", "reason", "data")
        if hasattr(value, name)
    }
    if hasattr(value, "headers"):
        fields["headers"] = value.headers.raw_items()
    return (type(value).__name__, fields)


def _outcome(action: Callable[[h11.Connection], Any], connection: h11.Connection) -> Any:
    try:
        return ("returned", _event(action(connection)))
    except Exception as error:  # h11's own errors and its asserts alike
        return ("raised", type(error), str(error), getattr(error, "error_status_hint", None))


def _io(obj: Any) -> Any:
    if obj is None or isinstance(obj, types.FunctionType):
        return obj
    return (type(obj), vars(obj))


def _state(connection: h11.Connection) -> tuple[Any, ...]:
    c: Any = connection
    return (
        c.our_state,
        c.their_state,
        c.states,
        c.they_are_waiting_for_100_continue,
        c.client_is_waiting_for_100_continue,
        c.their_http_version,
        c.trailing_data,
        c._request_method,
        c._cstate.keep_alive,
        c._cstate.pending_switch_proposals,
        _io(c._reader),
        _io(c._writer),
    )


def _response(data: st.DataObject, guided: bool) -> Any:
    status = data.draw(st.sampled_from([200, 206, 206, 404, 204, 304]))
    if guided:  # the common answer: a Content-Length, a few plain fields
        length = [(b"Content-Length", b"%d" % data.draw(st.sampled_from([0, 3, 5])))]
        fields = data.draw(st.lists(st.sampled_from(PLAIN), max_size=2)) + length
    else:
        fields = data.draw(RESPONSE_FIELDS)
    reason = data.draw(st.sampled_from([b"", b"OK"]))
    try:
        if data.draw(st.booleans()):  # as _hypercorn_hooks builds them
            return response_event(status, fields, reason)
        version = data.draw(st.sampled_from([b"1.1", b"1.1", b"1.0"]))
        return h11.Response(status_code=status, headers=fields, reason=reason, http_version=version)
    except h11.LocalProtocolError:
        return h11.Response(status_code=status, headers=[(b"Content-Length", b"0")])


def _choose(stock: Any, data: st.DataObject, chunks: list[bytes]) -> tuple[str, bool]:
    """An action that fits the connection's state most of the time, any action otherwise."""
    if data.draw(st.integers(0, 15)) == 0:
        return data.draw(st.sampled_from(ACTIONS)), False
    ours, theirs = stock.our_state, stock.their_state
    reading = theirs in (h11.IDLE, h11.SEND_BODY) and ours in (h11.IDLE, h11.SEND_RESPONSE)
    if reading and (ours is h11.IDLE or data.draw(st.booleans())):
        return ("feed" if bool(chunks) and data.draw(st.booleans()) else "next"), True
    if ours is h11.SEND_RESPONSE:
        return "respond", True
    if ours is h11.SEND_BODY:
        writer = stock._writer
        if isinstance(writer, _writers.ContentLengthWriter) and writer._length == 0:
            return "eom", True
        return data.draw(st.sampled_from(["data", "passthrough", "eom", "next", "feed"])), True
    if ours is theirs is h11.DONE:
        return "cycle", True
    return data.draw(st.sampled_from(["next", "feed", "close", "failed"])), True


def _action(
    name: str, guided: bool, data: st.DataObject, chunks: list[bytes], stock: Any
) -> Callable[[Any], Any]:
    if name == "feed":
        chunk = chunks.pop(0) if chunks else b""
        return lambda c: c.receive_data(chunk)
    if name == "late":
        return lambda c: c.receive_data(b"x")
    if name == "next":
        return lambda c: c.next_event()
    if name == "respond":
        response = _response(data, guided)
        return lambda c: c.send(response)
    if name in ("data", "passthrough"):
        writer = stock._writer
        sizes = [1, 2, 5]
        if isinstance(writer, _writers.ContentLengthWriter):
            sizes += [writer._length] * 3
        body = h11.Data(data=bytes(data.draw(st.sampled_from(sizes))))
        if name == "data":
            return lambda c: c.send(body)
        # the Data object itself is among the pieces, as send_file needs
        return lambda c: [
            piece if piece is not body.data else b"<same>"
            for piece in c.send_with_data_passthrough(body) or []
        ]
    if name == "eom":
        trailers = data.draw(st.sampled_from([[], [], [(b"X-T", b"1")]]))
        return lambda c: c.send(h11.EndOfMessage(headers=trailers))
    if name == "info":
        status = data.draw(st.sampled_from([100, 101]))
        info = h11.InformationalResponse(status_code=status, headers=[(b"Upgrade", b"h2c")])
        return lambda c: c.send(info)
    if name == "close":
        return lambda c: c.send(h11.ConnectionClosed())
    if name == "failed":
        return lambda c: c.send_failed()
    return lambda c: c.start_next_cycle()


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(client_chunks(), st.data())
def test_every_step_answers_and_leaves_the_state_as_h11_does(
    chunks: list[bytes], data: st.DataObject
) -> None:
    stock = h11.Connection(h11.SERVER, max_incomplete_event_size=160)
    ours = ServerConnection(h11.SERVER, max_incomplete_event_size=160)
    assert _state(ours) == _state(stock)
    for _ in range(60):
        action = _action(*_choose(stock, data, chunks), data, chunks, stock)
        outcome = _outcome(action, stock)
        assert _outcome(action, ours) == outcome
        assert _state(ours) == _state(stock)
        ended = h11.ERROR in stock.states.values() or (outcome[1] is h11.NEED_DATA and not chunks)
        if ended and data.draw(st.integers(0, 3)) == 0:  # else a few steps more
            break


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
CL3 = h11.Response(status_code=200, headers=[(b"ETag", b"e"), (b"Content-Length", b"3")])
HOST = h11.Response(status_code=200, headers=[(b"Content-Length", b"0"), (b"Host", b"h")])
CL0 = [(b"Content-Length", b"0")]
DATA, EOM = h11.Data(data=b"abc"), h11.EndOfMessage()
ANSWER = [("send", CL3), ("send", DATA), ("send", EOM)]
SCRIPTS: dict[str, list[tuple[Any, ...]]] = {
    "keep-alive": [
        ("feed", GET * 2),
        ("next",),
        ("next",),
        ("next",),
        *ANSWER,
        ("cycle",),
        ("next",),
        ("next",),
        ("next",),
        *ANSWER,
        ("cycle",),
        ("next",),
    ],
    "host field first": [("feed", GET), ("next",), ("send", HOST), ("send", EOM), ("cycle",)],
    "client closes mid-answer": [
        ("feed", GET),
        ("next",),
        ("send", CL3),
        ("next",),
        ("feed", b""),
        ("next",),
        ("send", DATA),
        ("send", EOM),
        ("cycle",),
        ("next",),
    ],
    "bad chunk mid-answer": [
        ("feed", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("next",),
        ("send", HOST),
        ("feed", b"zz\r\n"),
        ("next",),
        ("send", EOM),
    ],
    "HEAD": [
        ("feed", b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("next",),
        ("next",),
        ("send", CL3),
        ("send", DATA),
        ("send", EOM),
    ],
    "close asked": [
        ("feed", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: x, Close\r\n\r\n"),
        ("next",),
        ("next",),
        *ANSWER,
        ("cycle",),
        ("next",),
    ],
    "HTTP/1.0": [("feed", b"GET / HTTP/1.0\r\n\r\n"), ("next",), ("next",), *ANSWER],
    "100-continue": [
        ("feed", b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"),
        ("next",),
        ("next",),
        ("send", CL3),
        ("feed", b"z"),
        ("next",),
        ("next",),
        ("send", DATA),
        ("send", EOM),
        ("cycle",),
    ],
    "too much, too little": [
        ("feed", GET * 2),
        ("next",),
        ("next",),
        ("send", CL3),
        ("send", h11.Data(data=b"abcd")),
        ("send", EOM),
        ("cycle",),
        ("next",),
    ],
    "close asked, body unread": [
        ("feed", b"PUT / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1\r\n\r\n"),
        ("next",),
        *ANSWER,
        ("feed", b"z"),
        ("next",),
        ("next",),
    ],
    "204 and 304": [
        ("feed", GET * 2),
        ("next",),
        ("next",),
        ("send", h11.Response(status_code=204, headers=[(b"Content-Length", b"3")])),
        ("send", DATA),
        ("send", EOM),
        ("cycle",),
        ("next",),
        ("next",),
        ("send", h11.Response(status_code=304, headers=[(b"Content-Length", b"3")])),
        ("send", EOM),
    ],
    "CONNECT": [
        ("feed", b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("next",),
        ("next",),
        ("next",),
        *ANSWER,
        ("next",),
        ("cycle",),
    ],
    "upgrade refused": [
        ("feed", b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"),
        ("next",),
        ("next",),
        *ANSWER,
        ("cycle",),
    ],
    "HTTP/1.0 answer": [
        ("feed", GET),
        ("next",),
        ("send", h11.Response(status_code=200, headers=CL0, http_version=b"1.0")),
        ("next",),
    ],
    "send failed": [("feed", GET), ("next",), ("send", CL3), ("failed",), ("next",), ("next",)],
    "pipelined, paused": [
        ("feed", GET + GET[:9]),
        ("next",),
        ("next",),
        ("next",),
        *ANSWER,
        ("cycle",),
        ("next",),
        ("feed", GET[9:]),
        ("next",),
        ("next",),
    ],
}


def _step(step: tuple[Any, ...]) -> Callable[[Any], Any]:
    name, *argument = step
    if name == "feed":
        return lambda c: c.receive_data(argument[0])
    if name == "send":
        return lambda c: c.send(argument[0])
    if name == "next":
        return lambda c: c.next_event()
    if name == "failed":
        return lambda c: c.send_failed()
    return lambda c: c.start_next_cycle()


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_edge_of_the_fast_path_answers_as_h11_does(name: str) -> None:
    stock, ours = h11.Connection(h11.SERVER), ServerConnection(h11.SERVER)
    for step in SCRIPTS[name]:
        action = _step(step)
        assert _outcome(action, ours) == _outcome(action, stock), step
        assert _state(ours) == _state(stock), step


def _keep_alive_exchanges(connection: h11.Connection, requests: int) -> bytes:
    written = []
    connection.receive_data(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" * requests)
    for _ in range(requests):
        request = connection.next_event()
        assert isinstance(request, h11.Request)
        assert isinstance(connection.next_event(), h11.EndOfMessage)
        assert connection.next_event() in (h11.PAUSED, h11.NEED_DATA)
        fields = [(b"Content-Length", b"4"), (b"ETag", b'"e"')]
        written.append(connection.send(response_event(206, fields, b"Partial Content")))
        written.append(connection.send(h11.Data(data=b"ab")))
        written += connection.send_with_data_passthrough(h11.Data(data=b"cd")) or []
        written.append(connection.send(h11.EndOfMessage()))
        assert connection.our_state is connection.their_state is h11.DONE
        connection.start_next_cycle()
    assert connection.next_event() is h11.NEED_DATA
    return b"".join(written)


def test_a_keep_alive_exchange_skips_the_state_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _keep_alive_exchanges(h11.Connection(h11.SERVER), 3)

    def refuse(*args: object) -> None:
        raise AssertionError("h11's state machine ran on the fast path")

    ours = ServerConnection(h11.SERVER)
    for name in ("_process_event", "_process_error", "_respond_to_state_changes"):
        monkeypatch.setattr(ours, name, refuse)
    assert _keep_alive_exchanges(ours, 3) == expected
    assert expected.count(b"HTTP/1.1 206 Partial Content\r\n") == 3


def test_the_private_attributes_the_fast_path_reads_exist() -> None:
    connection: Any = h11.Connection(h11.SERVER)
    cstate = connection._cstate
    assert (cstate.states, cstate.keep_alive, cstate.pending_switch_proposals) == (
        {h11.CLIENT: h11.IDLE, h11.SERVER: h11.IDLE},
        True,
        set(),
    )
    assert connection._reader is _readers.READERS[(h11.CLIENT, h11.IDLE)]
    assert connection._writer is _writers.WRITERS[(h11.SERVER, h11.IDLE)]
    assert _writers.WRITERS[(h11.SERVER, h11.SEND_RESPONSE)] is _writers.write_any_response
    assert connection._writer is _writers.write_any_response
    assert connection._receive_buffer._data == bytearray()
    assert connection._receive_buffer_closed is False
    assert connection._request_method is None
    assert vars(_writers.ContentLengthWriter(3)) == {"_length": 3}
    assert vars(_readers.ContentLengthReader(0)) == {"_length": 0, "_remaining": 0}
