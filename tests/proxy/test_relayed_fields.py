"""The upstream's fields reach the client byte for byte, or not at all (issue 14).

The relay converts each field list in one piece (http/relay.py ``fields_text``) and builds
the client's Werkzeug fields without Werkzeug's per-field add (server/_werkzeug_hooks.py): the
check those steps skipped must still hold somewhere. A field with a CR, LF or NUL from the
upstream is refused (502, logged), never sent on; obs-text passes exactly.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import httpx
import pytest
import trio

from tests.proxy.test_cache import start_cached_proxy
from tests.proxy.test_proxy import start_proxy, stats_of
from tests.support.faulty_upstream import RawConnection
from tests.support.range_upstream import open_range_upstream


async def _serve_head(head: bytes, stream: trio.SocketStream) -> None:
    """Answer every request on ``stream`` with ``head`` and a 2-byte body."""
    heads = RawConnection(stream)
    try:
        with trio.move_on_after(30):
            while await heads.read_head() is not None:
                await stream.send_all(head + b"Content-Length: 2\r\n\r\nok")
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


async def _proxy_for(nursery: trio.Nursery, head: bytes) -> str:
    listeners: list[trio.SocketListener] = await nursery.start(
        functools.partial(trio.serve_tcp, functools.partial(_serve_head, head), 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    return await start_proxy(nursery, f"http://127.0.0.1:{port}")


@pytest.mark.parametrize(
    "field",
    [b"X-Bad: a\x00b", b"X-Bad: a\rb", b"X-Bad: a\nb", b"X-B\x00ad: v"],
    ids=["nul-in-value", "bare-cr-in-value", "bare-lf-in-value", "nul-in-name"],
)
async def test_an_upstream_field_with_a_control_byte_never_reaches_the_client(
    nursery: trio.Nursery, field: bytes
) -> None:
    url = await _proxy_for(nursery, b"HTTP/1.1 200 OK\r\n" + field + b"\r\n")
    async with httpx.AsyncClient() as client:
        response = await client.get(url + "/f")
        assert response.status_code == 502
        assert b"X-Bad" not in b"".join(name for name, _ in response.headers.raw)
        assert b"X-B\x00ad" not in b"".join(name for name, _ in response.headers.raw)
        # The proxy stays usable: a normal answer from the same upstream still relays.
        assert (await client.get(url + "/healthz")).status_code == 200
    stats = await stats_of(url)
    assert sum(stats["upstream"]["errors"].values()) == 1


async def test_obs_text_and_name_case_pass_byte_for_byte(nursery: trio.Nursery) -> None:
    url = await _proxy_for(
        nursery, b"HTTP/1.1 200 OK\r\nX-Latin: caf\xe9 \xff\tend\r\nx-lower-Case: 1\r\n"
    )
    async with httpx.AsyncClient() as client:
        response = await client.get(url + "/f")
    assert response.status_code == 200
    assert response.content == b"ok"
    raw = dict(response.headers.raw)
    assert raw[b"X-Latin"] == b"caf\xe9 \xff\tend"
    assert raw[b"x-lower-Case"] == b"1"


async def test_an_upstream_field_with_another_control_character_is_dropped_and_logged(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    # RFC 9110 §5.5: a value with a CTL is invalid. nginx relays it as it came; a strict client
    # (Node, http-parser) would then refuse the whole answer. The proxy drops the field, logs
    # it once, and relays the rest (proxy/upstream_fields.py).
    caplog.set_level(logging.WARNING, logger="trio_range.proxy")
    url = await _proxy_for(
        nursery,
        b"HTTP/1.1 200 OK\r\nX-Before: 1\r\nX-Soh: a\x01b\r\nX-Del: c\x7fd\r\n"
        b"Content-Type: text/plain\r\nX-Tab: a\tb\r\n",
    )
    async with httpx.AsyncClient() as client:
        response = await client.get(url + "/f")
        head = await client.head(url + "/f")
    assert response.status_code == 200
    assert response.content == b"ok"
    names = [name for name, _ in response.headers.raw]
    assert b"X-Soh" not in names, names
    assert b"X-Del" not in names, names
    raw = dict(response.headers.raw)
    assert raw[b"X-Before"] == b"1"
    assert raw[b"X-Tab"] == b"a\tb"  # HTAB is no CTL here: field-value allows it
    assert raw[b"Content-Type"] == b"text/plain"
    assert head.status_code == 200
    assert b"X-Soh" not in dict(head.headers.raw)
    lines = [r.getMessage() for r in caplog.records if "control character" in r.getMessage()]
    assert len(lines) == 2, lines  # one line per relayed answer
    assert "'X-Soh', 'X-Del'" in lines[0], lines


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (
            b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-1/\x012\r\n"
            b"Content-Type: text/plain\r\n",
            502,
        ),
        (
            b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-1/2\r\n"
            b"Content-Type: multipart/byteranges; boundary=a\x1fb\r\n",
            502,
        ),
        # A 200's type describes no framing: dropped like any other field.
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/pl\x7fain\r\n", 200),
    ],
    ids=["206-content-range", "206-content-type", "200-content-type"],
)
async def test_a_field_the_body_needs_with_a_control_character_fails_the_relay(
    nursery: trio.Nursery, head: bytes, status: int
) -> None:
    url = await _proxy_for(nursery, head)
    async with httpx.AsyncClient() as client:
        response = await client.get(url + "/f")
        assert response.status_code == status
        names = [name.lower() for name, _ in response.headers.raw]
        if status == 502:
            assert b"content-range" not in names
            assert response.content == b"Bad Gateway\n"
        else:
            assert b"content-type" not in names
            assert response.content == b"ok"
        # The proxy stays usable.
        assert (await client.get(url + "/healthz")).status_code == 200


async def test_the_slice_cache_never_stores_or_serves_a_field_with_a_control_character(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # A fill keeps the upstream's Cache-Control and Content-Type to serve them on hits: one
    # with a CTL is dropped when the fill reads the answer (proxy/upstream_fields.py), as the
    # relay drops it from a miss; the hit then has none to serve.
    content = bytes(range(256)) * 64
    bad = ("Cache-Control", "public, max-age=600, x=a\x01b")
    async with open_range_upstream(content, extra_headers=[bad]) as upstream:
        url = await start_cached_proxy(nursery, upstream.url, tmp_path / "cache")
        async with httpx.AsyncClient() as client:
            for _ in range(2):
                response = await client.get(url + "/f", headers={"Range": "bytes=10-19"})
                assert response.status_code == 206
                assert response.content == content[10:20]
                assert all(
                    not any((byte < 0x20 and byte != 0x09) or byte == 0x7F for byte in value)
                    for _, value in response.headers.raw
                ), response.headers.raw
    stats = await stats_of(url)
    assert stats["cache"]["hit"] == 1, stats["cache"]
