"""A value made at most once per wall-clock second (the Date field and what goes with it).

Hypercorn formats the Date (and builds its list of fields) for every response; the value
changes once a second, so it is made again only when the second has changed (issue 13).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class EachSecond(Generic[T]):
    """``make()``, called again only when ``int(time.time())`` has moved since the last call."""

    __slots__ = ("_make", "_second", "_value")

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._second = -1
        self._value: T | None = None

    def __call__(self) -> T:
        second = int(time.time())
        if second != self._second or self._value is None:
            self._value = self._make()
            self._second = second
        return self._value
