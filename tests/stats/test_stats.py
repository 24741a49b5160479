"""Statistics: the store and its histogram maths, then /stats, /metrics and the dashboard over
real sockets (Hypercorn in the test's nursery, real clients, headless Chromium)."""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import logging
import math
import random
import re
import shutil
import socket
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SMALL
from tests.support.servers import CHROMIUM_FLAGS, start_origin
from trio_range.config import OriginConfig, ServerConfig
from trio_range.errors import ConfigError
from trio_range.server.exchange import Exchange
from trio_range.stats.histogram import LATENCY_BUCKETS_S, Histogram, HistogramSnapshot
from trio_range.stats.store import MemoryStatsStore, StatsStore

# --- histogram maths ------------------------------------------------------------------------


def test_latency_buckets_are_log_spaced_from_100_us_to_10000_s() -> None:
    bounds = LATENCY_BUCKETS_S
    assert bounds[0] == 1e-4
    assert bounds[-1] == 1e4
    assert len(bounds) == 41  # five a decade over eight decades, plus the last bound
    ratios = [b / a for a, b in itertools.pairwise(bounds)]
    assert all(1.45 < ratio < 1.65 for ratio in ratios), ratios
    # Written as decimals, so the exposition shows le="0.00016", not a float artefact.
    assert 0.00016 in bounds
    assert 6.3 in bounds


def test_a_value_on_a_bound_counts_in_that_bounds_bucket() -> None:
    histogram = Histogram((1.0, 2.0, 4.0))
    for value in (0.0, 1.0, 1.5, 2.0, 4.0, 4.5, 1000.0):
        histogram.observe(value)
    snapshot = histogram.snapshot()
    assert snapshot.counts == (2, 2, 1, 2)  # (..1], (1..2], (2..4], +Inf
    assert snapshot.cumulative() == [2, 4, 5, 7]
    assert snapshot.count == 7
    assert snapshot.sum == pytest.approx(1013.0)


@pytest.mark.parametrize(
    ("counts", "q", "expected"),
    [
        # rank 2 of 4 lies at the top of the first bucket, which starts at 0.
        ((2, 2, 0, 0), 0.5, 1.0),
        # rank 3: one of the two values of (1, 2] -> halfway.
        ((2, 2, 0, 0), 0.75, 1.5),
        ((2, 2, 0, 0), 1.0, 2.0),
        # One value in (2, 4]: every quantile interpolates inside that bucket.
        ((0, 0, 1, 0), 0.5, 3.0),
        ((0, 0, 1, 0), 0.99, 3.98),
        # Ranks in +Inf answer the highest finite bound, as PromQL does.
        ((0, 0, 0, 5), 0.5, 4.0),
        ((1, 0, 0, 1), 0.99, 4.0),
        # Empty buckets between are skipped: rank 1.9 of 2 is 90 % into (2, 4].
        ((1, 0, 1, 0), 0.95, 3.8),
        ((1, 0, 1, 0), 0.0, 0.0),
    ],
)
def test_quantile_interpolates_linearly_inside_its_bucket(
    counts: tuple[int, ...], q: float, expected: float
) -> None:
    snapshot = HistogramSnapshot((1.0, 2.0, 4.0), counts, 0.0)
    assert snapshot.quantile(q) == pytest.approx(expected)


def test_quantile_of_an_empty_histogram_is_none() -> None:
    assert Histogram().snapshot().quantile(0.5) is None
    assert Histogram().snapshot().to_json() == {
        "count": 0,
        "sum": 0.0,
        "p50": None,
        "p95": None,
        "p99": None,
    }


def test_quantile_outside_0_to_1_is_an_error() -> None:
    with pytest.raises(ValueError, match="quantile"):
        HistogramSnapshot((1.0,), (1, 0), 0.5).quantile(1.5)


def test_histogram_bounds_must_increase() -> None:
    with pytest.raises(ValueError, match="increasing"):
        Histogram((1.0, 1.0))


