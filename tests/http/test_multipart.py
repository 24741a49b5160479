"""multipart/byteranges framing, and the strict reader the other tests rely on."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.multipart_reader import parse_byteranges, parse_content_range
from trio_range.http.multipart import MultipartByteranges, new_boundary, segment_length
from trio_range.http.ranges import ByteRange

DATA = b"abcdefghijk"


def materialise(segments: Iterable[bytes | ByteRange], data: bytes) -> bytes:
    """What the server writes: framing as is, each range copied from the file."""
    return b"".join(s if isinstance(s, bytes) else data[s.start : s.stop] for s in segments)


def two_parts(boundary: str = "B") -> MultipartByteranges:
    return MultipartByteranges(boundary, "text/plain", 11, (ByteRange(0, 2), ByteRange(5, 4)))


def test_exact_wire_bytes_of_two_parts() -> None:
    body = materialise(two_parts().segments(), DATA)
    assert body == (
        b"--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/11\r\n\r\nab\r\n"
        b"--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 5-8/11\r\n\r\nfghi\r\n"
        b"--B--\r\n"
    )
    assert two_parts().content_length() == len(body)


def test_first_delimiter_has_no_leading_crlf() -> None:
    first = next(two_parts().segments())
    assert isinstance(first, bytes)
    assert first.startswith(b"--B\r\n")


def test_segments_alternate_framing_and_ranges() -> None:
    segments = list(two_parts().segments())
    kinds = [isinstance(s, bytes) for s in segments]
    assert kinds == [True, False, True, False, True]
    assert [s for s in segments if isinstance(s, ByteRange)] == [ByteRange(0, 2), ByteRange(5, 4)]


def test_single_part_is_still_well_framed() -> None:
    mp = MultipartByteranges("B", "text/plain", 11, (ByteRange(10, 1),))
    body = materialise(mp.segments(), DATA)
    assert parse_byteranges(body, mp.content_type_header) == [
        ("text/plain", "bytes 10-10/11", b"k")
    ]


def test_content_type_header_quotes_a_boundary_that_is_not_a_token() -> None:
    assert two_parts("abc").content_type_header == "multipart/byteranges; boundary=abc"
    assert two_parts("a:b c").content_type_header == 'multipart/byteranges; boundary="a:b c"'


def test_new_boundary_is_random_hex() -> None:
    boundaries = {new_boundary() for _ in range(20)}
    assert len(boundaries) == 20
    assert all(re.fullmatch(r"[0-9a-f]{32}", b) for b in boundaries)
    two_parts(new_boundary())  # a valid boundary


@pytest.mark.parametrize("boundary", ["", "x" * 71, "ends with space ", "a\r\nb", 'q"uote', "é"])
def test_invalid_boundary_is_refused(boundary: str) -> None:
    with pytest.raises(ValueError, match="boundary"):
        two_parts(boundary)


def test_longest_boundary_is_70_characters() -> None:
    two_parts("x" * 70)


@pytest.mark.parametrize("content_type", ["text/plain\r\nX-Evil: 1", "a\nb", "a\x00b"])
def test_content_type_that_would_forge_header_lines_is_refused(content_type: str) -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        MultipartByteranges("B", content_type, 11, (ByteRange(0, 1),))


def test_content_type_outside_latin_1_is_refused() -> None:
    with pytest.raises(UnicodeEncodeError):
        MultipartByteranges("B", "text/\u2603", 11, (ByteRange(0, 1),))


def test_range_outside_the_size_is_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        MultipartByteranges("B", "text/plain", 11, (ByteRange(10, 2),))


def test_no_ranges_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one range"):
        MultipartByteranges("B", "text/plain", 11, ())


def test_segment_length() -> None:
    assert segment_length(b"abc") == 3
    assert segment_length(ByteRange(7, 9)) == 9


# --- the strict reader -------------------------------------------------------------------------

GOOD = materialise(two_parts().segments(), DATA)
CT = "multipart/byteranges; boundary=B"


def test_reader_reads_our_framing() -> None:
    assert parse_byteranges(GOOD, CT) == [
        ("text/plain", "bytes 0-1/11", b"ab"),
        ("text/plain", "bytes 5-8/11", b"fghi"),
    ]


def test_reader_accepts_a_quoted_boundary_and_any_case_in_the_media_type() -> None:
    assert len(parse_byteranges(GOOD, 'Multipart/ByteRanges; boundary="B"')) == 2


def test_reader_accepts_an_empty_preamble_only_when_asked() -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_byteranges(b"\r\n" + GOOD, CT)
    assert len(parse_byteranges(b"\r\n" + GOOD, CT, allow_leading_crlf=True)) == 2


def test_reader_reads_data_containing_crlf_and_the_boundary() -> None:
    data = b"\r\n--B\r\n--B--\r\n"
    mp = MultipartByteranges("B", "x/y", len(data), (ByteRange(0, 7), ByteRange(7, 7)))
    body = materialise(mp.segments(), data)
    assert [part[2] for part in parse_byteranges(body, mp.content_type_header)] == [
        data[:7],
        data[7:],
    ]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (GOOD.replace(b"\r\n", b"\n"), CT),  # LF framing
        (GOOD[:-2], CT),  # no CRLF after the close delimiter
        (GOOD + b"\r\n", CT),  # epilogue
        (GOOD.replace(b"--B--", b"--B"), CT),  # no close delimiter
        (GOOD.replace(b"--B--\r\n", b""), CT),
        (GOOD.replace(b"--B\r\n", b"--C\r\n", 1), CT),  # wrong boundary
        (GOOD.replace(b"ab\r\n", b"a\r\n"), CT),  # part one byte short
        (GOOD.replace(b"ab\r\n", b"abc\r\n"), CT),  # part one byte long
        (GOOD.replace(b"Content-Type: text/plain\r\n", b"", 1), CT),
        (GOOD.replace(b"Content-Range: bytes 0-1/11\r\n", b"", 1), CT),
        (GOOD.replace(b"\r\n\r\nab", b"\r\nX-Extra: 1\r\n\r\nab"), CT),
        (
            GOOD.replace(
                b"Content-Type: text/plain\r\n", b"Content-Type: a\r\nContent-Type: b\r\n", 1
            ),
            CT,
        ),
        (GOOD.replace(b"bytes 0-1/11", b"bytes 1-0/11"), CT),
        (GOOD.replace(b"bytes 0-1/11", b"bytes 0-1/*"), CT),
        (GOOD.replace(b"bytes 5-8/11", b"bytes 5-11/11"), CT),
        (GOOD.replace(b"Content-Type: text/plain\r", b"Content-Type: text/plain"), CT),
        (GOOD.replace(b"Content-Type:", b"Content Type:", 1), CT),
        (b"", CT),
        (GOOD, "multipart/byteranges"),
        (GOOD, "multipart/mixed; boundary=B"),
        (GOOD, "text/plain"),
    ],
)
def test_reader_rejects_any_framing_deviation(body: bytes, content_type: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case fails with its own message
        parse_byteranges(body, content_type)


def test_parse_content_range() -> None:
    assert parse_content_range("bytes 20-345/1000") == (20, 345, 1000)
    with pytest.raises(ValueError, match="not inside"):
        parse_content_range("bytes 20-1000/1000")
    with pytest.raises(ValueError, match="malformed"):
        parse_content_range("bytes */1000")


# --- properties --------------------------------------------------------------------------------


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, MultipartByteranges]:
    data = draw(st.binary(min_size=1, max_size=200))
    starts = st.integers(min_value=0, max_value=len(data) - 1)
    ranges = []
    for start in draw(st.lists(starts, min_size=1, max_size=6)):
        length = draw(st.integers(min_value=1, max_value=len(data) - start))
        ranges.append(ByteRange(start, length))
    content_type = draw(st.sampled_from(["video/mp4", "text/plain; charset=utf-8", "x/y"]))
    boundary = draw(
        st.one_of(st.just(new_boundary()), st.from_regex(r"[0-9A-Za-z]{1,70}", fullmatch=True))
    )
    return data, MultipartByteranges(boundary, content_type, len(data), tuple(ranges))


@settings(max_examples=150)
@given(bodies())
def test_announced_length_equals_written_bytes_and_every_part_reads_back(
    case: tuple[bytes, MultipartByteranges],
) -> None:
    data, mp = case
    body = materialise(mp.segments(), data)
    assert mp.content_length() == len(body)
    parts = parse_byteranges(body, mp.content_type_header)
    assert len(parts) == len(mp.ranges)
    for (content_type, content_range, part), r in zip(parts, mp.ranges, strict=True):
        assert content_type == mp.content_type
        assert content_range == r.content_range(len(data))
        assert part == data[r.start : r.stop]


@settings(max_examples=100)
@given(bodies())
def test_no_two_framing_segments_are_adjacent(case: tuple[bytes, MultipartByteranges]) -> None:
    segments = list(case[1].segments())
    for before, after in itertools.pairwise(segments):
        assert not (isinstance(before, bytes) and isinstance(after, bytes))
