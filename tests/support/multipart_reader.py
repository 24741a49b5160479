"""A strict multipart/byteranges reader for tests.

Lenient readers hide framing bugs (LF instead of CRLF, a missing final CRLF, a length one byte
short), so this one accepts exactly the framing of RFC 9110 §14.6 and RFC 2046 §5.1.1 that a
conforming server writes, and raises ValueError on any deviation.
"""

from __future__ import annotations

import re

__all__ = ["parse_byteranges", "parse_content_range"]

_CONTENT_TYPE = re.compile(
    r'multipart/byteranges;[ \t]*boundary=(?:"([^"\\\r\n]+)"|([!#$%&\'*+\-.^_`|~0-9A-Za-z]+))',
    re.IGNORECASE,
)
_CONTENT_RANGE = re.compile(r"bytes ([0-9]+)-([0-9]+)/([0-9]+)")
_FIELD = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*")


def parse_content_range(value: str) -> tuple[int, int, int]:
    """``bytes a-b/size`` as (first, last, size), checking that a <= b < size."""
    match = _CONTENT_RANGE.fullmatch(value)
    if match is None:
        raise ValueError(f"malformed Content-Range {value!r}")
    first, last, size = (int(group) for group in match.groups())
    if not first <= last < size:
        raise ValueError(f"Content-Range {value!r} is not inside the representation")
    return first, last, size


def _boundary(content_type_header: str) -> str:
    match = _CONTENT_TYPE.fullmatch(content_type_header.strip())
    if match is None:
        raise ValueError(f"not a multipart/byteranges Content-Type: {content_type_header!r}")
    return match.group(1) or match.group(2)


def _expect(body: bytes, pos: int, expected: bytes) -> int:
    if body[pos : pos + len(expected)] != expected:
        found = body[pos : pos + len(expected) + 10]
        raise ValueError(f"expected {expected!r} at offset {pos}, found {found!r}")
    return pos + len(expected)


def _part_headers(block: bytes) -> dict[str, str]:
    lines = block.split(b"\r\n")
    fields: dict[str, str] = {}
    for raw in lines:
        if b"\r" in raw or b"\n" in raw:
            raise ValueError(f"bare CR or LF in part header {raw!r}")
        match = _FIELD.fullmatch(raw.decode("latin-1"))
        if match is None:
            raise ValueError(f"malformed part header line {raw!r}")
        name = match.group(1).lower()
        if name in fields:
            raise ValueError(f"duplicate part header {name!r}")
        fields[name] = match.group(2)
    if set(fields) != {"content-type", "content-range"}:
        raise ValueError(
            f"a part needs exactly Content-Type and Content-Range, got {sorted(fields)}"
        )
    return fields


def parse_byteranges(
    body: bytes, content_type_header: str, *, allow_leading_crlf: bool = False
) -> list[tuple[str, str, bytes]]:
    """(content_type, content_range, data) of each part of a multipart/byteranges body.

    The data length comes from the part's Content-Range, and the delimiter must follow it at
    once, so a short or long part is an error rather than a silently shifted split.
    ``allow_leading_crlf`` accepts an empty preamble (nginx writes CRLF before the first
    delimiter, which RFC 2046 permits); our server never does.
    """
    boundary = _boundary(content_type_header).encode("latin-1")
    pos = 0
    if allow_leading_crlf and body.startswith(b"\r\n"):
        pos = 2
    pos = _expect(body, pos, b"--" + boundary + b"\r\n")
    parts: list[tuple[str, str, bytes]] = []
    while True:
        end_of_headers = body.find(b"\r\n\r\n", pos)
        if end_of_headers < 0:
            raise ValueError(f"part at offset {pos} has no end of headers")
        fields = _part_headers(body[pos:end_of_headers])
        first, last, _ = parse_content_range(fields["content-range"])
        pos = end_of_headers + 4
        data = body[pos : pos + last - first + 1]
        if len(data) != last - first + 1:
            raise ValueError(f"part {fields['content-range']} is cut short: {len(data)} bytes")
        parts.append((fields["content-type"], fields["content-range"], data))
        pos = _expect(body, pos + len(data), b"\r\n--" + boundary)
        if body[pos : pos + 2] == b"--":
            pos = _expect(body, pos + 2, b"\r\n")
            break
        pos = _expect(body, pos, b"\r\n")
    if pos != len(body):
        raise ValueError(f"{len(body) - pos} bytes after the close delimiter")
    return parts
