"""What the benchmarks share: server subprocesses, a fast HTTP/1.1 client, memory readings.

Blocking code on purpose: a benchmark client must be as cheap per byte as possible, and one
blocking socket that lets the kernel discard the bulk of the body is the cheapest Python can do
(see ``fetch_socket``). Every wait is bounded by a deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx

RECV_BUFFER_BYTES = 1 << 20
# How much of the body's start and end a fetch keeps, so a caller can check the bytes.
SAMPLE_BYTES = 64 * 1024
MAX_HEAD_BYTES = 64 * 1024


def run_and_save(run: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> int:
    """Run a benchmark's ``run(args)`` and write its results as JSON to ``args.output``.

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
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


class BenchmarkError(Exception):
    """A server did not start, answered wrongly, or a deadline passed."""


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
        head, body_start = _read_head(sock, deadline)
        status, response_headers = _parse_head(head)
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


def _read_head(sock: socket.socket, deadline: float) -> tuple[bytes, bytes]:
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


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
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


# --- servers ---------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
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

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def run_server(
    name: str,
    argv: Sequence[str],
    *,
    host: str,
    port: int,
    log_path: pathlib.Path,
    ready_path: str,
    ready_timeout_s: float = 20.0,
    env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """Start ``argv``, wait until it answers ``GET ready_path``, and stop it on exit.

    ``env``: variables added to this process's environment for the server (e.g. the settings
    of an app started by ``hypercorn``, which reads them from the environment).
    """
    server = spawn_server(name, argv, host=host, port=port, log_path=log_path, env=env)
    try:
        wait_until_serving(server, ready_path, ready_timeout_s)
        yield server
    finally:
        stop(server.process)


def spawn_server(
    name: str,
    argv: Sequence[str],
    *,
    host: str,
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
    return Server(name, process, host, port, log_path)


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


def find_nginx() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
    )


def write_nginx_conf(
    directory: pathlib.Path,
    *,
    host: str,
    port: int,
    media_dir: pathlib.Path,
    worker_connections: int = 64,
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
) -> pathlib.Path:
    """A one-process nginx relaying every path to ``host:upstream_port``, streaming.

    ``proxy_buffering off``: nginx relays what it reads at once, through one
    ``proxy_buffer_size`` buffer, and never spools a response to a temporary file, which is how
    trio_range's proxy streams. Upstream connections are kept alive (HTTP/1.1, no
    ``Connection: close``), as trio_range's pool keeps them. Range and If-Range are passed
    through untouched by default.
    """
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
        }}
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


# --- memory ----------------------------------------------------------------------------------


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
            total = sum(status_kib(p, "VmRSS") for p in process_tree(self._pid))
            self.peak_kib = max(self.peak_kib, total)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
