"""The ConfigMap's header and redirect keys (server-tokens, allow-backend-server-header,
generate-request-id, proxy-add-original-uri-header, http-redirect-code, use-http2,
retry-non-idempotent): each valid, invalid and by default, and what it becomes."""

from __future__ import annotations

import pytest

from ingressd.control.controller import settings_for
from ingressd.model.globals import DEFAULT_TLS
from ingressd.model.policy import DEFAULT_POLICY
from ingressd.policy.configmap import IGNORED, SUPPORTED, read_configmap
from ingressd.proxy.settings import ProxySettings
from ingressd.routing.build import _base_policy, _retrying_all

KEYS = (
    "server-tokens",
    "allow-backend-server-header",
    "generate-request-id",
    "proxy-add-original-uri-header",
    "http-redirect-code",
    "use-http2",
    "retry-non-idempotent",
)


def settings(data: dict[str, str]) -> ProxySettings:
    return settings_for(ProxySettings(), read_configmap(data).config)


def test_every_key_is_supported() -> None:
    for key in KEYS:
        assert key in SUPPORTED and key not in IGNORED


def test_defaults_are_ingress_nginx_s() -> None:
    got = settings({})
    assert not got.server_tokens and not got.backend_server_header
    assert got.generate_request_id and not got.original_uri_header
    config = read_configmap({}).config
    assert config.http_redirect_code == 308 and config.tls.http2
    assert not config.retry_non_idempotent


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("server-tokens", "true", "supported"),
        ("server-tokens", "on", "invalid"),
        ("allow-backend-server-header", "false", "supported"),
        ("allow-backend-server-header", "yes", "invalid"),
        ("generate-request-id", "false", "supported"),
        ("generate-request-id", "", "invalid"),
        ("proxy-add-original-uri-header", "true", "supported"),
        ("proxy-add-original-uri-header", "2", "invalid"),
        ("http-redirect-code", "301", "supported"),
        ("http-redirect-code", "302", "supported"),
        ("http-redirect-code", "307", "supported"),
        ("http-redirect-code", "308", "supported"),
        ("http-redirect-code", "303", "invalid"),
        ("http-redirect-code", "200", "invalid"),
        ("http-redirect-code", "3o1", "invalid"),
        ("use-http2", "false", "supported"),
        ("use-http2", "h2", "invalid"),
        ("retry-non-idempotent", "true", "supported"),
        ("retry-non-idempotent", "sometimes", "invalid"),
    ],
)
def test_values_are_checked(key: str, value: str, expected: str) -> None:
    (verdict,) = read_configmap({key: value}).verdicts
    assert verdict.status == expected
    if expected == "invalid":
        assert "applies" in verdict.reason  # reported, its default used


def test_header_keys_become_proxy_settings() -> None:
    got = settings(
        {
            "server-tokens": "true",
            "allow-backend-server-header": "true",
            "generate-request-id": "false",
            "proxy-add-original-uri-header": "true",
        }
    )
    assert got.server_tokens and got.backend_server_header
    assert not got.generate_request_id and got.original_uri_header


def test_redirect_code_and_http2_become_table_settings() -> None:
    config = read_configmap({"http-redirect-code": "301", "use-http2": "false"}).config
    assert config.http_redirect_code == 301
    assert config.tls == DEFAULT_TLS.__class__(http2=False)
    assert read_configmap({"http-redirect-code": "303"}).config.http_redirect_code == 308


def test_retry_non_idempotent_reaches_every_route() -> None:
    config = read_configmap({"retry-non-idempotent": "true"}).config
    assert config.retry_non_idempotent
    base = _base_policy(config)
    assert base.next_upstream.non_idempotent
    # an annotated route's own conditions keep it too (template.go buildNextUpstream)
    assert _retrying_all(DEFAULT_POLICY, True).next_upstream.non_idempotent
    assert _retrying_all(DEFAULT_POLICY, False) is DEFAULT_POLICY
    assert _base_policy(read_configmap({}).config) is DEFAULT_POLICY


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1h", 3600.0), ("30m", 1800.0), ("90s", 90.0), ("1d", 86400.0), ("45", 45.0)],
)
def test_upstream_keepalive_time_is_an_nginx_time(value: str, expected: float) -> None:
    assert settings({"upstream-keepalive-time": value}).upstream_keepalive_time == expected


@pytest.mark.parametrize("value", ["0s", "8d", "1w", "-1h", "1.5h", ""])
def test_upstream_keepalive_time_bounds(value: str) -> None:
    reading = read_configmap({"upstream-keepalive-time": value})
    assert [v.status for v in reading.verdicts] == ["invalid"]
    assert settings({"upstream-keepalive-time": value}).upstream_keepalive_time == 3600.0
