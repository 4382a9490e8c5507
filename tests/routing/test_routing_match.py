"""Path and host matching against the Kubernetes Ingress v1 specification.

Tables follow the "Examples" table of the Ingress concept page
(https://kubernetes.io/docs/concepts/services-networking/ingress/#examples) and
the "Hostname wildcards" section. Each case builds a real table from Ingress
objects and asks it which route serves a request.
"""

from __future__ import annotations

import pytest
from k8s_objects import build, endpoint_slice, ingress, path, request, rule, service

from ingressd.model.table import RouteTable
from ingressd.routing.decide import (
    Forward,
    decide,
    escape_path,
    normalize_host,
    normalize_path,
)

HOST = "example.com"


def table_with(paths: list[tuple[str, str]], host: str | None = HOST) -> RouteTable:
    """One Ingress on ``host`` with ``(pathType, path)`` entries, one Service each."""
    table = build(
        ingress("spec", [rule(host, *(path(p, "web", path_type=t) for t, p in paths))]),
        service("web"),
        endpoint_slice("web", ["10.0.0.1"]),
    )
    assert table.problems == ()
    return table


def served_by(table: RouteTable, host: str, request_path: str) -> tuple[str, ...] | None:
    """(pathType, path) of the route serving the request, or None; with "301" when
    nginx redirects the request to that route's location (one "/" longer)."""
    route = table.route_for(host, request_path)
    if route is None:
        return None
    if route.slash_redirect is not None:
        return (route.path_type, route.path, "301")
    return (route.path_type, route.path)


# (paths on the host, request path, expected (pathType, path) or None)
SPEC_EXAMPLES = [
    # Prefix / matches all paths.
    ([("Prefix", "/")], "/", ("Prefix", "/")),
    ([("Prefix", "/")], "/anything", ("Prefix", "/")),
    ([("Prefix", "/")], "/a/b/c/", ("Prefix", "/")),
    # Exact /foo.
    ([("Exact", "/foo")], "/foo", ("Exact", "/foo")),
    ([("Exact", "/foo")], "/bar", None),
    ([("Exact", "/foo")], "/foo/", None),
    # nginx answers "/foo" with 301 to the location "= /foo/" (auto_redirect): see
    # test_routing_locations.py; no route serves it.
    ([("Exact", "/foo/")], "/foo", ("Exact", "/foo/", "301")),
    ([("Exact", "/foo/")], "/foo/", ("Exact", "/foo/")),
    ([("Exact", "/foo")], "/foo/bar", None),
    ([("Exact", "/foo")], "/FOO", None),
    # Prefix /foo and /foo/ are the same thing.
    ([("Prefix", "/foo")], "/foo", ("Prefix", "/foo")),
    ([("Prefix", "/foo")], "/foo/", ("Prefix", "/foo")),
    ([("Prefix", "/foo")], "/foo/bar", ("Prefix", "/foo")),
    # Where the spec matches /foo, ingress-nginx's "location /foo/" answers 301 to /foo/.
    ([("Prefix", "/foo/")], "/foo", ("Prefix", "/foo/", "301")),
    ([("Prefix", "/foo/")], "/foo/", ("Prefix", "/foo/")),
    ([("Prefix", "/foo/")], "/foo/bar", ("Prefix", "/foo/")),
    ([("Prefix", "/foo")], "/bar", None),
    ([("Prefix", "/foo")], "/", None),
    # Prefix matching is element-wise, not string-wise.
    ([("Prefix", "/aaa/bb")], "/aaa/bbb", None),
    ([("Prefix", "/aaa/bbb")], "/aaa/bbb", ("Prefix", "/aaa/bbb")),
    ([("Prefix", "/aaa/bbb/")], "/aaa/bbb", ("Prefix", "/aaa/bbb/", "301")),
    ([("Prefix", "/aaa/bbb")], "/aaa/bbb/", ("Prefix", "/aaa/bbb")),
    ([("Prefix", "/aaa/bbb")], "/aaa/bbb/ccc", ("Prefix", "/aaa/bbb")),
    ([("Prefix", "/aaa/bbb")], "/aaa/bbbxyz", None),
    ([("Prefix", "/aaa/bbb")], "/aaa", None),
    ([("Prefix", "/foo")], "/Foo", None),
    # Longest matching prefix wins.
    ([("Prefix", "/"), ("Prefix", "/aaa")], "/aaa/ccc", ("Prefix", "/aaa")),
    ([("Prefix", "/aaa"), ("Prefix", "/")], "/aaa/ccc", ("Prefix", "/aaa")),
    (
        [("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")],
        "/aaa/bbb",
        ("Prefix", "/aaa/bbb"),
    ),
    ([("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")], "/ccc", ("Prefix", "/")),
    ([("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")], "/aaa/bbx", ("Prefix", "/aaa")),
    ([("Prefix", "/aaa")], "/ccc", None),
    # Exact beats Prefix for the same path; longer Prefix still beats Exact elsewhere.
    ([("Prefix", "/foo"), ("Exact", "/foo")], "/foo", ("Exact", "/foo")),
    ([("Exact", "/foo"), ("Prefix", "/foo")], "/foo", ("Exact", "/foo")),
    ([("Prefix", "/foo"), ("Exact", "/foo")], "/foo/", ("Prefix", "/foo")),
    ([("Prefix", "/foo"), ("Exact", "/foo")], "/foo/x", ("Prefix", "/foo")),
    ([("Exact", "/foo"), ("Prefix", "/foo/bar")], "/foo/bar", ("Prefix", "/foo/bar")),
    ([("Exact", "/foo/bar"), ("Prefix", "/foo")], "/foo/bar", ("Exact", "/foo/bar")),
    ([("Exact", "/foo/bar"), ("Prefix", "/foo")], "/foo/bar/", ("Prefix", "/foo")),
    # ImplementationSpecific, without regex annotations, behaves as Prefix.
    ([("ImplementationSpecific", "/foo")], "/foo", ("ImplementationSpecific", "/foo")),
    ([("ImplementationSpecific", "/foo")], "/foo/bar", ("ImplementationSpecific", "/foo")),
    ([("ImplementationSpecific", "/foo")], "/foobar", None),
    ([("ImplementationSpecific", "/foo.*")], "/foo/bar", None),
    ([("ImplementationSpecific", "/foo.*")], "/foo.*/x", ("ImplementationSpecific", "/foo.*")),
    # Mixed types on one host.
    (
        [("Exact", "/"), ("Prefix", "/api"), ("ImplementationSpecific", "/static")],
        "/",
        ("Exact", "/"),
    ),
    (
        [("Exact", "/"), ("Prefix", "/api"), ("ImplementationSpecific", "/static")],
        "/index.html",
        None,
    ),
    (
        [("Exact", "/"), ("Prefix", "/api"), ("ImplementationSpecific", "/static")],
        "/api/v1",
        ("Prefix", "/api"),
    ),
    (
        [("Exact", "/"), ("Prefix", "/api"), ("ImplementationSpecific", "/static")],
        "/static/app.js",
        ("ImplementationSpecific", "/static"),
    ),
]


