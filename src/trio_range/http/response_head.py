"""The common upstream answer's head, read in one regular expression instead of h11's reader.

Why (issue 14): h11's response-head reader (line splitting, a ``fullmatch`` and a generator
step per field, the event's normalisation, then the framing and keep-alive lookups) took
about 120 Python calls of a relayed 4 KiB range, a tenth of the proxy's per request. Nearly
every answer is the same simple shape: ``HTTP/1.1``, a final status, CRLF line ends, no
continuation lines, no Transfer-Encoding and one plain Content-Length (or none needed: HEAD,
204, 304). :func:`parse_simple_head` reads exactly that shape, with h11's own grammar for
each part (``h11/_abnf.py``), and gives the same fields, framing and keep-alive as h11 would;
for anything else it returns None and the caller asks h11, which reads it or refuses it.
tests/http/test_response_head.py compares both on generated heads.
"""

from __future__ import annotations

import re

# h11's grammar (h11/_abnf.py) in bytes: a field value's characters are any byte but NUL and
# ASCII whitespace (h11's ``[^\x00\s]``), with single spaces or tabs between them; a reason
# phrase, any byte but NUL, CR, LF, VT and FF.
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_VCHAR = rb"[^\x00\s]"
_VALUE = rb"%s+(?:[ \t]+%s+)*" % (_VCHAR, _VCHAR)
_FIELDS = re.compile(rb"(%s):[ \t]*(%s)?[ \t]*\r\n" % (_TOKEN, _VALUE))
_HEAD = re.compile(
    rb"HTTP/1\.1 ([2-9][0-9][0-9])(?: ([^\x00\n\r\x0b\x0c]*))?\r\n"
    rb"((?:%s:[ \t]*(?:%s)?[ \t]*\r\n)*)\r\n" % (_TOKEN, _VALUE)
)
# h11's CONTENT_LENGTH_MAX_DIGITS: a longer Content-Length is a protocol error there.
_MAX_LENGTH_DIGITS = 20

Triples = list[tuple[bytes, bytes, bytes]]


class SimpleHead:
    """A final HTTP/1.1 response head with a known body length (see the module's docstring)."""

    __slots__ = ("body_length", "end", "fields", "keep_alive", "reason", "status")

    def __init__(
        self,
        status: int,
        reason: bytes,
        fields: Triples,
        body_length: int,
        keep_alive: bool,
        end: int,
    ) -> None:
        self.status = status
        self.reason = reason
        # As h11 keeps them: (name as received, lowercased name, value without its spaces).
        self.fields = fields
        self.body_length = body_length
        self.keep_alive = keep_alive  # h11's rule: no "close" in any Connection field
        self.end = end  # where the body starts in the bytes given


def parse_simple_head(data: bytes, method: str) -> SimpleHead | None:
    """The head at the start of ``data`` (answering a ``method`` request) if it has the simple
    shape, else None: incomplete, or anything h11 must read (or refuse) itself."""
    match = _HEAD.match(data)
    if match is None:
        return None
    status_text, reason, block = match.groups()
    pairs = _FIELDS.findall(block)
    lowered = _FIELDS.findall(block.lower())
    fields = [(name, low[0], value) for (name, value), low in zip(pairs, lowered, strict=True)]
    length: bytes | None = None
    keep_alive = True
    for _, name, value in fields:
        if name == b"content-length":
            if length is not None or not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS:
                return None  # a repeated, listed or odd length: h11's rules, in h11
            length = value
        elif name == b"transfer-encoding":
            return None
        elif name == b"connection" and _says_close(value):
            keep_alive = False
    status = int(status_text)
    if status in (204, 304) or method == "HEAD":
        body_length = 0
    elif length is None or method == "CONNECT":
        return None  # close-delimited, or CONNECT's own rule
    else:
        body_length = int(length)
    return SimpleHead(status, reason or b"", fields, body_length, keep_alive, match.end())


def _says_close(value: bytes) -> bool:
    """h11's keep-alive test on one Connection field: is "close" one of its tokens?"""
    return b"close" in [token.strip() for token in value.lower().split(b",")]
