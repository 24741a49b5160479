"""Every use of h11's private internals, in one guarded place.

h11 validates every field of an event it is given, one field at a time: two regex matches,
two ``bytesify`` and their ``isinstance`` checks per field, about 120 Python calls of a small
range response's head (issue 13), for fields that Hypercorn has already turned into stripped
bytes. :func:`response_event` checks all the fields of a response at once, with one match of
h11's own field-name and field-value patterns (so exactly what h11 accepts passes), then builds
the event as h11 builds the events its parser made (``_parsed=True``: the status range check
stays), its fields already in h11's parsed form when they hold no Transfer-Encoding and at
most one plain Content-Length (what ``normalize_and_validate`` would keep unchanged); other
fields go through ``normalize_and_validate``'s own rules. A field h11 would refuse makes
:func:`response_event` call h11's plain constructor, which raises its own precise error.

:func:`has_field` reads h11's parsed fields directly. ``HOOKED`` lists what is used;
tests/server/test_h11_hooks.py checks it.
"""

from __future__ import annotations

import re

import h11
from h11 import _headers as h11_headers

from trio_range.server.hooks_check import Hook

HOOKED: tuple[Hook, ...] = (
    # The keyword h11's reader passes for events it parsed (h11/_events.py _ResponseBase).
    Hook(
        h11.Response,
        "__init__",
        ("self", "headers", "status_code", "http_version", "reason", "_parsed"),
    ),
    # The compiled patterns h11 validates each field name and value with (h11/_headers.py).
    Hook(h11_headers, "_field_name_re", None),
    Hook(h11_headers, "_field_value_re", None),
    # h11's parsed form of the fields, (name, lowercased name, value) each (its _full_items),
    # and the longest Content-Length normalize_and_validate accepts.
    Hook(h11_headers.Headers, "__init__", ("self", "full_items")),
    Hook(h11_headers, "CONTENT_LENGTH_MAX_DIGITS", None),
)

# One record per field, "name NUL value LF": neither a name (an RFC 9110 token) nor a value
# (h11's field_value: no NUL, no CR, LF or other whitespace but inner spaces and tabs) can
# hold a NUL or an LF, so the record and its parts split exactly where the fields do and
# each part is matched as h11 matches it alone.
_FIELDS_RE = re.compile(
    b"(?:(?:"
    + h11_headers._field_name_re.pattern
    + b")\x00(?:"
    + h11_headers._field_value_re.pattern
    + b")\n)*"
)


def response_event(
    status_code: int, headers: list[tuple[bytes, bytes]], reason: bytes
) -> h11.Response:
    """``h11.Response(status_code=..., headers=..., reason=...)`` with one check of the fields.

    ``headers`` are bytes (Hypercorn's ``build_and_validate_headers`` made them so), as is
    ``reason``; anything else, and any field h11 would refuse, takes h11's own constructor.
    The common case (no Transfer-Encoding, at most one Content-Length of at most 20 digits,
    which ``normalize_and_validate`` would keep as it is) gets h11's ``Headers`` directly.
    """
    try:
        records = b"".join([name + b"\x00" + value + b"\n" for name, value in headers])
    except TypeError:
        records = None
    if (
        records is None
        or _FIELDS_RE.fullmatch(records) is None
        or type(reason) is not bytes
        or type(status_code) is not int
    ):
        return h11.Response(status_code=status_code, headers=headers, reason=reason)
    items = [(name, name.lower(), value) for name, value in headers]
    lengths = 0
    for _, lowered, value in items:
        if lowered == b"content-length":
            lengths += 1
            if not (value.isdigit() and len(value) <= h11_headers.CONTENT_LENGTH_MAX_DIGITS):
                lengths = 2
        elif lowered == b"transfer-encoding":
            lengths = 2
    if lengths > 1:
        # normalize_and_validate's own rules: merged, refused or checked there.
        return h11.Response(status_code=status_code, headers=headers, reason=reason, _parsed=True)
    return h11.Response(
        status_code=status_code, headers=h11_headers.Headers(items), reason=reason, _parsed=True
    )


def has_field(headers: h11_headers.Headers, lowered: bytes) -> bool:
    """Whether an event's fields include one named ``lowered`` (lowercase bytes).

    Iterating h11's ``Headers`` (a ``Sequence``) costs two Python calls a field; its list of
    (raw name, lowercased name, value) is read directly (issue 13).
    """
    for _, name, _ in headers._full_items:  # noqa: SIM110 (any() of a generator: more calls)
        if name == lowered:
            return True
    return False
