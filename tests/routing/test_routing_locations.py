"""Which route serves a request, as ingress-nginx v1.15.1's nginx locations decide it.

What ingress-nginx makes of a host's paths (cited where ingressd copies it):

* ImplementationSpecific is Prefix: the store converts it before anything else
  (internal/k8s/main.go SetDefaultNGINXPathType; its test "ImplementationSpecific
  PathType should be changed to Prefix").
* Without regex paths on the host, Exact ``/p`` is ``location = /p``; Prefix
  ``/p`` is ``location /p/`` plus ``location = /p`` unless an Exact ``/p``
  exists (controller/location.go updateServerLocations); Prefix ``/`` stays
  ``location /``. nginx takes an exact name first, then the longest prefix;
  ``/p`` one "/" short of a location name gets 301 to it (auto_redirect).
* With a regex path anywhere on the host every location is ``~* "^<path>"``,
  Exact too (template.go buildLocation), tried in order: longer paths first,
  then the greater path (controller.go getBackendServers' two stable sorts),
  ingress-nginx's own ``/`` location among them.

The property at the end checks ingressd against a model written from those
rules and nginx's location selection, not from ingressd's code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from k8s_objects import build, endpoint_slice, ingress, path, request, rule, service

from ingressd.model.table import RouteTable
from ingressd.routing.decide import Forward, Respond, decide

HOST = "example.com"
NGINX = "nginx.ingress.kubernetes.io/"
IS = "ImplementationSpecific"


def table_of(*ingresses: list[tuple[str, str]], regex: tuple[int, ...] = ()) -> RouteTable:
    """Ingress i (created i) has the (pathType, path) entries given; use-regex on ``regex``."""
    objs = [
        ingress(
            f"i{i}",
            [rule(HOST, *(path(p, "web", path_type=t) for t, p in entries))],
            annotations={NGINX + "use-regex": "true"} if i in regex else None,
            created=i,
        )
        for i, entries in enumerate(ingresses)
    ]
    return build(*objs, service("web"), endpoint_slice("web", ["10.0.0.1"]))


def served(table: RouteTable, request_path: str) -> str | None:
    """ "i<n> <type> <path>" of the route, "301 <location>" or None (404)."""
    route = table.route_for(HOST, request_path)
    if route is None:
        return None
    if route.slash_redirect is not None:
        return f"301 {route.slash_redirect}"
    return f"{route.ingress.split('/')[1]} {route.path_type} {route.path}"


# (Ingresses' paths in creation order, request, served by)
STATIC = [
    # The brief's pair: both become "location /foo/bar/" in ingress-nginx, which nginx
    # refuses as a duplicate; the older keeps serving (the newer is reported).
    ([[(IS, "/foo/bar")], [(IS, "/foo/bar/")]], "/foo/barx", None),
    ([[(IS, "/foo/bar")], [(IS, "/foo/bar/")]], "/foo/bar/x", "i0 ImplementationSpecific /foo/bar"),
    ([[(IS, "/foo/bar")], [(IS, "/foo/bar/")]], "/foo/bar", "i0 ImplementationSpecific /foo/bar"),
    # ImplementationSpecific is Prefix: whole elements, no string prefix.
    ([[(IS, "/foo/bar")]], "/foo/barx", None),
    ([[(IS, "/foo/bar")]], "/foo/bar/", "i0 ImplementationSpecific /foo/bar"),
    ([[(IS, "/")]], "/anything", "i0 ImplementationSpecific /"),
    # A location ending in "/" answers the name without it with 301.
    ([[("Prefix", "/foo/")]], "/foo", "301 /foo/"),
    ([[(IS, "/foo/")]], "/foo", "301 /foo/"),
    ([[("Exact", "/foo/")]], "/foo", "301 /foo/"),
    ([[("Prefix", "/")], [("Prefix", "/foo/")]], "/foo", "301 /foo/"),
    ([[("Prefix", "/foo/")]], "/foo/", "i0 Prefix /foo/"),
    ([[("Prefix", "/foo/")]], "/foo/x", "i0 Prefix /foo/"),
    ([[("Prefix", "/foo/")]], "/foox", None),
    # ... unless the shorter name is a location itself.
    ([[("Exact", "/foo/")], [("Prefix", "/foo")]], "/foo", "i1 Prefix /foo"),
    ([[("Exact", "/foo/")], [("Prefix", "/foo")]], "/foo/", "i0 Exact /foo/"),
    ([[("Exact", "/foo/")], [("Prefix", "/foo")]], "/foo/x", "i1 Prefix /foo"),
    ([[("Exact", "/foo")], [("Prefix", "/foo/")]], "/foo", "i0 Exact /foo"),
    ([[("Exact", "/foo")], [("Prefix", "/foo/")]], "/foo/", "i1 Prefix /foo/"),
    # Exact names first, then the longest prefix.
    ([[("Prefix", "/foo")], [("Exact", "/foo")]], "/foo", "i1 Exact /foo"),
    ([[("Prefix", "/foo")], [("Exact", "/foo")]], "/foo/", "i0 Prefix /foo"),
    ([[("Exact", "/")], [("Prefix", "/")]], "/", "i0 Exact /"),
    ([[("Exact", "/")], [("Prefix", "/")]], "/x", "i1 Prefix /"),
    ([[("Prefix", "/foo"), ("Prefix", "/foo/bar")]], "/foo/bar/baz", "i0 Prefix /foo/bar"),
    ([[("Prefix", "/foo"), ("Prefix", "/foo/bar")]], "/foo/barbaz", "i0 Prefix /foo"),
    ([[("Prefix", "/foo")]], "/FOO", None),
    # ImplementationSpecific and Prefix of one path are one location: the older wins.
    ([[("Prefix", "/foo")], [(IS, "/foo")]], "/foo/x", "i0 Prefix /foo"),
    ([[(IS, "/foo")], [("Prefix", "/foo")]], "/foo/x", "i0 ImplementationSpecific /foo"),
]


@pytest.mark.parametrize(("ingresses", "request_path", "expected"), STATIC)
def test_static_locations(
    ingresses: list[list[tuple[str, str]]], request_path: str, expected: str | None
) -> None:
    assert served(table_of(*ingresses), request_path) == expected


def test_trailing_slash_twins_are_a_reported_conflict() -> None:
    table = table_of([(IS, "/foo/bar")], [(IS, "/foo/bar/")])
    assert [(p.obj, p.reason) for p in table.problems] == [
        (
            "Ingress default/i1",
            "path '/foo/bar/' (ImplementationSpecific) on host example.com is already served "
            "by older Ingress default/i0; this rule is ignored",
        )
    ]


def test_implementation_specific_and_prefix_of_one_path_conflict() -> None:
    table = table_of([("Prefix", "/foo")], [(IS, "/foo")])
    assert [p.obj for p in table.problems] == ["Ingress default/i1"]
    assert "already served by older Ingress default/i0" in table.problems[0].reason


# Regex hosts: Ingress 0 has use-regex (a path of its own puts the host in regex mode).
REGEX = [
    # Exact is a case-insensitive prefix regex too.
    ([[(IS, "/re.*")], [("Exact", "/exact")]], "/exact/more", "i1 Exact /exact"),
    ([[(IS, "/re.*")], [("Exact", "/exact")]], "/EXACTLY", "i1 Exact /exact"),
    # The docs' example (ingress-path-matching.md): the longer regex is tried first, so
    # /foo/bar/bar goes to it, not to the Prefix path that spells it out.
    (
        [[("Prefix", "/foo/bar/bar"), (IS, "/foo/bar/[A-Z0-9]{3}")]],
        "/foo/bar/bar",
        "i0 ImplementationSpecific /foo/bar/[A-Z0-9]{3}",
    ),
    # Equal lengths: the greater path first, whatever the creation order.
    ([[(IS, "/a.c")], [("Prefix", "/abc")]], "/abc", "i1 Prefix /abc"),
    ([[(IS, "/a.c")], [("Prefix", "/abc")]], "/axc", "i0 ImplementationSpecific /a.c"),
    # ingress-nginx's own "/" location comes before an Exact "/" (same path, created
    # first): the default backend answers, here 404.
    ([[(IS, "/re.*")], [("Exact", "/")]], "/", None),
    ([[(IS, "/re.*")], [("Exact", "/")], [("Prefix", "/")]], "/", "i2 Prefix /"),
    # A Prefix path beside an Exact one of the same path: only "^/p/" is left to it.
    ([[(IS, "/re")], [("Prefix", "/p")], [("Exact", "/p")]], "/px", "i2 Exact /p"),
    ([[(IS, "/re")], [("Prefix", "/p")], [("Exact", "/p")]], "/p", "i2 Exact /p"),
    ([[(IS, "/re")], [("Prefix", "/p")], [("Exact", "/p")]], "/p/x", "i1 Prefix /p"),
    # No 301 among regex locations.
    ([[(IS, "/re")], [("Prefix", "/foo/")]], "/foo", None),
]


@pytest.mark.parametrize(("ingresses", "request_path", "expected"), REGEX)
def test_regex_locations(
    ingresses: list[list[tuple[str, str]]], request_path: str, expected: str | None
) -> None:
    table = table_of(*ingresses, regex=(0,))
    assert table.problems == ()
    assert served(table, request_path) == expected


@pytest.mark.parametrize(
    ("header", "query", "tls", "location"),
    [
        (HOST, "", False, f"http://{HOST}/foo/"),
        (HOST + ":8080", "a=1&b", False, f"http://{HOST}:8080/foo/?a=1&b"),
        ("EXAMPLE.com.", "", True, f"https://{HOST}/foo/"),
    ],
)
def test_slash_redirect_response(header: str, query: str, tls: bool, location: str) -> None:
    table = table_of([("Prefix", "/foo/")])
    action = decide(table, request(header, "/foo", query, tls=tls))
    assert isinstance(action, Respond)
    assert (action.status, action.location) == (301, location)
    assert action.route is not None and action.route.ingress == "default/i0"
    assert isinstance(decide(table, request(header, "/foo/", query, tls=tls)), Forward)


def test_lookup_probes_do_not_grow_with_routes() -> None:
    """One probe of the exact names, then one per path element: never a scan."""

    class Counting(dict):  # type: ignore[type-arg]
        probes = 0

        def get(self, key, default=None):  # type: ignore[no-untyped-def]
            Counting.probes += 1
            return super().get(key, default)

    table = table_of([("Prefix", f"/p{i}") for i in range(2000)] + [("Exact", "/x/y")])
    vhost = table.find_host(HOST)
    assert vhost is not None
    counted = vhost.__class__(
        vhost.host,
        exact=vhost.exact,
        prefix=Counting(vhost.prefix),
        static=Counting(vhost.static),
        tls=vhost.tls,
    )
    assert counted.match("/p1999/a/b/c") is not None
    assert Counting.probes == 1 + 4  # static; /p1999/a/b/c, /p1999/a/b, /p1999/a, /p1999


# -- the reference model ---------------------------------------------------------------------


@dataclass(frozen=True)
class Loc:
    """One nginx location as ingress-nginx writes it."""

    modifier: str  # "=", "" (prefix) or "~*"
    name: str
    owner: tuple[str, str, str] | None  # (ingress, path, pathType); None: the default backend


def nginx_locations(paths: list[tuple[str, str, str, bool]], first_regex: bool) -> list[Loc]:
    """(ingress, path, pathType, use-regex) in creation order -> the server's locations."""
    # createServers: the server starts with its "/" location, the default backend, with
    # the annotations of the first Ingress with a rule for the host (``first_regex``).
    locations: list[dict] = [{"path": "/", "kind": "Prefix", "owner": None, "regex": first_regex}]
    for ing, p, t, use_regex in paths:
        kind = "Exact" if t == "Exact" else "Prefix"  # SetDefaultNGINXPathType
        same = [loc for loc in locations if loc["path"] == p and loc["kind"] == kind]
        if same:
            if same[0]["owner"] is None:  # a Prefix "/" path replaces the default location
                same[0].update(owner=(ing, p, t), regex=use_regex)
            continue
        locations.append({"path": p, "kind": kind, "owner": (ing, p, t), "regex": use_regex})
    enforce_regex = any(loc["regex"] for loc in locations)  # template.go enforceRegexModifier
    if not enforce_regex:
        # Prefix /p and /p/ both become "location /p/": nginx refuses the configuration,
        # and the one without the younger path keeps serving.
        seen: set[str] = set()
        kept = []
        for loc in locations:
            if loc["kind"] == "Prefix":
                name = loc["path"].rstrip("/")
                if name in seen:
                    continue
                seen.add(name)
            kept.append(loc)
        locations = kept
    locations.sort(key=lambda loc: loc["path"].encode(), reverse=True)
    locations.sort(key=lambda loc: len(loc["path"].encode()), reverse=True)
    exact_paths = {loc["path"] for loc in locations if loc["kind"] == "Exact"}
    out: list[tuple[dict, str, bool]] = []  # (location, name, exact?)
    for loc in locations:
        p = loc["path"]
        if p == "/" or loc["kind"] == "Exact" or loc["regex"]:
            out.append((loc, p, loc["kind"] == "Exact"))
        else:
            out.append((loc, p if p.endswith("/") else p + "/", False))
            if p not in exact_paths:
                out.append((loc, p, True))  # the "= /p" twin
    if enforce_regex:
        return [Loc("~*", "^" + name, loc["owner"]) for loc, name, _ in out]
    return [Loc("=" if exact else "", name, loc["owner"]) for loc, name, exact in out]


