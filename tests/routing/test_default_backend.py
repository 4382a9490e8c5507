"""--default-backend-service, the default-backend annotation and custom-http-errors in the
table: what the builder resolves, what decide() does with it, where an error page comes from
(routing/errors.py). As ingress-nginx's controller.go getDefaultUpstream and getBackendServers,
and nginx.tmpl's error_page locations."""

from __future__ import annotations

import pytest
from k8s_objects import (
    backend,
    build,
    endpoint_slice,
    ingress,
    ingress_class,
    path,
    request,
    rule,
    service,
    snapshot,
)

from ingressd.model.table import RouteTable
from ingressd.routing.build import BuildOptions, TableBuilder
from ingressd.routing.decide import Forward, RequestHead, Respond, decide
from ingressd.routing.errors import error_page, intercepted

NGINX = "nginx.ingress.kubernetes.io/"
DEFAULT = BuildOptions(default_backend_service="infra/errors", custom_http_errors=(418,))


def errors_service(ready: bool = True) -> list:
    """Service infra/errors: its first port (8080) is the one used, not the second."""
    return [
        service("errors", [8080, ("other", 9090)], namespace="infra"),
        endpoint_slice("errors", [("10.9.0.1", ready)], 18080, namespace="infra"),
        endpoint_slice("errors", ["10.9.0.2"], 19090, port_name="other", namespace="infra"),
    ]


def web_ingress(name: str = "web", host: str = "a.test", **annotations: str) -> list:
    ing = ingress(
        name,
        [rule(host, path("/app", "web"), path("/empty", "empty"), path("/gone", "gone"))],
        annotations={NGINX + k.replace("_", "-"): v for k, v in annotations.items()},
    )
    return [
        ing,
        service("web"),
        endpoint_slice("web", ["10.0.0.1"]),
        service("empty"),
        endpoint_slice("empty", [("10.0.0.9", False)]),
        service("pages"),
        endpoint_slice("pages", ["10.0.5.1"]),
    ]


def ours(table: RouteTable) -> list[str]:
    """The problems about default backends (web_ingress's path to "gone" makes another)."""
    return [str(p) for p in table.problems if "default-backend" in str(p)]


def head(host: str, p: str = "/", **kw: object) -> RequestHead:
    return request(host, p, **kw)  # type: ignore[arg-type]


# -- --default-backend-service ------------------------------------------------------------


def test_unmatched_hosts_and_paths_go_to_the_first_port_of_the_default_backend() -> None:
    table = build(*web_ingress(), *errors_service(), options=DEFAULT)
    for h, p in [("nowhere.test", "/"), ("a.test", "/other"), ("a.test", "/")]:
        action = decide(table, head(h, p))
        assert isinstance(action, Forward), (h, p, action)
        assert str(action.endpoint) == "10.9.0.1:18080"
        assert action.backend.name == "infra/errors:8080"
        assert action.request_headers == ()  # a plain request, not an error page
    assert isinstance(decide(table, head("a.test", "/app")), Forward)
    assert decide(table, head("a.test", "/app")).backend.name == "default/web:80"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("objs", "reason"),
    [
        ([], "service infra/errors not found"),
        (errors_service(ready=False), "service infra/errors has no ready endpoints"),
        ([service("errors", [], namespace="infra")], "service infra/errors has no ports"),
    ],
)
def test_a_default_backend_that_cannot_serve_leaves_ingressds_404_and_says_why(
    objs: list, reason: str
) -> None:
    table = build(*web_ingress(), *objs, options=DEFAULT)
    assert table.fallback is None
    action = decide(table, head("nowhere.test"))
    assert isinstance(action, Respond) and action.status == 404
    [problem] = [p for p in table.problems if p.obj.startswith("--default-backend-service")]
    assert problem.reason == f"{reason}; what it would serve gets ingressd's own 404"
    assert problem.ref == ("Service", "infra", "errors")


def test_no_default_backend_service_keeps_the_404() -> None:
    table = build(*web_ingress(), *errors_service())
    assert table.fallback is None and table.custom_http_errors == frozenset()
    assert decide(table, head("nowhere.test")).status == 404  # type: ignore[union-attr]


