"""Absolute-form request targets (proxy/http.py parse_target): absent parts are
None, as httptools gives them, on either build (compiled code checks declared
types, and httptools' stubs declare every part present)."""

from __future__ import annotations

import httptools
import pytest

from ingressd.proxy.http import Target, parse_target


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (b"http://a.example/x", Target(b"a.example", None, b"/x", None)),
        (b"http://a.example", Target(b"a.example", None, None, None)),
        (b"http://a.example:8080/x?q=1", Target(b"a.example", 8080, b"/x", b"q=1")),
        (b"https://[::1]:443/", Target(b"::1", 443, b"/", None)),
    ],
)
def test_absent_parts_are_none(url: bytes, expected: Target) -> None:
    assert parse_target(url) == expected


def test_not_a_url_raises_as_httptools_does() -> None:
    with pytest.raises(httptools.HttpParserInvalidURLError):
        parse_target(b"http://")


def test_replace_named_drops_every_line_of_that_name_whatever_its_case() -> None:
    from ingressd.proxy.http import replace_named

    upstream = [
        (b"Content-Type", b"text/plain"),
        (b"strict-transport-security", b"max-age=1"),
        (b"STRICT-TRANSPORT-SECURITY", b"max-age=2"),
        (b"X-Strict-Transport-Securit", b"kept"),
    ]
    out = replace_named(
        upstream, b"strict-transport-security", b"Strict-Transport-Security", b"max-age=9"
    )
    assert out == [
        (b"Content-Type", b"text/plain"),
        (b"X-Strict-Transport-Securit", b"kept"),
        (b"Strict-Transport-Security", b"max-age=9"),
    ]
    assert len(upstream) == 4  # the upstream's list is left as it was
