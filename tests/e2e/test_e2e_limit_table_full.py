"""End to end: a full limit table refuses, never admits (global-rate-limit, limit-rps).

``--limit-entries 8``: one bucket of 8 entries for every Ingress. Eight clients
(127.0.0.2 to .9, the loopback network is all ours) each hold a request in
flight on an Ingress with ``limit-connections``, so every entry holds a place
and none can be dropped. A new client's request to a rate-limited Ingress then
has no room to be counted in: refused with the limit's status, counted in
``ingressd_limit_table_full_total``.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest
from e2e_helpers import (
    BackgroundLoop,
    EchoServers,
    Ingressd,
    backends,
    sample_labels,
    scrape,
    serving,
)
from k8s_objects import ingress, path, rule

A = "nginx.ingress.kubernetes.io/"
HOLDERS = [f"127.0.0.{i}" for i in range(2, 10)]
NEWCOMER = "127.0.0.20"


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, upstream_loop: BackgroundLoop, curl_binary: str
) -> Iterator[Ingressd]:
    echo = EchoServers(upstream_loop, ["web", "api"])
    objs = [
        *backends(echo),
        ingress(
            "held",
            [rule("held.test", path("/", "web"))],
            annotations={A + "limit-connections": "1"},
        ),
        ingress(
            "global",
            [rule("global.test", path("/", "web"))],
            annotations={A + "global-rate-limit": "100", A + "global-rate-limit-window": "1h"},
        ),
        ingress("rps", [rule("rps.test", path("/", "web"))], annotations={A + "limit-rps": "100"}),
    ]
    args = ["--workers", "1", "--access-log", "off", "--limit-entries", "8"]
    try:
        with serving(tmp_path_factory.mktemp("e2e-limit-table-full"), objs, args) as proc:
            yield proc
    finally:
        echo.close()


@contextlib.contextmanager
def held_requests(proxy: Ingressd) -> Iterator[list[socket.socket]]:
    """One slow request in flight from each of HOLDERS, until the block ends."""
    socks: list[socket.socket] = []
    try:
        for source in HOLDERS:
            s = socket.create_connection(
                ("127.0.0.1", proxy.http_port), timeout=5, source_address=(source, 0)
            )
            socks.append(s)
            s.sendall(b"GET /_echo/sleep/3000 HTTP/1.1\r\nHost: held.test\r\n\r\n")
        time.sleep(0.5)  # every request admitted and at its upstream
        yield socks
    finally:
        for s in socks:
            s.close()


def test_a_full_table_refuses_rate_limited_requests(proxy: Ingressd) -> None:
    # With room to count, both are served.
    for host in ("global.test", "rps.test"):
        assert proxy.get(host, "/", "--interface", "127.0.0.30", check=False).status == 200
    with held_requests(proxy):
        got = proxy.get("global.test", "/", "--interface", NEWCOMER, check=False)
        assert got.status == 429, got.text  # global-rate-limit-status-code
        got = proxy.get("rps.test", "/", "--interface", NEWCOMER, check=False)
        assert got.status == 503, got.text
        proxy.wait_for_log("the limit table is full")  # the reason, for operators
    full = "ingressd_limit_table_full_total"
    samples = scrape(proxy.admin_port)
    for name, limit in (("global", "global-rate-limit"), ("rps", "limit-rps")):
        key = (full, sample_labels(namespace="default", ingress=name, limit=limit))
        assert samples.get(key) == 1.0, {k: v for k, v in samples.items() if k[0] == full}
    assert "limit table full" in proxy.log()
