"""What a relay decides from values alone: the upstream target, ``?range=``, what an answer says.

Pure: the proxy's I/O (proxy/relay.py) asks these and carries the answers out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlsplit

from trio_range.errors import RangeParseError
from trio_range.http.grammar import parse_digits
from trio_range.http.ranges import format_range_header, parse_query_range, parse_range_header


def upstream_target(raw_path: bytes, query_string: bytes) -> str:
    """The origin-form target to request upstream, whatever form the client used.

    An absolute-form target (``GET http://elsewhere/x``) keeps only its path: the upstream is
    fixed by configuration, so neither it nor the Host header can redirect the proxy (no open
    proxy, no SSRF).
    """
    path = raw_path.decode("latin-1")
    if not path.startswith("/"):
        path = urlsplit(path).path or "/"
        if not path.startswith("/"):
            path = "/" + path
    if query_string:
        return f"{path}?{query_string.decode('latin-1')}"
    return path


def query_range(query_string: bytes) -> str | None:
    """The ``?range=`` compatibility parameter, if present."""
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name == "range":
            return value
    return None


class RangeConflict(Exception):
    """A Range header and ``?range=`` that ask for different bytes: answer 416."""


def range_for_upstream(range_header: str | None, query_value: str | None) -> str | None:
    """The Range header to send upstream in place of the client's, or None to send it as is.

    ``?range=20-345`` works like ``Range: bytes=20-345`` (the design this project replaces).
    The two are compared only after parsing both, so ``bytes=20-345`` and ``20-345`` agree; an
    invalid value of either is ignored, as RFC 9110 §14.2 lets a server ignore any Range, so
    only two valid values can disagree, which raises :class:`RangeConflict`.
    """
    if query_value is None:
        return None
    try:
        query_specs = parse_query_range(query_value)
    except RangeParseError:
        return None
    if range_header is not None:
        try:
            header_specs = parse_range_header(range_header)
        except RangeParseError:
            header_specs = query_specs
        if header_specs != query_specs:
            raise RangeConflict(f"Range {range_header!r} and ?range={query_value!r} differ")
    return format_range_header(query_specs)


def representation_size(status: int, headers: Mapping[str, str]) -> int | None:
    """The full size an upstream answer reveals: a 200's length or a 206's complete-length.

    None when the answer does not say, or says it in anything but ``1*DIGIT`` (RFC 9110 §8.6,
    §14.4): an upstream's header is input, and int() would raise on "²" or 5000 digits.
    """
    if status == 200:
        return parse_digits(headers.get("Content-Length", ""))
    if status == 206:
        _, _, complete = headers.get("Content-Range", "").rpartition("/")
        return parse_digits(complete)
    return None


def relayed_range_outcome(asked: bool, status: int, content_type: str) -> str:
    """How the upstream treated the Range, in the words of the statistics."""
    if status == 206:
        return "multi" if content_type.startswith("multipart/byteranges") else "single"
    if status == 416:
        return "unsatisfiable"
    if asked and status == 200:
        return "ignored"
    return "none"


# Why the two field conversions below join every name and value with NUL and convert once:
# a relay converts each field list twice (the client's bytes to str and back, the upstream's
# the same), and a ``decode``/``encode`` per name and per value is two Python calls a field
# (issue 14). NUL can be in no field h11 accepted; if one is there anyway (or a text beyond
# latin-1), the part count no longer matches and each field is converted on its own, which
# gives the same result or raises the same error as a per-field conversion.
_NUL = b"\x00"


# RFC 9110 §5.5: a field value holding a control character other than HTAB is invalid (CR, LF
# and NUL "dangerous", the others invalid too). h11 refuses CR, LF and NUL in an upstream's
# fields already; the rest it accepts, and nginx relays them as they came. A proxy that relays
# them hands its clients a message a strict parser rejects (docs/design.md, "Upstream fields
# with control characters"), so :func:`fields_text` can set such fields apart.
_CTL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
# The same but NUL, for the joined text, whose parts NUL separates (a part with a NUL makes the
# part count differ, and then every field is searched with _CTL).
_CTL_BUT_NUL = re.compile("[\x01-\x08\x0a-\x1f\x7f]")


def fields_text(
    fields: Iterable[tuple[bytes, bytes]], invalid: list[tuple[str, str]] | None = None
) -> list[tuple[str, str]]:
    """``fields`` decoded as latin-1 (every byte value kept, so encoding back restores them).

    With ``invalid`` (a list), a field whose name or value holds a control character (any but
    HTAB) is not returned but appended to ``invalid``: one regular-expression search of the
    joined text when none does.
    """
    flat = [part for field in fields for part in field]
    text = _NUL.join(flat).decode("latin-1")
    texts = text.split("\x00")
    if len(texts) != len(flat):
        pairs = [
            (flat[i].decode("latin-1"), flat[i + 1].decode("latin-1"))
            for i in range(0, len(flat), 2)
        ]
    elif invalid is None or _CTL_BUT_NUL.search(text) is None:
        return list(zip(texts[::2], texts[1::2], strict=True))
    else:
        pairs = list(zip(texts[::2], texts[1::2], strict=True))
    if invalid is None:
        return pairs
    valid: list[tuple[str, str]] = []
    for pair in pairs:
        (invalid if _CTL.search(pair[0]) or _CTL.search(pair[1]) else valid).append(pair)
    return valid


def fields_triples(fields: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes, bytes]]:
    """``fields`` as latin-1 ``(name, lowercased name, value)`` triples (httpx's own form).

    A text beyond latin-1 raises UnicodeEncodeError, as encoding that field alone would.
    """
    fields = list(fields)
    texts = [text for field in fields for text in field]
    try:
        parts = "\x00".join(texts).encode("latin-1").split(_NUL)
    except UnicodeEncodeError:
        parts = []
    if len(parts) != len(texts):
        pairs = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in fields]
        return [(name, name.lower(), value) for name, value in pairs]
    names = parts[::2]
    lowered = _NUL.join(names).lower().split(_NUL)
    return list(zip(names, lowered, parts[1::2], strict=True))
