"""Large deterministic files for benchmarks and soak tests (`trio-range make-media`).

A file made here is a pure function of its seed: the byte at offset ``p`` does not depend on the
file's size, so ``expected_bytes`` can say what any range must contain without reading the file,
and a client can check every byte it received.

The pattern is one 1 MiB block of SHAKE-256 output, rotated by a different amount in each 1 MiB
block of the file. Rotation is a slice of a doubled block, so the writer hands the kernel views of
one buffer and runs at disk-cache speed; hashing every block instead ran at ~300 MB/s here.
The rotations of the first 2**20 blocks (1 TiB) are all distinct and not an arithmetic progression,
so bytes served from the wrong offset, or from the right offset of the wrong block, differ from
the expected ones (a range shifted by one block would only match if two rotations were equal).
"""

from __future__ import annotations

import functools
import hashlib
import os
import pathlib
import re
import secrets
from fractions import Fraction

from trio_range.errors import ConfigError

__all__ = [
    "BLOCK_SIZE_BYTES",
    "expected_bytes",
    "format_size",
    "parse_size",
    "write_deterministic_file",
]

BLOCK_SIZE_BYTES = 1 << 20
_BLOCK_BITS = 20
_BLOCK_MASK = BLOCK_SIZE_BYTES - 1
_MAX_SEED = (1 << 64) - 1
# Linux's off_t is signed 64-bit: no file can be larger.
_MAX_SIZE_BYTES = (1 << 63) - 1

# Without "B" or with "iB" a unit is binary, with "B" alone it is decimal, as GNU coreutils reads
# them (`head -c 10M` is 10 MiB, `10MB` is 10**6 bytes). Units are matched case-insensitively.
_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    **{letter: 1024**power for power, letter in enumerate("kmgtpe", start=1)},
    **{letter + "ib": 1024**power for power, letter in enumerate("kmgtpe", start=1)},
    **{letter + "b": 1000**power for power, letter in enumerate("kmgtpe", start=1)},
}

_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", re.ASCII)
_SIZE_EXAMPLES = "such as 123, 10KiB, 256MiB, 1GiB, 1.5GB or 10M"


def parse_size(text: str) -> int:
    """Return the number of bytes that ``text`` names, e.g. ``"1GiB"`` -> 1073741824.

    Raises ``ConfigError`` for anything that is not a non-negative whole number of bytes.
    """
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        raise ConfigError(f"invalid size {text!r}: expected a number and a unit {_SIZE_EXAMPLES}")
    number, unit = match.groups()
    multiplier = _UNITS.get(unit.lower())
    if multiplier is None:
        raise ConfigError(
            f"invalid size {text!r}: unknown unit {unit!r}; use B or K, M, G, T, P, E "
            "(binary), with iB (binary) or with B (decimal)"
        )
    # Fraction, not float: 1.1GB must be exactly 1100000000, not 1100000000.0000002.
    size = Fraction(number) * multiplier
    if size.denominator != 1:
        raise ConfigError(f"invalid size {text!r}: not a whole number of bytes")
    if size > _MAX_SIZE_BYTES:
        raise ConfigError(f"invalid size {text!r}: larger than the largest possible file")
    return int(size)


def format_size(size_bytes: int) -> str:
    """Return the shortest exact binary spelling of a size that ``parse_size`` reads back.

    ``1073741824`` -> ``"1GiB"``, ``1536`` -> ``"1.5KiB"``, ``1000`` -> ``"1000B"``.
    """
    if size_bytes < 0:
        raise ValueError(f"size must not be negative, got {size_bytes}")
    for unit in ("EiB", "PiB", "TiB", "GiB", "MiB", "KiB"):
        value = Fraction(size_bytes, _UNITS[unit.lower()])
        if value >= 1 and _has_short_decimal(value):
            return f"{_decimal(value)}{unit}"
    return f"{size_bytes}B"


