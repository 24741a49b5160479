"""Slice files kept open across answers: a hit costs no open, fstat, header read or close.

A hit of a small range is one request path plus one sendfile, like the origin's; opening,
checking and closing its slice file on every request added four system calls and the header
check to each (issue 15's ``cache_rate``). An :class:`OpenFiles` keeps the most recently used
slice files open, each checked once against the version it was opened for (key, index, ETag,
complete length, slice length), bounded least recently used out.

Never a slice that is gone or replaced: the store drops the entry of every path it unlinks or
replaces (eviction, a dropped object, a newer slice written), and an entry older than
:data:`RECHECK_S` is compared with the path (a ``stat``: another worker sharing the folder may
have evicted or rewritten the file) before it is used again. An answer holds its entry
(:meth:`OpenFiles.hold` / :meth:`OpenFiles.release`): a dropped entry's descriptor is closed
when its last holder releases it, so an evicted slice being sent is read to its end, as with a
descriptor of its own. Descriptors are only read at explicit offsets (``pread``, ``sendfile``
with an offset), so answers can share one.
"""

from __future__ import annotations

import os
import resource
import time
from collections import OrderedDict
from collections.abc import Callable

# A checked entry is used without looking at its path for this long (another worker's
# eviction or rewrite of the file is noticed within it; this process's own at once).
RECHECK_S = 1.0
# An entry no answer used for this long is closed (SliceCache.run sweeps): a file another
# worker evicted does not keep its disk space for long through a descriptor of ours.
IDLE_S = 10.0


def default_limit() -> int:
    """Files kept open at most: a quarter of the descriptors the process may open, <= 1024."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(16, min(1024, soft // 4))


class OpenSlice:
    """A slice file open for reading, checked for one version: its bytes start at
    ``data_offset`` of ``fd``."""

    __slots__ = (
        "checked_at",
        "data_offset",
        "dropped",
        "fd",
        "inode",
        "path",
        "used_at",
        "users",
        "version",
    )

    def __init__(
        self,
        fd: int,
        data_offset: int,
        path: str,
        version: tuple[str, int, int],
        inode: tuple[int, int],
        checked_at: float,
    ) -> None:
        self.fd = fd
        self.data_offset = data_offset
        self.path = path
        self.version = version  # (ETag, complete length, slice length) it was checked for
        self.inode = inode  # (st_dev, st_ino) of the file opened
        self.checked_at = checked_at
        self.used_at = checked_at
        self.users = 0  # answers holding it
        self.dropped = False  # out of the cache: closed when its last holder releases it


class OpenFiles:
    """The open slice files, by (key, slice index), least recently used first."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.clock = clock
        self._entries: OrderedDict[tuple[str, int], OpenSlice] = OrderedDict()
        self._slots: dict[str, tuple[str, int]] = {}  # path -> its key in _entries

    def __len__(self) -> int:
        return len(self._entries)

    def hold(self, slot: tuple[str, int], version: tuple[str, int, int]) -> OpenSlice | None:
        """The open file of ``slot`` if it is of ``version`` and still the one at its path,
        held for the caller (who must :meth:`release` it); else None."""
        entry = self._entries.get(slot)
        if entry is None:
            return None
        if entry.version != version:  # the object changed: that file is of no use any more
            self._drop(slot)
            return None
        now = self.clock()
        if now - entry.checked_at > RECHECK_S:
            try:
                st = os.stat(entry.path)
            except OSError:
                self._drop(slot)
                return None
            if (st.st_dev, st.st_ino) != entry.inode:
                self._drop(slot)
                return None
            entry.checked_at = now
        entry.used_at = now
        entry.users += 1
        self._entries.move_to_end(slot)
        return entry

    def add(self, slot: tuple[str, int], entry: OpenSlice) -> OpenSlice:
        """Keep ``entry`` (just opened and checked), held for the caller; the least recently
        used entries past the limit are dropped."""
        self.drop_path(entry.path)
        entry.users += 1
        self._entries[slot] = entry
        self._slots[entry.path] = slot
        while len(self._entries) > self.limit:
            self._drop(next(iter(self._entries)))
        return entry

    def release(self, entry: OpenSlice) -> None:
        entry.users -= 1
        if entry.dropped and entry.users == 0:
            os.close(entry.fd)

    def drop_path(self, path: str) -> None:
        """The file at ``path`` is unlinked or replaced: never hand out its entry again."""
        slot = self._slots.get(path)
        if slot is not None:
            self._drop(slot)

    def close_idle(self) -> None:
        """Drop the entries no answer used for :data:`IDLE_S` (the least recently used first)."""
        old = self.clock() - IDLE_S
        entries = self._entries
        while entries:
            slot, entry = next(iter(entries.items()))
            if entry.used_at >= old:
                break
            self._drop(slot)

    def close(self) -> None:
        """Drop every entry (shutdown); held ones close when released."""
        for slot in list(self._entries):
            self._drop(slot)

    def _drop(self, slot: tuple[str, int]) -> None:
        entry = self._entries.pop(slot)
        del self._slots[entry.path]
        entry.dropped = True
        if entry.users == 0:
            os.close(entry.fd)
