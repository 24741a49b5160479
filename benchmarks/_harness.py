"""What every benchmark shares: where results go, the run's deadline and load average, the test
file, tables, a checked HTTP/1.1 client, server subprocesses, and CPU and memory from /proc.

Blocking code on purpose: a benchmark client must be as cheap per byte as possible, and one
blocking socket that lets the kernel discard the bulk of the body is the cheapest Python can do
(see ``fetch_socket``). Every wait is bounded by a deadline.

The loads several benchmarks drive through a chain of servers (streams, a slow reader, wrk)
are in ``benchmarks._load``; the in-process disconnect measurement is in
``benchmarks._disconnect``. Benchmarks import these three, never each other.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pathlib
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import httpx

from trio_range.media_files import expected_bytes, format_size, write_deterministic_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Git-ignored: nothing a benchmark writes is committed.
RESULTS_DIR = ROOT / "benchmarks" / "results"
LOG_DIR = RESULTS_DIR / "logs"
MEDIA_DIR = RESULTS_DIR / "media"
HOST = "127.0.0.1"
# The seed of every test file (trio_range.media_files), so any byte served can be checked.
SEED = 0
REQUEST_DEADLINE_S = 120.0
READY_TIMEOUT_S = 20.0
# Above this 1-minute load average, other work on the two cores skews the figures.
BUSY_LOAD = 0.5
# Our servers log nothing per request, like nginx with ``access_log off``: like for like.
NO_ACCESS_LOG = ("--access-log", "false")

RECV_BUFFER_BYTES = 1 << 20
# How much of the body's start and end a fetch keeps, so a caller can check the bytes.
SAMPLE_BYTES = 64 * 1024
MAX_HEAD_BYTES = 64 * 1024
# Every request-rate figure asks for ranges of this size, at random offsets.
SMALL_RANGE_BYTES = 4096

T = TypeVar("T")


# --- the run ---------------------------------------------------------------------------------


class BenchmarkError(Exception):
    """A server did not start, answered wrongly, or a deadline passed."""


def run_benchmark(
    run: Callable[[argparse.Namespace], dict[str, Any] | None], args: argparse.Namespace
) -> int:
    """Run a benchmark's ``run(args)``; the results it returns are written as JSON to
    ``args.output``.

    SIGTERM exits through ``finally`` blocks (its default action would leave the servers
    running); a failed check or Ctrl-C gives an exit status and a line, not a traceback.
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        results = run(args)
    except BenchmarkError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    if results is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.output}")
    return 0


def add_run_options(
    parser: argparse.ArgumentParser, benchmark: str, *, time_limit_s: float, wrk: bool
) -> None:
    """The options of a benchmark that compares with nginx: where nginx (and wrk) are, the
    overall time limit, and where its results go."""
    parser.add_argument("--nginx", metavar="PATH", help="nginx binary (default: found on PATH)")
    if wrk:
        parser.add_argument("--wrk", metavar="PATH", help="wrk binary (default: found on PATH)")
    parser.add_argument(
        "--time-limit-s",
        type=float,
        default=time_limit_s,
        help=f"give up after this long (default {time_limit_s:g})",
    )
    parser.add_argument("--output", type=pathlib.Path, default=RESULTS_DIR / f"{benchmark}.json")


def results_header(benchmark: str, **machine: Any) -> dict[str, Any]:
    """What every results file starts with: the benchmark, when, its command line, the machine."""
    return {
        "benchmark": benchmark,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": f"python -m benchmarks.{benchmark} " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            **machine,
        },
    }


class Clock:
    """The run's overall deadline and the load averages seen along the way.

    Records the load at the start and warns when the machine is already busy: figures taken
    under load are not comparable with quiet ones.
    """

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.deadline = time.monotonic() + limit_s
        self.loads: list[dict[str, Any]] = []
        load = self.record_load("start")
        if load > BUSY_LOAD:
            print(f"warning: load average {load:.2f} before starting; other work will skew figures")

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise BenchmarkError(f"time limit of {self.limit_s} s reached")

    def record_load(self, when: str) -> float:
        load = os.getloadavg()
        self.loads.append({"when": when, "load_1_5_15": [round(x, 2) for x in load]})
        return load[0]

    def print_loads(self) -> None:
        """One line with the load averages recorded during the run."""
        print(
            "\nload average (1, 5, 15 min): "
            + "; ".join(
                f"{entry['when']} {' '.join(f'{x:.2f}' for x in entry['load_1_5_15'])}"
                for entry in self.loads
            )
        )


