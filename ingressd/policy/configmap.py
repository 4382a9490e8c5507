"""ingress-nginx's controller ConfigMap (``--configmap NS/NAME``), parsed like annotations.

Every key gets a verdict, as an annotation does (``annotations.Verdict``):
``supported`` (typed, validated, applied), ``invalid`` (reported; ingress-nginx's
default applies), ``unsupported`` (reported, never silently ignored; access
control ingressd cannot honour makes every route answer 403), ``refused``
(the snippet keys: raw configuration is never injected) or ``overridden``
(a command-line flag given explicitly wins over the key).

The defaults are ingress-nginx v1.15.1's
(``internal/ingress/controller/config/config.go`` NewDefault; where the docs
differ, the code). The result is one frozen ``GlobalConfig`` the builder reads.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any, Final

from ..model.globals import (
    DEFAULT_NO_TLS_REDIRECT_LOCATIONS,
    DEFAULT_TLS,
    DEFAULT_TRACING,
    NAME_INVALID,
    NAME_KEEP_ALL,
    NAME_UNDERSCORE,
    GlobalConfig,
    TLSParams,
    TracingConfig,
)
from ..model.policy import DEFAULT_NEXT_UPSTREAM, HeaderBlock, IPNetwork
from ..model.regex import RegexError, UserRegex, fixed, user_regex
from . import otel
from .annotations import (
    AnnotationError,
    Verdict,
    parse_buffer_size,
    parse_cidrs,
    parse_http_errors,
    parse_load_balance,
    parse_next_upstream,
    parse_size,
)
from .snippet_access import access_directives

# Bounds on what an outsider's ConfigMap may hold: a key's value, the keys read.
MAX_VALUE = 4096
MAX_KEYS = 1024
MAX_LOCATIONS = 64
MAX_TIMEOUT = 86400  # a day, in seconds
MAX_BODY_SIZE = 1024**4  # 1 TiB; 0 stays "unlimited"
MAX_HSTS_AGE = 2**31 - 1
MAX_HEADER_BUFFER = 64 * 1024
MAX_HEADER_BUFFERS = 64

# (flag, ProxySettings fields) of each key a command-line flag also sets.
FLAGS: Mapping[str, str] = {
    "proxy-body-size": "--proxy-body-size",
    "proxy-buffer-size": "--proxy-buffer-size",
    "proxy-connect-timeout": "--proxy-connect-timeout",
    "proxy-read-timeout": "--proxy-read-timeout",
    "proxy-send-timeout": "--proxy-send-timeout",
    "client-header-timeout": "--client-header-timeout",
    "client-body-timeout": "--client-body-timeout",
    "keep-alive": "--keepalive-timeout",
}

_PATH_CONTROL = fixed(r"[\x00-\x20\x7f,]")

# Raw configuration: refused, as the snippet annotations are.
REFUSED = frozenset(
    {
        "main-snippet",
        "http-snippet",
        "server-snippet",
        "location-snippet",
        "stream-snippet",
        "global-auth-snippet",
        "modsecurity-snippet",
    }
)
# Keys naming a file inside ingress-nginx's image: refused, with the reason.
REFUSED_PATHS: Mapping[str, str] = {
    "opentelemetry-config": "a path to the nginx module's own configuration file in "
    "ingress-nginx's image; ingressd reads the otlp-* and otel-* keys instead",
}
# Refused snippets that apply to HTTP servers or locations: one holding access
# control makes every route answer 403 (snippet_access.py), as the annotations do.
_SNIPPETS_ON_ROUTES = frozenset({"http-snippet", "server-snippet", "location-snippet"})

# Keys that narrow who may reach every route, which ingressd does not implement:
# served without them the routes would be open where ingress-nginx guards them,
# so every route answers 403 instead (fail closed); the text says what they check.
DENYING: Mapping[str, str] = {
    "global-auth-url": "sends every request to an external authentication service first",
}
# Keys that narrow access: an invalid value denies every route (503, as an invalid
# access annotation does) rather than serve open what the key was meant to guard.
ACCESS_KEYS = frozenset(
    {
        "whitelist-source-range",
        "denylist-source-range",
        "block-cidrs",
        "block-user-agents",
        "block-referers",
    }
)
_INVALID_ACCESS: Final = 503

# ingress-nginx v1.15.1 keys ingressd does not implement, and why serving without
# them opens nothing (docs/user-guide/nginx-configuration/configmap.md).
_IGNORED_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "requests the default backend serves are logged like any other (ingress-nginx "
        "leaves them out by default)",
        ("enable-access-log-for-default-backend",),
    ),
    (
        "headers added to or removed from requests and responses",
        (
            "add-headers",
            "proxy-set-headers",
            "allow-backend-server-header",
            "proxy-add-original-uri-header",
            "generate-request-id",
            "global-allowed-response-headers",
        ),
    ),
    (
        "how request headers are read",
        ("client-header-buffer-size",),
    ),
    (
        "who the client is (X-Forwarded-For, PROXY protocol): use --trusted-proxies and "
        "--use-proxy-protocol",
        (
            "use-forwarded-headers",
            "forwarded-for-header",
            "compute-full-forwarded-for",
            "proxy-real-ip-cidr",
            "enable-real-ip",
            "use-proxy-protocol",
            "proxy-protocol-header-timeout",
        ),
    ),
    (
        "TLS session cache parameters: Python's ssl module sets none of them (OpenSSL's "
        "per-process cache serves)",
        ("ssl-session-cache", "ssl-session-cache-size", "ssl-session-timeout"),
    ),
    (
        "other TLS parameters ingressd does not implement",
        (
            "ssl-session-ticket-key",
            "ssl-buffer-size",
            "ssl-ecdh-curve",
            "ssl-dh-param",
            "ssl-early-data",
            "ssl-reject-handshake",
            "enable-ocsp",
            "proxy-ssl-location-only",
        ),
    ),
    (
        "limits count per client address (the connection's, as by default)",
        ("limit-conn-zone-variable",),
    ),
    (
        "connection reuse",
        ("upstream-keepalive-time", "reuse-port", "enable-multi-accept"),
    ),
    (
        "logging: ingressd has its own access log (--access-log)",
        (
            "log-format-upstream",
            "log-format-stream",
            "log-format-escape-json",
            "log-format-escape-none",
            "disable-access-log",
            "access-log-path",
            "access-log-params",
            "http-access-log-path",
            "stream-access-log-path",
            "error-log-path",
            "error-log-level",
            "enable-syslog",
            "syslog-host",
            "syslog-port",
            "debug-connections",
        ),
    ),
    (
        "compression",
        (
            "use-gzip",
            "gzip-level",
            "gzip-min-length",
            "gzip-types",
            "gzip-disable",
            "enable-brotli",
            "brotli-level",
            "brotli-min-length",
            "brotli-types",
        ),
    ),
    (
        "buffering",
        (
            "client-body-buffer-size",
            "proxy-buffering",
            "proxy-buffers-number",
            "proxy-busy-buffers-size",
            "proxy-max-temp-file-size",
            "proxy-request-buffering",
            "grpc-buffer-size-kb",
            "enable-aio-write",
        ),
    ),
    (
        "nginx's own tuning, which ingressd does not have",
        (
            "worker-processes",
            "worker-cpu-affinity",
            "worker-shutdown-timeout",
            "max-worker-connections",
            "max-worker-open-files",
            "map-hash-bucket-size",
            "server-name-hash-max-size",
            "server-name-hash-bucket-size",
            "proxy-headers-hash-max-size",
            "proxy-headers-hash-bucket-size",
            "variables-hash-bucket-size",
            "variables-hash-max-size",
            "lua-shared-dicts",
            "enable-serial-reloads",
            "bind-address",
            "disable-ipv6",
            "disable-ipv6-dns",
            "http2-max-field-size",
            "http2-max-header-size",
            "http2-max-requests",
            "http2-max-concurrent-streams",
            "use-http2",
        ),
    ),
    (
        "nginx's status page, which ingressd does not have (its metrics: /metrics on the "
        "admin port)",
        ("nginx-status-ipv4-whitelist", "nginx-status-ipv6-whitelist"),
    ),
    (
        "ModSecurity runs DetectionOnly unless modsecurity-snippet (refused) turns it on",
        ("enable-modsecurity", "enable-owasp-modsecurity-crs"),
    ),
    (
        "GeoIP variables",
        ("use-geoip", "use-geoip2", "geoip2-autoreload-in-minutes"),
    ),
    (
        "the other global-auth-* keys do nothing without global-auth-url",
        (
            "global-auth-method",
            "global-auth-signin",
            "global-auth-signin-redirect-param",
            "global-auth-response-headers",
            "global-auth-request-redirect",
            "global-auth-cache-key",
            "global-auth-cache-duration",
            "global-auth-always-set-cookie",
            "no-auth-locations",
        ),
    ),
    (
        "TCP/UDP services: use --proxy-stream-timeout and --proxy-stream-responses",
        (
            "proxy-stream-timeout",
            "proxy-stream-next-upstream",
            "proxy-stream-next-upstream-timeout",
            "proxy-stream-next-upstream-tries",
            "proxy-stream-responses",
        ),
    ),
    (
        "other per-location defaults ingressd does not implement",
        (
            "limit-rate",
            "limit-rate-after",
            "proxy-cookie-domain",
            "proxy-cookie-path",
            "proxy-redirect-from",
            "proxy-redirect-to",
            "proxy-http-version",
            "http-redirect-code",
            "default-type",
            "service-upstream",
            "relative-redirects",
            "retry-non-idempotent",
        ),
    ),
    (
        "ingressd never sends a Server header (as ingress-nginx with its default, false)",
        ("server-tokens",),
    ),
    (
        "annotation validation: ingressd validates every annotation it reads and refuses snippets",
        (
            "annotations-risk-level",
            "annotation-value-word-blocklist",
            "strict-validate-path-type",
            "allow-cross-namespace-resources",
        ),
    ),
)
IGNORED: Mapping[str, str] = {key: why for why, keys in _IGNORED_GROUPS for key in keys}


def parse_bool(value: str) -> bool:
    """As Go's strconv.ParseBool, which ingress-nginx's ConfigMap decoding uses."""
    v = value.strip()
    if v in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if v in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise AnnotationError(f'expected "true" or "false", got {value!r}')


def _whole(value: str, low: int, high: int, what: str) -> int:
    v = value.strip()
    if not (v.isascii() and v.isdigit()) or not low <= int(v) <= high:
        raise AnnotationError(f"{value!r} is not {what} from {low} to {high}")
    return int(v)


def _bounded(low: int, high: int, what: str) -> Callable[[str], int]:
    def parse(value: str) -> int:
        return _whole(value, low, high, what)

    return parse


def parse_timeout(value: str) -> float:
    """Whole seconds from 1 to a day (ingress-nginx's timeouts are ints of seconds)."""
    return float(_whole(value, 1, MAX_TIMEOUT, "a whole number of seconds"))


def parse_next_timeout(value: str) -> float:
    """proxy-next-upstream-timeout: whole seconds, 0 meaning no limit."""
    return float(_whole(value, 0, MAX_TIMEOUT, "a whole number of seconds"))


def parse_tries(value: str) -> int:
    return _whole(value, 0, 100, "a number of tries")


def parse_hsts_max_age(value: str) -> int:
    return _whole(value, 0, MAX_HSTS_AGE, "a whole number of seconds")


def parse_body_size(value: str) -> int:
    size = parse_size(value)
    if size > MAX_BODY_SIZE:
        raise AnnotationError(f"{value!r} is more than 1024g")
    return size


def parse_locations(value: str) -> tuple[str, ...]:
    """no-tls-redirect-locations: comma-separated path prefixes (may be empty)."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    if len(items) > MAX_LOCATIONS:
        raise AnnotationError(f"more than {MAX_LOCATIONS} locations")
    for item in items:
        if not item.startswith("/") or _PATH_CONTROL.search(item) or len(item) > 256:
            raise AnnotationError(f"{item[:100]!r} is not a path starting with /")
    return tuple(items)


def parse_header_buffers(value: str) -> tuple[int, int]:
    """large-client-header-buffers: "NUMBER SIZE", as nginx's directive ("4 8k")."""
    parts = value.split()
    if len(parts) != 2:
        raise AnnotationError(f"{value!r} is not NUMBER SIZE (like 4 8k)")
    number = _whole(parts[0], 1, MAX_HEADER_BUFFERS, "a number of buffers")
    size = parse_size(parts[1])
    if not 1024 <= size <= MAX_HEADER_BUFFER:
        raise AnnotationError(f"{parts[1]!r} is not a buffer size from 1k to 64k")
    return number, size


def parse_cidr_list(value: str) -> tuple[IPNetwork, ...]:
    """Comma-separated CIDRs; empty is no range at all (the default)."""
    if not value.strip():
        return ()
    nets = parse_cidrs(value)
    if len(nets) > 4096:
        raise AnnotationError("more than 4096 ranges")
    return nets


MAX_BLOCK_ENTRIES = 256
MAX_HIDDEN = 64
_TOKEN = fixed(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def parse_block_entries(value: str) -> tuple[frozenset[bytes], tuple[UserRegex, ...]]:
    """block-user-agents, block-referers: comma-separated nginx map entries.

    A string matches the whole header ignoring case; ``~re`` and ``~*re`` are
    regular expressions found anywhere (``~*`` ignoring case), run on RE2."""
    exact: set[bytes] = set()
    patterns: list[UserRegex] = []
    items = [v.strip() for v in value.split(",") if v.strip()]
    if len(items) > MAX_BLOCK_ENTRIES:
        raise AnnotationError(f"more than {MAX_BLOCK_ENTRIES} entries")
    for item in items:
        if len(item) > 1024:
            raise AnnotationError(f"{item[:50]!r}... is longer than 1024 characters")
        if item.startswith("~"):
            folds = item.startswith("~*")
            pattern = item[2:] if folds else item[1:]
            try:
                patterns.append(user_regex(pattern, ignore_case=folds))
            except RegexError as exc:
                raise AnnotationError(f"{item[:100]!r}: {exc}") from None
        else:
            exact.add(item.encode("latin-1").lower())
    return frozenset(exact), tuple(patterns)


_VERSIONS = {"TLSv1.2": 2, "TLSv1.3": 3}
_CIPHER_CHARS = fixed(r"^[A-Za-z0-9:+!@=._-]+$")


def parse_protocols(value: str) -> tuple[str, str]:
    """ssl-protocols: "TLSv1.2 TLSv1.3"; (lowest, highest) of those listed."""
    names = value.split()
    if not names or len(names) > 8:
        raise AnnotationError(f"{value[:100]!r} is not a list of TLS versions")
    for name in names:
        if name not in _VERSIONS:
            raise AnnotationError(f"{name[:20]!r}: ingressd serves TLSv1.2 and TLSv1.3 only")
    ordered = sorted(set(names), key=_VERSIONS.__getitem__)
    return ordered[0], ordered[-1]


def parse_ciphers(value: str) -> str:
    """ssl-ciphers: an OpenSSL cipher list OpenSSL accepts (it is tried)."""
    v = value.strip()
    if not v or len(v) > 2048 or not _CIPHER_CHARS.match(v):
        raise AnnotationError(f"{value[:100]!r} is not an OpenSSL cipher list")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(v)
    except ssl.SSLError:
        raise AnnotationError(f"{value[:100]!r}: OpenSSL matches no cipher") from None
    return v


def parse_log_uris(value: str) -> frozenset[bytes]:
    """skip-access-log-urls: comma-separated request URIs, matched whole and ignoring
    case (nginx's map on $request_uri: string keys are lowercased)."""
    uris = [v.strip() for v in value.split(",") if v.strip()]
    if len(uris) > MAX_LOCATIONS:
        raise AnnotationError(f"more than {MAX_LOCATIONS} URIs")
    for uri in uris:
        if not uri.startswith("/") or _PATH_CONTROL.search(uri) or len(uri) > 1024:
            raise AnnotationError(f"{uri[:100]!r} is not a request URI starting with /")
    return frozenset(u.lower().encode("latin-1") for u in uris)


def parse_error_codes(value: str) -> frozenset[int]:
    """custom-http-errors: the annotation's syntax; empty (the default) lists none."""
    return parse_http_errors(value) if value.strip() else frozenset()


def parse_limit_status(value: str) -> int:
    """As nginx's limit_req_status and limit_conn_status: a status from 400 to 599."""
    status = _whole(value, 400, 599, "a status code")
    try:
        HTTPStatus(status)
    except ValueError:
        raise AnnotationError(f"{value!r} is not a known HTTP status") from None
    return status


def parse_hidden_headers(value: str) -> frozenset[bytes]:
    """hide-headers: comma-separated header names (nginx's proxy_hide_header)."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    if len(names) > MAX_HIDDEN:
        raise AnnotationError(f"more than {MAX_HIDDEN} headers")
    for name in names:
        if len(name) > 256 or not _TOKEN.match(name):
            raise AnnotationError(f"{name[:100]!r} is not a header name")
    return frozenset(n.lower().encode() for n in names)


@dataclass(frozen=True, slots=True)
class _Key:
    parse: Callable[[str], Any]
    default: str  # ingress-nginx's default, as the ConfigMap would spell it
    what: str  # what ingressd does with it, for check and the README


SUPPORTED: Mapping[str, _Key] = {
    "hsts": _Key(
        parse_bool,
        "true",
        "Strict-Transport-Security on HTTPS responses of hosts with a certificate of their own",
    ),
    "hsts-max-age": _Key(parse_hsts_max_age, "31536000", "its max-age"),
    "hsts-include-subdomains": _Key(parse_bool, "true", "adds includeSubDomains"),
    "hsts-preload": _Key(parse_bool, "false", "adds preload"),
    "ssl-redirect": _Key(parse_bool, "true", "default of the ssl-redirect annotation"),
    "force-ssl-redirect": _Key(parse_bool, "false", "default of the force-ssl-redirect annotation"),
    "no-tls-redirect-locations": _Key(
        parse_locations,
        ",".join(DEFAULT_NO_TLS_REDIRECT_LOCATIONS),
        "Ingress paths starting with one of these are never redirected to HTTPS",
    ),
    "proxy-body-size": _Key(parse_body_size, "1m", "default of the proxy-body-size annotation"),
    "proxy-buffer-size": _Key(
        parse_buffer_size, "4k", "default of the proxy-buffer-size annotation"
    ),
    "proxy-connect-timeout": _Key(
        parse_timeout, "5", "seconds to connect to an upstream (504); default of the annotation"
    ),
    "proxy-read-timeout": _Key(
        parse_timeout, "60", "seconds an upstream may stay silent (504); default of the annotation"
    ),
    "proxy-send-timeout": _Key(
        parse_timeout,
        "60",
        "seconds an upstream may refuse the body (504); default of the annotation",
    ),
    "client-header-timeout": _Key(parse_timeout, "60", "a request head slower than this: 408"),
    "client-body-timeout": _Key(parse_timeout, "60", "a request body silent this long: 408"),
    "keep-alive": _Key(
        parse_timeout, "75", "seconds an idle keep-alive client connection stays open"
    ),
    "large-client-header-buffers": _Key(
        parse_header_buffers,
        "4 8k",
        "a request line over SIZE: 414; a head over NUMBER x SIZE: 431",
    ),
    "proxy-next-upstream": _Key(
        parse_next_upstream, "error timeout", "default of the proxy-next-upstream annotation"
    ),
    "proxy-next-upstream-timeout": _Key(
        parse_next_timeout, "0", "default of the proxy-next-upstream-timeout annotation"
    ),
    "proxy-next-upstream-tries": _Key(
        parse_tries, "3", "default of the proxy-next-upstream-tries annotation"
    ),
    "load-balance": _Key(
        parse_load_balance, "round_robin", "default of the load-balance annotation (ewma too)"
    ),
    "whitelist-source-range": _Key(
        parse_cidr_list, "", "default of the allowlist-source-range annotation"
    ),
    "denylist-source-range": _Key(
        parse_cidr_list, "", "default of the denylist-source-range annotation"
    ),
    "block-cidrs": _Key(
        parse_cidr_list,
        "",
        "clients in these ranges get 403 on every route; an Ingress's denylist-source-range "
        "replaces them, as nginx's location-level deny replaces the http-level one",
    ),
    "block-user-agents": _Key(
        parse_block_entries,
        "",
        "requests whose User-Agent matches an entry (a string, whole and ignoring case; "
        "~ or ~* and an RE2 regular expression) get 403 on every route",
    ),
    "block-referers": _Key(parse_block_entries, "", "the same for the Referer header"),
    "hide-headers": _Key(
        parse_hidden_headers,
        "",
        "upstream response headers never passed to clients (nginx's proxy_hide_header)",
    ),
    "keep-alive-requests": _Key(
        _bounded(1, 1_000_000, "a number of requests"),
        "1000",
        "requests per HTTP/1.1 client connection, the last answered with Connection: close "
        "(without the key ingressd sets no limit)",
    ),
    "upstream-keepalive-connections": _Key(
        _bounded(0, 100_000, "a number of connections"),
        "320",
        "idle upstream connections kept per endpoint (nginx: per worker over all upstreams; "
        "without the key 64 per endpoint); 0: none kept",
    ),
    "upstream-keepalive-timeout": _Key(
        parse_timeout, "60", "seconds an idle upstream connection is kept"
    ),
    "upstream-keepalive-requests": _Key(
        _bounded(1, 1_000_000, "a number of requests"),
        "10000",
        "requests one upstream connection carries before it is closed",
    ),
    "ssl-protocols": _Key(
        parse_protocols,
        "TLSv1.2 TLSv1.3",
        "TLS versions of the HTTPS port (TLSv1.2, TLSv1.3; older ones are refused as invalid)",
    ),
    "ssl-ciphers": _Key(
        parse_ciphers,
        "ingressd's own: ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!MD5:!DSS",
        "OpenSSL cipher list for TLS 1.2 (ingress-nginx's default list differs: DHE too)",
    ),
    "ssl-session-tickets": _Key(
        parse_bool, "false", "TLS session tickets (resumption by session id stays on)"
    ),
    "enable-underscores-in-headers": _Key(
        parse_bool,
        "false",
        "request headers whose name has a _ are passed on (by default dropped, as nginx)",
    ),
    "ignore-invalid-headers": _Key(
        parse_bool,
        "true",
        "request headers whose name is not letters, digits and - (nor _ when allowed) are "
        "dropped; false passes them on",
    ),
    "skip-access-log-urls": _Key(
        parse_log_uris,
        "",
        "request URIs (path and query as sent, whole, ignoring case) never written to the "
        "access log; metrics still count them",
    ),
    "limit-req-status-code": _Key(
        parse_limit_status, "503", "the status of requests limit-rps or limit-rpm refuses"
    ),
    "limit-conn-status-code": _Key(
        parse_limit_status, "503", "the status of requests limit-connections refuses"
    ),
    "custom-http-errors": _Key(
        parse_error_codes,
        "",
        "statuses (400-599) answered with the default backend's error page on routes whose "
        "Ingress has no custom-http-errors annotation (see Default backend and error pages); "
        "--custom-http-errors given explicitly wins",
    ),
    "allow-snippet-annotations": _Key(
        parse_bool, "false", "snippet annotations are refused whatever its value"
    ),
    # OpenTelemetry (observe/tracing.py; README "Tracing")
    "enable-opentelemetry": _Key(
        parse_bool,
        "false",
        "a server span per request, exported by OTLP/HTTP; an Ingress's enable-opentelemetry "
        "annotation wins (needs the tracing extra)",
    ),
    "otlp-collector-host": _Key(
        otel.parse_collector_host, "", "the OTLP collector's host; empty: nothing is exported"
    ),
    "otlp-collector-port": _Key(
        otel.parse_port,
        "4318",
        "its OTLP/HTTP port (ingress-nginx's default, 4317, is OTLP/gRPC's)",
    ),
    "otel-service-name": _Key(
        otel.parse_service_name, "nginx", "the spans' service.name (ingress-nginx's default)"
    ),
    "otel-sampler": _Key(
        otel.parse_sampler, "AlwaysOn", "AlwaysOn, AlwaysOff or TraceIdRatioBased"
    ),
    "otel-sampler-ratio": _Key(
        otel.parse_ratio, "0.01", "the share of traces TraceIdRatioBased samples (0 to 1)"
    ),
    "otel-sampler-parent-based": _Key(
        parse_bool,
        "true",
        "a trusted incoming traceparent's sampled flag decides, the sampler only for new traces",
    ),
    "otel-max-queuesize": _Key(
        _bounded(1, 1_000_000, "a number of spans"),
        "2048",
        "spans waiting for export per process; past it spans are dropped and counted",
    ),
    "otel-schedule-delay-millis": _Key(
        _bounded(1, 3_600_000, "a number of milliseconds"),
        "5000",
        "how long spans wait to be exported in a batch",
    ),
    "otel-max-export-batch-size": _Key(
        _bounded(1, 1_000_000, "a number of spans"), "512", "spans per export request"
    ),
    "opentelemetry-trust-incoming-span": _Key(
        parse_bool,
        "true",
        "a client's W3C traceparent is continued; false starts a new trace and does not "
        "forward the client's",
    ),
    "opentelemetry-operation-name": _Key(
        otel.parse_operation_name,
        "",
        "the span name, with $request_method, $uri, $host, $scheme, $namespace, $ingress_name, "
        "$service_name, $service_port, $location_path; empty: METHOD and the Ingress path",
    ),
}

# key -> TracingConfig field it sets
_TRACING_FIELDS: Mapping[str, str] = {
    "enable-opentelemetry": "enabled",
    "otlp-collector-host": "collector_host",
    "otlp-collector-port": "collector_port",
    "otel-service-name": "service_name",
    "otel-sampler": "sampler",
    "otel-sampler-ratio": "ratio",
    "otel-sampler-parent-based": "parent_based",
    "otel-max-queuesize": "max_queue_size",
    "otel-schedule-delay-millis": "schedule_delay_ms",
    "otel-max-export-batch-size": "max_export_batch_size",
    "opentelemetry-trust-incoming-span": "trust_incoming_span",
    "opentelemetry-operation-name": "operation_name",
}

# key -> ProxySettings field(s) it sets
_PROXY_FIELDS: Mapping[str, str] = {
    "proxy-body-size": "max_body_size",
    "proxy-buffer-size": "proxy_buffer_size",
    "proxy-connect-timeout": "connect_timeout",
    "proxy-read-timeout": "read_timeout",
    "proxy-send-timeout": "send_timeout",
    "client-header-timeout": "client_header_timeout",
    "client-body-timeout": "client_body_timeout",
    "keep-alive": "keepalive_timeout",
    "hide-headers": "hide_headers",
    "skip-access-log-urls": "skip_log_uris",
    "limit-req-status-code": "limit_req_status",
    "keep-alive-requests": "keepalive_requests",
    "upstream-keepalive-connections": "upstream_keepalive_connections",
    "upstream-keepalive-timeout": "upstream_keepalive_timeout",
    "upstream-keepalive-requests": "upstream_keepalive_requests",
    "limit-conn-status-code": "limit_conn_status",
}
# key -> RoutePolicy field it is the default of
_ROUTE_FIELDS: Mapping[str, str] = {
    "ssl-redirect": "ssl_redirect",
    "force-ssl-redirect": "force_ssl_redirect",
    "load-balance": "load_balance",
}
_DENIED: Final = 403


@dataclass(frozen=True, slots=True)
class Reading:
    """What a ConfigMap came to: the settings, and how each key was treated."""

    config: GlobalConfig
    verdicts: tuple[Verdict, ...] = ()
    # One message per key that is not simply supported (invalid, unsupported,
    # refused), as the builder reports them.
    messages: tuple[str, ...] = ()


DEFAULT_READING = Reading(GlobalConfig())


def read_configmap(data: Any, explicit: Mapping[str, str] | None = None) -> Reading:
    """The settings of a ConfigMap's ``data``; ``explicit``: key -> the flag given for it.

    A bad value is reported and ingress-nginx's default used; the other keys apply.
    """
    if data is None:
        return DEFAULT_READING
    if not isinstance(data, dict):
        return Reading(GlobalConfig(), (), ("data is not a map; ingress-nginx's defaults apply",))
    verdicts: list[Verdict] = []
    messages: list[str] = []
    values: dict[str, Any] = {}
    denials: list[str] = []
    invalid_access: list[str] = []
    items = sorted(data.items(), key=lambda kv: str(kv[0]))
    if len(items) > MAX_KEYS:
        messages.append(f"more than {MAX_KEYS} keys: only the first {MAX_KEYS} are read")
        items = items[:MAX_KEYS]
    for raw_key, raw_value in items:
        key = str(raw_key)[:253]
        value = raw_value if isinstance(raw_value, str) else str(raw_value)
        verdict, parsed, denial = _judge(key, value, explicit or {})
        if verdict.status == "invalid" and key in ACCESS_KEYS:
            reason = f"{verdict.reason[: verdict.reason.rfind(';')]}; every route answers 503"
            verdict = verdict._replace(reason=reason + " until it is fixed")
            invalid_access.append(f"invalid {key} in the controller ConfigMap")
        verdicts.append(verdict)
        if verdict.status == "supported":
            values[key] = parsed
        elif verdict.status != "overridden":
            messages.append(verdict.reason)
        if denial is not None:
            denials.append(denial)
    config = _config(values)
    tracing = config.tracing
    if tracing.enabled and not tracing.collector_host:
        messages.append(
            "key enable-opentelemetry is true but otlp-collector-host is empty: "
            "no spans are exported"
        )
    if tracing.collector_host and tracing.collector_port == 4317:
        # What ingress-nginx ConfigMaps usually say: its module spoke OTLP/gRPC.
        messages.append(
            "key otlp-collector-port is 4317, OTLP/gRPC's port (ingress-nginx's exporter "
            "spoke gRPC); ingressd exports OTLP/HTTP: give the collector's HTTP receiver "
            "(4318 by default)"
        )
    if invalid_access:
        config = replace(config, fail_closed=(_INVALID_ACCESS, "; ".join(invalid_access)))
    elif denials:
        config = replace(config, fail_closed=(_DENIED, "; ".join(denials)))
    return Reading(config, tuple(verdicts), tuple(messages))


def _judge(key: str, value: str, explicit: Mapping[str, str]) -> tuple[Verdict, Any, str | None]:
    shown = value if len(value) <= 200 else value[:200] + "..."
    if key in REFUSED:
        reason = f"key {key} is refused: raw proxy configuration is not supported"
        directives = access_directives(value[:65536]) if key in _SNIPPETS_ON_ROUTES else ()
        if directives:
            reason += (
                f"; it holds access control ({', '.join(directives)}): every route answers "
                "403 rather than serve without it"
            )
            return Verdict(key, shown, "refused", reason), None, f"{key} holds access control"
        return Verdict(key, shown, "refused", reason), None, None
    if key in REFUSED_PATHS:
        reason = f"key {key} is refused: it is {REFUSED_PATHS[key]}"
        return Verdict(key, shown, "refused", reason), None, None
    if key in DENYING:
        if not value.strip():
            return Verdict(key, shown, "supported", ""), None, None  # empty: off, as the default
        reason = (
            f"key {key} is not supported by ingressd: it {DENYING[key]}; every route answers "
            "403 rather than serve without it"
        )
        return Verdict(key, shown, "unsupported", reason), None, f"{key} is not supported"
    spec = SUPPORTED.get(key)
    if spec is None:
        why = IGNORED.get(key)
        if why is None:
            reason = f"key {key} is not an ingress-nginx setting ingressd knows; it is ignored"
        else:
            reason = f"key {key} is not supported by ingressd and is ignored: {why}"
        return Verdict(key, shown, "unsupported", reason), None, None
    if len(value) > MAX_VALUE:
        reason = (
            f"key {key} is invalid: longer than {MAX_VALUE} characters; "
            f"the default {spec.default!r} applies"
        )
        return Verdict(key, shown, "invalid", reason), None, None
    try:
        parsed = spec.parse(value)
    except (ValueError, UnicodeError, OverflowError, TypeError) as exc:
        reason = f"key {key}={shown!r} is invalid: {exc}; the default {spec.default!r} applies"
        return Verdict(key, shown, "invalid", reason), None, None
    flag = explicit.get(key)
    if flag is not None:
        reason = f"key {key} is overridden by {flag}, given on the command line"
        return Verdict(key, shown, "overridden", reason), None, None
    if key == "enable-opentelemetry" and parsed:
        why = otel.missing()
        if why is not None:
            reason = f"key {key}=true is not supported here: {why}"
            return Verdict(key, shown, "unsupported", reason), None, None
    if key == "allow-snippet-annotations" and parsed:
        reason = (
            f"key {key}=true is not supported: ingressd refuses snippet annotations "
            "whatever it says"
        )
        return Verdict(key, shown, "unsupported", reason), None, None
    return Verdict(key, shown, "supported", ""), parsed, None


def _config(values: Mapping[str, Any]) -> GlobalConfig:
    if not values:
        return GlobalConfig()
    proxy: dict[str, object] = {
        _PROXY_FIELDS[k]: v for k, v in values.items() if k in _PROXY_FIELDS
    }
    if "large-client-header-buffers" in values:
        number, size = values["large-client-header-buffers"]
        # nginx: the request line must fit one buffer, the whole head all of them.
        proxy["max_request_line"] = size
        proxy["max_header_bytes"] = number * size
        proxy["http2_max_header_list_size"] = number * size
    if "enable-underscores-in-headers" in values or "ignore-invalid-headers" in values:
        if not values.get("ignore-invalid-headers", True):
            proxy["drop_names_from"] = NAME_KEEP_ALL
        elif values.get("enable-underscores-in-headers", False):
            proxy["drop_names_from"] = NAME_INVALID
        else:
            proxy["drop_names_from"] = NAME_UNDERSCORE
    route: dict[str, object] = {
        _ROUTE_FIELDS[k]: v for k, v in values.items() if k in _ROUTE_FIELDS
    }
    retry = ("proxy-next-upstream", "proxy-next-upstream-tries", "proxy-next-upstream-timeout")
    if any(k in values for k in retry):
        base = values.get("proxy-next-upstream", DEFAULT_NEXT_UPSTREAM)
        route["next_upstream"] = replace(
            base,
            tries=values.get("proxy-next-upstream-tries", base.tries),
            time_limit=values.get("proxy-next-upstream-timeout", base.time_limit),
        )
    if values.get("whitelist-source-range"):
        route["allow_source"] = values["whitelist-source-range"]
    deny = (*values.get("block-cidrs", ()), *values.get("denylist-source-range", ()))
    if deny:
        route["deny_source"] = deny
    blocked = tuple(
        HeaderBlock(header, *values[key])
        for key, header in (("block-user-agents", b"user-agent"), ("block-referers", b"referer"))
        if key in values and any(values[key])
    )
    if blocked:
        route["blocked"] = blocked
    defaults = GlobalConfig()
    return GlobalConfig(
        hsts=values.get("hsts", defaults.hsts),
        hsts_max_age=values.get("hsts-max-age", defaults.hsts_max_age),
        hsts_include_subdomains=values.get(
            "hsts-include-subdomains", defaults.hsts_include_subdomains
        ),
        hsts_preload=values.get("hsts-preload", defaults.hsts_preload),
        no_tls_redirect_locations=values.get(
            "no-tls-redirect-locations", defaults.no_tls_redirect_locations
        ),
        tls=_tls(values),
        custom_http_errors=values.get("custom-http-errors", defaults.custom_http_errors),
        tracing=_tracing(values),
        proxy=tuple(sorted(proxy.items())),
        route_defaults=tuple(sorted(route.items())),
    )


def _tracing(values: Mapping[str, Any]) -> TracingConfig:
    changes = {_TRACING_FIELDS[k]: v for k, v in values.items() if k in _TRACING_FIELDS}
    return replace(DEFAULT_TRACING, **changes) if changes else DEFAULT_TRACING


def _tls(values: Mapping[str, Any]) -> TLSParams:
    if not any(k in values for k in ("ssl-protocols", "ssl-ciphers", "ssl-session-tickets")):
        return DEFAULT_TLS
    low, high = values.get("ssl-protocols", (DEFAULT_TLS.min_version, DEFAULT_TLS.max_version))
    return TLSParams(
        low,
        high,
        values.get("ssl-ciphers", DEFAULT_TLS.ciphers),
        values.get("ssl-session-tickets", DEFAULT_TLS.session_tickets),
    )


def classify(data: Any, explicit: Mapping[str, str] | None = None) -> list[Verdict]:
    """Every key, by name: supported, unsupported, refused, invalid or overridden."""
    return list(read_configmap(data, explicit).verdicts)


def keys_table() -> Iterator[tuple[str, str, str, str]]:
    """(key, status, behaviour, default) rows, for the README table and its test."""
    for key, spec in SUPPORTED.items():
        yield key, "supported", spec.what, spec.default
    for key in sorted(REFUSED):
        yield key, "refused", "raw configuration is never injected", ""
    for key, why in REFUSED_PATHS.items():
        yield key, "refused", f"it is {why}", ""
    for key, what in DENYING.items():
        yield key, "unsupported (denies)", f"it {what}: every route answers 403", ""
    for key, why in sorted(IGNORED.items()):
        yield key, "unsupported", why, ""
