"""Probe requests from a routing table: a pure function, the same table, the same probes.

For every route the table serves it makes the requests that show how the
route behaves: the path itself, a deeper path and a near-miss that must not
match; for regex hosts, samples the pattern matches and one it must not;
plain HTTP and TLS with SNI (a TLS host's plain request gets the
ssl-redirect); the canary's header, header value and cookie; the requests its
redirects, app-root, CORS preflight, authentication and rewrite answer to.
Each probe says why it exists and which Ingress it was made for, and what the
table expects to serve it (``expect``), so a difference reads as a sentence.

Wildcard hosts get a name one label under them (which they match) and one two
labels under them (which they must not, as nginx's ``*.`` matches one label);
rules without a host get a name no rule has.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from ..model.table import Route, RouteTable, VirtualHost
from .sample import samples

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Names used where a probe needs a value of its own: a host no rule names, a
# path segment no route names, an origin no CORS list allows.
UNKNOWN_HOST = "ingressd-diff.invalid"
LABEL = "ingressd-diff"
FOREIGN_ORIGIN = "https://ingressd-diff.invalid"
DEFAULT_ORIGIN = "https://origin.example"
NO_MATCH_PATH = "/ingressd-diff-no-match"


@dataclass(frozen=True, slots=True)
class Probe:
    """One request, sent alike to the reference and to ingressd."""

    method: str
    scheme: str  # "http" or "https" (then SNI = host)
    host: str  # the Host header, and the SNI on TLS
    path: str  # the request target: path and query, as sent
    headers: tuple[tuple[str, str], ...] = ()
    cookies: tuple[tuple[str, str], ...] = ()
    why: tuple[str, ...] = ()  # each reason this probe exists
    ingress: str = ""  # "namespace/name" it was made for; "" for the default backend
    canary_ingress: str = ""  # the canary Ingress attached to its route, if any
    # What the table says serves it: "namespace/name Prefix /api", "no route (404)".
    expect: str = ""
    # False when the backend may differ per request on our side (a canary weight
    # strictly between 0 and its total): then which backend answered, and what it
    # was sent, are not compared.
    same_backend: bool = True

    @property
    def key(self) -> tuple[object, ...]:
        return (self.method, self.scheme, self.host, self.path, self.headers, self.cookies)

    @property
    def safe(self) -> bool:
        return self.method in SAFE_METHODS


def generate(table: RouteTable) -> tuple[Probe, ...]:
    """Every probe for ``table``, each request once (reasons merged), in a stable order."""
    merged: dict[tuple[object, ...], Probe] = {}
    for probe in _all(table):
        probe = replace(probe, expect=expect(table, probe.host, probe.path))
        known = merged.get(probe.key)
        if known is None:
            merged[probe.key] = probe
        else:
            why = known.why + tuple(w for w in probe.why if w not in known.why)
            same = known.same_backend and probe.same_backend
            merged[probe.key] = replace(known, why=why, same_backend=same)
    return tuple(merged.values())


def bound(probes: tuple[Probe, ...], limit: int) -> tuple[tuple[Probe, ...], int]:
    """At most ``limit`` probes, taken round-robin over the Ingresses so each keeps
    its first probes (the path itself comes first); and how many were left out."""
    if len(probes) <= limit:
        return probes, 0
    queues: dict[str, list[Probe]] = {}
    for p in probes:
        queues.setdefault(p.ingress, []).append(p)
    kept: list[Probe] = []
    depth = 0
    while len(kept) < limit:
        for queue in queues.values():
            if depth < len(queue) and len(kept) < limit:
                kept.append(queue[depth])
        depth += 1
    chosen = set(map(id, kept))
    return tuple(p for p in probes if id(p) in chosen), len(probes) - len(kept)


def expect(table: RouteTable, host: str, path: str) -> str:
    """What ``table`` serves ``host`` and ``path`` with, in words."""
    route = table.route_for(host, path.partition("?")[0])
    if route is None:
        return "no route (404)"
    return f"{route.ingress} {describe(route)}" if route.ingress else describe(route)


def describe(route: Route) -> str:
    if route.regex is not None:
        return f"regex {route.regex.pattern}"
    return f"{route.path_type} {route.path}" if route.path else "default backend"


# -- walking the table ---------------------------------------------------------------------


def _all(table: RouteTable) -> Iterator[Probe]:
    for name, vhost in sorted(table.exact_hosts.items()):
        yield from _host(vhost, name)
    for suffix, vhost in sorted(table.wildcard_hosts.items()):
        yield from _host(vhost, f"{LABEL}.{suffix}")
        first = next(_routes(vhost), vhost.default)
        yield Probe(
            "GET",
            "http",
            f"a.{LABEL}.{suffix}",
            "/",
            why=(f"near-miss of host *.{suffix}: two labels under it",),
            ingress=first.ingress if first is not None else "",
        )
    if table.catch_all is not None:
        yield from _host(table.catch_all, UNKNOWN_HOST)
    for other, host in sorted(table.www_redirects.items()):
        route = table.route_for(host, "/")
        yield Probe(
            "GET",
            "http",
            other,
            "/",
            why=(f"from-to-www-redirect: {other} redirects to {host}",),
            ingress=route.ingress if route is not None else "",
        )
    # A host no rule names: the catch-all rules, the default backend or ingressd's 404;
    # the probe belongs to the Ingress whose route answers it.
    route = table.route_for(UNKNOWN_HOST, f"/{LABEL}")
    yield Probe(
        "GET",
        "http",
        UNKNOWN_HOST,
        f"/{LABEL}",
        why=("a host no rule names",),
        ingress=route.ingress if route is not None else "",
    )


def _routes(vhost: VirtualHost) -> Iterator[Route]:
    """The host's routes, each once, in a stable order (stand-ins left out)."""
    if vhost.regex_mode:
        yield from vhost.regex
        return
    seen: set[int] = set()
    for group in (vhost.exact, vhost.prefix):
        for _, route in sorted(group.items()):
            if route.slash_redirect is None and id(route) not in seen:
                seen.add(id(route))
                yield route


