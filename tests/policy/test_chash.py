"""upstream-hash-by keys, server-alias names, conditional SameSite: parsing and rendering."""

from __future__ import annotations

import pytest

from ingressd.model.policy import UpstreamHash
from ingressd.model.variables import RequestVars
from ingressd.policy.annotations import (
    ServerAliases,
    classify,
    parse_policy,
    parse_server_aliases,
    server_aliases,
)
from ingressd.policy.chash import MAX_KEY, parse_key, render
from ingressd.policy.samesite import same_site_none_compatible

NGINX = "nginx.ingress.kubernetes.io/"


def req(
    path: str = "/a/b",
    query: str = "",
    *headers: tuple[bytes, bytes],
    uri: str | None = None,
    tls: bool = False,
) -> RequestVars:
    scheme = "https" if tls else "http"
    return RequestVars(
        "shop.test",
        "shop.test",
        path,
        uri or path,
        query,
        scheme,
        "192.0.2.7",
        "GET",
        list(headers),
    )


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("$request_uri", ("", "request_uri", "")),
        ("$host$request_uri", ("", "host", "", "request_uri", "")),
        ("${request_uri}-text-value", ("", "request_uri", "-text-value")),
        ("$http_x_user_id", ("", "http_x_user_id", "")),
        ("$Cookie_Session", ("", "cookie_session", "")),
        ("$arg_predictorid", ("", "arg_predictorid", "")),  # tests/data/realworld in13
        ("x$", ("x$",)),
        ("a-${x", ("a-${x",)),
    ],
)
def test_keys_parse_as_ingress_nginx_splits_them(value: str, parts: tuple[str, ...]) -> None:
    assert parse_key(value) == parts


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "empty"),
        ("$request_uri/x", "only letters"),  # ingress-nginx's validator refuses "/"
        ("$uri;deny", "only letters"),
        ("$remote_user", "$remote_user is not a variable"),
        ("$hostname", "$hostname is not a variable"),
        ("${1}", "capture group"),
        ("$http_", "names no http"),
        ("$" + "a" * 2000, "longer than"),
    ],
)
def test_keys_ingressd_cannot_render_are_invalid(value: str, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("$", r"\$")):
        parse_key(value)


def test_rendering() -> None:
    r = req("/a%20b/", "id=7&X=2", (b"X-User-Id", b"u1"), (b"Cookie", b"a=1; SESSION=s9"))
    assert render(parse_key("$request_uri"), r) == b"/a%20b/?id=7&X=2"
    assert render(parse_key("$host$request_uri"), r) == b"shop.test/a%20b/?id=7&X=2"
    assert render(parse_key("${host}-$remote_addr"), r) == b"shop.test-192.0.2.7"
    assert render(parse_key("$http_x_user_id"), r) == b"u1"
    assert render(parse_key("$cookie_session"), r) == b"s9"  # names compared in any case
    assert render(parse_key("$arg_x$arg_id$is_args$args"), r) == b"27?id=7&X=2"
    assert render(parse_key("$scheme$request_method$uri"), req(tls=True)) == b"httpsGET/a/b"
    # Absent values are empty, as nginx's.
    assert render(parse_key("k$http_nope$cookie_nope$arg_nope"), req()) == b"k"


def test_a_rendered_key_is_bounded() -> None:
    long = req("/" + "x" * 20_000)
    assert len(render(parse_key("$request_uri"), long)) == MAX_KEY


def test_annotations_are_supported_and_invalid_values_reported() -> None:
    good = {
        NGINX + "upstream-hash-by": "$request_uri",
        NGINX + "upstream-hash-by-subset": "true",
        NGINX + "upstream-hash-by-subset-size": "2",
        NGINX + "server-alias": "b.test, *.c.test",
        NGINX + "session-cookie-conditional-samesite-none": "true",
    }
    assert {v.status for v in classify(good)} == {"supported"}
    policy, messages = parse_policy(good)
    assert messages == []
    assert policy.upstream_hash == UpstreamHash(
        ("", "request_uri", ""), "${request_uri}", subset=True, subset_size=2
    )
    bad = {
        NGINX + "upstream-hash-by": "$nope",
        NGINX + "upstream-hash-by-subset-size": "100000",
        NGINX + "server-alias": "a.test;b.test",
    }
    assert {v.key: v.status for v in classify(bad)} == dict.fromkeys(bad, "invalid")
    policy, messages = parse_policy(bad)
    assert policy.upstream_hash is None
    assert any("$nope is not a variable" in m and "balanced as without it" in m for m in messages)


