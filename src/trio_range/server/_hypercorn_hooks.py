"""Every use of Hypercorn's undocumented internals, in one guarded place.

Hypercorn documents ``hypercorn.trio.serve`` and its ``Config``; the pieces of its trio worker
loop (``Lifespan``, ``WorkerContext``, ``TCPServer``, ``wrap_app``) and the attributes of its
protocol objects are not API. trio_range runs its own worker loop (serving.py) out of those
pieces to add a connection limit, graceful shutdown with a grace period, and sendfile, and
replaces three behaviours of the connection handler and two of its HTTP/1.1 writer (the status
line and the header names it writes, :class:`_WireFormat`). Each hook below names the upstream lines
it replaces or reads and why. ``HOOKED`` lists every attribute touched here with the shape the
hook expects: tests/server/test_hooks.py checks each one, so an upgrade that renames or
reshapes one fails loudly there instead of leaving a server whose keep-alive timer, sendfile
path or byte accounting silently stopped working.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import cast

import h11
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol.events import Body, EndBody, StreamClosed
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.events import Response as StreamResponse
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import HTTPStream
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.task_group import TaskGroup, _handle
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import TrioSingleTask, WorkerContext
from hypercorn.typing import (
    AppWrapper,
    ASGIFramework,
    ASGIReceiveEvent,
    ASGISendEvent,
    ConnectionState,
    LifespanState,
    Scope,
)
from hypercorn.utils import wrap_app

from trio_range.http.conditional import format_http_date
from trio_range.http.reasons import REASON_PHRASES as _REASONS
from trio_range.server._h11_hooks import has_field, response_event
from trio_range.server.app_queue import AppQueue
from trio_range.server.each_second import EachSecond
from trio_range.server.file_region import KernelRegion
from trio_range.server.hooks_check import Hook
from trio_range.server.keep_alive import KeepAliveTimer
from trio_range.server.socket_writer import SocketWriter

__all__ = [
    "HOOKED",
    "ConnectionServer",
    "Lifespan",
    "WorkerContext",
    "client_gone",
    "close_idle_connections",
    "new_connection_state",
    "wrap_asgi",
]

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
    Hook(HypercornConfig, "response_headers", ("self", "protocol")),
    Hook(HypercornConfig, "keep_alive_max_requests", None),
    Hook(HTTPStream, "app_send", ("self", "message")),
    Hook(Lifespan, "__init__", ("self", "app", "config", "state")),
    Hook(Lifespan, "handle_lifespan", ("self", "task_status")),
    Hook(Lifespan, "wait_for_startup", ("self",)),
    Hook(Lifespan, "wait_for_shutdown", ("self",)),
    Hook(WorkerContext, "__init__", ("self", "max_requests")),
    Hook(wrap_app, None, ("app", "wsgi_max_body_size", "mode")),
    # Instance attributes, checked on objects the test builds: TCPServer's idle_task,
    # send_lock, stream, config, context and (set in run) _task_group; ProtocolWrapper.protocol
    # (the H11Protocol) and its .connection (the h11.Connection), .config and
    # .keep_alive_requests; WorkerContext.terminated; HTTPStream.closed; Quart's Request.body.
)

# Hypercorn's idle_task replacement (keep_alive.py), under the name the tests know.
_KeepAliveTimer = KeepAliveTimer


def wrap_asgi(app: ASGIFramework, config: HypercornConfig) -> AppWrapper:
    """The app as Hypercorn's protocol layer calls it (``hypercorn/utils.py`` ``wrap_app``)."""
    return wrap_app(app, config.wsgi_max_body_size, "asgi")


def new_connection_state(lifespan_state: LifespanState) -> ConnectionState:
    """Each connection's copy of the lifespan state, as ``hypercorn.trio.run`` makes it."""
    return ConnectionState(lifespan_state.copy())


async def close_idle_connections(context: WorkerContext) -> None:
    """Start Hypercorn's shutdown: idle keep-alive connections close, busy ones finish.

    ``WorkerContext.terminated`` is what every connection's idle timer (:class:`_KeepAliveTimer`)
    watches."""
    await context.terminated.set()


def client_gone(send: Callable[..., Awaitable[None]]) -> bool:
    """Whether Hypercorn's stream behind the ASGI ``send`` is closed (False for other servers).

    Hypercorn's ``HTTPStream.app_send`` drops body messages once the client has gone and
    returns normally, so an app cannot tell a delivered chunk from a discarded one. Its
    ``closed`` flag can."""
    return getattr(getattr(send, "__self__", None), "closed", False) is True


# The fields Hypercorn adds itself (``Config.response_headers``, and ``H11Protocol.stream_send``
# and ``_send_error_response``), in lower case there; spelled here as nginx, Apache and Go
# spell them.
_CANONICAL_NAMES = {
    b"date": b"Date",
    b"server": b"Server",
    b"alt-svc": b"Alt-Svc",
    b"connection": b"Connection",
    b"content-length": b"Content-Length",
}


def _hypercorn_fields(config: HypercornConfig) -> list[tuple[bytes, bytes]]:
    """Hypercorn's own fields for a response (Date, Server, Alt-Svc, as configured), canonical."""
    return [
        (_CANONICAL_NAMES.get(name, name), value) for name, value in config.response_headers("h11")
    ]


