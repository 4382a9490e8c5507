"""End to end, with --workers 2: TCP services listen in the main process, TLS
passthrough runs in the workers, and /metrics sums both."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import (
    LOCALHOST,
    BackgroundLoop,
    EchoServers,
    Ingressd,
    backends,
    echo_backend,
    free_port,
    pem_to_der,
    raw_exchange,
    scrape,
    served_certificate,
    wait_for,
)
from k8s_objects import ingress, path, rule
from upstream_certs import issue, tls_server

A = "nginx.ingress.kubernetes.io/"


class Hello(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(b"hi")  # type: ignore[attr-defined]
        transport.close()


@pytest.fixture
def tls_backend(upstream_loop: BackgroundLoop) -> Iterator[tuple[int, bytes]]:
    issued = issue("pass.test", dns_names=("pass.test",))

    async def start() -> asyncio.AbstractServer:
        return await asyncio.get_running_loop().create_server(
            Hello, LOCALHOST, 0, ssl=tls_server(issued)
        )

    server = upstream_loop.run(start())
    try:
        yield server.sockets[0].getsockname()[1], issued.cert_pem
    finally:
        server.close()


def test_stream_services_and_passthrough_with_workers(
    tmp_path: Path,
    upstream_loop: BackgroundLoop,
    tls_backend: tuple[int, bytes],
    curl_binary: str,
) -> None:
    tls_port, cert_pem = tls_backend
    echo = EchoServers(upstream_loop, ["web", "api"])
    port = free_port()
    proc = Ingressd(
        tmp_path / "manifests",
        tmp_path / "ingressd.log",
        extra_args=[
            "--workers",
            "2",
            "--enable-ssl-passthrough",
            "--tcp-services-configmap",
            "default/tcp",
        ],
    )
    proc.update(
        {
            "all.yaml": [
                *backends(echo),
                *echo_backend("secure", tls_port),
                ingress(
                    "pass",
                    [rule("pass.test", path("/", "secure"))],
                    annotations={A + "ssl-passthrough": "true"},
                ),
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "tcp", "namespace": "default"},
                    "data": {str(port): "default/web:80"},
                },
            ]
        }
    )
    try:
        proc.start()
        request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        wait_for(
            lambda: raw_exchange(port, request, timeout=2).startswith(b"HTTP/1.1 200"),
            10,
            what="the TCP service",
        )
        for _ in range(4):  # whichever worker accepts
            assert served_certificate(proc.https_port, "pass.test") == pem_to_der(cert_pem)

        def kinds() -> set[str]:
            samples = scrape(proc.admin_port)
            return {
                dict(labels)["kind"]
                for name, labels in samples
                if name == "ingressd_stream_sessions_total"
            }

        # Workers report about once a second; the main process counts its own.
        wait_for(lambda: kinds() == {"tcp", "passthrough"}, 10, what="both kinds in /metrics")
    finally:
        proc.stop()
        echo.close()
