"""Ingress annotations parsed into typed, validated values.

Both the ``nginx.ingress.kubernetes.io/`` prefix (so existing Ingresses keep
working) and ``ingressd.io/`` are read; when both carry the same annotation the
``ingressd.io/`` one wins. A value that does not parse is reported and the
annotation ignored — never passed through as raw configuration.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any, Final, Literal, NamedTuple, TypeVar

from ..model.policy import (
    DEFAULT_BURST_MULTIPLIER,
    DEFAULT_HEADERS,
    DEFAULT_MAX_AGE,
    DEFAULT_METHODS,
    DEFAULT_POLICY,
    Affinity,
    AuthRef,
    Canary,
    ClientAuthRef,
    CorsPolicy,
    ExternalAuth,
    GlobalRateLimit,
    IPNetwork,
    LimitConfig,
    Mirror,
    ProxySSL,
    RoutePolicy,
    RouteTracing,
    Template,
    UpstreamHash,
)
from ..model.regex import FixedRegex, RegexError, RegexMatch, UserRegex, fixed, user_regex
from ..model.snippet import SnippetPolicy
from ..model.variables import REQUEST_ID_VARIABLES, template
from . import buffering
from . import mirror as mirror_values
from .auth_cache import DEFAULT_DURATIONS, parse_durations
from .chash import parse_key as _parse_hash_key
from .cors import parse_origins, parse_token_list
from .ext_auth import METHODS as AUTH_METHODS
from .ext_auth import parse_key_template, parse_template, parse_url_template
from .otel import missing as missing_tracing
from .otel import parse_operation_name as _parse_operation_name
from .response_rewrite import parse_cookie_rule, parse_redirect_word
from .response_rewrite import response_rewrite as _response_rewrite
from .retry import parse_conditions
from .snippet_access import access_directives, modsecurity_blocks
from .snippets import TRANSLATED, translate
from .upstream_tls import PROTOCOLS, UNSUPPORTED_PROTOCOLS, parse_ssl_protocols

PREFIXES = ("nginx.ingress.kubernetes.io/", "ingressd.io/")

# Raw-config injection is refused on purpose: it is how ingress-nginx got its
# worst CVEs, and ingressd has no config language to inject into. A refused
# snippet holding access control denies instead (snippet_access.py).
# configuration-snippet and server-snippet are translated where they do what
# ingressd can do itself (snippets.py, TRANSLATED), and refused otherwise.
RAW_CONFIG = frozenset({"auth-snippet", "stream-snippet"})

# ingress-nginx annotations that cannot apply to ingressd, refused with the reason
# (status "refused"). Serving without them opens nothing and changes nothing a
# client can rely on, so `ingressd check` lists them without failing the check;
# modsecurity-snippet still denies where its rules would block (_access_check).
NOT_APPLICABLE: Mapping[str, str] = {
    "http2-push-preload": "HTTP/2 server push is gone: browsers dropped it (Chrome 106, "
    "Firefox 132) and nginx 1.25.1 removed http2_push_preload; Link headers pass through",
    "fastcgi-index": "ingressd does not speak FastCGI (backend-protocol FCGI answers 502)",
    "fastcgi-params-configmap": "ingressd does not speak FastCGI (backend-protocol FCGI "
    "answers 502)",
    "enable-rewrite-log": "nginx's rewrite_log traces its rewrite module, which ingressd does "
    "not have: rewrite-target's result is the path the upstream gets",
    "enable-modsecurity": "ingressd embeds no ModSecurity; ingress-nginx's modsecurity.conf "
    "runs DetectionOnly, which logs and blocks nothing",
    "enable-owasp-core-rules": "ingressd embeds no ModSecurity; the OWASP rules run "
    "DetectionOnly unless modsecurity-snippet turns the engine on",
    "modsecurity-transaction-id": "ingressd embeds no ModSecurity (the id names its audit log "
    "entries); X-Request-ID already ties a request to its log line",
    "modsecurity-snippet": "ingressd embeds no ModSecurity; rules that would block "
    "(SecRuleEngine On) deny its routes instead",
}
REFUSED = RAW_CONFIG | frozenset(NOT_APPLICABLE)

# ingress-nginx v1.15.1 annotations ingressd does not implement, one by one
# (docs/user-guide/nginx-configuration/annotations.md and the parsers of
# internal/ingress/annotations). DENYING narrows who may access a route: served
# without it the route would be open where ingress-nginx guards it, so its
# routes answer 403 instead (fail closed); the text says what it checks.
# IGNORED never narrows access, so serving without it is safe; the text says
# why. Both are reported; docs/reference/annotations.md lists them.
DENYING: Mapping[str, str] = {}
IGNORED: Mapping[str, str] = {
    "ssl-passthrough": "only with serve --enable-ssl-passthrough (as in ingress-nginx); "
    "without it ingressd terminates TLS, so an upstream expecting the client's TLS refuses "
    "the requests",
}
# Unsupported values of these annotations would narrow access, so they deny too.
_DENYING_VALUES = frozenset({"auth-type"})
_DENIED_BY_ANNOTATION: Final = 403  # access control that cannot be honoured

# Validators run on annotation values, so on outsider input: on RE2 (regex.fixed),
# linear whatever the value. _DOLLAR_REF is the exception: it runs per request on
# the Ingress's own rewrite target, and "\$(\d)" is linear on any engine.
_DOLLAR_REF = re.compile(r"\$(\d)")
_CONTROL = fixed(r"[\x00-\x20\x7f]")
_HEADER_CONTROL = fixed(r"[\x00-\x08\x0a-\x1f\x7f]")  # all but tab and space


class AnnotationError(ValueError):
    pass


# What ingress-nginx answers for a location it denies (nginx.tmpl: "if $location.Denied"
# ... "return 503"), which it does when an access annotation cannot be read.
_DENIED = 503


T = TypeVar("T")


def parse_bool(value: str) -> bool:
    v = value.strip().lower()
    if v == "true":
        return True
    if v == "false":
        return False
    raise AnnotationError(f'expected "true" or "false", got {value!r}')


def parse_rewrite_target(value: str) -> str:
    if not value or _CONTROL.search(value):
        raise AnnotationError(f"rewrite target {value!r} is empty or contains whitespace")
    if not value.startswith("/"):
        raise AnnotationError(f"rewrite target {value!r} must start with /")
    return value


_SIZE = fixed(r"^(\d+)([kKmMgG]?)$")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_HOST_PORT = fixed(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:\d{1,5})?$")
# On Python's re this was ^https?://[^\s/?#]+[^\s]*$: quadratic on a long value
# with a space in it (20,000 characters: 1.2 s; 40,000: 4.9 s). The same language.
_URL = fixed(r"^https?://[^\s/?#][^\s]*$", ignore_case=True)


def parse_size(value: str) -> int:
    """nginx size syntax: ``8k``, ``1m``, ``2g`` or bytes; ``0`` means unlimited."""
    m = _SIZE.match(value.strip())
    if not m:
        raise AnnotationError(f"{value!r} is not a size like 512k, 8m or 1g")
    number, unit = m.group(1) or "", m.group(2) or ""  # both always take part
    return int(number) * _SIZE_UNITS[unit.lower()]


# Upper bound of proxy-buffer-size: the response head ingressd holds per request.
MAX_BUFFER_SIZE = 1024 * 1024


def parse_buffer_size(value: str) -> int:
    """proxy-buffer-size: an nginx size from 1 byte to 1m (the response head must fit)."""
    size = parse_size(value)
    if not 0 < size <= MAX_BUFFER_SIZE:
        raise AnnotationError(f"{value!r} is not a buffer size from 1 byte to 1m")
    return size


def parse_seconds(value: str) -> float:
    """Whole seconds, as ingress-nginx's proxy-*-timeout annotations take them."""
    v = value.strip()
    if not v.isdigit() or int(v) == 0:
        raise AnnotationError(f"{value!r} is not a positive whole number of seconds")
    return float(v)


def parse_path(value: str) -> str:
    if not value.startswith("/") or _CONTROL.search(value):
        raise AnnotationError(f"{value!r} must be a path starting with / without spaces")
    return value


def parse_url(value: str) -> str:
    value = value.strip()
    if not _URL.match(value) or _CONTROL.search(value):
        raise AnnotationError(f"{value!r} is not an absolute http(s) URL")
    return value


def _variables_in(value: str, request_id: bool = False) -> str:
    """``value`` when each of its nginx variables is one ingressd renders. nginx
    evaluates variables in what ingress-nginx writes these annotations into
    (``return CODE URL``, ``proxy_set_header X-Forwarded-Prefix "..."``), so
    ingressd renders them per request (model/variables.py); one it cannot render
    makes the value invalid rather than be served as a literal ``$name``.
    ``request_id``: $req_id may be used (ingressd knows the id once it proxies,
    not when it answers a redirect)."""
    if "$" in value:
        try:
            parts = template(value)
        except ValueError as exc:
            raise AnnotationError(f"{value[:200]!r}: {exc}") from None
        if not request_id and any(p in REQUEST_ID_VARIABLES for p in parts[1::2]):
            raise AnnotationError(f"{value[:200]!r}: the request id is not known in a redirect")
    return value


