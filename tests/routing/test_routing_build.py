"""build_table: which Ingresses are ours, how backends resolve, how Ingresses merge."""

from __future__ import annotations

import itertools

import pytest
from k8s_objects import (
    LEGACY_CLASS_ANNOTATION,
    backend,
    build,
    endpoint_slice,
    ingress,
    ingress_class,
    path,
    rule,
    service,
    snapshot,
)

from ingressd.model.backend import Backend, Endpoint
from ingressd.model.objects import Obj, ObjectStore
from ingressd.model.problems import Problem
from ingressd.model.table import RouteTable
from ingressd.routing.build import BuildOptions, build_table

HOST = "example.com"


def web_ingress(name: str = "web", **kw: object) -> Obj:
    return ingress(name, [rule(HOST, path("/", "web"))], **kw)  # type: ignore[arg-type]


def routed(table: RouteTable) -> bool:
    return table.route_for(HOST, "/") is not None


def reasons(table: RouteTable, obj: str) -> list[str]:
    return [p.reason for p in table.problems if p.obj == obj]


# -- IngressClass selection ------------------------------------------------------------

OTHER = "k8s.io/ingress-nginx"

# (IngressClasses present, Ingress keyword arguments, options, ours?)
CLASS_CASES = [
    pytest.param([ingress_class("ingressd")], {"class_name": "ingressd"}, None, True, id="named"),
    pytest.param(
        [ingress_class("mine")], {"class_name": "mine"}, None, True, id="named-any-class-name"
    ),
    pytest.param(
        [ingress_class("nginx", OTHER)], {"class_name": "nginx"}, None, False, id="other-ctrl"
    ),
    pytest.param(
        [ingress_class("ingressd"), ingress_class("nginx", OTHER, default=True)],
        {"class_name": "ingressd"},
        None,
        True,
        id="named-ours-other-is-default",
    ),
    pytest.param([], {"class_name": "ghost"}, None, False, id="named-class-missing"),
    pytest.param(
        [ingress_class("ingressd", default=True)], {"class_name": None}, None, True, id="default"
    ),
    pytest.param([ingress_class("ingressd")], {"class_name": None}, None, False, id="no-default"),
    pytest.param(
        [ingress_class("ingressd"), ingress_class("nginx", OTHER, default=True)],
        {"class_name": None},
        None,
        False,
        id="default-is-other-controllers",
    ),
    pytest.param(
        [],
        {"class_name": None, "annotations": {LEGACY_CLASS_ANNOTATION: "ingressd"}},
        None,
        True,
        id="legacy-annotation",
    ),
    pytest.param(
        [],
        {"class_name": None, "annotations": {LEGACY_CLASS_ANNOTATION: "nginx"}},
        None,
        False,
        id="legacy-annotation-other",
    ),
    pytest.param(
        [ingress_class("ingressd", default=True)],
        {"class_name": None, "annotations": {LEGACY_CLASS_ANNOTATION: "nginx"}},
        None,
        False,
        id="legacy-annotation-other-beats-default",
    ),
    pytest.param(
        [],
        {"class_name": None, "annotations": {LEGACY_CLASS_ANNOTATION: "public"}},
        BuildOptions(ingress_class="public"),
        True,
        id="legacy-annotation-custom-class",
    ),
    pytest.param(
        [],
        {"class_name": None, "annotations": {LEGACY_CLASS_ANNOTATION: "ingressd"}},
        BuildOptions(ingress_class="public"),
        False,
        id="legacy-annotation-not-our-custom-class",
    ),
    pytest.param(
        [ingress_class("ingressd", "example.org/other")],
        {"class_name": "ingressd"},
        BuildOptions(controller_name="example.org/other"),
        True,
        id="custom-controller-name",
    ),
    pytest.param(
        [ingress_class("ingressd")],
        {"class_name": "ingressd"},
        BuildOptions(controller_name="example.org/other"),
        False,
        id="class-of-default-controller-not-ours-under-custom-name",
    ),
]


@pytest.mark.parametrize(("classes", "kw", "options", "ours"), CLASS_CASES)
def test_ingress_class_selection(
    classes: list[Obj], kw: dict, options: BuildOptions | None, ours: bool
) -> None:
    table = build(*classes, web_ingress(**kw), service("web"), with_class=False, options=options)
    assert routed(table) is ours
    if not ours:
        # Ingresses of other controllers are none of our business.
        assert reasons(table, "Ingress default/web") == [] or kw.get("class_name") == "ingressd"


