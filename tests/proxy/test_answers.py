"""CompleteAnswer.relayed makes what the constructor makes (proxy/answers.py says why it exists).

It copies the attributes Quart's and Werkzeug's constructors set for a status, so a new
attribute in either, or a changed one, must show here rather than as a subtly broken answer.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest
from quart.wrappers.response import DataBody, IterableBody
from werkzeug.datastructures import Headers

from trio_range.proxy.answers import CompleteAnswer


async def _body() -> AsyncGenerator[bytes]:
    yield b"one"
    yield b"two"


@pytest.mark.parametrize("status", [200, 206, 304, 404, 416, 502, 299, 999])
async def test_a_relayed_answer_has_the_constructors_attributes(status: int) -> None:
    fields = Headers([("Content-Length", "6"), ("Via", "1.1 trio-range")])
    body = _body()
    relayed = CompleteAnswer.relayed(status, fields, body)
    built = CompleteAnswer(_body(), status=status)
    built.headers = fields
    assert type(relayed) is CompleteAnswer
    assert vars(relayed).keys() == vars(built).keys()
    for name, value in vars(built).items():
        if name != "response":
            assert vars(relayed)[name] == value, name
    assert (relayed.status_code, relayed.status) == (built.status_code, built.status)
    assert relayed.headers is fields
    assert type(relayed.response) is type(built.response) is IterableBody
    assert vars(relayed.response).keys() == vars(built.response).keys()
    # Quart reads it as it reads the constructor's: entered, iterated, closed.
    async with relayed.response as items:
        assert [item async for item in items] == [b"one", b"two"]


async def test_a_relayed_answer_without_a_body_has_the_constructors_empty_one() -> None:
    relayed = CompleteAnswer.relayed(200, Headers([("Content-Length", "10")]), None)
    built = CompleteAnswer(CompleteAnswer.data_body_class(b""), status=200)
    assert type(relayed.response) is DataBody
    assert vars(relayed.response) == vars(built.response)
    assert relayed.headers["Content-Length"] == "10"  # no Quart Content-Length of 0
    # Two answers of one status share no mutable state.
    other = CompleteAnswer.relayed(200, Headers([("Content-Length", "3")]), None)
    assert other.headers is not relayed.headers
    assert other.response is not relayed.response
