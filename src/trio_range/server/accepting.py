"""The accept loop: every connection waiting in the listen queue, in one scheduler pass.

``trio.serve_listeners`` accepts one connection per scheduler pass (``SocketListener.accept``
yields after each success). Under load a pass lasts as long as every runnable task's step,
so N clients connecting at once wait N passes to be accepted: their first request sits in the
kernel meanwhile, and its latency is the accept's. With issue 13's hot path a pass does a whole
request per connection, so passes are longer and this ramp was the tail: wrk c=64 against a
busy origin saw p99 2-3 s and max 2.4-4.4 s, all of it the first request of the connections
accepted last (server-side scheduling delays stayed under 0.3 s meanwhile).
:func:`serve_listener` accepts what the queue holds (up to :data:`ACCEPTS_PER_PASS`) each time
the listening socket is readable, then waits for it again (a pass: other tasks run).

Errors are handled as trio's loop handles them: a full descriptor table or memory shortage is
logged and retried after a pause; a connection that failed before it was accepted is skipped.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable

import trio

log = logging.getLogger("trio_range")

# Connections accepted in one pass, at most: a flood of connects cannot hold the event loop.
ACCEPTS_PER_PASS = 256

# As trio.serve_listeners: out of descriptors or memory, wait and retry.
_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_CAPACITY_PAUSE_S = 0.1

# As trio.SocketListener.accept: the connection failed before it was accepted; take the next.
_SKIPPED_ERRNOS = frozenset(
    getattr(errno, name)
    for name in [
        "EPERM",
        "ECONNABORTED",
        "EPROTO",
        "ECONNRESET",
        "ETIMEDOUT",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
        "ENOSR",
        "ESOCKTNOSUPPORT",
        "EPROTONOSUPPORT",
    ]
    if hasattr(errno, name)
)


async def serve_listener(
    listening: socket.socket,
    handler: Callable[[trio.SocketStream], Awaitable[object]],
    handler_nursery: trio.Nursery,
) -> None:
    """Accept connections on ``listening`` forever; each runs ``handler`` in ``handler_nursery``.

    ``listening`` must be non-blocking (it is once wrapped by ``trio.socket.from_stdlib_socket``).
    As with ``trio.serve_listeners``, each connection's stream is closed when its handler ends.
    """
    while True:
        await trio.lowlevel.wait_readable(listening)
        for _ in range(ACCEPTS_PER_PASS):
            try:
                sock, _ = listening.accept()
            except BlockingIOError:
                break
            except OSError as error:
                if error.errno in _SKIPPED_ERRNOS:
                    continue
                if error.errno not in _CAPACITY_ERRNOS:
                    raise
                log.error(
                    "accept failed: %s; retrying in %s s",
                    os.strerror(error.errno),
                    _CAPACITY_PAUSE_S,
                )
                await trio.sleep(_CAPACITY_PAUSE_S)
                break
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            handler_nursery.start_soon(_run_handler, stream, handler)


async def _run_handler(
    stream: trio.SocketStream, handler: Callable[[trio.SocketStream], Awaitable[object]]
) -> None:
    try:
        await handler(stream)
    finally:
        await trio.aclose_forcefully(stream)
