"""A value made at most once per wall-clock second (the Date field and what goes with it).

Hypercorn formats the Date (and builds its list of fields) for every response, and a cache hit
needs one too; the value changes once a second, so it is made again only when the second has
changed (issue 13).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class EachSecond(Generic[T]):
    """``make(second)``, called again only when the second has moved since the last call.

    The second is ``int(now)``: ``now`` as given (a caller with a clock of its own, such as the
    cache, whose Age is counted on it), else ``time.time()``.
    """

    __slots__ = ("_make", "_second", "_value")

    def __init__(self, make: Callable[[int], T]) -> None:
        self._make = make
        self._second = -1
        self._value: T | None = None

    def __call__(self, now: float | None = None) -> T:
        second = int(time.time() if now is None else now)
        if second != self._second or self._value is None:
            self._value = self._make(second)
            self._second = second
        return self._value
