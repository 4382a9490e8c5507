"""The routing decision: request head + table -> what to do. No sockets here.

The proxy parses a request head, calls ``decide`` and carries out the action;
annotations change what ``decide`` returns, never how bytes move.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..annotations import expand_target
from ..model import Backend, Endpoint, Route, RouteTable


@dataclass(slots=True)
class RequestHead:
    method: str
    host: str  # Host header (or absolute-form authority) as received
    path: str  # request path as received, without the query
    query: str  # without the leading "?"; "" when absent
    client_ip: str
    tls: bool


@dataclass(frozen=True, slots=True)
class Forward:
    endpoint: Endpoint
    backend: Backend
    target: str  # request target to send upstream: path plus "?query"
    route: Route


@dataclass(frozen=True, slots=True)
class Respond:
    status: int
    body: str
    location: str | None = None  # for redirects


Action = Forward | Respond


def normalize_host(host: str) -> str:
    """Lowercase, without port or trailing dot: the form routes are keyed by."""
    host = host.strip()
    if host.startswith("["):  # IPv6 literal
        end = host.find("]")
        return host[: end + 1].lower() if end > 0 else host.lower()
    colon = host.rfind(":")
    if colon >= 0:
        host = host[:colon]
    return host.rstrip(".").lower()


def normalize_path(path: str) -> str:
    """The path as routing sees it: dot-segments resolved, slashes merged.

    Matching on the raw path would let ``/public/../admin`` reach a route that
    ``/admin`` rules were meant to guard; nginx normalises the same way.
    """
    if "%" in path:
        # Decode only what changes segment structure; other escapes stay as sent.
        path = path.replace("%2e", ".").replace("%2E", ".")
    if "/." not in path and "//" not in path:
        return path
    out: list[str] = []
    for seg in path.split("/"):
        if seg == "" or seg == ".":
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    trailing = "/" if path.endswith(("/", "/.", "/..")) and out else ""
    return "/" + "/".join(out) + trailing


def decide(table: RouteTable, head: RequestHead, https_port: int = 443) -> Action:
    host = normalize_host(head.host)
    path = normalize_path(head.path)
    route = table.route_for(host, path)
    if route is None:
        return Respond(404, f"404 Not Found: no route for host {host or '(none)'} path {path}\n")
    policy = route.policy
    if not head.tls and (
        policy.force_ssl_redirect or (policy.ssl_redirect and _tls_host(table, host))
    ):
        port = "" if https_port == 443 else f":{https_port}"
        target = head.path + (f"?{head.query}" if head.query else "")
        return Respond(308, "308 Permanent Redirect\n", location=f"https://{host}{port}{target}")
    backend = route.backend
    if backend.error is not None:
        return Respond(503, f"503 Service Unavailable: {backend.error}\n")
    endpoint = backend.pick()
    if endpoint is None:
        return Respond(503, f"503 Service Unavailable: no ready endpoints for {backend.name}\n")
    if policy.rewrite_target is not None:
        upstream_path = rewrite(route, path, policy.rewrite_target)
    else:
        upstream_path = head.path  # unchanged: the upstream sees what the client sent
    if head.query:
        sep = "&" if "?" in upstream_path else "?"
        upstream_path = f"{upstream_path}{sep}{head.query}"
    return Forward(endpoint, backend, upstream_path, route)


def _tls_host(table: RouteTable, host: str) -> bool:
    vhost = table.find_host(host)
    return vhost is not None and vhost.tls


def rewrite(route: Route, path: str, target: str) -> str:
    """The upstream path for ``path`` under a rewrite-target.

    Regex routes follow nginx's ``rewrite``: the whole path becomes the target
    with ``$n`` taken from the route's capture groups. A route that opted out of
    regex (``use-regex: "false"``) has just its matched prefix replaced, even
    when another Ingress put its host in regex mode.
    """
    if route.regex is not None and route.policy.regex_paths:
        new = expand_target(target, route.regex.match(path))
    elif route.path_type == "Exact":
        # An Exact path has no capture groups: "$n" references become empty.
        new = expand_target(target, None)
    elif route.path == "/":
        new = _join(target, path)
    else:
        prefix = route.path.rstrip("/")
        new = _join(target, path[len(prefix) :])
    return new if new.startswith("/") else "/" + new


def _join(base: str, rest: str) -> str:
    if not rest:
        return base or "/"
    if rest == "/":
        return base.rstrip("/") + "/"  # keep the client's trailing slash
    return base.rstrip("/") + "/" + rest.lstrip("/")