def test_missing_class_with_our_name_is_reported() -> None:
    table = build(web_ingress(class_name="ingressd"), service("web"), with_class=False)
    assert not routed(table)
    assert reasons(table, "Ingress default/web") == ["IngressClass 'ingressd' does not exist"]


def test_other_controllers_ingress_is_not_reported_even_if_broken() -> None:
    broken = ingress("theirs", [rule("BAD_HOST", path("/", "nope"))], class_name="nginx")
    table = build(ingress_class("nginx", OTHER), broken)
    assert table.problems == ()
    assert table.exact_hosts == {}


# -- backends ------------------------------------------------------------------------


def backend_of(*objs: Obj, port: int | str = 80, service_name: str = "web") -> Backend:
    table = build(ingress("web", [rule(HOST, path("/", service_name, port))]), *objs)
    route = table.route_for(HOST, "/")
    assert route is not None
    return route.backend


def test_backend_by_port_number() -> None:
    b = backend_of(service("web", [80, 443]), endpoint_slice("web", ["10.0.0.1"], 8080))
    assert b.name == "default/web:80"
    assert b.error is None
    assert b.endpoints == (Endpoint("10.0.0.1", 8080),)


def test_backend_by_port_name_uses_matching_slice_port() -> None:
    b = backend_of(
        service("web", [("http", 80), ("admin", 9000)]),
        endpoint_slice("web", ["10.0.0.1"], 8080, port_name="http"),
        endpoint_slice("web", ["10.0.0.1"], 9090, port_name="admin"),
        port="admin",
    )
    assert b.name == "default/web:admin"
    assert b.endpoints == (Endpoint("10.0.0.1", 9090),)


def test_backend_by_number_with_named_service_port() -> None:
    b = backend_of(
        service("web", [("http", 80), ("admin", 9000)]),
        endpoint_slice("web", ["10.0.0.1"], 8080, port_name="http"),
        endpoint_slice("web", ["10.0.0.1"], 9090, port_name="admin"),
        port=80,
    )
    assert b.endpoints == (Endpoint("10.0.0.1", 8080),)


def test_slice_port_name_must_match() -> None:
    b = backend_of(
        service("web", [("http", 80)]),
        endpoint_slice("web", ["10.0.0.1"], 8080, port_name="other"),
    )
    assert b.error is None
    assert b.endpoints == ()


def test_unready_endpoints_skipped_and_missing_ready_treated_as_ready() -> None:
    b = backend_of(
        service("web"),
        endpoint_slice("web", [("10.0.0.1", True), ("10.0.0.2", False), ("10.0.0.3", None)], 8080),
    )
    assert b.endpoints == (Endpoint("10.0.0.1", 8080), Endpoint("10.0.0.3", 8080))


def test_multiple_slices_merge() -> None:
    b = backend_of(
        service("web"),
        endpoint_slice("web", ["10.0.0.2", "10.0.0.1"], 8080, name="web-a"),
        endpoint_slice("web", ["10.0.0.3", "10.0.0.1"], 8080, name="web-b"),
        # A slice of another Service, and of the same name in another namespace.
        endpoint_slice("api", ["10.9.9.9"], 8080, name="api-a"),
        endpoint_slice("web", ["10.8.8.8"], 8080, name="web-c", namespace="other"),
    )
    assert b.endpoints == tuple(Endpoint(f"10.0.0.{i}", 8080) for i in (1, 2, 3))


def test_round_robin_across_endpoints() -> None:
    b = backend_of(service("web"), endpoint_slice("web", ["10.0.0.1", "10.0.0.2", "10.0.0.3"]))
    picks = [b.pick() for _ in range(7)]
    assert [e.host for e in picks if e is not None] == [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
        "10.0.0.1",
    ]


def test_pick_without_endpoints() -> None:
    assert Backend("x").pick() is None


@pytest.mark.parametrize(
    ("objs", "port", "error"),
    [
        ([], 80, "service default/web not found"),
        ([service("web", [8080])], 80, "service default/web has no port 80"),
        ([service("web", [("http", 80)])], "grpc", "service default/web has no port 'grpc'"),
        ([service("web", namespace="other")], 80, "service default/web not found"),
    ],
)
def test_unresolvable_backend(objs: list[Obj], port: int | str, error: str) -> None:
    b = backend_of(*objs, port=port)
    assert b.error == error
    assert b.endpoints == ()


