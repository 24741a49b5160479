"""Soak: many clients through the proxy for a while, then count what was lost or leaked.

```sh
.venv/bin/python -m tests.support.soak --duration 60 --clients 200     # make soak
```

A check, not a benchmark: it passes or fails, and its figures are there to explain why. So it
lives with the tests; ``tests/test_soak.py`` runs it for a few seconds in ``make test``.

The origin and the proxy run in this process (one ``trio.run``, as ``trio-range demo`` runs
them), in front of a deterministic file (``media_files``), so that every delivered byte can be
checked against ``expected_bytes`` and every task, socket and file handle can be counted. The
clients are raw sockets in the same process: each loops over random single and multi-range
GETs through the proxy; a third of the requests disconnect at a random point (before the head,
or after a random part of the body) and some read slowly.

After a warm-up at full load the baseline is taken; after the run the servers are left to
settle, then the same figures are taken again. The run fails (exit status 1) when:

- a client saw anything but the intended aborts: a wrong status, a wrong or short body, a
  reset it did not cause, a request slower than its deadline;
- a delivered byte differs from the file (multipart bodies go through the strict reader of
  ``tests/support/multipart_reader.py``);
- sockets (client, proxy and origin sides, from ``/proc/self/net/tcp*`` and our fd table),
  open media files or trio tasks stay above the baseline;
- RSS ends more than ``--rss-tolerance-mib`` above the baseline; both figures are taken after
  glibc's ``malloc_trim`` gave freed heap pages back to the kernel, so that they count memory in
  use, not what the allocator kept of a busy moment (see ``release_free_heap``);
- the statistics of either server disagree with what the clients counted: requests exactly,
  bytes within what the aborts may have left in socket buffers, no failed stream, no active one.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import gc
import math
import os
import pathlib
import random
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import trio

from tests.support.multipart_reader import parse_byteranges, parse_content_range
from tests.support.servers import origin_config, proxy_config, start_app
from trio_range.http.ranges import decide_ranges
from trio_range.media_files import expected_bytes, format_size, parse_size, write_deterministic_file
from trio_range.origin.app import create_app as create_origin
from trio_range.proxy.app import create_app as create_proxy

FILE_NAME = "soak.bin"
MAX_HEAD_BYTES = 64 * 1024
# The largest single range a client asks for, and the largest part of a multi-range request:
# a soak is about many exchanges and their endings, not throughput.
MAX_RANGE_BYTES = 4 * 1024 * 1024
MAX_PART_BYTES = 256 * 1024
REQUEST_DEADLINE_S = 60.0
SETTLE_TIMEOUT_S = 30.0
# Figures that must come back to the baseline, with the allowed excess.
RETURNING_FIGURES = ("tasks", "sockets_but_pool", "media_files", "client_sockets", "proxy_accepted")


@dataclasses.dataclass(frozen=True)
class SoakConfig:
    duration_s: float = 60.0
    clients: int = 200
    warmup_s: float = 5.0
    file_size_bytes: int = 256 * 1024 * 1024
    abort_fraction: float = 1 / 3
    slow_fraction: float = 0.15
    multi_fraction: float = 0.3
    seed: int = 1
    rss_tolerance_mib: float = 8.0
    # The origin closes the proxy's idle pool connections after this: the settle waits for it.
    origin_keep_alive_s: float = 2.0
    # The servers' listen backlog; None keeps their default. With connection-per-request
    # clients, a backlog the busy event loop cannot drain overflows: the kernel drops the
    # handshake, and those clients hang or are reset before any answer.
    backlog: int | None = None


@dataclasses.dataclass
class ClientTally:
    """What the clients counted, summed over all of them."""

    requests: int = 0
    completed: int = 0
    aborted: int = 0
    aborted_before_head: int = 0
    slow: int = 0
    single: int = 0
    multi: int = 0
    bytes_received: int = 0
    bytes_verified: int = 0
    # Body bytes the server may have sent on aborted requests beyond what the client read.
    aborted_unread_bytes: int = 0
    statuses: Counter[int] = dataclasses.field(default_factory=Counter)
    errors: list[str] = dataclasses.field(default_factory=list)

    def error(self, text: str) -> None:
        if len(self.errors) < 50:
            self.errors.append(text)
        else:
            self.errors[-1] = f"... and more ({text})"


@dataclasses.dataclass(frozen=True)
class Census:
    """Resources of this process at one moment."""

    tasks: int
    sockets: int
    media_files: int
    client_sockets: int  # client -> proxy, client side
    proxy_accepted: int  # client -> proxy, proxy side
    proxy_to_origin: int  # the proxy's pool, proxy side
    origin_accepted: int  # the proxy's pool, origin side
    rss_kib: int
    # Which tasks: named in the problem when there are more at the end than before.
    task_names: tuple[str, ...] = dataclasses.field(default=(), repr=False, compare=False)

    @property
    def sockets_but_pool(self) -> int:
        """Open sockets but the proxy's side of an idle pool connection.

        The pool notices that the origin closed an idle connection only when the pool is next
        used, so whether one such socket is left open depends on timing, not on a leak.
        """
        return self.sockets - self.proxy_to_origin


@dataclasses.dataclass
class SoakReport:
    config: SoakConfig
    tally: ClientTally
    baseline: Census
    end: Census
    peak_rss_kib: int
    proxy_stats: dict[str, Any]
    origin_stats: dict[str, Any]
    seconds: float
    problems: list[str]

    def figures(self) -> list[tuple[str, str]]:
        t, b, e = self.tally, self.baseline, self.end
        proxy, origin = self.proxy_stats, self.origin_stats
        mb = 1e6
        return [
            ("duration, s", f"{self.seconds:.1f}"),
            ("clients", str(self.config.clients)),
            ("listen backlog", str(self.config.backlog or "server default")),
            ("file", format_size(self.config.file_size_bytes)),
            ("requests (clients / proxy stats)", f"{t.requests} / {proxy['requests']['total']}"),
            ("completed / aborted on purpose (clients)", f"{t.completed} / {t.aborted}"),
            ("  of which before the response head", str(t.aborted_before_head)),
            ("single / multi-range requests", f"{t.single} / {t.multi}"),
            ("slow readers", str(t.slow)),
            ("statuses", ", ".join(f"{k}: {v}" for k, v in sorted(t.statuses.items()))),
            ("client errors", str(len(t.errors))),
            ("bytes received and verified, MB", f"{t.bytes_verified / mb:.1f}"),
            ("proxy bytes_sent, MB", f"{proxy['bytes_sent'] / mb:.1f}"),
            ("throughput, MB/s", f"{t.bytes_received / mb / self.seconds:.1f}"),
            (
                "proxy streams completed / aborted / failed / active",
                "{completed} / {aborted} / {failed} / {active}".format(**proxy["streams"]),
            ),
            (
                "origin streams completed / aborted / failed / active",
                "{completed} / {aborted} / {failed} / {active}".format(**origin["streams"]),
            ),
            ("upstream errors", str(proxy["upstream"]["errors"])),
            ("trio tasks (baseline / end)", f"{b.tasks} / {e.tasks}"),
            (
                "open sockets but idle pool (baseline / end)",
                f"{b.sockets_but_pool} / {e.sockets_but_pool}",
            ),
            (
                "  client / proxy-side client sockets at end",
                f"{e.client_sockets} / {e.proxy_accepted}",
            ),
            (
                "  pool sockets at end (proxy / origin side)",
                f"{e.proxy_to_origin} / {e.origin_accepted}",
            ),
            ("open media files (baseline / end)", f"{b.media_files} / {e.media_files}"),
            (
                "RSS MiB (baseline / peak / end)",
                f"{b.rss_kib / 1024:.1f} / {self.peak_rss_kib / 1024:.1f} / {e.rss_kib / 1024:.1f}",
            ),
            ("problems", str(len(self.problems))),
        ]


# --- counting resources ----------------------------------------------------------------------


def task_names() -> list[str]:
    """The name of every task of this trio run, from the root task down."""
    names = []
    root = trio.lowlevel.current_root_task()
    assert root is not None  # we are inside trio.run
    pending = [root]
    while pending:
        task = pending.pop()
        names.append(task.name)
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return names


def count_tasks() -> int:
    """Every task of this trio run, from the root task down."""
    return len(task_names())


def _fd_targets() -> Iterator[str]:
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            yield os.readlink(f"/proc/self/fd/{fd}")


def _tcp_sockets() -> Iterator[tuple[int, int, int, str]]:
    """(local port, remote port, inode, state) of every TCP socket the kernel lists."""
    for name in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(OSError), open(name) as table:
            next(table)
            for line in table:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                local_port = int(local.rsplit(":", 1)[1], 16)
                remote_port = int(remote.rsplit(":", 1)[1], 16)
                yield local_port, remote_port, int(inode), state


def census(proxy_port: int, origin_port: int, media_path: pathlib.Path) -> Census:
    targets = list(_fd_targets())
    ours = {int(t[8:-1]) for t in targets if t.startswith("socket:[")}
    media = str(media_path)
    counts: Counter[str] = Counter()
    listening = "0A"
    for local, remote, inode, state in _tcp_sockets():
        if inode not in ours or state == listening:
            continue
        if remote == proxy_port:
            counts["client_sockets"] += 1
        elif local == proxy_port:
            counts["proxy_accepted"] += 1
        elif remote == origin_port:
            counts["proxy_to_origin"] += 1
        elif local == origin_port:
            counts["origin_accepted"] += 1
    names = task_names()
    return Census(
        tasks=len(names),
        sockets=len(ours),
        media_files=sum(t == media for t in targets),
        client_sockets=counts["client_sockets"],
        proxy_accepted=counts["proxy_accepted"],
        proxy_to_origin=counts["proxy_to_origin"],
        origin_accepted=counts["origin_accepted"],
        rss_kib=rss_kib(trimmed=True),
        task_names=tuple(names),
    )


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, not Linux)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


MALLOC_TRIM = _malloc_trim()


def release_free_heap() -> None:
    """Give the pages of freed heap memory back to the kernel, in every malloc arena.

    Without it RSS measures the allocator, not a leak: glibc keeps what was freed in the heap for
    reuse, and the peak of a busy moment stays resident when a few live blocks sit above it.
    Measured on the short soak (tests/test_soak.py, 6 runs, mallinfo2 alongside): the bytes in
    use were the same at baseline and end to 0.1 MiB, while RSS grew by 4 to 16 MiB, all of it
    free heap; after ``malloc_trim(0)`` RSS grew by 0.4 to 0.7 MiB.
    """
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)


def rss_kib(*, trimmed: bool = False) -> int:
    """This process's resident memory; ``trimmed``: after ``release_free_heap``."""
    if trimmed:
        release_free_heap()
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# --- one client --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Plan:
    """One request a client makes and how it ends."""

    range_value: str
    abort_at: int | None  # None: read everything; -1: leave before the head; n: after n bytes
    slow: bool
    multi: bool


