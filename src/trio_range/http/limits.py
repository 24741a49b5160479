"""Request heads refused before routing: smuggling-shaped framing, an oversized target or head.

Pure: the server's hook (``server/guards.py``) passes what ASGI reported about the request and
answers the :class:`HeadRefusal`, if any, with a plain-text body.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["HeadRefusal", "check_request_head", "request_head_bytes"]

# ASGI header names and values are bytes, as they arrived.
RawHeaders = Iterable[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class HeadRefusal:
    """A request refused on its head alone.

    ``reason`` is the reason phrase, also used as the body; ``log_message`` is for the server's
    log, never sent.
    """

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    log_message: str = ""


_FRAMING = {b"transfer-encoding": 1, b"content-length": 2}


def request_head_bytes(method: str, raw_path: bytes, query: bytes, headers: RawHeaders) -> int:
    """The size of the request line and header block as sent (CRLFs and ": " included).

    RFC 9112 §3: request-line = method SP request-target SP HTTP-version, ended by CRLF;
    §5: field-line = field-name ":" OWS field-value OWS, counted with one SP after the colon;
    the head ends with an empty line. The target is origin-form, path [ "?" query ].
    """
    target = len(raw_path) + (len(query) + 1 if query else 0)
    line = len(method) + 1 + target + len(" HTTP/1.1\r\n")
    total = line + 2
    for name, value in headers:  # a loop, not sum() of a generator: one call fewer a field
        total += len(name) + len(value) + 4
    return total


def check_request_head(
    method: str,
    raw_path: bytes,
    query: bytes,
    headers: RawHeaders,
    max_header_bytes: int,
) -> HeadRefusal | None:
    """The refusal a request head earns, or None when it may go on to routing.

    ``max_header_bytes`` bounds both the request target (414) and the whole head (431).
    """
    headers = tuple(headers)  # ASGI promises an iterable, and it is read twice
    framing = 0
    for name, _ in headers:
        # Both framing fields start with "t"/"c" and are long: lower() only for those.
        if name[:1] in b"TtCc" and name.lower() in _FRAMING:
            framing |= _FRAMING[name.lower()]
    if framing == 3:
        # RFC 9112 §6.3: such a message "might indicate an attempt to perform request smuggling
        # ... and ought to be handled as an error"; §6.1: "the server MUST close the connection
        # after responding to such a request". The bytes after the body are a request smuggled
        # past whoever framed the message by its Content-Length.
        return HeadRefusal(
            400,
            "Bad Request",
            (("Connection", "close"),),
            "400: both Transfer-Encoding and Content-Length",
        )
    # h11 enforces its limit only across reads: a header block that arrives in one read passes
    # whatever its size (docs/references.md), so the limit is checked here again.
    target = len(raw_path) + len(query)
    if target > max_header_bytes:
        # RFC 9110 §15.5.15: 414 means "the server is refusing to service the request because
        # the target URI is longer than the server is willing to interpret".
        return HeadRefusal(
            414, "URI Too Long", log_message=f"414: request target of {target} bytes"
        )
    size = request_head_bytes(method, raw_path, query, headers)
    if size > max_header_bytes:
        # RFC 6585 §5: 431 "the server is unwilling to process the request because its header
        # fields are too large".
        return HeadRefusal(
            431,
            "Request Header Fields Too Large",
            log_message=f"431: request head of {size} bytes",
        )
    return None
