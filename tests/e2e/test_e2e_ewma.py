"""End to end: load-balance ewma steers traffic away from a slow endpoint.

One Service with two EndpointSlices: an echo server (fast) and a small aiohttp
server that waits 200 ms before answering (slow). One Ingress balances it with
ewma, another (its own host, same Service) round robin.
"""

from __future__ import annotations

import asyncio
import http.client
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from e2e_helpers import LOCALHOST, BackgroundLoop, EchoServers, Ingressd, serving
from k8s_objects import endpoint_slice, ingress, ingress_class, path, rule, service

A = "nginx.ingress.kubernetes.io/"


class SlowServer:
    """Answers every request with JSON {"service": "slow"} after 200 ms."""

    def __init__(self, loop: BackgroundLoop) -> None:
        self._loop = loop

        async def handler(request: web.Request) -> web.Response:
            await asyncio.sleep(0.2)
            return web.json_response({"service": "slow"})

        async def start() -> web.AppRunner:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handler)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, LOCALHOST, 0)
            await site.start()
            return runner

        self._runner = loop.run(start())
        self.port: int = self._runner.addresses[0][1]

    def close(self) -> None:
        self._loop.run(self._runner.cleanup(), timeout=10)


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, upstream_loop: BackgroundLoop
) -> Iterator[Ingressd]:
    workdir: Path = tmp_path_factory.mktemp("e2e-ewma")
    echo = EchoServers(upstream_loop, ["fast"])
    slow = SlowServer(upstream_loop)
    objs = [
        ingress_class(),
        service("mixed"),
        endpoint_slice("mixed", [LOCALHOST], echo["fast"], name="mixed-fast"),
        endpoint_slice("mixed", [LOCALHOST], slow.port, name="mixed-slow"),
        ingress(
            "ewma",
            [rule("ewma.test", path("/", "mixed"))],
            annotations={A + "load-balance": "ewma"},
        ),
        ingress("rr", [rule("rr.test", path("/", "mixed"))]),
    ]
    try:
        with serving(workdir, objs) as proc:
            yield proc
    finally:
        slow.close()
        echo.close()


def served(proxy: Ingressd, host: str, n: int) -> Counter[str]:
    """Which server answered each of ``n`` requests, over one keep-alive connection."""
    conn = http.client.HTTPConnection(LOCALHOST, proxy.http_port, timeout=10)
    counts: Counter[str] = Counter()
    try:
        for _ in range(n):
            conn.request("GET", "/", headers={"Host": host})
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200, body
            counts[json.loads(body)["service"]] += 1
    finally:
        conn.close()
    return counts


def test_ewma_prefers_the_fast_endpoint(proxy: Ingressd) -> None:
    warm = served(proxy, "ewma.test", 20)
    assert set(warm) <= {"fast", "slow"}
    counts = served(proxy, "ewma.test", 60)
    assert counts["fast"] >= 48, counts  # at least 80%


def test_round_robin_splits_evenly(proxy: Ingressd) -> None:
    counts = served(proxy, "rr.test", 40)
    assert set(counts) == {"fast", "slow"}
    assert 14 <= counts["fast"] <= 26, counts  # 35% to 65%
