"""The reason phrase of each status code, as RFC 9110 names it, and field names' canonical case.

RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ]. Optional, and "a
client SHOULD ignore the reason-phrase content", but every common server sends the standard
one and Hypercorn sends none ("HTTP/1.1 206 "); server/_hypercorn_hooks.py adds these. The
phrases are RFC 9110's (§15), whatever the Python version: 3.11's table still has RFC 7231's
names for these four.
"""

from __future__ import annotations

from http import HTTPStatus

REASON_PHRASES: dict[int, bytes] = {
    status.value: status.phrase.encode("ascii") for status in HTTPStatus
} | {
    413: b"Content Too Large",
    414: b"URI Too Long",
    416: b"Range Not Satisfiable",
    422: b"Unprocessable Content",
}

# The fields Hypercorn adds itself (Date, Server, Alt-Svc; Connection and Content-Length on its
# error answers), lower case there: spelled as nginx, Apache and Go spell them.
CANONICAL_NAMES: dict[bytes, bytes] = {
    b"date": b"Date",
    b"server": b"Server",
    b"alt-svc": b"Alt-Svc",
    b"connection": b"Connection",
    b"content-length": b"Content-Length",
}