@given(
    st.lists(st.floats(min_value=0.0, max_value=2e4), min_size=1, max_size=300),
    st.sampled_from([0.5, 0.9, 0.95, 0.99, 1.0]),
)
def test_quantile_estimate_lies_in_the_bucket_of_the_true_quantile(
    values: list[float], q: float
) -> None:
    histogram = Histogram()
    for value in values:
        histogram.observe(value)
    estimate = histogram.snapshot().quantile(q)
    assert estimate is not None
    # The nearest-rank quantile: the ceil(q * n)-th smallest value.
    true = sorted(values)[max(1, math.ceil(q * len(values))) - 1]
    bounds = LATENCY_BUCKETS_S
    if true > bounds[-1]:
        assert estimate == bounds[-1]
        return
    index = next(i for i, bound in enumerate(bounds) if true <= bound)
    lower = bounds[index - 1] if index else 0.0
    assert lower <= estimate <= bounds[index] * (1 + 1e-12)


@given(st.lists(st.floats(min_value=0.0, max_value=100.0), min_size=1, max_size=100))
def test_quantiles_never_decrease_with_q(values: list[float]) -> None:
    histogram = Histogram()
    for value in values:
        histogram.observe(value)
    snapshot = histogram.snapshot()
    estimates = [snapshot.quantile(q / 20) for q in range(21)]
    assert estimates == sorted(estimates, key=lambda e: e or 0.0)


# --- the store ------------------------------------------------------------------------------


def make_exchange(
    method: str = "GET",
    status: int = 200,
    *,
    declared: int | None = 100,
    sent: int = 100,
    outcome: str = "completed",
    range_outcome: str = "none",
    if_range_failed: bool = False,
    ttfb_s: float | None = 0.002,
    duration_s: float = 0.01,
) -> Exchange:
    exchange = Exchange(
        method=method,
        path="/media/x",
        query="",
        range_header=None,
        resources=AsyncExitStack(),
        started_at=100.0,
        status=status,
        declared_length=declared,
        bytes_sent=sent,
        outcome=outcome,
        range_outcome=range_outcome,
        if_range_failed=if_range_failed,
    )
    exchange.first_byte_at = None if ttfb_s is None else 100.0 + ttfb_s
    exchange.finished_at = 100.0 + duration_s
    return exchange


def run(store: StatsStore, exchange: Exchange) -> None:
    if exchange.status:
        store.response_started(exchange)
    store.exchange_finished(exchange)


def test_memory_store_satisfies_the_stats_store_interface() -> None:
    store: StatsStore = MemoryStatsStore("origin")
    assert store.open_upstream_connections is None


def test_uptime_counts_whole_days_from_the_monotonic_clock() -> None:
    # The design this project replaced lost the days of its uptime (timedelta.seconds).
    now = [5000.0]
    store = MemoryStatsStore("origin", monotonic=lambda: now[0], wall_clock=lambda: 1.7e9)
    now[0] += 3 * 86400 + 7.5
    document = store.snapshot().to_json()
    assert document["uptime_s"] == 3 * 86400 + 7.5
    started = datetime.datetime.fromisoformat(document["started_at"])
    assert started == datetime.datetime.fromtimestamp(1.7e9, datetime.UTC)
    assert started.utcoffset() == datetime.timedelta(0)


def test_every_exchange_is_counted_once_with_its_bytes_and_outcome() -> None:
    store = MemoryStatsStore("origin")
    run(store, make_exchange(sent=100))
    run(store, make_exchange(status=206, sent=10, declared=10, range_outcome="single"))
    run(store, make_exchange(status=206, sent=50, declared=90, range_outcome="multi",
                             outcome="aborted"))  # fmt: skip
    run(
        store,
        make_exchange(sent=30, outcome="failed", range_outcome="ignored", if_range_failed=True),
    )
    run(store, make_exchange("HEAD", 200, sent=0))
    run(store, make_exchange(status=304, declared=None, sent=0))
    run(store, make_exchange(status=416, declared=0, sent=0, range_outcome="unsatisfiable"))
    document = store.snapshot().to_json()
    assert document["requests"] == {
        "total": 7,
        "by_method": {"GET": 6, "HEAD": 1},
        "by_status": {"200": 3, "206": 2, "304": 1, "416": 1},
    }
    assert document["bytes_sent"] == 190
    assert document["ranges"] == {
        "single": 1,
        "multi": 1,
        "unsatisfiable": 1,
        "ignored": 0,
        "if_range_failed": 1,
    }
    # HEAD, 304 and an empty 416 have no body: they are requests, not streams.
    assert document["streams"] == {
        "active": 0,
        "completed": 2,
        "aborted": 1,
        "failed": 1,
        "aborted_bytes": 50,
    }
    assert document["latency"]["ttfb_s"]["count"] == 7
    assert document["latency"]["duration_s"]["count"] == 7
    assert "upstream" not in document


