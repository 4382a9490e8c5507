"""End to end: clients that stop sending. A request cut short by the client's
FIN is dropped at once (with its upstream connection), and an early answer to
a request whose body is still coming is not lost to a connection reset."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import LOCALHOST, BackgroundLoop, Ingressd, RecordingListener, serving
from k8s_objects import endpoint_slice, ingress, ingress_class, path, rule, service

A = "nginx.ingress.kubernetes.io/"


@pytest.fixture
def proxy(
    tmp_path: Path, upstream_loop: BackgroundLoop, recording_listener: RecordingListener
) -> Iterator[Ingressd]:
    objs = [
        ingress_class(),
        service("rec"),
        endpoint_slice("rec", [LOCALHOST], recording_listener.port),
        ingress("rec", [rule("rec.test", path("/", "rec"))]),
        ingress(
            "streamed",
            [rule("streamed.test", path("/", "rec"))],
            annotations={A + "proxy-request-buffering": "off"},
        ),
        ingress(
            "moved",
            [rule("moved.test", path("/", "rec"))],
            annotations={A + "permanent-redirect": "https://elsewhere.test/"},
        ),
    ]
    with serving(tmp_path, objs) as proc:
        yield proc


def test_a_body_cut_short_by_the_client_is_dropped_at_once(
    proxy: Ingressd, recording_listener: RecordingListener
) -> None:
    # Streamed (proxy-request-buffering off): the upstream has the head and the
    # first bytes; buffered (the default): it has nothing yet, and never will.
    for host, upstream_connections in (("streamed.test", 1), ("rec.test", 1)):
        with socket.create_connection((LOCALHOST, proxy.http_port), timeout=5) as s:
            s.sendall(
                b"POST /upload HTTP/1.1\r\nHost: %b\r\nContent-Length: 100000\r\n\r\n"
                % host.encode()
                + b"x" * 10000
            )
            time.sleep(0.3)  # the head and the first bytes reach the upstream, or not
            assert recording_listener.connections == upstream_connections
            s.shutdown(socket.SHUT_WR)  # the client gives up: the rest never comes
            started = time.monotonic()
            assert s.recv(65536) == b""  # closed, without waiting for a body timeout
            assert time.monotonic() - started < 2
    assert recording_listener.requests == 1  # the buffered one never reached it


def test_an_early_answer_survives_a_body_still_being_sent(proxy: Ingressd) -> None:
    body = b"y" * (2 << 20)
    with socket.create_connection((LOCALHOST, proxy.http_port), timeout=10) as s:
        s.sendall(
            b"POST /form HTTP/1.1\r\nHost: moved.test\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        time.sleep(0.2)  # the 301 is on its way before the body is
        s.sendall(body)  # not reset: ingressd drains what it will not read
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 301 ")
    assert b"Location: https://elsewhere.test/" in answer
