"""mirror-target's deny list, for literal addresses and for the addresses a name
resolves to when a copy connects (DNS rebinding).

The copies go through the real ``Mirrors`` (aiohttp, real sockets) to a real
origin on 127.0.0.1; only the name resolution is ours, an aiohttp resolver
answering fixed addresses for names under ``.test`` (no real DNS, no external
network: a denied address is never connected to).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver

from ingressd.model.policy import Mirror
from ingressd.observe.stats import RequestStats
from ingressd.policy.mirror import parse_target, refused_address
from ingressd.proxy.mirror import Mirrors

INGRESS = "default/app"


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",  # the cloud metadata service (AWS, GCP, Azure, OCI...)
        "169.254.170.2",  # ECS task metadata
        "169.254.1.1",
        "100.100.100.200",  # Alibaba Cloud metadata
        "168.63.129.16",  # Azure WireServer
        "fd00:ec2::254",  # AWS metadata over IPv6
        "fe80::1",
        "::ffff:169.254.169.254",  # IPv4-mapped
        "::ffff:100.100.100.200",
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "ff02::1",
        "255.255.255.255",
    ],
)
def test_denied_addresses(address: str) -> None:
    assert refused_address(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "::1",
        "10.0.0.7",
        "192.0.2.1",
        "2001:db8::1",
        "::ffff:10.0.0.7",
        "64:ff9b::a00:7",
    ],
)
def test_allowed_addresses(address: str) -> None:
    assert refused_address(ipaddress.ip_address(address)) is None


def test_a_literal_metadata_address_is_refused_when_the_annotation_is_read() -> None:
    for target in ("http://100.100.100.200/latest", "http://168.63.129.16/", "http://0.0.0.0/"):
        with pytest.raises(ValueError, match=r"metadata|unspecified"):
            parse_target(target)
    assert parse_target("http://127.0.0.1:9000/x")[1] == "127.0.0.1"


class FixedResolver(AbstractResolver):
    """Names under .test resolve to the addresses given; nothing else resolves."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[Any]:
        self.asked.append(host)
        if host not in self.names:
            raise OSError(f"{host}: no such name")
        return [
            {
                "hostname": host,
                "host": a,
                "port": port,
                "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for a in self.names[host]
        ]

    async def close(self) -> None:
        pass


async def origin() -> tuple[asyncio.Server, list[bytes]]:
    """A tiny HTTP origin on 127.0.0.1: records each request line, answers 204."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            seen.append(head.split(b"\r\n", 1)[0])
            writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, seen


async def test_a_name_resolving_to_a_denied_address_gets_no_copy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, seen = await origin()
    port = server.sockets[0].getsockname()[1]
    resolver = FixedResolver(
        {
            "ok.test": ["127.0.0.1"],
            # Allowed and denied together: denied whole (aiohttp would try 127.0.0.1 first).
            "mixed.test": ["127.0.0.1", "169.254.169.254"],
            "mixed-mapped.test": ["127.0.0.1", "::ffff:169.254.169.254"],
            "mixed-alibaba.test": ["127.0.0.1", "100.100.100.200"],
        }
    )
    mirrors = Mirrors(resolver)
    stats = RequestStats()
    loop = asyncio.get_running_loop()
    try:
        for name in resolver.names:
            config = Mirror("http", name, port, f"/{name}", name, True)
            mirrors.send(loop, stats, INGRESS, config, "GET", "/", "", "app.test", "http", [], None)
        for _ in range(200):  # bounded: at most 10 s
            if mirrors.in_flight == 0:
                break
            await asyncio.sleep(0.05)
        assert mirrors.in_flight == 0
    finally:
        await mirrors.close()
        server.close()
        await server.wait_closed()
    assert seen == [b"GET /ok.test HTTP/1.1"]  # nothing reached the origin but the allowed name
    assert stats.mirrors == {
        (INGRESS, "ok.test", "sent"): 1,
        (INGRESS, "mixed.test", "denied"): 1,
        (INGRESS, "mixed-mapped.test", "denied"): 1,
        (INGRESS, "mixed-alibaba.test", "denied"): 1,
    }
    assert sorted(resolver.asked) == sorted(resolver.names)
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "ingressd.proxy" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1  # rate-limited: one in 10 s
    assert f"mirror-target of Ingress {INGRESS}: " in warnings[0]
    assert "resolved to" in warnings[0] and "no copy sent" in warnings[0]


async def test_a_name_the_system_resolver_answers_is_checked_and_sent() -> None:
    """Without an injected resolver: aiohttp's own, behind the same check
    (``localhost`` resolves to loopback, which is allowed)."""
    server, seen = await origin()
    port = server.sockets[0].getsockname()[1]
    mirrors = Mirrors()
    stats = RequestStats()
    try:
        config = Mirror("http", "localhost", port, "/local", "localhost", True)
        mirrors.send(
            asyncio.get_running_loop(), stats, INGRESS, config, "GET", "/", "", "a.test", "http",
            [], None,
        )  # fmt: skip
        for _ in range(200):
            if mirrors.in_flight == 0:
                break
            await asyncio.sleep(0.05)
    finally:
        await mirrors.close()
        server.close()
        await server.wait_closed()
    assert stats.mirrors == {(INGRESS, "localhost", "sent"): 1}
    assert seen == [b"GET /local HTTP/1.1"]