def parse_redirect_url(value: str) -> str:
    """permanent-redirect, temporal-redirect: an absolute http(s) URL, maybe with
    variables (nginx.tmpl: ``return {{ Redirect.Code }} {{ Redirect.URL }};``)."""
    return _variables_in(parse_url(value))


def parse_app_root(value: str) -> str:
    """app-root: a path, maybe with variables (nginx.tmpl: ``return 302
    $scheme://$http_host{{ AppRoot }};``; rewrite/main.go's validator,
    RegexPathWithCapture, admits "$")."""
    return _variables_in(parse_path(value))


def parse_forwarded_prefix(value: str) -> bytes:
    """x-forwarded-prefix: nginx.tmpl's ``proxy_set_header X-Forwarded-Prefix "..."``
    evaluates variables too."""
    return parse_header_value(_variables_in(value, request_id=True))


_HOST_TEXT = fixed(r"^[A-Za-z0-9.:-]*$")


def parse_upstream_vhost(value: str) -> bytes:
    """upstream-vhost: a host name (and port), or one made of nginx variables
    (``$host``, ``${arg_tenant}.internal``): nginx.tmpl writes it into
    ``proxy_set_header Host "..."``, and ingress-nginx's validator
    (ValidateServerName) admits "$", "{" and "}"."""
    value = value.strip()
    if "$" not in value:
        return parse_host(value)
    try:
        parts = template(value)
    except ValueError as exc:
        raise AnnotationError(f"{value[:200]!r}: {exc}") from None
    if not all(_HOST_TEXT.match(text) for text in parts[::2]):
        raise AnnotationError(f"{value[:200]!r} is not a host name made of nginx variables")
    return value.encode()


def parse_redirect_code(value: str) -> int:
    v = value.strip()
    if not v.isdigit() or not 300 <= int(v) <= 308:
        raise AnnotationError(f"{value!r} is not a redirect status code (300-308)")
    return int(v)


def parse_header_value(value: str) -> bytes:
    if not value.strip() or _HEADER_CONTROL.search(value):
        raise AnnotationError(f"{value!r} is empty or contains control characters")
    return value.encode("latin-1", errors="strict")


def parse_host(value: str) -> bytes:
    value = value.strip()
    if not _HOST_PORT.match(value):
        raise AnnotationError(f"{value!r} is not a host name (with an optional :port)")
    return value.encode()


def parse_cidrs(value: str) -> tuple[IPNetwork, ...]:
    """Comma-separated CIDRs or single addresses (as nginx's allow/deny take them)."""
    nets = []
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise AnnotationError(f"{item!r} is not an IP address or CIDR range") from None
    if not nets:
        raise AnnotationError("no address range given")
    return tuple(nets)


def parse_positive_int(value: str) -> int:
    v = value.strip()
    if not v.isdigit():
        raise AnnotationError(f"{value!r} is not a whole number")
    return int(v)


def parse_limit(value: str) -> int:
    """limit-rps, -rpm, -connections, -burst-multiplier: a whole number from 1."""
    v = value.strip()
    if not (v.isascii() and v.isdigit()) or int(v) == 0:
        raise AnnotationError(f"{value!r} is not a whole number greater than 0")
    return int(v)


# What an invalid limit-* value leaves in force, appended to its message.
_LIMIT_FALLBACK = {
    "limit-rps": "; the Ingress is served without this limit",
    "limit-rpm": "; the Ingress is served without this limit",
    "limit-connections": "; the Ingress is served without this limit",
    "limit-burst-multiplier": f"; the default multiplier {DEFAULT_BURST_MULTIPLIER} applies",
    "limit-allowlist": "; no client is exempt from the limits",
    "limit-whitelist": "; no client is exempt from the limits",
}


def _limit_config(values: Mapping[str, Any]) -> LimitConfig | None:
    """nginx limit_req/limit_conn per client address, from the limit-* annotations."""
    rps, rpm, conns = (values.get(f"limit-{k}") for k in ("rps", "rpm", "connections"))
    if rps is None and rpm is None and conns is None:
        return None
    return LimitConfig(
        rps=rps,
        rpm=rpm,
        connections=conns,
        burst_multiplier=values.get("limit-burst-multiplier", DEFAULT_BURST_MULTIPLIER),
        # limit-allowlist replaces the older limit-whitelist; it wins if both are set.
        allowlist=values.get("limit-allowlist", values.get("limit-whitelist", ())),
    )


def _reported(parse: Callable[[str], T]) -> Callable[[str], T]:
    """A parser of a feature module (which raises ValueError) as an annotation parser."""

    def run(value: str) -> T:
        try:
            return parse(value)
        except buffering.NotApplied as exc:
            raise UnsupportedValue(str(exc)) from None
        except ValueError as exc:
            raise AnnotationError(str(exc)) from None

    return run


def _mirror_body(value: str) -> bool:
    """mirror-request-body: "off" sends no body; ingress-nginx takes anything else as "on"
    (an invalid value is reported here, and "on" applies)."""
    v = value.strip()
    if v not in ("on", "off"):
        raise AnnotationError(f'expected "on" or "off", got {value!r}; "on" applies')
    return v == "on"


def parse_operation_name(value: str) -> tuple[str, ...]:
    try:
        return _parse_operation_name(value)
    except ValueError as exc:
        raise AnnotationError(str(exc)) from None


def _cors_origins(value: str) -> tuple[str, ...]:
    try:
        return parse_origins(value)
    except ValueError as exc:
        raise AnnotationError(str(exc)) from None


def _cors_tokens(value: str) -> str:
    try:
        return parse_token_list(value)
    except ValueError as exc:
        raise AnnotationError(str(exc)) from None


