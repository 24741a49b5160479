"""What the process allocated while starting, dealt with once the app has started.

Two things: the freed C heap goes back to the kernel, and what survives startup is frozen
out of the garbage collector's full passes (once per process).

Freed heap (issue 14): importing Quart, Hypercorn, trio and httpx and building the app frees
much of what it allocated (compile and import scratch), but glibc keeps those pages in the
process: ~0.5 MiB of RSS that a long-running proxy would carry for its whole life.
``malloc_trim(0)`` returns them, once, at startup; on a libc without it (musl, macOS) this does
nothing.
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


def freeze_startup_heap() -> None:
    """Keep what exists at startup (modules, the app) out of the collector's full passes.

    A full (generation 2) collection walks every tracked object: the ~54,000 that importing
    Quart, Hypercorn, trio and httpx leaves are 30 ms of CPU on this project's 2-core test
    machine, during which every request in flight stalls; under load one came every few thousand
    requests and set the proxy's p99 latency. ``gc.freeze`` moves them to a generation no
    collection visits (they live as long as the process). Once per process: what a later
    freeze would add (a test process's apps, started and stopped by the hundred) could never be
    collected, and a cancelled app has no shutdown step that could reliably unfreeze.
    """
    if gc.get_freeze_count() == 0:
        gc.collect()  # the import and startup scratch goes first: frozen garbage would stay
        gc.freeze()
