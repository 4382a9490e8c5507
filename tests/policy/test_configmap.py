"""The controller ConfigMap's keys, judged as annotations are (policy/configmap.py)."""

from __future__ import annotations

import ipaddress

import pytest

from ingressd.model.globals import DEFAULT_GLOBALS, GlobalConfig
from ingressd.model.policy import NextUpstream
from ingressd.policy.configmap import (
    IGNORED,
    MAX_KEYS,
    MAX_VALUE,
    REFUSED,
    SUPPORTED,
    classify,
    read_configmap,
)


def statuses(data: dict[str, str], **explicit: str) -> dict[str, str]:
    flags = {k.replace("_", "-"): v for k, v in explicit.items()}
    return {v.key: v.status for v in classify(data, flags)}


def test_no_configmap_means_ingress_nginx_defaults_with_hsts_on() -> None:
    reading = read_configmap(None)
    assert reading.config == DEFAULT_GLOBALS
    assert reading.config.hsts_header == b"max-age=31536000; includeSubDomains"
    assert reading.config.no_tls_redirect_locations == ("/.well-known/acme-challenge",)
    assert reading.config.proxy == () and reading.config.route_defaults == ()
    assert read_configmap({}).config == DEFAULT_GLOBALS


def test_hsts_keys_make_the_header() -> None:
    config = read_configmap(
        {"hsts-max-age": "100", "hsts-include-subdomains": "false", "hsts-preload": "true"}
    ).config
    assert config.hsts_header == b"max-age=100; preload"
    assert read_configmap({"hsts": "false"}).config.hsts_header is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("t", True), ("True", True), ("TRUE", True), ("0", False), ("F", False)],
)
def test_booleans_read_as_go_strconv_parse_bool(value: str, expected: bool) -> None:
    assert read_configmap({"hsts": value}).config.hsts is expected


def test_proxy_keys_become_proxy_settings() -> None:
    config = read_configmap(
        {
            "proxy-body-size": "8m",
            "proxy-connect-timeout": "2",
            "proxy-read-timeout": "120",
            "proxy-send-timeout": "30",
            "client-header-timeout": "10",
            "client-body-timeout": "11",
            "keep-alive": "5",
            "proxy-buffer-size": "16k",
            "large-client-header-buffers": "2 4k",
        }
    ).config
    assert dict(config.proxy) == {
        "max_body_size": 8 * 1024 * 1024,
        "connect_timeout": 2.0,
        "read_timeout": 120.0,
        "send_timeout": 30.0,
        "client_header_timeout": 10.0,
        "client_body_timeout": 11.0,
        "keepalive_timeout": 5.0,
        "proxy_buffer_size": 16 * 1024,
        "max_request_line": 4096,
        "max_header_bytes": 8192,
        "http2_max_header_list_size": 8192,
    }


def test_route_keys_become_route_defaults() -> None:
    config = read_configmap(
        {
            "ssl-redirect": "false",
            "force-ssl-redirect": "true",
            "proxy-next-upstream": "error http_502",
            "proxy-next-upstream-tries": "5",
            "load-balance": "ewma",
            "whitelist-source-range": "10.0.0.0/8",
            "denylist-source-range": "10.1.0.0/16",
            "block-cidrs": "192.0.2.1",
            "disable-proxy-intercept-errors": "true",
        }
    ).config
    defaults = dict(config.route_defaults)
    assert defaults["disable_intercept_errors"] is True
    assert defaults["ssl_redirect"] is False
    assert defaults["force_ssl_redirect"] is True
    assert defaults["load_balance"] == "ewma"
    assert defaults["next_upstream"] == NextUpstream(
        error=True, timeout=False, statuses=frozenset({502}), tries=5
    )
    assert defaults["allow_source"] == (ipaddress.ip_network("10.0.0.0/8"),)
    assert set(defaults["deny_source"]) == {
        ipaddress.ip_network("192.0.2.1/32"),
        ipaddress.ip_network("10.1.0.0/16"),
    }


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("hsts", "yes"),
        ("hsts-max-age", "-1"),
        ("hsts-max-age", "99999999999"),
        ("proxy-body-size", "lots"),
        ("proxy-body-size", "2000g"),
        ("proxy-read-timeout", "0"),
        ("proxy-read-timeout", "1.5"),
        ("proxy-read-timeout", "100000"),
        ("keep-alive", "abc"),
        ("proxy-next-upstream", "sometimes"),
        ("proxy-next-upstream-tries", "1000"),
        ("large-client-header-buffers", "4"),
        ("large-client-header-buffers", "4 1m"),
        ("large-client-header-buffers", "1000 8k"),
        ("no-tls-redirect-locations", "no-slash"),
        ("whitelist-source-range", "10.0.0.0/33"),
        ("load-balance", "chash"),
    ],
)
def test_a_bad_value_is_reported_and_its_default_used_while_the_rest_apply(
    key: str, value: str
) -> None:
    reading = read_configmap(
        {key: value, "hsts-max-age": "7"}
        if key != "hsts-max-age"
        else {key: value, "hsts-preload": "true"}
    )
    by_key = {v.key: v for v in reading.verdicts}
    assert by_key[key].status in ("invalid", "unsupported")
    assert key in by_key[key].reason
    assert by_key[key].reason in reading.messages
    # the default stands for the bad key ...
    assert reading.config.hsts is True
    assert dict(reading.config.proxy).get("max_body_size") is None
    # ... and the other key applies
    if key == "hsts-max-age":
        assert reading.config.hsts_max_age == 31536000 and reading.config.hsts_preload
    else:
        assert reading.config.hsts_max_age == 7


