"""The Redis statistics backend: counts as flat fields, then real servers behind a real
redis-server (started by the tests on a free loopback port): two proxy processes, Redis stopped
and restarted mid-run, a worker killed with SIGKILL."""

from __future__ import annotations

import datetime
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import trio

from tests.conftest import SMALL
from tests.stats.test_stats import make_exchange, run
from tests.support.faulty_upstream import unused_port
from tests.support.redis_server import RedisServer, open_redis
from tests.support.servers import origin_config, proxy_config, start_app, start_origin
from trio_range.config import OriginConfig
from trio_range.errors import ConfigError
from trio_range.origin.app import create_app as create_origin
from trio_range.proxy.app import create_app as create_proxy
from trio_range.stats.counts import flatten, subtract, unflatten
from trio_range.stats.factory import make_store
from trio_range.stats.redis_store import RedisStatsStore
from trio_range.stats.shared import redacted
from trio_range.stats.store import MemoryStatsStore, StatsStore

ROOT = Path(__file__).resolve().parents[2]
INTERVAL_S = 0.1


# --- pure parts -----------------------------------------------------------------------------


def test_a_snapshot_survives_flattening_and_back() -> None:
    store = MemoryStatsStore("proxy")
    for exchange in (
        make_exchange("GET", 206, range_outcome="single"),
        make_exchange("HEAD", 200, declared=0, sent=0),
        make_exchange("GET", 200, outcome="aborted", sent=40),
        make_exchange("BREW", 405, if_range_failed=True),
    ):
        run(store, exchange)
    store.record_upstream_request()
    store.record_upstream_error("timeout")
    paced = make_exchange("GET", 200)
    paced.paced, paced.pacing_wait_s = True, 2.5
    run(store, paced)
    store.record_refusal("max_connections_per_client")
    before = store.snapshot()
    after = unflatten(flatten(before), before, streams_active=0, upstream_open=0)
    assert after.to_json() == before.to_json()


def test_delta_holds_only_what_changed() -> None:
    assert subtract({"a": 3, "b": 1, "c:sum": 0.5}, {"a": 1, "b": 1}) == {"a": 2, "c:sum": 0.5}


def test_memory_is_the_default_and_redis_is_chosen_by_url() -> None:
    assert isinstance(make_store(OriginConfig(), "origin"), MemoryStatsStore)
    store = make_store(OriginConfig(stats_backend="redis://:secret@127.0.0.1:1/2"), "origin")
    assert isinstance(store, RedisStatsStore)
    assert store.url == "redis://127.0.0.1:1/2"  # never the password
    assert redacted("redis://user:pw@h:6379/0") == "redis://h:6379/0"


@pytest.mark.parametrize(
    "overrides",
    [
        {"stats_backend": "memcached://x"},
        {"stats_key_prefix": ""},
        {"stats_key_prefix": "a b"},
        {"stats_push_interval_s": 0.0},
    ],
)
def test_bad_shared_stats_settings_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        OriginConfig(**overrides).validate()


def test_redis_store_satisfies_the_stats_store_interface() -> None:
    store: StatsStore = RedisStatsStore("origin", "redis://127.0.0.1:1/0")
    assert store.snapshot().to_json()["shared"]["stale"] is True  # nothing shared seen yet


# --- helpers for the server tests -----------------------------------------------------------


async def stats_of(client: httpx.AsyncClient, base: str) -> dict[str, Any]:
    response = await client.get(base + "/stats")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


async def wait_for(
    client: httpx.AsyncClient,
    base: str,
    condition: Callable[[dict[str, Any]], bool],
    *,
    timeout_s: float = 15.0,
) -> dict[str, Any]:
    """Poll ``base``'s /stats until ``condition`` holds; fails after ``timeout_s``."""
    with trio.fail_after(timeout_s):
        while True:
            document = await stats_of(client, base)
            if condition(document):
                return document
            await trio.sleep(INTERVAL_S / 2)


async def after_pushes(client: httpx.AsyncClient, base: str, pushes: int = 3) -> dict[str, Any]:
    """``base``'s /stats once every instance it shows has pushed ``pushes`` more times.

    Each instance's last push time comes from ``base``'s own latest push, so ``base``'s totals
    then hold everything every instance pushed until then: what waiting a few intervals meant
    to ensure, observed instead of hoped for on a loaded machine.
    """
    document = await stats_of(client, base)
    for _ in range(pushes):
        document = await wait_for(client, base, pushed_since(last_pushes(document)))
    return document


def pushed_since(seen: dict[str, datetime.datetime]) -> Callable[[dict[str, Any]], bool]:
    """Whether every instance in ``seen`` has pushed since the time seen for it."""
    return lambda d: all(last_pushes(d).get(i, at) > at for i, at in seen.items())


def last_pushes(document: dict[str, Any]) -> dict[str, datetime.datetime]:
    return {
        instance["id"]: datetime.datetime.fromisoformat(instance["last_push_at"])
        for instance in document["shared"]["instances"]
    }


def total_is(n: int) -> Callable[[dict[str, Any]], bool]:
    return lambda d: d["requests"]["total"] == n and not d["shared"]["stale"]


