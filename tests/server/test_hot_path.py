"""The request hot path of issue 13: scheduler passes, the fast send path, the held head.

Every figure here is a count (task steps, body steps, locked writes), never a duration: the
tests hold on a busy machine and fail without the feature they check.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from quart import Response

from tests.conftest import SMALL
from tests.server.test_serving import open_client, read_head
from tests.support.servers import origin_config, raw_exchange, start_app
from trio_range.origin.app import create_app
from trio_range.server.app import RangeApp
from trio_range.server.socket_writer import FAIRNESS_BYTES, SocketWriter

STREAM_CHUNK = 256 * 1024
STREAM_CHUNKS = 256  # 64 MiB
BIG_BODY = bytes(range(256)) * (16 * 1024)  # 4 MiB


class _ServerSteps(trio.abc.Instrument):
    """Counts task steps of every task but the test's own (the client)."""

    def __init__(self, client: trio.lowlevel.Task) -> None:
        self.client = client
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is not self.client:
            self.steps += 1


@pytest.fixture
def writers(monkeypatch: pytest.MonkeyPatch) -> list[SocketWriter]:
    """Every SocketWriter the server makes (one per connection), to read its counts."""
    made: list[SocketWriter] = []
    original = SocketWriter.__init__

    def init(self: SocketWriter, *args: Any) -> None:
        original(self, *args)
        made.append(self)

    monkeypatch.setattr(SocketWriter, "__init__", init)
    return made


def _app() -> RangeApp:
    """Routes whose bodies the tests step: held, long, big, small."""
    app = RangeApp(__name__)
    app.extensions["steps"] = {"release": [trio.Event(), trio.Event()], "chunks": 0}

    @app.route("/held")
    async def held() -> Response:
        release: list[trio.Event] = app.extensions["steps"]["release"]

        async def body() -> AsyncIterator[bytes]:
            await release[0].wait()
            yield b"first"
            await release[1].wait()
            yield b"second"

        return Response(body(), headers={"Content-Length": "11"})

    @app.route("/long")
    async def long() -> Response:
        async def body() -> AsyncIterator[bytes]:
            chunk = b"e" * STREAM_CHUNK
            for _ in range(STREAM_CHUNKS):
                app.extensions["steps"]["chunks"] += 1
                yield chunk

        length = str(STREAM_CHUNK * STREAM_CHUNKS)
        return Response(body(), headers={"Content-Length": length})

    @app.route("/big")
    async def big() -> Response:
        return Response(BIG_BODY, headers={"Content-Type": "application/octet-stream"})

    @app.route("/small")
    async def small() -> Response:
        return Response(SMALL)

    return app


async def _start(nursery: trio.Nursery, tmp_path: Path) -> tuple[RangeApp, str]:
    app = _app()
    return app, await start_app(nursery, app, origin_config(media_dir=tmp_path))


async def _read_response(stream: trio.SocketStream) -> tuple[bytes, bytes]:
    """One Content-Length response, and nothing past it: (head, body)."""
    head, body = await _read_pipelined(stream, b"")
    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    assert len(body) == length, "nothing past the response was sent"
    return head, body


