"""End to end: what the client and the upstream see of proxy-redirect-*, proxy-cookie-*,
proxy-http-version, connection-proxy-header, use-port-in-redirects, limit-rate,
proxy-ssl-ciphers/-protocols and ssl-ciphers.

One ingressd (one Ingress per host) in front of one recording origin, spoken to in
plain HTTP and in TLS; curl and ``openssl s_client`` as clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from e2e_helpers import LOCALHOST, BackgroundLoop, CurlResult, Ingressd, curl, serving
from k8s_objects import endpoint_slice, ingress, ingress_class, path, rule, service
from upstream_certs import secret

from ingressd.model.objects import Obj
from ingressd.policy.tls import self_signed, server_context

A = "nginx.ingress.kubernetes.io/"
BIG = 256 * 1024  # /big's body
AES128 = "ECDHE-ECDSA-AES128-GCM-SHA256"
AES256 = "ECDHE-ECDSA-AES256-GCM-SHA384"
ORIGIN_CERT = self_signed(
    common_name="origin.internal", dns_names=("origin.internal",), ip_addresses=("127.0.0.1",)
)


@dataclass
class Seen:
    """One request as the origin read it."""

    connection: int
    request_line: str
    headers: dict[str, str]
    tls: tuple[str, str] | None  # (version, cipher) of its connection
    body: bytes = b""


@dataclass
class Origin:
    """A bounded HTTP/1.x origin recording each request head it reads."""

    loop: BackgroundLoop
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self.lock:
            self.connections += 1
            conn = self.connections
        sslobj = writer.get_extra_info("ssl_object")
        tls = (sslobj.version(), sslobj.cipher()[0]) if sslobj is not None else None
        try:
            for _ in range(100):  # requests on one connection
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                line, *fields = head.decode("latin-1").split("\r\n")
                headers = {}
                for f in fields:
                    if ":" in f:
                        name, _, value = f.partition(":")
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(min(length, 1 << 20)) if length else b""
                with self.lock:
                    self.seen.append(Seen(conn, line, headers, tls, body))
                target = line.split(" ")[1]
                writer.write(self.response(target))
                await writer.drain()
                # HTTP/1.0 without keep-alive, or Connection: close: the server closes.
                connection = headers.get("connection", "").lower()
                if line.endswith("HTTP/1.0") and "keep-alive" not in connection:
                    break
                if "close" in connection:
                    break
        except (asyncio.IncompleteReadError, TimeoutError, OSError, ValueError):
            pass
        finally:
            writer.close()

    @staticmethod
    def response(target: str) -> bytes:
        if target.startswith("/redirect"):
            head = (
                "HTTP/1.1 302 Found\r\n"
                "Location: http://origin.internal:8080/app/next?x=1\r\n"
                "Refresh: 3; url=http://origin.internal:8080/app/r\r\n"
                "Set-Cookie: s=1; Domain=origin.internal; Path=/app/x; HttpOnly\r\n"
                "Content-Length: 0\r\n\r\n"
            )
            return head.encode()
        if target.startswith("/big"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG + b"x" * BIG
        return b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"

    def requests_for(self, host: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.headers.get("host") == host]


@dataclass
class Setup:
    proxy: Ingressd
    origin: Origin

    def get(self, host: str, target: str = "/", *args: str) -> CurlResult:
        return self.proxy.get(host, target, *args, check=False)


def annotated(host: str, service_name: str = "origin", port: int = 80, **annotations: str) -> Obj:
    return ingress(
        host.split(".")[0],
        [rule(host, path("/", service_name, port))],
        annotations={A + k.replace("_", "-"): v for k, v in annotations.items()},
    )


TLS_SECRET = {"backend_protocol": "HTTPS", "proxy_ssl_secret": "origin-ca"}


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, upstream_loop: BackgroundLoop, curl_binary: str
) -> Iterator[Setup]:
    origin = Origin(upstream_loop)
    tls_ctx = server_context(*ORIGIN_CERT)
    tls_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    tls_ctx.set_ciphers(f"{AES256}:{AES128}")
    servers = [
        upstream_loop.run(asyncio.start_server(origin.handle, LOCALHOST, 0)),
        upstream_loop.run(asyncio.start_server(origin.handle, LOCALHOST, 0, ssl=tls_ctx)),
    ]
    plain_port, tls_port = (s.sockets[0].getsockname()[1] for s in servers)
    objects = [
        ingress_class(),
        service("origin", [80]),
        endpoint_slice("origin", [LOCALHOST], plain_port),
        service("tlsorigin", [443]),
        endpoint_slice("tlsorigin", [LOCALHOST], tls_port),
        secret("origin-ca", ca_crt=ORIGIN_CERT[0]),
        annotated("plain.test"),
        annotated(
            "rw.test",
            proxy_redirect_from="http://origin.internal:8080/app/",
            proxy_redirect_to="https://rw.test/",
            proxy_cookie_domain="origin.internal rw.test",
            proxy_cookie_path="/app/ /",
        ),
        annotated(
            "regex.test",
            proxy_redirect_from="~^http://origin\\.internal(:\\d+)?/app/(.*)$",
            proxy_redirect_to="/moved/$2",
        ),
        annotated("h10.test", proxy_http_version="1.0"),
        annotated("conn.test", connection_proxy_header="keep-alive"),
        annotated(
            "port.test",
            use_port_in_redirects="true",
            configuration_snippet="return 302 /elsewhere;",
        ),
        annotated("noport.test", configuration_snippet="return 302 /elsewhere;"),
        annotated("slow.test", limit_rate="128"),
        annotated(
            "tls12.test",
            "tlsorigin",
            443,
            **TLS_SECRET,
            proxy_ssl_protocols="TLSv1.2",
            proxy_ssl_ciphers=AES128,
        ),
        annotated("tlsdefault.test", "tlsorigin", 443, **TLS_SECRET),
        annotated("cipher.test", ssl_ciphers=AES128),
    ]
    try:
        with serving(tmp_path_factory.mktemp("e2e-rewrite"), objects) as proxy:
            yield Setup(proxy, origin)
    finally:
        for s in servers:
            s.close()
            with contextlib.suppress(Exception):
                upstream_loop.run(s.wait_closed(), timeout=5)


def test_proxy_redirect_and_proxy_cookie_rewrite_what_the_client_gets(setup: Setup) -> None:
    r = setup.get("rw.test", "/redirect")
    assert r.status == 302, r
    assert r.header("Location") == "https://rw.test/next?x=1"
    assert r.header("Refresh") == "3; url=https://rw.test/r"
    assert r.header("Set-Cookie") == "s=1; Domain=rw.test; Path=/x; HttpOnly"
    r = setup.get("regex.test", "/redirect")
    assert r.header("Location") == "/moved/next?x=1"
    assert r.header("Refresh") == "3; url=/moved/r"
    assert r.header("Set-Cookie") == "s=1; Domain=origin.internal; Path=/app/x; HttpOnly"
    # Without the annotations, the upstream's headers as they came.
    r = setup.get("plain.test", "/redirect")
    assert r.header("Location") == "http://origin.internal:8080/app/next?x=1"
    assert r.header("Set-Cookie") == "s=1; Domain=origin.internal; Path=/app/x; HttpOnly"


def test_proxy_http_version_1_0_is_what_the_upstream_reads_and_nothing_is_reused(
    setup: Setup, tmp_path: Path
) -> None:
    for _ in range(2):
        assert setup.get("h10.test", "/v").status == 200
    seen = setup.origin.requests_for("h10.test")
    assert [s.request_line for s in seen] == ["GET /v HTTP/1.0"] * 2
    assert seen[0].connection != seen[1].connection  # a new connection each time
    # HTTP/1.0 has no chunked bodies: read whole, sent with its length, as nginx does.
    r = setup.get("h10.test", "/up", "-H", "Transfer-Encoding: chunked", "--data-binary", "abc")
    assert r.status == 200, r
    last = setup.origin.requests_for("h10.test")[-1]
    assert last.request_line == "POST /up HTTP/1.0"
    assert last.headers.get("content-length") == "3" and "transfer-encoding" not in last.headers
    assert last.body == b"abc"
    # Bounded by proxy-body-size (1m by default): past it, 413 and nothing sent.
    count = len(setup.origin.requests_for("h10.test"))
    big = tmp_path / "big"
    big.write_bytes(b"y" * (2 << 20))
    r = setup.get("h10.test", "/up", "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{big}")
    assert r.status == 413, r
    assert len(setup.origin.requests_for("h10.test")) == count
    # The default: HTTP/1.1, the connection kept for the next request.
    for _ in range(2):
        assert setup.get("plain.test", "/v").status == 200
    seen = setup.origin.requests_for("plain.test")[-2:]
    assert [s.request_line for s in seen] == ["GET /v HTTP/1.1"] * 2
    assert seen[0].connection == seen[1].connection


def test_connection_proxy_header_is_what_the_upstream_reads(setup: Setup) -> None:
    assert setup.get("conn.test", "/c").status == 200
    assert setup.origin.requests_for("conn.test")[-1].headers.get("connection") == "keep-alive"
    assert setup.get("plain.test", "/c").status == 200
    assert "connection" not in setup.origin.requests_for("plain.test")[-1].headers


def test_use_port_in_redirects_names_the_port_the_client_connected_to(setup: Setup) -> None:
    port = setup.proxy.http_port
    r = setup.get("port.test", "/")
    assert (r.status, r.header("Location")) == (302, f"http://port.test:{port}/elsewhere")
    r = setup.get("noport.test", "/")
    assert (r.status, r.header("Location")) == (302, "http://noport.test/elsewhere")


def test_limit_rate_slows_that_response_and_no_other(setup: Setup) -> None:
    done: dict[str, float] = {}
    slow: list[CurlResult] = []

    def fetch_slow() -> None:
        slow.append(setup.get("slow.test", "/big", "--max-time", "20"))
        done["slow"] = time.monotonic()

    start = time.monotonic()
    thread = threading.Thread(target=fetch_slow)
    thread.start()
    try:
        # While it crawls, other requests are answered (one event loop serves all).
        time.sleep(0.2)
        assert setup.get("plain.test", "/big").body == b"x" * BIG
        done["other"] = time.monotonic()
    finally:
        thread.join(30)
    assert slow and slow[0].status == 200 and slow[0].body == b"x" * BIG
    # 128 KiB/s with nginx's one-second burst: 256 KiB cannot take less than a
    # second (a lower bound on what the throttle imposes, not a speed measurement).
    assert done["slow"] - start >= 0.9
    assert done["other"] < done["slow"]
    # The upstream connection it paused goes back to the pool reading: the next
    # requests on it are answered.
    for _ in range(2):
        assert setup.get("slow.test", "/", "--max-time", "5").body == b"ok\n"


def test_proxy_ssl_protocols_and_ciphers_are_what_the_upstream_negotiates(setup: Setup) -> None:
    assert setup.get("tls12.test", "/t").status == 200
    assert setup.origin.requests_for("tls12.test")[-1].tls == ("TLSv1.2", AES128)
    assert setup.get("tlsdefault.test", "/t").status == 200
    assert setup.origin.requests_for("tlsdefault.test")[-1].tls[0] == "TLSv1.3"  # type: ignore[index]


def s_client(port: int, servername: str, ciphers: str) -> str:
    proc = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"{LOCALHOST}:{port}",
            "-servername",
            servername,
            "-tls1_2",
            "-cipher",
            ciphers,
        ],
        input=b"",
        capture_output=True,
        timeout=20,
        check=False,
    )
    return proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


def test_ssl_ciphers_are_the_hosts_own_in_the_handshake(setup: Setup) -> None:
    port = setup.proxy.https_port
    offer = f"{AES256}:{AES128}"
    # The listener prefers AES256 (ECDHE+AESGCM, server order)...
    assert f"Cipher is {AES256}" in s_client(port, "plain.test", offer)
    # ...the host with ssl-ciphers gets its own list.
    assert f"Cipher is {AES128}" in s_client(port, "cipher.test", offer)
    # A client offering only what the host's list leaves out gets no handshake.
    refused = s_client(port, "cipher.test", AES256)
    assert "Cipher is (NONE)" in refused, refused
    assert f"Cipher is {AES256}" in s_client(port, "plain.test", AES256)
    r = curl(
        *setup.proxy.resolve("cipher.test"),
        "-k",
        "--tls-max",
        "1.2",
        setup.proxy.https_url("cipher.test", "/x"),
        check=False,
    )
    assert r.status == 200, r
