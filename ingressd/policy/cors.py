"""CORS as ingress-nginx's ``enable-cors`` does it, answered by the proxy itself.

Preflight requests (OPTIONS) are answered with 204 without reaching the
upstream; other responses get the CORS headers, replacing any the upstream
set, so what the Ingress says is what browsers see.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model.regex import fixed

# ingress-nginx's defaults
DEFAULT_METHODS = "GET, PUT, POST, DELETE, PATCH, OPTIONS"
DEFAULT_HEADERS = (
    "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,"
    "Content-Type,Range,Authorization"
)
DEFAULT_MAX_AGE = 1728000

# Run on annotation values: on RE2, linear whatever the value (see regex.py).
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


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    origins: tuple[str, ...] = ("*",)
    methods: str = DEFAULT_METHODS
    headers: str = DEFAULT_HEADERS
    expose: str = ""
    credentials: bool = True
    max_age: int = DEFAULT_MAX_AGE

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
        out = [(b"Access-Control-Allow-Origin", allow.encode("latin-1"))]
        if self.credentials:
            out.append((b"Access-Control-Allow-Credentials", b"true"))
        out += [
            (b"Access-Control-Allow-Methods", self.methods.encode()),
            (b"Access-Control-Allow-Headers", self.headers.encode()),
        ]
        if self.expose:
            out.append((b"Access-Control-Expose-Headers", self.expose.encode()))
        out.append((b"Access-Control-Max-Age", str(self.max_age).encode()))
        if allow != "*":
            # The answer depends on Origin: caches must not reuse it for others.
            out.append((b"Vary", b"Origin"))
        return out

    preflight_headers = response_headers
