"""The pages and scripts shipped in the package (``static/``): no CDN, they work offline."""

from __future__ import annotations

from importlib import resources


def static_text(name: str) -> str:
    """The text of ``static/<name>`` inside the installed package."""
    return resources.files("trio_range").joinpath("static", name).read_text("utf-8")
