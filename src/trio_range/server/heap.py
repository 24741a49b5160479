"""Give the C heap's free pages back to the kernel once the app has started (issue 14).

Importing Quart, Hypercorn, trio and httpx and building the app frees much of what it
allocated (compile and import scratch), but glibc keeps those pages in the process: ~0.5 MiB
of RSS that a long-running proxy would carry for its whole life. ``malloc_trim(0)`` returns
them, once, at startup; on a libc without it (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import gc


def release_free_heap() -> bool:
    """Collect garbage and trim the C heap; whether the libc had ``malloc_trim``."""
    gc.collect()
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return False
    trim(0)
    return True
