"""Real command-line clients the tests run (installed by scripts/install-system-deps.sh)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    curl_path = shutil.which("curl")
    assert curl_path, "curl is missing: make test installs it (scripts/install-system-deps.sh)"
    return subprocess.run([curl_path, "-sS", *args], capture_output=True, timeout=30, check=False)


def curl_resume(url: str, have: bytes, folder: Path) -> bytes:
    """What ``curl -C -`` leaves on disk resuming ``url`` from a partial file holding ``have``.

    Blocking: run it with ``trio.to_thread.run_sync``.
    """
    partial = folder / "download.bin"
    partial.write_bytes(have)
    result = curl("-C", "-", "-o", str(partial), url)
    assert result.returncode == 0, result.stderr
    return partial.read_bytes()
