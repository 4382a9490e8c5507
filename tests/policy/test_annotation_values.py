"""The ingress-nginx annotations beyond rewrites: values parsed, rejected, assembled."""

from __future__ import annotations

import ipaddress

import pytest

from ingressd.model.policy import DEFAULT_HEADERS, DEFAULT_MAX_AGE, DEFAULT_METHODS, CorsPolicy
from ingressd.policy.annotations import (
    AnnotationError,
    parse_buffer_size,
    parse_cidrs,
    parse_header_value,
    parse_host,
    parse_path,
    parse_policy,
    parse_redirect_code,
    parse_seconds,
    parse_size,
    parse_url,
)

NGINX = "nginx.ingress.kubernetes.io/"


def policy(**annotations: str):  # type: ignore[no-untyped-def]
    p, messages = parse_policy({NGINX + k.replace("_", "-"): v for k, v in annotations.items()})
    return p, messages


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 0), ("512", 512), ("8k", 8192), ("8K", 8192), ("1m", 1 << 20), ("2g", 2 << 30)],
)
def test_sizes(value: str, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", ["", "1.5m", "-1", "1t", "m", "1 m", "10mb"])
def test_bad_sizes(value: str) -> None:
    with pytest.raises(AnnotationError, match="is not a size"):
        parse_size(value)


def test_proxy_buffer_size_is_a_bounded_size() -> None:
    assert [parse_buffer_size(v) for v in ("4k", "16k", "1m", "512")] == [4096, 16384, 1 << 20, 512]
    for bad in ("0", "2m", "1g", "4kb", ""):
        with pytest.raises(AnnotationError):
            parse_buffer_size(bad)
    p, messages = policy(proxy_buffer_size="16k")
    assert (p.proxy_buffer_size, messages) == (16384, [])
    p, messages = policy(proxy_buffer_size="1g")
    assert p.proxy_buffer_size is None
    assert any("proxy-buffer-size" in m for m in messages)


@pytest.mark.parametrize(("value", "expected"), [("5", 5.0), ("600", 600.0), (" 60 ", 60.0)])
def test_seconds(value: str, expected: float) -> None:
    assert parse_seconds(value) == expected


@pytest.mark.parametrize("value", ["0", "5s", "1.5", "-3", "", "sixty"])
def test_bad_seconds(value: str) -> None:
    with pytest.raises(AnnotationError, match="positive whole number of seconds"):
        parse_seconds(value)


def test_urls_paths_hosts_and_codes() -> None:
    assert parse_url("https://example.com/new?x=1") == "https://example.com/new?x=1"
    for bad in ("/relative", "ftp://x", "https://", "https://a b", "javascript:alert(1)"):
        with pytest.raises(AnnotationError):
            parse_url(bad)
    assert parse_path("/app") == "/app"
    for bad in ("app", "/a b", "/a\r\nX: y"):
        with pytest.raises(AnnotationError):
            parse_path(bad)
    assert parse_host("internal.example.com:8080") == b"internal.example.com:8080"
    for bad in ("a b", "host/path", "-bad", "x\r\nX-Evil: 1"):
        with pytest.raises(AnnotationError):
            parse_host(bad)
    assert [parse_redirect_code(c) for c in ("300", "308")] == [300, 308]
    for bad in ("200", "309", "abc"):
        with pytest.raises(AnnotationError):
            parse_redirect_code(bad)
    assert parse_header_value("/api") == b"/api"
    for bad in ("", "a\r\nSet-Cookie: x", "\x00"):
        with pytest.raises(AnnotationError):
            parse_header_value(bad)


def test_cidrs_take_ranges_and_single_addresses() -> None:
    nets = parse_cidrs("10.0.0.0/8, 192.168.1.7 ,2001:db8::/32")
    assert nets == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.7/32"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    for bad in ("", "10.0.0.0/33", "not-an-ip", "10.0.0.1, nope"):
        with pytest.raises(AnnotationError):
            parse_cidrs(bad)


def test_redirect_annotations_assemble() -> None:
    assert policy(permanent_redirect="https://new.example/")[0].redirect == (
        301,
        "https://new.example/",
    )
    assert policy(permanent_redirect="https://n/", permanent_redirect_code="308")[0].redirect == (
        308,
        "https://n/",
    )
    assert policy(temporal_redirect="https://t/")[0].redirect == (302, "https://t/")
    both = policy(temporal_redirect="https://t/", permanent_redirect="https://p/")[0]
    assert both.redirect == (302, "https://t/")  # ingress-nginx checks temporal first
    p, messages = policy(permanent_redirect="not a url")
    assert p.redirect is None and "is not an absolute http(s) URL" in messages[0]


def test_limits_and_headers_assemble() -> None:
    p, messages = policy(
        proxy_body_size="8m",
        proxy_connect_timeout="2",
        proxy_read_timeout="120",
        proxy_send_timeout="30",
        x_forwarded_prefix="/shop",
        upstream_vhost="internal.svc",
        app_root="/app",
        from_to_www_redirect="true",
    )
    assert messages == []
    assert (p.proxy_body_size, p.proxy_connect_timeout, p.proxy_read_timeout) == (8 << 20, 2, 120)
    assert (p.proxy_send_timeout, p.x_forwarded_prefix, p.upstream_vhost) == (
        30,
        b"/shop",
        b"internal.svc",
    )
    assert (p.app_root, p.from_to_www_redirect) == ("/app", True)


def test_invalid_timeout_is_ignored_with_a_message_naming_it() -> None:
    p, messages = policy(proxy_read_timeout="60s")
    assert p.proxy_read_timeout is None
    assert messages == [
        f"annotation {NGINX}proxy-read-timeout='60s' is invalid: "
        "'60s' is not a positive whole number of seconds"
    ]


def test_source_ranges_and_their_precedence() -> None:
    p, _ = policy(whitelist_source_range="10.0.0.0/8")
    assert p.allow_source == (ipaddress.ip_network("10.0.0.0/8"),)
    p, _ = policy(whitelist_source_range="10.0.0.0/8", allowlist_source_range="192.0.2.0/24")
    assert p.allow_source == (ipaddress.ip_network("192.0.2.0/24"),)
    p, _ = policy(denylist_source_range="192.0.2.1")
    assert p.deny_source == (ipaddress.ip_network("192.0.2.1/32"),)


@pytest.mark.parametrize(
    "name", ["whitelist-source-range", "allowlist-source-range", "denylist-source-range"]
)
def test_invalid_source_range_fails_closed(name: str) -> None:
    p, messages = parse_policy({NGINX + name: "10.0.0.0/8, bogus"})
    # ipallowlist/ipdenylist: LocationDeniedError, and the template returns 503
    assert p.fail_closed == (503, f"invalid {name} annotation")
    assert "its routes answer 503" in messages[0]


def test_cors_defaults_are_ingress_nginx_defaults() -> None:
    p, messages = policy(enable_cors="true")
    assert messages == []
    assert p.cors == CorsPolicy(
        origins=("*",),
        methods=DEFAULT_METHODS,
        headers=DEFAULT_HEADERS,
        expose="",
        credentials=True,
        max_age=DEFAULT_MAX_AGE,
    )
    assert DEFAULT_MAX_AGE == 1728000


def test_cors_settings_need_enable_cors() -> None:
    assert policy(cors_allow_origin="https://a.example")[0].cors is None
    p, messages = policy(
        enable_cors="true",
        cors_allow_origin="https://a.example, https://*.b.example:8443",
        cors_allow_methods="GET,POST",
        cors_allow_headers="X-Token, Content-Type",
        cors_expose_headers="X-Total",
        cors_allow_credentials="false",
        cors_max_age="600",
    )
    assert messages == []
    assert p.cors == CorsPolicy(
        origins=("https://a.example", "https://*.b.example:8443"),
        methods="GET, POST",
        headers="X-Token, Content-Type",
        expose="X-Total",
        credentials=False,
        max_age=600,
    )


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        ("cors-allow-methods", "GET\r\nX-Evil: 1"),
        ("cors-allow-headers", "X-A; X-B"),
        ("cors-max-age", "-1"),
    ],
)
def test_bad_cors_values_are_rejected(annotation: str, value: str) -> None:
    p, messages = parse_policy({NGINX + "enable-cors": "true", NGINX + annotation: value})
    assert p.cors is not None  # CORS stays on with the default for that setting
    assert len(messages) == 1 and annotation in messages[0]


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://a.example", "https://a.example"),
        ("HTTPS://A.EXAMPLE", "HTTPS://A.EXAMPLE"),
        ("https://x.b.example:8443", "https://x.b.example:8443"),
        ("https://b.example:8443", None),  # the wildcard needs one label
        ("https://x.y.b.example:8443", None),  # and only one
        ("http://x.b.example:8443", None),  # scheme matters
        ("https://evil.example", None),
        (None, None),
    ],
)
def test_cors_origin_matching(origin: str | None, allowed: str | None) -> None:
    cors = CorsPolicy(origins=("https://a.example", "https://*.b.example:8443"))
    assert cors.allowed_origin(origin) == allowed


