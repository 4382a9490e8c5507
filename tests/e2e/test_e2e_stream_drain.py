"""End to end: layer-4 sessions on SIGTERM (issue 17).

The stream listeners stop accepting with the HTTP ones; TCP-service and TLS
passthrough sessions under way keep carrying data for up to --shutdown-grace
(the process exits as soon as they end), and one still open when the grace
ends is closed then. With one process, and with workers (passthrough in the
workers, TCP services in the main process).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import LOCALHOST, BackgroundLoop, Ingressd, echo_backend, free_port, wait_for
from k8s_objects import endpoint_slice, ingress, ingress_class, path, rule, service
from upstream_certs import issue, tls_server

A = "nginx.ingress.kubernetes.io/"
PASS = "pass.test"
GRACE = 5.0


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


@pytest.fixture
def echoes(upstream_loop: BackgroundLoop) -> Iterator[tuple[int, int]]:
    """A plain TCP echo server and a TLS one (its own certificate, for passthrough)."""
    ctx = tls_server(issue("backend.pass.test", dns_names=(PASS,)))

    async def start() -> tuple[asyncio.AbstractServer, asyncio.AbstractServer]:
        loop = asyncio.get_running_loop()
        plain = await loop.create_server(Echo, LOCALHOST, 0)
        tls = await loop.create_server(Echo, LOCALHOST, 0, ssl=ctx)
        return plain, tls

    plain, tls = upstream_loop.run(start())
    try:
        yield plain.sockets[0].getsockname()[1], tls.sockets[0].getsockname()[1]
    finally:
        plain.close()
        tls.close()


def tls_client(port: int) -> ssl.SSLSocket:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the backend's own certificate: not ingressd's concern here
    raw = socket.create_connection((LOCALHOST, port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=PASS)


def echoed(s: socket.socket, data: bytes) -> bool:
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = s.recv(len(data) - len(got))
        if not chunk:
            return False
        got += chunk
    return got == data


@pytest.mark.parametrize("workers", [1, 2], ids=["1-process", "2-workers"])
def test_sessions_under_way_finish_within_the_grace(
    tmp_path: Path, echoes: tuple[int, int], workers: int
) -> None:
    plain, tls = echoes
    tcp_port = free_port()
    objs = [
        ingress_class(),
        service("tcp-echo", [("echo", 7000)]),
        endpoint_slice("tcp-echo", [LOCALHOST], plain, port_name="echo"),
        *echo_backend("secure", tls),
        ingress(
            "pass", [rule(PASS, path("/", "secure"))], annotations={A + "ssl-passthrough": "true"}
        ),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "tcp-services", "namespace": "default"},
            "data": {str(tcp_port): "default/tcp-echo:7000"},
        },
    ]
    proc = Ingressd(
        tmp_path / "manifests",
        tmp_path / "ingressd.log",
        extra_args=[
            "--workers",
            str(workers),
            "--tcp-services-configmap",
            "default/tcp-services",
            "--enable-ssl-passthrough",
            "--shutdown-grace",
            str(GRACE),
        ],
    )
    proc.update({"all.yaml": objs})
    proc.start()
    sessions: list[socket.socket] = []
    try:
        wait_for(lambda: _connects(tcp_port), 5, what="the TCP service listening")
        tcp = socket.create_connection((LOCALHOST, tcp_port), timeout=10)
        sessions.append(tcp)
        passing = tls_client(proc.https_port)
        sessions.append(passing)
        lingering = socket.create_connection((LOCALHOST, tcp_port), timeout=10)
        sessions.append(lingering)
        for s in sessions:
            assert echoed(s, b"before")
        assert passing.getpeercert(binary_form=True)  # the backend's handshake, through

        sent = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        # The stream ports stop accepting with the HTTP ones...
        wait_for(
            lambda: not _connects(tcp_port) and not _connects(proc.https_port),
            3,
            what="the listeners closed",
        )
        # ...while the sessions under way still carry data, both ways.
        time.sleep(1.0)
        for s in sessions:
            assert echoed(s, b"during the grace" * 1000)
        # Two end on their own: the TCP one with a half-close first.
        tcp.shutdown(socket.SHUT_WR)
        tcp.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert tcp.recv(10) == b""
        passing.close()
        # The one left open is closed when the grace ends, and the process exits 0.
        lingering.settimeout(GRACE + 5)
        with contextlib.suppress(ConnectionResetError):
            assert lingering.recv(10) == b""
        cut = time.monotonic() - sent
        assert proc.proc is not None
        assert proc.proc.wait(10) == 0
        assert GRACE - 0.5 <= cut <= GRACE + 3, cut
        records = [
            json.loads(line[line.index("{") :])
            for line in proc.log().splitlines()
            if '"protocol":"TCP"' in line or '"protocol":"PASSTHROUGH"' in line
        ]
        # Every session was logged with what it carried, the lingering one too.
        carried = len(b"before") + len(b"during the grace" * 1000)
        tcp_records = [r for r in records if r["protocol"] == "TCP" and r["bytes_received"]]
        assert [r["bytes_received"] for r in tcp_records] == [carried, carried], records
        # TLS records wrap the payload: a little more than it.
        [tls_record] = [r for r in records if r["protocol"] == "PASSTHROUGH"]
        assert carried < tls_record["bytes_received"] < carried * 1.2, tls_record
    finally:
        for s in sessions:
            s.close()
        proc.stop()


def _connects(port: int) -> bool:
    try:
        socket.create_connection((LOCALHOST, port), timeout=1).close()
        return True
    except OSError:
        return False
