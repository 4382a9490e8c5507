"""The routing table and everything it holds.

Everything here is immutable once built: a new table is built from scratch on
every change and swapped in with one assignment, so a request that already
holds a reference to the old table finishes on a consistent view.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from ..policy.cors import CorsPolicy
from ..policy.limits import LimitConfig
from ..policy.retry import DEFAULT_NEXT_UPSTREAM, NextUpstream
from .regex import UserRegex

if TYPE_CHECKING:
    from ..policy.basic_auth import AuthRef, BasicAuth
    from ..policy.ext_auth import ExternalAuth
    from ..policy.upstream_tls import ProxySSL, UpstreamTLS

PathType = Literal["Exact", "Prefix", "ImplementationSpecific"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _empty() -> Mapping:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Problem:
    """Something in the input that was rejected, with enough context to fix it."""

    obj: str  # e.g. "Ingress default/web" or a file path
    reason: str
    source: str = ""  # file the object came from, when known
    # (kind, namespace, name) of the object at fault, so a cluster source can
    # attach a Kubernetes Event to it; None for files and other non-objects.
    ref: tuple[str, str, str] | None = field(default=None, compare=False)

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.obj}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, eq=False)
class Backend:
    """A resolved Service port: the addresses traffic for a route goes to.

    ``error`` is set when the Service cannot be resolved at all (missing Service
    or port); the route then answers 503 with that text rather than falling
    through to a broader route that belongs to someone else.
    """

    name: str  # "namespace/service:port", for logs and error bodies
    endpoints: tuple[Endpoint, ...] = ()
    error: str | None = None
    # Round-robin cursor: runtime state, not part of the table's identity.
    _cursor: itertools.count = field(default_factory=itertools.count, repr=False)

    def pick(self) -> Endpoint | None:
        eps = self.endpoints
        if not eps:
            return None
        return eps[next(self._cursor) % len(eps)]

    # Cookie affinity maps, made on first use: only routes with affinity need
    # them, and hashing every endpoint of every backend on every build made up a
    # tenth of a rebuild. Made once per Backend, so a request's lookup is still
    # one dict probe. (Two threads may both make them: the results are equal.)
    _affinity: tuple[Mapping[Endpoint, str], Mapping[str, Endpoint]] | None = field(
        default=None, init=False, repr=False
    )

    @property
    def affinity_values(self) -> Mapping[Endpoint, str]:
        """The opaque session cookie value of each endpoint."""
        return self._affinity_maps()[0]

    @property
    def by_affinity(self) -> Mapping[str, Endpoint]:
        """The endpoint a session cookie value names."""
        return self._affinity_maps()[1]

    def _affinity_maps(self) -> tuple[Mapping[Endpoint, str], Mapping[str, Endpoint]]:
        maps = self._affinity
        if maps is None:
            values = {ep: affinity_value(self.name, ep) for ep in self.endpoints}
            by_value = {v: ep for ep, v in values.items()}
            maps = (MappingProxyType(values), MappingProxyType(by_value))
            object.__setattr__(self, "_affinity", maps)
        return maps


def affinity_value(backend: str, endpoint: Endpoint) -> str:
    """The session cookie value naming ``endpoint`` of ``backend``: opaque, not an address."""
    return hashlib.sha1(f"{backend}|{endpoint}".encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Canary:
    """A canary Ingress's rules, and (on a Route) the backend they send requests to.

    Checked in ingress-nginx's order: header, then cookie, then weight.
    """

    header: bytes | None = None  # canary-by-header, lowercase
    header_value: bytes | None = None  # canary-by-header-value: exact match
    header_pattern: UserRegex | None = None  # canary-by-header-pattern: search
    cookie: str | None = None  # canary-by-cookie
    weight: int = 0
    total: int = 100  # canary-weight-total
    # Set by the builder on the main route it is attached to.
    backend: Backend | None = None
    ingress: str = ""  # "namespace/name" of the canary Ingress


@dataclass(frozen=True, slots=True)
class Affinity:
    """Cookie session affinity (``affinity: cookie`` and the session-cookie-* annotations)."""

    cookie: str = "INGRESSCOOKIE"
    mode: str = "balanced"  # or "persistent": both stick while the endpoint is ready
    path: str | None = None  # None: the route's path, "/" for regex paths
    max_age: int | None = None
    expires: int | None = None  # seconds from when the cookie is set
    samesite: str | None = None  # "None", "Lax" or "Strict"
    secure: bool | None = None  # None: Secure when the request came over TLS
    domain: str | None = None
    # On a retry (proxy-next-upstream), move the session to the new endpoint;
    # without it a session's requests are retried on its own endpoint.
    change_on_failure: bool = False


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """Typed, validated annotation values that affect how a route is served."""

    rewrite_target: str | None = None
    use_regex: bool | None = None  # None: not set
    ssl_redirect: bool = True
    force_ssl_redirect: bool = False
    # The HTTPS redirect keeps a trailing "/" of the request URI (lua_ingress.lua drops one)
    preserve_trailing_slash: bool = False
    # Redirects answered by the proxy: (status, URL)
    app_root: str | None = None  # "/" is redirected here with 302
    redirect: tuple[int, str] | None = None  # permanent- or temporal-redirect
    from_to_www_redirect: bool = False
    # Request to the upstream
    x_forwarded_prefix: bytes | None = None
    upstream_vhost: bytes | None = None  # replaces Host
    # auth-type basic: the annotations, then (at build) the credentials from the Secret
    auth: AuthRef | None = None
    basic_auth: BasicAuth | None = None
    external_auth: ExternalAuth | None = None  # auth-url: a subrequest decides (ext_auth.py)
    # How the upstream is spoken to (upstream_tls.py): HTTP, HTTPS, or AUTO_HTTP
    # (TLS when the client's request came over TLS); other protocols fail closed.
    backend_protocol: str = "HTTP"
    proxy_ssl: ProxySSL | None = None  # proxy-ssl-* as annotated; needs proxy-ssl-secret
    upstream_tls: UpstreamTLS | None = None  # resolved by the builder for HTTPS/AUTO_HTTP
    service_upstream: bool = False  # one endpoint: the Service's ClusterIP and port
    # Limits; None: the proxy-wide setting
    proxy_body_size: int | None = None  # bytes, 0 = unlimited
    proxy_buffer_size: int | None = None  # bytes the upstream's response head may take
    proxy_connect_timeout: float | None = None
    proxy_read_timeout: float | None = None
    proxy_send_timeout: float | None = None
    load_balance: str = "round_robin"  # or "ewma" (ewma.py); affinity wins over both
    # proxy-next-upstream(-tries, -timeout): which failures are tried again elsewhere
    next_upstream: NextUpstream = DEFAULT_NEXT_UPSTREAM
    # limit-rps/-rpm/-connections per client address (limits.py); None: no limits
    limits: LimitConfig | None = None
    # Access by client address, checked before anything is forwarded
    allow_source: tuple[IPNetwork, ...] | None = None
    deny_source: tuple[IPNetwork, ...] | None = None
    cors: CorsPolicy | None = None
    canary: Canary | None = None  # this Ingress is a canary (canary: "true")
    affinity: Affinity | None = None
    # Set when access control cannot be honoured (an invalid or unsupported
    # access annotation): the route answers (status, reason) instead of serving
    # without the protection.
    fail_closed: tuple[int, str] | None = None
    # The same for access control ingress-nginx applies to the whole server
    # (auth-tls-*, server-snippet): every route of the Ingress's hosts answers.
    host_fail_closed: tuple[int, str] | None = None

    @property
    def regex_paths(self) -> bool:
        """Whether this Ingress may turn its host's paths into regular expressions.

        As in ingress-nginx, use-regex or a rewrite-target does (``regex_for``
        says which paths). ingressd also honours an explicit ``use-regex:
        "false"`` beside a rewrite-target: paths then stay Prefix/Exact and the
        target replaces only the matched prefix.
        """
        if self.use_regex is False:
            return False
        return bool(self.use_regex) or self.rewrite_target is not None

    def regex_for(self, path: str) -> bool:
        """Whether ``path`` of this Ingress puts its host in regex mode.

        template.go enforceRegexModifier: a location with use-regex, or one
        whose rewrite-target differs from its path (needsRewrite).
        """
        if self.use_regex is not None:
            return self.use_regex
        return self.rewrite_target is not None and self.rewrite_target != path

    def rewrites(self, path: str) -> bool:
        """Whether requests for ``path`` are rewritten (template.go buildProxyPass).

        ingress-nginx rewrites only when the target differs from the path; with
        ``use-regex: "false"`` ingressd replaces the matched prefix instead.
        """
        target = self.rewrite_target
        if target is None:
            return False
        return self.use_regex is False or target != path


DEFAULT_POLICY = RoutePolicy()


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
    """A validated certificate and key from a Secret (see ``tls.py``)."""

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
        vhost = self.find_host(host)
        if vhost is None:
            return self.default
        route = vhost.match(path)
        if route is not None:
            return route
        if vhost.default is not None:
            return vhost.default
        # A named host's unmatched paths stay with that host (404), as in
        # ingress-nginx: another tenant's defaultBackend must not catch them.
        return self.default if not vhost.host else None

    def certificate_for(self, server_name: str) -> TLSCertificate | None:
        cert = self.certificates.get(server_name)
        if cert is None:
            dot = server_name.find(".")
            if dot > 0:
                cert = self.certificates.get("*" + server_name[dot:])
        return cert