def test_unknown_and_unsupported_keys_are_reported_never_ignored_silently() -> None:
    reading = read_configmap(
        {
            "no-such-key": "1",
            "use-gzip": "true",
            "access-log-path": "/var/log/x",
        }
    )
    by_key = {v.key: v for v in reading.verdicts}
    assert {k: v.status for k, v in by_key.items()} == dict.fromkeys(by_key, "unsupported")
    assert "not an ingress-nginx setting" in by_key["no-such-key"].reason
    assert "compression" in by_key["use-gzip"].reason
    assert "own access log" in by_key["access-log-path"].reason
    assert len(reading.messages) == 3
    assert reading.config == DEFAULT_GLOBALS


@pytest.mark.parametrize(
    ("value", "codes", "status"),
    [
        ("404, 503", frozenset({404, 503}), "supported"),
        ("", frozenset(), "supported"),
        ("302", frozenset(), "invalid"),
        ("404,abc", frozenset(), "invalid"),
    ],
)
def test_custom_http_errors_is_the_global_error_page_list(
    value: str, codes: frozenset[int], status: str
) -> None:
    reading = read_configmap({"custom-http-errors": value})
    [verdict] = reading.verdicts
    assert verdict.status == status
    assert reading.config.custom_http_errors == codes


@pytest.mark.parametrize("key", sorted(REFUSED))
def test_snippet_keys_are_refused(key: str) -> None:
    reading = read_configmap({key: "more_set_headers 'X: y';"})
    [verdict] = reading.verdicts
    assert verdict.status == "refused"
    assert "raw proxy configuration" in verdict.reason
    assert reading.config.fail_closed is None


@pytest.mark.parametrize("key", ["server-snippet", "location-snippet", "http-snippet"])
def test_a_refused_snippet_holding_access_control_denies_every_route(key: str) -> None:
    reading = read_configmap({key: "allow 10.0.0.0/8;\ndeny all;"})
    assert reading.config.fail_closed is not None
    assert reading.config.fail_closed[0] == 403
    assert "allow, deny" in reading.verdicts[0].reason


def test_an_invalid_global_auth_key_denies_every_route() -> None:
    """global-auth-*: ingress-nginx logs "Global auth location denied" and serves
    without the key (an invalid global-auth-url: without authentication at all);
    ingressd answers 503 on every route instead, while global-auth-url is given."""
    reading = read_configmap({"global-auth-url": "something"})
    assert reading.verdicts[0].status == "invalid"
    assert reading.config.fail_closed == (
        503,
        "invalid global-auth-url in the controller ConfigMap",
    )
    assert "every route answers 503" in reading.messages[0]
    both = read_configmap({"global-auth-url": "http://auth/", "global-auth-method": "FETCH"})
    assert both.config.fail_closed is not None and both.config.fail_closed[0] == 503
    # Without global-auth-url an invalid companion key guards nothing: reported only.
    alone = read_configmap({"global-auth-method": "FETCH"})
    assert alone.config.fail_closed is None and alone.verdicts[0].status == "invalid"
    # Empty is the default: nothing to honour.
    assert read_configmap({"global-auth-url": ""}).config.fail_closed is None


def test_allow_snippet_annotations_is_reported_with_what_ingressd_does() -> None:
    assert statuses({"allow-snippet-annotations": "false"}) == {
        "allow-snippet-annotations": "supported"
    }
    [verdict] = classify({"allow-snippet-annotations": "true"})
    assert verdict.status == "unsupported"
    assert "refuses snippet annotations" in verdict.reason