def random_plan(rng: random.Random, config: SoakConfig) -> Plan:
    size = config.file_size_bytes
    multi = rng.random() < config.multi_fraction
    if multi:
        specs = []
        for _ in range(rng.randint(2, 6)):
            start = rng.randrange(size)
            length = rng.randint(1, MAX_PART_BYTES)
            specs.append(f"{start}-{min(size - 1, start + length - 1)}")
        if rng.random() < 0.2:
            specs.append(f"-{rng.randint(1, MAX_PART_BYTES)}")
        value = "bytes=" + ",".join(specs)
    else:
        length = max(1, int(math.exp(rng.uniform(0, math.log(MAX_RANGE_BYTES)))))
        kind = rng.random()
        if kind < 0.1:
            value = f"bytes=-{length}"
        elif kind < 0.2:
            value = f"bytes={size - length}-"
        else:
            start = rng.randrange(size)
            value = f"bytes={start}-{start + length - 1}"
    abort_at: int | None = None
    if rng.random() < config.abort_fraction:
        abort_at = -1 if rng.random() < 0.1 else rng.randrange(MAX_RANGE_BYTES)
    return Plan(value, abort_at, rng.random() < config.slow_fraction, multi)


class _Reader:
    """Reads a response off a stream, counting and pacing as the plan says."""

    def __init__(self, stream: trio.SocketStream, plan: Plan, rng: random.Random) -> None:
        self.stream = stream
        self.plan = plan
        self.rng = rng
        self.buffer = bytearray()
        self.body_read = 0
        self.phase = "waiting for the head"

    async def _more(self) -> bytes:
        if self.plan.slow:
            await trio.sleep(self.rng.uniform(0.005, 0.03))
        data = await self.stream.receive_some(16 * 1024 if self.plan.slow else 256 * 1024)
        if not data:
            raise EOFError(f"connection closed early, {self.phase}")
        return data

    async def head(self) -> tuple[int, dict[str, str]]:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise ValueError("response head too large")
            self.buffer += await self._more()
        head = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[: end + 4]
        status_line, *lines = head.split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split(" ")[1]), headers

    async def body_chunks(self, length: int) -> AsyncIterator[bytes]:
        """Yield the body in chunks; stops early (returns) at the plan's abort point."""
        limit = length if self.plan.abort_at is None else min(length, self.plan.abort_at)
        while self.body_read < limit:
            self.phase = f"after {self.body_read} of {length} body bytes"
            if not self.buffer:
                self.buffer += await self._more()
            take = bytes(self.buffer[: limit - self.body_read])
            del self.buffer[: len(take)]
            self.body_read += len(take)
            yield take


