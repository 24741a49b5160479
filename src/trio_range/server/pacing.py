"""Pacing a response body: its items cut to what the token bucket allows, with sleeps between.

Issue 16: a response limited to a rate after a burst. :func:`paced` wraps the body items an
app builds (bytes, :class:`~trio_range.server.file_region.FileRegion` regions, whatever comes
later with a length and a way to cut it) and yields them unchanged while the bucket
(:mod:`trio_range.http.token_bucket`) has tokens; past that, it cuts each item to what the
bucket allows and sleeps until the next tokens with ``trio.sleep_until``: no CPU while waiting,
and a client that leaves cancels the sleep at once, like any other await of the body.

Applied where a body is built (origin/files.py, proxy/relay.py), so the connection's write
path stays as it is: a region cut here still goes out with sendfile, a chunk with one write.
Time is ``trio.current_time()``, so tests drive it with trio's autojump clock.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import trio

from trio_range.http.token_bucket import Pacing, refill, start, take
from trio_range.server.exchange import Exchange
from trio_range.server.file_region import FileRegion, FileRegionChain
from trio_range.server.splice_region import SpliceRegion

BodyItem = bytes | FileRegion | FileRegionChain | SpliceRegion

# After the burst, a paced body goes out in pieces of about an eighth of a second of rate:
# smooth enough for a player, few enough wake-ups (8 a second per stream) to cost no CPU.
PIECES_PER_SECOND = 8
MIN_PIECE_BYTES = 16 * 1024
MAX_PIECE_BYTES = 1024 * 1024


def piece_bytes(pacing: Pacing) -> int:
    """The size of the pieces a paced body is cut into once its burst is spent."""
    return min(MAX_PIECE_BYTES, max(MIN_PIECE_BYTES, pacing.rate_bytes_per_s // PIECES_PER_SECOND))


def cut(item: BodyItem, start_at: int, count: int) -> BodyItem:
    """``count`` bytes of ``item`` from ``start_at``: a slice of bytes, or what the item's own
    ``cut`` makes (a region of the same file for a FileRegion).

    Any other kind of body item (a spliced body, a cache slice) composes with pacing by having
    a length and a ``cut(start, count)`` method that returns an item of its kind.
    """
    if start_at == 0 and count == len(item):
        return item
    if isinstance(item, bytes):
        return item[start_at : start_at + count]
    return item.cut(start_at, count)


async def paced(
    items: AsyncIterator[BodyItem], pacing: Pacing, exchange: Exchange
) -> AsyncGenerator[BodyItem]:
    """``items`` at most as fast as ``pacing`` allows; the time slept is added to ``exchange``.

    Closing this closes ``items`` (an upstream body, an open file's regions) with it.
    """
    exchange.paced = True
    piece = piece_bytes(pacing)
    bucket = start(pacing, trio.current_time())
    try:
        async for item in items:
            size, done = len(item), 0
            if size == 0:
                yield item
            while done < size:
                now = trio.current_time()
                bucket = refill(pacing, bucket, now)
                # The whole rest of the burst at once; past it, one piece at a time.
                wanted = min(size - done, max(piece, int(bucket.tokens)))
                grant = take(pacing, bucket, now, wanted)
                bucket = grant.bucket
                if grant.bytes:
                    yield cut(item, done, grant.bytes)
                    done += grant.bytes
                    continue
                try:
                    await trio.sleep_until(now + grant.wait_s)
                finally:
                    exchange.pacing_wait_s += trio.current_time() - now
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()
