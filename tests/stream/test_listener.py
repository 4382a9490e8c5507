"""listener.py: what a TCP and a UDP service listener share, on real listeners."""

from __future__ import annotations

import asyncio
import socket

from ingressd.model.backend import Backend, Endpoint
from ingressd.observe.stats import RequestStats
from ingressd.stream.bounds import SessionTable
from ingressd.stream.connect import StreamSettings
from ingressd.stream.services import StreamService
from ingressd.stream.session_log import SessionLog, SessionRecord
from ingressd.stream.tcp import TCPService
from ingressd.stream.udp import UDPService

LOCAL = "127.0.0.1"


def test_tcp_and_udp_sessions_are_named_by_their_kind_entry_and_service() -> None:
    async def main() -> None:
        stats = RequestStats()
        log, table = SessionLog(stats, None), SessionTable(10, 10, stats.stream_open)
        settings = StreamSettings()
        backend = Backend("default/db:5432", endpoints=(Endpoint(LOCAL, 1),))
        sock = socket.socket()
        sock.bind((LOCAL, 0))
        tcp_spec = StreamService("TCP", 9000, "default", "db", 5432)
        tcp = TCPService(tcp_spec, backend, sock, settings, log, table)
        udp_spec = StreamService("UDP", 53, "kube-system", "dns", "dns")
        udp = UDPService(udp_spec, Backend("kube-system/dns:dns"), settings, log, table)
        try:
            assert (tcp.spec, tcp.backend, tcp.settings, tcp.sessions, tcp.table) == (
                tcp_spec, backend, settings, log, table,
            )  # fmt: skip
            assert tcp.session("10.0.0.1", 503) == SessionRecord(
                "tcp", "tcp/9000", "default/db:5432", "10.0.0.1", "", 503, 0, 0, 0.0
            )
            assert udp.session("10.0.0.2", 200, "10.1.0.1:53", 40, 120, 0.5) == SessionRecord(
                "udp", "udp/53", "kube-system/dns:dns", "10.0.0.2", "10.1.0.1:53", 200, 40, 120, 0.5
            )
        finally:
            tcp.close()
            udp.close()
            sock.close()

    asyncio.run(main())