async def run_one(
    url: str,
    plan: Plan,
    config: SoakConfig,
    tally: ClientTally,
    rng: random.Random,
    progress: list[_Reader],
) -> None:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    size = config.file_size_bytes
    request = (
        f"GET /media/{FILE_NAME} HTTP/1.1\r\nHost: soak\r\nRange: {plan.range_value}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    tally.requests += 1
    tally.multi += plan.multi
    tally.single += not plan.multi
    tally.slow += plan.slow
    decision = decide_ranges(plan.range_value, None, size)
    expected_ranges = [(r.start, r.stop - 1) for r in decision.ranges]
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request)
        if plan.abort_at == -1:
            tally.aborted += 1
            tally.aborted_before_head += 1
            tally.aborted_unread_bytes += sum(b - a + 1 for a, b in expected_ranges) + 4096
            return
        reader = _Reader(stream, plan, rng)
        progress.append(reader)
        status, headers = await reader.head()
        tally.statuses[status] += 1
        if status != 206:
            raise ValueError(f"{plan.range_value[:80]}: status {status}, expected 206")
        length = int(headers["content-length"])
        content_type = headers.get("content-type", "")
        if content_type.startswith("multipart/byteranges"):
            body = bytearray()
            async for data in reader.body_chunks(length):
                body += data
            tally.bytes_received += len(body)
            if len(body) < length:
                tally.aborted += 1
                tally.aborted_unread_bytes += length - len(body)
                return
            parts = parse_byteranges(bytes(body), content_type)
            declared = []
            for _, content_range, data in parts:
                first, last, total = parse_content_range(content_range)
                if total != size or data != expected_bytes(size, first, last - first + 1):
                    raise ValueError(f"wrong bytes in part {content_range}")
                declared.append((first, last))
            verified = len(body)
        else:
            first, last, total = parse_content_range(headers["content-range"])
            if total != size or last - first + 1 != length:
                raise ValueError(f"Content-Range {headers['content-range']} for {length} bytes")
            declared = [(first, last)]
            position = first
            async for data in reader.body_chunks(length):
                if data != expected_bytes(size, position, len(data)):
                    raise ValueError(f"wrong bytes at offset {position}")
                position += len(data)
            verified = position - first
            tally.bytes_received += verified
            if verified < length:
                tally.bytes_verified += verified
                tally.aborted += 1
                tally.aborted_unread_bytes += length - verified
                return
        if declared != expected_ranges:
            raise ValueError(f"{plan.range_value[:80]}: served {declared}, asked {expected_ranges}")
        tally.bytes_verified += verified
        tally.completed += 1


