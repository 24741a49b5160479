"""The Werkzeug hooks (server/_werkzeug_hooks.py): still fitting, and the same Headers as add."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.datastructures import Headers

from trio_range.server import _werkzeug_hooks
from trio_range.server.hooks_check import problems

TEXT = st.text(alphabet="aZ -:\r\n\x00é", max_size=5)


def test_every_hooked_attribute_still_has_the_shape_the_hook_expects() -> None:
    assert _werkzeug_hooks.HOOKED
    assert problems(_werkzeug_hooks.HOOKED) == []
    # Instance attribute the hook fills: the fields in order, as add appends them.
    headers = Headers()
    headers.add("ETag", '"a"')
    assert headers._list == [("ETag", '"a"')]


def _by_add(fields: list[tuple[object, object]]) -> object:
    headers = Headers()
    try:
        for name, value in fields:
            headers.add(name, value)  # type: ignore[arg-type]
    except ValueError as error:
        return ("refused", str(error))
    return list(headers.items())


def _by_hook(fields: list[tuple[object, object]]) -> object:
    try:
        headers = _werkzeug_hooks.headers_of(fields)  # type: ignore[arg-type]
    except ValueError as error:
        return ("refused", str(error))
    return list(headers.items())


@given(st.lists(st.tuples(TEXT, TEXT | st.integers(0, 99))))
def test_fields_are_kept_or_refused_as_headers_add_keeps_or_refuses_them(
    fields: list[tuple[object, object]],
) -> None:
    assert _by_hook(fields) == _by_add(fields)


def test_a_value_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="newline"):
        _werkzeug_hooks.headers_of([("ETag", '"a"'), ("X-A", "1\r\nSet-Cookie: x=1")])
