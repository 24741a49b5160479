"""Pacing a response: a token bucket as a pure function of time and bytes (issue 16's core).

nginx paces a response with ``limit_rate`` after ``limit_rate_after`` bytes sent at full speed;
a video host sets them to a little above the video's bitrate after a few seconds of burst, so a
viewer who pauses has not pulled the whole file. The bucket here does the same arithmetic
with no clock and no I/O: a writer asks :func:`take` how many of the bytes it wants to send it
may send now, and, when the answer is none, how long to sleep first. Values in, values out, so
the arithmetic is tested exactly (tests/http/test_token_bucket.py) and the writer's sleep is the
only timing in the system.

- The first ``burst_bytes`` go at once.
- After that, tokens arrive at ``rate_bytes_per_s``. A writer that pauses saves tokens, but
  never more than ``saved_max_bytes`` (one second of rate unless set), so a paused stream
  that resumes gets at most that much ahead, never a second full burst.
- A grant is never a fraction of a byte, and a writer waits for a useful amount
  (``min(wanted, saved_max_bytes)``), not for one byte at a time: at 4 MiB/s a writer of
  256 KiB pieces sleeps 62.5 ms per piece.
"""

from __future__ import annotations

import dataclasses
import math

_BYTE_EPSILON = 1e-6


@dataclasses.dataclass(frozen=True, slots=True)
class Pacing:
    """How one response is paced: ``rate_bytes_per_s`` after ``burst_bytes`` at full speed."""

    rate_bytes_per_s: int
    burst_bytes: int = 0
    # Tokens a paused writer may save; 0 means one second of rate.
    saved_max_bytes: int = 0

    def __post_init__(self) -> None:
        if self.rate_bytes_per_s < 1:
            raise ValueError(f"rate_bytes_per_s must be >= 1, got {self.rate_bytes_per_s}")
        if self.burst_bytes < 0 or self.saved_max_bytes < 0:
            raise ValueError("burst_bytes and saved_max_bytes must be >= 0")

    @property
    def saved_max(self) -> int:
        return self.saved_max_bytes or self.rate_bytes_per_s


@dataclasses.dataclass(frozen=True, slots=True)
class Bucket:
    """The state of one paced response: tokens on hand at ``updated_at`` (seconds)."""

    tokens: float
    updated_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class Grant:
    """What :func:`take` allows: send ``bytes`` now, or (``bytes`` 0) sleep ``wait_s`` first."""

    bytes: int
    wait_s: float
    bucket: Bucket


def start(pacing: Pacing, now: float) -> Bucket:
    """The bucket of a response that starts at ``now``: the burst is on hand."""
    return Bucket(tokens=float(pacing.burst_bytes), updated_at=now)


def refill(pacing: Pacing, bucket: Bucket, now: float) -> Bucket:
    """``bucket`` at ``now``: tokens arrived since, up to the saved maximum.

    Tokens above the maximum (what is left of the burst) are kept, never topped up.
    """
    elapsed = max(0.0, now - bucket.updated_at)
    ceiling = max(bucket.tokens, float(pacing.saved_max))
    tokens = min(ceiling, bucket.tokens + elapsed * pacing.rate_bytes_per_s)
    return Bucket(tokens=tokens, updated_at=max(now, bucket.updated_at))


def take(pacing: Pacing, bucket: Bucket, now: float, wanted: int) -> Grant:
    """How much of ``wanted`` bytes may go at ``now``, and the bucket after sending it.

    Grants whole bytes, at most ``wanted``. With fewer than ``min(wanted, saved maximum)``
    tokens on hand (and not one whole byte of the burst left) the grant is 0 with the wait
    until that many will be.
    """
    if wanted < 0:
        raise ValueError(f"wanted must be >= 0, got {wanted}")
    bucket = refill(pacing, bucket, now)
    if wanted == 0:
        return Grant(0, 0.0, bucket)
    useful = min(wanted, pacing.saved_max)
    # A writer that slept exactly the wait computed below may find a hair less than it waited
    # for (x / rate * rate is not always x in floating point): a millionth of a byte counts.
    on_hand = math.floor(bucket.tokens + _BYTE_EPSILON)
    if on_hand >= useful:
        sent = min(wanted, on_hand)
        return Grant(sent, 0.0, Bucket(max(0.0, bucket.tokens - sent), bucket.updated_at))
    wait_s = (useful - bucket.tokens) / pacing.rate_bytes_per_s
    return Grant(0, wait_s, bucket)


def pacing_for(
    *,
    rate_bytes_per_s: int,
    burst_bytes: int,
    size: int | None = None,
    duration_s: float | None = None,
    bitrate_factor: float = 0.0,
) -> Pacing | None:
    """How to pace one response, or None to send it at full speed.

    With a ``bitrate_factor`` and a media file's ``size`` and ``duration_s``, the rate is that
    many times the file's average bitrate (a video sent a little faster than it plays);
    otherwise the fixed ``rate_bytes_per_s`` (0: not paced).

    >>> pacing_for(rate_bytes_per_s=0, burst_bytes=0) is None
    True
    >>> pacing_for(rate_bytes_per_s=0, burst_bytes=10, size=1000, duration_s=10, bitrate_factor=1.5)
    Pacing(rate_bytes_per_s=150, burst_bytes=10, saved_max_bytes=0)
    """
    rate = rate_bytes_per_s
    if bitrate_factor > 0 and size and duration_s:
        rate = max(1, math.ceil(bitrate_factor * size / duration_s))
    return Pacing(rate_bytes_per_s=rate, burst_bytes=burst_bytes) if rate > 0 else None
