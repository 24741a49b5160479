"""build_request's preset Content-Length and the request's close (server/_quart_hooks.py)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from werkzeug.datastructures import FileStorage, MultiDict

from trio_range.server._quart_hooks import QuartConnection
from trio_range.server.app import RangeApp


def _scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/x",
        "raw_path": b"/x",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"h"), *headers],
        "client": ("192.0.2.7", 51000),
        "server": ("127.0.0.1", 8080),
        "extensions": {},
    }


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"content-length", b"5")],
        [(b"Content-Length", b"7")],
        [(b"content-length", b"-1")],
        [(b"content-length", b"x")],
        [(b"transfer-encoding", b"chunked")],
        [(b"transfer-encoding", b"chunked"), (b"content-length", b"5")],
        [(b"transfer-encoding", b"gzip"), (b"content-length", b"5")],
    ],
)
async def test_the_content_length_and_body_limit_are_quarts(
    headers: list[tuple[bytes, bytes]],
) -> None:
    app = RangeApp(__name__)
    connection = QuartConnection(app, _scope(headers))  # type: ignore[arg-type]

    async def send(message: object) -> None: ...

    ours = connection.build_request(send)
    quarts = connection._create_request_from_scope(send)
    assert ours.content_length == quarts.content_length
    # The body's limits come from the length: compared apart from its events (new objects).
    events = ("_complete", "_has_data")
    assert {k: v for k, v in vars(ours.body).items() if k not in events} == {
        k: v for k, v in vars(quarts.body).items() if k not in events
    }


async def test_closing_a_request_closes_its_uploaded_files_as_quart_does() -> None:
    app = RangeApp(__name__)
    connection = QuartConnection(app, _scope([]))  # type: ignore[arg-type]

    async def send(message: object) -> None: ...

    request = connection.build_request(send)
    await request.close()  # no files: nothing to close
    upload = io.BytesIO(b"x")
    request._files = MultiDict([("f", FileStorage(upload))])
    await request.close()
    assert upload.closed
