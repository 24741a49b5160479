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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGIReceiveEvent, ASGISendCallable, Scope

from trio_range.stats.store import (
    RANGE_OUTCOMES,
    STREAM_OUTCOMES,
    UPSTREAM_ERROR_KINDS,
    HistogramSnapshot,
    MemoryStatsStore,
    StatsSnapshot,
    StatsStore,
    UpstreamSnapshot,
)

if TYPE_CHECKING:
    from trio_range.config import ServerConfig
    from trio_range.server.connection import Exchange, RangeApp

log = logging.getLogger("trio_range.stats")

Counts = Mapping[str, float]

# A worker's own counter hash outlives the worker by a day (its counts stay in the totals for
# ever): long enough to read a crashed worker's figures, short enough that restarts do not pile up.
INSTANCE_TTL_S = 24 * 3600
# Backoff between failed pushes: doubling from the push interval up to this.
MAX_BACKOFF_S = 30.0


# --- counts: a snapshot as a flat mapping, and back ----------------------------------------
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
    )


# --- what /stats adds: the shared view ------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class InstanceView:
    """One process sharing the database, as the last push saw it."""

    id: str
    last_push_at: datetime.datetime
    alive: bool  # its gauge key has not expired
    streams_active: int
    upstream_open: int
    requests: int
    bytes_sent: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "last_push_at": self.last_push_at.isoformat(timespec="milliseconds"),
            "alive": self.alive,
            "streams_active": self.streams_active,
            "requests": self.requests,
            "bytes_sent": self.bytes_sent,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class SharedView:
    backend: str  # the URL without credentials
    key_prefix: str
    instance: str
    stale: bool
    stale_since: datetime.datetime | None
    last_push_at: datetime.datetime | None
    instances: tuple[InstanceView, ...]

    def to_json(self) -> dict[str, Any]:
        def iso(moment: datetime.datetime | None) -> str | None:
            return None if moment is None else moment.isoformat(timespec="milliseconds")

        return {
            "backend": self.backend,
            "key_prefix": self.key_prefix,
            "instance": self.instance,
            "stale": self.stale,
            "stale_since": iso(self.stale_since),
            "last_push_at": iso(self.last_push_at),
            "instances": [instance.to_json() for instance in self.instances],
        }


@dataclasses.dataclass(frozen=True, slots=True)
class SharedStatsSnapshot(StatsSnapshot):
    """The totals over every instance, plus how fresh they are and the per-instance breakdown."""

    shared: SharedView

    def to_json(self) -> dict[str, Any]:
        document = StatsSnapshot.to_json(self)
        document["shared"] = self.shared.to_json()
        return document


# --- the one round trip ---------------------------------------------------------------------

# KEYS: totals hash, this instance's hash, its gauge hash, the instances sorted set.
# ARGV: seq, expected seq, instance id, now (ms), instance TTL (ms), gauge TTL (ms),
#       streams_active, upstream_open, gauge key prefix, instance key prefix, field, delta, ...
# Answers {status, totals, this instance's hash, {{id, last push ms, gauges..., counters...}}}.
# Runs atomically: the totals answered include this push (or, on "resync", exactly what Redis
# holds for this instance), so totals + (local - acknowledged) never counts anything twice.
PUSH_SCRIPT = """
local totals, inst, gauge, members = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local seq, expected, id = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local now_ms, inst_ttl, gauge_ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('HSET', gauge, 'streams_active', ARGV[7], 'upstream_open', ARGV[8])
redis.call('PEXPIRE', gauge, gauge_ttl)
redis.call('ZADD', members, now_ms, id)
redis.call('ZREMRANGEBYSCORE', members, '-inf', now_ms - inst_ttl)
local stored = tonumber(redis.call('HGET', inst, '_seq') or '0')
local status = 'resync'
if stored == expected then
  status = 'ok'
  for i = 11, #ARGV, 2 do
    local field, value = ARGV[i], ARGV[i + 1]
    if string.sub(field, -4) == ':sum' then
      redis.call('HINCRBYFLOAT', inst, field, value)
      redis.call('HINCRBYFLOAT', totals, field, value)
    else
      redis.call('HINCRBY', inst, field, value)
      redis.call('HINCRBY', totals, field, value)
    end
  end
  redis.call('HSET', inst, '_seq', seq)
end
redis.call('PEXPIRE', inst, inst_ttl)
local ids = redis.call('ZRANGE', members, 0, -1, 'WITHSCORES')
local instances = {}
for i = 1, #ids, 2 do
  local g = redis.call('HMGET', ARGV[9] .. ids[i], 'streams_active', 'upstream_open')
  local c = redis.call('HMGET', ARGV[10] .. ids[i], 'requests', 'bytes_sent')
  table.insert(instances, {ids[i], ids[i + 1], g[1], g[2], c[1], c[2]})
end
return {status, redis.call('HGETALL', totals), redis.call('HGETALL', inst), instances}
"""


