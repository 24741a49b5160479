"""The open client connections of one server: counted, limited, and abortable at shutdown."""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

import trio

from trio_range.config import Network
from trio_range.http.forwarding import is_trusted

log = logging.getLogger("trio_range")


class ConnectionRegistry:
    """The open client connections of one server: counted, limited, and abortable.

    Hypercorn has no write timeout and shields its socket writes, so a client that stops
    reading holds its connection task for as long as the kernel keeps the socket. Two things
    bound that here: ``TCP_USER_TIMEOUT`` (the send-stall timeout, set on the listening socket
    and inherited by every accepted one) while the server runs, and :meth:`abort_all` when the
    shutdown grace period has passed, which resets every remaining socket so that each blocked
    write fails at once and its task ends.
    """

    def __init__(
        self,
        limit: int,
        *,
        per_client: int = 0,
        trusted: Sequence[Network] = (),
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.limit = limit
        self.open: set[trio.SocketStream] = set()
        self.refused = 0
        # Issue 16: connections per client address (0: no limit). A trusted proxy's
        # connections carry many clients: they are limited per request instead (guards.py).
        self.per_client = per_client
        self.trusted = tuple(trusted)
        self.by_client: dict[str, int] = {}
        self.on_refused = on_refused

    async def handle(
        self, stream: trio.SocketStream, serve_connection: Callable[[trio.SocketStream], Any]
    ) -> None:
        if len(self.open) >= self.limit:
            await self._refuse(stream, "max_connections")
            return
        client = self._limited_client(stream)
        if client is not None and self.by_client.get(client, 0) >= self.per_client:
            log.warning(
                "503: %s has %d connections open (max_connections_per_client)",
                client,
                self.per_client,
            )
            await self._refuse(stream, "max_connections_per_client")
            return
        self.open.add(stream)
        if client is not None:
            self.by_client[client] = self.by_client.get(client, 0) + 1
        try:
            await serve_connection(stream)
        finally:
            self.open.discard(stream)
            if client is not None:
                left = self.by_client.pop(client) - 1
                if left:
                    self.by_client[client] = left
            # Hypercorn closes the socket after an await (send_eof) that cancellation skips:
            # a connection cancelled at the grace deadline would leave its socket to the GC.
            stream.socket.close()

    def _limited_client(self, stream: trio.SocketStream) -> str | None:
        """The address whose connections ``stream`` counts against, or None if not limited."""
        if not self.per_client:
            return None
        try:
            peer = stream.socket.getpeername()
        except OSError:
            return None
        address = peer[0] if isinstance(peer, tuple) else str(peer)
        return None if is_trusted(address, self.trusted) else address

    async def _refuse(self, stream: trio.SocketStream, limit: str) -> None:
        self.refused += 1
        if self.on_refused is not None:
            self.on_refused(limit)
        await _refuse(stream)

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
