"""ConfigMaps of headers (policy/header_maps.py): what each setting accepts, refuses and
why, the bounds, and what the builder makes of them (tables of values, no sockets)."""

from __future__ import annotations

import pytest
from k8s_objects import endpoint_slice, ingress, path, rule, service

from ingressd.model.objects import Obj, ObjectStore
from ingressd.model.policy import DEFAULT_POLICY
from ingressd.model.table import RouteTable
from ingressd.policy import header_maps as hm
from ingressd.policy.annotations import AnnotationError, classify, parse_policy
from ingressd.policy.configmap import classify as classify_keys
from ingressd.policy.configmap import read_configmap
from ingressd.routing.build import BuildOptions, build_table

A = "nginx.ingress.kubernetes.io/"

# -- one entry, for each purpose ---------------------------------------------------------------

ALLOWED = frozenset({"x-team", "x-frame-options"})


@pytest.mark.parametrize(
    ("purpose", "name", "value", "sent", "why"),
    [
        ("add-headers", "X-Frame-Options", "DENY", (b"X-Frame-Options", b"DENY"), None),
        ("add-headers", "X-A", "  padded\t", (b"X-A", b"padded"), None),
        ("add-headers", "X-Cleared", "", (b"X-Cleared", b""), None),  # removes
        ("add-headers", "X-Utf8", "caf\u00e9", (b"X-Utf8", "caf\u00e9".encode()), None),
        ("add-headers", "X!#$%&'*+.^_`|~", "v", (b"X!#$%&'*+.^_`|~", b"v"), None),  # a token
        ("add-headers", "X Bad", "v", None, "the name is not a header name (an HTTP token)"),
        ("add-headers", "X:Bad", "v", None, "the name is not a header name"),
        ("add-headers", "", "v", None, "the name is not a header name"),
        ("add-headers", "X-" + "a" * 300, "v", None, "the name is not a header name"),
        ("add-headers", "X-A", "a\r\nX-Injected: 1", None, "the value holds a control character"),
        ("add-headers", "X-A", "a\x00b", None, "the value holds a control character"),
        ("add-headers", "X-A", "a\x7fb", None, "the value holds a control character"),
        ("add-headers", "X-A", "t=${msec}", None, "$msec is not a variable ingressd knows"),
        ("proxy-set-headers", "X-A", "$remote_user", None, "$remote_user is not a variable"),
        ("add-headers", "X-A", "costs $5", (b"X-A", b"costs $5"), None),  # not a variable
        ("add-headers", "Connection", "close", None, "it must not be set: hop-by-hop"),
        ("add-headers", "keep-alive", "1", None, "it must not be set: hop-by-hop"),
        ("add-headers", "Transfer-Encoding", "chunked", None, "it must not be set: framing"),
        ("add-headers", "content-length", "1", None, "it must not be set: framing"),
        ("add-headers", "Upgrade", "h2c", None, "it must not be set: hop-by-hop"),
        ("add-headers", "Host", "x", None, "it must not be set: the Host header is routing's"),
        ("proxy-set-headers", "X-Env", "prod", (b"X-Env", b"prod"), None),
        ("proxy-set-headers", "X_Under", "1", (b"X_Under", b"1"), None),
        ("proxy-set-headers", "X-Forwarded-For", "1.2.3.4", None, "ingressd sets it"),
        ("proxy-set-headers", "x-real-ip", "1.2.3.4", None, "ingressd sets it"),
        ("proxy-set-headers", "X-Request-ID", "1", None, "ingressd sets it"),
        ("proxy-set-headers", "X-Forwarded-Proto", "https", None, "ingressd sets it"),
        ("proxy-set-headers", "Proxy", "x", None, "httpoxy"),
        ("proxy-set-headers", "Expect", "100-continue", None, "it must not be set"),
        ("proxy-set-headers", "TE", "trailers", None, "hop-by-hop"),
        ("custom-headers", "X-Team", "a", (b"X-Team", b"a"), None),
        ("custom-headers", "X-Team", "$remote_addr", (b"X-Team", b"$remote_addr"), None),
        ("custom-headers", "X-Other", "a", None, "not listed in the controller ConfigMap's"),
        ("custom-headers", "X-Team", "", None, "the value is empty or not printable ASCII"),
        ("custom-headers", "X-Team", "caf\u00e9", None, "not printable ASCII"),
        ("custom-headers", "X.Team", "a", None, "(letters, digits, - and _)"),
    ],
)
def test_one_entry(
    purpose: hm.Purpose, name: str, value: str, sent: tuple[bytes, bytes] | None, why: str | None
) -> None:
    found = hm.read({name: value}, purpose, ALLOWED)
    if sent is not None:
        assert (found.headers, found.refused, found.error) == ((sent,), (), None)
        return
    assert why is not None and not found.headers
    if purpose in ("custom-headers", "auth-proxy-set-headers"):
        # The annotations' parsers deny the location for any bad entry.
        assert found.error is not None and why in found.error
    else:
        # The ConfigMap keys leave the entry out; the others apply.
        assert found.error is None
        [reason] = found.refused
        shown = name if len(name) <= 100 else name[:100] + "..."
        assert reason.startswith(f"header {shown!r} is left out: ") and why in reason


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ("prod", "prod"),
        ("$host", "auth.test"),
        ("${scheme}://$http_host$request_uri", "http://auth.test:8080/p?q=1"),
    ],
)
def test_auth_proxy_set_headers_values_are_auth_url_templates(value: str, rendered: str) -> None:
    found = hm.read({"X-A": value}, "auth-proxy-set-headers")
    [(name, template)] = found.templates
    values = {"host": "auth.test", "scheme": "http", "http_host": "auth.test:8080"}
    values["request_uri"] = "/p?q=1"
    assert (name, template.render(values)) == (b"X-A", rendered)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"X-A": "$remote_user"}, "$remote_user is not a variable ingressd knows"),
        ({"X-A": "1", "Content-Length": "1"}, "header 'Content-Length': it must not be set"),
        ({"X A": "1"}, "header 'X A': the name is not a header name"),
        ("not a map", "its data is not a map"),
        ({f"X-{i}": "v" for i in range(hm.MAX_ENTRIES + 1)}, "more than 64"),
    ],
)
def test_auth_proxy_set_headers_bad_maps_fail_whole(data: object, error: str) -> None:
    found = hm.read(data, "auth-proxy-set-headers")
    assert found.error is not None and error in found.error
    assert not found.templates


