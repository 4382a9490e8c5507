"""A route's policy: the typed, validated annotation values the table carries.

Plain data, as the builder resolves it (``policy/annotations.py`` parses the
annotations, the feature modules under ``policy/`` resolve what needs a
Secret). Behaviour that needs more than the standard library lives with its
feature, as functions over these types: checking Basic credentials
(``policy/basic_auth.py``), parsing auth URL templates (``policy/ext_auth.py``),
checking an upstream's certificate (``policy/upstream_tls.py``), counting
limits (``policy/limits.py``). What stays here are small pure methods over a
type's own fields.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .backend import Backend, Endpoint
from .pickling import pickle_by_fields
from .regex import UserRegex
from .snippet import SnippetPolicy

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# -- limit-rps, limit-rpm, limit-connections (policy/limits.py) ----------------------------

DEFAULT_BURST_MULTIPLIER = 5  # ingress-nginx's limit-burst-multiplier default


@dataclass(frozen=True, slots=True)
class LimitConfig:
    """The limit-* annotations of one Ingress (at least one limit is set)."""

    rps: int | None = None
    rpm: int | None = None
    connections: int | None = None
    burst_multiplier: int = DEFAULT_BURST_MULTIPLIER
    allowlist: tuple[IPNetwork, ...] = ()  # clients exempt from every limit


# -- proxy-redirect-*, proxy-cookie-* (policy/response_rewrite.py) ------------------------


@dataclass(frozen=True, slots=True)
class TextRewrite:
    """One of nginx's proxy_redirect / proxy_cookie_domain / proxy_cookie_path rules:
    a value starting with ``prefix`` (the whole value for a domain), or matching
    ``regex``, gets ``replacement`` in place of what matched."""

    prefix: bytes = b""
    replacement: bytes = b""
    regex: UserRegex | None = None  # "~" (case-sensitive) or "~*" patterns


@dataclass(frozen=True, slots=True)
class ResponseRewrite:
    """How the upstream's Location/Refresh and Set-Cookie are rewritten; a rule of
    None is nginx's ``off``."""

    redirect: TextRewrite | None = None  # proxy-redirect-from / -to
    cookie_domain: TextRewrite | None = None  # proxy-cookie-domain
    cookie_path: TextRewrite | None = None  # proxy-cookie-path


# -- enable-cors and cors-* (policy/cors.py) -----------------------------------------------

