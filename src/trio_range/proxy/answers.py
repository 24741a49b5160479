"""The type of the proxy's answers whose fields are complete: Via and Date already among them.

The app's after-request hook (proxy/app.py) adds Via and Date to the proxy's own answers
(errors, /stats, /healthz): RFC 9110 asks for Via on every answer and a Date from an origin
server or a cache. A relayed answer (relay.py) and a cache hit (cache/serve.py) carry both
already, and a Werkzeug lookup costs ~5 Python calls a name (a missing one raises and catches a
KeyError). Their type tells the hook to leave them alone: one ``type() is`` test.

A relayed answer is made by :meth:`CompleteAnswer.relayed`, not the constructor: Quart's and
Werkzeug's constructors look for a Content-Type, clean the status, and test the body against
two abstract base classes, about 20 Python calls per relayed request (issue 14) for the same
few attributes each time. ``relayed`` copies those attributes from an answer the constructor
made once per status, then sets the three that differ (fields, status, body) by their public
names. tests/proxy/test_answers.py checks that both ways make equal answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from quart.wrappers.response import IterableBody
from werkzeug.datastructures import Headers

from trio_range.server.common import FieldsResponse

_new = object.__new__


class CompleteAnswer(FieldsResponse):
    """An answer whose fields are exactly the proxy's, Via and Date included.

    No Content-Length of Quart's either: ``Response`` would add one to a body of bytes (the
    fields carry the right one, or none for a chunked relay).
    """

    automatically_set_content_length = False

    @classmethod
    def relayed(
        cls, status: int, headers: Headers, body: AsyncIterator[Any] | None
    ) -> CompleteAnswer:
        """``cls(body, status=status)`` with ``headers`` as its fields, made cheaply.

        ``body`` is an async iterator (its own ``__aiter__``: a generator), or None for an
        answer without one (HEAD): then Quart's empty body of bytes, as the constructor's.
        """
        state = _STATE.get((cls, status))
        if state is None:
            state = _state_of(cls, status)
        answer: CompleteAnswer = _new(cls)
        answer.__dict__.update(state)
        answer.headers = headers
        if body is None:
            answer.response = cls.data_body_class(b"")
        else:
            # IterableBody(body) would test body against Iterable (an ABC) and call
            # body.__aiter__(), which for an async iterator is body itself.
            iterable: IterableBody = _new(cls.iterable_body_class)
            iterable.iter = body
            answer.response = iterable
        return answer


# What the constructor sets on an answer of each status, but its fields and body.
_STATE: dict[tuple[type[CompleteAnswer], int], dict[str, Any]] = {}


def _state_of(cls: type[CompleteAnswer], status: int) -> dict[str, Any]:
    state = dict(vars(cls(cls.data_body_class(b""), status=status)))
    del state["headers"], state["response"]
    _STATE[(cls, status)] = state
    return state
