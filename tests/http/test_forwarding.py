"""The proxy's header policy (RFC 9110 §7.6): a table of cases, then properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_range.config import trusted_networks
from trio_range.http.forwarding import (
    HOP_BY_HOP,
    connection_options,
    forwarded_client,
    is_trusted,
    request_headers_for_upstream,
    response_headers_and_type,
    response_headers_for_client,
    strip_hop_by_hop,
    upstream_limit_rate,
    via_value,
)

H = list[tuple[str, str]]


def test_hop_by_hop_is_the_rfc_list() -> None:
    assert {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    } == HOP_BY_HOP


# (id, headers in, headers out)
STRIP_CASES: list[tuple[str, H, H]] = [
    ("empty", [], []),
    (
        "end_to_end_untouched",
        [("Range", "bytes=0-1"), ("ETag", '"x"')],
        [("Range", "bytes=0-1"), ("ETag", '"x"')],
    ),
    (
        "every_fixed_name",
        [(name.title(), "v") for name in sorted(HOP_BY_HOP)] + [("X-Kept", "1")],
        [("X-Kept", "1")],
    ),
    ("names_are_case_insensitive", [("TRANSFER-ENCODING", "chunked"), ("tE", "trailers")], []),
    (
        "connection_option_removed",
        [("Connection", "close, X-Secret"), ("X-Secret", "1"), ("X-Open", "2")],
        [("X-Open", "2")],
    ),
    (
        "connection_option_case_and_ows",
        [("connection", " \tx-a ,X-B\t"), ("X-A", "1"), ("x-b", "2"), ("X-C", "3")],
        [("X-C", "3")],
    ),
    (
        "repeated_connection_fields",
        [("X-A", "1"), ("Connection", "x-a"), ("X-B", "2"), ("Connection", "X-B"), ("X-C", "3")],
        [("X-C", "3")],
    ),
    (
        "empty_list_members_ignored",
        [("Connection", ",, ,x-a,"), ("X-A", "1"), ("X-B", "2")],
        [("X-B", "2")],
    ),
    (
        "option_before_connection_also_removed",
        [("X-Late", "1"), ("Connection", "X-Late")],
        [],
    ),
    (
        "duplicates_and_order_kept",
        [("Set-Cookie", "a=1"), ("X-A", "1"), ("Set-Cookie", "b=2"), ("Keep-Alive", "timeout=5")],
        [("Set-Cookie", "a=1"), ("X-A", "1"), ("Set-Cookie", "b=2")],
    ),
    (
        "option_names_a_hop_by_hop_field",
        [("Connection", "Upgrade, keep-alive"), ("Upgrade", "h2c"), ("Accept", "*/*")],
        [("Accept", "*/*")],
    ),
    ("original_case_of_kept_names", [("x-LoWeR", "v")], [("x-LoWeR", "v")]),
]


@pytest.mark.parametrize(
    ("given_headers", "expected"), [c[1:] for c in STRIP_CASES], ids=[c[0] for c in STRIP_CASES]
)
def test_strip_hop_by_hop(given_headers: H, expected: H) -> None:
    assert strip_hop_by_hop(given_headers) == expected


def test_strip_accepts_any_iterable() -> None:
    pairs = iter([("Connection", "X-A"), ("X-A", "1"), ("X-B", "2")])
    assert strip_hop_by_hop(pairs) == [("X-B", "2")]


def test_connection_options_combines_fields() -> None:
    assert connection_options([("Connection", "A, b"), ("connection", "c"), ("X", "d")]) == {
        "a",
        "b",
        "c",
    }


VIA_CASES = [
    ("trio-range", "1.1", "1.1 trio-range"),
    ("trio-range", "1.0", "1.0 trio-range"),
    ("trio-range", "HTTP/1.0", "1.0 trio-range"),
    ("trio-range", "http/1.1", "1.1 trio-range"),
    ("trio-range", "HTTP/2", "2 trio-range"),
    ("proxy.example:8080", "1.1", "1.1 proxy.example:8080"),
]


@pytest.mark.parametrize(("name", "version", "expected"), VIA_CASES)
def test_via_value(name: str, version: str, expected: str) -> None:
    assert via_value(name, version) == expected


def test_via_value_defaults_to_http_1_1() -> None:
    assert via_value("p") == "1.1 p"


@pytest.mark.parametrize(
    "name",
    ["", "two words", "a,b", "a:", "a:port", ":80", "caf\u00e9", "a:\u00b2", "a:\u0668\u0660"],
)
def test_via_value_refuses_a_name_that_would_corrupt_the_list(name: str) -> None:
    with pytest.raises(ValueError, match="Via name"):
        via_value(name)


@pytest.mark.parametrize("version", ["", "1 .1", "HTTP/", "1,1"])
def test_via_value_refuses_a_bad_protocol_version(version: str) -> None:
    with pytest.raises(ValueError, match="protocol version"):
        via_value("p", version)


def upstream(headers: H, **overrides: str) -> H:
    options = {
        "client_ip": "192.0.2.7",
        "scheme": "http",
        "upstream_host": "origin.internal:8080",
        "via_name": "trio-range",
    } | overrides
    return request_headers_for_upstream(headers, **options)


def test_request_minimal() -> None:
    assert upstream([("Host", "proxy.example")]) == [
        ("Host", "origin.internal:8080"),
        ("Accept-Encoding", "identity"),
        ("X-Forwarded-For", "192.0.2.7"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "proxy.example"),
        ("Via", "1.1 trio-range"),
    ]


def test_request_client_host_never_redirects_the_proxy() -> None:
    out = upstream([("Host", "evil.example"), ("host", "evil2.example")])
    assert [v for n, v in out if n.lower() == "host"] == ["origin.internal:8080"]
    assert ("X-Forwarded-Host", "evil.example") in out


def test_request_without_host_has_no_forwarded_host() -> None:
    out = upstream([("Accept", "*/*")])
    assert not [n for n, _ in out if n.lower() == "x-forwarded-host"]


def test_request_accept_encoding_becomes_identity() -> None:
    out = upstream([("Accept-Encoding", "gzip, br"), ("accept-encoding", "zstd")])
    assert [(n, v) for n, v in out if n.lower() == "accept-encoding"] == [
        ("Accept-Encoding", "identity")
    ]


def test_request_body_fields_are_dropped() -> None:
    out = upstream([("Content-Length", "10"), ("Expect", "100-continue"), ("X-A", "1")])
    names = {n.lower() for n, _ in out}
    assert "content-length" not in names
    assert "expect" not in names
    assert ("X-A", "1") in out


def test_request_range_and_conditionals_pass_untouched_in_order() -> None:
    passed = [
        ("Range", "bytes=0-0, -2"),
        ("If-Range", '"abc"'),
        ("If-Match", '"abc"'),
        ("If-None-Match", 'W/"x", "y"'),
        ("If-Modified-Since", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ("If-Unmodified-Since", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ("Authorization", "Bearer t"),
        ("Cookie", "a=1"),
    ]
    out = upstream([("Host", "p"), ("Connection", "keep-alive"), *passed])
    assert out[2 : 2 + len(passed)] == passed


def test_request_forwarded_for_appends_to_an_existing_list() -> None:
    out = upstream([("X-Forwarded-For", "198.51.100.1"), ("x-forwarded-for", "198.51.100.2, ")])
    assert [(n, v) for n, v in out if n.lower() == "x-forwarded-for"] == [
        ("X-Forwarded-For", "198.51.100.1, 198.51.100.2, 192.0.2.7")
    ]


def test_request_unknown_client_ip_adds_no_empty_member() -> None:
    assert ("X-Forwarded-For", "198.51.100.1") in upstream(
        [("X-Forwarded-For", "198.51.100.1")], client_ip=""
    )
    assert not [n for n, _ in upstream([], client_ip="") if n.lower() == "x-forwarded-for"]


def test_request_forwarded_for_ipv6_is_bare() -> None:
    out = upstream([], client_ip="::1")
    assert ("X-Forwarded-For", "::1") in out


def test_request_forwarded_proto_and_host_are_set_not_trusted() -> None:
    out = upstream(
        [("Host", "real"), ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "fake")],
        scheme="http",
    )
    assert [(n, v) for n, v in out if n.lower().startswith("x-forwarded-")] == [
        ("X-Forwarded-For", "192.0.2.7"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "real"),
    ]


def test_request_via_combines_with_existing() -> None:
    out = upstream([("Via", "1.0 fred, 1.1 p.example (Apache/1.1)"), ("Via", "2 edge")])
    assert out[-1] == ("Via", "1.0 fred, 1.1 p.example (Apache/1.1), 2 edge, 1.1 trio-range")
    assert sum(n.lower() == "via" for n, _ in out) == 1


def test_request_via_names_the_client_protocol() -> None:
    out = request_headers_for_upstream(
        [],
        client_ip="127.0.0.1",
        scheme="http",
        upstream_host="o",
        via_name="p",
        client_http_version="1.0",
    )
    assert out[-1] == ("Via", "1.0 p")


def test_request_hop_by_hop_and_connection_options_are_stripped() -> None:
    out = upstream(
        [
            ("Connection", "keep-alive, X-Trace"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Proxy-Authorization", "Basic x"),
            ("Upgrade", "websocket"),
            ("X-Trace", "1"),
            ("X-Other", "2"),
        ]
    )
    names = [n.lower() for n, _ in out]
    assert not set(names) & (HOP_BY_HOP | {"x-trace"})
    assert ("X-Other", "2") in out


def test_request_connection_option_cannot_remove_the_proxys_own_fields() -> None:
    # A client naming our fields in Connection removes its own copies, never the ones we add.
    out = upstream([("Host", "h"), ("Connection", "X-Forwarded-For, Via, Host"), ("Via", "1.0 a")])
    assert ("X-Forwarded-For", "192.0.2.7") in out
    assert ("X-Forwarded-Host", "h") in out
    assert out[-1] == ("Via", "1.1 trio-range")
    assert out[0] == ("Host", "origin.internal:8080")


def test_response_keeps_entity_fields_exactly() -> None:
    entity = [
        ("Content-Range", "bytes 0-0/11"),
        ("Content-Length", "1"),
        ("Content-Type", "video/mp4"),
        ("ETag", '"5f-1"'),
        ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ("Accept-Ranges", "bytes"),
        ("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ("Server", "nginx/1.22.1"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]
    assert response_headers_for_client(entity, via_name="p") == [*entity, ("Via", "1.1 p")]


def test_response_strips_hop_by_hop_named_by_connection() -> None:
    out = response_headers_for_client(
        [
            ("Content-Length", "2"),
            ("Connection", "close, X-Secret"),
            ("X-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authenticate", "x"),
            ("Trailer", "X-Checksum"),
        ],
        via_name="p",
    )
    assert out == [("Content-Length", "2"), ("Via", "1.1 p")]


@pytest.mark.parametrize(
    ("version", "via"), [("1.0", "1.0 p"), ("HTTP/1.0", "1.0 p"), ("HTTP/1.1", "1.1 p")]
)
def test_response_via_names_the_upstream_protocol(version: str, via: str) -> None:
    out = response_headers_for_client([], via_name="p", upstream_http_version=version)
    assert out == [("Via", via)]


def test_response_via_combines_with_upstream_via() -> None:
    out = response_headers_for_client(
        [("Via", "1.1 cdn"), ("ETag", '"x"'), ("via", "1.0 old")], via_name="p"
    )
    assert out == [("ETag", '"x"'), ("Via", "1.1 cdn, 1.0 old, 1.1 p")]


def test_response_with_transfer_encoding_loses_content_length() -> None:
    # RFC 9112 §6.3: the intermediary removes Content-Length when Transfer-Encoding is present.
    out = response_headers_for_client(
        [("Transfer-Encoding", "chunked"), ("Content-Length", "5"), ("ETag", '"e"')],
        via_name="p",
    )
    assert out == [("ETag", '"e"'), ("Via", "1.1 p")]


@pytest.mark.parametrize(
    ("fields", "received_at", "dates"),
    [
        # RFC 9110 §6.6.1: the time it was received, for an answer without Date.
        ([("ETag", '"e"')], 784111777, ["Sun, 06 Nov 1994 08:49:37 GMT"]),
        # The upstream's own Date is kept, whatever its spelling, and none is added.
        ([("date", "Mon, 07 Nov 1994 08:49:37 GMT")], 0, ["Mon, 07 Nov 1994 08:49:37 GMT"]),
        # Without a received_at (the caller adds none), nothing changes.
        ([("ETag", '"e"')], None, []),
    ],
)
def test_response_without_date_gets_the_time_it_was_received(
    fields: list[tuple[str, str]], received_at: int | None, dates: list[str]
) -> None:
    out = response_headers_for_client(fields, via_name="p", received_at=received_at)
    assert [value for name, value in out if name.lower() == "date"] == dates
    assert out[-1] == ("Via", "1.1 p")


# ---- properties -----------------------------------------------------------------------------

END_TO_END = [
    "Range",
    "If-Range",
    "Content-Length",
    "Content-Range",
    "ETag",
    "Date",
    "Set-Cookie",
    "X-A",
    "X-B",
    "x-c",
    "Via",
    "Host",
]
NAMES = sorted(HOP_BY_HOP) + END_TO_END


@st.composite
def field_names(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(NAMES))
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.upper() if flip else c.lower() for c, flip in zip(name, flips, strict=True))


OWS = st.sampled_from(["", " ", "\t", "  "])
plain_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


@st.composite
def connection_values(draw: st.DrawFn) -> str:
    members = draw(st.lists(st.one_of(field_names(), st.just("")), max_size=4))
    return ",".join(draw(OWS) + member + draw(OWS) for member in members)


header_lists = st.lists(
    st.one_of(
        st.tuples(field_names(), plain_values),
        st.tuples(st.sampled_from(["Connection", "connection", "CONNECTION"]), connection_values()),
    ),
    max_size=12,
)
via_names = st.sampled_from(["p", "trio-range", "edge.example:8080"])
versions = st.sampled_from(["1.1", "1.0", "HTTP/1.1", "HTTP/1.0"])


def named_by_connection(headers: H) -> set[str]:
    # An independent reading of the Connection fields, so the property does not reuse the code.
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            named |= {m.strip(" \t").lower() for m in value.split(",")} - {""}
    return named


@given(header_lists)
def test_strip_leaves_no_hop_by_hop_and_nothing_named_by_connection(headers: H) -> None:
    dropped = HOP_BY_HOP | named_by_connection(headers)
    assert not {n.lower() for n, _ in strip_hop_by_hop(headers)} & dropped


@given(header_lists)
def test_strip_keeps_everything_else_in_order(headers: H) -> None:
    dropped = HOP_BY_HOP | named_by_connection(headers)
    assert strip_hop_by_hop(headers) == [(n, v) for n, v in headers if n.lower() not in dropped]


@given(header_lists)
def test_strip_is_idempotent(headers: H) -> None:
    once = strip_hop_by_hop(headers)
    assert strip_hop_by_hop(once) == once


@given(header_lists, via_names, versions)
def test_response_via_is_last_and_appended_once(headers: H, name: str, version: str) -> None:
    out = response_headers_for_client(headers, via_name=name, upstream_http_version=version)
    ours = via_value(name, version)
    vias = [v for n, v in out if n.lower() == "via"]
    assert len(vias) == 1
    assert out[-1] == ("Via", vias[0])
    assert vias[0] == ours or vias[0].endswith(", " + ours)
    assert vias[0].count(ours) == 1 + sum(
        v.count(ours) for n, v in strip_hop_by_hop(headers) if n.lower() == "via"
    )


@given(header_lists, via_names, versions)
def test_response_keeps_every_end_to_end_field_in_order(
    headers: H, name: str, version: str
) -> None:
    out = response_headers_for_client(headers, via_name=name, upstream_http_version=version)
    dropped = HOP_BY_HOP | named_by_connection(headers) | {"via"}
    if any(n.lower() == "transfer-encoding" for n, _ in headers):
        dropped |= {"content-length"}
    assert out[:-1] == [(n, v) for n, v in headers if n.lower() not in dropped]
    assert not {n.lower() for n, _ in out[:-1]} & (HOP_BY_HOP | named_by_connection(headers))


@given(header_lists, via_names)
def test_request_policy_holds_for_any_client_headers(headers: H, name: str) -> None:
    out = request_headers_for_upstream(
        headers, client_ip="192.0.2.1", scheme="https", upstream_host="o:1", via_name=name
    )
    lowered = [n.lower() for n, _ in out]
    assert not set(lowered) & (HOP_BY_HOP | {"content-length", "expect"})
    assert [v for n, v in out if n.lower() == "host"] == ["o:1"]
    assert [v for n, v in out if n.lower() == "accept-encoding"] == ["identity"]
    assert lowered.count("via") == 1
    assert out[-1][0] == "Via"
    assert out[-1][1].endswith(via_value(name))
    assert next(v for n, v in out if n.lower() == "x-forwarded-for").endswith("192.0.2.1")
    # Range and If-Range cross untouched and in order, unless the client made them hop-by-hop.
    dropped = HOP_BY_HOP | named_by_connection(headers)
    conditional = {"range", "if-range"} - dropped
    assert [(n, v) for n, v in out if n.lower() in conditional] == [
        (n, v) for n, v in headers if n.lower() in conditional
    ]


# --- X-Accel-Limit-Rate (issue 16) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "rate"),
    [
        ([], None),
        ([("X-Accel-Limit-Rate", "1048576")], 1048576),
        ([("x-accel-limit-rate", " 0 ")], 0),
        ([("X-Accel-Limit-Rate", "5"), ("X-Accel-Limit-Rate", "5")], 5),
        ([("X-Other", "5")], None),
    ],
)
def test_upstream_limit_rate(fields: list[tuple[str, str]], rate: int | None) -> None:
    assert upstream_limit_rate(fields) == rate


@pytest.mark.parametrize(
    "values",
    [
        ["fast"],
        [""],
        ["-5"],
        ["1e6"],
        ["5, 6"],
        ["5", "6"],
        ["9" * 400],
        ["0x10"],
        ["\uff11\uff12"],
    ],
)
def test_an_upstream_limit_rate_that_is_not_one_number_is_refused(values: list[str]) -> None:
    with pytest.raises(ValueError, match="X-Accel-Limit-Rate"):
        upstream_limit_rate([("X-Accel-Limit-Rate", value) for value in values])


@given(
    st.lists(
        st.tuples(st.sampled_from(["X-Accel-Limit-Rate", "x-ACCEL-limit-rate", "A"]), st.text())
    )
)
def test_x_accel_limit_rate_never_reaches_the_client(fields: list[tuple[str, str]]) -> None:
    kept = response_headers_for_client(fields, via_name="p")
    assert all(name.lower() != "x-accel-limit-rate" for name, _ in kept)
    try:
        rate = upstream_limit_rate(fields)
    except ValueError:
        return
    assert rate is None or rate >= 0


# --- who the client is, behind trusted proxies (issue 16) -------------------------------------

TRUSTED = trusted_networks("127.0.0.0/8, 10.1.0.0/16, ::1")


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        ("192.0.2.7", ["10.0.0.1"], "192.0.2.7"),  # an untrusted peer names itself
        ("127.0.0.1", [], "127.0.0.1"),  # a trusted peer without the header
        ("127.0.0.1", ["10.0.0.1"], "10.0.0.1"),
        ("::ffff:127.0.0.1", ["10.0.0.1"], "10.0.0.1"),  # IPv4 through an IPv6 socket
        ("::1", ["2001:db8::5"], "2001:db8::5"),
        ("127.0.0.1", ["1.1.1.1, 10.0.0.1"], "10.0.0.1"),  # the first entry is the client's word
        ("127.0.0.1", ["1.1.1.1", "10.0.0.1, 10.1.2.3"], "10.0.0.1"),  # through two proxies
        ("127.0.0.1", ["10.1.2.3"], "10.1.2.3"),  # only trusted hops: the farthest of them
        ("127.0.0.1", ["1.1.1.1, unknown"], "127.0.0.1"),  # garbage: stop at the last trusted
        ("127.0.0.1", ["[2001:db8::9]"], "2001:db8::9"),
    ],
)
def test_forwarded_client(peer: str, forwarded_for: list[str], client: str) -> None:
    headers = [("X-Forwarded-For", value) for value in forwarded_for]
    assert forwarded_client(peer, headers, TRUSTED) == client


@given(st.text(max_size=40), st.lists(st.text(max_size=60), max_size=4))
def test_an_untrusted_peer_cannot_name_another_client(peer: str, values: list[str]) -> None:
    headers = [("X-Forwarded-For", value) for value in values]
    if not is_trusted(peer, TRUSTED):
        assert forwarded_client(peer, headers, TRUSTED) == peer
    assert forwarded_client(peer, headers, ()) == peer


def test_is_trusted() -> None:
    assert is_trusted("10.1.200.3", TRUSTED)
    assert not is_trusted("10.2.0.1", TRUSTED)
    assert not is_trusted("not an address", TRUSTED)
    assert not is_trusted("127.0.0.1", ())


def test_names_are_lowered_one_by_one_when_a_name_holds_a_nul() -> None:
    # The names are lowered in one joined call; a NUL inside one must not shift the others.
    out = response_headers_for_client(
        [("X-A\x00B", "1"), ("Connection", "X-Drop"), ("X-Drop", "2"), ("ETag", '"e"')],
        via_name="p",
    )
    assert out == [("X-A\x00B", "1"), ("ETag", '"e"'), ("Via", "1.1 p")]


@pytest.mark.parametrize(
    ("fields", "content_type"),
    [
        ([], ""),
        ([("Content-Length", "3")], ""),
        (
            [("content-TYPE", "multipart/byteranges; boundary=b")],
            "multipart/byteranges; boundary=b",
        ),
        ([("Content-Type", "a/b"), ("Content-Type", "c/d")], "a/b"),
        # A type the upstream's Connection names is not relayed, so not the answer's type.
        ([("Connection", "content-type"), ("Content-Type", "a/b")], ""),
    ],
)
def test_response_headers_and_type_gives_the_relayed_content_type(
    fields: list[tuple[str, str]], content_type: str
) -> None:
    headers, found = response_headers_and_type(fields, via_name="p", received_at=0)
    assert found == content_type
    assert headers == response_headers_for_client(fields, via_name="p", received_at=0)
