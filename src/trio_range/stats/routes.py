"""The statistics endpoints: /stats (JSON, or the dashboard page) and /metrics.

Both paths come from the configuration (``stats_path``, ``metrics_path``; ``''`` turns one
off) and both data endpoints require ``Authorization: Bearer <stats_token>`` when a token is set.
The dashboard page itself holds no figures: it is served without the token, and its script
fetches the JSON with the token it finds in the page's URL fragment (``/stats#token=...``; a
fragment never reaches the server or its logs).
"""

from __future__ import annotations

import hmac
import html
import json
from typing import TYPE_CHECKING

from quart import Quart, Request, Response, request

from trio_range.assets import static_text
from trio_range.config import ServerConfig
from trio_range.stats.store import StatsStore

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

METHODS = ["GET", "HEAD"]
REALM = "trio_range"

# The page loads nothing but its own script and the JSON it polls: it works offline.
_PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; "
    "style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
)


def wants_html(req: Request) -> bool:
    """Whether /stats should answer with the dashboard page rather than JSON.

    ``?format=json`` or ``?format=html`` decide; otherwise the Accept header does, JSON winning
    ties, so ``curl`` (``*/*``) and scripts get JSON and browsers (``text/html`` first) the page.
    """
    explicit = req.args.get("format")
    if explicit in ("json", "html"):
        return explicit == "html"
    return req.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"


def unauthorized(req: Request, token: str) -> Response | None:
    """None when ``req`` may read statistics; otherwise the 401 to answer (RFC 6750 §3)."""
    if not token:
        return None
    header = req.headers.get("Authorization")
    if header is not None:
        scheme, _, credentials = header.strip().partition(" ")
        # The auth-scheme is case-insensitive (RFC 9110 §11.1). compare_digest: no timing leak.
        if scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode(), token.encode()
        ):
            return None
    challenge = f'Bearer realm="{REALM}"'
    if header is not None:
        # "If the request included an access token ... the resource server SHOULD include the
        # 'error' attribute" (RFC 6750 §3); without credentials, no error code (§3.1).
        challenge += ', error="invalid_token"'
    response = Response("Unauthorized\n", 401, content_type="text/plain; charset=utf-8")
    response.headers["WWW-Authenticate"] = challenge
    response.headers["Cache-Control"] = "no-store"
    return response


def install_stats_routes(app: Quart, store: StatsStore, config: ServerConfig) -> None:
    """Add the stats and metrics paths of ``config`` to ``app``, reading ``store``."""
    token = config.stats_token
    if config.stats_path:
        page = static_text("dashboard.html").replace(
            "__STATS_PATH__", html.escape(config.stats_path)
        )
        script = static_text("dashboard.js")

        @app.route(config.stats_path, methods=METHODS, provide_automatic_options=False)
        async def stats_view() -> Response:
            if wants_html(request):
                response = Response(page, content_type="text/html; charset=utf-8")
                response.headers["Content-Security-Policy"] = _PAGE_POLICY
            else:
                denied = unauthorized(request, token)
                if denied is not None:
                    return denied
                document = json.dumps(store.snapshot().to_json(), separators=(",", ":"))
                response = Response(document, content_type="application/json")
            response.headers["Cache-Control"] = "no-store"
            response.headers["Vary"] = "Accept, Authorization"
            response.headers["X-Content-Type-Options"] = "nosniff"
            return response

        @app.route(
            config.stats_path + "/dashboard.js", methods=METHODS, provide_automatic_options=False
        )
        async def dashboard_script() -> Response:
            response = Response(script, content_type="text/javascript; charset=utf-8")
            response.headers["Cache-Control"] = "no-cache"
            response.headers["X-Content-Type-Options"] = "nosniff"
            return response

    if config.metrics_path:
        registry: list[CollectorRegistry] = []  # made at the first scrape (see below)

        @app.route(config.metrics_path, methods=METHODS, provide_automatic_options=False)
        async def metrics_view() -> Response:
            denied = unauthorized(request, token)
            if denied is not None:
                return denied
            # prometheus_client (~1 MiB of RSS) is loaded by the first scrape, not at start:
            # a proxy nobody scrapes never carries it (issue 14).
            from trio_range.stats.prometheus import metrics_registry, render

            if not registry:
                registry.append(metrics_registry(store))
            body, content_type = render(registry[0], request.headers.get("Accept"))
            response = Response(body, content_type=content_type)
            response.headers["Cache-Control"] = "no-store"
            return response
