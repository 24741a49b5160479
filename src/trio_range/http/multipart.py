"""``multipart/byteranges`` framing (RFC 9110 §14.6), without the file bytes.

The body is described as segments: framing bytes interleaved with the :class:`ByteRange`\\ s the
server copies from the file. The announced Content-Length is computed by walking the same
segments, so it cannot disagree with what is written (Starlette's was one byte short).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

from trio_range.http.grammar import has_forbidden_field_chars, is_token
from trio_range.http.ranges import ByteRange

__all__ = ["MultipartByteranges", "new_boundary", "segment_length"]

# RFC 2046 §5.1.1: boundary := 0*69<bchars> bcharsnospace, 1 to 70 characters.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


def new_boundary() -> str:
    """A random boundary: 128 bits make a collision with the file's bytes negligible.

    RFC 2046 §5.1.1: the boundary "must not appear inside any of the encapsulated parts"; the
    server cannot scan a file it streams, so it relies on randomness, as nginx and Go do.
    """
    return secrets.token_hex(16)


def segment_length(segment: bytes | ByteRange) -> int:
    """Bytes a segment puts on the wire."""
    return segment.length if isinstance(segment, ByteRange) else len(segment)


@dataclass(frozen=True, slots=True)
class MultipartByteranges:
    """A multipart/byteranges body for ``ranges`` of a ``size``-byte ``content_type`` file."""

    boundary: str
    content_type: str
    size: int
    ranges: tuple[ByteRange, ...]

    def __post_init__(self) -> None:
        if not _BOUNDARY.fullmatch(self.boundary):
            raise ValueError(f"invalid multipart boundary {self.boundary!r}")
        if has_forbidden_field_chars(self.content_type):
            raise ValueError(f"CR, LF or NUL in content type {self.content_type!r}")
        # Raises UnicodeEncodeError, a ValueError, for text no HTTP/1.1 header can carry.
        self.content_type.encode("latin-1")
        if not self.ranges:
            raise ValueError("a multipart/byteranges body needs at least one range")
        for r in self.ranges:
            if r.stop > self.size:
                raise ValueError(f"{r} lies outside {self.size} bytes")

    @property
    def content_type_header(self) -> str:
        """The Content-Type field value of the whole response."""
        # RFC 9110 §5.6.6: a parameter value that is not a token is a quoted-string; bchars
        # are all qdtext, so quoting needs no escapes.
        boundary = self.boundary
        if not is_token(boundary):
            boundary = f'"{boundary}"'
        return f"multipart/byteranges; boundary={boundary}"

    def segments(self) -> Iterator[bytes | ByteRange]:
        """Framing bytes and ranges in wire order; consecutive framing is merged into one.

        Each part is ``--B CRLF Content-Type: T CRLF Content-Range: bytes a-b/SIZE CRLF CRLF``,
        its data, then CRLF; the body ends with ``--B--`` CRLF. The first delimiter has no
        leading CRLF: RFC 2046 §5.1.1 only puts CRLF before the delimiters that follow a part.
        """
        delimiter = f"--{self.boundary}\r\n"
        pending = ""
        for r in self.ranges:
            pending += (
                f"{delimiter}"
                f"Content-Type: {self.content_type}\r\n"
                f"Content-Range: {r.content_range(self.size)}\r\n"
                "\r\n"
            )
            # Latin-1 maps each str character of a field value to the one byte it came from.
            yield pending.encode("latin-1")
            yield r
            pending = "\r\n"
        yield f"{pending}--{self.boundary}--\r\n".encode("latin-1")

    def content_length(self) -> int:
        """The exact body length, from the same segments the server writes."""
        return sum(segment_length(segment) for segment in self.segments())