def load_1min() -> float:
    return round(os.getloadavg()[0], 2)


def rotated(items: Sequence[T], shift: int) -> list[T]:
    """``items`` starting at ``shift``: each round puts another candidate first, so drift on a
    shared machine hits them alike."""
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


# --- the test file ---------------------------------------------------------------------------


def media_file(size: int) -> pathlib.Path:
    """The deterministic test file of ``size`` bytes in MEDIA_DIR, written unless it is there.

    Servers serve MEDIA_DIR at ``/media/``. The check of an existing file reads 12 KiB, so
    later runs start at once.
    """
    path = MEDIA_DIR / f"deterministic-{format_size(size)}.bin"
    if path.exists() and path.stat().st_size == size and _sample_matches(path, size):
        print(f"using {path.relative_to(ROOT)}")
        return path
    print(f"writing {path.relative_to(ROOT)} ({format_size(size)}) ...", end=" ", flush=True)
    started = time.perf_counter()
    write_deterministic_file(path, size, seed=SEED)
    seconds = time.perf_counter() - started
    print(f"{size / seconds / 1e6:.0f} MB/s")
    return path


def _sample_matches(path: pathlib.Path, size: int) -> bool:
    with open(path, "rb") as file:
        for start in (0, size // 3, max(0, size - 4096)):
            file.seek(start)
            length = min(4096, size - start)
            if file.read(length) != expected_bytes(size, start, length, seed=SEED):
                return False
    return True


# --- tables ----------------------------------------------------------------------------------


def print_table(
    title: str, columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[str] | str]
) -> None:
    """A blank line, ``title`` (if any), a header and a rule, then one line per row.

    ``columns`` are (heading, format spec) pairs, e.g. ``("median", "<36")``. A row is its cells
    as text, laid out by the same specs; a row that is a single ``str`` is printed as it is (a
    note under the row above).
    """
    print()
    if title:
        print(title)
    header = "".join(format(heading, spec) for heading, spec in columns)
    print(header)
    print("-" * len(header))
    for row in rows:
        if isinstance(row, str):
            print(row)
        else:
            print("".join(format(cell, spec) for cell, (_, spec) in zip(row, columns, strict=True)))


def ratio_cell(ratio: float | None) -> str:
    """A ratio as every table shows it: ours over the baseline, ``1.17x``; ``-`` when none."""
    return "-" if ratio is None else f"{ratio:.2f}x"


# --- the client ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Fetch:
    """One response read to its end."""

    status: int
    headers: dict[str, str]  # lower-case names; repeated fields joined with ", "
    body_bytes: int
    seconds: float  # from connect to the last body byte
    first: bytes  # the first SAMPLE_BYTES of the body (all of it if shorter)
    last: bytes  # the last SAMPLE_BYTES of the body (all of it if shorter)

    @property
    def mb_per_s(self) -> float:
        return self.body_bytes / self.seconds / 1e6


Fetcher = Callable[[str, int, str, dict[str, str], float], Fetch]


