"""Every use of Hypercorn's undocumented internals, in one guarded place.

Hypercorn documents ``hypercorn.trio.serve`` and its ``Config``, not the pieces of its worker
loop and protocol objects that trio_range runs its own loop with (serving.py: connection limit,
graceful shutdown, sendfile) and replaces behaviours of; each hook says what and why. ``HOOKED``
lists every attribute touched with the shape expected, checked by tests/server/test_hooks.py:
an upgrade that reshapes one fails there, not as a server whose keep-alive or sendfile broke.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

import h11
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol.events import Body, EndBody, StreamClosed
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.events import Request as StreamRequest
from hypercorn.protocol.events import Response as StreamResponse
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream
from hypercorn.trio.lifespan import Lifespan as Lifespan
from hypercorn.trio.task_group import TaskGroup, _handle
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import TrioSingleTask
from hypercorn.trio.worker_context import WorkerContext as WorkerContext
from hypercorn.typing import (
    AppWrapper,
    ASGIFramework,
    ASGIReceiveEvent,
    ASGISendEvent,
    LifespanState,
    Scope,
)
from hypercorn.utils import build_and_validate_headers, wrap_app

from trio_range.http.conditional import format_http_date
from trio_range.http.reasons import CANONICAL_NAMES
from trio_range.http.reasons import REASON_PHRASES as _REASONS
from trio_range.server._h11_hooks import ServerConnection, has_field, response_event
from trio_range.server.app_queue import AppQueue
from trio_range.server.each_second import EachSecond
from trio_range.server.file_region import KernelRegion
from trio_range.server.hooks_check import Hook
from trio_range.server.keep_alive import KeepAliveTimer
from trio_range.server.socket_writer import SocketWriter

# What this module relies on, for tests/server/test_hooks.py: (owner, attribute, parameters
# the hook calls or overrides it with; None for a plain attribute or constant).
HOOKED: tuple[Hook, ...] = (
    Hook(TCPServer, "__init__", ("self", "app", "config", "context", "state", "stream")),
    Hook(TCPServer, "protocol_send", ("self", "event")),
    Hook(TCPServer, "_read_data", ("self",)),
    Hook(TCPServer, "_initiate_server_close", ("self",)),
    Hook(TCPServer, "_idle_timeout", ("self",)),
    Hook(TCPServer, "run", ("self",)),
    Hook(TrioSingleTask, "restart", ("self", "task_group", "action")),
    Hook(TrioSingleTask, "stop", ("self",)),
    Hook(TaskGroup, "spawn", ("self", "func", "args")),
    Hook(TaskGroup, "spawn_app", ("self", "app", "config", "scope", "send")),
    Hook(_handle, None, ("app", "config", "scope", "receive", "send", "sync_spawn", "call_soon")),
    Hook(H11Protocol, "handle", ("self", "event")),
    Hook(H11Protocol, "stream_send", ("self", "event")),
    Hook(H11Protocol, "_send_error_response", ("self", "status_code")),
    Hook(H11Protocol, "_send_h11_event", ("self", "event")),
    Hook(H11Protocol, "_maybe_recycle", ("self",)),
    Hook(H11Protocol, "_check_protocol", ("self", "event")),
    Hook(H11Protocol, "_create_stream", ("self", "request")),
    Hook(HypercornConfig, "h11_pass_raw_headers", None),
    Hook(HypercornConfig, "response_headers", ("self", "protocol")),
    Hook(HypercornConfig, "keep_alive_max_requests", None),
    Hook(HTTPStream, "app_send", ("self", "message")),
    Hook(ASGIHTTPState, "REQUEST", None),
    Hook(ASGIHTTPState, "RESPONSE", None),
    Hook(ASGIHTTPState, "CLOSED", None),
    Hook(HTTPStream, "handle", ("self", "event")),
    Hook(build_and_validate_headers, None, ("headers",)),
    Hook(Lifespan, "__init__", ("self", "app", "config", "state")),
    Hook(Lifespan, "handle_lifespan", ("self", "task_status")),
    Hook(Lifespan, "wait_for_startup", ("self",)),
    Hook(Lifespan, "wait_for_shutdown", ("self",)),
    Hook(WorkerContext, "__init__", ("self", "max_requests")),
    Hook(wrap_app, None, ("app", "wsgi_max_body_size", "mode")),
    # Instance attributes, checked on objects the test builds: TCPServer's idle_task,
    # send_lock, stream, config, context and (set in run) _task_group; ProtocolWrapper.protocol
    # (the H11Protocol) and its .connection (the h11.Connection), .config, .keep_alive_requests
    # and the attributes _install_request_path reads; WorkerContext.terminated; HTTPStream's
    # closed, state, response, send; Quart's Request.body.
)

# Hypercorn's idle_task replacement (keep_alive.py), under the name the tests know.
_KeepAliveTimer = KeepAliveTimer


def wrap_asgi(app: ASGIFramework, config: HypercornConfig) -> AppWrapper:
    """The app as Hypercorn's protocol layer calls it (``hypercorn/utils.py`` ``wrap_app``)."""
    return wrap_app(app, config.wsgi_max_body_size, "asgi")


