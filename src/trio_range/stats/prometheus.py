"""Prometheus exposition of a :class:`~trio_range.stats.store.StatsStore`, read at scrape time.

A custom collector turns one snapshot into metric families on every scrape: nothing is counted
twice (the store stays the one source of truth), and the hot path never touches
``prometheus_client``. Each app gets its own ``CollectorRegistry``: the global one would mix the
origin and the proxy when both run in one process (the demo, the tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString

from trio_range.stats.histogram import HistogramSnapshot
from trio_range.stats.snapshot import CACHE_REQUEST_KINDS, ShapingSnapshot
from trio_range.stats.store import StatsStore

PREFIX = "trio_range"

# prometheus_client's own formatting of a bucket bound (as Go prints floats), typed.
_le: Callable[[float], str] = floatToGoString


def _histogram(name: str, documentation: str, snapshot: HistogramSnapshot) -> Metric:
    cumulative = snapshot.cumulative()
    buckets = [
        (_le(bound), float(count))
        for bound, count in zip(snapshot.bounds, cumulative, strict=False)
    ]
    buckets.append(("+Inf", float(cumulative[-1])))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=snapshot.sum)


class StatsCollector:
    """Reads ``store`` when Prometheus scrapes and reports it with conventional names."""

    def __init__(self, store: StatsStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        s = self.store.snapshot()
        p = PREFIX
        info = GaugeMetricFamily(f"{p}_info", "Which trio_range server this is.", labels=["role"])
        info.add_metric([s.role], 1.0)
        yield info
        yield GaugeMetricFamily(
            f"{p}_start_time_seconds",
            "When the server started, in seconds since the Unix epoch.",
            value=s.started_at.timestamp(),
        )
        yield GaugeMetricFamily(
            f"{p}_uptime_seconds", "Seconds since the server started (monotonic).", value=s.uptime_s
        )
        requests = CounterMetricFamily(
            f"{p}_requests",
            "Finished requests, by method and status (status 0: the client left before any "
            "response). Monitoring endpoints are not counted.",
            labels=["method", "status"],
        )
        for (method, status), count in sorted(s.requests.items()):
            requests.add_metric([method, str(status)], count)
        yield requests
        yield CounterMetricFamily(
            f"{p}_bytes_sent", "Body bytes written to clients.", value=s.bytes_sent
        )
        ranges = CounterMetricFamily(
            f"{p}_ranges", "Range requests, by how the Range was treated.", labels=["outcome"]
        )
        for outcome, count in s.ranges.items():
            ranges.add_metric([outcome], count)
        yield ranges
        yield CounterMetricFamily(
            f"{p}_if_range_failed",
            "Requests whose If-Range did not match (the whole representation was sent).",
            value=s.if_range_failed,
        )
        yield GaugeMetricFamily(
            f"{p}_streams_active", "Responses whose body is being sent.", value=s.streams_active
        )
        streams = CounterMetricFamily(
            f"{p}_streams",
            "Finished responses with a body: completed, aborted (the client left) or failed "
            "(the server aborted).",
            labels=["outcome"],
        )
        for outcome, count in s.streams.items():
            streams.add_metric([outcome], count)
        yield streams
        yield CounterMetricFamily(
            f"{p}_aborted_bytes",
            "Body bytes sent on streams the client aborted.",
            value=s.aborted_bytes,
        )
        yield _histogram(
            f"{p}_ttfb_seconds",
            "From the request to its response head being sent.",
            s.ttfb,
        )
        yield _histogram(
            f"{p}_request_duration_seconds",
            "From the request to the end of its exchange.",
            s.duration,
        )
        yield from _shaping(s.shaping)
        if s.upstream is not None:
            yield CounterMetricFamily(
                f"{p}_upstream_requests",
                "Requests the proxy sent upstream.",
                value=s.upstream.requests,
            )
            errors = CounterMetricFamily(
                f"{p}_upstream_errors", "Failed upstream requests, by kind.", labels=["kind"]
            )
            for kind, count in s.upstream.errors.items():
                errors.add_metric([kind], count)
            yield errors
            yield GaugeMetricFamily(
                f"{p}_upstream_connections_open",
                "Connections open to the upstream.",
                value=s.upstream.open_connections,
            )
        # --- issue 15: the slice cache ---
        if s.cache is not None:
            requests_by = CounterMetricFamily(
                f"{p}_cache_requests",
                "Requests by how the slice cache answered them (hit, miss, revalidated, bypass).",
                labels=["result"],
            )
            for kind in CACHE_REQUEST_KINDS:
                requests_by.add_metric([kind], s.cache.counts[kind])
            yield requests_by
            for name, documentation in (
                ("bytes_from_cache", "Body bytes sent from stored slices."),
                ("bytes_from_upstream", "Slice bytes fetched from the upstream."),
                ("collapsed", "Slice requests that joined a fill already in flight."),
                ("evictions", "Slices evicted to hold the disk bound."),
            ):
                yield CounterMetricFamily(
                    f"{p}_cache_{name}", documentation, value=s.cache.counts[name]
                )
            yield GaugeMetricFamily(
                f"{p}_cache_disk_bytes", "Bytes of slice files on disk.", value=s.cache.disk_bytes
            )
        # --- end issue 15 ---


def _shaping(shaping: ShapingSnapshot) -> Iterator[Metric]:
    p = PREFIX
    yield CounterMetricFamily(
        f"{p}_paced_streams", "Responses paced by a rate limit.", value=shaping.paced_streams
    )
    yield CounterMetricFamily(
        f"{p}_pacing_wait_seconds",
        "Seconds paced responses slept waiting for tokens (summed over responses).",
        value=shaping.pacing_wait_s,
    )
    refused = CounterMetricFamily(
        f"{p}_refused",
        "Connections or requests answered 503 by the server itself, by the limit passed.",
        labels=["limit"],
    )
    for limit, count in shaping.refused.items():
        refused.add_metric([limit], count)
    yield refused


def metrics_registry(store: StatsStore) -> CollectorRegistry:
    """A registry of its own holding one :class:`StatsCollector` for ``store``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(store))
    return registry


def render(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The exposition body and its Content-Type, in the format ``accept`` asks for.

    Prometheus' text format 0.0.4 by default; OpenMetrics when the scraper asks for it.
    """
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
