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
error. :func:`has_field` reads h11's parsed fields directly. **The server's connection**,
:class:`ServerConnection`: h11's state machine skipped where its outcome is fixed.

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
``h11.Connection``'s), so an h11 upgrade that renames or reshapes one fails there.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, cast

import h11
from h11 import _connection, _readers, _receivebuffer, _state, _util, _writers
from h11 import _headers as h11_headers
from h11._state import CLIENT, DONE, IDLE, SEND_BODY, SEND_RESPONSE, SERVER

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
    # ServerConnection's fast path; h11.Connection's instance attributes it uses (_cstate's
    # states, keep_alive, pending_switch_proposals, _reader, _writer, _receive_buffer._data,
    # _receive_buffer_closed, _request_method) are checked in tests/server/test_h11_server.py.
    Hook(h11.Connection, "_process_event", ("self", "role", "event")),
    Hook(h11.Connection, "_process_error", ("self", "role")),
    Hook(h11.Connection, "_respond_to_state_changes", ("self", "old_states", "event")),
    Hook(h11.Connection, "our_state", None),
    Hook(h11.Connection, "their_state", None),
    Hook(h11.Connection, "they_are_waiting_for_100_continue", None),
    Hook(_state, "CLIENT", None),
    Hook(_state, "SERVER", None),
    Hook(_readers, "maybe_read_from_IDLE_client", ("buf",)),
    Hook(_readers, "expect_nothing", ("buf",)),
    Hook(_readers.ContentLengthReader, "__init__", ("self", "length")),
    Hook(_writers, "WRITERS", None),
    Hook(_writers, "write_any_response", ("response", "write")),
    Hook(_writers.ContentLengthWriter, "__init__", ("self", "length")),
    Hook(_writers.ContentLengthWriter, "send_data", ("self", "data", "write")),
    Hook(_util.LocalProtocolError, "_reraise_as_remote_protocol_error", ("self",)),
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


_read_request = _readers.maybe_read_from_IDLE_client
_HEAD_WRITER: Any = _writers.write_any_response  # WRITERS' for a server IDLE or SEND_RESPONSE
_IDLE_READER: Any = _readers.READERS[(CLIENT, IDLE)]
_DONE_READER: Any = _readers.READERS[(CLIENT, DONE)]
_NO_BODY = _readers.ContentLengthReader(0)  # at 0 it keeps no state: one serves every request
_LengthWriter, _LocalError = _writers.ContentLengthWriter, _util.LocalProtocolError
# Fields that make h11 frame, switch, wait or reorder (its own methods handle them).
_SLOW_REQUEST_FIELDS = frozenset([b"upgrade", b"transfer-encoding", b"content-length", b"expect"])
_SLOW_RESPONSE_FIELDS = frozenset([b"transfer-encoding", b"connection", b"host"])
_ANSWERING = frozenset([SEND_RESPONSE, SEND_BODY, DONE])
_BODY_OR_DONE = frozenset([SEND_BODY, DONE])


