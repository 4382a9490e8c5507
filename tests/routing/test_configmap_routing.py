"""The controller ConfigMap in the table: HSTS, redirects, route defaults, problems."""

from __future__ import annotations

from k8s_objects import (
    build,
    endpoint_slice,
    ingress,
    ingress_class,
    path,
    request,
    rule,
    service,
    snapshot,
    tls_entry,
    tls_secret,
)

from ingressd.model.objects import Obj
from ingressd.routing.build import BuildOptions, TableBuilder
from ingressd.routing.decide import Forward, RequestHead, Respond, decide

NGINX = "nginx.ingress.kubernetes.io/"
CM = ("ingressd", "controller")
OPTIONS = BuildOptions(configmap=CM)
HSTS = b"max-age=31536000; includeSubDomains"


def configmap(data: dict[str, str], name: str = CM[1]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": CM[0]},
        "data": data,
    }


def site(*extra: Obj, annotations: dict[str, str] | None = None) -> list[Obj]:
    """secure.test (spec.tls, its own certificate), plain.test (no TLS), one endpoint each."""
    return [
        service("web"),
        endpoint_slice("web", ["10.0.0.1"]),
        tls_secret("secure-tls", ["secure.test"]),
        ingress(
            "secure",
            [rule("secure.test", path("/", "web"), path("/.well-known/acme-challenge/t", "web"))],
            tls=[tls_entry(["secure.test"], "secure-tls")],
            annotations=annotations,
        ),
        ingress("plain", [rule("plain.test", path("/", "web"))]),
        ingress(
            "nocert",
            [rule("nocert.test", path("/", "web"))],
            tls=[tls_entry(["nocert.test"], "missing-tls")],
        ),
        *extra,
    ]


def sts(action: Forward | Respond) -> bytes | None:
    if isinstance(action, Forward):
        return action.hsts
    found = [v for n, v in action.headers if n == b"Strict-Transport-Security"]
    assert len(found) <= 1
    return found[0] if found else None


def test_hsts_by_default_on_tls_requests_of_hosts_with_a_certificate() -> None:
    table = build(*site())  # no ConfigMap at all
    assert table.hsts == HSTS
    assert sts(decide(table, request("secure.test", "/", tls=True))) == HSTS
    # ingressd's own answers carry it too, as nginx's header filter adds it to every response
    assert sts(decide(table, request("secure.test", "/nothing-here", tls=True))) == HSTS
    # never on plain HTTP (the 308 to https), nor on a host without a certificate of its own
    redirect = decide(table, request("secure.test", "/"))
    assert isinstance(redirect, Respond) and redirect.status == 308
    assert sts(redirect) is None
    assert sts(decide(table, request("plain.test", "/", tls=True))) is None
    assert sts(decide(table, request("nocert.test", "/", tls=True))) is None
    assert sts(decide(table, request("plain.test", "/"))) is None


def test_hsts_keeps_the_fast_path_of_routes_without_annotations() -> None:
    table = build(*site())
    route = table.route_for("secure.test", "/")
    assert route is not None and route.plain


def test_hsts_settings_from_the_configmap() -> None:
    table = build(*site(configmap({"hsts-max-age": "60", "hsts-preload": "true"})), options=OPTIONS)
    assert sts(decide(table, request("secure.test", "/", tls=True))) == (
        b"max-age=60; includeSubDomains; preload"
    )
    off = build(*site(configmap({"hsts": "false"})), options=OPTIONS)
    assert sts(decide(off, request("secure.test", "/", tls=True))) is None


def test_ssl_redirect_key_is_the_default_the_annotation_overrides() -> None:
    table = build(*site(configmap({"ssl-redirect": "false"})), options=OPTIONS)
    assert isinstance(decide(table, request("secure.test", "/")), Forward)
    annotated = build(
        *site(configmap({"ssl-redirect": "false"}), annotations={NGINX + "ssl-redirect": "true"}),
        options=OPTIONS,
    )
    action = decide(annotated, request("secure.test", "/"))
    assert isinstance(action, Respond) and action.status == 308


def test_force_ssl_redirect_key_redirects_hosts_without_tls() -> None:
    table = build(*site(configmap({"force-ssl-redirect": "true"})), options=OPTIONS)
    action = decide(table, request("plain.test", "/x"))
    assert isinstance(action, Respond) and action.status == 308
    assert action.location == "https://plain.test/x"


def test_no_tls_redirect_locations_by_ingress_path() -> None:
    table = build(*site())  # the default: /.well-known/acme-challenge
    assert isinstance(
        decide(table, request("secure.test", "/.well-known/acme-challenge/t")), Forward
    )
    action = decide(table, request("secure.test", "/other"))
    assert isinstance(action, Respond) and action.status == 308
    none = build(*site(configmap({"no-tls-redirect-locations": ""})), options=OPTIONS)
    action = decide(none, request("secure.test", "/.well-known/acme-challenge/t"))
    assert isinstance(action, Respond) and action.status == 308


