"""End to end: the TCP and UDP services ConfigMaps (issue 17), in manifest mode.

Real sockets both ways: a TCP echo server behind a TCP service (100 MB each
way, then a half-close), a UDP server answering several clients at once,
ConfigMap changes opening and closing listeners live, a bad entry and a busy
port reported while the other entries serve, and the PROXY protocol decoded
from clients and sent to the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import LOCALHOST, BackgroundLoop, Ingressd, free_port, raw_exchange, wait_for
from k8s_objects import endpoint_slice, ingress_class, service

from ingressd.stream.proxyproto import build_v1, parse

TCP_CM = "default/tcp-services"
UDP_CM = "default/udp-services"


class EchoTCP(asyncio.Protocol):
    """Echoes every byte; on the client's EOF, ends its own side after what is queued."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]

    def pause_writing(self) -> None:
        self.transport.pause_reading()  # type: ignore[attr-defined]

    def resume_writing(self) -> None:
        self.transport.resume_reading()  # type: ignore[attr-defined]

    def eof_received(self) -> bool:
        self.transport.write(b"<eof seen>")  # type: ignore[attr-defined]
        self.transport.write_eof()  # type: ignore[attr-defined]
        return True


class EchoUDP(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(b"re:" + data, addr)  # type: ignore[attr-defined]


@pytest.fixture
def echo_tcp(upstream_loop: BackgroundLoop) -> Iterator[int]:
    async def start() -> asyncio.AbstractServer:
        return await asyncio.get_running_loop().create_server(EchoTCP, LOCALHOST, 0)

    server = upstream_loop.run(start())
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@pytest.fixture
def echo_udp(upstream_loop: BackgroundLoop) -> Iterator[int]:
    async def start() -> asyncio.DatagramTransport:
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            EchoUDP, local_addr=(LOCALHOST, 0)
        )
        return transport

    transport = upstream_loop.run(start())
    try:
        yield transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


def configmap(name: str, data: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": data,
    }


def backends(tcp_port: int, udp_port: int | None = None) -> list:
    objs = [
        ingress_class(),
        service("tcp-echo", [("echo", 7000)]),
        endpoint_slice("tcp-echo", [LOCALHOST], tcp_port, port_name="echo"),
    ]
    if udp_port is not None:
        objs += [
            service("dns", [("dns", 53)]),
            endpoint_slice("dns", [LOCALHOST], udp_port, port_name="dns"),
        ]
    return objs


def start(tmp_path: Path, objs: list, tcp: dict[str, str], udp: dict | None = None) -> Ingressd:
    proc = Ingressd(
        tmp_path / "manifests",
        tmp_path / "ingressd.log",
        extra_args=[
            "--tcp-services-configmap",
            TCP_CM,
            "--udp-services-configmap",
            UDP_CM,
            "--proxy-stream-timeout",
            "5",
        ],
    )
    proc.update({"objs.yaml": objs, "tcp.yaml": [configmap("tcp-services", tcp)]})
    if udp is not None:
        proc.update({"udp.yaml": [configmap("udp-services", udp)]})
    return proc.start()


def connects(port: int) -> bool:
    try:
        socket.create_connection((LOCALHOST, port), timeout=1).close()
        return True
    except OSError:
        return False


