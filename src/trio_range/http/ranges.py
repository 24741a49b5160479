"""Byte ranges: parsing, resolution, coalescing and the range policy (RFC 9110 §14).

Pure: no I/O. One convention for a range, ``ByteRange(start, length)``; the inclusive ``a-b``
form exists only as wire text, produced by :meth:`ByteRange.content_range` and read by the
parsers below. Go's ``net/http/fs.go`` (``parseRange`` + ``sumRangesSize``) is the model for
the policy, except that an invalid Range is ignored (200) rather than answered with 416.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from trio_range.errors import RangeParseError
from trio_range.http.grammar import MAX_DIGITS, is_token, parse_digits, split_list, strip_ows

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_DIGITS",
    "ByteRange",
    "RangeDecision",
    "RangeLimits",
    "RangeOutcome",
    "RangeSpec",
    "coalesce",
    "decide_ranges",
    "format_range_header",
    "parse_query_range",
    "parse_range_header",
    "resolve_ranges",
    "unsatisfied_content_range",
]


@dataclass(frozen=True, slots=True)
class ByteRange:
    """A satisfiable range of a representation: ``length`` bytes from offset ``start``."""

    start: int
    length: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.length < 1:
            raise ValueError(f"invalid ByteRange(start={self.start}, length={self.length})")

    @property
    def stop(self) -> int:
        """Exclusive end, for slicing: ``data[r.start:r.stop]``."""
        return self.start + self.length

    def content_range(self, size: int) -> str:
        """The Content-Range value of this range in a representation of ``size`` bytes."""
        if self.stop > size:
            raise ValueError(f"{self} does not fit in {size} bytes")
        # RFC 9110 §14.4: "bytes" SP first-pos "-" last-pos "/" complete-length, inclusive.
        return f"bytes {self.start}-{self.stop - 1}/{size}"


@dataclass(frozen=True, slots=True)
class RangeSpec:
    """One byte-range-spec as the client wrote it, before the size is known.

    ``a-b`` is ``(a, b)`` (both inclusive), ``a-`` is ``(a, None)``, ``-n`` is ``(None, n)``.
    Two requests asking for the same bytes the same way compare equal, whatever their spelling
    (case of the unit, whitespace, empty list elements, leading zeros).
    """

    first: int | None
    last: int | None

    def __post_init__(self) -> None:
        if self.first is None and self.last is None:
            raise ValueError("a RangeSpec needs a first position or a suffix length")
        if (self.first is not None and self.first < 0) or (self.last is not None and self.last < 0):
            raise ValueError(f"negative position in {self}")
        if self.first is not None and self.last is not None and self.last < self.first:
            raise ValueError(f"last < first in {self}")

    def wire(self) -> str:
        """The spec as written in a Range header: ``a-b``, ``a-`` or ``-n``."""
        first = "" if self.first is None else str(self.first)
        last = "" if self.last is None else str(self.last)
        return f"{first}-{last}"

    def resolve(self, size: int) -> ByteRange | None:
        """The bytes this spec selects in ``size`` bytes, or None when it is unsatisfiable."""
        if size <= 0:
            return None
        if self.first is None:
            assert self.last is not None
            # RFC 9110 §14.1.3: "If the selected representation is shorter than the specified
            # suffix-length, the entire representation is used." A suffix of 0 selects nothing.
            if self.last == 0:
                return None
            length = min(self.last, size)
            return ByteRange(size - length, length)
        # RFC 9110 §14.1.1: satisfiable "if the first-pos is less than the current length".
        if self.first >= size:
            return None
        # "If the last-pos value is absent, or if the value is greater than or equal to the
        # current length of the representation data, the byte range is interpreted as the
        # remainder of the representation".
        stop = size if self.last is None else min(self.last + 1, size)
        return ByteRange(self.first, stop - self.first)


def _parse_int(text: str) -> int:
    # RFC 9110 §14.1.1: first-pos = 1*DIGIT, last-pos = 1*DIGIT, suffix-length = 1*DIGIT. A
    # number too long for any file makes the Range garbage, ignored like any other.
    value = parse_digits(text)
    if value is None:
        raise RangeParseError(f"not a number of at most {MAX_DIGITS} digits: {text[:40]!r}")
    return value


def _parse_spec(text: str) -> RangeSpec:
    # int-range = first-pos "-" [ last-pos ]; suffix-range = "-" suffix-length
    first_text, dash, last_text = text.partition("-")
    if not dash:
        raise RangeParseError(f"no '-' in range spec {text[:40]!r}")
    if not first_text:
        return RangeSpec(None, _parse_int(last_text))
    first = _parse_int(first_text)
    if not last_text:
        return RangeSpec(first, None)
    last = _parse_int(last_text)
    # RFC 9110 §14.1.1: "A range request is invalid if the last-pos value is present and less
    # than the first-pos."
    if last < first:
        raise RangeParseError(f"last-pos < first-pos in {text[:40]!r}")
    return RangeSpec(first, last)


def _parse_range_set(text: str) -> tuple[RangeSpec, ...]:
    # range-set = 1#range-spec: OWS may surround each comma, and RFC 9110 §5.6.1.2 "a recipient
    # MUST parse and ignore a reasonable number of empty list elements".
    specs: tuple[RangeSpec, ...]
    if "," not in text:  # one spec, the usual case: no list to split
        member = strip_ows(text)
        specs = (_parse_spec(member),) if member else ()
    else:
        specs = tuple([_parse_spec(item) for item in split_list(text)])
    if not specs:
        raise RangeParseError("empty range set")
    return specs


def parse_range_header(value: str) -> tuple[RangeSpec, ...]:
    """Parse a Range field value (RFC 9110 §14.2), for the ``bytes`` unit only.

    Raises RangeParseError for anything else, including a well-formed Range in an unknown unit:
    either way the caller ignores the field.
    """
    # Field values arrive without leading/trailing OWS (RFC 9110 §5.5); trim for callers
    # that pass raw text.
    # ranges-specifier = range-unit "=" range-set; range-unit = token.
    unit, equals, range_set = strip_ows(value).partition("=")
    if not equals or not is_token(unit):
        raise RangeParseError(f"not a ranges-specifier: {value[:40]!r}")
    # RFC 9110 §14.1: "range units are compared in a case-insensitive manner".
    if unit.lower() != "bytes":
        # §14.2: "An origin server MUST ignore a Range header field that contains a range unit
        # it does not understand."
        raise RangeParseError(f"unknown range unit {unit[:40]!r}")
    return _parse_range_set(range_set)


def parse_query_range(value: str) -> tuple[RangeSpec, ...]:
    """Parse the ``?range=`` compatibility parameter: ``20-345`` or ``bytes=20-345``.

    The bare form is what the design this project replaces accepted; the ``bytes=`` form is a
    Range header value pasted into the URL. Both may list several specs.
    """
    if "=" in value:
        return parse_range_header(value)
    return _parse_range_set(value)


def resolve_ranges(specs: Iterable[RangeSpec], size: int) -> list[ByteRange]:
    """Resolve each spec against ``size``, dropping unsatisfiable ones, in request order."""
    resolved = []
    for spec in specs:
        r = spec.resolve(size)
        if r is not None:
            resolved.append(r)
    return resolved


def coalesce(ranges: Iterable[ByteRange]) -> list[ByteRange]:
    """Merge ranges that overlap or touch; keep the order in which the client asked.

    RFC 9110 §14.6 allows the merge ("a server MAY coalesce any of the ranges that overlap, or
    that are separated by a gap that is smaller than the overhead of sending multiple parts");
    merging adjacent ones as well means no byte is sent twice and parts never abut. §15.3.7.2
    fixes the order: "the server SHOULD send the parts in the order that the range-specs
    appeared in the Range header, excluding those that were unsatisfiable or were coalesced
    into other parts". A merged range takes the place of its first member in request order;
    ``5-6,0-1`` stays ``5-6,0-1``, and in ``8-9,0-1,2-3`` the merged ``0-3`` takes ``0-1``'s place.
    """
    # Sweep by start to find the groups of ranges that touch (a later range may join two
    # earlier groups), remembering each group's first position in the request.
    by_start = sorted(enumerate(ranges), key=lambda item: item[1].start)
    groups: list[tuple[int, ByteRange]] = []
    for position, r in by_start:
        if groups and r.start <= groups[-1][1].stop:
            first, last = groups[-1]
            merged = ByteRange(last.start, max(last.stop, r.stop) - last.start)
            groups[-1] = (min(first, position), merged)
        else:
            groups.append((position, r))
    return [r for _, r in sorted(groups, key=lambda group: group[0])]


@dataclass(frozen=True, slots=True)
class RangeLimits:
    """Caps against range amplification (CVE-2011-3192 "Apache Killer", nginx "rangeamp").

    - More than ``max_ranges`` specs: the Range is ignored (200), as Starlette and CherryPy do.
    - Fixed byte budget, Go's rule: when the sum of the resolved lengths *before* coalescing
      exceeds the size, the Range is ignored (200). That catches ``0-,1-,2-,3-,4-`` and heavy
      overlap, and never refuses a legitimate request: ranges a client needs never ask for more
      bytes than the file has.

    Neither depends on the order of the specs (a count and a sum), so a client cannot get past
    them by shuffling its ranges.
    """

    max_ranges: int = 100

    def __post_init__(self) -> None:
        if self.max_ranges < 1:
            raise ValueError(f"max_ranges must be at least 1, not {self.max_ranges}")


class RangeOutcome(enum.Enum):
    """What to do with the range part of a request."""

    NONE = "none"  # no range asked: 200
    IGNORED = "ignored"  # invalid, unknown unit, over limits, empty file: 200
    PARTIAL = "partial"  # 206
    UNSATISFIABLE = "unsatisfiable"  # 416
    CONFLICT = "conflict"  # Range header and ?range= disagree: 416


@dataclass(frozen=True, slots=True)
class RangeDecision:
    """The outcome; for PARTIAL, ``ranges`` is non-empty and went through :func:`coalesce`.

    So partial ranges are disjoint, never adjacent, and in the order the client asked for them.

    ``reason`` is a short text for log lines, not for clients, so it takes no part in equality.
    """

    outcome: RangeOutcome
    ranges: tuple[ByteRange, ...] = ()
    reason: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if (self.outcome is RangeOutcome.PARTIAL) != bool(self.ranges):
            raise ValueError("ranges are given exactly for a PARTIAL decision")


DEFAULT_LIMITS = RangeLimits()


def decide_ranges(
    header: str | None,
    query: str | None,
    size: int,
    limits: RangeLimits = DEFAULT_LIMITS,
) -> RangeDecision:
    """Decide what a request for a representation of ``size`` bytes gets.

    ``header`` is the Range field value, ``query`` the ``?range=`` value; None when absent.
    Never raises for any text.
    """
    if header is None and query is None:
        return RangeDecision(RangeOutcome.NONE, reason="no range requested")
    problems: list[str] = []
    header_specs: tuple[RangeSpec, ...] | None = None
    query_specs: tuple[RangeSpec, ...] | None = None
    # RFC 9110 §14.2: "A server MAY ignore the Range header field." An invalid value is
    # ignored, as if absent, so the other source (if any) still applies.
    if header is not None:
        try:
            header_specs = parse_range_header(header)
        except RangeParseError as exc:
            problems.append(f"Range ignored: {exc}")
    if query is not None:
        try:
            query_specs = parse_query_range(query)
        except RangeParseError as exc:
            problems.append(f"?range= ignored: {exc}")
    if header_specs is not None and query_specs is not None and header_specs != query_specs:
        return RangeDecision(RangeOutcome.CONFLICT, reason="Range and ?range= disagree")
    specs = header_specs if header_specs is not None else query_specs
    if specs is None:
        return RangeDecision(RangeOutcome.IGNORED, reason="; ".join(problems))
    if size <= 0:
        # Nothing to select in an empty representation; answer 200 with the empty body rather
        # than 416, which a client would read as "your range is wrong".
        return RangeDecision(RangeOutcome.IGNORED, reason="empty representation")
    if len(specs) > limits.max_ranges:
        return RangeDecision(
            RangeOutcome.IGNORED, reason=f"{len(specs)} ranges > max_ranges {limits.max_ranges}"
        )
    resolved = resolve_ranges(specs, size)
    if not resolved:
        # RFC 9110 §15.5.17: 416 when "none of the ranges in the request's Range header field
        # overlap the current extent of the selected resource".
        return RangeDecision(RangeOutcome.UNSATISFIABLE, reason="no satisfiable range")
    requested = 0
    for r in resolved:
        requested += r.length
    if requested > size:
        # Go's fs.go: "The total number of bytes in all the ranges is larger than the size of
        # the file by itself, so this is probably an attack, or a dumb client. Ignore the
        # range request."
        return RangeDecision(
            RangeOutcome.IGNORED, reason=f"ranges ask for {requested} bytes of {size}"
        )
    # One range has nothing to merge with (coalesce sorts twice to find that out).
    ranges = tuple(resolved) if len(resolved) == 1 else tuple(coalesce(resolved))
    return RangeDecision(RangeOutcome.PARTIAL, ranges=ranges, reason=f"{len(specs)} range(s)")


def unsatisfied_content_range(size: int) -> str:
    """The Content-Range of a 416 (RFC 9110 §14.4: unsatisfied-range = "*/" complete-length)."""
    return f"bytes */{size}"


def format_range_header(specs: Iterable[RangeSpec]) -> str:
    """A Range header value asking for ``specs`` (the proxy turns ``?range=`` into one)."""
    return "bytes=" + ",".join(spec.wire() for spec in specs)