# RFC 9110 token: header names, and cookie names (RFC 6265)
_TOKEN = fixed(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_DOMAIN = fixed(
    r"^\.?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)


def parse_header_name(value: str) -> bytes:
    """A header name, lowercased for matching."""
    v = value.strip()
    if not _TOKEN.match(v):
        raise AnnotationError(f"{value!r} is not a header name")
    return v.lower().encode()


def parse_cookie_name(value: str) -> str:
    v = value.strip()
    if not _TOKEN.match(v):
        raise AnnotationError(f"{value!r} is not a cookie name")
    return v


def parse_regex(value: str) -> UserRegex:
    """canary-by-header-pattern: searched in the header value, case-sensitively (ngx.re.match)."""
    if not value:
        raise AnnotationError("the regular expression is empty")
    try:
        return user_regex(value, ignore_case=False)
    except RegexError as exc:
        raise AnnotationError(f"not a regular expression RE2 can run: {exc}") from None


def parse_weight_total(value: str) -> int:
    total = parse_positive_int(value)
    if total == 0:
        raise AnnotationError("the total weight must be at least 1")
    return total


def parse_cookie_path(value: str) -> str:
    if ";" in value:
        raise AnnotationError(f"{value!r} must not contain ';'")
    return parse_path(value)


def parse_cookie_domain(value: str) -> str:
    v = value.strip()
    if not _DOMAIN.match(v):
        raise AnnotationError(f"{value!r} is not a domain name")
    return v


def _one_of(*options: str) -> Callable[[str], str]:
    """A parser taking one of ``options``, case-insensitively, in its canonical spelling."""

    def parse(value: str) -> str:
        for option in options:
            if value.strip().lower() == option.lower():
                return option
        raise AnnotationError(f"{value!r} must be one of {', '.join(options)}")

    return parse


class UnsupportedValue(AnnotationError):
    """A value ingress-nginx accepts that ingressd does not implement yet."""


def parse_backend_protocol(value: str) -> str:
    """HTTP, HTTPS, AUTO_HTTP, GRPC or GRPCS, any case; FCGI and AJP are not spoken."""
    v = value.strip().upper()
    if v not in PROTOCOLS:
        raise AnnotationError(
            f"{value!r} is not one of {', '.join(PROTOCOLS)}; HTTP is used, as in ingress-nginx"
        )
    if v in UNSUPPORTED_PROTOCOLS:
        raise UnsupportedValue(f"protocol {v} is not supported by ingressd yet")
    return v


LOAD_BALANCERS = ("round_robin", "ewma")
# ingress-nginx's other balancers, not implemented: round_robin serves instead.
UNSUPPORTED_BALANCERS = ("chash", "chashsubset", "sticky_balanced", "sticky_persistent")


def parse_load_balance(value: str) -> str:
    """round_robin or ewma; ingress-nginx's other balancers are reported, round_robin used."""
    v = value.strip().lower()
    if v in LOAD_BALANCERS:
        return v
    if v in UNSUPPORTED_BALANCERS:
        raise UnsupportedValue(
            f"load balancer {v} is not supported by ingressd yet; round_robin is used"
        )
    raise AnnotationError(
        f"{value!r} is not one of {', '.join(LOAD_BALANCERS)}; round_robin is used"
    )


_K8S_NAME = fixed(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SERVER_NAME = fixed(
    r"^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9])?)*\.?$"
)


def parse_secret_ref(value: str) -> tuple[str | None, str]:
    """``namespace/name``, or ``name`` for the Ingress's own namespace."""
    parts = value.strip().split("/")
    if len(parts) > 2 or not all(len(p) <= 253 and _K8S_NAME.match(p) for p in parts):
        raise AnnotationError(f"{value!r} is not a Secret reference like namespace/name")
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def parse_configmap_ref(value: str) -> tuple[str | None, str]:
    """``namespace/name`` or ``name`` (the Ingress's namespace) of a ConfigMap
    (custom-headers, auth-proxy-set-headers: policy/header_maps.py reads it)."""
    try:
        return parse_secret_ref(value)
    except AnnotationError:
        raise AnnotationError(
            f"{value!r} is not a ConfigMap reference like namespace/name"
        ) from None


def parse_on_off(value: str) -> bool:
    v = value.strip()
    if v not in ("on", "off"):
        raise AnnotationError(f'expected "on" or "off", got {value!r}')
    return v == "on"


def parse_verify_depth(value: str) -> int:
    v = value.strip()
    if not (v.isascii() and v.isdigit()) or int(v) == 0:
        raise AnnotationError(f"{value!r} is not a whole number from 1; 1 is used")
    return int(v)


def parse_server_name(value: str) -> str:
    """A host name or IP address (nginx variables such as $host are not expanded)."""
    v = value.strip()
    try:
        return str(ipaddress.ip_address(v.strip("[]")))
    except ValueError:
        pass
    if len(v) > 253 or not _SERVER_NAME.match(v):
        raise AnnotationError(f"{value!r} is not a host name or IP address")
    return v.lower().rstrip(".")


# proxy-ssl-* annotations read only beside proxy-ssl-secret, as in ingress-nginx.
_PROXY_SSL_OPTIONS = (
    "proxy-ssl-verify",
    "proxy-ssl-verify-depth",
    "proxy-ssl-name",
    "proxy-ssl-server-name",
    "proxy-ssl-ciphers",
    "proxy-ssl-protocols",
)


def _proxy_ssl(
    values: Mapping[str, Any], annotations: Mapping[str, str] | None, messages: list[str]
) -> ProxySSL | None:
    ref = values.get("proxy-ssl-secret")
    if ref is None:
        # An invalid proxy-ssl-secret already fails closed; only an absent one is news.
        if "proxy-ssl-secret" not in collect(annotations):
            messages += [
                f"{short} has no effect without proxy-ssl-secret (ingress-nginx ignores it too)"
                for short in _PROXY_SSL_OPTIONS
                if short in values
            ]
        return None
    return ProxySSL(
        namespace=ref[0],
        secret=ref[1],
        verify=values.get("proxy-ssl-verify", False),
        verify_depth=values.get("proxy-ssl-verify-depth", 1),
        name=values.get("proxy-ssl-name"),
        server_name=values.get("proxy-ssl-server-name", False),
        ciphers=values.get("proxy-ssl-ciphers", "DEFAULT"),
        protocols=values.get("proxy-ssl-protocols", ("TLSv1.2", "TLSv1.3")),
    )


# On Python's re, "$" also matched before a final newline: "x\n" passed and reached
# the WWW-Authenticate header. RE2's "$" is the end of the value.
_REALM = fixed(r"^[A-Za-z0-9 ._~/:-]*$")


def parse_auth_type(value: str) -> str:
    v = value.strip().lower()
    if v == "digest":
        raise UnsupportedValue("digest authentication is not supported by ingressd; use basic")
    if v != "basic":
        raise AnnotationError(f"{value!r} is not an auth type (basic)")
    return v


def parse_auth_secret_type(value: str) -> str:
    v = value.strip()
    if v not in ("auth-file", "auth-map"):
        raise AnnotationError(f"{value!r} is not auth-file or auth-map")
    return v


def parse_realm(value: str) -> str:
    if not _REALM.match(value):
        raise AnnotationError(f"{value!r} may hold only letters, digits, spaces and -._~/:")
    return value


def _reported_as_invalid(parse: Callable[[str], T]) -> Callable[[str], T]:
    """``parse`` with the ValueError of another module turned into an AnnotationError."""

    def wrapped(value: str) -> T:
        try:
            return parse(value)
        except ValueError as exc:
            raise AnnotationError(str(exc)) from None

    return wrapped


parse_auth_url = _reported_as_invalid(parse_url_template)
parse_cache_key = _reported_as_invalid(parse_key_template)
parse_cache_durations = _reported_as_invalid(parse_durations)


def _whole_number(low: int, high: int) -> Callable[[str], int]:
    """A whole number from ``low`` to ``high`` (auth-keepalive*: GetIntAnnotation, bounded)."""

    def parse(value: str) -> int:
        v = value.strip()
        if not (v.isascii() and v.lstrip("-").isdigit()) or not low <= int(v) <= high:
            raise AnnotationError(f"{value!r} is not a whole number from {low} to {high}")
        return int(v)

    return parse


_GO_DURATION = fixed(r"^(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+$")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_window(value: str) -> int:
    """global-rate-limit-window: a Go duration (``1m``, ``90s``, ``1h30m``), whole
    seconds of it as ingress-nginx keeps them (``int(windowSize.Seconds())``)."""
    v = value.strip()
    if not v or len(v) > 64 or not _GO_DURATION.match(v):
        raise AnnotationError(f"{value[:64]!r} is not a duration like 1m or 30s")
    total, i = 0.0, 0
    while i < len(v):  # the pattern holds: number, unit, number, unit ...
        j = i
        while v[j].isdigit() or v[j] == ".":
            j += 1
        k = j
        while k < len(v) and not (v[k].isdigit() or v[k] == "."):
            k += 1
        total += float(v[i:j]) * _GO_UNITS[v[j:k]]
        i = k
    if not 1 <= total <= 86400 * 365:
        raise AnnotationError(f"{value!r} is not from 1s to a year")
    return int(total)


def parse_limit_key(value: str) -> tuple[str, ...]:
    """global-rate-limit-key: text and nginx variables, as upstream-hash-by's key."""
    try:
        return _parse_hash_key(value)
    except ValueError as exc:
        raise AnnotationError(str(exc)) from None


def parse_satisfy(value: str) -> str:
    """satisfy: "any" or "all", as written (ingress-nginx's validator: trimmed, case-sensitive)."""
    v = value.strip()
    if v not in ("any", "all"):
        raise AnnotationError(f'{value!r} must be "any" or "all"; "all" applies')
    return v


_parse_template = _reported_as_invalid(parse_template)
parse_next_upstream = _reported_as_invalid(parse_conditions)


def parse_auth_method(value: str) -> str:
    v = value.strip()
    if v not in AUTH_METHODS:
        raise AnnotationError(
            f"{value!r} is not an HTTP method ({', '.join(sorted(AUTH_METHODS))})"
        )
    return v


def parse_header_names(value: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    for name in names:
        if not _TOKEN.match(name):
            raise AnnotationError(f"{name!r} is not a header name")
    if not names:
        raise AnnotationError("no header names")
    return names


_QUERY_PARAM = fixed(r"[A-Za-z0-9_.~-]+")


def parse_query_param(value: str) -> str:
    v = value.strip()
    if not _QUERY_PARAM.fullmatch(v):
        raise AnnotationError(f"{value!r} is not a query parameter name")
    return v


def parse_header_template(value: str) -> Template:
    if not value.strip() or _HEADER_CONTROL.search(value):
        raise AnnotationError(f"{value!r} is empty or contains control characters")
    return _parse_template(value)


# auth-tls-*, validated as ingress-nginx v1.15.1 validates them
# (internal/ingress/annotations/authtls/main.go: authVerifyClientRegex,
# redirectRegex, parser.CommonNameAnnotationValidator).
VERIFY_CLIENT = ("on", "off", "optional", "optional_no_ca")
_ERROR_PAGE = fixed(r"^((https?://)?[A-Za-z0-9\-.]*(:\d+)?/[A-Za-z0-9\-.]*)?$")
# nginx's ssl_verify_depth has no bound; ingressd keeps chains short (each level
# is a signature to check per handshake).
MAX_VERIFY_DEPTH = 16


def parse_verify_client(value: str) -> str:
    v = value.strip()
    if v not in VERIFY_CLIENT:
        raise AnnotationError(f"{value!r} is not one of {', '.join(VERIFY_CLIENT)}")
    return v


def parse_tls_depth(value: str) -> int:
    """auth-tls-verify-depth: 0 means the default 1, as in ingress-nginx."""
    v = value.strip()
    if not (v.isascii() and v.isdigit()) or int(v) > MAX_VERIFY_DEPTH:
        raise AnnotationError(f"{value!r} is not a whole number from 1 to {MAX_VERIFY_DEPTH}")
    return int(v) or 1


def parse_error_page(value: str) -> str:
    v = value.strip()
    if not v or not _ERROR_PAGE.match(v):
        raise AnnotationError(f"{value!r} is not a URL like https://host/path")
    return v


def parse_match_cn(value: str) -> UserRegex:
    """A regular expression searched in the client's subject DN, "CN=" included
    (nginx.tmpl: ``if ( $ssl_client_s_dn !~ MatchCN ) { return 403 ...; }``)."""
    if not value.startswith("CN="):
        raise AnnotationError(f"{value!r} must start with CN=")
    try:
        return user_regex(value, ignore_case=False)
    except RegexError as exc:
        raise AnnotationError(f"not a regular expression RE2 can run: {exc}") from None


def parse_seconds_or_zero(value: str) -> float:
    """Whole seconds, 0 meaning no limit (proxy-next-upstream-timeout)."""
    v = value.strip()
    if not (v.isascii() and v.isdigit()):
        raise AnnotationError(f"{value!r} is not a whole number of seconds")
    return float(v)


def parse_http_errors(value: str) -> frozenset[int]:
    r"""custom-http-errors: comma-separated statuses from 400 to 599, as ingress-nginx's
    customhttperrors parser accepts them (``^(?:[4,5]\d{2},?)*$``, then Atoi);
    blanks around an entry are allowed."""
    codes = set()
    for part in value.split(","):
        p = part.strip()
        if not (len(p) == 3 and p.isascii() and p.isdigit() and p[0] in "45"):
            raise AnnotationError(f"{part.strip()!r} is not a status from 400 to 599")
        codes.add(int(p))
    return frozenset(codes)


# A Service name: an RFC 1035 label, as ingress-nginx's parser.ValidateServiceName.
_SERVICE_NAME = fixed(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def parse_service_name(value: str) -> str:
    """default-backend: the name of a Service in the Ingress's own namespace."""
    v = value.strip()
    if not _SERVICE_NAME.match(v):
        raise AnnotationError(f"{value!r} is not a Service name (a DNS label)")
    return v


# -- proxy-redirect-*, proxy-cookie-*, proxy-http-version, connection-proxy-header,
# limit-rate*, ssl-*ciphers, proxy-ssl-* (internal/ingress/annotations/proxy/main.go,
# connection/main.go, ratelimit/main.go, sslcipher/main.go, proxyssl/main.go)

parse_redirect_from = _reported_as_invalid(parse_redirect_word)
parse_redirect_to = _reported_as_invalid(parse_redirect_word)
parse_cookie_rewrite = _reported_as_invalid(parse_cookie_rule)
parse_proxy_ssl_protocols = _reported_as_invalid(parse_ssl_protocols)
parse_http_version = _one_of("1.0", "1.1")
# nginx's proxy_set_header takes any text; ingressd takes a Connection header's
# own grammar: comma-separated tokens ("keep-alive", "close", "upgrade").
_CONNECTION = fixed(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+( *, *[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$")


def parse_connection_header(value: str) -> bytes:
    v = value.strip()
    if len(v) > 256 or not _CONNECTION.match(v):
        raise AnnotationError(f"{value[:100]!r} is not a list of Connection tokens")
    return v.encode("ascii")


# limit-rate: ingress-nginx writes "limit_rate {N}k" (ratelimit/main.go, template.go
# buildRateLimit): kilobytes. 0 (its default) is no limit.
MAX_RATE_KB = 1024 * 1024 * 1024  # 1 TiB/s: far past any link, and no overflow


def parse_rate_kb(value: str) -> int:
    """limit-rate, limit-rate-after: a whole number of kilobytes, in bytes."""
    v = value.strip()
    if not (v.isascii() and v.isdigit()) or int(v) > MAX_RATE_KB:
        raise AnnotationError(f"{value[:100]!r} is not a whole number of kilobytes")
    return int(v) * 1024


_CIPHER_CHARS = fixed(r"^[A-Za-z0-9+:_!-]+$")  # sslcipher/main.go and proxyssl's validator


def parse_ssl_ciphers(value: str, allowed: FixedRegex = _CIPHER_CHARS) -> str:
    """ssl-ciphers, proxy-ssl-ciphers: an OpenSSL cipher list that matches some cipher,
    of the ``allowed`` characters (the ConfigMap's key allows more than the annotations)."""
    v = value.strip()
    if not v or len(v) > 2048 or not allowed.match(v):
        raise AnnotationError(f"{value[:100]!r} is not an OpenSSL cipher list")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).set_ciphers(v)
    except ssl.SSLError:
        raise AnnotationError(f"{value[:100]!r}: OpenSSL matches no cipher") from None
    return v


def parse_prefer_server_ciphers(value: str) -> bool:
    """ssl-prefer-server-ciphers: "true" is what ingressd does on every host; "false"
    cannot be had per host: Python's SNI callback switches the handshake's context,
    but OpenSSL keeps the options (server preference among them) of the one it
    started with (nginx copies them over with SSL_set_options; ssl offers no way)."""
    if parse_bool(value):
        return True
    raise UnsupportedValue(
        "the server's cipher order cannot be turned off per host by ingressd (its SNI "
        "switch keeps the listener's options); the server's order is used"
    )


def _rewrite_policy(
    values: Mapping[str, Any], base: RoutePolicy, messages: list[str]
) -> RoutePolicy | None:
    """proxy-redirect-* and proxy-cookie-*: each annotation falls back to the ConfigMap's
    value (the base policy), as proxy/main.go falls back to the default backend's."""
    keys = ("proxy-redirect-from", "proxy-redirect-to", "proxy-cookie-domain", "proxy-cookie-path")
    if not any(k in values for k in keys):
        return None
    texts = (
        values.get("proxy-redirect-from", base.proxy_redirect_from),
        values.get("proxy-redirect-to", base.proxy_redirect_to),
        values.get("proxy-cookie-domain", base.proxy_cookie_domain),
        values.get("proxy-cookie-path", base.proxy_cookie_path),
    )
    rewrite, errors = _response_rewrite(*texts)
    messages += errors
    return replace(
        base,
        proxy_redirect_from=texts[0],
        proxy_redirect_to=texts[1],
        proxy_cookie_domain=texts[2],
        proxy_cookie_path=texts[3],
        response_rewrite=rewrite,
    )


# -- upstream-hash-by, server-alias (policy/chash.py; routing/build.py's aliases) ------------

_NOT_HASHED = "; the route is balanced as without it"
MAX_SUBSET_SIZE = 256  # bounds the padded subsets chashsubset.lua makes


def parse_upstream_hash_by(value: str) -> tuple[str, ...]:
    try:
        return _parse_hash_key(value)
    except ValueError as exc:
        raise AnnotationError(f"{exc}{_NOT_HASHED}") from None


def parse_subset_size(value: str) -> int:
    """upstream-hash-by-subset-size: 1 to MAX_SUBSET_SIZE; 0 is ingress-nginx's "unset" (3)."""
    v = value.strip()
    if not (v.isascii() and v.isdigit()) or int(v) > MAX_SUBSET_SIZE:
        raise AnnotationError(f"{value!r} is not a whole number from 1 to {MAX_SUBSET_SIZE}")
    return int(v) or 3


MAX_ALIASES = 100
_ALIAS = fixed(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
# nginx server names ingress-nginx passes on but ingressd does not serve: regular
# expressions ("~^www\d+\.example\.com$") and trailing wildcards ("www.example.*").
_NGINX_ONLY_ALIAS = fixed(r"^(~.+|[A-Za-z0-9_.-]+\.\*)$")


class ServerAliases(NamedTuple):
    names: tuple[str, ...]  # exact names and "*.suffix", lowercase, sorted
    unsupported: tuple[str, ...]  # nginx-only forms, reported and not served


def parse_server_aliases(value: str) -> ServerAliases:
    """server-alias: comma-separated names, deduplicated and sorted as ingress-nginx's
    alias parser does; nginx regex and trailing-wildcard names are kept apart."""
    names: set[str] = set()
    unsupported: set[str] = set()
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        if len(names) + len(unsupported) >= MAX_ALIASES:
            raise AnnotationError(f"more than {MAX_ALIASES} names")
        low = item.lower().rstrip(".")
        if len(low) <= 253 and _ALIAS.match(low):
            names.add(low)
        elif len(item) <= 253 and _NGINX_ONLY_ALIAS.match(item) and not _CONTROL.search(item):
            unsupported.add(item)
        else:
            raise AnnotationError(f"{item!r} is not a server name")
    if not names and not unsupported:
        raise AnnotationError("no server name given")
    return ServerAliases(tuple(sorted(names)), tuple(sorted(unsupported)))


def server_aliases(annotations: Mapping[str, str] | None) -> tuple[str, ...]:
    """The Ingress's valid server-alias names ((): none, or invalid: reported by parse_policy)."""
    found = collect(annotations)
    if "server-alias" not in found:
        return ()
    parsed = _parsed(found, "server-alias", parse_server_aliases)
    return parsed.names if parsed is not None else ()


def _hash_policy(values: Mapping[str, Any], messages: list[str]) -> UpstreamHash | None:
    parts = values.get("upstream-hash-by")
    if parts is None:
        idle = [
            k for k in ("upstream-hash-by-subset", "upstream-hash-by-subset-size") if k in values
        ]
        if idle:
            messages.append(f"{', '.join(idle)}: no effect without upstream-hash-by")
        return None
    # balancer.lua get_implementation: cookie affinity, then the hash, then load-balance.
    if "affinity" in values:
        messages.append("upstream-hash-by: no effect beside affinity: cookie, which wins over it")
    elif "load-balance" in values:
        messages.append("load-balance: no effect beside upstream-hash-by, which wins over it")
    subset = values.get("upstream-hash-by-subset", False)
    if "upstream-hash-by-subset-size" in values and not subset:
        messages.append(
            'upstream-hash-by-subset-size: no effect without upstream-hash-by-subset: "true"'
        )
    return UpstreamHash(
        parts=parts,
        text="".join(p if i % 2 == 0 else "${" + p + "}" for i, p in enumerate(parts)),
        subset=subset,
        subset_size=values.get("upstream-hash-by-subset-size", 3),
    )


# annotation name (without prefix) -> parser of its value
_PARSERS: Mapping[str, Callable[[str], Any]] = {
    "rewrite-target": parse_rewrite_target,
    "use-regex": parse_bool,
    "ssl-redirect": parse_bool,
    "force-ssl-redirect": parse_bool,
    "preserve-trailing-slash": parse_bool,
    "enable-access-log": parse_bool,
    "app-root": parse_app_root,
    "permanent-redirect": parse_redirect_url,
    "permanent-redirect-code": parse_redirect_code,
    "temporal-redirect": parse_redirect_url,
    "temporal-redirect-code": parse_redirect_code,
    "from-to-www-redirect": parse_bool,
    "x-forwarded-prefix": parse_forwarded_prefix,
    "upstream-vhost": parse_upstream_vhost,
    "auth-type": parse_auth_type,
    "auth-secret": parse_secret_ref,
    "auth-secret-type": parse_auth_secret_type,
    "auth-realm": parse_realm,
    "auth-url": parse_auth_url,
    "auth-method": parse_auth_method,
    "auth-response-headers": parse_header_names,
    "auth-signin": parse_auth_url,
    "auth-signin-redirect-param": parse_query_param,
    "auth-request-redirect": parse_header_template,
    "auth-always-set-cookie": parse_bool,
    "auth-proxy-set-headers": parse_configmap_ref,
    "custom-headers": parse_configmap_ref,
    "auth-cache-key": parse_cache_key,
    "auth-cache-duration": parse_cache_durations,
    # ingress-nginx: a negative auth-keepalive is 0; -requests or -timeout not above 0
    # turn keep-alive off (authreq/main.go). Bounded here.
    "auth-keepalive": _whole_number(-(2**31), 100_000),
    "auth-keepalive-requests": _whole_number(-(2**31), 1_000_000),
    "auth-keepalive-timeout": _whole_number(-(2**31), 86400),
    "auth-keepalive-share-vars": parse_bool,
    "enable-global-auth": parse_bool,
    "satisfy": parse_satisfy,
    "global-rate-limit": _whole_number(0, 1_000_000_000),
    "global-rate-limit-window": parse_window,
    "global-rate-limit-key": parse_limit_key,
    "global-rate-limit-ignored-cidrs": parse_cidrs,
    "backend-protocol": parse_backend_protocol,
    "proxy-ssl-secret": parse_secret_ref,
    "auth-tls-secret": parse_secret_ref,
    "auth-tls-verify-client": parse_verify_client,
    "auth-tls-verify-depth": parse_tls_depth,
    "auth-tls-error-page": parse_error_page,
    "auth-tls-pass-certificate-to-upstream": parse_bool,
    "auth-tls-match-cn": parse_match_cn,
    "proxy-ssl-verify": parse_on_off,
    "proxy-ssl-verify-depth": parse_verify_depth,
    "proxy-ssl-name": parse_server_name,
    "proxy-ssl-server-name": parse_on_off,
    "service-upstream": parse_bool,
    "proxy-body-size": parse_size,
    "proxy-buffer-size": parse_buffer_size,
    "proxy-request-buffering": _reported(buffering.parse_on_off_option),
    "client-body-buffer-size": _reported(buffering.parse_body_buffer_size),
    "proxy-buffering": _reported(buffering.parse_on_off_option),
    "proxy-buffers-number": _reported(buffering.parse_buffers_number),
    "proxy-busy-buffers-size": _reported(buffering.parse_busy_size),
    "proxy-max-temp-file-size": _reported(buffering.parse_max_temp_file_size),
    "mirror-target": _reported(mirror_values.parse_target),
    "mirror-host": _reported(mirror_values.parse_host),
    "mirror-request-body": _mirror_body,
    "proxy-connect-timeout": parse_seconds,
    "proxy-read-timeout": parse_seconds,
    "proxy-send-timeout": parse_seconds,
    "load-balance": parse_load_balance,
    "proxy-next-upstream": parse_next_upstream,
    "proxy-next-upstream-tries": parse_positive_int,
    "proxy-next-upstream-timeout": parse_seconds_or_zero,
    "limit-rps": parse_limit,
    "limit-rpm": parse_limit,
    "limit-connections": parse_limit,
    "limit-burst-multiplier": parse_limit,
    "limit-allowlist": parse_cidrs,
    "limit-whitelist": parse_cidrs,
    "whitelist-source-range": parse_cidrs,
    "allowlist-source-range": parse_cidrs,
    "denylist-source-range": parse_cidrs,
    "enable-cors": parse_bool,
    "cors-allow-origin": _cors_origins,
    "cors-allow-methods": _cors_tokens,
    "cors-allow-headers": _cors_tokens,
    "cors-expose-headers": _cors_tokens,
    "cors-allow-credentials": parse_bool,
    "cors-max-age": parse_positive_int,
    "canary": parse_bool,
    "canary-by-header": parse_header_name,
    "canary-by-header-value": parse_header_value,
    "canary-by-header-pattern": parse_regex,
    "canary-by-cookie": parse_cookie_name,
    "canary-weight": parse_positive_int,
    "canary-weight-total": parse_weight_total,
    "affinity": _one_of("cookie"),
    "affinity-mode": _one_of("balanced", "persistent"),
    "affinity-canary-behavior": _one_of("sticky", "legacy"),
    "session-cookie-name": parse_cookie_name,
    "session-cookie-path": parse_cookie_path,
    "session-cookie-max-age": parse_positive_int,
    "session-cookie-expires": parse_positive_int,
    "session-cookie-samesite": _one_of("None", "Lax", "Strict"),
    "session-cookie-secure": parse_bool,
    "session-cookie-domain": parse_cookie_domain,
    "session-cookie-change-on-failure": parse_bool,
    "custom-http-errors": parse_http_errors,
    # disableproxyintercepterrors/main.go: a bool, false by default.
    "disable-proxy-intercept-errors": parse_bool,
    "default-backend": parse_service_name,
    "session-cookie-conditional-samesite-none": parse_bool,
    "upstream-hash-by": parse_upstream_hash_by,
    "proxy-redirect-from": parse_redirect_from,
    "proxy-redirect-to": parse_redirect_to,
    "proxy-cookie-domain": parse_cookie_rewrite,
    "proxy-cookie-path": parse_cookie_rewrite,
    "proxy-http-version": parse_http_version,
    "connection-proxy-header": parse_connection_header,
    "use-port-in-redirects": parse_bool,
    "limit-rate": parse_rate_kb,
    "limit-rate-after": parse_rate_kb,
    "proxy-ssl-ciphers": parse_ssl_ciphers,
    "ssl-ciphers": parse_ssl_ciphers,
    "ssl-prefer-server-ciphers": parse_prefer_server_ciphers,
    "proxy-ssl-protocols": parse_proxy_ssl_protocols,
    "upstream-hash-by-subset": parse_bool,
    "upstream-hash-by-subset-size": parse_subset_size,
    "server-alias": parse_server_aliases,
    "enable-opentelemetry": parse_bool,
    "opentelemetry-trust-incoming-span": parse_bool,
    "opentelemetry-operation-name": parse_operation_name,
}

# Annotation -> RoutePolicy field, for those that map one to one.
_FIELDS: Mapping[str, str] = {
    "rewrite-target": "rewrite_target",
    "use-regex": "use_regex",
    "ssl-redirect": "ssl_redirect",
    "force-ssl-redirect": "force_ssl_redirect",
    "preserve-trailing-slash": "preserve_trailing_slash",
    "enable-access-log": "access_log",
    "app-root": "app_root",
    "from-to-www-redirect": "from_to_www_redirect",
    "x-forwarded-prefix": "x_forwarded_prefix",
    "upstream-vhost": "upstream_vhost",
    "backend-protocol": "backend_protocol",
    "service-upstream": "service_upstream",
    "proxy-body-size": "proxy_body_size",
    "proxy-buffer-size": "proxy_buffer_size",
    "proxy-request-buffering": "request_buffering",
    "client-body-buffer-size": "client_body_buffer_size",
    "proxy-buffering": "proxy_buffering",
    "proxy-buffers-number": "proxy_buffers_number",
    "proxy-connect-timeout": "proxy_connect_timeout",
    "proxy-read-timeout": "proxy_read_timeout",
    "proxy-send-timeout": "proxy_send_timeout",
    "load-balance": "load_balance",
    "custom-http-errors": "custom_http_errors",
    "disable-proxy-intercept-errors": "disable_intercept_errors",
    "proxy-http-version": "proxy_http_version",
    "connection-proxy-header": "connection_header",
    "use-port-in-redirects": "use_port_in_redirects",
    "limit-rate": "limit_rate",
    "limit-rate-after": "limit_rate_after",
    "ssl-ciphers": "ssl_ciphers",
    "ssl-prefer-server-ciphers": "ssl_prefer_server_ciphers",
    "default-backend": "default_backend",
    "configuration-snippet": "snippet",
    "server-snippet": "server_snippet",
    "custom-headers": "custom_headers",
}

# auth-tls-*: client certificates; the others mean something only beside the Secret.
CLIENT_AUTH_KEYS = (
    "auth-tls-secret",
    "auth-tls-verify-client",
    "auth-tls-verify-depth",
    "auth-tls-error-page",
    "auth-tls-pass-certificate-to-upstream",
    "auth-tls-match-cn",
)

# Invalid values of these must not leave the route open. ingress-nginx denies the
# location (LocationDeniedError: the template's "return 503" for location.Denied)
# or, for a value its validators reject, does not load the Ingress at all; ingressd
# answers 503 in both cases rather than let the path fall through to another route.
SECURITY = frozenset(
    {
        "whitelist-source-range",
        "allowlist-source-range",
        "denylist-source-range",
        "auth-type",
        "auth-secret",
        "auth-secret-type",
        "auth-realm",
        "auth-url",
        "auth-method",
        "auth-response-headers",
        "auth-signin",
        "auth-signin-redirect-param",
        "auth-request-redirect",
        "auth-always-set-cookie",
        "auth-proxy-set-headers",
        # authreq/main.go: an invalid duration denies the location (LocationDenied).
        "auth-cache-duration",
        # globalratelimit/main.go: so does an invalid window (a limit cannot be dropped).
        "global-rate-limit-window",
        *CLIENT_AUTH_KEYS,
    }
)

# Meaningful only beside auth-url.
_EXTERNAL_ONLY = frozenset(
    {
        "auth-method",
        "auth-response-headers",
        "auth-signin",
        "auth-signin-redirect-param",
        "auth-request-redirect",
        "auth-always-set-cookie",
        "auth-proxy-set-headers",
        "auth-cache-key",
        "auth-cache-duration",
        "auth-keepalive",
        "auth-keepalive-requests",
        "auth-keepalive-timeout",
        "auth-keepalive-share-vars",
    }
)

SUPPORTED = frozenset(_PARSERS) | TRANSLATED


def collect(annotations: Mapping[str, str] | None) -> dict[str, tuple[str, str]]:
    """Our annotations by short name -> (full key, value); ingressd.io/ wins."""
    found: dict[str, tuple[str, str]] = {}
    for key, value in (annotations or {}).items():
        for prefix in PREFIXES:
            if key.startswith(prefix):
                short = key[len(prefix) :]
                if prefix == "ingressd.io/" or short not in found:
                    found[short] = (key, str(value))
    return found


Status = Literal["supported", "unsupported", "refused", "invalid", "overridden"]


class Verdict(NamedTuple):
    """How one annotation is treated; ``reason`` is the message the builder reports."""

    key: str
    value: str
    status: Status
    reason: str  # "" when supported


def _judge(annotations: Mapping[str, str] | None) -> Iterator[tuple[str, Verdict, Any]]:
    """(short name, verdict, parsed value or None) per annotation of ours.

    The one loop behind both ``classify`` and ``parse_policy``, so what
    ``ingressd check`` says about an annotation is what serving does with it.
    """
    raw = annotations or {}
    found = collect(raw)
    for short, (key, value) in sorted(found.items()):
        verdict, parsed = _verdict(short, key, value)
        if verdict.status == "supported" and short.startswith("canary-"):
            verdict, parsed = _canary_check(short, verdict, parsed, found)
        elif verdict.status in ("unsupported", "refused"):
            verdict, parsed = _access_check(short, verdict, found)
        yield short, verdict, parsed
        # The nginx.ingress.kubernetes.io/ twin of an ingressd.io/ annotation is
        # never read; say so rather than leave it out of a report.
        for twin in (prefix + short for prefix in PREFIXES):
            if twin != key and twin in raw:
                reason = f"annotation {twin} is overridden by {key}"
                yield short, Verdict(twin, str(raw[twin]), "overridden", reason), None


def _verdict(short: str, key: str, value: str) -> tuple[Verdict, Any]:
    if short in TRANSLATED:
        # What a snippet does that ingressd can do itself is translated, or the
        # whole snippet refused, naming why (policy/snippets.py).
        translation = translate(value, short)  # type: ignore[arg-type]
        if translation.policy is not None:
            return Verdict(key, value, "supported", ""), translation.policy
        reason = f"annotation {key} is refused: {translation.refusal}; it is not applied"
        return Verdict(key, value, "refused", reason), None
    if short in REFUSED:
        why = NOT_APPLICABLE.get(short, "raw proxy configuration is not supported")
        reason = f"annotation {key} is refused: {why}"
        return Verdict(key, value, "refused", reason), None
    parse = _PARSERS.get(short)
    if parse is None:
        reason = f"annotation {key} is not supported by ingressd and is ignored"
        return Verdict(key, value, "unsupported", reason), None
    try:
        parsed = parse(value)
    except (ValueError, UnicodeError, OverflowError, TypeError) as exc:
        # AnnotationError is what parsers mean to raise; anything else from a
        # hostile value (an out-of-range number, a character latin-1 lacks) is
        # just as invalid, and must never escape into the table build.
        if not isinstance(exc, AnnotationError):
            exc = AnnotationError(f"cannot be parsed ({type(exc).__name__}: {exc})"[:200])
        if isinstance(exc, UnsupportedValue):
            reason = f"annotation {key}={value!r}: {exc}"
            return Verdict(key, value, "unsupported", reason), None
        reason = f"annotation {key}={value!r} is invalid: {exc}"
        if short == "proxy-ssl-secret":
            # As ingress-nginx denies the locations: no TLS rather than the wrong TLS.
            reason += "; its routes answer 503 until it is fixed"
        elif short in SECURITY:
            reason += "; its routes answer 503 until it is fixed"
        elif short == "cors-allow-origin":
            # ingress-nginx falls back to "*" here; ingressd allows nobody instead.
            reason += "; no origin is allowed until it is fixed"
        elif short in _LIMIT_FALLBACK:
            # ingress-nginx rejects the whole Ingress; ingressd serves it without this.
            reason += _LIMIT_FALLBACK[short]
        return Verdict(key, value, "invalid", reason), None
    return Verdict(key, value, "supported", ""), parsed


class Denial(NamedTuple):
    """An annotation that narrows access in a way ingressd cannot: its routes answer 403."""

    reason: str  # for the response body
    host_wide: bool  # ingress-nginx applies it to the whole server: every route of its hosts


def _access_check(
    short: str, verdict: Verdict, found: Mapping[str, tuple[str, str]]
) -> tuple[Verdict, Denial | None]:
    """Whether an unsupported or refused annotation narrows access (and so must deny)."""
    key, value = verdict.key, verdict.value

    def present(other: str) -> str | None:
        return found[other][1].strip().lower() if other in found else None

    if verdict.status == "refused":
        if short == "modsecurity-snippet":
            # The rules' own language, not nginx's: they deny only with the engine on.
            if present("enable-modsecurity") == "false" or not modsecurity_blocks(value):
                return verdict, None
            reason = f"{verdict.reason}; its rules would block requests"
            return Verdict(key, value, "refused", reason), Denial(
                "modsecurity-snippet is not supported by ingressd", False
            )
        if short in NOT_APPLICABLE:
            return verdict, None
        if short == "stream-snippet":  # TCP/UDP servers of its own: no HTTP route's access
            return verdict, None
        if short == "auth-snippet" and present("auth-url") is None:
            return verdict, None  # unused without auth-url, as in ingress-nginx
        directives = access_directives(value)
        if not directives:
            return verdict, None
        reason = f"{verdict.reason}; it holds access control ({', '.join(directives)})"
        denial = Denial(
            f"{short} holds access control ingressd cannot apply", short == "server-snippet"
        )
        return Verdict(key, value, "refused", reason), denial
    if short in _DENYING_VALUES:
        return verdict, Denial(f"{short} {value.strip()!r} is not supported by ingressd", False)
    what = DENYING.get(short)
    if what is None:
        return verdict, None
    reason = f"annotation {key} is not supported by ingressd: it {what}"
    denial = Denial(f"{short} is not supported by ingressd", False)
    return Verdict(key, value, "unsupported", reason), denial


def _canary_check(
    short: str, verdict: Verdict, parsed: Any, found: Mapping[str, tuple[str, str]]
) -> tuple[Verdict, Any]:
    """canary-* annotations mean something only beside canary: "true"; a weight fits its total."""
    reason = None
    if not _parsed(found, "canary", parse_bool):
        reason = 'it has no effect without canary: "true"'
    elif short == "canary-weight":
        total = _parsed(found, "canary-weight-total", parse_weight_total) or 100
        if parsed > total:
            reason = f"the weight is more than canary-weight-total ({total})"
    if reason is None:
        return verdict, parsed
    key, value = verdict.key, verdict.value
    text = f"annotation {key}={value!r} is invalid: {reason}; it is ignored"
    return Verdict(key, value, "invalid", text), None


def _parsed(found: Mapping[str, tuple[str, str]], short: str, parse: Callable[[str], Any]) -> Any:
    """The parsed value of another annotation, None when absent or invalid."""
    if short not in found:
        return None
    try:
        return parse(found[short][1])
    except (ValueError, UnicodeError, OverflowError, TypeError):
        return None


def classify(annotations: Mapping[str, str] | None) -> list[Verdict]:
    """Every annotation of ours, by name: supported, unsupported, refused, invalid or overridden."""
    return [verdict for _, verdict, _ in _judge(annotations)]


def parse_policy(
    annotations: Mapping[str, str] | None, base: RoutePolicy = DEFAULT_POLICY
) -> tuple[RoutePolicy, list[str]]:
    """Return the policy and one message per annotation rejected.

    Every value rejected, and every annotation refused or not implemented, is
    named with its key and value. ``base`` holds the defaults the controller
    ConfigMap sets (policy/configmap.py); an annotation wins over them, as in
    ingress-nginx, whose annotation parsers fall back to the ConfigMap's values.
    """
    values: dict[str, Any] = {}
    messages: list[str] = []
    fail_closed: tuple[int, str] | None = None
    host_fail_closed: tuple[int, str] | None = None
    for short, verdict, parsed in _judge(annotations):
        if verdict.status == "supported":
            values[short] = parsed
        elif isinstance(parsed, Denial):
            # Access control ingressd cannot apply: 403 rather than an open route. The
            # message differs from the verdict's, so `ingressd check` counts a problem.
            denied = (_DENIED_BY_ANNOTATION, parsed.reason)
            fail_closed = fail_closed or denied
            if parsed.host_wide:
                host_fail_closed = host_fail_closed or denied
                where = "every route of its hosts answers"
            else:
                where = "its routes answer"
            messages.append(f"{verdict.reason}; {where} 403 rather than serve without it")
        elif verdict.status == "unsupported" and short == "backend-protocol":
            # A protocol ingressd cannot speak: 502, never HTTP to a gRPC server. The
            # message differs from the verdict's, so `ingressd check` counts a problem.
            protocol = verdict.value.strip().upper()
            reason = f"backend-protocol {protocol} is not supported by ingressd yet"
            fail_closed = fail_closed or (502, reason)
            messages.append(f"{verdict.reason}; its routes answer 502")
        elif verdict.status != "overridden":
            messages.append(verdict.reason)
            if verdict.status == "invalid" and short == "proxy-ssl-secret":
                fail_closed = fail_closed or (503, "invalid proxy-ssl-secret annotation")
            elif verdict.status == "invalid" and short in SECURITY:
                fail_closed = fail_closed or (_DENIED, f"invalid {short} annotation")
            elif verdict.status == "invalid" and short == "cors-allow-origin":
                values[short] = ()
            elif verdict.status == "invalid" and short == "limit-allowlist":
                values[short] = ()  # nobody exempt, rather than limit-whitelist's list
    refused_server_snippet = "server-snippet" in collect(annotations) and (
        "server-snippet" not in values
    )
    if not values and fail_closed is None and not refused_server_snippet:
        return base, messages
    changes: dict[str, Any] = {_FIELDS[k]: v for k, v in values.items() if k in _FIELDS}
    rewritten = _rewrite_policy(values, base, messages)
    if rewritten is not None:
        base = rewritten
    proxy_ssl = _proxy_ssl(values, annotations, messages)
    if proxy_ssl is not None:
        changes["proxy_ssl"] = proxy_ssl
    # ingress-nginx checks temporal-redirect first.
    for kind, default in (("temporal", 302), ("permanent", 301)):
        if f"{kind}-redirect" in values:
            code = values.get(f"{kind}-redirect-code", default)
            changes["redirect"] = (code, values[f"{kind}-redirect"])
            break
    # allowlist-source-range replaces the older whitelist- name; it wins if both are set.
    allow = values.get("allowlist-source-range", values.get("whitelist-source-range"))
    if allow is not None:
        changes["allow_source"] = allow
    if "denylist-source-range" in values:
        changes["deny_source"] = values["denylist-source-range"]
    limits = _limit_config(values)
    if limits is not None:
        changes["limits"] = limits
    global_limit = _global_limit(values, messages)
    if global_limit is not None:
        changes["global_limit"] = global_limit
    if values.get("enable-cors"):
        changes["cors"] = CorsPolicy(
            origins=values.get("cors-allow-origin", ("*",)),
            methods=values.get("cors-allow-methods", DEFAULT_METHODS),
            headers=values.get("cors-allow-headers", DEFAULT_HEADERS),
            expose=values.get("cors-expose-headers", ""),
            credentials=values.get("cors-allow-credentials", True),
            max_age=values.get("cors-max-age", DEFAULT_MAX_AGE),
        )
    if values.get("canary"):
        changes["canary"] = Canary(
            header=values.get("canary-by-header"),
            header_value=values.get("canary-by-header-value"),
            header_pattern=values.get("canary-by-header-pattern"),
            cookie=values.get("canary-by-cookie"),
            weight=values.get("canary-weight", 0),
            total=values.get("canary-weight-total", 100),
            sticky=values.get("affinity-canary-behavior", "sticky") == "sticky",
        )
    elif "affinity-canary-behavior" in values:
        messages.append('affinity-canary-behavior: no effect without canary: "true"')
    if "affinity" in values:
        changes["affinity"] = Affinity(
            cookie=values.get("session-cookie-name", "INGRESSCOOKIE"),
            mode=values.get("affinity-mode", "balanced"),
            path=values.get("session-cookie-path"),
            max_age=values.get("session-cookie-max-age"),
            expires=values.get("session-cookie-expires"),
            samesite=values.get("session-cookie-samesite"),
            secure=values.get("session-cookie-secure"),
            domain=values.get("session-cookie-domain"),
            change_on_failure=values.get("session-cookie-change-on-failure", False),
            conditional_samesite_none=values.get("session-cookie-conditional-samesite-none", False),
        )
    upstream_hash = _hash_policy(values, messages)
    if upstream_hash is not None:
        changes["upstream_hash"] = upstream_hash
    aliases = values.get("server-alias")
    if aliases is not None and aliases.unsupported:
        messages.append(
            f"server-alias {', '.join(aliases.unsupported)}: nginx regular expression and "
            "trailing-wildcard names are not supported by ingressd; not served"
        )
    if values.get("auth-type") == "basic":
        if "auth-secret" not in values:
            messages.append("auth-type basic needs auth-secret; its routes answer 503")
            fail_closed = fail_closed or (503, "auth-type basic without auth-secret")
        else:
            changes["auth"] = AuthRef(
                values["auth-secret"],
                values.get("auth-secret-type", "auth-file"),
                values.get("auth-realm", ""),
            )
    elif "auth-secret" in values and "auth-type" not in values:
        # ingress-nginx then applies no authentication at all; say so loudly.
        messages.append("auth-secret has no effect without auth-type: basic; no authentication")
    retry_keys = ("proxy-next-upstream", "proxy-next-upstream-tries", "proxy-next-upstream-timeout")
    if any(k in values for k in retry_keys):
        retry = values.get("proxy-next-upstream", base.next_upstream)
        changes["next_upstream"] = replace(
            retry,
            # The ConfigMap's tries and timeout stay unless annotated too.
            tries=values.get("proxy-next-upstream-tries", base.next_upstream.tries),
            time_limit=values.get("proxy-next-upstream-timeout", base.next_upstream.time_limit),
        )
    if values.get("satisfy") == "any":
        changes["satisfy_any"] = True
    if "auth-url" in values:
        changes["external_auth"] = _external_auth(values, messages)
        if "auth-proxy-set-headers" in values:
            # Read at build time (policy/header_maps.py): a ConfigMap of headers.
            changes["auth_proxy_headers"] = values["auth-proxy-set-headers"]
    elif values.get("enable-global-auth") is False and base.external_auth is not None:
        # template.go shouldApplyGlobalAuth: an Ingress's own auth-url, else the
        # ConfigMap's global-auth-url unless enable-global-auth is "false".
        changes["external_auth"] = None
    if "auth-url" not in values:
        idle = ", ".join(sorted(k for k in values if k in _EXTERNAL_ONLY))
        if idle:
            messages.append(f"{idle}: no effect without auth-url; no external authentication")
    busy = _busy_buffers(values, base, messages)
    if busy is not None:
        changes["proxy_busy_buffers_size"] = busy
    mirror = _mirror(values, messages)
    if mirror is not None:
        changes["mirror"] = mirror
    tracing = _route_tracing(values, messages)
    if tracing is not None:
        changes["tracing"] = tracing
    client_auth = _client_auth_ref(values, messages)
    if client_auth is not None:
        changes["client_auth_ref"] = client_auth
    if refused_server_snippet:
        # Refused: served without it, but it still takes the host's one server-snippet
        # place, as in ingress-nginx (routing/build.py).
        changes["server_snippet"] = SnippetPolicy()
    if fail_closed is not None:
        changes["fail_closed"] = fail_closed
    if host_fail_closed is not None:
        changes["host_fail_closed"] = host_fail_closed
    if not changes:
        # Only annotations kept off the policy (server-alias): the route keeps the
        # base policy (DEFAULT_POLICY without a ConfigMap: plain).
        return base, messages
    return replace(base, **changes), messages


def _global_limit(values: Mapping[str, Any], messages: list[str]) -> GlobalRateLimit | None:
    """global-rate-limit*: as globalratelimit/main.go, off unless both the limit (not 0)
    and the window are given; the key defaults to $remote_addr."""
    limit = values.get("global-rate-limit", 0)
    window = values.get("global-rate-limit-window")
    if not limit or window is None:
        idle = [k for k in _GLOBAL_LIMIT_KEYS if k in values]
        if idle and "global-rate-limit-window" not in values and limit:
            messages.append("global-rate-limit: no effect without global-rate-limit-window")
        elif idle and not limit:
            messages.append(f"{', '.join(idle)}: no effect without global-rate-limit")
        return None
    key = values.get("global-rate-limit-key", ("", "remote_addr", ""))
    return GlobalRateLimit(
        limit=limit,
        window=window,
        key=key,
        key_text="".join(p if i % 2 == 0 else "$" + p for i, p in enumerate(key)),
        ignored=values.get("global-rate-limit-ignored-cidrs", ()),
    )


_GLOBAL_LIMIT_KEYS = (
    "global-rate-limit",
    "global-rate-limit-window",
    "global-rate-limit-key",
    "global-rate-limit-ignored-cidrs",
)


def _external_auth(values: Mapping[str, Any], messages: list[str]) -> ExternalAuth:
    """auth-url and the annotations beside it (authreq/main.go Parse)."""
    url: Template = values["auth-url"]
    keepalive = max(0, values.get("auth-keepalive", 0))
    requests = values.get("auth-keepalive-requests", 1000)
    timeout = values.get("auth-keepalive-timeout", 60)
    if keepalive:
        # As authreq: no upstream block for a URL whose host:port has a variable,
        # and keep-alive off unless requests and timeout are above 0.
        authority = url.text.partition("://")[2].split("/", 1)[0].split("?", 1)[0]
        why = None
        if "$" in authority:
            why = "auth-url has a variable in its host:port"
        elif requests <= 0:
            why = "auth-keepalive-requests is not above 0"
        elif timeout <= 0:
            why = "auth-keepalive-timeout is not above 0"
        if why is not None:
            messages.append(f"auth-keepalive: off, as in ingress-nginx: {why}")
            keepalive = 0
    cache_key = values.get("auth-cache-key")
    if cache_key is None and "auth-cache-duration" in values:
        messages.append("auth-cache-duration: no effect without auth-cache-key")
    return auth_service(
        values,
        "",
        cache_key,
        cache_key is not None,
        keepalive=keepalive,
        keepalive_requests=max(requests, 1),
        keepalive_timeout=float(max(timeout, 1)),
        keepalive_share_vars=values.get("auth-keepalive-share-vars", False),
    )


def auth_service(
    values: Mapping[str, Any], prefix: str, cache_key: Any, cache_on: bool, **keepalive: Any
) -> ExternalAuth:
    """The ExternalAuth that ``PREFIX + auth-*`` values describe: a route's
    annotations (prefix "") or the ConfigMap's global auth ("global-")."""
    return ExternalAuth(
        url=values[prefix + "auth-url"],
        method=values.get(prefix + "auth-method"),
        response_headers=values.get(prefix + "auth-response-headers", ()),
        signin=values.get(prefix + "auth-signin"),
        signin_param=values.get(prefix + "auth-signin-redirect-param", "rd"),
        request_redirect=values.get(prefix + "auth-request-redirect"),
        always_set_cookie=values.get(prefix + "auth-always-set-cookie", False),
        cache_key=cache_key,
        cache_durations=values.get(prefix + "auth-cache-duration", DEFAULT_DURATIONS)
        if cache_on
        else (),
        **keepalive,
    )


def _busy_buffers(values: Mapping[str, Any], base: RoutePolicy, messages: list[str]) -> int | None:
    """proxy-busy-buffers-size, if it passes nginx's checks against the buffers
    (nginx would refuse the whole configuration; ingressd reports it and uses its
    default, two buffers)."""
    busy = values.get("proxy-busy-buffers-size")
    if busy is None:
        return None
    number = values.get("proxy-buffers-number", base.proxy_buffers_number) or 4
    size = values.get("proxy-buffer-size", base.proxy_buffer_size) or 4096
    why = buffering.check_busy(busy, number, size)
    if why is not None:
        messages.append(f"proxy-busy-buffers-size {busy} is invalid: {why}; it is ignored")
        return None
    return int(busy)


def _mirror(values: Mapping[str, Any], messages: list[str]) -> Mirror | None:
    """mirror-target with mirror-host and mirror-request-body (annotations/mirror/main.go)."""
    target = values.get("mirror-target")
    if target is None:
        idle = ", ".join(k for k in ("mirror-host", "mirror-request-body") if k in values)
        if idle:
            messages.append(f"{idle}: no effect without mirror-target; nothing is mirrored")
        return None
    scheme, host, port, path = target
    return Mirror(
        scheme=scheme,
        host=host,
        port=port,
        path=path,
        host_header=values.get("mirror-host", host),
        request_body=values.get("mirror-request-body", True),
    )


_TRACING_COMPANIONS = ("opentelemetry-trust-incoming-span", "opentelemetry-operation-name")


def _route_tracing(values: Mapping[str, Any], messages: list[str]) -> RouteTracing | None:
    """enable-opentelemetry and its companions, which ingress-nginx reads only beside
    enable-opentelemetry: "true" (annotations/opentelemetry/main.go Parse)."""
    enabled = values.get("enable-opentelemetry")
    if not enabled:
        idle = ", ".join(k for k in _TRACING_COMPANIONS if k in values)
        if idle:
            messages.append(
                f'{idle}: no effect without enable-opentelemetry: "true" on the same Ingress'
            )
        return None if enabled is None else RouteTracing(False)
    why = missing_tracing()
    if why is not None:
        messages.append(f"enable-opentelemetry: {why}")
    return RouteTracing(
        True,
        values.get("opentelemetry-trust-incoming-span"),
        values.get("opentelemetry-operation-name"),
    )


def _client_auth_ref(values: Mapping[str, Any], messages: list[str]) -> ClientAuthRef | None:
    """auth-tls-*: what the Ingress asks of client certificates (None: nothing)."""
    ref = values.get("auth-tls-secret")
    if ref is None:
        idle = ", ".join(k for k in CLIENT_AUTH_KEYS[1:] if k in values)
        if idle:
            messages.append(f"{idle}: no effect without auth-tls-secret; no client certificates")
        return None
    verify = values.get("auth-tls-verify-client", "on")
    if verify == "off":
        return None  # nginx: ssl_verify_client off; no ssl-client-* headers either
    return ClientAuthRef(
        namespace=ref[0],
        secret=ref[1],
        verify=verify,
        depth=values.get("auth-tls-verify-depth", 1),
        error_page=values.get("auth-tls-error-page"),
        pass_certificate=values.get("auth-tls-pass-certificate-to-upstream", False),
        match_cn=values.get("auth-tls-match-cn"),
    )


def expand_target(
    target: str, match: RegexMatch | None, escape: Callable[[str], str] | None = None
) -> str:
    """Substitute ``$1``…``$9`` in a rewrite target; missing groups become ''.

    ``escape`` is applied to each group's text (a decoded path's pieces must
    be escaped again to go into a request target)."""
    if "$" not in target:
        return target
    if match is None:
        return _DOLLAR_REF.sub("", target)

    def group(m: re.Match[str]) -> str:
        n = int(m.group(1))
        try:
            text = match.group(n) or ""
        except IndexError:
            return ""
        return escape(text) if escape is not None and text else text

    return _DOLLAR_REF.sub(group, target)