def problems(proc: Ingressd) -> list[str]:
    answer = raw_exchange(
        proc.admin_port, b"GET /problems HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    return json.loads(answer.partition(b"\r\n\r\n")[2])["problems"]


def test_100_mb_each_way_then_half_close(tmp_path: Path, echo_tcp: int) -> None:
    port = free_port()
    proc = start(tmp_path, backends(echo_tcp), {str(port): "default/tcp-echo:7000"})
    try:
        wait_for(lambda: connects(port), 5, what="the TCP service listening")
        total = 100 * 1024 * 1024
        block = bytes(range(256)) * 256  # 64 KiB
        sent = hashlib.sha256()
        got = hashlib.sha256()
        received = 0
        with socket.create_connection((LOCALHOST, port), timeout=30) as s:

            def send() -> None:
                for _ in range(total // len(block)):
                    s.sendall(block)
                    sent.update(block)
                s.shutdown(socket.SHUT_WR)  # half-close: the answer still comes

            writer = threading.Thread(target=send)
            writer.start()
            tail = b""
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                take = max(0, min(len(chunk), total - received))
                got.update(chunk[:take])
                received += take
                tail += chunk[take:]
            writer.join(30)
        assert received == total
        assert got.hexdigest() == sent.hexdigest()
        # The upstream saw the EOF, and what it wrote after it still arrived.
        assert tail == b"<eof seen>"
        # (the probes that waited for the port were sessions too, with no bytes)
        line = proc.wait_for_log(f'"bytes_received":{total}')
        record = json.loads(line[line.index("{") :])
        assert record["protocol"] == "TCP" and record["status"] == 200
        assert record["client_addr"] == LOCALHOST
        assert record["bytes_sent"] == total + len(b"<eof seen>")
        assert record["listen"] == f"tcp/{port}"
    finally:
        proc.stop()


def test_udp_clients_each_get_their_own_replies(
    tmp_path: Path, echo_tcp: int, echo_udp: int
) -> None:
    port = free_port()
    # UDP ports are separate from TCP ones: the same number may serve both.
    proc = start(
        tmp_path,
        backends(echo_tcp, echo_udp),
        {str(port): "default/tcp-echo:7000"},
        {str(port): "default/dns:dns"},
    )
    try:
        proc.wait_for_log(f"stream service udp/{port}")
        clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
        try:
            for c in clients:
                c.settimeout(5)
                c.bind((LOCALHOST, 0))
            for round_ in range(3):
                for i, c in enumerate(clients):
                    c.sendto(f"client {i} round {round_}".encode(), (LOCALHOST, port))
                for i, c in enumerate(clients):
                    data, addr = c.recvfrom(2048)
                    assert data == f"re:client {i} round {round_}".encode()
                    assert addr == (LOCALHOST, port)
        finally:
            for c in clients:
                c.close()
        line = proc.wait_for_log('"protocol":"UDP"')
        assert f'"listen":"udp/{port}"' in line
    finally:
        proc.stop()


def test_configmap_changes_open_and_close_listeners_live(tmp_path: Path, echo_tcp: int) -> None:
    first, second = free_port(), free_port()
    proc = start(tmp_path, backends(echo_tcp), {str(first): "default/tcp-echo:7000"})
    try:
        wait_for(lambda: connects(first), 5, what="the first port")
        assert not connects(second)
        pid = proc.pid
        proc.update(
            {
                "tcp.yaml": [
                    configmap(
                        "tcp-services",
                        {str(first): "default/tcp-echo:7000", str(second): "default/tcp-echo:echo"},
                    )
                ]
            }
        )
        wait_for(lambda: connects(second), 5, what="the second port opened")
        with socket.create_connection((LOCALHOST, second), timeout=5) as s:
            s.sendall(b"ping")
            assert s.recv(10) == b"ping"
        proc.update(
            {"tcp.yaml": [configmap("tcp-services", {str(second): "default/tcp-echo:7000"})]}
        )
        wait_for(lambda: not connects(first), 5, what="the first port closed")
        assert connects(second)
        proc.update({"tcp.yaml": None})  # the ConfigMap gone: no TCP services
        wait_for(lambda: not connects(second), 5, what="the second port closed")
        assert proc.pid == pid  # no restart
    finally:
        proc.stop()


def test_a_bad_entry_and_a_busy_port_are_reported_while_others_serve(
    tmp_path: Path, echo_tcp: int
) -> None:
    good, busy = free_port(), free_port()
    holder = socket.socket()
    holder.bind((LOCALHOST, busy))
    holder.listen(1)
    try:
        proc = start(
            tmp_path,
            backends(echo_tcp),
            {
                str(good): "default/tcp-echo:7000",
                str(busy): "default/tcp-echo:7000",
                "70000": "default/tcp-echo:7000",
                "9": "no-slash:7000",
                str(free_port()): "default/missing:1",
                str(free_port()): "default/tcp-echo:7000:PROXI",
            },
        )
        try:
            wait_for(lambda: connects(good), 5, what="the good entry serving")
            with socket.create_connection((LOCALHOST, good), timeout=5) as s:
                s.sendall(b"still here")
                assert s.recv(20) == b"still here"
            found = "\n".join(problems(proc))
            for expected in (
                f"tcp/{busy}: cannot listen on 127.0.0.1:{busy}: address already in use",
                "TCP port '70000': not a port number",
                "TCP port '9': 'no-slash' is not <namespace>/<service>",
                "service default/missing not found",
                "'PROXI' is not PROXY",
            ):
                assert expected in found, found
            assert found.count("ConfigMap default/tcp-services") == 5
            assert proc.proc is not None and proc.proc.poll() is None
            # The controller's own ports are refused too.
            proc.update(
                {
                    "tcp.yaml": [
                        configmap(
                            "tcp-services",
                            {
                                str(good): "default/tcp-echo:7000",
                                str(proc.http_port): "default/tcp-echo:7000",
                            },
                        )
                    ]
                }
            )
            wait_for(
                lambda: any("the controller's own (--http-port)" in p for p in problems(proc)),
                5,
                what="the reserved port reported",
            )
        finally:
            proc.stop()
    finally:
        holder.close()


def test_proxy_protocol_from_clients_and_to_the_upstream(tmp_path: Path, echo_tcp: int) -> None:
    port, plain = free_port(), free_port()
    proc = start(
        tmp_path,
        backends(echo_tcp),
        {
            str(port): "default/tcp-echo:7000:PROXY:PROXY",
            str(plain): "default/tcp-echo:7000::PROXY",
        },
    )
    try:
        wait_for(lambda: connects(port), 5, what="listening")
        with socket.create_connection((LOCALHOST, port), timeout=5) as s:
            s.sendall(build_v1(("203.0.113.50", 4321), ("10.0.0.1", port)) + b"hello")
            s.shutdown(socket.SHUT_WR)
            echoed = b"".join(iter(lambda: s.recv(65536), b""))
        # The upstream got a header naming the client the balancer announced.
        header = parse(echoed)
        assert header is not None and header.source == ("203.0.113.50", 4321)
        assert echoed[header.length :] == b"hello<eof seen>"
        # Without decoding, the header names the peer itself.
        with socket.create_connection((LOCALHOST, plain), timeout=5) as s:
            s.sendall(b"x")
            s.shutdown(socket.SHUT_WR)
            echoed = b"".join(iter(lambda: s.recv(65536), b""))
        header = parse(echoed)
        assert header is not None and header.source is not None
        assert header.source[0] == LOCALHOST and header.destination == (LOCALHOST, plain)
        # A client without a header is closed at once.
        start_time = time.monotonic()
        with socket.create_connection((LOCALHOST, port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            # closed with the request unread: a reset, as from nginx
            with contextlib.suppress(ConnectionResetError):
                assert s.recv(100) == b""
        assert time.monotonic() - start_time < 3
    finally:
        proc.stop()


class Greeter(asyncio.Protocol):
    """Speaks first and hangs up, as a banner or nginx's stream ``return`` does."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(b"220 greetings\r\n")  # type: ignore[attr-defined]
        transport.close()


def test_an_upstream_that_speaks_first_is_heard(
    tmp_path: Path, upstream_loop: BackgroundLoop, echo_tcp: int
) -> None:
    async def begin() -> asyncio.AbstractServer:
        return await asyncio.get_running_loop().create_server(Greeter, LOCALHOST, 0)

    server = upstream_loop.run(begin())
    port = free_port()
    objs = [
        *backends(echo_tcp),
        service("banner", [("smtp", 25)]),
        endpoint_slice("banner", [LOCALHOST], server.sockets[0].getsockname()[1], port_name="smtp"),
    ]
    proc = start(tmp_path, objs, {str(port): "default/banner:smtp"})
    try:
        wait_for(lambda: connects(port), 5, what="listening")
        for _ in range(20):  # the greeting may come before the client's side is set up
            with socket.create_connection((LOCALHOST, port), timeout=5) as s:
                assert b"".join(iter(lambda: s.recv(100), b"")) == b"220 greetings\r\n"
    finally:
        proc.stop()
        server.close()
