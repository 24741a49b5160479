"""The slice cache on disk: slice files with a header, object records, LRU eviction to a bound.

Layout under the cache folder::

    tmp/                         files being written (emptied at start-up)
    objects/ab/<hash>.meta       the object's record: key, validators, size, type, freshness
    objects/ab/<hash>.<index>    one slice: a header (key, index, ETag, complete length, slice
                                 length), then the slice's bytes

Every file is written whole to ``tmp/`` and renamed into place (``os.replace``, atomic within a
filesystem): a reader, in this process or another worker's, sees a complete file or none, and
a crash (SIGKILL mid-fill) leaves only a temporary file, removed at the next start. A slice is
served only when its header names the key, index, ETag and lengths the answer expects and the
file's size agrees, so a slice of another version, or a damaged file, is never sent.

Eviction unlinks the least recently used files (slices, and records, which clients can multiply
with query strings) until the bound holds; an answer that has the
file open keeps reading it (the inode lives until the last descriptor closes). Each process
knows the slices it wrote, found at start-up or opened since: with several workers sharing a
folder, each holds the bound over those (docs/cache.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from trio_range.http.conditional import Validators
from trio_range.proxy.cache.open_files import OpenFiles, OpenSlice, default_limit

log = logging.getLogger("trio_range.proxy")

_MAGIC = b"TRSC1\n"
_LENGTH = struct.Struct(">I")
_MAX_HEADER = 64 * 1024
_DATA_ALIGN = 4096  # where a slice's bytes start: a page boundary


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectRecord:
    """What the cache knows of one object: enough to plan any answer without the upstream."""

    key: str
    etag: str
    last_modified: int | None
    size: int
    content_type: str
    cache_control: str
    stored_at: float  # wall clock of the answer that last validated it
    fresh_until: float  # wall clock

    @property
    def validators(self) -> Validators:
        return Validators(self.etag, self.last_modified)


@functools.lru_cache(maxsize=4096)
def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def _with_header(fields: dict[str, Any]) -> bytes:
    """The header, padded with spaces (JSON whitespace) so the slice's bytes start on a page:
    the kernel's sendfile from an unaligned offset was ~8% slower in a bare loop over 1 MiB
    slices (docs/cache.md, the cache_stream target)."""
    text = json.dumps(fields, separators=(",", ":")).encode()
    used = len(_MAGIC) + _LENGTH.size + len(text)
    text += b" " * (-used % _DATA_ALIGN)
    return _MAGIC + _LENGTH.pack(len(text)) + text


_Header = tuple[dict[str, Any], int]  # a slice file's header fields, the offset after it
_HEADERS_KEPT = 4096
# What a slice file's header says, as a hit compares it: key, index, ETag, complete length,
# slice length.
_Version = tuple[object, object, object, object, object]


def _version(fields: dict[str, Any]) -> _Version:
    get = fields.get
    return get("key"), get("index"), get("etag"), get("size"), get("length")


def _read_header(fd: int) -> _Header | None:
    """The header's fields and the offset after it, or None when it is not one of ours."""
    head = os.pread(fd, len(_MAGIC) + _LENGTH.size, 0)
    if len(head) != len(_MAGIC) + _LENGTH.size or not head.startswith(_MAGIC):
        return None
    (length,) = _LENGTH.unpack(head[len(_MAGIC) :])
    if length > _MAX_HEADER:
        return None
    text = os.pread(fd, length, len(head))
    try:
        fields = json.loads(text)
    except ValueError:
        return None
    if not isinstance(fields, dict):
        return None
    return fields, len(head) + length


