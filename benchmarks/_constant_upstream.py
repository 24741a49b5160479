"""``trio-range proxy`` whose upstream client answers at once, without I/O (issue 13).

    python -m benchmarks._constant_upstream proxy --port 8081 --upstream http://127.0.0.1:9

Starts the proxy exactly as ``trio-range`` does (its ``cli.main``), after replacing the class
its upstream client is built from with :class:`ConstantTransport`: every request gets a 206
of the bytes its Range asks for (zeros; 4 KiB for benchmarks/random_ranges.lua), made in
memory. What the proxy process then spends per request is its server side (reading the
client's request, the relay's logic, writing the answer) plus the httpx ``Response`` object
and its body iterator, the same for every version; the code before issue 13 also built an
``httpx.Request`` per request, which today's relay no longer does (:meth:`open_response`).

It works for the code before issue 13 (d49b32f, whose ``Upstream`` builds
``httpx2.AsyncHTTPTransport``) and for today's (``proxy.upstream.UpstreamTransport``): run it
with PYTHONPATH pointing at either ``src``. This module imports nothing of trio_range at the
top, so whichever ``trio_range`` is first on the path is the one started.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx2 as httpx

FILE_BYTES = 1 << 30
ANSWER_BYTES = 4096
_ZEROS = bytes(1 << 16)


class _Body(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self._data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._data

    async def aclose(self) -> None:
        pass


class _NoPool:
    """What the proxy's statistics read of a pool: nothing is open."""

    def open_count(self) -> int:
        return 0


class ConstantTransport(httpx.AsyncBaseTransport):
    """An upstream that answers every request with a 206 of the asked bytes, no I/O."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.pool = _NoPool()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for name, value in request.headers.raw:
            if name.lower() == b"range":
                return _answer(value, request)
        return _answer(None, request)

    async def open_response(
        self, method: str, target: str, fields: Sequence[tuple[str, str]], head_deadline: float
    ) -> httpx.Response:
        """Today's ``UpstreamTransport.open_response``: no ``httpx.Request`` is built (the
        relay's own cut, issue 14; the code before issue 13 built one per request)."""
        for name, value in fields:
            if name.lower() == "range":
                return _answer(value.encode("latin-1"), None)
        return _answer(None, None)

    async def aclose(self) -> None:
        pass


def _answer(range_value: bytes | None, request: httpx.Request | None) -> httpx.Response:
    """A 206 of the bytes ``range_value`` asks for (the first ``ANSWER_BYTES`` otherwise)."""
    first, last = 0, ANSWER_BYTES - 1
    if range_value is not None and range_value.startswith(b"bytes="):
        start, _, end = range_value[6:].partition(b"-")
        if start.isdigit() and end.isdigit():
            first, last = int(start), min(int(end), FILE_BYTES - 1)
    length = last - first + 1
    body = _ZEROS[:length] if length <= len(_ZEROS) else bytes(length)
    headers = [
        (b"Content-Type", b"application/octet-stream"),
        (b"Accept-Ranges", b"bytes"),
        (b"ETag", b'"constant"'),
        (b"Last-Modified", b"Thu, 01 Jan 2026 00:00:00 GMT"),
        (b"Content-Range", b"bytes %d-%d/%d" % (first, last, FILE_BYTES)),
        (b"Content-Length", b"%d" % length),
    ]
    return httpx.Response(206, headers=headers, stream=_Body(body), request=request)


def install() -> None:
    """Make every upstream client the proxy builds from now on a :class:`ConstantTransport`."""
    from trio_range.proxy import upstream

    # Rebound in this process only; each version looks its name up when it builds the client
    # (the code before issue 13: httpx2.AsyncHTTPTransport; today's: UpstreamTransport).
    for owner, name in ((httpx, "AsyncHTTPTransport"), (upstream, "UpstreamTransport")):
        if hasattr(owner, name):
            setattr(owner, name, ConstantTransport)


def main(argv: Sequence[str] | None = None) -> int:
    install()
    from trio_range.cli import main as trio_range_main

    result: int = trio_range_main(list(sys.argv[1:] if argv is None else argv))
    return result


if __name__ == "__main__":
    sys.exit(main())
