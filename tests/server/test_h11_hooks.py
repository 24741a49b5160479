"""The h11 hooks (server/_h11_hooks.py): still fitting h11, and answering as h11 itself would."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_range.server import _h11_hooks
from trio_range.server.hooks_check import problems

NAMES = st.sampled_from(
    [b"Content-Length", b"content-length", b"Transfer-Encoding", b"ETag", b"X-A", b"A:B", b""]
)
ALPHABET = b"0a :\t,\r\n\x00\x7f\x80"
VALUES = st.lists(st.sampled_from(ALPHABET), max_size=6).map(bytes)
FIELDS = st.lists(st.tuples(NAMES, VALUES | st.sampled_from([b"0", b"12", b"chunked", b"1,1"])))


def test_every_hooked_attribute_still_has_the_shape_the_hook_expects() -> None:
    assert _h11_hooks.HOOKED
    assert problems(_h11_hooks.HOOKED) == []


def _head(event: h11.Response) -> bytes:
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(connection.next_event(), h11.Request)
    data = connection.send(event)
    assert data is not None
    return data


def _outcome(build: object) -> tuple[str, object]:
    try:
        event = build()  # type: ignore[operator]
    except h11.LocalProtocolError as error:
        return ("refused", str(error))
    return ("built", (list(event.headers), event.reason, _head(event)))


@given(FIELDS, st.sampled_from([200, 206, 304, 99]))
def test_a_response_is_built_or_refused_exactly_as_h11_builds_or_refuses_it(
    fields: list[tuple[bytes, bytes]], status: int
) -> None:
    ours = _outcome(lambda: _h11_hooks.response_event(status, fields, b"Partial Content"))
    theirs = _outcome(
        lambda: h11.Response(status_code=status, headers=fields, reason=b"Partial Content")
    )
    assert ours == theirs


def test_a_forged_header_line_is_refused() -> None:
    # The one check of all the fields still sees one bad field among good ones.
    fields = [(b"ETag", b'"a"'), (b"X-A", b"1\r\nSet-Cookie: x=1"), (b"Content-Length", b"1")]
    with pytest.raises(h11.LocalProtocolError, match="Illegal header value"):
        _h11_hooks.response_event(200, fields, b"OK")
    with pytest.raises(h11.LocalProtocolError, match="Illegal header name"):
        _h11_hooks.response_event(200, [(b"Bad Name", b"1")], b"OK")


def test_has_field_finds_a_name_as_h11_lowered_it() -> None:
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n")
    event = connection.next_event()
    assert isinstance(event, h11.Request)
    assert _h11_hooks.has_field(event.headers, b"upgrade")
    assert not _h11_hooks.has_field(event.headers, b"connection")
    # The instance attribute the hook reads: (raw name, lowercased name, value) per field.
    assert event.headers._full_items[1] == (b"Upgrade", b"upgrade", b"h2c")