def _host(vhost: VirtualHost, host: str) -> Iterator[Probe]:
    for route in _routes(vhost):
        yield from _route(vhost, route, host)
    if vhost.default is not None:
        why = "spec.defaultBackend of the host's Ingress: a path no rule names"
        yield from _paths_of(vhost, vhost.default, host, ((f"/{LABEL}", why),))


def _route(vhost: VirtualHost, route: Route, host: str) -> Iterator[Probe]:
    what = describe(route)
    paths: list[tuple[str, str]] = []
    if route.regex is not None:
        for sample in samples(route.regex.pattern):
            if route.regex.matches(sample):
                paths.append((sample, f"sample {what} matches"))
        if paths:
            deeper = paths[0][0].rstrip("/") + "/" + LABEL
            if route.regex.matches(deeper) and deeper not in dict(paths):
                paths.append((deeper, f"sample {what} matches: a deeper path"))
        if not route.regex.matches(NO_MATCH_PATH):
            paths.append((NO_MATCH_PATH, f"sample {what} must not match"))
    else:
        paths += _plain_paths(route, what)
    yield from _paths_of(vhost, route, host, paths)
    yield from _features(vhost, route, host, paths[0][0] if paths else "/")


def _plain_paths(route: Route, what: str) -> list[tuple[str, str]]:
    path = route.path or "/"
    out = [(path, f"{what}: the path")]
    base = path.rstrip("/")
    if route.path_type == "Exact":
        out.append((base + "/" + LABEL, f"{what}: a deeper path must not match"))
        out.append((base + "x" if base else "/x", f"near-miss of {what}"))
        if path.endswith("/") and base:
            out.append((base, f"near-miss of {what}: one slash short"))
        return out
    out.append((base + "/" + LABEL, f"{what}: a deeper path"))
    if base:
        out.append((base + "x", f"near-miss of {what}"))
        if path.endswith("/"):
            out.append((base, f"near-miss of {what}: one slash short"))
    return out


def _paths_of(
    vhost: VirtualHost, route: Route, host: str, paths: Iterable[tuple[str, str]]
) -> Iterator[Probe]:
    """Each path over the schemes that show it: a TLS host's over HTTPS and over plain
    HTTP (the ssl-redirect); a plain host's over HTTP, its first also over HTTPS."""
    base = Probe(
        "GET",
        "http",
        host,
        "/",
        ingress=route.ingress,
        canary_ingress=route.canary.ingress if route.canary is not None else "",
        same_backend=_decided(route),
    )
    for i, (path, why) in enumerate(paths):
        if vhost.tls:
            yield replace(base, scheme="https", path=path, why=(why,))
            yield replace(
                base, path=path, why=(f"{why}; TLS host over plain HTTP: the ssl-redirect",)
            )
        else:
            yield replace(base, path=path, why=(why,))
            if i == 0:
                tls_why = f"{why}; over TLS with SNI (the default certificate)"
                yield replace(base, scheme="https", path=path, why=(tls_why,))
        if i == 0:
            # A method that changes state: made here, sent only when asked (--unsafe-methods).
            scheme = "https" if vhost.tls else "http"
            yield replace(base, method="POST", scheme=scheme, path=path, why=(f"{why}; POST",))


