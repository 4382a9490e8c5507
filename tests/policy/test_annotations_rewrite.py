"""proxy-redirect-*, proxy-cookie-*, proxy-http-version, connection-proxy-header,
use-port-in-redirects, limit-rate*, ssl-ciphers, ssl-prefer-server-ciphers,
proxy-ssl-ciphers/-protocols and the annotations refused because they cannot apply:
each parsed (valid), rejected (invalid, reported, the route served as without it)
and defaulted (absent), as parse_policy and `ingressd check` see them."""

from __future__ import annotations

from typing import Any

import pytest

from ingressd.check import AnnotationReport, _fails
from ingressd.model.policy import DEFAULT_POLICY, TextRewrite
from ingressd.policy.annotations import NOT_APPLICABLE, classify, parse_policy
from ingressd.policy.configmap import read_configmap

NGINX = "nginx.ingress.kubernetes.io/"
AES128 = "ECDHE-ECDSA-AES128-GCM-SHA256"


def policy(**annotations: str) -> tuple[Any, list[str]]:
    return parse_policy({NGINX + k.replace("_", "-"): v for k, v in annotations.items()})


def status(name: str, value: str) -> str:
    (verdict,) = classify({NGINX + name: value})
    return verdict.status


# (annotation, value, RoutePolicy field, what the field holds)
VALID = [
    ("proxy-http-version", "1.0", "proxy_http_version", "1.0"),
    ("proxy-http-version", "1.1", "proxy_http_version", "1.1"),
    ("connection-proxy-header", "keep-alive", "connection_header", b"keep-alive"),
    ("connection-proxy-header", "close, x-y", "connection_header", b"close, x-y"),
    ("use-port-in-redirects", "true", "use_port_in_redirects", True),
    ("use-port-in-redirects", "false", "use_port_in_redirects", False),
    ("limit-rate", "16", "limit_rate", 16 * 1024),
    ("limit-rate", "0", "limit_rate", 0),
    ("limit-rate-after", "1024", "limit_rate_after", 1024 * 1024),
    (
        "ssl-ciphers",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ssl_ciphers",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
    ),
    ("ssl-ciphers", "HIGH:!aNULL:!MD5", "ssl_ciphers", "HIGH:!aNULL:!MD5"),
    ("ssl-prefer-server-ciphers", "true", "ssl_prefer_server_ciphers", True),
    ("proxy-redirect-from", "off", "proxy_redirect_from", "off"),
    ("proxy-redirect-from", "http://a.internal/", "proxy_redirect_from", "http://a.internal/"),
    ("proxy-redirect-to", "https://b.test/", "proxy_redirect_to", "https://b.test/"),
    ("proxy-cookie-domain", "a.internal b.test", "proxy_cookie_domain", "a.internal b.test"),
    ("proxy-cookie-domain", "off", "proxy_cookie_domain", "off"),
    ("proxy-cookie-path", "/app/  /", "proxy_cookie_path", "/app/ /"),
]


@pytest.mark.parametrize(("name", "value", "field", "expected"), VALID)
def test_valid_values_are_applied(name: str, value: str, field: str, expected: object) -> None:
    p, messages = parse_policy({NGINX + name: value})
    assert messages == []
    assert getattr(p, field) == expected
    assert status(name, value) == "supported"


INVALID = [
    ("proxy-http-version", "2"),
    ("proxy-http-version", "HTTP/1.1"),
    ("connection-proxy-header", ""),
    ("connection-proxy-header", "keep alive"),
    ("connection-proxy-header", "a\r\nX-Evil: 1"),
    ("use-port-in-redirects", "yes"),
    ("limit-rate", "-1"),
    ("limit-rate", "1k"),
    ("limit-rate", "9" * 30),
    ("limit-rate-after", "1.5"),
    ("ssl-ciphers", "NOSUCHCIPHER"),
    ("ssl-ciphers", "HIGH;rm -rf"),
    ("ssl-ciphers", ""),
    ("proxy-redirect-from", "http://a b/"),
    ("proxy-redirect-to", "$scheme://$host/"),
    ("proxy-redirect-to", ""),
    ("proxy-cookie-domain", "a.internal"),
    ("proxy-cookie-domain", "a b c"),
    ("proxy-cookie-path", "/a $host"),
]


@pytest.mark.parametrize(("name", "value"), INVALID)
def test_invalid_values_are_reported_and_the_default_kept(name: str, value: str) -> None:
    p, messages = parse_policy({NGINX + name: value})
    assert len(messages) == 1 and "is invalid" in messages[0] and name in messages[0]
    assert p == DEFAULT_POLICY  # served as without it: nothing of it applies
    assert p.fail_closed is None
    assert status(name, value) == "invalid"


def test_defaults_are_ingress_nginx_s() -> None:
    p = DEFAULT_POLICY
    assert (p.proxy_http_version, p.connection_header, p.use_port_in_redirects) == (
        "1.1",
        None,
        False,
    )
    assert (p.limit_rate, p.limit_rate_after, p.response_rewrite) == (0, 0, None)
    assert (p.proxy_redirect_from, p.proxy_redirect_to) == ("off", "off")
    assert (p.proxy_cookie_domain, p.proxy_cookie_path) == ("off", "off")
    assert (p.ssl_ciphers, p.ssl_prefer_server_ciphers) == (None, None)


