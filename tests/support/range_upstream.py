"""A scriptable range-serving HTTP/1.1 upstream on raw trio sockets, for the cache's tests.

It serves one representation at every target: ``content`` with ``etag`` (both may be replaced
between requests, as a file replaced on an origin), honouring ``Range: bytes=a-b`` with a 206
unless ``honour_range`` is False, ``If-None-Match`` with a 304, plus ``extra_headers`` on every
answer. Its bodies go out in ``PIECE_BYTES`` pieces; with ``gate`` set to an event, a body
stops after its first piece until the event is set, so a test can act mid-fill on observable
state (``pieces_sent``, ``requests``, ``peer_gone``) rather than on timing.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

PIECE_BYTES = 16 * 1024


@dataclasses.dataclass
class Seen:
    """One request as the upstream received it."""

    method: str
    target: str
    headers: dict[str, str]
    status: int = 0


@dataclasses.dataclass
class RangeUpstream:
    content: bytes
    etag: str = '"v1"'
    honour_range: bool = True
    extra_headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    gate: trio.Event | None = None
    # Close the connection after this many bytes of a body (a truncated answer), if set.
    truncate_after: int | None = None
    port: int = 0
    requests: list[Seen] = dataclasses.field(default_factory=list)
    pieces_sent: int = 0
    peer_gone: int = 0
    body_bytes_sent: int = 0
    _changed: trio.Event = dataclasses.field(default_factory=trio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ranges_served(self) -> list[str]:
        return [seen.headers.get("range", "") for seen in self.requests if seen.status == 206]

    def replace(self, content: bytes, etag: str) -> None:
        self.content, self.etag = content, etag

    def _note(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: object, timeout_s: float = 10.0) -> None:
        """Wait until ``predicate()`` holds, woken by each change here (bounded)."""
        with trio.fail_after(timeout_s):
            while not predicate():  # type: ignore[operator]
                await self._changed.wait()

    async def _answer(self, stream: trio.SocketStream, seen: Seen) -> bool:
        content = self.content
        fields = [("ETag", self.etag), ("Accept-Ranges", "bytes"), *self.extra_headers]
        fields.append(("Content-Type", "video/mp4"))
        if seen.headers.get("if-none-match") == self.etag:
            seen.status = 304
            await _send_head(stream, 304, fields)
            return True
        status, body = 200, content
        range_value = seen.headers.get("range", "")
        if self.honour_range and range_value.startswith("bytes="):
            first_text, _, last_text = range_value[6:].partition("-")
            first = int(first_text)
            last = min(int(last_text) if last_text else len(content) - 1, len(content) - 1)
            if first >= len(content):
                seen.status = 416
                fields.append(("Content-Range", f"bytes */{len(content)}"))
                await _send_head(stream, 416, [*fields, ("Content-Length", "0")])
                return True
            status, body = 206, content[first : last + 1]
            fields.append(("Content-Range", f"bytes {first}-{last}/{len(content)}"))
        seen.status = status
        await _send_head(stream, status, [*fields, ("Content-Length", str(len(body)))])
        if seen.method == "HEAD":
            return True
        if self.truncate_after is not None:
            await stream.send_all(body[: self.truncate_after])
            return False
        for offset in range(0, len(body), PIECE_BYTES):
            await stream.send_all(body[offset : offset + PIECE_BYTES])
            self.pieces_sent += 1
            self.body_bytes_sent += len(body[offset : offset + PIECE_BYTES])
            self._note()
            if offset == 0 and self.gate is not None:
                await self._hold(stream, self.gate)
        return True

    async def _hold(self, stream: trio.SocketStream, gate: trio.Event) -> None:
        """Wait for ``gate``, noticing meanwhile a peer that closes (its EOF)."""
        gone = False
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                nonlocal gone
                gone = not await stream.receive_some(1)
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            await gate.wait()
            nursery.cancel_scope.cancel()
        if gone:
            raise trio.BrokenResourceError("the peer closed while the body was held")

    async def handle(self, stream: trio.SocketStream) -> None:
        buffer = b""
        try:
            async with stream:
                while True:
                    while b"\r\n\r\n" not in buffer:
                        data = await stream.receive_some(65536)
                        if not data:
                            return
                        buffer += data
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")
                    method, target, _ = lines[0].split(" ", 2)
                    headers = {}
                    for line in lines[1:]:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                    seen = Seen(method, target, headers)
                    self.requests.append(seen)
                    self._note()
                    if not await self._answer(stream, seen):
                        return  # closes the connection: a truncated body
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            self.peer_gone += 1
            self._note()


async def _send_head(stream: trio.SocketStream, status: int, fields: list[tuple[str, str]]) -> None:
    reasons = {200: "OK", 206: "Partial Content", 304: "Not Modified", 416: "Range Not Satisfiable"}
    lines = [f"HTTP/1.1 {status} {reasons[status]}", *(f"{n}: {v}" for n, v in fields)]
    await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


@asynccontextmanager
async def open_range_upstream(content: bytes, **options: object) -> AsyncIterator[RangeUpstream]:
    upstream = RangeUpstream(content, **options)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, upstream.handle, 0, host="127.0.0.1")
        )
        upstream.port = listeners[0].socket.getsockname()[1]
        yield upstream
        nursery.cancel_scope.cancel()
