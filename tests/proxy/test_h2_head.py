"""An HTTP/2 request head as ``h2_head.read_head`` records it on an
Exchange, without sockets: nginx's mapping of HTTP/2 to an HTTP/1.1 upstream
request, and the heads that cannot be served (h2 itself has already refused
what breaks HTTP/2's own rules: connection-specific fields, te other than
trailers, upper-case names, missing pseudo-headers), and that check agreeing
with the h2 package's own."""

from __future__ import annotations

import random

import pytest
from h2.exceptions import ProtocolError
from h2.utilities import HeaderValidationFlags, normalize_inbound_headers, validate_headers

from ingressd.model.table import RouteTable
from ingressd.proxy.exchange import Exchange
from ingressd.proxy.h2_head import _KNOWN, KNOWN_NAMES_MAX, checked_request_head, read_head
from ingressd.proxy.settings import ProxySettings
from ingressd.proxy.state import ProxyState
from ingressd.proxy.streams import ClientStream

SETTINGS = ProxySettings()
FLAGS = HeaderValidationFlags(
    is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False
)


def head(*extra: tuple[bytes, bytes], method: bytes = b"GET", path: bytes = b"/a?b=1",
         authority: bytes | None = b"h.test") -> list[tuple[bytes, bytes]]:  # fmt: skip
    pseudo = [(b":method", method), (b":scheme", b"https")]
    if authority is not None:
        pseudo.append((b":authority", authority))
    pseudo.append((b":path", path))
    return [*pseudo, *extra]


def read(
    headers: list[tuple[bytes, bytes]], has_body: bool = False
) -> tuple[Exchange, tuple[int, str] | None]:
    ex = Exchange(ClientStream(), ProxyState(RouteTable(), SETTINGS))
    return ex, read_head(ex, headers, SETTINGS, has_body)


def test_pseudo_headers_make_the_request_and_authority_the_host() -> None:
    ex, error = read(head((b"user-agent", b"t/1"), (b"cookie", b"a=1; b=2")))
    assert error is None
    assert (ex.method, ex.url, ex.host, ex.protocol) == (b"GET", b"/a?b=1", b"h.test", "HTTP/2.0")
    assert ex.head_done
    assert ex.headers == [(b"host", b"h.test"), (b"user-agent", b"t/1"), (b"cookie", b"a=1; b=2")]
    assert not ex.has_body()


def test_a_host_field_serves_when_there_is_no_authority() -> None:
    ex, error = read(head((b"host", b"other.test"), authority=None))
    assert error is None
    assert ex.host == b"other.test"
    assert ex.headers == [(b"host", b"other.test")]


def test_authority_and_host_together_are_nginx_s_duplicate_host() -> None:
    assert read(head((b"host", b"h.test")))[1] == (
        400,
        "duplicate host header (:authority and Host)",
    )


def test_fields_ingressd_sets_or_that_are_hop_by_hop_are_not_passed_on() -> None:
    ex, error = read(
        head(
            (b"te", b"trailers"),
            (b"trailer", b"x"),
            (b"proxy-authorization", b"p"),
            (b"x-real-ip", b"1.2.3.4"),
            (b"x-forwarded-proto", b"http"),
            (b"x-forwarded-for", b"10.0.0.1"),
            (b"x-forwarded-for", b"10.0.0.2"),
            (b"x-request-id", b"rid"),
            (b"origin", b"https://o.test"),
        )
    )
    assert error is None
    assert ex.headers == [(b"host", b"h.test"), (b"origin", b"https://o.test")]
    assert (ex.xff, ex.request_id, ex.origin) == (b"10.0.0.1, 10.0.0.2", b"rid", b"https://o.test")


def test_body_framing_for_the_upstream() -> None:
    ex, error = read(head(method=b"POST"), has_body=True)
    assert error is None and ex.req_chunked and ex.req_length is None
    ex, error = read(head((b"content-length", b"12"), method=b"POST"), has_body=True)
    assert error is None and not ex.req_chunked and ex.req_length == b"12"
    ex, error = read(head((b"content-length", b"0"), method=b"POST"))
    assert error is None and not ex.has_body()


@pytest.mark.parametrize(
    ("headers", "has_body", "error"),
    [
        # END_STREAM with the head, yet a body announced: nginx's "client
        # prematurely closed stream" (the upstream would wait for it).
        (head((b"content-length", b"5"), method=b"POST"), False, 400),
        (head(*[(b"x-h%d" % i, b"v") for i in range(101)]), False, 431),
        (head((b"x-big", b"v" * 33000)), False, 431),
        (head(path=b"/" + b"a" * 9000), False, 414),
        (head(method=b"GE T"), False, 400),
        (head(method=b"CONNECT"), False, 405),
        (head((b"x", b"y"), method=b"CONNECT"), False, 405),
        (head(path=b"relative"), False, 400),
        (head(path=b"/a b"), False, 400),
        (head(path=b"/a\x7f"), False, 400),
        (head(path=b"*"), False, 400),
        (head(authority=b"h.test/evil"), False, 400),
        (head(authority=b"h test"), False, 400),
    ],
)
def test_heads_that_cannot_be_served(
    headers: list[tuple[bytes, bytes]], has_body: bool, error: int
) -> None:
    assert read(headers, has_body)[1] is not None
    assert read(headers, has_body)[1][0] == error  # type: ignore[index]


def test_options_star_is_served() -> None:
    assert read(head(method=b"OPTIONS", path=b"*"))[1] is None


# -- HTTP/2's own rules: the one-pass check agrees with h2's -------------------------------