def test_what_wins_is_reported() -> None:
    hashing = {NGINX + "upstream-hash-by": "$request_uri"}
    _, messages = parse_policy({**hashing, NGINX + "affinity": "cookie"})
    assert messages == ["upstream-hash-by: no effect beside affinity: cookie, which wins over it"]
    _, messages = parse_policy({**hashing, NGINX + "load-balance": "ewma"})
    assert messages == ["load-balance: no effect beside upstream-hash-by, which wins over it"]


def test_subset_annotations_alone_have_no_effect() -> None:
    policy, messages = parse_policy({NGINX + "upstream-hash-by-subset": "true"})
    assert policy.upstream_hash is None
    assert messages == ["upstream-hash-by-subset: no effect without upstream-hash-by"]
    # ingress-nginx: a size of 0 is its default, 3.
    policy, _ = parse_policy(
        {
            NGINX + "upstream-hash-by": "$uri",
            NGINX + "upstream-hash-by-subset": "true",
            NGINX + "upstream-hash-by-subset-size": "0",
        }
    )
    assert policy.upstream_hash is not None and policy.upstream_hash.subset_size == 3


def test_server_alias_names() -> None:
    assert parse_server_aliases("a.com, B.com, ,    c.com, a.com") == ServerAliases(
        ("a.com", "b.com", "c.com"), ()
    )
    # nginx's regex and trailing-wildcard names are kept apart: reported, not served.
    parsed = parse_server_aliases(r"*.example.com,www.example.*,~^www\d+\.example\.com$")
    assert parsed == ServerAliases(
        ("*.example.com",), (r"www.example.*", r"~^www\d+\.example\.com$")
    )
    for bad in ("www.xpto;lala", "a b.com", ",", "a..b"):
        with pytest.raises(ValueError):
            parse_server_aliases(bad)
    policy, messages = parse_policy({NGINX + "server-alias": "www.example.*, b.com"})
    assert messages == [
        "server-alias www.example.*: nginx regular expression and trailing-wildcard names "
        "are not supported by ingressd; not served"
    ]
    # Aliases are the host's business, not the route's: the route stays plain.
    policy, _ = parse_policy({NGINX + "server-alias": "b.com"})
    assert policy.upstream_hash is None and server_aliases({NGINX + "server-alias": "b.com"}) == (
        "b.com",
    )


CHROME_51 = (
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/51.0.2704.103 Safari/537.36"
)
CHROME_120 = (
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/120.0.0.0 Safari/537.36"
)
IOS_12 = (
    b"Mozilla/5.0 (iPhone; CPU iPhone OS 12_4 like Mac OS X) AppleWebKit/605.1.15 "
    b"(KHTML, like Gecko) Version/12.1.2 Mobile/15E148 Safari/604.1"
)
MOJAVE_SAFARI = (
    b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_6) AppleWebKit/605.1.15 "
    b"(KHTML, like Gecko) Version/12.1.2 Safari/605.1.15"
)
MOJAVE_CHROME = (
    b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_6) AppleWebKit/537.36 "
    b"(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
FIREFOX = b"Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"


@pytest.mark.parametrize(
    ("agent", "compatible"),
    [
        (CHROME_51, False),
        (IOS_12, False),
        (MOJAVE_SAFARI, False),
        (CHROME_120, True),
        (MOJAVE_CHROME, True),
        (FIREFOX, True),
        (None, True),
    ],
)
def test_same_site_none_compatible(agent: bytes | None, compatible: bool) -> None:
    assert same_site_none_compatible(agent) is compatible
