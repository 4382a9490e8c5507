"""Ingress annotations parsed into typed, validated values.

Both the ``nginx.ingress.kubernetes.io/`` prefix (so existing Ingresses keep
working) and ``ingressd.io/`` are read; when both carry the same annotation the
``ingressd.io/`` one wins. A value that does not parse is reported and the
annotation ignored — never passed through as raw configuration.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any, Literal, NamedTuple

from .cors import (
    DEFAULT_HEADERS,
    DEFAULT_MAX_AGE,
    DEFAULT_METHODS,
    CorsPolicy,
    parse_origins,
    parse_token_list,
)
from .model import DEFAULT_POLICY, IPNetwork, RoutePolicy

PREFIXES = ("nginx.ingress.kubernetes.io/", "ingressd.io/")

# Raw-config injection is refused on purpose: it is how ingress-nginx got its
# worst CVEs, and ingressd has no config language to inject into.
REFUSED = frozenset({"configuration-snippet", "server-snippet", "auth-snippet", "stream-snippet"})

_DOLLAR_REF = re.compile(r"\$(\d)")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


class AnnotationError(ValueError):
    pass


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


_SIZE = re.compile(r"^(\d+)([kKmMgG]?)$")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_HOST_PORT = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:\d{1,5})?$")
_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$", re.IGNORECASE)


def parse_size(value: str) -> int:
    """nginx size syntax: ``8k``, ``1m``, ``2g`` or bytes; ``0`` means unlimited."""
    m = _SIZE.match(value.strip())
    if not m:
        raise AnnotationError(f"{value!r} is not a size like 512k, 8m or 1g")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


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


def parse_redirect_code(value: str) -> int:
    v = value.strip()
    if not v.isdigit() or not 300 <= int(v) <= 308:
        raise AnnotationError(f"{value!r} is not a redirect status code (300-308)")
    return int(v)


def parse_header_value(value: str) -> bytes:
    if not value or _CONTROL.sub("", value.replace(" ", "")) != value.replace(" ", ""):
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


# annotation name (without prefix) -> parser of its value
_PARSERS: Mapping[str, Callable[[str], Any]] = {
    "rewrite-target": parse_rewrite_target,
    "use-regex": parse_bool,
    "ssl-redirect": parse_bool,
    "force-ssl-redirect": parse_bool,
    "app-root": parse_path,
    "permanent-redirect": parse_url,
    "permanent-redirect-code": parse_redirect_code,
    "temporal-redirect": parse_url,
    "temporal-redirect-code": parse_redirect_code,
    "from-to-www-redirect": parse_bool,
    "x-forwarded-prefix": parse_header_value,
    "upstream-vhost": parse_host,
    "proxy-body-size": parse_size,
    "proxy-connect-timeout": parse_seconds,
    "proxy-read-timeout": parse_seconds,
    "proxy-send-timeout": parse_seconds,
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
}

# Annotation -> RoutePolicy field, for those that map one to one.
_FIELDS: Mapping[str, str] = {
    "rewrite-target": "rewrite_target",
    "use-regex": "use_regex",
    "ssl-redirect": "ssl_redirect",
    "force-ssl-redirect": "force_ssl_redirect",
    "app-root": "app_root",
    "from-to-www-redirect": "from_to_www_redirect",
    "x-forwarded-prefix": "x_forwarded_prefix",
    "upstream-vhost": "upstream_vhost",
    "proxy-body-size": "proxy_body_size",
    "proxy-connect-timeout": "proxy_connect_timeout",
    "proxy-read-timeout": "proxy_read_timeout",
    "proxy-send-timeout": "proxy_send_timeout",
}

# Invalid values of these must not leave the route open: it answers 403 instead.
SECURITY = frozenset({"whitelist-source-range", "allowlist-source-range", "denylist-source-range"})

SUPPORTED = frozenset(_PARSERS)


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
    for short, (key, value) in sorted(collect(raw).items()):
        yield short, *_verdict(short, key, value)
        # The nginx.ingress.kubernetes.io/ twin of an ingressd.io/ annotation is
        # never read; say so rather than leave it out of a report.
        for twin in (prefix + short for prefix in PREFIXES):
            if twin != key and twin in raw:
                reason = f"annotation {twin} is overridden by {key}"
                yield short, Verdict(twin, str(raw[twin]), "overridden", reason), None


def _verdict(short: str, key: str, value: str) -> tuple[Verdict, Any]:
    if short in REFUSED:
        reason = f"annotation {key} is refused: raw proxy configuration is not supported"
        return Verdict(key, value, "refused", reason), None
    parse = _PARSERS.get(short)
    if parse is None:
        reason = f"annotation {key} is not supported by ingressd and is ignored"
        return Verdict(key, value, "unsupported", reason), None
    try:
        parsed = parse(value)
    except AnnotationError as exc:
        reason = f"annotation {key}={value!r} is invalid: {exc}"
        if short in SECURITY:
            reason += "; its routes answer 403 until it is fixed"
        elif short == "cors-allow-origin":
            # ingress-nginx falls back to "*" here; ingressd allows nobody instead.
            reason += "; no origin is allowed until it is fixed"
        return Verdict(key, value, "invalid", reason), None
    return Verdict(key, value, "supported", ""), parsed


def classify(annotations: Mapping[str, str] | None) -> list[Verdict]:
    """Every annotation of ours, by name: supported, unsupported, refused, invalid or overridden."""
    return [verdict for _, verdict, _ in _judge(annotations)]


def parse_policy(annotations: Mapping[str, str] | None) -> tuple[RoutePolicy, list[str]]:
    """Return the policy and one message per annotation rejected.

    Every value rejected, and every annotation refused or not implemented, is
    named with its key and value.
    """
    values: dict[str, Any] = {}
    messages: list[str] = []
    fail_closed: tuple[int, str] | None = None
    for short, verdict, parsed in _judge(annotations):
        if verdict.status == "supported":
            values[short] = parsed
        elif verdict.status != "overridden":
            messages.append(verdict.reason)
            if verdict.status == "invalid" and short in SECURITY:
                fail_closed = fail_closed or (403, f"invalid {short} annotation")
            elif verdict.status == "invalid" and short == "cors-allow-origin":
                values[short] = ()
    if not values and fail_closed is None:
        return DEFAULT_POLICY, messages
    changes: dict[str, Any] = {_FIELDS[k]: v for k, v in values.items() if k in _FIELDS}
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
    if values.get("enable-cors"):
        changes["cors"] = CorsPolicy(
            origins=values.get("cors-allow-origin", ("*",)),
            methods=values.get("cors-allow-methods", DEFAULT_METHODS),
            headers=values.get("cors-allow-headers", DEFAULT_HEADERS),
            expose=values.get("cors-expose-headers", ""),
            credentials=values.get("cors-allow-credentials", True),
            max_age=values.get("cors-max-age", DEFAULT_MAX_AGE),
        )
    if fail_closed is not None:
        changes["fail_closed"] = fail_closed
    return replace(DEFAULT_POLICY, **changes), messages


def expand_target(target: str, match: re.Match[str] | None) -> str:
    """Substitute ``$1``…``$9`` in a rewrite target; missing groups become ''."""
    if "$" not in target:
        return target
    if match is None:
        return _DOLLAR_REF.sub("", target)

    def group(m: re.Match[str]) -> str:
        n = int(m.group(1))
        if n == 0:
            return match.group(0)
        try:
            return match.group(n) or ""
        except IndexError:
            return ""

    return _DOLLAR_REF.sub(group, target)
