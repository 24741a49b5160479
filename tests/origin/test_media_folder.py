"""The media folder's remembered paths (origin/media_folder.py): a changed symlink or file is
noticed on the next open, and nothing outside the folder is ever served."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trio_range.origin.media_folder import MAX_REMEMBERED_PATHS, MediaFolder, OpenFile


@pytest.fixture
def layout(tmp_path: Path) -> tuple[MediaFolder, Path, Path]:
    root = tmp_path / "media"
    outside = tmp_path / "outside"
    for folder in (root / "real", root / "other", outside):
        folder.mkdir(parents=True)
    (root / "real" / "clip.bin").write_bytes(b"inside")
    (root / "other" / "clip.bin").write_bytes(b"other inside")
    (outside / "clip.bin").write_bytes(b"SECRET")
    os.symlink(root / "real", root / "dir-link")
    return MediaFolder.at(root), root, outside


def _read(folder: MediaFolder, relative: str) -> bytes | None:
    opened: OpenFile | None = folder.open(relative)
    if opened is None:
        return None
    try:
        return os.pread(opened.fd, 100, 0)
    finally:
        opened.close()


def _retarget(link: Path, target: Path) -> None:
    # Atomically, as a deployment would swap a link.
    staging = link.with_name(link.name + ".new")
    os.symlink(target, staging)
    os.replace(staging, link)


def test_a_directory_link_retargeted_outside_is_refused_on_the_next_open(
    layout: tuple[MediaFolder, Path, Path],
) -> None:
    folder, root, outside = layout
    assert _read(folder, "dir-link/clip.bin") == b"inside"
    assert _read(folder, "dir-link/clip.bin") == b"inside"  # remembered
    _retarget(root / "dir-link", outside)
    assert _read(folder, "dir-link/clip.bin") is None
    assert _read(folder, "dir-link/clip.bin") is None


def test_a_directory_link_retargeted_inside_serves_the_new_file(
    layout: tuple[MediaFolder, Path, Path],
) -> None:
    folder, root, _ = layout
    assert _read(folder, "dir-link/clip.bin") == b"inside"
    _retarget(root / "dir-link", root / "other")
    assert _read(folder, "dir-link/clip.bin") == b"other inside"


def test_a_file_replaced_by_a_link_outside_is_refused(
    layout: tuple[MediaFolder, Path, Path],
) -> None:
    folder, root, outside = layout
    assert _read(folder, "real/clip.bin") == b"inside"
    _retarget(root / "real" / "clip.bin", outside / "clip.bin")
    assert _read(folder, "real/clip.bin") is None


def test_a_file_replaced_by_another_file_serves_the_new_one(
    layout: tuple[MediaFolder, Path, Path],
) -> None:
    folder, root, _ = layout
    assert _read(folder, "real/clip.bin") == b"inside"
    staging = root / "real" / "clip.new"
    staging.write_bytes(b"replaced")
    os.replace(staging, root / "real" / "clip.bin")
    assert _read(folder, "real/clip.bin") == b"replaced"


def test_a_linked_file_follows_its_link_each_time(
    layout: tuple[MediaFolder, Path, Path],
) -> None:
    folder, root, outside = layout
    os.symlink(root / "real" / "clip.bin", root / "file-link.bin")
    assert _read(folder, "file-link.bin") == b"inside"
    _retarget(root / "file-link.bin", root / "other" / "clip.bin")
    assert _read(folder, "file-link.bin") == b"other inside"
    _retarget(root / "file-link.bin", outside / "clip.bin")
    assert _read(folder, "file-link.bin") is None


def test_a_removed_file_is_not_found(layout: tuple[MediaFolder, Path, Path]) -> None:
    folder, root, _ = layout
    assert _read(folder, "real/clip.bin") == b"inside"
    (root / "real" / "clip.bin").unlink()
    assert _read(folder, "real/clip.bin") is None


def test_the_memory_is_bounded(layout: tuple[MediaFolder, Path, Path]) -> None:
    folder, root, _ = layout
    for index in range(MAX_REMEMBERED_PATHS + 5):
        os.link(root / "real" / "clip.bin", root / "real" / f"{index}.bin")
        assert _read(folder, f"real/{index}.bin") == b"inside"
    assert _read(folder, "real/clip.bin") == b"inside"
    assert len(folder._known) <= MAX_REMEMBERED_PATHS
