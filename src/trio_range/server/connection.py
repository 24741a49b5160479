"""The ASGI connection of one request: it owns the request's tasks and resources.

Quart-Trio runs each request as two tasks in one nursery (one reads ASGI messages, one sends
the response). Here a request without a body (GET, HEAD: every hot path) runs in one task: the
server's ``http.disconnect`` cancels its scope directly (app_queue.py), which saves a nursery,
a task and their scheduler passes (issue 13); requests with a body keep the two tasks. Three
traps of the stock class are fixed here (docs/references.md, "The stack"):

- Its disconnect watcher cancels the nursery when Hypercorn posts ``http.disconnect`` after a
  complete response, which cancels Hypercorn re-arming the keep-alive timer inside the final
  ``send``: idle keep-alive connections then never close. Here a complete response is never
  cancelled.
- A body generator that never started (the client left after the view returned) never runs its
  ``finally``, so whatever the view opened leaks. Here every request owns an ``AsyncExitStack``
  (:func:`current_exchange` ``.resources``) that the connection closes whatever happened
  (shielded, when a close awaits); views register what they open there.
- A body that ends short of its Content-Length must not look complete: the connection counts the
  bytes and aborts the client connection (no final empty body message, so Hypercorn closes the
  socket) instead of sending a short message.

Body items are bytes, or :class:`~trio_range.server.file_region.KernelRegion` items (file
regions, spliced upstream bodies) that the connection hands to the server's writer; whether a
file region is sent or read is decided in one place (server/file_body.py), where the file is
known.

It also applies no ``RESPONSE_TIMEOUT``: a paused video legitimately streams for hours, and
sends header names as the app set them (:func:`send_response`), where Quart lowercases them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING

import trio
from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
)
from quart.wrappers import Request, Response
from quart.wrappers.response import IterableBody
from werkzeug.wrappers import Response as WerkzeugResponse

from trio_range.errors import StreamAborted
from trio_range.server._hypercorn_hooks import client_gone
from trio_range.server._quart_hooks import QuartConnection, complete_empty_body
from trio_range.server.app_queue import watch_disconnect
from trio_range.server.exchange import (
    Exchange,
    ExchangeObserver,
    Resources,
    enter_exchange,
    first_fields,
    leave_exchange,
)
from trio_range.server.file_region import SEND_FILE_KEY, KernelRegion

if TYPE_CHECKING:
    from trio_range.server.app import RangeApp

log = logging.getLogger("trio_range")

# Bounds the shielded cleanup of a request's resources: closing an upstream response or a file
# takes microseconds; a stuck close must not hold the connection task forever.
CLEANUP_TIMEOUT_S = 5.0


class RangeHTTPConnection(QuartConnection):
    """Quart-Trio's HTTP connection with the fixes described in the module docstring."""

    app: RangeApp

    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        request = self.build_request(send)
        fields = first_fields(self.scope["headers"])
        resources = Resources()
        range_header = fields.get(b"range")
        exchange = Exchange(
            method=request.method,
            path=request.path,
            query=self.scope["query_string"].decode("latin-1"),
            range_header=None if range_header is None else range_header.decode("latin-1"),
            resources=resources,
            started_at=trio.current_time(),
            fields=fields,
        )
        complete = _Completion()
        send_file = self.scope.get("state", {}).get(SEND_FILE_KEY)
        token = enter_exchange(exchange)
        self.app.in_flight += 1
        try:
            with trio.CancelScope() as one_task:
                if _has_no_body(fields) and watch_disconnect(
                    receive, partial(_cancel_unless_complete, one_task, complete)
                ):
                    # No body to read (GET, HEAD): the view runs in this task, and the server's
                    # http.disconnect cancels it directly, unless the response is complete.
                    complete_empty_body(request)
                    await self._respond(None, request, send, send_file, exchange, complete)
                else:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(
                            self._watch_disconnect, nursery, request, receive, complete
                        )
                        nursery.start_soon(
                            self._respond,
                            nursery.cancel_scope,
                            request,
                            send,
                            send_file,
                            exchange,
                            complete,
                        )
        finally:
            self.app.in_flight -= 1
            leave_exchange(token)
            if resources.awaits:
                with trio.CancelScope(shield=True) as cleanup:
                    cleanup.deadline = trio.current_time() + CLEANUP_TIMEOUT_S
                    await _close_resources(exchange)
                if cleanup.cancelled_caught:
                    log.error(
                        "closing the resources of %s %s timed out", exchange.method, exchange.path
                    )
            else:
                # Only synchronous closes (the origin's file): aclose reaches no checkpoint, so
                # no cancel can interrupt it and nothing can stall it; no scope needed.
                await _close_resources(exchange)
            exchange.finished_at = trio.current_time()
            if exchange.outcome == "pending":
                # Cancelled before the final (empty) body message: a client that closes right
                # after the last byte (curl, players) still received everything.
                delivered = (
                    exchange.declared_length is not None
                    and exchange.bytes_sent == exchange.declared_length
                    and exchange.status != 0
                )
                exchange.outcome = "completed" if delivered else "aborted"
            self.app.observer.exchange_finished(exchange)

    async def _watch_disconnect(
        self,
        nursery: trio.Nursery,
        request: Request,
        receive: ASGIReceiveCallable,
        complete: _Completion,
    ) -> None:
        # Returns when Hypercorn posts http.disconnect: the client left, or the response ended.
        await self.read_until_disconnect(request, receive)
        if not complete.done:
            nursery.cancel_scope.cancel()

    async def _respond(
        self,
        watching: trio.CancelScope | None,
        request: Request,
        send: ASGISendCallable,
        send_file: SendFile | None,
        exchange: Exchange,
        complete: _Completion,
    ) -> None:
        response = await self.app.handle_request(request)
        observed = _ObservedSend(send, send_file, exchange, complete, self.app.observer)
        try:
            await send_response(observed, response)
        except _ClientGone:
            pass  # completed or aborted: __call__ decides by the bytes delivered
        except StreamAborted as error:
            exchange.outcome = "failed"
            exchange.detail = str(error)
            log.warning(
                "aborted %s %s after %d bytes: %s",
                exchange.method,
                exchange.path,
                exchange.bytes_sent,
                error,
            )
        except Exception as error:
            # Headers are out: the only honest signal left is to abort the connection. The
            # traceback goes to the server log, never to the client.
            exchange.outcome = "failed"
            exchange.detail = f"{type(error).__name__}: {error}"
            log.exception(
                "aborted %s %s after %d bytes", exchange.method, exchange.path, exchange.bytes_sent
            )
        if watching is not None:
            watching.cancel()  # the nursery's disconnect watcher: nothing left to watch


