"""Validators and conditional requests (RFC 9110 §8.8 and §13).

Pure: the server stats the file, builds :class:`Validators`, and asks
:func:`evaluate_preconditions` and :func:`if_range_allows_range` what to do. The order and the
rules follow RFC 9110 §13.2.2, which is also the order of Go's ``checkPreconditions``.
"""

from __future__ import annotations

import calendar
import enum
import functools
import re
import time
from dataclasses import dataclass

from trio_range.http.grammar import strip_ows

__all__ = [
    "ConditionalRequest",
    "EntityTag",
    "Precondition",
    "Validators",
    "evaluate_preconditions",
    "format_http_date",
    "if_range_allows_range",
    "make_etag",
    "parse_entity_tag",
    "parse_entity_tag_list",
    "parse_http_date",
]

# IMF-fixdate can only spell years 0001-9999 (4DIGIT); outside that a date is not sent.
_MIN_HTTP_DATE = calendar.timegm((1, 1, 1, 0, 0, 0))
_MAX_HTTP_DATE = calendar.timegm((9999, 12, 31, 23, 59, 59))

_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_LONG_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True, slots=True)
class EntityTag:
    """A parsed entity-tag: ``W/"x"`` is ``EntityTag("x", weak=True)``."""

    opaque: str
    weak: bool = False

    def strong_match(self, other: EntityTag) -> bool:
        # RFC 9110 §8.8.3.2: "Strong comparison: two entity tags are equivalent if both are not
        # weak and their opaque-tags match character-by-character."
        return not self.weak and not other.weak and self.opaque == other.opaque

    def weak_match(self, other: EntityTag) -> bool:
        # "Weak comparison: two entity tags are equivalent if their opaque-tags match
        # character-by-character, regardless of either or both being tagged as 'weak'."
        return self.opaque == other.opaque

    def __str__(self) -> str:
        return f'{"W/" if self.weak else ""}"{self.opaque}"'


# RFC 9110 §8.8.3: entity-tag = [ weak ] opaque-tag; weak = %s"W/" (case-sensitive);
# opaque-tag = DQUOTE *etagc DQUOTE; etagc = %x21 / %x23-7E / obs-text.
_ENTITY_TAG = re.compile(r'(W/)?"([\x21\x23-\x7e\x80-\xff]*)"')


def parse_entity_tag(text: str) -> EntityTag | None:
    """One entity-tag (OWS around it allowed), or None when the text is not one."""
    match = _ENTITY_TAG.fullmatch(strip_ows(text))
    if match is None:
        return None
    return EntityTag(match.group(2), weak=match.group(1) is not None)


def _split_list(value: str) -> list[str]:
    # Split on commas outside quotes: etagc includes ",", so '"a,b"' is one tag.
    items: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    # RFC 9110 §5.6.1.2: "a recipient MUST parse and ignore a reasonable number of empty list
    # elements".
    return [member for member in map(strip_ows, items) if member]


def parse_entity_tag_list(value: str) -> list[EntityTag | None]:
    """The members of ``#entity-tag``; a member that is not an entity-tag becomes None.

    Garbage is tolerated, as a tag that matches nothing, so one bad member does not make the
    whole field fail or succeed.
    """
    return [parse_entity_tag(item) for item in _split_list(value)]


def _is_wildcard(value: str) -> bool:
    # If-Match = "*" / #entity-tag: "*" is the whole field value, not a list member.
    return strip_ows(value) == "*"