def test_block_cidrs_and_source_ranges_apply_to_every_route() -> None:
    table = build(*site(configmap({"block-cidrs": "192.0.2.0/24"})), options=OPTIONS)
    action = decide(table, request("plain.test", "/"))  # the request comes from 192.0.2.1
    assert isinstance(action, Respond) and action.status == 403
    allow = build(*site(configmap({"whitelist-source-range": "10.0.0.0/8"})), options=OPTIONS)
    action = decide(allow, request("plain.test", "/"))
    assert isinstance(action, Respond) and action.status == 403
    # the annotation wins over the key
    annotated = build(
        *site(
            configmap({"whitelist-source-range": "10.0.0.0/8"}),
            annotations={NGINX + "allowlist-source-range": "192.0.2.0/24"},
        ),
        options=OPTIONS,
    )
    assert isinstance(decide(annotated, request("secure.test", "/", tls=True)), Forward)


def test_access_control_that_cannot_be_honoured_denies_every_route() -> None:
    # An invalid global-auth-url: every route answers 503 (ingress-nginx would serve
    # without it, only logging "Global auth location denied").
    table = build(*site(configmap({"global-auth-url": "ftp://auth/"})), options=OPTIONS)
    action = decide(table, request("plain.test", "/"))
    assert isinstance(action, Respond) and action.status == 503
    assert "global-auth-url" in action.body
    invalid = build(*site(configmap({"block-cidrs": "nonsense"})), options=OPTIONS)
    action = decide(invalid, request("secure.test", "/", tls=True))
    assert isinstance(action, Respond) and action.status == 503


def ua_request(host: str, agent: str, *, tls: bool = False) -> RequestHead:
    return RequestHead(
        method="GET",
        host=host,
        path="/",
        query="",
        client_ip="192.0.2.1",
        tls=tls,
        headers=[(b"Host", host.encode()), (b"User-Agent", agent.encode())],
    )


def test_blocked_user_agents_get_403_on_every_route_before_redirects() -> None:
    table = build(*site(configmap({"block-user-agents": "~*bot"})), options=OPTIONS)
    for host in ("plain.test", "secure.test"):  # secure.test would redirect: 403 first
        action = decide(table, ua_request(host, "GoodBot/2"))
        assert isinstance(action, Respond) and action.status == 403, host
    assert isinstance(decide(table, ua_request("plain.test", "Mozilla/5.0")), Forward)
    assert isinstance(decide(table, request("plain.test", "/")), Forward)  # no User-Agent


def test_next_upstream_key_is_the_default_and_annotations_override_parts() -> None:
    data = {"proxy-next-upstream": "error timeout http_503", "proxy-next-upstream-tries": "5"}
    table = build(
        *site(configmap(data), annotations={NGINX + "proxy-next-upstream-tries": "2"}),
        options=OPTIONS,
    )
    plain = table.route_for("plain.test", "/")
    secure = table.route_for("secure.test", "/")
    assert plain is not None and secure is not None
    assert plain.policy.next_upstream.statuses == frozenset({503})
    assert plain.policy.next_upstream.tries == 5
    assert secure.policy.next_upstream.statuses == frozenset({503})
    assert secure.policy.next_upstream.tries == 2


def test_configmap_problems_are_reported_on_the_configmap() -> None:
    table = build(*site(configmap({"hsts": "maybe", "use-gzip": "true"})), options=OPTIONS)
    found = [p for p in table.problems if p.obj == "ConfigMap ingressd/controller"]
    assert len(found) == 2
    assert all(p.ref == ("ConfigMap", "ingressd", "controller") for p in found)
    assert any("hsts='maybe' is invalid" in p.reason for p in found)
    assert table.hsts == HSTS  # the default stands in for the bad value


def test_a_missing_configmap_is_reported_and_the_defaults_apply() -> None:
    table = build(*site(), options=OPTIONS)
    [problem] = [p for p in table.problems if p.obj == "ConfigMap ingressd/controller"]
    assert "not found" in problem.reason
    assert table.hsts == HSTS


def test_other_configmaps_are_not_read() -> None:
    table = build(*site(configmap({"hsts": "false"}, name="other")), options=OPTIONS)
    assert table.hsts == HSTS
    unnamed = build(*site(configmap({"hsts": "false"})))  # no --configmap: none read
    assert unnamed.hsts == HSTS


def test_a_changed_configmap_rebuilds_every_route_incrementally_built_or_not() -> None:
    objs = [ingress_class(), *site()]
    builder = TableBuilder(OPTIONS)
    first = builder.build(snapshot(*objs, configmap({"ssl-redirect": "true"})))
    assert isinstance(decide(first, request("secure.test", "/")), Respond)
    second = builder.build(snapshot(*objs, configmap({"ssl-redirect": "false", "hsts": "0"})))
    assert isinstance(decide(second, request("secure.test", "/")), Forward)
    assert second.hsts is None
    # a new problem alone (the same settings) still makes a new table with it
    third = builder.build(
        snapshot(*objs, configmap({"ssl-redirect": "false", "hsts": "0", "x-unknown": "1"}))
    )
    assert any("x-unknown" in p.reason for p in third.problems)
    assert not any("x-unknown" in p.reason for p in second.problems)
