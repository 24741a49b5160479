"""A media file's duration from its container header: MP4 ``moov/mvhd``, WebM ``Segment/Info``.

The origin paces a video at a multiple of its average bitrate (size / duration, issue 16), so
it needs the duration without a demuxer. This reads the few boxes or elements that hold it:

- MP4 (ISO/IEC 14496-12 §4.2, §8.2.2): top-level boxes are walked by their sizes to ``moov``
  (at the start of a "faststart" file, after ``mdat`` otherwise), then its children to
  ``mvhd``, whose version 0 or 1 body gives a timescale (units per second) and a duration.
- WebM / Matroska (RFC 9559): the EBML header is skipped, then the Segment's children are
  walked to ``Info``, whose ``TimestampScale`` (nanoseconds per tick, default 1 000 000) and
  ``Duration`` (a float, in ticks) give the duration. An Info after the first Cluster is found
  through the SeekHead.

Pure, with bounded work: the caller passes ``read(offset, size) -> bytes`` (fewer bytes at the
end of the file); this asks for at most :data:`MAX_READS` pieces of at most
:data:`MAX_READ_BYTES` each, whatever the file claims. Any header it cannot make sense of
raises :class:`~trio_range.errors.MediaHeaderError`, and nothing else.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable

from trio_range.errors import MediaHeaderError

Read = Callable[[int, int], bytes]

MAX_READS = 256
MAX_READ_BYTES = 64
# A duration past this (about 11.5 days) is taken for a broken header, as is one of 0.
MAX_DURATION_S = 1e6

_MP4_TYPES = frozenset({b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide"})
_EBML, _SEGMENT, _SEEK_HEAD, _SEEK, _SEEK_ID, _SEEK_POSITION = (
    0x1A45DFA3,
    0x18538067,
    0x114D9B74,
    0x4DBB,
    0x53AB,
    0x53AC,
)
_INFO, _TIMESTAMP_SCALE, _DURATION, _CLUSTER = 0x1549A966, 0x2AD7B1, 0x4489, 0x1F43B675


class _Reader:
    """``read`` with the budget: each call counted, each piece bounded, short reads refused."""

    __slots__ = ("calls", "read", "size")

    def __init__(self, read: Read, size: int) -> None:
        self.read, self.size, self.calls = read, size, 0

    def exactly(self, offset: int, count: int) -> bytes:
        if count > MAX_READ_BYTES or offset < 0 or offset + count > self.size:
            raise MediaHeaderError(f"header field at {offset} (+{count}) is out of bounds")
        self.calls += 1
        if self.calls > MAX_READS:
            raise MediaHeaderError(f"no duration within {MAX_READS} header reads")
        data = self.read(offset, count)
        if len(data) != count:
            raise MediaHeaderError(f"file ended inside the header at {offset}")
        return data


def media_duration_s(read: Read, size: int) -> float:
    """The duration, in seconds, of the MP4 or WebM file of ``size`` bytes that ``read`` reads.

    Raises MediaHeaderError for any other file, or a header that gives no sane duration.
    """
    reader = _Reader(read, size)
    head = reader.exactly(0, min(8, size))
    if head[:4] == _EBML.to_bytes(4, "big"):
        return _checked(_webm_duration(reader))
    if head[4:8] in _MP4_TYPES:
        return _checked(_mp4_duration(reader))
    raise MediaHeaderError("neither an MP4 nor a WebM file")


def _checked(duration_s: float) -> float:
    if not (math.isfinite(duration_s) and 0 < duration_s <= MAX_DURATION_S):
        raise MediaHeaderError(f"implausible duration {duration_s!r} s")
    return duration_s


# -- MP4 ----------------------------------------------------------------------------------------


def _boxes(reader: _Reader, start: int, end: int) -> tuple[bytes, int, int]:
    """The box at ``start`` (before ``end``): its type, body offset and end."""
    size, kind = struct.unpack(">I4s", reader.exactly(start, 8))
    body = start + 8
    if size == 1:  # a 64-bit size follows the type
        (size,) = struct.unpack(">Q", reader.exactly(body, 8))
        body += 8
    elif size == 0:  # the box runs to the end of its container
        size = end - start
    box_end = start + size
    if box_end < body or box_end > end:
        raise MediaHeaderError(f"box {kind!r} at {start} has an impossible size {size}")
    return kind, body, box_end


def _find_box(reader: _Reader, kind: bytes, start: int, end: int) -> tuple[int, int]:
    offset = start
    while offset + 8 <= end:
        found, body, box_end = _boxes(reader, offset, end)
        if found == kind:
            return body, box_end
        offset = box_end
    raise MediaHeaderError(f"no {kind.decode()} box")


def _mp4_duration(reader: _Reader) -> float:
    moov, moov_end = _find_box(reader, b"moov", 0, reader.size)
    mvhd, mvhd_end = _find_box(reader, b"mvhd", moov, moov_end)
    version = reader.exactly(mvhd, 1)[0]
    if version == 0:
        layout, at = ">II", mvhd + 12  # version+flags, creation and modification times: 4 each
    elif version == 1:
        layout, at = ">IQ", mvhd + 20  # the times are 8 bytes each in version 1
    else:
        raise MediaHeaderError(f"mvhd version {version}")
    if at + struct.calcsize(layout) > mvhd_end:
        raise MediaHeaderError("mvhd too short")
    timescale, duration = struct.unpack(layout, reader.exactly(at, struct.calcsize(layout)))
    if timescale == 0 or duration in (0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF):
        raise MediaHeaderError("mvhd gives no duration")
    return float(duration / timescale)


# -- WebM / Matroska ----------------------------------------------------------------------------


def _vint(reader: _Reader, offset: int, *, keep_marker: bool) -> tuple[int, int, bool]:
    """An EBML variable-length integer at ``offset``: its value, its length, and whether it is
    the all-ones "unknown" value (for sizes)."""
    first = reader.exactly(offset, 1)[0]
    if first == 0:
        raise MediaHeaderError(f"invalid EBML number at {offset}")
    length = 9 - first.bit_length()
    data = reader.exactly(offset, length) if length > 1 else bytes([first])
    value = int.from_bytes(data, "big")
    marker = 1 << (7 * length)
    unknown = value - marker == marker - 1
    return (value if keep_marker else value - marker), length, unknown


def _element(reader: _Reader, offset: int) -> tuple[int, int, int | None]:
    """The element at ``offset``: its ID, data offset and data size (None: unknown size)."""
    element_id, id_length, _ = _vint(reader, offset, keep_marker=True)
    if id_length > 4:
        raise MediaHeaderError(f"EBML ID longer than 4 bytes at {offset}")
    size, size_length, unknown = _vint(reader, offset + id_length, keep_marker=False)
    return element_id, offset + id_length + size_length, None if unknown else size


def _children(reader: _Reader, start: int, end: int) -> list[tuple[int, int, int | None]]:
    """The elements from ``start`` up to ``end``, stopping at an unknown size or a Cluster."""
    found = []
    offset = start
    while offset < end:
        element_id, data, size = _element(reader, offset)
        found.append((element_id, data, size))
        if size is None or element_id == _CLUSTER:
            break
        offset = data + size
    return found


def _uint(reader: _Reader, data: int, size: int) -> int:
    if not 1 <= size <= 8:
        raise MediaHeaderError(f"unsigned integer of {size} bytes")
    return int.from_bytes(reader.exactly(data, size), "big")


def _webm_duration(reader: _Reader) -> float:
    _, data, size = _element(reader, 0)
    if size is None:
        raise MediaHeaderError("EBML header of unknown size")
    segment_id, segment, segment_size = _element(reader, data + size)
    if segment_id != _SEGMENT:
        raise MediaHeaderError("no Segment after the EBML header")
    segment_end = reader.size if segment_size is None else min(reader.size, segment + segment_size)
    children = _children(reader, segment, segment_end)
    info = next(((d, s) for i, d, s in children if i == _INFO), None)
    if info is None:
        info = _info_from_seek_head(reader, children, segment, segment_end)
    info_data, info_size = info
    if info_size is None:
        raise MediaHeaderError("Info of unknown size")
    scale, duration = 1_000_000, None
    for element_id, data, size in _children(reader, info_data, info_data + info_size):
        if element_id == _TIMESTAMP_SCALE and size is not None:
            scale = _uint(reader, data, size)
        elif element_id == _DURATION and size in (4, 8):
            (duration,) = struct.unpack(">f" if size == 4 else ">d", reader.exactly(data, size))
    if duration is None or scale == 0:
        raise MediaHeaderError("Info gives no duration")
    return float(duration) * scale / 1e9


def _info_from_seek_head(
    reader: _Reader, children: list[tuple[int, int, int | None]], segment: int, end: int
) -> tuple[int, int | None]:
    """The Info element that the Segment's SeekHead points at."""
    for element_id, data, size in children:
        if element_id != _SEEK_HEAD or size is None:
            continue
        for seek_id, seek, seek_size in _children(reader, data, data + size):
            if seek_id != _SEEK or seek_size is None:
                continue
            fields = {i: (d, s) for i, d, s in _children(reader, seek, seek + seek_size)}
            target, position = fields.get(_SEEK_ID), fields.get(_SEEK_POSITION)
            if target is None or position is None or target[1] is None or position[1] is None:
                continue
            if _uint(reader, target[0], target[1]) != _INFO:
                continue
            info_at = segment + _uint(reader, position[0], position[1])
            info_id, info_data, info_size = _element(reader, info_at)
            if info_id == _INFO and info_data < end:
                return info_data, info_size
    raise MediaHeaderError("no Info before the first Cluster, and no SeekHead entry for it")