def test_a_flag_given_explicitly_overrides_its_key() -> None:
    reading = read_configmap(
        {"proxy-body-size": "8m", "proxy-read-timeout": "120"},
        {"proxy-body-size": "--proxy-body-size"},
    )
    by_key = {v.key: v for v in reading.verdicts}
    assert by_key["proxy-body-size"].status == "overridden"
    assert "--proxy-body-size" in by_key["proxy-body-size"].reason
    assert dict(reading.config.proxy) == {"read_timeout": 120.0}
    assert reading.messages == ()  # overridden is not a problem


def test_values_and_key_counts_are_bounded() -> None:
    reading = read_configmap({"no-tls-redirect-locations": "/" + "a" * MAX_VALUE})
    assert reading.verdicts[0].status == "invalid"
    assert len(reading.verdicts[0].value) < 300  # what is reported is cut short too
    many = {f"k{i}": "v" for i in range(MAX_KEYS + 10)}
    reading = read_configmap(many)
    assert len(reading.verdicts) == MAX_KEYS
    assert any("more than" in m for m in reading.messages)


def test_data_that_is_not_a_map_is_reported() -> None:
    reading = read_configmap(["a"])
    assert reading.config == DEFAULT_GLOBALS
    assert reading.messages


def test_every_key_has_one_treatment() -> None:
    assert not set(SUPPORTED) & set(IGNORED)
    assert not set(SUPPORTED) & REFUSED
    assert not set(IGNORED) & REFUSED
    assert GlobalConfig().hsts_header == DEFAULT_GLOBALS.hsts_header


def test_block_entries_are_nginx_map_entries_on_re2() -> None:
    config = read_configmap(
        {"block-user-agents": "EvilBot/1.0, ~^curl/, ~*scanner", "block-referers": "~*spam"}
    ).config
    [agents, referers] = dict(config.route_defaults)["blocked"]
    assert agents.header == b"user-agent" and referers.header == b"referer"
    assert agents.blocks(b"evilbot/1.0")  # a string: whole, ignoring case
    assert not agents.blocks(b"EvilBot/1.0 (compatible)")
    assert agents.blocks(b"curl/8.5.0")  # ~: case-sensitive, anywhere unless anchored
    assert not agents.blocks(b"CURL/8.5.0")
    assert agents.blocks(b"Mozilla (Scanner)")  # ~*: ignoring case
    assert not agents.blocks(None)
    assert referers.blocks(b"http://SPAM.example/")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("block-user-agents", "~(a)\\1"),  # a backreference: RE2 cannot run it
        ("block-referers", ",".join(f"r{i}" for i in range(300))),
        ("block-cidrs", "not-an-address"),
        ("whitelist-source-range", "10.0.0.0/40"),
        ("denylist-source-range", "x"),
    ],
)
def test_an_invalid_access_key_denies_every_route_with_503(key: str, value: str) -> None:
    reading = read_configmap({key: value, "hsts-max-age": "5"})
    assert reading.config.fail_closed == (503, f"invalid {key} in the controller ConfigMap")
    [verdict] = [v for v in reading.verdicts if v.key == key]
    assert verdict.status == "invalid"
    assert verdict.reason.endswith("every route answers 503 until it is fixed")
    assert reading.config.hsts_max_age == 5


def test_hide_headers_are_header_names() -> None:
    config = read_configmap({"hide-headers": "X-Powered-By, Server"}).config
    assert dict(config.proxy) == {"hide_headers": frozenset({b"x-powered-by", b"server"})}
    assert classify({"hide-headers": "bad name"})[0].status == "invalid"


def test_tls_keys() -> None:
    from ingressd.model.globals import DEFAULT_TLS, TLSParams

    assert DEFAULT_GLOBALS.tls == DEFAULT_TLS
    assert DEFAULT_TLS.session_tickets is False  # ingress-nginx's ssl-session-tickets
    config = read_configmap(
        {
            "ssl-protocols": "TLSv1.3",
            "ssl-ciphers": "ECDHE-RSA-AES128-GCM-SHA256",
            "ssl-session-tickets": "true",
        }
    ).config
    assert config.tls == TLSParams("TLSv1.3", "TLSv1.3", "ECDHE-RSA-AES128-GCM-SHA256", True)
    for key, value in (
        ("ssl-protocols", "TLSv1 TLSv1.2"),
        ("ssl-protocols", "SSLv3"),
        ("ssl-ciphers", "NO-SUCH-CIPHER"),
        ("ssl-ciphers", "ECDHE;rm -rf"),
    ):
        reading = read_configmap({key: value})
        assert reading.verdicts[0].status == "invalid", (key, value)
        assert reading.config.tls == DEFAULT_TLS


