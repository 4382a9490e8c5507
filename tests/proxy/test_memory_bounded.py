"""Memory stays bounded under a long run of distinct hosts, paths and clients.

ingressd runs in this process, so tracemalloc sees its allocations. After a
warm-up, tracing starts and thousands more requests follow, each with a host,
path, query, cookie, request id and client address never seen before (routed
through a wildcard, an exact host with session affinity, and no route at all),
on connections that come and go. Whatever ingressd allocated during that run
and still holds at the end is what it would keep growing by: it must stay
near zero. A cache keyed by any of those values would keep about a hundred
bytes per request: hundreds of kilobytes here.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import tracemalloc
from pathlib import Path

from e2e_helpers import LOCALHOST, echo_backend, free_port, manifest_text
from k8s_objects import ingress, ingress_class, path, rule

from ingressd.app import serve
from ingressd.config import ServeConfig
from ingressd.echo import start_echo
from ingressd.policy.annotations import parse_cidrs
from ingressd.proxy.settings import ProxySettings

WARMUP = 600
MEASURED = 1500
CONNECTIONS = 6
REQUESTS_PER_CONNECTION = 25  # then the connection is closed and another opened
MAX_KEPT_BYTES = 48 * 1024
INGRESSD = str(Path(__file__).resolve().parents[2] / "ingressd")


def request(i: int) -> bytes:
    kind = i % 3
    if kind == 0:
        host = f"h{i}.wild.test"  # the wildcard route
    elif kind == 1:
        host = "app.test"  # exact, with cookie affinity
    else:
        host = f"nowhere-{i}.example"  # 404
    return (
        f"GET /p{i}/x{i}?q={i} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        f"X-Forwarded-For: 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\r\n"
        f"X-Request-ID: req-{i}\r\n"
        f"Cookie: route=stale{i}; other=v{i}\r\n"
        f"User-Agent: memory-test/{i}\r\n"
        "\r\n"
    ).encode()


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"transfer-encoding":
            raise AssertionError("the echo server answers with Content-Length")
    await reader.readexactly(length)
    return status


async def drive(port: int, start: int, count: int) -> dict[int, int]:
    statuses: dict[int, int] = {}
    queue = iter(range(start, start + count))

    async def client() -> None:
        while True:
            batch = [i for _, i in zip(range(REQUESTS_PER_CONNECTION), queue, strict=False)]
            if not batch:
                return
            reader, writer = await asyncio.open_connection(LOCALHOST, port)
            try:
                for i in batch:
                    writer.write(request(i))
                    status = await read_response(reader)
                    statuses[status] = statuses.get(status, 0) + 1
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    await asyncio.wait_for(asyncio.gather(*(client() for _ in range(CONNECTIONS))), 120)
    return statuses


def kept_by_ingressd(snapshot: tracemalloc.Snapshot) -> list[tracemalloc.StatisticDiff]:
    """Blocks still held that were allocated by ingressd's own code (any frame)."""
    ours = snapshot.filter_traces(
        [
            tracemalloc.Filter(True, f"{INGRESSD}/*", all_frames=True),
            tracemalloc.Filter(False, f"{INGRESSD}/echo.py", all_frames=True),
        ]
    )
    return ours.statistics("traceback")


async def test_memory_does_not_grow_with_distinct_hosts_paths_and_clients(
    tmp_path: Path,
) -> None:
    echo = await start_echo(LOCALHOST, 0, "web")
    affinity = {
        "nginx.ingress.kubernetes.io/affinity": "cookie",
        "nginx.ingress.kubernetes.io/session-cookie-name": "route",
    }
    (tmp_path / "all.yaml").write_text(
        manifest_text(
            [
                ingress_class(),
                *echo_backend("web", echo.port),
                ingress("wild", [rule("*.wild.test", path("/", "web"))]),
                ingress("app", [rule("app.test", path("/", "web"))], annotations=affinity),
            ]
        )
    )
    http_port = free_port()
    config = ServeConfig(
        manifests=tmp_path,
        address=LOCALHOST,
        http_port=http_port,
        https_port=free_port(),
        admin_port=free_port(),
        proxy=ProxySettings(trusted_proxies=parse_cidrs("127.0.0.1/32")),
        shutdown_grace=1.0,
    )
    started, stop = asyncio.Event(), asyncio.Event()
    server = asyncio.create_task(serve(config, started, stop))
    try:
        await asyncio.wait_for(started.wait(), 15)
        warm = await drive(http_port, 0, WARMUP)
        assert warm.get(200) and warm.get(404), warm
        gc.collect()
        tracemalloc.start(8)
        try:
            statuses = await drive(http_port, WARMUP, MEASURED)
            await asyncio.sleep(0.3)  # closed connections finish closing
            gc.collect()
            kept = kept_by_ingressd(tracemalloc.take_snapshot())
        finally:
            tracemalloc.stop()
        assert statuses == {200: 1000, 404: 500}, statuses
        total = sum(stat.size for stat in kept)
        worst = "\n".join(
            f"{stat.size} B in {stat.count} blocks:\n" + "\n".join(stat.traceback.format()[-6:])
            for stat in kept[:3]
        )
        assert total <= MAX_KEPT_BYTES, f"{total} bytes kept after {MEASURED} requests\n{worst}"
    finally:
        stop.set()
        await asyncio.wait_for(server, 15)
        await echo.close()
