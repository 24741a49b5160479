"""The upstream connection pool: slots, idle connections and leases, with synchronous bookkeeping.

Why its own pool (docs/upstream-client.md): a proxy cancels requests all the time (every client
disconnect cancels its relay), at any await point. httpcore's pool hands connections from task
to task (the freeing task assigns a connection to a queued request), and a request cancelled in
the same scheduler pass leaked a slot (httpcore issue 1093). Here nothing is handed over:

- A slot is a ``trio.Semaphore`` token the request's own task acquires (trio's acquire either
  returns with the token or raises without it) and gives back in :meth:`Lease.release`.
- A connection belongs to exactly one lease from the moment it is taken from the idle list or
  connected until the lease is released; nothing else reads or writes it.
- :meth:`Lease.release` is synchronous (no await, so it cannot be cancelled half way) and runs
  in ``finally`` blocks and in the response's ``aclose``: the connection goes back to the idle
  list only if the transport says it stopped at a clean message boundary, else it is closed.

So ``open == idle + in use + connecting`` at every checkpoint, whatever was cancelled where.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from trio_range.server.splice_region import Pipe

# What an idle connection reads when peeked: nothing waiting is the only clean state.
_PEEK_FLAGS = socket.MSG_PEEK | socket.MSG_DONTWAIT


class UpstreamConnection:
    """One TCP (or TLS) connection to the upstream; used by one lease at a time."""

    __slots__ = ("_pipe", "idle_since", "plain", "raw", "requests", "sock", "stream")

    def __init__(
        self, stream: trio.SocketStream | trio.SSLStream[trio.SocketStream], raw: socket.socket
    ) -> None:
        self.stream = stream
        # Whether bytes on the socket are the HTTP bytes (no TLS): splice can move them, and
        # reads and writes go straight to the socket.
        self.plain = not isinstance(stream, trio.SSLStream)
        tcp = stream if isinstance(stream, trio.SocketStream) else stream.transport_stream
        self.sock: Any = tcp.socket  # trio's socket: its close tells trio's waiters
        self.raw = raw  # the same socket as the stdlib object: non-blocking peeks, splice
        self.idle_since = 0.0
        self.requests = 0  # answered on this connection so far
        self._pipe: Pipe | None = None

    async def receive(
        self, max_bytes: int, timeout_s: float, enclosing_deadline: float | None = None
    ) -> bytes:
        """Up to ``max_bytes`` (a fresh bytes object, handed on without copies); b"" at EOF.

        Raises ``trio.TooSlowError`` when nothing arrives within ``timeout_s``. One scheduler
        pass per call, where trio's socket methods take two (a checkpoint before the syscall
        and a shielded one after): a small request makes several of these.
        ``enclosing_deadline`` (a response head just after its request went out): the bytes
        can hardly be there yet, so wait for them before the first ``recv`` instead of after
        a failed one (a syscall and an exception per request); and when that deadline, which
        an enclosing cancel scope enforces, comes before ours, no scope of our own.
        """
        if not self.plain:
            with trio.CancelScope(deadline=trio.current_time() + timeout_s):
                data = await self.stream.receive_some(max_bytes)
                return data if isinstance(data, bytes) else bytes(data)
            raise trio.TooSlowError
        raw = self.raw
        if enclosing_deadline is None:
            try:
                data = raw.recv(max_bytes)
            except BlockingIOError:
                pass
            else:
                await trio.lowlevel.checkpoint()
                return data
        deadline = trio.current_time() + timeout_s
        if enclosing_deadline is not None and enclosing_deadline <= deadline:
            # Upstream.open's deadline for the response head (30 s against the 60 s read
            # timeout by default): ours could never fire, so no scope of our own (about 25
            # Python calls a request); the enclosing one cancels the wait.
            await trio.lowlevel.wait_readable(raw)
            try:
                return raw.recv(max_bytes)
            except BlockingIOError:
                pass
        while True:
            with trio.CancelScope(deadline=deadline) as scope:
                await trio.lowlevel.wait_readable(raw)
            if scope.cancelled_caught:
                raise trio.TooSlowError
            try:
                return raw.recv(max_bytes)
            except BlockingIOError:
                continue

    async def send_all(self, data: bytes) -> None:
        """Write ``data``; a request head usually fits the socket buffer in one ``send``."""
        if self.plain:
            try:
                sent = self.raw.send(data)
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        await self.stream.send_all(data)

    def pipe(self) -> Pipe:
        """The connection's pipe for splicing bodies, made on first use.

        Empty whenever the connection is idle: a connection is reused only after a body was
        moved whole, through the pipe and out of it.
        """
        if self._pipe is None:
            self._pipe = Pipe()
        return self._pipe

    def at_rest(self) -> bool:
        """Whether an idle connection has nothing to read: not closed by the upstream, no junk.

        One non-blocking ``recv(MSG_PEEK)``: an idle HTTP/1.1 connection the upstream closed
        reads EOF, and one with bytes waiting was left past a message boundary.
        """
        try:
            return not self.raw.recv(1, _PEEK_FLAGS)
        except BlockingIOError:
            return True
        except OSError:
            return False

    def close(self) -> None:
        """Close the socket now (synchronous: safe in ``finally`` and while cancelled).

        A TLS connection is dropped without close_notify: it is closed only when its state is
        unknown or it has expired, and the upstream treats both alike.
        """
        self.sock.close()
        if self._pipe is not None:
            self._pipe.close()


Connect = Callable[[], Awaitable[UpstreamConnection]]


class Lease:
    """One request's claim on the pool: its slot, then its connection, until released."""

    __slots__ = ("connection", "phase", "pool", "released", "request", "reused")

    def __init__(self, pool: ConnectionPool, request: object) -> None:
        self.pool = pool
        self.request = request  # what the pool is asked for (tests find requests by it)
        self.connection: UpstreamConnection | None = None
        self.reused = False
        self.released = False
        # "pool wait", "connecting", "sending", "head wait", "body": where the request is;
        # the transport maps a failure by the phase it happened in.
        self.phase = "pool wait"

    async def connect(self, *, fresh: bool = False) -> UpstreamConnection:
        """An idle connection at rest (unless ``fresh``), or a new one.

        The lease must hold no connection.
        """
        pool = self.pool
        connection = None if fresh else pool.take_idle()
        if connection is not None:
            self.reused = True
        else:
            self.phase = "connecting"
            pool.connecting += 1
            try:
                connection = await pool.open_connection()
            finally:
                pool.connecting -= 1
            self.reused = False
        # No checkpoint between the connection existing and the lease owning it.
        pool.active.add(connection)
        self.connection = connection
        return connection

    def drop_connection(self) -> None:
        """Close the lease's connection (it failed); the slot stays held for a retry."""
        connection, self.connection = self.connection, None
        if connection is not None:
            self.pool.active.discard(connection)
            connection.close()

    def release(self, reusable: bool) -> None:
        """Give the connection back (idle if ``reusable``, else closed) and the slot; idempotent.

        Synchronous, so it runs whole even in a cancelled task.
        """
        if self.released:
            return
        self.released = True
        pool = self.pool
        pool.requests.discard(self)
        connection, self.connection = self.connection, None
        if connection is not None:
            pool.active.discard(connection)
            if reusable and not pool.closed:
                connection.requests += 1
                connection.idle_since = trio.current_time()
                pool.idle.append(connection)
            else:
                connection.close()
        pool.slots.release()


