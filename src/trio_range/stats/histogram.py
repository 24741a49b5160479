"""Latency histograms: fixed log-spaced buckets, and the quantile maths on immutable snapshots.

Pure: one bisect and two additions per observed value; PromQL's ``histogram_quantile`` for
reading them, so /stats and a dashboard built on /metrics show the same figure.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable
from typing import Any


def _renard_r5(first_decade: int, last_decade: int) -> tuple[float, ...]:
    # The Renard R5 series: five steps a decade, each ~1.585x the last (10 ** (1/5)), rounded to
    # readable values. Written via decimal strings so 1.6e-4 is 0.00016, not 0.00016000000000000004.
    steps = ("1", "1.6", "2.5", "4", "6.3")
    bounds = [
        float(f"{step}e{decade}") for decade in range(first_decade, last_decade) for step in steps
    ]
    return (*bounds, float(f"1e{last_decade}"))


# Upper bounds of the latency buckets, 100 µs to 10 000 s (a paused video streams for hours):
# 41 log-spaced buckets plus +Inf. A quantile read from them is off by at most one bucket's width.
LATENCY_BUCKETS_S: tuple[float, ...] = _renard_r5(-4, 4)


@dataclasses.dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Bucket counts at one moment; the quantile maths live here, on immutable values.

    ``counts[i]`` counts the values in ``(bounds[i-1], bounds[i]]`` (Prometheus' ``le``
    buckets, not cumulative); the last count is for values above ``bounds[-1]`` (``+Inf``).
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float

    def __post_init__(self) -> None:
        if len(self.counts) != len(self.bounds) + 1:
            raise ValueError("a histogram needs one count per bound plus one for +Inf")

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[int]:
        """Counts of values ``<= bounds[i]``, then the total (the ``+Inf`` bucket)."""
        total = 0
        result = []
        for count in self.counts:
            total += count
            result.append(total)
        return result

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile estimated as PromQL's ``histogram_quantile`` does; None if empty.

        The rank ``q * count`` falls in the first bucket whose cumulative count reaches it; the
        value is interpolated linearly between that bucket's bounds (the first bucket starts at
        0). A rank in the ``+Inf`` bucket gives the highest finite bound. So /stats and a
        dashboard built on /metrics show the same figure.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"a quantile lies in [0, 1], got {q}")
        total = self.count
        if total == 0:
            return None
        rank = q * total
        below = 0
        for index, count in enumerate(self.counts):
            if below + count >= rank and count > 0:
                if index == len(self.bounds):
                    return self.bounds[-1]
                lower = self.bounds[index - 1] if index > 0 else 0.0
                upper = self.bounds[index]
                return lower + (upper - lower) * (rank - below) / count
            below += count
        raise AssertionError("unreachable: the last non-empty bucket reaches every rank")

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "sum": round(self.sum, 6),
            **{f"p{round(q * 100)}": _round(self.quantile(q)) for q in (0.5, 0.95, 0.99)},
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


class Histogram:
    """Counts of observed values in fixed buckets: one bisect and two additions per value."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Iterable[float] = LATENCY_BUCKETS_S) -> None:
        self.bounds = tuple(bounds)
        if not self.bounds or any(
            b <= a for a, b in zip(self.bounds, self.bounds[1:], strict=False)
        ):
            raise ValueError("histogram bounds must be non-empty and strictly increasing")
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (``le`` is <=).
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(self.bounds, tuple(self.counts), self.sum)
