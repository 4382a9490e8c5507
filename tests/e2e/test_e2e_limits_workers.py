"""End to end: limit-rps and limit-connections hold per pod, across worker processes.

ingress-nginx keeps its limit_req/limit_conn zones in shared memory, so its
limits hold whichever nginx worker takes a connection. Here the real
``ingressd serve --workers N`` proxies for echo upstreams; every request goes
on a connection of its own, held open first so that /proc shows which worker
accepted it, and each test checks that its connections were spread over the
workers (else it would prove nothing). Counted per worker, each worker would
let through its own burst and its own places.
"""

from __future__ import annotations

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
    backends,
    nginx_page,
    serving,
)
from k8s_objects import ingress, path, rule
from test_e2e_workers import children, socket_inodes

from ingressd.model.objects import Obj

A = "nginx.ingress.kubernetes.io/"
# Why each refusal was made: in the log; the client gets nginx's 503 page.
RATE_REFUSAL = (
    "503 Service Unavailable: rate limit of 2 requests per second exceeded "
    "for 127.0.0.1 on Ingress default/rps"
)


def limited(host: str, **annotations: str) -> Obj:
    return ingress(
        host.split(".")[0],
        [rule(host, path("/", "web"))],
        annotations={A + k.replace("_", "-"): v for k, v in annotations.items()},
    )


INGRESSES = [
    limited("rps.test", limit_rps="2"),  # burst 2 * 5 (the default multiplier)
    limited("conn.test", limit_connections="2"),
]


@pytest.fixture(scope="module", params=[2, 3], ids=["2-workers", "3-workers"])
def proxy(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    upstream_loop: BackgroundLoop,
    curl_binary: str,
) -> Iterator[tuple[Ingressd, list[int]]]:
    count: int = request.param
    workdir = tmp_path_factory.mktemp(f"e2e-limits-{count}-workers")
    echo = EchoServers(upstream_loop, ["web", "api"])
    args = ["--workers", str(count), "--access-log", "off"]
    try:
        with serving(workdir, [*backends(echo), *INGRESSES], args) as ing:
            pids = wait_until(lambda: len(c := children(ing.pid)) == count and c, "the workers")
            yield ing, pids
    finally:
        echo.close()


def wait_until(check, what: str, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result


def accepted_by(port: int, pids: list[int]) -> dict[int, int]:
    """Client port -> pid of the worker that accepted the connection (open ones on ``port``)."""
    owner = {inode: pid for pid in pids for inode in socket_inodes(pid)}
    found = {}
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if int(local.split(":")[1], 16) == port and state == "01" and inode in owner:
                found[int(remote.split(":")[1], 16)] = owner[inode]
    return found


def connect(ing: Ingressd, pids: list[int], n: int) -> list[tuple[socket.socket, int]]:
    """``n`` connections, each with the pid of the worker that accepted it."""
    socks = [socket.create_connection((LOCALHOST, ing.http_port), timeout=10) for _ in range(n)]
    ports = [s.getsockname()[1] for s in socks]

    def owners() -> dict[int, int] | None:
        found = accepted_by(ing.http_port, pids)
        return found if all(p in found for p in ports) else None

    try:
        found = wait_until(owners, f"{n} connections accepted by the workers", 10)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return [(s, found[p]) for s, p in zip(socks, ports, strict=True)]


def send(sock: socket.socket, host: str, target: str = "/") -> None:
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())


def answer(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of the response on ``sock`` (read until ingressd closes it)."""
    data = b""
    with sock:
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_rate_limit_lets_through_one_burst_per_pod(proxy: tuple[Ingressd, list[int]]) -> None:
    ing, pids = proxy
    conns = connect(ing, pids, 40)
    assert {pid for _, pid in conns} == set(pids), "every worker must take some of the requests"
    started = time.monotonic()
    for sock, _ in conns:
        send(sock, "rps.test")
    results = [answer(sock) for sock, _ in conns]
    span = time.monotonic() - started
    allowed = sum(status == 200 for status, _ in results)
    refused = [body for status, body in results if status != 200]
    assert all(status in (200, 503) for status, _ in results), results
    assert all(body == nginx_page(503) for body in refused), results
    # Each refusal was the rate limit's, as the log says.
    ing.wait_for(lambda: ing.log().count(RATE_REFUSAL) >= len(refused), what="a reason per refusal")
    # nginx: 1 + burst (2 * 5) at once, then one more per 0.5 s drained while the
    # requests arrive (none, when they all arrive within half a second).
    assert 11 <= allowed <= 11 + int(2 * span), (allowed, span, len(pids))


def test_connection_limit_admits_exactly_two_of_six(proxy: tuple[Ingressd, list[int]]) -> None:
    ing, pids = proxy
    conns = connect(ing, pids, 16 * len(pids))
    # Six of them, as evenly over the workers as they come.
    by_worker = {pid: [s for s, owner in conns if owner == pid] for pid in pids}
    per_worker = -(-6 // len(pids))
    assert all(len(socks) >= per_worker for socks in by_worker.values()), by_worker
    chosen = [s for socks in by_worker.values() for s in socks[:per_worker]][:6]
    for sock, _ in conns:
        if sock not in chosen:
            sock.close()
    for sock in chosen:
        send(sock, "conn.test", "/_echo/sleep/1500")
    statuses = sorted(answer(sock)[0] for sock in chosen)
    assert statuses == [200, 200, 503, 503, 503, 503], statuses
    # The places are given back: two again.
    again = [s for s, _ in connect(ing, pids, 3)]
    for sock in again:
        send(sock, "conn.test", "/_echo/sleep/500")
    assert sorted(answer(sock)[0] for sock in again) == [200, 200, 503]


def test_places_held_by_a_killed_worker_are_freed(
    tmp_path: Path, upstream_loop: BackgroundLoop, curl_binary: str
) -> None:
    echo = EchoServers(upstream_loop, ["web", "api"])
    args = ["--workers", "2", "--access-log", "off"]
    try:
        with serving(tmp_path, [*backends(echo), *INGRESSES], args) as ing:
            pids = wait_until(lambda: len(c := children(ing.pid)) == 2 and c, "2 workers")
            conns = connect(ing, pids, 24)
            victim, other = pids
            mine = [s for s, pid in conns if pid == victim][:2]
            theirs = [s for s, pid in conns if pid == other][:1]
            assert len(mine) == 2 and len(theirs) == 1, conns
            for sock in mine:
                send(sock, "conn.test", "/_echo/sleep/10000")
            # Both places are taken (on the victim): the other worker refuses.
            time.sleep(0.5)
            send(theirs[0], "conn.test")
            assert answer(theirs[0])[0] == 503
            os.kill(victim, signal.SIGKILL)
            for sock in mine:
                sock.settimeout(10)
                assert answer_or_reset(sock) == 0  # died with the worker
            ing.wait_for_log(f"(pid {victim}) exited with code -9", timeout=10)
            wait_until(lambda: len(c := children(ing.pid)) == 2 and victim not in c, "the restart")
            for s, _ in conns:
                s.close()
            # The places the dead worker's requests held are free again.
            fresh = [s for s, _ in connect(ing, children(ing.pid), 2)]
            for sock in fresh:
                send(sock, "conn.test", "/_echo/sleep/300")
            assert [answer(sock)[0] for sock in fresh] == [200, 200]
    finally:
        echo.close()


def answer_or_reset(sock: socket.socket) -> int:
    """The status, or 0 when the connection ends without a response."""
    try:
        status, _ = answer(sock)
    except (ConnectionResetError, IndexError, ValueError):
        return 0
    return status
