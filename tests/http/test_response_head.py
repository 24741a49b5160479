"""http/response_head.py against h11 (the reader it stands in for): same head, or None."""

from __future__ import annotations

import h11
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from trio_range.http.response_head import SimpleHead, parse_simple_head
from trio_range.server._h11_hooks import ReceiveBuffer, body_framing, header_items, read_response

STATUS_LINES = st.sampled_from(
    [b"HTTP/1.1 200 OK", b"HTTP/1.1 206 Partial Content", b"HTTP/1.1 204 No Content",
     b"HTTP/1.1 304 X", b"HTTP/1.1 404", b"HTTP/1.1 999 ", b"HTTP/1.0 200 OK",
     b"HTTP/1.1 100 Continue", b"HTTP/1.1 101 X", b"HTTP/1.1 20 X", b"HTTP/2.0 200 OK",
     b"HTTP/1.1 200 O\x00K", b"HTTP/1.1 200 a\tb\x80\x7f", b"HTTP/1.1 200 a\x0cb", b" HTTP/1.1 200"]
)  # fmt: skip
NAMES = st.sampled_from(
    [b"Content-Length", b"content-length", b"Transfer-Encoding", b"Connection", b"ETag",
     b"X-A", b"A:B", b"", b"Bad Name", b" X", b"\tX", b"X\x80"]
)  # fmt: skip
ALPHABET = b"0a :\t,\r\n\x00\x7f\x80\x0c"
VALUES = st.lists(st.sampled_from(ALPHABET), max_size=6).map(bytes) | st.sampled_from(
    [b"0", b"12", b" 7 ", b"chunked", b"1,1", b"close", b"Keep-Alive, CLOSE", b"keep-alive",
     b"0" * 21, b"", b"\xffx"]
)  # fmt: skip
# Mostly heads of the simple shape (h11 still the judge): names and values h11 accepts.
GOOD_NAMES = st.sampled_from([b"Content-Length", b"Connection", b"ETag", b"X-A", b"x~!#"])
GOOD_VALUES = st.lists(st.sampled_from(b"0a \t,\x7f\x80\x01"), max_size=6).map(bytes)
GOOD_VALUES |= st.sampled_from(
    [b"0", b"12", b" 7 ", b"close", b"Keep-Alive, CLOSE", b"x, close ,y", b"0" * 20, b""]
)
FIELDS = st.lists(st.tuples(NAMES, VALUES), max_size=6) | st.lists(
    st.tuples(GOOD_NAMES, GOOD_VALUES), max_size=6
)
ENDS = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"])
GOOD_STATUS_LINES = st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.1 206 P", b"HTTP/1.1 304"])


def _h11(data: bytes, method: str) -> tuple[object, ...] | str:
    """What the transport's h11 path makes of ``data``: the head, or why it is refused."""
    buffer = ReceiveBuffer()
    buffer += data
    try:
        event = read_response(buffer)
        if event is None:
            return "incomplete"
        length, reader, keep_alive = body_framing(method.encode(), event)
    except h11.ProtocolError as error:
        return f"refused: {error}"
    fields = [(bytes(a), bytes(b), bytes(c)) for a, b, c in header_items(event)]
    framing = (length, reader is None, keep_alive)
    return (
        event.status_code,
        bytes(event.reason),
        event.http_version,
        fields,
        framing,
        len(data) - len(buffer),
    )


def _ours(head: SimpleHead) -> tuple[object, ...]:
    framing = (head.body_length, True, head.keep_alive)
    return (head.status, head.reason, b"1.1", head.fields, framing, head.end)


@settings(max_examples=1500)
@given(
    GOOD_STATUS_LINES | STATUS_LINES,
    FIELDS,
    ENDS,
    st.sampled_from(["GET", "HEAD", "CONNECT"]),
    st.binary(max_size=4),
)
@example(b"HTTP/1.1 200 OK", [(b"Content-Length", b"4")], b"\r\n", "GET", b"body")
def test_a_simple_head_reads_as_h11_reads_it_and_anything_else_is_left_to_h11(
    status_line: bytes, fields: list[tuple[bytes, bytes]], end: bytes, method: str, rest: bytes
) -> None:
    data = end.join([status_line, *[n + b":" + v for n, v in fields], b""]) + end + rest
    ours = parse_simple_head(data, method)
    theirs = _h11(data, method)
    if ours is None:
        return  # h11 reads it (or refuses it): the transport's other path
    assert isinstance(theirs, tuple), theirs
    assert (
        ours.status,
        ours.reason,
        b"1.1",
        ours.fields,
        (ours.body_length, True, ours.keep_alive),
        ours.end,
    ) == theirs


@pytest.mark.parametrize(
    ("data", "method", "length", "keep_alive"),
    [
        (b"HTTP/1.1 206 Partial Content\r\nContent-Length: 4\r\n\r\nbody", "GET", 4, True),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nConnection: close\r\n\r\n", "GET", 0, False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: x\r\n\r\n", "HEAD", 0, True),
        (b'HTTP/1.1 304 Not Modified\r\nETag: "e"\r\n\r\n', "GET", 0, True),
        (b"HTTP/1.1 200\r\nX:  a  b \t\r\nContent-Length: 1\r\n\r\nx", "GET", 1, True),
    ],
)
def test_the_common_answers_take_the_simple_path(
    data: bytes, method: str, length: int, keep_alive: bool
) -> None:
    ours = parse_simple_head(data, method)
    assert ours is not None
    assert (ours.body_length, ours.keep_alive) == (length, keep_alive)
    assert _h11(data, method) == _ours(ours)


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n",  # incomplete
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",  # close-delimited
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\nContent-Length: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 1\n\n",
        b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 1\r\n\r\n",
    ],
)
def test_anything_else_is_left_to_h11(data: bytes) -> None:
    assert parse_simple_head(data, "GET") is None