@pytest.mark.parametrize(("paths", "request_path", "expected"), SPEC_EXAMPLES)
def test_spec_path_examples(
    paths: list[tuple[str, str]], request_path: str, expected: tuple[str, str] | None
) -> None:
    assert served_by(table_with(paths), HOST, request_path) == expected


def test_empty_implementation_specific_path_means_root() -> None:
    table = build(
        ingress("web", [rule(HOST, path(None, "web", path_type="ImplementationSpecific"))]),
        service("web"),
    )
    assert table.problems == ()
    assert served_by(table, HOST, "/any/thing") == ("ImplementationSpecific", "/")


def test_prefix_match_goes_through_decide_with_normalised_path() -> None:
    table = table_with([("Prefix", "/public"), ("Prefix", "/admin")])
    action = decide(table, request(HOST, "/public/../admin/x"))
    assert isinstance(action, Forward)
    assert action.route.path == "/admin"
    # The upstream gets the request target as sent.
    assert action.target == "/public/../admin/x"


# -- hosts ---------------------------------------------------------------------------

# (rule hosts, request host, expected rule host serving it, or None)
HOST_CASES = [
    (["foo.bar.com"], "foo.bar.com", "foo.bar.com"),
    (["foo.bar.com"], "bar.com", None),
    (["foo.bar.com"], "x.foo.bar.com", None),
    (["*.example.com"], "a.example.com", "*.example.com"),
    (["*.example.com"], "example.com", None),
    (["*.example.com"], "a.b.example.com", None),
    (["*.example.com"], ".example.com", None),
    (["*.example.com"], "aexample.com", None),
    (["*.foo.com"], "baz.bar.foo.com", None),
    (["*.foo.com"], "bar.foo.com", "*.foo.com"),
    # Exact host beats a wildcard, whatever the order.
    (["*.example.com", "a.example.com"], "a.example.com", "a.example.com"),
    (["a.example.com", "*.example.com"], "a.example.com", "a.example.com"),
    (["a.example.com", "*.example.com"], "b.example.com", "*.example.com"),
    # A rule without host matches every host that no other rule names.
    ([None], "anything.test", ""),
    ([None], "", ""),
    ([None, "a.example.com"], "a.example.com", "a.example.com"),
    ([None, "a.example.com"], "b.example.com", ""),
    ([None, "*.example.com"], "b.example.com", "*.example.com"),
    ([None, "*.example.com"], "example.com", ""),
    # Rule hosts are case-insensitive.
    (["Foo.Example.COM"], "foo.example.com", "foo.example.com"),
]