@functools.lru_cache(maxsize=256)
def format_http_date(ts: int) -> str:
    """IMF-fixdate, the only form a sender may generate (RFC 9110 §5.6.7).

    ``ts`` must lie in years 1-9999, the years IMF-fixdate can spell. Remembered: a file's
    Last-Modified is formatted for every request of it (issue 13).
    """
    t = time.gmtime(ts)
    return (
        f"{_DAY_NAMES[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


_MONTH_RE = "|".join(_MONTHS)
# RFC 9110 §5.6.7. "HTTP-date is case sensitive."
_IMF_FIXDATE = re.compile(
    rf"(?:{'|'.join(_DAY_NAMES)}), ([0-9]{{2}}) ({_MONTH_RE}) ([0-9]{{4}}) "
    r"([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT"
)
_RFC850_DATE = re.compile(
    rf"(?:{'|'.join(_LONG_DAY_NAMES)}), ([0-9]{{2}})-({_MONTH_RE})-([0-9]{{2}}) "
    r"([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT"
)
_ASCTIME_DATE = re.compile(
    rf"(?:{'|'.join(_DAY_NAMES)}) ({_MONTH_RE}) ([0-9]{{2}}| [0-9]) "
    r"([0-9]{2}):([0-9]{2}):([0-9]{2}) ([0-9]{4})"
)


def _timestamp(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int | None:
    # second = 2DIGIT allows 60 for a leap second; timegm folds it into the next minute.
    if not (year >= 1 and 1 <= day <= calendar.monthrange(year, month)[1]):
        return None
    if hour > 23 or minute > 59 or second > 60:
        return None
    return calendar.timegm((year, month, day, hour, minute, second))


def parse_http_date(value: str, *, now: int | None = None) -> int | None:
    """Unix seconds of an HTTP-date in any of its three forms, or None when it is not one.

    RFC 9110 §5.6.7: "A recipient that parses a timestamp value in an HTTP field MUST accept all
    three HTTP-date formats." ``now`` (default: the clock) only matters for the two-digit year
    of the obsolete RFC 850 form.
    """
    text = strip_ows(value)
    if match := _IMF_FIXDATE.fullmatch(text):
        day, month, year, hour, minute, second = match.groups()
        return _timestamp(
            int(year), _MONTHS.index(month) + 1, int(day), int(hour), int(minute), int(second)
        )
    if match := _RFC850_DATE.fullmatch(text):
        day, month, yy, hour, minute, second = match.groups()
        # "Recipients of a timestamp value in rfc850-date format, which uses a two-digit year,
        # MUST interpret a timestamp that appears to be more than 50 years in the future as
        # representing the most recent year in the past that had the same last two digits."
        current_year = time.gmtime(time.time() if now is None else now).tm_year
        year = current_year - current_year % 100 + int(yy)
        if year > current_year + 50:
            year -= 100
        return _timestamp(
            year, _MONTHS.index(month) + 1, int(day), int(hour), int(minute), int(second)
        )
    if match := _ASCTIME_DATE.fullmatch(text):
        month, day, hour, minute, second, year = match.groups()
        return _timestamp(
            int(year), _MONTHS.index(month) + 1, int(day), int(hour), int(minute), int(second)
        )
    return None


def make_etag(size: int, mtime_ns: int, inode: int) -> str:
    """A strong ETag for a file, in wire form.

    Strong is justified as long as a file's bytes cannot change without changing one of these
    numbers (RFC 9110 §8.8.3: a strong validator changes whenever the representation data
    does); nanosecond mtimes make a same-size rewrite inside one tick unlikely.
    """
    return f'"{inode:x}-{mtime_ns:x}-{size:x}"'


@dataclass(frozen=True, slots=True)
class Validators:
    """The current validators of the selected representation.

    ``etag`` is the wire form (``'"abc"'`` or ``'W/"abc"'``); a malformed one is kept but never
    matches. ``last_modified`` is integral Unix seconds (HTTP-dates have one-second resolution,
    so comparisons are exact only in whole seconds).
    """

    etag: str | None
    last_modified: int | None

    @classmethod
    def for_file(cls, size: int, mtime_ns: int, inode: int) -> Validators:
        """Validators from a stat result; a mtime an HTTP-date cannot spell is left out."""
        seconds = mtime_ns // 1_000_000_000
        in_range = _MIN_HTTP_DATE <= seconds <= _MAX_HTTP_DATE
        return cls(make_etag(size, mtime_ns, inode), seconds if in_range else None)

    @property
    def entity_tag(self) -> EntityTag | None:
        return None if self.etag is None else parse_entity_tag(self.etag)

    def last_modified_http_date(self) -> str | None:
        """The Last-Modified field value, or None when unknown or outside years 1-9999."""
        if self.last_modified is None:
            return None
        if not _MIN_HTTP_DATE <= self.last_modified <= _MAX_HTTP_DATE:
            return None
        return format_http_date(self.last_modified)


@dataclass(frozen=True, slots=True)
class ConditionalRequest:
    """The method and the conditional header fields of a request, None when absent.

    ``method`` is compared case-sensitively (RFC 9110 §9.1: "The method token is
    case-sensitive").
    """

    method: str
    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    if_unmodified_since: str | None = None
    if_range: str | None = None

    @property
    def is_get_or_head(self) -> bool:
        return self.method in ("GET", "HEAD")


class Precondition(enum.Enum):
    PROCEED = "proceed"
    NOT_MODIFIED = "not_modified"  # 304
    FAILED = "failed"  # 412


def _any_matches(value: str, current: EntityTag | None, *, strong: bool) -> bool:
    if current is None:
        return False
    for tag in parse_entity_tag_list(value):
        if tag is None:
            continue
        if tag.strong_match(current) if strong else tag.weak_match(current):
            return True
    return False


def evaluate_preconditions(req: ConditionalRequest, v: Validators) -> Precondition:
    """RFC 9110 §13.2.2, steps 1 to 4, for a representation that exists.

    Step 5 (If-Range) is :func:`if_range_allows_range`, evaluated only once this proceeds.
    """
    if req.if_match is None and req.if_none_match is None:
        if req.if_unmodified_since is None and req.if_modified_since is None:
            return Precondition.PROCEED  # no precondition: most requests (issue 13)
        current = None  # only the entity-tag steps (1, 3) read it
    else:
        current = v.entity_tag
    # Step 1: "When recipient is the origin server and If-Match is present, evaluate the
    # If-Match precondition: if true, continue to step 3; if false, respond 412".
    if req.if_match is not None:
        # §13.1.1: "If the field value is "*", the condition is true if the origin server has a
        # current representation for the target resource." It uses strong comparison.
        if not (_is_wildcard(req.if_match) or _any_matches(req.if_match, current, strong=True)):
            return Precondition.FAILED
    # Step 2: "When recipient is the origin server, If-Match is not present, and
    # If-Unmodified-Since is present, evaluate": §13.1.4 "A recipient MUST ignore the
    # If-Unmodified-Since header field if the received field value is not a valid HTTP-date".
    elif req.if_unmodified_since is not None and v.last_modified is not None:
        date = parse_http_date(req.if_unmodified_since)
        # "The origin server MUST NOT perform the requested method if the selected
        # representation's last modification date is more recent than the date provided".
        if date is not None and v.last_modified > date:
            return Precondition.FAILED
    # Step 3: "When If-None-Match is present, evaluate": false -> 304 for GET/HEAD, else 412.
    if req.if_none_match is not None:
        # §13.1.2: "If the field value is "*", the condition is false if the origin server has a
        # current representation"; otherwise false when a member matches by weak comparison.
        if _is_wildcard(req.if_none_match) or _any_matches(
            req.if_none_match, current, strong=False
        ):
            return Precondition.NOT_MODIFIED if req.is_get_or_head else Precondition.FAILED
    # Step 4: "When the method is GET or HEAD, If-None-Match is not present, and
    # If-Modified-Since is present, evaluate": false -> 304.
    elif req.is_get_or_head and req.if_modified_since is not None and v.last_modified is not None:
        date = parse_http_date(req.if_modified_since)
        # §13.1.3: "If the selected representation's last modification date is earlier or
        # equal to the date provided in the field value, the condition is false."
        if date is not None and v.last_modified <= date:
            return Precondition.NOT_MODIFIED
    return Precondition.PROCEED


def if_range_allows_range(if_range: str | None, v: Validators) -> bool:
    """Whether the Range may be honoured given If-Range (RFC 9110 §13.1.5); True when absent.

    False means: ignore the Range and send the whole representation with 200, so a client
    resuming a download of a file that changed gets the new file, not a splice of both.
    """
    if if_range is None:
        return True
    text = strip_ows(if_range)
    if text.startswith(('"', 'W/"')):
        tag = parse_entity_tag(text)
        current = v.entity_tag
        # "If the entity-tag validator provided exactly matches the ETag field value for the
        # selected representation using the strong comparison function, the condition is
        # true." A weak tag never matches strongly.
        return tag is not None and current is not None and tag.strong_match(current)
    date = parse_http_date(text)
    # "If the HTTP-date validator provided exactly matches the Last-Modified field value for
    # the selected representation, the condition is true."
    return date is not None and v.last_modified is not None and date == v.last_modified
