"""A UDP service: datagrams from each client relayed to one endpoint, and the
replies back to that client.

As nginx's stream proxy over UDP (``listen ... udp``; nginx.tmpl's UDP
services): each client address is a flow with a socket of its own towards the
endpoint chosen for it, so replies are told apart by the socket they come in
on and go back to their client. A flow ends once it got the replies expected
(``proxy_responses``: per datagram sent; ingress-nginx's proxy-stream-responses,
1) or after the idle timeout; the table holds at most ``udp_max_flows`` flows
(``--max-udp-flows``), the least recently used one going first. Each flow also
holds a place in the process's SessionTable (bounds.py): with the process full,
a datagram that would start a flow is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

from ..model.backend import Backend, Endpoint
from .bounds import Claim, SessionTable
from .connect import StreamSettings
from .listener import ServiceListener
from .services import StreamService
from .session_log import SessionLog

log = logging.getLogger("ingressd.stream")

Address = tuple[str, int]
# Datagrams from a client kept while its flow's socket is being set up.
QUEUED = 64


class Flow(asyncio.DatagramProtocol):
    __slots__ = (
        "bytes_in",
        "bytes_out",
        "claim",
        "client",
        "closed",
        "endpoint",
        "expected",
        "last",
        "queue",
        "received",
        "service",
        "started",
        "transport",
    )

    def __init__(
        self, service: UDPService, client: Address, endpoint: Endpoint, claim: Claim
    ) -> None:
        self.service = service
        self.claim = claim
        self.client = client
        self.endpoint = endpoint
        self.transport: asyncio.DatagramTransport | None = None
        self.queue: list[bytes] = []
        self.bytes_in = self.bytes_out = 0
        self.expected = self.received = 0
        self.started = time.monotonic()
        self.last = service.loop.time()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        for data in self.queue:
            self.transport.sendto(data)  # type: ignore[union-attr]
        self.queue = []

    def send(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self.expected += 1
        self.last = self.service.loop.time()
        if self.transport is None:
            if len(self.queue) < QUEUED:
                self.queue.append(data)
            return
        self.transport.sendto(data)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        service = self.service
        if service.transport is None or self.closed:
            return
        service.transport.sendto(data, self.client)
        self.bytes_out += len(data)
        self.received += 1
        self.last = service.loop.time()
        responses = service.settings.udp_responses
        if responses and self.received >= self.expected * responses:
            service.end(self)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the endpoint is not there; the
        # client learns by its own timeout, as from nginx.
        log.debug("%s: flow %s -> %s: %s", self.service.spec.label, self.client, self.endpoint, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def close(self) -> None:
        self.closed = True
        self.claim.release()
        if self.transport is not None:
            self.transport.close()


class UDPService(ServiceListener, asyncio.DatagramProtocol):
    """Listening for one UDP ConfigMap entry."""

    kind = "udp"

    def __init__(
        self,
        spec: StreamService,
        backend: Backend,
        settings: StreamSettings,
        sessions: SessionLog,
        table: SessionTable,
    ) -> None:
        super().__init__(spec, backend, settings, sessions, table)
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
        self.flows: OrderedDict[Address, Flow] = OrderedDict()
        self._sweeper: asyncio.TimerHandle | None = None
        self._connecting: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._sweeper = self.loop.call_later(self._sweep_every(), self._sweep)

    def _sweep_every(self) -> float:
        return min(1.0, self.settings.idle_timeout / 4)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        client = (str(addr[0]), int(addr[1]))
        flow = self.flows.get(client)
        if flow is None or flow.closed:
            endpoint = self.backend.pick()
            if endpoint is None:
                self.sessions.record(self.loop, self.session(client[0], 502, bytes_in=len(data)))
                return
            while len(self.flows) >= self.settings.udp_max_flows:
                _, oldest = self.flows.popitem(last=False)
                self._finish(oldest)
            # The flow table above is this listener's bound: only the process's here.
            claim = self.table.claim(self.spec.label, 0)
            if claim is None:
                self.sessions.refused(self.loop, self.session(client[0], 503))
                return
            flow = Flow(self, client, endpoint, claim)
            self.flows[client] = flow
            # Held until done: the loop keeps only a weak reference to a task.
            task = self.loop.create_task(self._connect(flow))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)
        else:
            self.flows.move_to_end(client)
        flow.send(data)

    async def _connect(self, flow: Flow) -> None:
        ep = flow.endpoint
        try:
            await self.loop.create_datagram_endpoint(lambda: flow, remote_addr=(ep.host, ep.port))
        except OSError as exc:
            log.warning("%s: upstream %s: %s", self.spec.label, ep, exc)
            self.end(flow)

    def end(self, flow: Flow) -> None:
        if self.flows.get(flow.client) is flow:
            del self.flows[flow.client]
        self._finish(flow)

    def _finish(self, flow: Flow) -> None:
        if flow.closed:
            return
        flow.close()
        duration = time.monotonic() - flow.started
        rec = self.session(
            flow.client[0], 200, str(flow.endpoint), flow.bytes_in, flow.bytes_out, duration
        )
        self.sessions.record(self.loop, rec)

    def _sweep(self) -> None:
        deadline = self.loop.time() - self.settings.idle_timeout
        for flow in list(self.flows.values()):
            if flow.last <= deadline:
                self.end(flow)
        self._sweeper = self.loop.call_later(self._sweep_every(), self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for flow in list(self.flows.values()):
            self.end(flow)
        if self.transport is not None:
            self.transport.close()
