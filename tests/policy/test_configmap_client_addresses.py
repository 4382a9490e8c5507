"""The ConfigMap's client-address keys (use-forwarded-headers, forwarded-for-header,
compute-full-forwarded-for, proxy-real-ip-cidr, enable-real-ip, use-proxy-protocol,
proxy-protocol-header-timeout): each valid, invalid and by default."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from ingressd.control.controller import settings_for
from ingressd.policy.configmap import IGNORED, SUPPORTED, read_configmap
from ingressd.proxy.settings import ProxySettings

KEYS = (
    "use-forwarded-headers",
    "forwarded-for-header",
    "compute-full-forwarded-for",
    "proxy-real-ip-cidr",
    "enable-real-ip",
    "use-proxy-protocol",
    "proxy-protocol-header-timeout",
)
EVERY_V4 = (ipaddress.ip_network("0.0.0.0/0"),)


def settings(data: dict[str, str], explicit: dict[str, str] | None = None) -> ProxySettings:
    return settings_for(ProxySettings(), read_configmap(data, explicit).config)


def status(key: str, value: str) -> str:
    (verdict,) = read_configmap({key: value}).verdicts
    return verdict.status


def test_every_client_address_key_is_supported() -> None:
    for key in KEYS:
        assert key in SUPPORTED and key not in IGNORED


def test_by_default_no_peer_is_believed() -> None:
    got = settings({})
    assert got == ProxySettings()
    assert got.trusted_proxies == () and not got.forwarded_headers
    assert got.real_ip_header == b"x-forwarded-for" and got.proxy_protocol_timeout == 5.0
    assert read_configmap({}).config.use_proxy_protocol is None


@pytest.mark.parametrize(
    ("data", "trusted", "forwarded", "full"),
    [
        # use-forwarded-headers: every IPv4 peer (proxy-real-ip-cidr's default), the
        # client alone in X-Forwarded-For, X-Forwarded-* passed on
        ({"use-forwarded-headers": "true"}, EVERY_V4, True, False),
        (
            {"use-forwarded-headers": "true", "compute-full-forwarded-for": "true"},
            EVERY_V4,
            True,
            True,
        ),
        (
            {"use-forwarded-headers": "true", "proxy-real-ip-cidr": "10.0.0.0/8, 192.168.0.0/16"},
            (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.168.0.0/16")),
            True,
            False,
        ),
        # enable-real-ip: the address only; compute-full-forwarded-for needs
        # use-forwarded-headers (nginx.tmpl: "if and UseForwardedHeaders ComputeFull...")
        (
            {"enable-real-ip": "true", "compute-full-forwarded-for": "true"},
            EVERY_V4,
            False,
            False,
        ),
        # neither: the other keys change nothing
        (
            {"proxy-real-ip-cidr": "10.0.0.0/8", "compute-full-forwarded-for": "true"},
            (),
            False,
            True,
        ),
        ({"use-forwarded-headers": "false"}, (), False, True),
    ],
)
def test_keys_become_who_is_believed_and_how(
    data: dict[str, str], trusted: tuple[Any, ...], forwarded: bool, full: bool
) -> None:
    got = settings(data)
    assert got.trusted_proxies == trusted
    assert got.forwarded_headers is forwarded
    assert got.full_forwarded_for is full


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("use-forwarded-headers", "true", "supported"),
        ("use-forwarded-headers", "yes", "invalid"),
        ("enable-real-ip", "1", "supported"),
        ("enable-real-ip", "on", "invalid"),
        ("compute-full-forwarded-for", "false", "supported"),
        ("compute-full-forwarded-for", "", "invalid"),
        ("forwarded-for-header", "CF-Connecting-IP", "supported"),
        ("forwarded-for-header", "X Forwarded", "invalid"),
        ("forwarded-for-header", "", "invalid"),
        ("forwarded-for-header", "a" * 129, "invalid"),
        ("proxy-real-ip-cidr", "10.0.0.0/8,::1/128", "supported"),
        ("proxy-real-ip-cidr", "10.0.0.0/33", "invalid"),
        ("proxy-real-ip-cidr", "", "invalid"),
        ("use-proxy-protocol", "true", "supported"),
        ("use-proxy-protocol", "maybe", "invalid"),
        ("proxy-protocol-header-timeout", "5s", "supported"),
        ("proxy-protocol-header-timeout", "250ms", "supported"),
        ("proxy-protocol-header-timeout", "2m", "supported"),
        ("proxy-protocol-header-timeout", "0s", "invalid"),
        ("proxy-protocol-header-timeout", "6m", "invalid"),
        ("proxy-protocol-header-timeout", "5h", "invalid"),
        ("proxy-protocol-header-timeout", "-1s", "invalid"),
    ],
)
def test_values_are_checked(key: str, value: str, expected: str) -> None:
    assert status(key, value) == expected


def test_an_invalid_value_is_reported_and_its_default_applies() -> None:
    reading = read_configmap({"use-forwarded-headers": "true", "proxy-real-ip-cidr": "10.0.0.0/33"})
    assert any("proxy-real-ip-cidr" in m and "0.0.0.0/0" in m for m in reading.messages)
    assert settings_for(ProxySettings(), reading.config).trusted_proxies == EVERY_V4
    reading = read_configmap({"proxy-protocol-header-timeout": "forever"})
    assert any("'5s' applies" in m for m in reading.messages)
    assert settings_for(ProxySettings(), reading.config).proxy_protocol_timeout == 5.0


def test_the_header_and_the_timeout_become_settings() -> None:
    got = settings({"forwarded-for-header": "CF-Connecting-IP"})
    assert got.real_ip_header == b"cf-connecting-ip"
    assert settings({"proxy-protocol-header-timeout": "250ms"}).proxy_protocol_timeout == 0.25
    assert settings({"proxy-protocol-header-timeout": "3"}).proxy_protocol_timeout == 3.0


def test_use_proxy_protocol_is_read_for_the_listeners() -> None:
    assert read_configmap({"use-proxy-protocol": "true"}).config.use_proxy_protocol is True
    assert read_configmap({"use-proxy-protocol": "false"}).config.use_proxy_protocol is False


def test_explicit_flags_win() -> None:
    explicit = {
        "use-forwarded-headers": "--trusted-proxies",
        "enable-real-ip": "--trusted-proxies",
        "proxy-real-ip-cidr": "--trusted-proxies",
        "compute-full-forwarded-for": "--trusted-proxies",
        "use-proxy-protocol": "--use-proxy-protocol",
    }
    data = {
        "use-forwarded-headers": "true",
        "proxy-real-ip-cidr": "10.0.0.0/8",
        "compute-full-forwarded-for": "true",
        "use-proxy-protocol": "true",
        "forwarded-for-header": "X-Client",
    }
    reading = read_configmap(data, explicit)
    by_key = {v.key: v.status for v in reading.verdicts}
    assert by_key == {
        "use-forwarded-headers": "overridden",
        "proxy-real-ip-cidr": "overridden",
        "compute-full-forwarded-for": "overridden",
        "use-proxy-protocol": "overridden",
        "forwarded-for-header": "supported",  # no flag says it: it applies to the flag's peers
    }
    base = ProxySettings(trusted_proxies=(ipaddress.ip_network("192.0.2.0/24"),))
    got = settings_for(base, reading.config)
    assert got.trusted_proxies == base.trusted_proxies and got.full_forwarded_for
    assert got.real_ip_header == b"x-client"
    assert reading.config.use_proxy_protocol is None


def test_check_says_use_proxy_protocol_is_taken_at_start() -> None:
    (verdict,) = read_configmap({"use-proxy-protocol": "true"}).verdicts
    assert verdict.status == "supported" and "needs a restart" in verdict.reason


def test_behind_a_proxy_protocol_header_the_configmap_believes_no_header() -> None:
    """ingress-nginx's real_ip_header proxy_protocol: the PROXY address is the client;
    --trusted-proxies keeps its own rule (the PROXY address may be a trusted proxy)."""
    from ingressd.proxy.peer import trusted_for

    keyed = settings({"use-forwarded-headers": "true"})
    assert keyed.proxy_protocol_is_client
    assert trusted_for(keyed, "198.51.100.20") == ()
    assert trusted_for(keyed, None) == EVERY_V4
    flag = ProxySettings(trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),))
    assert trusted_for(flag, "10.1.1.1") == flag.trusted_proxies
