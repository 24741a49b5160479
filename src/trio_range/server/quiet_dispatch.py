"""Quart's request dispatch, minus the steps that have nothing registered (issue 13).

Quart walks every blueprint's hook lists, sends blinker signals and re-inspects each coroutine
function on every request, whether or not anything is registered (about 70 Python calls of a
small range request's 1650). Each override of :class:`QuietDispatch` takes the short way only
when what it skips is empty (no receivers, no hooks beyond the app's own, a plain ``async
def``), and otherwise calls Quart's method: an app that registers a blueprint hook or a signal
receiver gets Quart's behaviour exactly. Only public Quart API is used here; the bodies repeat
Quart 0.22's, and ``_quart_hooks.HOOKED`` names each repeated method, so an upgrade that
reshapes one fails tests/server/test_hooks.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from inspect import CO_COROUTINE
from types import FunctionType, MethodType
from typing import Any

from quart.ctx import RequestContext
from quart.signals import (
    appcontext_tearing_down,
    request_finished,
    request_started,
    request_tearing_down,
)
from quart.typing import ResponseReturnValue, ResponseTypes
from quart.wrappers import Response
from quart_trio import QuartTrio


class QuietDispatch(QuartTrio):
    """Quart-Trio's dispatch of a request, without the steps nothing registered needs."""

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
        # A Quart response is returned as it is by make_response (its four type checks).
        response = result if isinstance(result, Response) else await self.make_response(result)
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
        if request_context is None or not only_app_level(
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

    async def do_teardown_request(
        self, exc: BaseException | None, request_context: RequestContext | None = None
    ) -> None:
        if (
            request_context is None
            or request_tearing_down.receivers
            or not only_app_level(self.teardown_request_funcs)
        ):
            return await super().do_teardown_request(exc, request_context)
        for function in reversed(self.teardown_request_funcs.get(None, ())):
            await self.ensure_async(function)(exc)

    async def do_teardown_appcontext(self, exc: BaseException | None) -> None:
        if appcontext_tearing_down.receivers:
            return await super().do_teardown_appcontext(exc)
        for function in self.teardown_appcontext_funcs:
            await self.ensure_async(function)(exc)


def only_app_level(*registries: dict[Any, Any]) -> bool:
    """Whether the hook registries hold nothing for a blueprint (only the app's None key):
    then the blueprints of the request, which Quart computes per request, add no hook."""
    for registry in registries:
        for name in registry:
            if name is not None:
                return False
    return True
