"""The auth-url client: nginx's connection reuse (auth-keepalive*), and its bounds,
against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from ingressd.policy.auth_client import AuthConnections, AuthHTTPError, KeepAlive

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def run(handler: Handler, client: Callable[[str, AuthConnections], Awaitable[None]]) -> None:
    """Serve ``handler`` on a free port and run ``client`` against it."""

    async def main() -> None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conns = AuthConnections()
        try:
            await asyncio.wait_for(client(f"http://127.0.0.1:{port}/check", conns), 10)
        finally:
            await conns.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def keep_alive_server(heads: list[bytes], delay: float = 0.0) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                heads.append(await read_head(reader))
                await asyncio.sleep(delay)
                writer.write(OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return handle


def test_without_keepalive_each_request_asks_to_close() -> None:
    heads: list[bytes] = []

    async def client(url: str, conns: AuthConnections) -> None:
        for _ in range(2):
            reply = await conns.request("GET", url, [("X-A", "1")], 1, 1)
            assert reply.status == 200
        assert (conns.opened, conns.idle()) == (2, 0)

    run(keep_alive_server(heads), client)
    assert all(b"\r\nConnection: close\r\n" in h for h in heads)
    assert heads[0].startswith(b"GET /check HTTP/1.1\r\nHost: 127.0.0.1\r\n")


def test_at_most_keepalive_idle_connections_are_kept() -> None:
    heads: list[bytes] = []

    async def client(url: str, conns: AuthConnections) -> None:
        keep = KeepAlive(2, 100, 60.0)
        replies = await asyncio.gather(
            *(conns.request("GET", url, [], 1, 2, keep) for _ in range(3))
        )
        assert [r.status for r in replies] == [200, 200, 200]
        assert (conns.opened, conns.idle()) == (3, 2)  # the third one is closed
        await conns.request("GET", url, [], 1, 2, keep)
        assert (conns.opened, conns.idle()) == (3, 2)

    run(keep_alive_server(heads, delay=0.2), client)
    assert not any(b"Connection:" in h for h in heads)


def test_a_connection_the_service_closed_meanwhile_is_replaced() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(OK)  # keep-alive by HTTP/1.1, then closed anyway
        await writer.drain()
        writer.close()

    async def client(url: str, conns: AuthConnections) -> None:
        keep = KeepAlive(4, 100, 60.0)
        assert (await conns.request("GET", url, [], 1, 1, keep)).status == 200
        await asyncio.sleep(0.1)
        assert (await conns.request("GET", url, [], 1, 1, keep)).status == 200
        assert conns.opened == 2

    run(handle, client)


def test_a_head_over_64_kib_is_an_error() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        await writer.drain()
        writer.close()

    async def client(url: str, conns: AuthConnections) -> None:
        with pytest.raises(AuthHTTPError, match="64 KiB"):
            await conns.request("GET", url, [], 1, 1, KeepAlive(2, 10, 60.0))

    run(handle, client)


def test_a_large_body_is_not_read_and_its_connection_not_kept() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 200_000)
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    async def client(url: str, conns: AuthConnections) -> None:
        reply = await conns.request("GET", url, [], 1, 1, KeepAlive(2, 10, 60.0))
        assert reply.status == 200 and conns.idle() == 0

    run(handle, client)


def test_silence_is_a_timeout_and_bad_headers_are_not_sent() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        await asyncio.sleep(5)

    async def client(url: str, conns: AuthConnections) -> None:
        with pytest.raises(AuthHTTPError, match="no answer in time"):
            await conns.request("GET", url, [], 1, 0.2)
        with pytest.raises(AuthHTTPError, match="cannot be sent"):
            await conns.request("GET", url, [("X-A", "1\r\nX-Injected: 1")], 1, 0.2)

    run(handle, client)


def test_nothing_listening_is_an_error() -> None:
    async def main() -> None:
        conns = AuthConnections()
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(AuthHTTPError, match="cannot connect"):
            await conns.request("GET", f"http://127.0.0.1:{port}/", [], 1, 1)

    asyncio.run(main())


def test_idle_connections_past_their_timeout_are_closed() -> None:
    heads: list[bytes] = []

    async def client(url: str, conns: AuthConnections) -> None:
        short, other = KeepAlive(4, 100, 0.2), KeepAlive(4, 100, 60.0)
        await conns.request("GET", url, [], 1, 1, short)
        assert conns.idle() == 1
        await asyncio.sleep(1.1)
        await conns.request("GET", url, [], 1, 1, other)  # its put sweeps the pools
        assert conns.idle() == 1 and conns.opened == 2

    run(keep_alive_server(heads), client)
