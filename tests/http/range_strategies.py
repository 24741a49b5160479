"""Shared by the range tests: hypothesis strategies and a by-the-letter model of coalescing."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from hypothesis import strategies as st

from trio_range.http.ranges import ByteRange, RangeSpec

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
