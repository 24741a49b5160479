"""The streaming range proxy: GET and HEAD relayed to one fixed upstream, chunk by chunk.

Task tree of a relay (docs/design.md draws it): Hypercorn's connection task runs
RangeHTTPConnection, whose request nursery holds two tasks, the disconnect watcher and the
responder. The responder runs this view (which opens the upstream response and registers it
with the exchange's resources) and then iterates the body generator, which reads the upstream
response. A client disconnect makes the watcher cancel the request nursery: the body generator
is cancelled where it waits for the upstream, and the connection's shielded cleanup closes the
upstream response, whose connection goes back to nobody (it is closed, not reused, since its
body was not read to the end). Nothing is buffered beyond the chunk in flight.

Run it with ``trio-range proxy`` or ``hypercorn -k trio 'trio_range.proxy:create_app()'``
(configured from ``TRIO_RANGE_PROXY_*`` environment variables).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncGenerator, Mapping
from urllib.parse import parse_qsl, urlsplit

from quart import Response, request

from trio_range.config import ProxyConfig, load
from trio_range.errors import RangeParseError, UpstreamError
from trio_range.http.conditional import format_http_date
from trio_range.http.forwarding import request_headers_for_upstream, response_headers_for_client
from trio_range.http.ranges import format_range_header, parse_query_range, parse_range_header
from trio_range.proxy.upstream import Upstream, relay_body
from trio_range.server.common import install_common_routes, plain
from trio_range.server.connection import RangeApp, current_exchange
from trio_range.server.guards import install_request_guards

log = logging.getLogger("trio_range.proxy")

ALLOWED_METHODS = ["GET", "HEAD"]


def upstream_target(raw_path: bytes, query_string: bytes) -> str:
    """The origin-form target to request upstream, whatever form the client used.

    An absolute-form target (``GET http://elsewhere/x``) keeps only its path: the upstream is
    fixed by configuration, so neither it nor the Host header can redirect the proxy (no open
    proxy, no SSRF).
    """
    path = raw_path.decode("latin-1")
    if not path.startswith("/"):
        path = urlsplit(path).path or "/"
        if not path.startswith("/"):
            path = "/" + path
    if query_string:
        return f"{path}?{query_string.decode('latin-1')}"
    return path


def query_range(query_string: bytes) -> str | None:
    """The ``?range=`` compatibility parameter, if present."""
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name == "range":
            return value
    return None


def create_app(config: ProxyConfig | None = None) -> RangeApp:
    """The proxy app; without ``config`` it is read from the environment."""
    if config is None:
        config = load(ProxyConfig, os.environ)
    app = RangeApp(__name__)
    app.config["TRIO_RANGE"] = config
    stats = install_common_routes(app, role="proxy", access_log=config.access_log)
    install_request_guards(app, config)
    upstream = Upstream(config)
    upstream_host = urlsplit(config.upstream).netloc

    @app.while_serving
    async def hold_upstream_client() -> AsyncGenerator[None]:
        # One client (one connection pool) for the app's lifetime, closed at shutdown.
        async with upstream:
            stats.open_upstream_connections = upstream.open_connections
            yield

    def with_via(response: Response) -> Response:
        response.headers["Via"] = f"1.1 {config.via_name}"
        return response

    @app.after_request
    async def add_via_and_date_to_local_answers(response: Response) -> Response:
        # Relayed responses carry the upstream's Via chain plus ours; the proxy's own answers
        # (errors, /stats, /healthz) get ours too: RFC 9110 §7.6.3 asks for Via on every one.
        if "Via" not in response.headers:
            with_via(response)
        # Hypercorn's Date is off for the proxy (serving.hypercorn_config): a relayed response
        # keeps the upstream's Date, the proxy's own answers get one here.
        if "Date" not in response.headers:
            response.headers["Date"] = format_http_date(int(time.time()))
        return response

    async def relay() -> Response:
        exchange = current_exchange()
        scope = request.scope
        client_headers = [
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]
        ]
        headers = request_headers_for_upstream(
            client_headers,
            client_ip=(scope.get("client") or ("",))[0],
            scheme=scope["scheme"],
            upstream_host=upstream_host,
            via_name=config.via_name,
            client_http_version=scope.get("http_version", "1.1"),
        )
        target = upstream_target(scope.get("raw_path") or b"/", scope["query_string"])

        query_value = query_range(scope["query_string"])
        if query_value is not None:
            range_header = request.headers.get("Range")
            try:
                query_specs = parse_query_range(query_value)
            except RangeParseError:
                query_specs = None  # an invalid Range is ignored (RFC 9110 §14.2)
            if query_specs is not None:
                if range_header is not None and _parses_differently(range_header, query_specs):
                    return await conflict(target, headers)
                headers = [(n, v) for n, v in headers if n.lower() != "range"]
                headers.append(("Range", format_range_header(query_specs)))

        stats.record_upstream_request()
        try:
            response = await upstream.open(
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
            else relay_body(response, stats_error=stats.record_upstream_error),
            status=response.status_code,
        )
        del relayed.headers["Content-Type"]
        del relayed.headers["Content-Length"]
        for name, value in response_headers_for_client(
            response.headers.multi_items(),
            via_name=config.via_name,
            upstream_http_version=response.http_version.removeprefix("HTTP/"),
            upstream_base=upstream.base_url,
        ):
            relayed.headers.add(name, value)
        exchange.range_outcome = range_outcome_label(
            any(name.lower() == "range" for name, _ in headers),
            response.status_code,
            response.headers.get("Content-Type", ""),
        )
        return relayed

    async def conflict(target: str, headers: list[tuple[str, str]]) -> Response:
        """416 for a Range header and ``?range=`` that disagree, with the size if known."""
        current_exchange().range_outcome = "unsatisfiable"
        answer = plain(416, "Range Not Satisfiable")
        probe_headers = [(n, v) for n, v in headers if n.lower() not in {"range", "if-range"}]
        stats.record_upstream_request()
        try:
            probe = await upstream.open(
                "HEAD", target, probe_headers, stats_error=stats.record_upstream_error
            )
        except UpstreamError as error:
            log.warning("HEAD %s for a 416: %s", target, error)
            return answer
        current_exchange().resources.push_async_callback(probe.aclose)
        size = representation_size(probe.status_code, probe.headers)
        if size is not None:
            answer.headers["Content-Range"] = f"bytes */{size}"
        return answer

    def upstream_failure(error: UpstreamError) -> Response:
        status = error.status_hint
        text = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}[status]
        if status == 503:
            return plain(status, text, Retry_After="1")
        return plain(status, text)

    @app.route("/", methods=ALLOWED_METHODS, provide_automatic_options=False)
    async def relay_root() -> Response:
        return await relay()

    @app.route("/<path:path>", methods=ALLOWED_METHODS, provide_automatic_options=False)
    async def relay_path(path: str) -> Response:
        return await relay()

    return app


def representation_size(status: int, headers: Mapping[str, str]) -> int | None:
    """The full size an upstream answer reveals: a 200's length or a 206's complete-length."""
    if status == 200:
        length = headers.get("Content-Length", "")
        return int(length) if length.isdigit() else None
    if status == 206:
        _, _, complete = headers.get("Content-Range", "").rpartition("/")
        return int(complete) if complete.isdigit() else None
    return None


def _parses_differently(range_header: str, query_specs: object) -> bool:
    """Whether a Range header and a parsed ``?range=`` ask for different bytes.

    An invalid header is ignored, as RFC 9110 §14.2 lets a server ignore any Range, so only two
    valid values can disagree.
    """
    try:
        return parse_range_header(range_header) != query_specs
    except RangeParseError:
        return False


def range_outcome_label(asked: bool, status: int, content_type: str) -> str:
    """How the upstream treated the Range, in the words of the statistics."""
    if status == 206:
        return "multi" if content_type.startswith("multipart/byteranges") else "single"
    if status == 416:
        return "unsatisfiable"
    if asked and status == 200:
        return "ignored"
    return "none"
