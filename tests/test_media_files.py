"""Tests for the deterministic media files behind `trio-range make-media`."""

from __future__ import annotations

import os
import pathlib
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_range import media_files
from trio_range.errors import ConfigError
from trio_range.media_files import (
    BLOCK_SIZE_BYTES,
    expected_bytes,
    format_size,
    parse_size,
    write_deterministic_file,
)

KIB, MIB, GIB, TIB = 1024, 1024**2, 1024**3, 1024**4

# A size that is not a whole number of blocks, so the short last block is exercised.
FILE_SIZE = 3 * BLOCK_SIZE_BYTES + 12_345
FILE_SEED = 7


@pytest.fixture(scope="module")
def written_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("media") / "file.bin"
    write_deterministic_file(path, FILE_SIZE, seed=FILE_SEED)
    return path.read_bytes()


# --- parse_size ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("123", 123),
        ("123B", 123),
        ("10K", 10 * KIB),
        ("10KiB", 10 * KIB),
        ("10KB", 10_000),
        ("256MiB", 256 * MIB),
        ("10M", 10 * MIB),
        ("10MB", 10_000_000),
        ("1GiB", GIB),
        ("1G", GIB),
        ("1.5GB", 1_500_000_000),
        ("1.5GiB", 3 * GIB // 2),
        ("1.1GB", 1_100_000_000),
        ("2TiB", 2 * TIB),
        ("1gib", GIB),
        ("1 GiB", GIB),
        ("  64kib  ", 64 * KIB),
        ("007M", 7 * MIB),
    ],
)
def test_parse_size_reads_numbers_with_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "GiB",
        "-1",
        "+1",
        "1e9",
        "1.",
        ".5M",
        "1,5M",
        "1_000",
        "0x10",
        "1.5",  # 1.5 bytes
        "1.0000001KiB",  # 1024.0001024 bytes
        "10 XB",
        "10 bits",
        "10MiBs",
        "1 G iB",
        "١٢",  # Arabic-Indic digits: int() would accept them, sizes do not
        "9999999999EiB",
    ],
)
def test_parse_size_rejects_bad_input_with_a_one_line_config_error(text: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        parse_size(text)
    message = str(excinfo.value)
    assert repr(text) in message
    assert "\n" not in message


@given(st.text(max_size=20))
def test_parse_size_raises_nothing_but_config_error(text: str) -> None:
    try:
        size = parse_size(text)
    except ConfigError:
        return
    assert size >= 0


UNITS = [
    ("", 1),
    ("B", 1),
    ("K", KIB),
    ("KiB", KIB),
    ("KB", 1000),
    ("M", MIB),
    ("MiB", MIB),
    ("MB", 1000**2),
    ("G", GIB),
    ("GiB", GIB),
    ("GB", 1000**3),
    ("T", TIB),
    ("TiB", TIB),
    ("TB", 1000**4),
]


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(UNITS), st.booleans())
def test_parse_size_multiplies_by_the_unit(number: int, unit: tuple[str, int], space: bool) -> None:
    suffix, multiplier = unit
    text = f"{number}{' ' if space and suffix else ''}{suffix}"
    assert parse_size(text) == number * multiplier


@given(st.integers(min_value=0, max_value=2**62))
def test_format_size_round_trips_through_parse_size(size: int) -> None:
    assert parse_size(format_size(size)) == size


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0B"), (1000, "1000B"), (1024, "1KiB"), (1025, "1025B"), (1536, "1.5KiB"), (GIB, "1GiB")],
)
def test_format_size_prefers_the_shortest_binary_unit(size: int, text: str) -> None:
    assert format_size(size) == text


# --- write_deterministic_file and expected_bytes ---------------------------------------------


def test_written_file_has_the_requested_size(written_file: bytes) -> None:
    assert len(written_file) == FILE_SIZE


@given(st.data())
def test_expected_bytes_equal_the_written_file_at_any_range(
    written_file: bytes, data: st.DataObject
) -> None:
    start = data.draw(st.integers(min_value=0, max_value=FILE_SIZE), label="start")
    length = data.draw(st.integers(min_value=0, max_value=FILE_SIZE - start), label="length")
    assert (
        expected_bytes(FILE_SIZE, start, length, seed=FILE_SEED)
        == (written_file[start : start + length])
    )


