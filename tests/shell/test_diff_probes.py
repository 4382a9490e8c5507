"""``ingressd diff``'s probe generation: a pure function of the routing table.

Each route shape gets the probes that show its behaviour, and each probe's
``expect`` (what the table serves it with) agrees with what it is for: a
path's own probes reach the route, its near-misses do not.
"""

from __future__ import annotations

from k8s_objects import build, endpoint_slice, ingress, path, rule, service, tls_entry

from ingressd.diff.probes import (
    FOREIGN_ORIGIN,
    NO_MATCH_PATH,
    UNKNOWN_HOST,
    Probe,
    bound,
    generate,
)
from ingressd.diff.sample import samples
from ingressd.model.objects import Obj
from ingressd.model.regex import UserRegex

A = "nginx.ingress.kubernetes.io/"


def table_of(*ingresses: Obj) -> tuple[Probe, ...]:
    return generate(
        build(
            service("web"),
            endpoint_slice("web", ["10.0.0.1"]),
            service("api"),
            endpoint_slice("api", ["10.0.0.2"]),
            *ingresses,
        )
    )


def one(name: str, host: str | None, *paths: dict, **annotations: str) -> Obj:
    return ingress(
        name,
        [rule(host, *(paths or (path("/", "web"),)))],
        annotations={A + k.replace("_", "-"): v for k, v in annotations.items()},
    )


def find(
    probes: tuple[Probe, ...], *, method: str = "GET", scheme: str = "http", **kw: str
) -> Probe:
    for p in probes:
        if (
            p.method == method
            and p.scheme == scheme
            and all(getattr(p, k) == v for k, v in kw.items())
        ):
            return p
    raise AssertionError(f"no probe {method} {scheme} {kw} in {[(p.host, p.path) for p in probes]}")


def whys(probes: tuple[Probe, ...], **kw: str) -> str:
    return " | ".join(
        w for p in probes if all(getattr(p, k) == v for k, v in kw.items()) for w in p.why
    )


def test_prefix_path_deeper_and_near_miss() -> None:
    probes = table_of(one("api", "a.test", path("/api", "api"), path("/", "web")))
    assert find(probes, host="a.test", path="/api").expect == "default/api Prefix /api"
    assert (
        find(probes, host="a.test", path="/api/ingressd-diff").expect == "default/api Prefix /api"
    )
    near = find(probes, host="a.test", path="/apix")
    assert near.expect == "default/api Prefix /" and "near-miss of Prefix /api" in near.why
    # Plain host: the path itself also over TLS, with SNI.
    assert find(probes, scheme="https", host="a.test", path="/api").why


def test_prefix_with_trailing_slash_gets_the_one_slash_short_probe() -> None:
    probes = table_of(one("docs", "d.test", path("/docs/", "web")))
    short = find(probes, host="d.test", path="/docs")
    assert "near-miss of Prefix /docs/: one slash short" in short.why


def test_exact_path_deeper_path_must_not_match() -> None:
    probes = table_of(
        one("ex", "e.test", path("/exact", "api", path_type="Exact"), path("/", "web"))
    )
    assert find(probes, host="e.test", path="/exact").expect == "default/ex Exact /exact"
    deeper = find(probes, host="e.test", path="/exact/ingressd-diff")
    assert deeper.expect == "default/ex Prefix /"
    assert find(probes, host="e.test", path="/exactx").expect == "default/ex Prefix /"


def test_regex_samples_match_and_the_no_match_sample_does_not() -> None:
    probes = table_of(
        one(
            "re",
            "r.test",
            path("/v[0-9]+/items/(\\d+)", "api", path_type="ImplementationSpecific"),
            use_regex="true",
        )
    )
    matching = [p for p in probes if p.host == "r.test" and any("matches" in w for w in p.why)]
    assert matching, whys(probes, host="r.test")
    pattern = UserRegex("^/v[0-9]+/items/(\\d+)", ignore_case=True)
    for p in matching:
        assert pattern.matches(p.path), p.path
        assert p.expect == "default/re regex ^/v[0-9]+/items/(\\d+)"
    miss = find(probes, host="r.test", path=NO_MATCH_PATH)
    assert "must not match" in miss.why[0] and miss.expect == "no route (404)"


def test_regex_sample_generator() -> None:
    assert samples("^/api/(users|groups)/[a-z]+$") == ("/api/users/a", "/api/groups/aa")
    assert samples("^/v[0-9]{2,3}/x?$") == ("/v00/", "/v000/x")
    assert samples("^/static/.*\\.(css|js)") == ("/static/.css", "/static/a.js")
    assert samples("^/(?=x)") == ()  # lookahead: not walked (RE2 refuses it anyway)
    assert samples("^/a{5000}") == ()  # bounded: no huge repeat
    assert samples("^/[") == ()  # not a pattern


def test_wildcard_host_one_label_matches_two_labels_do_not() -> None:
    probes = table_of(one("wild", "*.apps.test"))
    inside = find(probes, host="ingressd-diff.apps.test", path="/")
    assert inside.expect == "default/wild Prefix /"
    outside = find(probes, host="a.ingressd-diff.apps.test", path="/")
    assert outside.expect == "no route (404)" and "two labels" in outside.why[0]


def test_tls_host_plain_probe_is_the_ssl_redirect() -> None:
    probes = table_of(
        ingress("tls", [rule("t.test", path("/", "web"))], tls=[tls_entry(["t.test"], None)])
    )
    plain = find(probes, host="t.test", path="/")
    assert "the ssl-redirect" in plain.why[0]
    assert find(probes, scheme="https", host="t.test", path="/ingressd-diff")