class SliceStore:
    """The cache folder: write, open, drop and evict slices; read and write object records."""

    def __init__(
        self,
        root: Path,
        max_bytes: int,
        on_evict: Callable[[int], None] = lambda n: None,
        *,
        open_files: int | None = None,
    ) -> None:
        self.root = root
        self.on_evict = on_evict
        self.max_bytes = max_bytes
        self._tmp = root / "tmp"
        self._objects = root / "objects"
        self._objects_text = str(self._objects)
        self._lru: OrderedDict[str, int] = OrderedDict()  # slice path -> file bytes
        self.disk_bytes = 0
        self._writing = 0  # bytes of slices being written now, counted against the bound
        # Slice path -> the bytes of the header last parsed there, what they said, its length.
        self._headers: OrderedDict[str, tuple[bytes, _Version, int]] = OrderedDict()
        # Slice files open across answers (open_files.py): a hit opens nothing.
        self.open_files = OpenFiles(default_limit() if open_files is None else open_files)
        # The answer is done with a slice open_slice gave it (bound: one call less per hit).
        self.release: Callable[[OpenSlice], None] = self.open_files.release

    # --- paths -------------------------------------------------------------------------------

    def _base(self, key: str) -> str:
        # Strings, not Path objects: this runs for every slice an answer reads.
        digest = _hash(key)
        return f"{self._objects_text}/{digest[:2]}/{digest}"

    def slice_path(self, key: str, index: int) -> str:
        return f"{self._base(key)}.{index}"

    def _record_path(self, key: str) -> str:
        return f"{self._base(key)}.meta"

    # --- start-up ----------------------------------------------------------------------------

    def scan(self) -> None:
        """Create the folders, remove temporary files, drop slice files that do not check.

        Blocking (a walk of the folder): run it in a worker thread at start-up.
        """
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._objects.mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()
        found: list[tuple[float, str, int]] = []
        for folder in self._objects.iterdir():
            for path in folder.iterdir() if folder.is_dir() else ():
                if path.suffix == ".meta":
                    # Records count against the bound too (clients choose how many there are).
                    found.append((path.stat().st_atime, str(path), path.stat().st_size))
                    continue
                size = self._checked_size(str(path))
                if size is None:
                    log.warning("cache: dropping damaged slice file %s", path.name)
                    with contextlib.suppress(OSError):
                        path.unlink()
                    continue
                found.append((path.stat().st_atime, str(path), size))
        for _, found_path, size in sorted(found):
            self._remember(found_path, size)

    def _checked_size(self, path: str) -> int | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            parsed = _read_header(fd)
            if parsed is None:
                return None
            fields, offset = parsed
            size = os.fstat(fd).st_size
            if not isinstance(fields.get("length"), int) or size != offset + fields["length"]:
                return None
            if path != self.slice_path(str(fields.get("key")), int(fields.get("index", -1))):
                return None
            return size
        finally:
            os.close(fd)

    # --- LRU ---------------------------------------------------------------------------------

    def _remember(self, path: str, size: int) -> None:
        previous = self._lru.pop(path, None)
        if previous is not None:
            self.disk_bytes -= previous
        self._lru[path] = size
        self.disk_bytes += size

    def _forget(self, path: str) -> None:
        self.open_files.drop_path(path)
        size = self._lru.pop(path, None)
        if size is not None:
            self.disk_bytes -= size

    def evict_to_fit(self, extra: int) -> None:
        """Unlink least recently used slices until ``extra`` more bytes fit the bound."""
        while self._lru and self.disk_bytes + self._writing + extra > self.max_bytes:
            path, size = self._lru.popitem(last=False)
            self.disk_bytes -= size
            self.open_files.drop_path(path)  # answers holding it read it to their end
            self.on_evict(1)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    # --- slices ------------------------------------------------------------------------------

    def open_slice(self, key: str, index: int, etag: str, size: int, length: int) -> OpenSlice:
        """The slice, open and held, when a complete file of that version is there; else raise
        KeyError. The caller releases it (:meth:`release`) once its bytes are sent.

        A file kept open since an earlier answer is handed out again (open_files.py). Else, on
        the event loop: an open, a fstat and one or two small preads, answered from the
        kernel's caches in microseconds (as the origin opens its files).
        """
        slot, version = (key, index), (etag, size, length)
        held = self.open_files.hold(slot, version)
        if held is not None:
            lru = self._lru
            if held.path in lru:
                lru.move_to_end(held.path)
            return held
        path = self.slice_path(key, index)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            self._forget(path)
            raise KeyError(path) from None
        try:
            st = os.fstat(fd)
            offset = self._checked_offset(path, fd, (key, index, etag, size, length))
        except BaseException:
            os.close(fd)
            raise
        if offset is None or st.st_size != offset + length:
            os.close(fd)
            raise KeyError(path)
        self._remember(path, offset + length)
        opened = OpenSlice(
            fd, offset, path, version, (st.st_dev, st.st_ino), self.open_files.clock()
        )
        return self.open_files.add(slot, opened)

    def close_files(self) -> None:
        """Close the files kept open (shutdown; held ones close when released)."""
        self.open_files.close()

    def _checked_offset(self, path: str, fd: int, expected: _Version) -> int | None:
        """Where the slice's bytes start in ``fd`` if its header says ``expected``, else None.

        A header already parsed is recognised by its bytes (one pread, no JSON): a hit of a
        1 GiB object opens 1024 slices, and parsing was a third of each open.
        """
        known = self._headers.get(path)
        if known is not None and os.pread(fd, len(known[0]), 0) == known[0]:
            version, offset = known[1], known[2]
        else:
            parsed = _read_header(fd)
            if parsed is None:
                return None
            fields, offset = parsed
            version = _version(fields)
            self._know_header(path, os.pread(fd, offset, 0), version)
        return offset if version == expected else None

    def _know_header(self, path: str, header: bytes, version: _Version) -> None:
        self._headers.pop(path, None)
        self._headers[path] = (header, version, len(header))
        if len(self._headers) > _HEADERS_KEPT:
            self._headers.popitem(last=False)

    async def write_slice(
        self, key: str, index: int, validators: Validators, size: int, data: bytes | bytearray
    ) -> None:
        """Store a complete slice: written to a temporary file in a worker thread, then renamed.

        The bookkeeping (eviction, the LRU) stays on the event loop.
        """
        assert validators.etag is not None
        fields: dict[str, Any] = {
            "key": key,
            "index": index,
            "etag": validators.etag,
            "size": size,
            "length": len(data),
        }
        header = _with_header(fields)
        total = len(header) + len(data)
        self.evict_to_fit(total)
        path = self.slice_path(key, index)
        # Reserved while the thread writes, so concurrent writes cannot pass the bound together.
        self._writing += total
        try:
            await trio.to_thread.run_sync(self._write_atomically, path, header, data)
        finally:
            self._writing -= total
        self.open_files.drop_path(path)  # a file kept open there is the one replaced
        self._remember(path, total)
        # The first hit after a fill then checks the header with one pread, not three and a
        # JSON parse: a 1 GiB object's first hit opens 1024 slices just written.
        self._know_header(path, header, _version(fields))

    def has_slice(self, key: str, index: int) -> bool:
        return os.path.exists(self.slice_path(key, index))

    def drop_object(self, key: str, slices: int) -> None:
        """Remove the object's record and its ``slices`` slice files (readers keep theirs)."""
        record_path = self._record_path(key)
        self._forget(record_path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(record_path)
        for index in range(slices):
            path = self.slice_path(key, index)
            self._forget(path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    # --- object records ----------------------------------------------------------------------

    def read_record(self, key: str) -> ObjectRecord | None:
        try:
            with open(self._record_path(key), "rb") as file:
                fields = json.loads(file.read(_MAX_HEADER))
            record = ObjectRecord(**fields)
        except (OSError, ValueError, TypeError):
            return None
        if record.key != key:
            return None
        path = self._record_path(key)
        if path in self._lru:
            self._lru.move_to_end(path)  # a record read is a record used
        return record

    def write_record(self, record: ObjectRecord) -> None:
        """Write the record atomically (a small file, in the page cache: on the event loop)."""
        data = json.dumps(dataclasses.asdict(record), separators=(",", ":")).encode()
        path = self._record_path(record.key)
        self.evict_to_fit(len(data))
        self._write_atomically(path, data)
        self._remember(path, len(data))

    def _write_atomically(self, path: str, *parts: bytes | bytearray) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = self._tmp / f"{os.getpid()}-{secrets.token_hex(8)}"
        try:
            with open(temporary, "wb") as file:
                for part in parts:
                    file.write(part)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