def test_cors_headers() -> None:
    star = CorsPolicy(credentials=False)
    assert star.response_headers(None) == [
        (b"Access-Control-Allow-Origin", b"*"),
        (b"Access-Control-Allow-Methods", DEFAULT_METHODS.encode()),
        (b"Access-Control-Allow-Headers", DEFAULT_HEADERS.encode()),
        (b"Access-Control-Max-Age", b"1728000"),
    ]
    listed = CorsPolicy(origins=("https://a.example",), expose="X-Total", max_age=5)
    assert listed.response_headers("https://evil.example") == []
    assert listed.preflight_headers("https://a.example") == [
        (b"Access-Control-Allow-Origin", b"https://a.example"),
        (b"Access-Control-Allow-Credentials", b"true"),
        (b"Access-Control-Allow-Methods", DEFAULT_METHODS.encode()),
        (b"Access-Control-Allow-Headers", DEFAULT_HEADERS.encode()),
        (b"Access-Control-Expose-Headers", b"X-Total"),
        (b"Access-Control-Max-Age", b"5"),
        (b"Vary", b"Origin"),
    ]


def test_an_invalid_origin_list_allows_nobody() -> None:
    p, messages = parse_policy(
        {NGINX + "enable-cors": "true", NGINX + "cors-allow-origin": "not an origin"}
    )
    assert p.cors is not None and p.cors.origins == ()
    assert p.cors.response_headers("https://anyone.example") == []
    assert "no origin is allowed until it is fixed" in messages[0]


