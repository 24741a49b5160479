"""Request-head limits: the size a head has on the wire, and the refusals it earns."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_range.http.limits import HeadRefusal, check_request_head, request_head_bytes

Headers = list[tuple[bytes, bytes]]
LIMIT = 200
HOST: Headers = [(b"host", b"example")]


def wire_head(method: str, raw_path: bytes, query: bytes, headers: Headers) -> bytes:
    """The head as a client writes it: request line, field lines, empty line."""
    target = raw_path + (b"?" + query if query else b"")
    lines = [method.encode() + b" " + target + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


@pytest.mark.parametrize(
    ("method", "raw_path", "query", "headers"),
    [
        ("GET", b"/", b"", []),
        ("GET", b"/media/a.bin", b"", HOST),
        ("HEAD", b"/media/a.bin", b"range=0-1", HOST),
        ("GET", b"/x", b"a=1&b=2", [(b"host", b"h"), (b"range", b"bytes=0-1"), (b"x-empty", b"")]),
        ("OPTIONS", b"*", b"", [(b"host", b"h")] * 3),
    ],
)
def test_request_head_bytes_is_the_length_on_the_wire(
    method: str, raw_path: bytes, query: bytes, headers: Headers
) -> None:
    expected = len(wire_head(method, raw_path, query, headers))
    assert request_head_bytes(method, raw_path, query, headers) == expected


def head_of(size: int, *, path: bytes = b"/", query: bytes = b"") -> Headers:
    """Header fields that make a GET of ``path`` exactly ``size`` bytes long on the wire."""
    bare = request_head_bytes("GET", path, query, [(b"x-pad", b"")])
    assert size >= bare
    return [(b"x-pad", b"a" * (size - bare))]


SMUGGLING = HeadRefusal(
    400,
    "Bad Request",
    (("Connection", "close"),),
    "400: both Transfer-Encoding and Content-Length",
)


@pytest.mark.parametrize(
    ("raw_path", "query", "headers", "expected"),
    [
        (b"/media/a.bin", b"", HOST, None),
        (b"/media/a.bin", b"range=0-1", HOST, None),
        # RFC 9112 §6.1 and §6.3: both framings is an error, and the connection must close.
        (b"/", b"", [(b"transfer-encoding", b"chunked"), (b"content-length", b"5")], SMUGGLING),
        (b"/", b"", [(b"Content-Length", b"5"), (b"Transfer-Encoding", b"chunked")], SMUGGLING),
        (b"/", b"", [(b"TRANSFER-ENCODING", b"x"), (b"content-length", b"")], SMUGGLING),
        (b"/", b"", [(b"transfer-encoding", b"chunked")], None),
        (b"/", b"", [(b"content-length", b"5")], None),
        (b"/", b"", [(b"content-length", b"5"), (b"content-length", b"5")], None),
        (b"/", b"", [(b"x-transfer-encoding", b"chunked"), (b"content-length", b"5")], None),
        # Smuggling is answered first, even when the head is also too large.
        (
            b"/" + b"a" * LIMIT,
            b"",
            [(b"transfer-encoding", b"chunked"), (b"content-length", b"5")],
            SMUGGLING,
        ),
        # The target alone: path and query together, at and past the limit. A target at the
        # limit still makes the head too large: 431, not 414.
        (b"/" + b"a" * (LIMIT - 1), b"", [], 431),
        (b"/" + b"a" * LIMIT, b"", [], 414),
        (b"/" + b"a" * 99, b"q" * (LIMIT - 100), [], 431),
        (b"/" + b"a" * 99, b"q" * (LIMIT - 99), [], 414),
        # The whole head, at and past the limit.
        (b"/", b"", head_of(LIMIT), None),
        (b"/", b"", head_of(LIMIT + 1), 431),
        (b"/p", b"q=1", head_of(LIMIT, path=b"/p", query=b"q=1"), None),
        (b"/p", b"q=1", head_of(LIMIT + 1, path=b"/p", query=b"q=1"), 431),
        (b"/", b"", [(b"x", b"")] * 100, 431),  # many small fields count as much as one big
    ],
)
def test_check_request_head(
    raw_path: bytes, query: bytes, headers: Headers, expected: HeadRefusal | int | None
) -> None:
    refusal = check_request_head("GET", raw_path, query, headers, LIMIT)
    if isinstance(expected, int):
        assert refusal is not None
        assert refusal.status == expected
    else:
        assert refusal == expected


def test_414_and_431_carry_their_reason_phrases_and_a_log_line_with_the_size() -> None:
    too_long = check_request_head("GET", b"/" + b"a" * LIMIT, b"", [], LIMIT)
    assert too_long == HeadRefusal(
        414, "URI Too Long", (), f"414: request target of {LIMIT + 1} bytes"
    )
    too_large = check_request_head("GET", b"/", b"", head_of(LIMIT + 1), LIMIT)
    assert too_large == HeadRefusal(
        431, "Request Header Fields Too Large", (), f"431: request head of {LIMIT + 1} bytes"
    )


def test_headers_may_be_any_iterable_read_once() -> None:
    fields = [(b"transfer-encoding", b"chunked"), (b"content-length", b"5")]
    assert check_request_head("GET", b"/", b"", iter(fields), LIMIT) == SMUGGLING
    big = head_of(LIMIT + 1)
    refusal = check_request_head("GET", b"/", b"", iter(big), LIMIT)
    assert refusal is not None
    assert refusal.status == 431


def test_a_refusal_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SMUGGLING.status = 200  # type: ignore[misc]


names = st.sampled_from([b"host", b"x-a", b"transfer-encoding", b"Content-Length", b"range"])
fields = st.lists(st.tuples(names, st.binary(max_size=80)), max_size=6)


@given(
    st.sampled_from(["GET", "HEAD", "X"]),
    st.binary(max_size=300).map(lambda p: b"/" + p),
    st.binary(max_size=100),
    fields,
    st.integers(min_value=50, max_value=600),
)
def test_refused_exactly_when_a_rule_says_so(
    method: str, raw_path: bytes, query: bytes, headers: Headers, limit: int
) -> None:
    refusal = check_request_head(method, raw_path, query, headers, limit)
    lower = {name.lower() for name, _ in headers}
    smuggling = {b"transfer-encoding", b"content-length"} <= lower
    target_too_long = len(raw_path) + len(query) > limit
    head_too_large = request_head_bytes(method, raw_path, query, headers) > limit
    if smuggling:
        expected: int | None = 400
    elif target_too_long:
        expected = 414
    elif head_too_large:
        expected = 431
    else:
        expected = None
    assert (None if refusal is None else refusal.status) == expected
    if refusal is not None:
        assert refusal.log_message.startswith(str(refusal.status))
