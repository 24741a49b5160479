"""Running an app on Hypercorn's trio worker: listening, connection limits, graceful shutdown.

:func:`serve_app` is Hypercorn's trio worker loop (``hypercorn.trio.run.worker_serve``) with our
own accept handler, assembled from Hypercorn's pieces through ``_hypercorn_hooks`` (the one
module that touches them). Signals are signals.py's; the connection count is registry.py's.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from functools import partial

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.typing import ConnectionState, LifespanState

from trio_range.config import ProxyConfig, ServerConfig, trusted_networks
from trio_range.http.forwarding import via_value
from trio_range.server._hypercorn_hooks import (
    ConnectionServer,
    Lifespan,
    WorkerContext,
    close_idle_connections,
    wrap_asgi,
)
from trio_range.server.accepting import serve_listener
from trio_range.server.app import RangeApp
from trio_range.server.file_region import SEND_FILE_KEY
from trio_range.server.heap import freeze_startup_heap, release_free_heap
from trio_range.server.registry import ConnectionRegistry

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


def protocol_error_headers(config: ServerConfig) -> list[tuple[bytes, bytes]]:
    """Fields for the answers Hypercorn writes before any app code runs (a malformed request's
    400): the app's own hooks never see those requests.

    A proxy's Via is on every message it sends, its own errors included (RFC 9110 §7.6.3).
    """
    if isinstance(config, ProxyConfig):
        return [(b"Via", via_value(config.via_name).encode("ascii"))]
    return []


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
    asgi = wrap_asgi(app, hc)
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(asgi, hc, lifespan_state)
    context = WorkerContext(None)
    stats = app.extensions.get("trio_range.stats")
    registry = ConnectionRegistry(
        config.max_connections,
        per_client=config.max_connections_per_client,
        trusted=trusted_networks(config.trusted_proxies),
        on_refused=stats.record_refusal if stats is not None else None,
    )
    error_headers = protocol_error_headers(config)
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
        state = ConnectionState(lifespan_state.copy())  # as hypercorn.trio.run makes it
        server = ConnectionServer(asgi, hc, context, state, stream, error_headers=error_headers)
        # The app finds the connection's sendfile writer in its scope's state.
        state[SEND_FILE_KEY] = server.send_file
        await server

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        release_free_heap()  # what importing and starting freed goes back (heap.py says why)
        freeze_startup_heap()  # and what stayed leaves the full collections (heap.py)
        async with trio.open_nursery() as connections:
            log.info("Running on %s (Ctrl-C to stop)", url)
            task_status.started([url])
            try:
                async with listener, trio.open_nursery() as accepting:
                    # All waiting connections per pass, not one (accepting.py says why).
                    accepting.start_soon(
                        serve_listener,
                        listening,
                        partial(registry.handle, serve_connection=serve_connection),
                        connections,
                    )
                    if shutdown_trigger is None:
                        await trio.sleep_forever()
                    await shutdown_trigger()
                    accepting.cancel_scope.cancel()
            finally:
                # Idle keep-alive connections close now (their idle task watches this event);
                # in-flight requests get the grace period, then are cancelled and reset.
                await close_idle_connections(context)
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
