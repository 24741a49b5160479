"""The request's fields read once by the connection (Exchange.fields), as views see them.

The origin reads Range and the If-* fields from ``Exchange.field`` instead of Werkzeug's
``Headers.get``: the answers must be the ones ``Headers.get`` gave (any case of the name, the
first of a repeated field, None when absent).
"""

from __future__ import annotations

from pathlib import Path

import trio

from tests.conftest import SMALL
from tests.support.servers import origin_config, raw_exchange, start_app
from trio_range.origin.app import create_app
from trio_range.server.exchange import first_fields


def test_first_fields_keeps_the_first_value_of_each_name() -> None:
    fields = first_fields([(b"range", b"bytes=0-0"), (b"host", b"x"), (b"range", b"bytes=1-1")])
    assert fields == {b"range": b"bytes=0-0", b"host": b"x"}


async def test_the_origin_reads_fields_in_any_case_and_the_first_of_a_repeated_one(
    nursery: trio.Nursery, media_dir: Path
) -> None:
    config = origin_config(media_dir=media_dir)
    url = await start_app(nursery, create_app(config), config)
    answer = await raw_exchange(
        url,
        b"GET /media/small.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"rAnGe: bytes=1-2\r\nRange: bytes=5-9\r\n\r\n",
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 206 ")
    assert b"\r\nContent-Range: bytes 1-2/%d\r\n" % len(SMALL) in head
    assert body == SMALL[1:3]
    etag = next(
        line.split(b": ", 1)[1] for line in head.split(b"\r\n") if line.startswith(b"ETag: ")
    )
    answer = await raw_exchange(
        url,
        b"GET /media/small.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"IF-NONE-MATCH: " + etag + b"\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 304 ")