@pytest.mark.parametrize(
    ("start", "length"),
    [
        (0, FILE_SIZE),  # the whole file, every block boundary
        (BLOCK_SIZE_BYTES - 1, 2),  # straddles the first boundary
        (3 * BLOCK_SIZE_BYTES, 12_345),  # the short last block
        (FILE_SIZE - 1, 1),
        (FILE_SIZE, 0),
    ],
)
def test_expected_bytes_across_block_boundaries(
    written_file: bytes, start: int, length: int
) -> None:
    assert (
        expected_bytes(FILE_SIZE, start, length, seed=FILE_SEED)
        == (written_file[start : start + length])
    )


@pytest.mark.parametrize(("start", "length"), [(-1, 1), (0, -1), (FILE_SIZE, 1), (1, FILE_SIZE)])
def test_expected_bytes_rejects_ranges_outside_the_file(start: int, length: int) -> None:
    with pytest.raises(ValueError, match="not inside a file"):
        expected_bytes(FILE_SIZE, start, length)


def test_content_does_not_depend_on_the_file_size(tmp_path: pathlib.Path) -> None:
    small, large = tmp_path / "small.bin", tmp_path / "large.bin"
    write_deterministic_file(small, BLOCK_SIZE_BYTES + 10)
    write_deterministic_file(large, 2 * BLOCK_SIZE_BYTES)
    assert large.read_bytes().startswith(small.read_bytes())


def test_an_empty_file_can_be_written(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "empty.bin"
    write_deterministic_file(path, 0)
    assert path.read_bytes() == b""


def test_same_offset_in_different_blocks_holds_different_bytes() -> None:
    # A server that reads the right offset of the wrong block must be caught.
    size = 64 * BLOCK_SIZE_BYTES
    for offset in (0, 12_345, BLOCK_SIZE_BYTES - 16):
        windows = {expected_bytes(size, b * BLOCK_SIZE_BYTES + offset, 16) for b in range(64)}
        assert len(windows) == 64


def test_a_shifted_range_holds_different_bytes() -> None:
    size = 4 * BLOCK_SIZE_BYTES
    start = 2 * BLOCK_SIZE_BYTES - 100
    expected = expected_bytes(size, start, 4096)
    for shift in (-BLOCK_SIZE_BYTES, -1, 1, 2, 4096, BLOCK_SIZE_BYTES, BLOCK_SIZE_BYTES + 1):
        assert expected_bytes(size, start + shift, 4096) != expected


def test_block_rotations_are_distinct_for_the_first_terabyte() -> None:
    assert len({media_files._rotation(i, 0) for i in range(2**20)}) == 2**20


def test_seeds_give_different_files() -> None:
    assert expected_bytes(MIB, 0, 64, seed=0) != expected_bytes(MIB, 0, 64, seed=1)


def test_the_pattern_does_not_compress() -> None:
    data = expected_bytes(4 * MIB, 0, 4 * MIB)
    assert len(zlib.compress(data)) > 0.99 * len(data)


@pytest.mark.parametrize("seed", [-1, 2**64])
def test_seed_outside_64_bits_is_a_config_error(seed: int, tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="invalid seed"):
        expected_bytes(10, 0, 1, seed=seed)
    with pytest.raises(ConfigError, match="invalid seed"):
        write_deterministic_file(tmp_path / "file.bin", 10, seed=seed)
    assert os.listdir(tmp_path) == []


def test_writing_replaces_an_existing_file_and_leaves_no_temporary(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"old contents that are longer than the new file")
    write_deterministic_file(path, 10, seed=3)
    assert path.read_bytes() == expected_bytes(10, 0, 10, seed=3)
    assert os.listdir(tmp_path) == ["file.bin"]


def test_an_interrupted_write_keeps_the_old_file_and_removes_the_temporary(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_deterministic_file(path, 3 * BLOCK_SIZE_BYTES)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_missing_parent_directories_are_created(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "a" / "b" / "file.bin"
    write_deterministic_file(path, 5)
    assert path.read_bytes() == expected_bytes(5, 0, 5)


def test_written_file_is_readable_by_others(tmp_path: pathlib.Path) -> None:
    # A server may run as another user; tempfile.mkstemp would have made it 0600.
    path = tmp_path / "file.bin"
    old_umask = os.umask(0o022)
    try:
        write_deterministic_file(path, 5)
    finally:
        os.umask(old_umask)
    assert path.stat().st_mode & 0o777 == 0o644
