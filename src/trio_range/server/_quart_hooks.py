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

from collections.abc import Awaitable, Callable
from functools import partial
from inspect import CO_COROUTINE
from types import FunctionType, MethodType
from typing import Any

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
    appcontext_tearing_down,
    request_finished,
    request_started,
    request_tearing_down,
)
from quart.typing import ResponseReturnValue, ResponseTypes
from quart.wrappers import Request
from quart.wrappers.request import Body
from quart_trio import QuartTrio
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers import TrioRequest
from werkzeug.exceptions import HTTPException

from trio_range.server._werkzeug_hooks import headers_of
from trio_range.server.hooks_check import Hook
from trio_range.server.remembered_routes import MAX_REMEMBERED_ADAPTERS as MAX_REMEMBERED_ADAPTERS
from trio_range.server.remembered_routes import RememberedRoutes

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
        if not any([name == "Content-Length" for name, _ in fields]):
            # Werkzeug's value without one, whatever Transfer-Encoding says: set through the
            # cached_property's public setter instead of two Headers lookups in __init__.
            request.content_length = None
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


class _Request(TrioRequest):
    """Quart-Trio's request, whose ``close`` skips closing no uploaded files.

    Quart's ``Request.close`` closes the files a form upload parsed, through Werkzeug's
    ``iter_multi_items`` of an empty tuple (its ABC checks: about 7 calls) when there were none.
    """

    async def close(self) -> None:
        if self._files:
            await super().close()


class QuartFastPath(RememberedRoutes, QuartTrio):
    """Quart's request dispatch, minus the steps that have nothing registered (issue 13).

    Quart walks every blueprint's hook lists, sends five blinker signals and re-inspects each
    coroutine function on every request, whether or not anything is registered (about 70
    Python calls of a small range request's 1650). Each override below takes the short way
    only when what it skips is empty (no receivers, no hooks beyond the app's own, a plain
    ``async def``), and otherwise calls Quart's method: an app that registers a blueprint hook
    or a signal receiver gets Quart's behaviour exactly. The bodies repeat Quart 0.22's;
    ``HOOKED`` names each so an upgrade that reshapes one fails tests/server/test_hooks.py.
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
                    request.url_rule, request.view_args = context.url_adapter.match(  # type: ignore[misc]
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
                    raise failures from None
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

    async def dispatch_request(
        self, request_context: RequestContext | None = None
    ) -> ResponseReturnValue:
        if request_context is None:
            return await super().dispatch_request(request_context)
        # Quart's, reading the context's request as an attribute, not a property and a cast.
        request = request_context.request_websocket
        if request.routing_exception is not None:
            self.raise_routing_exception(request)
        rule = request.url_rule
        if request.method == "OPTIONS" and rule.provide_automatic_options:  # type: ignore[union-attr]
            return await self.make_default_options_response()
        handler = self.view_functions[rule.endpoint]  # type: ignore[union-attr]
        return await self.ensure_async(handler)(**request.view_args)  # type: ignore[no-any-return,arg-type]

    def ensure_async(self, func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        # What inspect.iscoroutinefunction decides for a plain function or bound method, in
        # one attribute read instead of ten calls; anything else asks Quart.
        code_owner = func.__func__ if type(func) is MethodType else func
        if type(code_owner) is FunctionType and code_owner.__code__.co_flags & CO_COROUTINE:
            return func
        return super().ensure_async(func)

    async def full_dispatch_request(
        self, request_context: RequestContext | None = None
    ) -> ResponseTypes:
        if request_started.receivers or request_finished.receivers:
            return await super().full_dispatch_request(request_context)
        result: ResponseReturnValue | Exception | None
        try:
            result = await self.preprocess_request(request_context)
            if result is None:
                result = await self.dispatch_request(request_context)
        except (Exception, BaseExceptionGroup) as error:
            result = await self.handle_user_exception(error)
        return await self.finalize_request(result, request_context)

    async def finalize_request(
        self,
        result: Any,
        request_context: RequestContext | None = None,
        from_error_handler: bool = False,
    ) -> ResponseTypes:
        if request_finished.receivers:
            return await super().finalize_request(result, request_context, from_error_handler)
        response = await self.make_response(result)
        try:
            response = await self.process_response(response, request_context)
        except Exception:
            if not from_error_handler:
                raise
            self.logger.exception("Request finalizing errored")
        return response

    async def preprocess_request(
        self, request_context: RequestContext | None = None
    ) -> ResponseReturnValue | None:
        if request_context is None or not _only_app_level(
            self.url_value_preprocessors, self.before_request_funcs
        ):
            return await super().preprocess_request(request_context)
        request = request_context.request_websocket
        for processor in self.url_value_preprocessors.get(None, ()):
            processor(request.endpoint, request.view_args)
        for function in self.before_request_funcs.get(None, ()):
            result = await self.ensure_async(function)()
            if result is not None:
                return result  # type: ignore[no-any-return]
        return None

    async def process_response(
        self, response: ResponseTypes, request_context: RequestContext | None = None
    ) -> ResponseTypes:
        if (
            request_context is None
            or request_context._after_request_functions
            or not _only_app_level(self.after_request_funcs)
        ):
            return await super().process_response(response, request_context)
        for function in reversed(self.after_request_funcs.get(None, ())):
            response = await self.ensure_async(function)(response)
        session = request_context.session
        if not self.session_interface.is_null_session(session):
            await self.ensure_async(self.session_interface.save_session)(self, session, response)
        return response

    async def do_teardown_request(
        self, exc: BaseException | None, request_context: RequestContext | None = None
    ) -> None:
        if (
            request_context is None
            or request_tearing_down.receivers
            or not _only_app_level(self.teardown_request_funcs)
        ):
            return await super().do_teardown_request(exc, request_context)
        for function in reversed(self.teardown_request_funcs.get(None, ())):
            await self.ensure_async(function)(exc)

    async def do_teardown_appcontext(self, exc: BaseException | None) -> None:
        if appcontext_tearing_down.receivers:
            return await super().do_teardown_appcontext(exc)
        for function in self.teardown_appcontext_funcs:
            await self.ensure_async(function)(exc)


def _only_app_level(*registries: dict[Any, Any]) -> bool:
    """Whether the hook registries hold nothing for a blueprint (only the app's None key):
    then the blueprints of the request, which Quart computes per request, add no hook."""
    for registry in registries:
        for name in registry:
            if name is not None:
                return False
    return True
