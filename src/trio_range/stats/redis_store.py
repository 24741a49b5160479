"""Statistics shared by every worker and host through Redis (``--stats-backend redis://...``).

The request path never waits on Redis. Each process counts in its own
:class:`~trio_range.stats.store.MemoryStatsStore` (synchronous, trio-safe), and one task,
:meth:`RedisStatsStore.run`, pushes what changed since the last push every
``stats_push_interval_s`` and once more at shutdown. A push is one ``EVAL`` of :data:`PUSH_SCRIPT`,
which applies the delta and answers the merged totals and every instance's gauges in the same
round trip; ``snapshot()`` returns those totals plus what this process counted since.

Exactly once: a push carries the sequence number the instance expects Redis to hold for it. A
push whose reply was lost (Redis died after applying it) is retried with the same expectation,
finds the number already moved, and is not applied again: the script answers ``resync`` with what
Redis holds for this instance instead, and the next delta is computed from that. The same path
covers a Redis that restarted empty (or from an older snapshot): every live instance pushes
again whatever Redis lacks of its counts.

Gauges (active streams, open upstream connections) are kept per instance in a key that expires
after a few intervals, so a worker killed with SIGKILL stops counting on its own.

The client is redis-py's synchronous one, used from one worker thread at a time (its calls are
bounded by socket timeouts); docs/scale-out.md says why not an async client.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from functools import partial

import trio

from trio_range.stats.counts import Counts, add, flatten, is_float_field, subtract, unflatten
from trio_range.stats.shared import (
    PUSH_SCRIPT,
    InstanceView,
    PushReply,
    SharedStatsSnapshot,
    SharedView,
    parse_reply,
    redacted,
)
from trio_range.stats.snapshot import StatsSnapshot
from trio_range.stats.store import FinishedExchange, MemoryStatsStore

log = logging.getLogger("trio_range.stats")


# A worker's own counter hash outlives the worker by a day (its counts stay in the totals for
# ever): long enough to read a crashed worker's figures, short enough that restarts do not pile up.
INSTANCE_TTL_S = 24 * 3600
# Backoff between failed pushes: doubling from the push interval up to this.
MAX_BACKOFF_S = 30.0


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


class RedisStatsStore:
    """A :class:`~trio_range.stats.store.StatsStore` whose figures are summed over every process
    that pushes to the same Redis database and key prefix (per role: origin and proxy never mix).

    Updates and ``snapshot()`` are synchronous and do no I/O; :meth:`run` does all of it.
    """

    def __init__(
        self,
        role: str,
        url: str,
        *,
        key_prefix: str = "trio_range",
        push_interval_s: float = 1.0,
        instance_id: str | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.role = role
        self.open_upstream_connections: Callable[[], int] | None = None
        self.cache_disk_bytes: Callable[[], int] | None = None  # issue 15
        self.instance_id = instance_id or (
            f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        )
        self.url = redacted(url)
        self.key_prefix = key_prefix
        self.push_interval_s = push_interval_s
        self._wall_clock = wall_clock
        self._local = MemoryStatsStore(role, wall_clock=wall_clock)
        base = f"{key_prefix}:{role}"
        self._gauge_prefix = f"{base}:gauge:"
        self._instance_prefix = f"{base}:instance:"
        self._keys = (
            f"{base}:totals",
            self._instance_prefix + self.instance_id,
            self._gauge_prefix + self.instance_id,
            f"{base}:instances",
        )
        # Several intervals, so one slow push does not make a live instance look dead.
        self.gauge_ttl_s = max(3 * push_interval_s, 1.0)
        timeout_s = min(max(2 * push_interval_s, 0.5), 5.0)
        # Imported here, not with the module: redis-py adds 5 MiB to the RSS of every server,
        # and only those with a Redis backend use it.
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # redis-py's own retries are off: the pusher decides when to try again.
        self._client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._script = self._client.register_script(PUSH_SCRIPT)
        # One thread at a time touches the client (redis-py connections are not shared).
        self._limiter = trio.CapacityLimiter(1)
        # What Redis holds of this instance's counts, and the totals answered with it.
        self._acked: dict[str, float] = {}
        self._acked_seq = 0
        self._totals: dict[str, float] = {}
        self._instances: tuple[InstanceView, ...] = ()
        self._last_push_at: float | None = None
        self._stale_since: float | None = self._wall_clock()  # nothing shared seen yet
        self._failing = False
        self._closing = trio.Event()
        self._done = trio.Event()
        self._running = False

    # --- the StatsStore interface: local, synchronous ---------------------------------------

    def response_started(self, exchange: FinishedExchange) -> None:
        self._local.response_started(exchange)

    def exchange_finished(self, exchange: FinishedExchange) -> None:
        self._local.exchange_finished(exchange)

    def record_upstream_request(self) -> None:
        self._local.record_upstream_request()

    def record_upstream_error(self, kind: str) -> None:
        self._local.record_upstream_error(kind)

    def record_refusal(self, limit: str) -> None:
        self._local.record_refusal(limit)

    def record_cache(self, counter: str, amount: int = 1) -> None:  # issue 15
        self._local.record_cache(counter, amount)

    def _local_snapshot(self) -> StatsSnapshot:
        self._local.open_upstream_connections = self.open_upstream_connections
        self._local.cache_disk_bytes = self.cache_disk_bytes
        return self._local.snapshot()

    def snapshot(self) -> SharedStatsSnapshot:
        local = self._local_snapshot()
        # Redis's totals include what it acknowledged from us; add what we counted since.
        counts = add(self._totals, subtract(flatten(local), self._acked))
        others = [i for i in self._instances if i.alive and i.id != self.instance_id]
        merged = unflatten(
            counts,
            local,
            streams_active=local.streams_active + sum(i.streams_active for i in others),
            upstream_open=(local.upstream.open_connections if local.upstream else 0)
            + sum(i.upstream_open for i in others),
            # issue 15: this process's disk use (workers usually share one cache folder).
            cache_disk_bytes=local.cache.disk_bytes if local.cache else 0,
        )
        shared = SharedView(
            backend=self.url,
            key_prefix=self.key_prefix,
            instance=self.instance_id,
            stale=self._stale_since is not None,
            stale_since=None if self._stale_since is None else _utc(self._stale_since),
            last_push_at=None if self._last_push_at is None else _utc(self._last_push_at),
            instances=self._instances,
        )
        fields = {f.name: getattr(merged, f.name) for f in dataclasses.fields(StatsSnapshot)}
        return SharedStatsSnapshot(**fields, shared=shared)

    # --- the pusher --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Push every interval until :meth:`aclose`, then once more; never raises for Redis.

        A failed push keeps its counts (the delta is recomputed from what Redis acknowledged,
        so it is as large as the counters, not as the outage is long), marks /stats stale, logs
        one line, and is retried with a doubling backoff.
        """
        self._running = True
        task_status.started()
        failures = 0
        try:
            while not self._closing.is_set():
                failures = 0 if await self.push() else failures + 1
                delay = min(self.push_interval_s * 2 ** min(failures, 10), MAX_BACKOFF_S)
                with trio.move_on_after(delay if failures else self.push_interval_s):
                    await self._closing.wait()
            # The last counts of a graceful stop: requests have finished by now.
            if not await self.push():
                log.warning("stats: counts since the last push were not shared (backend down)")
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._client.close, limiter=self._limiter)
            self._done.set()

    async def aclose(self) -> None:
        """Stop :meth:`run` after one last push, and wait for it. Idempotent."""
        self._closing.set()
        if self._running:
            await self._done.wait()

    async def push(self) -> bool:
        """One push (two after a resync); True when Redis answered."""
        for _ in range(2):
            local = self._local_snapshot()
            counts = flatten(local)
            delta = subtract(counts, self._acked)
            upstream_open = local.upstream.open_connections if local.upstream else 0
            call = partial(self._call, self._acked_seq, delta, local.streams_active, upstream_open)
            try:
                reply = await trio.to_thread.run_sync(call, limiter=self._limiter)
            except Exception as error:  # any failure of the backend: never into the server
                self._failed(error)
                return False
            self._succeeded(reply, counts)
            if reply.applied:
                return True
            log.info("stats: resynchronised with %s (seq %d)", self.url, reply.instance_seq)
        return True

    def _call(
        self, acked_seq: int, delta: Counts, streams_active: int, upstream_open: int
    ) -> PushReply:
        # In the worker thread: only values in (no shared state), a parsed reply out.
        args: list[str | int] = [
            acked_seq + 1,
            acked_seq,
            self.instance_id,
            int(self._wall_clock() * 1000),
            INSTANCE_TTL_S * 1000,
            int(self.gauge_ttl_s * 1000),
            streams_active,
            upstream_open,
            self._gauge_prefix,
            self._instance_prefix,
        ]
        for name, value in delta.items():
            args += [name, repr(float(value)) if is_float_field(name) else int(value)]
        return parse_reply(self._script(keys=list(self._keys), args=args))

    def _succeeded(self, reply: PushReply, counts: dict[str, float]) -> None:
        if reply.applied:
            self._acked, self._acked_seq = counts, self._acked_seq + 1
        else:
            # Applied before (a lost reply) or lost by Redis: take what Redis holds as the truth.
            self._acked, self._acked_seq = reply.instance, reply.instance_seq
        self._totals = reply.totals
        self._instances = reply.instances
        self._last_push_at = self._wall_clock()
        if self._failing:
            log.info("stats: %s reachable again; shared totals are current", self.url)
        self._failing = False
        self._stale_since = None

    def _failed(self, error: Exception) -> None:
        if not self._failing:
            # One line per outage, not one per retry.
            log.warning(
                "stats: cannot push to %s (%s: %s); counting locally, /stats marked stale, "
                "retrying with backoff",
                self.url,
                type(error).__name__,
                error,
            )
        self._failing = True
        if self._stale_since is None:
            self._stale_since = self._wall_clock()