def test_canary_header_value_and_cookie() -> None:
    main = one("main", "c.test")
    canary = ingress(
        "main-canary",
        [rule("c.test", path("/", "api"))],
        annotations={
            A + "canary": "true",
            A + "canary-by-header": "X-Canary",
            A + "canary-by-header-value": "v2",
            A + "canary-by-cookie": "use_canary",
            A + "canary-weight": "30",
        },
        created=5,
    )
    probes = table_of(main, canary)
    to_canary = find(probes, host="c.test", headers=(("x-canary", "v2"),))
    assert to_canary.same_backend and to_canary.ingress == "default/main"
    other = find(probes, host="c.test", headers=(("x-canary", "ingressd-diff"),))
    assert not other.same_backend  # falls through to the 30% weight
    for value in ("always", "never"):
        assert find(probes, host="c.test", cookies=(("use_canary", value),)).same_backend
    plain = find(probes, host="c.test", path="/")
    assert not plain.same_backend and "weight 30/100" in " ".join(plain.why)


def test_canary_header_always_never_and_deterministic_weights() -> None:
    main = one("m", "h.test")
    canary = ingress(
        "m-canary",
        [rule("h.test", path("/", "api"))],
        annotations={
            A + "canary": "true",
            A + "canary-by-header": "X-Beta",
            A + "canary-weight": "0",
        },
        created=5,
    )
    probes = table_of(main, canary)
    for value in ("always", "never"):
        assert find(probes, host="h.test", headers=(("x-beta", value),))
    assert find(probes, host="h.test", path="/").same_backend  # weight 0: always main


def test_redirects_app_root_and_rewrite() -> None:
    probes = table_of(
        one("perm", "p.test", permanent_redirect="https://x.test/", permanent_redirect_code="308"),
        one("temp", "t.test", temporal_redirect="https://x.test/"),
        one("root", "r.test", app_root="/home"),
        one("rw", "w.test", path("/old", "web"), rewrite_target="/new", use_regex="false"),
    )
    assert "permanent-redirect (308)" in whys(probes, host="p.test", path="/")
    assert "temporal-redirect (302)" in whys(probes, host="t.test", path="/")
    assert "app-root /home: / redirects" in whys(probes, host="r.test", path="/")
    assert "rewrite-target /new" in whys(probes, host="w.test", path="/old")
    query = find(probes, host="w.test", path="/old?ingressd-diff=1")
    assert "the query string" in query.why[0]


def test_cors_preflight_and_foreign_origin() -> None:
    probes = table_of(
        one("cors", "o.test", enable_cors="true", cors_allow_origin="https://ui.test")
    )
    preflight = find(
        probes,
        method="OPTIONS",
        host="o.test",
        headers=(("Origin", "https://ui.test"), ("Access-Control-Request-Method", "GET")),
    )
    assert preflight.safe and "CORS preflight" in preflight.why[0]
    assert find(
        probes,
        method="OPTIONS",
        host="o.test",
        headers=(("Origin", FOREIGN_ORIGIN), ("Access-Control-Request-Method", "GET")),
    )
    assert find(probes, host="o.test", headers=(("Origin", "https://ui.test"),))


def test_auth_routes_get_an_unauthenticated_request() -> None:
    probes = table_of(one("ext", "x.test", auth_url="http://auth.test/check"))
    assert "auth-url: an unauthenticated request" in whys(probes, host="x.test", path="/")


def test_rules_without_host_and_unknown_hosts() -> None:
    probes = table_of(one("any", None, path("/svc", "web")))
    assert find(probes, host=UNKNOWN_HOST, path="/svc").expect == "default/any Prefix /svc"
    fallback = find(probes, host=UNKNOWN_HOST, path="/ingressd-diff")
    assert "a host no rule names" in " ".join(fallback.why)
    assert fallback.expect == "no route (404)" and fallback.ingress == ""
    # A catch-all "/" takes the unknown host: the probe is that Ingress's.
    probes = table_of(one("all", None, path("/", "web")))
    caught = find(probes, host=UNKNOWN_HOST, path="/ingressd-diff")
    assert caught.ingress == "default/all" and caught.expect == "default/all Prefix /"


def test_a_host_default_backend_is_probed() -> None:
    ing = ingress(
        "dflt",
        [rule("d.test", path("/app", "web"))],
        default_backend={"service": {"name": "api", "port": {"number": 80}}},
    )
    probes = table_of(ing)
    other = find(probes, host="d.test", path="/ingressd-diff")
    assert "spec.defaultBackend" in " ".join(other.why)


def test_unsafe_methods_are_marked_and_probes_are_unique() -> None:
    probes = table_of(one("api", "a.test"), one("b", "b.test", path("/b", "web")))
    posts = [p for p in probes if p.method == "POST"]
    assert posts and not any(p.safe for p in posts)
    assert len({p.key for p in probes}) == len(probes)
    assert generate(build(service("web"), one("api", "a.test"))) == generate(
        build(service("web"), one("api", "a.test"))
    )  # pure: the same table, the same probes


def test_bound_keeps_every_ingress_first_probes() -> None:
    probes = table_of(
        *(one(f"i{n}", f"h{n}.test", path("/a", "web"), path("/b", "web")) for n in range(5))
    )
    kept, dropped = bound(probes, 5)
    assert len(kept) == 5 and dropped == len(probes) - 5
    assert {p.ingress for p in kept} == {f"default/i{n}" for n in range(5)}
    assert all(p.path == "/a" for p in kept)  # each Ingress's first probe: its first path
    assert bound(probes, 10_000) == (probes, 0)
