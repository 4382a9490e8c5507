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
        [--limits off|private|shared] [--request wrk|browser] [--paths same|random]
        [--upstream-hash-by KEY] [--snippet] [--tracing-ratio R] [--profile]

Request counting for /metrics is always on, as in ingressd; the access log is
off unless asked for, and then written to /dev/null (formatting and the
buffered writes are timed, the disk is not). ``--limits`` puts limit-rps and
limit-connections on the route (high enough never to refuse), counted in a
private table (one process) or in one shared between processes, as with
``--workers`` (a memfd whose buckets take a record lock per request).
``--request browser`` sends bench.py's browser request (12 headers besides
Host, a cookie) instead of wrk's (Host, User-Agent, Accept).

Each batch is timed twice: by the wall clock and by the CPU time the process
used. On a machine shared with other work the CPU time is the steadier of the
two (it leaves out the time other processes had the core).

``--paths random`` makes every request's path new (``/api/<random>``, same
route): nothing the routing cache learns is asked for again, the worst case
for it, where ``same`` (the default) is its best.

``--upstream-hash-by '$request_uri'`` balances the route by that key: the key
rendered, CRC-32 and a search of the ring, per request (the ring itself is
made with the table, as the builder makes it).

``--tracing-ratio R`` turns OpenTelemetry tracing on (``enable-opentelemetry``,
sampler TraceIdRatioBased R, parent-based; needs the tracing extra): a span
begun per request, the traceparent sent upstream, and R of them recorded with
their attributes and exported. The export thread is real and its CPU time is
counted; only the HTTP post is left out: each batch is encoded as OTLP's
protobuf, as the exporter does, and dropped (``EncodeOnly``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import random
import statistics
import time
from typing import Any

from browser_headers import browser_request

from ingressd.model.backend import Backend, Endpoint
from ingressd.model.policy import LimitConfig, RoutePolicy, UpstreamHash
from ingressd.model.table import Route, RouteTable, VirtualHost
from ingressd.policy.chash import parse_key
from ingressd.policy.limits import LimitRegistry
from ingressd.policy.snippets import translate
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


# ``--snippet``: ingress-nginx's configuration-snippet example, translated.
SNIPPET = 'more_set_headers "Request-Id: $req_id";'


def table(limits: bool = False, hash_by: str | None = None, snippet: bool = False) -> RouteTable:
    backend = Backend("default/api:80", (ENDPOINT,))
    route = Route("/api", "Prefix", backend, "default/api")
    if limits or hash_by or snippet:
        policy = RoutePolicy(
            limits=LimitConfig(rps=1_000_000, connections=100) if limits else None,
            upstream_hash=UpstreamHash(parse_key(hash_by), hash_by) if hash_by else None,
            snippet=translate(SNIPPET, "configuration-snippet").policy if snippet else None,
        )
        route = Route("/api", "Prefix", backend, "default/api", policy)
        backend.hash_ring()  # as the builder makes it
    vhost = VirtualHost("bench.local", prefix={"/api": route})
    return RouteTable(exact_hosts={"bench.local": vhost})


def request_mix(count: int, paths: str, request: bytes = REQUEST) -> list[tuple[bytes, bytes]]:
    """(request, its request line) to send, in order: ``request`` each time, or
    each with a path of its own."""
    if paths == "same":
        requests = [request] * count
    else:
        rng = random.Random(16)
        requests = [
            request.replace(b"/api/items", b"/api/%016x" % rng.getrandbits(64), 1)
            for _ in range(count)
        ]
    return [(r, r[: r.index(b"\r\n") + 2]) for r in requests]


class EncodeOnly:
    """The OTLP/HTTP exporter's work short of the network: each batch encoded as an
    ExportTraceServiceRequest and serialised, then dropped."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, batch: list[Any]) -> Any:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
        from opentelemetry.sdk.trace.export import SpanExportResult

        encode_spans(batch).SerializeToString()
        self.spans += len(batch)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def tracing_on(ratio: float) -> Any:
    """ingressd's tracing at ``ratio``, exporting through ``EncodeOnly``."""
    from ingressd.model.globals import TracingConfig
    from ingressd.observe.tracing import Tracing

    config = TracingConfig(
        enabled=True,
        collector_host="127.0.0.1",
        sampler="TraceIdRatioBased",
        ratio=ratio,
        # Large enough for a batch of hotpath's requests: none is dropped.
        max_queue_size=1_000_000,
        # Exports while batches are timed, so their CPU time is counted (with the
        # default 5 s, a short run would export only after it, untimed).
        schedule_delay_ms=50,
    )
    tracing = Tracing(config)
    tracing.queue.exporter = EncodeOnly()
    return tracing


async def run(
    requests: int,
    profile: bool,
    access_log: str = "off",
    limits: str = "off",
    request: bytes = REQUEST,
    paths: str = "same",
    hash_by: str | None = None,
    snippet: bool = False,
    tracing_ratio: float | None = None,
) -> tuple[list[float], list[float]]:
    state = ProxyState(
        table(limits != "off", hash_by, snippet), ProxySettings(access_log=access_log)
    )
    if tracing_ratio is not None:
        state.tracing = tracing_on(tracing_ratio)
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

    def one(request: bytes, line: bytes) -> None:
        client.data_received(request)
        sent = upstream_tx.take()
        if not sent.startswith(line):
            raise SystemExit(f"unexpected upstream request: {sent!r}")
        upstream.data_received(RESPONSE)
        answer = client_tx.take()
        if not (answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nok\n")):
            raise SystemExit(f"unexpected response: {answer!r}")

    # Warm up: the pool, the branch predictor.
    for each, line in request_mix(1000, paths, request):
        one(each, line)
    batches: list[float] = []
    cpu: list[float] = []
    batch = max(1, requests // 10)
    mix = request_mix(batch * 10, paths, request)
    profiler = cProfile.Profile() if profile else None
    for b in range(10):
        todo = mix[b * batch : (b + 1) * batch]
        if profiler:
            profiler.enable()
        start = time.perf_counter()
        start_cpu = time.process_time()
        for each, line in todo:
            one(each, line)
        batches.append((time.perf_counter() - start) / batch * 1e6)
        cpu.append((time.process_time() - start_cpu) / batch * 1e6)
        if profiler:
            profiler.disable()
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    client.connection_lost(None)
    if state.tracing is not None:
        queue = state.tracing.queue
        state.tracing.shutdown()  # the last batch exported (and its CPU time spent) here
        print(f"tracing: {queue.exporter.spans} spans exported, {queue.dropped} dropped")
    return batches, cpu


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
    parser.add_argument(
        "--paths",
        choices=["same", "random"],
        default="same",
        help="every request for the same path (default), or each for a new one: what the "
        "routing cache does at its best and at its worst",
    )
    parser.add_argument(
        "--upstream-hash-by",
        metavar="KEY",
        help="balance the route by this key (e.g. '$request_uri'), as the annotation does",
    )
    parser.add_argument(
        "--snippet",
        action="store_true",
        help=f"the route has a configuration-snippet ({SNIPPET})",
    )
    parser.add_argument(
        "--tracing-ratio",
        type=float,
        metavar="R",
        help="OpenTelemetry tracing on, sampling R of the requests (0 to 1; tracing extra)",
    )
    args = parser.parse_args()
    if args.tracing_ratio is not None and not 0 <= args.tracing_ratio <= 1:
        parser.error("--tracing-ratio is from 0 to 1")
    import uvloop

    batches, cpu = uvloop.run(
        run(
            args.requests,
            args.profile,
            args.access_log,
            args.limits,
            REQUESTS[args.request],
            args.paths,
            args.upstream_hash_by,
            args.snippet,
            args.tracing_ratio,
        )
    )
    median = statistics.median(batches)
    print(
        f"proxied request, Python only: median {median:.2f} us "
        f"(min {min(batches):.2f}, max {max(batches):.2f}; {args.requests} requests, "
        f"access log {args.access_log}, limits {args.limits}, {args.request} request, "
        f"paths {args.paths}"
        + (f", upstream-hash-by {args.upstream_hash_by}" if args.upstream_hash_by else "")
        + (", snippet" if args.snippet else "")
        + (f", tracing ratio {args.tracing_ratio:g}" if args.tracing_ratio is not None else "")
        + ")"
    )
    print(f"  = {1e6 / median:,.0f} requests/s per core before any syscall")
    print(
        f"  CPU time: median {statistics.median(cpu):.2f} us "
        f"(min {min(cpu):.2f}, max {max(cpu):.2f})"
    )


if __name__ == "__main__":
    main()
