"""h11's own response readers, driven without an ``h11.Connection`` (private h11 API, here only).

Why: the transport reads each response head with h11 (h11 stays the HTTP/1.1 parser, issue
14), but an ``h11.Connection`` per request cost more than the parse itself: its construction,
a primer request sent through its state machine, then two state-machine passes (``send`` and
``next_event``), each recomputing readers and writers, about 40 % of h11's cost per small
request. The transport needs none of that state: one request per exchange, its method known,
no upgrades asked for. So it calls what ``Connection.next_event`` calls: the response-head
reader on a ``ReceiveBuffer``, ``_body_framing`` and ``_keep_alive`` for the framing and
keep-alive rules, and h11's chunked and close-delimited body readers. What the state machine
would add for a client that proposed no protocol switch is kept: a 101 is an error, other 1xx
answers are skipped, a reader's ``LocalProtocolError`` is the peer's ``RemoteProtocolError``.

``HOOKED`` lists each use with the shape it expects; tests/proxy/test_h11_hooks.py checks them
(and compares every result with an ``h11.Connection``'s), so an h11 upgrade that renames or
reshapes one fails there, not in a relay.
"""

from __future__ import annotations

from typing import Any, cast

import h11
from h11 import _connection, _headers, _readers, _receivebuffer, _state

from trio_range.server.hooks_check import Hook

ReceiveBuffer = _receivebuffer.ReceiveBuffer

HOOKED: tuple[Hook, ...] = (
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
    Hook(_headers.Headers, "_full_items", None),
)

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
