"""Every use of httpx2's and httpcore2's undocumented internals, in one guarded place.

The proxy talks to its upstream through httpx2's documented transport API
(``AsyncHTTPTransport.handle_async_request``, ``Response.aiter_raw``, the ``target`` and
``timeout`` request extensions). Two things it needs have no API; ``HOOKED`` lists them with the
shape the hook expects, and tests/server/test_hooks.py checks them on every run.
"""

from __future__ import annotations

import httpcore2 as httpcore
import httpx2 as httpx

from trio_range.server.hooks_check import Hook

# httpcore reads at most 64 KiB per recv from the upstream (``httpcore/_async/http11.py``
# ``AsyncHTTP11Connection.READ_NUM_BYTES``), and every read costs the relay a fixed number of
# Python steps (h11 parse, httpcore and httpx wrappers, one ASGI send, one h11 frame and a
# socket write): at 64 KiB those steps, not the bytes, bound the relay to a core. 256 KiB per
# read cuts them fourfold: a 512 MiB relay went from 186-209 to 361-431 MB/s here
# (benchmarks.proxy_throughput). Memory per relay stays one read. httpcore offers no per-pool
# setting, so the class attribute is set for the process.
UPSTREAM_READ_BYTES = 256 * 1024

HOOKED: tuple[Hook, ...] = (
    Hook(httpcore.AsyncHTTP11Connection, "READ_NUM_BYTES", None),
    Hook(httpcore.AsyncConnectionPool, "connections", None),
    Hook(httpx.AsyncHTTPTransport, "handle_async_request", ("self", "request")),
)


def set_upstream_read_size(size: int = UPSTREAM_READ_BYTES) -> None:
    """Make every upstream connection read up to ``size`` bytes per ``recv``."""
    httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = size


def pool_connection_count(transport: httpx.AsyncHTTPTransport) -> int:
    """Connections the transport's pool holds now, idle or busy.

    ``AsyncHTTPTransport._pool`` is the httpcore pool; its ``connections`` property is public
    on the pool but the transport's attribute is not.
    """
    pool = getattr(transport, "_pool", None)
    return len(getattr(pool, "connections", ()))
