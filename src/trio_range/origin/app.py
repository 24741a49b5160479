"""The origin app: routes onto the handlers of files.py, plus the shared routes and the player.

Run it with ``trio-range origin`` or ``hypercorn -k trio 'trio_range.origin:create_app()'``
(configured from ``TRIO_RANGE_ORIGIN_*`` environment variables).
"""

from __future__ import annotations

import os

from quart import Response

from trio_range.config import OriginConfig, load
from trio_range.errors import ConfigError
from trio_range.origin.files import OriginSite, media_listing, serve_file
from trio_range.origin.player import install_player
from trio_range.server.app import RangeApp
from trio_range.server.common import install_common_routes
from trio_range.server.guards import install_request_guards

ALLOWED_METHODS = ["GET", "HEAD"]


def create_app(config: OriginConfig | None = None) -> RangeApp:
    """The origin app; without ``config`` it is read from the environment."""
    if config is None:
        config = load(OriginConfig, os.environ)
    if not config.media_dir.is_dir():
        raise ConfigError(f"media_dir {config.media_dir} is not a directory")
    site = OriginSite.from_config(config)
    app = RangeApp(__name__)
    app.config["TRIO_RANGE"] = config
    install_common_routes(app, role="origin", access_log=config.access_log)
    install_request_guards(app, config)
    install_player(app)

    @app.route("/", methods=ALLOWED_METHODS, provide_automatic_options=False)
    async def index() -> Response:
        return await serve_file(site, config.default_file)

    @app.route("/media/", methods=ALLOWED_METHODS, provide_automatic_options=False)
    async def listing() -> Response:
        return await media_listing(site)

    @app.route("/media/<path:relative>", methods=ALLOWED_METHODS, provide_automatic_options=False)
    async def media(relative: str) -> Response:
        return await serve_file(site, relative)

    return app
