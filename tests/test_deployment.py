"""Deployment files and launches: the Dockerfile, docker-compose.yml, Hypercorn with workers.

No Docker engine runs on the project's machines, so the images are never built here. What can
be checked without one is: docker-compose (Debian's, from scripts/install-system-deps.sh)
validates and normalises the compose file offline; every command, port and environment
variable in both files is one the CLI accepts; and each command runs here, as a process on
loopback, with the environment the container would give it, and passes the image's
HEALTHCHECK.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio
from hypercorn import __main__ as hypercorn_main
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config as HypercornConfig
from hypercorn.utils import load_application

from tests.support.faulty_upstream import unused_port
from tests.support.processes import (
    multiprocessing_workers,
    pause_process,
    resume_process,
    start_process,
    stop_gracefully,
    wait_for_urls,
)
from tests.support.redis_server import open_redis
from tests.support.servers import start_origin
from trio_range.cli import build_parser
from trio_range.config import OriginConfig, ProxyConfig, ServerConfig, load
from trio_range.server.app import RangeApp

ROOT = Path(__file__).resolve().parent.parent
TRIO_RANGE = str(Path(sys.executable).with_name("trio-range"))  # the console script pip installs
HYPERCORN = str(Path(sys.executable).with_name("hypercorn"))  # the one the image has on PATH
CONFIGS: dict[str, type[ServerConfig]] = {"origin": OriginConfig, "proxy": ProxyConfig}

# --- the Dockerfile ------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; comments dropped, continuation lines joined."""
    instructions = []
    logical = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        logical += line
        keyword, _, arguments = logical.strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        logical = ""
    return instructions


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in dockerfile_instructions():
        if keyword == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", arguments))
    return env


def exec_form(keyword: str) -> list[str]:
    """The JSON (exec form) arguments of the last ``keyword`` instruction."""
    arguments = [a for k, a in dockerfile_instructions() if k == keyword][-1]
    if keyword == "HEALTHCHECK":
        arguments = arguments.partition(" CMD ")[2]
    command: list[str] = json.loads(arguments)
    return command


def test_dockerfile_installs_the_package_on_slim_python_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    runs = " ".join(arguments for keyword, arguments in instructions if keyword == "RUN")
    assert "pip install ." in runs
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users == ["trio-range"]
    assert re.search(r"useradd .*trio-range", runs)
    assert keywords.index("USER") < keywords.index("CMD")
    # What `pip install .` needs is copied, and .dockerignore does not hide it.
    copied = " ".join(arguments for keyword, arguments in instructions if keyword == "COPY")
    ignored = (ROOT / ".dockerignore").read_text().split()
    for needed in ("pyproject.toml", "README.md", "src", "media"):
        assert needed in copied
        assert needed not in ignored


def test_dockerfile_command_and_healthcheck_are_the_clis() -> None:
    command = exec_form("CMD")
    assert command == ["trio-range", "origin"]
    build_parser().parse_args(command[1:])
    env = dockerfile_env()
    config = load(OriginConfig, env)
    assert config.host == "0.0.0.0"
    assert str(config.media_dir) == "/srv/media"
    # The default HEALTHCHECK_URL is the origin's health path on the origin's port.
    health = urlsplit(env["HEALTHCHECK_URL"])
    assert (health.hostname, health.port, health.path) == ("127.0.0.1", config.port, "/healthz")
    healthcheck = exec_form("HEALTHCHECK")
    assert healthcheck[:2] == ["python", "-c"]


async def run_healthcheck(url: str) -> int:
    """The image's HEALTHCHECK command, run here with ``HEALTHCHECK_URL=url``."""
    command = [sys.executable, *exec_form("HEALTHCHECK")[1:]]
    result = await trio.to_thread.run_sync(
        lambda: subprocess.run(
            command,
            env={**os.environ, "HEALTHCHECK_URL": url},
            capture_output=True,
            timeout=10,
            check=False,
        )
    )
    return result.returncode


def on_loopback(env: Mapping[str, str], role: str) -> dict[str, str]:
    """``env`` for a process here: loopback and a free port instead of 0.0.0.0 and a fixed one."""
    prefix = f"TRIO_RANGE_{role.upper()}_"
    return {**env, prefix + "HOST": "127.0.0.1", prefix + "PORT": "0"}


