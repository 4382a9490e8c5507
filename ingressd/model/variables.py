"""nginx's request variables: the one table of those ingressd renders, and the resolver.

Every place that takes an nginx "complex value" (text with ``$name`` in it)
and renders it per request goes through here: the snippets' values
(model/snippet.py), ``upstream-hash-by`` and the global rate limit's key
(policy/chash.py), ``permanent-redirect`` / ``temporal-redirect``, ``app-root``
and ``x-forwarded-prefix`` (routing/decide.py, model/table.py). Text is split
into parts once, when the table is built (model/nginx_vars.py), and each name
is checked against ``VARIABLES`` there (``unknown``); per request a value is
only looked up (``value``) and the parts joined (``render``).

The meanings are nginx's (ngx_http_variables.c, ngx_http_core_module docs);
where a name is unknown to ingressd, the caller reports the text invalid with
the name, never serves a literal ``$name`` nor nginx's empty text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from .nginx_vars import VariableError, split_variables

# name -> what it holds, as nginx defines it. Besides these: the prefixes below.
VARIABLES: Final[dict[str, str]] = {
    "request_uri": "the original request URI with its arguments, as received (not decoded)",
    "uri": "the current URI: decoded and normalised (after rewrites where nginx rewrites)",
    "document_uri": "the same as $uri",
    "args": "the arguments of the request line, as received",
    "query_string": "the same as $args",
    "is_args": '"?" when the request has arguments, else empty',
    "host": "the host from the request line, else from the Host header; lowercase, without port",
    "http_host": "the Host header as received",
    "scheme": '"http" or "https"',
    "server_port": "the port the request arrived on",
    "remote_addr": "the client address (the real one under use-forwarded-headers / PROXY)",
    "request_method": "the method",
    "req_id": "the request id (X-Request-ID), where it is known",
    "request_id": "the same as $req_id",
}
# Names taking a request part after the prefix, case-insensitively as nginx does.
PREFIXES: Final[dict[str, str]] = {
    "http_": '$http_NAME: request header NAME ("-" written "_"); several joined with ", "',
    "cookie_": "$cookie_NAME: the value of cookie NAME",
    "arg_": "$arg_NAME: the value of argument NAME in the query (the first)",
}
REQUEST_ID_VARIABLES: Final = frozenset({"req_id", "request_id"})


def unknown(name: str) -> str | None:
    """Why ``name`` (lowercase) is not a variable ingressd renders; None when it is."""
    if name in VARIABLES:
        return None
    for prefix in PREFIXES:
        if name.startswith(prefix):
            return None if len(name) > len(prefix) else f"${name} names no {prefix[:-1]}"
    if name.isdigit():
        return f"${name} is a regex capture group, which is not set here"
    return f"${name} is not a variable ingressd knows ({described()})"


def described() -> str:
    """The supported names, for messages and documentation."""
    return ", ".join([f"${n}" for n in VARIABLES] + ["$http_NAME", "$cookie_NAME", "$arg_NAME"])


def template(text: str) -> tuple[str, ...]:
    """``text`` as parts (literal, name, ..., literal) with lowercase names, every
    name one ingressd renders; ValueError naming the first that is not, or a "$"
    nginx would refuse (as ``nginx -t`` refuses the configuration)."""
    try:
        parts = lower_names(split_variables(text, strict=True))
    except VariableError as exc:
        raise ValueError(str(exc)) from None
    why = first_unknown(parts)
    if why is not None:
        raise ValueError(why)
    return parts


def lower_names(parts: tuple[str, ...]) -> tuple[str, ...]:
    """``parts`` with the variable names lowercase: nginx's names are case-insensitive."""
    return tuple(p.lower() if i % 2 else p for i, p in enumerate(parts))


def first_unknown(parts: tuple[str, ...]) -> str | None:
    """Why the first variable of ``parts`` ingressd cannot render is refused; None: all render."""
    for i in range(1, len(parts), 2):
        why = unknown(parts[i])
        if why is not None:
            return why
    return None


