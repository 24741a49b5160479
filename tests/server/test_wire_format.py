"""What both servers write on the wire: status lines with their reason phrase, header names as
nginx spells them, the upstream's own spelling relayed by the proxy, and its Via on every answer.

Read over raw sockets: httpx (like most clients) lowercases names, which would hide all of this.
RFC 9110 §5.1 makes field names case-insensitive, but clients that match bytes exist: GDAL's
/vsicurl/ looks for ``Content-Type: multipart/byteranges; boundary=`` (tests/test_gdal.py).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from tests.support.servers import (
    origin_config,
    proxy_config,
    raw_exchange,
    start_app,
    start_origin,
)
from trio_range.origin.app import create_app as create_origin
from trio_range.proxy.app import create_app as create_proxy

VIA = b"1.1 trio-range"

# Names whose usual spelling is not dash-separated title case (nginx, Apache and Go agree).
_SPECIAL = {b"etag": b"ETag", b"www-authenticate": b"WWW-Authenticate"}


def canonical(name: bytes) -> bytes:
    """``content-range`` -> ``Content-Range``, ``etag`` -> ``ETag``."""
    lower = name.lower()
    return _SPECIAL.get(lower, b"-".join(part.capitalize() for part in lower.split(b"-")))


def parse_head(response: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The status line and the fields of ``response``, names exactly as they were sent."""
    head, separator, _ = response.partition(b"\r\n\r\n")
    assert separator, response
    status_line, *lines = head.split(b"\r\n")
    fields = []
    for line in lines:
        name, colon, value = line.partition(b":")
        assert colon, line
        fields.append((name, value.strip()))
    return status_line, fields


