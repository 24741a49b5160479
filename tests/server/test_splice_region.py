"""The splice loop (server/splice_region.py) over socket pairs: exact counts, failures, cancel."""

from __future__ import annotations

import socket

import pytest
import trio

from tests.conftest import file_data
from trio_range.errors import StreamAborted
from trio_range.server.splice_region import Pipe, SpliceRegion


def socket_pairs() -> tuple[socket.socket, socket.socket, socket.socket, socket.socket]:
    """(source writer, source, client, client reader), all TCP-like stream sockets."""
    source_writer, source = socket.socketpair()
    client, client_reader = socket.socketpair()
    for sock in (source_writer, source, client, client_reader):
        sock.setblocking(False)
    return source_writer, source, client, client_reader


async def read_exactly(sock: socket.socket, size: int) -> bytes:
    received = bytearray()
    with trio.fail_after(10):
        while len(received) < size:
            await trio.lowlevel.wait_readable(sock)
            received += sock.recv(size - len(received))
    return bytes(received)


async def test_a_region_moves_exactly_its_bytes_and_leaves_the_rest() -> None:
    source_writer, source, client, client_reader = socket_pairs()
    pipe = Pipe()
    try:
        data = file_data(300_000)
        async with trio.open_nursery() as nursery:

            async def feed() -> None:
                for start in range(0, len(data), 50_000):
                    await trio.lowlevel.wait_writable(source_writer)
                    source_writer.send(data[start : start + 50_000])
                    await trio.sleep(0.001)
                source_writer.send(b"next message")

            nursery.start_soon(feed)
            received: list[bytes] = []

            async def drain() -> None:
                received.append(await read_exactly(client_reader, 200_000))

            nursery.start_soon(drain)
            region = SpliceRegion(source, pipe, 200_000, read_timeout_s=10)
            assert await region.send_to(client) == 200_000
        assert received == [data[:200_000]]
        # What follows the region is still in the source, untouched.
        rest = await read_exactly(source, 100_000 + len(b"next message"))
        assert rest == data[200_000:] + b"next message"
    finally:
        pipe.close()
        for sock in (source_writer, source, client, client_reader):
            sock.close()


async def test_a_source_that_ends_early_raises_stream_aborted_and_reports_truncated() -> None:
    source_writer, source, client, client_reader = socket_pairs()
    failures: list[str] = []
    pipe = Pipe()
    try:
        source_writer.send(b"x" * 1000)
        source_writer.close()
        region = SpliceRegion(source, pipe, 5000, 10, failures.append)
        with pytest.raises(StreamAborted):
            await region.send_to(client)
        assert failures == ["truncated"]
        assert region.moved <= 1000
    finally:
        pipe.close()
        for sock in (source, client, client_reader):
            sock.close()


async def test_a_silent_source_times_out(autojump_clock: trio.testing.MockClock) -> None:
    source_writer, source, client, client_reader = socket_pairs()
    failures: list[str] = []
    pipe = Pipe()
    try:
        region = SpliceRegion(source, pipe, 5000, 30, failures.append)
        with pytest.raises(StreamAborted):
            await region.send_to(client)
        assert failures == ["timeout"]
        assert trio.current_time() >= 30
    finally:
        pipe.close()
        for sock in (source_writer, source, client, client_reader):
            sock.close()


async def test_a_cancelled_splice_says_how_much_the_client_got() -> None:
    source_writer, source, client, client_reader = socket_pairs()
    pipe = Pipe()
    try:
        source_writer.send(b"y" * 4000)
        region = SpliceRegion(source, pipe, 10_000, 30)
        with trio.move_on_after(0.2):
            await region.send_to(client)
        assert region.moved == 4000
        assert await read_exactly(client_reader, 4000) == b"y" * 4000
    finally:
        pipe.close()
        for sock in (source_writer, source, client, client_reader):
            sock.close()


async def test_pieces_cut_for_pacing_move_in_order_and_count_on_the_region() -> None:
    # Pacing (server/pacing.py) cuts a region into pieces; the transport reads ``moved`` on
    # the region it yielded to know the body went through (and the connection can be reused).
    source_writer, source, client, client_reader = socket_pairs()
    pipe = Pipe()
    try:
        data = file_data(120_000)
        source_writer.send(data)
        region = SpliceRegion(source, pipe, 120_000, read_timeout_s=10)
        received = bytearray()
        for start in range(0, 120_000, 50_000):
            piece = region.cut(start, min(50_000, 120_000 - start))
            async with trio.open_nursery() as nursery:

                async def drain(size: int = piece.count) -> None:
                    received.extend(await read_exactly(client_reader, size))

                nursery.start_soon(drain)
                assert await piece.send_to(client) == piece.count
            assert region.moved == start + piece.count
        assert bytes(received) == data
        with pytest.raises(ValueError, match="in order"):
            region.cut(0, 10)
    finally:
        pipe.close()
        for sock in (source_writer, source, client, client_reader):
            sock.close()