def fetch_socket(
    host: str, port: int, path: str, headers: dict[str, str], deadline_s: float
) -> Fetch:
    """GET ``path`` over a fresh connection, keeping only the body's first and last bytes.

    The bytes in between are discarded inside the kernel (``recv`` with ``MSG_TRUNC``, which on
    a Linux TCP socket drops data without copying it out): with a copy into a buffer this client
    took ~2 GB/s from nginx and was the bottleneck; discarding, it takes ~5 GB/s. The bytes kept
    (SAMPLE_BYTES at each end) are read normally, so the caller can still check them.
    """
    deadline = time.monotonic() + deadline_s
    started = time.perf_counter()
    with socket.create_connection((host, port), timeout=deadline_s) as sock:
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head, body_start = read_head(sock, deadline)
        status, response_headers = parse_head(head)
        declared = response_headers.get("content-length")
        if declared is None or "chunked" in response_headers.get("transfer-encoding", ""):
            raise BenchmarkError(f"GET {path}: no Content-Length; the client needs one")
        length = int(declared)
        tail_start = length - SAMPLE_BYTES
        first, last = bytearray(), bytearray()

        def keep(data: memoryview, position: int) -> None:
            if position < SAMPLE_BYTES:
                first.extend(data[: SAMPLE_BYTES - position])
            if position + len(data) > tail_start:
                last.extend(data[max(0, tail_start - position) :])

        view = memoryview(bytearray(RECV_BUFFER_BYTES))
        keep(memoryview(body_start)[:length], 0)
        position = len(body_start)
        while position < length:
            if time.monotonic() > deadline:
                raise BenchmarkError(f"GET {path}: not complete after {deadline_s} s")
            middle_left = tail_start - position
            if position >= SAMPLE_BYTES and middle_left > 0:
                count = sock.recv_into(view, min(RECV_BUFFER_BYTES, middle_left), socket.MSG_TRUNC)
            else:
                count = sock.recv_into(view, min(RECV_BUFFER_BYTES, length - position))
                keep(view[:count], position)
            if count == 0:
                break
            position += count
        seconds = time.perf_counter() - started

    if position != length:
        raise BenchmarkError(f"GET {path}: body of {position} bytes, declared {length}")
    return Fetch(status, response_headers, position, seconds, bytes(first), bytes(last))


