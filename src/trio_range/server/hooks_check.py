"""The record each hooks module keeps of what it uses, and the check that it still exists.

A hooks module (``_hypercorn_hooks``, ``_quart_hooks``) touches private
or undocumented parts of a library. It lists each in ``HOOKED`` as a :class:`Hook`;
tests/server/test_hooks.py runs :func:`problems` over every list, so a library upgrade that
renames an attribute or changes a signature fails one test with a message naming the hook.
"""

from __future__ import annotations

import dataclasses
import inspect


@dataclasses.dataclass(frozen=True, slots=True)
class Hook:
    """``owner.attribute`` is used with these parameter names (``attribute`` None: ``owner``
    itself is the function or constant; ``parameters`` None: not a callable)."""

    owner: object
    attribute: str | None
    parameters: tuple[str, ...] | None

    @property
    def name(self) -> str:
        owner = getattr(self.owner, "__qualname__", type(self.owner).__name__)
        module = getattr(self.owner, "__module__", "")
        return f"{module}.{owner}" + (f".{self.attribute}" if self.attribute else "")


def problems(hooks: tuple[Hook, ...]) -> list[str]:
    """What no longer matches, one line per hook; empty when every hook still fits."""
    found: list[str] = []
    for hook in hooks:
        target = hook.owner
        if hook.attribute is not None:
            if not hasattr(hook.owner, hook.attribute):
                found.append(f"{hook.name}: missing")
                continue
            target = getattr(hook.owner, hook.attribute)
        if hook.parameters is None:
            continue
        try:
            parameters = tuple(inspect.signature(target).parameters)  # type: ignore[arg-type]
        except (TypeError, ValueError) as error:
            found.append(f"{hook.name}: not a callable ({error})")
            continue
        if parameters != hook.parameters:
            found.append(
                f"{hook.name}: parameters {parameters}, the hook expects {hook.parameters}"
            )
    return found
