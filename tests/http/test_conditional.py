"""Validators and conditional requests (RFC 9110 §8.8, §13): tables, then properties."""

from __future__ import annotations

import calendar
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_range.http.conditional import (
    ConditionalRequest,
    EntityTag,
    Precondition,
    Validators,
    evaluate_preconditions,
    format_http_date,
    if_range_allows_range,
    make_etag,
    parse_entity_tag,
    parse_entity_tag_list,
    parse_http_date,
)

# RFC 9110 §5.6.7's example instant, in its three spellings.
T = 784111777
IMF = "Sun, 06 Nov 1994 08:49:37 GMT"
RFC850 = "Sunday, 06-Nov-94 08:49:37 GMT"
ASCTIME = "Sun Nov  6 08:49:37 1994"
EARLIER = format_http_date(T - 1)
LATER = format_http_date(T + 1)
NOW_2024 = calendar.timegm((2024, 6, 1, 0, 0, 0))

CURRENT = Validators('"abc"', T)
WEAK_CURRENT = Validators('W/"abc"', T)
NO_VALIDATORS = Validators(None, None)


# --- entity tags -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "strong", "weak"),
    [
        # RFC 9110 §8.8.3.2, the comparison table.
        ('W/"1"', 'W/"1"', False, True),
        ('W/"1"', 'W/"2"', False, False),
        ('W/"1"', '"1"', False, True),
        ('"1"', '"1"', True, True),
        ('"1"', '"2"', False, False),
    ],
)
def test_rfc_9110_comparison_table(a: str, b: str, strong: bool, weak: bool) -> None:
    tag_a, tag_b = parse_entity_tag(a), parse_entity_tag(b)
    assert tag_a is not None
    assert tag_b is not None
    assert tag_a.strong_match(tag_b) is strong
    assert tag_b.strong_match(tag_a) is strong
    assert tag_a.weak_match(tag_b) is weak
    assert tag_b.weak_match(tag_a) is weak


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"abc"', EntityTag("abc")),
        ('W/"abc"', EntityTag("abc", weak=True)),
        ('""', EntityTag("")),
        ('"a,b"', EntityTag("a,b")),
        (' "abc"\t', EntityTag("abc")),
        ('"\xe9"', EntityTag("\xe9")),
        ('w/"abc"', None),  # weak = %s"W/": case-sensitive
        ("abc", None),
        ('"abc', None),
        ('"a"b', None),
        ('"a b"', None),  # SP is not an etagc
        ('"a"b"', None),
        ('W/ "abc"', None),
        ("*", None),
        ("", None),
    ],
)
def test_parse_entity_tag(text: str, expected: EntityTag | None) -> None:
    assert parse_entity_tag(text) == expected


def test_entity_tag_str_is_the_wire_form() -> None:
    assert str(EntityTag("abc")) == '"abc"'
    assert str(EntityTag("abc", weak=True)) == 'W/"abc"'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"a", "b"', [EntityTag("a"), EntityTag("b")]),
        ('"a,b", W/"c"', [EntityTag("a,b"), EntityTag("c", weak=True)]),
        (' , "a" ,, ', [EntityTag("a")]),
        ('garbage, "a"', [None, EntityTag("a")]),
        ('foo "x,y", "a"', [None, EntityTag("a")]),
        ('"unterminated, "a"', [None]),
        ("", []),
    ],
)
def test_parse_entity_tag_list(value: str, expected: list[EntityTag | None]) -> None:
    assert parse_entity_tag_list(value) == expected


def test_make_etag_is_strong_deterministic_and_changes_with_each_input() -> None:
    etag = make_etag(11, 1_700_000_000_123_456_789, 42)
    tag = parse_entity_tag(etag)
    assert tag is not None
    assert not tag.weak
    assert make_etag(11, 1_700_000_000_123_456_789, 42) == etag
    assert make_etag(12, 1_700_000_000_123_456_789, 42) != etag
    assert make_etag(11, 1_700_000_000_123_456_790, 42) != etag
    assert make_etag(11, 1_700_000_000_123_456_789, 43) != etag


