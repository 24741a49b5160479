"""The proxy's request hot path (issue 14): scheduler passes, and what a relay adds by itself.

Counts only (task steps, fields), never durations: these hold on a busy machine and fail
without the behaviour they check.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import SMALL
from tests.server.test_serving import open_client
from tests.support.range_upstream import open_range_upstream
from tests.support.servers import proxy_config, start_app, start_origin
from trio_range.proxy.app import create_app
from trio_range.server import socket_writer

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


async def test_a_small_relayed_answer_leaves_in_one_write(
    nursery: trio.Nursery, media_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The head waits in the SocketWriter for the body; a small body of bytes goes out with it
    # in one send (it went out in a second one: one more syscall and packet per request).
    writes: list[int] = []
    write_once = socket_writer._write_once

    def counted(fd: int, piece: Any, done: int) -> int:
        writes.append(len(piece))
        return write_once(fd, piece, done)

    origin = await start_origin(nursery, media_dir=media_dir)
    config = proxy_config(origin)
    url = await start_app(nursery, create_app(config), config)
    stream = await open_client(url)
    async with stream:
        await stream.send_all(b"GET /media/small.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        await _read_response(stream)
        monkeypatch.setattr(socket_writer, "_write_once", counted)
        for first in range(len(SMALL)):
            await stream.send_all(
                b"GET /media/small.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=%d-\r\n\r\n" % first
            )
            head, body = await _read_response(stream)
            assert body == SMALL[first:]
            # Everything the proxy wrote for this answer, in one piece.
            assert writes[-1] == len(head) + 4 + len(body), writes
    # The origin (in this process too) answered each with one write as well.
    assert len(writes) == 2 * len(SMALL), writes


async def test_the_startup_heap_is_frozen_once_the_proxy_serves(nursery: trio.Nursery) -> None:
    # Full collections skip what was there at startup (server/heap.freeze_startup_heap says why):
    # the first proxy of the process freezes it, later ones find it frozen.
    config = proxy_config("http://127.0.0.1:9")
    await start_app(nursery, create_app(config), config)
    assert gc.get_freeze_count() > 10_000
