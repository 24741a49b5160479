"""The upstream client's hooks (server/_h11_hooks.py's readers, proxy/_httpx_hooks.py) still fit.

Two kinds of check. The shape: each ``HOOKED`` entry still exists with the parameters the hook
expects (as tests/server/test_hooks.py does for the server's hooks). The behaviour: what the
transport gets from h11's readers driven without a ``Connection`` is what an
``h11.Connection`` in the client role makes of the same bytes (the same head, body pieces,
end, keep-alive verdict and errors), however the bytes are split; and a ``Headers`` built from
h11's triples is indistinguishable from one built by httpx's public constructor. An h11 or
httpx upgrade that changes either fails here, not in a relay.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import h11
import httpx2
import pytest

from trio_range.proxy import _httpx_hooks
from trio_range.server import _h11_hooks
from trio_range.server.hooks_check import problems


@pytest.mark.parametrize("module", [_h11_hooks, _httpx_hooks], ids=lambda m: m.__name__)
def test_every_hooked_attribute_still_has_the_shape_the_hook_expects(module: ModuleType) -> None:
    assert module.HOOKED
    assert problems(module.HOOKED) == []


BODY = b"0123456789" * 30

# (method, the upstream's bytes, whether it closes after them)
ANSWERS: list[tuple[str, bytes, bool]] = [
    ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\nX-A: b\r\n\r\n" + BODY, False),
    ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n" + BODY + b"junk", False),
    ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\nConnection: close\r\n\r\n" + BODY, True),
    ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 300, 300\r\n\r\n" + BODY, False),
    (
        "GET",
        b"HTTP/1.1 206 Partial\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        False,
    ),
    (
        "GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nX",
        False,
    ),
    ("GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", True),
    ("GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", False),
    ("GET", b"HTTP/1.1 200 OK\r\n\r\n" + BODY, True),
    ("GET", b"HTTP/1.0 200 OK\r\n\r\n" + BODY, True),
    (
        "GET",
        b"HTTP/1.0 200 OK\r\nContent-Length: 300\r\nConnection: keep-alive\r\n\r\n" + BODY,
        False,
    ),
    ("GET", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
    ("GET", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", False),
    ("GET", b"HTTP/1.1 204 No Content\r\n\r\n", False),
    ("GET", b'HTTP/1.1 304 Not Modified\r\nETag: "e"\r\nContent-Length: 300\r\n\r\n', False),
    ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n", False),
    ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n" + BODY[:100], True),
    ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", False),
    ("GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", False),
    ("GET", b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", False),
    ("GET", b"HTTP/1.1 2000 OK\r\n\r\n", False),
    ("GET", b"\x16\x03\x01 not http\r\n\r\n", False),
    ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n", True),
]


def by_connection(method: str, pieces: list[bytes], closes: bool) -> list[Any]:
    """What an h11.Connection (client role) makes of the pieces: events, then its verdict."""
    connection = h11.Connection(h11.CLIENT)
    connection.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    connection.send(h11.EndOfMessage())
    out: list[Any] = []
    feed = [*pieces, b""] if closes else list(pieces)
    try:
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                if not feed:
                    out.append("need data")
                    break
                connection.receive_data(feed.pop(0))
                continue
            if type(event) is h11.InformationalResponse:
                continue  # the transport skips these
            if type(event) is h11.Data:
                out.append(bytes(event.data))
                continue
            if type(event) is h11.Response:
                out.append(head_of(event))
                continue
            if type(event) is h11.EndOfMessage:
                reusable = (
                    connection.our_state is h11.DONE
                    and connection.their_state is h11.DONE
                    and not connection.trailing_data[0]
                    and not connection.trailing_data[1]
                    and not feed
                )
                out.append(("end", reusable))
            break  # EndOfMessage, ConnectionClosed, PAUSED
    except h11.RemoteProtocolError:
        out.append("error")
    return merged(out)


def by_hooks(method: str, pieces: list[bytes], closes: bool) -> list[Any]:
    """What the transport makes of the same pieces through _h11_hooks."""
    buffer = _h11_hooks.ReceiveBuffer()
    feed = list(pieces)
    out: list[Any] = []
    try:
        while (response := _h11_hooks.read_response(buffer)) is None:
            if not feed:
                return ["need data"] if not closes else ["error"]
            buffer += feed.pop(0)
        out.append(head_of(response))
        length, reader, keep_alive = _h11_hooks.body_framing(method.encode(), response)
        if length is not None:
            reader = h11._readers.ContentLengthReader(length)  # the transport reads these itself
        closed = False
        while True:
            event = _h11_hooks.next_body_event(reader, buffer, closed)
            if event is None:
                if feed:
                    buffer += feed.pop(0)
                elif closes and not closed:
                    closed = True
                else:
                    out.append("need data")
                    break
            elif type(event) is h11.Data:
                out.append(bytes(event.data))
            else:
                reusable = keep_alive and not closed and not len(buffer) and not feed
                out.append(("end", reusable))
                break
    except h11.RemoteProtocolError:
        out.append("error")
    return merged(out)


def head_of(response: h11.Response) -> tuple[Any, ...]:
    return (response.status_code, response.reason, response.http_version, response.headers)


def merged(events: list[Any]) -> list[Any]:
    """Body pieces joined: how the bytes were split is not part of the answer."""
    out: list[Any] = []
    for event in events:
        if isinstance(event, bytes) and out and isinstance(out[-1], bytes):
            out[-1] += event
        else:
            out.append(event)
    return [event for event in out if event != b""]


@pytest.mark.parametrize(("method", "answer", "closes"), ANSWERS)
@pytest.mark.parametrize("split", [0, 1, 7, 64])
def test_h11_readers_without_a_connection_read_what_a_connection_reads(
    method: str, answer: bytes, closes: bool, split: int
) -> None:
    pieces = (
        [answer] if not split else [answer[i : i + split] for i in range(0, len(answer), split)]
    )
    expected = by_connection(method, pieces, closes)
    got = by_hooks(method, pieces, closes)
    # A 101 to a request that proposed no upgrade is an error either way; h11's Connection
    # only notices it in its state machine, which the hooks replace with one check.
    assert got == expected


def test_a_close_delimited_http11_body_is_complete_but_never_kept_alive() -> None:
    # h11 ends such a body cleanly at the close with both sides DONE (the transport once
    # pooled these connections); the framing itself says the connection is not reusable.
    buffer = _h11_hooks.ReceiveBuffer()
    buffer += b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nabc"
    response = _h11_hooks.read_response(buffer)
    assert response is not None
    assert _h11_hooks.body_framing(b"GET", response)[::2] == (None, False)


@pytest.mark.parametrize(
    "head",
    [
        b'HTTP/1.1 206 Partial Content\r\nContent-Length: 3\r\nETag: "x"\r\nSet-Cookie: a\r\n'
        b"set-cookie: b\r\nX-Obs: caf\xe9\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nTransfer-Encoding: CHUNKED\r\n\r\n",
    ],
)
def test_headers_built_from_h11_triples_are_httpx_headers_from_the_public_constructor(
    head: bytes,
) -> None:
    buffer = _h11_hooks.ReceiveBuffer()
    buffer += head
    response = _h11_hooks.read_response(buffer)
    assert response is not None
    hooked = _httpx_hooks.headers_from_triples(_h11_hooks.header_items(response))
    public = httpx2.Headers(response.headers.raw_items())
    assert vars(hooked) == vars(public)
    assert hooked == public
    assert hooked.raw == public.raw
    assert hooked.multi_items() == public.multi_items()
    assert hooked.encoding == public.encoding
    assert hooked.get("set-cookie") == public.get("set-cookie")
    built = httpx2.Response(206, headers=hooked)
    assert built.headers.raw == public.raw
    assert vars(built.headers) == vars(public)