def test_bounds_on_entries_and_size() -> None:
    many = {f"X-{i}": "v" for i in range(hm.MAX_ENTRIES + 1)}
    assert hm.read(many, "add-headers").error == "it holds 65 entries, more than 64"
    assert not hm.read(many, "add-headers").headers
    big = {f"X-{i}": "v" * 1000 for i in range(17)}
    assert hm.read(big, "add-headers").error == "its headers come to more than 16384 bytes"
    fits = {f"X-{i}": "v" * 1000 for i in range(15)}
    assert len(hm.read(fits, "add-headers").headers) == 15


def test_names_are_unique_ignoring_case_and_sent_in_key_order() -> None:
    found = hm.read({"x-b": "2", "X-B": "1", "X-A": "0"}, "add-headers")
    assert found.headers == ((b"X-A", b"0"), (b"X-B", b"1"))
    assert found.refused == (
        "header 'x-b' is left out: the same header as 'X-B' (names ignore case)",
    )


def test_merge_lets_the_later_map_win_ignoring_case() -> None:
    first = ((b"X-Frame-Options", b"DENY"), (b"X-Global", b"1"))
    assert hm.merge(first, ((b"x-frame-options", b"SAMEORIGIN"),)) == (
        (b"X-Global", b"1"),
        (b"x-frame-options", b"SAMEORIGIN"),
    )


# -- the values that name a map, and the allow-list ---------------------------------------------


@pytest.mark.parametrize(
    ("value", "ref"),
    [("ns/name", ("ns", "name")), (" headers ", (None, "headers")), ("a.b/c-d", ("a.b", "c-d"))],
)
def test_annotation_refs(value: str, ref: tuple[str | None, str]) -> None:
    assert hm.parse_ref(value) == ref


@pytest.mark.parametrize("value", ["", "a/b/c", "UPPER/x", "ns/", "../x", "n s/x", "x" * 300])
def test_bad_annotation_refs(value: str) -> None:
    with pytest.raises(AnnotationError, match="not a ConfigMap reference"):
        hm.parse_ref(value)


