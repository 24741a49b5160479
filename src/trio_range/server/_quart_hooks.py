"""Every use of Quart's and Quart-Trio's undocumented internals, in one guarded place.

Quart documents ``Quart.asgi_http_class`` as the class that serves each HTTP request; the class
it names (``quart.asgi.ASGIHTTPConnection``, and Quart-Trio's subclass
``quart_trio.asgi.TrioASGIHTTPConnection``) is not documented API. trio_range replaces its
``__call__`` (connection.py says why) and reuses two of its methods, reached only through
:class:`QuartConnection` below. It does not reuse ``_send_response``, which lowercases every
header name: connection.py sends responses through Quart's public ``Response`` API.
Also here, because they set what Quart keeps private (issue 13): Quart's request and app
contexts pushed as context variable sets (:class:`QuartFastPath`), the complete empty body of
a request without one, and responses built without ``__init__`` (:func:`bare_response`).
``HOOKED`` lists each use with the shape the hook expects; tests/server/test_hooks.py checks
them, so an upgrade that renames or reshapes one fails there instead of serving wrongly.
(Quart and Quart-Trio are one project, released together.)
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from functools import partial
from types import AsyncGeneratorType
from typing import TypeVar

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable
from quart import Quart
from quart import globals as quart_globals
from quart import request as request_proxy
from quart.asgi import ASGIHTTPConnection
from quart.ctx import AppContext, RequestContext, _BaseRequestWebsocketContext
from quart.globals import _cv_app, _cv_request
from quart.routing import QuartMap
from quart.signals import (
    appcontext_popped,
    appcontext_pushed,
)
from quart.typing import ResponseTypes
from quart.wrappers import Request, Response
from quart.wrappers.request import Body
from quart.wrappers.response import IterableBody, ResponseBody
from quart_trio import QuartTrio
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers import TrioRequest
from quart_trio.wrappers.request import TrioBody
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException

from trio_range.server._werkzeug_hooks import headers_of, prepared_response
from trio_range.server.hooks_check import Hook
from trio_range.server.quiet_dispatch import QuietDispatch, only_app_level
from trio_range.server.remembered_routes import MAX_REMEMBERED_ADAPTERS as MAX_REMEMBERED_ADAPTERS
from trio_range.server.remembered_routes import RememberedRoutes

ResponseClass = TypeVar("ResponseClass", bound=Response)

HOOKED: tuple[Hook, ...] = (
    Hook(Quart, "asgi_http_class", None),
    Hook(QuartTrio, "asgi_http_class", None),
    Hook(Quart, "handle_request", ("self", "request")),
    Hook(ASGIHTTPConnection, "__init__", ("self", "app", "scope")),
    Hook(ASGIHTTPConnection, "_create_request_from_scope", ("self", "send")),
    Hook(ASGIHTTPConnection, "_send_push_promise", ("self", "send", "path", "headers")),
    Hook(ASGIHTTPConnection, "handle_messages", ("self", "request", "receive")),
    Hook(TrioASGIHTTPConnection, "__call__", ("self", "receive", "send")),
    Hook(Body, "set_complete", ("self",)),
    # _CompleteEmptyBody sets what TrioBody.__init__ sets, minus the events; the check that
    # a TrioBody still has exactly these attributes is in tests/server/test_hooks.py.
    Hook(TrioBody, "__init__", ("self", "expected_content_length", "max_content_length")),
    Hook(Request, "close", ("self",)),  # and its Request._files (None or a MultiDict)
    # Instance attribute: Request.body (a Body), checked by tests/server/test_hooks.py.
    # QuartFastPath repeats these (public) methods minus what nothing registered needs: a
    # reshaped one must be re-read before the fast path is trusted again.
    Hook(QuartTrio, "full_dispatch_request", ("self", "request_context")),
    Hook(Quart, "finalize_request", ("self", "result", "request_context", "from_error_handler")),
    Hook(Quart, "preprocess_request", ("self", "request_context")),
    Hook(Quart, "process_response", ("self", "response", "request_context")),
    Hook(Quart, "do_teardown_request", ("self", "exc", "request_context")),
    Hook(Quart, "do_teardown_appcontext", ("self", "exc")),
    Hook(Quart, "ensure_async", ("self", "func")),
    Hook(Quart, "create_url_adapter", ("self", "request")),
    Hook(QuartMap, "bind_to_request", ("self", "request", "subdomain", "server_name")),
    # QuartFastPath.handle_request repeats these, pushing and popping Quart's two contexts
    # through the context variables its request and app proxies read.
    Hook(QuartTrio, "handle_request", ("self", "request")),
    Hook(_BaseRequestWebsocketContext, "_push", ("self",)),
    Hook(_BaseRequestWebsocketContext, "match_request", ("self",)),
    Hook(RequestContext, "pop", ("self", "exc")),
    Hook(AppContext, "push", ("self",)),
    Hook(AppContext, "pop", ("self", "exc")),
    Hook(Quart, "dispatch_request", ("self", "request_context")),
    # bare_response repeats it for a ResponseBody (test_bare_response.py compares the two).
    Hook(
        Response, "__init__", ("self", "response", "status", "headers", "mimetype", "content_type")
    ),
    Hook(quart_globals, "_cv_request", None),  # the request proxy's context variable
    Hook(quart_globals, "_cv_app", None),  # the app and g proxies' context variable
    # Instance attributes: RequestContext._cv_tokens and AppContext._cv_tokens (lists of the
    # tokens of each push), RequestContext.request_websocket, checked by test_hooks.py.
    # Instance attribute: RequestContext._after_request_functions (after_this_request's list),
    # checked by tests/server/test_hooks.py.
    # Werkzeug's LocalProxy._get_current_object (documented, set per proxy): current_request.
)


def current_request() -> Request:
    """The request being handled, itself rather than Quart's ``request`` proxy of it.

    Each attribute read through the proxy is a context lookup of its own (about 4 Python
    calls); code that reads several attributes per request reads them from this object.
    """
    context = _cv_request.get(None)
    if context is None:  # outside a request: the proxy raises Quart's own error
        request: Request = request_proxy._get_current_object()  # type: ignore[attr-defined]
        return request
    return context.request_websocket  # type: ignore[return-value]


def bare_response(
    cls: type[ResponseClass],
    body: ResponseBody | AsyncIterable[object],
    status: int,
    headers: Headers,
) -> ResponseClass:
    """``cls(body, status=status, headers=headers)`` for a body object or an async iterable.

    Quart's ``Response.__init__`` over Werkzeug's: the same fields (Werkzeug's part is
    ``_werkzeug_hooks.prepared_response``), in four assignments instead of about 10 calls.
    """
    response = prepared_response(cls, status, headers)
    if response is None:
        return cls(body, status=status, headers=headers)
    # What Quart makes of each: an iterable in its iterable body (for an async generator, the
    # body IterableBody.__init__ makes, without its ABC check), a body object as it is.
    if type(body) is AsyncGeneratorType and cls.iterable_body_class is IterableBody:
        wrapped = IterableBody.__new__(IterableBody)
        wrapped.iter = body
        response.response = wrapped
    elif isinstance(body, ResponseBody):
        response.response = body
    elif isinstance(body, (str, bytes)):
        return cls(body, status=status, headers=headers)
    else:
        response.response = cls.iterable_body_class(body)
    response.timeout = Ellipsis  # Quart's "no timeout set": RESPONSE_TIMEOUT applies
    return response


def complete_empty_body(request: Request) -> None:
    """Mark the body of a request that has none as fully received.

    What ``ASGIHTTPConnection.handle_messages`` does on the final ``http.request`` message, for
    a request served without a task reading its messages (connection.py): a view that awaits
    the body then gets ``b""`` instead of waiting forever.
    """
    body = request.body
    if type(body) is not _CompleteEmptyBody:
        body.set_complete()


class QuartConnection(TrioASGIHTTPConnection):
    """Quart-Trio's per-request ASGI connection, with the pieces trio_range reuses named."""

    def build_request(self, send: ASGISendCallable) -> Request:
        """The Quart ``Request`` for this scope (``ASGIHTTPConnection._create_request_from_scope``).

        For the usual shape (HTTP/1.1, an absolute path, no root path) the same request is
        built with its fields filled in one loop (``_werkzeug_hooks.headers_of``) instead of
        one ``Headers.add`` each (five Python calls a field, issue 13); the body repeats
        Quart 0.22's. Anything else, an HTTP/1.0 request (Quart adds a Host) or a root path,
        is Quart's own method.
        """
        scope = self.scope
        if scope["http_version"] < "1.1" or scope.get("root_path", "") or scope["path"][:1] != "/":
            return self._create_request_from_scope(send)
        fields = [("Remote-Addr", (scope.get("client") or ["<local>"])[0])]
        fields += [
            (name.decode("latin1").title(), value.decode("latin1"))
            for name, value in scope["headers"]
        ]
        config = self.app.config
        cls = self.app.request_class
        request: Request = cls.__new__(cls)
        names = [name for name, _ in fields]
        if "Content-Length" not in names:
            # Werkzeug's value without one, whatever Transfer-Encoding says: set through the
            # cached_property's public setter instead of two Headers lookups in __init__.
            request.content_length = None
            if "Transfer-Encoding" not in names:
                # No body at all (RFC 9112 §6.3): Request.__init__ reads body_class from the
                # request, and this one is complete from the start.
                request.body_class = _CompleteEmptyBody
        cls.__init__(
            request,
            scope["method"],
            scope["scheme"],
            scope["path"],
            scope["query_string"],
            headers_of(fields),
            "",
            scope["http_version"],
            max_content_length=config["MAX_CONTENT_LENGTH"],
            body_timeout=config["BODY_TIMEOUT"],
            send_push_promise=partial(self._send_push_promise, send),
            scope=scope,
        )
        return request

    async def read_until_disconnect(self, request: Request, receive: ASGIReceiveCallable) -> None:
        """Feed the request body to ``request`` and return on ``http.disconnect``.

        Quart's ``ASGIHTTPConnection.handle_messages``, called past Quart-Trio's override of
        it, which also cancels the request's nursery: the cancel that, after a complete
        response, kills Hypercorn's keep-alive timer (connection.py).
        """
        await ASGIHTTPConnection.handle_messages(self, request, receive)


