"""The routing decision: request head + table -> what to do. No sockets here.

The proxy parses a request head, calls ``decide`` and carries out the action;
annotations change what ``decide`` returns, never how bytes move.
"""

from __future__ import annotations

import ipaddress
import random
import re
import time
from collections.abc import Sequence
from email.utils import formatdate
from typing import Final
from urllib.parse import quote

from ..model.backend import Backend, Endpoint
from ..model.policy import (
    DEFAULT_POLICY,
    Affinity,
    Canary,
    ExternalAuth,
    RoutePolicy,
    UpstreamHash,
    UpstreamTLS,
)
from ..model.snippet import RequestVars, SnippetPolicy, answer
from ..model.table import Route, RouteTable, Routing, name_matches
from ..model.variables import render as render_text
from ..policy.annotations import expand_target
from ..policy.basic_auth import allows
from ..policy.chash import render
from ..policy.ewma import EwmaStore
from ..policy.ext_auth import signin_for
from ..policy.health import EndpointHealth
from ..policy.retry import next_endpoint
from ..policy.samesite import same_site_none_compatible


class RequestHead:
    """What routing needs of a request, as received.

    Built once per request, so a plain class with an explicit ``__init__``
    rather than a dataclass: compiled by mypyc this is a native class whose
    construction is a C call, where a compiled dataclass keeps the
    dataclasses module's generated Python ``__init__`` (0.29 µs against
    0.14; for a frozen one, as Forward was, 0.78 against 0.12). It
    compares and prints as the dataclass did. Mutable, as it was (tests vary
    one field of a head).
    """

    __slots__ = (
        "client_ip",
        "headers",
        "host",
        "method",
        "origin",
        "path",
        "query",
        "scheme_https",
        "server_port",
        "tls",
        "tls_names",
    )

    method: str
    host: str  # Host header (or absolute-form authority) as received
    path: str  # request path as received, without the query
    query: str  # without the leading "?"; "" when absent
    client_ip: str
    tls: bool
    # What the HTTPS redirect goes by: the connection's TLS, or a trusted peer's
    # X-Forwarded-Proto under use-forwarded-headers (nginx.tmpl $pass_access_scheme,
    # which lua_ingress.lua's redirect_to_https reads).
    scheme_https: bool
    origin: str | None  # Origin header, for CORS
    # The request headers as received (the proxy's own list, not a copy): searched
    # only when a route needs one (canary, cookie affinity).
    headers: Sequence[tuple[bytes, bytes]]
    # TLS: the names of the certificate the connection was served (from its SNI);
    # () for the generated default one, None for plain HTTP: neither is checked.
    tls_names: tuple[str, ...] | None
    # The port the client connected to (nginx's $server_port), for use-port-in-redirects.
    server_port: bytes

    def __init__(
        self,
        method: str,
        host: str,
        path: str,
        query: str,
        client_ip: str,
        tls: bool,
        origin: str | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
        tls_names: tuple[str, ...] | None = None,
        server_port: bytes = b"",
        scheme_https: bool | None = None,
    ) -> None:
        self.scheme_https = tls if scheme_https is None else scheme_https
        self.method = method
        self.host = host
        self.path = path
        self.query = query
        self.client_ip = client_ip
        self.tls = tls
        self.origin = origin
        self.headers = headers
        self.tls_names = tls_names
        self.server_port = server_port

    def _fields(self) -> tuple[object, ...]:
        return (
            self.method,
            self.host,
            self.path,
            self.query,
            self.client_ip,
            self.tls,
            self.origin,
            self.headers,
            self.tls_names,
            self.server_port,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RequestHead):
            return NotImplemented
        return self._fields() == other._fields()

    # No __hash__: mutable and comparable, so unhashable, as the dataclass was
    # (a class that defines __eq__ alone gets __hash__ = None, compiled too).

    def __repr__(self) -> str:
        return _repr("RequestHead", _HEAD_FIELDS, self._fields())


_HEAD_FIELDS: Final = (
    "method",
    "host",
    "path",
    "query",
    "client_ip",
    "tls",
    "origin",
    "headers",
    "tls_names",
    "server_port",
)


def _repr(name: str, names: tuple[str, ...], values: tuple[object, ...]) -> str:
    """As a dataclass's repr: ``Name(field=value, ...)``."""
    return f"{name}({', '.join(f'{n}={v!r}' for n, v in zip(names, values, strict=True))})"


Headers = tuple[tuple[bytes, bytes], ...]


