"""HTTP/1.1 message heads as bytes: what is forwarded, what is dropped, what is added.

Pure functions over header lists, shared by the client and upstream sides of
the proxy and testable without sockets.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Final, NamedTuple

import httptools

from ..model.globals import NAME_INVALID, NAME_UNDERSCORE, NAME_VALID
from .pages import REASONS

Headers = list[tuple[bytes, bytes]]

# Hop-by-hop headers (RFC 9110 7.6.1) plus the framing headers the proxy sets
# itself; Proxy-* is matched by prefix.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    }
)
# Set by ingressd from what it saw on the wire; a client cannot supply them.
# X-Scheme and X-Original-Forwarded-For are ingress-nginx's (nginx.tmpl sets both
# with proxy_set_header); a client's Proxy header is cleared against httpoxy
# (nginx.tmpl: proxy_set_header Proxy "").
OVERWRITTEN = frozenset(
    {
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-real-ip",
        b"x-scheme",
        b"x-original-forwarded-for",
        b"proxy",
    }
)
# Of OVERWRITTEN, what a trusted peer may say of the client (use-forwarded-headers,
# forwarded-for-header: X-Real-IP): kept aside per request rather than dropped, at
# most MAX_FORWARDED_IN lines of them.
FORWARDED_IN = frozenset(
    {b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port", b"x-real-ip"}
)
MAX_FORWARDED_IN: Final = 16

# What a client's Connection header may not remove from the upstream request:
# what the request is routed by (Host; nginx always sets Host itself) and what
# ingressd sets. Without this, "Connection: Host" routed by Host, then sent the
# upstream a request without one.
UNNOMINABLE = frozenset(
    {
        b"host",
        b"x-forwarded-for",
        b"x-request-id",
        b"close",
        b"keep-alive",
        b"upgrade",
        *OVERWRITTEN,
        *HOP_BY_HOP,
    }
)
# Upstream response headers that never reach the client, as nginx's proxy
# module hides them (ngx_http_proxy_hide_headers): Date is set anew, and
# ingress-nginx clears Server (nginx.tmpl: more_clear_headers Server, unless
# server-tokens); X-Pad and X-Accel-* are instructions to nginx, not to clients.
HIDDEN_RESPONSE: Final = frozenset({b"date", b"server", b"x-pad"})

# nginx's status lines (ngx_http_status_lines, pages.REASONS): what ingressd's own
# answers and an upstream response without a reason phrase (HTTP/2) are sent with.
# A status nginx has no phrase for goes as "HTTP/1.1 418 ", as nginx formats it;
# 1xx ones come from upstreams with their own.
_INTERIM: Final = {s.value: s.phrase.encode() for s in HTTPStatus if s.value < 200}
STATUS_LINES: Final = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, REASONS.get(code, _INTERIM.get(code, b"")))
    for code in range(100, 600)
}
_PHRASES: Final = {code: line[13:-2] for code, line in STATUS_LINES.items()}


def status_line(status: int, reason: bytes = b"") -> bytes:
    # The upstream's own reason phrase is kept; nginx's (or none) costs no formatting.
    line = STATUS_LINES.get(status) if not reason or reason == _PHRASES.get(status) else None
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason)
    return line


# The Connection values nearly every message carries, with their tokens: no split,
# strip and lower (method calls on bytes, each a generic one in compiled code).
_COMMON_CONNECTION: Final = {
    value: frozenset({value.lower()})
    for value in (b"keep-alive", b"Keep-Alive", b"close", b"Close", b"upgrade", b"Upgrade")
}


def connection_tokens(value: bytes) -> set[bytes]:
    common = _COMMON_CONNECTION.get(value)
    if common is not None:
        return set(common)
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


# server-tokens (ProxyState.apply_settings calls set_server_header): the Server line
# every response carries after its Date, or, when the upstream's own Server is passed
# (allow-backend-server-header), the one only ingressd's own answers carry (proxied
# responses without one get it in split_response). Empty: none, ingress-nginx's default.
SERVER_TOKEN: Final = b"ingressd"
# time.time, held Final: compiled code calls it without a module attribute lookup.
_wallclock: Final = time.time


class _Heads:
    """What every response head shares: the Date line, made once a second, and
    the Server lines of server-tokens. One instance, held Final, so compiled code
    reads its attributes natively where module globals rebound by ``global`` are
    looked up in the module's dict at each use."""

    __slots__ = ("date_line", "date_value", "local_server", "pass_server", "second", "server")

    def __init__(self) -> None:
        self.second = -1
        self.date_line = b""
        self.date_value = b""
        self.server = b""
        self.local_server = b""
        self.pass_server = False


