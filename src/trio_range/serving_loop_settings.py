"""The settings only trio-range's own serving loop carries out, and what plain Hypercorn says.

``serve_app`` (server/serving.py) applies a few settings itself (the listening socket, the
connection limits, the shutdown grace); an app served by plain ``hypercorn -k trio`` ignores
them, and Hypercorn's own flags do the same there. A field marks itself with ``hypercorn=``
metadata (config.py); this module names them for the CLI, the README and the start-up line.
"""

from __future__ import annotations

import dataclasses

from trio_range.config import ServerConfig


def serving_loop_settings(cls: type[ServerConfig]) -> dict[str, str]:
    """The settings only ``serve_app`` carries out: name -> Hypercorn flag ("" if none).

    Plain ``hypercorn -k trio`` ignores them; its own flag does the same there.
    """
    return {
        f.name: f.metadata["hypercorn"]
        for f in dataclasses.fields(cls)
        if "hypercorn" in f.metadata
    }


def plain_hypercorn_note(config: ServerConfig) -> str:
    """The start-up line of an app served by plain Hypercorn, not by ``serve_app``.

    It names the settings that do nothing there and what to use instead, and those of them
    that ``config`` sets to no avail.
    """
    settings = serving_loop_settings(type(config))
    by_flag: dict[str, list[str]] = {}
    for name, flag in settings.items():
        by_flag.setdefault(flag, []).append(name)
    instead = [f"{'/'.join(names)} -> {flag}" for flag, names in by_flag.items() if flag]
    # Hypercorn leaves our logger unconfigured: the line names its sender itself.
    sender = " ".join(filter(None, ["trio_range", config.ROLE.lower()]))
    note = (
        f"{sender}: served by plain Hypercorn, not trio-range's serving loop: these settings "
        f"have no effect here, Hypercorn's flags apply instead: {', '.join(instead)}; "
        f"no Hypercorn equivalent: {', '.join(by_flag.get('', []))}"
    )
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    ignored = [
        f"{name}={getattr(config, name)!r}"
        for name in settings
        if getattr(config, name) != defaults[name]
    ]
    if ignored:
        note += f"; set but ignored: {', '.join(ignored)}"
    return note
