"""Every use of Werkzeug's private internals, in one guarded place.

Werkzeug's ``Headers.add`` checks and appends one field at a time (four Python calls a field,
about 35 of a small range response, issue 13). :func:`headers_of` checks every field in one
loop against the rule ``add`` applies (``_str_header_value``: a str value without CR or LF)
and fills the list ``Headers`` keeps its fields in. A field that breaks the rule, or is not a
pair of str, sends every field through ``Headers.add``, which raises or converts exactly as
it always does.

:func:`prepared_response` is the part of Werkzeug's ``Response.__init__`` that a response of
given fields and an int status needs (its headers and status), without the Content-Type
lookup in those fields and the status parsing: about 7 Python calls a response.

``HOOKED`` lists what is used; tests/server/test_werkzeug_hooks.py checks it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from werkzeug.datastructures import Headers
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.sansio.response import Response

from trio_range.server.hooks_check import Hook

HOOKED: tuple[Hook, ...] = (
    # The per-field path this replaces (and falls back to); it must still mean "append".
    Hook(Headers, "add", ("self", "key", "value", "kwargs")),
    # Instance attribute: Headers._list, the (name, value) pairs in order, checked by
    # tests/server/test_werkzeug_hooks.py.
    # What prepared_response repeats; the instance attributes Response._status and
    # Response._status_code are checked by tests/server/test_bare_response.py.
    Hook(Response, "__init__", ("self", "status", "headers", "mimetype", "content_type")),
    Hook(Response, "_clean_status", ("self", "value")),
)

R = TypeVar("R", bound=Response)

# Werkzeug's status line of each code it names ("206 PARTIAL CONTENT"), as _clean_status makes it.
_STATUS_LINES = {code: f"{code} {reason.upper()}" for code, reason in HTTP_STATUS_CODES.items()}


def headers_of(fields: Iterable[tuple[str, str]]) -> Headers:
    """A ``Headers`` holding ``fields`` in order, as ``Headers.add`` of each would make it."""
    pairs = list(fields)
    headers = Headers()
    for name, value in pairs:
        if type(name) is not str or type(value) is not str or "\r" in value or "\n" in value:
            for each_name, each_value in pairs:
                headers.add(each_name, each_value)
            return headers
    headers._list = pairs
    return headers


def prepared_response(cls: type[R], status: int, headers: Headers) -> R | None:
    """A ``cls`` as ``Response.__init__(status, headers)`` leaves it, or None where that would
    add a Content-Type (``cls`` has a default mimetype) or parse the status (not a known int):
    then the caller builds it the usual way. The subclass's own fields are the caller's."""
    line = _STATUS_LINES.get(status)
    if line is None or cls.default_mimetype is not None or type(status) is not int:
        return None
    response = cls.__new__(cls)
    response.headers = headers
    response._status = line
    response._status_code = status
    return response
