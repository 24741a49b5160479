"""A small misbehaving HTTP/1.1 upstream on raw trio sockets, for the proxy's fault tests.

Each server has one behaviour, chosen when it is opened::

    async with open_faulty_upstream("truncate") as upstream:
        ...  # point the proxy at upstream.url, then inspect upstream.requests_seen etc.

Behaviours (every response is for any method and target; ``ok`` and ``echo_headers`` honour
HEAD by sending no body):

``ok``
    200, ``OK_BODY`` with its Content-Length, keep-alive: serves request after request.
``echo_headers``
    200 whose JSON body lists the request line and header fields exactly as received. The
    response also carries hop-by-hop fields (``Connection: close, X-Secret``, ``X-Secret``,
    ``Keep-Alive``, ``Proxy-Authenticate``, ``Upgrade``) and one end-to-end ``X-End-To-End``, so
    stripping can be observed in both directions. The connection closes after the response.
``hang_before_headers``
    reads the request and never answers, until the peer leaves or the server closes.
``hang_mid_body``
    declares ``Content-Length`` of ``HANG_DECLARED_BYTES`` (1 MiB), sends 64 KiB, then hangs.
``truncate``
    declares 1 MiB, sends 100 KiB, then closes cleanly (FIN).
``reset``
    declares 1 MiB, sends 100 KiB, waits for the peer to acknowledge them, then resets the
    connection (SO_LINGER 0: RST). The peer reads all 100 KiB, then ECONNRESET.
``slow_body``
    sends ``SLOW_PIECES`` pieces of 16 KiB, one every 10 ms (real time), recording when each
    left in ``piece_sent_at``. If ``slow_body_gate`` is set to an event before the request
    comes, the second piece waits for it too: a test can check that the first piece got
    through (a relay that buffers would hold it) whatever the machine's speed.
``stream_forever``
    declares a huge length and sends 64 KiB chunks until the peer goes away.

Whenever the peer leaves before a response is complete, ``peer_gone`` is set and
``peer_gone_at`` holds ``trio.current_time()`` at the moment it was noticed, so disconnect
propagation through a proxy can be measured. Every connection is bounded by
``MAX_CONNECTION_S``; everything runs in the nursery of :func:`open_faulty_upstream`.
"""

from __future__ import annotations

import fcntl
import functools
import json
import socket
import struct
import termios
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar, get_args

import trio

__all__ = [
    "BEHAVIOURS",
    "HANG_DECLARED_BYTES",
    "OK_BODY",
    "SLOW_PIECES",
    "SLOW_PIECE_BYTES",
    "STREAM_CHUNK_BYTES",
    "Behaviour",
    "FaultyUpstream",
    "open_faulty_upstream",
    "serve_faulty_upstream",
    "unused_port",
]

Behaviour = Literal[
    "ok",
    "echo_headers",
    "hang_before_headers",
    "hang_mid_body",
    "truncate",
    "reset",
    "slow_body",
    "stream_forever",
]
BEHAVIOURS: frozenset[str] = frozenset(get_args(Behaviour))

OK_BODY = b"0123456789abcdef" * 64  # 1 KiB, recognisable at any offset
HANG_DECLARED_BYTES = 1024 * 1024
HANG_SENT_BYTES = 64 * 1024
TRUNCATE_SENT_BYTES = 100 * 1024
SLOW_PIECE_BYTES = 16 * 1024
SLOW_PIECES = 16
SLOW_INTERVAL_S = 0.010
STREAM_CHUNK_BYTES = 64 * 1024
STREAM_DECLARED_BYTES = 1 << 40
MAX_HEAD_BYTES = 64 * 1024
RESET_DRAIN_TIMEOUT_S = 2.0
MAX_CONNECTION_S = 60.0

# The hop-by-hop fields echo_headers adds to its response, to be stripped by a proxy.
ECHO_HOP_BY_HOP_RESPONSE_FIELDS = [
    ("Connection", "close, X-Secret"),
    ("X-Secret", "1"),
    ("Keep-Alive", "timeout=5"),
    ("Proxy-Authenticate", "x"),
    ("Upgrade", "h2c"),
]


