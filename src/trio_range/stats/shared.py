"""The shared store's protocol with Redis: the push script, its reply, and the shared view.

One push is one ``EVAL`` of :data:`PUSH_SCRIPT`, which applies a delta and answers the merged
totals and every instance's gauges in the same round trip (redis_store.py says why it is
exactly once). Pure: values in, values out; the I/O is redis_store.py's.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from trio_range.stats.counts import parse_counts
from trio_range.stats.snapshot import StatsSnapshot


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
