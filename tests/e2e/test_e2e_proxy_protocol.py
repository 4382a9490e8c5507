"""End to end: --use-proxy-protocol on the HTTP and HTTPS ports (issue 17).

haproxy (Debian's) in front with ``send-proxy`` and ``send-proxy-v2``, as a
cloud load balancer would be: the address it announces is the client for
X-Real-IP, X-Forwarded-For, allow-lists and the access log. Raw sockets send
what no balancer would: malformed, oversized, slow and missing headers.

The client speaks from 127.0.0.5 (still loopback) so that it differs from
haproxy's own address, 127.0.0.1, which ingressd would see without the header.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
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
    curl,
    free_port,
    serving,
    wait_for,
)
from k8s_objects import ingress, path, rule

from ingressd.stream.proxyproto import build_v1, build_v2

A = "nginx.ingress.kubernetes.io/"
CLIENT = "127.0.0.5"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def objs(echo: EchoServers) -> list:
    return [
        *backends(echo),
        ingress("open", [rule("open.test", path("/", "web"))]),
        ingress(
            "office",
            [rule("office.test", path("/", "web"))],
            annotations={A + "allowlist-source-range": f"{CLIENT}/32"},
        ),
    ]


@pytest.fixture
def behind_balancer(
    tmp_path: Path, upstream_loop: BackgroundLoop, curl_binary: str
) -> Iterator[Ingressd]:
    echo = EchoServers(upstream_loop, ["web", "api"])
    try:
        with serving(tmp_path, objs(echo), ["--use-proxy-protocol"]) as proc:
            yield proc
    finally:
        echo.close()


class HAProxy:
    """haproxy in TCP mode: one frontend per (name, ingressd port, server option)."""

    def __init__(self, workdir: Path, routes: dict[str, tuple[int, str]]) -> None:
        self.ports = {name: free_port() for name in routes}
        lines = [
            "global",
            "  maxconn 256",
            "defaults",
            "  mode tcp",
            "  timeout connect 5s",
            "  timeout client 30s",
            "  timeout server 30s",
        ]
        for name, (target, option) in routes.items():
            lines += [
                f"frontend f_{name}",
                f"  bind {LOCALHOST}:{self.ports[name]}",
                f"  default_backend b_{name}",
                f"backend b_{name}",
                f"  server s {LOCALHOST}:{target} {option}",
            ]
        cfg = workdir / "haproxy.cfg"
        cfg.write_text("\n".join(lines) + "\n")
        self.log = workdir / "haproxy.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(cfg)], stdout=out, stderr=subprocess.STDOUT
            )
        for port in self.ports.values():
            wait_for(lambda p=port: _listening(p), 10, what=f"haproxy on {port}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _listening(port: int) -> bool:
    try:
        socket.create_connection((LOCALHOST, port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture
def haproxy(tmp_path: Path, behind_balancer: Ingressd) -> Iterator[HAProxy]:
    if not Path(HAPROXY).exists():
        pytest.fail("haproxy is not installed (scripts/test.sh installs it)")
    ing = behind_balancer
    balancer = HAProxy(
        tmp_path,
        {
            "v1": (ing.http_port, "send-proxy"),
            "v2": (ing.http_port, "send-proxy-v2"),
            "tls": (ing.https_port, "send-proxy-v2"),
        },
    )
    try:
        yield balancer
    finally:
        balancer.stop()


def via(port: int, host: str, *args: str, scheme: str = "http") -> object:
    return curl(
        "--interface",
        CLIENT,
        "-k",
        "--resolve",
        f"{host}:{port}:{LOCALHOST}",
        *args,
        f"{scheme}://{host}:{port}/",
        check=False,
    )


def test_haproxy_send_proxy_names_the_client(behind_balancer: Ingressd, haproxy: HAProxy) -> None:
    for name, scheme, extra in (
        ("v1", "http", ()),
        ("v2", "http", ()),
        ("tls", "https", ()),
        ("tls", "https", ("--http2",)),
    ):
        port = haproxy.ports[name]
        r = via(port, "open.test", *extra, scheme=scheme)
        assert r.status == 200, (name, r)  # type: ignore[attr-defined]
        headers = r.json()["headers"]  # type: ignore[attr-defined]
        assert headers["x-real-ip"] == CLIENT, (name, extra)
        assert headers["x-forwarded-for"] == CLIENT, (name, extra)
        # The allow-list judges the client, not the balancer (127.0.0.1).
        r = via(port, "office.test", *extra, scheme=scheme)
        assert r.status == 200, (name, extra, r)  # type: ignore[attr-defined]
    # A client outside the list is refused through the same balancer.
    r = curl(
        "--interface",
        "127.0.0.6",
        "-H",
        "Host: office.test",
        f"http://{LOCALHOST}:{haproxy.ports['v2']}/",
        check=False,
    )
    assert r.status == 403
    # The access log names the client too.
    behind_balancer.wait_for_log(f'"client_addr":"{CLIENT}"')
    line = behind_balancer.wait_for_log('"client_addr":"127.0.0.6"')
    assert '"status":403' in line


def _exchange(port: int, data: bytes, timeout: float = 8.0) -> tuple[bytes, float]:
    """What ingressd answers to ``data``, and how long until it closed."""
    start = time.monotonic()
    out = b""
    with socket.create_connection((LOCALHOST, port), timeout=timeout) as s:
        s.sendall(data)
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
    return out, time.monotonic() - start


GET = b"GET / HTTP/1.1\r\nHost: open.test\r\nConnection: close\r\n\r\n"


def test_raw_headers_v1_v2_and_local(behind_balancer: Ingressd) -> None:
    port = behind_balancer.http_port
    for header in (
        build_v1(("192.0.2.7", 4000), (LOCALHOST, port)),
        build_v2(("192.0.2.7", 4000), (LOCALHOST, port)),
        build_v2(("2001:db8::7", 4000), ("2001:db8::1", port)),
    ):
        answer, _ = _exchange(port, header + GET)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        ip = "2001:db8::7" if b"\x21\x21" in header[12:14] else "192.0.2.7"
        assert f'"x-real-ip": "{ip}"'.encode() in answer
    # LOCAL (a balancer's health check): the peer itself is the client.
    answer, _ = _exchange(port, b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00" + GET)
    assert b'"x-real-ip": "127.0.0.1"' in answer
    # The header and the request split anywhere still work.
    header = build_v1(("192.0.2.8", 1), (LOCALHOST, port))
    with socket.create_connection((LOCALHOST, port), timeout=8) as s:
        for piece in (header[:3], header[3:20], header[20:] + GET[:5], GET[5:]):
            s.sendall(piece)
            time.sleep(0.05)
        answer = b"".join(iter(lambda: s.recv(65536), b""))
    assert b'"x-real-ip": "192.0.2.8"' in answer


@pytest.mark.parametrize(
    "data",
    [
        GET,  # no header at all
        b"PROXY TCP4 192.0.2.1 10.0.0.1 1 99999\r\n" + GET,  # a port out of range
        b"PROXY TCP4 nonsense\r\n" + GET,
        b"PROXY TCP4 " + b"9" * 200 + b"\r\n" + GET,  # longer than a v1 line may be
        # a v2 header announcing 60 KiB of TLVs
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xf0\x00" + b"\x00" * 5000,
        b"\x16\x03\x01\x00\x05hello",  # TLS without the header
    ],
)
def test_bad_headers_close_the_connection(behind_balancer: Ingressd, data: bytes) -> None:
    answer, took = _exchange(behind_balancer.http_port, data)
    assert answer == b""
    assert took < 3  # closed at once, not at a timeout
    behind_balancer.wait_for_log("PROXY protocol:")


def test_a_header_that_never_ends_times_out(behind_balancer: Ingressd) -> None:
    answer, took = _exchange(behind_balancer.http_port, b"PROXY TCP4 192.0.2.1", timeout=15)
    assert answer == b""
    assert 4 < took < 12
    behind_balancer.wait_for_log("PROXY protocol: timed out")


def test_tls_after_the_header(behind_balancer: Ingressd) -> None:
    port = behind_balancer.https_port
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((LOCALHOST, port), timeout=8) as raw:
        raw.sendall(build_v2(("198.51.100.9", 1234), (LOCALHOST, port)))
        with ctx.wrap_socket(raw, server_hostname="open.test") as tls:
            tls.sendall(GET)
            answer = b"".join(iter(lambda: tls.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 200")
    assert b'"x-real-ip": "198.51.100.9"' in answer
    assert b'"x-forwarded-proto": "https"' in answer


def test_without_the_flag_a_header_is_a_bad_request(
    tmp_path: Path, upstream_loop: BackgroundLoop, curl_binary: str
) -> None:
    echo = EchoServers(upstream_loop, ["web", "api"])
    try:
        with serving(tmp_path, objs(echo)) as proc:
            answer, _ = _exchange(proc.http_port, build_v1(("192.0.2.1", 1), (LOCALHOST, 80)) + GET)
            assert answer.startswith(b"HTTP/1.1 400")
    finally:
        echo.close()
