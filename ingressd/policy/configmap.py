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

import ipaddress
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
from ..model.log_format import LogFormat, parse_format
from ..model.policy import (
    DEFAULT_NEXT_UPSTREAM,
    ExternalAuth,
    HeaderBlock,
    IPNetwork,
    Template,
)
from ..model.regex import RegexError, UserRegex, fixed, user_regex
from . import buffering, otel
from .annotations import (
    AnnotationError,
    Verdict,
    auth_service,
    parse_auth_method,
    parse_auth_url,
    parse_buffer_size,
    parse_cache_durations,
    parse_cache_key,
    parse_cidrs,
    parse_cookie_rewrite,
    parse_header_names,
    parse_header_template,
    parse_http_errors,
    parse_http_version,
    parse_load_balance,
    parse_next_upstream,
    parse_query_param,
    parse_rate_kb,
    parse_redirect_from,
    parse_redirect_to,
    parse_size,
    parse_ssl_ciphers,
)
from .header_maps import parse_allowed, parse_global_ref
from .response_rewrite import response_rewrite
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
    # --trusted-proxies decides who is believed, and how (the chain kept, the peer
    # appended), wholly: the keys that say the same are overridden by it together.
    "use-forwarded-headers": "--trusted-proxies",
    "enable-real-ip": "--trusted-proxies",
    "proxy-real-ip-cidr": "--trusted-proxies",
    "compute-full-forwarded-for": "--trusted-proxies",
    "use-proxy-protocol": "--use-proxy-protocol",
}

