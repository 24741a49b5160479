"""The pieces of the RFC 9110 grammar that the protocol modules share, each written once.

Pure: no I/O. Each definition quotes the ABNF it implements. Only US-ASCII characters are
tchars: a str holding a non-ASCII letter or digit is not a token, whatever ``str.isalnum`` says.
"""

from __future__ import annotations

import re

__all__ = [
    "DIGITS",
    "FORBIDDEN_IN_FIELD_VALUE",
    "MAX_DIGITS",
    "OWS",
    "TCHAR",
    "TOKEN",
    "has_forbidden_field_chars",
    "is_token",
    "parse_digits",
    "split_list",
    "strip_ows",
]

# RFC 9110 §5.6.3: OWS = *( SP / HTAB )
OWS = " \t"

# RFC 9110 §5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
#                          "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
# RFC 5234 appendix B.1: DIGIT = %x30-39; ALPHA = %x41-5A / %x61-7A (ASCII only).
TCHAR: frozenset[str] = frozenset(
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

# RFC 9110 §5.6.2: token = 1*tchar. Built from TCHAR so the two cannot disagree.
TOKEN: re.Pattern[str] = re.compile(f"[{re.escape(''.join(sorted(TCHAR)))}]+")

# RFC 5234 appendix B.1: DIGIT = %x30-39. Only ASCII digits: str.isdigit() also takes "²" and
# Arabic-Indic digits, and int() also takes "+5", " 5" and "1_000"; none of them is 1*DIGIT.
DIGITS: re.Pattern[str] = re.compile(r"[0-9]+")

# Python refuses int() on more than 4300 digits (CVE-2020-10735, a ValueError); no size or
# position is anywhere near 10**1000 bytes, so a longer number is treated as garbage.
MAX_DIGITS = 1000

# RFC 9110 §5.5: field-value = *field-content;
# field-content = field-vchar [ 1*( SP / HTAB / field-vchar ) field-vchar ];
# field-vchar = VCHAR / obs-text. "Field values containing CR, LF, or NUL characters are invalid
# and dangerous": written into a header they would end the line and forge the next one.
FORBIDDEN_IN_FIELD_VALUE: re.Pattern[str] = re.compile(r"[\x00\r\n]")


def is_token(text: str) -> bool:
    """Whether ``text`` is a token: one or more tchars, nothing else."""
    return TOKEN.fullmatch(text) is not None


def parse_digits(text: str) -> int | None:
    """The value of ``1*DIGIT``, or None for anything else or a number over MAX_DIGITS digits.

    Leading zeros do not count towards the limit: ``bytes=0000…05-`` is still position 5.
    """
    if DIGITS.fullmatch(text) is None:
        return None
    significant = text.lstrip("0")
    if len(significant) > MAX_DIGITS:
        return None
    return int(significant or "0")


def strip_ows(text: str) -> str:
    """``text`` without the optional whitespace (SP, HTAB) around it; other whitespace stays."""
    return text.strip(OWS)


def has_forbidden_field_chars(value: str) -> bool:
    """Whether ``value`` holds CR, LF or NUL, which no field value may carry."""
    return FORBIDDEN_IN_FIELD_VALUE.search(value) is not None


def split_list(value: str) -> list[str]:
    """The non-empty members of a comma-separated list, OWS trimmed (RFC 9110 §5.6.1).

    ``#element => [ element ] *( OWS "," OWS [ element ] )``, and §5.6.1.2: "a recipient MUST
    parse and ignore a reasonable number of empty list elements". Commas inside quoted strings
    are not special-cased: for lists whose members cannot hold a comma.
    """
    return [member for member in (strip_ows(part) for part in value.split(",")) if member]
