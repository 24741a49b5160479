"""Byte ranges: the wire forms, parsing, resolution and coalescing; tables, then properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.http.range_strategies import (
    any_range_text,
    assert_disjoint_and_apart,
    byte_ranges,
    coalesce_by_the_letter,
    covered,
    range_specs,
)
from trio_range.errors import RangeParseError
from trio_range.http.ranges import (
    MAX_DIGITS,
    ByteRange,
    RangeSpec,
    coalesce,
    format_range_header,
    parse_query_range,
    parse_range_header,
    resolve_ranges,
    unsatisfied_content_range,
)

# --- ByteRange and RangeSpec ------------------------------------------------------------------


def test_20_345_is_326_bytes_inclusive() -> None:
    (spec,) = parse_range_header("bytes=20-345")
    r = spec.resolve(1000)
    assert r == ByteRange(20, 326)
    assert r.stop == 346
    assert r.content_range(1000) == "bytes 20-345/1000"


def test_byte_range_rejects_empty_or_negative() -> None:
    with pytest.raises(ValueError, match="invalid ByteRange"):
        ByteRange(0, 0)
    with pytest.raises(ValueError, match="invalid ByteRange"):
        ByteRange(-1, 5)


def test_content_range_refuses_a_range_past_the_size() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        ByteRange(5, 10).content_range(14)


def test_range_spec_rejects_what_the_grammar_cannot_express() -> None:
    with pytest.raises(ValueError, match="first position or a suffix"):
        RangeSpec(None, None)
    with pytest.raises(ValueError, match="last < first"):
        RangeSpec(5, 4)
    with pytest.raises(ValueError, match="negative"):
        RangeSpec(-1, None)


@pytest.mark.parametrize(
    ("spec", "size", "expected"),
    [
        (RangeSpec(0, 0), 11, ByteRange(0, 1)),
        (RangeSpec(0, None), 11, ByteRange(0, 11)),
        (RangeSpec(10, None), 11, ByteRange(10, 1)),
        (RangeSpec(11, None), 11, None),
        (RangeSpec(5, 1000), 11, ByteRange(5, 6)),
        (RangeSpec(None, 5), 11, ByteRange(6, 5)),
        (RangeSpec(None, 11), 11, ByteRange(0, 11)),
        (RangeSpec(None, 1000), 11, ByteRange(0, 11)),
        (RangeSpec(None, 0), 11, None),
        (RangeSpec(0, None), 0, None),
        (RangeSpec(None, 5), 0, None),
    ],
)
def test_resolve(spec: RangeSpec, size: int, expected: ByteRange | None) -> None:
    assert spec.resolve(size) == expected


def test_unsatisfied_content_range() -> None:
    assert unsatisfied_content_range(11) == "bytes */11"


# --- parse_range_header -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes=0-499", [(0, 499)]),
        ("bytes=9500-", [(9500, None)]),
        ("bytes=-500", [(None, 500)]),
        ("BYTES=0-1", [(0, 1)]),
        ("Bytes=0-1", [(0, 1)]),
        ("bytes=0-1 , 3-4", [(0, 1), (3, 4)]),
        ("bytes=0-1,\t3-4", [(0, 1), (3, 4)]),
        ("bytes=0-999, 4500-5499, -1000", [(0, 999), (4500, 5499), (None, 1000)]),
        ("  bytes=0-1\t", [(0, 1)]),
        ("bytes=0-1,,2-3", [(0, 1), (2, 3)]),
        ("bytes=,0-1", [(0, 1)]),
        ("bytes=0-1,", [(0, 1)]),
        ("bytes=0-1, ,2-3", [(0, 1), (2, 3)]),
        ("bytes=007-010", [(7, 10)]),
        ("bytes=5-5", [(5, 5)]),
        ("bytes=0-" + "9" * 100, [(0, int("9" * 100))]),
        ("bytes=" + "0" * 5000 + "5-", [(5, None)]),
    ],
)
def test_parse_range_header_accepts(
    value: str, expected: list[tuple[int | None, int | None]]
) -> None:
    assert parse_range_header(value) == tuple(RangeSpec(a, b) for a, b in expected)


@pytest.mark.parametrize(
    "value",
    [
        # Go's invalid vectors
        "bytes=--6",
        "bytes=--0",
        "bytes=---0",
        "bytes=-6-",
        # empty and degenerate
        "",
        "bytes",
        "bytes=",
        "bytes=-",
        "bytes=,",
        "bytes= , ",
        "=0-1",
        "bytes 0-1",
        "bytes =0-1",
        "bytes=0",
        "bytes=a-b",
        "bytes=0-1;2-3",
        # signs and spaces inside numbers
        "bytes=+1-2",
        "bytes=1-+2",
        "bytes=-+1",
        "bytes=1 0-20",
        "bytes=0 - 1",
        "bytes=1_0-20",
        "bytes=\u0661-\u0662",
        "bytes=0x10-0x20",
        "bytes=1.5-2",
        # last < first: "A range request is invalid if the last-pos value ... less than first-pos"
        "bytes=5-1",
        # a number no file could need
        "bytes=0-" + "9" * (MAX_DIGITS + 1),
    ],
)
def test_parse_range_header_rejects(value: str) -> None:
    with pytest.raises(RangeParseError):
        parse_range_header(value)


@pytest.mark.parametrize("value", ["items=0-1", "bites=0-1", "none", "none=0-1", "x=0-1"])
def test_unknown_unit_is_a_parse_error(value: str) -> None:
    with pytest.raises(RangeParseError):
        parse_range_header(value)


def test_parse_error_hints_200_because_an_invalid_range_is_ignored() -> None:
    with pytest.raises(RangeParseError) as info:
        parse_range_header("bytes=x")
    assert info.value.status_hint == 200


# --- parse_query_range ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20-345", [(20, 345)]),
        ("bytes=20-345", [(20, 345)]),
        ("BYTES=20-345", [(20, 345)]),
        ("0-1,5-6", [(0, 1), (5, 6)]),
        ("bytes=0-1,5-6", [(0, 1), (5, 6)]),
        ("0-1, 5-6", [(0, 1), (5, 6)]),
        ("-5", [(None, 5)]),
        ("10-", [(10, None)]),
    ],
)
def test_parse_query_range_accepts_bare_and_header_forms(
    value: str, expected: list[tuple[int | None, int | None]]
) -> None:
    assert parse_query_range(value) == tuple(RangeSpec(a, b) for a, b in expected)


@pytest.mark.parametrize("value", ["", "bytes", "items=0-1", "abc", "5-1", "=0-1", "20-345="])
def test_parse_query_range_rejects(value: str) -> None:
    with pytest.raises(RangeParseError):
        parse_query_range(value)


def test_format_range_header_turns_a_query_range_into_a_header() -> None:
    assert format_range_header(parse_query_range("20-345,-5,7-")) == "bytes=20-345,-5,7-"
    assert RangeSpec(0, 0).wire() == "0-0"


# --- coalesce ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ranges", "expected"),
    [
        ([], []),
        ([(0, 2)], [(0, 2)]),
        ([(5, 2), (0, 2)], [(5, 2), (0, 2)]),  # disjoint: the client's order
        ([(0, 2), (2, 2)], [(0, 4)]),  # adjacent: merged
        ([(2, 2), (0, 2)], [(0, 4)]),
        ([(8, 2), (0, 2), (2, 2)], [(8, 2), (0, 4)]),  # merged in the place of its first member
        ([(4, 3), (0, 2), (5, 5)], [(4, 6), (0, 2)]),
        ([(0, 2), (9, 2), (5, 2), (2, 3)], [(0, 7), (9, 2)]),  # a later range joins two
        ([(9, 2), (5, 2), (0, 2), (2, 3)], [(9, 2), (0, 7)]),
        ([(3, 1), (3, 1), (3, 1)], [(3, 1)]),
        ([(0, 10), (2, 2), (20, 1), (5, 1)], [(0, 10), (20, 1)]),  # contained ones vanish
    ],
)
def test_coalesce(ranges: list[tuple[int, int]], expected: list[tuple[int, int]]) -> None:
    assert coalesce([ByteRange(s, n) for s, n in ranges]) == [ByteRange(s, n) for s, n in expected]


# --- properties --------------------------------------------------------------------------------


@settings(max_examples=150)
@given(any_range_text)
def test_parse_range_header_raises_only_range_parse_error(text: str) -> None:
    try:
        specs = parse_range_header(text)
    except RangeParseError:
        return
    assert specs


@settings(max_examples=150)
@given(any_range_text)
def test_parse_query_range_raises_only_range_parse_error(text: str) -> None:
    try:
        specs = parse_query_range(text)
    except RangeParseError:
        return
    assert specs


@settings(max_examples=100)
@given(st.lists(range_specs(), min_size=1, max_size=5), st.booleans())
def test_written_specs_parse_back_to_themselves(specs: list[RangeSpec], upper: bool) -> None:
    text = ("BYTES=" if upper else "bytes=") + " , ".join(s.wire() for s in specs)
    assert parse_range_header(text) == tuple(specs)
    assert parse_query_range(",".join(s.wire() for s in specs)) == tuple(specs)
    assert parse_range_header(format_range_header(specs)) == tuple(specs)


def naive_inclusive_indices(spec: RangeSpec, size: int) -> list[int]:
    """The byte indices a spec selects, computed the obvious way with inclusive ends."""
    if spec.first is None:
        assert spec.last is not None
        return [i for i in range(size) if i >= size - spec.last]
    last = size - 1 if spec.last is None else min(spec.last, size - 1)
    return [i for i in range(size) if spec.first <= i <= last]


@settings(max_examples=150)
@given(range_specs(), st.binary(max_size=40))
def test_resolved_slice_equals_naive_inclusive_reference(spec: RangeSpec, data: bytes) -> None:
    resolved = spec.resolve(len(data))
    indices = naive_inclusive_indices(spec, len(data))
    if resolved is None:
        assert indices == []
        return
    assert 0 <= resolved.start < resolved.stop <= len(data)
    assert data[resolved.start : resolved.stop] == bytes(data[i] for i in indices)


@settings(max_examples=100)
@given(st.lists(range_specs(), max_size=8), st.integers(min_value=0, max_value=40))
def test_resolve_ranges_keeps_order_and_drops_unsatisfiable(
    specs: list[RangeSpec], size: int
) -> None:
    expected = [r for r in (s.resolve(size) for s in specs) if r is not None]
    assert resolve_ranges(specs, size) == expected


@settings(max_examples=150)
@given(st.lists(byte_ranges, max_size=10))
def test_coalesced_ranges_are_disjoint_cover_the_same_bytes_in_order_of_first_appearance(
    ranges: list[ByteRange],
) -> None:
    merged = coalesce(ranges)
    assert_disjoint_and_apart(merged)
    assert covered(merged) == covered(ranges)
    # Each input lies inside exactly one part; parts come in the order of their first member.
    owners = []
    for r in ranges:
        (owner,) = [
            k for k, part in enumerate(merged) if part.start <= r.start < r.stop <= part.stop
        ]
        owners.append(owner)
    first_members = [owners.index(k) for k in range(len(merged))]
    assert first_members == sorted(first_members)
    assert merged == coalesce_by_the_letter(ranges)
    assert coalesce(merged) == merged