def nginx_select(locations: list[Loc], uri: str) -> tuple[str, object]:
    """nginx's choice: exact name; else a 301 (auto_redirect); else regex in order; else
    the longest prefix."""
    for loc in locations:
        if loc.modifier == "=" and loc.name == uri:
            return ("location", loc.owner)
    static = [loc for loc in locations if loc.modifier in ("=", "")]
    prefixes = [loc for loc in static if loc.modifier == ""]
    if uri not in {loc.name for loc in prefixes} and any(loc.name == uri + "/" for loc in static):
        return ("301", uri + "/")
    for loc in locations:
        if loc.modifier == "~*" and re.search(loc.name, uri, re.IGNORECASE):
            return ("location", loc.owner)
    best = max((loc for loc in prefixes if uri.startswith(loc.name)), key=lambda loc: len(loc.name))
    return ("location", best.owner)


SEGMENTS = st.sampled_from(["a", "b", "ab", "A"])
PATHS = st.builds(
    lambda segments, slash: "/" + "/".join(segments) + ("/" if slash and segments else ""),
    st.lists(SEGMENTS, max_size=3),
    st.booleans(),
)
REQUESTS = st.builds(
    lambda segments, slash: "/" + "/".join(segments) + ("/" if slash else ""),
    st.lists(st.sampled_from(["a", "b", "ab", "A", "abc", "x"]), max_size=4),
    st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(
    entries=st.lists(
        st.tuples(st.integers(0, 2), PATHS, st.sampled_from(["Exact", "Prefix", IS])),
        min_size=1,
        max_size=7,
    ),
    regex_ingresses=st.sets(st.integers(0, 2), max_size=1),
    requests=st.lists(REQUESTS, min_size=1, max_size=8),
)
def test_ingressd_chooses_as_nginx_does(
    entries: list[tuple[int, str, str]], regex_ingresses: set[int], requests: list[str]
) -> None:
    by_ingress: list[list[tuple[str, str]]] = [[], [], []]
    for i, p, t in entries:
        by_ingress[i].append((t, p))
    table = table_of(*by_ingress, regex=tuple(regex_ingresses))
    ordered = [
        (f"default/i{i}", p, t, i in regex_ingresses)
        for i, group in enumerate(by_ingress)
        for t, p in group
    ]
    locations = nginx_locations(ordered, first_regex=0 in regex_ingresses)
    for uri in requests:
        kind, what = nginx_select(locations, uri)
        expected = f"301 {what}" if kind == "301" else None
        if kind == "location" and what is not None:
            ing, p, t = what  # type: ignore[misc]
            expected = f"{ing.split('/')[1]} {t} {p}"
        assert served(table, uri) == expected, (uri, locations)