# proxy-real-ip-cidr's default (config.go defIPCIDR): every IPv4 peer.
DEFAULT_REAL_IP_CIDRS: tuple[IPNetwork, ...] = (ipaddress.ip_network("0.0.0.0/0"),)

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
DENYING: Mapping[str, str] = {}
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
        "how request headers are read",
        ("client-header-buffer-size",),
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
        "how nginx accepts connections: ingressd's --workers processes always share the "
        "ports with SO_REUSEPORT, each accepting what the kernel gives it",
        ("reuse-port", "enable-multi-accept"),
    ),
    (
        "logging: ingressd has its own access log (--access-log)",
        (
            "log-format-stream",
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
            "default-type",
            "service-upstream",
            "relative-redirects",
        ),
    ),
    (
        "ingressd counts global-rate-limit per pod, in the table its workers share; it "
        "uses no memcached",
        (
            "global-rate-limit-memcached-host",
            "global-rate-limit-memcached-port",
            "global-rate-limit-memcached-connect-timeout",
            "global-rate-limit-memcached-max-idle-timeout",
            "global-rate-limit-memcached-pool-size",
        ),
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


def parse_global_url(value: str) -> Template | None:
    """global-auth-url, global-auth-signin: an auth-url; empty (the default) is none."""
    return parse_auth_url(value) if value.strip() else None


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
    return parse_ssl_ciphers(value, _CIPHER_CHARS)


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


MAX_PROXY_PROTOCOL_TIMEOUT = 300.0
_DURATION = fixed(r"^([0-9]{1,9})(ms|s|m)?$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_NGINX_TIME = fixed(r"^([0-9]{1,9})(ms|s|m|h|d)?$")


def parse_log_format(value: str) -> LogFormat:
    """log-format-upstream: text and the nginx variables observe/log_format.py renders."""
    try:
        return parse_format(value)
    except ValueError as exc:
        raise AnnotationError(str(exc)) from None


def parse_redirect_code(value: str) -> int:
    """http-redirect-code: as ingress-nginx validates it, 301, 302, 307 or 308."""
    code = _whole(value, 300, 399, "a redirect status")
    if code not in (301, 302, 307, 308):
        raise AnnotationError(f"{value!r} is not 301, 302, 307 or 308")
    return code


def parse_nginx_time(value: str) -> float:
    """upstream-keepalive-time: an nginx time ("1h", "30m", "90s", "1d"; a bare number
    is seconds), above 0 and at most a week."""
    found = _NGINX_TIME.match(value.strip())
    if found is None:
        raise AnnotationError(f"{value[:100]!r} is not a time like 1h, 30m or 90s")
    seconds = int(found.group(1) or "") * _DURATION_UNITS[found.group(2)]
    if not 0 < seconds <= 7 * 86400:
        raise AnnotationError(f"{value!r} is not above 0 and at most 7d")
    return seconds


def parse_header_name(value: str) -> bytes:
    """forwarded-for-header: one header name, lowercased (nginx's real_ip_header)."""
    v = value.strip()
    if not v or len(v) > 128 or not _TOKEN.match(v):
        raise AnnotationError(f"{value[:100]!r} is not a header name")
    return v.lower().encode("ascii")


def parse_real_ip_cidrs(value: str) -> tuple[IPNetwork, ...]:
    """proxy-real-ip-cidr: comma-separated CIDRs (nginx's set_real_ip_from); at least one."""
    nets = parse_cidr_list(value)
    if not nets:
        raise AnnotationError("no address range given")
    return nets


MAX_SESSION_CACHE = 1024 * 1024 * 1024


def parse_session_cache_size(value: str) -> int:
    """ssl-session-cache-size: nginx's size syntax ("10m"), above 0 and at most 1g."""
    size = parse_size(value)
    if not 0 < size <= MAX_SESSION_CACHE:
        raise AnnotationError(f"{value!r} is not above 0 and at most 1g")
    return size


def parse_duration(value: str) -> float:
    """proxy-protocol-header-timeout: a Go duration as ingress-nginx reads it ("5s",
    "500ms", "1m"; a bare number is seconds), above 0 and at most 5 minutes."""
    found = _DURATION.match(value.strip())
    if found is None:
        raise AnnotationError(f"{value[:100]!r} is not a duration like 5s or 500ms")
    seconds = int(found.group(1) or "") * _DURATION_UNITS[found.group(2)]
    if not 0 < seconds <= MAX_PROXY_PROTOCOL_TIMEOUT:
        raise AnnotationError(f"{value!r} is not above 0 and at most 5m")
    return seconds


@dataclass(frozen=True, slots=True)
class _Key:
    parse: Callable[[str], Any]
    default: str  # ingress-nginx's default, as the ConfigMap would spell it
    what: str  # what ingressd does with it, for check and docs/reference/configmap.md


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
    "proxy-request-buffering": _Key(
        buffering.parse_on_off_option,
        "on",
        "default of the proxy-request-buffering annotation: request bodies read whole "
        "before the upstream is connected",
    ),
    "client-body-buffer-size": _Key(
        buffering.parse_body_buffer_size,
        "8k",
        "default of the client-body-buffer-size annotation: the memory part of a buffered "
        "request body (up to 16m), the rest in a temporary file",
    ),
    "proxy-buffering": _Key(
        buffering.parse_on_off_option,
        "off",
        "default of the proxy-buffering annotation: on, responses are read ahead of a slow "
        "client up to proxy-buffers-number x proxy-buffer-size",
    ),
    "proxy-buffers-number": _Key(
        buffering.parse_buffers_number, "4", "default of the proxy-buffers-number annotation"
    ),
    "proxy-busy-buffers-size": _Key(
        lambda v: buffering.parse_busy_size(v) if v.strip() else 0,
        "",
        "default of the proxy-busy-buffers-size annotation (empty: two buffers, as nginx)",
    ),
    "proxy-max-temp-file-size": _Key(
        buffering.parse_max_temp_file_size,
        "1024m",
        "only 0 is supported: ingressd never writes responses to a temporary file; another "
        "size is reported as not supported",
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
    "client-header-timeout": _Key(
        parse_timeout, "60", "a request head slower than this is cut off (408 in the access log)"
    ),
    "client-body-timeout": _Key(
        parse_timeout, "60", "a request body silent this long is cut off (408 in the access log)"
    ),
    "keep-alive": _Key(
        parse_timeout, "75", "seconds an idle keep-alive client connection stays open"
    ),
    "large-client-header-buffers": _Key(
        parse_header_buffers,
        "4 8k",
        "a request line over SIZE: 414; a head over NUMBER x SIZE: 400 (nginx's 494)",
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
    "proxy-redirect-from": _Key(parse_redirect_from, "off", "default of the annotation"),
    "proxy-redirect-to": _Key(parse_redirect_to, "off", "default of the annotation"),
    "proxy-cookie-domain": _Key(parse_cookie_rewrite, "off", "default of the annotation"),
    "proxy-cookie-path": _Key(parse_cookie_rewrite, "off", "default of the annotation"),
    "proxy-http-version": _Key(parse_http_version, "1.1", "default of the annotation"),
    "disable-proxy-intercept-errors": _Key(
        parse_bool,
        "false",
        "default of the annotation: the upstream's answers pass even with a status "
        "custom-http-errors lists",
    ),
    "limit-rate": _Key(
        parse_rate_kb, "0", "default of the limit-rate annotation (kilobytes per second)"
    ),
    "limit-rate-after": _Key(
        parse_rate_kb, "0", "default of the limit-rate-after annotation (kilobytes)"
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
    "add-headers": _Key(
        parse_global_ref,
        "",
        "namespace/name of a ConfigMap of response headers set on every route (replacing "
        "the upstream's; an empty value removes one), as ingress-nginx's more_set_headers; "
        "see ConfigMaps of headers",
    ),
    "proxy-set-headers": _Key(
        parse_global_ref,
        "",
        "namespace/name of a ConfigMap of request headers set towards every upstream, as "
        "ingress-nginx's proxy_set_header; see ConfigMaps of headers",
    ),
    "global-allowed-response-headers": _Key(
        parse_allowed,
        "",
        "header names (comma-separated) the custom-headers annotation may set; others "
        "make its routes answer 503",
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
    "upstream-keepalive-time": _Key(
        parse_nginx_time,
        "1h",
        "how long one upstream connection is reused, from its connect; the request it "
        "carries then is its last",
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
    "ssl-session-cache": _Key(
        parse_bool,
        "true",
        "the server's cache of TLS sessions, for resumption; off: none is kept (nginx's "
        "ssl_session_cache none, five minutes' timeout)",
    ),
    "ssl-session-cache-size": _Key(
        parse_session_cache_size,
        "10m",
        "its size as nginx counts it (about 4,000 sessions a megabyte), per process",
    ),
    "ssl-session-timeout": _Key(
        parse_nginx_time,
        "10m",
        "how long a session may be resumed; also the session tickets' lifetime hint",
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
    "global-rate-limit-status-code": _Key(
        parse_limit_status, "429", "the status of requests global-rate-limit refuses"
    ),
    "custom-http-errors": _Key(
        parse_error_codes,
        "",
        "statuses (400-599) answered with the default backend's error page on routes whose "
        "Ingress has no custom-http-errors annotation (see Default backend and error pages); "
        "--custom-http-errors given explicitly wins",
    ),
    "use-forwarded-headers": _Key(
        parse_bool,
        "false",
        "peers in proxy-real-ip-cidr are believed: the client is the rightmost address of "
        "their forwarded-for-header that is not one of them, and their X-Forwarded-Proto, "
        "-Port and -Host are passed on (X-Forwarded-Proto: https also counts as HTTPS for "
        "the HTTPS redirect, X-Forwarded-Host is also the upstream's Host); "
        "--trusted-proxies given explicitly wins",
    ),
    "enable-real-ip": _Key(
        parse_bool,
        "false",
        "as use-forwarded-headers for the client's address alone: X-Forwarded-Proto, "
        "-Port and -Host are not believed",
    ),
    "forwarded-for-header": _Key(
        parse_header_name,
        "X-Forwarded-For",
        "the header a believed peer names the client in (with --trusted-proxies too)",
    ),
    "compute-full-forwarded-for": _Key(
        parse_bool,
        "false",
        "with use-forwarded-headers: the upstream's X-Forwarded-For is the peer's chain with "
        "the peer appended; false: the client alone",
    ),
    "proxy-real-ip-cidr": _Key(
        parse_real_ip_cidrs,
        "0.0.0.0/0",
        "the peers use-forwarded-headers and enable-real-ip believe",
    ),
    "use-proxy-protocol": _Key(
        parse_bool,
        "false",
        "the HTTP and HTTPS ports read a PROXY protocol header first (as "
        "--use-proxy-protocol): taken when ingressd starts; a change needs a restart "
        "(reported until then)",
    ),
    "proxy-protocol-header-timeout": _Key(
        parse_duration,
        "5s",
        "how long a connection's PROXY protocol header may take; slower: closed",
    ),
    "server-tokens": _Key(
        parse_bool,
        "false",
        "every response carries Server: ingressd (ingress-nginx's nginx sends its name and "
        "version); false: no Server header at all",
    ),
    "allow-backend-server-header": _Key(
        parse_bool,
        "false",
        "with server-tokens: the upstream's own Server header is passed on (ingressd's where "
        "it sent none); without server-tokens nothing, as in ingress-nginx (#6733)",
    ),
    "generate-request-id": _Key(
        parse_bool,
        "true",
        "a request without X-Request-ID gets one; false: only the client's is passed on, "
        "and a request without one reaches the upstream without it",
    ),
    "proxy-add-original-uri-header": _Key(
        parse_bool, "false", "the upstream gets X-Original-URI: the request URI as received"
    ),
    "http-redirect-code": _Key(
        parse_redirect_code, "308", "the status of the HTTPS redirect: 301, 302, 307 or 308"
    ),
    "use-http2": _Key(
        parse_bool,
        "true",
        "HTTP/2 offered by ALPN on the HTTPS port (new handshakes); --no-http2 wins",
    ),
    "retry-non-idempotent": _Key(
        parse_bool,
        "false",
        "every route's proxy-next-upstream also retries requests that are not idempotent "
        "(POST, LOCK, PATCH), its annotation or not",
    ),
    "disable-access-log": _Key(
        parse_bool, "false", "no access log lines at all (--access-log off does the same)"
    ),
    "enable-access-log-for-default-backend": _Key(
        parse_bool,
        "false",
        "requests no Ingress rule takes (served by --default-backend-service, or ingressd's "
        "own 404) are logged; by default left out, as in ingress-nginx",
    ),
    "log-format-upstream": _Key(
        parse_log_format,
        "ingressd's own json or plain line (--access-log)",
        "the access-log line, as nginx's log_format with the variables listed under "
        "Metrics and logs; an unknown variable makes it invalid (the default line is used)",
    ),
    "log-format-escape-json": _Key(
        parse_bool, "false", "log-format-upstream's values escaped for JSON (escape=json)"
    ),
    "log-format-escape-none": _Key(
        parse_bool, "false", "log-format-upstream's values not escaped (escape=none)"
    ),
    "allow-snippet-annotations": _Key(
        parse_bool, "false", "snippet annotations are refused whatever its value"
    ),
    # Global external authentication (template.go shouldApplyGlobalAuth): every route
    # without an auth-url of its own and without enable-global-auth "false" asks it.
    "global-auth-url": _Key(
        parse_global_url,
        "",
        "every route asks this auth service first, as an auth-url annotation would "
        "(an Ingress's own auth-url wins; enable-global-auth: false opts out); invalid: "
        "every route answers 503",
    ),
    "global-auth-method": _Key(parse_auth_method, "GET", "as auth-method"),
    "global-auth-signin": _Key(parse_global_url, "", "as auth-signin"),
    "global-auth-signin-redirect-param": _Key(
        parse_query_param, "rd", "as auth-signin-redirect-param"
    ),
    "global-auth-response-headers": _Key(parse_header_names, "", "as auth-response-headers"),
    "global-auth-request-redirect": _Key(parse_header_template, "", "as auth-request-redirect"),
    "global-auth-cache-key": _Key(parse_cache_key, "", "as auth-cache-key"),
    "global-auth-cache-duration": _Key(
        parse_cache_durations, "200 202 401 5m", "as auth-cache-duration"
    ),
    "global-auth-always-set-cookie": _Key(parse_bool, "false", "as auth-always-set-cookie"),
    "no-auth-locations": _Key(
        parse_locations,
        "/.well-known/acme-challenge",
        "Ingress paths starting with one of these get no authentication at all (auth-url, "
        "global-auth-url, Basic), as in ingress-nginx's template",
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
# The global-auth-* keys: with global-auth-url given, an invalid one denies every route
# (503) rather than ask the auth service otherwise than configured; ingress-nginx only
# logs "Global auth location denied" and, for global-auth-url, serves without it.
GLOBAL_AUTH_KEYS = frozenset(k for k in SUPPORTED if k.startswith("global-auth-"))

# key -> ProxySettings field(s) it sets
_PROXY_FIELDS: Mapping[str, str] = {
    "proxy-body-size": "max_body_size",
    "proxy-buffer-size": "proxy_buffer_size",
    "proxy-request-buffering": "request_buffering",
    "client-body-buffer-size": "client_body_buffer_size",
    "proxy-buffering": "proxy_buffering",
    "proxy-buffers-number": "proxy_buffers_number",
    "proxy-busy-buffers-size": "proxy_busy_buffers_size",
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
    "upstream-keepalive-time": "upstream_keepalive_time",
    "limit-conn-status-code": "limit_conn_status",
    "global-rate-limit-status-code": "global_limit_status",
    "forwarded-for-header": "real_ip_header",
    "proxy-protocol-header-timeout": "proxy_protocol_timeout",
    "server-tokens": "server_tokens",
    "allow-backend-server-header": "backend_server_header",
    "generate-request-id": "generate_request_id",
    "proxy-add-original-uri-header": "original_uri_header",
    "disable-access-log": "access_log_off",
    "enable-access-log-for-default-backend": "log_default_backend",
}
# key -> RoutePolicy field it is the default of
_ROUTE_FIELDS: Mapping[str, str] = {
    "ssl-redirect": "ssl_redirect",
    "force-ssl-redirect": "force_ssl_redirect",
    "load-balance": "load_balance",
    "proxy-http-version": "proxy_http_version",
    "disable-proxy-intercept-errors": "disable_intercept_errors",
    "limit-rate": "limit_rate",
    "limit-rate-after": "limit_rate_after",
    "proxy-redirect-from": "proxy_redirect_from",
    "proxy-redirect-to": "proxy_redirect_to",
    "proxy-cookie-domain": "proxy_cookie_domain",
    "proxy-cookie-path": "proxy_cookie_path",
}
_REWRITE_FIELDS = (
    "proxy_redirect_from",
    "proxy_redirect_to",
    "proxy_cookie_domain",
    "proxy_cookie_path",
)
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
        global_auth = key in GLOBAL_AUTH_KEYS and bool(str(data.get("global-auth-url", "")).strip())
        if verdict.status == "invalid" and (key in ACCESS_KEYS or global_auth):
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
    config = _config(values, messages)
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
    except buffering.NotApplied as exc:
        reason = f"key {key}={shown!r} is not supported by ingressd and is ignored: {exc}"
        return Verdict(key, shown, "unsupported", reason), None, None
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
    if key == "use-proxy-protocol":
        note = "taken when ingressd starts: a change needs a restart"
        return Verdict(key, shown, "supported", note), parsed, None
    return Verdict(key, shown, "supported", ""), parsed, None


def _config(values: Mapping[str, Any], messages: list[str] | None = None) -> GlobalConfig:
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
    if values.get("use-forwarded-headers") or values.get("enable-real-ip"):
        # nginx.tmpl: real_ip_header and set_real_ip_from; X-Forwarded-For is the client
        # ($remote_addr) unless compute-full-forwarded-for, under use-forwarded-headers.
        forwarded = bool(values.get("use-forwarded-headers"))
        proxy["trusted_proxies"] = values.get("proxy-real-ip-cidr", DEFAULT_REAL_IP_CIDRS)
        proxy["forwarded_headers"] = forwarded
        proxy["full_forwarded_for"] = forwarded and bool(values.get("compute-full-forwarded-for"))
        proxy["proxy_protocol_is_client"] = True
    if "log-format-upstream" in values:
        # nginx.tmpl: escape=json if log-format-escape-json, else escape=none if -none
        escape = "default"
        if values.get("log-format-escape-json"):
            escape = "json"
        elif values.get("log-format-escape-none"):
            escape = "none"
        proxy["log_format"] = replace(values["log-format-upstream"], escape=escape)
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
    if any(field in route for field in _REWRITE_FIELDS):
        texts = [str(route.get(field, "off")) for field in _REWRITE_FIELDS]
        rewrite, errors = response_rewrite(*texts)
        route["response_rewrite"] = rewrite
        if messages is not None:
            messages += [f"ConfigMap: {error}" for error in errors]
    global_auth = _global_auth(values)
    if global_auth is not None:
        route["external_auth"] = global_auth
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
        add_headers=values.get("add-headers"),
        proxy_set_headers=values.get("proxy-set-headers"),
        allowed_response_headers=values.get(
            "global-allowed-response-headers", defaults.allowed_response_headers
        ),
        no_auth_locations=values.get("no-auth-locations", defaults.no_auth_locations),
        use_proxy_protocol=values.get("use-proxy-protocol"),
        http_redirect_code=values.get("http-redirect-code", defaults.http_redirect_code),
        retry_non_idempotent=values.get("retry-non-idempotent", defaults.retry_non_idempotent),
        tracing=_tracing(values),
        proxy=tuple(sorted(proxy.items())),
        route_defaults=tuple(sorted(route.items())),
    )


def _global_auth(values: Mapping[str, Any]) -> ExternalAuth | None:
    """global-auth-url and its keys (internal/ingress/controller/template/configmap.go),
    as the auth-* annotations of every route. No keep-alive: ingress-nginx never gives
    the global auth service an upstream block (template.go buildAuthLocationConfig)."""
    url = values.get("global-auth-url")
    if url is None:
        return None
    cache_key = values.get("global-auth-cache-key")
    return auth_service(values, "global-", cache_key, bool(cache_key))


def _tracing(values: Mapping[str, Any]) -> TracingConfig:
    changes = {_TRACING_FIELDS[k]: v for k, v in values.items() if k in _TRACING_FIELDS}
    return replace(DEFAULT_TRACING, **changes) if changes else DEFAULT_TRACING


def _tls(values: Mapping[str, Any]) -> TLSParams:
    keys = (
        "ssl-protocols",
        "ssl-ciphers",
        "ssl-session-tickets",
        "use-http2",
        "ssl-session-cache",
        "ssl-session-cache-size",
        "ssl-session-timeout",
    )
    if not any(k in values for k in keys):
        return DEFAULT_TLS
    low, high = values.get("ssl-protocols", (DEFAULT_TLS.min_version, DEFAULT_TLS.max_version))
    return TLSParams(
        low,
        high,
        values.get("ssl-ciphers", DEFAULT_TLS.ciphers),
        values.get("ssl-session-tickets", DEFAULT_TLS.session_tickets),
        values.get("use-http2", DEFAULT_TLS.http2),
        values.get("ssl-session-cache", DEFAULT_TLS.session_cache),
        values.get("ssl-session-cache-size", DEFAULT_TLS.session_cache_bytes),
        max(1, round(values.get("ssl-session-timeout", DEFAULT_TLS.session_timeout))),
    )


def classify(data: Any, explicit: Mapping[str, str] | None = None) -> list[Verdict]:
    """Every key, by name: supported, unsupported, refused, invalid or overridden."""
    return list(read_configmap(data, explicit).verdicts)


def keys_table() -> Iterator[tuple[str, str, str, str]]:
    """(key, status, behaviour, default) rows, for docs/reference/configmap.md."""
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
