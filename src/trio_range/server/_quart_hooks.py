"""Every use of Quart's and Quart-Trio's undocumented internals, in one guarded place.

Quart documents ``Quart.asgi_http_class`` as the class that serves each HTTP request; the class
it names (``quart.asgi.ASGIHTTPConnection``, and Quart-Trio's subclass
``quart_trio.asgi.TrioASGIHTTPConnection``) is not documented API. trio_range replaces its
``__call__`` (connection.py says why) and reuses two of its methods, reached only through
:class:`QuartConnection` below. It does not reuse ``_send_response``, which lowercases every
header name: connection.py sends responses through Quart's public ``Response`` API.
``HOOKED`` lists each use with the shape the hook expects; tests/server/test_hooks.py checks
them, so an upgrade that renames or reshapes one fails there instead of serving wrongly.
(Quart and Quart-Trio are one project, released together.)
"""

from __future__ import annotations

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable
from quart import Quart
from quart.asgi import ASGIHTTPConnection
from quart.wrappers import Request
from quart.wrappers.request import Body
from quart_trio import QuartTrio
from quart_trio.asgi import TrioASGIHTTPConnection

from trio_range.server.hooks_check import Hook

HOOKED: tuple[Hook, ...] = (
    Hook(Quart, "asgi_http_class", None),
    Hook(QuartTrio, "asgi_http_class", None),
    Hook(Quart, "handle_request", ("self", "request")),
    Hook(ASGIHTTPConnection, "__init__", ("self", "app", "scope")),
    Hook(ASGIHTTPConnection, "_create_request_from_scope", ("self", "send")),
    Hook(ASGIHTTPConnection, "handle_messages", ("self", "request", "receive")),
    Hook(TrioASGIHTTPConnection, "__call__", ("self", "receive", "send")),
    Hook(Body, "set_complete", ("self",)),
    # Instance attribute: Request.body (a Body), checked by tests/server/test_hooks.py.
)


def complete_empty_body(request: Request) -> None:
    """Mark the body of a request that has none as fully received.

    What ``ASGIHTTPConnection.handle_messages`` does on the final ``http.request`` message, for
    a request served without a task reading its messages (connection.py): a view that awaits
    the body then gets ``b""`` instead of waiting forever.
    """
    request.body.set_complete()


class QuartConnection(TrioASGIHTTPConnection):
    """Quart-Trio's per-request ASGI connection, with the pieces trio_range reuses named."""

    def build_request(self, send: ASGISendCallable) -> Request:
        """The Quart ``Request`` for this scope (``ASGIHTTPConnection._create_request_from_scope``).

        Reused as it is: it applies the app's configuration (body limits and timeouts, the
        root path, the Host of HTTP/1.0 requests) that a rewrite would have to track.
        """
        return self._create_request_from_scope(send)

    async def read_until_disconnect(self, request: Request, receive: ASGIReceiveCallable) -> None:
        """Feed the request body to ``request`` and return on ``http.disconnect``.

        Quart's ``ASGIHTTPConnection.handle_messages``, called past Quart-Trio's override of
        it, which also cancels the request's nursery: the cancel that, after a complete
        response, kills Hypercorn's keep-alive timer (connection.py).
        """
        await ASGIHTTPConnection.handle_messages(self, request, receive)
