"""Running an app on Hypercorn's trio worker: limits, graceful shutdown, signals."""

from __future__ import annotations

import logging
import math
import signal
import socket
import struct
from collections.abc import Awaitable, Callable
from contextlib import suppress
from functools import partial
from typing import Any, cast

import h11
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState, LifespanState
from hypercorn.utils import wrap_app

from trio_range.config import ProxyConfig, ServerConfig
from trio_range.server.connection import RangeApp
from trio_range.server.file_region import SEND_FILE_KEY, FileRegion, sendfile_region

log = logging.getLogger("trio_range")


def hypercorn_config(config: ServerConfig) -> HypercornConfig:
    """The Hypercorn settings that carry out ``config``."""
    hc = HypercornConfig()
    host = f"[{config.host}]" if ":" in config.host else config.host
    hc.bind = [f"{host}:{config.port}"]
    hc.keep_alive_timeout = config.keep_alive_timeout_s
    hc.graceful_timeout = config.shutdown_grace_s
    hc.h11_max_incomplete_size = config.max_header_bytes
    # Our own access log line carries range, bytes and outcome; Hypercorn's would repeat it.
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.include_server_header = False
    # A proxy relays the upstream's Date (and adds its own only to its local answers).
    hc.include_date_header = not isinstance(config, ProxyConfig)
    return hc


class _KeepAliveTimer:
    """Hypercorn's keep-alive timer as one task per connection, not one task per request.

    Hypercorn's ``TrioSingleTask`` starts a task (``nursery.start``, under a lock) each time a
    connection turns idle and cancels it when the next request arrives: 15 % of a trivial
    request's CPU under py-spy. Here the first ``restart`` starts one watcher task and later
    calls only move its deadline. The behaviour is Hypercorn's: an idle connection closes when
    it has been idle for the keep-alive timeout, or at once when the server shuts down; a busy
    one is left to its response (Hypercorn closes it after that response during shutdown).
    """

    def __init__(
        self, timeout: float, terminated: Any, close: Callable[[], Awaitable[None]]
    ) -> None:
        self._timeout = timeout
        self._terminated = terminated
        self._close = close
        self._deadline = math.inf  # when an idle connection closes; inf while busy
        self._watcher: trio.CancelScope | None = None
        self._waiting: trio.CancelScope | None = None
        self._turned_idle = trio.Event()

    async def restart(self, task_group: Any, action: object) -> None:
        """The connection turned idle (``action`` is Hypercorn's timeout task: not needed)."""
        self._deadline = trio.current_time() + self._timeout
        if self._watcher is None:
            self._watcher = trio.CancelScope()
            task_group.spawn(self._watch)
        elif self._waiting is not None:
            self._waiting.deadline = self._deadline
        self._turned_idle.set()

    async def stop(self) -> None:
        """The connection is busy with a request."""
        self._deadline = math.inf
        if self._waiting is not None:
            self._waiting.deadline = math.inf

    def close(self) -> None:
        """The connection ended: the watcher ends too."""
        self._deadline = math.inf
        if self._watcher is None:
            self._watcher = trio.CancelScope()
        self._watcher.cancel()

    async def _watch(self) -> None:
        assert self._watcher is not None
        with self._watcher:
            while True:
                with trio.CancelScope(deadline=self._deadline) as self._waiting:
                    await self._terminated.wait()
                self._waiting = None
                if self._deadline != math.inf:
                    break  # idle past the timeout, or idle at shutdown
                # Shutdown while busy: wait until the response is over.
                self._turned_idle = trio.Event()
                await self._turned_idle.wait()
            with trio.CancelScope(shield=True):
                await self._close()


