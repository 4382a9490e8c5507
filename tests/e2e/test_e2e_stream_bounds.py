"""End to end: the bound on TLS passthrough sessions (--max-stream-sessions-per-port).

With a bound of 1, a second passthrough connection is closed as soon as its
ClientHello names the passthrough host (its handshake never completes), is
counted with status 503, and the open session shows in
ingressd_stream_sessions_open; a host that is terminated on the same port
is not a layer-4 session and is still served; the place freed is taken again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import (
    LOCALHOST,
    BackgroundLoop,
    EchoServers,
    backends,
    curl,
    echo_backend,
    scrape,
    serving,
    wait_for,
)
from k8s_objects import ingress, path, rule
from upstream_certs import issue, tls_server

A = "nginx.ingress.kubernetes.io/"
PASS = "pass.test"


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


@pytest.fixture
def tls_echo(upstream_loop: BackgroundLoop) -> Iterator[int]:
    ctx = tls_server(issue("backend.pass.test", dns_names=(PASS,)))

    async def start() -> asyncio.AbstractServer:
        return await asyncio.get_running_loop().create_server(Echo, LOCALHOST, 0, ssl=ctx)

    server = upstream_loop.run(start())
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def tls_client(port: int) -> ssl.SSLSocket:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection((LOCALHOST, port), timeout=10)
    try:
        return ctx.wrap_socket(raw, server_hostname=PASS)
    except BaseException:
        raw.close()
        raise


def test_passthrough_sessions_past_the_bound_are_refused(
    tmp_path: Path, upstream_loop: BackgroundLoop, tls_echo: int, curl_binary: str
) -> None:
    echo = EchoServers(upstream_loop, ["web", "api"])
    objs = [
        *backends(echo),
        *echo_backend("secure", tls_echo),
        ingress(
            "pass", [rule(PASS, path("/", "secure"))], annotations={A + "ssl-passthrough": "true"}
        ),
        ingress("web", [rule("web.test", path("/", "web"))]),
    ]
    args = ["--enable-ssl-passthrough", "--max-stream-sessions-per-port", "1"]
    try:
        with serving(tmp_path, objs, args) as proc:
            port = proc.https_port
            first = tls_client(port)
            first.sendall(b"ping")
            assert first.recv(4) == b"ping"
            # The second is closed before the backend answers its ClientHello.
            with pytest.raises((ssl.SSLError, OSError)):
                tls_client(port).close()
            # Terminated TLS on the same port is not bounded by it.
            answer = curl(
                "-sk", "--resolve", f"web.test:{port}:{LOCALHOST}", f"https://web.test:{port}/"
            )
            assert answer.status == 200
            listener = (("listener", f"https/{port}"),)
            refused = (
                ("kind", "passthrough"),
                ("listen", PASS),
                ("namespace", "default"),
                ("service", "secure"),
                ("status", "503"),
            )
            samples = scrape(proc.admin_port)
            assert samples[("ingressd_stream_sessions_open", listener)] == 1
            assert samples[("ingressd_stream_sessions_total", refused)] == 1
            assert "new connections are closed at once" in proc.log()
            # The place freed is taken again.
            first.close()

            def reopened() -> bool:
                with contextlib.suppress(ssl.SSLError, OSError):
                    again = tls_client(port)
                    again.sendall(b"pong")
                    ok = again.recv(4) == b"pong"
                    again.close()
                    return ok
                return False

            wait_for(reopened, 5, what="a passthrough session after the first ended")
    finally:
        echo.close()
