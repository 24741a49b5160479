"""Usage statistics: the :class:`StatsStore` interface, its in-memory implementation, histograms.

Trio-safe because every update is a plain synchronous method: no update spans an ``await``, so
no other task can see half of one, and nothing here is touched from worker threads. Updates
happen once per exchange (when the response head goes out and when the exchange ends), never per
chunk: the connection counts body bytes in the :class:`~trio_range.server.connection.Exchange` itself.

A shared backend fits the same interface without touching the servers:
:mod:`trio_range.stats.redis_store` counts in a local :class:`MemoryStatsStore` (no I/O on the hot
path) and pushes the deltas to Redis from a task of its own (docs/scale-out.md).

Pure: no trio, quart or ``os`` here, so the maths are tested without a server.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from trio_range.server.connection import Exchange

RANGE_OUTCOMES = ("single", "multi", "unsatisfiable", "ignored")
STREAM_OUTCOMES = ("completed", "aborted", "failed")
UPSTREAM_ERROR_KINDS = ("connect", "timeout", "truncated", "status_5xx")

# A client chooses the method: any other name is counted as OTHER, so a scanner sending random
# methods cannot grow the counters (or a Prometheus server's series) without bound.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)


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


@dataclasses.dataclass(frozen=True, slots=True)
class UpstreamSnapshot:
    """The proxy's view of its upstream."""

    requests: int
    open_connections: int
    errors: Mapping[str, int]  # every kind of UPSTREAM_ERROR_KINDS, zeros included


@dataclasses.dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """Every figure of one store, read at one moment (no update can land half-way)."""

    role: str
    uptime_s: float
    started_at: datetime.datetime
    requests: Mapping[tuple[str, int], int]  # (method, status) -> count; status 0: no response
    bytes_sent: int
    ranges: Mapping[str, int]  # every outcome of RANGE_OUTCOMES, zeros included
    if_range_failed: int
    streams_active: int
    streams: Mapping[str, int]  # every outcome of STREAM_OUTCOMES, zeros included
    aborted_bytes: int
    ttfb: HistogramSnapshot
    duration: HistogramSnapshot
    upstream: UpstreamSnapshot | None  # None unless the role is "proxy"

    @property
    def requests_total(self) -> int:
        return sum(self.requests.values())

    def by_method(self) -> dict[str, int]:
        result: dict[str, int] = {}
        for (method, _), count in self.requests.items():
            result[method] = result.get(method, 0) + count
        return result

    def by_status(self) -> dict[str, int]:
        result: dict[str, int] = {}
        for (_, status), count in sorted(self.requests.items(), key=lambda item: item[0][1]):
            result[str(status)] = result.get(str(status), 0) + count
        return result

    def to_json(self) -> dict[str, Any]:
        """The /stats document (its schema is in docs/stats.md)."""
        document: dict[str, Any] = {
            "role": self.role,
            "uptime_s": round(self.uptime_s, 3),
            "started_at": self.started_at.isoformat(timespec="milliseconds"),
            "requests": {
                "total": self.requests_total,
                "by_method": self.by_method(),
                "by_status": self.by_status(),
            },
            "bytes_sent": self.bytes_sent,
            "ranges": {**self.ranges, "if_range_failed": self.if_range_failed},
            "streams": {
                "active": self.streams_active,
                **self.streams,
                "aborted_bytes": self.aborted_bytes,
            },
            "latency": {"ttfb_s": self.ttfb.to_json(), "duration_s": self.duration.to_json()},
        }
        if self.upstream is not None:
            document["upstream"] = {
                "requests": self.upstream.requests,
                "open_connections": self.upstream.open_connections,
                "errors": dict(self.upstream.errors),
            }
        return document


class StatsStore(Protocol):
    """What the servers ask of a statistics store.

    Every method is synchronous and cheap: the write side runs on the event loop once or twice
    per exchange, the read side once per /stats or /metrics request. A backend that talks to
    another process does its I/O in its own task, never inside these methods.
    """

    # Set by the proxy once its upstream pool exists; read by snapshot().
    open_upstream_connections: Callable[[], int] | None

    def response_started(self, exchange: Exchange) -> None:
        """The response head is going out (status and declared length are known)."""

    def exchange_finished(self, exchange: Exchange) -> None:
        """The exchange is over: completed, aborted by the client or failed by the server."""

    def record_upstream_request(self) -> None:
        """The proxy sent a request upstream."""

    def record_upstream_error(self, kind: str) -> None:
        """An upstream request failed; ``kind`` is one of UPSTREAM_ERROR_KINDS."""

    def snapshot(self) -> StatsSnapshot:
        """Every figure, consistent with each other."""