_HEADS: Final = _Heads()


def set_server_header(tokens: bool, backend: bool) -> None:
    line = b"Server: " + SERVER_TOKEN + b"\r\n" if tokens else b""
    heads = _HEADS
    heads.pass_server = tokens and backend
    heads.server = b"" if heads.pass_server else line
    heads.local_server = line if heads.pass_server else b""
    heads.second = -1  # the Date line is made again, with it


def date_line() -> bytes:
    """``Date: ...\r\n`` for now, formatted once a second (nginx's cached time),
    then the Server line under server-tokens."""
    heads = _HEADS
    now = int(_wallclock())
    if now != heads.second:
        heads.date_value = formatdate(now, usegmt=True).encode()
        heads.date_line = b"Date: " + heads.date_value + b"\r\n" + heads.server
        heads.second = now
    return heads.date_line


def date_value() -> bytes:
    """The Date header's value for now (HTTP/2 fields)."""
    date_line()
    return _HEADS.date_value


def server_value(local: bool) -> bytes | None:
    """The Server field an HTTP/2 response carries: ``local``, for ingressd's own
    answers (as ``date_line`` and ``local_response`` do for HTTP/1.1)."""
    if _HEADS.server or (local and _HEADS.local_server):
        return SERVER_TOKEN
    return None


# nginx's classes of request header names (ngx_http_parse_header_line): letters, digits
# and "-" are valid; "_" only with underscores_in_headers; any other byte makes the
# name invalid. With ignore_invalid_headers (on, as in ingress-nginx) such a line is
# dropped, never passed upstream: the ConfigMap's enable-underscores-in-headers and
# ignore-invalid-headers, as ProxySettings.drop_names_from.
# The classes are model/globals.py's (the ConfigMap's parser names them too).
_NAME_BYTES: Final = b"-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Names classed, remembered up to this many (names are the client's choice: past
# it, a new name is classed each time and not kept).
NAME_CLASSES_MAX: Final = 4096
_NAME_CLASSES: Final[dict[bytes, int]] = {}


def name_class(name: bytes) -> int:
    """NAME_VALID, NAME_UNDERSCORE or NAME_INVALID, for a request header's name."""
    found = _NAME_CLASSES.get(name)
    if found is not None:
        return found
    rest = name.translate(None, _NAME_BYTES)
    if not rest:
        kind = NAME_VALID
    elif not rest.translate(None, b"_"):
        kind = NAME_UNDERSCORE
    else:
        kind = NAME_INVALID
    if len(_NAME_CLASSES) < NAME_CLASSES_MAX:
        _NAME_CLASSES[name] = kind
    return kind


def replace_named(headers: Headers, lname: bytes, name: bytes, value: bytes) -> Headers:
    """``headers`` without any ``lname`` (lowercase) line, then ``name: value``. Per
    response: only names of the same length are lowered."""
    size = len(lname)
    out = [h for h in headers if len(h[0]) != size or h[0].lower() != lname]
    out.append((name, value))
    return out


def set_named(
    headers: Headers | tuple[tuple[bytes, bytes], ...],
    names: AbstractSet[bytes],
    values: tuple[tuple[bytes, bytes], ...],
) -> Headers:
    """``headers`` less any named in ``names`` (lowercase), then ``values`` whose value
    is not empty: headers-more's ``more_set_headers``, which replaces (and with an
    empty value only removes) every header of the name (add-headers, custom-headers)."""
    out = [(n, v) for n, v in headers if n.lower() not in names]
    out += [h for h in values if h[1]]
    return out


def drop_named(headers: Headers, names: AbstractSet[bytes]) -> Headers:
    """Headers without those ``names`` (lowercase): named by Connection, or replaced."""
    return [(n, v) for n, v in headers if n.lower() not in names]