def test_a_stream_is_active_between_its_head_and_its_end() -> None:
    store = MemoryStatsStore("origin")
    exchange = make_exchange()
    store.response_started(exchange)
    assert store.snapshot().streams_active == 1
    store.exchange_finished(exchange)
    assert store.snapshot().streams_active == 0


def test_client_leaving_before_any_response_counts_as_status_0_without_a_stream() -> None:
    store = MemoryStatsStore("origin")
    store.exchange_finished(
        make_exchange(status=0, declared=None, sent=0, outcome="aborted", ttfb_s=None)
    )
    snapshot = store.snapshot()
    assert snapshot.by_status() == {"0": 1}
    assert snapshot.streams_active == 0
    assert snapshot.streams == {"completed": 0, "aborted": 0, "failed": 0}
    assert snapshot.ttfb.count == 0
    assert snapshot.duration.count == 1


def test_unknown_methods_are_counted_as_other() -> None:
    store = MemoryStatsStore("origin")
    for method in ("GET", "BREW", "X" * 1000):
        run(store, make_exchange(method, 405, sent=0, declared=0))
    assert store.snapshot().by_method() == {"GET": 1, "OTHER": 2}


def test_proxy_snapshot_has_upstream_counters_and_reads_the_gauge() -> None:
    store = MemoryStatsStore("proxy")
    assert store.snapshot().to_json()["upstream"]["open_connections"] == 0
    store.open_upstream_connections = lambda: 3
    for _ in range(4):
        store.record_upstream_request()
    for kind in ("connect", "timeout", "timeout", "truncated", "status_5xx"):
        store.record_upstream_error(kind)
    assert store.snapshot().to_json()["upstream"] == {
        "requests": 4,
        "open_connections": 3,
        "errors": {"connect": 1, "timeout": 2, "truncated": 1, "status_5xx": 1},
    }


def test_an_unknown_upstream_error_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="refused"):
        MemoryStatsStore("proxy").record_upstream_error("refused")


def test_latency_is_measured_from_the_request_start() -> None:
    store = MemoryStatsStore("origin")
    run(store, make_exchange(ttfb_s=0.003, duration_s=0.5))
    snapshot = store.snapshot()
    assert snapshot.ttfb.sum == pytest.approx(0.003)
    assert snapshot.duration.sum == pytest.approx(0.5)
    p50 = snapshot.ttfb.quantile(0.5)
    assert p50 is not None
    assert 0.0025 <= p50 <= 0.004


async def test_many_tasks_updating_at_once_leave_a_consistent_snapshot() -> None:
    store = MemoryStatsStore("proxy")
    rng = random.Random(4)
    tasks, per_task = 100, 40
    # Bookkeeping the test keeps next to each store call, with no await in between: the store
    # must agree with it whenever another task looks.
    started = finished = 0
    expected_bytes = expected_aborted_bytes = 0
    done = False
    snapshots = 0

    def check() -> None:
        s = store.snapshot()
        total = s.requests_total
        assert total == sum(s.by_method().values()) == sum(s.by_status().values())
        assert s.ttfb.count == s.duration.count == total
        assert s.streams_active == started - finished
        assert sum(s.streams.values()) == finished
        assert s.upstream is not None
        assert s.upstream.requests == started

    async def worker(seed: int) -> None:
        nonlocal started, finished, expected_bytes, expected_aborted_bytes
        task_rng = random.Random(seed)
        for _ in range(per_task):
            outcome = task_rng.choice(["completed", "completed", "aborted", "failed"])
            exchange = make_exchange(status=task_rng.choice([200, 206]), sent=0, outcome="pending")
            store.record_upstream_request()
            store.response_started(exchange)
            started += 1
            for _ in range(task_rng.randrange(3)):
                await (
                    trio.lowlevel.checkpoint()
                )  # other tasks update and look while this stream is active
                exchange.bytes_sent += task_rng.randrange(1, 10_000)
            exchange.outcome = outcome
            store.exchange_finished(exchange)
            finished += 1
            expected_bytes += exchange.bytes_sent
            if outcome == "aborted":
                expected_aborted_bytes += exchange.bytes_sent
            await trio.lowlevel.checkpoint()

    async def checker() -> None:
        nonlocal snapshots
        while not done:
            check()
            snapshots += 1
            await trio.lowlevel.checkpoint()

    with trio.fail_after(30):
        async with trio.open_nursery() as checkers:
            checkers.start_soon(checker)
            async with trio.open_nursery() as workers:
                for _ in range(tasks):
                    workers.start_soon(worker, rng.randrange(1 << 30))
            done = True
    check()
    final = store.snapshot()
    assert snapshots >= per_task  # the checker looked between the updates
    assert final.requests_total == tasks * per_task
    assert final.bytes_sent == expected_bytes
    assert final.aborted_bytes == expected_aborted_bytes
    assert final.streams_active == 0