async def test_dockerfile_command_serves_and_passes_its_healthcheck(
    nursery: trio.Nursery,
) -> None:
    # The image's ENV, with /srv/media being what the image copies there: the shipped media.
    env = on_loopback(dockerfile_env(), "origin")
    env["TRIO_RANGE_ORIGIN_MEDIA_DIR"] = str(ROOT / "media")
    command = exec_form("CMD")
    process, urls = await start_process(nursery, [TRIO_RANGE, *command[1:]], env)
    try:
        assert await run_healthcheck(urls[0] + "/healthz") == 0
        assert await run_healthcheck(urls[0] + "/no-such-path") != 0
    finally:
        assert await stop_gracefully(process, signal.SIGTERM) == 0
    assert await run_healthcheck(urls[0] + "/healthz") != 0  # nothing listens any more


# --- docker-compose.yml --------------------------------------------------------------------


def docker_compose(
    *args: str, file: Path = ROOT / "docker-compose.yml"
) -> subprocess.CompletedProcess[str]:
    found = shutil.which("docker-compose")
    assert found, "docker-compose is missing: scripts/install-system-deps.sh installs it"
    return subprocess.run(
        [found, "-f", str(file), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )


@functools.cache
def compose_services() -> dict[str, Any]:
    """The services as docker-compose normalises them (paths absolute, ports long form).

    docker-compose prints YAML; its own interpreter (the script's ``#!`` line) has PyYAML,
    since docker-compose is written with it, so that interpreter turns it into JSON for us.
    Cached: docker-compose takes seconds to start. Callers copy what they change.
    """
    normalised = docker_compose("config")
    assert normalised.returncode == 0, normalised.stderr
    script = Path(shutil.which("docker-compose") or "")
    interpreter = script.read_text(errors="replace").splitlines()[0].removeprefix("#!").split()
    as_json = subprocess.run(
        [
            *interpreter,
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ],
        input=normalised.stdout,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    services: dict[str, Any] = json.loads(as_json.stdout)["services"]
    return services


def test_docker_compose_validates_the_file_offline_and_rejects_a_misspelled_key(
    tmp_path: Path,
) -> None:
    assert docker_compose("config", "--quiet").returncode == 0
    # The check can fail: the same file with a misspelled key is refused.
    broken = tmp_path / "docker-compose.yml"
    broken.write_text((ROOT / "docker-compose.yml").read_text().replace("volumes:", "volumnes:"))
    refused = docker_compose("config", "--quiet", file=broken)
    assert refused.returncode != 0
    assert "volumnes" in refused.stderr


def service_config(service: dict[str, Any], role: str) -> ServerConfig:
    """The configuration the service's command and environment give, as the CLI builds it."""
    command = service["command"]
    assert command[0] == "trio-range"
    args = build_parser().parse_args(command[1:])
    assert args.command == role
    cls = CONFIGS[role]
    overrides = {name: getattr(args, name) for name in cls.__dataclass_fields__}
    env = dict(service["environment"])
    if role == "origin":
        # The media folder exists inside the container only; its host side is the volume's.
        (volume,) = service["volumes"]
        host, container, mode = volume.split(":") if isinstance(volume, str) else volume
        assert (container, mode) == (env["TRIO_RANGE_ORIGIN_MEDIA_DIR"], "ro")
        assert Path(host) == ROOT / "media"
        env["TRIO_RANGE_ORIGIN_MEDIA_DIR"] = host
    return load(cls, env, overrides)


def hypercorn_config(command: list[str], monkeypatch: pytest.MonkeyPatch) -> HypercornConfig:
    """What Hypercorn's own command line makes of ``command``, without serving."""
    assert command[0] == "hypercorn"
    seen: list[HypercornConfig] = []

    def run(config: HypercornConfig) -> int:
        seen.append(config)
        return 0

    monkeypatch.setattr(hypercorn_main, "run", run)
    assert hypercorn_main.main(command[1:]) == 0
    (config,) = seen
    return config


def proxy_app_config(
    service: dict[str, Any], application_path: str, monkeypatch: pytest.MonkeyPatch
) -> ProxyConfig:
    """Load ``application_path`` as Hypercorn does, in the service's environment only."""
    env = dict(service["environment"])
    for key in os.environ:
        if key.startswith("TRIO_RANGE_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    loaded = load_application(application_path, wsgi_max_body_size=0)
    assert isinstance(loaded, ASGIWrapper)  # an ASGI app, not mistaken for WSGI
    app = loaded.app
    assert isinstance(app, RangeApp)
    config = app.config["TRIO_RANGE"]
    assert isinstance(config, ProxyConfig)
    assert config == load(ProxyConfig, env)  # the settings are the environment's, nothing else
    return config


def test_compose_services_use_commands_ports_and_settings_the_cli_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = compose_services()
    assert set(services) == {"origin", "proxy", "redis"}
    origin = service_config(services["origin"], "origin")
    assert origin.host == "0.0.0.0"
    assert services["origin"]["expose"] == [str(origin.port)]

    # The proxy runs Hypercorn with the trio worker, 2 workers and one bind on every interface.
    server = hypercorn_config(services["proxy"]["command"], monkeypatch)
    assert (server.worker_class, server.workers) == ("trio", 2)
    (bind,) = server.bind
    host, _, port = bind.rpartition(":")
    assert (host, int(port)) == ("0.0.0.0", 8080)
    assert services["proxy"]["ports"] == [{"published": 8080, "target": int(port)}]
    # Hypercorn's bind is where it listens: a TRIO_RANGE_PROXY_HOST/PORT would mislead.
    assert not {"TRIO_RANGE_PROXY_HOST", "TRIO_RANGE_PROXY_PORT"} & set(
        services["proxy"]["environment"]
    )
    assert server.application_path == "trio_range.proxy:create_app()"
    proxy = proxy_app_config(services["proxy"], server.application_path, monkeypatch)
    # Its upstream is the origin service by name, on the port the origin listens on.
    assert proxy.upstream == f"http://origin:{origin.port}"

    # Statistics are shared through the redis service, on the port it exposes and listens on.
    redis = services["redis"]
    assert redis["image"] == "redis:7-alpine"
    assert "build" not in redis
    # No persistence, as tests/support/redis_server.py runs it; the default port 6379.
    assert redis["command"] == ["redis-server", "--save", "", "--appendonly", "no"]
    assert redis["expose"] == ["6379"]
    backend = urlsplit(proxy.stats_backend)
    assert (backend.scheme, backend.hostname, backend.path) == ("redis", "redis", "/0")
    assert [str(backend.port)] == redis["expose"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]

    # Each server container's HEALTHCHECK probes its own server's port.
    for name, listens_on in (("origin", origin.port), ("proxy", int(port))):
        health = urlsplit(services[name]["environment"]["HEALTHCHECK_URL"])
        assert (health.hostname, health.port, health.path) == (
            "127.0.0.1",
            listens_on,
            "/healthz",
        )
        assert services[name]["build"]["context"] == str(ROOT)
        assert services[name]["image"] == services["origin"]["image"]
    assert services["proxy"]["depends_on"] == {
        "origin": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }


def on_loopback_bind(command: list[str], port: int) -> list[str]:
    """Hypercorn ``command`` binding loopback and ``port`` instead of 0.0.0.0 and a fixed one."""
    (at,) = [i for i, arg in enumerate(command) if arg in ("-b", "--bind")]
    return [*command[: at + 1], f"127.0.0.1:{port}", *command[at + 2 :]]


async def run_redis_healthcheck(test: list[str], port: int) -> subprocess.CompletedProcess[str]:
    """The redis service's healthcheck command (``CMD`` form), aimed at ``port`` here."""
    assert test[:2] == ["CMD", "redis-cli"]
    command = [test[1], "-h", "127.0.0.1", "-p", str(port), *test[2:]]
    return await trio.to_thread.run_sync(
        lambda: subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    )


async def test_compose_services_run_as_written_and_pass_the_healthcheck(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    services = compose_services()
    origin_env = on_loopback(services["origin"]["environment"], "origin")
    origin_env["TRIO_RANGE_ORIGIN_MEDIA_DIR"] = str(ROOT / "media")  # the volume's host side
    origin_cmd = services["origin"]["command"]
    origin, urls = await start_process(nursery, [TRIO_RANGE, *origin_cmd[1:]], origin_env)
    processes = [origin]
    # It may print its URL twice ("Running on", then "origin serving ... on"): one URL.
    origin_url = urls[0]
    assert set(urls) == {origin_url}
    try:
        async with open_redis(tmp_path) as redis_server:
            healthcheck = await run_redis_healthcheck(
                services["redis"]["healthcheck"]["test"], redis_server.port
            )
            assert (healthcheck.returncode, healthcheck.stdout.strip()) == (0, "PONG")
            # "origin" and "redis" resolve in compose only: here they are on loopback.
            proxy_env = dict(services["proxy"]["environment"])
            proxy_env["TRIO_RANGE_PROXY_UPSTREAM"] = origin_url
            backend = urlsplit(proxy_env["TRIO_RANGE_PROXY_STATS_BACKEND"])
            proxy_env["TRIO_RANGE_PROXY_STATS_BACKEND"] = backend._replace(
                netloc=f"127.0.0.1:{redis_server.port}"
            ).geturl()
            assert proxy_env["TRIO_RANGE_PROXY_STATS_BACKEND"] == redis_server.url
            port = unused_port()
            proxy_cmd = on_loopback_bind(services["proxy"]["command"], port)
            proxy, urls = await start_process(nursery, [HYPERCORN, *proxy_cmd[1:]], proxy_env)
            processes.append(proxy)
            proxy_url = f"http://127.0.0.1:{port}"
            assert set(urls) == {proxy_url}
            try:
                urls = await wait_for_urls(proxy, urls, 2)  # both workers listen
                assert set(urls) == {proxy_url}
                await check_the_proxy_serves_with_shared_stats(origin_url, proxy_url, proxy)
            finally:
                # Stopped before Redis: the workers' last push finds it there.
                processes.pop()
                assert await stop_gracefully(proxy, signal.SIGTERM) == 0
    finally:
        for process in reversed(processes):
            assert await stop_gracefully(process, signal.SIGTERM) == 0


async def check_the_proxy_serves_with_shared_stats(
    origin_url: str, proxy_url: str, proxy: trio.Process
) -> None:
    for url in (origin_url, proxy_url):
        assert await run_healthcheck(url + "/healthz") == 0
    # No keep-alive: a new connection for each request, accepted by either worker.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        player = await client.get(proxy_url + "/player")
        assert player.status_code == 200
        ranges = 9
        for _ in range(ranges):
            video = await client.get(
                proxy_url + "/media/sample.mp4", headers={"Range": "bytes=0-1"}
            )
            assert (video.status_code, len(video.content)) == (206, 2)
        requests = 1 + ranges  # /healthz and /stats are not counted
        # Each worker counts in its own memory and pushes to Redis about once a second; every
        # worker then answers /stats with the sum over both. Poll each of the two until it has
        # answered with exactly the total. Which worker accepts a connection is the kernel's
        # choice, so the other one is stopped (SIGSTOP) for each /stats request: briefly, as a
        # worker that stops pushing for the gauge TTL (3 s) no longer counts as alive.
        workers = multiprocessing_workers(proxy.pid)
        assert len(workers) == 2, workers
        answered: dict[int, dict[str, Any]] = {}

        async def stats_of(worker: int) -> dict[str, Any]:
            others = [other for other in workers if other != worker]
            try:
                for other in others:
                    await pause_process(other)
                response = await client.get(proxy_url + "/stats")
            finally:
                for other in others:
                    await resume_process(other)
            assert response.status_code == 200
            stats: dict[str, Any] = response.json()
            return stats

        with trio.fail_after(60):
            for worker in workers:
                while True:
                    stats = await stats_of(worker)
                    shared = stats["shared"]
                    alive = [i for i in shared["instances"] if i["alive"]]
                    if (
                        stats["requests"]["total"] == requests
                        and not shared["stale"]
                        and len(alive) == 2
                        and sum(i["requests"] for i in alive) == requests
                    ):
                        answered[worker] = stats
                        break
                    await trio.sleep(0.1)
    # Two workers, two instances: each answered with its own id, and both ids are the pair.
    instances = {stats["shared"]["instance"] for stats in answered.values()}
    assert len(instances) == 2
    for stats in answered.values():
        assert stats["requests"]["by_status"] == {"200": 1, "206": ranges}
        assert stats["ranges"]["single"] == ranges
        assert stats["shared"]["stale_since"] is None
        assert stats["shared"]["backend"].startswith("redis://127.0.0.1:")
        assert {i["id"] for i in stats["shared"]["instances"]} == instances


# --- Hypercorn with several workers --------------------------------------------------------


def hypercorn(app: str, *, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hypercorn",
        "-k",
        "trio",
        "--workers",
        str(workers),
        "-b",
        "127.0.0.1:0",
        app,
    ]


@pytest.mark.parametrize("role", ["origin", "proxy"])
async def test_hypercorn_workers_share_the_port_and_each_keeps_its_own_stats(
    nursery: trio.Nursery, tmp_path: Path, role: str
) -> None:
    (tmp_path / "clip.bin").write_bytes(b"0123456789")
    if role == "origin":
        env = {
            "TRIO_RANGE_ORIGIN_MEDIA_DIR": str(tmp_path),
            "TRIO_RANGE_ORIGIN_DEFAULT_FILE": "clip.bin",
        }
    else:
        upstream = await start_origin(nursery, media_dir=tmp_path, default_file="clip.bin")
        env = {"TRIO_RANGE_PROXY_UPSTREAM": upstream}
    process, urls = await start_process(
        nursery, hypercorn(f"trio_range.{role}:create_app()", workers=2), env
    )
    # Hypercorn binds one socket in its parent process and hands it to both workers (run.py:
    # config.create_sockets(), then each worker listens on it): one port, one accept queue.
    # Which worker the kernel wakes for a connection is luck, so each worker is made the only
    # one running in turn: a SIGSTOPped worker accepts nothing and the other takes every
    # connection. Each serves a different number of requests, so a count tells whose it is.
    workers: list[int] = []
    stores: dict[int, dict[str, Any]] = {}
    try:
        urls = await wait_for_urls(process, urls, 2)  # both workers listen
        assert len(set(urls)) == 1
        workers = multiprocessing_workers(process.pid)
        assert len(workers) == 2, workers
        served = dict(zip(workers, (3, 7), strict=True))
        # No keep-alive: a new connection for each request, accepted by whichever worker runs.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:

            async def only(worker: int) -> dict[str, Any]:
                """Leave ``worker`` the only one running; return its /stats."""
                for other in workers:
                    if other != worker:
                        await pause_process(other)
                await resume_process(worker)
                stats: dict[str, Any] = (await client.get(urls[0] + "/stats")).json()
                return stats

            for worker, requests in served.items():
                before = await only(worker)
                assert before["requests"]["total"] == 0  # nothing reached it while paused
                for _ in range(requests):
                    response = await client.get(urls[0] + "/", headers={"Range": "bytes=2-4"})
                    assert (response.status_code, response.content) == (206, b"234")
                # A request is counted just after its last byte is sent: wait for the count
                # to reach what this worker served (a shared store would already be beyond).
                with trio.fail_after(10):
                    while (stats := await only(worker))["requests"]["total"] < requests:
                        await trio.sleep(0.01)
                assert stats["started_at"] == before["started_at"]  # the same store
                stores[worker] = stats
            # The first worker's count did not move while the second one served.
            first = workers[0]
            again = await only(first)
            assert (again["started_at"], again["requests"]) == (
                stores[first]["started_at"],
                stores[first]["requests"],
            )
    finally:
        for worker in workers:
            os.kill(worker, signal.SIGCONT)  # a stopped worker would never shut down
        assert await stop_gracefully(process, signal.SIGTERM) == 0
    # Each worker answered /stats from its own memory: it counted exactly the requests it
    # served, and only together do their counts make up the traffic.
    assert {worker: stats["requests"]["total"] for worker, stats in stores.items()} == served
    assert sum(stats["requests"]["by_status"]["206"] for stats in stores.values()) == 10