class ServerConnection(h11.Connection):
    """An ``h11.Connection`` for ``h11.SERVER`` that skips h11's state machine where it can.

    h11's ``Connection`` recomputes states, readers and writers through about 145 Python calls
    per keep-alive request (issue 13). This subclass keeps h11's parser, writers, events and
    errors, and leaves ``_cstate``, the reader, the writer and every public attribute exactly
    as h11 would after each call; it only takes shortcuts where the outcome is fixed: a
    bodiless HTTP/1.1 keep-alive request (no Upgrade, CONNECT, Expect or Transfer-Encoding), a
    Content-Length response to it (not HEAD, 204, 304, no ``Connection`` or ``Host`` field), its
    ``Data`` and ``EndOfMessage``, ``start_next_cycle``. Anything else is h11's own method.
    ``our_state``, ``their_state`` and ``they_are_waiting_for_100_continue`` are plain
    attributes, refreshed wherever h11 responds to a state change (three properties a read).
    tests/server/test_h11_server.py compares it with ``h11.Connection`` step by step.
    """

    our_state: Any = IDLE  # plain attributes in place of h11's properties
    their_state: Any = IDLE
    they_are_waiting_for_100_continue: Any = False

    def _respond_to_state_changes(self, old_states: Any, event: Any = None) -> None:
        states = self._cstate.states
        self.our_state, self.their_state = states[SERVER], states[CLIENT]
        self.they_are_waiting_for_100_continue = self.client_is_waiting_for_100_continue
        super()._respond_to_state_changes(old_states, event)

    def receive_data(self, data: bytes) -> None:
        if data and not self._receive_buffer_closed:
            self._receive_buffer._data += data
        else:
            super().receive_data(data)

    def next_event(self) -> Any:
        cstate = self._cstate
        states = cstate.states
        client = states[CLIENT]
        if client is DONE:  # h11: PAUSED on waiting bytes, else expect_nothing's NEED_DATA
            if self._receive_buffer._data:
                return h11.PAUSED
            if not self._receive_buffer_closed:
                return h11.NEED_DATA
        elif client is SEND_BODY:
            if self._reader is _NO_BODY and states[SERVER] in _ANSWERING and cstate.keep_alive:
                states[CLIENT] = self.their_state = DONE
                self.client_is_waiting_for_100_continue = False
                self.they_are_waiting_for_100_continue = False
                self._reader = _DONE_READER
                return h11.EndOfMessage()
        elif client is IDLE and states[SERVER] is IDLE and cstate.keep_alive:
            try:
                event = _read_request(self._receive_buffer)
                if event is not None and not self._bodiless_keep_alive(event):
                    self._process_event(CLIENT, event)
                    return event
            except BaseException as error:  # as Connection.next_event
                self._process_error(CLIENT)
                if isinstance(error, _LocalError):
                    error._reraise_as_remote_protocol_error()
                raise
            if event is None:
                return super().next_event()  # the reader again: the same None (or 431, EOF)
            states[CLIENT] = self.their_state = SEND_BODY
            states[SERVER] = self.our_state = SEND_RESPONSE
            self._request_method, self.their_http_version = event.method, event.http_version
            self._writer = _HEAD_WRITER
            self._reader = _NO_BODY
            return event
        return super().next_event()

    @staticmethod
    def _bodiless_keep_alive(request: h11.Request) -> bool:
        if request.method == b"CONNECT" or request.http_version != b"1.1":
            return False
        connection = False
        for _, name, value in request.headers._full_items:
            if name in _SLOW_REQUEST_FIELDS:
                if name != b"content-length" or value != b"0":
                    return False
            elif name == b"connection":
                connection = True
        return not connection or _keep_alive(request)

    def send_with_data_passthrough(self, event: Any) -> list[bytes] | None:
        kind = type(event)
        cstate = self._cstate
        states = cstate.states
        server = states[SERVER]
        if kind is h11.Data and server is SEND_BODY:
            writer = self._writer
            if type(writer) is _LengthWriter:  # ContentLengthWriter.send_data
                data = event.data
                remaining = writer._length - len(data)
                if remaining >= 0:
                    writer._length = remaining
                    return [data]
        elif kind is h11.EndOfMessage and server is SEND_BODY:
            writer = self._writer
            if (
                type(writer) is _LengthWriter
                and writer._length == 0
                and not event.headers._full_items
                and cstate.keep_alive
                and states[CLIENT] in _BODY_OR_DONE
            ):
                states[SERVER] = self.our_state = DONE
                self._writer = None
                return []
        elif kind is h11.Response and server is SEND_RESPONSE:
            head = self._head(event)
            if head is not None:
                states[SERVER] = self.our_state = SEND_BODY
                self.client_is_waiting_for_100_continue = False
                self.they_are_waiting_for_100_continue = False
                return head
        return super().send_with_data_passthrough(event)

    def _head(self, response: h11.Response) -> list[bytes] | None:
        """What h11 writes for ``response`` and its Content-Length writer, if framed by it."""
        cstate = self._cstate
        status, reason = response.status_code, response.reason
        if (
            not cstate.keep_alive
            or cstate.pending_switch_proposals
            or self._request_method in (b"HEAD", b"CONNECT")
            or type(status) is not int
            or status in (204, 304)
            or response.http_version != b"1.1"
            or type(reason) is not bytes
        ):
            return None
        items = response.headers._full_items
        length = None
        for _, name, value in items:
            if name == b"content-length":
                length = value
            elif name in _SLOW_RESPONSE_FIELDS:
                return None
        if length is None:
            return None
        self._writer = _LengthWriter(int(length))
        lines = b"".join([b"%s: %s\r\n" % (raw, value) for raw, _, value in items])
        return [b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, reason, lines)]

    def start_next_cycle(self) -> None:
        states = self._cstate.states
        done = states[CLIENT] is DONE and states[SERVER] is DONE
        if done and not self.client_is_waiting_for_100_continue:
            self._cstate.states = {CLIENT: IDLE, SERVER: IDLE}
            self.our_state = self.their_state = IDLE
            self._request_method = None
            self._writer, self._reader = _HEAD_WRITER, _IDLE_READER
            return
        super().start_next_cycle()
