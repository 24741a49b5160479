"""The shared RFC 9110 grammar pieces: tables over every Latin-1 character, then properties."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_range.http.grammar import (
    DIGITS,
    FORBIDDEN_IN_FIELD_VALUE,
    MAX_DIGITS,
    OWS,
    TCHAR,
    TOKEN,
    has_forbidden_field_chars,
    is_token,
    parse_digits,
    split_list,
    strip_ows,
)

# RFC 9110 §5.6.2, spelled out independently of the module.
TCHAR_BY_HAND = set("!#$%&'*+-.^_`|~") | set(string.digits) | set(string.ascii_letters)
LATIN_1 = [chr(code) for code in range(256)]


def test_tchar_is_exactly_the_rfc_set() -> None:
    assert set(TCHAR) == TCHAR_BY_HAND
    assert len(TCHAR) == 15 + 10 + 52


@pytest.mark.parametrize("char", LATIN_1, ids=lambda c: f"U+{ord(c):04X}")
def test_token_regex_and_tchar_set_agree_on_every_latin_1_character(char: str) -> None:
    assert is_token(char) is (char in TCHAR_BY_HAND)
    assert (TOKEN.fullmatch(char) is not None) is (char in TCHAR_BY_HAND)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bytes", True),
        ("BYTES", True),
        ("x-custom_1.2~", True),
        ("!#$%&'*+-.^_`|~", True),
        ("", False),
        (" bytes", False),
        ("bytes ", False),
        ("by tes", False),
        ("bytes\t", False),
        ("bytes\n", False),  # re's "$" would allow a trailing newline; fullmatch does not
        ('"quoted"', False),
        ("a,b", False),
        ("a=b", False),
        ("a/b", False),
        ("a;b", False),
        ("caf\u00e9", False),  # a Latin-1 letter is not ALPHA
        ("\u0661\u0662", False),  # nor are non-ASCII digits DIGIT
        ("\uff41", False),  # fullwidth "a"
        ("a\x00", False),
        ("a\x7f", False),
    ],
)
def test_is_token(text: str, expected: bool) -> None:
    assert is_token(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  a  ", "a"),
        ("\ta\t", "a"),
        (" \t a b \t ", "a b"),
        ("", ""),
        (" \t", ""),
        # Only SP and HTAB are OWS: other whitespace is content (or an error) for the caller.
        ("\na\r", "\na\r"),
        ("\x0ba\x0c", "\x0ba\x0c"),
        ("\u00a0a\u00a0", "\u00a0a\u00a0"),
        ("\u3000a", "\u3000a"),
    ],
)
def test_strip_ows_strips_only_sp_and_htab(text: str, expected: str) -> None:
    assert strip_ows(text) == expected
    assert OWS == " \t"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("video/mp4", False),
        ("caf\u00e9 \t \x7f \xff", False),  # obs-text, HTAB and DEL are not forbidden here
        ("", False),
        ("a\rb", True),
        ("a\nb", True),
        ("a\x00b", True),
        ("\r\n", True),
        ("text/plain\r\nSet-Cookie: x=1", True),
    ],
)
def test_has_forbidden_field_chars(value: str, expected: bool) -> None:
    assert has_forbidden_field_chars(value) is expected


@pytest.mark.parametrize("char", LATIN_1, ids=lambda c: f"U+{ord(c):04X}")
def test_only_nul_cr_and_lf_are_forbidden_in_field_values(char: str) -> None:
    assert has_forbidden_field_chars(char) is (char in "\x00\r\n")
    assert (FORBIDDEN_IN_FIELD_VALUE.search(f"a{char}b") is not None) is (char in "\x00\r\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("007", 7),
        ("1234567890", 1234567890),
        ("9" * MAX_DIGITS, int("9" * MAX_DIGITS)),
        ("0" * 5000 + "5", 5),  # leading zeros are not significant
        ("9" * (MAX_DIGITS + 1), None),  # past the limit: garbage, never int()'s ValueError
        ("", None),
        ("+5", None),
        ("-5", None),
        (" 5", None),
        ("5 ", None),
        ("1_000", None),
        ("0x10", None),
        ("1.5", None),
        ("\u00b2", None),  # superscript two: str.isdigit() says yes
        ("\u0661\u0662", None),  # Arabic-Indic digits: int() says 12
        ("\uff11", None),  # fullwidth one
        ("5\n", None),
    ],
)
def test_parse_digits_takes_ascii_digits_only(text: str, expected: int | None) -> None:
    assert parse_digits(text) == expected


@given(st.integers(min_value=0, max_value=10**50), st.integers(min_value=0, max_value=5))
def test_parse_digits_reads_back_what_str_writes(value: int, zeros: int) -> None:
    assert parse_digits("0" * zeros + str(value)) == value


@given(st.text(max_size=20))
def test_parse_digits_returns_an_int_or_none_for_any_text(text: str) -> None:
    value = parse_digits(text)
    assert value is None or (value >= 0 and DIGITS.fullmatch(text))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a", ["a"]),
        ("a,b", ["a", "b"]),
        ("a , b", ["a", "b"]),
        ("a,\tb", ["a", "b"]),
        (" a ,b ", ["a", "b"]),
        # RFC 9110 §5.6.1.2: empty elements are parsed and ignored.
        (",a,,b,", ["a", "b"]),
        (", ,\t,", []),
        ("", []),
        ("a b, c", ["a b", "c"]),
        ("a\n,b", ["a\n", "b"]),
    ],
)
def test_split_list(value: str, expected: list[str]) -> None:
    assert split_list(value) == expected


@given(st.text(max_size=40))
def test_split_list_members_are_non_empty_trimmed_and_comma_free(value: str) -> None:
    members = split_list(value)
    for member in members:
        assert member
        assert member == strip_ows(member)
        assert "," not in member
    assert split_list(" , ".join(members)) == members


@given(st.text(alphabet=st.sampled_from(sorted(TCHAR)), min_size=1, max_size=20))
def test_any_string_of_tchars_is_a_token(text: str) -> None:
    assert is_token(text)


@given(st.text(max_size=20), st.sampled_from([c for c in LATIN_1 if c not in TCHAR]), st.text())
def test_one_non_tchar_anywhere_makes_it_no_token(before: str, bad: str, after: str) -> None:
    assert not is_token(before + bad + after)