async def client_loop(
    url: str, config: SoakConfig, tally: ClientTally, until: float, seed: int
) -> None:
    rng = random.Random(seed)
    while trio.current_time() < until:
        plan = random_plan(rng, config)
        progress: list[_Reader] = []
        try:
            with trio.fail_after(REQUEST_DEADLINE_S):
                await run_one(url, plan, config, tally, rng, progress)
        except (ValueError, EOFError, KeyError, OSError, trio.BrokenResourceError) as error:
            tally.error(f"{plan.range_value[:60]}: {type(error).__name__}: {error}")
        except trio.TooSlowError:
            phase = progress[0].phase if progress else "connecting or sending"
            tally.error(f"{plan.range_value[:60]}: not done in {REQUEST_DEADLINE_S} s, {phase}")


async def run_clients(url: str, config: SoakConfig, tally: ClientTally, seconds: float) -> None:
    until = trio.current_time() + seconds
    async with trio.open_nursery() as nursery:
        for index in range(config.clients):
            nursery.start_soon(
                client_loop, url, config, tally, until, config.seed * 100_003 + index
            )


# --- the run -----------------------------------------------------------------------------------


async def stats_of(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    document: dict[str, Any] = (await client.get(url + "/stats")).json()
    return document


def stats_delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """``after - before`` for every number, recursively (gauges keep their ``after`` value)."""
    delta: dict[str, Any] = {}
    for key, value in after.items():
        old = before.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            delta[key] = stats_delta(value, old)
        elif key in ("active", "open_connections", "uptime_s"):
            delta[key] = value
        elif isinstance(value, int | float) and isinstance(old, int | float):
            delta[key] = value - old
        else:
            delta[key] = value
    return delta


async def settle(
    client: httpx.AsyncClient,
    proxy: str,
    origin: str,
    measure: Callable[[], Census],
    config: SoakConfig,
    tally: ClientTally,
    most_tasks: int | None = None,
) -> Census:
    """Wait until nothing is in flight and the origin has closed every idle pool connection.

    With ``most_tasks``, also until no more tasks than that are left: a connection's task can
    outlive its socket for a moment on a busy machine, a leaked one stays until the timeout.

    The pool notices that the origin closed an idle pooled connection only when it is next
    used, so a one-byte request through the proxy after each keep-alive period prunes them; the
    request is counted like any other.
    """
    try:
        with trio.fail_after(SETTLE_TIMEOUT_S):
            while True:
                # The census first: the stats requests' own connections are still closing after.
                gc.collect()
                now = measure()
                proxy_stats = await stats_of(client, proxy)
                origin_stats = await stats_of(client, origin)
                if (
                    proxy_stats["streams"]["active"] == 0
                    and origin_stats["streams"]["active"] == 0
                    and now.client_sockets == 0
                    and now.proxy_accepted == 0
                    and now.proxy_to_origin <= 1
                    and now.origin_accepted == 0
                    and now.media_files == 0
                    and (most_tasks is None or now.tasks <= most_tasks)
                ):
                    return now
                tally.requests += 1
                tally.completed += 1
                tally.single += 1
                response = await client.get(
                    proxy + f"/media/{FILE_NAME}", headers={"Range": "bytes=0-0"}
                )
                tally.statuses[response.status_code] += 1
                tally.bytes_received += len(response.content)
                tally.bytes_verified += len(response.content)
                # Long enough for the origin to close idle pool connections, and for the probe's
                # own connection to be closed at both ends before the next census.
                await trio.sleep(config.origin_keep_alive_s + 0.2)
    except trio.TooSlowError:
        now = measure()
        tasks = Counter(now.task_names)
        raise trio.TooSlowError(
            f"not settled after {SETTLE_TIMEOUT_S} s: {now}, tasks {dict(tasks)}"
        ) from None


async def soak(config: SoakConfig, directory: pathlib.Path) -> SoakReport:
    """Run the soak in the current trio run; everything it starts is stopped on return."""
    media_dir = directory / "media"
    media_path = media_dir / FILE_NAME
    if not media_path.exists() or media_path.stat().st_size != config.file_size_bytes:
        await trio.to_thread.run_sync(write_deterministic_file, media_path, config.file_size_bytes)
    problems: list[str] = []
    async with trio.open_nursery() as servers:
        listen = {} if config.backlog is None else {"backlog": config.backlog}
        origin_cfg = origin_config(
            **listen,
            media_dir=media_dir,
            default_file=FILE_NAME,
            keep_alive_timeout_s=config.origin_keep_alive_s,
        )
        origin = await start_app(servers, create_origin(origin_cfg), origin_cfg)
        proxy_cfg = proxy_config(origin, pool_size=config.clients, **listen)
        proxy = await start_app(servers, create_proxy(proxy_cfg), proxy_cfg)
        proxy_port = int(proxy.rsplit(":", 1)[1])
        origin_port = int(origin.rsplit(":", 1)[1])

        def measure() -> Census:
            return census(proxy_port, origin_port, media_path.resolve())

        # No keep-alive: the monitoring client must not hold sockets that the census counts.
        no_keep_alive = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=30, limits=no_keep_alive) as client:
            warmup = ClientTally()
            await run_clients(proxy, config, warmup, config.warmup_s)
            problems += [f"warm-up: {error}" for error in warmup.errors]
            tally = ClientTally()
            baseline = await settle(client, proxy, origin, measure, config, tally)
            proxy_before = await stats_of(client, proxy)
            origin_before = await stats_of(client, origin)
            tally = ClientTally()
            peak = [baseline.rss_kib]

            async def sample_rss() -> None:
                while True:
                    peak[0] = max(peak[0], rss_kib())
                    await trio.sleep(0.1)

            started = trio.current_time()
            async with trio.open_nursery() as sampler:
                sampler.start_soon(sample_rss)
                await run_clients(proxy, config, tally, config.duration_s)
                sampler.cancel_scope.cancel()
            seconds = trio.current_time() - started
            end = await settle(client, proxy, origin, measure, config, tally, baseline.tasks)
            proxy_stats = stats_delta(await stats_of(client, proxy), proxy_before)
            origin_stats = stats_delta(await stats_of(client, origin), origin_before)
        servers.cancel_scope.cancel()

    report = SoakReport(
        config, tally, baseline, end, peak[0], proxy_stats, origin_stats, seconds, problems
    )
    problems += check(report)
    return report


