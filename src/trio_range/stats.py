"""Usage statistics, kept in memory and safe under trio.

Trio-safe because every update is a plain synchronous method: no update spans an ``await``, and
nothing here is touched from worker threads. Updates happen once per exchange (at response start
and at the end), never per chunk: the connection counts bytes in the exchange itself.
"""

from __future__ import annotations

import datetime
import time
from collections import Counter
from typing import Any

from trio_range.connection import Exchange


class MemoryStatsStore:
    """Per-process counters of one server."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.started_monotonic = time.monotonic()
        self.started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        self.requests_total = 0
        self.by_method: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.bytes_sent = 0
        self.ranges: Counter[str] = Counter(
            single=0, multi=0, unsatisfiable=0, ignored=0, if_range_failed=0
        )
        self.streams_active = 0
        self.streams_completed = 0
        self.streams_aborted = 0
        self.aborted_bytes = 0

    def response_started(self, exchange: Exchange) -> None:
        if exchange.has_body:
            self.streams_active += 1

    def exchange_finished(self, exchange: Exchange) -> None:
        self.requests_total += 1
        self.by_method[exchange.method] += 1
        self.by_status[str(exchange.status)] += 1
        self.bytes_sent += exchange.bytes_sent
        if exchange.range_outcome in self.ranges:
            self.ranges[exchange.range_outcome] += 1
        if exchange.if_range_failed:
            self.ranges["if_range_failed"] += 1
        if exchange.status and exchange.has_body:
            self.streams_active -= 1
            if exchange.outcome == "completed":
                self.streams_completed += 1
            else:
                self.streams_aborted += 1
                self.aborted_bytes += exchange.bytes_sent

    def snapshot(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "uptime_s": round(time.monotonic() - self.started_monotonic, 3),
            "started_at": self.started_at,
            "requests": {
                "total": self.requests_total,
                "by_method": dict(self.by_method),
                "by_status": dict(self.by_status),
            },
            "bytes_sent": self.bytes_sent,
            "ranges": dict(self.ranges),
            "streams": {
                "active": self.streams_active,
                "completed": self.streams_completed,
                "aborted": self.streams_aborted,
                "aborted_bytes": self.aborted_bytes,
            },
        }
