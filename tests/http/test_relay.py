"""The relay's pure decisions: the upstream target, ``?range=``, what an upstream answer says."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_range.http.relay import (
    RangeConflict,
    fields_text,
    fields_triples,
    query_range,
    range_for_upstream,
    relayed_range_outcome,
    representation_size,
    upstream_target,
)


@pytest.mark.parametrize(
    ("raw_path", "query", "target"),
    [
        (b"/media/a.mp4", b"", "/media/a.mp4"),
        (b"/a", b"range=1-2", "/a?range=1-2"),
        (b"/a/../b", b"", "/a/../b"),  # as sent: the upstream decides what dot segments mean
        (b"http://elsewhere.example/x?y", b"", "/x"),  # absolute form: the path only
        (b"http://elsewhere.example", b"", "/"),
        (b"*", b"", "/*"),
    ],
)
def test_upstream_target_keeps_the_path_and_never_the_host(
    raw_path: bytes, query: bytes, target: str
) -> None:
    assert upstream_target(raw_path, query) == target


@pytest.mark.parametrize(
    ("query", "value"),
    [
        (b"", None),
        (b"range=20-345", "20-345"),
        (b"a=1&range=bytes%3D0-1", "bytes=0-1"),
        (b"range=", ""),
        (b"ranges=1-2", None),
    ],
)
def test_query_range_finds_the_compatibility_parameter(query: bytes, value: str | None) -> None:
    assert query_range(query) == value


@pytest.mark.parametrize(
    ("header", "query", "sent"),
    [
        (None, None, None),  # nothing to change
        ("bytes=1-2", None, None),  # the client's Range goes as is
        (None, "20-345", "bytes=20-345"),
        (None, "bytes=20-345", "bytes=20-345"),
        ("bytes=20-345", "20-345", "bytes=20-345"),  # compared after parsing: they agree
        ("bytes=oops", "1-2", "bytes=1-2"),  # an invalid header is ignored
        ("bytes=1-2", "oops", None),  # an invalid query value is ignored
    ],
)
def test_range_for_upstream_maps_the_query_onto_the_range_header(
    header: str | None, query: str | None, sent: str | None
) -> None:
    assert range_for_upstream(header, query) == sent


def test_a_range_header_and_query_that_disagree_conflict() -> None:
    with pytest.raises(RangeConflict):
        range_for_upstream("bytes=0-1", "20-345")


@pytest.mark.parametrize(
    ("status", "headers", "size"),
    [
        (200, {"Content-Length": "10"}, 10),
        (200, {}, None),
        (206, {"Content-Range": "bytes 0-1/10"}, 10),
        (206, {"Content-Range": "bytes 0-1/*"}, None),
        (416, {"Content-Range": "bytes */10"}, None),
        (304, {"Content-Length": "10"}, None),
        # Not 1*DIGIT: no size, rather than int()'s ValueError or its idea of a digit.
        (206, {"Content-Range": "bytes */\u00b2"}, None),
        (206, {"Content-Range": "bytes 0-1/\u0661\u0660"}, None),
        (206, {"Content-Range": "bytes 0-1/" + "9" * 5000}, None),
        (206, {"Content-Range": "bytes 0-1/+10"}, None),
        (206, {"Content-Range": "bytes 0-1/ 10"}, None),
        (200, {"Content-Length": "1_0"}, None),
        (200, {"Content-Length": "\u00b3"}, None),
        (200, {"Content-Length": "0010"}, 10),
    ],
)
def test_representation_size_is_what_the_answer_reveals(
    status: int, headers: dict[str, str], size: int | None
) -> None:
    assert representation_size(status, headers) == size


@pytest.mark.parametrize(
    ("asked", "status", "content_type", "label"),
    [
        (True, 206, "video/mp4", "single"),
        (True, 206, "multipart/byteranges; boundary=x", "multi"),
        (True, 416, "text/plain", "unsatisfiable"),
        (True, 200, "video/mp4", "ignored"),
        (False, 200, "video/mp4", "none"),
        (True, 304, "", "none"),
    ],
)
def test_relayed_range_outcome_labels_how_the_upstream_treated_the_range(
    asked: bool, status: int, content_type: str, label: str
) -> None:
    assert relayed_range_outcome(asked, status, content_type) == label


# -- field conversions (issue 14): one conversion per list, the same result as per field ----

_FIELD_BYTES = st.binary(max_size=12)


@given(st.lists(st.tuples(_FIELD_BYTES, _FIELD_BYTES), max_size=8))
def test_fields_text_is_latin1_per_field_even_with_nul(fields: list[tuple[bytes, bytes]]) -> None:
    expected = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in fields]
    assert fields_text(fields) == expected


@given(st.lists(st.tuples(st.text(max_size=12), st.text(max_size=12)), max_size=8))
def test_fields_triples_are_latin1_per_field_or_raise_the_same(
    fields: list[tuple[str, str]],
) -> None:
    try:
        pairs = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in fields]
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            fields_triples(fields)
        return
    assert fields_triples(fields) == [(n, n.lower(), v) for n, v in pairs]


def test_fields_triples_lowercase_only_names() -> None:
    assert fields_triples([("X-Case", "VaLuE"), ("a\x00B", "\x00")]) == [
        (b"X-Case", b"x-case", b"VaLuE"),
        (b"a\x00B", b"a\x00b", b"\x00"),
    ]


_CTLS = {chr(c) for c in [*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F]}


@given(st.lists(st.tuples(st.binary(min_size=1, max_size=8), st.binary(max_size=12)), max_size=8))
def test_fields_text_sets_apart_every_field_with_a_control_character(
    fields: list[tuple[bytes, bytes]],
) -> None:
    # RFC 9110 §5.5: any CTL but HTAB makes a field invalid (NUL, CR and LF included).
    invalid: list[tuple[str, str]] = []
    valid = fields_text(fields, invalid)
    everything = fields_text(fields)
    assert valid == [f for f in everything if not _CTLS.intersection(f[0] + f[1])]
    assert invalid == [f for f in everything if _CTLS.intersection(f[0] + f[1])]


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        (b"a\tb", True),
        (b"caf\xe9\xff", True),
        (b"a\x01b", False),
        (b"\x7f", False),
        (b"a\x1fb", False),
        (b"a\x0bb", False),
        (b"a\x00b", False),
    ],
)
def test_fields_text_keeps_tab_and_obs_text_but_no_other_control(value: bytes, kept: bool) -> None:
    invalid: list[tuple[str, str]] = []
    fields = [(b"A", b"1"), (b"X", value), (b"B", b"2")]
    valid = fields_text(fields, invalid)
    field = ("X", value.decode("latin-1"))
    assert (valid, invalid) == (
        ([("A", "1"), field, ("B", "2")], []) if kept else ([("A", "1"), ("B", "2")], [field])
    )