def serialize(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    out: list[bytes] = []
    serialize_into(out, headers)
    return b"".join(out)


def serialize_into(out: list[bytes], headers: Iterable[tuple[bytes, bytes]]) -> None:
    """Header lines as pieces appended to ``out``, for the caller's one join: no
    line is copied whole before the join copies it again."""
    for name, value in headers:
        out.append(name)
        out.append(b": ")
        out.append(value)
        out.append(b"\r\n")


def response_headers(headers: Headers) -> Headers:
    """Upstream response headers to pass on: hop-by-hop ones, those named by
    the upstream's Connection header, and those nginx hides removed."""
    return split_response(headers, False)[0]


# What split_response does with an upstream response header, by its name as sent:
# learned on first sight (bounded: past the limit a name is classified each time),
# so a known name costs one dict probe, not a lowered copy and three set probes.
_PASS: Final = 1  # to the client
_LENGTH: Final = 2  # Content-Length
_CHUNKED: Final = 3  # Transfer-Encoding
_CONNECTION: Final = 4
_HOP: Final = 5  # other hop-by-hop and Proxy-*: dropped
_SERVER: Final = 6  # dropped unless allow-backend-server-header
_HIDDEN: Final = 7  # Date, X-Pad, X-Accel-*: dropped
_RESPONSE_KINDS: Final[dict[bytes, int]] = {}
_RESPONSE_KINDS_MAX: Final = 1024


def _response_kind(name: bytes) -> int:
    lname = name.lower()
    if lname in HOP_BY_HOP or lname.startswith(b"proxy-"):
        if lname == b"content-length":
            kind = _LENGTH
        elif lname == b"transfer-encoding":
            kind = _CHUNKED
        elif lname == b"connection":
            kind = _CONNECTION
        else:
            kind = _HOP
    elif lname == b"server":
        kind = _SERVER
    elif lname in HIDDEN_RESPONSE or lname.startswith(b"x-accel-"):
        kind = _HIDDEN
    else:
        kind = _PASS
    if len(_RESPONSE_KINDS) < _RESPONSE_KINDS_MAX:
        _RESPONSE_KINDS[name] = kind
    return kind


def split_response(headers: Headers, head: bool = True) -> tuple[Headers, bool, bytes | None]:
    """In one pass over an upstream response's headers: those to pass on (as
    ``response_headers``), whether the body is chunked, and its Content-Length.
    ``head``: a response head, not trailers (only a head gets ingressd's Server)."""
    out: Headers = []
    named: set[bytes] | None = None
    chunked = False
    length = None
    server = False
    pass_server = _HEADS.pass_server
    kinds = _RESPONSE_KINDS
    for name, value in headers:
        kind = kinds.get(name, 0)
        if kind == 0:
            kind = _response_kind(name)
        if kind == _PASS:
            out.append((name, value))
        elif kind == _LENGTH:
            length = value
        elif kind == _CHUNKED:
            chunked = True
        elif kind == _CONNECTION:
            if value not in _COMMON_CONNECTION:  # those name nothing to drop
                named = connection_tokens(value) | (named or set())
        elif kind == _SERVER and pass_server:  # allow-backend-server-header
            server = True
            out.append((name, value))
    if pass_server and head and not server:
        out.append((b"Server", SERVER_TOKEN))
    if named:
        named -= {b"close", b"keep-alive", b"upgrade"}
        if named:
            out = drop_named(out, named)
    return out, chunked, length


def local_response(
    status: int,
    body: bytes,
    *,
    keep_alive: bool,
    location: str | None = None,
    head_only: bool = False,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> bytes:
    """A complete response generated by ingressd itself (errors, redirects, preflights).

    ``body``: nginx's page for the status (``pages.page``), sent as text/html, or
    one the answer brings with its own Content-Type in ``headers``; an empty one
    goes without Content-Type, as nginx sends a status it has no page for.
    Without a Server header, as ingress-nginx by default (server-tokens off).
    """
    parts = [status_line(status), date_line(), _HEADS.local_server]
    if status == 204:
        body = b""  # 204 has neither body nor Content-Length
    else:
        if body and not any(name.lower() == b"content-type" for name, _ in headers):
            parts.append(b"Content-Type: text/html\r\n")
        parts.append(b"Content-Length: %d\r\n" % len(body))
    if location is not None:
        parts.append(b"Location: " + location.encode("latin-1", "replace") + b"\r\n")
    for name, value in headers:
        parts.append(name + b": " + value + b"\r\n")
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    if not head_only:
        parts.append(body)
    return b"".join(parts)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK: Final = b"0\r\n\r\n"


class Target(NamedTuple):
    """The parts of an absolute-form request target; None where it has none."""

    host: bytes | None
    port: int | None
    path: bytes | None
    query: bytes | None


def parse_target(url: bytes) -> Target:
    """``url`` parsed by httptools (HttpParserInvalidURLError if it is not a URL).

    httptools' stubs declare every part of its URL as present (``port: int``,
    ``host: bytes``...), yet an absent part is None. Compiled code checks
    declared types when it reads them, so a request target without a port
    raised TypeError there (a 500): the parts are read untyped here and typed
    as they are."""
    parsed: Any = httptools.parse_url(url)
    return Target(parsed.host, parsed.port, parsed.path, parsed.query)