@pytest.mark.parametrize(
    ("ports", "port", "endpoint"),
    [
        ([80], 80, Endpoint("db.example.net", 80)),
        ([{"port": 80, "targetPort": 8080}], 80, Endpoint("db.example.net", 8080)),
        ([("http", 80)], "http", Endpoint("db.example.net", 80)),
        ([], 5432, Endpoint("db.example.net", 5432)),
    ],
)
def test_external_name_service(ports: list, port: int | str, endpoint: Endpoint) -> None:
    b = backend_of(service("web", ports, external_name="db.example.net."), port=port)
    assert b.error is None
    assert b.endpoints == (endpoint,)


def test_external_name_port_name_unknown() -> None:
    b = backend_of(service("web", [], external_name="db.example.net"), port="http")
    assert b.error == "service default/web has no port 'http'"


def test_resource_backend_is_a_problem() -> None:
    resource = {"resource": {"apiGroup": "k8s.example.com", "kind": "Bucket", "name": "b"}}
    table = build(
        ingress(
            "web",
            [rule(HOST, path("/static", raw_backend=resource), path("/", "web"))],
        ),
        service("web"),
    )
    assert reasons(table, "Ingress default/web") == [
        "rules[0].http.paths[0]: resource backends are not supported; use a Service"
    ]
    # The rest of the Ingress still routes; the resource path does not exist.
    route = table.route_for(HOST, "/static/x")
    assert route is not None
    assert route.path == "/"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"service": {"port": {"number": 80}}}, "backend.service.name is missing"),
        ({"service": {"name": "web", "port": {}}}, "backend.service.port needs a number or a name"),
        ({"service": {"name": "web", "port": {"number": 0}}}, "backend port 0 is out of range"),
        (
            {"service": {"name": "web", "port": {"number": 70000}}},
            "backend port 70000 is out of range",
        ),
        (
            {"service": {"name": "web", "port": {"number": "http"}}},
            "backend port 'http' is not a number",
        ),
    ],
)
def test_malformed_backend_is_a_problem(raw: dict, message: str) -> None:
    table = build(ingress("web", [rule(HOST, path("/", raw_backend=raw))]), service("web"))
    assert f"rules[0].http.paths[0]: {message}" in reasons(table, "Ingress default/web")
    assert table.route_for(HOST, "/") is None


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (path("/", path_type=None), "rules[0].http.paths[0].pathType None must be one of"),
        (path("/", path_type="Regex"), "rules[0].http.paths[0].pathType 'Regex' must be one of"),
        (path("foo"), "rules[0].http.paths[0].path 'foo' must start with /"),
        (path(None), "rules[0].http.paths[0].path is required for pathType Prefix"),
        (path(None, path_type="Exact"), "rules[0].http.paths[0].path is required for pathType"),
    ],
)
def test_invalid_path_is_a_problem(entry: dict, message: str) -> None:
    table = build(ingress("web", [rule(HOST, entry, path("/ok"))]), service("web"))
    got = reasons(table, "Ingress default/web")
    assert len(got) == 1
    assert got[0].startswith(message)
    route = table.route_for(HOST, "/ok")
    assert route is not None
    assert route.path == "/ok"


def test_invalid_host_is_a_problem() -> None:
    table = build(
        ingress("web", [rule("bad_host", path("/")), rule("good.example", path("/"))]),
        service("web"),
    )
    assert reasons(table, "Ingress default/web") == [
        "rules[0].host 'bad_host' is not a valid DNS name or wildcard"
    ]
    assert set(table.exact_hosts) == {"good.example"}


# -- defaultBackend ------------------------------------------------------------------


def test_default_backend_only_ingress_becomes_table_default() -> None:
    table = build(
        ingress("fallback", default_backend=backend("fallback")),
        ingress("web", [rule(HOST, path("/app", "web"))]),
        service("fallback"),
        service("web"),
    )
    assert table.problems == ()
    for host, p in [("other.test", "/"), ("", "/x")]:
        route = table.route_for(host, p)
        assert route is not None
        assert route.ingress == "default/fallback"
        assert route.backend.name == "default/fallback:80"
    assert table.route_for(HOST, "/app/x").ingress == "default/web"  # type: ignore[union-attr]
    # A named host's unmatched paths are its own business: 404, not another's default.
    assert table.route_for(HOST, "/nope") is None


