"""UDP services: the flow table, on real sockets (no ingressd process)."""

from __future__ import annotations

import asyncio
import socket

from ingressd.model.backend import Backend, Endpoint
from ingressd.observe.stats import RequestStats
from ingressd.stream.bounds import SessionTable
from ingressd.stream.connect import StreamSettings
from ingressd.stream.services import StreamService
from ingressd.stream.session_log import SessionLog
from ingressd.stream.udp import UDPService

LOCAL = "127.0.0.1"


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(b"re:" + data, addr)  # type: ignore[attr-defined]


async def setup(
    settings: StreamSettings, stats: RequestStats | None = None, table: SessionTable | None = None
) -> tuple[UDPService, int, RequestStats, list]:
    loop = asyncio.get_running_loop()
    echo, _ = await loop.create_datagram_endpoint(Echo, local_addr=(LOCAL, 0))
    port = echo.get_extra_info("sockname")[1]
    stats = stats or RequestStats()
    table = table or SessionTable(100, 100, stats.stream_open)
    spec = StreamService("UDP", 1, "default", "echo", 53)
    backend = Backend("default/echo:53", endpoints=(Endpoint(LOCAL, port),))
    service = UDPService(spec, backend, settings, SessionLog(stats, None), table)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOCAL, 0))
    await loop.create_datagram_endpoint(lambda: service, sock=sock)
    return service, sock.getsockname()[1], stats, [echo]


async def client(port: int, payloads: list[bytes]) -> list[bytes]:
    loop = asyncio.get_running_loop()
    got: asyncio.Queue[bytes] = asyncio.Queue()

    class C(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            got.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(C, remote_addr=(LOCAL, port))
    answers = []
    for p in payloads:
        transport.sendto(p)
        answers.append(await asyncio.wait_for(got.get(), 2))
    transport.close()
    return answers


def test_one_reply_per_datagram_ends_the_flow() -> None:
    async def main() -> None:
        service, port, stats, keep = await setup(StreamSettings(udp_responses=1))
        answers = await asyncio.gather(*(client(port, [f"c{i}".encode()]) for i in range(10)))
        assert answers == [[f"re:c{i}".encode()] for i in range(10)]
        await asyncio.sleep(0.05)
        assert not service.flows  # proxy_responses 1: each flow ended at its reply
        [(key, rec)] = stats.streams.items()
        assert key == ("udp", "udp/1", "default/echo:53", 200) and rec[0] == 10
        service.close()
        for t in keep:
            t.close()

    asyncio.run(main())


def test_flows_are_bounded_and_idle_ones_end() -> None:
    async def main() -> None:
        settings = StreamSettings(udp_responses=0, udp_max_flows=3, idle_timeout=0.4)
        service, port, stats, keep = await setup(settings)
        # Each client keeps its flow (responses 0) and gets its own replies back.
        for i in range(5):
            assert await client(port, [b"a%d" % i, b"b%d" % i]) == [b"re:a%d" % i, b"re:b%d" % i]
            assert len(service.flows) <= 3
        # The two oldest were dropped for the newer ones, and counted as ended.
        assert stats.streams[("udp", "udp/1", "default/echo:53", 200)][0] == 2
        await asyncio.sleep(1.0)
        assert not service.flows  # idle past the timeout
        assert stats.streams[("udp", "udp/1", "default/echo:53", 200)][0] == 5
        service.close()
        for t in keep:
            t.close()

    asyncio.run(main())


def test_the_process_bound_drops_datagrams_that_would_start_a_flow() -> None:
    """UDP flows hold places in the process's session table; with it full a new
    client's datagram is dropped (counted as 503), the flows open go on, and a
    place freed is taken again."""

    async def main() -> None:
        stats = RequestStats()
        table = SessionTable(2, 100, stats.stream_open)
        settings = StreamSettings(udp_responses=0, udp_max_flows=10, idle_timeout=30)
        service, port, stats, keep = await setup(settings, stats, table)
        assert await client(port, [b"a"]) == [b"re:a"]
        assert await client(port, [b"b"]) == [b"re:b"]
        assert stats.stream_open == {"udp/1": 2} and table.total == 2
        try:
            await client(port, [b"c"])
            raise AssertionError("a third flow was let in")
        except TimeoutError:
            pass
        assert len(service.flows) == 2
        assert stats.streams[("udp", "udp/1", "default/echo:53", 503)][0] == 1
        service.end(next(iter(service.flows.values())))
        assert stats.stream_open == {"udp/1": 1}
        assert await client(port, [b"d"]) == [b"re:d"]
        service.close()
        assert stats.stream_open == {} and table.total == 0
        for t in keep:
            t.close()

    asyncio.run(main())
