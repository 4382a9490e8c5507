"""End to end: ``/metrics`` counts what the proxy did, exactly, with one process or two.

Requests are sent on raw sockets with ``Connection: close``, so the bytes each
side sent are known to the byte and compared with the byte counters.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import (
    LOCALHOST,
    BackgroundLoop,
    EchoServers,
    Ingressd,
    Samples,
    backends,
    echo_backend,
    free_port,
    raw_exchange,
    sample_labels,
    scrape,
    simple,
    wait_for,
)
from k8s_objects import ingress, path, rule, tls_entry, tls_secret
from test_e2e_workers import children, established_on, socket_inodes

from ingressd.policy.tls import self_signed

pytestmark = pytest.mark.timeout(60)

BODY = bytes(range(256)) * 4  # 1,024 bytes
VALID_DAYS = 30


def request(method: str, host: str, target: str = "/", body: bytes = b"") -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def where(namespace: str, ingress: str, service: str, **more: str) -> tuple[tuple[str, str], ...]:
    return sample_labels(namespace=namespace, ingress=ingress, service=service, **more)


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


@pytest.fixture
def proxy(
    tmp_path: Path, upstream_loop: BackgroundLoop, curl_binary: str
) -> Iterator[tuple[Ingressd, float]]:
    """One process serving web, api, a dead and an unready backend, and a TLS host."""
    echo = EchoServers(upstream_loop, ["web", "api"])
    not_before = dt.datetime.fromtimestamp(int(time.time()) - 86400, dt.UTC)
    pem = self_signed("secure.test", ("secure.test",), days=VALID_DAYS, not_before=not_before)
    not_after = (not_before + dt.timedelta(days=VALID_DAYS)).timestamp()
    objs = [
        *backends(echo),
        *echo_backend("dead", free_port()),  # nothing listens there: 502
        *echo_backend("empty", echo["web"], ready=False),  # no ready endpoint: 503
        tls_secret("secure-tls", pem=pem),
        simple("web", "web.test", "web"),
        simple("api", "api.test", "api"),
        simple("dead", "dead.test", "dead"),
        simple("empty", "empty.test", "empty"),
        ingress(
            "secure",
            [rule("secure.test", path("/", "web"))],
            tls=[tls_entry(["secure.test"], "secure-tls")],
        ),
    ]
    proc = Ingressd(
        tmp_path / "manifests", tmp_path / "ingressd.log", extra_args=["--access-log", "off"]
    )
    proc.update({"all.yaml": objs})
    try:
        yield proc.start(), not_after
    finally:
        proc.stop()
        echo.close()


def test_every_request_is_counted_under_its_route(proxy: tuple[Ingressd, float]) -> None:
    ing, not_after = proxy
    sent: dict[str, list[tuple[bytes, bytes]]] = {}

    def send(name: str, data: bytes, status: int) -> None:
        answer = raw_exchange(ing.http_port, data)
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:300]
        sent.setdefault(name, []).append((data, answer))

    for _ in range(5):
        send("web", request("GET", "web.test"), 200)
    send("api", request("POST", "api.test", "/upload", BODY), 200)
    for _ in range(3):
        send("none", request("GET", "nowhere.test", "/secret/path?token=x"), 404)
    for _ in range(2):
        send("dead", request("GET", "dead.test"), 502)
    for _ in range(2):
        send("empty", request("DELETE", "empty.test"), 503)
    send("secure", request("GET", "secure.test"), 308)  # plain HTTP to a TLS host

    wait_for(lambda: scrape(ing.admin_port)[("ingressd_connections_active", ())] == 0, 5)
    m = scrape(ing.admin_port)
    requests = "ingressd_requests_total"
    web = ("default", "web", "web")
    none = ("", "", "")
    expected = {
        (web, "GET", "2xx"): 5,
        (("default", "api", "api"), "POST", "2xx"): 1,
        (none, "GET", "4xx"): 3,
        (("default", "dead", "dead"), "GET", "5xx"): 2,
        (("default", "empty", "empty"), "DELETE", "5xx"): 2,
        (("default", "secure", "web"), "GET", "3xx"): 1,
    }
    for (route, method, status_class), n in expected.items():
        key = (requests, where(*route, method=method, status_class=status_class))
        assert m.get(key) == n, (key, m.get(key))
    assert total(m, requests) == 14  # nothing else, and no label made of the client's host/path

    routes = {
        "web": web,
        "api": ("default", "api", "api"),
        "none": none,
        "dead": ("default", "dead", "dead"),
        "empty": ("default", "empty", "empty"),
        "secure": ("default", "secure", "web"),
    }
    for name, route in routes.items():
        labels = where(*route)
        bytes_in = sum(len(req) for req, _ in sent[name])
        bytes_out = sum(len(answer) for _, answer in sent[name])
        assert m[("ingressd_request_bytes_total", labels)] == bytes_in, name
        assert m[("ingressd_response_bytes_total", labels)] == bytes_out, name
        count = m[("ingressd_request_duration_seconds_count", labels)]
        assert count == len(sent[name]), name
        assert m[("ingressd_request_duration_seconds_bucket", where(*route, le="+Inf"))] == count
        assert m[("ingressd_request_duration_seconds_sum", labels)] >= 0
    # Only requests an upstream answered have an upstream time.
    upstream = "ingressd_upstream_response_duration_seconds_count"
    assert m[(upstream, where(*web))] == 5
    assert m[(upstream, where("default", "api", "api"))] == 1
    assert (upstream, where("default", "dead", "dead")) not in m
    errors = "ingressd_upstream_errors_total"
    assert m[(errors, where("default", "dead", "dead", kind="connect_error"))] == 2
    assert total(m, errors) == 2
    assert total(m, "ingressd_upstream_retries_total") == 0  # one endpoint: nowhere to retry
    assert m[("ingressd_connections_accepted_total", ())] == 14

    # The source's side
    assert m[("ingressd_config_rebuilds_total", ())] >= 1
    assert m[("ingressd_config_rebuild_errors_total", ())] == 0
    assert m[("ingressd_config_rebuild_duration_seconds_count", ())] >= 1
    last = m[("ingressd_config_last_rebuild_success_timestamp_seconds", ())]
    assert time.time() - 60 < last <= time.time()
    assert m[("ingressd_routes", ())] == 5
    assert m[("ingressd_ingresses", ())] == 5
    endpoints = "ingressd_backend_endpoints"
    assert m[(endpoints, sample_labels(namespace="default", service="web", port="80"))] == 1
    assert m[(endpoints, sample_labels(namespace="default", service="empty", port="80"))] == 0
    expiry = m[
        (
            "ingressd_ssl_certificate_expiry_timestamp_seconds",
            sample_labels(namespace="default", secret="secure-tls"),
        )
    ]
    assert expiry == not_after
    assert time.time() < expiry < time.time() + VALID_DAYS * 86400
    assert ("ingressd_leader", ()) not in m  # manifest mode: no election


def keep_alive_get(conn: socket.socket, host: str) -> bytes:
    """One request on an open connection; the whole response (Content-Length framed)."""
    conn.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


def test_two_workers_are_summed_and_a_killed_one_is_not_forgotten(
    tmp_path: Path, upstream_loop: BackgroundLoop, curl_binary: str
) -> None:
    echo = EchoServers(upstream_loop, ["web", "api"])
    proc = Ingressd(
        tmp_path / "manifests",
        tmp_path / "ingressd.log",
        extra_args=["--workers", "2", "--access-log", "off"],
    )
    proc.update({"all.yaml": [*backends(echo), simple("web", "web.test", "web")]})
    try:
        ing = proc.start()
        pids = wait_for(lambda: len(c := children(ing.pid)) == 2 and c, 10, what="2 workers")
        # Connections held open, so /proc shows which worker has which.
        conns = [socket.create_connection((LOCALHOST, ing.http_port), timeout=5) for _ in range(16)]
        try:
            for _ in range(2):
                for conn in conns:
                    assert keep_alive_get(conn, "web.test").startswith(b"HTTP/1.1 200 ")
            # Answered, so accepted: each socket belongs to the worker that has it open.
            sockets = established_on(ing.http_port)
            per_worker = [sum(sockets.get(i, 0) for i in socket_inodes(p)) for p in pids]
            assert sum(per_worker) == 16 and min(per_worker) >= 1, per_worker
        finally:
            for conn in conns:
                conn.close()
        key = (
            "ingressd_requests_total",
            where("default", "web", "web", method="GET", status_class="2xx"),
        )

        def counted(n: int) -> Samples | None:
            m = scrape(ing.admin_port)
            return m if m.get(key) == n else None

        # Each worker reports about once a second: the sum arrives within a few.
        before = wait_for(lambda: counted(32), 5, what="32 requests summed over both workers")
        assert (
            before[("ingressd_request_duration_seconds_count", where("default", "web", "web"))]
            == 32
        )
        assert before[("ingressd_connections_accepted_total", ())] == 16

        os.kill(pids[0], signal.SIGKILL)
        ing.wait_for_log("exited with code -9", timeout=10)
        wait_for(
            lambda: (c := children(ing.pid)) and len(c) == 2 and pids[0] not in c,
            15,
            what="the worker restarted",
        )
        after = scrape(ing.admin_port)
        for name, labels in before:
            if name.endswith(("_total", "_count", "_sum", "_bucket")):
                assert after.get((name, labels), 0) >= before[(name, labels)], (name, labels)
        assert after[key] == 32  # the dead worker's share is kept

        # And counting goes on from there.
        for _ in range(6):
            assert raw_exchange(ing.http_port, request("GET", "web.test")).startswith(
                b"HTTP/1.1 200"
            )
        wait_for(lambda: counted(38), 5, what="38 requests")
    finally:
        proc.stop()
        echo.close()