def test_make_etag_accepts_a_negative_mtime() -> None:
    assert parse_entity_tag(make_etag(0, -5, 1)) is not None


# --- HTTP dates --------------------------------------------------------------------------------


def test_format_http_date_is_imf_fixdate() -> None:
    assert format_http_date(T) == IMF
    assert format_http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"


@pytest.mark.parametrize("value", [IMF, RFC850, ASCTIME, f" {IMF} "])
def test_parse_http_date_accepts_all_three_formats(value: str) -> None:
    assert parse_http_date(value, now=NOW_2024) == T


def test_asctime_with_two_digit_day() -> None:
    assert parse_http_date("Wed Nov 16 08:49:37 1994") == T + 10 * 86400


@pytest.mark.parametrize(
    ("yy", "year"),
    [("94", 1994), ("24", 2024), ("74", 2074), ("75", 1975), ("00", 2000), ("99", 1999)],
)
def test_rfc850_two_digit_year_is_at_most_50_years_ahead(yy: str, year: int) -> None:
    value = f"Saturday, 01-Jan-{yy} 00:00:00 GMT"
    assert parse_http_date(value, now=NOW_2024) == calendar.timegm((year, 1, 1, 0, 0, 0))


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        "sun, 06 Nov 1994 08:49:37 GMT",  # "HTTP-date is case sensitive"
        "Sun, 06 nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 gmt",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 0000 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT",
        "Sun,  06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37",
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994",
        "Sun Nov  6 08:49:37 1994 GMT",
        "784111777",
    ],
)
def test_parse_http_date_rejects(value: str) -> None:
    assert parse_http_date(value, now=NOW_2024) is None


@settings(max_examples=150)
@given(st.integers(min_value=calendar.timegm((1, 1, 1, 0, 0, 0)), max_value=253402300799))
def test_formatted_dates_parse_back(ts: int) -> None:
    assert parse_http_date(format_http_date(ts)) == ts


@settings(max_examples=150)
@given(st.text(max_size=40))
def test_parse_http_date_never_raises(text: str) -> None:
    parse_http_date(text)


# --- Validators --------------------------------------------------------------------------------


def test_validators_for_file_floor_the_mtime_to_seconds() -> None:
    v = Validators.for_file(11, 1_700_000_000_999_999_999, 42)
    assert v.last_modified == 1_700_000_000
    assert v.etag == make_etag(11, 1_700_000_000_999_999_999, 42)
    assert Validators.for_file(11, -1, 42).last_modified == -1


def test_validators_for_file_leave_out_a_date_no_http_date_can_spell() -> None:
    assert Validators.for_file(11, 10**30, 42).last_modified is None


def test_last_modified_http_date() -> None:
    assert CURRENT.last_modified_http_date() == IMF
    assert NO_VALIDATORS.last_modified_http_date() is None
    assert Validators(None, 10**15).last_modified_http_date() is None


def test_malformed_current_etag_never_matches() -> None:
    broken = Validators("abc", T)
    assert broken.entity_tag is None
    req = ConditionalRequest("GET", if_none_match='"abc"')
    assert evaluate_preconditions(req, broken) is Precondition.PROCEED


# --- evaluate_preconditions --------------------------------------------------------------------