def test_tls_params_reach_every_context() -> None:
    import ssl

    from ingressd.model.globals import TLSParams
    from ingressd.policy.tls import apply_params

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    apply_params(ctx, TLSParams("TLSv1.3", "TLSv1.3", "ECDHE+AESGCM", False))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.options & ssl.OP_NO_TICKET
    apply_params(ctx, TLSParams(session_tickets=True))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert not ctx.options & ssl.OP_NO_TICKET


def test_header_name_keys_set_which_names_are_dropped() -> None:
    from ingressd.model.globals import NAME_INVALID, NAME_KEEP_ALL, NAME_UNDERSCORE
    from ingressd.proxy.settings import ProxySettings

    assert ProxySettings().drop_names_from == NAME_UNDERSCORE  # nginx's defaults
    cases = [
        ({"enable-underscores-in-headers": "true"}, NAME_INVALID),
        ({"ignore-invalid-headers": "false"}, NAME_KEEP_ALL),
        ({"enable-underscores-in-headers": "false"}, NAME_UNDERSCORE),
    ]
    for data, expected in cases:
        assert dict(read_configmap(data).config.proxy)["drop_names_from"] == expected


def test_header_name_classes_are_nginx_s() -> None:
    from ingressd.model.globals import NAME_INVALID, NAME_UNDERSCORE, NAME_VALID
    from ingressd.proxy.http import name_class

    assert name_class(b"x-custom-1") == NAME_VALID
    assert name_class(b"x_forwarded_for") == NAME_UNDERSCORE
    assert name_class(b"x.dot") == NAME_INVALID
    assert name_class(b"x_dot.") == NAME_INVALID


def test_skip_access_log_urls_are_request_uris() -> None:
    config = read_configmap({"skip-access-log-urls": "/healthz, /Ping?x=1"}).config
    assert dict(config.proxy) == {"skip_log_uris": frozenset({b"/healthz", b"/ping?x=1"})}
    assert classify({"skip-access-log-urls": "healthz"})[0].status == "invalid"


@pytest.mark.parametrize(
    ("data", "cache", "size", "timeout", "invalid"),
    [
        ({}, True, 10 * 1024 * 1024, 600, None),  # ingress-nginx's defaults
        ({"ssl-session-cache": "false"}, False, 10 * 1024 * 1024, 600, None),
        ({"ssl-session-cache-size": "1m", "ssl-session-timeout": "1h"}, True, 1 << 20, 3600, None),
        ({"ssl-session-timeout": "300"}, True, 10 * 1024 * 1024, 300, None),
        ({"ssl-session-timeout": "8d"}, True, 10 * 1024 * 1024, 600, "ssl-session-timeout"),
        ({"ssl-session-timeout": "soon"}, True, 10 * 1024 * 1024, 600, "ssl-session-timeout"),
        ({"ssl-session-cache-size": "0"}, True, 10 * 1024 * 1024, 600, "ssl-session-cache-size"),
        ({"ssl-session-cache-size": "2g"}, True, 10 * 1024 * 1024, 600, "ssl-session-cache-size"),
    ],
)
def test_ssl_session_keys(
    data: dict[str, str], cache: bool, size: int, timeout: int, invalid: str | None
) -> None:
    reading = read_configmap(data)
    tls = reading.config.tls
    assert (tls.session_cache, tls.session_cache_bytes, tls.session_timeout) == (
        cache,
        size,
        timeout,
    )
    if invalid is None:
        assert reading.messages == ()
    else:
        assert len(reading.messages) == 1 and invalid in reading.messages[0]


def test_ssl_session_params_reach_openssl_on_every_server_context() -> None:
    from ingressd.model.globals import DEFAULT_TLS, TLSParams
    from ingressd.policy import tls_session
    from ingressd.policy.tls import apply_params, self_signed, server_context

    ctx = server_context(*self_signed("s.test", ("s.test",), days=1))
    assert tls_session.timeout_of(ctx) == 600  # not OpenSSL's 7200
    apply_params(ctx, TLSParams(session_timeout=120))
    assert tls_session.timeout_of(ctx) == 120
    apply_params(ctx, TLSParams(session_cache=False))
    assert tls_session.timeout_of(ctx) == tls_session.NGINX_OFF_TIMEOUT
    assert tls_session.sessions(DEFAULT_TLS.session_cache_bytes) == 40_000
