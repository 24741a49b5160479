"""The range policy, decide_ranges: Go's vectors, RFC 9110's examples, order, limits."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.http.range_strategies import (
    any_range_text,
    assert_disjoint_and_apart,
    covered,
    range_specs,
)
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
)


def partial(*ranges: tuple[int, int]) -> RangeDecision:
    return RangeDecision(RangeOutcome.PARTIAL, tuple(ByteRange(s, n) for s, n in ranges))


def decide(header: str | None, query: str | None = None, size: int = 11) -> RangeDecision:
    return decide_ranges(header, query, size)


# --- decide_ranges: resolution ------------------------------------------------------------------


def test_suffix_longer_than_file_serves_whole_file() -> None:
    assert decide("bytes=-1000") == partial((0, 11))


def test_end_past_size_is_clamped_to_last_byte() -> None:
    assert decide("bytes=5-1000") == partial((5, 6))


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
