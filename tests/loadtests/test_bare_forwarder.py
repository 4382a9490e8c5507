"""loadtests/bare_forwarder.py, the floor bench.py --with-bare measures ingressd
against: it must forward what ingressd forwards, or the comparison is void.

Real sockets on 127.0.0.1: the forwarder runs as bench.py starts it (a
subprocess, plain and TLS ports) in front of a small origin that records each
request and the connection it came on.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ingressd.policy.tls import self_signed

SCRIPT = Path(__file__).resolve().parents[2] / "loadtests" / "bare_forwarder.py"
HEADERS_ADDED = (
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Port",
    "X-Forwarded-Proto",
    "X-Scheme",
    "X-Real-IP",
    "X-Request-ID",
)


class Origin(BaseHTTPRequestHandler):
    """Answers with JSON: the request line, headers, body and which connection."""

    protocol_version = "HTTP/1.1"
    seen: list[dict[str, Any]] = []

    def _answer(self) -> None:
        body = b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        elif length := int(self.headers.get("Content-Length") or 0):
            body = self.rfile.read(length)
        record = {
            "line": self.requestline,
            "headers": list(self.headers.items()),
            "body": body.decode(),
            "conn": self.client_address[1],
        }
        Origin.seen.append(record)
        data = json.dumps(record).encode()
        self.send_response(200)
        if self.path.startswith("/chunked"):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
        else:
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"port {port} not open")


@pytest.fixture
def origin() -> Iterator[int]:
    Origin.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def start_forwarder(upstream: int, tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    cert, key = self_signed(common_name="bench.local", dns_names=("bench.local",), days=1)
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    http_port, https_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable, str(SCRIPT), "--upstream", f"127.0.0.1:{upstream}",
            "--http-port", str(http_port), "--https-port", str(https_port),
            "--cert", str(tmp_path / "tls.crt"), "--key", str(tmp_path / "tls.key"),
        ],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_port(http_port, proc)
        wait_port(https_port, proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, http_port, https_port


@pytest.fixture
def forwarder(origin: int, tmp_path: Path) -> Iterator[tuple[int, int]]:
    proc, http_port, https_port = start_forwarder(origin, tmp_path)
    try:
        yield http_port, https_port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def request(conn: http.client.HTTPConnection, method: str, path: str, **kw: Any) -> dict[str, Any]:
    conn.request(method, path, **kw)
    resp = conn.getresponse()
    assert resp.status == 200
    answer: dict[str, Any] = json.loads(resp.read())
    return answer


def test_adds_ingressds_headers_and_reuses_both_connections(forwarder: tuple[int, int]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", forwarder[0], timeout=10)
    spoofed = {
        "Host": "bench.local",
        "X-Forwarded-For": "203.0.113.9",
        "X-Request-ID": "spoofed",
        "Connection": "keep-alive",
        "Cookie": "a=1; b=2",
    }
    first = request(conn, "GET", "/a?b=1", headers=spoofed)
    second = request(conn, "GET", "/second", headers={"Host": "bench.local"})
    conn.close()
    assert first["line"] == "GET /a?b=1 HTTP/1.1" and second["line"] == "GET /second HTTP/1.1"
    sent = dict(first["headers"])
    assert [name for name, _ in first["headers"]].count("X-Forwarded-For") == 1
    assert sent["X-Forwarded-For"] == sent["X-Real-IP"] == "127.0.0.1"
    assert sent["X-Forwarded-Host"] == "bench.local"
    assert sent["X-Forwarded-Port"] == str(forwarder[0])
    assert sent["X-Forwarded-Proto"] == sent["X-Scheme"] == "http"
    assert sent["Cookie"] == "a=1; b=2"
    assert "Connection" not in sent
    ids = {dict(r["headers"])["X-Request-ID"] for r in (first, second)}
    assert len(ids) == 2 and "spoofed" not in ids and all(len(i) == 32 for i in ids)
    assert set(HEADERS_ADDED) <= set(dict(second["headers"]))
    assert first["conn"] == second["conn"]  # one pooled upstream connection


def test_bodies_both_ways_and_chunked_responses(forwarder: tuple[int, int]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", forwarder[0], timeout=10)
    sized = request(conn, "POST", "/chunked", body=b"x" * 100_000)
    assert sized["body"] == "x" * 100_000
    chunked = request(conn, "POST", "/p", body=iter([b"abc", b"defg"]), encode_chunked=True)
    assert chunked["body"] == "abcdefg"
    assert dict(chunked["headers"])["Transfer-Encoding"] == "chunked"
    conn.close()


def test_tls_port_says_https(forwarder: tuple[int, int]) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", forwarder[1], timeout=10, context=ctx)
    sent = dict(request(conn, "GET", "/", headers={"Host": "bench.local"})["headers"])
    conn.close()
    assert sent["X-Forwarded-Proto"] == "https" and sent["X-Forwarded-Port"] == str(forwarder[1])


def test_an_upstream_that_refuses_gets_502_and_the_forwarder_carries_on(tmp_path: Path) -> None:
    proc, http_port, _ = start_forwarder(free_port(), tmp_path)  # nothing listens upstream
    try:
        for _ in range(2):
            conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
            conn.request("GET", "/")
            assert conn.getresponse().status == 502
            conn.close()
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=10)