def read_head(sock: socket.socket, deadline: float) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        if time.monotonic() > deadline or len(data) > MAX_HEAD_BYTES:
            raise BenchmarkError("response head too slow or too large")
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchmarkError(f"connection closed inside the response head: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, status, *_ = status_line.split(" ", 2)
    if not version.startswith("HTTP/1."):
        raise BenchmarkError(f"not an HTTP/1.x response: {status_line!r}")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return int(status), headers


def fetch_httpx(
    host: str, port: int, path: str, headers: dict[str, str], deadline_s: float
) -> Fetch:
    """The same GET through httpx's streaming API, for comparison with ``fetch_socket``."""
    deadline = time.monotonic() + deadline_s
    first = bytearray()
    last = b""
    received = 0
    started = time.perf_counter()
    with (
        httpx.Client(timeout=deadline_s) as client,
        client.stream(
            "GET",
            f"http://{host}:{port}{path}",
            headers={"Accept-Encoding": "identity", **headers},
        ) as response,
    ):
        for chunk in response.iter_raw(chunk_size=RECV_BUFFER_BYTES):
            if time.monotonic() > deadline:
                raise BenchmarkError(f"GET {path}: not complete after {deadline_s} s")
            received += len(chunk)
            if len(first) < SAMPLE_BYTES:
                first += chunk[: SAMPLE_BYTES - len(first)]
            last = (last + chunk)[-SAMPLE_BYTES:] if len(chunk) < SAMPLE_BYTES else chunk
        seconds = time.perf_counter() - started
        response_headers = {k.lower(): v for k, v in response.headers.items()}
        status = response.status_code
    return Fetch(status, response_headers, received, seconds, bytes(first), last[-SAMPLE_BYTES:])


CLIENTS: dict[str, Fetcher] = {"socket": fetch_socket, "httpx": fetch_httpx}


def checked(
    fetcher: Fetcher,
    server: Server,
    path: str,
    headers: dict[str, str],
    size: int,
    start: int,
    length: int,
) -> Fetch:
    """Fetch, then check status, length, Content-Range and the bytes at both ends.

    ``path`` is a ``media_file`` of ``size`` bytes; a Range header asks for ``length`` bytes
    from ``start``. A wrong answer fails the run instead of giving a figure.
    """
    fetch = fetcher(server.host, server.port, path, headers, REQUEST_DEADLINE_S)
    where = f"{server.name} GET {path} {headers or ''}"
    partial = "Range" in headers
    if fetch.status != (206 if partial else 200):
        raise BenchmarkError(f"{where}: status {fetch.status}")
    if fetch.body_bytes != length:
        raise BenchmarkError(f"{where}: {fetch.body_bytes} bytes, expected {length}")
    if partial:
        content_range = f"bytes {start}-{start + length - 1}/{size}"
        if fetch.headers.get("content-range") != content_range:
            raise BenchmarkError(
                f"{where}: Content-Range {fetch.headers.get('content-range')!r}, "
                f"expected {content_range!r}"
            )
    if fetch.first != expected_bytes(size, start, len(fetch.first), seed=SEED):
        raise BenchmarkError(f"{where}: wrong bytes at the start of the body")
    tail_start = start + length - len(fetch.last)
    if fetch.last != expected_bytes(size, tail_start, len(fetch.last), seed=SEED):
        raise BenchmarkError(f"{where}: wrong bytes at the end of the body")
    return fetch


def check_small_range(candidate: Candidate, path: str, size: int) -> None:
    """wrk counts responses, it does not check them: check one small range's bytes first."""
    start = 987_654_321 % (size - SMALL_RANGE_BYTES)
    header = {"Range": f"bytes={start}-{start + SMALL_RANGE_BYTES - 1}"}
    checked(fetch_socket, candidate.entry, path, header, size, start, SMALL_RANGE_BYTES)


# --- servers ---------------------------------------------------------------------------------


def free_port(host: str = HOST) -> int:
    # The port is free now; another process could take it before the server binds, in which
    # case the server exits and wait_until_serving says so.
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclasses.dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: pathlib.Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One path from the client to the file: the servers on it, the one the client meets first."""

    name: str
    tiers: tuple[Server, ...]  # every server process on the path, the client's first
    description: str

    @property
    def entry(self) -> Server:
        """Where the client connects."""
        return self.tiers[0]

    @property
    def proxy(self) -> Server:
        """The relaying process of a path through a proxy."""
        if len(self.tiers) < 2:
            raise BenchmarkError(f"{self.name} has no proxy")
        return self.tiers[0]


class ServerGroup(contextlib.ExitStack):
    """The servers of one benchmark, each stopped when the group closes.

    A server listens on HOST, logs to ``LOG_DIR/<log_prefix>-<name>.log`` and is ready when it
    answers ``GET ready_path``. The ``start_*`` methods start the servers every comparison
    uses, each one process serving MEDIA_DIR at ``/media/`` or relaying to one upstream, none
    logging per request.
    """

    def __init__(self, log_prefix: str, ready_path: str) -> None:
        super().__init__()
        self.log_prefix = log_prefix
        self.ready_path = ready_path
        self._scratch: pathlib.Path | None = None

    def start(
        self, name: str, argv: Sequence[str], port: int, *, env: dict[str, str] | None = None
    ) -> Server:
        """Start ``argv`` (listening on HOST:``port``) and wait until it serves.

        ``env``: variables added to this process's environment for the server (e.g. the
        settings of an app started by ``hypercorn``, which reads them from the environment).
        """
        log_path = LOG_DIR / f"{self.log_prefix}-{name}.log"
        server = spawn_server(name, argv, port=port, log_path=log_path, env=env)
        self.callback(stop, server.process)
        wait_until_serving(server, self.ready_path, READY_TIMEOUT_S)
        return server

    def start_origin(self, name: str) -> Server:
        """``trio-range origin`` on MEDIA_DIR, as a user starts it."""
        port = free_port()
        options = ["--port", str(port), "--media-dir", str(MEDIA_DIR)]
        return self.start(name, _trio_range_argv("origin", *options), port)

    def start_proxy(self, name: str, upstream: Server) -> Server:
        """``trio-range proxy`` in front of ``upstream``."""
        port = free_port()
        options = ["--port", str(port), "--upstream", upstream.url]
        return self.start(name, _trio_range_argv("proxy", *options), port)

    def start_nginx(
        self,
        nginx: str,
        name: str,
        *,
        upstream: Server | None = None,
        proxy_buffer_kib: int | None = None,
    ) -> Server:
        """nginx serving MEDIA_DIR with ``sendfile``, or with ``upstream`` relaying to it
        (``write_nginx_proxy_conf``, with its ``proxy_buffer_kib``)."""
        port = free_port()
        directory = self._scratch_dir() / name
        if upstream is None:
            conf = write_nginx_conf(directory, host=HOST, port=port, media_dir=MEDIA_DIR)
        else:
            conf = write_nginx_proxy_conf(
                directory,
                host=HOST,
                port=port,
                upstream_port=upstream.port,
                proxy_buffer_kib=proxy_buffer_kib,
            )
        return self.start(name, nginx_argv(nginx, conf), port)

    def _scratch_dir(self) -> pathlib.Path:
        """A temporary directory for the group's nginx configs, removed when the group closes."""
        if self._scratch is None:
            name = self.enter_context(tempfile.TemporaryDirectory(prefix=f"{self.log_prefix}-"))
            self._scratch = pathlib.Path(name)
        return self._scratch