async def send_ranges(client: httpx.AsyncClient, base: str, count: int) -> int:
    """``count`` 206 answers of 3 bytes each; returns the body bytes received."""
    received = 0
    for _ in range(count):
        response = await client.get(base + "/media/small.bin", headers={"Range": "bytes=2-4"})
        assert response.status_code == 206
        received += len(response.content)
    return received


def shared_config(server: RedisServer, **overrides: Any) -> dict[str, Any]:
    return {
        "stats_backend": server.url,
        "stats_push_interval_s": INTERVAL_S,
        "stats_key_prefix": "test",
        **overrides,
    }


async def start_proxy_process(
    nursery: trio.Nursery, upstream: str, server: RedisServer
) -> tuple[trio.Process, str]:
    """``trio-range proxy`` as users run it; returns it with its URL once it serves."""
    env = {
        **os.environ,
        "TRIO_RANGE_PROXY_STATS_BACKEND": server.url,
        "TRIO_RANGE_PROXY_STATS_KEY_PREFIX": "test",
        "TRIO_RANGE_PROXY_STATS_PUSH_INTERVAL_S": str(INTERVAL_S),
        "TRIO_RANGE_PROXY_ACCESS_LOG": "false",
    }
    command = [sys.executable, "-m", "trio_range.cli", "proxy", "--port", "0"]
    process = await trio.lowlevel.open_process(
        [*command, "--upstream", upstream],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )
    assert process.stdout is not None
    output = b""
    with trio.fail_after(20):
        while b"Running on" not in output:
            chunk = await process.stdout.receive_some(65536)
            assert chunk, output.decode(errors="replace")
            output += chunk
    url = output.split(b"Running on ", 1)[1].split()[0].decode()
    # Keep reading its output, so a chatty child never blocks on a full pipe.
    nursery.start_soon(_drain, process)
    return process, url


async def _drain(process: trio.Process) -> None:
    assert process.stdout is not None
    while await process.stdout.receive_some(65536):
        pass


async def stop(process: trio.Process, signum: int = signal.SIGTERM) -> None:
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            process.send_signal(signum)
        with trio.fail_after(15):
            await process.wait()


# --- the tests ----------------------------------------------------------------------


async def test_two_proxy_processes_behind_one_redis_show_the_exact_total_on_either(
    nursery: trio.Nursery, media_dir: Path, tmp_path: Path
) -> None:
    origin = await start_origin(nursery, media_dir=media_dir)
    async with open_redis(tmp_path) as server, httpx.AsyncClient(timeout=10) as client:
        first, first_url = await start_proxy_process(nursery, origin, server)
        second, second_url = await start_proxy_process(nursery, origin, server)
        try:
            received = await send_ranges(client, first_url, 7)
            received += await send_ranges(client, second_url, 5)
            head = await client.head(second_url + "/media/small.bin")
            assert head.status_code == 200
            for base in (first_url, second_url):
                document = await wait_for(client, base, total_is(13))
                assert document["requests"]["by_status"] == {"200": 1, "206": 12}
                assert document["requests"]["by_method"] == {"GET": 12, "HEAD": 1}
                assert document["bytes_sent"] == received == 36
                assert document["ranges"]["single"] == 12
                assert document["streams"]["completed"] == 12
                assert document["upstream"]["requests"] == 13
                assert document["latency"]["ttfb_s"]["count"] == 13
                instances = document["shared"]["instances"]
                assert sorted(i["requests"] for i in instances) == [6, 7]
                assert all(i["alive"] for i in instances)
            # A later look, once both have pushed three more times, still shows exactly the
            # total: nothing is pushed twice.
            later = await after_pushes(client, first_url)
            assert len(later["shared"]["instances"]) == 2
            assert later["requests"]["total"] == 13
        finally:
            await stop(first)
            await stop(second)


