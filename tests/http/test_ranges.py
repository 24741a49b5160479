"""Range parsing, resolution, coalescing and the range policy: tables, then properties."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_range.errors import RangeParseError
from trio_range.http.ranges import (
    MAX_DIGITS,
    ByteRange,
    RangeDecision,
    RangeLimits,
    RangeOutcome,
    RangeSpec,
    coalesce,
    decide_ranges,
    format_range_header,
    parse_query_range,
    parse_range_header,
    resolve_ranges,
    unsatisfied_content_range,
)

ELEVEN = b"abcdefghijk"
assert len(ELEVEN) == 11


def partial(*ranges: tuple[int, int]) -> RangeDecision:
    return RangeDecision(RangeOutcome.PARTIAL, tuple(ByteRange(s, n) for s, n in ranges))


def decide(header: str | None, query: str | None = None, size: int = 11) -> RangeDecision:
    return decide_ranges(header, query, size)


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


def test_suffix_longer_than_file_serves_whole_file() -> None:
    assert decide("bytes=-1000") == partial((0, 11))


def test_end_past_size_is_clamped_to_last_byte() -> None:
    assert decide("bytes=5-1000") == partial((5, 6))


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


# --- decide_ranges: Go's ServeFileRangeTests on an 11-byte file --------------------------------

GO_PARTIAL = [
    ("bytes=0-4", [(0, 5)]),
    ("bytes=2-", [(2, 9)]),
    ("bytes=-5", [(6, 5)]),
    ("bytes=3-7", [(3, 5)]),
    ("bytes=0-0,-2", [(0, 1), (9, 2)]),
    ("bytes=0-1,5-8", [(0, 2), (5, 4)]),
    ("bytes=0-1,5-", [(0, 2), (5, 6)]),
    ("bytes=5-1000", [(5, 6)]),
    ("bytes=0-9", [(0, 10)]),
    ("bytes=0-10", [(0, 11)]),
    ("bytes=0-11", [(0, 11)]),
    ("bytes=10-11", [(10, 1)]),
    ("bytes=10-", [(10, 1)]),
]


@pytest.mark.parametrize(("header", "expected"), GO_PARTIAL)
def test_go_vectors_partial(header: str, expected: list[tuple[int, int]]) -> None:
    assert decide(header) == partial(*expected)


@pytest.mark.parametrize(
    "header",
    [
        "bytes=11-",
        "bytes=11-12",
        "bytes=12-12",
        "bytes=11-100",
        "bytes=12-100",
        "bytes=100-",
        "bytes=100-1000",
    ],
)
def test_go_vectors_unsatisfiable(header: str) -> None:
    assert decide(header).outcome is RangeOutcome.UNSATISFIABLE


def test_go_vector_ranges_summing_past_the_size_are_ignored() -> None:
    decision = decide("bytes=0-,1-,2-,3-,4-")
    assert decision.outcome is RangeOutcome.IGNORED
    assert "bytes" in decision.reason


@pytest.mark.parametrize("header", ["bytes=--6", "bytes=--0", "bytes=---0", "bytes=-6-"])
def test_go_vectors_invalid_are_ignored(header: str) -> None:
    assert decide(header).outcome is RangeOutcome.IGNORED


# --- decide_ranges: RFC 9110 §14.1.2 examples on a 10000-byte representation ------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-499", [(0, 500)]),
        ("bytes=500-999", [(500, 500)]),
        ("bytes=-500", [(9500, 500)]),
        ("bytes=9500-", [(9500, 500)]),
        ("bytes=0-0,-1", [(0, 1), (9999, 1)]),
        ("bytes=500-600,601-999", [(500, 500)]),
        ("bytes=500-700,601-999", [(500, 500)]),
    ],
)
def test_rfc_9110_examples(header: str, expected: list[tuple[int, int]]) -> None:
    assert decide(header, size=10000) == partial(*expected)


# --- decide_ranges: policy ----------------------------------------------------------------------


def test_no_range_is_none() -> None:
    assert decide(None).outcome is RangeOutcome.NONE


def test_whole_file_range_still_answers_partial_for_chrome() -> None:
    assert decide("bytes=0-") == partial((0, 11))


def test_safari_probe_gets_exactly_two_bytes() -> None:
    assert decide("bytes=0-1") == partial((0, 2))


def test_suffix_zero_is_unsatisfiable() -> None:
    assert decide("bytes=-0").outcome is RangeOutcome.UNSATISFIABLE


def test_mix_of_satisfiable_and_unsatisfiable_keeps_the_satisfiable_ones() -> None:
    assert decide("bytes=20-30,0-1,-0,8-") == partial((0, 2), (8, 3))


# RFC 9110 §15.3.7.2: "the server SHOULD send the parts in the order that the range-specs
# appeared in the Range header, excluding those that were unsatisfiable or were coalesced into
# other parts". Merged parts take the place of their first member in request order.
REQUEST_ORDER = [
    ("bytes=5-6,0-1", [(5, 2), (0, 2)]),
    ("bytes=0-1,5-6", [(0, 2), (5, 2)]),
    ("bytes=8-9,0-1,2-3", [(8, 2), (0, 4)]),  # 0-1 and 2-3 touch: merged in 0-1's place
    ("bytes=8-9,2-3,0-1", [(8, 2), (0, 4)]),  # ... or in 2-3's, whichever came first
    ("bytes=4-6,0-1,5-9", [(4, 6), (0, 2)]),  # 4-6 and 5-9 overlap: merged in 4-6's place
    ("bytes=5-9,0-1,4-6", [(4, 6), (0, 2)]),
    ("bytes=2-3,0-1", [(0, 4)]),  # one part left: a plain 206
    ("bytes=9-10,0-1,5-6,2-4", [(9, 2), (0, 7)]),  # 2-4 joins 0-1 and 5-6 into 0-6
    ("bytes=5-6,9-10,0-1,2-4", [(0, 7), (9, 2)]),  # ... in 5-6's place, before 9-10
    ("bytes=-2,0-0", [(9, 2), (0, 1)]),  # a suffix keeps its place
    ("bytes=8-,3-4,0-0", [(8, 3), (3, 2), (0, 1)]),
    ("bytes=20-30,6-7,-0,0-1", [(6, 2), (0, 2)]),  # unsatisfiable ones leave no gap
    ("bytes=3-3,3-3", [(3, 1)]),  # the same range twice is sent once
]


@pytest.mark.parametrize(("header", "expected"), REQUEST_ORDER)
def test_parts_keep_request_order_and_merged_ones_take_their_first_members_place(
    header: str, expected: list[tuple[int, int]]
) -> None:
    assert decide(header) == partial(*expected)


@pytest.mark.parametrize(
    ("specs", "outcome"),
    [
        # At the count limit, and one past it.
        ([f"{i * 2}-{i * 2}" for i in range(100)], RangeOutcome.PARTIAL),
        ([f"{i * 2}-{i * 2}" for i in range(101)], RangeOutcome.IGNORED),
        # The byte budget: exactly the size, and one byte past it through overlap.
        (["0-99", "100-299", "300-999"], RangeOutcome.PARTIAL),
        (["0-99", "99-299", "300-999"], RangeOutcome.IGNORED),
        # "Apache Killer" and nested shapes.
        ([f"{i}-" for i in range(50)], RangeOutcome.IGNORED),
        ([f"{i}-{999 - i}" for i in range(20)], RangeOutcome.IGNORED),
        # Unsatisfiable ones only, wherever they stand.
        (["1000-", "2000-2001", "-0"], RangeOutcome.UNSATISFIABLE),
    ],
)
def test_limits_give_the_same_answer_whatever_the_order(
    specs: list[str], outcome: RangeOutcome
) -> None:
    shuffler = random.Random(9110)
    orders = [specs[::-1], *(shuffler.sample(specs, len(specs)) for _ in range(20))]
    in_order = decide("bytes=" + ",".join(specs), size=1000)
    assert in_order.outcome is outcome
    for order in orders:
        decision = decide("bytes=" + ",".join(order), size=1000)
        assert decision.outcome is outcome
        assert covered(decision.ranges) == covered(in_order.ranges)


def test_empty_file_ignores_the_range() -> None:
    assert decide("bytes=0-", size=0).outcome is RangeOutcome.IGNORED
    assert decide("bytes=-5", size=0).outcome is RangeOutcome.IGNORED


@pytest.mark.parametrize("header", ["items=0-1", "bytes=x-y", "bytes=", "bytes=5-1", "garbage"])
def test_invalid_or_unknown_unit_is_ignored(header: str) -> None:
    decision = decide(header)
    assert decision.outcome is RangeOutcome.IGNORED
    assert decision.reason


def test_huge_numbers_resolve_by_clamping() -> None:
    assert decide("bytes=0-" + "9" * 100) == partial((0, 11))
    assert decide("bytes=-" + "9" * 100) == partial((0, 11))
    assert decide("bytes=" + "9" * 100 + "-").outcome is RangeOutcome.UNSATISFIABLE


def test_overlong_number_is_ignored() -> None:
    assert decide("bytes=0-" + "1" * (MAX_DIGITS + 1)).outcome is RangeOutcome.IGNORED


def test_more_than_max_ranges_is_ignored() -> None:
    at_limit = "bytes=" + ",".join(f"{i}-{i}" for i in range(100))
    over_limit = "bytes=" + ",".join(f"{i}-{i}" for i in range(101))
    assert decide(at_limit, size=1000) == partial((0, 100))
    decision = decide(over_limit, size=1000)
    assert decision.outcome is RangeOutcome.IGNORED
    assert "max_ranges" in decision.reason


def test_max_ranges_is_configurable() -> None:
    limits = RangeLimits(max_ranges=2)
    assert decide_ranges("bytes=0-0,2-2", None, 11, limits).outcome is RangeOutcome.PARTIAL
    assert decide_ranges("bytes=0-0,2-2,4-4", None, 11, limits).outcome is RangeOutcome.IGNORED
    with pytest.raises(ValueError, match="max_ranges"):
        RangeLimits(max_ranges=0)


def test_overlap_amplification_is_ignored() -> None:
    assert decide("bytes=0-5,3-8").outcome is RangeOutcome.IGNORED
    assert decide("bytes=0-4,3-8") == partial((0, 9))


def test_partial_decision_requires_ranges() -> None:
    with pytest.raises(ValueError, match="PARTIAL"):
        RangeDecision(RangeOutcome.PARTIAL)
    with pytest.raises(ValueError, match="PARTIAL"):
        RangeDecision(RangeOutcome.IGNORED, (ByteRange(0, 1),))


# --- decide_ranges: the ?range= parameter ------------------------------------------------------


def test_query_range_alone() -> None:
    assert decide(None, "20-345", size=1000) == partial((20, 326))
    assert decide(None, "bytes=20-345", size=1000) == partial((20, 326))


def test_query_and_header_for_the_same_bytes_agree() -> None:
    assert decide("bytes=20-345", "20-345", size=1000) == partial((20, 326))
    assert decide("bytes=20-345", "bytes=20-345", size=1000) == partial((20, 326))
    assert decide("BYTES=0-1, 5-6", "0-1,5-6") == partial((0, 2), (5, 2))


def test_query_and_header_that_differ_conflict() -> None:
    assert decide("bytes=20-345", "20-346", size=1000).outcome is RangeOutcome.CONFLICT
    assert decide("bytes=0-1,5-6", "5-6,0-1").outcome is RangeOutcome.CONFLICT
    assert decide("bytes=0-10", "0-", size=11).outcome is RangeOutcome.CONFLICT


def test_an_invalid_source_is_ignored_and_the_other_applies() -> None:
    assert decide("bytes=x", "0-1") == partial((0, 2))
    assert decide("items=0-1", "0-1") == partial((0, 2))
    assert decide("bytes=0-1", "garbage") == partial((0, 2))
    assert decide("bytes=x", "garbage").outcome is RangeOutcome.IGNORED


def test_conflict_is_reported_before_unsatisfiable() -> None:
    assert decide("bytes=100-", "200-").outcome is RangeOutcome.CONFLICT


# --- properties --------------------------------------------------------------------------------

# Text close to the grammar finds more edge cases than arbitrary unicode.
range_alphabet = st.sampled_from(list("bytesBYTES=0123456789-,+ \t;*xé\u0661_"))
near_range_text = st.lists(range_alphabet, max_size=40).map("".join)
any_range_text = st.one_of(st.text(max_size=60), near_range_text)
positions = st.integers(min_value=0, max_value=40)


@st.composite
def range_specs(draw: st.DrawFn) -> RangeSpec:
    kind = draw(st.sampled_from(["closed", "open", "suffix"]))
    if kind == "suffix":
        return RangeSpec(None, draw(positions))
    first = draw(positions)
    if kind == "open":
        return RangeSpec(first, None)
    return RangeSpec(first, first + draw(positions))


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


@settings(max_examples=150)
@given(
    st.one_of(st.none(), any_range_text),
    st.one_of(st.none(), any_range_text),
    st.integers(min_value=0, max_value=50),
)
def test_decide_ranges_never_raises_and_partial_ranges_are_well_formed(
    header: str | None, query: str | None, size: int
) -> None:
    decision = decide_ranges(header, query, size)
    if decision.outcome is RangeOutcome.PARTIAL:
        assert decision.ranges
        assert all(r.stop <= size for r in decision.ranges)
        assert list(decision.ranges) == coalesce(decision.ranges)
        assert_disjoint_and_apart(decision.ranges)


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


byte_ranges = st.builds(
    ByteRange, st.integers(min_value=0, max_value=60), st.integers(min_value=1, max_value=20)
)


def covered(ranges: Iterable[ByteRange]) -> set[int]:
    return {i for r in ranges for i in range(r.start, r.stop)}


def touch(a: ByteRange, b: ByteRange) -> bool:
    return a.start <= b.stop and b.start <= a.stop


def assert_disjoint_and_apart(ranges: Iterable[ByteRange]) -> None:
    """No two ranges share a byte or abut, whatever their order."""
    for a, b in itertools.combinations(ranges, 2):
        assert not touch(a, b), (a, b)


def coalesce_by_the_letter(ranges: list[ByteRange]) -> list[ByteRange]:
    """RFC 9110 §15.3.7.2 done the slow, obvious way.

    Merge any two parts that touch into the earlier one's place, until none touch.
    """
    parts = list(ranges)
    while True:
        pairs = itertools.combinations(range(len(parts)), 2)
        pair = next(((i, j) for i, j in pairs if touch(parts[i], parts[j])), None)
        if pair is None:
            return parts
        i, j = pair
        start = min(parts[i].start, parts[j].start)
        parts[i] = ByteRange(start, max(parts[i].stop, parts[j].stop) - start)
        del parts[j]


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


@settings(max_examples=100)
@given(
    st.lists(range_specs(), min_size=1, max_size=8),
    st.integers(min_value=0, max_value=40),
    st.randoms(use_true_random=False),
)
def test_shuffled_specs_get_the_same_decision_and_the_same_bytes(
    specs: list[RangeSpec], size: int, rnd: random.Random
) -> None:
    shuffled = rnd.sample(specs, len(specs))
    limits = RangeLimits(max_ranges=5)
    original = decide_ranges(format_range_header(specs), None, size, limits)
    other = decide_ranges(format_range_header(shuffled), None, size, limits)
    assert other.outcome is original.outcome
    assert covered(other.ranges) == covered(original.ranges)
    assert sorted(other.ranges, key=lambda r: r.start) == sorted(
        original.ranges, key=lambda r: r.start
    )