def _trio_range_argv(role: str, *options: str) -> list[str]:
    program = ROOT / ".venv" / "bin" / "trio-range"
    if not program.exists():
        raise BenchmarkError(f"{program} not found: run `make` or `pip install -e .`")
    return [str(program), role, "--host", HOST, *NO_ACCESS_LOG, *options]


def spawn_server(
    name: str,
    argv: Sequence[str],
    *,
    port: int,
    log_path: pathlib.Path,
    env: dict[str, str] | None = None,
) -> Server:
    """Start ``argv`` without waiting for it; the caller waits (``wait_until_serving``) and stops.

    For callers that cannot block while the server starts, e.g. a trio program whose own
    in-process server must answer the readiness request (wait in ``trio.to_thread``).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        # Its own session, so stopping it also stops any worker processes it forked.
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=None if env is None else {**os.environ, **env},
        )
    return Server(name, process, HOST, port, log_path)


def wait_until_serving(server: Server, path: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchmarkError(
                f"{server.name} exited with status {server.process.returncode} before serving:\n"
                f"{server.log_tail()}"
            )
        try:
            fetch = fetch_socket(server.host, server.port, path, {"Range": "bytes=0-0"}, 2.0)
        except (OSError, BenchmarkError) as error:
            last_error = error
            time.sleep(0.05)
            continue
        if fetch.status in (200, 206):
            return
        last_error = BenchmarkError(f"status {fetch.status}")
        time.sleep(0.05)
    raise BenchmarkError(
        f"{server.name} not serving {path} on {server.host}:{server.port} after {timeout_s} s "
        f"({last_error}):\n{server.log_tail()}"
    )


def stop(process: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """SIGTERM the process's group, then SIGKILL it if it has not exited within ``grace_s``."""
    if process.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def find_nginx(path: str | None = None) -> str | None:
    """``path`` (from --nginx), else nginx on PATH or /usr/sbin/nginx; None if not executable."""
    found = path if path is not None else shutil.which("nginx") or "/usr/sbin/nginx"
    return found if os.access(found, os.X_OK) else None


def find_wrk(path: str | None = None) -> str | None:
    """``path`` (a --wrk option), else wrk on PATH; None if not executable."""
    found = path if path is not None else shutil.which("wrk")
    return found if found is not None and os.access(found, os.X_OK) else None


def nginx_version(nginx: str) -> str:
    done = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10, check=False)
    return (done.stderr or done.stdout).strip()


def nginx_argv(nginx: str, conf: pathlib.Path) -> list[str]:
    """nginx in the foreground on ``conf`` (from ``write_nginx_conf``), logging to stderr."""
    return [nginx, "-p", str(conf.parent), "-e", "stderr", "-c", str(conf)]


def write_nginx_conf(
    directory: pathlib.Path,
    *,
    host: str,
    port: int,
    media_dir: pathlib.Path,
    worker_connections: int = 1024,
) -> pathlib.Path:
    """A one-process nginx serving ``media_dir`` at ``/media/``, as the origin does.

    Every path nginx might write (pid, temp files) lies inside ``directory``, so it runs
    unprivileged and leaves nothing behind.
    """
    return _write_nginx_conf(
        directory,
        worker_connections,
        f"""\
    sendfile on;
    server {{
        listen {host}:{port};
        keepalive_requests 1000000;
        location /media/ {{ alias {media_dir.resolve()}/; }}
    }}
""",
    )


