"""auth-cache-*: which answers are kept for how long, the key, and the store's bounds."""

from __future__ import annotations

import base64
from email.utils import formatdate

import pytest

from ingressd.policy.auth_cache import (
    DEFAULT_DURATIONS,
    MAX_KEY,
    Answer,
    AuthCache,
    cache_key,
    lifetime,
    parse_durations,
    render_key,
    valid_for,
)
from ingressd.policy.ext_auth import parse_key_template


@pytest.mark.parametrize(
    ("status", "seconds"), [(200, 300.0), (202, 300.0), (401, 300.0), (403, 0.0), (500, 0.0)]
)
def test_the_default_durations_are_ingress_nginx_s(status: int, seconds: float) -> None:
    assert valid_for(DEFAULT_DURATIONS, status) == seconds


def test_the_first_line_naming_a_status_wins_and_any_matches_all() -> None:
    durations = parse_durations("200 1m, 200 401 5m, any 10s")
    assert [valid_for(durations, s) for s in (200, 401, 503)] == [60.0, 300.0, 10.0]


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ((), 300.0),
        ((("Set-Cookie", "a=1"),), 0.0),
        ((("Vary", "Cookie"),), 0.0),
        ((("Cache-Control", "no-store"),), 0.0),
        ((("Cache-Control", "private, max-age=60"),), 0.0),
        ((("Cache-Control", "no-cache"),), 0.0),
        ((("Cache-Control", "max-age=7"),), 7.0),
        ((("Cache-Control", "max-age=0"),), 0.0),
        ((("Cache-Control", "max-age=x"),), 0.0),
        ((("X-Accel-Expires", "12"), ("Cache-Control", "max-age=7")), 12.0),
        ((("X-Accel-Expires", "0"),), 0.0),
        ((("Expires", "Thu, 01 Jan 1970 00:00:00 GMT"),), 0.0),
        ((("Expires", "garbage"),), 0.0),
    ],
)
def test_lifetime_follows_nginx_s_cache(
    headers: tuple[tuple[str, str], ...], seconds: float
) -> None:
    assert lifetime(200, headers, DEFAULT_DURATIONS, 1000.0) == seconds


def test_an_expires_date_sets_the_lifetime() -> None:
    import time

    now = time.time()
    future = formatdate(now + 100, usegmt=True)
    assert 90 < lifetime(200, (("Expires", future),), DEFAULT_DURATIONS, now) <= 101


def test_statuses_outside_the_durations_are_not_cached() -> None:
    assert lifetime(403, (), DEFAULT_DURATIONS, 0.0) == 0.0
    assert lifetime(500, (("Cache-Control", "max-age=60"),), DEFAULT_DURATIONS, 0.0) == 60.0


def test_render_key_variables() -> None:
    template = parse_key_template("$remote_user|$http_x_token|$cookie_sid|$arg_a|$host")
    headers = [
        (b"Authorization", b"Basic " + base64.b64encode(b"alice:pw")),
        (b"X-Token", b"t1"),
        (b"X-Token", b"t2"),
        (b"Cookie", b"x=1; sid=abc"),
    ]
    values = {"host": "shop.example"}
    assert render_key(template, values, headers, "b=2&A=3") == "alice|t1, t2|abc|3|shop.example"
    assert render_key(template, values, [], "") == "||||shop.example"
    # Not Basic, or not base64: no user.
    bearer = [(b"Authorization", b"Bearer alice")]
    assert render_key(parse_key_template("$remote_user"), {}, bearer, "") == ""


def test_keys_are_digests_by_scope_and_bounded() -> None:
    a = cache_key("a.test Prefix /", "token")
    assert a is not None and len(a) == 32
    assert a != cache_key("b.test Prefix /", "token")
    assert a != cache_key("a.test Prefix /", "token2")
    # No way to make two scopes and keys meet by moving text between them.
    assert cache_key("a", "bc") != cache_key("ab", "c")
    assert cache_key("s", "x" * MAX_KEY) is not None
    assert cache_key("s", "x" * (MAX_KEY + 1)) is None


def test_the_store_expires_and_forgets_the_least_recently_used() -> None:
    cache = AuthCache(max_entries=2)
    ok, no = Answer(200, ()), Answer(401, (("WWW-Authenticate", "Basic"),))
    cache.put(b"a", ok, 10.0)
    cache.put(b"b", no, 10.0)
    assert cache.get(b"a", 5.0) == ok  # a is now the most recently used
    cache.put(b"c", ok, 10.0)
    assert cache.get(b"b", 5.0) is None and cache.get(b"c", 5.0) == ok
    assert cache.get(b"a", 10.0) is None  # expired
    assert len(cache) == 1


def test_the_store_is_bounded_in_bytes() -> None:
    cache = AuthCache(max_entries=1000, max_bytes=10_000)
    big = Answer(200, (("X-User", "u" * 1000),))
    for i in range(50):
        cache.put(str(i).encode(), big, 100.0)
    assert cache.bytes <= 10_000 and 0 < len(cache) < 50
    # An answer too large for an entry is not kept at all.
    cache.put(b"huge", Answer(200, (("X-User", "u" * 20_000),)), 100.0)
    assert cache.get(b"huge", 0.0) is None
    # Replacing an entry does not count it twice.
    before = cache.bytes
    cache.put(b"49", big, 200.0)
    assert cache.bytes == before
