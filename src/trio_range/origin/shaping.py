"""How fast the origin sends a file (issue 16): the fixed rate, or a multiple of its bitrate.

With ``limit_rate_bitrate_factor`` set, an MP4 or WebM file is paced at that many times its
average bitrate, size / duration, so a video goes out a little faster than it plays and a viewer
who pauses has not pulled the whole file. The duration comes from the container header
(:mod:`trio_range.http.media_duration`), read once per file version in a worker thread (a few
small ``pread`` calls, which could block on a cold disk) and remembered by path, inode, mtime
and size; a file whose duration cannot be read is paced at the fixed rate.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from functools import partial

import trio

from trio_range.config import OriginConfig
from trio_range.errors import MediaHeaderError
from trio_range.http.media_duration import media_duration_s
from trio_range.http.token_bucket import Pacing, pacing_for
from trio_range.origin.media_folder import OpenFile

log = logging.getLogger("trio_range.origin")

# Files whose duration is remembered at most (the oldest forgotten first).
DURATIONS_REMEMBERED = 4096
_MEDIA_TYPES = ("video/", "audio/")

FileKey = tuple[str, int, int, int]


def _pread(fd: int, offset: int, size: int) -> bytes:
    return os.pread(fd, size, offset)


def read_duration_s(fd: int, size: int) -> float | None:
    """The duration of the open media file ``fd``, or None if its header does not give one."""
    try:
        return media_duration_s(partial(_pread, fd), size)
    except MediaHeaderError as error:
        log.info("no duration in the header (paced at the fixed rate): %s", error)
    except OSError as error:
        log.warning("reading a media header failed (paced at the fixed rate): %s", error)
    return None


class Shaping:
    """The origin's pacing decision for each file, with the durations it has read."""

    def __init__(self, config: OriginConfig) -> None:
        self.config = config
        self.durations: OrderedDict[FileKey, float | None] = OrderedDict()
        self.header_reads = 0
        # Off (the default): the request path does not even ask.
        self.enabled = bool(config.limit_rate_bytes_per_s or config.limit_rate_bitrate_factor)

    async def pacing(self, relative: str, file: OpenFile, content_type: str) -> Pacing | None:
        """How to pace a response with a body of ``file`` (``relative`` in the media folder)."""
        config = self.config
        duration_s = None
        if config.limit_rate_bitrate_factor and content_type.startswith(_MEDIA_TYPES):
            duration_s = await self.duration_s(relative, file)
        return pacing_for(
            rate_bytes_per_s=config.limit_rate_bytes_per_s,
            burst_bytes=config.limit_rate_after_bytes,
            size=file.size,
            duration_s=duration_s,
            bitrate_factor=config.limit_rate_bitrate_factor,
        )

    async def duration_s(self, relative: str, file: OpenFile) -> float | None:
        key = (relative, file.inode, file.mtime_ns, file.size)
        if key in self.durations:
            self.durations.move_to_end(key)
            return self.durations[key]
        self.header_reads += 1
        duration = await trio.to_thread.run_sync(read_duration_s, file.fd, file.size)
        self.durations[key] = duration
        if len(self.durations) > DURATIONS_REMEMBERED:
            self.durations.popitem(last=False)
        return duration