class _TCPServer(TCPServer):
    """Hypercorn's connection handler, HTTP/1.1 only, ending when the client has closed.

    Its keep-alive timer is :class:`_KeepAliveTimer`. Two changes to Hypercorn's read loop:

    - Hypercorn switches a cleartext connection to HTTP/2 when it opens with the prior-knowledge
      preface or asks for an h2c upgrade, and an idle HTTP/2 connection is never dropped,
      whatever the keep-alive timeout: a one-packet slowloris. trio_range speaks HTTP/1.1; such
      a connection is closed.
    - Stock Hypercorn keeps the connection's task (and its place in any count) until its
      keep-alive timer runs out, even after the client closed: reading EOF does not stop the
      timer. Stopping it lets the task end with the client.
    """

    def __init__(
        self,
        app: AppWrapper,
        config: HypercornConfig,
        context: WorkerContext,
        state: LifespanState,
        stream: trio.SocketStream,
    ) -> None:
        # TCPServer is typed for TLS streams but takes a plain SocketStream (it checks).
        super().__init__(app, config, context, state, stream)  # type: ignore[arg-type]
        self.idle_task = _KeepAliveTimer(  # type: ignore[assignment]
            self.config.keep_alive_timeout, self.context.terminated, self._initiate_server_close
        )

    async def protocol_send(self, event: Event) -> None:
        # h11 frames the end of a Content-Length body as no bytes at all, and Hypercorn still
        # takes the send lock and a shielded checkpoint to write them, once per response.
        if isinstance(event, RawData) and not event.data:
            return
        await super().protocol_send(event)

    async def send_file(self, region: FileRegion) -> int:
        """Write ``region`` with sendfile as the next body bytes of the response being sent.

        h11 frames the region as any body data (it counts it against the Content-Length, or
        writes a chunk header) and hands it back untouched in its output. The write is shielded
        and under the send lock, as Hypercorn's own writes are. Returns the region's bytes
        written; a peer that went away part way is reported to the protocol as Hypercorn
        reports it, by closing the stream.
        """
        protocol = self.protocol.protocol
        assert isinstance(protocol, H11Protocol)
        connection = protocol.connection
        assert isinstance(connection, h11.Connection)
        pieces = connection.send_with_data_passthrough(h11.Data(data=region))  # type: ignore[arg-type]
        written = 0
        async with self.send_lock:
            try:
                with trio.CancelScope(shield=True):
                    for piece in pieces or ():
                        if isinstance(piece, FileRegion):
                            written = await sendfile_region(self.stream.socket, piece)
                            if written < piece.count:
                                raise trio.BrokenResourceError
                        else:
                            await self.stream.send_all(piece)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                await self.protocol.handle(Closed())
        return written

    async def _read_data(self) -> None:
        while True:
            try:
                with trio.fail_after(self.config.read_timeout or math.inf):
                    data = await self.stream.receive_some(MAX_RECV)
            except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                break
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"" or not isinstance(self.protocol.protocol, H11Protocol):
                break
        await self.protocol.handle(Closed())
        cast(_KeepAliveTimer, self.idle_task).close()


