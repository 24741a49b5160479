"""httpx's ``Headers`` built from fields h11 already normalised (private httpx API, here only).

Why: ``httpx.Headers(pairs)`` re-normalises every field (two coercions, a lowercasing and three
``isinstance`` checks each, one of them against an ABC), about 40 calls for the 8 fields of a
small answer, which h11 has just done: h11 keeps each field as ``(name as received, lowercased
name, value)``, all bytes, exactly httpx's own internal triple. ``Response(headers=...)`` copies
a ``Headers`` it is given with one ``list()``. So the transport hands h11's triples to httpx as
a ``Headers`` without the re-normalisation.

The instance attributes are not visible on the class, so ``HOOKED`` lists the constructor
whose assignments this mirrors, and tests/proxy/test_hooks_proxy.py checks that a ``Headers``
built here has the same attributes and behaves as one built by the public constructor.
"""

from __future__ import annotations

import httpx2 as httpx

from trio_range.server.hooks_check import Hook

HOOKED: tuple[Hook, ...] = (
    # __init__ sets exactly _list (the triples) and _encoding (None: worked out when read).
    Hook(httpx.Headers, "__init__", ("self", "headers", "encoding")),
    Hook(httpx.Headers, "raw", None),
)


def headers_from_triples(triples: list[tuple[bytes, bytes, bytes]]) -> httpx.Headers:
    """A ``Headers`` holding ``triples`` (raw name, lowercased name, value), shared, not copied.

    Equal to ``httpx.Headers([(raw, value) for raw, _, value in triples])`` when the names'
    lowercase forms are right (h11's are).
    """
    headers = httpx.Headers.__new__(httpx.Headers)
    headers._list = triples
    headers._encoding = None
    return headers