def check(report: SoakReport) -> list[str]:
    """Every way the run can fail, as sentences; empty when it passed."""
    t, b, e = report.tally, report.baseline, report.end
    proxy, origin = report.proxy_stats, report.origin_stats
    problems = [f"client error: {error}" for error in t.errors]
    if t.completed + t.aborted + len(t.errors) != t.requests:
        problems.append(f"{t.requests} requests but {t.completed} + {t.aborted} + errors ended")
    for figure in RETURNING_FIGURES:
        if getattr(e, figure) > getattr(b, figure):
            problems.append(
                f"{figure}: {getattr(e, figure)} at the end, {getattr(b, figure)} before"
            )
    if e.tasks > b.tasks:
        extra = Counter(e.task_names) - Counter(b.task_names)
        problems.append(f"tasks at the end but not before: {sorted(extra.elements())}")
    grown_mib = (e.rss_kib - b.rss_kib) / 1024
    if grown_mib > report.config.rss_tolerance_mib:
        problems.append(f"RSS grew by {grown_mib:.1f} MiB")
    # Each server counts every request it received; clients that left right after sending
    # may be gone before the proxy read the request.
    if not t.requests - t.aborted_before_head <= proxy["requests"]["total"] <= t.requests:
        problems.append(
            f"proxy counted {proxy['requests']['total']} requests, clients {t.requests}"
        )
    if origin["requests"]["total"] > proxy["requests"]["total"]:
        problems.append("the origin counted more requests than the proxy")
    if proxy["requests"]["by_status"].get("206", 0) < t.completed:
        problems.append("fewer 206 answers counted than completed requests")
    for role, stats in (("proxy", proxy), ("origin", origin)):
        streams = stats["streams"]
        if streams["active"] or streams["failed"]:
            problems.append(f"{role}: {streams['active']} active, {streams['failed']} failed")
    # Not compared (yet): the proxy's streams.aborted with the clients' aborts. The proxy now
    # counts a stream as aborted when its client closes right after the last body byte, before
    # the final empty body message; both figures are printed.
    # What the proxy sent: at least what the clients read, at most that plus what aborted
    # clients left unread.
    sent = proxy["bytes_sent"]
    if not t.bytes_received <= sent <= t.bytes_received + t.aborted_unread_bytes:
        problems.append(
            f"proxy bytes_sent {sent}, clients read {t.bytes_received} "
            f"(+ at most {t.aborted_unread_bytes} unread on aborts)"
        )
    errors = proxy["upstream"]["errors"]
    if any(errors.values()):
        problems.append(f"upstream errors: {errors}")
    return problems


