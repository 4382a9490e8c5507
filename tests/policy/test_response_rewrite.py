"""What proxy_redirect and proxy_cookie_* do to the upstream's headers
(policy/response_rewrite.py, nginx's rewrite handlers in ngx_http_proxy_module.c)."""

from __future__ import annotations

import pytest

from ingressd.policy.response_rewrite import apply, response_rewrite


def rewritten(headers: list[tuple[bytes, bytes]], *texts: str) -> list[tuple[bytes, bytes]]:
    rewrite, errors = response_rewrite(*texts)
    assert errors == [] and rewrite is not None
    return apply(rewrite, headers)


REDIRECT = ("http://origin.internal:8080/app/", "https://www.test/", "off", "off")


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (b"http://origin.internal:8080/app/x?y=1", b"https://www.test/x?y=1"),
        (b"http://origin.internal:8080/app/", b"https://www.test/"),
        # a prefix match, case-sensitive as nginx's: these stay
        (b"http://ORIGIN.internal:8080/app/x", b"http://ORIGIN.internal:8080/app/x"),
        (b"http://origin.internal:8080/other", b"http://origin.internal:8080/other"),
        (b"/app/x", b"/app/x"),
    ],
)
def test_location_prefix(location: bytes, expected: bytes) -> None:
    out = rewritten([(b"Location", location), (b"X", location)], *REDIRECT)
    assert out == [(b"Location", expected), (b"X", location)]  # only Location (and Refresh)


def test_refresh_is_rewritten_after_its_url() -> None:
    out = rewritten(
        [(b"refresh", b"5; URL=http://origin.internal:8080/app/next"), (b"Refresh", b"5")],
        *REDIRECT,
    )
    assert out == [(b"refresh", b"5; URL=https://www.test/next"), (b"Refresh", b"5")]


def test_regex_replaces_the_whole_value_with_its_groups() -> None:
    texts = ("~*^https?://origin\\.INTERNAL(:\\d+)?/app/(.*)$", "/new/$2", "off", "off")
    out = rewritten([(b"Location", b"http://origin.internal:8080/app/a/b?c")], *texts)
    assert out == [(b"Location", b"/new/a/b?c")]
    out = rewritten([(b"Location", b"http://elsewhere/app/a")], *texts)
    assert out == [(b"Location", b"http://elsewhere/app/a")]
    case_sensitive = ("~^http://origin\\.INTERNAL/(.*)", "/$1", "off", "off")
    out = rewritten([(b"Location", b"http://origin.internal/a")], *case_sensitive)
    assert out == [(b"Location", b"http://origin.internal/a")]


def test_cookie_domain_and_path() -> None:
    texts = ("off", "off", "origin.internal www.test", "/app/ /")
    out = rewritten(
        [
            (b"Set-Cookie", b"a=1; Domain=.Origin.Internal; Path=/app/x; HttpOnly"),
            (b"set-cookie", b"b=2;domain=origin.internal;path=/other"),
            (b"Set-Cookie", b"c=3; Domain=sub.origin.internal; Path=/app"),
            (b"Set-Cookie", b"path=/app/; domain=origin.internal"),  # the name=value pair stays
        ],
        *texts,
    )
    assert out == [
        (b"Set-Cookie", b"a=1; Domain=.www.test; Path=/x; HttpOnly"),
        (b"set-cookie", b"b=2;domain=www.test;path=/other"),
        (b"Set-Cookie", b"c=3; Domain=sub.origin.internal; Path=/app"),
        (b"Set-Cookie", b"path=/app/; domain=www.test"),
    ]


def test_everything_off_is_no_rewrite_at_all() -> None:
    assert response_rewrite("off", "off", "off", "off") == (None, [])
    assert response_rewrite("default", "/x", "off", "off") == (None, [])
    assert response_rewrite("http://a/", "off", "off", "off") == (None, [])