# --- the settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"stats_path": "stats"},
        {"stats_path": "/stats/"},
        {"stats_path": "/a b"},
        {"stats_path": '/"><script>'},
        {"metrics_path": "/healthz"},
        {"metrics_path": "/stats"},
        {"metrics_path": "/stats/metrics"},
        {"stats_token": "has space"},
        {"stats_token": "a=b"},
    ],
)
def test_bad_stats_settings_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        dataclasses.replace(ServerConfig(), **overrides).validate()


def test_stats_settings_are_off_by_default_and_may_be_turned_off() -> None:
    config = OriginConfig()
    assert (config.stats_path, config.metrics_path, config.stats_token) == (
        "/stats",
        "/metrics",
        "",
    )
    ServerConfig(stats_path="", metrics_path="", stats_token="abc-DEF_1.2~+/==").validate()


# --- over real sockets ----------------------------------------------------------------------


JSON = {"Accept": "application/json"}
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


async def get_stats(url: str, **headers: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        response = await client.get(url + "/stats", headers={**JSON, **headers})
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


async def stats_once_total_is(url: str, total: int) -> dict[str, Any]:
    """/stats once ``total`` requests have finished (the last one ends just after its body)."""
    with trio.fail_after(10):
        while (document := await get_stats(url))["requests"]["total"] < total:
            await trio.sleep(0.01)
    assert document["requests"]["total"] == total
    return document


def flatten(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def counter_changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """The counters that moved (uptime and latency figures aside), by dotted key."""
    old, new = flatten(before), flatten(after)
    changes = {}
    for key, value in new.items():
        if key == "uptime_s" or key.startswith("latency.") or not isinstance(value, int):
            continue
        if value != old.get(key, 0):
            changes[key] = value - old.get(key, 0)
    return changes


def one_request(status: str, method: str = "GET") -> dict[str, int]:
    return {
        "requests.total": 1,
        f"requests.by_method.{method}": 1,
        f"requests.by_status.{status}": 1,
    }


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(
            {},
            {**one_request("200"), "bytes_sent": 11, "streams.completed": 1},
            id="200",
        ),
        pytest.param(
            {"Range": "bytes=2-5"},
            {**one_request("206"), "bytes_sent": 4, "ranges.single": 1, "streams.completed": 1},
            id="206",
        ),
        pytest.param(
            {"Range": "bytes=5-2"},
            {**one_request("200"), "bytes_sent": 11, "ranges.ignored": 1, "streams.completed": 1},
            id="ignored",
        ),
    ],
)
async def test_counters_move_exactly_for_one_request(
    origin_url: str, headers: dict[str, str], expected: dict[str, int]
) -> None:
    before = await get_stats(origin_url)
    async with httpx.AsyncClient() as client:
        response = await client.get(origin_url + "/media/small.bin", headers=headers)
    after = await stats_once_total_is(origin_url, before["requests"]["total"] + 1)
    assert counter_changes(before, after) == expected
    assert response.num_bytes_downloaded == expected["bytes_sent"]
    for figure in ("ttfb_s", "duration_s"):
        assert after["latency"][figure]["count"] == before["latency"][figure]["count"] + 1