@dataclasses.dataclass(frozen=True, slots=True)
class PushReply:
    applied: bool
    totals: dict[str, float]
    instance: dict[str, float]
    instance_seq: int
    instances: tuple[InstanceView, ...]


def parse_reply(reply: Any) -> PushReply:
    status, totals, instance, rows = reply
    seq = 0
    for name, value in zip(instance[::2], instance[1::2], strict=True):
        if name == "_seq":
            seq = int(value)
    views = []
    for row in rows:
        row = list(row) + [None] * (6 - len(row))  # trailing nils are dropped from Lua arrays
        ident, score, active, upstream_open, requests, bytes_sent = row
        views.append(
            InstanceView(
                id=ident,
                last_push_at=datetime.datetime.fromtimestamp(float(score) / 1000, datetime.UTC),
                alive=active is not None,
                streams_active=int(active or 0),
                upstream_open=int(upstream_open or 0),
                requests=int(requests or 0),
                bytes_sent=int(bytes_sent or 0),
            )
        )
    return PushReply(
        applied=status == "ok",
        totals=parse_counts(totals),
        instance=parse_counts(instance),
        instance_seq=seq,
        instances=tuple(views),
    )


def redacted(url: str) -> str:
    """``url`` without its credentials, for logs and /stats."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC)


class RedisStatsStore:
    """A :class:`~trio_range.stats.store.StatsStore` whose figures are summed over every process that
    pushes to the same Redis database and key prefix (per role: origin and proxy never mix).

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

    def response_started(self, exchange: Exchange) -> None:
        self._local.response_started(exchange)

    def exchange_finished(self, exchange: Exchange) -> None:
        self._local.exchange_finished(exchange)

    def record_upstream_request(self) -> None:
        self._local.record_upstream_request()

    def record_upstream_error(self, kind: str) -> None:
        self._local.record_upstream_error(kind)

    def _local_snapshot(self) -> StatsSnapshot:
        self._local.open_upstream_connections = self.open_upstream_connections
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


# --- choosing and running the store ---------------------------------------------------------


def make_store(config: ServerConfig, role: str) -> StatsStore:
    """The store ``config.stats_backend`` asks for: in memory, or shared through Redis."""
    if not config.stats_backend:
        return MemoryStatsStore(role=role)
    return RedisStatsStore(
        role,
        config.stats_backend,
        key_prefix=config.stats_key_prefix,
        push_interval_s=config.stats_push_interval_s,
    )


ASGIApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]


class _PusherInLifespan:
    """ASGI middleware: runs the store's pusher for as long as the app's lifespan runs.

    The lifespan call is a task of the server (Hypercorn's, or ``serving.serve_app``'s), alive
    from startup to shutdown: the pusher lives in a nursery opened by that call, which is a plain
    coroutine (not a generator, so nothing yields inside the nursery). On ``lifespan.shutdown``
    (sent once requests have finished) the pusher makes its last push before the app shuts down.
    """

    def __init__(self, app: ASGIApp, store: RedisStatsStore) -> None:
        self.app = app
        self.store = store

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def receive_then_flush() -> ASGIReceiveEvent:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.store.aclose()
            return message

        async with trio.open_nursery() as nursery:
            await nursery.start(self.store.run)
            await self.app(scope, receive_then_flush, send)
            nursery.cancel_scope.cancel()


def run_store_with_app(app: RangeApp, store: StatsStore) -> None:
    """Give ``store``'s pusher (if it has one) to ``app``'s lifespan."""
    if isinstance(store, RedisStatsStore):
        app.asgi_app = _PusherInLifespan(app.asgi_app, store)  # type: ignore[method-assign]
