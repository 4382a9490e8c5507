"""End to end: graceful shutdown on SIGTERM.

/readyz turns unready at once; the listeners keep accepting for
--shutdown-delay; then new connections are refused while requests in flight
(and open WebSockets) get up to --shutdown-grace to finish; then exit 0.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import (
    LOCALHOST,
    BackgroundLoop,
    EchoServers,
    Ingressd,
    backends,
    simple,
    wait_for,
)

DELAY = 1.0
GRACE = 4.0
SLOW_MS = 2500


def get(port: int, path: str, host: str = "web.test", timeout: float = 10.0) -> bytes:
    with socket.create_connection((LOCALHOST, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def ws_frame(text: bytes) -> bytes:
    """A masked client text frame (RFC 6455), payload under 126 bytes."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(text))
    return struct.pack("!BB", 0x81, 0x80 | len(text)) + mask + masked


def ws_read(s: socket.socket) -> bytes:
    head = s.recv(2)
    if len(head) < 2:
        return b""
    size = head[1] & 0x7F
    data = b""
    while len(data) < size:
        data += s.recv(size - len(data))
    return data


@pytest.fixture(params=[1, 2], ids=["1-process", "2-workers"])
def proxy(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    upstream_loop: BackgroundLoop,
    curl_binary: str,
) -> Iterator[Ingressd]:
    echo = EchoServers(upstream_loop, ["web", "api"])
    args = ["--shutdown-delay", str(DELAY), "--shutdown-grace", str(GRACE)]
    args += ["--workers", str(request.param)]
    proc = Ingressd(tmp_path / "manifests", tmp_path / "ingressd.log", extra_args=args)
    proc.update({"all.yaml": [*backends(echo), simple("web", "web.test", "web")]})
    try:
        yield proc.start()
    finally:
        proc.stop()
        echo.close()


def test_sigterm_drains_in_flight_requests_and_websockets(proxy: Ingressd) -> None:
    port = proxy.http_port
    results: list[bytes] = []
    lock = threading.Lock()

    def slow() -> None:
        answer = get(port, f"/_echo/sleep/{SLOW_MS}")
        with lock:
            results.append(answer)

    threads = [threading.Thread(target=slow) for _ in range(5)]
    for t in threads:
        t.start()
    ws = socket.create_connection((LOCALHOST, port), timeout=10)
    ws.sendall(
        b"GET /ws HTTP/1.1\r\nHost: web.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    assert ws.recv(4096).startswith(b"HTTP/1.1 101")
    ws.sendall(ws_frame(b"before"))
    assert ws_read(ws) == b"before"
    time.sleep(0.3)  # the slow requests are at the upstream by now

    sent = time.monotonic()
    os.kill(proxy.pid, signal.SIGTERM)
    wait_for(lambda: proxy.admin_status("/readyz") == 503, 0.5, 0.02, what="unready")
    # Within the delay new connections are still served, and told to go away
    # after (workers hear of the shutdown over their pipe: within milliseconds).
    for _ in range(10):
        during = get(port, "/")
        assert during.startswith(b"HTTP/1.1 200 OK")
        if b"Connection: close" in during:
            break
        time.sleep(0.02)
    assert b"Connection: close" in during
    # After the delay, the port refuses.
    time.sleep(max(0.0, DELAY + 0.5 - (time.monotonic() - sent)))
    with pytest.raises(OSError):
        socket.create_connection((LOCALHOST, port), timeout=1).close()
    # The WebSocket still works during the grace...
    ws.sendall(ws_frame(b"during"))
    assert ws_read(ws) == b"during"
    for t in threads:
        t.join(10)
    # ...every slow request finished with its answer...
    assert len(results) == 5
    assert all(r.startswith(b"HTTP/1.1 200 OK") for r in results), results
    # ...and when the grace ends the tunnel is cut and the process exits 0.
    assert proxy.proc is not None
    code = proxy.proc.wait(GRACE + 5)
    elapsed = time.monotonic() - sent
    assert code == 0
    assert DELAY + GRACE - 0.5 <= elapsed <= DELAY + GRACE + 3, elapsed
    ws.settimeout(2)
    assert ws_read(ws) == b""
    ws.close()
