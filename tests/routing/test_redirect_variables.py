"""permanent-redirect, temporal-redirect, app-root and x-forwarded-prefix with nginx
variables, through decide(): ingress-nginx writes them into nginx directives that
evaluate variables (nginx.tmpl ``return CODE URL;``, ``return 302
$scheme://$http_host<app-root>;``, ``proxy_set_header X-Forwarded-Prefix``)."""

from __future__ import annotations

import pytest
from k8s_objects import build, endpoint_slice, ingress, path, rule, service

from ingressd.model.snippet import upstream_headers
from ingressd.routing.decide import Forward, RequestHead, Respond, decide, request_vars

HOST = "shop.test"
NGINX = "nginx.ingress.kubernetes.io/"


def table(annotations: dict[str, str], p: str = "/"):  # type: ignore[no-untyped-def]
    return build(
        ingress("web", [rule(HOST, path(p, "web"))], annotations=annotations),
        service("web"),
        endpoint_slice("web", ["10.0.0.1"]),
    )


def head(
    p: str = "/a/b",
    query: str = "",
    *,
    tls: bool = False,
    host: str = "Shop.Test:8080",
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> RequestHead:
    return RequestHead(
        "GET", host, p, query, "192.0.2.1", tls, headers=headers, server_port=b"8080"
    )


def answer(annotations: dict[str, str], h: RequestHead) -> Respond:
    found = decide(table(annotations), h)
    assert isinstance(found, Respond), found
    return found


@pytest.mark.parametrize(
    ("url", "h", "location"),
    [
        # the case: the original URI, arguments included, as received
        (
            "https://new.example.com$request_uri",
            head("/a%20b/c", "x=1&y=%2F"),
            "https://new.example.com/a%20b/c?x=1&y=%2F",
        ),
        ("https://new.example.com$request_uri", head("/"), "https://new.example.com/"),
        ("https://$host/moved", head(), "https://shop.test/moved"),  # lowercase, no port
        ("http://other.test/$scheme", head(tls=True), "http://other.test/https"),
        ("https://n.test${uri}?from=$host", head("/x/../y"), "https://n.test/y?from=shop.test"),
        ("https://n.test/?$args", head("/", "a=1&b=2"), "https://n.test/?a=1&b=2"),
        ("https://n.test/$arg_id", head("/", "ID=7&id=8"), "https://n.test/7"),
        (
            "https://n.test/$cookie_s/$http_x_team",
            head(headers=((b"Cookie", b"s=abc"), (b"X-Team", b"blue"))),
            "https://n.test/abc/blue",
        ),
        ("https://n.test/$cookie_s$http_x_team", head(), "https://n.test/"),  # missing: ""
        ("https://n.test:$server_port/", head(), "https://n.test:8080/"),
        # a decoded $uri: what would split the header is escaped
        ("https://n.test$uri", head("/a%0D%0ASet-Cookie:x"), "https://n.test/a%0D%0ASet-Cookie:x"),
        ("https://n.test$uri", head("/caf%C3%A9 x"), "https://n.test/caf%C3%A9%20x"),
    ],
)
def test_permanent_redirect_renders_variables(url: str, h: RequestHead, location: str) -> None:
    found = answer({NGINX + "permanent-redirect": url}, h)
    assert (found.status, found.location) == (301, location)
    assert found.body == f"301 Redirect to {location}\n"


def test_temporal_redirect_with_host_and_scheme() -> None:
    annotations = {
        NGINX + "temporal-redirect": "https://login.test/?next=$scheme://$host$request_uri",
        NGINX + "temporal-redirect-code": "307",
    }
    found = answer(annotations, head("/cart", "id=3", tls=True))
    assert (found.status, found.location) == (
        307,
        "https://login.test/?next=https://shop.test/cart?id=3",
    )


def test_redirect_without_variables_is_the_text() -> None:
    found = answer({NGINX + "permanent-redirect": "https://n.test/fixed?a=1"}, head("/x", "q=2"))
    assert found.location == "https://n.test/fixed?a=1"
    assert found.route is not None
    assert found.route.redirect_parts == ("https://n.test/fixed?a=1",)  # nothing per request


def test_app_root_renders_variables() -> None:
    found = answer({NGINX + "app-root": "/app/$arg_lang"}, head("/", "lang=de"))
    # nginx.tmpl: return 302 $scheme://$http_host<app-root>: the Host as received
    assert (found.status, found.location) == (302, "http://Shop.Test:8080/app/de")
    plain = answer({NGINX + "app-root": "/app"}, head("/", "lang=de"))
    assert plain.location == "http://Shop.Test:8080/app"


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("permanent-redirect", "https://n.test$request_urx", "$request_urx is not a variable"),
        ("temporal-redirect", "https://n.test/$1", "$1 is a regex capture group"),
        ("permanent-redirect", "https://n.test/$", "no variable name after '$'"),
        ("permanent-redirect", "https://n.test/$req_id", "the request id is not known"),
        ("app-root", "/app/$server_name", "$server_name is not a variable"),
        ("x-forwarded-prefix", "/p/$nope", "$nope is not a variable"),
        ("upstream-vhost", "$hostname", "$hostname is not a variable"),
        ("upstream-vhost", "$host/evil", "is not a host name made of nginx variables"),
    ],
)
def test_unknown_variables_make_the_annotation_invalid(key: str, value: str, why: str) -> None:
    t = table({NGINX + key: value, NGINX + "rewrite-target": "/"}, "/p")
    reasons = [p.reason for p in t.problems]
    assert any(why in r and key in r for r in reasons), reasons
    # never served with a literal "$name": the route does not redirect at all
    found = decide(t, head("/p", ""))
    if isinstance(found, Respond):
        assert found.location is None or "$" not in found.location
    else:
        assert all(b"$" not in v for _, v in found.request_headers)


def test_x_forwarded_prefix_renders_variables() -> None:
    t = table(
        {NGINX + "x-forwarded-prefix": "/$http_x_tenant/shop", NGINX + "rewrite-target": "/$1"},
        "/shop(/|$)(.*)",
    )
    h = head("/shop/item", headers=((b"X-Tenant", b"acme"),))
    found = decide(t, h)
    assert isinstance(found, Forward), found
    assert not any(n == b"X-Forwarded-Prefix" for n, _ in found.request_headers)
    plan = found.route.snippet_plan
    assert plan is not None
    sent = upstream_headers(plan, request_vars(h, "shop.test", "/shop/item"))
    assert (b"X-Forwarded-Prefix", b"/acme/shop") in sent


def test_upstream_vhost_renders_variables() -> None:
    t = table({NGINX + "upstream-vhost": "${arg_tenant}.internal:$server_port"})
    h = head("/x", "tenant=acme")
    found = decide(t, h)
    assert isinstance(found, Forward), found
    assert not any(n == b"Host" for n, _ in found.request_headers)
    plan = found.route.snippet_plan
    assert plan is not None
    sent = upstream_headers(plan, request_vars(h, "shop.test", "/x"))
    assert sent == ((b"Host", b"acme.internal:8080"),)
    plain = decide(table({NGINX + "upstream-vhost": "internal.svc"}), h)
    assert isinstance(plain, Forward) and plain.route.snippet_plan is None
    assert (b"Host", b"internal.svc") in plain.request_headers
