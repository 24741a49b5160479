"""The slice cache of one proxy process: its fills, its object records, its nursery.

Task tree (docs/cache.md draws it whole)::

    lifespan task: run_in_lifespan's middleware        owns: the cache's nursery
    ├── SliceCache.run                                  scans the folder, then holds the nursery
    │   └── SliceCache._fill (one per slice fetch)      upstream response, bytes, disk write
    └── Quart-Trio lifespan handler

A fill belongs to this nursery, never to the request that started it (fills.py says why), and
never raises out of it: any failure is the fill's result, handed to its waiters. The requests'
side (planning answers, reading slices) is serve.py.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import trio

from trio_range.config import ProxyConfig
from trio_range.errors import StreamAborted, UpstreamError
from trio_range.http.cache_policy import (
    SliceAnswer,
    SliceAnswerKind,
    read_slice_answer,
    same_version,
)
from trio_range.http.conditional import Validators, format_http_date
from trio_range.http.forwarding import via_value
from trio_range.http.slices import revalidation_headers, slice_count, slice_range_header
from trio_range.proxy.cache.fills import Fill, FillCancelled, Waiter
from trio_range.proxy.cache.open_files import IDLE_S
from trio_range.proxy.cache.store import ObjectRecord, SliceStore
from trio_range.proxy.upstream import Upstream, relay_body
from trio_range.proxy.upstream_fields import upstream_fields_text
from trio_range.server.each_second import EachSecond
from trio_range.stats.store import StatsStore

log = logging.getLogger("trio_range.proxy")
_V = TypeVar("_V")

# Object records and bypass marks kept in memory at most (each a few hundred bytes); the
# records are on disk too, so one pushed out is read again when needed.
MEMORY_ENTRIES = 10_000

# An object the upstream would not let us cache (Range ignored, no-store, weak ETag...) is
# relayed without asking the cache again for this long (Traffic Server does the same).
BYPASS_S = 60.0


class SliceCache:
    """Request collapsing, object records and the disk store of one proxy process."""

    def __init__(
        self,
        config: ProxyConfig,
        upstream: Upstream,
        stats: StatsStore,
        upstream_host: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.slice_size = config.slice_size_bytes
        self.default_ttl_s = config.cache_default_ttl_s
        self.upstream = upstream
        self.stats = stats
        self.store = SliceStore(
            Path(config.cache_dir),
            config.cache_max_bytes,
            on_evict=lambda count: stats.record_cache("evictions", count),
        )
        self.clock = clock
        self._fills: dict[tuple[str, int], Fill] = {}
        # Bounded (least recently used out): clients choose the keys, one per query string.
        self._records: OrderedDict[str, ObjectRecord] = OrderedDict()
        self._bypass: OrderedDict[str, float] = OrderedDict()
        self._nursery: trio.Nursery | None = None
        self.via = via_value(config.via_name)
        # A fill is shared: it carries no client's fields, only what identifies the proxy.
        self._fill_headers = [
            ("Host", upstream_host),
            ("Accept-Encoding", "identity"),
            ("Via", self.via),
        ]
        self.http_date = EachSecond(format_http_date)  # the Date of an answer made at ``now``

    # --- life cycle (the PushingStore shape: run_in_lifespan runs it) ------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await trio.to_thread.run_sync(self.store.scan)
        self.store.evict_to_fit(0)  # the bound may have shrunk since the last run
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                while True:  # files kept open that no answer uses are closed (open_files.py)
                    await trio.sleep(IDLE_S)
                    self.store.open_files.close_idle()
            finally:
                self._nursery = None
                self.store.close_files()

    async def aclose(self) -> None:
        """Shutdown: requests are over, so any fill left has no waiter; stop them."""
        for fill in list(self._fills.values()):
            fill.cancel_scope.cancel()

    @property
    def running(self) -> bool:
        return self._nursery is not None

    # --- what is known of an object ----------------------------------------------------------

    def bypassed(self, key: str) -> bool:
        until = self._bypass.get(key)
        if until is None:
            return False
        if self.clock() < until:
            return True
        del self._bypass[key]
        return False

    def record(self, key: str, now: float | None = None) -> ObjectRecord | None:
        """The object's record, fresh or stale; another worker may have refreshed it on disk.

        ``now``: the clock's time, when the caller has it (a hit reads the clock once)."""
        record = self._records.get(key)
        if record is None or not (self.clock() if now is None else now) < record.fresh_until:
            on_disk = self.store.read_record(key)
            if on_disk is not None:
                record = on_disk
                _bounded_put(self._records, key, record)
        else:
            self._records.move_to_end(key)
        return record

    def is_fresh(self, record: ObjectRecord) -> bool:
        return self.clock() < record.fresh_until

    def _drop(self, key: str, record: ObjectRecord | None) -> None:
        self._records.pop(key, None)
        if record is not None:
            self.store.drop_object(key, slice_count(record.size, self.slice_size))

    def _learn(self, key: str, answer: SliceAnswer) -> None:
        """Update the object's record from an upstream answer (the head of a fill)."""
        now = self.clock()
        record = self.record(key)
        kind = answer.kind
        if kind is SliceAnswerKind.UNCACHEABLE:
            log.info("cache: %s not cached for %.0f s: %s", key, BYPASS_S, answer.reason)
            _bounded_put(self._bypass, key, now + BYPASS_S)
            self._drop(key, record)
            return
        if kind is SliceAnswerKind.NOT_MODIFIED:
            if record is not None:
                self._keep(
                    dataclasses.replace(
                        record,
                        cache_control=answer.cache_control or record.cache_control,
                        stored_at=now,
                        fresh_until=now + answer.fresh_for_s,
                    )
                )
            return
        if kind is not SliceAnswerKind.SLICE:
            return
        new = answer.validators
        assert new is not None
        assert new.etag is not None
        if record is not None and not (
            same_version(record.validators, new) and record.size == answer.size
        ):
            log.info("cache: %s changed upstream (%s -> %s)", key, record.etag, new.etag)
            self._drop(key, record)
        elif record is not None and self.is_fresh(record):
            return  # the same version, still fresh: nothing to write (one write per object)
        self._keep(
            ObjectRecord(
                key=key,
                etag=new.etag,
                last_modified=new.last_modified,
                size=answer.size,
                content_type=answer.content_type,
                cache_control=answer.cache_control,
                stored_at=now,
                fresh_until=now + answer.fresh_for_s,
            )
        )

    def _keep(self, record: ObjectRecord) -> None:
        _bounded_put(self._records, record.key, record)
        self.store.write_record(record)

    # --- fills -------------------------------------------------------------------------------

    def join(
        self,
        key: str,
        index: int,
        conditional: Validators | None = None,
        *,
        version: Validators | None = None,
    ) -> Waiter:
        """A hold on the fill of slice ``index``: the one in flight, or a new one.

        A fill that completed stays joinable (its buffer is whole) until its slice is on disk,
        unless its answer is not of ``version``, the one the caller's answer is planned for.
        """
        fill = self._fills.get((key, index))
        if fill is not None and fill.error is None and not _other_version(fill, version):
            self.stats.record_cache("collapsed")
            return fill.join()
        if self._nursery is None:
            raise UpstreamError("the cache is not running")
        fill = Fill(key, index, self._forget_fill)
        self._fills[(key, index)] = fill
        waiter = fill.join()
        self._nursery.start_soon(self._fill, fill, conditional)
        return waiter

    def _forget_fill(self, fill: Fill) -> None:
        if self._fills.get((fill.key, fill.index)) is fill:
            del self._fills[(fill.key, fill.index)]

    async def _fill(self, fill: Fill, conditional: Validators | None) -> None:
        try:
            with fill.cancel_scope:
                await self._fetch(fill, conditional)
        except (UpstreamError, StreamAborted) as error:
            log.warning("cache: fill of %s slice %d failed: %s", fill.key, fill.index, error)
            fill.finish(error)
        except Exception as error:  # a disk error, a bug: the fill fails, the cache lives on
            log.exception("cache: fill of %s slice %d failed", fill.key, fill.index)
            fill.finish(StreamAborted(f"cache fill failed: {type(error).__name__}"))
        finally:
            self._forget_fill(fill)
            fill.finish(FillCancelled("every waiter left; the fill was cancelled"))

    async def _fetch(self, fill: Fill, conditional: Validators | None) -> None:
        headers = [*self._fill_headers, ("Range", slice_range_header(fill.index, self.slice_size))]
        if conditional is not None:
            headers += revalidation_headers(conditional)
        stats = self.stats
        stats.record_upstream_request()
        response = await self.upstream.open(
            "GET", fill.key, headers, stats_error=stats.record_upstream_error
        )
        try:
            if response.status_code >= 500:
                stats.record_upstream_error("status_5xx")
            answer = read_slice_answer(
                response.status_code,
                # Without the fields a strict client would refuse (upstream_fields.py).
                upstream_fields_text(response.headers.raw, response.status_code, fill.key),
                start=fill.index * self.slice_size,
                slice_size=self.slice_size,
                default_ttl_s=self.default_ttl_s,
            )
            self._learn(fill.key, answer)
            fill.set_answer(answer)
            if answer.kind is not SliceAnswerKind.SLICE:
                fill.finish()
                return
            async for chunk in relay_body(response, stats_error=stats.record_upstream_error):
                if len(fill.buffer) + len(chunk) > answer.length:
                    raise StreamAborted("the upstream sent more than the slice")
                fill.append(chunk)
                stats.record_cache("bytes_from_upstream", len(chunk))
        finally:
            with trio.CancelScope(shield=True):
                await response.aclose()
        if len(fill.buffer) != answer.length:
            raise StreamAborted(f"slice ended at {len(fill.buffer)} of {answer.length} bytes")
        fill.finish()
        assert answer.validators is not None
        # The buffer itself: nothing appends to a complete fill, and waiters only copy from it.
        await self.store.write_slice(
            fill.key, fill.index, answer.validators, answer.size, fill.buffer
        )


def _bounded_put(entries: OrderedDict[str, _V], key: str, value: _V) -> None:
    entries[key] = value
    entries.move_to_end(key)
    while len(entries) > MEMORY_ENTRIES:
        entries.popitem(last=False)


def _other_version(fill: Fill, version: Validators | None) -> bool:
    answer = fill.answer
    if version is None or answer is None or answer.validators is None:
        return False
    return not same_version(answer.validators, version)