def _decided(route: Route) -> bool:
    """Whether our side sends every request of the route to one backend (no canary, or
    a canary weight of 0 or of its total): then which backend answered is compared."""
    canary = route.canary
    return canary is None or canary.weight <= 0 or canary.weight >= canary.total


def _features(vhost: VirtualHost, route: Route, host: str, path: str) -> Iterator[Probe]:
    """The requests the route's annotations answer to."""
    policy = route.policy
    what = f" ({describe(route)})"
    base = Probe(
        "GET",
        "https" if vhost.tls else "http",
        host,
        path,
        ingress=route.ingress,
        canary_ingress=route.canary.ingress if route.canary is not None else "",
    )

    def probe(why: str, **changes: Any) -> Probe:
        return replace(base, why=(why + what,), **changes)

    if policy.redirect is not None:
        code, _ = policy.redirect
        kind = "permanent-redirect" if code in (301, 308) else "temporal-redirect"
        yield probe(f"{kind} ({code})")
    if policy.app_root is not None:
        yield probe(f"app-root {policy.app_root}: / redirects", path="/")
    if policy.rewrite_target is not None:
        yield probe(f"rewrite-target {policy.rewrite_target}: the upstream path")
        # nginx's rewrite keeps the query (and adds it after a target's own "?").
        query = f"{path}{'&' if '?' in path else '?'}{LABEL}=1"
        yield probe(f"rewrite-target {policy.rewrite_target}: the query string", path=query)
    if policy.force_ssl_redirect and not vhost.tls:
        yield probe("force-ssl-redirect: plain HTTP redirects", scheme="http")
    if policy.basic_auth is not None or policy.auth is not None:
        yield probe("basic auth: an unauthenticated request")
    if policy.external_auth is not None:
        yield probe("auth-url: an unauthenticated request")
    if policy.fail_closed is not None:
        yield probe(f"access control that cannot be honoured answers {policy.fail_closed[0]}")
    if policy.cors is not None:
        yield from _cors(policy.cors.origins, probe)
    if route.canary is not None:
        yield from _canary(route, probe)


def _cors(origins: tuple[str, ...], probe: Callable[..., Probe]) -> Iterator[Probe]:
    origin = next((o for o in origins if "*" not in o), DEFAULT_ORIGIN)
    preflight = (("Origin", origin), ("Access-Control-Request-Method", "GET"))
    yield probe("CORS preflight", method="OPTIONS", headers=preflight)
    yield probe("CORS: a request with an allowed Origin", headers=(("Origin", origin),))
    foreign = (("Origin", FOREIGN_ORIGIN), ("Access-Control-Request-Method", "GET"))
    yield probe("CORS preflight from an Origin not allowed", method="OPTIONS", headers=foreign)


def _canary(route: Route, probe: Callable[..., Probe]) -> Iterator[Probe]:
    """ingress-nginx's order: header, then cookie, then weight (balancer.lua); a probe
    the header or cookie decides goes to one backend whatever the weight."""
    canary = route.canary
    assert canary is not None
    label = f"canary {canary.ingress}"
    decided = _decided(route)
    if canary.header is not None:
        name = canary.header.decode("latin-1")
        if canary.header_value is not None:
            value = canary.header_value.decode("latin-1")
            yield probe(f"{label}: header {name}={value}", headers=((name, value),))
            yield probe(
                f"{label}: header {name} with another value",
                headers=((name, LABEL),),
                same_backend=decided,
            )
        elif canary.header_pattern is not None:
            for value in samples(canary.header_pattern.pattern, 1):
                value = value.lstrip("/")
                if value and canary.header_pattern.matches(value):
                    yield probe(f"{label}: header {name} matching", headers=((name, value),))
        else:
            for value in ("always", "never"):
                yield probe(f"{label}: header {name}: {value}", headers=((name, value),))
    if canary.cookie is not None:
        for value in ("always", "never"):
            yield probe(
                f"{label}: cookie {canary.cookie}={value}", cookies=((canary.cookie, value),)
            )
    yield probe(f"{label}: weight {canary.weight}/{canary.total}", same_backend=decided)