class Forward:
    """Send the request to ``endpoint`` of ``backend``.

    Built per proxied request: a plain class for the reason RequestHead is
    one. Immutable: its fields are ``Final`` (mypy rejects an assignment;
    compiled, the attributes have no setter); ``copy`` makes a changed one.
    Compares, hashes and prints as the frozen dataclass it replaces.
    """

    __slots__ = (
        "access",
        "backend",
        "endpoint",
        "hsts",
        "request_headers",
        "response_headers",
        "route",
        "target",
        "tls",
    )

    endpoint: Final[Endpoint]
    backend: Final[Backend]
    target: Final[str]  # request target to send upstream: path plus "?query"
    route: Final[Route]
    # Added to the upstream request, and to the response (replacing the upstream's).
    request_headers: Final[Headers]
    response_headers: Final[Headers]
    # TLS to the upstream (backend-protocol HTTPS, or AUTO_HTTP for a TLS client); None: plain
    tls: Final[UpstreamTLS | None]
    # Strict-Transport-Security for the response, replacing the upstream's (the
    # table's HSTS on a TLS request for a host with a certificate); None: none.
    hsts: Final[bytes | None]
    # satisfy: "any" beside auth-url: SATISFIED when the address or Basic credentials
    # sufficed (no subrequest), else their denial (403, or 401 with its challenge),
    # which the auth service may still overrule; None: the auth service decides alone.
    access: Final[Respond | None]

    def __init__(
        self,
        endpoint: Endpoint,
        backend: Backend,
        target: str,
        route: Route,
        request_headers: Headers = (),
        response_headers: Headers = (),
        tls: UpstreamTLS | None = None,
        hsts: bytes | None = None,
        access: Respond | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.backend = backend
        self.target = target
        self.route = route
        self.request_headers = request_headers
        self.response_headers = response_headers
        self.tls = tls
        self.hsts = hsts
        self.access = access

    def copy(
        self,
        endpoint: Endpoint | None = None,
        request_headers: Headers | None = None,
        response_headers: Headers | None = None,
        tls: UpstreamTLS | None = None,
    ) -> Forward:
        """This forward with the fields given changed (None: kept as it is)."""
        return Forward(
            self.endpoint if endpoint is None else endpoint,
            self.backend,
            self.target,
            self.route,
            self.request_headers if request_headers is None else request_headers,
            self.response_headers if response_headers is None else response_headers,
            self.tls if tls is None else tls,
            self.hsts,
            self.access,
        )

    def _fields(self) -> tuple[object, ...]:
        return (
            self.endpoint,
            self.backend,
            self.target,
            self.route,
            self.request_headers,
            self.response_headers,
            self.tls,
            self.hsts,
            self.access,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Forward):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return _repr("Forward", _FORWARD_FIELDS, self._fields())


_FORWARD_FIELDS: Final = (
    "endpoint",
    "backend",
    "target",
    "route",
    "request_headers",
    "response_headers",
    "tls",
    "hsts",
    "access",
)


class Respond:
    """Answer the request here with ``status`` and ``body``.

    A plain, immutable class for the reasons Forward is one. ``route`` is not
    compared or hashed (as it was not in the dataclass): two answers are the
    same whichever route made them.
    """

    __slots__ = ("body", "headers", "location", "route", "status")

    status: Final[int]
    body: Final[str]
    location: Final[str | None]  # for redirects
    headers: Final[Headers]
    # The route answered for, when there is one: metrics and the access log name its Ingress.
    route: Final[Route | None]

    def __init__(
        self,
        status: int,
        body: str,
        location: str | None = None,
        headers: Headers = (),
        route: Route | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.location = location
        self.headers = headers
        self.route = route

    def _fields(self) -> tuple[object, ...]:
        return (self.status, self.body, self.location, self.headers)  # not route

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Respond):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        values = (self.status, self.body, self.location, self.headers, self.route)
        return _repr("Respond", _RESPOND_FIELDS, values)


_RESPOND_FIELDS: Final = ("status", "body", "location", "headers", "route")


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


def normalize_path(path: str) -> str | None:
    """The path as routing sees it: percent-escapes decoded, dot-segments
    resolved, slashes merged, as nginx matches locations against ``$uri``
    (``ngx_http_parse_complex_uri``). None: an invalid escape or a NUL, which
    nginx answers with 400.

    Matching on the raw path would let ``/public/../admin`` or ``/%61dmin``
    reach a route other than the one ``/admin`` rules were meant to guard. The
    decoded path is one character per byte (latin-1), as request lines are.
    """
    if "%" in path:
        decoded = _percent_decode(path)
        if decoded is None or "\x00" in decoded:
            return None
        path = decoded
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


_HEX: Final = "0123456789abcdefABCDEF"


def _percent_decode(path: str) -> str | None:
    """``%XX`` decoded (one latin-1 character per byte); None if a ``%`` is not followed by two
    hex digits."""
    parts: list[str] = []
    start = 0
    at = path.find("%")
    while at >= 0:
        pair = path[at + 1 : at + 3]
        if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
            return None
        parts.append(path[start:at])
        parts.append(chr(int(pair, 16)))
        start = at + 3
        at = path.find("%", start)
    parts.append(path[start:])
    return "".join(parts)


# What a decoded path piece may not hold as it is when it goes back into a
# request target (nginx escapes rewritten URIs with NGX_ESCAPE_URI): the
# escape character itself, what would end the path, spaces, controls, non-ASCII.
_MUST_ESCAPE: Final = frozenset(
    [chr(c) for c in range(0x21)] + [chr(c) for c in range(0x7F, 0x100)] + ['"', "#", "%", "?"]
)


def escape_path(piece: str) -> str:
    """A decoded path piece (from ``normalize_path``), escaped to go upstream."""
    if not any(c in _MUST_ESCAPE for c in piece):
        return piece
    return "".join(f"%{ord(c):02X}" if c in _MUST_ESCAPE else c for c in piece)


# The longest Host header plus path (in characters) whose routing is cached:
# longer ones are worked out each time, so that no one can fill the cache
# with large keys. Hot paths are short; DNS names are at most 253.
MAX_CACHED_KEY: Final = 256


def routing(table: RouteTable, raw_host: str, raw_path: str) -> Routing:
    """What ``table`` routes the Host header ``raw_host`` and the path ``raw_path``
    (both as received) to: see ``Routing``. Kept in the table's cache
    (model/cache.py), unless the two are longer than ``MAX_CACHED_KEY``."""
    cache = table.routing_cache
    key: tuple[str, str] | None = None
    if len(raw_host) + len(raw_path) <= MAX_CACHED_KEY:
        key = (raw_host, raw_path)
        found = cache.get(key)
        if found is not None:
            return found
    host = normalize_host(raw_host)
    path = normalize_path(raw_path)
    if path is None:
        found = (host, None, None, None, None, False)
    else:
        cert = table.certificate_for(host) if table.certificates else None
        www = table.www_redirects.get(host) if table.www_redirects else None
        vhost = table.find_host(host)
        route = table.route_in(vhost, path)
        found = (host, path, route, www, cert, vhost is not None and vhost.tls)
    if key is not None and cache.admit:  # set by the get() that missed
        cache.put(key, found)
    return found


def decide(
    table: RouteTable,
    head: RequestHead,
    https_port: int = 443,
    ewma: EwmaStore | None = None,
    health: EndpointHealth | None = None,
) -> Action:
    """What to do with a request, in the order ingress-nginx's nginx phases apply:
    app-root, CORS preflights and redirects (the rewrite phase), then the HTTPS
    redirect, then access by client address (deny before allow), then the
    backend. A route whose access annotations are invalid answers before all.

    ``ewma`` holds the response-time averages for ``load-balance: ewma`` routes;
    without it they are served round robin. ``health`` steers picks away from
    endpoints that passive health checks have ejected.

    HSTS (the ConfigMap's ``hsts``, on by default): as ingress-nginx's
    lua_ingress.lua header(), every response to a TLS request for a host with a
    certificate of its own carries Strict-Transport-Security (the table's bytes,
    made once per build), ingressd's own answers included."""
    found = routing(table, head.host, head.path)
    hsts = table.hsts if head.tls and found[4] is not None else None
    action = _decide(table, head, found, hsts, https_port, ewma, health)
    if hsts is not None and type(action) is Respond:
        return Respond(
            action.status,
            action.body,
            action.location,
            (*action.headers, (b"Strict-Transport-Security", hsts)),
            action.route,
        )
    return action


def _decide(
    table: RouteTable,
    head: RequestHead,
    found: Routing,
    hsts: bytes | None,
    https_port: int,
    ewma: EwmaStore | None,
    health: EndpointHealth | None,
) -> Action:
    host, path, route, www, cert, tls_host = found
    if path is None:
        return Respond(400, "400 Bad Request: invalid percent-encoding in the request path\n")
    if (
        head.tls_names
        and cert is not None
        and not any(name_matches(n, host) for n in head.tls_names)
    ):
        # The connection was set up for another name: answering would show
        # this host's content under a certificate that is not its own.
        return Respond(
            421,
            f"421 Misdirected Request: {host} has its own certificate; "
            "connect with it as the TLS server name (SNI)\n",
        )
    if www is not None:
        return _redirect(308, _scheme(head) + www + _port_suffix(head) + _uri(head))
    if route is None:
        return Respond(404, f"404 Not Found: no route for host {host or '(none)'} path {path}\n")
    if route.plain:
        # No annotation, canary or rewrite: the default policy's HTTPS
        # redirect, then the backend, round robin.
        if tls_host and not head.scheme_https:
            redirect = _https_redirect(head, host, https_port, table.config.http_redirect_code)
            return Respond(redirect.status, redirect.body, redirect.location, route=route)
        backend = route.backend
        if backend.error is not None:
            return Respond(503, f"503 Service Unavailable: {backend.error}\n", route=route)
        endpoint = backend.pick()
        if health is not None and health.ejected and endpoint is not None:
            endpoint = _healthy(backend, endpoint, health)
        if endpoint is None:
            reason = f"503 Service Unavailable: no ready endpoints for {backend.name}\n"
            return Respond(503, reason, route=route)
        sent = head.path  # unchanged: the upstream sees what the client sent
        if head.query:
            sent = f"{sent}{'&' if '?' in sent else '?'}{head.query}"
        if hsts is not None:
            return Forward(endpoint, backend, sent, route, (), (), None, hsts)
        return Forward(endpoint, backend, sent, route)
    if route.slash_redirect is not None:
        return _slash_redirect(head, host, route)
    policy = route.policy
    access: Respond | None = None
    if policy is not DEFAULT_POLICY:
        early = _before_backend(
            head, host, path, route, https_port, tls_host, table.config.http_redirect_code
        )
        if early is not None:
            return Respond(early.status, early.body, early.location, early.headers, route)
        if policy.satisfy_any:
            access = _satisfy_any(policy, head)
            if access is not None and access.status and policy.external_auth is None:
                return Respond(access.status, access.body, None, access.headers, route)
    elif not head.scheme_https and policy.ssl_redirect and tls_host:
        redirect = _https_redirect(head, host, https_port, table.config.http_redirect_code)
        return Respond(redirect.status, redirect.body, redirect.location, route=route)
    backend = route.backend
    canary = route.canary
    if canary is not None:
        backend = _canary_or_main(route, canary, policy.affinity, head)
    stand_in: Headers = ()
    if not backend.endpoints and policy.custom_default is not None:
        # default-backend: its Service answers for one without endpoints, told so
        # (nginx.tmpl: a location sent to a "custom-default-backend-" upstream).
        stand_in = stand_in_headers(route, find_header(head.headers, b"accept"))
        backend = policy.custom_default
    if backend.error is not None:
        return Respond(503, f"503 Service Unavailable: {backend.error}\n", route=route)
    set_cookie = None
    if policy.affinity is not None and (
        backend is route.backend
        or (canary is not None and canary.sticky and backend is canary.backend)
    ):
        # A session stays where its cookie says (ingress-nginx); new ones avoid ejected
        # endpoints. A sticky canary's backend has the main's affinity (controller.go).
        endpoint, set_cookie = _sticky(policy.affinity, backend, head, route, health)
    elif policy.upstream_hash is not None and backend is route.backend:
        # Cookie affinity wins over upstream-hash-by, which wins over load-balance
        # (balancer.lua get_implementation). A canary's requests go round robin.
        endpoint = _hashed(policy.upstream_hash, backend, head, host, path, route, health)
    else:
        if policy.load_balance == "ewma" and ewma is not None:
            endpoint = ewma.pick(backend.endpoints)
        else:
            endpoint = backend.pick()
        if health is not None and health.ejected and endpoint is not None:
            endpoint = _healthy(backend, endpoint, health)
    if endpoint is None:
        return Respond(
            503, f"503 Service Unavailable: no ready endpoints for {backend.name}\n", route=route
        )
    target = policy.rewrite_target
    if route.rewrite and target is not None:
        upstream_path = rewrite(route, path, target)
    else:
        upstream_path = head.path  # unchanged: the upstream sees what the client sent
    if head.query:
        sep = "&" if "?" in upstream_path else "?"
        upstream_path = f"{upstream_path}{sep}{head.query}"
    if policy is DEFAULT_POLICY:
        return Forward(endpoint, backend, upstream_path, route, (), (), None, hsts)
    response_headers: Headers = (
        tuple(policy.cors.response_headers(head.origin)) if policy.cors else ()
    )
    if set_cookie is not None:
        response_headers = (*response_headers, (b"Set-Cookie", set_cookie))
    tls = policy.upstream_tls
    if tls is not None and not head.tls and policy.backend_protocol == "AUTO_HTTP":
        tls = None  # AUTO_HTTP: the upstream gets the scheme the client used
    return Forward(
        endpoint,
        backend,
        upstream_path,
        route,
        (*route.upstream_headers, *stand_in) if stand_in else route.upstream_headers,
        tuple(response_headers),
        tls,
        hsts,
        access,
    )


def stand_in_headers(route: Route, accept: bytes | None) -> Headers:
    """The headers for a request sent to the default-backend annotation's Service
    because the route's own Service has no endpoints (nginx.tmpl, for a location
    whose backend is a "custom-default-backend-" upstream)."""
    return ((b"X-Code", b"503"), (b"X-Format", accept or b""), *origin_headers(route))


def origin_headers(route: Route) -> Headers:
    """X-Namespace, X-Ingress-Name, X-Service-Name and X-Service-Port of the route the
    request was for (nginx.tmpl's $namespace, $ingress_name, $service_name,
    $service_port); empty, so not sent, for what no Ingress routes."""
    namespace, _, ingress = route.ingress.partition("/")
    service = port = ""
    if route.ingress:
        # Backend.name is "namespace/service:port", the port as the Ingress names it.
        service, _, port = route.backend.name.partition("/")[2].rpartition(":")
    return (
        (b"X-Namespace", namespace.encode("latin-1")),
        (b"X-Ingress-Name", ingress.encode("latin-1")),
        (b"X-Service-Name", service.encode("latin-1")),
        (b"X-Service-Port", port.encode("latin-1")),
    )


def retarget(
    fwd: Forward,
    tried: Sequence[Endpoint],
    tls: bool,
    health: EndpointHealth | None = None,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> Forward | None:
    """Where the next try of a failed request goes (proxy-next-upstream); None: nowhere.

    A request is sent to an endpoint not yet tried, except that an established
    cookie session stays on its endpoint unless session-cookie-change-on-failure
    moves it, as in ingress-nginx; a moved or new session gets the new cookie.
    With upstream-hash-by the key still hashes to the same endpoint, so the try
    goes there again, as in ingress-nginx (its chash balancer is asked again and
    answers the same; kubernetes/ingress-nginx#10730); with a subset, to a
    member of the subset not tried yet. ``headers`` are the request's (the
    User-Agent decides a new cookie's SameSite).
    """
    route, backend = fwd.route, fwd.backend
    affinity = route.policy.affinity
    if affinity is None or backend is not route.backend:
        hashing = route.policy.upstream_hash
        if hashing is not None and backend is route.backend:
            if not hashing.subset:
                return fwd
            member = _untried_member(backend, hashing, fwd.endpoint, tried)
            return None if member is None else fwd.copy(endpoint=member)
        endpoint = next_endpoint(backend, tried, health)
        return None if endpoint is None else fwd.copy(endpoint=endpoint)
    prefix = affinity.cookie.encode() + b"="
    others = tuple(
        h for h in fwd.response_headers if not (h[0] == b"Set-Cookie" and h[1].startswith(prefix))
    )
    new_session = len(others) != len(fwd.response_headers)
    if not new_session and not affinity.change_on_failure:
        return fwd
    endpoint = next_endpoint(backend, tried, health)
    if endpoint is None:
        return None
    agent = find_header(headers, b"user-agent") if affinity.conditional_samesite_none else None
    cookie = session_cookie(affinity, backend.affinity_values[endpoint], route, tls, None, agent)
    return fwd.copy(endpoint=endpoint, response_headers=(*others, (b"Set-Cookie", cookie)))


def _before_backend(
    head: RequestHead,
    host: str,
    path: str,
    route: Route,
    https_port: int,
    tls_host: bool,
    redirect_code: int = 308,
) -> Respond | None:
    policy = route.policy
    if policy.fail_closed is not None:
        status, reason = policy.fail_closed
        return Respond(
            status, f"{status} {_REASONS[status]}: {reason} on Ingress {route.ingress}\n"
        )
    if policy.blocked:
        # ingress-nginx's server-level "if ($block_ua) { return 403; }": before the rest.
        for block in policy.blocked:
            if block.blocks(find_header(head.headers, block.header)):
                name = block.header.decode()
                return Respond(403, f"403 Forbidden: this {name} is blocked\n")
    # nginx's rewrite phases, in ingress-nginx's order (nginx.tmpl): the server's
    # (server-snippet, then app-root), then the location's (the CORS preflight,
    # configuration-snippet, then permanent/temporal-redirect); the HTTPS redirect
    # (Lua, run after them) and access checks come later.
    server_snippet = policy.server_snippet
    if server_snippet is not None and server_snippet.answers:
        found = _snippet_answer(server_snippet, head, host, path, policy.use_port_in_redirects)
        if found is not None:
            return found
    if policy.app_root is not None and path == "/":
        # nginx.tmpl: return 302 $scheme://$http_host<app-root>;
        root = route.app_root_parts
        if len(root) != 1:
            return _redirect(302, _scheme(head) + head.host + _rendered(root, head, host, path))
        return _redirect(302, _scheme(head) + head.host + policy.app_root)
    if policy.cors is not None and head.method == "OPTIONS":
        # A preflight from an origin that is not allowed goes to the upstream.
        headers = policy.cors.preflight_headers(head.origin)
        if headers:
            return Respond(204, "", headers=tuple(headers))
    snippet = policy.snippet
    if snippet is not None and snippet.answers:
        found = _snippet_answer(snippet, head, host, path, policy.use_port_in_redirects)
        if found is not None:
            return found
    if policy.redirect is not None:
        # nginx.tmpl: return <code> <url>; nginx evaluates the URL's variables.
        url = route.redirect_parts
        if len(url) != 1:
            return _redirect(policy.redirect[0], _rendered(url, head, host, path))
        return _redirect(*policy.redirect)
    if not head.scheme_https and (policy.force_ssl_redirect or (policy.ssl_redirect and tls_host)):
        return _https_redirect(
            head, host, https_port, redirect_code, policy.preserve_trailing_slash
        )
    if policy.satisfy_any:
        return None  # _satisfy_any weighs the address and the credentials together
    restricted = policy.deny_source is not None or policy.allow_source is not None
    if restricted and _address_access(policy, head.client_ip) is False:
        return _forbidden(head.client_ip)
    auth = policy.basic_auth
    if auth is not None and not allows(auth, find_header(head.headers, b"authorization")):
        external = policy.external_auth
        if external is not None and external.signin is not None:
            # nginx.tmpl: auth-signin's "error_page 401 = <sign-in location>" covers every
            # 401 of the location, Basic auth's (checked before auth_request) too.
            return _signin(external, head)
        return _unauthorized(auth.challenge)
    return None


def _signin(external: ExternalAuth, head: RequestHead) -> Respond:
    uri = f"{head.path}?{head.query}" if head.query else head.path
    location = signin_for(external, head.method, head.tls, head.host, uri)
    return Respond(302, "302 Found\n", location=location)


# Forward.access when satisfy "any" is met without asking the auth service.
SATISFIED: Final = Respond(0, "")


def _forbidden(client_ip: str) -> Respond:
    return Respond(403, f"403 Forbidden: {client_ip} may not access this address\n")


def _unauthorized(challenge: bytes) -> Respond:
    return Respond(401, "401 Authorization Required\n", headers=((b"WWW-Authenticate", challenge),))


def _address_access(policy: RoutePolicy, client_ip: str) -> bool | None:
    """nginx's access module on the allow/deny list ingress-nginx writes (denylist's
    "deny" lines, then allowlist's "allow" lines and "deny all"): True allowed, False
    denied, None no rule matched (the module declines)."""
    try:
        client = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    if policy.deny_source is not None and any(client in n for n in policy.deny_source):
        return False
    if policy.allow_source is not None:
        return any(client in n for n in policy.allow_source)
    return None


def _satisfy_any(policy: RoutePolicy, head: RequestHead) -> Respond | None:
    """nginx's access phase under "satisfy any" (ngx_http_core_access_phase): the
    address check, then Basic auth, then (in the proxy) auth-url, in nginx's module
    order. One that allows suffices (SATISFIED); one that declines does not count;
    denials are kept, a 401 over a 403, for the answer if none allows. None: nothing
    decided here (the auth service decides alone, or nothing restricts the route)."""
    denial: Respond | None = None
    if policy.deny_source is not None or policy.allow_source is not None:
        verdict = _address_access(policy, head.client_ip)
        if verdict is True:
            return SATISFIED
        if verdict is False:
            denial = _forbidden(head.client_ip)
    auth = policy.basic_auth
    if auth is not None:
        if allows(auth, find_header(head.headers, b"authorization")):
            return SATISFIED
        denial = _unauthorized(auth.challenge)
    return denial


def request_vars(
    head: RequestHead, host: str, path: str, request_id: str = "", use_port: bool = False
) -> RequestVars:
    """The request as nginx's variables see it (model/variables.py); ``path``:
    $uri; ``use_port``: use-port-in-redirects."""
    return RequestVars(
        host,
        head.host,
        head.path,
        path,
        head.query,
        "https" if head.tls else "http",
        head.client_ip,
        head.method,
        head.headers,
        request_id,
        _server_port_suffix(head) if use_port else "",
        head.server_port.decode("latin-1"),
    )


def _rendered(parts: tuple[str, ...], head: RequestHead, host: str, path: str) -> str:
    """An annotation's URL template for this request, safe for a Location header.
    nginx writes what its variables hold as it is ($uri decoded: a "%0D%0A" in the
    request becomes a CR LF in the header); ingressd escapes controls, spaces and
    bytes beyond ASCII instead, as a URL would carry them."""
    text = render_text(parts, request_vars(head, host, path))
    if all(" " < c < "\x7f" for c in text):
        return text
    return "".join(c if " " < c < "\x7f" else f"%{ord(c) & 0xFF:02X}" for c in text)


def _snippet_answer(
    snippet: SnippetPolicy, head: RequestHead, host: str, path: str, use_port: bool = False
) -> Respond | None:
    """A snippet's return or rewrite ... redirect, when one applies to this request."""
    found = answer(snippet, request_vars(head, host, path, "", use_port))
    if found is None:
        return None
    status, body, location, headers = found
    return Respond(status, body, location, headers)


def _canary_or_main(
    route: Route, canary: Canary, affinity: Affinity | None, head: RequestHead
) -> Backend:
    """The backend of a request for a route with a canary (balancer.lua
    route_to_alternative_balancer): a session affinitized to the main backend stays
    there; one affinitized to a sticky canary (affinity-canary-behavior) goes to the
    canary; any other request goes where the canary's rules say."""
    if affinity is not None:
        value = find_cookie(head.headers, affinity.cookie)
        if value is not None:
            if value in route.backend.by_affinity:
                return route.backend
            alternative = canary.backend
            if canary.sticky and alternative is not None and value in alternative.by_affinity:
                return alternative
    if _to_canary(canary, head):
        return canary.backend  # type: ignore[return-value]
    return route.backend


def _to_canary(canary: Canary, head: RequestHead) -> bool:
    """Whether the canary backend takes this request: ingress-nginx's header, cookie, weight."""
    if canary.header is not None:
        value = find_header(head.headers, canary.header)
        if value is not None:
            if canary.header_value is not None:
                if value == canary.header_value:
                    return True
            elif canary.header_pattern is not None:
                if canary.header_pattern.matches_bytes(value):
                    return True
            elif value == b"always":
                return True
            elif value == b"never":
                return False
    if canary.cookie is not None:
        cookie = find_cookie(head.headers, canary.cookie)
        if cookie == "always":
            return True
        if cookie == "never":
            return False
    return canary.weight > 0 and random.randrange(canary.total) < canary.weight


def _healthy(backend: Backend, endpoint: Endpoint, health: EndpointHealth) -> Endpoint:
    """``endpoint`` unless it is ejected and another one is not."""
    if not health.is_ejected(endpoint):
        return endpoint
    return next_endpoint(backend, [endpoint], health) or endpoint


def _sticky(
    affinity: Affinity,
    backend: Backend,
    head: RequestHead,
    route: Route,
    health: EndpointHealth | None = None,
) -> tuple[Endpoint | None, bytes | None]:
    """The endpoint the session cookie names while it is ready; else a new one and its cookie."""
    value = find_cookie(head.headers, affinity.cookie)
    if value is not None:
        endpoint = backend.by_affinity.get(value)
        if endpoint is not None:
            return endpoint, None
    endpoint = backend.pick()
    if endpoint is None:
        return None, None
    if health is not None and health.ejected:
        endpoint = _healthy(backend, endpoint, health)  # a new session starts somewhere alive
    agent = find_header(head.headers, b"user-agent") if affinity.conditional_samesite_none else None
    cookie = session_cookie(
        affinity, backend.affinity_values[endpoint], route, head.tls, None, agent
    )
    return endpoint, cookie


def _hashed(
    hashing: UpstreamHash,
    backend: Backend,
    head: RequestHead,
    host: str,
    path: str,
    route: Route,
    health: EndpointHealth | None,
) -> Endpoint | None:
    """upstream-hash-by: the endpoint (chash.lua) or a member of the subset
    (chashsubset.lua) the request's key hashes to on the backend's ring.

    An endpoint that passive health checks have ejected passes its keys on to
    the next node of the ring (as nginx's ``hash ... consistent`` does), so the
    other keys stay where they are; ingress-nginx has no passive health.
    """
    target = backend.hash_ring(hashing.subset_size if hashing.subset else 0)
    if not target.nodes:
        return None
    uri = path
    if route.rewrite and route.policy.rewrite_target is not None:
        uri = rewrite(route, path, route.policy.rewrite_target)  # nginx's $uri after rewrite
    key = render(hashing.parts, request_vars(head, host, uri))
    ring = target.ring
    if not hashing.subset:
        node = ring.find(key)
        endpoint = target.nodes[node][0]
        if health is not None and health.ejected and health.is_ejected(endpoint):
            for other in ring.successors(key):
                candidate = target.nodes[other][0]
                if not health.is_ejected(candidate):
                    return candidate
        return endpoint
    members = target.nodes[ring.find(key)]
    # chashsubset.lua: a member at random. Ejected members only when all are.
    if health is not None and health.ejected:
        alive = [m for m in members if not health.is_ejected(m)]
        if alive:
            members = tuple(alive)
    return members[random.randrange(len(members))]


def _untried_member(
    backend: Backend, hashing: UpstreamHash, failed: Endpoint, tried: Sequence[Endpoint]
) -> Endpoint | None:
    """A member, not tried yet, of the subset ``failed`` was picked from (of the
    first, for an endpoint in two: the last subset is filled up with the first
    endpoints). chashsubset.lua picks a member at random again, tried or not."""
    target = backend.hash_ring(hashing.subset_size)
    for members in target.nodes:
        if failed in members:
            for member in members:
                if member not in tried:
                    return member
            return None
    return None


# A route path that could not be a cookie Path as it is (regexes aside).
_UNSAFE_COOKIE_PATH: Final = re.compile(r"[^\x21-\x3a\x3c-\x7e]")


def session_cookie(
    affinity: Affinity,
    value: str,
    route: Route,
    tls: bool,
    now: float | None = None,
    user_agent: bytes | None = None,
) -> bytes:
    """The Set-Cookie value binding a client to the endpoint ``value`` names.

    ``user_agent``: the client's, read with session-cookie-conditional-samesite-none."""
    path = affinity.path
    if path is None:
        # A regex is no cookie path: ingress-nginx users set session-cookie-path then.
        unusable = route.regex is not None or _UNSAFE_COOKIE_PATH.search(route.path)
        path = "/" if unusable else route.path
    parts = [f"{affinity.cookie}={value}", f"Path={path}"]
    if affinity.max_age is not None:
        parts.append(f"Max-Age={affinity.max_age}")
    if affinity.expires is not None:
        when = (time.time() if now is None else now) + affinity.expires
        parts.append("Expires=" + formatdate(when, usegmt=True))
    if affinity.domain is not None:
        parts.append(f"Domain={affinity.domain}")
    samesite = affinity.samesite
    if (
        samesite == "None"
        and affinity.conditional_samesite_none
        and not same_site_none_compatible(user_agent)
    ):
        samesite = None  # sticky.lua: left out for clients that mishandle it
    if samesite is not None:
        parts.append(f"SameSite={samesite}")
    if affinity.secure or (affinity.secure is None and tls):
        parts.append("Secure")
    parts.append("HttpOnly")
    return "; ".join(parts).encode("latin-1")


def find_header(headers: Sequence[tuple[bytes, bytes]], lname: bytes) -> bytes | None:
    """The first value of header ``lname`` (lowercase), or None."""
    for name, value in headers:
        if name.lower() == lname:
            return value
    return None


def find_cookie(headers: Sequence[tuple[bytes, bytes]], name: str) -> str | None:
    """The value of cookie ``name`` in the Cookie header(s), or None."""
    want = name.encode("latin-1")
    for hname, value in headers:
        if hname.lower() != b"cookie":
            continue
        for pair in value.split(b";"):
            key, eq, cookie = pair.strip().partition(b"=")
            if eq and key == want:
                return cookie.strip().decode("latin-1")
    return None


_REASONS: Final = {
    301: "Moved Permanently",
    302: "Found",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    403: "Forbidden",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def _scheme(head: RequestHead) -> str:
    return "https://" if head.tls else "http://"


def _port_suffix(head: RequestHead) -> str:
    colon = head.host.rfind(":")
    return head.host[colon:] if colon > head.host.rfind("]") else ""


def _server_port_suffix(head: RequestHead) -> str:
    """nginx's port_in_redirect on: ":PORT" of the port the client connected to,
    unless it is the scheme's own (ngx_http_header_filter_module.c)."""
    port = head.server_port.decode("latin-1")
    if not port or port == ("443" if head.tls else "80"):
        return ""
    return ":" + port


def _uri(head: RequestHead) -> str:
    return head.path + (f"?{head.query}" if head.query else "")


def _redirect(status: int, location: str) -> Respond:
    return Respond(status, f"{status} Redirect to {location}\n", location=location)


def _https_redirect(
    head: RequestHead,
    host: str,
    https_port: int,
    code: int = 308,
    preserve_trailing_slash: bool = False,
) -> Respond:
    """lua_ingress.lua: the request URI, query included, less one trailing "/"
    unless preserve-trailing-slash ("/" itself becomes nothing); ``code``: the
    ConfigMap's http-redirect-code (308 by default)."""
    port = "" if https_port == 443 else f":{https_port}"
    uri = _uri(head)
    if not preserve_trailing_slash and uri.endswith("/"):
        uri = uri[:-1]
    body = f"{code} {_REASONS.get(code, 'Redirect')}\n"
    return Respond(code, body, location=f"https://{host}{port}{uri}")


def _slash_redirect(head: RequestHead, host: str, route: Route) -> Respond:
    """nginx's 301 from ``/p`` to the location ``/p/`` (see VirtualHost).

    nginx writes the location's name, escaped, and the query; the port is the
    one the client asked for (ingress-nginx turns port_in_redirect off, which
    behind a load balancer on 80/443 comes to the same).
    """
    name = quote(route.slash_redirect or "/", safe="/:@!$&'()*+,;=-._~%")
    query = f"?{head.query}" if head.query else ""
    # port_in_redirect on (use-port-in-redirects): the server's port.
    use_port = route.policy.use_port_in_redirects
    port = _server_port_suffix(head) if use_port else _port_suffix(head)
    location = f"{_scheme(head)}{host}{port}{name}{query}"
    return Respond(301, f"301 Moved Permanently to {location}\n", location=location, route=route)


def rewrite(route: Route, path: str, target: str) -> str:
    """The upstream path for ``path`` under a rewrite-target.

    Regex routes follow nginx's ``rewrite``: the whole path becomes the target
    with ``$n`` taken from the route's capture groups. A route that opted out of
    regex (``use-regex: "false"``) has just its matched prefix replaced, even
    when another Ingress put its host in regex mode.
    """
    if route.regex is not None and route.policy.regex_paths:
        new = expand_target(target, route.regex.search(path), escape_path)
    elif route.path_type == "Exact":
        # An Exact path has no capture groups: "$n" references become empty.
        new = expand_target(target, None)
    elif route.path == "/":
        new = _join(target, escape_path(path))
    else:
        prefix = route.path.rstrip("/")
        new = _join(target, escape_path(path[len(prefix) :]))
    return new if new.startswith("/") else "/" + new


def _join(base: str, rest: str) -> str:
    if not rest:
        return base or "/"
    if rest == "/":
        return base.rstrip("/") + "/"  # keep the client's trailing slash
    return base.rstrip("/") + "/" + rest.lstrip("/")