def test_proxy_redirect_needs_both_halves_as_nginx_tmpl_writes_it() -> None:
    # from set, to off (or absent): no proxy_redirect at all; "default" and "off": none.
    for kwargs in (
        {"proxy_redirect_from": "http://a.internal/"},
        {"proxy_redirect_from": "http://a.internal/", "proxy_redirect_to": "off"},
        {"proxy_redirect_from": "default", "proxy_redirect_to": "/x/"},
        {"proxy_redirect_from": "off", "proxy_redirect_to": "/x/"},
    ):
        p, messages = policy(**kwargs)
        assert messages == [] and p.response_rewrite is None, kwargs
    p, _ = policy(proxy_redirect_from="http://a.internal/", proxy_redirect_to="/x/")
    assert p.response_rewrite.redirect == TextRewrite(b"http://a.internal/", b"/x/")
    p, _ = policy(proxy_redirect_from="~*^http://(A)\\.internal/(.*)$", proxy_redirect_to="/$1/")
    rule = p.response_rewrite.redirect
    assert rule.regex is not None and rule.replacement == b"/$1/"
    # $1 without a regex to take it from
    p, messages = policy(proxy_redirect_from="http://a.internal/", proxy_redirect_to="/$1/")
    assert p.response_rewrite is None and "are invalid together" in messages[0]


def test_cookie_rules() -> None:
    p, _ = policy(proxy_cookie_domain=".A.internal b.test", proxy_cookie_path="/app/ /")
    rewrite = p.response_rewrite
    assert rewrite.cookie_domain == TextRewrite(b"a.internal", b"b.test")
    assert rewrite.cookie_path == TextRewrite(b"/app/", b"/")
    assert rewrite.redirect is None


def test_the_configmap_keys_are_the_annotations_defaults() -> None:
    reading = read_configmap(
        {
            "proxy-http-version": "1.0",
            "limit-rate": "8",
            "limit-rate-after": "4",
            "proxy-redirect-from": "http://a.internal/",
            "proxy-redirect-to": "/",
            "proxy-cookie-path": "/app/ /",
        }
    )
    assert all(v.status == "supported" for v in reading.verdicts), reading.verdicts
    base = DEFAULT_POLICY.__class__(**dict(reading.config.route_defaults))
    assert (base.proxy_http_version, base.limit_rate, base.limit_rate_after) == (
        "1.0",
        8192,
        4096,
    )
    assert base.response_rewrite.redirect == TextRewrite(b"http://a.internal/", b"/")
    # An annotation replaces one key's value and keeps the others (proxy/main.go).
    p, messages = parse_policy({NGINX + "proxy-redirect-to": "/new/"}, base)
    assert messages == []
    assert p.response_rewrite.redirect == TextRewrite(b"http://a.internal/", b"/new/")
    assert p.response_rewrite.cookie_path == TextRewrite(b"/app/", b"/")
    p, _ = parse_policy({NGINX + "proxy-redirect-from": "off"}, base)
    assert p.response_rewrite.redirect is None and p.response_rewrite.cookie_path is not None
    # Keys valid alone, not together: reported, that rule left out.
    reading = read_configmap({"proxy-redirect-from": "http://a/", "proxy-redirect-to": "/$1"})
    assert any("invalid together" in m for m in reading.messages)
    assert dict(reading.config.route_defaults)["response_rewrite"] is None


def test_prefer_server_ciphers_false_cannot_be_had_per_host() -> None:
    p, messages = policy(ssl_prefer_server_ciphers="false")
    assert p == DEFAULT_POLICY and "cannot be turned off per host" in messages[0]
    assert status("ssl-prefer-server-ciphers", "false") == "unsupported"
    assert status("ssl-prefer-server-ciphers", "maybe") == "invalid"


def test_proxy_ssl_ciphers_and_protocols_beside_a_secret() -> None:
    p, messages = policy(
        proxy_ssl_secret="ca",
        proxy_ssl_ciphers="ECDHE-ECDSA-AES128-GCM-SHA256",
        proxy_ssl_protocols="TLSv1 TLSv1.1 TLSv1.2",
    )
    assert messages == []
    assert p.proxy_ssl.ciphers == "ECDHE-ECDSA-AES128-GCM-SHA256"
    assert p.proxy_ssl.protocols == ("TLSv1.2",)  # the older ones left out
    p, _ = policy(proxy_ssl_secret="ca")
    assert (p.proxy_ssl.ciphers, p.proxy_ssl.protocols) == ("DEFAULT", ("TLSv1.2", "TLSv1.3"))
    for bad in ("TLSv1 TLSv1.1", "TLSv2", "", "SSLv3"):
        assert status("proxy-ssl-protocols", bad) == "invalid", bad
    assert status("proxy-ssl-ciphers", "NOPE") == "invalid"
    # Without the Secret they do nothing, as in ingress-nginx: reported.
    p, messages = policy(proxy_ssl_ciphers="HIGH")
    assert p.proxy_ssl is None and "no effect without proxy-ssl-secret" in messages[0]


@pytest.mark.parametrize("name", sorted(NOT_APPLICABLE))
def test_what_cannot_apply_is_refused_with_its_reason_and_does_not_fail_check(name: str) -> None:
    value = "SecRuleEngine DetectionOnly" if name == "modsecurity-snippet" else "true"
    (verdict,) = classify({NGINX + name: value})
    assert verdict.status == "refused"
    assert NOT_APPLICABLE[name] in verdict.reason
    p, messages = parse_policy({NGINX + name: value})
    assert p.fail_closed is None and messages == [verdict.reason]
    assert not _fails(AnnotationReport(*verdict))


def test_modsecurity_rules_that_block_still_deny() -> None:
    p, messages = policy(modsecurity_snippet="SecRuleEngine On\nSecRule ARGS x deny")
    assert p.fail_closed is not None and p.fail_closed[0] == 403
    assert "refused" in messages[0] and "403" in messages[0]
    (verdict,) = classify({NGINX + "modsecurity-snippet": "SecRuleEngine On"})
    assert verdict.status == "refused"