class RequestVars:
    """One request as the variables see it. Built per request, only by the paths
    that render a template (so a plain class: native and cheap when compiled)."""

    __slots__ = (
        "headers",
        "host",
        "http_host",
        "method",
        "path",
        "query",
        "redirect_port",
        "remote_addr",
        "request_id",
        "scheme",
        "server_port",
        "uri",
    )

    def __init__(
        self,
        host: str,
        http_host: str,
        path: str,
        uri: str,
        query: str,
        scheme: str,
        remote_addr: str,
        method: str,
        headers: Sequence[tuple[bytes, bytes]],
        request_id: str = "",
        redirect_port: str = "",
        server_port: str = "",
    ) -> None:
        self.host = host  # $host: lowercase, without port
        self.http_host = http_host  # the Host header as received
        self.path = path  # as received, without the query
        self.uri = uri  # decoded and normalised, as locations match it
        self.query = query
        self.scheme = scheme
        self.remote_addr = remote_addr
        self.method = method
        self.headers = headers
        self.request_id = request_id
        # ":PORT" for relative redirects made absolute (use-port-in-redirects), else "".
        self.redirect_port = redirect_port
        self.server_port = server_port


def value(name: str, req: RequestVars) -> str:
    """The value of variable ``name`` (checked by ``unknown`` when the text was read)
    for ``req``; "" where nginx's is empty or not found."""
    if name == "request_uri":
        return req.path + "?" + req.query if req.query else req.path
    if name == "host":
        return req.host
    if name == "uri" or name == "document_uri":
        return req.uri
    if name == "args" or name == "query_string":
        return req.query
    if name == "scheme":
        return req.scheme
    if name == "http_host":
        return req.http_host
    if name == "is_args":
        return "?" if req.query else ""
    if name == "remote_addr":
        return req.remote_addr
    if name == "request_method":
        return req.method
    if name == "server_port":
        return req.server_port
    if name == "req_id" or name == "request_id":
        return req.request_id
    if name.startswith("http_"):
        return header(req.headers, name[5:])
    if name.startswith("cookie_"):
        return cookie(req.headers, name[7:])
    if name.startswith("arg_"):
        return arg(req.query, name[4:])
    return ""


def render(parts: tuple[str, ...], req: RequestVars) -> str:
    """``parts`` (literal, name, literal, ..., literal) with the names' values."""
    if len(parts) == 1:
        return parts[0]
    out = [parts[0]]
    for i in range(1, len(parts), 2):
        out.append(value(parts[i], req))
        out.append(parts[i + 1])
    return "".join(out)


def header(headers: Sequence[tuple[bytes, bytes]], key: str) -> str:
    """$http_NAME: every header whose name, lowercase with "-" as "_", is ``key``
    (ngx_http_variable_unknown_header), joined as nginx joins several: ", ", and
    "; " for Cookie."""
    want = key.lower().encode("latin-1", "replace")
    found: list[bytes] = []
    for name, val in headers:
        if len(name) == len(want) and name.lower().replace(b"-", b"_") == want:
            found.append(val)
    if not found:
        return ""
    if len(found) == 1:
        return found[0].decode("latin-1")
    sep = b"; " if want == b"cookie" else b", "
    return sep.join(found).decode("latin-1")


def cookie(headers: Sequence[tuple[bytes, bytes]], key: str) -> str:
    """$cookie_NAME: the value of the first cookie NAME (name case-insensitive, as
    ngx_http_parse_multi_header_lines compares it), as sent."""
    want = key.lower().encode("latin-1", "replace")
    for name, val in headers:
        if name.lower() != b"cookie":
            continue
        for pair in val.split(b";"):
            k, eq, v = pair.strip().partition(b"=")
            if eq and k.lower() == want:
                return v.decode("latin-1")
    return ""


def arg(query: str, key: str) -> str:
    """$arg_NAME: the value of the first argument NAME (name case-insensitive, as
    ngx_http_arg compares it), as sent: not decoded."""
    if not query:
        return ""
    want = key.lower()
    for pair in query.split("&"):
        k, eq, v = pair.partition("=")
        if eq and k.lower() == want:
            return v
    return ""