def test_default_backend_of_ingress_with_rules_serves_its_hosts() -> None:
    table = build(
        ingress(
            "web",
            [rule(HOST, path("/app", "web"))],
            default_backend=backend("web-default"),
            created=1,
        ),
        ingress("other", [rule("other.test", path("/app", "web"))], created=2),
        service("web"),
        service("web-default"),
    )
    assert table.problems == ()
    vhost = table.find_host(HOST)
    assert vhost is not None
    assert vhost.default is not None
    assert vhost.default.backend.name == "default/web-default:80"
    assert table.route_for(HOST, "/nope").backend.name == "default/web-default:80"  # type: ignore[union-attr]
    assert table.find_host("other.test").default is None  # type: ignore[union-attr]


def test_vhost_default_comes_from_the_oldest_ingress_of_the_host() -> None:
    # controller.go createServers: the oldest Ingress with a rule for a host makes
    # its "/" location, with its defaultBackend or none; later ones do not.
    table = build(
        ingress("young", [rule(HOST, path("/b"))], default_backend=backend("young"), created=5),
        ingress("old", [rule(HOST, path("/a"))], default_backend=backend("old"), created=1),
        ingress("none", [rule(HOST, path("/c"))], created=0),
        ingress("other", [rule("o.test", path("/c"))], default_backend=backend("old"), created=9),
        service("web"),
        service("young"),
        service("old"),
    )
    assert table.route_for(HOST, "/zzz") is None
    assert table.route_for("o.test", "/zzz").backend.name == "default/old:80"  # type: ignore[union-attr]
    # Only an Ingress without rules serves the hosts nobody routes.
    assert table.default is None
    assert reasons(table, "Ingress default/old") == [
        f"defaultBackend does not serve host {HOST}: older Ingress default/none has rules for "
        "it, and as in ingress-nginx its defaultBackend (or none) serves the host's unmatched "
        "paths"
    ]
    assert len(reasons(table, "Ingress default/young")) == 1
    assert reasons(table, "Ingress default/other") == []


def test_catch_all_default_comes_from_the_oldest_ingress_without_rules() -> None:
    table = build(
        ingress("ruled", [rule(None, path("/x"))], default_backend=backend("young"), created=0),
        ingress("young", [], default_backend=backend("young"), created=5),
        ingress("old", [], default_backend=backend("old"), created=1),
        service("web"),
        service("young"),
        service("old"),
    )
    assert table.default is not None and table.default.ingress == "default/old"
    assert table.route_for("any.test", "/y").ingress == "default/old"  # type: ignore[union-attr]
    assert table.route_for("any.test", "/x").ingress == "default/ruled"  # type: ignore[union-attr]
    assert reasons(table, "Ingress default/ruled") == [
        "defaultBackend does not serve requests for other hosts: as in ingress-nginx, only the "
        "oldest Ingress with a defaultBackend and no rules does"
    ]


def test_no_default_no_route() -> None:
    table = build(ingress("web", [rule(HOST, path("/app"))]), service("web"))
    assert table.default is None
    assert table.route_for(HOST, "/") is None
    assert table.route_for("other.test", "/app") is None


def test_ingress_with_nothing_usable_is_reported() -> None:
    table = build(ingress("empty", [rule(HOST)]))
    assert reasons(table, "Ingress default/empty") == ["has no usable rules and no defaultBackend"]


# -- conflicts and ordering ----------------------------------------------------------


def conflicting(name: str, namespace: str = "default", created: int | str | None = None) -> Obj:
    return ingress(name, [rule(HOST, path("/shared", name))], namespace=namespace, created=created)