PRECONDITION_CASES: list[tuple[str, dict[str, Any], Validators, Precondition]] = [
    ("no conditional fields", {}, CURRENT, Precondition.PROCEED),
    # If-Match: strong comparison, "*" when the representation exists
    ("if-match current", {"if_match": '"abc"'}, CURRENT, Precondition.PROCEED),
    ("if-match stale", {"if_match": '"xyz"'}, CURRENT, Precondition.FAILED),
    ("if-match weak tag is not strong", {"if_match": 'W/"abc"'}, CURRENT, Precondition.FAILED),
    ("if-match weak current", {"if_match": '"abc"'}, WEAK_CURRENT, Precondition.FAILED),
    ("if-match star", {"if_match": "*"}, CURRENT, Precondition.PROCEED),
    ("if-match star without etag", {"if_match": "*"}, NO_VALIDATORS, Precondition.PROCEED),
    ("if-match list", {"if_match": '"x", "abc"'}, CURRENT, Precondition.PROCEED),
    ("if-match garbage", {"if_match": "abc"}, CURRENT, Precondition.FAILED),
    ("if-match garbage then tag", {"if_match": 'junk, "abc"'}, CURRENT, Precondition.PROCEED),
    ("if-match without etag", {"if_match": '"abc"'}, NO_VALIDATORS, Precondition.FAILED),
    ("if-match star in a list", {"if_match": '"x", *'}, CURRENT, Precondition.FAILED),
    # If-Unmodified-Since
    ("ius equal", {"if_unmodified_since": IMF}, CURRENT, Precondition.PROCEED),
    ("ius later", {"if_unmodified_since": LATER}, CURRENT, Precondition.PROCEED),
    ("ius earlier", {"if_unmodified_since": EARLIER}, CURRENT, Precondition.FAILED),
    ("ius invalid date", {"if_unmodified_since": "yesterday"}, CURRENT, Precondition.PROCEED),
    ("ius no date known", {"if_unmodified_since": EARLIER}, NO_VALIDATORS, Precondition.PROCEED),
    (
        "ius ignored when if-match present",
        {"if_match": '"abc"', "if_unmodified_since": EARLIER},
        CURRENT,
        Precondition.PROCEED,
    ),
    # If-None-Match: weak comparison
    ("inm current", {"if_none_match": '"abc"'}, CURRENT, Precondition.NOT_MODIFIED),
    ("inm weak tag", {"if_none_match": 'W/"abc"'}, CURRENT, Precondition.NOT_MODIFIED),
    ("inm weak current", {"if_none_match": '"abc"'}, WEAK_CURRENT, Precondition.NOT_MODIFIED),
    ("inm stale", {"if_none_match": '"xyz"'}, CURRENT, Precondition.PROCEED),
    ("inm list", {"if_none_match": '"x", W/"abc"'}, CURRENT, Precondition.NOT_MODIFIED),
    ("inm star", {"if_none_match": "*"}, CURRENT, Precondition.NOT_MODIFIED),
    ("inm garbage", {"if_none_match": "abc"}, CURRENT, Precondition.PROCEED),
    ("inm without etag", {"if_none_match": '"abc"'}, NO_VALIDATORS, Precondition.PROCEED),
    # If-Modified-Since
    ("ims equal", {"if_modified_since": IMF}, CURRENT, Precondition.NOT_MODIFIED),
    ("ims later", {"if_modified_since": LATER}, CURRENT, Precondition.NOT_MODIFIED),
    ("ims earlier", {"if_modified_since": EARLIER}, CURRENT, Precondition.PROCEED),
    ("ims rfc850", {"if_modified_since": RFC850}, CURRENT, Precondition.NOT_MODIFIED),
    ("ims invalid date", {"if_modified_since": "yesterday"}, CURRENT, Precondition.PROCEED),
    ("ims no date known", {"if_modified_since": LATER}, NO_VALIDATORS, Precondition.PROCEED),
    (
        "ims ignored when inm present",
        {"if_none_match": '"xyz"', "if_modified_since": LATER},
        CURRENT,
        Precondition.PROCEED,
    ),
    # Order of evaluation: 412 before 304
    (
        "if-match fails before inm",
        {"if_match": '"xyz"', "if_none_match": '"abc"'},
        CURRENT,
        Precondition.FAILED,
    ),
    (
        "ius fails before ims",
        {"if_unmodified_since": EARLIER, "if_modified_since": LATER},
        CURRENT,
        Precondition.FAILED,
    ),
    (
        "if-match passes then inm",
        {"if_match": '"abc"', "if_none_match": '"abc"'},
        CURRENT,
        Precondition.NOT_MODIFIED,
    ),
]


