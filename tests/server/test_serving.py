"""The serving loop: graceful shutdown, stalled clients, connection and stream limits."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import trio

from tests.conftest import SMALL
from tests.support.servers import origin_config, raw_exchange, start_app
from trio_range.origin.app import create_app
from trio_range.server.serving import serve_app


async def open_client(url: str, *, rcvbuf: int | None = None) -> trio.SocketStream:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = trio.socket.socket()
    if rcvbuf is not None:
        # A tiny receive window: a client that does not read stalls the server's writes at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect((host, int(port)))
    return trio.SocketStream(sock)


async def read_head(stream: trio.SocketStream) -> bytes:
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = await stream.receive_some(4096)
        assert chunk, received
        received += chunk
    return received


async def read_until_closed(stream: trio.SocketStream) -> tuple[int, bool]:
    """Bytes read until the server closed, and whether it ended with a reset."""
    total = 0
    try:
        while chunk := await stream.receive_some(65536):
            total += len(chunk)
    except trio.BrokenResourceError:
        return total, True
    return total, False


async def get_stats(url: str) -> dict[str, dict[str, int]]:
    async with httpx.AsyncClient() as client:
        return (await client.get(url + "/stats")).json()  # type: ignore[no-any-return]


async def test_shutdown_closes_idle_finishes_nothing_past_grace_and_returns(
    nursery: trio.Nursery, media_dir: Path
) -> None:
    # Long enough that the stream being read (3 MB on loopback) ends well within it and the
    # idle connection's close, expected at once, has grace_s / 2 even on a loaded machine.
    grace_s = 4.0
    config = origin_config(
        media_dir=media_dir, chunk_size_bytes=16 * 1024, shutdown_grace_s=grace_s
    )
    app = create_app(config)
    stop = trio.Event()
    stopped = trio.Event()

    async def run_server(task_status: trio.TaskStatus[str]) -> None:
        async def serve(task_status: trio.TaskStatus[list[str]]) -> None:
            await serve_app(app, config, shutdown_trigger=stop.wait, task_status=task_status)

        async with trio.open_nursery() as inner:
            urls = await inner.start(serve)
            task_status.started(urls[0])
        stopped.set()

    url = await nursery.start(run_server)

    idle = await open_client(url)
    await idle.send_all(b"GET /media/small.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    await read_head(idle)
    stalled = await open_client(url, rcvbuf=4096)
    await stalled.send_all(b"GET /media/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    await read_head(stalled)  # then never read again: the server's writes block
    active = await open_client(url)
    await active.send_all(b"GET /media/big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    active_head = await read_head(active)
    active_result: list[tuple[int, bool]] = []

    async def keep_reading() -> None:
        async with active:
            active_result.append(await read_until_closed(active))

    nursery.start_soon(keep_reading)

    with trio.fail_after(10):
        while app.in_flight != 2:
            await trio.sleep(0.01)
    stop.set()
    started = trio.current_time()
    async with idle:
        with trio.fail_after(grace_s / 2):
            # Idle keep-alive connections close at once, not after the grace period.
            _, _ = await read_until_closed(idle)
    with trio.fail_after(grace_s + 10):
        await stopped.wait()
    # Not before the grace period (its timer starts after `started`, which no load changes),
    # and not much after it: the stalled stream is aborted when it ends.
    elapsed = trio.current_time() - started
    assert grace_s - 0.1 <= elapsed <= grace_s + 5, elapsed
    # An in-flight stream that is being read finishes within the grace period.
    with trio.fail_after(10):
        while not active_result:
            await trio.sleep(0.01)
    body, reset = active_result[0]
    assert not reset
    assert len(active_head.partition(b"\r\n\r\n")[2]) + body == 3_000_000
    async with stalled:
        received, _ = await read_until_closed(stalled)
    # The stalled client gets an aborted transfer, never a complete-looking short one.
    assert received < 3_000_000
    stats = app.extensions["trio_range.stats"].snapshot().to_json()
    assert stats["streams"]["active"] == 0
    assert stats["streams"]["completed"] == 2
    assert stats["streams"]["aborted"] == 1


async def test_connections_past_the_limit_get_503_with_retry_after(
    nursery: trio.Nursery, media_dir: Path
) -> None:
    config = origin_config(media_dir=media_dir, max_connections=2)
    url = await start_app(nursery, create_app(config), config)
    first, second = await open_client(url), await open_client(url)
    async with first, second:
        for client in (first, second):
            await client.send_all(b"GET /media/small.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            await read_head(client)
        raw = await raw_exchange(url, b"GET /media/small.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 503")
    assert b"Retry-After: 1" in raw
    # Once those connections closed, new ones are served again.
    with trio.fail_after(10):
        while True:
            raw = await raw_exchange(
                url, b"GET /media/small.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            if raw.startswith(b"HTTP/1.1 200"):
                break
            await trio.sleep(0.01)
    assert raw.endswith(SMALL)


async def test_requests_past_max_streams_get_503_but_health_answers(
    nursery: trio.Nursery, media_dir: Path
) -> None:
    config = origin_config(media_dir=media_dir, chunk_size_bytes=16 * 1024, max_streams=1)
    app = create_app(config)
    url = await start_app(nursery, app, config)
    busy = await open_client(url, rcvbuf=4096)
    async with busy:
        await busy.send_all(b"GET /media/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        await read_head(busy)
        async with httpx.AsyncClient() as client:
            refused = await client.get(url + "/media/small.bin")
            health = await client.get(url + "/healthz")
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert health.status_code == 200
    async with httpx.AsyncClient() as client:
        with trio.fail_after(10):
            while (await client.get(url + "/media/small.bin")).status_code != 200:
                await trio.sleep(0.01)


async def test_oversized_request_heads_get_431_or_414(
    nursery: trio.Nursery, media_dir: Path
) -> None:
    config = origin_config(media_dir=media_dir, max_header_bytes=2048)
    url = await start_app(nursery, create_app(config), config)
    big_header = b"GET /media/small.bin HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n"
    long_target = b"GET /media/" + b"a" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    for request, statuses in ((big_header, (b"431", b"400")), (long_target, (b"414", b"400"))):
        raw = await raw_exchange(
            url, request + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert raw.split(b" ", 2)[1] in statuses, raw[:100]
    # Just under the limit is served.
    raw = await raw_exchange(
        url,
        b"GET /media/small.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: "
        + b"a" * 1500
        + b"\r\n\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 200")


async def test_client_that_stops_reading_is_aborted_after_the_send_stall_timeout(
    nursery: trio.Nursery, media_dir: Path
) -> None:
    config = origin_config(
        media_dir=media_dir, chunk_size_bytes=16 * 1024, send_stall_timeout_s=1.0
    )
    app = create_app(config)
    url = await start_app(nursery, app, config)
    stalled = await open_client(url, rcvbuf=4096)
    async with stalled:
        await stalled.send_all(b"GET /media/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        await read_head(stalled)
        with trio.fail_after(15):
            while (
                app.extensions["trio_range.stats"].snapshot().to_json()["streams"]["aborted"] != 1
            ):
                await trio.sleep(0.05)
        assert app.in_flight == 0


class _SpawnCounter(trio.abc.Instrument):
    def __init__(self) -> None:
        self.spawned: list[str] = []

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawned.append(task.name)


async def test_keep_alive_requests_spawn_no_timer_task_and_idle_still_closes(
    nursery: trio.Nursery, media_dir: Path
) -> None:
    # Per request: Hypercorn's app task and the connection's two (responder and disconnect
    # watcher). Stock Hypercorn adds a keep-alive timer task each time the connection turns
    # idle; _KeepAliveTimer keeps one per connection.
    url = await start_app(
        nursery,
        create_app(origin_config(media_dir=media_dir)),
        origin_config(media_dir=media_dir, keep_alive_timeout_s=0.5),
    )
    requests = 20
    counter = _SpawnCounter()
    stream = await open_client(url)
    async with stream:
        trio.lowlevel.add_instrument(counter)
        try:
            for _ in range(requests):
                await stream.send_all(b"GET /media/small.bin HTTP/1.1\r\nHost: x\r\n\r\n")
                received = await read_head(stream)
                head, _, body = received.partition(b"\r\n\r\n")
                while len(body) < len(SMALL):
                    body += await stream.receive_some(65536)
                assert head.startswith(b"HTTP/1.1 200")
                assert body == SMALL
        finally:
            trio.lowlevel.remove_instrument(counter)
        # Plus, when the accept lands after the instrument is added, the connection's handler
        # and its one timer.
        assert len(counter.spawned) <= 3 * requests + 2, sorted(set(counter.spawned))
        # The one timer still closes the idle connection after the keep-alive timeout (the
        # bound is generous for a loaded machine: without the timer it would never close).
        with trio.fail_after(10):
            assert await stream.receive_some(65536) == b""
