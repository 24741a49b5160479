"""A real nginx for tests and benchmarks, owned by the task that opens it.

    async with open_nginx(root=media_dir) as nginx:          # a static file server
        ...  # GET f"{nginx.url}/clip.mp4"
    async with open_nginx(proxy_pass=proxy_url) as nginx:    # a reverse proxy in front of us
        ...

nginx runs in the foreground as a single process (``master_process off``) with its config, logs,
pid file and temp paths in a private temporary directory, so tests never touch /etc/nginx or
/var. It is a child of the test: killed and reaped when the block exits, even on cancellation.
Debian's nginx-light comes from scripts/install-system-deps.sh (``make system-deps``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from tests.support.faulty_upstream import unused_port

__all__ = ["NginxNotFound", "NginxServer", "NginxStartError", "find_nginx", "open_nginx"]

DEBIAN_NGINX = "/usr/sbin/nginx"
MIME_TYPES = Path("/etc/nginx/mime.types")
START_ATTEMPTS = 5
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
READY_POLL_S = 0.005

INSTALL_HINT = (
    "nginx is not installed: run `make system-deps` (scripts/install-system-deps.sh installs "
    "Debian's nginx-light); `make test` does this first"
)


class NginxNotFound(RuntimeError):
    """No nginx binary on PATH or at /usr/sbin/nginx."""


class NginxStartError(RuntimeError):
    """nginx exited or did not become ready; the message carries its error log."""


@dataclass(frozen=True)
class NginxServer:
    port: int
    root: Path
    error_log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def read_error_log(self) -> str:
        return self.error_log.read_text(errors="replace")


def find_nginx() -> str | None:
    """The nginx binary to run, or None. /usr/sbin is often missing from a user's PATH."""
    found = shutil.which("nginx")
    if found is not None:
        return found
    if os.access(DEBIAN_NGINX, os.X_OK):
        return DEBIAN_NGINX
    return None


def render_config(
    *, tmp: Path, port: int, root: Path, proxy_pass: str | None, extra_http: str
) -> str:
    """The whole nginx.conf: foreground, one process, everything it writes inside ``tmp``."""
    if MIME_TYPES.exists():
        types = f"include {MIME_TYPES};"
    else:
        types = "types { text/html html; text/plain txt; video/mp4 mp4; video/webm webm; }"
    location = ""
    if proxy_pass is not None:
        # Stream, do not buffer, and keep upstream connections alive (Connection "" instead of
        # nginx's default "close"), as a production reverse proxy in front of us would.
        location = f"""
        location / {{
            proxy_pass {proxy_pass};
            proxy_buffering off;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}"""
    return f"""\
daemon off;
master_process off;
worker_processes 1;
error_log {tmp}/error.log;
pid {tmp}/nginx.pid;
events {{
    worker_connections 1024;
}}
http {{
    {types}
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    {extra_http}
    server {{
        listen 127.0.0.1:{port};
        root {root};{location}
    }}
}}
"""


def _pid_file_names(process: trio.Process, pid_file: Path) -> bool:
    # nginx writes its pid file only after every listening socket is bound, so our child's pid
    # in it means the port is ours (and not another process's that happened to take it).
    try:
        return pid_file.read_text().strip() == str(process.pid)
    except FileNotFoundError:
        return False


async def _stop(process: trio.Process) -> None:
    """Stop nginx: SIGTERM is its fast shutdown; SIGKILL if that takes too long. Shielded."""
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            process.terminate()
            with trio.move_on_after(STOP_TIMEOUT_S):
                await process.wait()
            if process.returncode is None:
                process.kill()
        await process.wait()


async def _wait_ready(process: trio.Process, port: int, tmp: Path) -> bool:
    """True once nginx accepts on ``port``; False if it lost the port to another process.

    Raises NginxStartError if it exits for any other reason. The caller bounds the wait.
    """
    error_log = tmp / "error.log"
    while True:  # bounded by the caller's fail_after
        exited = process.poll() is not None
        log = _read(error_log)  # read after poll: an exit's reason is in the log by then
        if "Address already in use" in log:
            # nginx retries a busy port five times, 0.5 s apart: do not wait for it.
            return False
        if exited:
            raise NginxStartError(f"nginx exited with {process.returncode}:\n{log}")
        if _pid_file_names(process, tmp / "nginx.pid"):
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                pass
            else:
                await stream.aclose()
                return True
        await trio.sleep(READY_POLL_S)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


@asynccontextmanager
async def open_nginx(
    *, root: Path | None = None, proxy_pass: str | None = None, extra_http: str = ""
) -> AsyncIterator[NginxServer]:
    """Run nginx on a free 127.0.0.1 port for the duration of the block.

    ``root`` is served as static files (an empty directory if None); with ``proxy_pass`` every
    request goes to that URL instead, streamed. ``extra_http`` is pasted into the http block.
    """
    binary = find_nginx()
    if binary is None:
        raise NginxNotFound(INSTALL_HINT)
    with tempfile.TemporaryDirectory(prefix="trio-range-nginx-") as tmp_name:
        tmp = Path(tmp_name)
        if root is None:
            root = tmp / "root"
            root.mkdir()
        root = root.resolve()
        for _attempt in range(START_ATTEMPTS):
            port = unused_port()
            config = render_config(
                tmp=tmp, port=port, root=root, proxy_pass=proxy_pass, extra_http=extra_http
            )
            (tmp / "nginx.conf").write_text(config)
            (tmp / "error.log").unlink(missing_ok=True)
            # -e: errors before the config is read (a config typo) go to our log too.
            process = await trio.lowlevel.open_process(
                [
                    binary,
                    "-p",
                    str(tmp),
                    "-e",
                    str(tmp / "error.log"),
                    "-c",
                    str(tmp / "nginx.conf"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                with trio.fail_after(START_TIMEOUT_S):
                    ready = await _wait_ready(process, port, tmp)
            except trio.TooSlowError:
                await _stop(process)
                raise NginxStartError(
                    f"nginx did not accept on port {port} within {START_TIMEOUT_S} s:\n"
                    f"{_read(tmp / 'error.log')}"
                ) from None
            except BaseException:
                await _stop(process)
                raise
            if ready:
                break
            await _stop(process)  # lost the port race; try another
        else:
            raise NginxStartError(f"no free port after {START_ATTEMPTS} attempts")
        try:
            yield NginxServer(port=port, root=root, error_log=tmp / "error.log")
        finally:
            await _stop(process)
