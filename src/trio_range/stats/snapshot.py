"""Every figure of a statistics store at one moment, as immutable values, and the /stats JSON.

Pure: the in-memory store, the Redis store and the Prometheus collector all produce or read
these values; docs/stats.md documents the JSON they turn into.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from trio_range.stats.histogram import HistogramSnapshot

RANGE_OUTCOMES = ("single", "multi", "unsatisfiable", "ignored")
STREAM_OUTCOMES = ("completed", "aborted", "failed")
UPSTREAM_ERROR_KINDS = ("connect", "timeout", "truncated", "status_5xx")
# The limits past which a server answers 503 itself, each counted (issue 16), named as the
# settings that set them.
REFUSAL_LIMITS = ("max_connections", "max_connections_per_client", "max_streams")
# --- issue 15: the proxy's slice cache ---
# Requests by how the cache answered them, then byte and event counters (docs/cache.md).
CACHE_REQUEST_KINDS = ("hit", "miss", "revalidated", "bypass")
CACHE_COUNTERS = (
    *CACHE_REQUEST_KINDS,
    "bytes_from_cache",
    "bytes_from_upstream",
    "collapsed",
    "evictions",
)
# --- end issue 15 ---

# A client chooses the method: any other name is counted as OTHER, so a scanner sending random
# methods cannot grow the counters (or a Prometheus server's series) without bound.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)


@dataclasses.dataclass(frozen=True, slots=True)
class UpstreamSnapshot:
    """The proxy's view of its upstream."""

    requests: int
    open_connections: int
    errors: Mapping[str, int]  # every kind of UPSTREAM_ERROR_KINDS, zeros included


# --- issue 15 ---
@dataclasses.dataclass(frozen=True, slots=True)
class CacheSnapshot:
    """The proxy's slice cache: every counter of CACHE_COUNTERS, and the disk it uses now."""

    counts: Mapping[str, int]
    disk_bytes: int

    @property
    def hit_ratio(self) -> float | None:
        """Hits over the requests the cache answered (hits, misses, revalidations)."""
        answered = sum(self.counts[kind] for kind in ("hit", "miss", "revalidated"))
        return None if answered == 0 else self.counts["hit"] / answered

    def to_json(self) -> dict[str, Any]:
        ratio = self.hit_ratio
        return {
            **self.counts,
            "disk_bytes": self.disk_bytes,
            "hit_ratio": None if ratio is None else round(ratio, 4),
        }


# --- end issue 15 ---


@dataclasses.dataclass(frozen=True, slots=True)
class ShapingSnapshot:
    """Traffic shaping (issue 16): paced responses, their waits, and refusals by limit."""

    paced_streams: int
    pacing_wait_s: float
    refused: Mapping[str, int]  # every limit of REFUSAL_LIMITS, zeros included

    def to_json(self) -> dict[str, Any]:
        return {
            "shaping": {
                "paced_streams": self.paced_streams,
                "pacing_wait_s": round(self.pacing_wait_s, 3),
            },
            "refused": dict(self.refused),
        }


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
    shaping: ShapingSnapshot
    # issue 15: None unless the proxy has a cache (keyword-only: subclasses add fields after)
    cache: CacheSnapshot | None = dataclasses.field(default=None, kw_only=True)

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
        document.update(self.shaping.to_json())
        if self.upstream is not None:
            document["upstream"] = {
                "requests": self.upstream.requests,
                "open_connections": self.upstream.open_connections,
                "errors": dict(self.upstream.errors),
            }
        if self.cache is not None:
            document["cache"] = self.cache.to_json()
        return document
