"""The proxy's own ``httpx.AsyncBaseTransport``: one upstream, a pool (pool.py), h11 heads.

Why not httpx2's transport (docs/upstream-client.md): httpcore2 cost 0.47 ms of CPU per small
request (locks per state change, a poll object per expiry check, shield scopes, five nested
async generators, three copies of each body chunk). This transport keeps httpx's ``Response``
and exception classes and h11's grammar, and does per request: a slot (a semaphore token), an
idle connection or a new one, the head built in one string (request_head.py), the common
response head read by one regular expression (http/response_head.py) or else by h11's
reader (without an ``h11.Connection``: _h11_hooks.py), then a Content-Length body read
straight from the socket into fresh bytes that go to the client without copies (or spliced,
:meth:`UpstreamBody.relay_items`). Chunked and close-delimited bodies go through h11's body
readers; bodiless answers (HEAD, 204, 304) have a Content-Length of 0 here.

Every failure becomes an httpx exception in one place, :func:`to_httpx_error`, from the phase
the request was in; proxy/upstream.py then turns those into ours.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import h11
import httpx2 as httpx
import trio

from trio_range.http.response_head import parse_simple_head
from trio_range.proxy._httpx_hooks import headers_from_triples
from trio_range.proxy.pool import ConnectionPool, Lease, UpstreamConnection
from trio_range.proxy.request_head import RequestHead, request_head
from trio_range.server._h11_hooks import (
    ReceiveBuffer,
    body_framing,
    header_items,
    next_body_event,
    read_response,
)
from trio_range.server.splice_region import SPLICE_AVAILABLE, SpliceRegion, splice_regions

# Bytes asked of the upstream socket per read of a body. Each read costs the relay a fixed
# number of Python steps (one ASGI send, one h11 frame, one socket write), so larger reads
# relay faster (64 -> 256 KiB doubled a 512 MiB relay here); memory per relay is one read.
UPSTREAM_READ_BYTES = 256 * 1024
# A response head is read in pieces of this size; a small answer arrives whole in one.
HEAD_READ_BYTES = 64 * 1024
# A body shorter than this after its head's read is read, not spliced: one recv beats two
# splices through a pipe (and the pipe's creation on a connection's first splice).
SPLICE_MIN_BYTES = 64 * 1024
# As httpcore: a response head larger than this is a protocol error.
MAX_HEAD_BYTES = 100 * 1024

# A body's (length, h11 reader, keep-alive): see _h11_hooks.body_framing.
Framing = tuple[int | None, Any, bool]


class _Truncated(Exception):
    """The upstream closed the connection before the end of a Content-Length body."""


class _StaleConnection(Exception):
    """A reused connection failed before any response byte: it was closed while idle."""


def to_httpx_error(error: BaseException, phase: str) -> httpx.TransportError:
    """The httpx exception for ``error`` raised while the request was in ``phase``."""
    if isinstance(error, httpx.TransportError):
        return error
    if isinstance(error, trio.TooSlowError):
        return {
            "pool wait": httpx.PoolTimeout,
            "connecting": httpx.ConnectTimeout,
            "sending": httpx.WriteTimeout,
        }.get(phase, httpx.ReadTimeout)(f"{phase} timed out")
    if isinstance(error, h11.RemoteProtocolError | _Truncated | _StaleConnection):
        return httpx.RemoteProtocolError(str(error) or type(error).__name__)
    if isinstance(error, h11.LocalProtocolError):
        return httpx.LocalProtocolError(str(error))
    kind = {"connecting": httpx.ConnectError, "sending": httpx.WriteError}.get(
        phase, httpx.ReadError
    )
    return kind(f"{type(error).__name__}: {error}")


# What the transport catches and maps; anything else (Cancelled, our bugs) passes through.
_MAPPED: tuple[type[BaseException], ...] = (
    *(OSError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError),
    *(h11.ProtocolError, ssl.SSLError, _Truncated, _StaleConnection),
)


async def _open_connection(
    host: str, port: int, ssl_context: ssl.SSLContext | None
) -> UpstreamConnection:
    """A new TCP connection (and TLS session for https) to the upstream.

    The socket is made here, not by ``trio.open_tcp_stream``, to keep the stdlib object: the
    pool peeks at idle connections and splice reads from its descriptor.
    """
    addresses = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError | None = None
    for family, kind, proto, _, address in addresses:
        raw = socket.socket(family, kind, proto)
        try:
            raw.setblocking(False)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = trio.socket.from_stdlib_socket(raw)
            await sock.connect(address)
        except OSError as failure:
            raw.close()
            error = failure
            continue
        except BaseException:
            raw.close()
            raise
        stream = trio.SocketStream(sock)
        if ssl_context is None:
            return UpstreamConnection(stream, raw)
        tls = trio.SSLStream(stream, ssl_context, server_hostname=host, https_compatible=True)
        try:
            await tls.do_handshake()
        except BaseException:
            raw.close()
            raise
        return UpstreamConnection(tls, raw)
    raise error or OSError(f"no address for {host}")


class UpstreamTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 to the one upstream of ``base_url``, through a :class:`ConnectionPool`.

    A request that fails on a reused connection before any response byte arrived (the upstream
    closed it while idle) is retried once on a new connection; nothing else is retried.
    """

    def __init__(
        self,
        base_url: str,
        *,
        pool_size: int,
        keep_alive_s: float,
        connect_timeout_s: float,
        read_timeout_s: float,
        pool_timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        url = httpx.URL(base_url)
        tls = url.scheme == "https"
        if tls and ssl_context is None:
            ssl_context = httpx.create_ssl_context()
        host, port = url.host, url.port or (443 if tls else 80)
        context = ssl_context if tls else None
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.pool_timeout_s = pool_timeout_s

        async def connect() -> UpstreamConnection:
            with trio.fail_after(connect_timeout_s):
                return await _open_connection(host, port, context)

        self.pool = ConnectionPool(pool_size, keep_alive_s, connect)

    async def aclose(self) -> None:
        self.pool.close()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        content = await request.aread()
        target = request.extensions.get("target") or request.url.raw_path
        fields = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in request.headers.raw]
        deadline = trio.current_effective_deadline()
        return await self._send(request, target.decode("latin-1"), fields, content, deadline)

    async def open_response(
        self, method: str, target: str, fields: Sequence[tuple[str, str]], head_deadline: float
    ) -> httpx.Response:
        """:meth:`handle_async_request` without an ``httpx.Request`` (request_head.py says why).

        ``head_deadline``: when the caller's enclosing cancel scope ends the header phase (the
        head wait then needs no scope of its own when it comes first).
        """
        return await self._send(RequestHead(method, fields), target, fields, b"", head_deadline)

    async def _send(
        self,
        request: httpx.Request | RequestHead,
        target: str,
        fields: Sequence[tuple[str, str]],
        content: bytes,
        head_deadline: float,
    ) -> httpx.Response:
        lease: Lease | None = None
        phase = "pool wait"
        method = request.method
        try:
            lease = await self.pool.lease(request, self.pool_timeout_s)
            head = request_head(method, target, fields) + content
            try:
                return await self._exchange(lease, method, head, head_deadline)
            except _StaleConnection:
                lease.drop_connection()
                return await self._exchange(lease, method, head, head_deadline, fresh=True)
        except _MAPPED as error:
            if lease is not None:
                phase = lease.phase
            raise to_httpx_error(error, phase) from error
        finally:
            # Anything but a response handed out (an error, a cancellation at any await)
            # ends the lease here, synchronously: the slot is free and the connection closed.
            if lease is not None and lease.phase != "body":
                lease.release(reusable=False)

    async def _exchange(
        self, lease: Lease, method: str, head: bytes, head_deadline: float, *, fresh: bool = False
    ) -> httpx.Response:
        connection = await lease.connect(fresh=fresh)
        lease.phase = "sending"
        received = False
        try:
            await connection.send_all(head)
            lease.phase = "head wait"
            data = await connection.receive(HEAD_READ_BYTES, self.read_timeout_s, head_deadline)
            if not data:
                raise h11.RemoteProtocolError("upstream closed the connection before a head")
            received = True
            # The common answer whole in one read: http/response_head.py, without h11's reader.
            simple = parse_simple_head(data, method)
            if simple is None:
                buffer = ReceiveBuffer()
                buffer += data
                event = await self._read_head(connection, buffer)
        except (OSError, h11.RemoteProtocolError, trio.BrokenResourceError) as error:
            if lease.reused and not received:
                raise _StaleConnection(repr(error)) from error
            raise
        if simple is not None:
            framing: Framing = (simple.body_length, None, simple.keep_alive)
            status, fields, version, reason = simple.status, simple.fields, b"1.1", simple.reason
            rest: ReceiveBuffer | bytes = data[simple.end :]
        else:
            framing = body_framing(method.encode("ascii"), event)
            status, fields, version = event.status_code, header_items(event), event.http_version
            reason, rest = event.reason, buffer
        body = UpstreamBody(lease, framing, rest, self.read_timeout_s)
        response = httpx.Response(
            status,
            # The fields as h11 keeps them (names as received): see _httpx_hooks.py.
            headers=headers_from_triples(fields),
            stream=body,
            extensions={"http_version": b"HTTP/" + version, "reason_phrase": reason},
        )
        lease.phase = "body"  # from here the response's aclose ends the lease
        return response

    async def _read_head(self, connection: UpstreamConnection, buffer: ReceiveBuffer) -> Any:
        """h11's reading of a head (its reader, without a Connection: _h11_hooks.py says why),
        with more reads while it is incomplete."""
        while (event := read_response(buffer)) is None:
            if len(buffer) > MAX_HEAD_BYTES:
                raise h11.RemoteProtocolError("response head too long")
            data = await connection.receive(HEAD_READ_BYTES, self.read_timeout_s)
            if not data:
                raise h11.RemoteProtocolError("upstream closed the connection before a head")
            buffer += data
        return event