@pytest.mark.parametrize(
    ("ingresses", "winner", "loser"),
    [
        pytest.param(
            [conflicting("b", created=1), conflicting("a", created=2)],
            "default/b",
            "default/a",
            id="oldest-timestamp",
        ),
        pytest.param(
            [conflicting("a", created=2), conflicting("b", created=1)],
            "default/b",
            "default/a",
            id="oldest-timestamp-inserted-second",
        ),
        # Created in the same second: "namespace/name" descending, as
        # ingress-nginx's sortIngressSlice ("return in > jn").
        pytest.param(
            [conflicting("a", created=1), conflicting("b", created=1)],
            "default/b",
            "default/a",
            id="equal-timestamp-name-order",
        ),
        pytest.param(
            [conflicting("z", "aaa", created=1), conflicting("a", "zzz", created=1)],
            "zzz/a",
            "aaa/z",
            id="equal-timestamp-namespace-first",
        ),
        pytest.param(
            [conflicting("a", "a", created=1), conflicting("ab", "a", created=1)],
            "a/ab",
            "a/a",
            id="equal-timestamp-longer-name-first",
        ),
        pytest.param(
            [conflicting("a"), conflicting("b")], "default/b", "default/a", id="no-timestamps"
        ),
        pytest.param(
            [conflicting("a"), conflicting("b", created=100)],
            "default/b",
            "default/a",
            id="timestamp-beats-none",
        ),
        pytest.param(
            [conflicting("a", created="2023-12-31T23:59:59Z"), conflicting("b", created=0)],
            "default/a",
            "default/b",
            id="timestamps-compare-chronologically",
        ),
    ],
)
def test_conflicting_paths(ingresses: list[Obj], winner: str, loser: str) -> None:
    objs = [*ingresses, service("a"), service("b"), service("z"), service("z", namespace="aaa")]
    objs += [
        service("a", namespace="zzz"),
        service("a", namespace="a"),
        service("ab", namespace="a"),
    ]
    table = build(*objs)
    route = table.route_for(HOST, "/shared")
    assert route is not None
    assert route.ingress == winner
    ns, name = loser.split("/")
    assert reasons(table, f"Ingress {ns}/{name}") == [
        f"path '/shared' (Prefix) on host {HOST} is already served by older Ingress "
        f"{winner}; this rule is ignored"
    ]
    wns, wname = winner.split("/")
    assert reasons(table, f"Ingress {wns}/{wname}") == []


def test_prefix_with_and_without_trailing_slash_conflict() -> None:
    table = build(
        ingress("a", [rule(HOST, path("/foo", "a"))], created=1),
        ingress("b", [rule(HOST, path("/foo/", "b"))], created=2),
        service("a"),
        service("b"),
    )
    assert table.route_for(HOST, "/foo/").ingress == "default/a"  # type: ignore[union-attr]
    assert len(reasons(table, "Ingress default/b")) == 1


def test_exact_and_prefix_same_path_do_not_conflict() -> None:
    table = build(
        ingress("a", [rule(HOST, path("/foo", "a", path_type="Exact"))], created=1),
        ingress("b", [rule(HOST, path("/foo", "b"))], created=2),
        service("a"),
        service("b"),
    )
    assert table.problems == ()
    assert table.route_for(HOST, "/foo").ingress == "default/a"  # type: ignore[union-attr]
    assert table.route_for(HOST, "/foo/x").ingress == "default/b"  # type: ignore[union-attr]


def test_same_path_twice_in_one_ingress() -> None:
    table = build(
        ingress("a", [rule(HOST, path("/x", "one")), rule(HOST, path("/x", "two"))]),
        service("one"),
        service("two"),
    )
    assert table.route_for(HOST, "/x").backend.name == "default/one:80"  # type: ignore[union-attr]
    assert reasons(table, "Ingress default/a") == [
        f"path '/x' (Prefix) on host {HOST} is listed twice; the first one is used"
    ]


def describe_table(table: RouteTable) -> dict:
    """Everything observable about a table's routing, as plain values."""

    def route(r: object) -> object:
        if r is None:
            return None
        return (r.path, r.path_type, r.ingress, r.backend.name, r.backend.endpoints, r.policy)  # type: ignore[attr-defined]

    def vhost(v: object) -> object:
        if v is None:
            return None
        return {
            "exact": {k: route(r) for k, r in v.exact.items()},  # type: ignore[attr-defined]
            "prefix": {k: route(r) for k, r in v.prefix.items()},  # type: ignore[attr-defined]
            "regex": [route(r) for r in v.regex],  # type: ignore[attr-defined]
            "regex_mode": v.regex_mode,  # type: ignore[attr-defined]
            "default": route(v.default),  # type: ignore[attr-defined]
            "tls": v.tls,  # type: ignore[attr-defined]
        }

    return {
        "exact": {h: vhost(v) for h, v in table.exact_hosts.items()},
        "wildcard": {h: vhost(v) for h, v in table.wildcard_hosts.items()},
        "catch_all": vhost(table.catch_all),
        "default": route(table.default),
        "certificates": {h: c.secret for h, c in table.certificates.items()},
        "problems": sorted(table.problems, key=str),
    }