class ConnectionPool:
    """At most ``size`` connections, idle ones kept for ``keep_alive_s``."""

    def __init__(self, size: int, keep_alive_s: float, open_connection: Connect) -> None:
        self.slots = trio.Semaphore(size)
        self.size = size
        self.keep_alive_s = keep_alive_s
        self.open_connection = open_connection
        self.idle: list[UpstreamConnection] = []  # oldest first: released connections append
        self.active: set[UpstreamConnection] = set()
        self.connecting = 0
        self.requests: set[Lease] = set()  # every lease not yet released, waiting ones too
        self.closed = False

    async def lease(self, request: object, timeout_s: float) -> Lease:
        """A lease holding a slot; raises ``trio.TooSlowError`` after ``timeout_s`` without one.

        A new connection is opened only when no idle one is left, so every open connection was
        opened by a lease holding a slot: ``open <= size`` always.
        """
        lease = Lease(self, request)
        self.requests.add(lease)
        try:
            try:
                self.slots.acquire_nowait()
            except trio.WouldBlock:
                with trio.fail_after(timeout_s):
                    await self.slots.acquire()
        except BaseException:
            self.requests.discard(lease)
            raise
        return lease

    def take_idle(self) -> UpstreamConnection | None:
        """The most recently used idle connection still at rest; expired ones are closed."""
        self.expire_idle()
        while self.idle:
            connection = self.idle.pop()
            if connection.at_rest():
                return connection
            connection.close()
        return None

    def expire_idle(self) -> None:
        """Close idle connections older than ``keep_alive_s`` (before the upstream does)."""
        if not self.idle:
            return
        try:
            horizon = trio.current_time() - self.keep_alive_s
        except RuntimeError:
            return  # read from outside the trio thread (a statistics snapshot): count only
        idle = self.idle
        stale = 0
        while stale < len(idle) and idle[stale].idle_since <= horizon:
            idle[stale].close()
            stale += 1
        if stale:
            del idle[:stale]

    def open_count(self) -> int:
        """Connections open now: idle, in use, and being connected."""
        self.expire_idle()
        return len(self.idle) + len(self.active) + self.connecting

    def close(self) -> None:
        """Close every idle connection; connections in use close when their lease ends."""
        self.closed = True
        for connection in self.idle:
            connection.close()
        self.idle.clear()