def test_spec_default_backend_still_comes_first() -> None:
    catch_all = ingress("catch", default_backend=backend("web"))
    host_default = ingress(
        "host", [rule("b.test", path("/x", "web"))], default_backend=backend("pages")
    )
    table = build(*web_ingress(), catch_all, host_default, *errors_service(), options=DEFAULT)
    assert decide(table, head("nowhere.test")).backend.name == "default/web:80"  # type: ignore[union-attr]
    assert decide(table, head("b.test", "/y")).backend.name == "default/pages:80"  # type: ignore[union-attr]


def test_the_builder_follows_the_default_backend_service_live() -> None:
    builder = TableBuilder(DEFAULT)
    base = [ingress_class(), *web_ingress()]
    table = builder.build(snapshot(*base, *errors_service(ready=False)))
    assert table.fallback is None and ours(table)
    table = builder.build(snapshot(*base, *errors_service()))
    assert table.fallback is not None and not ours(table)
    first = table.fallback.backend
    # Nothing changed: the same Backend (its round-robin position) is kept.
    again = builder.build(snapshot(*base, *errors_service()), generation=2)
    assert again.fallback is not None and again.generation == 2
    table = builder.build(snapshot(*base))
    assert table.fallback is None
    assert first.name == "infra/errors:8080"
    assert builder.build(snapshot(*base, *errors_service())).custom_http_errors == {418}


# -- the default-backend annotation -----------------------------------------------------------


def test_the_annotation_stands_in_for_a_service_without_endpoints() -> None:
    table = build(*web_ingress(default_backend="pages"))
    for p, service_name in [("/empty/x", "empty"), ("/gone/x", "gone")]:
        action = decide(table, head("a.test", p, query="q=1"))
        assert isinstance(action, Forward), action
        assert (action.backend.name, action.target) == ("default/pages:80", f"{p}?q=1")
        assert dict(action.request_headers) == {
            b"X-Code": b"503",
            b"X-Format": b"",  # no Accept: empty, so not sent
            b"X-Namespace": b"default",
            b"X-Ingress-Name": b"web",
            b"X-Service-Name": service_name.encode(),
            b"X-Service-Port": b"80",
        }
    # A Service with endpoints is not replaced; nor are unmatched paths taken (404 here).
    assert decide(table, head("a.test", "/app")).backend.name == "default/web:80"  # type: ignore[union-attr]
    assert decide(table, head("a.test", "/other")).status == 404  # type: ignore[union-attr]


def test_the_annotation_needs_ready_endpoints_and_an_existing_service() -> None:
    objs = web_ingress(default_backend="empty")
    table = build(*objs)
    assert decide(table, head("a.test", "/empty/x")).status == 503  # type: ignore[union-attr]
    assert not ours(table)  # no endpoints just now: not a fault of the Ingress
    table = build(*web_ingress(default_backend="nowhere"))
    assert decide(table, head("a.test", "/empty/x")).status == 503  # type: ignore[union-attr]
    assert ours(table) == [
        "Ingress default/web: default-backend: service default/nowhere not found; "
        "the annotation is ignored"
    ]


def test_an_invalid_default_backend_is_reported_and_ignored() -> None:
    table = build(*web_ingress(default_backend="Not_A_Name"))
    assert any("default-backend='Not_A_Name' is invalid" in p.reason for p in table.problems)
    assert decide(table, head("a.test", "/empty")).status == 503  # type: ignore[union-attr]


# -- custom-http-errors: which statuses, which page ----------------------------------------------


def route_of(table: RouteTable, host: str, p: str):  # type: ignore[no-untyped-def]
    return table.route_for(host, p)


def test_the_annotation_list_replaces_the_global_one() -> None:
    table = build(*web_ingress(custom_http_errors="404,503"), *errors_service(), options=DEFAULT)
    route = route_of(table, "a.test", "/app")
    assert [intercepted(table, route, s) for s in (404, 503, 418, 500)] == [
        True,
        True,
        False,
        False,
    ]
    other = build(*web_ingress(), *errors_service(), options=DEFAULT)
    route = route_of(other, "a.test", "/app")
    assert [intercepted(other, route, s) for s in (404, 503, 418)] == [False, False, True]
    assert intercepted(other, other.fallback, 418)  # type: ignore[arg-type]


def test_grpc_routes_are_not_intercepted() -> None:
    table = build(
        *web_ingress(custom_http_errors="503", backend_protocol="GRPC"),
        *errors_service(),
        options=DEFAULT,
    )
    assert not intercepted(table, route_of(table, "a.test", "/app"), 503)


