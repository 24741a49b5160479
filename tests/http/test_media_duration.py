"""The container-duration reader: the shipped media, hand-built headers, hostile bytes."""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_range.errors import MediaHeaderError
from trio_range.http.media_duration import MAX_READ_BYTES, MAX_READS, media_duration_s

MEDIA = Path(__file__).resolve().parents[2] / "media"


class Reads:
    """A file in memory, read as the origin reads one; it counts and bounds what is asked."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.calls = 0

    def __call__(self, offset: int, size: int) -> bytes:
        self.calls += 1
        assert 0 <= size <= MAX_READ_BYTES
        assert offset >= 0
        return self.data[offset : offset + size]

    def duration(self) -> float:
        return media_duration_s(self, len(self.data))


def box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(body), kind) + body


def mvhd(timescale: int, duration: int, *, version: int = 0) -> bytes:
    times = b"\0" * (8 if version == 0 else 16)
    layout = ">II" if version == 0 else ">IQ"
    return box(
        b"mvhd", bytes([version, 0, 0, 0]) + times + struct.pack(layout, timescale, duration)
    )


def element(element_id: int, data: bytes) -> bytes:
    # IDs keep their marker bits; sizes written as 8-byte EBML numbers.
    id_bytes = element_id.to_bytes((element_id.bit_length() + 7) // 8, "big")
    return id_bytes + bytes([0x01]) + len(data).to_bytes(7, "big") + data


def webm(*segment_children: bytes) -> bytes:
    return element(0x1A45DFA3, element(0x4282, b"webm")) + element(
        0x18538067, b"".join(segment_children)
    )


def info(duration: float, scale: int | None = None) -> bytes:
    fields = b"" if scale is None else element(0x2AD7B1, scale.to_bytes(4, "big"))
    return element(0x1549A966, fields + element(0x4489, struct.pack(">d", duration)))


@pytest.mark.parametrize(("name", "seconds"), [("sample.mp4", 15.0), ("sample.webm", 15.008)])
def test_the_shipped_media_give_ffprobes_duration(name: str, seconds: float) -> None:
    reads = Reads((MEDIA / name).read_bytes())
    assert reads.duration() == pytest.approx(seconds)
    assert reads.calls <= 64


@pytest.mark.parametrize(
    ("data", "seconds"),
    [
        (box(b"ftyp", b"isom") + box(b"moov", mvhd(1000, 90_000)), 90.0),
        # moov after mdat (no faststart): walked past by its size, not read.
        (box(b"ftyp", b"isom") + box(b"mdat", b"x" * 5000) + box(b"moov", mvhd(600, 300)), 0.5),
        (box(b"ftyp", b"") + box(b"moov", box(b"free", b"") + mvhd(10, 25, version=1)), 2.5),
        # a 64-bit size, and a last box whose size 0 means "to the end of the file"
        (
            struct.pack(">I4sQ", 1, b"ftyp", 20)
            + b"isom"
            + struct.pack(">I4s", 0, b"moov")
            + mvhd(2, 7),
            3.5,
        ),
        (webm(info(2000.0)), 2.0),  # the default scale: milliseconds
        (webm(element(0xEC, b"\0" * 9), info(5.0, scale=1_000_000_000)), 5.0),
    ],
)
def test_hand_built_headers(data: bytes, seconds: float) -> None:
    assert Reads(data).duration() == pytest.approx(seconds)


def test_a_webm_info_after_the_first_cluster_is_found_through_the_seek_head() -> None:
    cluster = element(0x1F43B675, b"\0" * 100)
    head_length = len(
        element(
            0x114D9B74,
            element(0x4DBB, element(0x53AB, b"\x15\x49\xa9\x66") + element(0x53AC, b"\0\0")),
        )
    )
    position = (head_length + len(cluster)).to_bytes(2, "big")
    seek = element(0x4DBB, element(0x53AB, b"\x15\x49\xa9\x66") + element(0x53AC, position))
    data = webm(element(0x114D9B74, seek), cluster, info(42_000.0))
    assert Reads(data).duration() == pytest.approx(42.0)
    with pytest.raises(MediaHeaderError, match="no Info"):
        Reads(webm(cluster, info(42_000.0))).duration()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "neither"),
        (b"GIF89a" + b"\0" * 100, "neither"),
        (box(b"ftyp", b"isom"), "no moov"),
        (box(b"ftyp", b"") + box(b"moov", box(b"trak", b"")), "no mvhd"),
        (box(b"ftyp", b"") + box(b"moov", mvhd(0, 10)), "no duration"),
        (box(b"ftyp", b"") + box(b"moov", mvhd(1000, 0xFFFFFFFF)), "no duration"),
        (box(b"ftyp", b"") + box(b"moov", mvhd(1, 0)), "implausible"),
        (box(b"ftyp", b"") + box(b"moov", mvhd(1, 10**9, version=1)), "implausible"),
        (box(b"ftyp", b"") + box(b"moov", box(b"mvhd", b"\x02")), "version 2"),
        (box(b"ftyp", b"") + box(b"moov", box(b"mvhd", b"\0\0\0\0")), "too short"),
        (struct.pack(">I4s", 4, b"ftyp"), "impossible size"),
        (struct.pack(">I4s", 99, b"ftyp"), "impossible size"),
        (webm(info(float("nan"))), "implausible"),
        (webm(info(-5.0)), "implausible"),
        (webm(element(0x1549A966, b"")), "no duration"),
        (webm(element(0x1549A966, element(0x2AD7B1, b"\0" * 9))), "9 bytes"),
        (element(0x1A45DFA3, b"") + element(0x1F43B675, b""), "no Segment"),
        (b"\x1a\x45\xdf\xa3\x00", "invalid EBML"),
        (b"\x1a\x45\xdf\xa3\xff" + element(0x18538067, b""), "unknown size"),
    ],
)
def test_broken_headers_raise_our_error(data: bytes, message: str) -> None:
    with pytest.raises(MediaHeaderError, match=message):
        Reads(data).duration()


@pytest.mark.parametrize("name", ["sample.mp4", "sample.webm"])
def test_every_truncation_of_a_real_header_gives_a_duration_or_our_error(name: str) -> None:
    whole = (MEDIA / name).read_bytes()[:20_000]
    for end in range(0, 20_000, 97):
        with contextlib.suppress(MediaHeaderError):
            Reads(whole[:end]).duration()


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(["sample.mp4", "sample.webm"]),
    edits=st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), max_size=12),
    end=st.integers(0, 1_500_000),
)
def test_hostile_edits_of_a_real_header_never_raise_anything_else(
    name: str, edits: list[tuple[int, int]], end: int
) -> None:
    data = bytearray((MEDIA / name).read_bytes()[:end])
    for at, value in edits:
        if at < len(data):
            data[at] = value
    reads = Reads(bytes(data))
    with contextlib.suppress(MediaHeaderError):
        reads.duration()
    assert reads.calls <= MAX_READS


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.sampled_from([b"", b"\x1a\x45\xdf\xa3", b"\0\0\0\x10ftyp"]))
def test_random_bytes_never_raise_anything_else(data: bytes, prefix: bytes) -> None:
    reads = Reads(prefix + data)
    with contextlib.suppress(MediaHeaderError):
        assert reads.duration() > 0
    assert reads.calls <= MAX_READS
