"""Fixtures shared by the server tests."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, settings

from tests.support.servers import start_origin

# Hypothesis budgets for tests that do not set their own (tests/http/test_fuzz.py): "ci" is small
# enough for `make test`; `make fuzz` runs the "fuzz" profile. Chosen by HYPOTHESIS_PROFILE.
settings.register_profile("ci", max_examples=200, deadline=None)
settings.register_profile(
    "fuzz", max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# 11 bytes, the size Go's ServeFileRangeTests use.
SMALL = b"0123456789A"

# (Range value, start, stop) on SMALL: the 206 cases every server and proxy path must pass
# byte-exact (origin direct, proxy in front of the origin, proxy in front of nginx).
SINGLE_RANGE_CASES = [
    ("bytes=0-4", 0, 5),
    ("bytes=2-", 2, 11),
    ("bytes=-5", 6, 11),
    ("bytes=3-7", 3, 8),
    ("bytes=5-1000", 5, 11),
    ("bytes=0-10", 0, 11),
    ("bytes=0-", 0, 11),
    ("bytes=0-1", 0, 2),
    ("bytes=-100", 0, 11),
]


def file_data(size: int, seed: int = 7) -> bytes:
    """Deterministic pseudo-random bytes: an offset error cannot go unnoticed."""
    return random.Random(seed).randbytes(size)


@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    """A media folder with a small file, a larger one, an empty one and a subfolder."""
    root = tmp_path / "media"
    root.mkdir()
    (root / "small.bin").write_bytes(SMALL)
    (root / "big.bin").write_bytes(file_data(3_000_000))
    (root / "empty.bin").write_bytes(b"")
    (root / "sub").mkdir()
    (root / "sub" / "clip.mp4").write_bytes(file_data(5000, seed=3))
    (tmp_path / "secret.txt").write_bytes(b"outside the media folder")
    os.symlink(tmp_path / "secret.txt", root / "escape.txt")
    os.symlink(root / "small.bin", root / "inside-link.bin")
    return root


@pytest.fixture
async def origin_url(nursery: trio.Nursery, media_dir: Path) -> str:
    return await start_origin(
        nursery, media_dir=media_dir, default_file="big.bin", chunk_size_bytes=64 * 1024
    )