def _has_short_decimal(value: Fraction) -> bool:
    # A power of two in the denominator always has a finite decimal expansion; keep it short so
    # that 1025 bytes prints as "1025B" rather than "1.0009765625KiB".
    scaled = value * 1000
    return scaled.denominator == 1


def _decimal(value: Fraction) -> str:
    whole, rest = divmod(value.numerator, value.denominator)
    if rest == 0:
        return str(whole)
    millis = Fraction(rest, value.denominator) * 1000
    return f"{whole}.{int(millis):03d}".rstrip("0")


def write_deterministic_file(path: pathlib.Path, size_bytes: int, *, seed: int = 0) -> None:
    """Write ``size_bytes`` of the pattern for ``seed`` to ``path``, replacing it atomically.

    The bytes go to a temporary file in the same directory, renamed over ``path`` only once
    complete, so an interrupted run never leaves a short file under the final name. There is no
    fsync: the file can be remade, and syncing 1 GiB would cost more than writing it.
    """
    if size_bytes < 0:
        raise ValueError(f"size must not be negative, got {size_bytes}")
    doubled = memoryview(_doubled_block(seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # os.open with a mode, unlike tempfile.mkstemp's 0600, gives the usual umask-derived
    # permissions, so a server running as another user can read the result.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with open(fd, "wb", buffering=0) as file:
            for block_index in range(-(-size_bytes // BLOCK_SIZE_BYTES)):
                length = min(BLOCK_SIZE_BYTES, size_bytes - block_index * BLOCK_SIZE_BYTES)
                rotation = _rotation(block_index, seed)
                view = doubled[rotation : rotation + length]
                while view:
                    written = file.write(view)
                    assert written is not None  # unbuffered files write, never return None
                    view = view[written:]
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def expected_bytes(size_bytes: int, start: int, length: int, *, seed: int = 0) -> bytes:
    """Return the ``length`` bytes at ``start`` of a file made by ``write_deterministic_file``.

    Computed, not read. ``size_bytes`` is the file's size: a range past its end is a caller's
    mistake and raises ``ValueError`` rather than returning a short answer.
    """
    if start < 0 or length < 0 or start + length > size_bytes:
        raise ValueError(
            f"range start={start} length={length} is not inside a file of {size_bytes} bytes"
        )
    doubled = _doubled_block(seed)
    parts: list[bytes] = []
    position, end = start, start + length
    while position < end:
        block_index, offset = divmod(position, BLOCK_SIZE_BYTES)
        take = min(BLOCK_SIZE_BYTES - offset, end - position)
        rotated_offset = _rotation(block_index, seed) + offset
        parts.append(doubled[rotated_offset : rotated_offset + take])
        position += take
    return b"".join(parts)


@functools.lru_cache(maxsize=4)
def _doubled_block(seed: int) -> bytes:
    # The block twice over, so every rotation is one contiguous slice.
    _check_seed(seed)
    block = hashlib.shake_256(b"trio_range.media_files/v1\0" + seed.to_bytes(8, "big")).digest(
        BLOCK_SIZE_BYTES
    )
    return block + block


def _rotation(block_index: int, seed: int) -> int:
    # A bijection on 20-bit integers (odd multipliers and xor-shifts are invertible mod 2**20),
    # so blocks 0 .. 2**20-1 all get distinct rotations; its non-linearity means no single shift
    # maps every block onto its neighbour. The seed moves the whole sequence.
    x = block_index & _BLOCK_MASK
    x = (x * 0x9E3B5) & _BLOCK_MASK
    x ^= x >> 11
    x = (x * 0x6A09F) & _BLOCK_MASK
    x ^= x >> 9
    return (x + seed) & _BLOCK_MASK


def _check_seed(seed: int) -> None:
    # ConfigError, not ValueError: the seed comes from the command line (make-media --seed).
    if not 0 <= seed <= _MAX_SEED:
        raise ConfigError(f"invalid seed {seed}: must be between 0 and 2**64-1")