def names(fields: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [name for name, _ in fields]


async def get(url: str, target: bytes, *extra: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    lines = [b"GET " + target + b" HTTP/1.1", b"Host: test", *extra, b"Connection: close"]
    return parse_head(await raw_exchange(url, b"\r\n".join(lines) + b"\r\n\r\n"))


@pytest.fixture(params=["origin", "proxy"])
async def server_url(request: pytest.FixtureRequest, nursery: trio.Nursery, origin_url: str) -> str:
    """The origin, or the proxy in front of it."""
    if request.param == "origin":
        return origin_url
    config = proxy_config(origin_url)
    return await start_app(nursery, create_proxy(config), config)


# (extra request fields, target, the status line, names that must be on it)
CASES = [
    (
        [],
        b"/media/small.bin",
        b"HTTP/1.1 200 OK",
        [b"Accept-Ranges", b"ETag", b"Last-Modified", b"Content-Type", b"Content-Length", b"Date"],
    ),
    (
        [b"Range: bytes=0-4"],
        b"/media/small.bin",
        b"HTTP/1.1 206 Partial Content",
        [b"Accept-Ranges", b"ETag", b"Content-Type", b"Content-Range", b"Content-Length", b"Date"],
    ),
    (
        [b"Range: bytes=0-1,4-5"],
        b"/media/small.bin",
        b"HTTP/1.1 206 Partial Content",
        [b"Accept-Ranges", b"ETag", b"Content-Type", b"Content-Length", b"Date"],
    ),
    ([b"If-None-Match: *"], b"/media/small.bin", b"HTTP/1.1 304 Not Modified", [b"ETag", b"Date"]),
    (
        [],
        b"/media/missing.bin",
        b"HTTP/1.1 404 Not Found",
        [b"Content-Type", b"Content-Length", b"Date"],
    ),
    (
        [b"Range: bytes=100-"],
        b"/media/small.bin",
        b"HTTP/1.1 416 Range Not Satisfiable",
        [b"Content-Range", b"Content-Length", b"Date"],
    ),
]


@pytest.mark.parametrize(
    ("extra", "target", "status_line", "expected"),
    CASES,
    ids=["200", "206", "206-multipart", "304", "404", "416"],
)
async def test_status_line_has_its_reason_phrase_and_every_name_is_canonical(
    server_url: str, extra: list[bytes], target: bytes, status_line: bytes, expected: list[bytes]
) -> None:
    line, fields = await get(server_url, target, *extra)
    assert line == status_line
    assert all(name == canonical(name) for name in names(fields)), names(fields)
    assert set(expected) <= set(names(fields)), names(fields)


async def test_multipart_content_type_is_written_as_gdal_searches_for_it(server_url: str) -> None:
    response = await raw_exchange(
        server_url,
        b"GET /media/small.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=0-1,4-5\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert b"\r\nContent-Type: multipart/byteranges; boundary=" in response


async def test_every_answer_of_the_proxy_carries_via(
    nursery: trio.Nursery, origin_url: str
) -> None:
    config = proxy_config(origin_url)
    proxy = await start_app(nursery, create_proxy(config), config)
    for extra, target, _, _ in CASES:
        _, fields = await get(proxy, target, *extra)
        assert (b"Via", VIA) in fields, (target, fields)
    _, fields = await get(proxy, b"/stats")
    assert (b"Via", VIA) in fields


MALFORMED = [
    b"GET / HTTP/1.1\r\nHost: t\r\nno colon here\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n",
    b"GET /\x01 HTTP/1.1\r\nHost: t\r\n\r\n",
]


@pytest.mark.parametrize("request_bytes", MALFORMED, ids=["no-colon", "space-in-name", "ctl"])
async def test_protocol_layer_400_is_canonical_and_the_proxy_adds_via(
    nursery: trio.Nursery, origin_url: str, request_bytes: bytes
) -> None:
    # h11 rejects these before any app code runs: Hypercorn writes the 400 itself.
    config = proxy_config(origin_url)
    proxy = await start_app(nursery, create_proxy(config), config)
    for url, via in ((origin_url, False), (proxy, True)):
        line, fields = parse_head(await raw_exchange(url, request_bytes))
        assert line == b"HTTP/1.1 400 Bad Request"
        assert names(fields)[:3] == [b"Content-Length", b"Connection", b"Date"]
        assert ((b"Via", VIA) in fields) is via
        assert (b"Connection", b"close") in fields


async def test_app_layer_400_for_smuggling_framing_is_canonical(server_url: str) -> None:
    line, fields = parse_head(
        await raw_exchange(
            server_url,
            b"GET /media/small.bin HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
    )
    assert line == b"HTTP/1.1 400 Bad Request"
    assert (b"Connection", b"close") in fields
    assert all(name == canonical(name) for name in names(fields)), names(fields)


async def test_connection_close_past_the_request_limit_is_canonical(
    nursery: trio.Nursery, media_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hypercorn appends its own Connection: close to the last response a connection may serve.
    monkeypatch.setattr(HypercornConfig, "keep_alive_max_requests", 2)
    url = await start_origin(nursery, media_dir=media_dir)
    request = b"GET /media/small.bin HTTP/1.1\r\nHost: t\r\n\r\n"
    response = await raw_exchange(url, request * 2)
    first, _, second = response.partition(b"0123456789A")
    assert b"Connection" not in first
    line, fields = parse_head(second)
    assert line == b"HTTP/1.1 200 OK"
    assert (b"Connection", b"close") in fields


async def test_under_stock_hypercorn_the_apps_names_are_canonical_without_reason_phrases(
    nursery: trio.Nursery, media_dir: Path
) -> None:
    # `hypercorn -k trio 'trio_range.origin:create_app()'`: the Quart layer is the app's, so
    # its names hold; the status line and Hypercorn's own Date are Hypercorn's (design.md).
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    urls = await nursery.start(serve, create_origin(origin_config(media_dir=media_dir)), config)
    line, fields = await get(urls[0], b"/media/small.bin", b"Range: bytes=0-1,4-5")
    assert line == b"HTTP/1.1 206 "
    assert b"Content-Type" in names(fields)
    assert b"Accept-Ranges" in names(fields)
    assert b"date" in names(fields)


# --- the proxy relays the upstream's own spelling ------------------------------------------

ODD_UPSTREAM_ANSWER = (
    b"HTTP/1.1 200 Fine\r\n"
    b"X-Custom-HEADER: 1\r\n"
    b"content-type: text/plain\r\n"
    b"CONTENT-LENGTH: 2\r\n"
    b'etag: "odd"\r\n'
    b"date: Tue, 01 Dec 2026 00:00:00 GMT\r\n"
    b"x-latin: caf\xe9\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"ok"
)


async def serve_odd_upstream(nursery: trio.Nursery) -> str:
    """A raw HTTP/1.1 upstream that answers every request with ``ODD_UPSTREAM_ANSWER``."""

    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            with trio.move_on_after(10):
                while b"\r\n\r\n" not in head:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    head += chunk
                await stream.send_all(ODD_UPSTREAM_ANSWER)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, answer, 0, host="127.0.0.1"))
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"


async def test_proxy_relays_the_upstreams_field_names_and_bytes_untouched(
    nursery: trio.Nursery,
) -> None:
    config = proxy_config(await serve_odd_upstream(nursery))
    proxy = await start_app(nursery, create_proxy(config), config)
    response = await raw_exchange(proxy, b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    line, fields = parse_head(response)
    assert line == b"HTTP/1.1 200 OK"
    assert fields == [
        (b"X-Custom-HEADER", b"1"),
        (b"content-type", b"text/plain"),
        (b"CONTENT-LENGTH", b"2"),
        (b"etag", b'"odd"'),
        (b"date", b"Tue, 01 Dec 2026 00:00:00 GMT"),
        (b"x-latin", b"caf\xe9"),
        (b"Via", VIA),
        # Ours, not the upstream's (hop-by-hop, stripped): h11 answers the client's close.
        (b"Connection", b"close"),
    ]
    assert response.endswith(b"\r\n\r\nok")