async def test_multipart_counts_its_exact_framed_bytes(origin_url: str) -> None:
    before = await get_stats(origin_url)
    async with httpx.AsyncClient() as client:
        response = await client.get(
            origin_url + "/media/small.bin", headers={"Range": "bytes=0-1,5-6"}
        )
    assert response.headers["content-type"].startswith("multipart/byteranges")
    after = await stats_once_total_is(origin_url, before["requests"]["total"] + 1)
    assert counter_changes(before, after) == {
        **one_request("206"),
        "bytes_sent": int(response.headers["content-length"]),
        "ranges.multi": 1,
        "streams.completed": 1,
    }
    assert len(response.content) == int(response.headers["content-length"])


async def test_unsatisfiable_range_counts_a_416(origin_url: str) -> None:
    before = await get_stats(origin_url)
    async with httpx.AsyncClient() as client:
        response = await client.get(
            origin_url + "/media/small.bin", headers={"Range": "bytes=100-"}
        )
    assert response.status_code == 416
    after = await stats_once_total_is(origin_url, before["requests"]["total"] + 1)
    body = len(response.content)
    expected = {**one_request("416"), "ranges.unsatisfiable": 1}
    if body:  # a 416 with an explanatory body is a (short) stream
        expected.update({"bytes_sent": body, "streams.completed": 1})
    assert counter_changes(before, after) == expected


async def test_not_modified_counts_a_304_with_no_bytes_and_no_stream(origin_url: str) -> None:
    async with httpx.AsyncClient() as client:
        etag = (await client.head(origin_url + "/media/small.bin")).headers["etag"]
        before = await stats_once_total_is(origin_url, 1)
        response = await client.get(
            origin_url + "/media/small.bin",
            headers={"If-None-Match": etag, "Range": "bytes=0-3"},
        )
    assert response.status_code == 304
    after = await stats_once_total_is(origin_url, 2)
    # Preconditions come before Range: a 304 treats no range.
    assert counter_changes(before, after) == one_request("304")


async def test_failed_if_range_is_counted_with_the_whole_file_sent(origin_url: str) -> None:
    before = await get_stats(origin_url)
    async with httpx.AsyncClient() as client:
        response = await client.get(
            origin_url + "/media/small.bin",
            headers={"If-Range": '"stale"', "Range": "bytes=0-3"},
        )
    assert response.content == SMALL
    after = await stats_once_total_is(origin_url, before["requests"]["total"] + 1)
    # Counted as a failed If-Range only, not also as an ignored range: the categories are disjoint.
    assert counter_changes(before, after) == {
        **one_request("200"),
        "bytes_sent": 11,
        "ranges.if_range_failed": 1,
        "streams.completed": 1,
    }


async def test_head_counts_a_request_without_bytes(origin_url: str) -> None:
    before = await get_stats(origin_url)
    async with httpx.AsyncClient() as client:
        await client.head(origin_url + "/media/small.bin")
    after = await stats_once_total_is(origin_url, before["requests"]["total"] + 1)
    assert counter_changes(before, after) == one_request("200", "HEAD")


async def test_monitoring_requests_are_not_counted(origin_url: str) -> None:
    async with httpx.AsyncClient() as client:
        for path in ("/stats", "/metrics", "/healthz", "/stats/dashboard.js", "/stats"):
            assert (await client.get(origin_url + path, headers=BROWSER)).status_code == 200
    document = await get_stats(origin_url)
    assert document["requests"]["total"] == 0
    assert document["bytes_sent"] == 0