def unused_port() -> int:
    """A loopback port nothing listens on right now: connecting to it is refused.

    Bound and closed, so another process could take it later; good enough for a refused-
    connection upstream and for picking a port for a child process that reports bind errors.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _filler(size: int, offset: int = 0) -> bytes:
    # Bytes whose value depends on their position, so a reordered or shifted relay shows.
    return bytes((offset + i) % 251 for i in range(size))


def _unacknowledged_bytes(stream: trio.SocketStream) -> int:
    # Linux's SIOCOUTQ (TIOCOUTQ on a TCP socket): bytes sent but not yet acknowledged.
    raw = fcntl.ioctl(stream.socket.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    count: int = struct.unpack("i", raw)[0]
    return count


class _PeerGone(Exception):
    """The peer closed or reset the connection while we still had something to send."""


@dataclass
class FaultyUpstream:
    """A running faulty upstream and what it has observed so far."""

    behaviour: Behaviour
    port: int = 0
    connections_accepted: int = 0
    connections_closed: int = 0
    requests_seen: list[bytes] = field(default_factory=list)
    peer_gone: trio.Event = field(default_factory=trio.Event)
    peer_gone_at: float | None = None
    bytes_sent: int = 0
    piece_sent_at: list[float] = field(default_factory=list)
    slow_body_gate: trio.Event | None = None
    # Woken whenever a request head is seen or a connection closes.
    _progress: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_connections_closed(self, count: int = 1) -> None:
        """Wait until at least ``count`` connections have been closed on our side."""
        while self.connections_closed < count:
            await self._progress.park()

    async def wait_requests_seen(self, count: int = 1) -> None:
        """Wait until at least ``count`` request heads have been read."""
        while len(self.requests_seen) < count:
            await self._progress.park()

    # -- bookkeeping ------------------------------------------------------------------------

    def _note_request(self, head: bytes) -> None:
        self.requests_seen.append(head)
        self._progress.unpark_all()

    def _note_peer_gone(self) -> None:
        if self.peer_gone_at is None:
            self.peer_gone_at = trio.current_time()
        self.peer_gone.set()

    # -- one connection ---------------------------------------------------------------------

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections_accepted += 1
        try:
            with trio.move_on_after(MAX_CONNECTION_S):
                await _BEHAVIOURS[self.behaviour](self, RawConnection(stream))
        except _PeerGone:
            self._note_peer_gone()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # Broken while reading a request head: the peer left between requests.
            pass
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            self.connections_closed += 1
            self._progress.unpark_all()

    async def _serve_ok(self, conn: SocketConnection) -> None:
        while (head := await conn.read_head()) is not None:
            self._note_request(head)
            await conn.send_response(
                head,
                [
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Length", str(len(OK_BODY))),
                    ("ETag", '"faulty-ok"'),
                ],
                OK_BODY,
            )
            self.bytes_sent += len(OK_BODY)

    async def _serve_echo_headers(self, conn: SocketConnection) -> None:
        head = await conn.read_head()
        if head is None:
            return
        self._note_request(head)
        request_line, *lines = head.decode("latin-1").split("\r\n")
        fields = [line.split(":", 1) for line in lines if line]
        body = json.dumps(
            {
                "request_line": request_line,
                "headers": [[name, value.strip(" \t")] for name, value in fields],
            }
        ).encode()
        await conn.send_response(
            head,
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("X-End-To-End", "kept"),
                # For the proxy to relay, and never to keep (it serves many clients).
                ("Set-Cookie", "session=from-upstream; Path=/"),
                *ECHO_HOP_BY_HOP_RESPONSE_FIELDS,
            ],
            body,
        )

    async def _serve_hang_before_headers(self, conn: SocketConnection) -> None:
        head = await conn.read_head()
        if head is None:
            return
        self._note_request(head)
        await conn.wait_peer_gone()

    async def _send_declared_then(
        self,
        conn: SocketConnection,
        declared: int,
        sent: int,
        then: Callable[[], Awaitable[None]],
    ) -> None:
        head = await conn.read_head()
        if head is None:
            return
        self._note_request(head)
        await conn.send_head(
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(declared))]
        )
        await conn.send(_filler(sent))
        self.bytes_sent += sent
        await then()

    async def _serve_hang_mid_body(self, conn: SocketConnection) -> None:
        await self._send_declared_then(
            conn, HANG_DECLARED_BYTES, HANG_SENT_BYTES, conn.wait_peer_gone
        )

    async def _serve_truncate(self, conn: SocketConnection) -> None:
        async def close_cleanly() -> None:
            # Nothing to do: _handle's aclose sends FIN with no unread request bytes pending.
            pass

        await self._send_declared_then(
            conn, HANG_DECLARED_BYTES, TRUNCATE_SENT_BYTES, close_cleanly
        )

    async def _serve_reset(self, conn: SocketConnection) -> None:
        async def reset() -> None:
            # close() with SO_LINGER on and a zero timeout discards the send queue and sends
            # RST; wait until the peer's kernel has acknowledged every byte, so it always gets
            # all 100 KiB before the reset (Linux delivers queued data, then ECONNRESET).
            with trio.move_on_after(RESET_DRAIN_TIMEOUT_S):
                while _unacknowledged_bytes(conn.stream) > 0:  # bounded just above
                    await trio.sleep(0.001)
            conn.stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

        await self._send_declared_then(conn, HANG_DECLARED_BYTES, TRUNCATE_SENT_BYTES, reset)

    async def _serve_slow_body(self, conn: SocketConnection) -> None:
        head = await conn.read_head()
        if head is None:
            return
        self._note_request(head)
        total = SLOW_PIECE_BYTES * SLOW_PIECES
        await conn.send_head(
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(total))]
        )
        for index in range(SLOW_PIECES):
            if index == 1 and self.slow_body_gate is not None:
                await self.slow_body_gate.wait()
            if index:
                await trio.sleep(SLOW_INTERVAL_S)
            await conn.send(_filler(SLOW_PIECE_BYTES, index * SLOW_PIECE_BYTES))
            self.bytes_sent += SLOW_PIECE_BYTES
            self.piece_sent_at.append(trio.current_time())

    async def _serve_stream_forever(self, conn: SocketConnection) -> None:
        head = await conn.read_head()
        if head is None:
            return
        self._note_request(head)
        await conn.send_head(
            [
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", str(STREAM_DECLARED_BYTES)),
            ]
        )
        chunk = _filler(STREAM_CHUNK_BYTES)

        async def send_until_gone() -> None:
            while True:  # bounded by MAX_CONNECTION_S in _handle
                await conn.send(chunk)
                self.bytes_sent += len(chunk)

        # A peer that closes is noticed either by the next send (RST) or by its FIN, whichever
        # comes first; one that merely stops reading is not gone.
        async with trio.open_nursery() as nursery:

            async def first_to_notice(wait: Callable[[], Awaitable[None]]) -> None:
                try:
                    await wait()
                except _PeerGone:
                    self._note_peer_gone()
                finally:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(first_to_notice, conn.wait_peer_gone)
            nursery.start_soon(first_to_notice, send_until_gone)


StreamT = TypeVar("StreamT", bound=trio.abc.Stream)


class RawConnection(Generic[StreamT]):
    """Reading request heads and writing responses on one accepted stream (the test upstreams
    of tests/proxy share it)."""

    def __init__(self, stream: StreamT) -> None:
        self.stream = stream
        self._buffer = bytearray()

    async def read_head(self) -> bytes | None:
        """The next request head through its blank line, or None if the peer closed first."""
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                return None  # not HTTP as we know it: hang up
            data = await self.stream.receive_some()
            if not data:
                return None
            self._buffer += data
        head = bytes(self._buffer[: end + 4])
        del self._buffer[: end + 4]
        return head

    async def send(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _PeerGone from exc

    async def send_head(self, fields: list[tuple[str, str]], status: str = "200 OK") -> None:
        lines = [f"HTTP/1.1 {status}", *(f"{name}: {value}" for name, value in fields)]
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def send_response(
        self, request_head: bytes, fields: list[tuple[str, str]], body: bytes
    ) -> None:
        await self.send_head(fields)
        if not request_head.startswith(b"HEAD "):
            await self.send(body)

    async def wait_peer_gone(self) -> None:
        """Return never; raise _PeerGone when the peer closes or resets the connection.

        Whatever the peer sends meanwhile (a pipelined request) is read and discarded.
        """
        try:
            while await self.stream.receive_some():
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _PeerGone from exc
        raise _PeerGone


SocketConnection = RawConnection[trio.SocketStream]

_BEHAVIOURS: dict[str, Callable[[FaultyUpstream, SocketConnection], Awaitable[None]]] = {
    "ok": FaultyUpstream._serve_ok,
    "echo_headers": FaultyUpstream._serve_echo_headers,
    "hang_before_headers": FaultyUpstream._serve_hang_before_headers,
    "hang_mid_body": FaultyUpstream._serve_hang_mid_body,
    "truncate": FaultyUpstream._serve_truncate,
    "reset": FaultyUpstream._serve_reset,
    "slow_body": FaultyUpstream._serve_slow_body,
    "stream_forever": FaultyUpstream._serve_stream_forever,
}
assert set(_BEHAVIOURS) == BEHAVIOURS


async def serve_faulty_upstream(
    behaviour: Behaviour,
    *,
    task_status: trio.TaskStatus[FaultyUpstream] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``behaviour`` on 127.0.0.1 until cancelled; report the FaultyUpstream when bound."""
    if behaviour not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {behaviour!r}; known: {sorted(BEHAVIOURS)}")
    upstream = FaultyUpstream(behaviour)
    async with trio.open_nursery() as nursery:
        listeners: list[trio.SocketListener] = await nursery.start(
            functools.partial(trio.serve_tcp, upstream._handle, 0, host="127.0.0.1")
        )
        upstream.port = listeners[0].socket.getsockname()[1]
        task_status.started(upstream)


@asynccontextmanager
async def open_faulty_upstream(behaviour: Behaviour) -> AsyncIterator[FaultyUpstream]:
    """Run a faulty upstream for the duration of the block; its connections close at exit."""
    try:
        async with trio.open_nursery() as nursery:
            upstream: FaultyUpstream = await nursery.start(serve_faulty_upstream, behaviour)
            try:
                yield upstream
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The nursery wraps whatever the block raised; hand a lone error back as it was raised,
        # so `pytest.raises` and tracebacks around the block read naturally.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
