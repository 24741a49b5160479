"""The benchmark's constant upstream still plugs into today's ``Upstream`` (issue 13's row).

``benchmarks/_constant_upstream.py`` replaces the class ``Upstream`` builds its transport from,
so the ``proxy_server_side`` row measures the proxy's server side alone. When ``Upstream``
started calling ``open_response`` instead of ``handle_async_request``, that row failed in
``make bench`` and nowhere else; this test fails first.
"""

from __future__ import annotations

import pytest
from benchmarks import _constant_upstream

from tests.support.servers import proxy_config
from trio_range.proxy import upstream as upstream_module
from trio_range.proxy.upstream import Upstream, relay_body


@pytest.mark.parametrize(
    ("fields", "content_range", "length"),
    [
        ([("Range", "bytes=100-4195")], b"bytes 100-4195/1073741824", 4096),
        ([("Host", "u"), ("Range", "bytes=0-9")], b"bytes 0-9/1073741824", 10),
        ([("Host", "u")], b"bytes 0-4095/1073741824", 4096),
    ],
)
async def test_the_constant_upstream_answers_through_today_s_upstream(
    monkeypatch: pytest.MonkeyPatch,
    fields: list[tuple[str, str]],
    content_range: bytes,
    length: int,
) -> None:
    monkeypatch.setattr(upstream_module, "UpstreamTransport", _constant_upstream.ConstantTransport)
    async with Upstream(proxy_config("http://127.0.0.1:9")) as upstream:
        response = await upstream.open("GET", "/media/f.bin", fields)
        try:
            body = b"".join([chunk async for chunk in relay_body(response)])
        finally:
            await response.aclose()
    assert response.status_code == 206
    assert response.headers.raw[4] == (b"Content-Range", content_range)
    assert len(body) == length
    assert upstream.open_connections() == 0