class UpstreamBody(httpx.AsyncByteStream):
    """A response body as it arrives; closing it ends the lease (reused only if clean).

    The connection goes back to the pool only when the body was read exactly to its end over
    HTTP/1.1 without ``Connection: close`` and nothing follows it; any other end closes it,
    and so does a close-delimited body (it ends only because the upstream closed).
    It is its own iterator (``__anext__``), not an async generator: trio registers every
    async generator it sees started and finalized, a tenth of this object's cost per request.
    """

    def __init__(
        self, lease: Lease, framing: Framing, rest: ReceiveBuffer | bytes, read_timeout_s: float
    ) -> None:
        """``rest``: what was read after the head (a ``ReceiveBuffer`` when ``framing`` has an
        h11 reader, which reads the body from it)."""
        self._lease = lease
        self._read_timeout_s = read_timeout_s
        self._clean = False
        # None: h11's reader reads the body from ``buffer`` (chunked, close-delimited).
        self._remaining, self._reader, self._keep_alive = framing
        self._buffer: Any = rest
        self._closed = False  # the upstream closed the connection (a framed body's reads)
        self._leftover = b""
        if self._remaining is not None:
            self._leftover = bytes(rest)
            if len(self._leftover) > self._remaining:
                # More than the body: whatever follows it is not ours to read.
                self._keep_alive = False
                self._leftover = self._leftover[: self._remaining]

    @property
    def connection(self) -> UpstreamConnection:
        connection = self._lease.connection
        if connection is None:
            raise httpx.StreamClosed()
        return connection

    def __aiter__(self) -> UpstreamBody:
        return self

    async def __anext__(self) -> bytes:
        try:
            if self._remaining is None:
                chunk = await self._next_framed()
                if chunk is not None:
                    return chunk
            elif self._leftover:
                chunk, self._leftover = self._leftover, b""
                self._remaining -= len(chunk)
                return chunk
            elif self._remaining:
                chunk = await self._receive(self._remaining)
                self._remaining -= len(chunk)
                return chunk
        except _MAPPED as error:
            raise to_httpx_error(error, "body") from error
        self._clean = self._keep_alive
        raise StopAsyncIteration

    def relay_items(
        self, *, splice: bool, on_failure: Any = None
    ) -> AsyncIterator[bytes | SpliceRegion]:
        """The body for a relay: bytes, or :class:`SpliceRegion` items where ``splice`` allows.

        ``splice`` says the client's side can take kernel regions (a plain TCP client on
        trio_range's server); they are used for a Content-Length body over plain TCP on Linux.
        ``on_failure`` gets "timeout" or "truncated" when a spliced region fails (the error
        itself is raised inside the server's send, not here). Without splicing, the body
        itself (no async generator around it: trio's hooks register each one started).
        """
        remaining = self._remaining or 0
        spliced = remaining - len(self._leftover) >= SPLICE_MIN_BYTES
        if not (splice and SPLICE_AVAILABLE and spliced and self.connection.plain):
            return self
        return self._spliced(remaining, on_failure)

    async def _spliced(
        self, remaining: int, on_failure: Any
    ) -> AsyncGenerator[bytes | SpliceRegion]:
        if self._leftover:
            chunk, self._leftover = self._leftover, b""
            self._remaining = remaining = remaining - len(chunk)
            yield chunk
        connection = self.connection
        for region in splice_regions(
            connection.raw, connection.pipe(), remaining, self._read_timeout_s, on_failure
        ):
            yield region
            remaining -= region.moved
            self._remaining = remaining
            if region.moved < region.count:
                return  # the client left part way: the connection is not reused
        # Splice moved exactly the body; anything already behind it is not ours.
        self._clean = self._keep_alive and connection.at_rest()

    async def _receive(self, remaining: int) -> bytes:
        # The last read asks for one byte more than the body: bytes after it mean the
        # connection is not at a message boundary (no extra syscall to find out).
        want = remaining + 1 if remaining < UPSTREAM_READ_BYTES else UPSTREAM_READ_BYTES
        data = await self.connection.receive(want, self._read_timeout_s)
        if not data:
            raise _Truncated(f"upstream closed the connection {remaining} bytes short")
        if len(data) > remaining:
            self._keep_alive = False
            return data[:remaining]
        return data

    async def _next_framed(self) -> bytes | None:
        """The next piece of a chunked or close-delimited body, read by h11; None at its end."""
        while self._reader is not None:
            event = next_body_event(self._reader, self._buffer, self._closed)
            if event is None:
                data = await self.connection.receive(UPSTREAM_READ_BYTES, self._read_timeout_s)
                if data:
                    self._buffer += data
                else:
                    self._closed = True
            elif type(event) is h11.Data:
                return bytes(event.data)
            else:
                # EndOfMessage: clean only if the upstream is still there and sent no more.
                self._keep_alive = self._keep_alive and not self._closed and not len(self._buffer)
                self._reader = None
        return None

    async def aclose(self) -> None:
        self._lease.release(reusable=self._clean)
