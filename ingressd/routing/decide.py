"""The routing decision: request head + table -> what to do. No sockets here.

The proxy parses a request head, calls ``decide`` and carries out the action;
annotations change what ``decide`` returns, never how bytes move.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..annotations import expand_target
from ..model import DEFAULT_POLICY, Backend, Endpoint, Route, RouteTable


@dataclass(slots=True)
class RequestHead:
    method: str
    host: str  # Host header (or absolute-form authority) as received
    path: str  # request path as received, without the query
    query: str  # without the leading "?"; "" when absent
    client_ip: str
    tls: bool
    origin: str | None = None  # Origin header, for CORS


Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Forward:
    endpoint: Endpoint
    backend: Backend
    target: str  # request target to send upstream: path plus "?query"
    route: Route
    # Added to the upstream request, and to the response (replacing the upstream's).
    request_headers: Headers = ()
    response_headers: Headers = ()


@dataclass(frozen=True, slots=True)
class Respond:
    status: int
    body: str
    location: str | None = None  # for redirects
    headers: Headers = ()


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
    """What to do with a request, in the order ingress-nginx's nginx phases apply:
    app-root, CORS preflights and redirects (the rewrite phase), then the HTTPS
    redirect, then access by client address (deny before allow), then the
    backend. A route whose access annotations are invalid answers before all."""
    host = normalize_host(head.host)
    path = normalize_path(head.path)
    www = table.www_redirects.get(host) if table.www_redirects else None
    if www is not None:
        return _redirect(308, _scheme(head) + www + _port_suffix(head) + _uri(head))
    route = table.route_for(host, path)
    if route is None:
        return Respond(404, f"404 Not Found: no route for host {host or '(none)'} path {path}\n")
    policy = route.policy
    if policy is not DEFAULT_POLICY:
        early = _before_backend(table, head, host, path, route, https_port)
        if early is not None:
            return early
    elif not head.tls and policy.ssl_redirect and _tls_host(table, host):
        return _https_redirect(head, host, https_port)
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
    if policy is DEFAULT_POLICY:
        return Forward(endpoint, backend, upstream_path, route)
    request_headers: list[tuple[bytes, bytes]] = []
    if policy.upstream_vhost is not None:
        request_headers.append((b"Host", policy.upstream_vhost))
    if policy.x_forwarded_prefix is not None:
        request_headers.append((b"X-Forwarded-Prefix", policy.x_forwarded_prefix))
    response_headers = policy.cors.response_headers(head.origin) if policy.cors else ()
    return Forward(
        endpoint, backend, upstream_path, route, tuple(request_headers), tuple(response_headers)
    )


def _before_backend(
    table: RouteTable, head: RequestHead, host: str, path: str, route: Route, https_port: int
) -> Respond | None:
    policy = route.policy
    if policy.fail_closed is not None:
        status, reason = policy.fail_closed
        return Respond(
            status, f"{status} {_REASONS[status]}: {reason} on Ingress {route.ingress}\n"
        )
    if policy.app_root is not None and path == "/":
        return _redirect(302, _scheme(head) + head.host + policy.app_root)
    if policy.cors is not None and head.method == "OPTIONS":
        # A preflight from an origin that is not allowed goes to the upstream.
        headers = policy.cors.preflight_headers(head.origin)
        if headers:
            return Respond(204, "", headers=tuple(headers))
    if policy.redirect is not None:
        return _redirect(*policy.redirect)
    if not head.tls and (
        policy.force_ssl_redirect or (policy.ssl_redirect and _tls_host(table, host))
    ):
        return _https_redirect(head, host, https_port)
    if policy.deny_source is not None or policy.allow_source is not None:
        try:
            client = ipaddress.ip_address(head.client_ip)
        except ValueError:
            client = None
        denied = client is None or (
            policy.deny_source is not None and any(client in n for n in policy.deny_source)
        )
        if not denied and policy.allow_source is not None:
            denied = not any(client in n for n in policy.allow_source)
        if denied:
            return Respond(403, f"403 Forbidden: {head.client_ip} may not access this address\n")
    return None


_REASONS = {403: "Forbidden", 503: "Service Unavailable"}


def _scheme(head: RequestHead) -> str:
    return "https://" if head.tls else "http://"


def _port_suffix(head: RequestHead) -> str:
    colon = head.host.rfind(":")
    return head.host[colon:] if colon > head.host.rfind("]") else ""


def _uri(head: RequestHead) -> str:
    return head.path + (f"?{head.query}" if head.query else "")


def _redirect(status: int, location: str) -> Respond:
    return Respond(status, f"{status} Redirect to {location}\n", location=location)


def _https_redirect(head: RequestHead, host: str, https_port: int) -> Respond:
    port = "" if https_port == 443 else f":{https_port}"
    return Respond(308, "308 Permanent Redirect\n", location=f"https://{host}{port}{_uri(head)}")


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
