"""The paced body wrapper under trio's autojump clock: what it cuts, when, and how it stops."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_range.http.token_bucket import Pacing
from trio_range.server.exchange import Exchange
from trio_range.server.file_region import FileRegion, file_regions
from trio_range.server.pacing import BodyItem, cut, paced, piece_bytes

MiB = 1024 * 1024


def new_exchange() -> Exchange:
    return Exchange("GET", "/x", "", None, AsyncExitStack(), started_at=0.0)


async def items_of(*items: BodyItem, closed: list[bool] | None = None) -> AsyncGenerator[BodyItem]:
    try:
        for item in items:
            yield item
    finally:
        if closed is not None:
            closed.append(True)


async def collect(body: AsyncGenerator[BodyItem]) -> list[tuple[float, BodyItem]]:
    began = trio.current_time()
    return [(trio.current_time() - began, item) async for item in body]


async def test_16_mib_of_regions_with_a_2_mib_burst_at_4_mib_per_s_take_3_5_s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    regions = list(file_regions(7, 1000, 16 * MiB, 2 * MiB))
    exchange = new_exchange()
    sent = await collect(paced(items_of(*regions), Pacing(4 * MiB, 2 * MiB), exchange))
    moments = [moment for moment, _ in sent]
    parts = [item for _, item in sent]
    assert all(isinstance(part, FileRegion) and part.fd == 7 for part in parts)
    # Contiguous, complete, and never more than the burst plus the rate allow.
    offset = 1000
    for part in parts:
        assert isinstance(part, FileRegion)
        assert part.offset == offset
        offset += part.count
    assert offset == 1000 + 16 * MiB
    assert parts[0] == regions[0]  # the burst: the first region whole, at once
    assert moments[0] == 0.0
    assert moments[-1] == pytest.approx(3.5)  # each piece goes when its tokens are there
    assert {part.count for part in parts[1:]} == {piece_bytes(Pacing(4 * MiB))}  # 512 KiB
    assert exchange.paced
    assert exchange.pacing_wait_s == pytest.approx(moments[-1])


async def test_bytes_are_cut_into_slices_that_add_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    pacing = Pacing(rate_bytes_per_s=256 * 1024, burst_bytes=100_000)
    sent = await collect(
        paced(items_of(data[:300_000], b"", data[300_000:]), pacing, new_exchange())
    )
    assert all(isinstance(item, bytes) for _, item in sent)
    assert b"".join(item for _, item in sent if isinstance(item, bytes)) == data
    assert sent[0] == (0.0, data[:100_000])  # the burst
    assert trio.current_time() == pytest.approx((len(data) - 100_000) / (256 * 1024))


async def test_a_paused_reader_gets_at_most_one_second_ahead(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pacing = Pacing(rate_bytes_per_s=64 * 1024)
    body = paced(items_of(b"x" * (10 * 64 * 1024)), pacing, new_exchange())
    await body.__anext__()
    await trio.sleep(60)  # the client paused for a minute
    began = trio.current_time()
    got = 0
    while trio.current_time() == began:  # what goes without a wait: one second of rate
        got += len(await body.__anext__())
    assert got - 16 * 1024 == 64 * 1024  # (the last piece came after a wait)
    await body.aclose()


async def test_cancelling_a_paced_body_ends_it_at_once_and_closes_the_source(
    autojump_clock: trio.testing.MockClock,
) -> None:
    closed: list[bool] = []
    body = paced(items_of(b"x" * MiB, closed=closed), Pacing(1024), new_exchange())
    with trio.move_on_after(5) as scope:
        async for _ in body:
            pass
    assert scope.cancelled_caught
    assert trio.current_time() == pytest.approx(5.0)
    await body.aclose()
    assert closed == [True]


def test_cut_keeps_whole_items_and_cuts_regions_and_bytes() -> None:
    region = FileRegion(3, 100, 50)
    assert cut(region, 0, 50) is region
    assert cut(region, 10, 5) == FileRegion(3, 110, 5) == region.cut(10, 5)
    assert cut(b"abcdef", 2, 3) == b"cde"


@pytest.mark.parametrize(
    ("rate", "piece"), [(1000, 16 * 1024), (4 * MiB, 512 * 1024), (100 * MiB, MiB)]
)
def test_pieces_are_an_eighth_of_a_second_within_bounds(rate: int, piece: int) -> None:
    assert piece_bytes(Pacing(rate)) == piece


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3 * MiB), min_size=1, max_size=8),
    rate=st.integers(64 * 1024, 8 * MiB),
    burst=st.integers(0, 4 * MiB),
    regions=st.booleans(),
)
def test_a_paced_body_is_the_same_bytes_never_ahead_of_burst_plus_rate(
    sizes: list[int], rate: int, burst: int, regions: bool
) -> None:
    # Each case runs on trio's MockClock, jumping straight to the next deadline.
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    items: list[BodyItem] = [
        FileRegion(3, offset, size) if regions else bytes(size)
        for offset, size in zip(offsets, sizes, strict=True)
    ]

    async def main() -> None:
        sent, position = 0, 0
        async for part in paced(items_of(*items), Pacing(rate, burst), new_exchange()):
            if isinstance(part, FileRegion):
                assert part.offset == position
            position += len(part)
            sent += len(part)
            assert sent <= burst + rate * trio.current_time() + 1
        assert sent == sum(sizes)
        # Never slower than the bucket needs (each wait is for one piece at most).
        needed = max(0, sum(sizes) - burst) / rate
        assert trio.current_time() <= needed + piece_bytes(Pacing(rate)) / rate + 1e-6

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
