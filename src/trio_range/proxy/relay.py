"""The proxy's relay, as module-level handlers over a :class:`ProxySite`.

Task tree of a relay (docs/design.md draws it): Hypercorn's connection task runs
RangeHTTPConnection, whose request nursery holds two tasks, the disconnect watcher and the
responder. The responder runs :func:`relay` (which opens the upstream response and registers it
with the exchange's resources) and then iterates the body generator, which reads the upstream
response. A client disconnect makes the watcher cancel the request nursery: the body generator
is cancelled where it waits for the upstream, and the connection's shielded cleanup closes the
upstream response, whose connection goes back to nobody (it is closed, not reused, since its
body was not read to the end). Nothing is buffered beyond the chunk in flight.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from quart import Response, request

from trio_range.config import ProxyConfig
from trio_range.errors import UpstreamError
from trio_range.http.forwarding import (
    request_headers_for_upstream,
    response_headers_and_type,
    upstream_limit_rate,
)
from trio_range.http.ranges import RangeLimits
from trio_range.http.relay import (
    RangeConflict,
    fields_text,
    query_range,
    range_for_upstream,
    relayed_range_outcome,
    representation_size,
    upstream_target,
)
from trio_range.http.token_bucket import Pacing, pacing_for
from trio_range.proxy.answers import CompleteAnswer
from trio_range.proxy.upstream import Upstream, relay_body, response_closer
from trio_range.proxy.upstream_fields import InvalidUpstreamField, upstream_fields_text
from trio_range.server._werkzeug_hooks import headers_of
from trio_range.server.common import plain
from trio_range.server.exchange import current_exchange
from trio_range.server.file_region import can_send_file
from trio_range.server.pacing import paced
from trio_range.stats.store import StatsStore

if TYPE_CHECKING:  # loaded only when cache_dir is set: a proxy without a cache never imports it
    from trio_range.proxy.cache.cache import SliceCache

log = logging.getLogger("trio_range.proxy")

_CACHE_LIMITS = RangeLimits()  # the origin's default range limits, for answers from the cache
_FAILURE_TEXT = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


@dataclasses.dataclass(frozen=True, slots=True)
class ProxySite:
    """What the proxy's handlers need: its configuration, its upstream client and its store."""

    config: ProxyConfig
    upstream: Upstream
    stats: StatsStore
    upstream_host: str  # the Host sent upstream, parsed once from the configured URL
    cache: SliceCache | None = None  # issue 15: the slice cache, when cache_dir is set
    # How a body is paced at the configured rate: every cache hit (a hit has no upstream
    # fields to trust), and every relay unless the upstream's rate is trusted. The same each
    # time, so made once.
    configured_pacing: Pacing | None = None

    @classmethod
    def create(cls, config: ProxyConfig, stats: StatsStore) -> ProxySite:
        upstream, host = Upstream(config), urlsplit(config.upstream).netloc
        pacing = response_pacing(config, [], "")
        if not config.cache_dir:
            return cls(config, upstream, stats, host, None, pacing)
        from trio_range.proxy.cache.cache import SliceCache

        cache = SliceCache(config, upstream, stats, host)
        return cls(config, upstream, stats, host, cache, pacing)


