"""The pure serveContent policy: statuses, header fields and bodies, then properties."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import combinations

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tests.support.multipart_reader import parse_byteranges, parse_content_range
from trio_range.http.conditional import ConditionalRequest, Validators, format_http_date
from trio_range.http.ranges import ByteRange, RangeLimits, RangeOutcome, parse_range_header
from trio_range.http.response_plan import Representation, ResponsePlan, plan_response

DATA = b"abcdefghijk"
T = 784111777
LAST_MODIFIED = format_http_date(T)
ETAG = '"v1"'
REP = Representation(len(DATA), "text/plain", Validators(ETAG, T))
GET = ConditionalRequest("GET")


def materialise(body: Iterable[bytes | ByteRange], data: bytes = DATA) -> bytes:
    return b"".join(s if isinstance(s, bytes) else data[s.start : s.stop] for s in body)


def plan(
    range_header: str | None = None,
    range_query: str | None = None,
    req: ConditionalRequest = GET,
    rep: Representation = REP,
) -> ResponsePlan:
    return plan_response(req, range_header, range_query, rep, boundary_factory=lambda: "BOUNDARY")


# --- statuses and bodies -----------------------------------------------------------------------


def test_no_range_is_200_with_the_whole_file_and_every_field() -> None:
    p = plan()
    assert p.status == 200
    assert p.headers == (
        ("Accept-Ranges", "bytes"),
        ("ETag", ETAG),
        ("Last-Modified", LAST_MODIFIED),
        ("Content-Type", "text/plain"),
        ("Content-Length", "11"),
    )
    assert p.body == (ByteRange(0, 11),)
    assert p.range_outcome is RangeOutcome.NONE
    assert not p.if_range_failed


@pytest.mark.parametrize(
    ("header", "content_range", "data"),
    [
        ("bytes=0-4", "bytes 0-4/11", b"abcde"),
        ("bytes=2-", "bytes 2-10/11", b"cdefghijk"),
        ("bytes=-5", "bytes 6-10/11", b"ghijk"),
        ("bytes=3-7", "bytes 3-7/11", b"defgh"),
        ("bytes=5-1000", "bytes 5-10/11", b"fghijk"),
        ("bytes=0-9", "bytes 0-9/11", b"abcdefghij"),
        ("bytes=0-10", "bytes 0-10/11", DATA),
        ("bytes=0-11", "bytes 0-10/11", DATA),
        ("bytes=10-11", "bytes 10-10/11", b"k"),
        ("bytes=10-", "bytes 10-10/11", b"k"),
        ("bytes=0-", "bytes 0-10/11", DATA),  # Chrome seeks only after a 206 to this
        ("bytes=0-1", "bytes 0-1/11", b"ab"),  # Safari's probe needs exactly two bytes
        ("bytes=0-1,2-3", "bytes 0-3/11", b"abcd"),  # coalesced to one range: never multipart
    ],
)
def test_one_range_is_a_plain_206(header: str, content_range: str, data: bytes) -> None:
    p = plan(header)
    assert p.status == 206
    assert p.header("Content-Range") == content_range
    assert p.header("Content-Type") == "text/plain"
    assert p.header("Accept-Ranges") == "bytes"
    assert p.header("Content-Length") == str(len(data))
    assert materialise(p.body) == data
    assert p.range_outcome is RangeOutcome.PARTIAL


@pytest.mark.parametrize(
    ("header", "parts"),
    [
        ("bytes=0-0,-2", [("bytes 0-0/11", b"a"), ("bytes 9-10/11", b"jk")]),
        ("bytes=0-1,5-8", [("bytes 0-1/11", b"ab"), ("bytes 5-8/11", b"fghi")]),
        ("bytes=0-1,5-", [("bytes 0-1/11", b"ab"), ("bytes 5-10/11", b"fghijk")]),
        # RFC 9110 §15.3.7.2: parts in the order the client asked for them.
        ("bytes=5-8,0-1", [("bytes 5-8/11", b"fghi"), ("bytes 0-1/11", b"ab")]),
        ("bytes=-2,0-0", [("bytes 9-10/11", b"jk"), ("bytes 0-0/11", b"a")]),
        ("bytes=8-9,0-1,2-3", [("bytes 8-9/11", b"ij"), ("bytes 0-3/11", b"abcd")]),
        ("bytes=4-6,0-1,5-9", [("bytes 4-9/11", b"efghij"), ("bytes 0-1/11", b"ab")]),
    ],
)
def test_several_ranges_are_a_multipart_206(header: str, parts: list[tuple[str, bytes]]) -> None:
    p = plan(header)
    assert p.status == 206
    assert p.header("Content-Type") == "multipart/byteranges; boundary=BOUNDARY"
    assert p.header("Content-Range") is None
    body = materialise(p.body)
    assert p.header("Content-Length") == str(len(body))
    assert parse_byteranges(body, "multipart/byteranges; boundary=BOUNDARY") == [
        ("text/plain", content_range, data) for content_range, data in parts
    ]


def test_boundary_comes_from_the_factory_and_defaults_to_random() -> None:
    first = plan_response(GET, "bytes=0-0,2-2", None, REP).header("Content-Type")
    second = plan_response(GET, "bytes=0-0,2-2", None, REP).header("Content-Type")
    assert first != second


@pytest.mark.parametrize(
    "header",
    ["bytes=11-", "bytes=11-12", "bytes=12-12", "bytes=11-100", "bytes=100-1000", "bytes=-0"],
)
def test_unsatisfiable_is_416_with_the_current_length(header: str) -> None:
    p = plan(header)
    assert p.status == 416
    assert p.header("Content-Range") == "bytes */11"
    assert p.header("Content-Length") == "0"
    assert p.header("Accept-Ranges") == "bytes"
    assert p.header("Content-Type") is None
    assert p.body == ()
    assert p.range_outcome is RangeOutcome.UNSATISFIABLE


def test_query_and_header_that_disagree_are_416() -> None:
    p = plan("bytes=0-1", "2-3")
    assert p.status == 416
    assert p.header("Content-Range") == "bytes */11"
    assert p.range_outcome is RangeOutcome.CONFLICT


def test_query_range_alone_and_agreeing_with_the_header() -> None:
    assert plan(None, "2-3").header("Content-Range") == "bytes 2-3/11"
    assert plan("bytes=2-3", "bytes=2-3").header("Content-Range") == "bytes 2-3/11"
    assert plan("bytes=2-3", "2-3").status == 206


@pytest.mark.parametrize(
    "header", ["bytes=0-,1-,2-,3-,4-", "bytes=--6", "bytes=-6-", "items=0-1", "bytes=5-1", "x"]
)
def test_ignored_range_is_200_with_the_whole_file(header: str) -> None:
    p = plan(header)
    assert p.status == 200
    assert p.header("Content-Range") is None
    assert materialise(p.body) == DATA
    assert p.range_outcome is RangeOutcome.IGNORED


def test_more_ranges_than_the_limit_is_200() -> None:
    limits = RangeLimits(max_ranges=1)
    p = plan_response(GET, "bytes=0-0,2-2", None, REP, limits, lambda: "B")
    assert p.status == 200
    assert p.range_outcome is RangeOutcome.IGNORED


def test_empty_file_is_200_with_an_empty_body_even_with_a_range() -> None:
    empty = Representation(0, "text/plain", Validators(ETAG, T))
    for header in (None, "bytes=0-", "bytes=-5", "bytes=5-"):
        p = plan(header, rep=empty)
        assert p.status == 200
        assert p.body == ()
        assert p.header("Content-Length") == "0"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
def test_range_on_a_method_other_than_get_or_head_is_ignored(method: str) -> None:
    p = plan("bytes=0-1", req=ConditionalRequest(method))
    assert p.status == 200
    assert p.range_outcome is RangeOutcome.IGNORED


@pytest.mark.parametrize(
    ("header", "query"), [(None, None), ("bytes=0-1", None), ("bytes=0-1,4-5", "0-1,4-5")]
)
def test_head_is_planned_exactly_like_get(header: str | None, query: str | None) -> None:
    assert plan(header, query, ConditionalRequest("HEAD")) == plan(header, query)


def test_fields_not_known_are_left_out() -> None:
    bare = Representation(11, "text/plain", Validators(None, None))
    p = plan(rep=bare)
    assert p.header("ETag") is None
    assert p.header("Last-Modified") is None
    assert p.header("Accept-Ranges") == "bytes"


# --- preconditions and If-Range ----------------------------------------------------------------


def test_not_modified_is_304_with_the_etag_and_no_length() -> None:
    p = plan("bytes=0-1", req=ConditionalRequest("GET", if_none_match=ETAG))
    assert p.status == 304
    # RFC 9110 §15.4.5: Last-Modified only helps when there is no ETag.
    assert p.headers == (("ETag", ETAG),)
    assert p.body == ()


def test_not_modified_without_etag_carries_last_modified() -> None:
    no_etag = Representation(11, "text/plain", Validators(None, T))
    p = plan(req=ConditionalRequest("HEAD", if_modified_since=LAST_MODIFIED), rep=no_etag)
    assert p.status == 304
    assert p.headers == (("Last-Modified", LAST_MODIFIED),)


@pytest.mark.parametrize(
    "req",
    [
        ConditionalRequest("GET", if_match='"other"'),
        ConditionalRequest("GET", if_unmodified_since=format_http_date(T - 1)),
        ConditionalRequest("PUT", if_none_match="*"),
    ],
)
def test_failed_precondition_is_412_with_an_empty_body(req: ConditionalRequest) -> None:
    p = plan("bytes=0-1", req=req)
    assert p.status == 412
    assert p.header("Content-Length") == "0"
    assert p.header("Accept-Ranges") == "bytes"
    assert p.header("ETag") == ETAG
    assert p.body == ()


def test_preconditions_come_before_range() -> None:
    # Werkzeug and Quart answer 206 here; RFC 9110 §13.2.2 evaluates Range last.
    assert plan("bytes=0-1", req=ConditionalRequest("GET", if_none_match=ETAG)).status == 304
    assert plan("bytes=0-1", req=ConditionalRequest("GET", if_match='"x"')).status == 412
    assert plan("bytes=100-", req=ConditionalRequest("GET", if_match='"x"')).status == 412


@pytest.mark.parametrize("if_range", [ETAG, LAST_MODIFIED])
def test_if_range_with_the_current_validator_serves_the_range(if_range: str) -> None:
    p = plan("bytes=0-1", req=ConditionalRequest("GET", if_range=if_range))
    assert p.status == 206
    assert not p.if_range_failed


@pytest.mark.parametrize("if_range", ['"stale"', 'W/"v1"', format_http_date(T + 1), "junk"])
def test_if_range_that_does_not_match_serves_the_whole_new_file(if_range: str) -> None:
    p = plan("bytes=0-1", req=ConditionalRequest("GET", if_range=if_range))
    assert p.status == 200
    assert p.if_range_failed
    assert p.range_outcome is RangeOutcome.IGNORED
    assert materialise(p.body) == DATA


def test_if_range_without_a_range_is_ignored() -> None:
    p = plan(req=ConditionalRequest("GET", if_range='"stale"'))
    assert p.status == 200
    assert not p.if_range_failed


def test_if_range_also_guards_the_query_range() -> None:
    p = plan(None, "0-1", ConditionalRequest("GET", if_range='"stale"'))
    assert p.status == 200
    assert p.if_range_failed


def test_unsatisfiable_range_with_a_stale_if_range_is_200_not_416() -> None:
    p = plan("bytes=100-", req=ConditionalRequest("GET", if_range='"stale"'))
    assert p.status == 200


# --- invariants --------------------------------------------------------------------------------


def test_plan_refuses_a_content_length_that_disagrees_with_the_body() -> None:
    with pytest.raises(ValueError, match="Content-Length"):
        ResponsePlan(200, (("Content-Length", "3"),), (b"ab",), RangeOutcome.NONE)


def test_representation_refuses_field_values_that_forge_header_lines() -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        Representation(1, "text/plain\r\nX-Evil: 1", Validators(None, None))
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        Representation(1, "text/plain", Validators('"a"\r\nX-Evil: 1', None))
    with pytest.raises(ValueError, match="negative size"):
        Representation(-1, "text/plain", Validators(None, None))


position = st.integers(min_value=0, max_value=65)
short = st.integers(min_value=0, max_value=12)
# Short ranges, so that several fit the byte budget and multipart answers get planned.
spec_text = st.one_of(
    st.tuples(position, short).map(lambda t: f"{t[0]}-{t[0] + t[1]}"),
    st.tuples(position, short).map(lambda t: f"{t[0]}-{t[0] + t[1]}"),
    position.map(lambda n: f"{n}-"),
    short.map(lambda n: f"-{n}"),
)
header_form = st.lists(spec_text, min_size=1, max_size=4).map(lambda s: "bytes=" + ",".join(s))
range_text = st.one_of(header_form, header_form, header_form, st.none(), st.text(max_size=30))
conditional_text = st.one_of(
    st.text(max_size=20),
    st.sampled_from([ETAG, 'W/"v1"', '"x"', "*", LAST_MODIFIED, format_http_date(T + 1)]),
)


@st.composite
def requests(draw: st.DrawFn) -> ConditionalRequest:
    """Mostly plain GETs, so that ranges get planned; sometimes any conditional fields."""
    method = draw(st.sampled_from(["GET"] * 6 + ["HEAD", "POST"]))
    kind = draw(st.sampled_from(["plain"] * 6 + ["if-range", "any"]))
    if kind == "plain":
        return ConditionalRequest(method)
    if kind == "if-range":
        return ConditionalRequest(method, if_range=draw(conditional_text))
    fields = [draw(st.none() | conditional_text) for _ in range(5)]
    return ConditionalRequest(method, *fields)


@settings(max_examples=200)
@given(
    requests(),
    range_text,
    st.sampled_from([None, None, None, "0-1", "bytes=0-1,5-", "garbage"]),
    st.binary(max_size=60) | st.binary(min_size=30, max_size=60),
    st.sampled_from([Validators(ETAG, T), Validators(None, None), Validators("junk", T)]),
)
def test_plan_never_raises_and_its_length_is_the_written_length(
    req: ConditionalRequest,
    range_header: str | None,
    range_query: str | None,
    data: bytes,
    validators: Validators,
) -> None:
    rep = Representation(len(data), "application/octet-stream", validators)
    p = plan_response(req, range_header, range_query, rep)
    body = materialise(p.body, data)
    event(f"{p.status} {p.range_outcome.value}")
    assert p.status in (200, 206, 304, 412, 416)
    if p.status == 304:
        assert p.header("Content-Length") is None
        assert body == b""
        return
    assert p.header("Content-Length") == str(len(body)) == str(p.content_length)
    assert p.header("Accept-Ranges") == "bytes"
    if p.status == 200:
        assert body == data
    elif p.status == 206 and p.header("Content-Range") is not None:
        first, last, size = parse_content_range(p.header("Content-Range") or "")
        assert size == len(data)
        assert body == data[first : last + 1]
    elif p.status == 206:
        parts = parse_byteranges(body, p.header("Content-Type") or "")
        assert len(parts) >= 2
        for _, content_range, part in parts:
            first, last, _ = parse_content_range(content_range)
            assert part == data[first : last + 1]
    else:
        assert body == b""


@st.composite
def files_and_ranges(draw: st.DrawFn) -> tuple[bytes, str]:
    """A file and a Range for it: mostly inside it, short, often several."""
    data = draw(st.binary(min_size=1, max_size=80) | st.binary(min_size=40, max_size=80))
    inside = st.integers(min_value=0, max_value=len(data) + 2)
    near_end = st.integers(min_value=max(0, len(data) - 8), max_value=len(data) + 2)
    spec = st.one_of(
        st.tuples(inside, short).map(lambda t: f"{t[0]}-{t[0] + t[1]}"),
        near_end.map(lambda n: f"{n}-"),
        short.map(lambda n: f"-{n}"),
    )
    count = draw(st.sampled_from([1, 2, 3, 5]))
    specs = draw(st.lists(spec, min_size=count, max_size=count))
    return data, "bytes=" + ",".join(specs)


@settings(max_examples=150)
@given(files_and_ranges())
def test_planned_ranges_serve_exactly_the_requested_bytes(case: tuple[bytes, str]) -> None:
    data, header = case
    rep = Representation(len(data), "application/octet-stream", Validators(ETAG, T))
    p = plan_response(GET, header, None, rep)
    body = materialise(p.body, data)
    event(f"{p.status} {p.range_outcome.value} {(p.header('Content-Type') or '')[:9]}")
    assert p.header("Content-Length") == str(len(body))
    if p.status == 206:
        served = (
            [parse_content_range(p.header("Content-Range") or "")]
            if p.header("Content-Range") is not None
            else [
                parse_content_range(content_range)
                for _, content_range, _ in parse_byteranges(body, p.header("Content-Type") or "")
            ]
        )
        # Every byte served was asked for, each once, the parts apart from each other ...
        for (first_a, last_a, _), (first_b, last_b, _) in combinations(served, 2):
            assert last_a + 1 < first_b or last_b + 1 < first_a
        # ... and in the order of the first spec each part answers (RFC 9110 §15.3.7.2).
        asked = [
            r for r in (s.resolve(len(data)) for s in parse_range_header(header)) if r is not None
        ]
        first_asks = [
            next(k for k, r in enumerate(asked) if first <= r.start and r.stop <= last + 1)
            for first, last, _ in served
        ]
        assert first_asks == sorted(first_asks)
        assert {i for r in asked for i in range(r.start, r.stop)} == {
            i for first, last, _ in served for i in range(first, last + 1)
        }
    else:
        assert p.status in (200, 416)
