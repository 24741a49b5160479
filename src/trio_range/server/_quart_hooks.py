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

import functools
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from inspect import CO_COROUTINE
from types import FunctionType, MethodType
from typing import Any

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable
from quart import Quart
from quart import request as request_proxy
from quart.asgi import ASGIHTTPConnection
from quart.ctx import RequestContext
from quart.routing import QuartMap
from quart.signals import (
    appcontext_tearing_down,
    request_finished,
    request_started,
    request_tearing_down,
)
from quart.typing import ResponseReturnValue, ResponseTypes
from quart.wrappers import BaseRequestWebsocket, Request
from quart.wrappers.request import Body
from quart_trio import QuartTrio
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers import TrioRequest
from werkzeug.routing import MapAdapter

from trio_range.server._werkzeug_hooks import headers_of
from trio_range.server.hooks_check import Hook

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
    # Instance attribute: RequestContext._after_request_functions (after_this_request's list),
    # checked by tests/server/test_hooks.py.
    # Werkzeug's LocalProxy._get_current_object (documented, set per proxy): current_request.
)


def current_request() -> Request:
    """The request being handled, itself rather than Quart's ``request`` proxy of it.

    Each attribute read through the proxy is a context lookup of its own (about 4 Python
    calls); code that reads several attributes per request reads them from this object.
    """
    request: Request = request_proxy._get_current_object()  # type: ignore[attr-defined]
    return request


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


class QuartFastPath(QuartTrio):
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

    def create_url_adapter(self, request: BaseRequestWebsocket | None) -> MapAdapter | None:
        # QuartMap.bind_to_request without a SERVER_NAME, subdomain or host matching: the host
        # is compared with itself, so the subdomain is always "" (two host reads, two splits).
        if (
            request is None
            or self.subdomain_matching
            or self.url_map.host_matching
            or self.url_map.default_subdomain
            or self.config["SERVER_NAME"] is not None
        ):
            return super().create_url_adapter(request)
        scheme = request.scheme
        host = request.host.lower()
        # Quart's _normalise_host: no default port in the name matched against routes.
        if scheme in _PORT_80_SCHEMES and host.endswith(":80"):
            host = host[:-3]
        elif scheme in _PORT_443_SCHEMES and host.endswith(":443"):
            host = host[:-4]
        # The adapter of the same scheme, host, root, method, path and query is the same, and
        # so is its match: both are remembered (routes cannot change once requests are served:
        # Quart refuses setup methods after the first one). About 40 Python calls a request.
        key = (scheme, host, request.root_path, request.method, request.path, request.query_string)
        adapter = self._adapters.get(key)
        if adapter is None:
            bound = self.url_map.bind(
                host,
                request.root_path,
                "",
                scheme,
                request.method,
                request.path,
                request.query_string.decode(),
            )
            adapter = _RememberingAdapter(
                bound.map,
                bound.server_name,
                bound.script_name,
                bound.subdomain,
                bound.url_scheme,
                bound.path_info,
                bound.default_method,
                bound.query_args,
            )
            if len(self._adapters) >= MAX_REMEMBERED_ADAPTERS:
                self._adapters.clear()
            self._adapters[key] = adapter
        return adapter

    @functools.cached_property
    def _adapters(self) -> dict[tuple[object, ...], MapAdapter]:
        return {}

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
        request = request_context.request
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


# Distinct requests (scheme, host, path, query) whose URL adapter is remembered; past it the
# memory starts over (a crawl of many distinct paths binds each once, as without it).
MAX_REMEMBERED_ADAPTERS = 1024


class _RememberingAdapter(MapAdapter):
    """A ``MapAdapter`` that matches its own request once: later calls return that match.

    Only the call Quart makes (``match(return_rule=True)``, the bound path and method) is
    remembered, and only a success: a redirect, 404 or 405 is raised again each time, as
    Werkzeug raises it. Each caller gets its own copy of the view arguments.
    """

    _found: tuple[Any, Mapping[str, Any]] | None = None

    def match(
        self,
        path_info: str | None = None,
        method: str | None = None,
        return_rule: bool = False,
        query_args: Mapping[str, Any] | str | None = None,
        websocket: bool | None = None,
    ) -> tuple[Any, Mapping[str, Any]]:
        if (
            not return_rule
            or path_info is not None
            or method is not None
            or query_args is not None
            or websocket is not None
        ):
            matched: tuple[Any, Mapping[str, Any]] = super().match(  # type: ignore[call-overload]
                path_info, method, return_rule, query_args, websocket
            )
            return matched
        found = self._found
        if found is None:
            found = self._found = super().match(return_rule=True)
        return found[0], dict(found[1])


_PORT_80_SCHEMES = frozenset({"http", "ws"})
_PORT_443_SCHEMES = frozenset({"https", "wss"})


def _only_app_level(*registries: dict[Any, Any]) -> bool:
    """Whether the hook registries hold nothing for a blueprint (only the app's None key):
    then the blueprints of the request, which Quart computes per request, add no hook."""
    for registry in registries:
        for name in registry:
            if name is not None:
                return False
    return True
