"""A TCP service on real sockets: an endpoint that refuses is skipped for the next."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from ingressd.model.backend import Backend, Endpoint
from ingressd.observe.stats import RequestStats
from ingressd.stream.bounds import SessionTable
from ingressd.stream.connect import StreamSettings
from ingressd.stream.services import StreamService
from ingressd.stream.session_log import SessionLog
from ingressd.stream.tcp import TCPService

LOCAL = "127.0.0.1"


def refusing_port() -> int:
    """A port nothing listens on (bound, never listening: connections are refused)."""
    s = socket.socket()
    s.bind((LOCAL, 0))
    port = s.getsockname()[1]
    REFUSERS.append(s)
    return port


REFUSERS: list[socket.socket] = []


def test_a_connect_failure_tries_the_next_endpoint(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(await r.read(100))
            w.close()

        backend = await asyncio.start_server(echo, LOCAL, 0)
        live = backend.sockets[0].getsockname()[1]
        dead = refusing_port()
        stats = RequestStats()
        sock = socket.socket()
        sock.bind((LOCAL, 0))
        spec = StreamService("TCP", 9000, "default", "db", 5432)
        endpoints = (Endpoint(LOCAL, dead), Endpoint(LOCAL, live))
        service = TCPService(
            spec,
            Backend("default/db:5432", endpoints=endpoints),
            sock,
            StreamSettings(),
            SessionLog(stats, None),
            SessionTable(100, 100, stats.stream_open),
        )
        port = sock.getsockname()[1]
        # Round robin starts anywhere: every connection reaches the live one.
        for i in range(4):
            reader, writer = await asyncio.open_connection(LOCAL, port)
            writer.write(b"hello %d" % i)
            assert await asyncio.wait_for(reader.read(), 3) == b"hello %d" % i
            writer.close()
        await asyncio.sleep(0.05)
        assert stats.streams[("tcp", "tcp/9000", "default/db:5432", 200)][0] == 4
        assert any(f"upstream {LOCAL}:{dead}" in r.getMessage() for r in caplog.records)
        service.close()
        backend.close()

    try:
        with caplog.at_level(logging.WARNING, logger="ingressd.stream"):
            asyncio.run(main())
    finally:
        for s in REFUSERS:
            s.close()
