"""Parser tables: proxy-request-buffering, client-body-buffer-size, proxy-buffering,
proxy-buffers-number, proxy-busy-buffers-size, proxy-max-temp-file-size and the
mirror-* annotations, as annotations and as controller ConfigMap keys."""

from __future__ import annotations

from typing import Any

import pytest

from ingressd.model.policy import DEFAULT_POLICY, Mirror
from ingressd.policy.annotations import classify, parse_policy
from ingressd.policy.configmap import read_configmap

A = "nginx.ingress.kubernetes.io/"


def verdict(short: str, value: str) -> str:
    (v,) = classify({A + short: value})
    return v.status


@pytest.mark.parametrize(
    ("short", "value", "field", "expected"),
    [
        ("proxy-request-buffering", "on", "request_buffering", True),
        ("proxy-request-buffering", " off ", "request_buffering", False),
        ("client-body-buffer-size", "8k", "client_body_buffer_size", 8192),
        ("client-body-buffer-size", "1M", "client_body_buffer_size", 1024 * 1024),
        ("client-body-buffer-size", "16m", "client_body_buffer_size", 16 * 1024 * 1024),
        ("client-body-buffer-size", "100", "client_body_buffer_size", 100),
        ("proxy-buffering", "on", "proxy_buffering", True),
        ("proxy-buffering", "off", "proxy_buffering", False),
        ("proxy-buffers-number", "8", "proxy_buffers_number", 8),
        ("proxy-buffers-number", "64", "proxy_buffers_number", 64),
        ("proxy-busy-buffers-size", "8k", "proxy_busy_buffers_size", 8192),
    ],
)
def test_valid_values(short: str, value: str, field: str, expected: Any) -> None:
    policy, messages = parse_policy({A + short: value})
    assert messages == []
    assert getattr(policy, field) == expected
    assert verdict(short, value) == "supported"


@pytest.mark.parametrize(
    ("short", "value"),
    [
        ("proxy-request-buffering", "true"),
        ("proxy-request-buffering", "ON"),  # ingress-nginx: case-sensitive options
        ("proxy-request-buffering", ""),
        ("client-body-buffer-size", "0"),
        ("client-body-buffer-size", "17m"),
        ("client-body-buffer-size", "1g"),
        ("client-body-buffer-size", "8kb"),
        ("client-body-buffer-size", "-1"),
        ("client-body-buffer-size", "9" * 40),
        ("proxy-buffering", "yes"),
        ("proxy-buffers-number", "0"),
        ("proxy-buffers-number", "65"),
        ("proxy-buffers-number", "4k"),
        ("proxy-buffers-number", "٣"),  # a digit, but not an ASCII one
        ("proxy-busy-buffers-size", "0"),
        ("proxy-busy-buffers-size", "lots"),
        ("proxy-max-temp-file-size", "big"),
        ("mirror-request-body", "yes"),
    ],
)
def test_invalid_values_are_reported_and_not_applied(short: str, value: str) -> None:
    policy, messages = parse_policy({A + short: value})
    assert policy == DEFAULT_POLICY
    assert len(messages) == 1 and "is invalid" in messages[0], messages
    assert verdict(short, value) == "invalid"


def test_busy_buffers_are_checked_against_the_buffers_as_nginx_does() -> None:
    # nginx: at least one buffer, less than all of them but one (else it refuses
    # the configuration); reported, and nginx's default (two buffers) applies.
    for busy in ("2k", "13k"):
        policy, messages = parse_policy({A + "proxy-busy-buffers-size": busy})
        assert policy.proxy_busy_buffers_size is None
        assert "proxy-busy-buffers-size" in messages[0]
    policy, messages = parse_policy(
        {
            A + "proxy-busy-buffers-size": "24k",
            A + "proxy-buffers-number": "8",
            A + "proxy-buffer-size": "4k",
        }
    )
    assert (messages, policy.proxy_busy_buffers_size) == ([], 24 * 1024)


