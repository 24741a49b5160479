"""Every use of h11's private internals, the server's and the upstream client's, in one place.

**The server's response heads.** h11 validates every field of an event it is given, one field at
a time: two regex matches, two ``bytesify`` and their ``isinstance`` checks per field, about 120
Python calls of a small range response's head (issue 13), for fields that Hypercorn has already
turned into stripped bytes. :func:`response_event` checks all the fields of a response at once,
with one match of h11's own field-name and field-value patterns (so exactly what h11 accepts
passes), then builds the event as h11 builds the events its parser made (``_parsed=True``: the
status range check stays), its fields already in h11's parsed form when they hold no Transfer-
Encoding and at most one plain Content-Length (what ``normalize_and_validate`` would keep
unchanged); other fields go through ``normalize_and_validate``'s own rules. A field h11 would
refuse makes :func:`response_event` call h11's plain constructor, which raises its own precise
error.

:func:`has_field` reads h11's parsed fields directly.

**The upstream client's response readers**, driven without an ``h11.Connection``. The transport
reads each response head with h11 (h11 stays the HTTP/1.1 parser, issue 14), but an
``h11.Connection`` per request cost more than the parse itself: its construction, a primer
request sent through its state machine, then two state-machine passes (``send`` and
``next_event``), each recomputing readers and writers, about 40 % of h11's cost per small
request. The transport needs none of that state: one request per exchange, its method known, no
upgrades asked for. So it calls what ``Connection.next_event`` calls: the response-head reader
on a ``ReceiveBuffer``, ``_body_framing`` and ``_keep_alive`` for the framing and keep-alive
rules, and h11's chunked and close-delimited body readers. What the state machine would add for
a client that proposed no protocol switch is kept: a 101 is an error, other 1xx answers are
skipped, a reader's ``LocalProtocolError`` is the peer's ``RemoteProtocolError``.

``HOOKED`` lists each use with the shape it expects; tests/server/test_h11_hooks.py and
tests/proxy/test_hooks_proxy.py check them (the latter compares every reader result with an
``h11.Connection``'s), so an h11 upgrade that renames or reshapes one fails there, not in a
response or a relay.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, cast

import h11
from h11 import _connection, _readers, _receivebuffer, _state
from h11 import _headers as h11_headers

from trio_range.server.hooks_check import Hook

ReceiveBuffer = _receivebuffer.ReceiveBuffer

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
    # The upstream client's response readers (h11/_readers.py, _connection.py, _state.py).
    Hook(_receivebuffer, "ReceiveBuffer", ()),
    Hook(ReceiveBuffer, "__iadd__", ("self", "byteslike")),
    Hook(ReceiveBuffer, "__bytes__", ("self",)),
    Hook(ReceiveBuffer, "__len__", ("self",)),
    Hook(_readers, "maybe_read_from_SEND_RESPONSE_server", ("buf",)),
    Hook(_readers, "READERS", None),
    Hook(_readers.ChunkedReader, "__call__", ("self", "buf")),
    Hook(_readers.ChunkedReader, "read_eof", ("self",)),
    Hook(_readers.Http10Reader, "__call__", ("self", "buf")),
    Hook(_readers.Http10Reader, "read_eof", ("self",)),
    Hook(_connection, "_body_framing", ("request_method", "event")),
    Hook(_connection, "_keep_alive", ("event",)),
    Hook(_state, "SEND_BODY", None),
    Hook(h11_headers.Headers, "_full_items", None),
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
    status_code: int,
    headers: list[tuple[bytes, bytes]],
    reason: bytes,
    clean: Callable[[list[tuple[bytes, bytes]]], list[tuple[bytes, bytes]]] | None = None,
) -> h11.Response:
    """``h11.Response(status_code=..., headers=..., reason=...)`` with one check of the fields.

    ``headers`` are bytes (Hypercorn's ``build_and_validate_headers`` made them so), as is
    ``reason``; anything else, and any field h11 would refuse, takes h11's own constructor.
    ``clean``, if given, is applied to ``headers`` before h11's own constructor only (a
    matching field is one ``clean`` would keep as it is). The common case (no
    Transfer-Encoding, at most one Content-Length of at most 20 digits,
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
        if clean is not None:
            headers = clean(headers)
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


_read_head = _readers.maybe_read_from_SEND_RESPONSE_server
_BODY_READERS: dict[str, Any] = _readers.READERS[_state.SEND_BODY]  # type: ignore[assignment]
_body_framing = _connection._body_framing
_keep_alive = _connection._keep_alive


def _as_remote(error: h11.LocalProtocolError) -> h11.RemoteProtocolError:
    # What Connection.next_event does to a reader's error: the peer broke the protocol.
    return h11.RemoteProtocolError(str(error), error_status_hint=error.error_status_hint)


def read_response(buffer: ReceiveBuffer) -> h11.Response | None:
    """The final response head at the start of ``buffer`` (consumed), or None: need more bytes.

    Informational (1xx) heads before it are consumed and skipped, as an ``h11.Connection``
    does; a 101 is a protocol error, as it is for a client that asked for no upgrade.
    """
    while True:
        try:
            event = _read_head(buffer)
        except h11.LocalProtocolError as error:
            raise _as_remote(error) from error
        if event is None or type(event) is h11.Response:
            return event
        if event.status_code == 101:
            raise h11.RemoteProtocolError("a 101 answer to a request that asked for no upgrade")


def body_framing(method: bytes, response: h11.Response) -> tuple[int | None, Any, bool]:
    """``(length, reader, keep_alive)`` for the body of ``response`` to a ``method`` request.

    ``length`` is the Content-Length (0 for HEAD, 204, 304) and ``reader`` None, or ``length``
    is None and ``reader`` is h11's reader of a chunked or close-delimited body (for
    :func:`next_body_event`). ``keep_alive`` is h11's rule (HTTP/1.1 and no ``Connection:
    close``), and False for a close-delimited body, which ends only when the upstream closes.
    """
    kind, arguments = _body_framing(method, response)
    keep_alive = kind != "http/1.0" and _keep_alive(response)
    if kind == "content-length":
        return cast(tuple[int], arguments)[0], None, keep_alive
    return None, _BODY_READERS[kind](), keep_alive


def next_body_event(
    reader: Any, buffer: ReceiveBuffer, closed: bool
) -> h11.Data | h11.EndOfMessage | None:
    """The next ``Data`` or ``EndOfMessage`` of a body ``reader`` reads; None: need more bytes.

    ``closed``: the upstream closed the connection after what ``buffer`` holds. As
    ``Connection.next_event``: at EOF the reader ends the body (close-delimited) or raises
    (incomplete chunked body); EOF within a chunk's framing is an error.
    """
    try:
        event = reader(buffer)
        if event is None and closed:
            if len(buffer):
                raise h11.RemoteProtocolError("peer unexpectedly closed connection")
            event = reader.read_eof()
    except h11.LocalProtocolError as error:
        raise _as_remote(error) from error
    return event  # type: ignore[no-any-return]


def header_items(response: h11.Response) -> list[tuple[bytes, bytes, bytes]]:
    """The head's fields as h11 keeps them: (name as received, lowercased name, value)."""
    return response.headers._full_items
