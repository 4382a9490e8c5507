"""Bounds on open layer-4 sessions (stream/bounds.py), on real sockets: per
listener and per process, refused connections closed at once and counted,
places given back when sessions end, and sessions drained or aborted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import pytest

from ingressd.model.backend import Backend, Endpoint
from ingressd.observe.metrics import stream_families
from ingressd.observe.stats import RequestStats
from ingressd.stream.bounds import SessionTable
from ingressd.stream.connect import StreamSettings
from ingressd.stream.services import StreamService
from ingressd.stream.session_log import SessionLog
from ingressd.stream.tcp import TCPService

LOCAL = "127.0.0.1"


async def echo_backend() -> tuple[asyncio.AbstractServer, int]:
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()

    server = await asyncio.start_server(echo, LOCAL, 0)
    return server, server.sockets[0].getsockname()[1]


def tcp_service(port: int, upstream: int, stats: RequestStats, table: SessionTable) -> TCPService:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOCAL, 0))
    spec = StreamService("TCP", port, "default", "echo", 7)
    backend = Backend("default/echo:7", endpoints=(Endpoint(LOCAL, upstream),))
    service = TCPService(spec, backend, sock, StreamSettings(), SessionLog(stats, None), table)
    service.port = sock.getsockname()[1]  # type: ignore[attr-defined]
    return service


async def session(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection through the service, known spliced once an echo came back."""
    reader, writer = await asyncio.open_connection(LOCAL, port)
    writer.write(b"hi")
    assert await asyncio.wait_for(reader.readexactly(2), 3) == b"hi"
    return reader, writer


async def refused(port: int) -> bool:
    """Closed at once, without a byte through: EOF (or a reset) right away."""
    reader, writer = await asyncio.open_connection(LOCAL, port)
    try:
        writer.write(b"hi")
        with contextlib.suppress(ConnectionResetError):
            return await asyncio.wait_for(reader.read(10), 3) == b""
        return True
    finally:
        writer.close()


def test_sessions_past_the_per_port_bound_are_closed_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        backend, upstream = await echo_backend()
        stats = RequestStats()
        table = SessionTable(100, 2, stats.stream_open)
        a = tcp_service(9001, upstream, stats, table)
        b = tcp_service(9002, upstream, stats, table)
        port_a, port_b = a.port, b.port  # type: ignore[attr-defined]
        first = [await session(port_a), await session(port_a)]
        assert stats.stream_open == {"tcp/9001": 2}
        for _ in range(3):
            assert await refused(port_a)
        # The other port has places of its own.
        other = await session(port_b)
        assert stats.stream_open == {"tcp/9001": 2, "tcp/9002": 1} and table.total == 3
        assert stats.streams[("tcp", "tcp/9001", "default/echo:7", 503)][0] == 3
        # One warning for the flood, not one per connection.
        warnings = [r for r in caplog.records if "closed at once" in r.getMessage()]
        assert len(warnings) == 1 and "tcp/9001" in warnings[0].getMessage()
        # A session ending gives its place back.
        first[0][1].close()
        for _ in range(100):
            if stats.stream_open["tcp/9001"] == 1:
                break
            await asyncio.sleep(0.02)
        assert stats.stream_open["tcp/9001"] == 1
        third = await session(port_a)
        # The gauge as /metrics shows it.
        [gauge] = [f for f in stream_families(stats.view(0)) if f.name.endswith("_open")]
        assert {s.labels["listener"]: s.value for s in gauge.samples} == {
            "tcp/9001": 2,
            "tcp/9002": 1,
        }
        for _, w in (first[1], other, third):
            w.close()
        a.close()
        b.close()
        backend.close()

    with caplog.at_level(logging.WARNING, logger="ingressd.stream"):
        asyncio.run(main())


def test_the_process_bound_covers_every_port() -> None:
    async def main() -> None:
        backend, upstream = await echo_backend()
        stats = RequestStats()
        table = SessionTable(3, 2, stats.stream_open)
        a = tcp_service(9001, upstream, stats, table)
        b = tcp_service(9002, upstream, stats, table)
        port_a, port_b = a.port, b.port  # type: ignore[attr-defined]
        held = [await session(port_a), await session(port_a), await session(port_b)]
        assert await refused(port_b)  # its own bound (2) is not reached: the process's is
        assert stats.streams[("tcp", "tcp/9002", "default/echo:7", 503)][0] == 1
        for _, w in held:
            w.close()
        a.close()
        b.close()
        backend.close()

    asyncio.run(main())


def test_a_drain_waits_for_sessions_then_abort_closes_them() -> None:
    """Shutdown: with the listener stopped, an open session goes on carrying
    data; ``drain`` returns once it ends, or at its deadline, and ``abort``
    then closes what is left (counted and released)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        backend, upstream = await echo_backend()
        stats = RequestStats()
        table = SessionTable(100, 100, stats.stream_open)
        service = tcp_service(9001, upstream, stats, table)
        port = service.port  # type: ignore[attr-defined]
        finishing = await session(port)
        lingering = await session(port)
        service.stop()
        with pytest.raises(OSError):
            await asyncio.open_connection(LOCAL, port)
        # Both still carry data after the listener stopped.
        for reader, writer in (finishing, lingering):
            writer.write(b"more")
            assert await asyncio.wait_for(reader.readexactly(4), 3) == b"more"
        finishing[1].close()
        started = loop.time()
        await table.drain(loop.time() + 0.5)
        assert 0.4 < loop.time() - started < 3  # the lingering one ran out the grace
        assert table.total == 1
        table.abort()
        with contextlib.suppress(ConnectionResetError):  # aborted: a reset
            assert await asyncio.wait_for(lingering[0].read(), 3) == b""
        await asyncio.sleep(0.05)
        assert table.total == 0 and stats.stream_open == {}
        assert stats.streams[("tcp", "tcp/9001", "default/echo:7", 200)][0] == 2
        service.close()
        backend.close()

    asyncio.run(main())


def test_after_stop_a_rebuild_opens_no_listener() -> None:
    """Shutting down, the TCP ports stop accepting; a rebuild that races the
    shutdown (the source is cancelled after) must not open them again."""
    from k8s_objects import endpoint_slice, service, snapshot

    from ingressd.model.objects import Snapshot
    from ingressd.stream.manager import StreamConfig, StreamServices
    from ingressd.stream.services import ConfigMapRef

    async def main() -> None:
        ports = []
        for _ in range(2):
            with socket.socket() as probe:
                probe.bind((LOCAL, 0))
                ports.append(probe.getsockname()[1])
        port, added = ports

        def snap_of(*listen: int) -> Snapshot:
            cm = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "tcp", "namespace": "default"},
                "data": {str(p): "default/db:5432" for p in listen},
            }
            return snapshot(cm, service("db", [5432]), endpoint_slice("db", [LOCAL], 5432))

        snap = snap_of(port)
        stats = RequestStats()
        ref = ConfigMapRef.parse("TCP", "--tcp-services-configmap", "default/tcp")
        streams = StreamServices(
            StreamConfig((ref,)),
            LOCAL,
            {},
            SessionLog(stats, None),
            SessionTable(10, 10, stats.stream_open),
        )
        assert streams.apply(snap) == []
        _, writer = await asyncio.open_connection(LOCAL, port)  # listening
        writer.close()
        streams.stop()
        await asyncio.sleep(0.05)
        # The ConfigMap changed meanwhile: an entry added, the first kept.
        assert streams.apply(snap_of(port, added)) == []
        for closed in (port, added):
            with pytest.raises(OSError):
                await asyncio.open_connection(LOCAL, closed)
        streams.close()

    asyncio.run(main())
