"""End to end: ``--workers 2``: two proxy processes fed by one source process.

Checks that both workers take connections on the shared ports, that a change
reaches both, that a killed worker is restarted with the whole current state,
and that SIGTERM stops them all.
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
    simple,
    wait_for,
)

from ingressd.model.objects import Obj


def children(pid: int) -> list[int]:
    """The worker processes (the multiprocessing resource tracker left out)."""
    pids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            pids += [int(p) for p in f.read().split()]
    workers = []
    for child in pids:
        with open(f"/proc/{child}/cmdline", "rb") as f:
            if b"spawn_main" in f.read():
                workers.append(child)
    return sorted(workers)


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def established_on(port: int, state: str = "01") -> dict[str, int]:
    """inode -> count of TCP sockets in ``state`` (01 established, 0A listening) on ``port``."""
    found: dict[str, int] = {}
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].split(":")[1], 16)
            if local_port == port and fields[3] == state:
                found[fields[9]] = found.get(fields[9], 0) + 1
    return found


def ask(port: int, host: str) -> bytes:
    with socket.create_connection((LOCALHOST, port), timeout=5) as s:
        s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


@pytest.fixture
def workers(
    tmp_path: Path, upstream_loop: BackgroundLoop, curl_binary: str
) -> Iterator[tuple[Ingressd, list[Obj]]]:
    echo = EchoServers(upstream_loop, ["web", "api"])
    objs = [*backends(echo), simple("web", "web.test", "web")]
    proc = Ingressd(
        tmp_path / "manifests", tmp_path / "ingressd.log", extra_args=["--workers", "2"]
    )
    proc.update({"all.yaml": objs})
    try:
        yield proc.start(), objs
    finally:
        proc.stop()
        echo.close()


def test_two_workers_share_the_ports_and_follow_changes(
    workers: tuple[Ingressd, list[Obj]],
) -> None:
    proxy, objs = workers
    pids = wait_for(lambda: len(children(proxy.pid)) == 2 and children(proxy.pid), 10, what="2")
    # Keep 16 connections open: the kernel spreads them over both workers.
    conns = []
    try:
        for _ in range(16):
            s = socket.create_connection((LOCALHOST, proxy.http_port), timeout=5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200 OK")
            conns.append(s)
        sockets = established_on(proxy.http_port)
        per_worker = [sum(sockets.get(i, 0) for i in socket_inodes(pid)) for pid in pids]
        assert sum(per_worker) == 16
        assert min(per_worker) >= 1, per_worker
    finally:
        for s in conns:
            s.close()
    assert socket_inodes(proxy.pid).isdisjoint(established_on(proxy.http_port))

    # A change reaches every worker.
    proxy.update({"all.yaml": [*objs, simple("api", "api.test", "api")]})
    wait_for(
        lambda: all(b" 200 OK" in ask(proxy.http_port, "api.test") for _ in range(10)),
        10,
        what="api.test on every worker",
    )


def test_a_killed_worker_comes_back_with_the_current_table(
    workers: tuple[Ingressd, list[Obj]],
) -> None:
    proxy, objs = workers
    pids = wait_for(lambda: len(children(proxy.pid)) == 2 and children(proxy.pid), 10, what="2")
    proxy.update({"all.yaml": [*objs, simple("api", "api.test", "api")]})
    wait_for(lambda: b" 200 OK" in ask(proxy.http_port, "api.test"), 10, what="api.test")
    os.kill(pids[0], signal.SIGKILL)
    proxy.wait_for_log("exited with code -9", timeout=10)
    fresh = wait_for(
        lambda: (c := children(proxy.pid)) and len(c) == 2 and pids[0] not in c and c,
        15,
        what="a new worker",
    )
    assert proxy.admin_status("/readyz") == 200  # the other worker serves meanwhile
    new = next(pid for pid in fresh if pid not in pids)
    wait_for(
        lambda: socket_inodes(new) & established_on(proxy.http_port, "0A").keys(),
        15,
        what="the new worker listening",
    )
    # The new worker got the whole state, the change included: every connection is served.
    answers = [ask(proxy.http_port, "api.test") for _ in range(20)]
    assert all(b" 200 OK" in a for a in answers)
    assert set(fresh) & set(pids) == {pids[1]}


def test_sigterm_stops_every_process(workers: tuple[Ingressd, list[Obj]]) -> None:
    proxy, _ = workers
    pids = wait_for(lambda: len(children(proxy.pid)) == 2 and children(proxy.pid), 10, what="2")
    assert proxy.stop() == 0
    for pid in pids:
        wait_for(lambda pid=pid: not os.path.exists(f"/proc/{pid}"), 5, what=f"{pid} gone")


def test_a_signal_to_the_process_group_keeps_workers_serving_through_the_delay(
    tmp_path: Path, upstream_loop: BackgroundLoop, curl_binary: str
) -> None:
    """Ctrl-C in a terminal signals the whole group: the workers must not stop at
    once (nor be restarted) while the main process keeps accepting for the delay."""
    echo = EchoServers(upstream_loop, ["web", "api"])
    proxy = Ingressd(
        tmp_path / "manifests",
        tmp_path / "ingressd.log",
        extra_args=["--workers", "2", "--shutdown-delay", "2"],
        new_session=True,
    )
    proxy.update({"all.yaml": [*backends(echo), simple("web", "web.test", "web")]})
    try:
        proxy.start()
        pids = wait_for(lambda: len(children(proxy.pid)) == 2 and children(proxy.pid), 10, what="2")
        os.killpg(proxy.pid, signal.SIGINT)
        for _ in range(10):  # through most of the 2 s delay
            assert ask(proxy.http_port, "web.test").startswith(b"HTTP/1.1 200 ")
            time.sleep(0.1)
        assert sorted(children(proxy.pid)) == sorted(pids)  # the same workers, none restarted
        assert proxy.proc is not None
        assert proxy.proc.wait(10) == 0
        for pid in pids:
            wait_for(lambda pid=pid: not os.path.exists(f"/proc/{pid}"), 5, what=f"{pid} gone")
        assert "restarting" not in proxy.log()
    finally:
        proxy.stop()
        echo.close()
