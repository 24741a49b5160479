"""The origin's file serving, as module-level handlers over an :class:`OriginSite`.

:func:`serve_file` reads the request, opens the file (on the event loop: see media_folder), asks
the pure :func:`~trio_range.http.response_plan.plan_response` what to answer, and carries the
plan out: file bytes go into the body through :func:`~trio_range.server.file_body.file_body`,
which sends cached pages with sendfile and reads the rest. The open file is registered with
the request's resources, so it is closed when the exchange ends, even if the body was never
iterated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import trio
from quart import Response, request

from trio_range.config import OriginConfig
from trio_range.http.conditional import ConditionalRequest, Validators
from trio_range.http.ranges import RangeLimits
from trio_range.http.response_plan import (
    Representation,
    plan_response,
    range_outcome_label,
)
from trio_range.origin.media_folder import MediaFolder, content_type_for
from trio_range.origin.shaping import Shaping
from trio_range.server._quart_hooks import current_request
from trio_range.server.common import fields_response, json_response, not_found
from trio_range.server.exchange import current_exchange
from trio_range.server.file_body import file_body
from trio_range.server.file_region import SENDFILE_REGION_BYTES, can_send_file
from trio_range.server.pacing import BodyItem, paced


@dataclasses.dataclass(frozen=True, slots=True)
class OriginSite:
    """What the origin's handlers need, built once per app from its configuration."""

    config: OriginConfig
    folder: MediaFolder
    limits: RangeLimits
    shaping: Shaping

    @classmethod
    def from_config(cls, config: OriginConfig) -> OriginSite:
        return cls(
            config=config,
            folder=MediaFolder.at(config.media_dir),
            limits=RangeLimits(max_ranges=config.max_ranges),
            shaping=Shaping(config),
        )

    @property
    def region_bytes(self) -> int:
        """The largest region sent with sendfile (never below the read chunk)."""
        return max(self.config.chunk_size_bytes, SENDFILE_REGION_BYTES)


_CONDITIONAL_FIELDS = frozenset(
    {b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since", b"if-range"}
)


async def serve_file(site: OriginSite, relative: str) -> Response:
    """Answer the current request for the file ``relative`` of the media folder."""
    file = site.folder.open(relative)
    if file is None:
        return not_found()
    exchange = current_exchange()
    exchange.resources.callback(file.close)
    representation = Representation(
        size=file.size,
        content_type=content_type_for(relative),
        validators=Validators.for_file(file.size, file.mtime_ns, file.inode),
    )
    if _CONDITIONAL_FIELDS.isdisjoint(exchange.fields):
        # Most requests carry none: one set test, not five lookups (issue 13).
        conditional = ConditionalRequest(method=exchange.method)
    else:
        field = exchange.field  # the request's fields, read once by the connection
        conditional = ConditionalRequest(
            method=exchange.method,
            if_match=field(b"if-match"),
            if_none_match=field(b"if-none-match"),
            if_modified_since=field(b"if-modified-since"),
            if_unmodified_since=field(b"if-unmodified-since"),
            if_range=field(b"if-range"),
        )
    plan = plan_response(
        conditional,
        exchange.range_header,
        # Werkzeug parses the query into a MultiDict on first use: not for the usual none.
        request.args.get("range") if exchange.query else None,
        representation,
        site.limits,
    )
    exchange.range_outcome = range_outcome_label(plan)
    exchange.if_range_failed = plan.if_range_failed
    if site.config.cache_control:
        # The freshness every cache in front applies (issue 15); on a 304 too (RFC 9111 §4.3.4).
        plan = dataclasses.replace(
            plan, headers=(*plan.headers, ("Cache-Control", site.config.cache_control))
        )
    if exchange.method == "HEAD" or not plan.body:
        # HEAD answers the headers GET would, without reading the file (Quart would run the
        # GET and discard its body).
        return fields_response(plan.status, plan.headers, None)
    body: AsyncIterator[BodyItem] = file_body(
        plan.body,
        file.fd,
        region_bytes=site.region_bytes,
        chunk_bytes=site.config.chunk_size_bytes,
        sendfile=can_send_file(current_request().scope),  # not the proxy: 1 call, not 3
    )
    if site.shaping.enabled:
        pacing = await site.shaping.pacing(relative, file, representation.content_type)
        if pacing is not None:
            body = paced(body, pacing, exchange)
    return fields_response(plan.status, plan.headers, body)


async def media_listing(site: OriginSite) -> Response:
    """The servable files of the media folder as JSON (walked in a worker thread)."""
    return json_response(await trio.to_thread.run_sync(site.folder.listing))
