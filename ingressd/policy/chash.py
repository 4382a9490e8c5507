"""``upstream-hash-by``: the key a request is hashed by, parsed and rendered.

The annotation is an nginx "complex value": text and ``$variables``
(``$request_uri``, ``${host}-x``), split as ingress-nginx's
``util.parse_complex_value`` splits it and rendered per request as
``util.generate_var_value`` renders it (``rootfs/etc/nginx/lua/util.lua``).
Its value passes ingress-nginx's validator first
(``internal/ingress/annotations/upstreamhashby``: letters, digits, ``-``,
``_``, ``$``, ``{``, ``}``).

Where ingress-nginx differs from what is safe, ingressd fails closed instead:
nginx renders a variable it does not know as nothing, so a typo hashes every
request to one endpoint; here such a value is invalid, reported, and the
route is balanced as if it were not set. The ring itself is
``model/hashring.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from ..model.nginx_vars import split_variables
from ..model.regex import fixed

# ingress-nginx's hashByRegex (upstreamhashby/main.go).
_ALLOWED: Final = fixed(r"^[A-Za-z0-9\-_${}]*$")

# Variables taken whole, and those taking a name after their prefix.
VARIABLES: Final = frozenset(
    {
        "request_uri",
        "uri",
        "document_uri",
        "args",
        "query_string",
        "is_args",
        "remote_addr",
        "host",
        "scheme",
        "request_method",
    }
)
PREFIXES: Final = ("http_", "cookie_", "arg_")

# The rendered key is cut here: it is hashed per request, and a client chooses
# most of it (a header, a URI up to the 8 KiB request line).
MAX_KEY: Final = 4096
MAX_VALUE: Final = 1024  # the annotation itself


def parse_key(value: str) -> tuple[str, ...]:
    """The key template as parts: literal, variable, literal, … literal.

    Raises ValueError for what ingress-nginx's validator refuses, and for
    variables ingressd does not render (capture groups ``$1`` included).
    """
    if not value.strip():
        raise ValueError("the key is empty")
    if len(value) > MAX_VALUE:
        raise ValueError(f"the key is longer than {MAX_VALUE} characters")
    if not _ALLOWED.match(value):
        raise ValueError(
            "only letters, digits and -_${} are allowed (ingress-nginx's validator), "
            "e.g. $request_uri or ${host}-$http_x_user"
        )
    parts = list(split_variables(value, strict=False))  # a "$" without a name is itself
    for at in range(1, len(parts), 2):
        # lua-nginx-module lowercases variable names (ngx.var): $HTTP_X is $http_x.
        parts[at] = parts[at].lower()
        _check(parts[at])
    return tuple(parts)


def _check(name: str) -> None:
    if name in VARIABLES:
        return
    for prefix in PREFIXES:
        if name.startswith(prefix):
            if len(name) == len(prefix):
                raise ValueError(f"${name} names no {prefix[:-1]}")
            return
    if name.isdigit():
        raise ValueError(f"${name} is a regex capture group, which ingressd does not hash on")
    known = ", ".join(f"${v}" for v in sorted(VARIABLES))
    raise ValueError(
        f"${name} is not a variable ingressd can hash on ({known}, $http_NAME, "
        "$cookie_NAME, $arg_NAME); ingress-nginx would hash it as empty text"
    )


class KeyRequest:
    """What a key can be rendered from: one request, as routing sees it."""

    __slots__ = ("client_ip", "headers", "host", "method", "path", "query", "tls", "uri")

    def __init__(
        self,
        method: str,
        host: str,
        path: str,
        query: str,
        uri: str,
        client_ip: str,
        tls: bool,
        headers: Sequence[tuple[bytes, bytes]],
    ) -> None:
        self.method = method
        self.host = host  # normalised: lowercase, without port ($host)
        self.path = path  # as received ($request_uri)
        self.query = query
        self.uri = uri  # normalised, after rewrite-target ($uri)
        self.client_ip = client_ip
        self.tls = tls
        self.headers = headers


def render(parts: tuple[str, ...], req: KeyRequest) -> bytes:
    """The key for ``req``: the template with its variables' values, cut at ``MAX_KEY``."""
    out: list[str] = []
    for i, part in enumerate(parts):
        out.append(part if i % 2 == 0 else _value(part, req))
    key = "".join(out).encode("latin-1", "replace")
    return key[:MAX_KEY]


def _value(name: str, req: KeyRequest) -> str:
    """An nginx variable's value; "" where nginx's would be empty or not found."""
    if name == "request_uri":
        return f"{req.path}?{req.query}" if req.query else req.path
    if name == "uri" or name == "document_uri":
        return req.uri
    if name == "args" or name == "query_string":
        return req.query
    if name == "is_args":
        return "?" if req.query else ""
    if name == "remote_addr":
        return req.client_ip
    if name == "host":
        return req.host
    if name == "scheme":
        return "https" if req.tls else "http"
    if name == "request_method":
        return req.method
    if name.startswith("http_"):
        return _header(req.headers, name[5:].encode("latin-1"))
    if name.startswith("cookie_"):
        return _cookie(req.headers, name[7:].encode("latin-1"))
    if name.startswith("arg_"):
        return _arg(req.query, name[4:])
    return ""


def _header(headers: Sequence[tuple[bytes, bytes]], want: bytes) -> str:
    """$http_NAME: the header whose lowercase name, "-" as "_", is NAME (the first one)."""
    for name, value in headers:
        if len(name) == len(want) and name.lower().replace(b"-", b"_") == want:
            return value.decode("latin-1")
    return ""


def _cookie(headers: Sequence[tuple[bytes, bytes]], want: bytes) -> str:
    """$cookie_NAME: the value of cookie NAME, matched case-insensitively as nginx does."""
    for name, value in headers:
        if name.lower() != b"cookie":
            continue
        for pair in value.split(b";"):
            key, eq, cookie = pair.strip().partition(b"=")
            if eq and key.lower() == want:
                return cookie.decode("latin-1")
    return ""


def _arg(query: str, want: str) -> str:
    """$arg_NAME: the first argument NAME of the query (case-insensitive name, value as sent)."""
    if not query:
        return ""
    for pair in query.split("&"):
        key, eq, value = pair.partition("=")
        if eq and key.lower() == want:
            return value
    return ""