BASE: list[tuple[bytes, bytes]] = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"h.test"),
    (b":path", b"/p"),
    (b"user-agent", b"t/1"),
    (b"cookie", b"a=1"),
    (b"accept", b"*/*"),
]


def _variants() -> list[list[tuple[bytes, bytes]]]:
    """Heads around BASE: each field's name and value broken in each way
    RFC 9113 8.2-8.3 names, fields added, dropped, doubled and moved."""
    out = [list(BASE)]
    bad_values = [
        b"a\rb",
        b"a\nb",
        b"a\x00b",
        b" a",
        b"a ",
        b"\ta",
        b"a\t",
        b"",
        b"a b",
        b"\x7f\xff",
    ]
    bad_names = [b"User-Agent", b"x y", b"x:y", b"", b"x\x00", b"\xc3\xa9", b"x\x7f", b":x", b"X"]
    for i in range(len(BASE)):
        for v in bad_values:
            h = list(BASE)
            h[i] = (h[i][0], v)
            out.append(h)
        out.append(BASE[:i] + BASE[i + 1 :])  # dropped
        out.append([*BASE[: i + 1], BASE[i], *BASE[i + 1 :]])  # doubled
    for n in bad_names:
        out.append([*BASE, (n, b"v")])
    for extra in [
        (b"connection", b"close"),
        (b"keep-alive", b"5"),
        (b"proxy-connection", b"x"),
        (b"transfer-encoding", b"chunked"),
        (b"upgrade", b"websocket"),
        (b"te", b"trailers"),
        (b"te", b"TRAILERS"),
        (b"te", b"gzip"),
        (b"host", b"h.test"),
        (b"host", b"other.test"),
        (b":status", b"200"),
        (b":protocol", b"websocket"),
        (b"cookie", b"b=2"),
        (b"x-custom", b"v"),
        (b"proxy-authorization", b"x"),
    ]:
        out.append([*BASE, extra])
        out.append([extra, *BASE])  # before the pseudo-headers
    no_authority = [h for h in BASE if h[0] != b":authority"]
    out.append([*no_authority, (b"host", b"h.test")])
    out.append([*no_authority, (b"host", b"h.test"), (b"host", b"h.test")])
    out.append([(b":method", b"CONNECT"), (b":authority", b"h.test:443")])
    out.append([(b":method", b"CONNECT"), *BASE[1:]])
    out.append([(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"")])
    return out


def _h2s(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]] | None:
    """What the h2 package makes of a head with its inbound checks on."""
    try:
        return list(validate_headers(normalize_inbound_headers(headers, FLAGS), FLAGS))
    except ProtocolError:
        return None


def test_the_plain_head_check_accepts_and_refuses_as_h2_does() -> None:
    variants = _variants()
    assert len(variants) > 120
    refused = 0
    for headers in variants:
        expected = _h2s(headers)
        try:
            got: list[tuple[bytes, bytes]] | None = checked_request_head(list(headers))
        except ProtocolError:
            got = None
        if expected is None:
            refused += 1
            assert got is None, headers
        else:
            assert got is not None, headers
            # The same request once read: cookies joined, last, as h2 joins them.
            mine, theirs = read(list(got)), read(expected)
            assert mine[1] == theirs[1]
            assert mine[0].headers == theirs[0].headers, headers
    assert refused > 60  # the corpus does break the rules


def test_split_cookies_are_joined_last() -> None:
    ex, error = read(head((b"cookie", b"a=1"), (b"x-a", b"1"), (b"cookie", b"b=2")))
    assert error is None
    assert ex.headers[-1] == (b"cookie", b"a=1; b=2")
    assert [n for n, _ in ex.headers].count(b"cookie") == 1


def test_names_remembered_are_bounded() -> None:
    for i in range(KNOWN_NAMES_MAX + 100):
        checked_request_head([*BASE, (b"x-n-%d" % i, b"v")])
    assert len(_KNOWN) <= KNOWN_NAMES_MAX
    # Past the bound a valid new name is still served, an invalid one refused.
    assert checked_request_head([*BASE, (b"x-late", b"v")])[-1] == (b"x-late", b"v")
    with pytest.raises(ProtocolError):
        checked_request_head([*BASE, (b"X-Late", b"v")])


def test_random_heads_are_judged_as_h2_judges_them() -> None:
    """Random edits of BASE (bytes put in names and values, fields swapped,
    pseudo-headers renamed): the one-pass check never accepts what h2
    refuses, nor refuses what h2 accepts."""
    rng = random.Random(20261207)
    alphabet = [0, 9, 10, 13, 32, 58, 65, 90, 97, 122, 45, 127, 200, 34, 44]
    names = [b":method", b":path", b":scheme", b":authority", b":status", b"te", b"host"]
    for _ in range(3000):
        headers = list(BASE)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(headers))
            name, value = headers[i]
            what = rng.randrange(5)
            if what == 0:
                at = rng.randint(0, len(name))
                name = name[:at] + bytes([rng.choice(alphabet)]) + name[at:]
            elif what == 1:
                at = rng.randint(0, len(value))
                value = value[:at] + bytes([rng.choice(alphabet)]) + value[at:]
            elif what == 2:
                j = rng.randrange(len(headers))
                headers[i], headers[j] = headers[j], headers[i]
                continue
            elif what == 3:
                name = rng.choice(names)
            else:
                value = rng.choice([b"", b"CONNECT", b"trailers", b"Trailers", b"x"])
            headers[i] = (name, value)
        expected = _h2s(headers)
        try:
            got: list[tuple[bytes, bytes]] | None = checked_request_head(list(headers))
        except ProtocolError:
            got = None
        assert (got is None) == (expected is None), headers