@pytest.mark.parametrize(
    ("fields", "validators", "expected"),
    [case[1:] for case in PRECONDITION_CASES],
    ids=[case[0] for case in PRECONDITION_CASES],
)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_preconditions_for_get_and_head(
    method: str, fields: dict[str, Any], validators: Validators, expected: Precondition
) -> None:
    req = ConditionalRequest(method, **fields)
    assert evaluate_preconditions(req, validators) is expected


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "get"])
@pytest.mark.parametrize("if_none_match", ['"abc"', "*", 'W/"abc"'])
def test_if_none_match_fails_with_412_for_other_methods(method: str, if_none_match: str) -> None:
    req = ConditionalRequest(method, if_none_match=if_none_match)
    assert evaluate_preconditions(req, CURRENT) is Precondition.FAILED


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_if_modified_since_is_ignored_for_other_methods(method: str) -> None:
    req = ConditionalRequest(method, if_modified_since=LATER)
    assert evaluate_preconditions(req, CURRENT) is Precondition.PROCEED


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_if_match_and_if_unmodified_since_apply_to_every_method(method: str) -> None:
    assert (
        evaluate_preconditions(ConditionalRequest(method, if_match='"xyz"'), CURRENT)
        is Precondition.FAILED
    )
    assert (
        evaluate_preconditions(ConditionalRequest(method, if_unmodified_since=EARLIER), CURRENT)
        is Precondition.FAILED
    )


# --- If-Range ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("if_range", "validators", "allows"),
    [
        (None, CURRENT, True),
        (None, NO_VALIDATORS, True),
        ('"abc"', CURRENT, True),
        (' "abc" ', CURRENT, True),
        ('"xyz"', CURRENT, False),  # stale strong tag: the file changed
        ('W/"abc"', CURRENT, False),  # a weak tag never matches strongly
        ('W/"abc"', WEAK_CURRENT, False),
        ('"abc"', WEAK_CURRENT, False),
        ('"abc"', NO_VALIDATORS, False),
        (IMF, CURRENT, True),  # exactly Last-Modified
        (RFC850, CURRENT, True),
        (EARLIER, CURRENT, False),
        (LATER, CURRENT, False),  # not "modified since": exact match only
        (IMF, NO_VALIDATORS, False),
        ("garbage", CURRENT, False),
        ("", CURRENT, False),
        ('"abc", "xyz"', CURRENT, False),
        ("*", CURRENT, False),
    ],
)
def test_if_range(if_range: str | None, validators: Validators, allows: bool) -> None:
    assert if_range_allows_range(if_range, validators) is allows


# --- properties --------------------------------------------------------------------------------

header_text = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.sampled_from(['"abc"', 'W/"abc"', "*", IMF, EARLIER, LATER, '"a", "abc"', "W/", '"']),
)


@settings(max_examples=150)
@given(
    st.sampled_from(["GET", "HEAD", "POST", "PUT"]),
    header_text,
    header_text,
    header_text,
    header_text,
    header_text,
    st.sampled_from([CURRENT, WEAK_CURRENT, NO_VALIDATORS, Validators("junk", 10**15)]),
)
def test_conditional_evaluation_never_raises(
    method: str,
    if_match: str | None,
    if_none_match: str | None,
    ims: str | None,
    ius: str | None,
    if_range: str | None,
    validators: Validators,
) -> None:
    req = ConditionalRequest(method, if_match, if_none_match, ims, ius, if_range)
    result = evaluate_preconditions(req, validators)
    if result is Precondition.NOT_MODIFIED:
        assert method in ("GET", "HEAD")
    if_range_allows_range(if_range, validators)


@settings(max_examples=100)
@given(st.text(max_size=30))
def test_entity_tag_list_parsing_never_raises(text: str) -> None:
    parse_entity_tag_list(text)
