"""End to end: --enable-ssl-passthrough (issue 17).

A TLS backend with a certificate of its own behind an Ingress annotated
``ssl-passthrough: "true"``: ``openssl s_client -servername`` through ingressd
must see the backend's certificate, byte for byte, and talk to the backend; a
host that is not passed through, on the same port, is still terminated by
ingressd. Garbage in place of a ClientHello is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import (
    LOCALHOST,
    BackgroundLoop,
    EchoServers,
    Ingressd,
    backends,
    curl,
    echo_backend,
    pem_to_der,
    scrape,
    served_certificate,
    serving,
    wait_for,
)
from k8s_objects import endpoint_slice, ingress, path, rule, service
from upstream_certs import Issued, issue, tls_server

A = "nginx.ingress.kubernetes.io/"
PASS = "pass.test"


class TLSBackend(asyncio.Protocol):
    """Answers each request line with an HTTP response naming itself, over its own TLS."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer:
            body = b"hello from the TLS backend\n"
            self.transport.write(  # type: ignore[attr-defined]
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%b"
                % (len(body), body)
            )
            self.transport.close()  # type: ignore[attr-defined]


@pytest.fixture
def backend_cert() -> Issued:
    return issue("backend.pass.test", dns_names=(PASS,))


@pytest.fixture
def tls_backend(upstream_loop: BackgroundLoop, backend_cert: Issued) -> Iterator[int]:
    ctx = tls_server(backend_cert)

    async def start() -> asyncio.AbstractServer:
        return await asyncio.get_running_loop().create_server(TLSBackend, LOCALHOST, 0, ssl=ctx)

    server = upstream_loop.run(start())
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def objects(echo: EchoServers, tls_port: int) -> list:
    return [
        *backends(echo),
        *echo_backend("secure", tls_port),
        ingress(
            "pass",
            [rule(PASS, path("/", "secure"), path("/api", "api"))],
            annotations={A + "ssl-passthrough": "true", A + "rewrite-target": "/x"},
        ),
        ingress("web", [rule("web.test", path("/", "web"))]),
    ]


@pytest.fixture
def passing(
    tmp_path: Path, upstream_loop: BackgroundLoop, tls_backend: int, curl_binary: str
) -> Iterator[Ingressd]:
    echo = EchoServers(upstream_loop, ["web", "api"])
    try:
        with serving(tmp_path, objects(echo, tls_backend), ["--enable-ssl-passthrough"]) as proc:
            yield proc
    finally:
        echo.close()


def s_client(port: int, servername: str) -> str:
    proc = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"{LOCALHOST}:{port}",
            "-servername",
            servername,
            "-showcerts",
            "-ign_eof",
        ],
        input=f"GET / HTTP/1.1\r\nHost: {servername}\r\nConnection: close\r\n\r\n".encode(),
        capture_output=True,
        timeout=20,
        check=False,
    )
    return proc.stdout.decode(errors="replace")


def first_pem(text: str) -> bytes:
    found = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, re.S)
    assert found, text
    return found.group(0).encode() + b"\n"


def test_the_backend_certificate_arrives_untouched(passing: Ingressd, backend_cert: Issued) -> None:
    out = s_client(passing.https_port, PASS)
    # The backend's own certificate, byte for byte, and its answer over its TLS.
    assert pem_to_der(first_pem(out)) == pem_to_der(backend_cert.cert_pem)
    assert "hello from the TLS backend" in out
    # Paths and HTTP annotations do not apply: /api does not go to api, and
    # nothing is rewritten (the backend answers every path itself).
    r = curl("-k", *passing.resolve(PASS), passing.https_url(PASS, "/api/users"))
    assert r.status == 200 and r.body == b"hello from the TLS backend\n"
    # Case does not matter in SNI.
    der = served_certificate(passing.https_port, "PASS.test")
    assert der == pem_to_der(backend_cert.cert_pem)
    # With the flag, the annotation is not reported as ignored.
    assert "ssl-passthrough is not supported" not in passing.log()


def test_other_hosts_on_the_same_port_are_terminated(
    passing: Ingressd, backend_cert: Issued
) -> None:
    out = s_client(passing.https_port, "web.test")
    assert pem_to_der(first_pem(out)) != pem_to_der(backend_cert.cert_pem)
    r = curl("-k", *passing.resolve("web.test"), passing.https_url("web.test", "/hello"))
    assert r.status == 200 and r.json()["service"] == "web"
    r = curl("-k", "--http2", *passing.resolve("web.test"), passing.https_url("web.test"))
    assert r.status == 200 and r.json()["service"] == "web"
    # No SNI at all: terminated too.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((LOCALHOST, passing.https_port), timeout=5) as raw,
        ctx.wrap_socket(raw) as tls,
    ):
        assert tls.getpeercert(binary_form=True) != pem_to_der(backend_cert.cert_pem)


def test_passthrough_sessions_are_logged_and_counted(passing: Ingressd) -> None:
    s_client(passing.https_port, PASS)
    line = passing.wait_for_log('"protocol":"PASSTHROUGH"')
    record = json.loads(line[line.index("{") :])
    assert record["listen"] == PASS and record["status"] == 200
    assert record["service"] == "default/secure:80"
    assert record["bytes_received"] > 100 and record["bytes_sent"] > 300

    def counted() -> bool:
        samples = scrape(passing.admin_port)
        return any(
            name == "ingressd_stream_sessions_total" and dict(labels).get("kind") == "passthrough"
            for name, labels in samples
        )

    wait_for(counted, 5, what="passthrough sessions in /metrics")


def test_garbage_instead_of_a_hello_is_closed(passing: Ingressd) -> None:
    with socket.create_connection((LOCALHOST, passing.https_port), timeout=8) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: pass.test\r\n\r\n")
        with contextlib.suppress(ConnectionResetError):  # closed with the request unread
            assert s.recv(100) == b""
    passing.wait_for_log("TLS: not a TLS handshake record: connection closed")


def test_an_endpoint_that_refuses_is_skipped(
    tmp_path: Path, upstream_loop: BackgroundLoop, tls_backend: int, backend_cert: Issued
) -> None:
    echo = EchoServers(upstream_loop, ["web", "api"])
    dead = socket.socket()
    dead.bind((LOCALHOST, 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens there: connections are refused
    objs = [
        *backends(echo),
        service("secure"),
        endpoint_slice("secure", [LOCALHOST], tls_backend, name="secure-a"),
        endpoint_slice("secure", ["127.0.0.2"], dead_port, name="secure-b"),
        ingress(
            "pass", [rule(PASS, path("/", "secure"))], annotations={A + "ssl-passthrough": "true"}
        ),
    ]
    try:
        with serving(tmp_path, objs, ["--enable-ssl-passthrough"]) as proc:
            for _ in range(4):  # round robin: every other try starts at the dead one
                der = served_certificate(proc.https_port, PASS)
                assert der == pem_to_der(backend_cert.cert_pem)
    finally:
        echo.close()