# ingress-nginx's defaults
DEFAULT_METHODS = "GET, PUT, POST, DELETE, PATCH, OPTIONS"
DEFAULT_HEADERS = (
    "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,"
    "Content-Type,Range,Authorization"
)
DEFAULT_MAX_AGE = 1728000


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """enable-cors and the cors-* annotations, validated."""

    origins: tuple[str, ...] = ("*",)
    methods: str = DEFAULT_METHODS
    headers: str = DEFAULT_HEADERS
    expose: str = ""
    credentials: bool = True
    max_age: int = DEFAULT_MAX_AGE
    # The headers after Access-Control-Allow-Origin, which do not depend on the
    # request: encoded once, not per response (__post_init__, again on replace()).
    encoded: tuple[tuple[bytes, bytes], ...] = field(
        default=(), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        out = []
        if self.credentials:
            out.append((b"Access-Control-Allow-Credentials", b"true"))
        out += [
            (b"Access-Control-Allow-Methods", self.methods.encode()),
            (b"Access-Control-Allow-Headers", self.headers.encode()),
        ]
        if self.expose:
            out.append((b"Access-Control-Expose-Headers", self.expose.encode()))
        out.append((b"Access-Control-Max-Age", str(self.max_age).encode()))
        object.__setattr__(self, "encoded", tuple(out))

    def allowed_origin(self, origin: str | None) -> str | None:
        """The value of Access-Control-Allow-Origin for this request, or None."""
        if self.origins == ("*",):
            return "*"
        if not origin:
            return None
        o = origin.lower()
        for allowed in self.origins:
            if allowed == o:
                return origin
            scheme, _, rest = allowed.partition("://*.")
            if rest and o.startswith(scheme + "://"):
                host = o[len(scheme) + 3 :]
                # Exactly one label in front of the wildcard's suffix.
                head, dot, tail = host.partition(".")
                if dot and head and tail == rest:
                    return origin
        return None

    def response_headers(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        """The CORS headers for a request from ``origin``; none when it is not allowed.

        ingress-nginx sends the same set on preflights and on other responses.
        """
        allow = self.allowed_origin(origin)
        if allow is None:
            return []
        out = [(b"Access-Control-Allow-Origin", allow.encode("latin-1")), *self.encoded]
        if allow != "*":
            # The answer depends on Origin: caches must not reuse it for others.
            out.append((b"Vary", b"Origin"))
        return out

    def preflight_headers(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        """The headers of the answer to a preflight: the same set (compiled code
        cannot alias a method in the class body)."""
        return self.response_headers(origin)


# -- proxy-next-upstream (policy/retry.py) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class NextUpstream:
    """proxy-next-upstream, -tries and -timeout; the defaults are ingress-nginx's."""

    error: bool = True
    timeout: bool = True
    invalid_header: bool = False
    statuses: frozenset[int] = frozenset()
    non_idempotent: bool = False
    tries: int = 3  # attempts in all, the first included; 0: no limit
    time_limit: float = 0.0  # seconds from the first attempt; 0: no limit

    def covers(self, kind: str) -> bool:
        """Whether a failure of ``kind`` ("error", "timeout", "invalid_header") is retried."""
        if kind == "error":
            return self.error
        if kind == "timeout":
            return self.timeout
        return kind == "invalid_header" and self.invalid_header


DEFAULT_NEXT_UPSTREAM = NextUpstream()


# -- auth-type: basic (policy/basic_auth.py) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthRef:
    """The auth-* annotations of one Ingress, as parsed."""

    secret: tuple[str | None, str]  # (namespace or None for the Ingress's, name)
    secret_type: str = "auth-file"  # or "auth-map"
    realm: str = ""  # ingress-nginx's default is an empty realm


class PasswordCheck(Protocol):
    """What Basic authentication needs of its credentials (policy/htpasswd.py's Credentials)."""

    def verify(self, user: str, password: str) -> bool: ...


@dataclass(frozen=True, slots=True, eq=False)
class BasicAuth:
    """auth-type basic with its credentials loaded from the Secret.

    ``policy/basic_auth.py``'s ``allows`` checks a request's Authorization
    header against it, and remembers in ``_ok`` (bounded) the digests of
    credentials that passed, so a client repeating them costs one lookup.
    """

    credentials: PasswordCheck
    challenge: bytes  # the WWW-Authenticate value
    _ok: OrderedDict[bytes, None] = field(default_factory=OrderedDict, repr=False)


# -- auth-url and auth-* (policy/ext_auth.py) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Template:
    """A string with nginx-style ``$variables``, split once (``policy/ext_auth.py``
    parses it and knows the variables)."""

    parts: tuple[str, ...]  # literal, variable, literal, variable, … literal
    text: str

    def render(self, values: Mapping[str, str]) -> str:
        parts = self.parts
        if len(parts) == 1:
            return parts[0]
        return "".join(p if i % 2 == 0 else values[p] for i, p in enumerate(parts))


@dataclass(frozen=True, slots=True)
class ExternalAuth:
    """The auth-* annotations of an Ingress, validated."""

    url: Template
    method: str | None = None  # auth-method; None: GET, as nginx's subrequests
    response_headers: tuple[str, ...] = ()  # auth-response-headers
    signin: Template | None = None  # auth-signin
    signin_param: str = "rd"  # auth-signin-redirect-param
    request_redirect: Template | None = None  # auth-request-redirect
    always_set_cookie: bool = False  # auth-always-set-cookie
    # auth-proxy-set-headers: (name, value template) from the ConfigMap it names,
    # set on the subrequest in place of any of the same name (policy/header_maps.py).
    proxy_set_headers: tuple[tuple[bytes, Template], ...] = ()
    # auth-cache-key: answers are remembered per rendered key (policy/auth_cache.py);
    # None: no cache, every request asks.
    cache_key: Template | None = None
    # auth-cache-duration, as nginx's proxy_cache_valid lines: (statuses, seconds);
    # an empty set of statuses is nginx's "any". The first line naming a status wins.
    cache_durations: tuple[tuple[frozenset[int], float], ...] = ()
    # auth-keepalive*: idle connections kept to the auth service (0: a new one for
    # every subrequest, as nginx's auth_request without an upstream block), the
    # subrequests one connection carries, and how long an idle one is kept.
    keepalive: int = 0
    keepalive_requests: int = 1000
    keepalive_timeout: float = 60.0
    # auth-keepalive-share-vars: with keep-alive, the subrequest shares the request's
    # variables ($req_id: the same X-Request-ID as the upstream's); without, it has its own.
    keepalive_share_vars: bool = False


# -- backend-protocol and proxy-ssl-* (policy/upstream_tls.py) -----------------------------


@dataclass(frozen=True, slots=True)
class ProxySSL:
    """The proxy-ssl-* annotations of one Ingress, as parsed (read only with a Secret)."""

    namespace: str | None  # of proxy-ssl-secret; None: the Ingress's own
    secret: str
    verify: bool = False  # proxy-ssl-verify
    verify_depth: int = 1  # proxy-ssl-verify-depth: intermediate CAs allowed
    name: str | None = None  # proxy-ssl-name; None: the endpoint's address or host
    server_name: bool = False  # proxy-ssl-server-name: send SNI
    # proxy-ssl-ciphers (OpenSSL cipher list) and proxy-ssl-protocols (TLSv1.2,
    # TLSv1.3); ingress-nginx's defaults: DEFAULT, and "TLSv1 TLSv1.1 TLSv1.2".
    ciphers: str = "DEFAULT"
    protocols: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")


@dataclass(frozen=True, slots=True, eq=False)
class UpstreamTLS:
    """How to speak TLS to a route's upstream, resolved when the table is built."""

    context: ssl.SSLContext
    verify: bool  # chain verified against ca.crt, then name and depth checked
    verify_depth: int
    name: str | None  # name to verify (and send as SNI); None: the endpoint's host
    server_name: bool  # send SNI
    secret: str | None  # "namespace/name" of the proxy-ssl-secret, for messages
    # What pooled connections are keyed by (with the endpoint): two routes with
    # the same key may share a connection, a plain and a TLS one never do.
    key: tuple[Any, ...]

    def server_hostname(self, endpoint: Endpoint) -> str:
        """The SNI to send; "" sends none (asyncio then checks no name either)."""
        if not self.server_name:
            return ""
        return self.name or endpoint.host


# -- auth-tls-* (policy/client_auth.py, policy/client_tls.py) -----------------------------


@dataclass(frozen=True, slots=True)
class ClientAuthRef:
    """The auth-tls-* annotations of one Ingress, as parsed (client certificates, mTLS)."""

    namespace: str | None  # of auth-tls-secret; None: the Ingress's own
    secret: str
    verify: str = "on"  # auth-tls-verify-client: on, optional, optional_no_ca (off: no ref)
    depth: int = 1  # auth-tls-verify-depth, as nginx's ssl_verify_depth
    error_page: str | None = None  # auth-tls-error-page: 302 there instead of 400
    pass_certificate: bool = False  # auth-tls-pass-certificate-to-upstream
    match_cn: UserRegex | None = None  # auth-tls-match-cn, searched in the subject DN


@dataclass(frozen=True, slots=True, eq=False)
class ClientAuth:
    """A host's client-certificate check, its CA Secret loaded (``ClientAuthRef`` resolved).

    Server-wide, as ingress-nginx's ``server.CertificateAuth``: every route of
    the host and the TLS handshakes whose SNI names it share one.
    """

    ref: ClientAuthRef
    secret: str  # "namespace/name", for messages
    ca_pem: bytes  # the CA bundle (ca.crt) and, when given, the CRL (ca.crl), PEM
    crl: bool  # a CRL is loaded: revocation is checked along the whole chain
    # Digest of everything that shapes the TLS context and the verdicts: equal
    # keys, same behaviour (contexts and verdicts are cached by it).
    key: bytes


# -- block-user-agents, block-referers (the controller ConfigMap, policy/configmap.py) ------


@dataclass(frozen=True, slots=True)
class HeaderBlock:
    """Requests whose header matches an entry get 403, as ingress-nginx's ``map
    $http_user_agent $block_ua`` (or ``$http_referer``) and ``if ($block_ua) { return
    403; }`` in every server. An entry is a string, matched whole and ignoring case
    (nginx's map lowercases its string keys), or ``~`` / ``~*`` and a regular
    expression, found anywhere, case-sensitively or not: on RE2 (model/regex.py)."""

    header: bytes  # lowercase: b"user-agent" or b"referer"
    exact: frozenset[bytes] = frozenset()  # lowercase
    patterns: tuple[UserRegex, ...] = ()

    def blocks(self, value: bytes | None) -> bool:
        if value is None:
            return False
        if self.exact and value.lower() in self.exact:
            return True
        return any(p.matches_bytes(value) for p in self.patterns)


# -- the route's policy --------------------------------------------------------------------


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
    # affinity-canary-behavior "sticky" (the default): beside the main Ingress's cookie
    # affinity, a session the canary took stays on the canary (its backend gets the
    # main's affinity); "legacy" (False): canary requests are not sticky.
    sticky: bool = True
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
    # session-cookie-conditional-samesite-none: SameSite=None is left out for
    # user agents known to reject such cookies (policy/samesite.py).
    conditional_samesite_none: bool = False


# -- upstream-hash-by (policy/chash.py, model/hashring.py) ---------------------------------


@dataclass(frozen=True, slots=True)
class UpstreamHash:
    """upstream-hash-by and its -subset, -subset-size: consistent hashing of requests.

    ``parts`` is the key template split once: literal, variable, literal, …
    literal; variables by their lowercase nginx name (``request_uri``,
    ``http_x_user``, ``cookie_session``, ``arg_id``).
    """

    parts: tuple[str, ...]
    text: str  # as annotated, for messages
    subset: bool = False
    subset_size: int = 3  # ingress-nginx's default


@dataclass(frozen=True, slots=True)
class GlobalRateLimit:
    """global-rate-limit and its -window, -key, -ignored-cidrs (policy/global_limit.py)."""

    limit: int  # requests per window, per key
    window: int  # seconds
    key: tuple[str, ...]  # literal, variable, … literal (policy/chash.py parse_key)
    key_text: str  # as annotated, for messages
    ignored: tuple[IPNetwork, ...] = ()  # clients never limited


@dataclass(frozen=True, slots=True)
class Mirror:
    """mirror-target, mirror-host, mirror-request-body (ingress-nginx's
    ``annotations/mirror/main.go``, nginx.tmpl's ``mirror`` and its internal
    ``location = /_mirror-UID``): a copy of each request, fire-and-forget
    (proxy/mirror.py)."""

    scheme: str  # "http" or "https"
    host: str  # the target's host name (or address), port apart
    port: int
    # The target's path and query, with the variables proxy/mirror.py expands
    # ($request_uri, $args, $query_string, $is_args, $host, $scheme); "" when
    # the target has no path: nginx then sends the mirror location's own URI.
    path: str
    host_header: str  # mirror-host, else the target's host name, as ingress-nginx
    request_body: bool = True  # mirror-request-body: on (default) or off


@dataclass(frozen=True, slots=True)
class RouteTracing:
    """enable-opentelemetry and, beside it, opentelemetry-trust-incoming-span and
    -operation-name on an Ingress (annotations/opentelemetry/main.go: the other two
    are read only when enable-opentelemetry is set). None: the ConfigMap's."""

    enabled: bool
    trust_incoming_span: bool | None = None
    operation_name: tuple[str, ...] | None = None  # as TracingConfig.operation_name


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """Typed, validated annotation values that affect how a route is served."""

    rewrite_target: str | None = None
    use_regex: bool | None = None  # None: not set
    ssl_redirect: bool = True
    force_ssl_redirect: bool = False
    # The HTTPS redirect keeps a trailing "/" of the request URI (lua_ingress.lua drops one)
    preserve_trailing_slash: bool = False
    # enable-access-log: false leaves the route's requests out of the access log
    access_log: bool = True
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
    external_auth: ExternalAuth | None = None  # auth-url: a subrequest decides (policy/ext_auth.py)
    # How the upstream is spoken to (policy/upstream_tls.py): HTTP, HTTPS, AUTO_HTTP
    # (TLS when the client's request came over TLS), GRPC (HTTP/2 cleartext) or
    # GRPCS (HTTP/2 over TLS); FCGI and AJP fail closed.
    backend_protocol: str = "HTTP"
    proxy_ssl: ProxySSL | None = None  # proxy-ssl-* as annotated; needs proxy-ssl-secret
    upstream_tls: UpstreamTLS | None = None  # resolved by the builder for HTTPS/AUTO_HTTP/GRPCS
    service_upstream: bool = False  # one endpoint: the Service's ClusterIP and port
    # proxy-http-version: "1.0" sends HTTP/1.0 request lines and reuses no
    # connection (nginx's proxy_http_version); "1.1" is ingress-nginx's default.
    proxy_http_version: str = "1.1"
    # connection-proxy-header: the Connection header sent upstream, replacing
    # ingress-nginx's $connection_upgrade ("upgrade" beside an Upgrade, else none).
    connection_header: bytes | None = None
    # use-port-in-redirects: nginx's port_in_redirect for the redirects ingressd
    # makes absolute itself (snippet returns, the "/" one short of a location).
    use_port_in_redirects: bool = False
    # proxy-redirect-*, proxy-cookie-*: as written ("off" is ingress-nginx's default),
    # and the rules they make; None rewrites nothing (policy/response_rewrite.py)
    proxy_redirect_from: str = "off"
    proxy_redirect_to: str = "off"
    proxy_cookie_domain: str = "off"
    proxy_cookie_path: str = "off"
    response_rewrite: ResponseRewrite | None = None
    # limit-rate, limit-rate-after: bytes per second per response after the first
    # limit_rate_after bytes, as nginx's limit_rate (0: no limit)
    limit_rate: int = 0
    limit_rate_after: int = 0
    # ssl-ciphers, ssl-prefer-server-ciphers: the host's TLS (policy/tls.py). None:
    # the server-wide setting.
    ssl_ciphers: str | None = None
    ssl_prefer_server_ciphers: bool | None = None
    # Limits; None: the proxy-wide setting
    proxy_body_size: int | None = None  # bytes, 0 = unlimited
    proxy_buffer_size: int | None = None  # bytes the upstream's response head may take
    # proxy-request-buffering, client-body-buffer-size (the part of a buffered body
    # kept in memory), proxy-buffering, proxy-buffers-number, proxy-busy-buffers-size:
    # None = the proxy-wide setting (the ConfigMap's key). proxy/exchange.py.
    request_buffering: bool | None = None
    client_body_buffer_size: int | None = None
    proxy_buffering: bool | None = None
    proxy_buffers_number: int | None = None
    proxy_busy_buffers_size: int | None = None
    mirror: Mirror | None = None  # mirror-target and its companions
    proxy_connect_timeout: float | None = None
    proxy_read_timeout: float | None = None
    proxy_send_timeout: float | None = None
    load_balance: str = "round_robin"  # or "ewma" (policy/ewma.py); affinity wins over both
    # upstream-hash-by: the endpoint from a hash of the request; wins over
    # load_balance, cookie affinity wins over it (balancer.lua get_implementation)
    upstream_hash: UpstreamHash | None = None
    # proxy-next-upstream(-tries, -timeout): which failures are tried again elsewhere
    next_upstream: NextUpstream = DEFAULT_NEXT_UPSTREAM
    # limit-rps/-rpm/-connections per client address (policy/limits.py); None: no limits
    limits: LimitConfig | None = None
    # global-rate-limit*: requests per window per key, counted per pod (policy/global_limit.py)
    global_limit: GlobalRateLimit | None = None
    # Access by client address, checked before anything is forwarded
    allow_source: tuple[IPNetwork, ...] | None = None
    deny_source: tuple[IPNetwork, ...] | None = None
    # satisfy: "any": the address check (allow/deny) or the authentication (basic,
    # auth-url) suffices, as nginx's "satisfy any"; False: all of them must pass.
    satisfy_any: bool = False
    cors: CorsPolicy | None = None
    canary: Canary | None = None  # this Ingress is a canary (canary: "true")
    affinity: Affinity | None = None
    # auth-tls-*: the annotations, then (at build) the CA Secret loaded. Host-wide:
    # the host's VirtualHost.client_auth decides (policy/client_auth.py).
    client_auth_ref: ClientAuthRef | None = None
    client_auth: ClientAuth | None = None
    # The controller ConfigMap's block-user-agents and block-referers: 403 on a match.
    blocked: tuple[HeaderBlock, ...] = ()
    # Set when access control cannot be honoured (an invalid or unsupported
    # access annotation): the route answers (status, reason) instead of serving
    # without the protection.
    fail_closed: tuple[int, str] | None = None
    # The same for access control ingress-nginx applies to the whole server
    # (auth-tls-*, server-snippet): every route of the Ingress's hosts answers.
    host_fail_closed: tuple[int, str] | None = None
    # custom-http-errors: upstream statuses answered by a default backend's error
    # page instead (routing/errors.py); None: the global list (RouteTable) applies.
    custom_http_errors: frozenset[int] | None = None
    # disable-proxy-intercept-errors: the upstream's own answers pass as they are, even
    # with a status custom-http-errors lists (nginx's proxy_intercept_errors off); the
    # error pages still replace ingressd's own answers (502, 503, 504), as nginx's
    # error_page does for its own.
    disable_intercept_errors: bool = False
    # default-backend: a Service name in the Ingress's namespace, as annotated; and
    # (set by the builder) its endpoints, only while it has some, as ingress-nginx's
    # "custom-default-backend-" upstream (controller.go getBackendServers).
    default_backend: str | None = None
    custom_default: Backend | None = None
    # configuration-snippet and server-snippet, translated (policy/snippets.py). The
    # builder gives every route of a host the host's server-snippet: the oldest
    # Ingress's, as ingress-nginx keeps one per server (an empty one when that
    # Ingress's was refused: it still takes the place).
    snippet: SnippetPolicy | None = None
    server_snippet: SnippetPolicy | None = None
    # ConfigMaps of headers (policy/header_maps.py): custom-headers and
    # auth-proxy-set-headers as annotated (namespace or None, name), read at build
    # time; then what the route sets, encoded once: its response headers (the
    # ConfigMap's add-headers, then custom-headers; each replaces the upstream's of
    # that name, an empty value only removes) and its upstream request headers
    # (the ConfigMap's proxy-set-headers).
    custom_headers: tuple[str | None, str] | None = None
    auth_proxy_headers: tuple[str | None, str] | None = None
    response_headers: tuple[tuple[bytes, bytes], ...] = ()
    proxy_set_headers: tuple[tuple[bytes, bytes], ...] = ()
    # The entries of those two ConfigMap keys' maps whose values hold variables
    # ($remote_addr, $http_NAME ...), rendered per request as the snippets' are:
    # more_set_headers (``more``) and proxy_set_header (``upstream``) edits.
    header_templates: SnippetPolicy | None = None
    # enable-opentelemetry and its companions (observe/tracing.py); None: the ConfigMap's.
    tracing: RouteTracing | None = None

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


pickle_by_fields(
    LimitConfig, TextRewrite, ResponseRewrite, CorsPolicy, NextUpstream, AuthRef, BasicAuth,
    Template, ExternalAuth, ProxySSL, UpstreamTLS, ClientAuthRef, ClientAuth, HeaderBlock,
    Canary, Affinity, UpstreamHash, GlobalRateLimit, Mirror, RouteTracing, RoutePolicy,
)  # fmt: skip
