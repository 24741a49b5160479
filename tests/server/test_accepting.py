"""The accept loop: connections waiting in the listen queue are accepted in one pass.

Counts scheduler passes, never durations. One accept per pass (``trio.serve_listeners``) made
the first request of the connections accepted last wait as many passes as there were
connections ahead of them: the wrk c=64 tail of issue 13's hot path (accepting.py).
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

import pytest
import trio

from tests.support.servers import start_origin
from trio_range.server import serving

CONNECTIONS = 16


class _AcceptPasses(trio.abc.Instrument):
    """The scheduler pass in which each connection's handler task was spawned."""

    def __init__(self) -> None:
        self.passes = 0
        self.spawned_in: list[int] = []

    def before_io_wait(self, timeout: float) -> None:
        self.passes += 1

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("._run_handler"):
            self.spawned_in.append(self.passes)


def _wait_queued(listening: socket.socket, count: int) -> None:
    """Block (no yield: the server cannot accept meanwhile) until ``count`` wait to be accepted.

    Linux reports a listening socket's accept queue length as TCP_INFO's ``tcpi_unacked``.
    """
    deadline = time.monotonic() + 10
    while True:
        info = listening.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        queued: int = struct.unpack_from("I", info, 24)[0]
        if queued >= count or time.monotonic() > deadline:
            assert queued == count
            return
        time.sleep(0.001)


async def test_waiting_connections_are_accepted_in_one_pass(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[socket.socket] = []
    listening_socket = serving._listening_socket

    def record(*args: Any) -> socket.socket:
        made.append(listening_socket(*args))
        return made[-1]

    monkeypatch.setattr(serving, "_listening_socket", record)
    url = await start_origin(nursery)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    instrument = _AcceptPasses()
    trio.lowlevel.add_instrument(instrument)
    clients: list[socket.socket] = []
    try:
        # Blocking connects from this task: the server's loop does not run until all are queued.
        for _ in range(CONNECTIONS):
            clients.append(socket.create_connection((host, int(port))))
        _wait_queued(made[0], CONNECTIONS)
        with trio.fail_after(10):
            while len(instrument.spawned_in) < CONNECTIONS:
                await trio.sleep(0.01)
    finally:
        trio.lowlevel.remove_instrument(instrument)
        for client in clients:
            client.close()
    assert len(set(instrument.spawned_in)) == 1, instrument.spawned_in
