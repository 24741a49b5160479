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
from urllib.parse import urlsplit

from quart import Response, request

from trio_range.config import ProxyConfig
from trio_range.errors import UpstreamError
from trio_range.http.forwarding import request_headers_for_upstream, response_headers_for_client
from trio_range.http.relay import (
    RangeConflict,
    query_range,
    range_for_upstream,
    relayed_range_outcome,
    representation_size,
    upstream_target,
)
from trio_range.proxy.upstream import Upstream, relay_body
from trio_range.server.common import plain
from trio_range.server.exchange import current_exchange
from trio_range.server.file_region import can_send_file
from trio_range.stats.store import StatsStore

log = logging.getLogger("trio_range.proxy")

_FAILURE_TEXT = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


@dataclasses.dataclass(frozen=True, slots=True)
class ProxySite:
    """What the proxy's handlers need: its configuration, its upstream client and its store."""

    config: ProxyConfig
    upstream: Upstream
    stats: StatsStore
    upstream_host: str  # the Host sent upstream, parsed once from the configured URL

    @classmethod
    def create(cls, config: ProxyConfig, stats: StatsStore) -> ProxySite:
        return cls(config, Upstream(config), stats, urlsplit(config.upstream).netloc)


async def relay(site: ProxySite) -> Response:
    """Relay the current request upstream and stream the answer back."""
    exchange = current_exchange()
    scope = request.scope
    client_headers = [
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]
    ]
    headers = request_headers_for_upstream(
        client_headers,
        client_ip=(scope.get("client") or ("",))[0],
        scheme=scope["scheme"],
        upstream_host=site.upstream_host,
        via_name=site.config.via_name,
        client_http_version=scope.get("http_version", "1.1"),
    )
    target = upstream_target(scope.get("raw_path") or b"/", scope["query_string"])
    try:
        replacement = range_for_upstream(
            request.headers.get("Range"), query_range(scope["query_string"])
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
            request.method, target, headers, stats_error=stats.record_upstream_error
        )
    except UpstreamError as error:
        log.warning("%s %s: %s", request.method, target, error)
        return upstream_failure(error)
    exchange.resources.push_async_callback(response.aclose)
    if response.status_code >= 500:
        stats.record_upstream_error("status_5xx")

    relayed = Response(
        b""
        if request.method == "HEAD"
        else relay_body(
            response,
            stats_error=stats.record_upstream_error,
            # The body may be spliced socket to socket: plain TCP to a server that writes
            # kernel regions (the upstream side is the transport's to check).
            splice=site.config.splice and scope["scheme"] == "http" and can_send_file(scope),
        ),
        status=response.status_code,
    )
    del relayed.headers["Content-Type"]
    del relayed.headers["Content-Length"]
    # The upstream's fields as it sent them: httpx's raw names keep their case (multi_items()
    # would lowercase them) and latin-1 gives back every byte (connection.send_response
    # encodes them the same way). Clients that read names literally (GDAL) then see what they
    # would see from the upstream itself.
    upstream_fields = [
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in response.headers.raw
    ]
    for name, value in response_headers_for_client(
        upstream_fields,
        via_name=site.config.via_name,
        upstream_http_version=response.http_version.removeprefix("HTTP/"),
        upstream_base=site.upstream.base_url,
    ):
        relayed.headers.add(name, value)
    exchange.range_outcome = relayed_range_outcome(
        any(name.lower() == "range" for name, _ in headers),
        response.status_code,
        response.headers.get("Content-Type", ""),
    )
    return relayed


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
