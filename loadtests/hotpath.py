#!/usr/bin/env python3
"""Hot-path benchmark: the Python cost of one proxied request, without sockets.

A client connection (``ClientConnection``) and a pooled upstream connection
(``UpstreamConnection``) are driven with in-memory transports: each iteration
feeds a keep-alive request to the client side, checks what reaches the
upstream transport, feeds the upstream's response back and checks what reaches
the client. What is timed is everything ingressd does per request — parsing,
route lookup, header handling, forwarding — and nothing the kernel does, so
``bench.py``'s CPU per request minus this is the syscall share.

    python loadtests/hotpath.py [--requests 200000] [--access-log off|json|plain]
        [--limits off|private|shared] [--request wrk|browser] [--profile]

Request counting for /metrics is always on, as in ingressd; the access log is
off unless asked for, and then written to /dev/null (formatting and the
buffered writes are timed, the disk is not). ``--limits`` puts limit-rps and
limit-connections on the route (high enough never to refuse), counted in a
private table (one process) or in one shared between processes, as with
``--workers`` (a memfd whose buckets take a record lock per request).
``--request browser`` sends bench.py's browser request (12 headers besides
Host, a cookie) instead of wrk's (Host, User-Agent, Accept).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import time
from typing import Any

from browser_headers import browser_request

from ingressd.model.backend import Backend, Endpoint
from ingressd.model.policy import LimitConfig, RoutePolicy
from ingressd.model.table import Route, RouteTable, VirtualHost
from ingressd.policy.limits import LimitRegistry
from ingressd.proxy.client_h1 import ClientConnection
from ingressd.proxy.settings import ProxySettings
from ingressd.proxy.state import ProxyState
from ingressd.proxy.upstream_h1 import UpstreamConnection

REQUEST = (
    b"GET /api/items?id=7 HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
)
REQUESTS = {"wrk": REQUEST, "browser": browser_request("bench.local", "/api/items?id=7")}
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"
ENDPOINT = Endpoint("127.0.0.1", 9)


class MemoryTransport(asyncio.Transport):
    """Collects what is written; never blocks, never closes on its own."""

    def __init__(self, peer: tuple[str, int], sock: tuple[str, int]) -> None:
        super().__init__()
        self.out: list[bytes] = []
        self._extra: dict[str, Any] = {"peername": peer, "sockname": sock}
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.out.append(bytes(data))

    def writelines(self, parts: Any) -> None:
        self.out.append(b"".join(parts))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self.out)
        self.out.clear()
        return data


def table(limits: bool = False) -> RouteTable:
    backend = Backend("default/api:80", (ENDPOINT,))
    route = Route("/api", "Prefix", backend, "default/api")
    if limits:
        policy = RoutePolicy(limits=LimitConfig(rps=1_000_000, connections=100))
        route = Route("/api", "Prefix", backend, "default/api", policy)
    vhost = VirtualHost("bench.local", prefix={"/api": route})
    return RouteTable(exact_hosts={"bench.local": vhost})


async def run(
    requests: int,
    profile: bool,
    access_log: str = "off",
    limits: str = "off",
    request: bytes = REQUEST,
) -> list[float]:
    state = ProxyState(table(limits != "off"), ProxySettings(access_log=access_log))
    if limits == "shared":
        from ingressd.policy.shared_limits import SharedLimits

        shared = SharedLimits(1 << 18, 2)  # as the main process makes it for --workers 2
        state.limits = LimitRegistry(shared.handle().attach(1))
    if state.access_log is not None:
        state.access_log.fd = os.open(os.devnull, os.O_WRONLY)
    state.pool.max_requests = 1 << 62  # one upstream connection for the whole run
    client = ClientConnection(state, tls=False)
    client_tx = MemoryTransport(("127.0.0.1", 50000), ("127.0.0.1", 8080))
    client.connection_made(client_tx)
    upstream = UpstreamConnection(state.pool, ENDPOINT)
    upstream_tx = MemoryTransport(("127.0.0.1", 9), ("127.0.0.1", 40000))
    upstream.connection_made(upstream_tx)
    state.pool.release(upstream)

    def one() -> None:
        client.data_received(request)
        sent = upstream_tx.take()
        if not sent.startswith(b"GET /api/items?id=7 HTTP/1.1\r\n"):
            raise SystemExit(f"unexpected upstream request: {sent!r}")
        upstream.data_received(RESPONSE)
        answer = client_tx.take()
        if not (answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nok\n")):
            raise SystemExit(f"unexpected response: {answer!r}")

    for _ in range(1000):  # warm up: caches, the pool, the branch predictor
        one()
    batches: list[float] = []
    batch = max(1, requests // 10)
    profiler = cProfile.Profile() if profile else None
    for _ in range(10):
        if profiler:
            profiler.enable()
        start = time.perf_counter()
        for _ in range(batch):
            one()
        batches.append((time.perf_counter() - start) / batch * 1e6)
        if profiler:
            profiler.disable()
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    client.connection_lost(None)
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the loop")
    parser.add_argument(
        "--limits",
        choices=["off", "private", "shared"],
        default="off",
        help="limit-rps and limit-connections on the route, counted in a private or a "
        "shared table (default off)",
    )
    parser.add_argument(
        "--access-log", choices=["off", "json", "plain"], default="off", help="default off"
    )
    parser.add_argument(
        "--request",
        choices=sorted(REQUESTS),
        default="wrk",
        help="wrk's request (3 headers) or a browser's (13 with Host, a cookie); default wrk",
    )
    args = parser.parse_args()
    import uvloop

    batches = uvloop.run(
        run(args.requests, args.profile, args.access_log, args.limits, REQUESTS[args.request])
    )
    median = statistics.median(batches)
    print(
        f"proxied request, Python only: median {median:.2f} us "
        f"(min {min(batches):.2f}, max {max(batches):.2f}; {args.requests} requests, "
        f"access log {args.access_log}, limits {args.limits}, {args.request} request)"
    )
    print(f"  = {1e6 / median:,.0f} requests/s per core before any syscall")


if __name__ == "__main__":
    main()
