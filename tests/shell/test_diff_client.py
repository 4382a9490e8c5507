"""``ingressd diff``'s client against real servers on 127.0.0.1: the request goes out
as the probe says (target unnormalised, Host, SNI), the answer is read bounded,
and failures are errors, not exceptions."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from e2e_helpers import LOCALHOST, free_port
from k8s_objects import certificate

from ingressd.diff.client import MAX_BODY, Address, send
from ingressd.diff.probes import Probe
from ingressd.echo import EchoServer, start_echo


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    server = await start_echo(LOCALHOST, 0, "web")
    try:
        yield server
    finally:
        await server.close()


def at(port: int, https_port: int | None = None) -> Address:
    return Address(LOCALHOST, port, https_port or port)


async def test_the_request_goes_out_as_the_probe_says(echo: EchoServer) -> None:
    probe = Probe(
        "GET",
        "http",
        "shop.test",
        "/a/../b%2Fc?x=1",
        headers=(("X-Canary", "always"),),
        cookies=(("c", "1"),),
    )
    answer = await send(probe, at(echo.port), timeout=5)
    assert answer.error is None and answer.status == 200
    assert answer.echo is not None
    assert answer.echo.path == "/a/../b%2Fc?x=1"  # not normalised on the way
    assert answer.echo.host == "shop.test" and answer.echo.backend == "web"
    assert ("x-echo-service", "web") in answer.headers


async def test_an_endless_body_is_not_read_to_its_end() -> None:
    """The answer is complete once its head and enough of the body to find an echo
    are in: a body that never ends costs neither memory nor the timeout."""

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
        deadline = asyncio.get_running_loop().time() + 10  # bounded: the test's own limit
        with contextlib.suppress(ConnectionError):
            while asyncio.get_running_loop().time() < deadline and not writer.is_closing():
                writer.write(chunk)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(endless, LOCALHOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        answer = await send(Probe("GET", "http", "a.test", "/"), at(port), timeout=3)
    finally:
        server.close()
    assert answer.error is None and answer.status == 200 and answer.echo is None
    assert MAX_BODY < 1 << 20


async def test_head_stops_at_the_head(echo: EchoServer) -> None:
    answer = await send(Probe("HEAD", "http", "a.test", "/_echo/bytes/100"), at(echo.port), 5)
    assert answer.status == 200 and answer.error is None


async def test_refused_and_silent_servers_are_errors() -> None:
    refused = await send(Probe("GET", "http", "a.test", "/"), at(free_port()), timeout=5)
    assert refused.status == 0 and refused.error and "refused" in refused.error.lower()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        await asyncio.sleep(10)

    server = await asyncio.start_server(silent, LOCALHOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        answer = await send(Probe("GET", "http", "a.test", "/"), at(port), timeout=0.3)
    finally:
        server.close()
    assert answer.error == "no answer within 0.3 s"


async def test_tls_sends_the_probe_host_as_sni(tmp_path: Path) -> None:
    cert, key = certificate("shop.test")
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    names: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment,misc,return-value]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, LOCALHOST, 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        got = await send(Probe("GET", "https", "shop.test", "/"), at(1, port), timeout=5)
    finally:
        server.close()
    assert got.error is None and got.status == 204
    assert names == ["shop.test"]
