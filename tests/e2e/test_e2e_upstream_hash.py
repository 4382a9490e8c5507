"""End to end: upstream-hash-by, server-alias, conditional SameSite under ``serve --workers 2``.

Real echo upstreams that name themselves (``"service"``), one Service over four
of them (an EndpointSlice each), real sockets, two worker processes sharing the
ports: which worker holds a client connection is read from ``/proc``, so the
tests know both workers answered.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import (
    LOCALHOST,
    BackgroundLoop,
    EchoServers,
    Ingressd,
    free_port,
    serving,
    wait_for,
)
from k8s_objects import endpoint_slice, ingress, ingress_class, path, rule, service

from ingressd.model.objects import Obj

A = "nginx.ingress.kubernetes.io/"
NODES = ["e1", "e2", "e3", "e4"]
URIS = [f"/item/{i}?v={i % 3}" for i in range(200)]
CHROME_51 = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/51.0.2704.103 Safari/537.36"
)
CHROME_120 = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


def hashed(name: str, host: str, key: str, **more: str) -> Obj:
    annotations = {A + "upstream-hash-by": key, **{A + k: v for k, v in more.items()}}
    return ingress(name, [rule(host, path("/", "hashed"))], annotations=annotations)


def objects(echo: EchoServers, nodes: list[str]) -> list[Obj]:
    return [
        ingress_class(),
        service("hashed"),
        *(endpoint_slice("hashed", [LOCALHOST], echo[n], name=f"hashed-{n}") for n in nodes),
        service("web"),
        endpoint_slice("web", [LOCALHOST], echo["web"]),
        service("api"),
        endpoint_slice("api", [LOCALHOST], echo["api"]),
        hashed("uri", "uri.test", "$request_uri"),
        hashed("hdr", "hdr.test", "$http_x_user"),
        hashed("ck", "ck.test", "$cookie_session"),
        hashed(
            "sub",
            "sub.test",
            "$arg_id",
            **{"upstream-hash-by-subset": "true", "upstream-hash-by-subset-size": "2"},
        ),
        hashed("bad", "bad.test", "$request_uri/x"),
        ingress(
            "main",
            [rule("main.test", path("/", "web"))],
            annotations={A + "server-alias": "alias.test, other.test, *.wild.test"},
            created=1,
        ),
        ingress("other", [rule("other.test", path("/", "api"))], created=2),
        ingress(
            "sticky",
            [rule("ss.test", path("/", "web"))],
            annotations={
                A + "affinity": "cookie",
                A + "session-cookie-samesite": "None",
                A + "session-cookie-conditional-samesite-none": "true",
            },
        ),
    ]


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, upstream_loop: BackgroundLoop, curl_binary: str
) -> Iterator[tuple[Ingressd, EchoServers]]:
    workdir: Path = tmp_path_factory.mktemp("e2e-hash")
    echo = EchoServers(upstream_loop, [*NODES, "e5", "web", "api"])
    try:
        with serving(workdir, objects(echo, NODES), ["--workers", "2"]) as proc:
            wait_for(lambda: len(workers(proc.pid)) == 2, 15, what="two workers")
            yield proc, echo
    finally:
        echo.close()


# -- which worker holds a connection (as test_e2e_workers.py reads it) -------------------------


def workers(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            for child in f.read().split():
                with open(f"/proc/{child}/cmdline", "rb") as c:
                    if b"spawn_main" in c.read():
                        found.append(int(child))
    return sorted(found)


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


def worker_of(proxy: Ingressd, conn: http.client.HTTPConnection) -> int:
    """The worker process holding the server side of ``conn``."""
    assert conn.sock is not None
    client_port = conn.sock.getsockname()[1]
    inode = None
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if int(local.split(":")[1], 16) == proxy.http_port and (
                int(remote.split(":")[1], 16) == client_port
            ):
                inode = fields[9]
    assert inode is not None
    for pid in workers(proxy.pid):
        if inode in socket_inodes(pid):
            return pid
    raise AssertionError("no worker holds the connection")


class Clients:
    """Keep-alive connections to the proxy, each known to be held by one worker."""

    def __init__(self, proxy: Ingressd, n: int) -> None:
        self.proxy = proxy
        self.conns: list[http.client.HTTPConnection] = []
        self.worker: list[int] = []
        for _ in range(n):
            conn = http.client.HTTPConnection(LOCALHOST, proxy.http_port, timeout=10)
            conn.connect()
            self.conns.append(conn)
        # Asked once the server side is accepted: a request makes sure of that.
        for conn in self.conns:
            self._get(conn, "uri.test", "/warm", {})
            self.worker.append(worker_of(proxy, conn))

    def _get(
        self, conn: http.client.HTTPConnection, host: str, target: str, headers: dict[str, str]
    ) -> str:
        conn.request("GET", target, headers={"Host": host, **headers})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, body
        return str(json.loads(body)["service"])

    def get(self, i: int, host: str, target: str, **headers: str) -> tuple[str, int]:
        """(the echo server that answered, the worker that proxied) over connection ``i``."""
        at = i % len(self.conns)
        headers = {k.replace("_", "-"): v for k, v in headers.items()}
        return self._get(self.conns[at], host, target, headers), self.worker[at]

    def close(self) -> None:
        for conn in self.conns:
            conn.close()


@pytest.fixture
def clients(setup: tuple[Ingressd, EchoServers]) -> Iterator[Clients]:
    proxy, _ = setup
    # Enough connections that the kernel gives both workers some (2^-15 it does not).
    c = Clients(proxy, 16)
    try:
        assert len(set(c.worker)) == 2, c.worker
        yield c
    finally:
        c.close()


def rounds(clients: Clients, host: str = "uri.test") -> tuple[dict[str, str], set[str]]:
    """Each URI asked twice, over connections of different workers where possible;
    the endpoint of each (asserting both times agree) and the URIs both workers served."""
    first: dict[str, tuple[str, int]] = {}
    across = set()
    for i, uri in enumerate(URIS):
        first[uri] = clients.get(i, host, uri)
    for i, uri in enumerate(URIS):
        again = clients.get(i + 5, host, uri)
        assert again[0] == first[uri][0], (uri, first[uri], again)
        if again[1] != first[uri][1]:
            across.add(uri)
    return {u: e for u, (e, _) in first.items()}, across


# -- the tests ---------------------------------------------------------------------------------


def test_a_uri_keeps_its_endpoint_across_requests_and_workers(clients: Clients) -> None:
    served, across = rounds(clients)
    assert set(served.values()) == set(NODES)  # the URIs spread over every endpoint
    assert len(across) >= 20, len(across)  # many URIs were served by both workers
    # and over new connections, wherever the kernel puts them
    proxy = clients.proxy
    for uri in URIS[:40]:
        answer = proxy.get("uri.test", uri).json()["service"]
        assert answer == served[uri], uri


def test_header_and_cookie_keys(clients: Clients) -> None:
    by_user = {}
    for i in range(60):
        by_user[f"u{i}"], _ = clients.get(i, "hdr.test", "/a", x_user=f"u{i}")
    for i in range(60):
        got, _ = clients.get(i + 7, "hdr.test", f"/b{i}", x_user=f"u{i}")
        assert got == by_user[f"u{i}"]
    assert len(set(by_user.values())) >= 2
    by_session = {}
    for i in range(40):
        by_session[i], _ = clients.get(i, "ck.test", "/", cookie=f"a=1; session=s{i}")
    for i in range(40):
        got, _ = clients.get(i + 3, "ck.test", f"/x{i}", cookie=f"session=s{i}; b=2")
        assert got == by_session[i]
    assert len(set(by_session.values())) >= 2


def test_subset_keeps_a_key_within_one_subset(
    clients: Clients, setup: tuple[Ingressd, EchoServers]
) -> None:
    _, echo = setup
    # Endpoints sorted by address then port; subsets of 2 in that order.
    ordered = sorted(NODES, key=lambda n: echo[n])
    subsets = [set(ordered[:2]), set(ordered[2:])]
    for key in range(12):
        seen = {clients.get(i, "sub.test", f"/?id={key}")[0] for i in range(24)}
        assert seen in subsets, (key, seen)


def test_an_invalid_key_is_reported_and_balanced_round_robin(
    clients: Clients, setup: tuple[Ingressd, EchoServers]
) -> None:
    proxy, _ = setup
    seen = {clients.get(i, "bad.test", "/same")[0] for i in range(16)}
    assert len(seen) > 1  # round robin, not one endpoint for everything
    problems = admin(proxy, "/problems")
    assert "upstream-hash-by='$request_uri/x' is invalid" in problems


def admin(proxy: Ingressd, target: str) -> str:
    with urllib.request.urlopen(f"http://{LOCALHOST}:{proxy.admin_port}{target}", timeout=5) as r:
        return str(r.read().decode())


def test_server_alias_end_to_end(setup: tuple[Ingressd, EchoServers]) -> None:
    proxy, _ = setup
    assert proxy.get("alias.test", "/x").json()["service"] == "web"
    assert proxy.get("a.wild.test", "/x").json()["service"] == "web"
    # other.test is another Ingress's host: it keeps it; the alias is reported.
    assert proxy.get("other.test", "/x").json()["service"] == "api"
    assert proxy.get("unknown.test", "/x", check=False).status == 404
    assert (
        "server-alias other.test of host main.test is ignored: an Ingress has a rule for "
        "other.test, which serves it" in admin(proxy, "/problems")
    )


def test_conditional_samesite_none(setup: tuple[Ingressd, EchoServers]) -> None:
    proxy, _ = setup
    old = proxy.get("ss.test", "/", "-A", CHROME_51).header("Set-Cookie") or ""
    new = proxy.get("ss.test", "/", "-A", CHROME_120).header("Set-Cookie") or ""
    assert old.startswith("INGRESSCOOKIE=") and "SameSite" not in old
    assert new.startswith("INGRESSCOOKIE=") and "SameSite=None" in new


def test_adding_an_endpoint_moves_about_one_in_n_keys(
    setup: tuple[Ingressd, EchoServers], clients: Clients
) -> None:
    """Last: it changes the Service (and puts it back)."""
    proxy, echo = setup
    before, _ = rounds(clients)
    proxy.update({"all.yaml": objects(echo, [*NODES, "e5"])})
    try:

        def settled() -> dict[str, str] | None:
            # Both workers rebuilt: two rounds over both workers' connections agree.
            try:
                after, _ = rounds(clients)
            except AssertionError:
                return None
            return after if "e5" in after.values() else None

        after = wait_for(settled, 15, what="both workers serving e5")
        moved = [u for u in URIS if after[u] != before[u]]
        assert all(after[u] == "e5" for u in moved)  # keys move only to the new endpoint
        # About 1/5 of 200 = 40; the new endpoint's share of the ring varies with its port.
        assert 15 <= len(moved) <= 75, len(moved)
    finally:
        proxy.update({"all.yaml": objects(echo, NODES)})


def test_a_retry_stays_on_the_hashed_endpoint_until_it_is_ejected(
    tmp_path: Path, upstream_loop: BackgroundLoop, curl_binary: str
) -> None:
    """ingress-nginx's chash answers a retry with the same endpoint; passive health
    (one worker, so one health table) then moves only that endpoint's keys on."""
    echo = EchoServers(upstream_loop, ["e1", "e2"])
    dead = free_port()  # nothing listens: connecting is refused at once
    objs = [
        ingress_class(),
        service("hashed"),
        endpoint_slice("hashed", [LOCALHOST], echo["e1"], name="hashed-e1"),
        endpoint_slice("hashed", [LOCALHOST], echo["e2"], name="hashed-e2"),
        endpoint_slice("hashed", [LOCALHOST], dead, name="hashed-dead"),
        hashed("uri", "uri.test", "$request_uri"),
    ]
    try:
        # Ejected for longer than the test takes, however slow the machine.
        args = ["--workers", "1", "--upstream-fail-timeout", "120"]
        with serving(tmp_path, objs, args) as proxy:
            live: dict[str, str] = {}
            to_dead = None
            for uri in URIS[:60]:
                r = proxy.get("uri.test", uri, check=False)
                if r.status == 502 and to_dead is None:
                    to_dead = (uri, proxy.wait_for_log(f"GET uri.test{uri}: 502"))
                elif r.status == 200:
                    live[uri] = r.json()["service"]
            assert to_dead is not None and len(live) >= 20
            uri, text = to_dead
            # Three tries, all to the endpoint the key hashes to.
            assert f"cannot connect to default/hashed:80 ({LOCALHOST}:{dead})" in text
            assert "(3 tries)" in text
            where = f"{LOCALHOST}:{dead}"
            assert f"from {where} (default/hashed:80), trying {where} (try 2)" in proxy.log()
            # Ejected now: its keys go to the next endpoint on the ring, the others stay.
            assert proxy.get("uri.test", uri).json()["service"] in ("e1", "e2")
            for other, name in live.items():
                assert proxy.get("uri.test", other).json()["service"] == name
    finally:
        echo.close()