# -- external authentication (auth-url and friends) -------------------------------------------


def test_external_auth_is_assembled_from_its_annotations() -> None:
    p, messages = policy(
        auth_url="https://auth.example/check?h=$host",
        auth_method="POST",
        auth_response_headers="X-User, X-Email",
        auth_signin="https://login.example/start",
        auth_signin_redirect_param="return_to",
        auth_request_redirect="https://$host$request_uri",
        auth_always_set_cookie="true",
    )
    assert messages == []
    auth = p.external_auth
    assert auth.url.text == "https://auth.example/check?h=$host"
    assert auth.url.parts == ("https://auth.example/check?h=", "host", "")
    assert auth.method == "POST"
    assert auth.response_headers == ("X-User", "X-Email")
    assert auth.signin is not None and auth.signin_param == "return_to"
    assert auth.request_redirect.parts == ("https://", "host", "", "request_uri", "")
    assert auth.always_set_cookie is True
    assert p.fail_closed is None


def test_external_auth_defaults() -> None:
    p, _ = policy(auth_url="http://auth.svc:4180/oauth2/auth")
    auth = p.external_auth
    assert (auth.method, auth.response_headers, auth.signin, auth.signin_param) == (
        None,
        (),
        None,
        "rd",
    )
    assert (auth.request_redirect, auth.always_set_cookie) == (None, False)


