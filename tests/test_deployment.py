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

from tests.servers import start_origin
from tests.test_cli import start_process, stop_gracefully
from trio_range.cli import build_parser
from trio_range.config import OriginConfig, ProxyConfig, ServerConfig, load

ROOT = Path(__file__).resolve().parent.parent
TRIO_RANGE = str(Path(sys.executable).with_name("trio-range"))  # the console script pip installs
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


def test_compose_services_use_commands_ports_and_settings_the_cli_accepts() -> None:
    services = compose_services()
    assert set(services) == {"origin", "proxy"}
    origin = service_config(services["origin"], "origin")
    proxy = service_config(services["proxy"], "proxy")
    assert isinstance(proxy, ProxyConfig)
    assert origin.host == proxy.host == "0.0.0.0"
    # The proxy is published on 8080, the port it listens on; its upstream is the origin
    # service by name, on the port the origin listens on.
    assert services["proxy"]["ports"] == [{"published": 8080, "target": proxy.port}]
    assert proxy.port == 8080
    assert proxy.upstream == f"http://origin:{origin.port}"
    assert services["origin"]["expose"] == [str(origin.port)]
    # Each container's HEALTHCHECK probes its own server's port.
    for name, config in (("origin", origin), ("proxy", proxy)):
        health = urlsplit(services[name]["environment"]["HEALTHCHECK_URL"])
        assert (health.port, health.path) == (config.port, "/healthz")
        assert services[name]["build"]["context"] == str(ROOT)
        assert services[name]["image"] == services["origin"]["image"]
    assert services["proxy"]["depends_on"] == {"origin": {"condition": "service_healthy"}}


async def test_compose_services_run_as_written_and_pass_the_healthcheck(
    nursery: trio.Nursery,
) -> None:
    services = compose_services()
    origin_env = on_loopback(services["origin"]["environment"], "origin")
    origin_env["TRIO_RANGE_ORIGIN_MEDIA_DIR"] = str(ROOT / "media")  # the volume's host side
    origin_cmd = services["origin"]["command"]
    origin, (origin_url,) = await start_process(nursery, [TRIO_RANGE, *origin_cmd[1:]], origin_env)
    processes = [origin]
    try:
        proxy_env = on_loopback(services["proxy"]["environment"], "proxy")
        proxy_env["TRIO_RANGE_PROXY_UPSTREAM"] = origin_url  # "origin" resolves in compose only
        proxy_cmd = services["proxy"]["command"]
        proxy, (proxy_url,) = await start_process(nursery, [TRIO_RANGE, *proxy_cmd[1:]], proxy_env)
        processes.append(proxy)
        for url in (origin_url, proxy_url):
            assert await run_healthcheck(url + "/healthz") == 0
        async with httpx.AsyncClient() as client:
            player = await client.get(proxy_url + "/player")
            video = await client.get(
                proxy_url + "/media/sample.mp4", headers={"Range": "bytes=0-1"}
            )
        assert player.status_code == 200
        assert (video.status_code, len(video.content)) == (206, 2)
    finally:
        for process in reversed(processes):
            assert await stop_gracefully(process, signal.SIGTERM) == 0


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
    try:
        requests = 10
        # No keep-alive: a new connection for each request, accepted by either worker.
        async with httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0)) as client:
            for _ in range(requests):
                response = await client.get(urls[0] + "/", headers={"Range": "bytes=2-4"})
                assert (response.status_code, response.content) == (206, b"234")
            # Hypercorn binds once and both workers accept on that socket; each answers /stats
            # from its own memory: the start time tells them apart, and only together do their
            # counts make up the traffic.
            stores: dict[str, int] = {}
            with trio.fail_after(10):
                while len(stores) < 2:
                    stats = (await client.get(urls[0] + "/stats")).json()
                    stores[stats["started_at"]] = stats["requests"]["total"]
        assert sum(stores.values()) == requests
    finally:
        assert await stop_gracefully(process, signal.SIGTERM) == 0
