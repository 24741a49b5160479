"""Header policy for the proxy: what crosses the proxy in each direction (RFC 9110 §7.6).

Pure: no I/O. The relay hands over the header list it received and sends the list it gets back.
Headers are ``(name, value)`` pairs in wire order; names compare case-insensitively and keep
the case they arrived in. Fields that are not ours to touch keep their order and duplicates.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

from trio_range.config import Network
from trio_range.http.conditional import format_http_date
from trio_range.http.grammar import OWS, TCHAR, is_token, parse_digits, split_list

__all__ = [
    "ACCEL_LIMIT_RATE",
    "HOP_BY_HOP",
    "connection_options",
    "forwarded_client",
    "is_trusted",
    "request_headers_for_upstream",
    "response_headers_and_type",
    "response_headers_for_client",
    "rewrite_upstream_location",
    "strip_hop_by_hop",
    "upstream_limit_rate",
    "via_value",
]

Headers = list[tuple[str, str]]

# RFC 9110 §7.6.1: "Connection, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding, and Upgrade"
# are the fields an intermediary must not forward as if they were end-to-end; Trailer names
# fields of this connection's chunked framing (§6.6.2), and the Proxy-Authenticate /
# Proxy-Authorization pair is addressed to the proxy itself (§11.7.1, §11.7.2).
HOP_BY_HOP: frozenset[str] = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# The proxy relays GET and HEAD only: a request body and its framing never go upstream.
_REQUEST_BODY_FIELDS = frozenset({"content-length", "expect"})


def connection_options(headers: Iterable[tuple[str, str]]) -> frozenset[str]:
    """Lower-cased field names listed by every Connection field in ``headers``.

    Connection may appear more than once; the field lines combine into one list (§5.3).
    """
    options: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            options.update(member.lower() for member in split_list(value))
    return frozenset(options)


def strip_hop_by_hop(headers: Iterable[tuple[str, str]]) -> Headers:
    """``headers`` without hop-by-hop fields, the rest in order and with duplicates kept.

    RFC 9110 §7.6.1: "Intermediaries MUST parse a received Connection header field before a
    message is forwarded and, for each connection-option in this field, remove any header or
    trailer field(s) from the message with the same name as the connection-option, and then
    remove the Connection header field itself (or replace it with the intermediary's own
    control options for the forwarded message)."
    """
    headers = list(headers)
    dropped = HOP_BY_HOP | connection_options(headers)
    return [(name, value) for name, value in headers if name.lower() not in dropped]


def _normalise_protocol_version(protocol_version: str) -> str:
    # §7.6.3: received-protocol = [ protocol-name "/" ] protocol-version, "where the
    # protocol-name is omitted if and only if it would be 'HTTP'". httpx reports "HTTP/1.1".
    name, slash, version = protocol_version.strip().rpartition("/")
    if slash and name.upper() == "HTTP":
        return version
    return protocol_version.strip()


@functools.lru_cache(maxsize=64)
def via_value(name: str, protocol_version: str = "1.1") -> str:
    """One Via member for this proxy: received-protocol first, then our pseudonym (§7.6.3).

    ``protocol_version`` is the version of the message as it was received: "1.1", "1.0",
    or the "HTTP/1.1" spelling httpx reports.

    >>> via_value("trio-range")
    '1.1 trio-range'
    >>> via_value("trio-range", "HTTP/1.0")
    '1.0 trio-range'

    Cached: every relayed message asks for it twice with the same few arguments.
    """
    # received-by = pseudonym [ ":" port ]; port = *DIGIT (RFC 3986). Our name is
    # configuration, so refuse anything that would corrupt the list (a comma, a space) rather
    # than send it.
    pseudonym, colon, port = name.partition(":")
    if not is_token(pseudonym) or (colon and parse_digits(port) is None):
        raise ValueError(f"Via name must be a token or token:port, got {name!r}")
    version = _normalise_protocol_version(protocol_version)
    if not version or not set(version) <= TCHAR | {"/"}:
        raise ValueError(f"not a protocol version: {protocol_version!r}")
    return f"{version} {name}"


def _combined(headers: Iterable[tuple[str, str]], lower_name: str) -> list[str]:
    """The values of every ``lower_name`` field, in order, to be joined into one list (§5.3).

    Values are kept whole rather than split at commas: a Via comment may hold a comma. Only
    the outer whitespace and stray outer commas go, so the joined list has no empty member.
    """
    values = (_list_member(value) for name, value in headers if name.lower() == lower_name)
    return [value for value in values if value]


def _lowered(headers: Iterable[tuple[str, str]]) -> tuple[list[str], Headers, set[str]]:
    """Each field's name lower-cased once (in order), the fields, and the names to drop: the
    hop-by-hop ones and those the Connection fields list.

    The relay's two directions read every name several times (hop-by-hop, Via, the fields
    they replace); lowering each once keeps them one pass over the list per message. The
    callers walk ``zip(lowers, fields)``: no third list of triples.
    """
    fields = list(headers)
    # Every name lowered in one call (not one a field); a NUL in a name (no valid field has
    # one) would shift the parts, so then each name is lowered on its own.
    lowers = "\x00".join([name for name, _ in fields]).lower().split("\x00")
    if len(lowers) != len(fields):
        lowers = [name.lower() for name, _ in fields]
    dropped = set(HOP_BY_HOP)
    if "connection" in lowers:
        for lower, (_, value) in zip(lowers, fields, strict=True):
            if lower == "connection":
                dropped.update(member.lower() for member in split_list(value))
    return lowers, fields, dropped


def _list_member(value: str) -> str:
    """A value to be joined into a combined list: no outer whitespace or stray commas."""
    return value.strip(OWS + ",")


# Replaced by the proxy's own on the way upstream (see request_headers_for_upstream).
_REPLACED_UPSTREAM = frozenset(
    {
        # The upstream comes from configuration: the client's Host never redirects the proxy.
        "host",
        # Identity upstream, so Content-Length and byte ranges mean the same bytes at both ends.
        "accept-encoding",
        # Set from what this proxy saw; a client must not choose what the upstream trusts.
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-for",
        *_REQUEST_BODY_FIELDS,
    }
)


def request_headers_for_upstream(
    client_headers: Iterable[tuple[str, str]],
    *,
    client_ip: str,
    scheme: str,
    upstream_host: str,
    via_name: str,
    client_http_version: str = "1.1",
) -> Headers:
    """The header list to send upstream for a client's GET or HEAD.

    ``client_http_version`` is the version the request arrived in; it goes into Via.

    Range, If-Range and the conditional fields pass untouched: the upstream decides what to
    send, and the relay carries its answer back unchanged (a 200 stays a 200).
    """
    lowers, fields, dropped = _lowered(client_headers)
    # The Host this proxy received, even if the client also listed it in Connection.
    client_host: str | None = None
    out: Headers = [("Host", upstream_host), ("Accept-Encoding", "identity")]
    # Members are kept only when not empty: X-Forwarded-For and Via then join into lists
    # with no empty member.
    forwarded_for: list[str] = []
    earlier_via: list[str] = []
    for lower, (name, value) in zip(lowers, fields, strict=True):
        if lower in _REPLACED_UPSTREAM or lower in dropped:
            if lower == "host":
                if client_host is None:
                    client_host = value
            elif lower == "x-forwarded-for" and lower not in dropped:
                member = _list_member(value)
                if member:
                    forwarded_for.append(member)
        elif lower == "via":
            member = _list_member(value)
            if member:
                earlier_via.append(member)
        else:
            out.append((name, value))
    # X-Forwarded-For lists each hop's client, nearest last. An unknown client address (ASGI's
    # scope["client"] may be None) adds no empty member.
    if client_ip:
        forwarded_for.append(client_ip)
    if forwarded_for:
        out.append(("X-Forwarded-For", ", ".join(forwarded_for)))
    out.append(("X-Forwarded-Proto", scheme))
    if client_host is not None:
        out.append(("X-Forwarded-Host", client_host))
    return _with_via(out, earlier_via, via_value(via_name, client_http_version))


def _with_via(headers: Headers, earlier: list[str], member: str) -> Headers:
    """``headers`` (no Via among them) with one Via last: the ``earlier`` members (none
    empty), then ours.

    §7.6.3: "each intermediary appends its own information about how the message was
    received", so earlier members stay first, combined into one field.
    """
    headers.append(("Via", ", ".join([*earlier, member]) if earlier else member))
    return headers


_LOCATION_FIELDS = frozenset({"location", "content-location"})

# nginx's convention for an upstream to set the rate of one response (bytes per second, 0 for
# none): honoured only when the proxy trusts its upstream, never shown to the client.
ACCEL_LIMIT_RATE = "x-accel-limit-rate"
# A rate past this (1 TiB/s) is no limit a server could mean: refused as garbage.
MAX_LIMIT_RATE = 1 << 40


def upstream_limit_rate(upstream_headers: Iterable[tuple[str, str]]) -> int | None:
    """The rate the upstream's X-Accel-Limit-Rate sets, in bytes per second (0: not paced).

    None when the field is absent. Raises ValueError for a value that is not one decimal
    number (several fields must agree): the proxy then logs it and keeps its own rate.
    """
    values = {
        value.strip(OWS) for name, value in upstream_headers if name.lower() == ACCEL_LIMIT_RATE
    }
    if not values:
        return None
    rate = parse_digits(values.pop()) if len(values) == 1 else None
    if rate is None or rate > MAX_LIMIT_RATE:
        raise ValueError("X-Accel-Limit-Rate is not one decimal number of bytes per second")
    return rate


def rewrite_upstream_location(value: str, upstream_base: str) -> str:
    """A Location that names the upstream, made relative to the proxy.

    A redirect from the upstream (``/media`` -> ``http://upstream:9090/media/``) would send the
    client around the proxy and reveal an internal address; like nginx's default
    ``proxy_redirect``, the upstream's own origin is replaced by the proxy's (a relative
    reference, RFC 9110 §10.2.2). Other values pass unchanged.
    """
    base = upstream_base.rstrip("/")
    if value == base:
        return "/"
    if value.lower().startswith(base.lower()) and value[len(base) : len(base) + 1] in "/?#":
        rest = value[len(base) :]
        return rest if rest.startswith("/") else "/" + rest
    return value


def response_headers_for_client(
    upstream_headers: Iterable[tuple[str, str]],
    *,
    via_name: str,
    upstream_http_version: str = "1.1",
    upstream_base: str | None = None,
    received_at: int | None = None,
) -> Headers:
    """The header list to send the client for the upstream's response.

    Everything end-to-end is kept exactly, Date and Server included (but not
    X-Accel-Limit-Rate, addressed to the proxy: :func:`upstream_limit_rate`); Content-Length,
    Content-Range, Content-Type, ETag, Last-Modified and Accept-Ranges describe the bytes the
    relay passes through unchanged. With ``upstream_base``, a Location or Content-Location
    naming the upstream is made relative (:func:`rewrite_upstream_location`). With
    ``received_at`` (Unix seconds), a response without Date gets one for that time: RFC 9110
    §6.6.1, a recipient with a clock "MUST record the time it was received and append a
    corresponding Date header field" to a message it forwards.
    """
    return response_headers_and_type(
        upstream_headers,
        via_name=via_name,
        upstream_http_version=upstream_http_version,
        upstream_base=upstream_base,
        received_at=received_at,
    )[0]


def response_headers_and_type(
    upstream_headers: Iterable[tuple[str, str]],
    *,
    via_name: str,
    upstream_http_version: str = "1.1",
    upstream_base: str | None = None,
    received_at: int | None = None,
) -> tuple[Headers, str]:
    """:func:`response_headers_for_client`, and the Content-Type relayed ("" for none).

    The relay needs the type of a 206 (one range or several); found in the same pass over
    the fields, it costs no second search (issue 14).
    """
    lowers, fields, dropped = _lowered(upstream_headers)
    dropped.add(ACCEL_LIMIT_RATE)
    if "transfer-encoding" in lowers:
        # RFC 9112 §6.3: with both Transfer-Encoding and Content-Length, "the
        # Transfer-Encoding overrides the Content-Length", and "an intermediary that
        # chooses to forward the message MUST first remove the received Content-Length".
        dropped.add("content-length")
    headers: Headers = []
    earlier_via: list[str] = []
    dated = False
    content_type = None
    for lower, (name, value) in zip(lowers, fields, strict=True):
        if lower in dropped:
            continue
        if lower == "via":
            member = _list_member(value)
            if member:
                earlier_via.append(member)
            continue
        if lower == "date":
            dated = True
        elif lower == "content-type":
            if content_type is None:
                content_type = value
        elif upstream_base is not None and lower in _LOCATION_FIELDS:
            value = rewrite_upstream_location(value, upstream_base)
        headers.append((name, value))
    if received_at is not None and not dated:
        headers.append(("Date", format_http_date(received_at)))
    via = via_value(via_name, upstream_http_version)
    return _with_via(headers, earlier_via, via), content_type or ""


def is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    """Whether ``address`` (an IP address as text) lies in one of the ``trusted`` networks.

    An IPv4 address seen through an IPv6 socket (``::ffff:10.0.0.1``) counts as itself.
    """
    if not trusted:
        return False
    try:
        ip = ipaddress.ip_address(address.strip(OWS + "[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in trusted)


def forwarded_client(
    peer: str, headers: Iterable[tuple[str, str]], trusted: Sequence[Network]
) -> str:
    """The client a request comes from: its peer, or, from a trusted proxy, the address that
    proxy saw.

    X-Forwarded-For lists each hop's client, nearest last, and only the entries that trusted
    proxies appended can be believed (a client writes whatever it likes in the first ones):
    walking from the right, the first address that is not itself a trusted proxy is the client
    (nginx's ``real_ip_recursive``). A request from an untrusted peer names itself, whatever its
    header says; a list that ends in garbage stops the walk at the last trusted hop.
    """
    if not is_trusted(peer, trusted):
        return peer
    client = peer
    for member in reversed(
        [m for value in _combined(headers, "x-forwarded-for") for m in split_list(value)]
    ):
        if not is_trusted(member, trusted):
            try:
                return str(ipaddress.ip_address(member.strip("[]")))
            except ValueError:
                return client
        client = member
    return client
