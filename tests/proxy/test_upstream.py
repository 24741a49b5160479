"""The upstream client under cancellation: httpcore issue 1093 must not happen to the proxy.

httpcore 1.0.9 (under httpx 0.28.1) leaks a pool slot when a queued request is cancelled in
the same scheduler pass in which another request frees a connection: the freeing task's
bookkeeping still sees the cancelled request as queued and creates a new connection for it;
the cancelled request then leaves without using it, and that connection stays ``CONNECTING``
forever (neither idle, nor closed, nor expired). Once every slot is stuck, each request ends in
``PoolTimeout``. A proxy cancels requests all the time (every client disconnect cancels its
relay, and media players abort requests on every seek), so it needs a client that reclaims
those slots. docs/upstream-client.md records the measurements on both libraries.

The proxy's own transport (proxy/transport.py, pool.py) must never do it either. These tests
inspect its pool (``Upstream.pool``: ``requests`` in flight with their phase, ``active``,
``idle`` and ``connecting`` connections): the only way to see a stuck slot before it turns
into a ``PoolTimeout``. A stuck slot is a connection that is neither idle nor owned by a
request once no request is in flight.
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.support.faulty_upstream import RawConnection
from tests.support.servers import proxy_config, start_app, start_origin
from trio_range.config import ProxyConfig
from trio_range.proxy import app as proxy
from trio_range.proxy import relay
from trio_range.proxy.pool import ConnectionPool
from trio_range.proxy.transport import UPSTREAM_READ_BYTES
from trio_range.proxy.upstream import Upstream, UpstreamUnavailable, relay_body

ROUNDS = 8
PROBES_PER_ROUND = 16
HEAD_DELAY_S = 0.02
COLLISION_TRIALS = 24
BODY = b"hello"


# --- an upstream whose response head is slow, so requests queue for a small pool ----------


@dataclass
class SlowHeadUpstream:
    """Answers every request with ``BODY`` after ``head_delay_s``, keeping connections open.

    A target under ``/stream`` is answered at once with an endless body instead, sent until
    the peer goes away: a relay that holds its pool slot for as long as its client stays.
    """

    head_delay_s: float
    port: int = 0
    heads_seen: int = 0
    connections_accepted: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections_accepted += 1
        heads = RawConnection(stream)
        try:
            with trio.move_on_after(30):
                while (head := await heads.read_head()) is not None:
                    streaming = head.startswith(b"GET /stream")
                    self.heads_seen += 1
                    if streaming:
                        await stream.send_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (1 << 40)
                        )
                        while True:
                            await stream.send_all(bytes(65536))
                    await trio.sleep(self.head_delay_s)
                    await stream.send_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
                    )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the proxy closed a connection whose response it no longer wanted
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()


async def start_slow_head_upstream(nursery: trio.Nursery, head_delay_s: float) -> SlowHeadUpstream:
    upstream = SlowHeadUpstream(head_delay_s)
    listeners: list[trio.SocketListener] = await nursery.start(
        functools.partial(trio.serve_tcp, upstream.handle, 0, host="127.0.0.1")
    )
    upstream.port = listeners[0].socket.getsockname()[1]
    return upstream


# --- looking into the pool -----------------------------------------------------------------


def pool_of(upstream: Upstream) -> ConnectionPool:
    """The connection pool behind ``Upstream``."""
    return upstream.pool


def stuck_connections(upstream: Upstream) -> list[str]:
    """Connections open but neither idle nor owned, once no request is in flight: leaked slots."""
    pool = pool_of(upstream)
    assert not pool.requests, "only meaningful once every request has left the pool"
    stuck = [f"connection {i} CONNECTING" for i in range(pool.connecting)]
    stuck += [f"connection fd {c.raw.fileno()} in use" for c in pool.active]
    assert upstream.open_connections() == len(pool.idle) + len(stuck)
    return stuck


# The pool's phases as the httpcore tests named them.
_PHASE_NAMES = {"sending": "head wait", "head wait": "head wait", "body": "after head"}


def phase_of(upstream: Upstream, probe: str, got_head: bool) -> str:
    """Where in the header phase the request tagged ``X-Probe: probe`` is right now."""
    if got_head:
        return "after head"
    for lease in pool_of(upstream).requests:
        request: Any = lease.request
        if request.headers.get("x-probe") == probe:
            return _PHASE_NAMES.get(lease.phase, lease.phase)
    return "outside pool"


def small_pool_config(upstream_url: str, pool_size: int, **overrides: Any) -> ProxyConfig:
    settings: dict[str, Any] = {
        # Short enough that a leaked pool shows as a PoolTimeout within the tests' bounds, long
        # enough that no request ever waits that long for a slot in a healthy pool, even on a
        # loaded machine (the requests of a round are cancelled within ~0.1 s, or served).
        "pool_timeout_s": 5.0,
        "connect_timeout_s": 2.0,
        "read_timeout_s": 5.0,
        **overrides,
    }
    return proxy_config(upstream_url, pool_size=pool_size, **settings)


# --- through the Upstream class ------------------------------------------------------------


@dataclass
class RoundReport:
    phases: Counter[str] = field(default_factory=Counter)
    completed: int = 0
    # Requests nobody cancelled that got no response: no slot freed up for them (PoolTimeout).
    stranded: int = 0


async def run_cancellation_round(upstream: Upstream, rng: random.Random) -> RoundReport:
    """Start ``PROBES_PER_ROUND`` requests at once; cancel most of them at random moments.

    Half of the victims get their own deadline at a random moment of the header phase; the
    rest are cancelled together at the end of the round, as a burst of client disconnects
    does. The few that are never cancelled read their body (their connection is reused) or
    close early (their connection is closed), so slots free up while others are cancelled;
    the round ends when they have, or when the pool timed them out (stranded), however long
    a loaded machine takes.
    """
    report = RoundReport()
    got_head: set[str] = set()
    finished: set[str] = set()

    async def one_request(probe: str, scope: trio.CancelScope) -> None:
        try:
            with scope:
                try:
                    response = await upstream.open("GET", "/slow", [("X-Probe", probe)])
                except UpstreamUnavailable:
                    return  # a PoolTimeout: stranded, unless it was cancelled
                got_head.add(probe)
                try:
                    if rng.random() < 0.5:
                        await response.aread()
                finally:
                    with trio.CancelScope(shield=True):
                        await response.aclose()
                report.completed += 1
        finally:
            finished.add(probe)

    def cancel(probe: str, scope: trio.CancelScope) -> None:
        if probe not in finished:
            report.phases[phase_of(upstream, probe, probe in got_head)] += 1
        scope.cancel()

    async def cancel_later(probe: str, scope: trio.CancelScope, delay_s: float) -> None:
        await trio.sleep(delay_s)
        cancel(probe, scope)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            burst: list[tuple[str, trio.CancelScope]] = []
            survivors: set[str] = set()
            for index in range(PROBES_PER_ROUND):
                probe, scope = str(index), trio.CancelScope()
                nursery.start_soon(one_request, probe, scope)
                fate = rng.random()
                if fate < 0.5:
                    nursery.start_soon(cancel_later, probe, scope, rng.uniform(0, 4 * HEAD_DELAY_S))
                elif fate < 0.85:
                    burst.append((probe, scope))
                else:
                    survivors.add(probe)
            await trio.sleep(rng.uniform(HEAD_DELAY_S, 4 * HEAD_DELAY_S))
            # One pass, no checkpoint in between: the burst is cancelled "at the same time".
            for probe, scope in burst:
                cancel(probe, scope)
    report.stranded = len(survivors - got_head)
    return report


async def run_collision_trial(upstream: Upstream, holders: int, rng: random.Random) -> None:
    """The race of issue 1093, aimed at: a slot frees just as the queued request is cancelled.

    ``holders`` requests take every free slot and get their heads; one more request queues.
    Then one holder closes its response early (its connection is closed, so the pool may open
    a new one) while the queued request is cancelled a random 0-3 scheduler passes later, so
    that sooner or later both land in the same pass in either order.
    """
    with trio.fail_after(10):
        responses = [await upstream.open("GET", "/hold", []) for _ in range(holders)]
        try:
            async with trio.open_nursery() as nursery:
                queued = trio.CancelScope()

                async def queue_behind_holders() -> None:
                    with queued:
                        late = await upstream.open("GET", "/queued", [("X-Probe", "queued")])
                        await late.aclose()

                nursery.start_soon(queue_behind_holders)
                while phase_of(upstream, "queued", False) != "pool wait":
                    await trio.sleep(0.001)

                async def cancel_queued(passes: int) -> None:
                    for _ in range(passes):
                        await trio.lowlevel.checkpoint()
                    queued.cancel()

                nursery.start_soon(cancel_queued, rng.randrange(4))
                nursery.start_soon(responses.pop().aclose)
        finally:
            with trio.CancelScope(shield=True):
                for response in responses:
                    await response.aclose()


async def test_cancelled_relays_under_pool_contention_leak_no_pool_slots(
    nursery: trio.Nursery,
) -> None:
    pool_size = 3
    origin = await start_slow_head_upstream(nursery, HEAD_DELAY_S)
    rng = random.Random(1093)
    leaked_after_round: list[int] = []
    stranded = 0
    phases: Counter[str] = Counter()
    async with Upstream(small_pool_config(origin.url, pool_size)) as upstream:
        for _ in range(ROUNDS):
            report = await run_cancellation_round(upstream, rng)
            phases += report.phases
            stranded += report.stranded
            leaked_after_round.append(len(stuck_connections(upstream)))
            assert upstream.open_connections() <= pool_size

        # The rounds must have hit every part of the header phase, or they prove little.
        assert phases["pool wait"] > 0
        assert phases["head wait"] > 0
        assert leaked_after_round == [0] * ROUNDS, (
            f"pool slots stuck CONNECTING after each round: {leaked_after_round} "
            f"(pool size {pool_size}); cancellations by phase: {dict(phases)}; "
            f"uncancelled requests left without a response: {stranded}; "
            f"pool: {pool_of(upstream).active}"
        )
        assert stranded == 0

        # Then the race itself, many times; a leaked slot cannot be reused, so fewer holders.
        trials = 0
        while trials < COLLISION_TRIALS and (free := pool_size - len(stuck_connections(upstream))):
            await run_collision_trial(upstream, free, rng)
            trials += 1
        leaked = len(stuck_connections(upstream))
        assert leaked == 0, (
            f"{leaked} of {pool_size} pool slots stuck CONNECTING after {trials} collisions "
            f"of a cancellation with a freed slot: {pool_of(upstream).active}"
        )

        # And the pool still works: a PoolTimeout here (UpstreamUnavailable) means leaked slots.
        with trio.fail_after(30):
            response = await upstream.open("GET", "/after", [])
            try:
                assert response.status_code == 200
                assert await response.aread() == BODY
            finally:
                await response.aclose()
        assert upstream.open_connections() <= pool_size


async def test_cancellations_while_connecting_leak_no_pool_slots(nursery: trio.Nursery) -> None:
    """Requests cancelled inside a slow TCP connect, or queued behind one, give their slots back.

    The upstream listens with a backlog of 0 and accepts nothing at first: once one connection
    fills its accept queue, Linux drops further SYNs, so connects hang (the retransmits are
    dropped too; the connect timeout is set far past any round). Then it starts accepting, and
    a request must succeed (a leaked slot would make it a PoolTimeout).
    """
    pool_size, probes = 2, 10
    origin = SlowHeadUpstream(HEAD_DELAY_S)
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    origin.port = sock.getsockname()[1]
    with trio.fail_after(10):
        filler = await trio.open_tcp_stream("127.0.0.1", origin.port)
    with trio.move_on_after(0.05) as probe_scope:
        await (await trio.open_tcp_stream("127.0.0.1", origin.port)).aclose()
    assert probe_scope.cancelled_caught, "connects must hang for this test to mean anything"

    rng = random.Random(3986)
    phases: Counter[str] = Counter()
    # No request may leave a round by a timeout: not the connect's, not the pool's.
    config = small_pool_config(origin.url, pool_size, connect_timeout_s=60.0, pool_timeout_s=60.0)
    async with Upstream(config) as upstream:
        for _ in range(ROUNDS):
            with trio.fail_after(20):
                async with trio.open_nursery() as requests:
                    for index in range(probes):
                        requests.start_soon(upstream.open, "GET", "/c", [("X-Probe", str(index))])
                    # Every request reaches the pool (pool_size connecting, the rest queued
                    # behind them) before the cancellation's random moment, however slowly
                    # they get there on a loaded machine.
                    while any(
                        phase_of(upstream, str(index), False) == "outside pool"
                        for index in range(probes)
                    ):
                        await trio.sleep(0.001)
                    await trio.sleep(rng.uniform(0.005, 0.02))
                    for index in range(probes):
                        phases[phase_of(upstream, str(index), False)] += 1
                    requests.cancel_scope.cancel()
            assert not stuck_connections(upstream), pool_of(upstream).active
            assert upstream.open_connections() <= pool_size
        assert phases["connecting"] >= ROUNDS * pool_size
        assert phases["pool wait"] > 0

        await filler.aclose()
        await nursery.start(trio.serve_listeners, origin.handle, [trio.SocketListener(sock)])
        with trio.fail_after(30):
            response = await upstream.open("GET", "/after", [])
            try:
                assert await response.aread() == BODY
            finally:
                await response.aclose()


# --- through the proxy, over real sockets ----------------------------------------------------


class RecordingUpstream(Upstream):
    """The real Upstream, remembered so the test can look into the proxy's pool."""

    instances: list[Upstream] = []

    def __init__(self, config: ProxyConfig) -> None:
        super().__init__(config)
        RecordingUpstream.instances.append(self)


