"""A TCP service: one listener of the TCP services ConfigMap, spliced to its Service's endpoints."""

from __future__ import annotations

import asyncio
import logging
import socket

from ..model.backend import Backend
from .accept import Acceptor
from .bounds import Claim, SessionTable
from .connect import StreamSettings, Target, splice_to
from .listener import ServiceListener
from .peek import PeekError, read_proxy_header
from .proxyproto import MAX_HEADER, ProxyProtocolError, build_v1
from .services import StreamService
from .session_log import SessionLog

log = logging.getLogger("ingressd.stream")


class TCPService(ServiceListener):
    """Listening for one ConfigMap entry; its spec and backend are replaced as
    the ConfigMap and the endpoints change, without closing the listener."""

    kind = "tcp"

    def __init__(
        self,
        spec: StreamService,
        backend: Backend,
        sock: socket.socket,
        settings: StreamSettings,
        sessions: SessionLog,
        table: SessionTable,
    ) -> None:
        super().__init__(spec, backend, settings, sessions, table)
        self.acceptor = Acceptor(sock, self._handle)

    def stop(self) -> None:
        """No new connections; those under way go on (a shutdown's drain)."""
        self.acceptor.stop()

    def close(self) -> None:
        """No new connections, and those not spliced yet are dropped; spliced
        sessions go on until they end (or the table aborts them)."""
        self.acceptor.close()

    async def _handle(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        spec = self.spec
        peer = _peer(conn)
        client = peer[0]
        # The session is counted from its accept, its PROXY header included.
        claim = self.table.claim(spec.label)
        if claim is None:
            conn.close()
            self.sessions.refused(loop, self.session(client, 503))
            return
        try:
            await self._splice(loop, conn, peer, claim)
        except BaseException:
            claim.release()  # cancelled (the listener closed), say; release is idempotent
            raise

    async def _splice(
        self,
        loop: asyncio.AbstractEventLoop,
        conn: socket.socket,
        peer: tuple[str, int],
        claim: Claim,
    ) -> None:
        spec, backend = self.spec, self.backend
        client = peer[0]
        if spec.decode_proxy:
            # nginx: listen ... proxy_protocol (nginx.tmpl, TCP services).
            deadline = loop.time() + self.settings.peek_timeout
            try:
                header = await read_proxy_header(loop, conn, MAX_HEADER, deadline)
            except (PeekError, ProxyProtocolError, OSError) as exc:
                log.info("%s: client %s: PROXY protocol: %s: closed", spec.label, client, exc)
                conn.close()
                claim.release()
                self.sessions.record(loop, self.session(client, 400))
                return
            if header.source is not None:
                peer = header.source
                client = peer[0]
        preamble = None
        if spec.encode_proxy:
            # nginx: proxy_protocol on (v1), naming the client and the address it reached.
            def preamble(c: socket.socket, src: tuple[str, int] = peer) -> bytes:
                return build_v1(src, c.getsockname()[:2])

        target = Target("tcp", spec.label, backend.name, backend.endpoints)
        await splice_to(conn, target, client, self.settings, self.sessions, preamble, claim)


def _peer(conn: socket.socket) -> tuple[str, int]:
    try:
        addr = conn.getpeername()
        return (str(addr[0]), int(addr[1]))
    except OSError:
        return ("?", 0)
