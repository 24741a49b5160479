"""The pure count arithmetic of the shared store: a snapshot as a flat mapping, and back.

Redis keeps each instance's counters and the totals as hashes of these fields; the pusher
sends the difference between what it counted and what Redis acknowledged (:func:`subtract`),
and /stats shows Redis's totals plus what was counted since (:func:`add`, :func:`unflatten`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from trio_range.stats.histogram import HistogramSnapshot
from trio_range.stats.snapshot import (
    CACHE_COUNTERS,
    RANGE_OUTCOMES,
    REFUSAL_LIMITS,
    STREAM_OUTCOMES,
    UPSTREAM_ERROR_KINDS,
    CacheSnapshot,
    ShapingSnapshot,
    StatsSnapshot,
    UpstreamSnapshot,
)

Counts = Mapping[str, float]

# Field names: "req:GET:206", "bytes_sent", "range:single", "stream:completed", "ttfb:17",
# "ttfb:sum", ... Integers everywhere but the latency sums (the names ending in ":sum").


def is_float_field(name: str) -> bool:
    return name.endswith(":sum")


def flatten(s: StatsSnapshot) -> dict[str, float]:
    """The counters of ``s`` (gauges and clocks left out) as one flat mapping."""
    counts: dict[str, float] = {}
    for (method, status), n in s.requests.items():
        counts[f"req:{method}:{status}"] = n
    counts["requests"] = s.requests_total  # for the per-instance breakdown
    counts["bytes_sent"] = s.bytes_sent
    for outcome, n in s.ranges.items():
        counts[f"range:{outcome}"] = n
    counts["if_range_failed"] = s.if_range_failed
    for outcome, n in s.streams.items():
        counts[f"stream:{outcome}"] = n
    counts["aborted_bytes"] = s.aborted_bytes
    for name, histogram in (("ttfb", s.ttfb), ("dur", s.duration)):
        for index, n in enumerate(histogram.counts):
            counts[f"{name}:{index}"] = n
        counts[f"{name}:sum"] = float(histogram.sum)
    if s.upstream is not None:
        counts["up:requests"] = s.upstream.requests
        for kind, n in s.upstream.errors.items():
            counts[f"up:err:{kind}"] = n
    counts["paced"] = s.shaping.paced_streams
    counts["pace_wait:sum"] = s.shaping.pacing_wait_s
    for limit, n in s.shaping.refused.items():
        counts[f"refused:{limit}"] = n
    if s.cache is not None:  # issue 15
        for name, n in s.cache.counts.items():
            counts[f"cache:{name}"] = n
    return counts


def subtract(now: Counts, before: Counts) -> dict[str, float]:
    """What changed from ``before`` to ``now``; unchanged fields left out."""
    delta: dict[str, float] = {}
    for name, value in now.items():
        change = value - before.get(name, 0)
        if change:
            delta[name] = change
    return delta


def add(a: Counts, b: Counts) -> dict[str, float]:
    result = dict(a)
    for name, value in b.items():
        result[name] = result.get(name, 0) + value
    return result


def parse_counts(flat: Sequence[str]) -> dict[str, float]:
    """An ``HGETALL`` reply (``[field, value, ...]``) as counts; ``_``-fields left out."""
    counts: dict[str, float] = {}
    for name, text in zip(flat[::2], flat[1::2], strict=True):
        if not name.startswith("_"):
            counts[name] = float(text) if is_float_field(name) else int(text)
    return counts


def _histogram(counts: Counts, name: str, template: HistogramSnapshot) -> HistogramSnapshot:
    return HistogramSnapshot(
        template.bounds,
        tuple(int(counts.get(f"{name}:{i}", 0)) for i in range(len(template.counts))),
        float(counts.get(f"{name}:sum", 0.0)),
    )


def unflatten(
    counts: Counts,
    local: StatsSnapshot,
    *,
    streams_active: int,
    upstream_open: int,
    cache_disk_bytes: int = 0,
) -> StatsSnapshot:
    """A snapshot holding ``counts`` and the given gauges; role and clocks from ``local``."""
    requests: dict[tuple[str, int], int] = {}
    for name, n in counts.items():
        if name.startswith("req:") and n:
            method, _, status = name[4:].rpartition(":")
            requests[(method, int(status))] = int(n)
    upstream = None
    if local.upstream is not None:
        upstream = UpstreamSnapshot(
            requests=int(counts.get("up:requests", 0)),
            open_connections=upstream_open,
            errors={kind: int(counts.get(f"up:err:{kind}", 0)) for kind in UPSTREAM_ERROR_KINDS},
        )
    return StatsSnapshot(
        role=local.role,
        uptime_s=local.uptime_s,
        started_at=local.started_at,
        requests=requests,
        bytes_sent=int(counts.get("bytes_sent", 0)),
        ranges={o: int(counts.get(f"range:{o}", 0)) for o in RANGE_OUTCOMES},
        if_range_failed=int(counts.get("if_range_failed", 0)),
        streams_active=streams_active,
        streams={o: int(counts.get(f"stream:{o}", 0)) for o in STREAM_OUTCOMES},
        aborted_bytes=int(counts.get("aborted_bytes", 0)),
        ttfb=_histogram(counts, "ttfb", local.ttfb),
        duration=_histogram(counts, "dur", local.duration),
        upstream=upstream,
        shaping=ShapingSnapshot(
            paced_streams=int(counts.get("paced", 0)),
            pacing_wait_s=float(counts.get("pace_wait:sum", 0.0)),
            refused={limit: int(counts.get(f"refused:{limit}", 0)) for limit in REFUSAL_LIMITS},
        ),
        cache=None
        if local.cache is None
        else CacheSnapshot(
            counts={name: int(counts.get(f"cache:{name}", 0)) for name in CACHE_COUNTERS},
            disk_bytes=cache_disk_bytes,
        ),
    )
