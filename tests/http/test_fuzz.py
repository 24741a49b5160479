"""Fuzzing the pure protocol modules with adversarial text: our own errors or valid output.

The budget comes from the hypothesis profile (tests/conftest.py): small under `make test`,
20 000 examples per test under `make fuzz`. Text is drawn from the whole of Unicode (lone
surrogates included) and from alphabets close to what the parsers expect, so that both garbage
and near misses reach every branch.
"""

from __future__ import annotations

import itertools

from hypothesis import assume, given
from hypothesis import strategies as st

from tests.support.multipart_reader import parse_byteranges, parse_content_range
from trio_range.errors import RangeParseError
from trio_range.http.conditional import ConditionalRequest, Validators
from trio_range.http.multipart import MultipartByteranges, segment_length
from trio_range.http.ranges import (
    ByteRange,
    RangeLimits,
    RangeOutcome,
    RangeSpec,
    decide_ranges,
    format_range_header,
    parse_query_range,
    parse_range_header,
)
from trio_range.http.response_plan import Representation, ResponsePlan, plan_response

# Every code point, surrogates included: what a header decoded the wrong way can hold.
ANY_CHARACTER = st.characters(codec=None, categories=None, exclude_categories=())
RANGE_ALPHABET = "bytesBYTES=0123456789-,; \t\r\n\x00+_.eExX*/\u0660\u0669\uff11\u00a0\u2025"
DATE_ALPHABET = "0123456789 :,-GMTUTCMonTueWedSunJanFebDecNov\t"
ETAG_ALPHABET = 'W/"*, \tabc0123\x00\x7f\xff\u00e9\u2603'


def near(alphabet: str, max_size: int = 60) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, max_size=max_size)


@st.composite
def wellformed_ranges(draw: st.DrawFn) -> str:
    """``bytes=`` and a list of specs with numbers of any length, spacing and case."""
    number = st.one_of(
        st.integers(0, 20),
        st.integers(0, 10_000),
        st.integers(0, 10**1100),
    ).map(str)
    spec = st.one_of(
        st.tuples(number, number).map("-".join),
        number.map(lambda n: n + "-"),
        number.map(lambda n: "-" + n),
    )
    specs = draw(st.lists(spec, min_size=0, max_size=120))
    separator = draw(st.sampled_from([",", ", ", " ,\t", ",,"]))
    unit = draw(st.sampled_from(["bytes", "BYTES", "Bytes", "bytes ", "items", ""]))
    return f"{unit}={separator.join(specs)}"


RANGE_TEXT = st.one_of(
    st.text(ANY_CHARACTER, max_size=80), near(RANGE_ALPHABET), wellformed_ranges()
)
OPTIONAL_RANGE_TEXT = st.none() | RANGE_TEXT


def assert_valid_specs(specs: tuple[RangeSpec, ...]) -> None:
    assert specs
    for spec in specs:
        assert isinstance(spec, RangeSpec)
        assert spec.first is not None or spec.last is not None
        assert spec.first is None or spec.first >= 0
        assert spec.last is None or spec.last >= 0
        if spec.first is not None and spec.last is not None:
            assert spec.first <= spec.last
    # Whatever parsed turns back into a header that parses to the same specs.
    assert parse_range_header(format_range_header(specs)) == specs


@given(RANGE_TEXT)
def test_parse_range_header_returns_valid_specs_or_raises_its_own_error(text: str) -> None:
    try:
        specs = parse_range_header(text)
    except RangeParseError:
        return
    assert_valid_specs(specs)


@given(RANGE_TEXT)
def test_parse_query_range_returns_valid_specs_or_raises_its_own_error(text: str) -> None:
    try:
        specs = parse_query_range(text)
    except RangeParseError:
        return
    assert_valid_specs(specs)


def assert_sound_decision_ranges(ranges: tuple[ByteRange, ...], size: int) -> None:
    assert ranges
    for a, b in itertools.combinations(ranges, 2):
        # Disjoint and not even adjacent (coalesced), in whatever order the client asked.
        assert a.stop < b.start or b.stop < a.start
    for r in ranges:
        assert 0 <= r.start < r.stop <= size
    assert sum(r.length for r in ranges) <= size


@given(
    OPTIONAL_RANGE_TEXT,
    OPTIONAL_RANGE_TEXT,
    st.integers(0, 10**12),
    st.integers(1, 150),
)
def test_decide_ranges_never_raises_and_partial_ranges_lie_inside(
    header: str | None, query: str | None, size: int, max_ranges: int
) -> None:
    decision = decide_ranges(header, query, size, RangeLimits(max_ranges=max_ranges))
    if decision.outcome is RangeOutcome.PARTIAL:
        assert_sound_decision_ranges(decision.ranges, size)
        assert len(decision.ranges) <= max_ranges
    else:
        assert decision.ranges == ()
    if header is None and query is None:
        assert decision.outcome is RangeOutcome.NONE


