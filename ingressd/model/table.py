"""The routing table: hosts, their routes, and the certificates to serve them with.

Everything here is immutable once built: a new table is built from scratch on
every change and swapped in with one assignment, so a request that already
holds a reference to the old table finishes on a consistent view.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from .backend import Backend
from .cache import BoundedCache
from .globals import DEFAULT_GLOBALS, GlobalConfig
from .nginx_vars import split_variables
from .policy import DEFAULT_POLICY, Canary, ClientAuth, RoutePolicy
from .problems import Problem
from .regex import UserRegex
from .snippet import SnippetPlan
from .snippet import plan as snippet_plan
from .variables import lower_names

PathType = Literal["Exact", "Prefix", "ImplementationSpecific"]


def _parts(text: str) -> tuple[str, ...]:
    """An annotation's value as template parts. Its variables were checked when the
    annotation was read (policy/annotations.py); a "$" without a name stays text."""
    return lower_names(split_variables(text, strict=False))


def _empty() -> Mapping:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Route:
    path: str
    path_type: PathType
    backend: Backend
    ingress: str  # "namespace/name" of the Ingress the route came from
    policy: RoutePolicy = DEFAULT_POLICY
    # Set when the host is in regex mode: nginx's ``location ~* "^<path>"``.
    regex: UserRegex | None = None
    # The canary Ingress attached to this route (same host, path and pathType).
    canary: Canary | None = None
    # Requests are rewritten to the policy's rewrite-target (RoutePolicy.rewrites).
    rewrite: bool = False
    # Set on the stand-ins nginx answers with 301 to this location name: a
    # request one "/" short of a location ending in "/" (see VirtualHost).
    slash_redirect: str | None = None
    # Worked out once from the fields above (__post_init__, again on replace()),
    # for the data path not to work them out per request:
    # - no feature at all: no annotation changes how it is served (the policy
    #   is the default one), no canary, no rewrite, no slash redirect. Routing
    #   and the proxy skip every feature check on such a route with this one test;
    plain: bool = field(default=False, init=False, compare=False, repr=False)
    # - the headers the policy sets on the upstream request (upstream-vhost,
    #   X-Forwarded-Prefix with a rewrite, an emptied Authorization after Basic
    #   auth), in that order.
    upstream_headers: tuple[tuple[bytes, bytes], ...] = field(
        default=(), init=False, compare=False, repr=False
    )
    # - the headers the snippets set (model/snippet.py), server's and location's together.
    snippet_plan: SnippetPlan | None = field(default=None, init=False, compare=False, repr=False)
    # - permanent-/temporal-redirect's URL and app-root's path as template parts
    #   (model/variables.py); one part: no variables, the text itself.
    redirect_parts: tuple[str, ...] = field(default=("",), init=False, compare=False, repr=False)
    app_root_parts: tuple[str, ...] = field(default=("",), init=False, compare=False, repr=False)
    # - whether a connection to the upstream may serve another request after this
    #   one: not with proxy-http-version 1.0 (nginx keeps no HTTP/1.0 connection
    #   alive) nor with a connection-proxy-header that says close.
    reuses_upstream: bool = field(default=True, init=False, compare=False, repr=False)
    # - the lowercase names of policy.response_headers (add-headers, custom-headers),
    #   which replace the upstream's headers of those names; empty: none.
    response_names: frozenset[bytes] = field(
        default=frozenset(), init=False, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        policy = self.policy
        plain = (
            (policy is DEFAULT_POLICY or policy == DEFAULT_POLICY)
            and self.canary is None
            and not self.rewrite
            and self.slash_redirect is None
        )
        headers: list[tuple[bytes, bytes]] = []
        # upstream-vhost and x-forwarded-prefix with variables: rendered per request,
        # with the snippets' headers (model/snippet.py).
        templates: list[tuple[bytes, tuple[str, ...]]] = []
        if policy.upstream_vhost is not None:
            vhost = _parts(policy.upstream_vhost.decode("latin-1"))
            if len(vhost) == 1:
                headers.append((b"Host", policy.upstream_vhost))
            else:
                templates.append((b"Host", vhost))
        if policy.x_forwarded_prefix is not None and self.rewrite:
            # template.go buildProxyPass sets it only where it writes the rewrite.
            prefix = _parts(policy.x_forwarded_prefix.decode("latin-1"))
            if len(prefix) == 1:
                headers.append((b"X-Forwarded-Prefix", policy.x_forwarded_prefix))
            else:
                templates.append((b"X-Forwarded-Prefix", prefix))
        if policy.redirect is not None:
            object.__setattr__(self, "redirect_parts", _parts(policy.redirect[1]))
        if policy.app_root is not None:
            object.__setattr__(self, "app_root_parts", _parts(policy.app_root))
        if policy.basic_auth is not None:
            headers.append((b"Authorization", b""))  # empty: not sent upstream
        # The ConfigMap's proxy-set-headers: nginx.tmpl sets them after the others.
        headers += policy.proxy_set_headers
        if policy.response_headers:
            names = frozenset(n.lower() for n, _ in policy.response_headers)
            object.__setattr__(self, "response_names", names)
        object.__setattr__(self, "plain", plain)
        connection = policy.connection_header
        if policy.proxy_http_version == "1.0" or (
            connection is not None and b"close" in connection.lower().replace(b" ", b"").split(b",")
        ):
            object.__setattr__(self, "reuses_upstream", False)
        if (
            policy.snippet is not None
            or policy.server_snippet is not None
            or policy.header_templates is not None
            or templates
        ):
            found = snippet_plan(
                policy.server_snippet, policy.snippet, policy.header_templates, tuple(templates)
            )
            object.__setattr__(self, "snippet_plan", found)
        if headers:  # else the default, the shared empty tuple
            object.__setattr__(self, "upstream_headers", tuple(headers))


@dataclass(frozen=True, slots=True)
class VirtualHost:
    """All routes for one host, chosen as nginx chooses ingress-nginx's locations.

    A host without regex paths has static locations (nginx's ``location``
    tree): ``= /path`` for each Exact path, and for each Prefix (or
    ImplementationSpecific, which ingress-nginx serves as Prefix) path ``/p``
    the pair ``/p/`` and ``= /p`` (controller/location.go
    updateServerLocations). nginx tries the exact names first, then the
    longest prefix; and a request one "/" short of a location name ending in
    "/" (``/p`` for Prefix ``/p/`` or Exact ``/p/``) gets 301 to that name
    (ngx_http_core_find_static_location's auto_redirect). ``static`` holds the
    exact names and those redirects, so the lookup is one probe there, then
    one per path element in ``prefix``: its cost depends on the request path,
    never on how many routes exist.

    A host where any path is a regex (use-regex, rewrite-target) has only
    regex locations, ``~* "^<path>"`` for every path, Exact ones included
    (template.go buildLocation), tried in ingress-nginx's order: longest path
    first, then the greater path, then creation order (controller.go
    getBackendServers). ingress-nginx's own ``/`` location, the server's
    default backend, takes its place among them unless a Prefix ``/`` path
    replaced it.
    """

    host: str  # "example.com", "*.example.com", or "" for rules without a host
    exact: Mapping[str, Route] = field(default_factory=_empty)  # Exact routes (no regex mode)
    # Prefix routes keyed by their path without trailing slashes ("/" -> "").
    prefix: Mapping[str, Route] = field(default_factory=_empty)
    # Every route, in nginx's evaluation order, when the host is in regex mode.
    regex: tuple[Route, ...] = ()
    regex_mode: bool = False
    # spec.defaultBackend of the oldest Ingress with rules for this host.
    default: Route | None = None
    tls: bool = False  # host listed in some Ingress's spec.tls
    # Without regex mode: exact names -> the route, or a slash_redirect stand-in.
    # Empty: ``exact`` serves (a table built by hand).
    static: Mapping[str, Route] = field(default_factory=_empty)
    # In regex mode: (pattern, route) in order; None for ingress-nginx's own "/".
    order: tuple[tuple[UserRegex, Route | None], ...] = ()
    # The oldest Ingress of the host restricts access (source ranges, auth, a denial):
    # its unmatched paths are not sent to the default backend (RouteTable.route_in).
    guarded: bool = False
    # auth-tls-*: client certificates are asked for in handshakes whose SNI names
    # this host, and checked for each of its requests (policy/client_auth.py).
    client_auth: ClientAuth | None = None
    # ssl-ciphers: the OpenSSL cipher list of handshakes whose SNI names this host
    # (server-wide in ingress-nginx: the oldest Ingress's that sets it); None: the
    # listener's (policy/tls.py CertificateSelector).
    ssl_ciphers: str | None = None

    def match(self, path: str) -> Route | None:
        if self.regex_mode:
            data = path.encode("latin-1", "replace")
            for pattern, found in self.order:
                if pattern.matches_bytes(data):
                    return found  # None: the default backend answers (route_for)
            return None
        static = self.static
        route = static.get(path) if static else self.exact.get(path)
        if route is not None:
            return route
        prefix = self.prefix
        if not prefix:
            return None
        # Walk back one path element at a time: one dict probe per element, so
        # the cost depends on the request path, not on how many routes exist.
        key = path.rstrip("/")
        while True:
            route = prefix.get(key)
            if route is not None:
                return route
            if not key:
                return None
            key = key[: key.rfind("/")]


@dataclass(frozen=True, slots=True)
class TLSCertificate:
    """A validated certificate and key from a Secret (see ``policy/tls.py``)."""

    secret: str  # "namespace/name"
    cert_pem: bytes
    key_pem: bytes
    dns_names: tuple[str, ...]  # SAN DNS names (or CN when there are none), lowercase
    not_after: float  # POSIX seconds

    def covers(self, host: str) -> bool:
        return any(name_matches(name, host) for name in self.dns_names)


def name_matches(pattern: str, host: str) -> bool:
    """DNS name match where a leading ``*.`` stands for exactly one label."""
    if pattern.startswith("*."):
        dot = host.find(".")
        return dot > 0 and host[dot + 1 :] == pattern[2:]
    return pattern == host


# What routing finds for a request's Host header and path, both as received
# (``decide.routing``): (host normalised, path normalised or None when it is
# invalid, the route or None, the from-to-www-redirect target or None, the
# certificate of the host or None, whether the host is TLS). It depends on
# nothing but the table and those two strings, so the table keeps the answers
# it gave (``RouteTable.routing_cache``). A tuple: made per miss, cheaper than
# an object.
Routing = tuple[str, str | None, Route | None, str | None, TLSCertificate | None, bool]


@dataclass(frozen=True, slots=True)
class RouteTable:
    exact_hosts: Mapping[str, VirtualHost] = field(default_factory=_empty)
    # Keyed by the suffix after "*." so a lookup is one dict probe.
    wildcard_hosts: Mapping[str, VirtualHost] = field(default_factory=_empty)
    catch_all: VirtualHost | None = None
    default: Route | None = None  # spec.defaultBackend of the oldest Ingress with one
    # host (exact or "*.suffix") -> certificate, for SNI
    certificates: Mapping[str, TLSCertificate] = field(default_factory=_empty)
    problems: tuple[Problem, ...] = ()
    generation: int = 0
    # (namespace, name) of every Ingress this controller serves, routed or not:
    # the ones whose status it publishes.
    ingresses: tuple[tuple[str, str], ...] = ()
    # from-to-www-redirect: the other name of a host -> the host (308 there)
    www_redirects: Mapping[str, str] = field(default_factory=_empty)
    # --default-backend-service while it has ready endpoints (else None: ingressd's own
    # 404, as ingress-nginx's internal default server): what serves requests no rule
    # or defaultBackend takes, and the error pages of custom-http-errors.
    fallback: Route | None = None
    # The global custom-http-errors list (the ConfigMap key; --custom-http-errors):
    # for routes whose Ingress has no custom-http-errors annotation of its own.
    custom_http_errors: frozenset[int] = frozenset()
    # The controller ConfigMap's settings (model/globals.py) the table was built with.
    config: GlobalConfig = DEFAULT_GLOBALS
    # Strict-Transport-Security for TLS requests of hosts with a certificate of their
    # own (config.hsts_header, kept here for the data path); None: no HSTS.
    hsts: bytes | None = DEFAULT_GLOBALS.hsts_header
    # Some host checks client certificates (VirtualHost.client_auth): requests
    # are checked for it only then, so a table without mTLS costs nothing.
    client_auth: bool = False
    # Some host has ssl-ciphers of its own (VirtualHost.ssl_ciphers): the SNI
    # callback looks the host up only then.
    ssl_ciphers: bool = False
    # The controller ConfigMap's add-headers (literal values), for ingressd's answers
    # to requests no route takes (nginx's default server gets them too), and their
    # lowercase names; empty: none.
    http_headers: tuple[tuple[bytes, bytes], ...] = ()
    http_header_names: frozenset[bytes] = frozenset()
    # (Host header, path) as received -> Routing; see model/cache.py. Each
    # table object starts with its own, empty (replace() included): the table
    # never changes, so its answers never go stale and nothing invalidates them.
    routing_cache: BoundedCache[tuple[str, str], Routing] = field(
        default_factory=BoundedCache, init=False, compare=False, repr=False
    )

    def find_host(self, host: str) -> VirtualHost | None:
        vhost = self.exact_hosts.get(host)
        if vhost is not None:
            return vhost
        if self.wildcard_hosts:
            dot = host.find(".")
            if dot > 0:
                vhost = self.wildcard_hosts.get(host[dot + 1 :])
                if vhost is not None:
                    return vhost
        return self.catch_all

    def route_for(self, host: str, path: str) -> Route | None:
        """The route serving ``host`` (normalised) and ``path``, defaults included."""
        return self.route_in(self.find_host(host), path)

    def route_in(self, vhost: VirtualHost | None, path: str) -> Route | None:
        """``route_for`` once the host's ``vhost`` is found (``find_host``)."""
        if vhost is None:
            return self.default or self.fallback
        route = vhost.match(path)
        if route is not None:
            return route
        if vhost.default is not None:
            return vhost.default
        # A named host's unmatched paths stay with that host, as in ingress-nginx:
        # another tenant's defaultBackend must not catch them; its "/" location
        # goes to the global default backend (controller.go createServers: du).
        # ingress-nginx applies the annotations of the host's oldest Ingress there;
        # where they restrict access, ingressd keeps its 404 rather than serve the
        # default backend without the restriction.
        if not vhost.host and self.default is not None:
            return self.default
        return None if vhost.guarded else self.fallback

    def certificate_for(self, server_name: str) -> TLSCertificate | None:
        cert = self.certificates.get(server_name)
        if cert is None:
            dot = server_name.find(".")
            if dot > 0:
                cert = self.certificates.get("*" + server_name[dot:])
        return cert
