"""The controller ConfigMap's settings, typed: what every route and host shares.

Plain data, as ``policy/configmap.py`` parses it from ingress-nginx's
controller ConfigMap (``--configmap NS/NAME``). The builder resolves it into
per-route and per-table constants (the route policies' defaults, the HSTS
header bytes), and the controller into the proxy's settings, so nothing here
is looked at per request beyond an attribute read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .pickling import pickle_by_fields

# ingress-nginx v1.15.1's defaults (internal/ingress/controller/config/config.go NewDefault)
DEFAULT_HSTS_MAX_AGE = 31536000
# Classes of request header names (proxy/http.py name_class): ProxySettings.drop_names_from
# drops a line whose name is of that class or above. NAME_KEEP_ALL drops none.
NAME_VALID, NAME_UNDERSCORE, NAME_INVALID, NAME_KEEP_ALL = 0, 1, 2, 3
DEFAULT_NO_TLS_REDIRECT_LOCATIONS = ("/.well-known/acme-challenge",)
DEFAULT_NO_AUTH_LOCATIONS = ("/.well-known/acme-challenge",)
# ingressd's own cipher list for TLS 1.2 (TLS 1.3's suites are OpenSSL's): ECDHE and
# AEAD only, what HTTP/2 requires (RFC 9113 9.2).
DEFAULT_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!MD5:!DSS"


@dataclass(frozen=True, slots=True)
class TLSParams:
    """How the HTTPS port speaks TLS: ssl-protocols, ssl-ciphers, ssl-session-*."""

    min_version: str = "TLSv1.2"  # ssl.TLSVersion member names
    max_version: str = "TLSv1.3"
    ciphers: str = DEFAULT_CIPHERS
    session_tickets: bool = False  # ingress-nginx's ssl-session-tickets default
    http2: bool = True  # use-http2: h2 offered by ALPN (--no-http2 wins)
    # ssl-session-cache, -cache-size (bytes, as nginx counts its shared cache) and
    # -timeout (seconds): ingress-nginx's defaults, "true", "10m" and "10m".
    session_cache: bool = True
    session_cache_bytes: int = 10 * 1024 * 1024
    session_timeout: int = 600


DEFAULT_TLS = TLSParams()

# OTLP/HTTP's port: ingressd exports OTLP over HTTP (protobuf), where ingress-nginx's
# nginx module spoke OTLP/gRPC, whose port (4317) is ingress-nginx's default.
DEFAULT_OTLP_HTTP_PORT = 4318
SAMPLERS = ("AlwaysOn", "AlwaysOff", "TraceIdRatioBased")  # ingress-nginx's otel-sampler values


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """OpenTelemetry tracing: the ConfigMap's enable-opentelemetry, otlp-*, otel-* and
    opentelemetry-* keys, with ingress-nginx v1.15.1's defaults (config.go NewDefault;
    controller/nginx.go's otelTmpl says what each feeds), except the port (above)."""

    enabled: bool = False  # enable-opentelemetry: every route, unless its Ingress says not
    collector_host: str = ""  # otlp-collector-host; empty: nothing is exported
    collector_port: int = DEFAULT_OTLP_HTTP_PORT
    service_name: str = "nginx"  # otel-service-name: ingress-nginx's default, kept
    sampler: str = "AlwaysOn"  # otel-sampler
    ratio: float = 0.01  # otel-sampler-ratio, for TraceIdRatioBased
    parent_based: bool = True  # otel-sampler-parent-based: a trusted parent's decision wins
    max_queue_size: int = 2048  # otel-max-queuesize: spans waiting for export; more are dropped
    schedule_delay_ms: int = 5000  # otel-schedule-delay-millis
    max_export_batch_size: int = 512  # otel-max-export-batch-size
    trust_incoming_span: bool = True  # opentelemetry-trust-incoming-span
    # opentelemetry-operation-name: the span name, literal text and variables
    # alternating (policy/otel.py); () for the default "METHOD route".
    operation_name: tuple[str, ...] = ()


DEFAULT_TRACING = TracingConfig()


@dataclass(frozen=True, slots=True)
class GlobalConfig:
    """The supported keys of the controller ConfigMap, each with ingress-nginx's default."""

    # HSTS (lua_ingress.lua header(): on TLS requests for a host with a certificate of its own)
    hsts: bool = True
    hsts_max_age: int = DEFAULT_HSTS_MAX_AGE
    hsts_include_subdomains: bool = True
    hsts_preload: bool = False
    # Locations whose Ingress path starts with one of these are never redirected to
    # HTTPS (template.go isLocationInLocationList: force_no_ssl_redirect).
    no_tls_redirect_locations: tuple[str, ...] = DEFAULT_NO_TLS_REDIRECT_LOCATIONS
    # Locations whose Ingress path starts with one of these get no authentication
    # (nginx.tmpl/template.go: isLocationInLocationList NoAuthLocations around the
    # auth_request, sign-in and Basic auth directives).
    no_auth_locations: tuple[str, ...] = DEFAULT_NO_AUTH_LOCATIONS
    # ProxySettings field -> value, for the keys the ConfigMap sets that are the proxy's
    # own (proxy-body-size, the timeouts, keep-alive ...) and no explicit flag overrides.
    # An annotation of a route still wins where one exists.
    proxy: tuple[tuple[str, object], ...] = ()
    # RoutePolicy field -> value: the defaults the annotations of each Ingress override
    # (ssl-redirect, force-ssl-redirect, proxy-next-upstream ...).
    route_defaults: tuple[tuple[str, object], ...] = ()
    tls: TLSParams = DEFAULT_TLS
    # custom-http-errors: statuses answered with the default backend's error page on
    # routes whose Ingress has no custom-http-errors annotation (routing/errors.py).
    custom_http_errors: frozenset[int] = frozenset()
    # add-headers and proxy-set-headers: (namespace, name) of the ConfigMap of headers
    # each names (policy/header_maps.py; the builder reads them); None: none.
    add_headers: tuple[str, str] | None = None
    proxy_set_headers: tuple[str, str] | None = None
    # global-allowed-response-headers: the names custom-headers may set, lowercase.
    allowed_response_headers: frozenset[str] = frozenset()
    # use-proxy-protocol as the ConfigMap says it (None: not set, or --use-proxy-protocol
    # given): the listeners take it when they start; a change needs a restart.
    use_proxy_protocol: bool | None = None
    # http-redirect-code: the status of the HTTPS redirect (301, 302, 307 or 308).
    http_redirect_code: int = 308
    # retry-non-idempotent: every route's proxy-next-upstream retries POST, LOCK and
    # PATCH too (template.go buildNextUpstream adds non_idempotent).
    retry_non_idempotent: bool = False
    tracing: TracingConfig = DEFAULT_TRACING
    # Set when a global access-control key cannot be honoured: every route answers
    # (status, reason) rather than serve without it.
    fail_closed: tuple[int, str] | None = None
    # The Strict-Transport-Security value, encoded once (None: hsts off).
    hsts_header: bytes | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.hsts:
            return
        value = f"max-age={self.hsts_max_age}"
        if self.hsts_include_subdomains:
            value += "; includeSubDomains"
        if self.hsts_preload:
            value += "; preload"
        object.__setattr__(self, "hsts_header", value.encode("ascii"))


DEFAULT_GLOBALS = GlobalConfig()


pickle_by_fields(TLSParams, TracingConfig, GlobalConfig)