async def _close_resources(exchange: Exchange) -> None:
    try:
        await exchange.resources.aclose()
    except Exception:
        log.exception("closing the resources of %s %s failed", exchange.method, exchange.path)


def _has_no_body(fields: dict[bytes, bytes]) -> bool:
    """Whether the request has no body to read (RFC 9112 §6.3: neither of these fields)."""
    return b"content-length" not in fields and b"transfer-encoding" not in fields


class _Completion:
    """Whether the response's final message is being sent: a flag, not a ``trio.Event``
    (nothing waits for it; an Event is three Python calls a request, issue 13)."""

    done = False


def _cancel_unless_complete(scope: trio.CancelScope, complete: _Completion) -> None:
    # The server posts http.disconnect when the client left, and also after the final send of
    # a complete response, whose keep-alive re-arming must not be cancelled.
    if not complete.done:
        scope.cancel()


async def send_response(send: ASGISendCallable, response: Response | WerkzeugResponse) -> None:
    """Send ``response`` as ASGI messages, each header name spelled as the app set it.

    This replaces Quart's ``ASGIHTTPConnection._send_response``, whose ``encode_headers``
    (quart/utils.py) lowercases every name. RFC 9110 §5.1 makes field names case-insensitive,
    but some clients read them literally: GDAL's /vsicurl/ searches a multi-range answer for the
    exact bytes ``Content-Type: multipart/byteranges; boundary=`` and, not finding them,
    retries and falls back to one request per range. nginx, Apache and Go send canonical
    names; every name our apps set is canonical (``Content-Range``, ``ETag``), and the proxy's
    relayed names are the upstream's own (proxy/relay.py). Built on Quart's public ``Response``
    API (status, headers, the body's async iterator), like the method it replaces: a
    Werkzeug response's body is a plain iterable, and ``str`` items are sent as UTF-8.
    """
    # Typed, not cast(): cast is a Python call too (issue 13 counts them).
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": response.status_code,
        "headers": _fields_bytes(response.headers),  # iterates as (name, value) pairs
    }
    await send(start)
    if isinstance(response, WerkzeugResponse):
        for data in response.response:
            await _send_body(send, data)
    elif type(response.response) is IterableBody:
        # What its async with and async for do (three calls): iterate it, then aclose it.
        items = response.response.iter
        try:
            async for data in items:
                await _send_body(send, data)
        finally:
            if hasattr(items, "aclose"):
                await items.aclose()
    else:
        async with response.response as body:
            async for data in body:
                await _send_body(send, data)
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": b"", "more_body": False}
    await send(end)