async def close_idle_connections(context: WorkerContext) -> None:
    """Start Hypercorn's shutdown: idle keep-alive connections close, busy ones finish (every
    connection's :class:`_KeepAliveTimer` watches ``WorkerContext.terminated``)."""
    await context.terminated.set()


def client_gone(send: Callable[..., Awaitable[None]]) -> bool:
    """Whether Hypercorn's stream behind the ASGI ``send`` is closed (False for other servers).

    Hypercorn's ``HTTPStream.app_send`` drops body messages once the client has gone and returns
    normally: a delivered chunk looks like a discarded one. Its ``closed`` flag tells."""
    return getattr(getattr(send, "__self__", None), "closed", False) is True


def _hypercorn_fields(config: HypercornConfig) -> list[tuple[bytes, bytes]]:
    """Hypercorn's own fields for a response (Date, Server, Alt-Svc, as configured), canonical.

    Hypercorn spells them (and ``_send_error_response``'s) in lower case."""
    return [
        (CANONICAL_NAMES.get(name, name), value) for name, value in config.response_headers("h11")
    ]


class _WireFormat:
    """Hypercorn's HTTP/1.1 responses with a reason phrase and canonical names for its fields.

    Installed on one connection's ``H11Protocol`` (``hypercorn/protocol/h11.py``), it replaces:

    - the final-response branch of ``stream_send``, which builds ``h11.Response`` without a
      reason and appends ``date`` (and ``connection: close`` past ``keep_alive_max_requests``)
      in lower case. Same fields in the same order here, the app's names as the app sent them.
      Other events go to Hypercorn's own ``stream_send``.
    - ``_send_error_response`` (400, 431: h11 refused the request before any app code ran).
      Same fields, canonical, plus a Date if Hypercorn's is off and the server's
      ``error_headers`` (the proxy's Via: RFC 9110 §7.6.3 wants it on every message it sends).

    h11 writes the names and reason as given; the head is checked at once (``response_event``).
    """

    __slots__ = ("_error_headers", "_fields", "_hold", "_hypercorn_stream_send", "_protocol")

    def __init__(
        self,
        protocol: H11Protocol,
        error_headers: Sequence[tuple[bytes, bytes]],
        hold: Callable[[bytes], None] | None = None,
    ) -> None:
        self._protocol = protocol
        self._hypercorn_stream_send = protocol.stream_send
        self._error_headers = list(error_headers)
        self._hold = hold  # where a head waits for the next write (SocketWriter.hold); None: now
        self._fields = EachSecond(lambda _second: _hypercorn_fields(protocol.config))

    def install(self) -> None:
        protocol = self._protocol  # before the first request: HTTPStream takes stream_send
        protocol.stream_send = self.stream_send  # type: ignore[method-assign]
        protocol._send_error_response = self.send_error_response  # type: ignore[method-assign]

    async def stream_send(self, event: StreamEvent) -> None:
        protocol = self._protocol
        kind = type(event)  # a response's events by type (Hypercorn: 3-7 isinstance each)
        if kind is Body:
            await protocol._send_h11_event(h11.Data(data=event.data))  # type: ignore[attr-defined]
            return
        if kind is EndBody:
            await protocol._send_h11_event(h11.EndOfMessage())
            return
        if kind is StreamClosed:
            await protocol._maybe_recycle()
            return
        if not isinstance(event, StreamResponse) or event.status_code < 200:
            await self._hypercorn_stream_send(event)
            return
        headers = [*event.headers, *self._fields()]
        if protocol.keep_alive_requests >= protocol.config.keep_alive_max_requests:
            headers.append((b"Connection", b"close"))
        reason = _REASONS.get(event.status_code, b"")
        response = response_event(event.status_code, headers, reason, build_and_validate_headers)
        if self._hold is None:
            await protocol._send_h11_event(response)
            return
        # As _send_h11_event, but the head is held and leaves with the next write (the first
        # body bytes, a file region, or the end): one send for a small response.
        try:
            data = protocol.connection.send(response)
        except h11.LocalProtocolError:
            if protocol.connection.their_state != h11.ERROR:
                raise
        else:
            self._hold(data)

    async def send_error_response(self, status_code: int) -> None:
        protocol = self._protocol
        headers = [
            (b"Content-Length", b"0"),
            (b"Connection", b"close"),
            *_hypercorn_fields(protocol.config),
        ]
        if not any(name == b"Date" for name, _ in headers):
            headers.append((b"Date", format_http_date(int(time.time())).encode("ascii")))
        headers.extend(self._error_headers)
        await protocol._send_h11_event(
            h11.Response(
                status_code=status_code, headers=headers, reason=_REASONS.get(status_code, b"")
            )
        )
        await protocol._send_h11_event(h11.EndOfMessage())


