"""End to end: ingress-nginx annotations, through the proxy with curl.

One ingressd serves one Ingress per behaviour (each on its own host) in
front of the echo upstreams, which answer with the request they received.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import BackgroundLoop, Ingressd, nginx_page, serving_echo
from k8s_objects import ingress, path, rule

from ingressd.model.objects import Obj

A = "nginx.ingress.kubernetes.io/"


def annotated(host: str, service: str = "web", **annotations: str) -> Obj:
    return ingress(
        host.split(".")[0],
        [rule(host, path("/", service))],
        annotations={A + k.replace("_", "-"): v for k, v in annotations.items()},
    )


INGRESSES = [
    annotated("perm.test", permanent_redirect="https://new.example/landing"),
    annotated(
        "perm308.test", permanent_redirect="https://n.example/", permanent_redirect_code="308"
    ),
    annotated("temp.test", temporal_redirect="https://t.example/x"),
    # nginx evaluates the variables of "return CODE URL;" (nginx.tmpl)
    annotated("permvars.test", permanent_redirect="https://new.example.com$request_uri"),
    annotated("tempvars.test", temporal_redirect="https://login.example/?to=$scheme://$host$uri"),
    annotated("approotvars.test", app_root="/app/$arg_lang"),
    annotated("approot.test", app_root="/app"),
    annotated("shop.test", from_to_www_redirect="true"),
    annotated("www.brand.test", from_to_www_redirect="true"),
    annotated("allowother.test", allowlist_source_range="10.0.0.0/8"),
    annotated("allowlocal.test", whitelist_source_range="10.0.0.0/8, 127.0.0.0/8"),
    annotated("deny.test", denylist_source_range="127.0.0.1"),
    annotated("badallow.test", allowlist_source_range="127.0.0.0/8, not-a-range"),
    annotated("baddeny.test", denylist_source_range="10.0.0.0/33"),
    annotated("prefix.test", x_forwarded_prefix="/shop"),
    # ingress-nginx's client-certificate example (docs/examples/auth/client-certs), and
    # another Ingress on its host: mutual TLS is server-wide in ingress-nginx.
    ingress(
        "nginx-test",
        [rule("certs.test", path("/", "web"))],
        annotations={
            A + "auth-tls-verify-client": "on",
            A + "auth-tls-secret": "default/ca-secret",
            A + "auth-tls-verify-depth": "1",
            A + "auth-tls-error-page": "http://www.mysite.com/error-cert.html",
            A + "auth-tls-pass-certificate-to-upstream": "true",
        },
    ),
    ingress("certs-public", [rule("certs.test", path("/public", "web"))]),
    annotated("guarded.test", configuration_snippet="deny all;"),
    annotated("headers.test", configuration_snippet='more_set_headers "Request-Id: $req_id";'),
    annotated("prefixrw.test", x_forwarded_prefix="/shop", rewrite_target="/inner"),
    annotated("prefixvars.test", x_forwarded_prefix="/$http_x_tenant", rewrite_target="/inner"),
    annotated("forcessl.test", force_ssl_redirect="true"),
    annotated("keepslash.test", force_ssl_redirect="true", preserve_trailing_slash="true"),
    annotated("vhost.test", upstream_vhost="internal.svc.cluster.local"),
    annotated("vhostvars.test", upstream_vhost="${arg_tenant}.internal"),
    annotated("small.test", proxy_body_size="1k"),
    annotated("slow.test", proxy_read_timeout="1"),
    annotated(
        "cors.test",
        enable_cors="true",
        cors_allow_origin="https://app.example, https://*.partner.example",
        cors_allow_methods="GET, POST",
        cors_expose_headers="X-Total",
        cors_max_age="600",
    ),
    annotated("corsstar.test", enable_cors="true", cors_allow_credentials="false"),
    annotated("plain.test"),
    annotated("auth.test", auth_type="basic", auth_secret="htpasswd", auth_realm="Staff"),
    annotated("authmissing.test", auth_type="basic", auth_secret="nosuch"),
    {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "htpasswd", "namespace": "default"},
        "type": "Opaque",
        # made with: openssl passwd -apr1 -salt ingressd s3cret
        "stringData": {"auth": "alice:$apr1$ingressd$m4HkBhyUtf1klMXB92KPJ.\n"},
    },
]


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, upstream_loop: BackgroundLoop, curl_binary: str
) -> Iterator[Ingressd]:
    with serving_echo(tmp_path_factory.mktemp("e2e-annotations"), upstream_loop, INGRESSES) as proc:
        yield proc


def test_permanent_and_temporal_redirects(proxy: Ingressd) -> None:
    r = proxy.get("perm.test", "/old/page?x=1")
    assert (r.status, r.header("Location")) == (301, "https://new.example/landing")
    r = proxy.get("perm308.test", "/")
    assert (r.status, r.header("Location")) == (308, "https://n.example/")
    r = proxy.get("temp.test", "/")
    assert (r.status, r.header("Location")) == (302, "https://t.example/x")


def test_redirects_render_nginx_variables(proxy: Ingressd) -> None:
    r = proxy.get("permvars.test", "/old/a%20b?x=1&y=%2F")
    assert (r.status, r.header("Location")) == (301, "https://new.example.com/old/a%20b?x=1&y=%2F")
    r = proxy.get("PermVars.test:80", "/")
    assert (r.status, r.header("Location")) == (301, "https://new.example.com/")
    r = proxy.get("TempVars.Test:8080", "/cart/./item?id=3")
    location = "https://login.example/?to=http://tempvars.test/cart/item"
    assert (r.status, r.header("Location")) == (302, location)
    r = proxy.get("approotvars.test", "/?lang=de")
    assert (r.status, r.header("Location")) == (302, "http://approotvars.test/app/de")
    got = proxy.get("prefixvars.test", "/x", "-H", "X-Tenant: acme").json()
    assert (got["path"], got["headers"]["x-forwarded-prefix"]) == ("/inner", "/acme")
    got = proxy.get("prefixvars.test", "/x").json()  # a missing header is empty
    assert got["headers"]["x-forwarded-prefix"] == "/"
    got = proxy.get("vhostvars.test", "/?tenant=acme").json()
    assert got["headers"]["host"] == "acme.internal"


def test_app_root_redirects_only_the_root(proxy: Ingressd) -> None:
    r = proxy.get("approot.test", "/")
    assert r.status == 302
    assert r.header("Location") == "http://approot.test/app"
    r = proxy.get("approot.test", "/app")
    assert (r.status, r.json()["path"]) == (200, "/app")


def test_from_to_www_redirects_both_ways(proxy: Ingressd) -> None:
    r = proxy.get("www.shop.test", "/cart?id=7")
    assert (r.status, r.header("Location")) == (308, "http://shop.test/cart?id=7")
    r = proxy.get("brand.test", "/")
    assert (r.status, r.header("Location")) == (308, "http://www.brand.test/")
    assert proxy.get("shop.test", "/cart").json()["service"] == "web"
    assert proxy.get("www.brand.test", "/").json()["service"] == "web"


def test_https_redirect_drops_a_trailing_slash_unless_preserved(proxy: Ingressd) -> None:
    port = proxy.https_port
    for host, uri, location in [
        ("forcessl.test", "/", "https://forcessl.test:{port}"),
        ("forcessl.test", "/docs/", "https://forcessl.test:{port}/docs"),
        ("forcessl.test", "/docs/?page=2", "https://forcessl.test:{port}/docs/?page=2"),
        ("keepslash.test", "/", "https://keepslash.test:{port}/"),
        ("keepslash.test", "/docs/", "https://keepslash.test:{port}/docs/"),
    ]:
        r = proxy.get(host, uri, check=False)
        assert (r.status, r.header("Location")) == (308, location.format(port=port)), uri


def test_access_control_that_cannot_be_applied_answers_403_or_503(proxy: Ingressd) -> None:
    # Served with 200 once: auth-tls-* was "unsupported, ignored". Its CA Secret is
    # missing here: every route of the host answers 503 (client_certs tests cover mTLS).
    for host, uri in [("certs.test", "/"), ("certs.test", "/public/x")]:
        r = proxy.curl("-k", *proxy.resolve(host), proxy.https_url(host, uri), check=False)
        assert r.status == 503, (host, uri)
        assert r.body == nginx_page(503)
        proxy.wait_for_log("503 Service Unavailable: auth-tls-secret default/ca-secret not found")
        assert proxy.get(host, uri, check=False).status == 503
    r = proxy.get("guarded.test", "/", check=False)
    assert (r.status, r.body) == (403, nginx_page(403))
    proxy.wait_for_log(
        "GET guarded.test/: 403 Forbidden: configuration-snippet holds access control"
    )
    assert proxy.get("headers.test", "/").status == 200  # a snippet without access control
    log = proxy.log()
    assert (
        "auth-tls-secret default/ca-secret not found; every route of its hosts answers 503" in log
    )


def test_source_ranges(proxy: Ingressd) -> None:
    assert proxy.get("allowother.test", "/", check=False).status == 403
    assert proxy.get("allowlocal.test", "/").status == 200
    assert proxy.get("deny.test", "/", check=False).status == 403
    assert proxy.get("plain.test", "/").status == 200
    # A client-sent X-Forwarded-For does not get anyone in.
    spoofed = proxy.get("allowother.test", "/", "-H", "X-Forwarded-For: 10.1.2.3", check=False)
    assert spoofed.status == 403


def test_an_invalid_allow_list_fails_closed(proxy: Ingressd) -> None:
    # ipallowlist's parse error is a LocationDeniedError: nginx.tmpl answers 503.
    r = proxy.get("badallow.test", "/", check=False)
    assert r.status == 503
    proxy.wait_for_log(
        "GET badallow.test/: 503 Service Unavailable: invalid allowlist-source-range"
    )
    assert "allowlist-source-range='127.0.0.0/8, not-a-range' is invalid" in proxy.log()
    r = proxy.get("baddeny.test", "/", check=False)
    assert (r.status, r.body) == (503, nginx_page(503))
    proxy.wait_for_log("GET baddeny.test/: 503 Service Unavailable: invalid denylist-source-range")


def test_forwarded_prefix_and_upstream_vhost(proxy: Ingressd) -> None:
    # ingress-nginx sets X-Forwarded-Prefix only beside a rewrite (buildProxyPass),
    # replacing the client's; otherwise the client's goes through, as with nginx.
    got = proxy.get("prefixrw.test", "/x", "-H", "X-Forwarded-Prefix: /evil").json()
    assert (got["path"], got["headers"]["x-forwarded-prefix"]) == ("/inner", "/shop")
    got = proxy.get("prefix.test", "/x").json()
    assert "x-forwarded-prefix" not in got["headers"]
    got = proxy.get("prefix.test", "/x", "-H", "X-Forwarded-Prefix: /client").json()
    assert got["headers"]["x-forwarded-prefix"] == "/client"
    got = proxy.get("vhost.test", "/").json()
    assert got["headers"]["host"] == "internal.svc.cluster.local"
    assert got["headers"]["x-forwarded-host"] == "vhost.test"


def test_body_size_limits(proxy: Ingressd, tmp_path: Path) -> None:
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"s" * 1000)
    big.write_bytes(b"b" * 2000)
    assert proxy.get("small.test", "/", "--data-binary", f"@{small}").status == 200
    r = proxy.get("small.test", "/", "--data-binary", f"@{big}", check=False)
    assert (r.status, r.body) == (413, nginx_page(413))
    proxy.wait_for_log("413 Request Entity Too Large: the body exceeds 1024 bytes")
    chunked = proxy.get(
        "small.test",
        "/",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        f"@{big}",
        check=False,
    )
    assert chunked.status == 413
    # Without the annotation, ingress-nginx's default of 1m applies.
    two_mib = tmp_path / "two-mib"
    two_mib.write_bytes(b"x" * (2 << 20))
    assert proxy.get("plain.test", "/", "--data-binary", f"@{two_mib}", check=False).status == 413


def test_read_timeout_per_ingress(proxy: Ingressd) -> None:
    start = time.monotonic()
    r = proxy.get("slow.test", "/_echo/sleep/3000", check=False)
    elapsed = time.monotonic() - start
    assert r.status == 504 and elapsed < 2.5
    # Elsewhere the proxy-wide 60 s applies.
    assert proxy.get("plain.test", "/_echo/sleep/1500").status == 200


def test_cors_preflight_is_answered_by_ingressd(proxy: Ingressd) -> None:
    r = proxy.get(
        "cors.test",
        "/api",
        "-X",
        "OPTIONS",
        "-H",
        "Origin: https://x.partner.example",
        "-H",
        "Access-Control-Request-Method: POST",
    )
    assert r.status == 204 and r.body == b""
    assert r.header("Access-Control-Allow-Origin") == "https://x.partner.example"
    assert r.header("Access-Control-Allow-Methods") == "GET, POST"
    assert r.header("Access-Control-Max-Age") == "600"
    assert r.header("Access-Control-Allow-Credentials") == "true"
    # A preflight from an origin not on the list goes to the upstream, as in ingress-nginx.
    other = proxy.get("cors.test", "/api", "-X", "OPTIONS", "-H", "Origin: https://evil.example")
    assert (other.status, other.json()["method"]) == (200, "OPTIONS")
    assert other.header("Access-Control-Allow-Origin") is None


def test_cors_headers_on_responses(proxy: Ingressd) -> None:
    r = proxy.get("cors.test", "/", "-H", "Origin: https://app.example")
    assert r.json()["service"] == "web"
    assert r.header("Access-Control-Allow-Origin") == "https://app.example"
    assert r.header("Access-Control-Expose-Headers") == "X-Total"
    assert "Origin" in (r.header("Vary") or "")
    other = proxy.get("cors.test", "/", "-H", "Origin: https://evil.example")
    assert other.status == 200 and other.header("Access-Control-Allow-Origin") is None
    star = proxy.get("corsstar.test", "/", "-H", "Origin: https://any.example")
    assert star.header("Access-Control-Allow-Origin") == "*"
    assert star.header("Access-Control-Allow-Credentials") is None
    assert (
        proxy.get("plain.test", "/", "-H", "Origin: https://a").header(
            "Access-Control-Allow-Origin"
        )
        is None
    )


def test_basic_auth(proxy: Ingressd) -> None:
    r = proxy.get("auth.test", "/", check=False)
    assert (r.status, r.header("WWW-Authenticate")) == (401, 'Basic realm="Staff"')
    assert proxy.get("auth.test", "/", "-u", "alice:wrong", check=False).status == 401
    ok = proxy.get("auth.test", "/", "-u", "alice:s3cret")
    assert ok.status == 200
    assert "authorization" not in ok.json()["headers"]  # not passed to the upstream
    missing = proxy.get("authmissing.test", "/", "-u", "alice:s3cret", check=False)
    assert (missing.status, missing.body) == (503, nginx_page(503))
    proxy.wait_for_log("GET authmissing.test/: 503 Service Unavailable: auth-secret default/nosuch")