def print_report(report: SoakReport) -> None:
    width = max(len(name) for name, _ in report.figures())
    for name, value in report.figures():
        print(f"{name:<{width}}  {value}")
    for problem in report.problems:
        print("PROBLEM:", problem)
    print("PASS" if not report.problems else "FAIL")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before")
    parser.add_argument("--file-size", default="256MiB")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rss-tolerance-mib", type=float, default=8.0)
    parser.add_argument("--backlog", type=int, default=None, help="listen backlog of both")
    parser.add_argument("--dir", type=pathlib.Path, default=None, help="where the file goes")
    args = parser.parse_args(argv)
    config = SoakConfig(
        duration_s=args.duration,
        clients=args.clients,
        warmup_s=args.warmup,
        file_size_bytes=parse_size(args.file_size),
        seed=args.seed,
        rss_tolerance_mib=args.rss_tolerance_mib,
        backlog=args.backlog,
    )

    async def run() -> SoakReport:
        # Bounded as a whole: load, warm-up, the two settles and the file.
        with trio.fail_after(config.duration_s + config.warmup_s + 4 * SETTLE_TIMEOUT_S + 120):
            if args.dir is not None:
                return await soak(config, args.dir)
            with tempfile.TemporaryDirectory(prefix="trio-range-soak-") as directory:
                return await soak(config, pathlib.Path(directory))

    report = trio.run(run)
    print_report(report)
    return 0 if not report.problems else 1


if __name__ == "__main__":
    sys.exit(main())