class _HTTPStream(HTTPStream):
    """``HTTPStream`` whose final response head skips ``build_and_validate_headers`` (strip
    each name and value, refuse pseudo-headers: ~20 calls a head). :class:`_WireFormat` matches
    the head with h11's field patterns (no surrounding whitespace, no ``:`` in a name) and runs
    that check only on a head that fails them: the same fields reach h11, the same errors the
    app. ``handle`` takes a request's end and the stream's close by exact type (Hypercorn tries
    an ``isinstance`` of an ABC per branch, two calls each)."""

    async def handle(self, event: StreamEvent) -> None:
        kind = type(event)
        if kind is EndBody and not self.closed:
            await self.app_put({"type": "http.request", "body": b"", "more_body": False})
        elif kind is StreamClosed and not self.closed:
            self.closed = True
            if self.state != ASGIHTTPState.CLOSED:
                await self.config.log.access(self.scope, None, time.time() - self.start_time)  # type: ignore[arg-type]
            if self.app_put is not None:
                await self.app_put({"type": "http.disconnect"})
        else:
            await super().handle(event)

    async def app_send(self, message: ASGISendEvent | None) -> None:
        if (  # a final response's head (_WireFormat makes an informational one elsewhere)
            message is not None
            and message["type"] == "http.response.start"
            and self.state is ASGIHTTPState.REQUEST
            and int(message["status"]) >= 200
        ):
            self.response, headers = message, list(message.get("headers", ()))
            await self.send(StreamResponse(1, headers, int(message["status"])))
            self.state = ASGIHTTPState.RESPONSE
            return
        await super().app_send(message)


def _install_request_path(protocol: H11Protocol) -> None:
    """``H11Protocol._check_protocol`` and ``_create_stream`` over h11's parsed names, and its
    unused ``h11.Connection`` replaced by a :class:`ServerConnection` (h11's fast path).

    Hypercorn decodes, strips, lowercases every request's field names for an h2c ``Upgrade``,
    again for a WebSocket one, then copies the fields. One with no ``upgrade`` field (h11's
    names are lowercased) that is not the HTTP/2 preface needs neither; others go to Hypercorn."""
    protocol.connection = ServerConnection(h11.SERVER, protocol.config.h11_max_incomplete_size)
    hypercorn_check, hypercorn_create = protocol._check_protocol, protocol._create_stream

    async def check_protocol(event: h11.Request) -> None:
        if event.method == b"PRI" or has_field(event.headers, b"upgrade"):
            await hypercorn_check(event)

    async def create_stream(request: h11.Request) -> None:
        if has_field(request.headers, b"upgrade"):
            await hypercorn_create(request)
            return
        p = protocol
        p.stream = stream = _HTTPStream(
            p.app, p.config, p.context, p.task_group, p.ssl, p.client, p.server, p.stream_send, 1
        )
        raw = p.config.h11_pass_raw_headers  # Hypercorn's raw_items() or list(headers)
        headers = [(n if raw else low, v) for n, low, v in request.headers._full_items]
        version, method = request.http_version.decode(), request.method.decode("ascii").upper()
        await stream.handle(
            StreamRequest(1, headers, version, method, request.target, p.connection_state)
        )
        p.keep_alive_requests += 1
        await p.context.mark_request()

    protocol._check_protocol = check_protocol  # type: ignore[method-assign]
    protocol._create_stream = create_stream  # type: ignore[method-assign]