@pytest.mark.parametrize(
    ("annotation", "value", "why"),
    [
        ("auth_url", "ftp://auth/", "not an absolute http"),
        ("auth_url", "/oauth2/auth", "not an absolute http"),
        ("auth_url", "http://auth/$remote_user", "$remote_user is not a variable"),
        ("auth_url", "http://auth/a b", "whitespace"),
        ("auth_method", "FETCH", "not an HTTP method"),
        ("auth_response_headers", "X-User, Bad Header", "not a header name"),
        ("auth_response_headers", " , ", "no header names"),
        ("auth_signin", "login", "not an absolute http"),
        ("auth_signin_redirect_param", "r&d", "not a query parameter name"),
        ("auth_request_redirect", "/a\nb", "control characters"),
        ("auth_always_set_cookie", "yes", 'expected "true" or "false"'),
    ],
)
def test_invalid_external_auth_values_fail_closed(annotation: str, value: str, why: str) -> None:
    extra = {} if annotation == "auth_url" else {"auth_url": "http://auth/check"}
    p, messages = policy(**extra, **{annotation: value})
    name = annotation.replace("_", "-")
    assert p.fail_closed == (503, f"invalid {name} annotation")
    assert len(messages) == 1
    assert f"{NGINX}{name}={value!r} is invalid" in messages[0]
    assert why in messages[0]
    assert "its routes answer 503" in messages[0]


def test_external_auth_extras_without_auth_url_are_reported() -> None:
    p, messages = policy(auth_signin="https://login.example/", auth_method="POST")
    assert p.external_auth is None
    assert messages == [
        "auth-method, auth-signin: no effect without auth-url; no external authentication"
    ]


def test_next_upstream_annotations() -> None:
    p, messages = policy(
        proxy_next_upstream="error timeout http_503",
        proxy_next_upstream_tries="5",
        proxy_next_upstream_timeout="10",
    )
    assert messages == []
    n = p.next_upstream
    assert (n.error, n.timeout, n.statuses, n.tries, n.time_limit) == (
        True,
        True,
        frozenset({503}),
        5,
        10.0,
    )
    # -tries alone keeps the default conditions; 0 means no limit, as in nginx
    p, _ = policy(proxy_next_upstream_tries="0")
    assert (p.next_upstream.error, p.next_upstream.timeout, p.next_upstream.tries) == (
        True,
        True,
        0,
    )
    p, messages = policy(proxy_next_upstream="sometimes")
    assert p.next_upstream.error and p.next_upstream.tries == 3  # the default stays
    assert "'sometimes' is not a condition" in messages[0]
    assert p.fail_closed is None  # not security-relevant: the route keeps serving
    p, messages = policy(proxy_next_upstream_timeout="1.5")
    assert "is not a whole number of seconds" in messages[0]


# -- custom-http-errors and default-backend ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("404", {404}),
        ("404,503", {404, 503}),
        ("404, 503", {404, 503}),
        ("599,400,400", {400, 599}),
    ],
)
def test_custom_http_errors(value: str, expected: set[int]) -> None:
    p, messages = policy(custom_http_errors=value)
    assert (p.custom_http_errors, messages) == (frozenset(expected), [])


@pytest.mark.parametrize(
    "value", ["", "200", "301", "600", "40x", "404,", "404;503", "4040", "+404"]
)
def test_custom_http_errors_invalid(value: str) -> None:
    # ingress-nginx: 400-599 only (^(?:[4,5]\d{2},?)*$, then Atoi of each entry).
    p, messages = policy(custom_http_errors=value)
    assert p.custom_http_errors is None
    [message] = messages
    assert message.startswith(f"annotation {NGINX}custom-http-errors={value!r} is invalid")


def test_default_backend_names_a_service() -> None:
    p, messages = policy(default_backend="error-pages")
    assert (p.default_backend, p.custom_default, messages) == ("error-pages", None, [])
    for bad in ("", "Error_Pages", "ns/svc", "-x", "a" * 64):
        p, messages = policy(default_backend=bad)
        assert p.default_backend is None and len(messages) == 1, bad
        assert "is not a Service name" in messages[0]