async def test_a_small_range_request_takes_at_most_three_scheduler_passes(
    nursery: trio.Nursery, media_dir: Path
) -> None:
    # Issue 13: stock Hypercorn-trio with Quart-Trio made 12 passes per request (benchmarks/
    # hot_path.py); the connection's reader waking for the request and the request's one task
    # make 2. One more is allowed for a read that lands in two pieces.
    config = origin_config(media_dir=media_dir)
    url = await start_app(nursery, create_app(config), config)
    requests = 30
    stream = await open_client(url)
    async with stream:
        # Warm up: the connection's task and its keep-alive watcher start on the first request.
        await stream.send_all(b"GET /media/small.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        await _read_response(stream)
        counter = _ServerSteps(trio.lowlevel.current_task())
        trio.lowlevel.add_instrument(counter)
        try:
            for index in range(requests):
                first = index % len(SMALL)
                await stream.send_all(
                    b"GET /media/small.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=%d-\r\n\r\n" % first
                )
                head, body = await _read_response(stream)
                assert head.startswith(b"HTTP/1.1 206 Partial Content")
                assert body == SMALL[first:]
        finally:
            trio.lowlevel.remove_instrument(counter)
    assert counter.steps <= 3 * requests, counter.steps / requests


async def test_three_pipelined_requests_are_answered_in_order_with_the_fast_send_path(
    nursery: trio.Nursery, media_dir: Path, writers: list[SocketWriter]
) -> None:
    config = origin_config(media_dir=media_dir)
    url = await start_app(nursery, create_app(config), config)
    ranges = [(0, 3), (4, 4), (2, 10)]
    stream = await open_client(url)
    async with stream:
        await stream.send_all(
            b"".join(
                b"GET /media/small.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=%d-%d\r\n\r\n"
                % (first, last)
                for first, last in ranges
            )
        )
        buffer = b""
        for first, last in ranges:
            head, rest = await _read_pipelined(stream, buffer)
            length = last - first + 1
            body, buffer = rest[:length], rest[length:]
            assert head.startswith(b"HTTP/1.1 206 Partial Content"), head
            assert b"Content-Range: bytes %d-%d/11" % (first, last) in head
            assert body == SMALL[first : last + 1]
    (writer,) = writers
    assert writer.locked_writes == 0


async def _read_pipelined(stream: trio.SocketStream, buffer: bytes) -> tuple[bytes, bytes]:
    """The next response's head, and what was read after it: at least its whole body."""
    while b"\r\n\r\n" not in buffer:
        chunk = await stream.receive_some(65536)
        assert chunk, buffer
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    while len(rest) < length:
        chunk = await stream.receive_some(65536)
        assert chunk
        rest += chunk
    return head, rest


async def test_a_held_head_goes_out_within_one_body_step(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # The head waits for the first body write at most: the body's first step releases it,
    # while the body still waits before its second step.
    app, url = await _start(nursery, tmp_path)
    release: list[trio.Event] = app.extensions["steps"]["release"]
    stream = await open_client(url)
    async with stream:
        await stream.send_all(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
        release[0].set()  # one body step
        with trio.fail_after(10):
            received = await read_head(stream)
            while not received.endswith(b"first"):
                received += await stream.receive_some(65536)
        assert not release[1].is_set()
        assert received.startswith(b"HTTP/1.1 200 OK\r\n")
        release[1].set()
        with trio.fail_after(10):
            while not received.endswith(b"second"):
                received += await stream.receive_some(65536)


async def test_a_small_request_is_answered_while_a_fast_stream_runs(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # A 64 MiB stream read as fast as a thread can, and a small request on another
    # connection: answered within a few of the stream's body steps, long before its end (the
    # writer waits for a full socket or yields every FAIRNESS_BYTES, whichever comes first).
    app, url = await _start(nursery, tmp_path)
    steps = app.extensions["steps"]
    host, port = url.removeprefix("http://").rsplit(":", 1)
    received = 0

    def read_the_stream() -> None:
        nonlocal received
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(b"GET /long HTTP/1.1\r\nHost: x\r\n\r\n")
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
                if received >= STREAM_CHUNK * STREAM_CHUNKS:
                    return

    small = await open_client(url)
    async with small, trio.open_nursery() as reading:
        reading.start_soon(trio.to_thread.run_sync, read_the_stream)
        with trio.fail_after(10):
            while steps["chunks"] < 4:
                await trio.sleep(0.001)
        before = steps["chunks"]
        await small.send_all(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(30):
            head, body = await _read_response(small)
        during = steps["chunks"] - before
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert body == SMALL
        # The small request's two passes, each at most a fairness slice (plus slack) away.
        assert during <= 8 * FAIRNESS_BYTES // STREAM_CHUNK < STREAM_CHUNKS // 4, during


async def test_a_partial_send_to_a_slow_reader_falls_back_to_the_locked_path(
    nursery: trio.Nursery, tmp_path: Path, writers: list[SocketWriter]
) -> None:
    _, url = await _start(nursery, tmp_path)
    stream = await open_client(url, rcvbuf=65536)
    async with stream:
        await stream.send_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        # Not reading: the first write fills the socket buffers and is taken in part.
        with trio.fail_after(10):
            while not (writers and writers[0].locked_writes):
                await trio.sleep(0.01)
        with trio.fail_after(30):
            head, body = await _read_response(stream)
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert body == BIG_BODY
    assert writers[0].locked_writes == 1


async def test_an_h2c_upgrade_is_still_seen_by_the_one_scan_protocol_check(
    nursery: trio.Nursery, media_dir: Path
) -> None:
    # The names reach _install_protocol_check as h11 normalized them, whatever the client
    # wrote: Hypercorn's own check still answers 101 and switches, and ConnectionServer then
    # closes what is no longer HTTP/1.1 (as for the prior-knowledge preface).
    config = origin_config(media_dir=media_dir)
    url = await start_app(nursery, create_app(config), config)
    received = await raw_exchange(
        url,
        b"GET /media/small.bin HTTP/1.1\r\nHost: x\r\nuPgRaDe:  h2c\r\n"
        b"Connection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    assert received.startswith(b"HTTP/1.1 101 "), received
    assert SMALL not in received


async def test_writes_that_never_wait_still_yield_every_fairness_slice() -> None:
    # On loopback a fast stream fills the socket and waits now and then anyway; a socket that
    # is never full (here /dev/null) is where only the writer's own checkpoint lets other
    # tasks run: 4 MiB in 256 KiB writes must give the other task about 4 turns, not 0.
    turns = 0

    async def other_task() -> None:
        nonlocal turns
        while True:
            turns += 1
            await trio.lowlevel.checkpoint()

    async def never_called() -> None:
        raise AssertionError("/dev/null never closes")

    null = os.open(os.devnull, os.O_WRONLY)
    try:
        never_full: Any = _Fd(null)  # fileno() is all the writer asks of its socket here
        writer = SocketWriter(never_full, trio.Lock(), never_called)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other_task)
            slices = 4
            for _ in range(slices * FAIRNESS_BYTES // STREAM_CHUNK):
                await writer.write((b"x" * STREAM_CHUNK,))
            during = turns
            nursery.cancel_scope.cancel()
    finally:
        os.close(null)
    assert writer.locked_writes == 0
    assert slices - 1 <= during <= slices + 1, during


async def test_a_write_that_raises_cancelled_wrote_nothing(tmp_path: Path) -> None:
    # The connection counts a body write's bytes when the write returns (the exchange's
    # bytes_sent, the soak's "proxy sent >= clients read"): a cancel may stop the stream at the
    # fairness checkpoint, but never after bytes left that the write then does not report.
    chunk = b"x" * FAIRNESS_BYTES

    async def never_called() -> None:
        raise AssertionError("a file never closes")

    reported = 0
    with (tmp_path / "sent").open("wb") as sent:
        writer = SocketWriter(_Fd(sent.fileno()), trio.Lock(), never_called)  # type: ignore[arg-type]
        with trio.CancelScope() as scope:
            scope.cancel()
            for _ in range(3):
                await writer.write((chunk,))
                reported += len(chunk)
        written = os.fstat(sent.fileno()).st_size
    assert scope.cancelled_caught  # the checkpoint let the cancel in
    assert written == reported == FAIRNESS_BYTES


class _Fd:
    """A file descriptor with a socket's ``fileno()``."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd
