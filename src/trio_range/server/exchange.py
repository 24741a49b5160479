"""One request and its response as the connection saw them: the unit of statistics and logs.

The connection (connection.py) fills an :class:`Exchange` as the response goes out and hands
it to the app's :class:`ExchangeObserver` twice: when the head is sent and when the exchange is
over. Views reach the exchange of their request with :func:`current_exchange`, to register
what they open (``exchange.resources``) and to say how they treated the Range.
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, ParamSpec, Protocol, TypeVar

T = TypeVar("T")
P = ParamSpec("P")

# Statuses whose responses carry no body whatever their Content-Length says (RFC 9110 §6.4.1).
_BODYLESS_STATUSES = frozenset({204, 304})


@dataclasses.dataclass(slots=True)
class Exchange:
    """One request and its response, as the connection saw them (for stats and the access log)."""

    method: str
    path: str
    query: str
    range_header: str | None
    resources: AsyncExitStack
    started_at: float
    status: int = 0
    declared_length: int | None = None
    bytes_sent: int = 0
    first_byte_at: float | None = None
    finished_at: float | None = None
    # "completed": every declared byte was sent; "aborted": the client went away first;
    # "failed": the server aborted the transfer (StreamAborted or an unexpected error).
    outcome: str = "pending"
    # Set by the view, for statistics: how the Range was treated ("none", "single", "multi",
    # "unsatisfiable" or "ignored") and whether an If-Range failed.
    range_outcome: str = "none"
    if_range_failed: bool = False
    detail: str = ""
    # Set by server/pacing.py (issue 16): the body was paced, and how long it slept for tokens.
    paced: bool = False
    pacing_wait_s: float = 0.0
    # Set by the proxy's slice cache (issue 15): "hit", "miss", "revalidated" or "bypass".
    cache: str = ""
    # The request's fields by name, the first of each (:func:`first_fields`): what views read
    # instead of Werkzeug's Headers, whose lookup of an absent name raises and catches a
    # KeyError (six such misses were 70 of a small range request's 1650 Python calls).
    fields: dict[bytes, bytes] = dataclasses.field(default_factory=dict)

    def field(self, name: bytes) -> str | None:
        """The request's first field ``name`` (lowercase bytes), decoded as Quart decodes it
        (latin-1), or None when absent: what ``request.headers.get(name)`` returns."""
        value = self.fields.get(name)
        return None if value is None else value.decode("latin-1")

    @property
    def has_body(self) -> bool:
        return (
            self.method != "HEAD"
            and self.status not in _BODYLESS_STATUSES
            and self.declared_length != 0
        )


class Resources(AsyncExitStack):
    """An exchange's resources, knowing whether closing them awaits anything.

    The connection closes them under a shielded scope with a deadline, so that a cancel
    cannot interrupt an async close and a stuck one cannot hold the connection. A stack of
    synchronous closes only (the origin's open file) reaches no checkpoint in ``aclose``,
    and the scope, about 60 Python calls per request (issue 13), guards nothing there.
    """

    awaits = False

    async def enter_async_context(self, cm: AbstractAsyncContextManager[T]) -> T:
        self.awaits = True
        return await super().enter_async_context(cm)

    def push_async_exit(self, exit: Any) -> Any:
        self.awaits = True
        return super().push_async_exit(exit)

    def push_async_callback(
        self, callback: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Callable[P, Awaitable[T]]:
        self.awaits = True
        return super().push_async_callback(callback, *args, **kwargs)


def first_fields(headers: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """The first value of each field of an ASGI scope's ``headers``, by name.

    ASGI makes every name lowercase, so a lookup is one dict access. The first value is the
    one Werkzeug's ``Headers.get`` returns for a repeated field.
    """
    fields: dict[bytes, bytes] = {}
    for name, value in headers:
        if name not in fields:
            fields[name] = value
    return fields


class ExchangeObserver(Protocol):
    """Who is told about each exchange: the statistics store and the access log."""

    def response_started(self, exchange: Exchange) -> None: ...

    def exchange_finished(self, exchange: Exchange) -> None: ...


class NullObserver:
    """The observer of an app that has none installed: told everything, keeps nothing."""

    def response_started(self, exchange: Exchange) -> None:
        pass

    def exchange_finished(self, exchange: Exchange) -> None:
        pass


_current: contextvars.ContextVar[Exchange] = contextvars.ContextVar("trio_range_exchange")


def current_exchange() -> Exchange:
    """The exchange of the request being handled (valid in views, not in body generators)."""
    return _current.get()


def enter_exchange(exchange: Exchange) -> contextvars.Token[Exchange]:
    """Make ``exchange`` the current one for this task; reset with :func:`leave_exchange`."""
    return _current.set(exchange)


def leave_exchange(token: contextvars.Token[Exchange]) -> None:
    _current.reset(token)
