"""gRPC's rules where ingressd answers a gRPC call itself.

A gRPC client reads the status of a call from ``grpc-status`` and
``grpc-message``, not from the HTTP status: an HTML 502 from a proxy reaches
its application as a vague transport error. So when ingressd answers a gRPC
request itself (no route, no endpoint, an upstream down or too slow, auth,
limits…), it answers as a gRPC server would: HTTP 200, ``content-type:
application/grpc``, no message, and the status in the trailers.

The status comes from the HTTP status ingressd meant, by gRPC's own table
(grpc/grpc doc/http-grpc-status-mapping.md), except that ingressd's
timeouts waiting on an upstream are DEADLINE_EXCEEDED, which is what they are.
"""

from __future__ import annotations

from typing import Final

from .http import Headers

# gRPC status codes (grpc/grpc doc/statuscodes.md) that ingressd answers with.
OK = 0
UNKNOWN: Final = 2
DEADLINE_EXCEEDED = 4
PERMISSION_DENIED = 7
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14
UNAUTHENTICATED = 16

# HTTP to gRPC Status Code Mapping (grpc/grpc doc/http-grpc-status-mapping.md);
# every other HTTP status is UNKNOWN.
BY_HTTP_STATUS: Final = {
    400: INTERNAL,
    401: UNAUTHENTICATED,
    403: PERMISSION_DENIED,
    404: UNIMPLEMENTED,
    429: UNAVAILABLE,
    502: UNAVAILABLE,
    503: UNAVAILABLE,
    504: UNAVAILABLE,
}

CONTENT_TYPE: Final = b"application/grpc"
# grpc-message is bounded: it carries ingressd's own reason, never a body.
MAX_MESSAGE: Final = 1024


def status_for(http_status: int) -> int:
    return BY_HTTP_STATUS.get(http_status, UNKNOWN)


def is_grpc(headers: Headers) -> bool:
    """Whether a request is a gRPC call: ``content-type: application/grpc``,
    alone or with a ``+format`` or parameters (gRPC-Web's ``application/grpc-web``
    is another protocol, answered as HTTP)."""
    for name, value in headers:
        if len(name) == 12 and name.lower() == b"content-type":
            kind = value.strip().lower()
            if not kind.startswith(CONTENT_TYPE):
                return False
            rest = kind[len(CONTENT_TYPE) : len(CONTENT_TYPE) + 1]
            return rest in (b"", b"+", b";")
    return False


def encode_message(text: str) -> bytes:
    """``grpc-message`` as the gRPC HTTP/2 protocol writes it: UTF-8,
    percent-encoded outside printable ASCII (and ``%`` itself)."""
    raw = text.encode("utf-8", "replace")[:MAX_MESSAGE]
    out = bytearray()
    for byte in raw:
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


def status_fields(code: int, message: str) -> Headers:
    """``grpc-status`` and ``grpc-message``: the trailers of an answer made here."""
    return [(b"grpc-status", b"%d" % code), (b"grpc-message", encode_message(message))]