@pytest.mark.parametrize(("hosts", "request_host", "expected"), HOST_CASES)
def test_host_matching(hosts: list[str | None], request_host: str, expected: str | None) -> None:
    table = build(
        ingress("hosts", [rule(h, path("/", "web")) for h in hosts]),
        service("web"),
    )
    assert table.problems == ()
    vhost = table.find_host(request_host)
    assert (vhost.host if vhost is not None else None) == expected
    route = table.route_for(request_host, "/x")
    assert (route is not None) == (expected is not None)


@pytest.mark.parametrize(
    ("header", "normalized"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("example.com:8080", "example.com"),
        ("EXAMPLE.com:443", "example.com"),
        ("example.com.", "example.com"),
        ("example.com.:80", "example.com"),
        (" example.com ", "example.com"),
        ("[::1]:8080", "[::1]"),
        ("[2001:DB8::1]", "[2001:db8::1]"),
        ("", ""),
    ],
)
def test_normalize_host(header: str, normalized: str) -> None:
    assert normalize_host(header) == normalized


@pytest.mark.parametrize("header", ["a.example.com", "A.Example.Com", "a.example.com:8443"])
def test_decide_matches_host_case_insensitively_and_ignores_port(header: str) -> None:
    table = build(
        ingress("a", [rule("a.example.com", path("/", "a"))]),
        ingress("b", [rule("*.example.com", path("/", "b"))]),
        service("a"),
        service("b"),
        endpoint_slice("a", ["10.0.0.1"]),
        endpoint_slice("b", ["10.0.0.2"]),
    )
    action = decide(table, request(header, "/"))
    assert isinstance(action, Forward)
    assert action.endpoint.host == "10.0.0.1"
    assert action.route.ingress == "default/a"


def test_wildcard_host_through_decide() -> None:
    table = build(
        ingress("b", [rule("*.example.com", path("/", "b"))]),
        service("b"),
        endpoint_slice("b", ["10.0.0.2"]),
    )
    assert isinstance(decide(table, request("X.Example.com:80", "/")), Forward)
    assert decide(table, request("example.com", "/")).status == 404  # type: ignore[union-attr]
    assert decide(table, request("x.y.example.com", "/")).status == 404  # type: ignore[union-attr]


def test_same_host_across_ingresses_merges() -> None:
    table = build(
        ingress("one", [rule(HOST, path("/a", "a"))], created=1),
        ingress("two", [rule(HOST, path("/b", "b"), path("/a/deep", "b"))], created=2),
        service("a"),
        service("b"),
    )
    assert table.problems == ()
    assert [
        r.ingress for r in (table.route_for(HOST, p) for p in ("/a/x", "/b/y", "/a/deep/z"))
    ] == [
        "default/one",
        "default/two",
        "default/two",
    ]
    assert table.route_for(HOST, "/c") is None


# -- normalize_path -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a/b/", "/a/b/"),
        ("/a.b/c..d/.e", "/a.b/c..d/.e"),
        ("/a/../b", "/b"),
        ("/a/./b", "/a/b"),
        ("//a", "/a"),
        ("/a//b///c", "/a/b/c"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/a/./", "/a/"),
        ("/..", "/"),
        ("/../../a", "/a"),
        ("/./", "/"),
        ("/a/%2e%2e/b", "/b"),
        ("/a/%2E%2E/b", "/b"),
        ("/a/%2e%2E/b", "/b"),
        ("/a/%2e/b", "/a/b"),
        ("/public/%2e%2e/admin", "/admin"),
        # Every escape is decoded, as nginx matches locations against $uri:
        # /%61dmin is /admin, and %2F is a slash.
        ("/a%20b/c", "/a b/c"),
        ("/a/%2fb", "/a/b"),
        ("/%61dmin", "/admin"),
        ("/%2Fadmin", "/admin"),
        ("/a%2F%2E%2E%2Fadmin", "/admin"),
        ("/caf%C3%A9", "/caf\xc3\xa9"),
        ("/a%25b", "/a%b"),
        ("/a%3Fb", "/a?b"),
    ],
)
def test_normalize_path(raw: str, normalized: str) -> None:
    assert normalize_path(raw) == normalized


@pytest.mark.parametrize("raw", ["/a%", "/a%2", "/a%zz", "/a%2g/b", "/a%00b", "/%%41"])
def test_invalid_percent_encoding_is_refused(raw: str) -> None:
    assert normalize_path(raw) is None


@pytest.mark.parametrize(
    ("piece", "escaped"),
    [("/a/b", "/a/b"), ("a b", "a%20b"), ("a%b", "a%25b"), ("a?b#c", "a%3Fb%23c"), ("\xe9", "%E9")],
)
def test_decoded_pieces_are_escaped_again_for_the_upstream(piece: str, escaped: str) -> None:
    assert escape_path(piece) == escaped
    assert normalize_path("/" + escaped) == "/" + piece.lstrip("/")
