"""Slice arithmetic of the proxy's cache: fixed-size, aligned pieces of an object.

Slice ``i`` of an object of ``size`` bytes holds bytes ``[i * slice_size, (i + 1) *
slice_size)``, the last one shorter. A client's range is served from the slices it touches
(:func:`slice_pieces`); a missing slice is fetched with :func:`slice_range_header`. Pure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from trio_range.errors import RangeParseError
from trio_range.http.conditional import Validators
from trio_range.http.ranges import ByteRange, parse_query_range, parse_range_header

__all__ = [
    "SlicePiece",
    "first_slice_wanted",
    "revalidation_headers",
    "slice_count",
    "slice_pieces",
    "slice_range_header",
    "slice_span",
]

MIN_SLICE_BYTES = 64 * 1024
MAX_SLICE_BYTES = 64 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class SlicePiece:
    """``length`` bytes from ``offset`` inside slice ``index``."""

    index: int
    offset: int
    length: int


def slice_count(size: int, slice_size: int) -> int:
    return -(-size // slice_size)


def slice_span(index: int, slice_size: int, size: int) -> ByteRange:
    """The bytes of the object slice ``index`` holds (it must lie inside the object)."""
    start = index * slice_size
    if not 0 <= start < size:
        raise ValueError(f"slice {index} is outside an object of {size} bytes")
    return ByteRange(start, min(slice_size, size - start))


def slice_range_header(index: int, slice_size: int) -> str:
    """The Range that fetches slice ``index`` (the upstream clamps the last one)."""
    start = index * slice_size
    return f"bytes={start}-{start + slice_size - 1}"


def slice_pieces(wanted: ByteRange, slice_size: int) -> Iterator[SlicePiece]:
    """The slices ``wanted`` touches, in order, and the part of each it needs."""
    position, stop = wanted.start, wanted.stop
    while position < stop:
        index, offset = divmod(position, slice_size)
        length = min(slice_size - offset, stop - position)
        yield SlicePiece(index, offset, length)
        position += length


def first_slice_wanted(range_header: str | None, range_query: str | None, slice_size: int) -> int:
    """The slice to fetch first when the object's size is not known yet.

    The slice of the first position the client names (``?range=`` wins, as in the range
    engine's comparison both must agree anyway); slice 0 for no range, a suffix range or one
    that does not parse, since the first answer reveals the size either way.
    """
    for text, parse in ((range_query, parse_query_range), (range_header, parse_range_header)):
        if text is None:
            continue
        try:
            specs = parse(text)
        except RangeParseError:
            continue
        if specs and specs[0].first is not None:
            return specs[0].first // slice_size
        return 0
    return 0


def revalidation_headers(validators: Validators) -> list[tuple[str, str]]:
    """The conditional fields that revalidate a stored object (RFC 9111 §4.3.1)."""
    fields: list[tuple[str, str]] = []
    if validators.etag is not None:
        fields.append(("If-None-Match", validators.etag))
    date = validators.last_modified_http_date()
    if date is not None:
        fields.append(("If-Modified-Since", date))
    return fields
