"""The TCP splice on real sockets: idle timeout, half-close, backpressure."""

from __future__ import annotations

import asyncio
import socket

from ingressd.model.backend import Endpoint
from ingressd.observe.stats import RequestStats
from ingressd.stream.connect import StreamSettings, Target, splice_to
from ingressd.stream.session_log import SessionLog

LOCAL = "127.0.0.1"
TASKS: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak references


async def proxied(
    handler: object, settings: StreamSettings, stats: RequestStats
) -> tuple[asyncio.AbstractServer, socket.socket, int]:
    """A backend running ``handler``, and a listening socket whose connections
    splice_to it; returns (backend, listener, listener port)."""
    loop = asyncio.get_running_loop()
    backend = await asyncio.start_server(handler, LOCAL, 0)  # type: ignore[arg-type]
    port = backend.sockets[0].getsockname()[1]
    listener = socket.socket()
    listener.bind((LOCAL, 0))
    listener.listen()
    listener.setblocking(False)
    target = Target("tcp", "tcp/1", "default/b:1", (Endpoint(LOCAL, port),))

    async def accept() -> None:
        while True:
            conn, _ = await loop.sock_accept(listener)
            conn.setblocking(False)
            task = loop.create_task(
                splice_to(conn, target, LOCAL, settings, SessionLog(stats, None))
            )
            TASKS.add(task)
            task.add_done_callback(TASKS.discard)

    TASKS.add(loop.create_task(accept()))
    return backend, listener, listener.getsockname()[1]


def test_an_idle_session_is_closed() -> None:
    async def main() -> None:
        async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.read()  # waits for EOF, sends nothing
            w.close()

        stats = RequestStats()
        backend, listener, port = await proxied(silent, StreamSettings(idle_timeout=0.3), stats)
        reader, writer = await asyncio.open_connection(LOCAL, port)
        writer.write(b"x")
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), 3) == b""
        assert 0.25 < asyncio.get_running_loop().time() - started < 2
        await asyncio.sleep(0.05)
        assert stats.streams[("tcp", "tcp/1", "default/b:1", 200)][:2] == [1, 1]
        writer.close()
        backend.close()
        listener.close()

    asyncio.run(main())


def test_a_slow_reader_holds_the_writer_back() -> None:
    """Backpressure: a client that does not read stops the backend's writes
    within the transports' buffers, rather than ingressd holding it all."""

    async def main() -> None:
        sent = 0
        stalled = asyncio.Event()

        async def flood(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            nonlocal sent
            chunk = b"x" * 65536
            try:
                while sent < 512 * 1024 * 1024:
                    w.write(chunk)
                    try:
                        await asyncio.wait_for(w.drain(), 0.5)
                    except TimeoutError:
                        stalled.set()  # the proxy stopped reading from us
                        await w.drain()
                    sent += len(chunk)
            except ConnectionError:
                pass

        stats = RequestStats()
        backend, listener, port = await proxied(flood, StreamSettings(), stats)
        reader, writer = await asyncio.open_connection(LOCAL, port, limit=1024)
        await asyncio.wait_for(stalled.wait(), 10)
        # Kernel buffers on both hops plus the transports' high-water marks:
        # far below what the backend would send unchecked.
        assert sent < 64 * 1024 * 1024
        # Reading again lets it go on.
        before = sent
        for _ in range(200):
            await reader.read(65536)
        await asyncio.sleep(0.1)
        assert sent > before
        writer.close()
        backend.close()
        listener.close()

    asyncio.run(main())


def test_an_upstream_half_close_first_is_passed_on() -> None:
    """The other half-close: the upstream ends its side first (after a banner);
    the client reads that EOF, and what it sends afterwards still reaches the
    upstream, until the client ends its side too."""

    async def main() -> None:
        received = asyncio.get_running_loop().create_future()

        async def banner_then_listen(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(b"banner")
            w.write_eof()
            received.set_result(await r.read())  # to the client's EOF
            w.close()

        stats = RequestStats()
        backend, listener, port = await proxied(banner_then_listen, StreamSettings(), stats)
        reader, writer = await asyncio.open_connection(LOCAL, port)
        assert await asyncio.wait_for(reader.read(), 3) == b"banner"  # then EOF
        writer.write(b"after the upstream's EOF")
        writer.write_eof()
        assert await asyncio.wait_for(received, 3) == b"after the upstream's EOF"
        await asyncio.sleep(0.1)
        rec = stats.streams[("tcp", "tcp/1", "default/b:1", 200)]
        assert rec[:3] == [1, len(b"after the upstream's EOF"), len(b"banner")]
        writer.close()
        backend.close()
        listener.close()

    asyncio.run(main())