class _Done:
    """An event that is set and stays set: both events of every complete empty body."""

    __slots__ = ()

    def is_set(self) -> bool:
        return True

    async def wait(self) -> None:
        await trio.lowlevel.checkpoint()

    def set(self) -> None:
        pass

    def clear(self) -> None:
        pass


class _CompleteEmptyBody(TrioBody):
    """The body of a request without one: empty and complete when made.

    Quart-Trio's body makes two ``trio.Event`` (each in a wrapper) and sets both when the
    empty body is complete: eight Python calls a GET. This one shares one set event, and
    otherwise behaves as a completed empty ``TrioBody`` (awaiting it gives ``b""``).
    """

    _complete = _has_data = _Done()  # type: ignore[assignment]

    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        self._data = bytearray()
        self._max_content_length = max_content_length
        self._must_raise = None

    def set_complete(self) -> None:
        pass


class _Request(TrioRequest):
    """Quart-Trio's request, whose ``close`` skips closing no uploaded files.

    Quart's ``Request.close`` closes the files a form upload parsed, through Werkzeug's
    ``iter_multi_items`` of an empty tuple (its ABC checks: about 7 calls) when there were none.
    """

    async def close(self) -> None:
        if self._files:
            await super().close()


class QuartFastPath(RememberedRoutes, QuietDispatch):
    """Quart-Trio's request handling, minus the steps that have nothing registered (issue 13).

    The dispatch is :class:`~trio_range.server.quiet_dispatch.QuietDispatch`'s, the URL
    adapters are remembered (server/remembered_routes.py); what needs Quart's internals is
    here: Quart's request and app contexts pushed as two context variable sets (what its
    ``request``, ``g`` and ``current_app`` proxies read), and ``after_this_request``'s list
    read before the response hooks are skipped. Each takes the short way only when nothing
    registered needs the long one, and otherwise calls Quart's method; ``HOOKED`` names each
    method repeated, so an upgrade that reshapes one fails tests/server/test_hooks.py.
    """

    request_class = _Request

    async def handle_request(self, request: Request) -> ResponseTypes:
        # Quart-Trio's, with Quart's two contexts pushed and popped here: each push is a
        # context variable set, each pop its reset, without the five async methods, two
        # signals without receivers and the exit stack around them (about 40 Python calls).
        if (
            appcontext_pushed.receivers
            or appcontext_popped.receivers
            or self.config["PRESERVE_CONTEXT_ON_EXCEPTION"]
            or request.scope.get("_quart._preserve_context", False)
        ):
            return await super().handle_request(request)
        context = self.request_context(request)
        request_token = _cv_request.set(context)
        app_context: AppContext | None = _cv_app.get(None)
        if app_context is not None and app_context.app is self:
            app_context = None  # the app's context is already there: Quart reuses it
        else:
            app_context = self.app_context()
            app_context._cv_tokens.append(_cv_app.set(app_context))
        context._cv_tokens.append((request_token, app_context))
        escaping: BaseException | None = None
        try:
            session_interface = self.session_interface
            open_session = self.ensure_async(session_interface.open_session)
            context.session = await open_session(self, request)
            if context.session is None:
                context.session = await session_interface.make_null_session(self)
            if context.url_adapter is not None:
                try:
                    request.url_rule, request.view_args = context.url_adapter.match(  # type: ignore[assignment]
                        return_rule=True
                    )
                except HTTPException as exception:
                    request.routing_exception = exception
            try:
                return await self.full_dispatch_request(context)
            except trio.Cancelled:
                raise  # the serving code handles it
            except BaseExceptionGroup as group:
                failures, _ = group.split(trio.Cancelled)
                if failures is not None:
                    raise failures from group
                return await self.handle_exception(group)  # type: ignore[arg-type]
            except Exception as error:
                return await self.handle_exception(error)
        except BaseException as error:
            escaping = error
            raise
        finally:
            await self._pop_contexts(context, app_context, escaping)

    async def _pop_contexts(
        self, context: RequestContext, app_context: AppContext | None, exc: BaseException | None
    ) -> None:
        # RequestContext.pop and AppContext.pop, for one push of each.
        try:
            await self.do_teardown_request(exc, context)
            await context.request_websocket.close()  # type: ignore[attr-defined]
        finally:
            _cv_request.reset(context._cv_tokens.pop()[0])
            if app_context is not None:
                try:
                    await self.do_teardown_appcontext(exc)
                finally:
                    _cv_app.reset(app_context._cv_tokens.pop())

    async def process_response(
        self, response: ResponseTypes, request_context: RequestContext | None = None
    ) -> ResponseTypes:
        if (
            request_context is None
            or request_context._after_request_functions
            or not only_app_level(self.after_request_funcs)
        ):
            return await super().process_response(response, request_context)
        for function in reversed(self.after_request_funcs.get(None, ())):
            response = await self.ensure_async(function)(response)
        session = request_context.session
        if not self.session_interface.is_null_session(session):
            await self.ensure_async(self.session_interface.save_session)(self, session, response)
        return response
