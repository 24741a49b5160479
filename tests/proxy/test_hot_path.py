"""The proxy's request hot path (issue 14): scheduler passes, and what a relay adds by itself.

Counts only (task steps, fields), never durations: these hold on a busy machine and fail
without the behaviour they check.
"""

from __future__ import annotations

from pathlib import Path

import trio

from tests.conftest import SMALL
from tests.server.test_serving import open_client
from tests.support.range_upstream import open_range_upstream
from tests.support.servers import proxy_config, start_app, start_origin
from trio_range.proxy.app import create_app

REQUESTS = 30


class _StepsUnder(trio.abc.Instrument):
    """Counts the task steps of the tasks started, at any depth, under one nursery."""

    def __init__(self, root: trio.Nursery) -> None:
        self.root = root
        self.steps = 0
        self._under: dict[trio.lowlevel.Task, bool] = {}

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self._is_under(task):
            self.steps += 1

    def _is_under(self, task: trio.lowlevel.Task) -> bool:
        known = self._under.get(task)
        if known is None:
            nursery = task.parent_nursery
            if nursery is None:
                known = False
            elif nursery is self.root:
                known = True
            else:
                known = self._is_under(nursery.parent_task)
            self._under[task] = known
        return known


async def _read_response(stream: trio.SocketStream) -> tuple[bytes, bytes]:
    """One Content-Length response: (head, body)."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = await stream.receive_some(65536)
        assert chunk, buffer
        buffer += chunk
    head, _, body = buffer.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        assert chunk, head
        body += chunk
    assert len(body) == length, "nothing past the response was sent"
    return head, body


async def test_a_small_proxied_range_takes_at_most_four_scheduler_passes_of_the_proxy(
    nursery: trio.Nursery, media_dir: Path
) -> None:
    # The proxy's tasks only (the origin runs in this trio.run too): the connection's reader
    # waking for the request, the request's task sending upstream, and the same task waking
    # for the upstream's answer and writing it out make 3 (benchmarks/proxy_hot_path.py). One
    # more is allowed for a read that lands in two pieces. httpx's own transport (httpcore)
    # took a trio.Lock per state change and several more trips per request.
    origin = await start_origin(nursery, media_dir=media_dir)
    async with trio.open_nursery() as proxy_side:
        config = proxy_config(origin)
        url = await start_app(proxy_side, create_app(config), config)
        stream = await open_client(url)
        async with stream:
            # Warm up: the connection's tasks and the upstream connection start here.
            await stream.send_all(b"GET /media/small.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            await _read_response(stream)
            counter = _StepsUnder(proxy_side)
            trio.lowlevel.add_instrument(counter)
            try:
                for index in range(REQUESTS):
                    first = index % len(SMALL)
                    await stream.send_all(
                        b"GET /media/small.bin HTTP/1.1\r\nHost: x\r\n"
                        b"Range: bytes=%d-\r\n\r\n" % first
                    )
                    head, body = await _read_response(stream)
                    assert head.startswith(b"HTTP/1.1 206 Partial Content"), head
                    assert body == SMALL[first:]
            finally:
                trio.lowlevel.remove_instrument(counter)
        proxy_side.cancel_scope.cancel()
    assert 0 < counter.steps <= 4 * REQUESTS, counter.steps / REQUESTS


async def test_a_relayed_answer_without_date_gets_the_proxys_and_keeps_one_via(
    nursery: trio.Nursery,
) -> None:
    # RFC 9110 §6.6.1: a proxy with a clock adds the Date an upstream left out. The relay adds
    # it (http/forwarding.py); the app's after-request hook leaves relayed answers alone.
    async with open_range_upstream(SMALL) as upstream:
        config = proxy_config(f"http://127.0.0.1:{upstream.port}")
        url = await start_app(nursery, create_app(config), config)
        stream = await open_client(url)
        async with stream:
            await stream.send_all(b"GET /f HTTP/1.1\r\nHost: x\r\nRange: bytes=1-3\r\n\r\n")
            head, body = await _read_response(stream)
    lines = head.decode("latin-1").split("\r\n")
    names = [line.partition(":")[0].lower() for line in lines[1:]]
    assert lines[0].startswith("HTTP/1.1 206"), head
    assert body == SMALL[1:4]
    assert names.count("date") == 1, head
    assert names.count("via") == 1, head
    assert names.count("content-type") <= 1, head
