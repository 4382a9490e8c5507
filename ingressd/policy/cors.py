"""CORS as ingress-nginx's ``enable-cors`` does it, answered by the proxy itself.

Preflight requests (OPTIONS) are answered with 204 without reaching the
upstream; other responses get the CORS headers, replacing any the upstream
set, so what the Ingress says is what browsers see.
"""

from __future__ import annotations

from ..model.regex import fixed

# Run on annotation values: on RE2, linear whatever the value (see model/regex.py).
_ORIGIN = fixed(r"^[a-z][a-z0-9+.-]*://(\*\.)?[a-z0-9.-]+(:\d{1,5})?$", ignore_case=True)
_TOKEN_LIST = fixed(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$")

HEADER_NAMES = frozenset(
    {
        b"access-control-allow-origin",
        b"access-control-allow-credentials",
        b"access-control-allow-methods",
        b"access-control-allow-headers",
        b"access-control-expose-headers",
        b"access-control-max-age",
    }
)


def parse_origins(value: str) -> tuple[str, ...]:
    """``*`` or a comma-separated list of ``scheme://host[:port]``, ``*.`` allowed once."""
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise ValueError("no origin given")
    if items == ("*",):
        return items
    for item in items:
        if not _ORIGIN.match(item):
            raise ValueError(
                f"origin {item!r} must look like https://example.com[:port] "
                "or https://*.example.com"
            )
    return tuple(i.lower() for i in items)


def parse_token_list(value: str) -> str:
    """Methods or header names: comma-separated tokens (no CR/LF can sneak in)."""
    value = value.strip()
    if value == "*":
        return value
    if not _TOKEN_LIST.match(value):
        raise ValueError(f"{value!r} is not a comma-separated list of names")
    return ", ".join(t.strip() for t in value.split(","))
