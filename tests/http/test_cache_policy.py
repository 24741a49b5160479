"""The slice cache's pure rules: RFC 9111 storability and freshness, keys, slice arithmetic."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from trio_range.http.cache_policy import (
    CacheControl,
    SliceAnswerKind,
    cache_key,
    freshness_lifetime,
    parse_cache_control,
    read_slice_answer,
    request_bypasses_cache,
    same_version,
    strong_validators,
)
from trio_range.http.conditional import Validators
from trio_range.http.ranges import ByteRange
from trio_range.http.slices import (
    first_slice_wanted,
    revalidation_headers,
    slice_count,
    slice_pieces,
    slice_range_header,
    slice_span,
)

SLICE = 1024


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, CacheControl()),
        ("", CacheControl()),
        ("public, max-age=3600", CacheControl(public=True, max_age=3600)),
        ("s-maxage=10, max-age=5", CacheControl(s_maxage=10, max_age=5)),
        ('max-age="7"', CacheControl(max_age=7)),
        ("max-age=soon", CacheControl(max_age=0)),  # invalid: stale, never forever
        ("No-Store", CacheControl(no_store=True)),
        ("private, no-cache", CacheControl(private=True, no_cache=True)),
        ("immutable, stale-while-revalidate=5", CacheControl()),  # unknown: ignored
        (",,, max-age=1 ,", CacheControl(max_age=1)),
    ],
)
def test_cache_control_directives(value: str | None, expected: CacheControl) -> None:
    assert parse_cache_control(value) == expected


@pytest.mark.parametrize(
    ("method", "cache_control", "authorization", "reason"),
    [
        ("GET", None, False, None),
        ("HEAD", "max-age=0", False, None),
        ("POST", None, False, "method"),
        ("GET", None, True, "authorization"),
        ("GET", "no-store", False, "no-store"),
    ],
)
def test_which_requests_bypass_the_cache(
    method: str, cache_control: str | None, authorization: bool, reason: str | None
) -> None:
    assert request_bypasses_cache(method, cache_control, has_authorization=authorization) == reason


@pytest.mark.parametrize(
    ("path", "query", "key"),
    [
        ("/v.mp4", "", "/v.mp4"),
        ("/v.mp4", "range=0-99", "/v.mp4"),  # ?range= is a range, not part of the object
        ("/v.mp4", "a=1&range=bytes%3D0-1&b=2", "/v.mp4?a=1&b=2"),
        ("/v.mp4", "b=2&a=1", "/v.mp4?b=2&a=1"),  # untouched when there is no range
        ("/v.mp4", "x", "/v.mp4?x"),
    ],
)
def test_the_cache_key_is_the_target_without_range(path: str, query: str, key: str) -> None:
    assert cache_key(path, query) == key


@pytest.mark.parametrize(
    ("etag", "last_modified", "expected"),
    [
        ('"abc"', None, Validators('"abc"', None)),
        ('"abc"', "Sun, 06 Nov 1994 08:49:37 GMT", Validators('"abc"', 784111777)),
        ('W/"abc"', None, None),
        (None, "Sun, 06 Nov 1994 08:49:37 GMT", None),
        ("abc", None, None),
        (None, None, None),
    ],
)
def test_only_a_strong_etag_lets_an_object_be_cached(
    etag: str | None, last_modified: str | None, expected: Validators | None
) -> None:
    assert strong_validators(etag, last_modified) == expected


@pytest.mark.parametrize(
    ("control", "expires", "date", "seconds"),
    [
        ("s-maxage=5, max-age=100", None, None, 5.0),
        ("max-age=100", "Sun, 06 Nov 1994 08:49:37 GMT", None, 100.0),
        ("", "Sun, 06 Nov 1994 08:50:37 GMT", "Sun, 06 Nov 1994 08:49:37 GMT", 60.0),
        ("", "Sun, 06 Nov 1994 08:40:37 GMT", "Sun, 06 Nov 1994 08:49:37 GMT", 0.0),
        ("", "0", "Sun, 06 Nov 1994 08:49:37 GMT", 0.0),  # invalid Expires: expired
        ("", None, None, 42.0),  # the default TTL
    ],
)
def test_freshness_lifetime(
    control: str, expires: str | None, date: str | None, seconds: float
) -> None:
    lifetime = freshness_lifetime(parse_cache_control(control), expires, date, default_ttl_s=42.0)
    assert lifetime == seconds


def _fields(**extra: str) -> list[tuple[str, str]]:
    fields = {
        "ETag": '"v1"',
        "Content-Range": "bytes 1024-2047/5000",
        "Content-Length": "1024",
        "Content-Type": "video/mp4",
    }
    fields.update({name.replace("_", "-"): value for name, value in extra.items()})
    return [(name, value) for name, value in fields.items() if value != "-"]


@pytest.mark.parametrize(
    ("status", "fields", "kind"),
    [
        (206, _fields(), SliceAnswerKind.SLICE),
        (206, _fields(Vary="Accept-Encoding"), SliceAnswerKind.SLICE),
        (206, _fields(Cache_Control="public, max-age=60"), SliceAnswerKind.SLICE),
        (200, _fields(), SliceAnswerKind.UNCACHEABLE),  # Range ignored
        (304, [("ETag", '"v1"')], SliceAnswerKind.NOT_MODIFIED),
        (404, [], SliceAnswerKind.RELAY),
        (416, [], SliceAnswerKind.RELAY),
        (503, [], SliceAnswerKind.RELAY),
        (206, _fields(Cache_Control="no-store"), SliceAnswerKind.UNCACHEABLE),
        (206, _fields(Cache_Control="private, max-age=60"), SliceAnswerKind.UNCACHEABLE),
        (206, _fields(Vary="Cookie"), SliceAnswerKind.UNCACHEABLE),
        (206, _fields(Vary="*"), SliceAnswerKind.UNCACHEABLE),
        (206, _fields(Content_Encoding="gzip"), SliceAnswerKind.UNCACHEABLE),
        (206, _fields(ETag='W/"v1"'), SliceAnswerKind.UNCACHEABLE),
        (206, _fields(ETag="-"), SliceAnswerKind.UNCACHEABLE),
        (206, _fields(Content_Range="bytes 0-1023/5000"), SliceAnswerKind.UNCACHEABLE),
        (206, _fields(Content_Range="bytes 1024-1500/5000"), SliceAnswerKind.UNCACHEABLE),
        (206, _fields(Content_Range="bytes 1024-2047/*"), SliceAnswerKind.UNCACHEABLE),
        (206, _fields(Content_Length="10"), SliceAnswerKind.UNCACHEABLE),
        (206, _fields(Content_Range="-"), SliceAnswerKind.UNCACHEABLE),  # multipart or none
    ],
)
def test_what_an_answer_to_a_slice_request_means(
    status: int, fields: list[tuple[str, str]], kind: SliceAnswerKind
) -> None:
    answer = read_slice_answer(status, fields, start=1024, slice_size=1024, default_ttl_s=30)
    assert answer.kind is kind, answer.reason
    if kind is SliceAnswerKind.SLICE:
        assert (answer.size, answer.length) == (5000, 1024)
        assert answer.validators == Validators('"v1"', None)


def test_the_last_slice_is_clamped_to_the_object_and_takes_its_freshness() -> None:
    answer = read_slice_answer(
        206,
        _fields(
            Content_Range="bytes 4096-4999/5000", Content_Length="904", Cache_Control="max-age=9"
        ),
        start=4096,
        slice_size=1024,
        default_ttl_s=30,
    )
    assert answer.kind is SliceAnswerKind.SLICE
    assert (answer.length, answer.fresh_for_s, answer.cache_control) == (904, 9.0, "max-age=9")


def test_a_304_carries_its_own_freshness() -> None:
    answer = read_slice_answer(
        304, [("Cache-Control", "max-age=5")], start=0, slice_size=1024, default_ttl_s=30
    )
    assert (answer.kind, answer.fresh_for_s) == (SliceAnswerKind.NOT_MODIFIED, 5.0)


def test_versions_are_told_apart_by_strong_etags_only() -> None:
    assert same_version(Validators('"a"', 1), Validators('"a"', 2))
    assert not same_version(Validators('"a"', 1), Validators('"b"', 1))
    assert not same_version(Validators('W/"a"', 1), Validators('W/"a"', 1))
    assert not same_version(Validators(None, 1), Validators(None, 1))


def test_revalidation_asks_with_both_validators() -> None:
    assert revalidation_headers(Validators('"a"', 784111777)) == [
        ("If-None-Match", '"a"'),
        ("If-Modified-Since", "Sun, 06 Nov 1994 08:49:37 GMT"),
    ]
    assert revalidation_headers(Validators(None, None)) == []


@pytest.mark.parametrize(
    ("range_header", "range_query", "index"),
    [
        (None, None, 0),
        ("bytes=2048-", None, 2),
        ("bytes=1023-5000", None, 0),
        ("bytes=-100", None, 0),  # a suffix: the size is not known yet
        ("garbage", None, 0),
        (None, "3072-3100", 3),
        ("bytes=0-1", "bytes=5000-", 4),
        ("bytes=4096-,0-1", None, 4),
    ],
)
def test_the_first_slice_fetched_is_the_first_one_named(
    range_header: str | None, range_query: str | None, index: int
) -> None:
    assert first_slice_wanted(range_header, range_query, SLICE) == index


def test_slice_range_header_and_span() -> None:
    assert slice_range_header(0, SLICE) == "bytes=0-1023"
    assert slice_range_header(3, SLICE) == "bytes=3072-4095"
    assert slice_span(4, SLICE, 5000) == ByteRange(4096, 904)
    with pytest.raises(ValueError, match="outside"):
        slice_span(5, SLICE, 5000)
    assert slice_count(5000, SLICE) == 5
    assert slice_count(4096, SLICE) == 4


@given(
    size=st.integers(1, 50_000),
    data=st.data(),
    slice_size=st.sampled_from([64, 1000, 1024, 4096]),
)
def test_slice_pieces_cover_a_range_exactly_inside_its_slices(
    size: int, data: st.DataObject, slice_size: int
) -> None:
    start = data.draw(st.integers(0, size - 1))
    length = data.draw(st.integers(1, size - start))
    pieces = list(slice_pieces(ByteRange(start, length), slice_size))
    position = start
    for piece in pieces:
        span = slice_span(piece.index, slice_size, size)
        assert span.start + piece.offset == position
        assert piece.length > 0
        assert piece.offset + piece.length <= span.length
        position += piece.length
    assert position == start + length
    assert len({piece.index for piece in pieces}) == len(pieces)


@given(size=st.integers(1, 10**12), index=st.integers(0, 10**6), slice_size=st.integers(1, 10**8))
def test_an_exact_206_for_any_slice_is_stored_with_the_slice_length(
    size: int, index: int, slice_size: int
) -> None:
    start = index * slice_size
    assume(start < size)
    span = slice_span(index, slice_size, size)
    fields = [
        ("ETag", '"x"'),
        ("Content-Range", span.content_range(size)),
        ("Content-Length", str(span.length)),
    ]
    answer = read_slice_answer(206, fields, start=start, slice_size=slice_size, default_ttl_s=1)
    assert (answer.kind, answer.length, answer.size) == (SliceAnswerKind.SLICE, span.length, size)


@given(st.text(max_size=60))
def test_cache_control_parsing_never_raises(value: str) -> None:
    parsed = parse_cache_control(value)
    assert parsed.max_age is None or parsed.max_age >= 0
