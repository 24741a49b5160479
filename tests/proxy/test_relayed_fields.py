"""The upstream's fields reach the client byte for byte, or not at all (issue 14).

The relay converts each field list in one piece (http/relay.py ``fields_text``) and builds
the client's Werkzeug fields without Werkzeug's per-field add (server/_werkzeug_hooks.py): the
check those steps skipped must still hold somewhere. A field with a CR, LF or NUL from the
upstream is refused (502, logged), never sent on; obs-text passes exactly.
"""

from __future__ import annotations

import functools

import httpx
import pytest
import trio

from tests.proxy.test_proxy import start_proxy, stats_of
from tests.support.faulty_upstream import RawConnection


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