async def test_counts_made_while_redis_is_down_arrive_once_it_is_back(
    nursery: trio.Nursery, media_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_range.stats")
    async with open_redis(tmp_path) as server, httpx.AsyncClient(timeout=10) as client:
        origin = origin_config(media_dir=media_dir, **shared_config(server))
        origin_url = await start_app(nursery, create_origin(origin), origin)
        proxy = proxy_config(origin_url, **shared_config(server))
        proxy_url = await start_app(nursery, create_proxy(proxy), proxy)
        other = proxy_config(origin_url, **shared_config(server))
        other_url = await start_app(nursery, create_proxy(other), other)

        await send_ranges(client, proxy_url, 3)
        await wait_for(client, other_url, total_is(3))

        await server.stop()
        # Serving continues unaffected; each instance keeps counting on its own.
        await send_ranges(client, proxy_url, 4)
        await send_ranges(client, other_url, 2)
        stale = await wait_for(client, proxy_url, lambda d: d["shared"]["stale"])
        assert stale["shared"]["stale_since"] is not None
        # What this instance counted itself is never lost from its own view.
        assert stale["requests"]["total"] >= 7

        await server.start()  # empty: no persistence
        for base in (proxy_url, other_url):
            document = await wait_for(client, base, total_is(9))
            assert document["shared"]["stale_since"] is None
            assert document["bytes_sent"] == 27
        # The origin behind both counts every request too, and its totals recovered as well.
        await wait_for(client, origin_url, total_is(9))
        later = await after_pushes(client, other_url)
        assert len(later["shared"]["instances"]) == 2
        assert later["requests"]["total"] == 9

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    # One line per instance and outage, not one per retry.
    assert 1 <= len(warnings) <= 3, [r.getMessage() for r in warnings]
    assert all("marked stale" in r.getMessage() for r in warnings)


async def test_a_push_whose_reply_was_lost_is_not_counted_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_redis(tmp_path) as server:
        store = RedisStatsStore("origin", server.url, key_prefix="lost", push_interval_s=1.0)
        run(store, make_exchange("GET", 206))
        assert await store.push()

        # Redis applies the next push, then the connection dies before the reply arrives.
        real_call = store._call

        def applied_then_lost(*args: Any) -> Any:
            real_call(*args)
            raise redis.ConnectionError("reply lost")

        run(store, make_exchange("GET", 206))
        monkeypatch.setattr(store, "_call", applied_then_lost)
        assert not await store.push()
        assert store.snapshot().shared.stale
        monkeypatch.setattr(store, "_call", real_call)
        run(store, make_exchange("GET", 200))
        assert await store.push()

        client = redis.Redis.from_url(server.url, decode_responses=True)
        totals = await trio.to_thread.run_sync(client.hgetall, "lost:origin:totals")
        await trio.to_thread.run_sync(client.close)
        assert int(totals["requests"]) == 3
        assert int(totals["req:GET:206"]) == 2
        snapshot = store.snapshot()
        assert snapshot.requests_total == 3
        assert not snapshot.shared.stale


async def test_serving_works_with_redis_unreachable_from_the_start(
    nursery: trio.Nursery, media_dir: Path
) -> None:
    config = origin_config(
        media_dir=media_dir,
        stats_backend=f"redis://127.0.0.1:{unused_port()}/0",
        stats_push_interval_s=INTERVAL_S,
    )
    url = await start_app(nursery, create_origin(config), config)
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url + "/media/small.bin")
        assert response.content == SMALL
        document = await stats_of(client, url)
    assert document["requests"]["total"] == 1  # its own counts, flagged as not shared
    assert document["shared"]["stale"] is True
    assert document["shared"]["stale_since"] is not None


async def pttl(server: RedisServer, key: str) -> int:
    """Milliseconds until ``key`` expires (-2: it is gone, -1: it never expires)."""
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        milliseconds: int = await trio.to_thread.run_sync(client.pttl, key)
    finally:
        await trio.to_thread.run_sync(client.close)
    return milliseconds


async def test_a_killed_workers_active_streams_disappear_after_the_expiry(
    nursery: trio.Nursery, media_dir: Path, tmp_path: Path
) -> None:
    gauge_ttl_s = max(3 * INTERVAL_S, 1.0)  # RedisStatsStore.gauge_ttl_s
    origin = await start_origin(nursery, media_dir=media_dir, chunk_size_bytes=64 * 1024)
    async with open_redis(tmp_path) as server, httpx.AsyncClient(timeout=10) as client:
        watcher = proxy_config(origin, **shared_config(server))
        watcher_url = await start_app(nursery, create_proxy(watcher), watcher)
        worker, worker_url = await start_proxy_process(nursery, origin, server)
        try:
            await send_ranges(client, worker_url, 2)
            instance = (await stats_of(client, worker_url))["shared"]["instance"]
            # A stream the client does not read: active until the worker dies.
            async with client.stream("GET", worker_url + "/media/big.bin") as stalled:
                assert stalled.status_code == 200
                await wait_for(
                    client,
                    watcher_url,
                    lambda d: d["streams"]["active"] == 1 and d["requests"]["total"] == 2,
                )
                worker.kill()
                await worker.wait()
                # Nothing refreshes a dead worker's gauges: Redis drops them within the gauge
                # TTL of its last push (the key's own expiry, not a wall-clock measurement
                # here), and the watcher's next push no longer finds them.
                expires_in_ms = await pttl(server, f"test:proxy:gauge:{instance}")
                assert expires_in_ms == -2 or 0 < expires_in_ms <= gauge_ttl_s * 1000
                document = await wait_for(
                    client, watcher_url, lambda d: d["streams"]["active"] == 0
                )
        finally:
            await stop(worker, signal.SIGKILL)
    dead = [i for i in document["shared"]["instances"] if not i["alive"]]
    assert len(dead) == 1
    assert dead[0]["requests"] == 2  # its pushed counts stay in the totals
    assert document["requests"]["total"] == 2


def test_servers_without_a_redis_backend_never_import_redis() -> None:
    # redis-py costs every server process 5 MiB of RSS (the proxy's memory target is 64 MiB).
    code = (
        "import sys, trio_range.cli, trio_range.origin.app, trio_range.proxy.app\n"
        "from trio_range.config import ProxyConfig\n"
        "from trio_range.proxy.app import create_app\n"
        "create_app(ProxyConfig(upstream='http://127.0.0.1:9'))\n"
        "print('redis' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False", done.stderr
