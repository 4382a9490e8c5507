"""The accepting listener: each connection to its handler, and a bound on those waiting."""

from __future__ import annotations

import asyncio
import socket

from ingressd.stream.accept import Acceptor


def test_connections_past_the_bound_are_closed_at_once() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        release = asyncio.Event()
        seen: list[socket.socket] = []

        async def handle(conn: socket.socket) -> None:
            seen.append(conn)
            await release.wait()  # a client that never sends its header
            conn.close()

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        acceptor = Acceptor(sock, handle, max_pending=2)
        port = sock.getsockname()[1]
        clients = []
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            clients.append((reader, writer))
            await asyncio.sleep(0.05)
        assert len(seen) == 2 and acceptor.refused == 1
        # The third was closed without waiting: EOF at once.
        assert await asyncio.wait_for(clients[2][0].read(), 2) == b""
        # The others are still open, and a place freed is taken again.
        release.set()
        await asyncio.sleep(0.05)
        assert not acceptor.pending
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)
        assert len(seen) == 3
        acceptor.close()
        for _, w in [*clients, (reader, writer)]:
            w.close()
        await asyncio.sleep(0)
        del loop

    asyncio.run(main())
