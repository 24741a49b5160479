"""Slice files kept open across answers (proxy/cache/open_files.py), on real files.

A kept file must never serve a slice that was evicted, dropped or replaced, and an answer
holding one must read it to its end whatever happens to its path meanwhile.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from trio_range.http.conditional import Validators
from trio_range.proxy.cache.open_files import IDLE_S, RECHECK_S
from trio_range.proxy.cache.store import SliceStore

SLICE = 64 * 1024
V1, V2 = Validators('"v1"', None), Validators('"v2"', None)


def slice_bytes(index: int, version: int = 1) -> bytes:
    return bytes([(index * 7 + version) % 256]) * SLICE


def is_closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as error:
        return error.errno == errno.EBADF
    return False


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_store(tmp_path: Path, *, max_bytes: int = 64 * SLICE, open_files: int = 8) -> SliceStore:
    store = SliceStore(tmp_path / "cache", max_bytes, open_files=open_files)
    store.scan()
    return store


async def test_a_kept_file_is_handed_out_again_until_its_path_is_rewritten(
    tmp_path: Path,
) -> None:
    store = make_store(tmp_path)
    await store.write_slice("/v", 0, V1, 4 * SLICE, slice_bytes(0))
    first = store.open_slice("/v", 0, '"v1"', 4 * SLICE, SLICE)
    store.release(first)
    again = store.open_slice("/v", 0, '"v1"', 4 * SLICE, SLICE)
    assert again is first  # no open, no header read
    assert os.pread(again.fd, SLICE, again.data_offset) == slice_bytes(0)
    store.release(again)
    # Rewritten at the same path (a refill): the kept file is the replaced one, closed.
    await store.write_slice("/v", 0, V1, 4 * SLICE, slice_bytes(0))
    assert is_closed(first.fd)
    fresh = store.open_slice("/v", 0, '"v1"', 4 * SLICE, SLICE)
    assert fresh is not first
    store.release(fresh)
    # Asked for another version: the kept file (of v1) is dropped and the disk has no v2.
    with pytest.raises(KeyError):
        store.open_slice("/v", 0, '"v2"', 4 * SLICE, SLICE)
    assert is_closed(fresh.fd)
    store.close_files()


async def test_an_evicted_or_dropped_slice_stays_readable_while_held_then_closes(
    tmp_path: Path,
) -> None:
    header_room = 1024
    store = make_store(tmp_path, max_bytes=2 * (SLICE + header_room))
    await store.write_slice("/v", 0, V1, 4 * SLICE, slice_bytes(0))
    held = store.open_slice("/v", 0, '"v1"', 4 * SLICE, SLICE)
    await store.write_slice("/v", 1, V1, 4 * SLICE, slice_bytes(1))
    await store.write_slice("/v", 2, V1, 4 * SLICE, slice_bytes(2))  # slice 0 is evicted
    assert not store.has_slice("/v", 0)
    assert os.pread(held.fd, SLICE, held.data_offset) == slice_bytes(0)
    with pytest.raises(KeyError):  # never handed out again
        store.open_slice("/v", 0, '"v1"', 4 * SLICE, SLICE)
    store.release(held)
    assert is_closed(held.fd)
    # Dropped with its object (a new version upstream) while held: the same.
    kept = store.open_slice("/v", 2, '"v1"', 4 * SLICE, SLICE)
    store.drop_object("/v", 4)
    assert os.pread(kept.fd, SLICE, kept.data_offset) == slice_bytes(2)
    assert not is_closed(kept.fd)
    store.release(kept)
    assert is_closed(kept.fd)
    store.close_files()


async def test_files_kept_are_bounded_least_recently_used_out(tmp_path: Path) -> None:
    store = make_store(tmp_path, open_files=2)
    opened = []
    for index in range(3):
        await store.write_slice("/v", index, V1, 4 * SLICE, slice_bytes(index))
        opened.append(store.open_slice("/v", index, '"v1"', 4 * SLICE, SLICE))
        store.release(opened[-1])
    assert len(store.open_files) == 2
    assert [is_closed(each.fd) for each in opened] == [True, False, False]
    store.close_files()
    assert [is_closed(each.fd) for each in opened] == [True, True, True]


async def test_another_workers_rewrite_or_eviction_is_seen_after_the_recheck(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    store = make_store(tmp_path)
    store.open_files.clock = clock
    other = make_store(tmp_path)  # a second worker on the same folder
    await store.write_slice("/v", 0, V1, 4 * SLICE, slice_bytes(0))
    kept = store.open_slice("/v", 0, '"v1"', 4 * SLICE, SLICE)
    store.release(kept)
    # The other worker writes the slice again (a new file at the path, v2 of the object).
    await other.write_slice("/v", 0, V2, 4 * SLICE, slice_bytes(0, version=2))
    clock.now += RECHECK_S / 2
    # Within the recheck time the kept file is used: whole, of the version asked for (v1).
    assert store.open_slice("/v", 0, '"v1"', 4 * SLICE, SLICE) is kept
    store.release(kept)
    clock.now += RECHECK_S
    with pytest.raises(KeyError):  # the path holds v2 now: nothing of v1 is served
        store.open_slice("/v", 0, '"v1"', 4 * SLICE, SLICE)
    assert is_closed(kept.fd)
    now_v2 = store.open_slice("/v", 0, '"v2"', 4 * SLICE, SLICE)
    assert os.pread(now_v2.fd, SLICE, now_v2.data_offset) == slice_bytes(0, version=2)
    store.release(now_v2)
    # The other worker evicts it: seen at the next recheck.
    os.unlink(other.slice_path("/v", 0))
    clock.now += 2 * RECHECK_S
    with pytest.raises(KeyError):
        store.open_slice("/v", 0, '"v2"', 4 * SLICE, SLICE)
    assert is_closed(now_v2.fd)
    store.close_files()


async def test_files_no_answer_uses_are_closed_after_a_while(tmp_path: Path) -> None:
    clock = FakeClock()
    store = make_store(tmp_path)
    store.open_files.clock = clock
    for index in (0, 1):
        await store.write_slice("/v", index, V1, 4 * SLICE, slice_bytes(index))
    idle = store.open_slice("/v", 0, '"v1"', 4 * SLICE, SLICE)
    store.release(idle)
    clock.now += IDLE_S / 2
    busy = store.open_slice("/v", 1, '"v1"', 4 * SLICE, SLICE)  # held by a long answer
    store.open_files.close_idle()
    assert len(store.open_files) == 2
    clock.now += IDLE_S / 2 + IDLE_S
    store.open_files.close_idle()
    assert len(store.open_files) == 0
    assert is_closed(idle.fd)
    assert os.pread(busy.fd, SLICE, busy.data_offset) == slice_bytes(1)  # still being sent
    store.release(busy)
    assert is_closed(busy.fd)


async def test_a_slice_starts_on_a_page_and_a_new_store_reads_it_back(tmp_path: Path) -> None:
    # Page-aligned slice bytes: the kernel's sendfile from an unaligned offset cost ~8% more
    # (docs/cache.md, the cache_stream target). The padding must not break a later reader.
    store = make_store(tmp_path)
    await store.write_slice("/v" + "x" * 300, 1, V1, 4 * SLICE, slice_bytes(1))
    written = store.open_slice("/v" + "x" * 300, 1, '"v1"', 4 * SLICE, SLICE)
    assert written.data_offset % 4096 == 0
    store.release(written)
    store.close_files()
    again = make_store(tmp_path)  # a restart: no header known, the file parsed
    opened = again.open_slice("/v" + "x" * 300, 1, '"v1"', 4 * SLICE, SLICE)
    assert opened.data_offset % 4096 == 0
    assert os.pread(opened.fd, SLICE + 1, opened.data_offset) == slice_bytes(1)
    again.release(opened)
    again.close_files()
