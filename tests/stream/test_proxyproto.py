"""The PROXY protocol: parsing what balancers send, bounded, and building what upstreams get."""

from __future__ import annotations

import struct

import pytest

from ingressd.stream.proxyproto import (
    MAX_HEADER,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyProtocolError,
    build_v1,
    build_v2,
    parse,
)


def v2(cmd: int, fam: int, body: bytes) -> bytes:
    return V2_SIGNATURE + struct.pack("!BBH", cmd, fam, len(body)) + body


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b"PROXY TCP4 192.0.2.1 198.51.100.2 51000 443\r\nGET",
            ProxyHeader(45, ("192.0.2.1", 51000), ("198.51.100.2", 443)),
        ),
        (
            b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n",
            ProxyHeader(40, ("2001:db8::1", 1), ("2001:db8::2", 2)),
        ),
        (b"PROXY UNKNOWN\r\n", ProxyHeader(15)),
        (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nx", ProxyHeader(35)),
        (
            v2(0x21, 0x11, bytes([192, 0, 2, 1, 10, 0, 0, 1]) + struct.pack("!HH", 5, 80)),
            ProxyHeader(28, ("192.0.2.1", 5), ("10.0.0.1", 80)),
        ),
        (
            # TLVs after the addresses are skipped with them.
            v2(
                0x21, 0x21, bytes(15) + b"\x01" + bytes(16) + b"\x00\x07\x00\x08" + b"\x04\x00\x01x"
            ),
            ProxyHeader(56, ("::1", 7), ("::", 8)),
        ),
        (v2(0x20, 0x00, b""), ProxyHeader(16)),  # LOCAL: a health check
        (v2(0x20, 0x11, bytes(12)), ProxyHeader(28)),  # LOCAL ignores the addresses
    ],
)
def test_valid_headers(data: bytes, expected: ProxyHeader) -> None:
    assert parse(data) == expected
    # Every strict prefix is "not yet".
    for cut in range(1, expected.length):
        assert parse(data[:cut]) is None, cut


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"GET / HTTP/1.1\r\n", "no PROXY protocol header"),
        (b"\x16\x03\x01\x02\x00", "no PROXY protocol header"),  # a ClientHello
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "malformed PROXY v1 line"),
        (b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n", "is not IPv4"),
        (b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n", "malformed address"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "out of range"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "malformed port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "malformed port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "not ended by CRLF"),
        (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "malformed PROXY v1 line"),
        (b"PROXY TCP4 " + b"1" * 200, "longer than 107 bytes"),
        (b"PROXY \xff\xfe 1\r\n", "not ASCII"),
        (v2(0x11, 0x11, bytes(12)), "version 1"),
        (v2(0x22, 0x11, bytes(12)), "unknown command"),
        (v2(0x21, 0x11, bytes(8)), "IPv4 addresses truncated"),
        (v2(0x21, 0x21, bytes(20)), "IPv6 addresses truncated"),
        (v2(0x21, 0x31, bytes(216)), "address family 3"),
        (V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, MAX_HEADER), "at most"),
    ],
)
def test_invalid_headers_fail(data: bytes, why: str) -> None:
    with pytest.raises(ProxyProtocolError, match=why):
        parse(data)


def test_built_headers_parse_back() -> None:
    for build in (build_v1, build_v2):
        for src, dst in (
            (("192.0.2.1", 4000), ("10.0.0.1", 80)),
            (("2001:db8::5", 1), ("2001:db8::6", 65535)),
            # An IPv4 client on a dual-stack socket: written as IPv4.
            (("::ffff:192.0.2.9", 9), ("10.0.0.1", 80)),
        ):
            data = build(src, dst)
            header = parse(data + b"rest")
            assert header is not None and header.length == len(data)
            assert header.source == (src[0].removeprefix("::ffff:"), src[1])
            assert header.destination == dst
    assert build_v1(("192.0.2.1", 1), ("::1", 2)) == b"PROXY UNKNOWN\r\n"
    assert parse(build_v2(("192.0.2.1", 1), ("::1", 2))) == ProxyHeader(16)
    assert build_v2(("192.0.2.1", 1), ("10.0.0.1", 2), udp=True)[13] == 0x12
