"""The media folder: which paths may be served, and reading their bytes without blocking.

Path safety is decided here once: a request path names a file only if every segment is an
ordinary name (no ``..``, ``.``, empty segments, NUL, backslash or dotfiles) and the resolved
file, symlinks followed, lies inside the folder. Anything else is "not found", never an error
that echoes a path.

Resolving symlinks (``os.path.realpath``) costs about 45 Python calls and an ``lstat`` per
path component, on every request (issue 13). So each path, once resolved, opened and found
inside the folder, is remembered with the identity of the file it reached (device and inode).
A later request for the same path opens the path as given (symlinked directories followed by
the kernel, a symlink as the last component refused: such a path is resolved every time) and
is served only if the file it reached is that same file: a symlink or file changed since
(retargeted outside the folder, or to another file) reaches another inode, and the path is
resolved again as the first time. The file served is therefore always one that a resolution
found inside the folder and that the path names now.

Opening happens on the event loop; reading and sending the bytes is file_region.py's.
"""

from __future__ import annotations

import dataclasses
import functools
import mimetypes
import os
import stat
from pathlib import Path

# Bounds the listing so that a huge folder cannot make /media/ arbitrarily slow.
MAX_LISTED_FILES = 10_000

mimetypes.add_type("video/mp4", ".mp4")
mimetypes.add_type("video/webm", ".webm")
mimetypes.add_type("video/x-matroska", ".mkv")
mimetypes.add_type("audio/mp4", ".m4a")


@functools.lru_cache(maxsize=1024)
def content_type_for(name: str) -> str:
    """The Content-Type of a file, from its extension (remembered: mimetypes' lookup is 13
    Python calls per request, and the table is complete once this module is imported)."""
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or "application/octet-stream"


class OpenFile:
    """An open regular file and what fstat said of it; ``close`` is idempotent."""

    __slots__ = ("fd", "inode", "mtime_ns", "size")

    def __init__(self, fd: int, st: os.stat_result) -> None:
        self.fd = fd
        self.size = st.st_size
        self.mtime_ns = st.st_mtime_ns
        self.inode = st.st_ino

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


# Paths whose file identity is remembered; past it the memory starts over (a crawl of many
# distinct paths costs one realpath each, as without the memory).
MAX_REMEMBERED_PATHS = 4096

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC


@dataclasses.dataclass(frozen=True, slots=True)
class MediaFolder:
    """The folder whose files are served; ``root`` is absolute with symlinks resolved."""

    root: Path
    # relative path -> (st_dev, st_ino) of the file it resolved to inside the folder.
    _known: dict[str, tuple[int, int]] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )
    _prefix: str = dataclasses.field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_prefix", str(self.root).rstrip("/") + "/")

    @classmethod
    def at(cls, path: Path) -> MediaFolder:
        return cls(Path(os.path.realpath(path)))

    def locate(self, relative: str) -> Path | None:
        """The file ``relative`` names inside the folder, or None if it may not be served."""
        resolved = self._resolve(relative)
        return None if resolved is None else Path(resolved)

    def _resolve(self, relative: str) -> str | None:
        # Strings, not Path objects: this runs on every request (pathlib cost 2 % of one).
        if not relative or "\x00" in relative or "\\" in relative:
            return None
        for segment in relative.split("/"):
            if not segment or segment.startswith("."):
                return None
        resolved = os.path.realpath(self._prefix + relative)
        if not resolved.startswith(self._prefix):
            return None
        return resolved

    def open(self, relative: str) -> OpenFile | None:
        """Open a regular file inside the folder for reading.

        Called on the event loop: resolving, opening and ``fstat`` are metadata operations that
        the dentry and inode caches answer in microseconds, while a thread hop costs about
        0.2 ms and, measured, a quarter of a small range request's CPU. (A folder on a slow
        network filesystem would block the loop here; nginx opens files inline too.)
        """
        known = self._known.get(relative)
        if known is not None:
            # Opened as named (the kernel follows symlinks); served only if it reached the file
            # the last resolution found inside the folder (the module docstring says why).
            # O_NOFOLLOW: a symlink named by the request is resolved each time (its open fails
            # here). Symlinked directories on the way are followed by the kernel: a file this
            # reaches elsewhere (the link retargeted) is another inode, closed unread.
            opened = _open_regular(self._prefix + relative, _OPEN_FLAGS | os.O_NOFOLLOW)
            if opened is not None:
                fd, st = opened
                if (st.st_dev, st.st_ino) == known:
                    return OpenFile(fd, st)
                os.close(fd)
            del self._known[relative]
        path = self._resolve(relative)
        if path is None:
            return None
        # O_NONBLOCK: opening a FIFO planted in the folder must not hang the worker.
        opened = _open_regular(path, _OPEN_FLAGS | os.O_NOFOLLOW)
        if opened is None:
            return None
        fd, st = opened
        if len(self._known) >= MAX_REMEMBERED_PATHS:
            self._known.clear()
        self._known[relative] = (st.st_dev, st.st_ino)
        return OpenFile(fd, st)

    def listing(self) -> list[dict[str, object]]:
        """Every servable file: name (relative, with ``/``), size and type (blocking)."""
        entries: list[dict[str, object]] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                relative = os.path.relpath(os.path.join(dirpath, filename), self.root)
                relative = relative.replace(os.sep, "/")
                path = self.locate(relative)
                if path is None:
                    continue
                try:
                    st = path.stat()
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                entries.append(
                    {"name": relative, "size": st.st_size, "type": content_type_for(filename)}
                )
                if len(entries) >= MAX_LISTED_FILES:
                    return entries
        return entries


def _open_regular(path: str, flags: int) -> tuple[int, os.stat_result] | None:
    """An fd open on the regular file at ``path`` and its fstat, or None (closed)."""
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        return None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return fd, st
