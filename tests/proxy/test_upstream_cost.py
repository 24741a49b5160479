"""What the upstream client costs a relayed request, in Python calls (issue 14).

Counts only, never durations: the calls made under ``Upstream.open`` (pool, head out, head
in, the response) and under the body relay for a small answer, measured with a profile hook
that attributes each call to the frames above it. These figures do not move with load, and
go back up if the request goes through an ``httpx.Request`` or h11's head reader again.
"""

from __future__ import annotations

import sys
from contextlib import aclosing
from types import FrameType
from typing import Any

import trio

from tests.proxy.test_transport import start_framing_upstream
from tests.support.servers import proxy_config
from trio_range.proxy import upstream as upstream_module
from trio_range.proxy.upstream import Upstream, relay_body

REQUESTS = 40
# Measured here: 145 calls under open (254 with an httpx.Request and h11's head reader) and
# 28 under relay_body. The margins absorb a head or body that arrives in two reads.
MAX_OPEN_CALLS = 200
MAX_BODY_CALLS = 45


class _CallsUnder:
    """Counts the calls (Python and C) made with a frame of ``functions`` on the stack."""

    def __init__(self, *functions: Any) -> None:
        self._codes = {function.__code__: function.__name__ for function in functions}
        self.calls = dict.fromkeys(self._codes.values(), 0)

    def __call__(self, frame: FrameType, event: str, arg: object) -> None:
        if event not in ("call", "c_call"):
            return
        walker: FrameType | None = frame
        while walker is not None:
            name = self._codes.get(walker.f_code)
            if name is not None:
                self.calls[name] += 1
                return
            walker = walker.f_back


async def test_a_small_answer_costs_the_upstream_client_few_python_calls(
    nursery: trio.Nursery,
) -> None:
    origin = await start_framing_upstream(nursery)
    fields = [("Host", "u"), ("Range", "bytes=0-9"), ("Via", "1.1 trio-range")]
    counter = _CallsUnder(Upstream.open, upstream_module.relay_body)
    async with Upstream(proxy_config(origin.url, pool_size=1)) as upstream:
        try:
            for index in range(REQUESTS + 1):
                if index == 1:  # the first one connects
                    sys.setprofile(counter)
                response = await upstream.open("GET", f"/cl/4096/{index}", fields)
                async with aclosing(relay_body(response)) as chunks:
                    body = b"".join([bytes(chunk) async for chunk in chunks])
                assert len(body) == 4096
        finally:
            sys.setprofile(None)
        assert origin.accepted == 1  # one connection, reused throughout
    per_request = {name: calls / REQUESTS for name, calls in counter.calls.items()}
    assert 0 < per_request["open"] <= MAX_OPEN_CALLS, per_request
    assert 0 < per_request["relay_body"] <= MAX_BODY_CALLS, per_request
