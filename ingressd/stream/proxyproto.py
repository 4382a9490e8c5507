"""The PROXY protocol (HAProxy's spec, versions 1 and 2): read from the load
balancer in front, written to upstreams.

One module for every listener that speaks it: the HTTP and HTTPS ports
(``--use-proxy-protocol``) and TCP services (``:PROXY`` in the ConfigMap).
Parsing is pure and bounded: ``parse`` says "need more bytes" (None), gives the
header, or raises ``ProxyProtocolError``; a caller closes the connection on the
error, or when the bytes stop before ``MAX_HEADER`` or its timeout.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
# The spec: a v1 line is at most 107 bytes, CRLF included.
V1_MAX = 107
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16
# A v2 header may carry up to 64 KiB of TLVs; we accept far less (haproxy's own
# TLVs, e.g. the SSL ones, fit many times over). nginx bounds it likewise
# (NGX_PROXY_PROTOCOL_MAX_HEADER for v1, its read buffer for v2).
MAX_HEADER = 4096
# How long the header may take to arrive, from the accept (nginx's
# proxy_protocol_timeout, 30 s by default; the header comes in the balancer's
# first segment, so more patience only serves idle connections).
HEADER_TIMEOUT = 5.0

Address = tuple[str, int]


class ProxyProtocolError(ValueError):
    """Bytes that are not a valid PROXY protocol header: the connection is closed."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    length: int  # bytes the header takes at the start of the stream
    # The client and the address it connected to, as the balancer saw them;
    # None for LOCAL (v2) or UNKNOWN (v1): the balancer's own connection (a
    # health check), whose peer is then the client.
    source: Address | None = None
    destination: Address | None = None


def could_be(data: bytes) -> bool:
    """Whether ``data`` may still begin a header (so far)."""
    n = min(len(data), len(V2_SIGNATURE))
    if data[:n] == V2_SIGNATURE[:n]:
        return True
    n = min(len(data), len(V1_PREFIX))
    return data[:n] == V1_PREFIX[:n]


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``; None while it is incomplete."""
    if not could_be(data):
        raise ProxyProtocolError("no PROXY protocol header")
    if data.startswith(V2_SIGNATURE[:1]):
        return _parse_v2(data)
    return _parse_v1(data)


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyProtocolError("PROXY v1 line longer than 107 bytes")
        if b"\n" in data:
            raise ProxyProtocolError("PROXY v1 line not ended by CRLF")
        return None
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError("PROXY v1 line is not ASCII") from None
    parts = line.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        # The spec: the rest of the line is to be ignored.
        return ProxyHeader(end + 2)
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError(f"malformed PROXY v1 line {line[:V1_MAX]!r}")
    version = 4 if parts[1] == "TCP4" else 6
    src = _address(parts[2], version)
    dst = _address(parts[3], version)
    return ProxyHeader(end + 2, (src, _port(parts[4])), (dst, _port(parts[5])))


def _address(text: str, version: int) -> str:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyProtocolError(f"malformed address {text[:40]!r} in PROXY header") from None
    if ip.version != version:
        raise ProxyProtocolError(f"address {text} is not IPv{version}")
    return str(ip)


def _port(text: str) -> int:
    # Decimal without sign or leading zeros, as the spec writes them.
    if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0"):
        raise ProxyProtocolError(f"malformed port {text[:10]!r} in PROXY header")
    port = int(text)
    if port > 65535:
        raise ProxyProtocolError(f"port {port} out of range in PROXY header")
    return port


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < V2_FIXED:
        return None
    ver_cmd, family, size = struct.unpack("!BBH", data[12:16])
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError(f"PROXY v2 header with version {ver_cmd >> 4}")
    command = ver_cmd & 0x0F
    if command > 1:
        raise ProxyProtocolError(f"PROXY v2 header with unknown command {command}")
    total = V2_FIXED + size
    if total > MAX_HEADER:
        raise ProxyProtocolError(f"PROXY v2 header of {total} bytes (at most {MAX_HEADER})")
    if len(data) < total:
        return None
    if command == 0:  # LOCAL: the balancer's own connection
        return ProxyHeader(total)
    body = data[V2_FIXED:total]
    af, proto = family >> 4, family & 0x0F
    if proto not in (1, 2) and af != 0:
        raise ProxyProtocolError(f"PROXY v2 header with unknown transport {proto}")
    if af == 1:  # IPv4
        if size < 12:
            raise ProxyProtocolError("PROXY v2 IPv4 addresses truncated")
        src4, dst4, sport, dport = struct.unpack("!4s4sHH", body[:12])
        return ProxyHeader(
            total,
            (str(ipaddress.IPv4Address(src4)), sport),
            (str(ipaddress.IPv4Address(dst4)), dport),
        )
    if af == 2:  # IPv6
        if size < 36:
            raise ProxyProtocolError("PROXY v2 IPv6 addresses truncated")
        src6, dst6, sport, dport = struct.unpack("!16s16sHH", body[:36])
        return ProxyHeader(
            total,
            (str(ipaddress.IPv6Address(src6)), sport),
            (str(ipaddress.IPv6Address(dst6)), dport),
        )
    if af == 0:  # UNSPEC: as LOCAL, the addresses are not known
        return ProxyHeader(total)
    # AF_UNIX (3) and anything else: no IP address to name the client by.
    raise ProxyProtocolError(f"PROXY v2 header with address family {af}")


def build_v1(source: Address, destination: Address) -> bytes:
    """A v1 line, as nginx's ``proxy_protocol on`` sends upstream (stream module)."""
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    if src.version != dst.version:
        # The spec allows no mixed families; an IPv4 client on an IPv6 socket
        # arrives as ::ffff:a.b.c.d and is written as IPv4.
        src, dst = _unmapped(src), _unmapped(dst)
    if src.version != dst.version:
        return b"PROXY UNKNOWN\r\n"
    family = b"TCP4" if src.version == 4 else b"TCP6"
    return b"PROXY %b %b %b %d %d\r\n" % (
        family,
        str(src).encode(),
        str(dst).encode(),
        source[1],
        destination[1],
    )


def build_v2(source: Address, destination: Address, *, udp: bool = False) -> bytes:
    """A v2 header with the PROXY command and no TLVs."""
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    if src.version != dst.version:
        src, dst = _unmapped(src), _unmapped(dst)
    proto = 2 if udp else 1
    if src.version != dst.version:
        return V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x00, 0)
    if src.version == 4:
        body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
        return V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x10 | proto, len(body)) + body
    body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x20 | proto, len(body)) + body


def _unmapped(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
