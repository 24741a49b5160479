"""The request head the transport sends (proxy/request_head.py): bytes as given, or refused."""

from __future__ import annotations

import h11
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from tests.proxy.test_transport import start_framing_upstream
from tests.support.servers import proxy_config
from trio_range.errors import UpstreamError
from trio_range.proxy.request_head import RequestHead, request_head
from trio_range.proxy.upstream import Upstream

_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=12)


def _per_field(method: str, target: str, fields: list[tuple[str, str]]) -> bytes:
    """The head as the transport built it from an httpx.Request, field by field."""
    lines = [f"{method} {target} HTTP/1.1".encode("latin-1")]
    for name, value in fields:
        lines.append(name.encode("latin-1") + b": " + value.encode("latin-1"))
    return b"\r\n".join(lines) + b"\r\n\r\n"


@given(st.lists(st.tuples(_TEXT, _TEXT), max_size=6))
def test_a_head_is_its_fields_as_latin1_or_refused_when_one_could_split_it(
    fields: list[tuple[str, str]],
) -> None:
    if any(c in "".join(n + v for n, v in fields) for c in "\r\n\0"):
        with pytest.raises(h11.LocalProtocolError):
            request_head("GET", "/a?b", fields)
    else:
        assert request_head("GET", "/a?b", fields) == _per_field("GET", "/a?b", fields)


@pytest.mark.parametrize(
    "fields",
    [
        [("X", "a\r\nInjected: 1")],
        [("X", "a\rb")],
        [("X", "a\nb")],
        [("X", "a\0b")],
        [("X\r\nY", "a")],
        [("A", "1"), ("B", "2\r\n")],
    ],
)
def test_a_field_with_cr_lf_or_nul_is_refused(fields: list[tuple[str, str]]) -> None:
    with pytest.raises(h11.LocalProtocolError):
        request_head("GET", "/", fields)


def test_obs_text_keeps_its_bytes_and_text_beyond_latin1_raises() -> None:
    head = request_head("HEAD", "/f", [("Host", "u"), ("X-Name", "caf\xe9")])
    assert head == b"HEAD /f HTTP/1.1\r\nHost: u\r\nX-Name: caf\xe9\r\n\r\n"
    assert request_head("GET", "/", []) == b"GET / HTTP/1.1\r\n\r\n"
    with pytest.raises(UnicodeEncodeError):
        request_head("GET", "/", [("X", "\u20ac")])


def test_a_lease_s_request_shows_its_fields_as_headers() -> None:
    request = RequestHead("GET", [("Host", "u"), ("X-Probe", "7")])
    assert request.headers.get("x-probe") == "7"
    assert request.method == "GET"


async def test_a_refused_field_is_a_502_that_leaves_the_pool_as_it_was(
    nursery: trio.Nursery,
) -> None:
    origin = await start_framing_upstream(nursery)
    errors: list[str] = []
    async with Upstream(proxy_config(origin.url, pool_size=1)) as upstream:
        with pytest.raises(UpstreamError) as raised:
            await upstream.open("GET", "/cl/10/1", [("X", "a\r\nB: c")], stats_error=errors.append)
        assert raised.value.status_hint == 502
        assert errors == ["truncated"]
        assert upstream.pool.requests == set()
        assert upstream.open_connections() == 0  # refused before anything was sent
        assert origin.accepted == 0
        # The single slot is free again.
        response = await upstream.open("GET", "/cl/10/1", [("Host", "u")])
        await response.aclose()