def test_the_error_page_request() -> None:
    table = build(
        *web_ingress(custom_http_errors="503", default_backend="pages"),
        *errors_service(),
        options=DEFAULT,
    )
    route = route_of(table, "a.test", "/app")
    page = error_page(table, route, 503, "/app/x?a=1", "a=1", b"text/html")
    assert isinstance(page, Forward)
    assert (page.backend.name, page.target) == ("default/pages:80", "/?a=1")
    assert dict(page.request_headers) == {
        b"X-Code": b"503",
        b"X-Format": b"text/html",
        b"X-Original-URI": b"/app/x?a=1",
        b"X-Namespace": b"default",
        b"X-Ingress-Name": b"web",
        b"X-Service-Name": b"web",
        b"X-Service-Port": b"80",
    }
    # The page's request is a plain one: its own answer is never intercepted by its route.
    assert page.route.plain and page.route.ingress == "default/web"


def test_without_the_annotations_service_the_global_default_backend_serves_the_page() -> None:
    for given in ({"custom_http_errors": "503"}, {}):
        options = (
            DEFAULT
            if given
            else BuildOptions(default_backend_service="infra/errors", custom_http_errors=(503,))
        )
        table = build(*web_ingress(**given), *errors_service(), options=options)
        page = error_page(table, route_of(table, "a.test", "/app"), 503, "/app", "", None)
        assert isinstance(page, Forward)
        assert (page.backend.name, page.target) == ("infra/errors:8080", "/")
    # The global list always goes to the global default backend, even beside the annotation.
    options = BuildOptions(default_backend_service="infra/errors", custom_http_errors=(503,))
    table = build(*web_ingress(default_backend="pages"), *errors_service(), options=options)
    page = error_page(table, route_of(table, "a.test", "/app"), 503, "/app", "", None)
    assert page.backend.name == "infra/errors:8080"  # type: ignore[union-attr]


def test_without_any_default_backend_the_page_is_ingressds_404() -> None:
    table = build(*web_ingress(custom_http_errors="503"))
    page = error_page(table, route_of(table, "a.test", "/app"), 503, "/app", "", None)
    assert isinstance(page, Respond) and page.status == 404
    assert "no default backend" in page.body


def test_what_no_ingress_routes_sends_no_ingress_headers() -> None:
    table = build(*errors_service(), options=DEFAULT)
    page = error_page(table, table.fallback, 418, "/x", "", None)  # type: ignore[arg-type]
    assert isinstance(page, Forward)
    headers = dict(page.request_headers)
    assert headers[b"X-Code"] == b"418"
    for name in (b"X-Namespace", b"X-Ingress-Name", b"X-Service-Name", b"X-Service-Port"):
        assert headers[name] == b""  # empty: not sent (nginx's proxy_set_header "")


@pytest.mark.parametrize(
    "annotations",
    [
        {"allowlist_source_range": "10.0.0.0/8"},
        {"denylist_source_range": "192.0.2.0/24"},
        {"auth_url": "http://auth.test/check"},
        {"auth_type": "basic", "auth_secret": "missing"},  # fails closed: 503
        {"auth_tls_secret": "default/ca"},  # host-wide denial
    ],
)
def test_unmatched_paths_of_a_host_with_access_control_keep_the_404(
    annotations: dict[str, str],
) -> None:
    # ingress-nginx puts the oldest Ingress's annotations on the host's "/" location;
    # ingressd does not send those paths to the default backend without them.
    table = build(*web_ingress(**annotations), *errors_service(), options=DEFAULT)
    action = decide(table, head("a.test", "/other"))
    assert isinstance(action, Respond) and action.status == 404, action
    assert isinstance(decide(table, head("nowhere.test")), Forward)
    # Only the oldest Ingress of the host decides, as for ingress-nginx's "/" location.
    younger = ingress(
        "younger",
        [rule("b.test", path("/y", "web"))],
        annotations={NGINX + "allowlist-source-range": "10.0.0.0/8"},
    )
    older = ingress("older", [rule("b.test", path("/o", "web"))], created=0)
    table = build(*web_ingress(), younger, older, *errors_service(), options=DEFAULT)
    assert isinstance(decide(table, head("b.test", "/other")), Forward)