async def relay(site: ProxySite, path: str = "") -> Response:
    """Relay the current request upstream and stream the answer back.

    The app's view (bound to ``site``); ``path`` is the route's, unused: the target sent
    upstream is the request's raw one.
    """
    if site.cache is not None:  # issue 15: the cache answers what it can (proxy/cache/)
        from trio_range.proxy.cache.serve import serve_cached

        try:
            cached = await serve_cached(site.cache, _CACHE_LIMITS, site.configured_pacing)
        except UpstreamError as error:
            log.warning("%s %s: %s", request.method, request.path, error)
            return upstream_failure(error)
        if cached is not None:
            return cached
    exchange = current_exchange()
    scope = request.scope
    method: str = exchange.method
    query_string: bytes = scope["query_string"]
    headers = request_headers_for_upstream(
        fields_text(scope["headers"]),
        client_ip=(scope.get("client") or ("",))[0],
        scheme=scope["scheme"],
        upstream_host=site.upstream_host,
        via_name=site.config.via_name,
        client_http_version=scope.get("http_version", "1.1"),
    )
    target = upstream_target(scope.get("raw_path") or b"/", query_string)
    try:
        replacement = range_for_upstream(
            exchange.range_header, query_range(query_string) if query_string else None
        )
    except RangeConflict:
        return await _conflict(site, target, headers)
    if replacement is not None:
        headers = [(n, v) for n, v in headers if n.lower() != "range"]
        headers.append(("Range", replacement))

    stats = site.stats
    stats.record_upstream_request()
    try:
        response = await site.upstream.open(
            method, target, headers, stats_error=stats.record_upstream_error
        )
    except UpstreamError as error:
        log.warning("%s %s: %s", method, target, error)
        return upstream_failure(error)
    exchange.resources.push_async_callback(response_closer(response))
    status = response.status_code
    if status >= 500:
        stats.record_upstream_error("status_5xx")

    # The upstream's fields as it sent them: httpx's raw names keep their case (multi_items()
    # would lowercase them) and latin-1 gives back every byte (connection.send_response
    # encodes them the same way). Clients that read names literally (GDAL) then see what they
    # would see from the upstream itself. A field with a control character is dropped, or
    # fails the relay when the body needs it (upstream_fields.py).
    try:
        upstream_fields = upstream_fields_text(response.headers.raw, status, target)
    except InvalidUpstreamField as error:
        log.warning("%s %s: %s", method, target, error)
        return upstream_failure(error)
    body: AsyncIterator[Any] | None = None
    if method != "HEAD":
        body = relay_body(
            response,
            stats_error=stats.record_upstream_error,
            # The body may be spliced socket to socket: plain TCP to a server that writes
            # kernel regions (the upstream side is the transport's to check).
            splice=site.config.splice and scope["scheme"] == "http" and can_send_file(scope),
        )
        pacing = (
            response_pacing(site.config, upstream_fields, target)
            if site.config.trust_upstream_rate
            else site.configured_pacing
        )
        if pacing is not None:
            body = paced(body, pacing, exchange)
    client_fields, content_type = response_headers_and_type(
        upstream_fields,
        via_name=site.config.via_name,
        upstream_http_version=response.http_version,
        upstream_base=site.upstream.base_url,
        # Hypercorn's Date is off for the proxy (serving.hypercorn_config): a relayed response
        # keeps the upstream's Date, or gets one here.
        received_at=int(time.time()),
    )
    # ASGI gives the client's names in lower case; a Range the client's Connection named is
    # not in headers (hop-by-hop), so it was not asked of the upstream.
    asked = replacement is not None or (
        exchange.range_header is not None and "range" in [name for name, _ in headers]
    )
    exchange.range_outcome = relayed_range_outcome(asked, status, content_type)
    # Checked in one loop (headers_of), as Werkzeug's per-field add checks them: the upstream's
    # fields with a control character are gone already, and the fields added here are ours.
    return CompleteAnswer.relayed(status, headers_of(client_fields), body)


def response_pacing(
    config: ProxyConfig, upstream_fields: list[tuple[str, str]], target: str
) -> Pacing | None:
    """How to pace a relayed body: the configured rate, or the upstream's when trusted."""
    rate = config.limit_rate_bytes_per_s
    if config.trust_upstream_rate:
        try:
            upstream_rate = upstream_limit_rate(upstream_fields)
        except ValueError as error:
            log.warning("%s: %s; the configured rate applies", target, error)
        else:
            rate = rate if upstream_rate is None else upstream_rate
    return pacing_for(rate_bytes_per_s=rate, burst_bytes=config.limit_rate_after_bytes)


async def _conflict(site: ProxySite, target: str, headers: list[tuple[str, str]]) -> Response:
    """416 for a Range header and ``?range=`` that disagree, with the size if known."""
    exchange = current_exchange()
    exchange.range_outcome = "unsatisfiable"
    answer = plain(416, "Range Not Satisfiable")
    probe_headers = [(n, v) for n, v in headers if n.lower() not in {"range", "if-range"}]
    site.stats.record_upstream_request()
    try:
        probe = await site.upstream.open(
            "HEAD", target, probe_headers, stats_error=site.stats.record_upstream_error
        )
    except UpstreamError as error:
        log.warning("HEAD %s for a 416: %s", target, error)
        return answer
    exchange.resources.push_async_callback(probe.aclose)
    size = representation_size(probe.status_code, probe.headers)
    if size is not None:
        answer.headers["Content-Range"] = f"bytes */{size}"
    return answer


def upstream_failure(error: UpstreamError) -> Response:
    """The proxy's own answer to an upstream that failed: 502, 503 or 504."""
    status = error.status_hint
    if status == 503:
        return plain(status, _FAILURE_TEXT[status], Retry_After="1")
    return plain(status, _FAILURE_TEXT[status])