class MemoryStatsStore:
    """The counters of one server process, in plain attributes and dicts."""

    def __init__(
        self,
        role: str,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.role = role
        self.open_upstream_connections: Callable[[], int] | None = None
        self._monotonic = monotonic
        # Uptime comes from the monotonic clock (a wall clock can jump); started_at is for people.
        self._started_monotonic = monotonic()
        self._started_at = datetime.datetime.fromtimestamp(wall_clock(), datetime.UTC)
        self._requests: dict[tuple[str, int], int] = {}
        self._bytes_sent = 0
        self._ranges = dict.fromkeys(RANGE_OUTCOMES, 0)
        self._if_range_failed = 0
        self._streams_active = 0
        self._streams = dict.fromkeys(STREAM_OUTCOMES, 0)
        self._aborted_bytes = 0
        self._ttfb = Histogram()
        self._duration = Histogram()
        self._upstream_requests = 0
        self._upstream_errors = dict.fromkeys(UPSTREAM_ERROR_KINDS, 0)

    # A stream is a response with a body. It is active from its head to the end of the exchange;
    # response_started and exchange_finished decide "has a body" with the same test, so every
    # stream counted active is counted finished exactly once.
    @staticmethod
    def _is_stream(exchange: Exchange) -> bool:
        return exchange.status != 0 and exchange.has_body

    def response_started(self, exchange: Exchange) -> None:
        if self._is_stream(exchange):
            self._streams_active += 1

    def exchange_finished(self, exchange: Exchange) -> None:
        method = exchange.method if exchange.method in KNOWN_METHODS else "OTHER"
        key = (method, exchange.status)
        self._requests[key] = self._requests.get(key, 0) + 1
        self._bytes_sent += exchange.bytes_sent
        # The range categories are disjoint: a Range ignored because its If-Range failed counts
        # as if_range_failed only, so "ignored" means invalid or over the limits.
        if exchange.if_range_failed:
            self._if_range_failed += 1
        elif exchange.range_outcome in self._ranges:
            self._ranges[exchange.range_outcome] += 1
        if exchange.first_byte_at is not None:
            self._ttfb.observe(exchange.first_byte_at - exchange.started_at)
        if exchange.finished_at is not None:
            self._duration.observe(exchange.finished_at - exchange.started_at)
        if self._is_stream(exchange):
            self._streams_active -= 1
            if exchange.outcome == "completed":
                self._streams["completed"] += 1
            elif exchange.outcome == "failed":
                self._streams["failed"] += 1
            else:  # "aborted": the client went away
                self._streams["aborted"] += 1
                self._aborted_bytes += exchange.bytes_sent

    def record_upstream_request(self) -> None:
        self._upstream_requests += 1

    def record_upstream_error(self, kind: str) -> None:
        if kind not in self._upstream_errors:
            raise ValueError(f"unknown upstream error kind {kind!r}: {UPSTREAM_ERROR_KINDS}")
        self._upstream_errors[kind] += 1

    def snapshot(self) -> StatsSnapshot:
        upstream = None
        if self.role == "proxy":
            gauge = self.open_upstream_connections
            upstream = UpstreamSnapshot(
                requests=self._upstream_requests,
                open_connections=gauge() if gauge is not None else 0,
                errors=dict(self._upstream_errors),
            )
        return StatsSnapshot(
            role=self.role,
            uptime_s=self._monotonic() - self._started_monotonic,
            started_at=self._started_at,
            requests=dict(self._requests),
            bytes_sent=self._bytes_sent,
            ranges=dict(self._ranges),
            if_range_failed=self._if_range_failed,
            streams_active=self._streams_active,
            streams=dict(self._streams),
            aborted_bytes=self._aborted_bytes,
            ttfb=self._ttfb.snapshot(),
            duration=self._duration.snapshot(),
            upstream=upstream,
        )
