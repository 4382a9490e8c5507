"""Ingress annotations parsed into typed, validated values.

Both the ``nginx.ingress.kubernetes.io/`` prefix (so existing Ingresses keep
working) and ``ingressd.io/`` are read; when both carry the same annotation the
``ingressd.io/`` one wins. A value that does not parse is reported and the
annotation ignored — never passed through as raw configuration.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from .model import DEFAULT_POLICY, RoutePolicy

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


# annotation name (without prefix) -> (RoutePolicy field, parser)
_PARSERS: Mapping[str, tuple[str, Callable[[str], Any]]] = {
    "rewrite-target": ("rewrite_target", parse_rewrite_target),
    "use-regex": ("use_regex", parse_bool),
    "ssl-redirect": ("ssl_redirect", parse_bool),
    "force-ssl-redirect": ("force_ssl_redirect", parse_bool),
}

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


def parse_policy(annotations: Mapping[str, str] | None) -> tuple[RoutePolicy, list[str]]:
    """Return the policy and one message per annotation rejected.

    Every value rejected, and every annotation refused or not implemented, is
    named with its key and value.
    """
    changes: dict[str, Any] = {}
    messages: list[str] = []
    for short, (key, value) in sorted(collect(annotations).items()):
        if short in REFUSED:
            messages.append(
                f"annotation {key} is refused: raw proxy configuration is not supported"
            )
            continue
        parser = _PARSERS.get(short)
        if parser is None:
            messages.append(f"annotation {key} is not supported by ingressd and is ignored")
            continue
        field_name, parse = parser
        try:
            changes[field_name] = parse(value)
        except AnnotationError as exc:
            messages.append(f"annotation {key}={value!r} is invalid: {exc}")
    policy = replace(DEFAULT_POLICY, **changes) if changes else DEFAULT_POLICY
    return policy, messages


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
