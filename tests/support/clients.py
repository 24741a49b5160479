"""Real command-line clients the tests run (installed by scripts/install-system-deps.sh)."""

from __future__ import annotations

import shutil
import subprocess


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    curl_path = shutil.which("curl")
    assert curl_path, "curl is missing: make test installs it (scripts/install-system-deps.sh)"
    return subprocess.run([curl_path, "-sS", *args], capture_output=True, timeout=30, check=False)
