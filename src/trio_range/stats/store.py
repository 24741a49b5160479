"""Usage statistics: the :class:`StatsStore` interface and its in-memory implementation.

Trio-safe because every update is a plain synchronous method: no update spans an ``await``, so
no other task can see half of one, and nothing here is touched from worker threads. Updates
happen once per exchange (when the response head goes out and when the exchange ends), never
per chunk: the connection counts body bytes in the exchange itself.

A shared backend fits the same interface without touching the servers:
:mod:`trio_range.stats.redis_store` counts in a local :class:`MemoryStatsStore` (no I/O on the
hot path) and pushes the deltas to Redis from a task of its own (docs/scale-out.md).

Pure: no trio, quart or ``os`` here, so the maths are tested without a server. The store reads
an exchange through the :class:`FinishedExchange` protocol, so it needs nothing of the server
layer above it.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from typing import Protocol

from trio_range.stats.histogram import Histogram
from trio_range.stats.snapshot import (
    CACHE_COUNTERS,
    KNOWN_METHODS,
    RANGE_OUTCOMES,
    REFUSAL_LIMITS,
    STREAM_OUTCOMES,
    UPSTREAM_ERROR_KINDS,
    CacheSnapshot,
    ShapingSnapshot,
    StatsSnapshot,
    UpstreamSnapshot,
)


class FinishedExchange(Protocol):
    """What a store reads of an exchange (``trio_range.server.exchange.Exchange`` has it)."""

    @property
    def method(self) -> str: ...
    @property
    def status(self) -> int: ...
    @property
    def has_body(self) -> bool: ...
    @property
    def bytes_sent(self) -> int: ...
    @property
    def range_outcome(self) -> str: ...
    @property
    def if_range_failed(self) -> bool: ...
    @property
    def outcome(self) -> str: ...
    @property
    def started_at(self) -> float: ...
    @property
    def first_byte_at(self) -> float | None: ...
    @property
    def finished_at(self) -> float | None: ...
    @property
    def paced(self) -> bool: ...
    @property
    def pacing_wait_s(self) -> float: ...


class StatsStore(Protocol):
    """What the servers ask of a statistics store.

    Every method is synchronous and cheap: the write side runs on the event loop once or twice
    per exchange, the read side once per /stats or /metrics request. A backend that talks to
    another process does its I/O in its own task, never inside these methods.
    """

    # Set by the proxy once its upstream pool exists; read by snapshot().
    open_upstream_connections: Callable[[], int] | None

    def response_started(self, exchange: FinishedExchange) -> None:
        """The response head is going out (status and declared length are known)."""

    def exchange_finished(self, exchange: FinishedExchange) -> None:
        """The exchange is over: completed, aborted by the client or failed by the server."""

    def record_upstream_request(self) -> None:
        """The proxy sent a request upstream."""

    def record_upstream_error(self, kind: str) -> None:
        """An upstream request failed; ``kind`` is one of UPSTREAM_ERROR_KINDS."""

    def record_refusal(self, limit: str) -> None:
        """The server answered 503 past ``limit``, one of REFUSAL_LIMITS."""

    # --- issue 15: the slice cache ---
    # Set by a proxy with a cache (its disk bytes); a store with it set reports a cache.
    cache_disk_bytes: Callable[[], int] | None

    def record_cache(self, counter: str, amount: int = 1) -> None:
        """Count ``amount`` in ``counter``, one of CACHE_COUNTERS."""

    # --- end issue 15 ---

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
        self._paced_streams = 0
        self._pacing_wait_s = 0.0
        self._refused = dict.fromkeys(REFUSAL_LIMITS, 0)
        # issue 15
        self.cache_disk_bytes: Callable[[], int] | None = None
        self._cache = dict.fromkeys(CACHE_COUNTERS, 0)

    # A stream is a response with a body. It is active from its head to the end of the exchange;
    # response_started and exchange_finished decide "has a body" with the same test, so every
    # stream counted active is counted finished exactly once.
    @staticmethod
    def _is_stream(exchange: FinishedExchange) -> bool:
        return exchange.status != 0 and exchange.has_body

    def response_started(self, exchange: FinishedExchange) -> None:
        if self._is_stream(exchange):
            self._streams_active += 1

    def exchange_finished(self, exchange: FinishedExchange) -> None:
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
        if exchange.paced:
            self._paced_streams += 1
            self._pacing_wait_s += exchange.pacing_wait_s

    def record_upstream_request(self) -> None:
        self._upstream_requests += 1

    def record_upstream_error(self, kind: str) -> None:
        if kind not in self._upstream_errors:
            raise ValueError(f"unknown upstream error kind {kind!r}: {UPSTREAM_ERROR_KINDS}")
        self._upstream_errors[kind] += 1

    def record_refusal(self, limit: str) -> None:
        if limit not in self._refused:
            raise ValueError(f"unknown limit {limit!r}: {REFUSAL_LIMITS}")
        self._refused[limit] += 1

    # --- issue 15 ---
    def record_cache(self, counter: str, amount: int = 1) -> None:
        if counter not in self._cache:
            raise ValueError(f"unknown cache counter {counter!r}: {CACHE_COUNTERS}")
        self._cache[counter] += amount

    def _cache_snapshot(self) -> CacheSnapshot | None:
        gauge = self.cache_disk_bytes
        if gauge is None:
            return None
        return CacheSnapshot(counts=dict(self._cache), disk_bytes=gauge())

    # --- end issue 15 ---

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
            shaping=ShapingSnapshot(self._paced_streams, self._pacing_wait_s, dict(self._refused)),
            cache=self._cache_snapshot(),
        )