async def read_head(stream: trio.SocketStream) -> bytes:
    """A response head from a raw client connection (the body that follows is left unread)."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = await stream.receive_some(65536)
        assert chunk, f"connection closed before a response head: {received!r}"
        received += chunk
    return received.partition(b"\r\n\r\n")[0]


async def test_clients_leaving_during_the_header_phase_leave_the_proxy_usable(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clients of the proxy leave while their relays wait for the pool or for the head.

    First rounds of many clients leaving at random moments and then all at once; then the race
    of issue 1093 aimed at: a client whose relay holds the only slot leaves, and a client whose
    relay queues behind it leaves 0-5 scheduler passes later (the proxy runs in this test's
    trio loop, so passes are counted exactly).
    """
    pool_size, clients, rounds, collisions = 2, 12, 5, 30
    monkeypatch.setattr(RecordingUpstream, "instances", [])
    monkeypatch.setattr(relay, "Upstream", RecordingUpstream)
    # No relay gets its head (60 s) or times out (pool 60 s, read 60 s, response 30 s) within
    # a round's 20 s bound, however slow the machine: every client leaves during the header
    # phase, and every relay stays in the pool until its client left.
    origin = await start_slow_head_upstream(nursery, 60.0)
    config = small_pool_config(origin.url, pool_size, pool_timeout_s=60.0, read_timeout_s=60.0)
    proxy_url = await start_app(nursery, proxy.create_app(config), config)
    (upstream,) = RecordingUpstream.instances
    pool = pool_of(upstream)
    host, port = proxy_url.removeprefix("http://").rsplit(":", 1)
    request = f"GET /slow HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    rng = random.Random(9110)
    leaked_after_round: list[int] = []

    for _ in range(rounds):
        streams = []
        with trio.fail_after(20):
            for _ in range(clients):
                stream = await trio.open_tcp_stream(host, int(port))
                await stream.send_all(request)
                streams.append(stream)
            # Every relay is in the header phase: pool_size wait for their head, others queue.
            while len(pool.requests) < clients:
                await trio.sleep(0.002)
            rng.shuffle(streams)
            # A few leave one by one at random moments, the rest all at once (a seek storm).
            for stream in streams[: clients // 3]:
                await trio.sleep(rng.uniform(0, 0.02))
                await stream.aclose()
            for stream in streams[clients // 3 :]:
                stream.socket.close()
            while pool.requests:
                await trio.sleep(0.002)
        leaked_after_round.append(len(stuck_connections(upstream)))
        assert upstream.open_connections() <= pool_size

    assert leaked_after_round == [0] * rounds, (
        f"proxy pool slots stuck CONNECTING after each round: {leaked_after_round} "
        f"(pool size {pool_size}); pool: {pool.active}"
    )

    async def connect(target: str) -> trio.SocketStream:
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        return stream

    trials = 0
    while trials < collisions and not stuck_connections(upstream):
        with trio.fail_after(10):
            holders = [await connect("/stream") for _ in range(pool_size)]
            for holder in holders:
                assert (await read_head(holder)).startswith(b"HTTP/1.1 200")
            queued = await connect("/slow")
            while len(pool.requests) <= pool_size:
                await trio.sleep(0.001)
            holders[0].socket.close()
            for _ in range(rng.randrange(6)):
                await trio.lowlevel.checkpoint()
            queued.socket.close()
            for holder in holders[1:]:
                await holder.aclose()
            while pool.requests:
                await trio.sleep(0.001)
        trials += 1
    assert not stuck_connections(upstream), (
        f"proxy pool slots stuck CONNECTING after {trials} collisions: {pool.active}"
    )
    # A leaked slot would hold this request in the pool until the bound; a healthy pool
    # answers it after the (now short) head delay.
    origin.head_delay_s = HEAD_DELAY_S
    with trio.fail_after(30):
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.get(proxy_url + "/after")
    assert response.status_code == 200, response.text
    assert response.content == BODY


async def test_relay_reads_the_upstream_in_chunks_larger_than_httpcores_64_kib(
    nursery: trio.Nursery, media_dir: Path
) -> None:
    # Each upstream read costs the relay a fixed number of Python steps, so its throughput
    # follows the read size: httpcore's default of 64 KiB halved it (see upstream.py).
    origin = await start_origin(nursery, media_dir=media_dir, chunk_size_bytes=1024 * 1024)
    sizes: list[int] = []
    async with Upstream(proxy_config(origin)) as upstream:
        response = await upstream.open("GET", "/media/big.bin", [])
        try:
            async with aclosing(relay_body(response)) as chunks:
                async for chunk in chunks:
                    sizes.append(len(chunk))
        finally:
            await response.aclose()
    assert sum(sizes) == 3_000_000
    assert max(sizes) > 64 * 1024
    assert max(sizes) <= UPSTREAM_READ_BYTES
