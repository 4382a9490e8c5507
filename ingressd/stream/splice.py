"""Two TCP connections joined byte for byte: a TCP service's or a passthrough's.

As nginx's stream proxy (``ngx_stream_proxy_module``): what one side sends is
written to the other as it comes; a side that cannot keep up pauses reading
from the other (backpressure: transports' ``pause_writing`` → the other's
``pause_reading``); an EOF from one side is passed on as a half-close
(``write_eof``) while the other direction goes on, and the session ends when
both directions have ended, either side is lost, or nothing moved for the idle
timeout (nginx's ``proxy_timeout``, ingress-nginx's ``proxy-stream-timeout``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Session:
    """One spliced connection: its two sides, counters and idle timer."""

    __slots__ = (
        "_timer",
        "client",
        "ended",
        "from_client",
        "last_activity",
        "loop",
        "on_end",
        "started",
        "timeout",
        "to_client",
        "upstream",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        timeout: float,
        on_end: Callable[[Session], None],
    ) -> None:
        self.loop = loop
        self.timeout = timeout
        self.on_end = on_end
        self.client = Side(self, "client")
        self.upstream = Side(self, "upstream")
        self.client.peer = self.upstream
        self.upstream.peer = self.client
        self.from_client = 0  # bytes
        self.to_client = 0
        self.started = time.monotonic()
        self.last_activity = loop.time()
        self.ended = False
        self._timer: asyncio.TimerHandle | None = None

    def start_timer(self) -> None:
        self._timer = self.loop.call_later(self.timeout, self._check_idle)

    def _check_idle(self) -> None:
        idle = self.loop.time() - self.last_activity
        if idle >= self.timeout:
            self.abort()
            return
        self._timer = self.loop.call_later(self.timeout - idle, self._check_idle)

    def abort(self) -> None:
        for side in (self.client, self.upstream):
            if side.transport is not None:
                side.transport.abort()
        self.end()

    def close(self) -> None:
        """Both directions are done: close both sides (what is buffered is sent first)."""
        for side in (self.client, self.upstream):
            if side.transport is not None:
                side.transport.close()

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.on_end(self)

    @property
    def duration(self) -> float:
        return time.monotonic() - self.started


# What one side may hold for a peer that is not connected yet (the upstream
# speaking first, say an SMTP or MySQL greeting, while the client's transport
# is being made): past it, reading pauses.
PENDING_LIMIT = 256 * 1024


class Side(asyncio.Protocol):
    """One end of a session: what it receives goes to its peer's transport.

    The two ends are connected one after the other, so what arrives for an end
    not connected yet is held (``pending``, ``pending_eof``, ``pending_close``)
    and given to it when it is."""

    __slots__ = (
        "eof",
        "lost",
        "name",
        "peer",
        "pending",
        "pending_close",
        "pending_eof",
        "pending_size",
        "session",
        "transport",
    )

    def __init__(self, session: Session, name: str) -> None:
        self.session = session
        self.name = name
        self.peer: Side | None = None
        self.transport: asyncio.Transport | None = None
        self.eof = False
        self.lost = False
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.pending_eof = False
        self.pending_close = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t = transport  # type: ignore[assignment]
        if self.pending:
            t.writelines(self.pending)  # type: ignore[attr-defined]
            self.pending = []
            self.pending_size = 0
            peer = self.peer
            if peer is not None and peer.transport is not None and not peer.lost:
                peer.transport.resume_reading()
        if self.pending_close:
            t.close()
        elif self.pending_eof:
            peer = self.peer
            if peer is not None and peer.eof and self.eof:
                self.session.close()
            elif t.can_write_eof():  # type: ignore[attr-defined]
                t.write_eof()  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        session = self.session
        session.last_activity = session.loop.time()
        if self is session.client:
            session.from_client += len(data)
        else:
            session.to_client += len(data)
        peer = self.peer
        assert peer is not None
        if peer.transport is None:
            peer.pending.append(data)
            peer.pending_size += len(data)
            if peer.pending_size > PENDING_LIMIT and self.transport is not None:
                self.transport.pause_reading()
        elif not peer.lost:
            peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        assert peer is not None
        if peer.transport is None:
            peer.pending_eof = True
            return True
        if not peer.lost:
            if peer.eof:
                self.session.close()
                return False
            if peer.transport.can_write_eof():
                peer.transport.write_eof()
                return True  # keep this side open: the other direction goes on
            self.session.close()  # a peer that cannot half-close (TLS: not here)
        return False

    def pause_writing(self) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.lost:
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.lost:
            peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        peer = self.peer
        assert peer is not None
        if peer.transport is None and not peer.lost:
            # The peer is still being connected: it gets what was held, then closes.
            peer.pending_close = True
            return
        if peer.transport is not None and not peer.lost:
            if exc is None:
                peer.transport.close()  # after what it has buffered is written
            else:
                peer.transport.abort()
            return
        self.session.end()