def test_global_refs_need_a_namespace() -> None:
    assert hm.parse_global_ref("ingressd/headers") == ("ingressd", "headers")
    assert hm.parse_global_ref("  ") is None
    with pytest.raises(AnnotationError, match="names no namespace"):
        hm.parse_global_ref("headers")


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        ("X-Team, x-frame-options,,", frozenset({"x-team", "x-frame-options"})),
        ("", frozenset()),
        ("X_Under", frozenset({"x_under"})),
    ],
)
def test_allowed_response_headers(value: str, allowed: frozenset[str]) -> None:
    assert hm.parse_allowed(value) == allowed


@pytest.mark.parametrize("value", ["X Team", "X-Team,Bad:Name", "X.Dot"])
def test_bad_allowed_response_headers(value: str) -> None:
    with pytest.raises(AnnotationError, match="is not a header name"):
        hm.parse_allowed(value)


def test_the_configmap_keys_are_supported_and_checked() -> None:
    data = {
        "add-headers": "ingressd/response",
        "proxy-set-headers": "bad/ref/here",
        "global-allowed-response-headers": "X-Team,X-Frame-Options",
    }
    statuses = {v.key: v.status for v in classify_keys(data)}
    assert statuses == {
        "add-headers": "supported",
        "proxy-set-headers": "invalid",
        "global-allowed-response-headers": "supported",
    }
    config = read_configmap(data).config
    assert config.add_headers == ("ingressd", "response")
    assert config.proxy_set_headers is None
    assert config.allowed_response_headers == frozenset({"x-team", "x-frame-options"})


def test_the_annotations_are_supported_and_checked() -> None:
    statuses = {
        v.key: v.status
        for v in classify(
            {
                A + "custom-headers": "team",
                A + "auth-proxy-set-headers": "not/a/ref",
                A + "auth-url": "http://auth.test/",
            }
        )
    }
    assert statuses == {
        A + "custom-headers": "supported",
        A + "auth-proxy-set-headers": "invalid",
        A + "auth-url": "supported",
    }
    # An invalid auth-* annotation denies (503), as the others of its family.
    policy, _ = parse_policy({A + "auth-url": "http://a/", A + "auth-proxy-set-headers": "a/b/c"})
    assert policy.fail_closed == (503, "invalid auth-proxy-set-headers annotation")
    # Without auth-url it does nothing, and says so.
    policy, messages = parse_policy({A + "auth-proxy-set-headers": "headers"})
    assert policy.fail_closed is None and policy.auth_proxy_headers is None
    assert any("no effect without auth-url" in m for m in messages)


# -- through the builder -------------------------------------------------------------------------


def configmap(namespace: str, name: str, data: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }


CLASS = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "IngressClass",
    "metadata": {"name": "ingressd"},
    "spec": {"controller": "ingressd.io/ingress-controller"},
}
OPTIONS = BuildOptions(configmap=("ingressd", "controller"))


def table(*objs: Obj, controller: dict[str, str] | None = None) -> RouteTable:
    store = ObjectStore()
    for obj in (CLASS, service("web"), endpoint_slice("web", [("10.0.0.1", True)], 80), *objs):
        store.put(obj)
    if controller is not None:
        store.put(configmap("ingressd", "controller", controller))
    return build_table(store.snapshot(), OPTIONS)


def routed(name: str, **annotations: str) -> Obj:
    return ingress(
        name,
        [rule(f"{name}.test", path("/", "web"))],
        annotations={A + k.replace("_", "-"): v for k, v in annotations.items()},
    )


def test_routes_without_any_map_keep_their_fast_path() -> None:
    t = table(routed("plain"), controller={})
    route = t.route_for("plain.test", "/")
    assert route is not None and route.plain and route.policy is DEFAULT_POLICY
    assert route.response_names == frozenset() and route.upstream_headers == ()


