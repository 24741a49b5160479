"""scripts/install-system-deps.sh waits for another installer's apt locks instead of failing.

The script runs with a PATH of stubs in a temporary folder only: ``apt-get`` answers as apt does
while another process holds one of its locks, then succeeds; ``id`` says root (no sudo); ``tee``,
``chmod``, ``rm`` and ``sleep`` do nothing. Nothing on the system is installed, written or
locked. The real waiting (on apt's locks held by another process) was checked by hand.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "install-system-deps.sh"
BASH = shutil.which("bash") or "/bin/bash"
LOCK_REFUSAL = (
    "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)\n"
    "E: Unable to lock directory /var/lib/apt/lists/"
)


@dataclass
class Run:
    returncode: int
    stderr: str
    apt_calls: list[str]  # the arguments of each apt-get call, in order


def run_script(
    tmp_path: Path, *, refusals: int, final_error: str = "", timeout_s: str | None = None
) -> Run:
    """The script with apt-get refusing ``refusals`` times, then ending with ``final_error``
    (exit status 100) or success."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "apt-calls"
    count = tmp_path / "apt-count"
    count.write_text("0")
    refusal = tmp_path / "refusal"
    refusal.write_text(LOCK_REFUSAL)
    error = tmp_path / "error"
    if final_error:
        error.write_text(final_error)
    stubs = {
        # Builtins only: the PATH has nothing else.
        "apt-get": f"""
            printf '%s\\n' "$*" >> {calls}
            n=$(< {count}); echo $((n + 1)) > {count}
            if [ "$n" -lt {refusals} ]; then
              printf '%s\\n' "$(< {refusal})" >&2
              exit 100
            fi
            if [ -e {error} ]; then
              printf '%s\\n' "$(< {error})" >&2
              exit 100
            fi
        """,
        "id": "echo 0",
        "tee": "while read -r _; do :; done",
        "chmod": ":",
        "rm": ":",
        "sleep": ":",
    }
    for name, body in stubs.items():
        stub = bin_dir / name
        stub.write_text(f"#!{BASH}\n{body}\n")
        stub.chmod(0o755)
    # The script runs apt-get through env (sudo resets the environment); env finds the stub.
    (bin_dir / "env").symlink_to(shutil.which("env") or "/usr/bin/env")
    environment = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    if timeout_s is not None:
        environment["APT_LOCK_TIMEOUT_S"] = timeout_s
    result = subprocess.run(
        [BASH, str(SCRIPT)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    apt_calls = calls.read_text().splitlines() if calls.exists() else []
    return Run(result.returncode, result.stderr, apt_calls)


def test_waits_while_another_apt_holds_a_lock_then_installs(tmp_path: Path) -> None:
    run = run_script(tmp_path, refusals=3)
    assert run.returncode == 0, run.stderr
    # Each refusal is retried; then the update and the install go through.
    assert [call.split()[-2:] for call in run.apt_calls[:4]] == [["update", "-qq"]] * 4
    (install,) = run.apt_calls[4:]
    assert install.split()[2:5] == ["install", "-y", "-qq"]
    assert "gdal-bin" in install.split()
    # apt-get waits for the dpkg locks itself, 600 s by default.
    assert all(call.startswith("-o DPkg::Lock::Timeout=600 ") for call in run.apt_calls)
    assert run.stderr.count("another apt holds a lock; waiting up to 600 s") == 1


def test_gives_up_with_apts_message_at_the_deadline(tmp_path: Path) -> None:
    run = run_script(tmp_path, refusals=1000, timeout_s="0")
    assert run.returncode != 0
    assert len(run.apt_calls) == 1
    assert run.apt_calls[0].startswith("-o DPkg::Lock::Timeout=0 ")
    assert LOCK_REFUSAL in run.stderr
    assert "apt-get update -qq failed" in run.stderr


def test_another_apt_error_fails_at_once(tmp_path: Path) -> None:
    run = run_script(tmp_path, refusals=0, final_error="E: Unable to locate package gdal-bin")
    assert run.returncode != 0
    assert len(run.apt_calls) == 1
    assert "E: Unable to locate package gdal-bin" in run.stderr
    assert "waiting" not in run.stderr