def file_bytes(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


def materialise(
    segments: tuple[bytes | ByteRange, ...] | list[bytes | ByteRange], data: bytes
) -> bytes:
    return b"".join(s if isinstance(s, bytes) else data[s.start : s.stop] for s in segments)


@st.composite
def byte_ranges(draw: st.DrawFn, size: int) -> tuple[ByteRange, ...]:
    starts = st.integers(0, size - 1)
    pairs = draw(st.lists(st.tuples(starts, st.integers(1, size)), min_size=1, max_size=12))
    return tuple(ByteRange(start, min(length, size - start)) for start, length in pairs)


@given(
    st.one_of(
        st.text(ANY_CHARACTER, max_size=80),
        near("0123456789abcdefABCDEF'()+_,-./:=? \"\t\r\n", max_size=75),
    ),
    st.one_of(
        st.text(ANY_CHARACTER, max_size=40),
        near('video/mp4; charset="\\\r\n\x00\x7f\xe9\u2603 \t', max_size=40),
    ),
    st.integers(1, 3000).flatmap(lambda size: st.tuples(st.just(size), byte_ranges(size))),
)
def test_multipart_framer_rejects_bad_text_or_writes_what_a_strict_reader_reads(
    boundary: str, content_type: str, size_and_ranges: tuple[int, tuple[ByteRange, ...]]
) -> None:
    size, ranges = size_and_ranges
    try:
        body = MultipartByteranges(boundary, content_type, size, ranges)
    except ValueError:  # UnicodeEncodeError included: text no header can carry
        return
    data = file_bytes(size)
    segments = list(body.segments())
    wire = materialise(segments, data)
    assert body.content_length() == len(wire) == sum(segment_length(s) for s in segments)
    parts = parse_byteranges(wire, body.content_type_header)
    assert [part_data for _, _, part_data in parts] == [data[r.start : r.stop] for r in ranges]
    for (part_type, content_range, _), r in zip(parts, ranges, strict=True):
        assert part_type == content_type.strip(" \t")
        assert parse_content_range(content_range) == (r.start, r.stop - 1, size)


HEADER_TEXT = st.none() | st.one_of(
    st.text(ANY_CHARACTER, max_size=60),
    near(ETAG_ALPHABET),
    near(DATE_ALPHABET),
    st.sampled_from(['"v1"', 'W/"v1"', "*", "Thu, 01 Jan 1970 00:00:10 GMT"]),
)


@given(
    method=st.one_of(st.sampled_from(["GET", "HEAD", "get", "POST"]), st.text(max_size=10)),
    if_match=HEADER_TEXT,
    if_none_match=HEADER_TEXT,
    if_modified_since=HEADER_TEXT,
    if_unmodified_since=HEADER_TEXT,
    if_range=HEADER_TEXT,
    range_header=OPTIONAL_RANGE_TEXT,
    range_query=OPTIONAL_RANGE_TEXT,
    size=st.integers(0, 3000),
    content_type=st.one_of(st.just("video/mp4"), st.text(ANY_CHARACTER, max_size=20)),
    etag=st.one_of(st.none(), st.just('"v1"'), near(ETAG_ALPHABET, 12)),
    last_modified=st.one_of(st.none(), st.just(10), st.integers(-(10**12), 10**12)),
)
def test_plan_response_never_raises_and_its_body_matches_its_headers(
    method: str,
    if_match: str | None,
    if_none_match: str | None,
    if_modified_since: str | None,
    if_unmodified_since: str | None,
    if_range: str | None,
    range_header: str | None,
    range_query: str | None,
    size: int,
    content_type: str,
    etag: str | None,
    last_modified: int | None,
) -> None:
    try:
        rep = Representation(size, content_type, Validators(etag, last_modified))
    except ValueError:  # the representation's own check on field text
        assume(False)
        return
    request = ConditionalRequest(
        method, if_match, if_none_match, if_modified_since, if_unmodified_since, if_range
    )
    plan = plan_response(request, range_header, range_query, rep)
    assert isinstance(plan, ResponsePlan)
    assert plan.status in (200, 206, 304, 412, 416)
    for name, value in plan.headers:
        # Every field can be written on the wire as it is.
        value.encode("latin-1")
        assert not set(value) & {"\r", "\n", "\x00"}, (name, value)
    if plan.status != 304:
        assert plan.header("Content-Length") == str(plan.content_length)
    data = file_bytes(size)
    body = materialise(plan.body, data)
    assert len(body) == plan.content_length
    if plan.status == 200:
        assert body == data
    elif plan.status == 206:
        content_type_header = plan.header("Content-Type")
        assert content_type_header is not None
        content_range = plan.header("Content-Range")
        if content_range is None:
            parts = parse_byteranges(body, content_type_header)
            assert len(parts) > 1
            for _, part_range, part_data in parts:
                first, last, total = parse_content_range(part_range)
                assert (total, part_data) == (size, data[first : last + 1])
        else:
            first, last, total = parse_content_range(content_range)
            assert (total, body) == (size, data[first : last + 1])
    elif plan.status == 416:
        assert plan.header("Content-Range") == f"bytes */{size}"
        assert body == b""
    else:
        assert body == b""
