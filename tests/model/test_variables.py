"""model/variables.py: the one table of nginx variables ingressd renders, and its resolver."""

from __future__ import annotations

import pytest

from ingressd.model import variables as v
from ingressd.model.variables import RequestVars, render, template, value

HEADERS = [
    (b"Host", b"Shop.Test:8443"),
    (b"X-User", b"alice"),
    (b"x-user", b"bob"),
    (b"X_Odd", b"underscore"),
    (b"Cookie", b"a=1; Session=s%20x"),
    (b"cookie", b"b=2"),
    (b"User-Agent", b"curl/8"),
]


def req(
    path: str = "/a%20b/./c",
    query: str = "x=1&Key=v%26w&flag&x=2",
    *,
    uri: str = "/a b/c",
    scheme: str = "https",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> RequestVars:
    return RequestVars(
        "shop.test",
        "Shop.Test:8443",
        path,
        uri,
        query,
        scheme,
        "192.0.2.9",
        "POST",
        HEADERS if headers is None else headers,
        "rid-1",
        "",
        "8443",
    )


# Every name of the table, with what it renders for req().
EXPECTED = {
    # the original URI as received, not decoded nor normalised, with the arguments
    "request_uri": "/a%20b/./c?x=1&Key=v%26w&flag&x=2",
    "uri": "/a b/c",  # decoded and normalised
    "document_uri": "/a b/c",
    "args": "x=1&Key=v%26w&flag&x=2",  # as received
    "query_string": "x=1&Key=v%26w&flag&x=2",
    "is_args": "?",
    "host": "shop.test",  # lowercase, no port
    "http_host": "Shop.Test:8443",  # as received
    "scheme": "https",
    "server_port": "8443",
    "remote_addr": "192.0.2.9",
    "request_method": "POST",
    "req_id": "rid-1",
    "request_id": "rid-1",
}


def test_every_name_of_the_table_resolves() -> None:
    assert set(EXPECTED) == set(v.VARIABLES), "the test covers the whole table"
    r = req()
    for name, expected in EXPECTED.items():
        assert v.unknown(name) is None
        assert value(name, r) == expected, name


def test_request_uri_without_args_has_no_question_mark() -> None:
    r = req(query="")
    assert (value("request_uri", r), value("args", r), value("is_args", r)) == (
        "/a%20b/./c",
        "",
        "",
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("http_x_user", "alice, bob"),  # several joined as nginx joins them
        ("http_user_agent", "curl/8"),  # "-" in the header name is "_" in the variable
        ("http_x_odd", "underscore"),  # and "_" in the header name is "_" too
        ("http_cookie", "a=1; Session=s%20x; b=2"),  # Cookie lines with "; "
        ("http_x_missing", ""),
        ("cookie_session", "s%20x"),  # name case-insensitive, value as sent
        ("cookie_b", "2"),  # in the second Cookie line
        ("cookie_none", ""),
        ("arg_x", "1"),  # the first
        ("arg_key", "v%26w"),  # case-insensitive name, value not decoded
        ("arg_flag", ""),  # no "=": no value, as ngx_http_arg
        ("arg_missing", ""),
    ],
)
def test_prefixed_names(name: str, expected: str) -> None:
    assert v.unknown(name) is None
    assert value(name, req()) == expected


def test_missing_parts_are_empty() -> None:
    r = req(query="", headers=[])
    for name in ("http_x_user", "cookie_a", "arg_x", "args", "is_args"):
        assert value(name, r) == "", name


def test_scheme_and_port_as_given() -> None:
    r = RequestVars("h", "h", "/", "/", "", "http", "::1", "GET", [], server_port="80")
    assert (value("scheme", r), value("server_port", r), value("request_id", r)) == (
        "http",
        "80",
        "",
    )


def test_render_joins_parts() -> None:
    parts = template("https://new.example.com$request_uri")
    assert parts == ("https://new.example.com", "request_uri", "")
    assert render(parts, req()) == "https://new.example.com/a%20b/./c?x=1&Key=v%26w&flag&x=2"
    assert render(("plain",), req()) == "plain"


def test_names_are_case_insensitive_and_braces_split() -> None:
    parts = template("$SCHEME://${Host}x$HTTP_X_User")
    assert parts == ("", "scheme", "://", "host", "x", "http_x_user", "")
    assert render(parts, req()) == "https://shop.testxalice, bob"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("https://a/$nope", "$nope is not a variable ingressd knows"),
        ("https://a/$1", "$1 is a regex capture group"),
        ("https://a/$http_", "$http_ names no http"),
        ("https://a/$cookie_", "$cookie_ names no cookie"),
        ("https://a/$", "no variable name after '$'"),
        ("https://a/${host", "no variable name after '$'"),
        ("https://a/$server_name", "$server_name is not a variable ingressd knows"),
    ],
)
def test_unknown_names_are_refused_with_their_name(text: str, why: str) -> None:
    with pytest.raises(ValueError) as info:
        template(text)
    assert why in str(info.value)
