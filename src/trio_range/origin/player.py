"""The /player page: an HTML5 ``<video>`` of the media folder, for seeing range requests work.

The page and its script are shipped with the package (``static/player.*``) and load nothing
else: no CDN, so it works offline. Every URL the page uses is a path on the server that
served it (``/media/``, ``/media/<name>``), so the same page works through the proxy, which
relays every path to the origin.

``/player`` plays the origin's default file; ``/player?file=<name>`` another file of the
folder. The picker lists the audio and video files of ``/media/``.
"""

from __future__ import annotations

import html

from quart import Response

from trio_range.assets import static_text
from trio_range.config import OriginConfig
from trio_range.server.app import RangeApp

PLAYER_PATH = "/player"
SCRIPT_PATH = PLAYER_PATH + "/player.js"
METHODS = ["GET", "HEAD"]

# Nothing but the page's own script, the JSON listing and the media it plays: offline-safe, and
# a listed file name can never turn into markup or script.
_PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; media-src 'self'; "
    "style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
)


def render_page(default_file: str) -> str:
    """The player page, with ``default_file`` as the file it plays without ``?file=``."""
    return static_text("player.html").replace("__DEFAULT_FILE__", html.escape(default_file))


def install_player(app: RangeApp) -> None:
    """Add ``/player`` and its script to the origin ``app`` (configured by ``OriginConfig``)."""
    config = app.config["TRIO_RANGE"]
    default_file = config.default_file if isinstance(config, OriginConfig) else "sample.mp4"
    page = render_page(default_file)
    script = static_text("player.js")

    @app.route(PLAYER_PATH, methods=METHODS, provide_automatic_options=False)
    async def player_page() -> Response:
        response = Response(page, content_type="text/html; charset=utf-8")
        response.headers["Content-Security-Policy"] = _PAGE_POLICY
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.route(SCRIPT_PATH, methods=METHODS, provide_automatic_options=False)
    async def player_script() -> Response:
        response = Response(script, content_type="text/javascript; charset=utf-8")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response