async def _send_body(send: ASGISendCallable, data: object) -> None:
    # Kernel regions pass as they are: _ObservedSend hands them to the server's writer.
    body = data.encode() if isinstance(data, str) else data
    message: HTTPResponseBodyEvent = {
        "type": "http.response.body",
        "body": body,  # type: ignore[typeddict-item]
        "more_body": True,
    }
    await send(message)


def _fields_bytes(fields: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Every field as bytes: latin-1, all in one encode (not two calls a field), else field
    by field."""
    fields = list(fields)
    texts = [text for field in fields for text in field]
    try:
        parts = _NUL.join(texts).encode("latin-1").split(b"\x00")
    except UnicodeEncodeError:
        parts = []
    if len(parts) != len(texts):  # a NUL inside a name or value, or beyond latin-1
        return [(_field_bytes(name), _field_bytes(value)) for name, value in fields]
    return list(zip(parts[::2], parts[1::2], strict=True))


_NUL = "\x00"


def _field_bytes(text: str) -> bytes:
    # The proxy decodes relayed fields as latin-1 (proxy/relay.py), so encoding back the same
    # way restores the upstream's bytes exactly. A value of ours beyond latin-1 goes as UTF-8,
    # as Quart sends every value.
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode()


class _ObservedSend:
    """Wraps the ASGI ``send`` to count body bytes and refuse to complete a short body.

    It also hands :class:`~trio_range.server.file_region.KernelRegion` body items (file and
    spliced regions) to the server's writer, which only trio_range's own server has
    (serving.py): an app yields regions only where ``can_send_file`` said so.
    """

    __slots__ = ("_complete", "_exchange", "_observer", "_send", "_send_file")

    def __init__(
        self,
        send: ASGISendCallable,
        send_file: SendFile | None,
        exchange: Exchange,
        complete: _Completion,
        observer: ExchangeObserver,
    ) -> None:
        self._send = send
        self._send_file = send_file
        self._exchange = exchange
        self._complete = complete
        self._observer = observer

    async def __call__(self, message: ASGISendEvent) -> None:
        exchange = self._exchange
        kind = message["type"]
        if kind == "http.response.body":
            body: bytes | KernelRegion = message.get("body", b"")  # type: ignore[assignment]
            if isinstance(body, KernelRegion):
                if self._send_file is None:
                    raise TypeError("a kernel region body item, and the server has no writer")
                if client_gone(self._send):
                    raise _ClientGone
                written = await self._send_file(body)
                if exchange.first_byte_at is None:
                    exchange.first_byte_at = trio.current_time()
                exchange.bytes_sent += written
                return
            if not message.get("more_body", False):
                declared = exchange.declared_length
                sent = exchange.bytes_sent + len(body)
                if exchange.has_body and declared is not None and sent != declared:
                    if client_gone(self._send):
                        # The client left during the last write (a sendfile counts only what
                        # the kernel took): aborted by the client, not failed by us.
                        raise _ClientGone
                    raise StreamAborted(f"body ended at {sent} of {declared} declared bytes")
                # Set before the final send: a disconnect posted while Hypercorn re-arms its
                # keep-alive timer inside this send must not cancel it.
                self._complete.done = True
                await self._send(message)
                exchange.bytes_sent = sent
                exchange.outcome = "completed"
                return
            if body:
                if client_gone(self._send):
                    # The client has gone: Hypercorn's send would return normally and drop
                    # the bytes. Stop the body here rather than read on into sends that go
                    # nowhere, and count nothing more. (The chunk whose write found the client
                    # gone was counted: bytes_sent is exact within one chunk.)
                    raise _ClientGone
                await self._send(message)
                if exchange.first_byte_at is None:
                    exchange.first_byte_at = trio.current_time()
                exchange.bytes_sent += len(body)
            return
        if kind == "http.response.start":
            exchange.status = message["status"]  # type: ignore[typeddict-item]
            for name, value in message.get("headers", ()):  # type: ignore[attr-defined]
                # The 9th byte first: not Content-Type's or Content-Range's (76 "L", 108 "l").
                if name[8:9] in b"Ll" and name.lower() == b"content-length":
                    exchange.declared_length = int(value)
            self._observer.response_started(exchange)
            await self._send(message)
            if exchange.first_byte_at is None:
                exchange.first_byte_at = trio.current_time()
            return
        await self._send(message)


# The server's sendfile writer (ConnectionServer.send_file), found in the scope's state.
# It returns the bytes written: fewer than the region's if the client went away part way.
SendFile = Callable[[KernelRegion], Awaitable[int]]


class _ClientGone(Exception):
    """A body write found the client gone (Hypercorn reports it by closing its stream)."""
