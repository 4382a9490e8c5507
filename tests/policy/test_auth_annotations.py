"""satisfy, auth-cache-*, auth-keepalive*, enable-global-auth, affinity-canary-behavior
and the global-auth-* ConfigMap keys: parser tables of valid and invalid values."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from ingressd.model.policy import DEFAULT_POLICY, ExternalAuth
from ingressd.policy.annotations import classify, parse_policy
from ingressd.policy.configmap import read_configmap
from ingressd.policy.ext_auth import parse_url_template

N = "nginx.ingress.kubernetes.io/"
URL = "http://auth.example/check"


def parsed(**values: str) -> tuple[Any, list[str]]:
    return parse_policy({N + k.replace("_", "-"): v for k, v in values.items()})


def status(name: str, value: str) -> str:
    (verdict,) = classify({N + name: value})
    return verdict.status


@pytest.mark.parametrize(
    ("value", "any_", "valid"),
    [
        ("any", True, True),
        (" any ", True, True),
        ("all", False, True),
        ("ANY", False, False),  # ingress-nginx's validator is case-sensitive
        ("some", False, False),
        ("", False, False),
    ],
)
def test_satisfy(value: str, any_: bool, valid: bool) -> None:
    policy, messages = parsed(satisfy=value, whitelist_source_range="10.0.0.0/8")
    assert policy.satisfy_any is any_
    assert (status("satisfy", value) == "supported") is valid
    # An invalid value is reported and "all" (the stricter) applies; never a denial.
    assert policy.fail_closed is None
    assert bool(messages) is not valid


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("$remote_user$http_authorization", ("", "remote_user", "", "http_authorization", "")),
        ("${host}:$cookie_session", ("", "host", ":", "cookie_session", "")),
        ("fixed", ("fixed",)),
        ("$arg_token-$request_uri", ("", "arg_token", "-", "request_uri", "")),
    ],
)
def test_auth_cache_key(value: str, parts: tuple[str, ...]) -> None:
    policy, messages = parsed(auth_url=URL, auth_cache_key=value)
    assert messages == []
    auth = policy.external_auth
    assert auth.cache_key.parts == parts
    assert auth.cache_durations == ((frozenset({200, 202, 401}), 300.0),)  # the default


@pytest.mark.parametrize("value", ["$nonsense", "", "x" * 2000, "a\nb"])
def test_an_invalid_cache_key_caches_nothing_and_denies_nothing(value: str) -> None:
    policy, messages = parsed(auth_url=URL, auth_cache_key=value)
    assert policy.external_auth.cache_key is None and policy.fail_closed is None
    assert any("auth-cache-key" in m and "invalid" in m for m in messages)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ((frozenset({200, 202, 401}), 300.0),)),
        ("200 5m", ((frozenset({200}), 300.0),)),
        ("200 202 5m, 401 30s", ((frozenset({200, 202}), 300.0), (frozenset({401}), 30.0))),
        ("any 1h 30m", ((frozenset(), 5400.0),)),
        ("10s", ((frozenset({200, 301, 302}), 10.0),)),  # proxy_cache_valid's default codes
        ("200 500ms", ((frozenset({200}), 0.5),)),
        ("200 1d, 403 1w", ((frozenset({200}), 86400.0), (frozenset({403}), 604800.0))),
        ("200 1M", ((frozenset({200}), 30 * 86400.0),)),
    ],
)
def test_auth_cache_duration(value: str, expected: tuple[Any, ...]) -> None:
    policy, messages = parsed(auth_url=URL, auth_cache_key="$host", auth_cache_duration=value)
    assert messages == [] and policy.fail_closed is None
    assert policy.external_auth.cache_durations == expected


@pytest.mark.parametrize("value", ["5m 200", "200", "200 5x", "200 five", "999 5m", "any"])
def test_an_invalid_cache_duration_denies_as_ingress_nginx(value: str) -> None:
    # authreq/main.go: ParseStringToCacheDurations fails -> LocationDenied (503).
    policy, messages = parsed(auth_url=URL, auth_cache_key="$host", auth_cache_duration=value)
    assert policy.fail_closed == (503, "invalid auth-cache-duration annotation")
    assert any("503" in m for m in messages)


def test_cache_annotations_need_auth_url_and_a_key() -> None:
    _, messages = parsed(auth_cache_key="$host")
    assert any("no effect without auth-url" in m for m in messages)
    policy, messages = parsed(auth_url=URL, auth_cache_duration="200 1m")
    assert policy.external_auth.cache_key is None
    assert any("auth-cache-duration: no effect without auth-cache-key" in m for m in messages)


@pytest.mark.parametrize(
    ("annotations", "expected", "message"),
    [
        ({}, (0, 1000, 60.0, False), None),
        (
            {
                "auth_keepalive": "5",
                "auth_keepalive_requests": "500",
                "auth_keepalive_timeout": "50",
                "auth_keepalive_share_vars": "true",
            },
            (5, 500, 50.0, True),
            None,
        ),
        ({"auth_keepalive": "-3"}, (0, 1000, 60.0, False), None),  # negative: 0
        (
            {"auth_keepalive": "5", "auth_keepalive_requests": "0"},
            (0, 1, 60.0, False),
            "auth-keepalive-requests is not above 0",
        ),
        (
            {"auth_keepalive": "5", "auth_keepalive_timeout": "-1"},
            (0, 1000, 1.0, False),
            "auth-keepalive-timeout is not above 0",
        ),
    ],
)
def test_auth_keepalive(
    annotations: dict[str, str], expected: tuple[Any, ...], message: str | None
) -> None:
    policy, messages = parsed(auth_url=URL, **annotations)
    auth = policy.external_auth
    got = (auth.keepalive, auth.keepalive_requests, auth.keepalive_timeout)
    assert (*got, auth.keepalive_share_vars) == expected
    if message is None:
        assert messages == []
    else:
        assert any(message in m for m in messages)


def test_keepalive_is_off_for_a_url_with_a_variable_host() -> None:
    policy, messages = parsed(auth_url="http://$host/check", auth_keepalive="4")
    assert policy.external_auth.keepalive == 0
    assert any("variable in its host:port" in m for m in messages)
    # A variable after the host does not matter.
    policy, _ = parsed(auth_url="http://auth/check?u=$request_uri", auth_keepalive="4")
    assert policy.external_auth.keepalive == 4


@pytest.mark.parametrize(
    "annotations",
    [
        {"auth_keepalive": "many"},
        {"auth_keepalive": "1000000"},
        {"auth_keepalive_requests": "1.5"},
        {"auth_keepalive_timeout": "1m"},
        {"auth_keepalive_share_vars": "yes"},
    ],
)
def test_invalid_keepalive_values_are_reported_and_the_defaults_apply(
    annotations: dict[str, str],
) -> None:
    policy, messages = parsed(auth_url=URL, **annotations)
    auth = policy.external_auth
    assert (auth.keepalive, auth.keepalive_requests, auth.keepalive_timeout) == (0, 1000, 60.0)
    assert policy.fail_closed is None and any("is invalid" in m for m in messages)


GLOBAL = ExternalAuth(parse_url_template("http://global/"))
BASE = replace(DEFAULT_POLICY, external_auth=GLOBAL)


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({}, "global"),
        ({N + "enable-global-auth": "true"}, "global"),
        ({N + "enable-global-auth": "false"}, None),
        ({N + "enable-global-auth": "no"}, "global"),  # invalid: the default (true)
        ({N + "auth-url": URL}, "own"),
        ({N + "auth-url": URL, N + "enable-global-auth": "false"}, "own"),
    ],
)
def test_enable_global_auth(annotations: dict[str, str], expected: str | None) -> None:
    policy, _ = parse_policy(annotations, BASE)
    auth = policy.external_auth
    found = None if auth is None else ("global" if auth is GLOBAL else "own")
    assert found == expected


@pytest.mark.parametrize(
    ("value", "sticky", "valid"),
    [("sticky", True, True), ("legacy", False, True), ("Legacy", False, True), ("x", True, False)],
)
def test_affinity_canary_behavior(value: str, sticky: bool, valid: bool) -> None:
    policy, messages = parsed(canary="true", affinity_canary_behavior=value)
    assert policy.canary.sticky is sticky
    assert (messages == []) is valid
    _, messages = parsed(affinity_canary_behavior="legacy")
    assert messages == ['affinity-canary-behavior: no effect without canary: "true"']


def test_the_global_auth_keys() -> None:
    reading = read_configmap(
        {
            "global-auth-url": "https://auth.example/check?h=$host",
            "global-auth-method": "POST",
            "global-auth-signin": "https://login.example/",
            "global-auth-signin-redirect-param": "back",
            "global-auth-response-headers": "X-User, X-Groups",
            "global-auth-request-redirect": "https://$host/after",
            "global-auth-cache-key": "$http_authorization",
            "global-auth-cache-duration": "200 1m",
            "global-auth-always-set-cookie": "true",
            "no-auth-locations": "/public, /.well-known/acme-challenge",
        }
    )
    assert reading.messages == ()
    defaults = dict(reading.config.route_defaults)
    auth = defaults["external_auth"]
    assert auth.url.text == "https://auth.example/check?h=$host"
    assert (auth.method, auth.signin.text, auth.signin_param) == (
        "POST",
        "https://login.example/",
        "back",
    )
    assert auth.response_headers == ("X-User", "X-Groups")
    assert auth.request_redirect.text == "https://$host/after"
    assert auth.cache_key.parts == ("", "http_authorization", "")
    assert auth.cache_durations == ((frozenset({200}), 60.0),)
    assert auth.always_set_cookie is True and auth.keepalive == 0
    assert reading.config.no_auth_locations == ("/public", "/.well-known/acme-challenge")
    # Defaults: no global auth; ACME challenges are never authenticated.
    empty = read_configmap({})
    assert "external_auth" not in dict(empty.config.route_defaults)
    assert empty.config.no_auth_locations == ("/.well-known/acme-challenge",)
    assert read_configmap({"no-auth-locations": ""}).config.no_auth_locations == ()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("global-auth-url", "ftp://auth/"),
        ("global-auth-method", "FETCH"),
        ("global-auth-signin", "not a url"),
        ("global-auth-response-headers", "X User"),
        ("global-auth-cache-duration", "5m 200"),
        ("global-auth-always-set-cookie", "sometimes"),
    ],
)
def test_an_invalid_global_auth_key_fails_closed_when_global_auth_is_on(
    key: str, value: str
) -> None:
    data = {"global-auth-url": "http://auth/", key: value}
    reading = read_configmap(data)
    assert reading.config.fail_closed == (503, f"invalid {key} in the controller ConfigMap")


def test_no_auth_locations_is_bounded() -> None:
    reading = read_configmap({"no-auth-locations": "relative"})
    assert reading.config.no_auth_locations == ("/.well-known/acme-challenge",)
    assert "no-auth-locations" in reading.messages[0]