class ConnectionRegistry:
    """The open client connections of one server: counted, limited, and abortable.

    Hypercorn has no write timeout and shields its socket writes, so a client that stops
    reading holds its connection task for as long as the kernel keeps the socket. Two things
    bound that here: ``TCP_USER_TIMEOUT`` (the send-stall timeout, set on the listening socket
    and inherited by every accepted one) while the server runs, and :meth:`abort_all` when the
    shutdown grace period has passed, which resets every remaining socket so that each blocked
    write fails at once and its task ends.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: set[trio.SocketStream] = set()
        self.refused = 0

    async def handle(
        self, stream: trio.SocketStream, serve_connection: Callable[[trio.SocketStream], Any]
    ) -> None:
        if len(self.open) >= self.limit:
            self.refused += 1
            await _refuse(stream)
            return
        self.open.add(stream)
        try:
            await serve_connection(stream)
        finally:
            self.open.discard(stream)
            # Hypercorn closes the socket after an await (send_eof) that cancellation skips:
            # a connection cancelled at the grace deadline would leave its socket to the GC.
            stream.socket.close()

    def abort_all(self) -> int:
        """Reset every open connection (RST, not FIN: the client sees an aborted transfer)."""
        aborted = 0
        for stream in list(self.open):
            sock = stream.socket
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                continue
            aborted += 1
        return aborted


_OVERLOADED = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 20\r\nConnection: close\r\n\r\nService Unavailable\n"
)


async def _refuse(stream: trio.SocketStream) -> None:
    """Answer 503 on a connection over the limit, without parsing it, and close it."""
    with trio.move_on_after(1), suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(_OVERLOADED)
        await stream.send_eof()
        # Read what the client sent before closing: closing with unread data would reset the
        # connection, and the reset can destroy the 503 before the client reads it.
        while await stream.receive_some(65536):
            pass
    await trio.aclose_forcefully(stream)


def _listening_socket(config: ServerConfig) -> socket.socket:
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            # Inherited by accepted sockets: unacknowledged data (a client that stopped reading
            # without closing) aborts the connection after this long.
            sock.setsockopt(
                socket.IPPROTO_TCP,
                socket.TCP_USER_TIMEOUT,
                int(config.send_stall_timeout_s * 1000),
            )
        sock.bind((config.host, config.port))
        sock.listen(config.backlog)
    except OSError:
        sock.close()
        raise
    return sock


async def serve_app(
    app: RangeApp,
    config: ServerConfig,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until cancelled or ``shutdown_trigger`` returns; reports the bound URLs.

    Usage: ``urls = await nursery.start(serve_app, app, config)``. With ``port=0`` the kernel
    picks a free port and the reported URL says which.

    This is Hypercorn's trio worker loop (``hypercorn.trio.run.worker_serve``) with our own
    accept handler: it limits concurrent connections, and when ``shutdown_trigger`` returns it
    stops accepting, closes idle keep-alive connections, lets in-flight requests run for
    ``shutdown_grace_s``, then cancels the rest and resets their sockets.
    """
    hc = hypercorn_config(config)
    asgi = wrap_app(app, hc.wsgi_max_body_size, "asgi")
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(asgi, hc, lifespan_state)
    context = WorkerContext(None)
    registry = ConnectionRegistry(config.max_connections)
    app.extensions["trio_range.connections"] = registry
    listening = _listening_socket(config)
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(listening))
    host, port = listening.getsockname()[:2]
    url = (
        f"http://[{host}]:{port}"
        if listening.family == socket.AF_INET6
        else f"http://{host}:{port}"
    )

    async def serve_connection(stream: trio.SocketStream) -> None:
        state = ConnectionState(lifespan_state.copy())
        server = _TCPServer(asgi, hc, context, state, stream)
        # The app finds the connection's sendfile writer in its scope's state.
        state[SEND_FILE_KEY] = server.send_file
        await server

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as connections:
            log.info("Running on %s (Ctrl-C to stop)", url)
            task_status.started([url])
            try:
                async with listener, trio.open_nursery() as accepting:
                    accepting.start_soon(
                        partial(
                            trio.serve_listeners,
                            partial(registry.handle, serve_connection=serve_connection),
                            [listener],
                            handler_nursery=connections,
                        )
                    )
                    if shutdown_trigger is None:
                        await trio.sleep_forever()
                    await shutdown_trigger()
                    accepting.cancel_scope.cancel()
            finally:
                # Idle keep-alive connections close now (their idle task watches this event);
                # in-flight requests get the grace period, then are cancelled and reset.
                await context.terminated.set()
                deadline = trio.current_time() + config.shutdown_grace_s
                connections.cancel_scope.deadline = deadline
                lifespan_nursery.start_soon(_abort_after, registry, deadline, connections)
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


async def _abort_after(
    registry: ConnectionRegistry, deadline: float, connections: trio.Nursery
) -> None:
    """At the grace deadline, reset connections whose shielded writes ignore cancellation."""
    await trio.sleep_until(deadline)
    aborted = registry.abort_all()
    if aborted:
        log.warning("grace period over: aborted %d connection(s)", aborted)


async def stop_on_signals(
    nursery: trio.Nursery, *, task_status: trio.TaskStatus[trio.Event] = trio.TASK_STATUS_IGNORED
) -> None:
    """Report an event that the first SIGINT or SIGTERM sets; a second one cancels ``nursery``.

    Servers given ``event.wait`` as their shutdown trigger then stop gracefully: Ctrl-C and
    ``docker stop`` end the process with status 0, not a traceback.
    """
    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started(stop)
        async for signum in signals:
            if stop.is_set():
                log.warning("second %s: stopping now", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                return
            log.info("%s: finishing in-flight requests", signal.Signals(signum).name)
            stop.set()


async def run_until_signalled(
    start_servers: Callable[[trio.Nursery, Callable[[], Awaitable[None]]], Awaitable[None]],
) -> None:
    """Run the servers that ``start_servers`` starts until a signal stops them gracefully."""
    async with trio.open_nursery() as nursery:
        stop = await nursery.start(stop_on_signals, nursery)
        async with trio.open_nursery() as servers:
            await start_servers(servers, stop.wait)
        nursery.cancel_scope.cancel()
