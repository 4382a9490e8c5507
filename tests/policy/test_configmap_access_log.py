"""The ConfigMap's access-log keys (disable-access-log, enable-access-log-for-default-backend,
log-format-upstream, log-format-escape-json, log-format-escape-none): each valid,
invalid and by default, and the settings they become."""

from __future__ import annotations

import pytest

from ingressd.control.controller import settings_for
from ingressd.model.log_format import LogFormat
from ingressd.policy.annotations import parse_policy
from ingressd.policy.configmap import IGNORED, SUPPORTED, read_configmap
from ingressd.proxy.settings import ProxySettings

KEYS = (
    "disable-access-log",
    "enable-access-log-for-default-backend",
    "log-format-upstream",
    "log-format-escape-json",
    "log-format-escape-none",
)
# ingress-nginx's default log-format-upstream (config.go logFormatUpstream): it parses.
INGRESS_NGINX_DEFAULT = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" $request_length $request_time [$proxy_upstream_name] '
    "[$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length "
    "$upstream_response_time $upstream_status $req_id"
)


def settings(data: dict[str, str]) -> ProxySettings:
    return settings_for(ProxySettings(), read_configmap(data).config)


def test_every_key_is_supported() -> None:
    for key in KEYS:
        assert key in SUPPORTED and key not in IGNORED


def test_defaults() -> None:
    got = settings({})
    assert not got.access_log_off and not got.log_default_backend and got.log_format is None


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("disable-access-log", "true", "supported"),
        ("disable-access-log", "off", "invalid"),
        ("enable-access-log-for-default-backend", "true", "supported"),
        ("enable-access-log-for-default-backend", "yes", "invalid"),
        ("log-format-upstream", INGRESS_NGINX_DEFAULT, "supported"),
        ("log-format-upstream", '{"ip": "$remote_addr", "ua": "$http_user_agent"}', "supported"),
        ("log-format-upstream", "$remote_addr $geoip2_city", "invalid"),
        ("log-format-upstream", "$remote_addr ${host", "invalid"),
        ("log-format-upstream", "", "invalid"),
        ("log-format-escape-json", "true", "supported"),
        ("log-format-escape-json", "json", "invalid"),
        ("log-format-escape-none", "true", "supported"),
        ("log-format-escape-none", "none", "invalid"),
    ],
)
def test_values_are_checked(key: str, value: str, expected: str) -> None:
    (verdict,) = read_configmap({key: value}).verdicts
    assert verdict.status == expected, verdict.reason


def test_an_unknown_variable_is_reported_and_the_default_line_used() -> None:
    reading = read_configmap({"log-format-upstream": "$remote_addr $geoip2_city"})
    assert any("$geoip2_city is not a variable ingressd logs" in m for m in reading.messages)
    assert settings_for(ProxySettings(), reading.config).log_format is None


@pytest.mark.parametrize(
    ("data", "escape"),
    [
        ({}, "default"),
        ({"log-format-escape-json": "true"}, "json"),
        ({"log-format-escape-none": "true"}, "none"),
        ({"log-format-escape-json": "true", "log-format-escape-none": "true"}, "json"),
    ],
)
def test_the_escape_keys_choose_the_format_s_escaping(data: dict[str, str], escape: str) -> None:
    got = settings({"log-format-upstream": "$remote_addr $status", **data}).log_format
    assert got == LogFormat(("", "remote_addr", " ", "status", ""), escape)


def test_switches_become_settings() -> None:
    got = settings({"disable-access-log": "true", "enable-access-log-for-default-backend": "1"})
    assert got.access_log_off and got.log_default_backend


def test_the_enable_access_log_annotation() -> None:
    a = "nginx.ingress.kubernetes.io/enable-access-log"
    policy, messages = parse_policy({a: "false"})
    assert not policy.access_log and not messages
    assert parse_policy({a: "true"})[0].access_log
    policy, messages = parse_policy({a: "nope"})
    assert policy.access_log and messages