class _WireFormat:
    """Hypercorn's HTTP/1.1 responses with a reason phrase and canonical names for its fields.

    Installed on one connection's ``H11Protocol`` (``hypercorn/protocol/h11.py``), it replaces:

    - the final-response branch of ``stream_send``, which builds ``h11.Response`` without a
      reason and appends ``date`` (and ``connection: close`` past ``keep_alive_max_requests``)
      in lower case. Same fields in the same order here; the app's names are left as the app
      sent them (connection.send_response keeps them, the proxy's are the upstream's). Every
      other event goes to Hypercorn's own ``stream_send``.
    - ``_send_error_response``: the answer to a request h11 rejects before any app code runs
      (400 for a malformed request, 431 for an oversized head). Same fields, canonical, plus a
      Date if Hypercorn's is off (the proxy's: its own answers carry one) and the server's
      ``error_headers`` (the proxy's Via: RFC 9110 §7.6.3 wants it on every message it sends).

    h11 writes names with the case it is given and the reason it is given. The head's fields
    are checked once, not field by field (``_h11_hooks.response_event``).
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
        # Where a response head waits for the next write (SocketWriter.hold); None: sent now.
        self._hold = hold
        self._fields = EachSecond(partial(_hypercorn_fields, protocol.config))

    def install(self) -> None:
        # Before the first request: HTTPStream takes ``protocol.stream_send`` when it is made.
        protocol = self._protocol
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
        response = response_event(event.status_code, headers, _REASONS.get(event.status_code, b""))
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


def _install_protocol_check(protocol: H11Protocol) -> None:
    """``H11Protocol._check_protocol`` over the names as h11 gives them: lowercased, stripped.

    Hypercorn decodes, strips and lowercases every field name of every request to find an
    ``Upgrade`` (h2c) before it makes the request's stream, and scans the names again there.
    A request that names no upgrade and is not the HTTP/2 preface needs neither; one that does
    goes to Hypercorn's own check, which decides as before.
    """
    hypercorn_check = protocol._check_protocol

    async def check_protocol(event: h11.Request) -> None:
        if event.method == b"PRI":
            await hypercorn_check(event)
            return
        if has_field(event.headers, b"upgrade"):
            await hypercorn_check(event)

    protocol._check_protocol = check_protocol  # type: ignore[method-assign]


class ConnectionServer(TCPServer):
    """Hypercorn's connection handler (``hypercorn/trio/tcp_server.py`` ``TCPServer``), changed.

    - Its keep-alive timer is :class:`_KeepAliveTimer` (replaces ``idle_task``).
    - :meth:`protocol_send` skips the empty write h11 makes at the end of every
      Content-Length body.
    - :meth:`send_file` writes a :class:`~trio_range.server.file_region.KernelRegion` (a file
      region with ``sendfile(2)``, a spliced one with ``splice(2)``) as the next body bytes,
      framed by h11.
    - Its writes go through :class:`~trio_range.server.socket_writer.SocketWriter`, and each
      request's ASGI ``receive`` is an :class:`~trio_range.server.app_queue.AppQueue`, not a
      memory channel (:meth:`_spawn_app`).
    - :meth:`_read_data` (replaced whole) ends the connection when the client has closed, and
      closes a connection that switched to HTTP/2 (below). Before the first read it installs
      :class:`_WireFormat` on the HTTP/1.1 protocol (reason phrases, canonical names), whose
      error answers carry ``error_headers`` too.

    Hypercorn switches a cleartext connection to HTTP/2 when it opens with the prior-knowledge
    preface or asks for an h2c upgrade, and an idle HTTP/2 connection is never dropped,
    whatever the keep-alive timeout: a one-packet slowloris. trio_range speaks HTTP/1.1; such a
    connection is closed. Stock Hypercorn also keeps the connection's task (and its place in
    any count) until its keep-alive timer runs out, even after the client closed: reading EOF
    does not stop the timer. Stopping it lets the task end with the client.
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
        # Hypercorn's RawData branch (send_lock, a shielded scope, send_all) for every write;
        # socket_writer.py says why not. h11 frames the end of a Content-Length body as no
        # bytes at all: nothing to write.
        # By exact type: Hypercorn's events are ABCs, each isinstance two more calls (issue 13).
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

        h11 frames the region as any body data (it counts it against the Content-Length, or
        writes a chunk header) and hands it back untouched in its output. The connection's
        :class:`~trio_range.server.socket_writer.SocketWriter` writes it under the send lock,
        shielded if the region says so (a file region, as Hypercorn shields its own writes;
        not a splice, which waits on the upstream and must end with its request). Returns the
        region's bytes written; a peer that went away part way is reported to the protocol as
        Hypercorn reports it, by closing the stream.
        """
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
        self._task_group.spawn(
            _handle,
            app,
            config,
            scope,
            queue.receive,
            send,
            trio.to_thread.run_sync,
            trio.from_thread.run,
        )
        return queue.put

    async def _read_data(self) -> None:
        # TCPServer.run made the protocol and its task group just before calling this; nothing
        # was read yet. The task group is the one every HTTPStream of the connection spawns in.
        self._task_group.spawn_app = self._spawn_app  # type: ignore[method-assign]
        read_timeout = self.config.read_timeout
        if isinstance(self.protocol.protocol, H11Protocol):
            _WireFormat(self.protocol.protocol, self._error_headers, self.writer.hold).install()
            _install_protocol_check(self.protocol.protocol)
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
