"""The proxy app: every path relayed (relay.py), plus the shared routes and the proxy's Via.

Run it with ``trio-range proxy`` or ``hypercorn -k trio 'trio_range.proxy:create_app()'``
(configured from ``TRIO_RANGE_PROXY_*`` environment variables).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncGenerator
from types import MethodType

from quart import Response

from trio_range.config import ProxyConfig, load
from trio_range.http.conditional import format_http_date
from trio_range.http.forwarding import via_value
from trio_range.proxy.answers import CompleteAnswer
from trio_range.proxy.relay import ProxySite, relay
from trio_range.server.app import RangeApp
from trio_range.server.common import install_common_routes
from trio_range.server.guards import install_request_guards
from trio_range.stats.factory import run_in_lifespan

ALLOWED_METHODS = ["GET", "HEAD"]


def create_app(config: ProxyConfig | None = None) -> RangeApp:
    """The proxy app; without ``config`` it is read from the environment."""
    if config is None:
        config = load(ProxyConfig, os.environ)
    app = RangeApp(__name__)
    app.config["TRIO_RANGE"] = config
    stats = install_common_routes(app, role="proxy", access_log=config.access_log)
    install_request_guards(app, config)
    site = ProxySite.create(config, stats)
    via = via_value(config.via_name)
    if site.cache is not None:  # issue 15: the cache's fills live in the app's lifespan
        run_in_lifespan(app, site.cache)
        stats.cache_disk_bytes = lambda: site.cache.store.disk_bytes if site.cache else 0

    @app.while_serving
    async def hold_upstream_client() -> AsyncGenerator[None]:
        # One client (one connection pool) for the app's lifetime, closed at shutdown.
        async with site.upstream:
            stats.open_upstream_connections = site.upstream.open_connections
            yield

    @app.after_request
    async def add_via_and_date_to_local_answers(response: Response) -> Response:
        # Relayed answers carry the upstream's Via chain plus ours and a Date (relay.py), cache
        # hits ours (cache/serve.py); the proxy's own answers (errors, /stats, /healthz) get
        # them here: RFC 9110 §7.6.3 asks for Via on every one.
        if type(response) is CompleteAnswer:
            return response  # proxy/answers.py says why by type
        if "Via" not in response.headers:
            response.headers["Via"] = via
        # Hypercorn's Date is off for the proxy (serving.hypercorn_config): a relayed response
        # keeps the upstream's Date, the proxy's own answers get one here.
        if "Date" not in response.headers:
            response.headers["Date"] = format_http_date(int(time.time()))
        return response

    # The view is relay itself, bound to the site: no wrapper coroutine per request (issue 14).
    # A bound coroutine function is what Quart awaits without wrapping it (ensure_async).
    view = MethodType(relay, site)
    for rule in ("/", "/<path:path>"):
        app.add_url_rule(
            rule, "relay", view, methods=ALLOWED_METHODS, provide_automatic_options=False
        )

    return app
