"""What the proxy's slice cache may store and for how long (RFC 9111), as values in, values out.

The cache (proxy/cache/) asks these functions and carries the answers out: whether a request
may use the cache at all (:func:`request_bypasses_cache`), what an upstream answer to a slice
request means (:func:`read_slice_answer`: a slice to store, a 304, or something to relay
instead), and how long a stored object stays fresh (:func:`freshness_lifetime`). The slice
arithmetic (which slices a range touches, the Range a slice is fetched with) is
:mod:`trio_range.http.slices`. docs/cache.md lists the RFC 9111 rules applied and those not.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlencode

from trio_range.http.conditional import Validators, parse_entity_tag, parse_http_date
from trio_range.http.grammar import parse_digits, split_list, strip_ows

__all__ = [
    "CacheControl",
    "SliceAnswer",
    "SliceAnswerKind",
    "cache_key",
    "freshness_lifetime",
    "parse_cache_control",
    "read_slice_answer",
    "request_bypasses_cache",
    "strong_validators",
]


@dataclasses.dataclass(frozen=True, slots=True)
class CacheControl:
    """The Cache-Control directives the cache acts on (RFC 9111 §5.2)."""

    no_store: bool = False
    private: bool = False
    public: bool = False
    no_cache: bool = False
    max_age: int | None = None
    s_maxage: int | None = None


def parse_cache_control(value: str | None) -> CacheControl:
    """The directives of a Cache-Control field value; unknown ones ignored (§5.2.3).

    A ``max-age``/``s-maxage`` whose argument is not ``1*DIGIT`` counts as 0 (stale), the
    conservative reading of §4.2.1's "invalid freshness information".
    """
    found: dict[str, object] = {}
    for member in split_list(value or ""):
        name, _, argument = member.partition("=")
        name = strip_ows(name).lower()
        argument = strip_ows(argument).strip('"')
        if name in ("max-age", "s-maxage"):
            seconds = parse_digits(argument)
            found[name.replace("-", "_")] = 0 if seconds is None else seconds
        elif name in ("no-store", "private", "public", "no-cache"):
            found[name.replace("-", "_")] = True
    return CacheControl(**found)  # type: ignore[arg-type]


def request_bypasses_cache(
    method: str, cache_control: str | None, *, has_authorization: bool
) -> str | None:
    """Why this request is relayed without the cache, or None when the cache may answer it.

    Only GET and HEAD use it. A request with credentials is relayed: fills are shared and never
    carry one client's credentials (so the ``public``/``s-maxage`` exception of §3.5 has no
    request to apply to). A request's own ``no-store`` is honoured (§5.2.1.5).
    """
    if method not in ("GET", "HEAD"):
        return "method"
    if has_authorization:
        return "authorization"
    if cache_control and parse_cache_control(cache_control).no_store:
        return "no-store"
    return None


def cache_key(path: str, query: str) -> str:
    """The object's key: the upstream target without the ``range`` query parameter.

    ``?range=`` selects bytes of the object the way a Range header does, so it is applied by
    the cache's range engine and never reaches the key or the upstream: ``/v?range=0-9`` and
    ``/v`` are one object, and no client's range can be stored as another's whole answer.
    """
    pairs = [
        (name, value) for name, value in parse_qsl(query, keep_blank_values=True) if name != "range"
    ]
    if not pairs:
        return path
    if len(pairs) == len(parse_qsl(query, keep_blank_values=True)):
        return f"{path}?{query}"  # untouched: the upstream sees the client's exact query
    return f"{path}?{urlencode(pairs)}"


def strong_validators(etag: str | None, last_modified: str | None) -> Validators | None:
    """The object's validators when they can keep versions apart, else None (not cached).

    A strong ETag is required: a weak one, or Last-Modified alone (one-second resolution, so
    implicitly weak by RFC 9110 §8.8.2.2), cannot tell two same-second versions apart, and
    slices of both would then be served as one object.
    """
    if etag is None:
        return None
    tag = parse_entity_tag(etag)
    if tag is None or tag.weak:
        return None
    date = None if last_modified is None else parse_http_date(last_modified)
    return Validators(str(tag), date)


def freshness_lifetime(
    control: CacheControl, expires: str | None, date: str | None, *, default_ttl_s: float
) -> float:
    """Seconds an answer stays fresh (§4.2.1): s-maxage, max-age, Expires - Date, else default.

    The default stands in for §4.2.2's heuristic freshness. An Expires that does not parse
    means already expired (§5.3).
    """
    if control.s_maxage is not None:
        return float(control.s_maxage)
    if control.max_age is not None:
        return float(control.max_age)
    if expires is not None:
        expires_at = parse_http_date(expires)
        sent_at = None if date is None else parse_http_date(date)
        if expires_at is None or sent_at is None:
            return 0.0
        return float(max(0, expires_at - sent_at))
    return default_ttl_s


class SliceAnswerKind(enum.Enum):
    SLICE = "slice"  # a 206 of exactly the slice asked for: store it
    NOT_MODIFIED = "not_modified"  # a 304 to a revalidation
    UNCACHEABLE = "uncacheable"  # relay instead, and bypass the cache for this key a while
    RELAY = "relay"  # relay instead (an error status, a 416): nothing learnt about the object


@dataclasses.dataclass(frozen=True, slots=True)
class SliceAnswer:
    """What an upstream answer to a slice request means for the cache."""

    kind: SliceAnswerKind
    reason: str
    size: int = 0  # the object's complete length
    length: int = 0  # bytes of this slice
    validators: Validators | None = None
    content_type: str = ""
    cache_control: str = ""
    fresh_for_s: float = 0.0


def _content_range(value: str) -> tuple[int, int, int] | None:
    # bytes first-last/complete, all three known (RFC 9110 §14.4).
    unit, _, rest = strip_ows(value).partition(" ")
    if unit.lower() != "bytes":
        return None
    span, _, complete = rest.partition("/")
    first, _, last = span.partition("-")
    numbers = (parse_digits(first), parse_digits(last), parse_digits(complete))
    a, b, n = numbers
    if a is None or b is None or n is None or not a <= b < n:
        return None
    return a, b, n


def _uncacheable(reason: str) -> SliceAnswer:
    return SliceAnswer(SliceAnswerKind.UNCACHEABLE, reason)


def read_slice_answer(
    status: int,
    fields: Sequence[tuple[str, str]],
    *,
    start: int,
    slice_size: int,
    default_ttl_s: float,
) -> SliceAnswer:
    """Judge the answer to ``Range: bytes=start-(start+slice_size-1)`` (``fields`` as sent).

    Storable (§3) only as a 206 whose Content-Range is exactly the slice (clamped at the end of
    the object), identity-coded, without ``no-store`` or ``private`` (a shared cache, §5.2.2),
    with a ``Vary`` of at most Accept-Encoding (the cache asks for identity) and a strong ETag.
    A 200 means the upstream ignores Range: never stored as a whole object here.
    """
    headers = {name.lower(): value for name, value in fields}
    control = parse_cache_control(headers.get("cache-control"))
    fresh_for_s = freshness_lifetime(
        control, headers.get("expires"), headers.get("date"), default_ttl_s=default_ttl_s
    )
    if status == 304:
        # §4.3.4: the stored object takes the 304's freshness (its Cache-Control, Expires).
        return SliceAnswer(
            SliceAnswerKind.NOT_MODIFIED,
            "not modified",
            cache_control=headers.get("cache-control", ""),
            fresh_for_s=fresh_for_s,
        )
    if status == 200:
        return _uncacheable("upstream ignores Range (200 to a slice request)")
    if status != 206:
        return SliceAnswer(SliceAnswerKind.RELAY, f"status {status}")
    if control.no_store or control.private:
        return _uncacheable("no-store or private")
    vary = {member.lower() for member in split_list(headers.get("vary", ""))}
    if vary - {"accept-encoding"}:
        return _uncacheable(f"Vary: {headers.get('vary')}")
    if strip_ows(headers.get("content-encoding", "identity")).lower() != "identity":
        return _uncacheable("content-coded")
    validators = strong_validators(headers.get("etag"), headers.get("last-modified"))
    if validators is None:
        return _uncacheable("no strong ETag")
    span = _content_range(headers.get("content-range", ""))
    if span is None:
        return _uncacheable("206 without a single Content-Range")
    first, last, size = span
    if first != start or last != min(start + slice_size, size) - 1:
        return _uncacheable(f"206 for {first}-{last}, not the slice at {start}")
    length = last - first + 1
    if parse_digits(headers.get("content-length", str(length))) != length:
        return _uncacheable("Content-Length disagrees with Content-Range")
    return SliceAnswer(
        SliceAnswerKind.SLICE,
        "slice",
        size=size,
        length=length,
        validators=validators,
        content_type=headers.get("content-type", "application/octet-stream"),
        cache_control=headers.get("cache-control", ""),
        fresh_for_s=fresh_for_s,
    )


def same_version(a: Validators, b: Validators) -> bool:
    """Whether two answers are of one version: equal strong ETags (RFC 9110 §8.8.3.2)."""
    tag_a, tag_b = a.entity_tag, b.entity_tag
    return tag_a is not None and tag_b is not None and tag_a.strong_match(tag_b)
