"""The pacing token bucket: exact arithmetic, then a paced writer under trio's autojump clock."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from trio_range.http.token_bucket import Bucket, Grant, Pacing, pacing_for, refill, start, take

MiB = 1024 * 1024


def test_the_burst_goes_at_once() -> None:
    pacing = Pacing(rate_bytes_per_s=4 * MiB, burst_bytes=2 * MiB)
    grant = take(pacing, start(pacing, 10.0), 10.0, 2 * MiB)
    assert grant == Grant(2 * MiB, 0.0, Bucket(0.0, 10.0))


@pytest.mark.parametrize(
    ("burst", "wanted", "sent", "wait_s", "left"),
    [
        (1000, 400, 400, 0.0, 600.0),  # within the burst
        (1000, 5000, 1000, 0.0, 0.0),  # a huge write: the burst now, the rest later
        (0, 100, 0, 0.1, 0.0),  # no burst: wait for the bytes at 1000 B/s
        (0, 5000, 0, 1.0, 0.0),  # wait for a useful amount: one second of rate, not 5 s
        (300, 0, 0, 0.0, 300.0),  # nothing wanted, nothing taken
    ],
)
def test_take_grants_whole_bytes_or_says_how_long_to_wait(
    burst: int, wanted: int, sent: int, wait_s: float, left: float
) -> None:
    pacing = Pacing(rate_bytes_per_s=1000, burst_bytes=burst)
    grant = take(pacing, start(pacing, 0.0), 0.0, wanted)
    assert (grant.bytes, grant.bucket.tokens) == (sent, left)
    assert grant.wait_s == pytest.approx(wait_s)


def test_steady_state_sends_the_rate() -> None:
    pacing = Pacing(rate_bytes_per_s=1000)
    bucket = start(pacing, 0.0)
    now, sent = 0.0, 0
    while sent < 10_000:
        grant = take(pacing, bucket, now, 250)
        bucket = grant.bucket
        sent += grant.bytes
        now += grant.wait_s
    assert sent == 10_000
    assert now == pytest.approx(10.0)


def test_an_idle_writer_saves_at_most_the_saved_maximum() -> None:
    pacing = Pacing(rate_bytes_per_s=1000, saved_max_bytes=1500)
    bucket = start(pacing, 0.0)
    assert refill(pacing, bucket, 1.0).tokens == 1000.0
    assert refill(pacing, bucket, 60.0).tokens == 1500.0  # a long pause: no second burst
    assert take(pacing, bucket, 60.0, 10_000).bytes == 1500


def test_the_rest_of_a_burst_is_kept_not_topped_up() -> None:
    pacing = Pacing(rate_bytes_per_s=1000, burst_bytes=5000)
    bucket = take(pacing, start(pacing, 0.0), 0.0, 1000).bucket
    assert refill(pacing, bucket, 30.0).tokens == 4000.0


def test_a_clock_that_steps_back_takes_nothing_away() -> None:
    pacing = Pacing(rate_bytes_per_s=1000)
    bucket = Bucket(tokens=500.0, updated_at=10.0)
    assert refill(pacing, bucket, 9.0) == bucket


@pytest.mark.parametrize(
    "arguments",
    [
        {"rate_bytes_per_s": 0},
        {"rate_bytes_per_s": 1, "burst_bytes": -1},
        {"rate_bytes_per_s": 1, "saved_max_bytes": -1},
    ],
)
def test_impossible_pacing_is_refused(arguments: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        Pacing(**arguments)


@given(
    # From 64 KiB/s: every grant is then at least 64 KiB or the rest of a write, so a write of
    # 4 MiB takes a bounded number of steps.
    rate=st.integers(64 * 1024, 10 * MiB),
    burst=st.integers(0, 10 * MiB),
    saved=st.one_of(st.just(0), st.integers(64 * 1024, 10 * MiB)),
    writes=st.lists(st.integers(1, 4 * MiB), min_size=1, max_size=10),
    pauses=st.lists(st.floats(0, 5), min_size=10, max_size=10),
)
def test_no_writer_ever_gets_ahead_of_burst_plus_rate_times_time(
    rate: int, burst: int, saved: int, writes: list[int], pauses: list[float]
) -> None:
    # Whatever the writes and pauses: by any moment t, at most burst + rate * t bytes went, and
    # every wanted byte goes eventually.
    pacing = Pacing(rate_bytes_per_s=rate, burst_bytes=burst, saved_max_bytes=saved)
    bucket = start(pacing, 0.0)
    now, sent = 0.0, 0
    for wanted, pause in zip(writes, pauses, strict=False):
        now += pause
        remaining = wanted
        for _ in range(1000):
            grant = take(pacing, bucket, now, remaining)
            assert 0 <= grant.bytes <= remaining
            assert grant.bytes > 0 or grant.wait_s > 0
            bucket = grant.bucket
            sent += grant.bytes
            remaining -= grant.bytes
            now += grant.wait_s
            assert sent <= burst + rate * now + 1e-6 * max(1.0, rate * now)
            if not remaining:
                break
        assert remaining == 0


async def test_a_paced_writer_sleeps_until_its_tokens_under_the_autojump_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The figure: 16 MiB with a 2 MiB burst at 4 MiB/s takes (16 - 2) / 4 = 3.5 s.
    pacing = Pacing(rate_bytes_per_s=4 * MiB, burst_bytes=2 * MiB)
    began = trio.current_time()
    bucket = start(pacing, began)
    sent, moments = 0, []
    while sent < 16 * MiB:
        grant = take(pacing, bucket, trio.current_time(), min(256 * 1024, 16 * MiB - sent))
        bucket = grant.bucket
        if grant.bytes:
            sent += grant.bytes
            moments.append(trio.current_time() - began)
        else:
            await trio.sleep(grant.wait_s)
    assert trio.current_time() - began == pytest.approx(3.5)
    assert moments[:8] == [0.0] * 8  # the burst, in 256 KiB writes, at once
    assert moments[8] == pytest.approx(1 / 16)  # then one 256 KiB write every 62.5 ms


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"rate_bytes_per_s": 0, "burst_bytes": 5}, None),
        ({"rate_bytes_per_s": 100, "burst_bytes": 5}, Pacing(100, 5)),
        # a video of 1.5 MB in 15 s at 1.25x: 125 000 B/s, whatever the fixed rate
        (
            {
                "rate_bytes_per_s": 7,
                "burst_bytes": 0,
                "size": 1_500_000,
                "duration_s": 15.0,
                "bitrate_factor": 1.25,
            },
            Pacing(125_000, 0),
        ),
        # no duration (not a video, or an unreadable header): the fixed rate, or none
        ({"rate_bytes_per_s": 7, "burst_bytes": 0, "size": 10, "bitrate_factor": 2.0}, Pacing(7)),
        ({"rate_bytes_per_s": 0, "burst_bytes": 0, "size": 10, "bitrate_factor": 2.0}, None),
        # a tiny file: at least one byte a second
        (
            {
                "rate_bytes_per_s": 0,
                "burst_bytes": 0,
                "size": 1,
                "duration_s": 1e6,
                "bitrate_factor": 0.1,
            },
            Pacing(1),
        ),
    ],
)
def test_pacing_for_a_response(arguments: dict[str, Any], expected: Pacing | None) -> None:
    assert pacing_for(**arguments) == expected
