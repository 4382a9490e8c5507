"""End to end: how many TLS records a small HTTPS response costs.

uvloop's TLS transport encrypts each part handed to ``writelines`` as a record
of its own, so a response head and its body written as two parts went out as
two records: twice the encryption, MAC and framing of one. ingressd joins what
one upstream read produced before a TLS write; this counts the application-data
records a real TLS 1.2 client receives for one keep-alive exchange.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import LOCALHOST, BackgroundLoop, Ingressd, RecordingListener, echo_backend
from k8s_objects import ingress, ingress_class, path, rule, tls_entry, tls_secret

HOST = "records.test"
APPLICATION_DATA = 23
REQUEST = f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
DEADLINE = 10.0


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, upstream_loop: BackgroundLoop
) -> Iterator[Ingressd]:
    upstream = RecordingListener(upstream_loop)
    workdir: Path = tmp_path_factory.mktemp("tls-records")
    proc = Ingressd(workdir / "manifests", workdir / "ingressd.log")
    proc.update(
        {
            "all.yaml": [
                ingress_class(),
                *echo_backend("rec", upstream.port),
                tls_secret("records-tls", [HOST]),
                ingress(
                    "records",
                    [rule(HOST, path("/", "rec"))],
                    tls=[tls_entry([HOST], "records-tls")],
                ),
            ]
        }
    )
    try:
        yield proc.start()
    finally:
        proc.stop()


class RawTLS:
    """A TLS 1.2 client over memory BIOs: the bytes on the wire stay visible."""

    def __init__(self, port: int) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        # TLS 1.2: every record after the handshake is application data, where
        # TLS 1.3 sends its session tickets as such records too.
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        self.sock = socket.create_connection((LOCALHOST, port), timeout=DEADLINE)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=HOST)
        for _ in range(50):  # handshake round trips, bounded
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._send_pending()
                self.incoming.write(self._recv())
        self._send_pending()

    def _send_pending(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise AssertionError("ingressd closed the connection")
        return data

    def exchange(self, request: bytes) -> tuple[bytes, list[int]]:
        """Send ``request``; the decrypted response and the record types it came in."""
        self.tls.write(request)
        self._send_pending()
        wire = b""
        plain = b""
        for _ in range(100):  # reads, bounded
            data = self._recv()
            wire += data
            self.incoming.write(data)
            try:
                while True:
                    plain += self.tls.read(65536)
            except ssl.SSLWantReadError:
                pass
            head, sep, body = plain.partition(b"\r\n\r\n")
            if sep and len(body) >= _content_length(head):
                break
        return plain, _record_types(wire)

    def close(self) -> None:
        self.sock.close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise AssertionError(f"no Content-Length in {head!r}")


def _record_types(wire: bytes) -> list[int]:
    """The content type of each whole TLS record in ``wire`` (5-byte headers)."""
    types = []
    offset = 0
    while offset + 5 <= len(wire):
        length = int.from_bytes(wire[offset + 3 : offset + 5], "big")
        types.append(wire[offset])
        offset += 5 + length
    assert offset == len(wire), "the response ended inside a record"
    return types


def test_a_small_response_is_one_tls_record(served: Ingressd) -> None:
    client = RawTLS(served.https_port)
    try:
        for _ in range(3):  # the first request and keep-alive ones alike
            plain, types = client.exchange(REQUEST)
            assert plain.startswith(b"HTTP/1.1 200 ") and plain.endswith(b"recorded\n")
            assert types == [APPLICATION_DATA], f"records of types {types}"
    finally:
        client.close()
