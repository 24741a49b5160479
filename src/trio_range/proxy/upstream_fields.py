"""The upstream's response fields as text, without those holding a control character.

RFC 9110 §5.5 calls a field value with a control character invalid (CR, LF and NUL even
"dangerous"). h11 refuses CR, LF and NUL; a value like ``a\\x01b`` or ``c\\x7fd`` it accepts,
and relayed as it came, it reaches clients whose parser rejects the whole response (Node's,
http-parser's). Real proxies differ: nginx relays such a field unchanged, Envoy and nghttpx
(http-parser) answer 502 for the whole response, fastify-http-proxy drops the field. The proxy
drops the field and logs one line, so one stray header does not cost the client its bytes; but
a field that frames or describes the body it relays (Content-Length, Transfer-Encoding,
Content-Range, and a 206's Content-Type, which may hold the multipart boundary) cannot be
dropped without changing what the bytes mean: then the answer is 502. docs/design.md has the
table.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from trio_range.errors import UpstreamError
from trio_range.http.relay import fields_text

log = logging.getLogger("trio_range.proxy")

# Fields without which the relayed body would be framed or read differently.
_BODY_FIELDS = frozenset({"content-length", "transfer-encoding", "content-range"})


class InvalidUpstreamField(UpstreamError):
    """An upstream field the relay needs holds a control character: a broken answer, 502."""


def upstream_fields_text(
    raw: Iterable[tuple[bytes, bytes]], status: int, target: str
) -> list[tuple[str, str]]:
    """``raw`` (the upstream's fields as received) as text, without any holding a control
    character (one line logged for those); raises :class:`InvalidUpstreamField` when one of
    them is a field the body needs."""
    invalid: list[tuple[str, str]] = []
    fields = fields_text(raw, invalid)
    if invalid:
        names = [name.lower() for name, _ in invalid]
        needed = _BODY_FIELDS | {"content-type"} if status == 206 else _BODY_FIELDS
        if not needed.isdisjoint(names):
            raise InvalidUpstreamField(
                f"{target}: the upstream's {', '.join(sorted(needed.intersection(names)))} "
                "holds a control character (RFC 9110 §5.5)"
            )
        log.warning(
            "%s: dropped the upstream's %s: a control character in the value (RFC 9110 §5.5)",
            target,
            ", ".join(repr(name) for name, _ in invalid),
        )
    return fields
