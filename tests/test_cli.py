"""The ``trio-range`` command and the Hypercorn launch, as users run them: real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from tests.support.processes import ROOT, TRIO_RANGE, start_process, stop_gracefully
from trio_range.cli import build_parser, settings_table
from trio_range.config import OriginConfig, ProxyConfig
from trio_range.serving_loop_settings import serving_loop_settings


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRIO_RANGE, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["origin", "--prot", "1"], {}, "unrecognized arguments: --prot"),
        (["origin", "--port", "eighty"], {}, "not a valid int"),
        (["origin", "--port", "70000"], {}, "port must be 0..65535"),
        (["origin", "--access-log", "maybe"], {}, "not a valid bool"),
        (["origin"], {"TRIO_RANGE_ORIGIN_PROT": "1"}, "unknown setting TRIO_RANGE_ORIGIN_PROT"),
        (["proxy", "--upstream", "ftp://x"], {}, "upstream must be an http"),
        (["origin", "--media-dir", "/nonexistent/media"], {}, "is not a directory"),
        (["make-media", "--size", "lots", "/tmp/x"], {}, "error"),
    ],
)
async def test_bad_options_fail_with_one_line_not_a_traceback(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = await trio.to_thread.run_sync(lambda: run_cli(*args, env=env))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    ("args", "access_log"),
    [
        ([], None),  # not given: the environment or the default decides
        (["--access-log"], True),
        (["--no-access-log"], False),
        # The value form, as accepted before --no-access-log existed.
        (["--access-log", "false"], False),
        (["--access-log", "true"], True),
        (["--access-log=off"], False),
        (["--access-log", "0", "--port", "1"], False),
        (["--access-log", "yes"], True),
        (["--no-access-log", "--access-log"], True),  # the last one wins
    ],
)
@pytest.mark.parametrize("command", ["origin", "proxy"])
def test_boolean_flags_take_the_no_form_and_the_value_form(
    command: str, args: list[str], access_log: bool | None
) -> None:
    assert build_parser().parse_args([command, *args]).access_log is access_log


def test_demo_boolean_flags_are_negated_with_their_prefix() -> None:
    args = build_parser().parse_args(["demo", "--no-origin-access-log", "--proxy-access-log"])
    assert (args.origin_access_log, args.proxy_access_log) == (False, True)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_demo_serves_origin_and_proxy_and_stops_cleanly(
    nursery: trio.Nursery, signum: int
) -> None:
    process, urls = await start_process(
        nursery, [*TRIO_RANGE, "demo", "--origin-port", "0", "--proxy-port", "0"]
    )
    try:
        origin, proxy = urls[0], urls[1]
        async with httpx.AsyncClient() as client:
            head = await client.head(proxy + "/")
            ranged = await client.get(proxy + "/?range=20-345")
            listing = await client.get(origin + "/media/")
        assert head.status_code == 200
        assert head.headers["accept-ranges"] == "bytes"
        assert head.headers["via"] == "1.1 trio-range"
        assert ranged.status_code == 206
        assert len(ranged.content) == 326
        assert {entry["name"] for entry in listing.json()} >= {"sample.mp4", "sample.webm"}
    finally:
        code = await stop_gracefully(process, signum)
    assert code == 0


def hypercorn(app: str) -> list[str]:
    """The Hypercorn command line a user runs, on a free loopback port."""
    return [sys.executable, "-m", "hypercorn", "-k", "trio", "-b", "127.0.0.1:0", app]


@pytest.mark.parametrize("module", ["origin", "proxy"])
async def test_hypercorn_launches_the_apps_from_environment(
    nursery: trio.Nursery, module: str, tmp_path: Path
) -> None:
    (tmp_path / "clip.bin").write_bytes(b"0123456789")
    env = {
        "TRIO_RANGE_ORIGIN_MEDIA_DIR": str(tmp_path),
        "TRIO_RANGE_ORIGIN_DEFAULT_FILE": "clip.bin",
    }
    origin, urls = await start_process(
        nursery,
        hypercorn("trio_range.origin:create_app()"),
        env,
    )
    processes = [origin]
    try:
        target = urls[0]
        if module == "proxy":
            proxy, proxy_urls = await start_process(
                nursery,
                hypercorn("trio_range.proxy:create_app()"),
                {"TRIO_RANGE_PROXY_UPSTREAM": urls[0]},
            )
            processes.append(proxy)
            target = proxy_urls[0]
        async with httpx.AsyncClient() as client:
            response = await client.get(target + "/", headers={"Range": "bytes=2-4"})
        assert response.status_code == 206
        assert response.content == b"234"
    finally:
        for process in processes:
            await stop_gracefully(process, signal.SIGTERM)


async def test_plain_hypercorn_logs_one_line_naming_the_settings_it_ignores(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    output = bytearray()
    env = {"TRIO_RANGE_ORIGIN_MEDIA_DIR": str(tmp_path), "TRIO_RANGE_ORIGIN_BACKLOG": "5"}
    process, _ = await start_process(
        nursery, hypercorn("trio_range.origin:create_app()"), env, output=output
    )
    await stop_gracefully(process, signal.SIGTERM)
    lines = [line for line in output.decode().splitlines() if "plain Hypercorn" in line]
    assert len(lines) == 1, output.decode()
    for name, flag in serving_loop_settings(OriginConfig).items():
        assert name in lines[0]
        assert flag in lines[0]
    assert lines[0].endswith("set but ignored: backlog=5")


async def test_trio_range_origin_does_not_log_the_plain_hypercorn_line(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    output = bytearray()
    process, _ = await start_process(
        nursery,
        [*TRIO_RANGE, "origin", "--port", "0", "--media-dir", str(tmp_path), "--backlog", "5"],
        output=output,
    )
    assert await stop_gracefully(process, signal.SIGTERM) == 0
    assert b"Running on" in output  # after the app's start-up hooks have run
    assert b"plain Hypercorn" not in output


def test_readme_names_the_settings_plain_hypercorn_ignores_and_their_hypercorn_flags() -> None:
    readme = (ROOT / "README.md").read_text()
    configuration = readme[readme.index("## Configuration") :]
    configuration = configuration[: configuration.index("\n## ")]
    for cls in (OriginConfig, ProxyConfig):
        for name, flag in serving_loop_settings(cls).items():
            assert f"`{name}`" in configuration
            assert not flag or f"`{flag}`" in configuration


def test_readme_configuration_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text().splitlines()
    start = readme.index("| server | flag | environment variable | default | meaning |")
    end = next(i for i in range(start, len(readme)) if not readme[i].startswith("|"))
    assert readme[start:end] == settings_table().splitlines(), (
        "README.md's configuration table is not the output of `trio-range settings`"
    )


async def test_the_proxys_deprecated_chunk_size_flag_and_variable_still_start_it_with_a_warning(
    nursery: trio.Nursery,
) -> None:
    output = bytearray()
    process, _ = await start_process(
        nursery,
        [*TRIO_RANGE, "proxy", "--port", "0", "--chunk-size-bytes", "65536"],
        {"TRIO_RANGE_PROXY_CHUNK_SIZE_BYTES": "65536"},
        output=output,
    )
    assert await stop_gracefully(process, signal.SIGTERM) == 0
    log = output.decode()
    for source in ("--chunk-size-bytes", "TRIO_RANGE_PROXY_CHUNK_SIZE_BYTES"):
        assert f"{source} has no effect on the proxy" in log, log