def test_global_maps_become_every_route_s_precomputed_headers() -> None:
    t = table(
        routed("plain"),
        routed("team", custom_headers="team"),
        configmap("ingressd", "response", {"X-Frame-Options": "DENY", "X-Global": "1"}),
        configmap("ingressd", "request", {"X-Env": "prod"}),
        configmap("default", "team", {"X-Frame-Options": "SAMEORIGIN"}),
        controller={
            "add-headers": "ingressd/response",
            "proxy-set-headers": "ingressd/request",
            "global-allowed-response-headers": "X-Frame-Options",
        },
    )
    plain = t.route_for("plain.test", "/")
    assert plain is not None and not plain.plain
    assert plain.policy.response_headers == ((b"X-Frame-Options", b"DENY"), (b"X-Global", b"1"))
    assert plain.response_names == frozenset({b"x-frame-options", b"x-global"})
    assert plain.upstream_headers == ((b"X-Env", b"prod"),)
    team = t.route_for("team.test", "/")
    assert team is not None
    assert team.policy.response_headers == (
        (b"X-Global", b"1"),
        (b"X-Frame-Options", b"SAMEORIGIN"),
    )
    assert team.upstream_headers == ((b"X-Env", b"prod"),)
    assert t.problems == ()


def test_a_missing_global_map_is_reported_and_routes_serve_without_it() -> None:
    t = table(routed("plain"), controller={"add-headers": "ingressd/gone"})
    route = t.route_for("plain.test", "/")
    assert route is not None and route.policy.fail_closed is None
    assert route.policy.response_headers == ()
    [problem] = t.problems
    # On the controller ConfigMap, which names it: an Event needs an object that exists.
    assert problem.ref == ("ConfigMap", "ingressd", "controller")
    assert str(problem) == (
        "ConfigMap ingressd/controller: add-headers: ConfigMap ingressd/gone not found; "
        "its headers are not set"
    )


@pytest.mark.parametrize(
    ("annotations", "reason"),
    [
        ({"custom_headers": "gone"}, "custom-headers ConfigMap default/gone not found"),
        ({"custom_headers": "team"}, "it is not listed in the controller ConfigMap's"),
        ({"custom_headers": "other/team"}, "is in another namespace than the Ingress (default)"),
        (
            {"auth_url": "http://auth.test/", "auth_proxy_set_headers": "gone"},
            "auth-proxy-set-headers ConfigMap default/gone not found",
        ),
    ],
)
def test_annotation_maps_that_cannot_apply_deny(annotations: dict[str, str], reason: str) -> None:
    t = table(
        routed("x", **annotations),
        configmap("default", "team", {"X-Team": "a"}),
        configmap("other", "team", {"X-Team": "a"}),
        controller={},
    )
    route = t.route_for("x.test", "/")
    assert route is not None and route.policy.fail_closed is not None
    assert route.policy.fail_closed[0] == 503 and reason in route.policy.fail_closed[1]
    assert any(
        reason in p.reason and p.reason.endswith("its routes answer 503") for p in t.problems
    )


def test_references_are_what_ingresses_and_the_controller_configmap_name() -> None:
    store = ObjectStore()
    for obj in (
        routed("a", custom_headers="team"),
        routed("b", auth_url="http://auth/", auth_proxy_set_headers="other/auth"),
        routed("c", custom_headers="bad/ref/x"),  # invalid: reported, not watched
        configmap("ingressd", "controller", {"add-headers": "ingressd/response"}),
    ):
        store.put(obj)
    snap = store.snapshot()
    assert hm.references(snap) == {("default", "team"), ("other", "auth")}
    assert hm.references(snap, ("ingressd", "controller")) == {
        ("default", "team"),
        ("other", "auth"),
        ("ingressd", "response"),
    }


