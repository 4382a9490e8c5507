"""An HTTP/2 request head as ``client_h2.read_head`` records it on an
Exchange, without sockets: nginx's mapping of HTTP/2 to an HTTP/1.1 upstream
request, and the heads that cannot be served (h2 itself has already refused
what breaks HTTP/2's own rules: connection-specific fields, te other than
trailers, upper-case names, missing pseudo-headers)."""

from __future__ import annotations

import pytest
from h2.errors import ErrorCodes

from ingressd.model.table import RouteTable
from ingressd.proxy.client_h2 import _H2, CLOSED_STREAMS_KEPT, HeaderBlockTooLarge, read_head
from ingressd.proxy.exchange import Exchange
from ingressd.proxy.settings import ProxySettings
from ingressd.proxy.state import ProxyState
from ingressd.proxy.streams import ClientStream

SETTINGS = ProxySettings()


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


def test_what_h2_reads_from_its_classes_is_overridden_on_either_build() -> None:
    """h2 reads these as class attributes of the classes it is given; a class
    compiled as a native subclass would hold them per instance, with h2's own
    value on the class (the CONTINUATION flood's GOAWAY said PROTOCOL_ERROR)."""
    assert HeaderBlockTooLarge("too large").error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert HeaderBlockTooLarge.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert _H2.MAX_CLOSED_STREAMS == CLOSED_STREAMS_KEPT
