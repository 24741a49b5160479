"""Relayed bodies spliced socket to socket (server/splice_region.py), and the copy fallback.

The proxy's disconnect, truncation and accounting tests (test_proxy.py) run spliced by default;
here the proxy runs both ways, spliced and with ``splice`` off (the fallback TLS or another OS
takes): byte-exact, counted alike, and a broken upstream aborts the client either way. The
splice loop on its own: tests/server/test_splice_region.py.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import file_data
from tests.support.servers import proxy_config, start_app, start_origin
from trio_range.proxy.app import create_app
from trio_range.server import splice_region
from trio_range.server.splice_region import SpliceRegion

BIG = file_data(3_000_000)


def count_splices(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of regions the server splices from now on."""
    counts: list[int] = []
    loop = splice_region.splice_region

    async def counting(region: SpliceRegion, sock: object) -> None:
        counts.append(region.count)
        await loop(region, sock)

    monkeypatch.setattr(splice_region, "splice_region", counting)
    return counts


@pytest.mark.parametrize("splice", [True, False])
async def test_relayed_bodies_are_byte_exact_and_counted_spliced_or_copied(
    nursery: trio.Nursery, media_dir: Path, monkeypatch: pytest.MonkeyPatch, splice: bool
) -> None:
    spliced = count_splices(monkeypatch)
    origin = await start_origin(nursery, media_dir=media_dir)
    config = proxy_config(origin, splice=splice)
    url = await start_app(nursery, create_app(config), config)
    async with httpx.AsyncClient() as client:
        whole = await client.get(url + "/media/big.bin")
        part = await client.get(url + "/media/big.bin", headers={"Range": "bytes=100-2600000"})
        parts = await client.get(url + "/media/big.bin", headers={"Range": "bytes=0-9,-5"})
        stats = (await client.get(url + "/stats")).json()
    assert whole.content == BIG
    assert part.status_code == 206
    assert part.content == BIG[100:2600001]
    assert parts.status_code == 206
    assert BIG[:10] in parts.content
    assert BIG[-5:] in parts.content
    # The origin's 200 and 206 arrive with a head read; the rest of each body is spliced.
    if splice:
        assert sum(spliced) > len(BIG) + 2_000_000
    else:
        assert spliced == []
    sent = len(whole.content) + len(part.content) + len(parts.content)
    # Spliced bytes are counted as the kernel moved them: exactly the bodies, either way.
    assert stats["bytes_sent"] == sent
    assert stats["streams"]["completed"] == 3