def test_an_incremental_build_follows_every_map_it_read() -> None:
    """A kept plan is redone when a map it read changes, as a build from scratch would."""
    from routing.test_incremental_build import assert_same

    from ingressd.routing.build import TableBuilder

    store = ObjectStore()
    for obj in (
        CLASS,
        service("web"),
        endpoint_slice("web", [("10.0.0.1", True)], 80),
        routed("team", custom_headers="team"),
        routed("plain"),
        configmap("default", "team", {"X-Team": "a"}),
        configmap("ingressd", "response", {"X-Global": "1"}),
        configmap(
            "ingressd",
            "controller",
            {"add-headers": "ingressd/response", "global-allowed-response-headers": "X-Team"},
        ),
    ):
        store.put(obj)
    builder = TableBuilder(OPTIONS)

    def headers(host: str) -> tuple[tuple[bytes, bytes], ...]:
        t = builder.build(store.snapshot())
        assert_same(t, build_table(store.snapshot(), OPTIONS), "incremental")
        route = t.route_for(host, "/")
        assert route is not None
        return route.policy.response_headers

    assert headers("team.test") == ((b"X-Global", b"1"), (b"X-Team", b"a"))
    store.put(configmap("default", "team", {"X-Team": "b"}))
    assert headers("team.test") == ((b"X-Global", b"1"), (b"X-Team", b"b"))
    store.put(configmap("ingressd", "response", {"X-Global": "2"}))
    assert headers("plain.test") == ((b"X-Global", b"2"),)
    assert headers("team.test") == ((b"X-Global", b"2"), (b"X-Team", b"b"))
    store.delete("ConfigMap", "default", "team")
    t = builder.build(store.snapshot())
    route = t.route_for("team.test", "/")
    assert route is not None and route.policy.fail_closed is not None
    store.delete("ConfigMap", "ingressd", "response")
    assert headers("plain.test") == ()


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("$host", ("", "host", "")),
        ("t=${request_id}!", ("t=", "request_id", "!")),
        ("$scheme://$http_x_forwarded_host", ("", "scheme", "://", "http_x_forwarded_host", "")),
    ],
)
@pytest.mark.parametrize("purpose", ["add-headers", "proxy-set-headers"])
def test_values_with_variables_are_kept_as_templates(
    purpose: hm.Purpose, value: str, parts: tuple[str, ...]
) -> None:
    found = hm.read({"X-A": value, "X-B": "literal"}, purpose)
    assert found.templated == ((b"X-A", parts),)
    assert found.headers == ((b"X-B", b"literal"),)
    assert found.refused == ()


def test_variable_entries_become_the_routes_snippet_edits_and_custom_headers_win() -> None:
    t = table(
        routed("plain"),
        routed("team", custom_headers="team"),
        configmap("ingressd", "response", {"X-Seen": "$host", "X-Team": "$scheme"}),
        configmap("ingressd", "request", {"X-Client": "$remote_addr"}),
        configmap("default", "team", {"X-Team": "a"}),
        controller={
            "add-headers": "ingressd/response",
            "proxy-set-headers": "ingressd/request",
            "global-allowed-response-headers": "X-Team",
        },
    )
    plain = t.route_for("plain.test", "/")
    assert plain is not None and plain.snippet_plan is not None
    assert [(e.name, e.value) for e in plain.snippet_plan.more] == [
        (b"X-Seen", ("", "host", "")),
        (b"X-Team", ("", "scheme", "")),
    ]
    assert plain.snippet_plan.upstream == ((b"X-Client", ("", "remote_addr", "")),)
    team = t.route_for("team.test", "/")
    assert team is not None and team.snippet_plan is not None
    # custom-headers' literal X-Team replaces add-headers' variable one.
    assert [e.name for e in team.snippet_plan.more] == [b"X-Seen"]
    assert team.policy.response_headers == ((b"X-Team", b"a"),)


def test_the_default_backend_gets_the_http_level_headers_too() -> None:
    """--default-backend-service serves what no rule takes: nginx's default server,
    which add-headers and proxy-set-headers reach as every other."""
    store = ObjectStore()
    for obj in (
        CLASS,
        service("errors"),
        endpoint_slice("errors", [("10.0.0.9", True)], 80),
        configmap("ingressd", "response", {"X-Global": "1", "X-Seen": "$host"}),
        configmap("ingressd", "request", {"X-Env": "prod"}),
        configmap(
            "ingressd",
            "controller",
            {"add-headers": "ingressd/response", "proxy-set-headers": "ingressd/request"},
        ),
    ):
        store.put(obj)
    opts = BuildOptions(
        configmap=("ingressd", "controller"), default_backend_service="default/errors"
    )
    fallback = build_table(store.snapshot(), opts).fallback
    assert fallback is not None
    assert fallback.policy.response_headers == ((b"X-Global", b"1"),)
    assert fallback.upstream_headers == ((b"X-Env", b"prod"),)
    assert fallback.snippet_plan is not None and [e.name for e in fallback.snippet_plan.more] == [
        b"X-Seen"
    ]