def tcp_queues(local_port: int, remote_port: int) -> tuple[int, int]:
    """Bytes in the kernel's send and receive queues of one loopback connection (Linux)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1].split(":")[1], fields[2].split(":")[1]
        if (int(local, 16), int(remote, 16)) == (local_port, remote_port):
            tx_queue, rx_queue = fields[4].split(":")
            return int(tx_queue, 16), int(rx_queue, 16)
    raise AssertionError(f"no connection {local_port} -> {remote_port} in /proc/net/tcp")


# Left during the first of big.bin's two sendfile regions, or during the last one (whose end is
# followed by the final body message: the client's leaving must not read as a short body).
@pytest.mark.parametrize("n", [300_000, 2_500_000])
async def test_stream_aborted_after_n_bytes_counts_them_within_one_chunk(
    nursery: trio.Nursery, media_dir: Path, n: int
) -> None:
    chunk = 16 * 1024
    url = await start_origin(nursery, media_dir=media_dir, chunk_size_bytes=chunk)
    server_port = int(url.rsplit(":", 1)[1])
    client = trio.socket.socket()
    # A small receive window keeps the server from pushing the whole file into kernel buffers.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    with trio.fail_after(10):
        await client.connect(("127.0.0.1", server_port))
        client_port = client.getsockname()[1]
        stream = trio.SocketStream(client)
        async with stream:
            await stream.send_all(b"GET /media/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            while b"\r\n\r\n" not in received:
                received += await stream.receive_some(4096)
            body = len(received.partition(b"\r\n\r\n")[2])
            while body < n:
                body += len(await stream.receive_some(min(4096, n - body)))
            # Bytes that left the server but not yet read by the client sit in two kernel
            # queues: the server socket's send queue and the client's receive queue. The server
            # runs in this trio loop: once every task is blocked, it is waiting for its full
            # socket to drain (the client does not read), and nothing else runs before this
            # task's next checkpoint. Read both queues and close the client in that moment, with
            # no checkpoint in between: what left the server is N plus both, for good.
            await trio.testing.wait_all_tasks_blocked()
            server_tx, _ = tcp_queues(server_port, client_port)
            _, client_rx = tcp_queues(client_port, server_port)
            client.close()
        left_server = n + server_tx + client_rx
        while (document := await get_stats(url))["streams"]["aborted"] == 0:
            await trio.sleep(0.01)
    assert body == n
    assert document["streams"]["active"] == 0
    assert document["requests"]["by_status"] == {"200": 1}
    assert document["bytes_sent"] == document["streams"]["aborted_bytes"]
    # The connection counts a chunk once its send returns, so the chunk being written when the
    # client left is counted wholly or not at all: within one chunk of what left the server.
    assert abs(document["bytes_sent"] - left_server) < chunk, (document["bytes_sent"], left_server)


# --- /metrics -------------------------------------------------------------------------------


def samples_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics_parse_and_agree_with_stats(origin_url: str) -> None:
    async with httpx.AsyncClient() as client:
        for range_value in ("bytes=0-3", "bytes=0-1,4-5", "bytes=100-", "bytes=5-2"):
            await client.get(origin_url + "/media/small.bin", headers={"Range": range_value})
        await client.head(origin_url + "/media/small.bin")
        document = await stats_once_total_is(origin_url, 5)
        response = await client.get(origin_url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = samples_of(response.text)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("trio_range_info", role="origin") == 1
    requests = {
        (dict(labels)["method"], dict(labels)["status"]): count
        for (name, labels), count in samples.items()
        if name == "trio_range_requests_total"
    }
    assert requests == {("GET", "206"): 2, ("GET", "416"): 1, ("GET", "200"): 1, ("HEAD", "200"): 1}
    assert value("trio_range_bytes_sent_total") == document["bytes_sent"]
    for outcome in ("single", "multi", "unsatisfiable", "ignored"):
        assert value("trio_range_ranges_total", outcome=outcome) == document["ranges"][outcome]
    assert value("trio_range_streams_active") == 0
    assert (
        value("trio_range_streams_total", outcome="completed") == (document["streams"]["completed"])
    )
    assert value("trio_range_uptime_seconds") >= document["uptime_s"]
    assert not any(name.startswith("trio_range_upstream") for name, _ in samples)

    # The histogram: cumulative, +Inf equal to _count, and the same p50 as the JSON.
    for name, figure in (("trio_range_ttfb_seconds", "ttfb_s"),
                         ("trio_range_request_duration_seconds", "duration_s")):  # fmt: skip
        buckets = sorted(
            (float(dict(labels)["le"]), count)
            for (sample, labels), count in samples.items()
            if sample == name + "_bucket"
        )
        cumulative = [int(count) for _, count in buckets]
        assert cumulative == sorted(cumulative)
        assert buckets[-1][0] == math.inf
        assert cumulative[-1] == value(name + "_count") == document["latency"][figure]["count"]
        counts = [b - a for a, b in zip([0, *cumulative], cumulative, strict=False)]
        rebuilt = HistogramSnapshot(tuple(le for le, _ in buckets[:-1]), tuple(counts), 0.0)
        assert rebuilt.quantile(0.5) == pytest.approx(document["latency"][figure]["p50"], abs=1e-6)


async def test_metrics_speak_openmetrics_when_asked(origin_url: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(
            origin_url + "/metrics", headers={"Accept": "application/openmetrics-text"}
        )
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


# --- negotiation, paths and the token -------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "query", "html"),
    [
        ({}, "", False),
        ({"Accept": "*/*"}, "", False),
        (JSON, "", False),
        (BROWSER, "", True),
        ({"Accept": "text/html"}, "", True),
        (BROWSER, "?format=json", False),
        (JSON, "?format=html", True),
    ],
)
async def test_stats_answers_json_or_the_dashboard_page(
    origin_url: str, headers: dict[str, str], query: str, html: bool
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(origin_url + "/stats" + query, headers=headers)
    assert response.status_code == 200
    assert "Accept" in response.headers["vary"]
    assert response.headers["cache-control"] == "no-store"
    if html:
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert 'id="requests-total"' in response.text
        assert '<script src="/stats/dashboard.js">' in response.text
        # Nothing but this server: the page works offline.
        assert "http" not in response.text.replace("http-equiv", "")
    else:
        assert response.headers["content-type"] == "application/json"
        assert response.json()["role"] == "origin"


def test_dashboard_assets_reference_nothing_outside_the_server() -> None:
    from importlib import resources

    static = resources.files("trio_range").joinpath("static")
    for name in ("dashboard.html", "dashboard.js"):
        text = static.joinpath(name).read_text("utf-8")
        assert not re.search(r"https?://|//cdn|@import", text), name


async def test_paths_are_configurable_and_can_be_turned_off(
    nursery: trio.Nursery, media_dir: Path
) -> None:
    url = await start_origin(
        nursery, media_dir=media_dir, stats_path="/_internal/stats", metrics_path=""
    )
    async with httpx.AsyncClient() as client:
        assert (await client.get(url + "/_internal/stats")).json()["role"] == "origin"
        page = (await client.get(url + "/_internal/stats", headers=BROWSER)).text
        assert '<script src="/_internal/stats/dashboard.js">' in page
        assert (await client.get(url + "/_internal/stats/dashboard.js")).status_code == 200
        assert (await client.get(url + "/stats")).status_code == 404
        assert (await client.get(url + "/metrics")).status_code == 404
        # Not monitoring paths any more: counted like any other request.
    document = await stats_once_total_is(url + "/_internal", 2)  # reads /_internal/stats
    assert document["requests"]["by_status"] == {"404": 2}


@pytest.mark.parametrize("path", ["/stats", "/metrics"])
async def test_token_guards_stats_and_metrics(
    nursery: trio.Nursery, media_dir: Path, path: str
) -> None:
    url = await start_origin(nursery, media_dir=media_dir, stats_token="s3cret-token")
    async with httpx.AsyncClient() as client:
        missing = await client.get(url + path, headers=JSON)
        wrong = await client.get(url + path, headers={**JSON, "Authorization": "Bearer nope"})
        basic = await client.get(url + path, headers={"Authorization": "Basic czNjcmV0LXRva2Vu"})
        right = await client.get(url + path, headers={"Authorization": "Bearer s3cret-token"})
        lower = await client.get(url + path, headers={"Authorization": "bearer s3cret-token"})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="trio_range"'
    assert "s3cret" not in missing.text
    for response in (wrong, basic):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == (
            'Bearer realm="trio_range", error="invalid_token"'
        )
    assert right.status_code == 200
    assert lower.status_code == 200


async def test_with_a_token_the_page_is_served_but_holds_no_figures(
    nursery: trio.Nursery, media_dir: Path
) -> None:
    url = await start_origin(nursery, media_dir=media_dir, stats_token="s3cret-token")
    async with httpx.AsyncClient() as client:
        page = await client.get(url + "/stats", headers=BROWSER)
    assert page.status_code == 200
    assert "s3cret" not in page.text
    assert 'id="requests-total">\u2013<' in page.text  # the placeholder dash


async def test_without_a_token_stats_and_metrics_are_open(origin_url: str) -> None:
    async with httpx.AsyncClient() as client:
        for path in ("/stats", "/metrics"):
            assert (await client.get(origin_url + path)).status_code == 200


# --- the access log -------------------------------------------------------------------------


async def test_access_log_writes_one_structured_line_per_request(
    nursery: trio.Nursery, media_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = await start_origin(nursery, media_dir=media_dir, access_log=True)
    caplog.set_level(logging.INFO, logger="trio_range.access")
    async with httpx.AsyncClient() as client:
        await client.get(url + "/media/small.bin", headers={"Range": "bytes=2-5"})
    await stats_once_total_is(url, 1)
    lines = [r.getMessage() for r in caplog.records if r.name == "trio_range.access"]
    line = next(line for line in lines if "small.bin" in line)
    assert 'method=GET path="/media/small.bin" status=206 range="bytes=2-5"' in line
    assert "range_outcome=single bytes=4 " in line
    assert re.search(r"duration_ms=\d+\.\d outcome=completed$", line)


async def test_access_log_can_be_switched_off(
    nursery: trio.Nursery, media_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = await start_origin(nursery, media_dir=media_dir, access_log=False)
    caplog.set_level(logging.INFO, logger="trio_range.access")
    async with httpx.AsyncClient() as client:
        await client.get(url + "/media/small.bin")
    await stats_once_total_is(url, 1)
    assert not [r for r in caplog.records if r.name == "trio_range.access"]


# --- the dashboard in a real browser --------------------------------------------------------


def chromium_argv(user_data_dir: Path, url: str) -> list[str]:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: make test installs it (scripts/install-system-deps.sh)"
    return [
        chromium,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={user_data_dir}",
        # Virtual time runs the page's 1 s polling timers without waiting for them.
        "--virtual-time-budget=3000",
        "--dump-dom",
        url,
    ]


def element_text(dom: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert match, f"no element #{element_id} in the rendered page"
    return match.group(1)


async def test_dashboard_renders_the_live_totals_in_headless_chromium(
    nursery: trio.Nursery, media_dir: Path, tmp_path: Path
) -> None:
    url = await start_origin(nursery, media_dir=media_dir)
    async with httpx.AsyncClient() as client:
        for range_value in ("bytes=0-3", "bytes=2-5,8-9", "bytes=100-"):
            await client.get(url + "/media/small.bin", headers={"Range": range_value})
        await client.get(url + "/media/big.bin")
    await stats_once_total_is(url, 4)
    with trio.fail_after(90):
        result = await trio.run_process(
            chromium_argv(tmp_path / "chromium-profile", url + "/stats"),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    dom = result.stdout.decode()
    # The browser's own requests (page, script, polls) are monitoring: the figures hold still.
    document = await get_stats(url)
    assert document["requests"]["total"] == 4
    assert element_text(dom, "requests-total") == str(document["requests"]["total"])
    assert element_text(dom, "bytes-sent") == str(document["bytes_sent"])
    assert element_text(dom, "ranges-multi") == "1"
    assert element_text(dom, "role") == "origin"
    assert element_text(dom, "state").startswith("live")
    polls = re.search(r'data-polls="(\d+)"', dom)
    assert polls
    assert int(polls.group(1)) >= 2  # polled again after the first answer
    samples = re.search(r'id="chart" data-samples="(\d+)"', dom)
    assert samples
    assert int(samples.group(1)) >= 1  # the chart drew at least one interval


def test_paced_streams_their_waits_and_refusals_are_counted() -> None:
    store = MemoryStatsStore("origin")
    for wait_s in (1.25, 0.5):
        exchange = make_exchange()
        exchange.paced, exchange.pacing_wait_s = True, wait_s
        run(store, exchange)
    run(store, make_exchange())  # not paced
    store.record_refusal("max_streams")
    store.record_refusal("max_connections_per_client")
    store.record_refusal("max_connections_per_client")
    document = store.snapshot().to_json()
    assert document["shaping"] == {"paced_streams": 2, "pacing_wait_s": 1.75}
    assert document["refused"] == {
        "max_connections": 0,
        "max_connections_per_client": 2,
        "max_streams": 1,
    }
    with pytest.raises(ValueError, match="unknown limit"):
        store.record_refusal("max_bananas")