def test_proxy_max_temp_file_size_only_zero_is_supported() -> None:
    policy, messages = parse_policy({A + "proxy-max-temp-file-size": "0"})
    assert (policy, messages) == (DEFAULT_POLICY, [])
    assert verdict("proxy-max-temp-file-size", "0") == "supported"
    for value in ("1024m", "1g", "8k"):
        assert verdict("proxy-max-temp-file-size", value) == "unsupported"
        _, messages = parse_policy({A + "proxy-max-temp-file-size": value})
        assert "never writes upstream responses to a temporary file" in messages[0]


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        (
            {"mirror-target": "https://test.env.com$request_uri"},
            Mirror("https", "test.env.com", 443, "$request_uri", "test.env.com", True),
        ),
        (
            {
                "mirror-target": "http://10.0.0.7:8080/copy${is_args}${args}",
                "mirror-host": "copies.example:8080",
                "mirror-request-body": "off",
            },
            Mirror(
                "http", "10.0.0.7", 8080, "/copy${is_args}${args}", "copies.example:8080", False
            ),
        ),
        (
            {"mirror-target": "HTTP://m.example"},
            Mirror("http", "m.example", 80, "", "m.example", True),
        ),
        (
            {"mirror-target": " http://m.example/a/b?x=1&y=$host$scheme "},
            Mirror("http", "m.example", 80, "/a/b?x=1&y=$host$scheme", "m.example", True),
        ),
        (
            {"mirror-target": "http://127.0.0.1:9000$request_uri"},
            Mirror("http", "127.0.0.1", 9000, "$request_uri", "127.0.0.1", True),
        ),
    ],
)
def test_mirror_targets(annotations: dict[str, str], expected: Mirror) -> None:
    policy, messages = parse_policy({A + k: v for k, v in annotations.items()})
    assert messages == []
    assert policy.mirror == expected


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("ftp://m.example/x", "not an http:// or https:// URL"),
        ("file:///etc/passwd", "not an http:// or https:// URL"),
        ("gopher://m.example", "not an http:// or https:// URL"),
        ("//m.example/x", "not an http:// or https:// URL"),
        ("m.example$request_uri", "not an http:// or https:// URL"),
        ("", "empty"),
        ("http://", "has no host"),
        ("http://$host$request_uri", "variable in the host"),
        ("http://m.example/$uri", "variable $uri is not supported"),
        ("http://m.example/$http_cookie", "variable $http_cookie is not supported"),
        ("http://m.example/${args", "unclosed"),
        ("http://m.example/a b", "characters ingress-nginx does not accept"),
        ("http://m.example/x;rm", "characters ingress-nginx does not accept"),
        ("http://m.example/x\r\nHost: evil", "characters ingress-nginx does not accept"),
        ("http://m.example/%0d", "characters ingress-nginx does not accept"),
        ("http://m.example:0/", "port is not a number"),
        ("http://m.example:70000/", "port is not a number"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://m_x.example/", "not a host name"),
        ("http://[::1]/", "not a host name"),
        ("http://m.example/" + "a" * 3000, "longer than"),
        ("http://m.example/{a}", "not valid in a URL"),
    ],
)
def test_mirror_targets_refused(target: str, why: str) -> None:
    policy, messages = parse_policy({A + "mirror-target": target})
    assert policy == DEFAULT_POLICY
    assert len(messages) == 1 and why in messages[0], messages


def test_mirror_companions_need_the_target() -> None:
    policy, messages = parse_policy(
        {A + "mirror-host": "m.example", A + "mirror-request-body": "off"}
    )
    assert policy == DEFAULT_POLICY
    assert messages == [
        "mirror-host, mirror-request-body: no effect without mirror-target; nothing is mirrored"
    ]
    _, messages = parse_policy({A + "mirror-target": "http://m.example", A + "mirror-host": "a b"})
    assert "mirror-host" in messages[0] and "is invalid" in messages[0]


@pytest.mark.parametrize(
    ("data", "field", "expected"),
    [
        ({"proxy-request-buffering": "off"}, "request_buffering", False),
        ({"client-body-buffer-size": "64k"}, "client_body_buffer_size", 65536),
        ({"proxy-buffering": "on"}, "proxy_buffering", True),
        ({"proxy-buffers-number": "16"}, "proxy_buffers_number", 16),
        ({"proxy-busy-buffers-size": "16k"}, "proxy_busy_buffers_size", 16384),
        ({"proxy-busy-buffers-size": ""}, "proxy_busy_buffers_size", 0),
    ],
)
def test_configmap_keys(data: dict[str, str], field: str, expected: object) -> None:
    reading = read_configmap(data)
    assert reading.messages == ()
    assert dict(reading.config.proxy)[field] == expected
    assert [v.status for v in reading.verdicts] == ["supported"]


@pytest.mark.parametrize(
    ("data", "status"),
    [
        ({"proxy-request-buffering": "maybe"}, "invalid"),
        ({"client-body-buffer-size": "0"}, "invalid"),
        ({"proxy-buffers-number": "1000"}, "invalid"),
        ({"proxy-max-temp-file-size": "1024m"}, "unsupported"),
        ({"proxy-max-temp-file-size": "0"}, "supported"),
    ],
)
def test_configmap_key_verdicts(data: dict[str, str], status: str) -> None:
    reading = read_configmap(data)
    assert [v.status for v in reading.verdicts] == [status]
    assert dict(reading.config.proxy) == {} or status == "supported"
