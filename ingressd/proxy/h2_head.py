"""An HTTP/2 request head: the checks HTTP/2 itself asks for, and its mapping
onto an ``Exchange`` (nginx's mapping to an HTTP/1.1 upstream request).

The ``h2`` package can check and normalise received heads itself
(``validate_inbound_headers``, ``normalize_inbound_headers``), in seven chained
generators per head: about a third of its cost per request. ``client_h2``
turns both off and calls ``checked_request_head`` instead: one pass over the
fields with a dictionary of known names decides whether a head is plainly
well-formed; any head it is not sure of goes through h2's own checks and
normalisation, unchanged, so what is refused and how (a ``ProtocolError``, a
connection error as before) stays h2's. ``read_head`` then joins split
``cookie`` fields, as h2's normalisation would have.
"""

from __future__ import annotations

import re
from typing import Final

from h2.utilities import HeaderValidationFlags, normalize_inbound_headers, validate_headers

from . import http
from .exchange import Exchange
from .settings import ProxySettings

Header = tuple[bytes, bytes]

_REQUEST: Final = HeaderValidationFlags(
    is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False
)
_TRAILER: Final = HeaderValidationFlags(
    is_client=False, is_trailer=True, is_response_header=False, is_push_promise=False
)

# What a field name is to the plain-head check. Pseudo-headers are bits, so
# that duplicates and the required set are one mask each.
_METHOD, _SCHEME, _AUTHORITY, _PATH = 1, 2, 4, 8
_PSEUDO: Final = _METHOD | _SCHEME | _AUTHORITY | _PATH
_FIELD, _TE, _FORBIDDEN, _HOST_FIELD = 16, 32, 64, 128
_KNOWN: Final[dict[bytes, int]] = {
    b":method": _METHOD,
    b":scheme": _SCHEME,
    b":authority": _AUTHORITY,
    b":path": _PATH,
    b"te": _TE,
    b"host": _HOST_FIELD,
    # Connection-specific fields make a request malformed (RFC 9113 8.2.2).
    **dict.fromkeys(
        (b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"),
        _FORBIDDEN,
    ),
}
# Names seen valid are remembered, up to this many (names are the client's
# choice: past it, a new name is checked each time and not kept).
KNOWN_NAMES_MAX: Final = 2048
# Bytes a field name may hold (RFC 9113 8.2.1: not 0x00-0x20, A-Z, 0x7f-0xff;
# a colon only as a pseudo-header's first byte, and those are all known).
_NAME_BYTES: Final = bytes(c for c in range(0x21, 0x7F) if not 0x41 <= c <= 0x5A and c != 0x3A)
_WHITESPACE: Final = (0x20, 0x09)


def _plain(headers: list[Header]) -> bool:
    """Whether a request head certainly passes h2's inbound checks and needs
    no normalisation beyond joining cookies: the four pseudo-headers once each
    and first (not CONNECT, a non-empty :path), no Host field, valid names, no
    connection-specific field, ``te`` only "trailers", and values without NUL,
    CR, LF or surrounding whitespace. False sends the head to h2's checks."""
    seen = 0
    regular = False
    for name, value in headers:
        kind = _KNOWN.get(name)
        if kind is None:
            if not name or name.translate(None, _NAME_BYTES):
                return False
            if len(_KNOWN) < KNOWN_NAMES_MAX:
                _KNOWN[name] = _FIELD
            kind = _FIELD
        if kind & _PSEUDO:
            if regular or seen & kind:
                return False
            seen |= kind
            if kind == _PATH and not value:
                return False
            if kind == _METHOD and value == b"CONNECT":
                return False
        else:
            regular = True
            if kind != _FIELD and (kind != _TE or value.lower() != b"trailers"):
                return False
        # Integers, not b"\r": a byte's membership test is a memchr, a
        # one-byte needle goes through the buffer protocol, ten times slower.
        if value and (
            13 in value
            or 10 in value
            or 0 in value
            or value[0] in _WHITESPACE
            or value[-1] in _WHITESPACE
        ):
            return False
    return seen == _PSEUDO


def checked_request_head(headers: list[Header]) -> list[Header]:
    """The head as h2 would hand it over with its inbound checks on; raises
    h2's ``ProtocolError`` for a malformed one."""
    if _plain(headers):
        return headers
    return list(validate_headers(normalize_inbound_headers(headers, _REQUEST), _REQUEST))


def check_trailers(headers: list[Header]) -> None:
    """Request trailers are not passed on, but malformed ones (pseudo-headers,
    bad bytes) still end the connection, as with h2's checks on."""
    for _ in validate_headers(headers, _TRAILER):
        pass


_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Bytes a :path or :authority may not hold: they would end up in the HTTP/1.1
# request line or Host header sent upstream.
_BAD_TARGET: Final = re.compile(rb"[\x00-\x20\x7f]")
_BAD_AUTHORITY: Final = re.compile(rb"[\x00-\x20\x7f/\\]")
# Request fields read_head records rather than passes on as they are; those it
# drops: hop-by-hop (te: trailers, trailer) and those ingressd sets itself.
_LENGTH, _HOST, _XFF, _REQUEST_ID, _ORIGIN, _COOKIE, _FORWARDED = range(7)
_SPECIAL: Final = {
    **dict.fromkeys(http.FORWARDED_IN, _FORWARDED),
    b"content-length": _LENGTH,
    b"host": _HOST,
    b"x-forwarded-for": _XFF,
    b"x-request-id": _REQUEST_ID,
    b"origin": _ORIGIN,
    b"cookie": _COOKIE,
}
_DROPPED: Final = http.HOP_BY_HOP | http.OVERWRITTEN


def read_head(
    ex: Exchange, headers: list[tuple[bytes, bytes]], settings: ProxySettings, has_body: bool
) -> tuple[int, str] | None:
    """Record an HTTP/2 request head on ``ex``; why it cannot be served, if it
    cannot (status, reason). ``checked_request_head`` has checked HTTP/2's
    rules already (pseudo-headers, no connection-specific fields, ``te`` only
    "trailers", valid names and values); h2 checks content-length against the
    DATA received. Split ``cookie`` fields are joined with "; ", last, as h2's
    normalisation (RFC 9113 8.2.3) and nginx do."""
    method = path = authority = None
    count = size = 0
    ex.protocol = "HTTP/2.0"
    ex.head_done = True
    kept = ex.headers
    cookies: list[bytes] | None = None
    for header in headers:
        name, value = header
        if name[0] == 58:  # ":"
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            continue  # :scheme (checked it is there), :protocol (CONNECT: refused below)
        count += 1
        size += len(name) + len(value) + 4
        kind = _SPECIAL.get(name)
        if kind is None:
            # Forwarded by its class (nginx's valid, underscore, invalid names):
            # drop_names_from NAME_KEEP_ALL passes every class.
            if (
                name not in _DROPPED
                and not name.startswith(b"proxy-")
                and http.name_class(name) < settings.drop_names_from
            ):
                kept.append(header)
        elif kind == _LENGTH:
            ex.req_length = value
        elif kind == _HOST:
            ex.host = value
            ex.host_count += 1
            kept.append(header)
        elif kind == _XFF:
            ex.xff = value if ex.xff is None else ex.xff + b", " + value
        elif kind == _REQUEST_ID:
            ex.request_id = value
        elif kind == _COOKIE:
            if cookies is None:
                cookies = [value]
            else:
                cookies.append(value)
        elif kind == _FORWARDED:
            if ex.forwarded is None:
                ex.forwarded = [(name, value)]
            elif len(ex.forwarded) < http.MAX_FORWARDED_IN:
                ex.forwarded.append((name, value))
        else:  # origin
            ex.origin = value
            kept.append(header)
    if cookies is not None:
        kept.append((b"cookie", cookies[0] if len(cookies) == 1 else b"; ".join(cookies)))
    ex.method = method or b""
    ex.url = path or b""
    ex.header_count = count
    ex.header_bytes = size
    if authority is not None:
        ex.header_bytes += len(authority) + 10
        if ex.host is not None:
            # nginx 1.25 (ingress-nginx's) takes :authority for a Host header,
            # so a Host beside it is "client sent duplicate host header": 400.
            return 400, "duplicate host header (:authority and Host)"
        ex.host = authority
        ex.headers.insert(0, (b"host", authority))
    if has_body:
        if ex.req_length is None:
            ex.req_chunked = True  # the upstream gets it chunked
    elif ex.req_length not in (None, b"0"):
        # END_STREAM with the head: the announced body never comes. Sent on,
        # the upstream would wait for it (nginx: "client prematurely closed
        # stream", 400).
        return 400, "content-length without a body"
    if count > settings.max_headers or size > settings.max_header_bytes:
        return 431, "too many or too large request headers"
    if len(ex.url) > settings.max_request_line:
        return 414, "request line too long"
    if not _TOKEN.fullmatch(ex.method):
        return 400, "invalid :method"
    if ex.method == b"CONNECT":
        # Plain CONNECT, and extended CONNECT (RFC 8441): WebSocket stays on
        # HTTP/1.1 (SETTINGS_ENABLE_CONNECT_PROTOCOL is not offered).
        return 405, "CONNECT is not supported"
    url = ex.url
    if not (url.startswith(b"/") or (url == b"*" and ex.method == b"OPTIONS")):
        return 400, "invalid :path"
    if _BAD_TARGET.search(url) is not None:
        return 400, "invalid :path"
    if ex.host is not None and _BAD_AUTHORITY.search(ex.host) is not None:
        return 400, "invalid host"
    return None
