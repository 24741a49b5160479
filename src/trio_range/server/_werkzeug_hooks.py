"""Every use of Werkzeug's private internals, in one guarded place.

Werkzeug's ``Headers.add`` checks and appends one field at a time (four Python calls a field,
about 35 of a small range response, issue 13). :func:`headers_of` checks every field in one
loop against the rule ``add`` applies (``_str_header_value``: a str value without CR or LF)
and fills the list ``Headers`` keeps its fields in. A field that breaks the rule, or is not a
pair of str, sends every field through ``Headers.add``, which raises or converts exactly as
it always does.

``HOOKED`` lists what is used; tests/server/test_werkzeug_hooks.py checks it.
"""

from __future__ import annotations

from collections.abc import Iterable

from werkzeug.datastructures import Headers

from trio_range.server.hooks_check import Hook

HOOKED: tuple[Hook, ...] = (
    # The per-field path this replaces (and falls back to); it must still mean "append".
    Hook(Headers, "add", ("self", "key", "value", "kwargs")),
    # Instance attribute: Headers._list, the (name, value) pairs in order, checked by
    # tests/server/test_werkzeug_hooks.py.
)


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