def test_insertion_order_does_not_change_the_table() -> None:
    rx = {"nginx.ingress.kubernetes.io/use-regex": "true"}
    objs = [
        ingress_class(),
        conflicting("a", created=3),
        conflicting("b", created=3),
        conflicting("c", created=1),
        conflicting("d"),
        ingress("e", [rule(HOST, path("/e", "a")), rule("*.example.com", path("/w", "b"))]),
        ingress("r1", [rule("rx.test", path("/a.*", "a"))], annotations=rx, created=2),
        ingress("r2", [rule("rx.test", path("/a.*", "b"))], annotations=rx, created=1),
        ingress("r3", [rule("rx.test", path("/a.*/long", "b"))], created=9),
        ingress("d1", [], default_backend=backend("a"), created=7),
        ingress("d2", [], default_backend=backend("b"), created=6),
        ingress("ghost", [rule(HOST, path("/g"))], class_name="nope"),
        service("a"),
        service("b"),
        service("c"),
        service("d"),
        service("web"),
        endpoint_slice("a", ["10.0.0.2", "10.0.0.1"], name="a1"),
        endpoint_slice("a", ["10.0.0.3"], name="a2"),
    ]
    expected = describe_table(build_table(snapshot(*objs)))
    assert expected["problems"]  # the case does exercise conflicts
    for ordering in (list(reversed(objs)), objs[1:] + objs[:1], objs[::2] + objs[1::2]):
        assert describe_table(build_table(snapshot(*ordering))) == expected
    # The tables are equal, and it is the oldest Ingress that won.
    assert expected["exact"][HOST]["prefix"]["/shared"][2] == "default/c"
    assert expected["default"][2] == "default/d2"
    assert [r[2] for r in expected["exact"]["rx.test"]["regex"]] == [
        "default/r3",
        "default/r2",
    ]


def test_every_permutation_of_three_conflicts_agrees() -> None:
    objs = [conflicting("a", created=2), conflicting("b", created=2), conflicting("c")]
    extra = [ingress_class(), service("a"), service("b"), service("c")]
    winners = set()
    problems = set()
    for perm in itertools.permutations(objs):
        table = build_table(snapshot(*extra, *perm))
        winners.add(table.route_for(HOST, "/shared").ingress)  # type: ignore[union-attr]
        problems.add(tuple(sorted(table.problems, key=str)))
    assert winners == {"default/b"}  # oldest, then "namespace/name" descending
    assert len(problems) == 1


def test_problems_name_object_and_source() -> None:
    store = ObjectStore()
    store.put(ingress_class())
    store.put(ingress("web", [rule("bad_host", path("/"))]), origin="/manifests/web.yaml")
    table = build_table(store.snapshot())
    assert table.problems == (
        Problem(
            "Ingress default/web",
            "rules[0].host 'bad_host' is not a valid DNS name or wildcard",
            "/manifests/web.yaml",
        ),
        Problem(
            "Ingress default/web",
            "has no usable rules and no defaultBackend",
            "/manifests/web.yaml",
        ),
    )
    assert str(table.problems[0]).startswith("/manifests/web.yaml: Ingress default/web: ")


def test_generation_is_carried() -> None:
    assert build_table(snapshot(), generation=7).generation == 7


def test_creation_order_keys_share_their_numbers() -> None:
    """Each Ingress's order key spells its name as negated code points: made
    afresh, those ints were a tenth of what the builder keeps at 10,000 Ingresses."""
    from ingressd.routing.build import _creation_order

    a = _creation_order(ingress("app-1", namespace="team"))[1]
    b = _creation_order(ingress("app-2", namespace="team"))[1]
    assert all(x is y for x, y in zip(a[:-2], b[:-2], strict=True))
    # Still namespace/name descending, a prefix after what extends it, any text.
    names = ["a", "ab", "b", "é", "ä-1", "z", "\U0001f600"]
    keys = sorted(names, key=lambda n: _creation_order(ingress(n, namespace="ns")))
    assert keys == sorted(names, key=lambda n: [-ord(c) for c in f"ns/{n}"] + [1])
    assert keys.index("a") > keys.index("ab")