def write_nginx_proxy_conf(
    directory: pathlib.Path,
    *,
    host: str,
    port: int,
    upstream_port: int,
    worker_connections: int = 1024,
    keepalive_connections: int = 64,
    proxy_buffer_kib: int | None = None,
) -> pathlib.Path:
    """A one-process nginx relaying every path to ``host:upstream_port``, streaming.

    ``proxy_buffering off``: nginx relays what it reads at once, through one
    ``proxy_buffer_size`` buffer, and never spools a response to a temporary file, which is how
    trio_range's proxy streams. Upstream connections are kept alive (HTTP/1.1, no
    ``Connection: close``), as trio_range's pool keeps them. Range and If-Range are passed
    through untouched by default.

    ``proxy_buffer_kib`` sets ``proxy_buffer_size`` and ``proxy_buffers 4`` of that size. The
    defaults (4 or 8 KiB, one page) make nginx relay a large body in page-sized reads and
    writes, three times slower than it can (issue 14): 256 is the fair baseline for a relay.
    """
    buffers = ""
    if proxy_buffer_kib is not None:
        buffers = (
            f"            proxy_buffer_size {proxy_buffer_kib}k;\n"
            f"            proxy_buffers 4 {proxy_buffer_kib}k;\n"
        )
    return _write_nginx_conf(
        directory,
        worker_connections,
        f"""\
    upstream benchmark_upstream {{
        server {host}:{upstream_port};
        keepalive {keepalive_connections};
        keepalive_requests 1000000;
    }}
    server {{
        listen {host}:{port};
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://benchmark_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
{buffers}        }}
    }}
""",
    )


def _write_nginx_conf(
    directory: pathlib.Path, worker_connections: int, servers: str
) -> pathlib.Path:
    directory.mkdir(parents=True, exist_ok=True)
    temp = {name: directory / name for name in ("client_body", "proxy", "fastcgi")}
    for path in temp.values():
        path.mkdir(exist_ok=True)
    conf = directory / "nginx.conf"
    conf.write_text(
        f"""\
daemon off;
master_process off;
worker_processes 1;
error_log stderr;
pid {directory / "nginx.pid"};
events {{ worker_connections {worker_connections}; }}
http {{
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path {temp["client_body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
{servers}}}
"""
    )
    return conf


# --- CPU and memory, from /proc ----------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (a server may fork workers)."""
    pids, index = [pid], 0
    while index < len(pids):
        task_dir = pathlib.Path(f"/proc/{pids[index]}/task")
        with contextlib.suppress(OSError):
            for task in task_dir.iterdir():
                with contextlib.suppress(OSError):
                    pids += [int(p) for p in (task / "children").read_text().split()]
        index += 1
    return pids


def status_kib(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` field in KiB (``VmRSS``, ``VmHWM``); 0 if the process is gone."""
    try:
        text = pathlib.Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def tree_kib(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` field summed over ``pid``'s process tree, in KiB."""
    return sum(status_kib(each, field) for each in process_tree(pid))


def rss_kib(server: Server) -> int:
    """The server's resident memory now, summed over its processes."""
    return tree_kib(server.process.pid, "VmRSS")


def hwm_kib(server: Server) -> int:
    """The server's peak resident memory since ``reset_peak_rss``, summed over its processes."""
    return tree_kib(server.process.pid, "VmHWM")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process tree so far (0 for a process that is gone)."""
    return sum(cpu_seconds_each(pid).values())


def cpu_seconds_each(pid: int) -> dict[int, float]:
    """User + system CPU time so far of each process in ``pid``'s tree, by pid.

    For a split by process, e.g. the master and each worker of ``hypercorn -w N``.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    each_cpu: dict[int, float] = {}
    for each in process_tree(pid):
        try:
            stat = pathlib.Path(f"/proc/{each}/stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name, which may itself contain spaces.
        fields = stat.rpartition(")")[2].split()
        each_cpu[each] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return each_cpu


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0, ``clear_refs`` value 5)."""
    try:
        for each in process_tree(pid):
            pathlib.Path(f"/proc/{each}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class RssSampler:
    """Polls the summed VmRSS of a process tree in a thread, as a cross-check of VmHWM."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self._pid = pid
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak_kib = 0

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.peak_kib = max(self.peak_kib, tree_kib(self._pid, "VmRSS"))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
