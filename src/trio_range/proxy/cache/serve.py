"""Answering a request from the slice cache: the origin's range engine over cached slices.

:func:`serve_cached` is the cache's side of the proxy's relay (relay.py hands it every GET and
HEAD the cache may answer). It finds the object's record (fresh, or revalidated or learnt by
one fill of the first slice the request needs, whose head only is awaited), asks the pure
:func:`~trio_range.http.response_plan.plan_response` what to answer, exactly as the origin
does, and carries the plan out: each ByteRange of the body is read from the slices it touches,
a stored slice with :func:`~trio_range.server.file_body.file_body` (sendfile, as the origin),
a missing one from its fill as the bytes arrive.

Never a mixed object: the plan is made for one version (the record's ETag and size), and every
slice used must be of that version (its file header, or its fill's answer). A slice of another
version means the object changed upstream after the head went out: the answer is aborted
(StreamAborted), and the fill that saw the change has already dropped the old slices.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterable

from quart import Response, request

from trio_range.errors import StreamAborted, UpstreamError
from trio_range.http.cache_policy import (
    SliceAnswerKind,
    cache_key,
    request_bypasses_cache,
    same_version,
)
from trio_range.http.conditional import ConditionalRequest
from trio_range.http.ranges import ByteRange, RangeLimits
from trio_range.http.relay import query_range, upstream_target
from trio_range.http.response_plan import Representation, plan_response, range_outcome_label
from trio_range.http.slices import SlicePiece, first_slice_wanted, slice_pieces, slice_span
from trio_range.http.token_bucket import Pacing
from trio_range.proxy.answers import CompleteAnswer
from trio_range.proxy.cache.cache import SliceCache
from trio_range.proxy.cache.fills import Waiter
from trio_range.proxy.cache.open_files import OpenSlice
from trio_range.proxy.cache.store import ObjectRecord
from trio_range.server.common import fields_response
from trio_range.server.exchange import Exchange, current_exchange
from trio_range.server.file_body import file_body, pages_cached
from trio_range.server.file_region import (
    SENDFILE_REGION_BYTES,
    FileRegion,
    FileRegionChain,
    can_send_file,
)
from trio_range.server.pacing import BodyItem, paced

# Pieces of a stored slice read into bytes when sendfile cannot be used (the origin's default).
READ_CHUNK_BYTES = 512 * 1024
# Retries of a slice that vanished between a 304 and its read (evicted meanwhile).
_ATTEMPTS = 3


async def serve_cached(
    cache: SliceCache, limits: RangeLimits, pacing: Pacing | None = None
) -> Response | None:
    """The answer to the current request from the cache, or None to relay it as without one.

    ``pacing`` (traffic shaping, server/pacing.py) paces the body of an answer from slices as
    it paces a relayed one: the configured rate (an upstream's ``X-Accel-Limit-Rate`` is not
    stored with the object, so a cached answer goes at the configured rate).

    Raises UpstreamError when the fill that had to learn the object failed (the relay answers
    502/503/504 as for any upstream failure).
    """
    scope = request.scope
    exchange = current_exchange()
    # The request's fields as the connection read them (Werkzeug's Headers raise and catch a
    # KeyError per absent name: seven of them per hit, as the origin found, server/exchange.py).
    field, method = exchange.field, exchange.method
    # Counted when the exchange ends: a "hit" turns "miss" if its body needed a fill.
    exchange.resources.callback(_count_request, cache, exchange)
    reason = request_bypasses_cache(
        method, field(b"cache-control"), has_authorization=b"authorization" in exchange.fields
    )
    path, query = upstream_target(scope.get("raw_path") or b"/", b""), exchange.query
    key = cache_key(path, query) if query else path
    if reason is not None or not cache.running or cache.bypassed(key):
        exchange.cache = "bypass"
        return None
    range_header = exchange.range_header
    range_query = query_range(scope["query_string"]) if query else None
    now = cache.clock()
    record = cache.record(key, now)
    label, waiter = "hit", None
    if record is None or not now < record.fresh_until:
        if method == "HEAD" and record is None:
            exchange.cache = "bypass"  # a HEAD is not worth a slice fetch
            return None
        index = first_slice_wanted(range_header, range_query, cache.slice_size)
        conditional = None
        if record is not None:
            label = "revalidated"
            index = min(index, math.ceil(record.size / cache.slice_size) - 1)
            if cache.store.has_slice(key, index):
                conditional = record.validators
        else:
            label = "miss"
        waiter = cache.join(key, index, conditional)
        exchange.resources.callback(waiter.release)
        exchange.cache = label  # also in the log line of a 502/504 if the fill fails
        answer = await waiter.head()
        if answer.kind in (SliceAnswerKind.UNCACHEABLE, SliceAnswerKind.RELAY):
            waiter.release()
            exchange.cache = "bypass"
            return None
        if answer.kind is SliceAnswerKind.NOT_MODIFIED:
            waiter.release()
            waiter = None
        stale_etag = None if record is None else record.etag
        record = cache.record(key)
        if record is None:  # dropped meanwhile (another answer saw it change): relay this one
            exchange.cache = "bypass"
            return None
        if label == "revalidated" and record.etag != stale_etag:
            label = "miss"  # a new version: nothing stored was usable
        now = cache.clock()
    exchange.cache = label
    plan = plan_response(
        ConditionalRequest(
            method=method,
            if_match=field(b"if-match"),
            if_none_match=field(b"if-none-match"),
            if_modified_since=field(b"if-modified-since"),
            if_unmodified_since=field(b"if-unmodified-since"),
            if_range=field(b"if-range"),
        ),
        range_header,
        range_query,
        Representation(record.size, record.content_type, record.validators),
        limits,
    )
    exchange.range_outcome = range_outcome_label(plan)
    exchange.if_range_failed = plan.if_range_failed
    body: AsyncIterator[BodyItem] | None = None
    if method != "HEAD" and plan.body:
        body = _cached_body(
            cache, record, plan.body, waiter, exchange, sendfile=can_send_file(scope)
        )
        if pacing is not None:
            body = paced(body, pacing, exchange)
    elif waiter is not None:
        waiter.release()
    # Added with the plan's fields: each later Werkzeug Headers assignment scans the list. Via
    # and Date among them: a CompleteAnswer is left alone by the app's after_request hook.
    fields = [("Via", cache.via), ("Date", cache.http_date(now)), *plan.headers]
    if record.cache_control:
        fields.append(("Cache-Control", record.cache_control))
    fields.append(("Age", str(max(0, int(now - record.stored_at)))))
    return fields_response(plan.status, fields, body, CompleteAnswer)


def _count_request(cache: SliceCache, exchange: Exchange) -> None:
    if exchange.cache:
        cache.stats.record_cache(exchange.cache)


async def _cached_body(
    cache: SliceCache,
    record: ObjectRecord,
    segments: tuple[bytes | ByteRange, ...],
    waiter: Waiter | None,
    exchange: Exchange,
    *,
    sendfile: bool,
) -> AsyncIterator[BodyItem]:
    """The body items of ``segments``, from stored slices or their fills, of one version.

    Stored slices whose pages are cached go out as sendfile regions, consecutive ones chained
    (FileRegionChain) up to the origin's region size: slices are 1 MiB by default, and every
    body item costs Python steps through the stack, so 1 MiB items sent a 1 GiB hit at 0.66x
    the origin's 2 MiB ones. Their files stay open until the chain is sent (an evicted slice
    stays readable through its open descriptor).
    """
    batch: list[FileRegion] = []  # open slice regions not sent yet
    holds: list[OpenSlice] = []  # their files, held until they are sent
    batched = 0  # their bytes
    try:
        for segment in segments:
            if isinstance(segment, bytes):
                if batch:
                    yield _chained(batch)
                    batched = _sent(cache, batch, holds, batched)
                yield segment
                continue
            index, offset = divmod(segment.start, cache.slice_size)
            pieces: Iterable[SlicePiece] = (
                (SlicePiece(index, offset, segment.length),)  # a small range: one slice
                if offset + segment.length <= cache.slice_size
                else slice_pieces(segment, cache.slice_size)
            )
            for piece in pieces:
                if batch and batched + piece.length > SENDFILE_REGION_BYTES:
                    yield _chained(batch)
                    batched = _sent(cache, batch, holds, batched)
                held = waiter if waiter is not None and waiter.fill.index == piece.index else None
                if held is None and sendfile and piece.length <= SENDFILE_REGION_BYTES:
                    region = _stored_region(cache, record, piece, holds)
                    if region is not None:
                        batch.append(region)
                        batched += region.count
                        continue
                if batch:
                    yield _chained(batch)
                    batched = _sent(cache, batch, holds, batched)
                async for item in _piece(cache, record, piece, held, exchange, sendfile=sendfile):
                    yield item
        if batch:
            yield _chained(batch)
            _sent(cache, batch, holds, batched)
    finally:
        for opened in holds:
            cache.store.release(opened)
        if waiter is not None:
            waiter.release()


def _chained(batch: list[FileRegion]) -> FileRegion | FileRegionChain:
    return batch[0] if len(batch) == 1 else FileRegionChain.of(tuple(batch))


def _sent(cache: SliceCache, batch: list[FileRegion], holds: list[OpenSlice], batched: int) -> int:
    """Release the files of the ``batched`` bytes of regions sent, count them, empty the batch
    (0 bytes in it now)."""
    release = cache.store.release
    for opened in holds:
        release(opened)
    holds.clear()
    cache.stats.record_cache("bytes_from_cache", batched)
    batch.clear()
    return 0


def _stored_region(
    cache: SliceCache, record: ObjectRecord, piece: SlicePiece, holds: list[OpenSlice]
) -> FileRegion | None:
    """The piece as a region of its open slice file when stored with its pages cached (the
    file held, in ``holds``), or None (then :func:`_piece` reads it, or fetches it)."""
    start = piece.index * cache.slice_size  # a slice of the object: slice_span, unchecked
    length = min(cache.slice_size, record.size - start)
    try:
        stored = cache.store.open_slice(record.key, piece.index, record.etag, record.size, length)
    except KeyError:
        return None
    region = FileRegion(stored.fd, stored.data_offset + piece.offset, piece.length)
    if pages_cached(region):
        holds.append(stored)
        return region
    cache.store.release(stored)
    return None


async def _piece(
    cache: SliceCache,
    record: ObjectRecord,
    piece: SlicePiece,
    held: Waiter | None,
    exchange: Exchange,
    *,
    sendfile: bool,
) -> AsyncIterator[bytes | FileRegion]:
    length = slice_span(piece.index, cache.slice_size, record.size).length
    for _ in range(_ATTEMPTS):
        if held is None:
            try:
                stored = cache.store.open_slice(
                    record.key, piece.index, record.etag, record.size, length
                )
            except KeyError:
                pass
            else:
                try:
                    async for item in file_body(
                        (ByteRange(stored.data_offset + piece.offset, piece.length),),
                        stored.fd,
                        region_bytes=SENDFILE_REGION_BYTES,
                        chunk_bytes=READ_CHUNK_BYTES,
                        sendfile=sendfile,
                    ):
                        yield item
                finally:
                    cache.store.release(stored)
                cache.stats.record_cache("bytes_from_cache", piece.length)
                return
        # A fill complete before this answer joined it is a hit (its slice is just not on
        # disk yet); one still arriving, or the one the view waited on, is a miss.
        waiter = held or cache.join(record.key, piece.index, version=record.validators)
        from_memory = held is None and waiter.fill.complete
        held = None
        if exchange.cache == "hit" and not from_memory:
            exchange.cache = "miss"
        try:
            try:
                answer = await waiter.head()
            except UpstreamError as error:
                raise StreamAborted(f"slice fill failed: {error}") from error
            if answer.kind is SliceAnswerKind.NOT_MODIFIED:
                continue  # stored and still valid: read it from disk
            if (
                answer.kind is not SliceAnswerKind.SLICE
                or answer.validators is None
                or not same_version(answer.validators, record.validators)
                or answer.size != record.size
            ):
                raise StreamAborted(f"{record.key} changed upstream during the answer")
            async for chunk in waiter.chunks(piece.offset, piece.length):
                yield chunk
            if from_memory:
                cache.stats.record_cache("bytes_from_cache", piece.length)
            return
        finally:
            waiter.release()
    raise StreamAborted(f"slice {piece.index} of {record.key} kept vanishing")