class ConnectionServer(TCPServer):
    """Hypercorn's connection handler (``hypercorn/trio/tcp_server.py`` ``TCPServer``), changed.

    - Its keep-alive timer is :class:`_KeepAliveTimer` (replaces ``idle_task``).
    - :meth:`protocol_send` skips the empty write h11 makes at the end of every
      Content-Length body.
    - :meth:`send_file` writes a :class:`~trio_range.server.file_region.KernelRegion` (file:
      ``sendfile(2)``, spliced: ``splice(2)``) as the next body bytes, framed by h11.
    - Writes go through :class:`~trio_range.server.socket_writer.SocketWriter`; each request's
      ASGI ``receive`` is an :class:`~trio_range.server.app_queue.AppQueue` (:meth:`_spawn_app`).
    - :meth:`_read_data` (replaced whole) ends the connection when the client has closed, and
      closes one that switched to HTTP/2 (below). Before the first read it installs
      :class:`_WireFormat` (reason phrases, canonical names, ``error_headers`` on error
      answers) and :func:`_install_request_path` on the HTTP/1.1 protocol.

    Hypercorn switches a cleartext connection to HTTP/2 on the prior-knowledge preface or an
    h2c upgrade, and never drops an idle HTTP/2 connection: a one-packet slowloris. trio_range
    speaks HTTP/1.1; such a connection is closed. Stock Hypercorn also keeps the connection's
    task until its keep-alive timer runs out even after the client closed; here it ends then.
    """

    def __init__(
        self,
        app: AppWrapper,
        config: HypercornConfig,
        context: WorkerContext,
        state: LifespanState,
        stream: trio.SocketStream,
        *,
        error_headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        # TCPServer is typed for TLS streams but takes a plain SocketStream (it checks).
        super().__init__(app, config, context, state, stream)  # type: ignore[arg-type]
        self.idle_task = _KeepAliveTimer(  # type: ignore[assignment]
            self.config.keep_alive_timeout, self.context.terminated, self._initiate_server_close
        )
        self._error_headers = error_headers
        self.writer = SocketWriter(stream.socket, self.send_lock, self._peer_gone)

    async def protocol_send(self, event: Event) -> None:
        # Not Hypercorn's RawData branch (socket_writer.py says why); h11's end of a Content-Length
        # body is no bytes: no write. By exact type: an isinstance of an ABC is two more calls.
        kind = type(event)
        if kind is RawData:
            if event.data or self.writer.holding:  # type: ignore[attr-defined]
                await self.writer.write((event.data,))  # type: ignore[attr-defined]
            return
        if kind is Updated:  # Hypercorn's branch, twice a request: busy, then idle
            if event.idle:  # type: ignore[attr-defined]
                await self.idle_task.restart(self._task_group, self._idle_timeout)
            else:
                await self.idle_task.stop()
            return
        if isinstance(event, Closed):
            await self.writer.flush()  # a held head: the client sees what was answered
        await super().protocol_send(event)

    async def _peer_gone(self) -> None:
        # What Hypercorn's protocol_send does when a write fails.
        await self.protocol.handle(Closed())

    async def send_file(self, region: KernelRegion) -> int:
        """Write ``region`` (its ``send_to``) as the next body bytes of the response being sent.

        h11 frames the region as any body data and hands it back untouched; the
        :class:`SocketWriter` writes it under the send lock, shielded if the region says so (a
        file region, not a splice, which waits on the upstream). Returns the bytes written; a
        peer gone part way is reported as Hypercorn does, closing the stream."""
        protocol = self.protocol.protocol
        assert isinstance(protocol, H11Protocol)
        connection = protocol.connection
        assert isinstance(connection, h11.Connection)
        pieces = connection.send_with_data_passthrough(h11.Data(data=region))  # type: ignore[arg-type]
        return await self.writer.write(pieces or ())

    async def _spawn_app(
        self,
        app: AppWrapper,
        config: HypercornConfig,
        scope: Scope,
        send: Callable[[ASGISendEvent | None], Awaitable[None]],
    ) -> Callable[[ASGIReceiveEvent], Awaitable[None]]:
        """``TaskGroup.spawn_app`` (``hypercorn/trio/task_group.py``) with an AppQueue.

        The same task running the same ``_handle`` around the app; only the queue differs.
        """
        queue = AppQueue(config.max_app_queue_size)
        threads = (trio.to_thread.run_sync, trio.from_thread.run)
        self._task_group.spawn(_handle, app, config, scope, queue.receive, send, *threads)
        return queue.put

    async def _read_data(self) -> None:
        # TCPServer.run made the protocol and the task group its HTTPStreams spawn in; no read yet.
        self._task_group.spawn_app = self._spawn_app  # type: ignore[method-assign]
        read_timeout = self.config.read_timeout
        if isinstance(self.protocol.protocol, H11Protocol):
            _WireFormat(self.protocol.protocol, self._error_headers, self.writer.hold).install()
            _install_request_path(self.protocol.protocol)
        while True:
            try:
                if read_timeout:
                    with trio.fail_after(read_timeout):
                        data = await self.stream.receive_some(MAX_RECV)
                else:
                    # No read timeout (Hypercorn's default): no cancel scope and deadline per read.
                    data = await self.stream.receive_some(MAX_RECV)
            except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                break
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"" or not isinstance(self.protocol.protocol, H11Protocol):
                break
        await self.protocol.handle(Closed())
        cast(_KeepAliveTimer, self.idle_task).close()
