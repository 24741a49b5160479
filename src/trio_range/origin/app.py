"""The origin server: the files of one media folder, with complete RFC 9110 range support.

The view reads the request, opens the file (on the event loop: see media_folder), asks the pure
:func:`~trio_range.http.response_plan.plan_response` what to answer, and carries the plan out:
file bytes go into the body as regions that the connection sends with sendfile or reads
(file_region.py). The open file is registered with the request's resources, so it is closed
when the exchange ends, even if the body was never iterated.

Run it with ``trio-range origin`` or ``hypercorn -k trio 'trio_range.origin:create_app()'``
(configured from ``TRIO_RANGE_ORIGIN_*`` environment variables).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator

import trio
from quart import Response, request

from trio_range.config import OriginConfig, load
from trio_range.errors import ConfigError
from trio_range.http.conditional import ConditionalRequest, Validators
from trio_range.http.ranges import ByteRange, RangeLimits, RangeOutcome
from trio_range.http.response_plan import Representation, ResponsePlan, plan_response
from trio_range.origin.media_folder import MediaFolder, OpenFile, content_type_for
from trio_range.origin.player import install_player
from trio_range.server.common import install_common_routes, json_response, not_found
from trio_range.server.connection import RangeApp, current_exchange
from trio_range.server.file_region import SENDFILE_REGION_BYTES, FileRegion, file_regions
from trio_range.server.guards import install_request_guards

log = logging.getLogger("trio_range.origin")

ALLOWED_METHODS = ["GET", "HEAD"]


async def _body(
    segments: tuple[bytes | ByteRange, ...], file: OpenFile, region_bytes: int
) -> AsyncIterator[bytes | FileRegion]:
    # File bytes go out as regions: the connection sends them with sendfile where it can, or
    # reads them (file_region.py).
    for segment in segments:
        if isinstance(segment, bytes):
            yield segment
        else:
            for region in file_regions(file.fd, segment.start, segment.length, region_bytes):
                yield region


def _response(plan: ResponsePlan, body: object) -> Response:
    response = Response(body, status=plan.status)  # type: ignore[arg-type]
    # Quart adds a Content-Type and, for bytes bodies, a Content-Length of its own: the plan's
    # headers replace both, so the announced length is the one the plan's body has.
    del response.headers["Content-Type"]
    del response.headers["Content-Length"]
    for name, value in plan.headers:
        response.headers.add(name, value)
    return response


def range_outcome_label(plan: ResponsePlan) -> str:
    """How the plan treated the Range, in the words of the statistics."""
    outcome = plan.range_outcome
    if outcome is RangeOutcome.PARTIAL:
        parts = sum(isinstance(segment, ByteRange) for segment in plan.body)
        return "multi" if parts > 1 else "single"
    if outcome in (RangeOutcome.UNSATISFIABLE, RangeOutcome.CONFLICT):
        return "unsatisfiable"
    if outcome is RangeOutcome.IGNORED:
        return "ignored"
    return "none"


def create_app(config: OriginConfig | None = None) -> RangeApp:
    """The origin app; without ``config`` it is read from the environment."""
    if config is None:
        config = load(OriginConfig, os.environ)
    if not config.media_dir.is_dir():
        raise ConfigError(f"media_dir {config.media_dir} is not a directory")
    folder = MediaFolder.at(config.media_dir)
    limits = RangeLimits(max_ranges=config.max_ranges)
    app = RangeApp(__name__)
    app.config["TRIO_RANGE"] = config
    app.read_chunk_bytes = config.chunk_size_bytes
    region_bytes = max(config.chunk_size_bytes, SENDFILE_REGION_BYTES)
    install_common_routes(app, role="origin", access_log=config.access_log)
    install_request_guards(app, config)
    install_player(app)

    async def serve_file(relative: str) -> Response:
        file = folder.open(relative)
        if file is None:
            return not_found()
        exchange = current_exchange()
        exchange.resources.callback(file.close)
        representation = Representation(
            size=file.size,
            content_type=content_type_for(relative),
            validators=Validators.for_file(file.size, file.mtime_ns, file.inode),
        )
        headers = request.headers
        query_range = request.args.get("range")
        plan = plan_response(
            ConditionalRequest(
                method=request.method,
                if_match=headers.get("If-Match"),
                if_none_match=headers.get("If-None-Match"),
                if_modified_since=headers.get("If-Modified-Since"),
                if_unmodified_since=headers.get("If-Unmodified-Since"),
                if_range=headers.get("If-Range"),
            ),
            headers.get("Range"),
            query_range,
            representation,
            limits,
        )
        exchange.range_outcome = range_outcome_label(plan)
        exchange.if_range_failed = plan.if_range_failed
        if request.method == "HEAD" or not plan.body:
            # HEAD answers the headers GET would, without reading the file (Quart would run
            # the GET and discard its body).
            return _response(plan, b"")
        return _response(plan, _body(plan.body, file, region_bytes))

    @app.route("/", methods=ALLOWED_METHODS, provide_automatic_options=False)
    async def index() -> Response:
        return await serve_file(config.default_file)

    @app.route("/media/", methods=ALLOWED_METHODS, provide_automatic_options=False)
    async def listing() -> Response:
        entries = await trio.to_thread.run_sync(folder.listing)
        return json_response(entries)

    @app.route("/media/<path:relative>", methods=ALLOWED_METHODS, provide_automatic_options=False)
    async def media(relative: str) -> Response:
        return await serve_file(relative)

    return app
