"""QuartConnection.build_request (server/_quart_hooks.py) builds the request Quart builds."""

from __future__ import annotations

from typing import Any

import pytest

from trio_range.server._quart_hooks import QuartConnection
from trio_range.server.app import RangeApp


def _scope(**overrides: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/media/a b.bin",
        "raw_path": b"/media/a%20b.bin",
        "query_string": b"range=0-1",
        "root_path": "",
        "headers": [
            (b"host", b"example.test:8080"),
            (b"range", b"bytes=0-1"),
            (b"x-latin", "caf\xe9".encode("latin-1")),
            (b"x-twice", b"1"),
            (b"x-twice", b"2"),
        ],
        "client": ("192.0.2.7", 51000),
        "server": ("127.0.0.1", 8080),
        "extensions": {},
    }
    scope.update(overrides)
    return scope


def _view(request: Any) -> tuple[Any, ...]:
    return (
        list(request.headers.items()),
        request.method,
        request.scheme,
        request.path,
        request.query_string,
        request.root_path,
        request.http_version,
        request.host,
        request.max_content_length,
        request.body_timeout,
        request.scope,
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"client": None},
        {"headers": []},
        {"http_version": "1.0", "headers": []},  # Quart adds a Host: its own method
        {"root_path": "/app", "path": "/app/media/x"},  # Quart's own method
        {"headers": [(b"x-bad", b"a\nb")]},  # as Headers.add, refused
    ],
)
async def test_the_request_equals_quarts(overrides: dict[str, Any]) -> None:
    app = RangeApp(__name__)
    scope = _scope(**overrides)

    async def send(message: object) -> None: ...

    connection = QuartConnection(app, scope)  # type: ignore[arg-type]
    try:
        expected: object = _view(connection._create_request_from_scope(send))
    except ValueError as error:
        expected = ("refused", str(error))
    try:
        built: object = _view(connection.build_request(send))
    except ValueError as error:
        built = ("refused", str(error))
    assert built == expected
