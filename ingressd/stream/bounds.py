"""How many layer-4 sessions a process holds at once, per listener and in all.

Clients decide how many connections they open, so every open session is
claimed here first and released when it ends: a TCP service's connection from
its accept, a passthrough connection once its SNI names a passthrough host, a
UDP flow from its first datagram. Past a bound, a new connection is closed at
once (a UDP datagram that would start a flow is dropped): nothing waits in a
queue. As nginx's ``worker_connections`` (ingress-nginx's
max-worker-connections, 16384, ``rootfs/etc/nginx/template/nginx.tmpl``): the
process bound (``--max-stream-sessions``) keeps sockets and memory in check;
the per-listener bound (``--max-stream-sessions-per-port``) keeps one port
that is flooded from taking every place from the others. A UDP service's own
bound is its flow table (``--max-udp-flows``, the least recently used flow
going first), so UDP flows count against the process bound only.

The table also knows every spliced session, so that a process shutting down
can let them finish within ``--shutdown-grace`` and then close them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import MutableMapping
from typing import Protocol

log = logging.getLogger("ingressd.stream")

# Refusals are logged at most this often per listener (a flood must not flood the log).
WARN_EVERY = 10.0


class Abortable(Protocol):
    def abort(self) -> None: ...


class Claim:
    """One place in the table, held until ``release`` (called once or more)."""

    __slots__ = ("held", "listener", "session", "table")

    def __init__(self, table: SessionTable, listener: str) -> None:
        self.table = table
        self.listener = listener
        self.session: Abortable | None = None  # set once spliced: aborted at shutdown
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.table._release(self)


class SessionTable:
    """The open layer-4 sessions of one process.

    ``open`` (listener → sessions) is the process's stats' ``stream_open``,
    which /metrics shows as ``ingressd_stream_sessions_open``.
    """

    def __init__(
        self, per_process: int, per_listener: int, open_: MutableMapping[str, int]
    ) -> None:
        self.per_process = per_process
        self.per_listener = per_listener
        self.open = open_
        self.total = 0
        self.claims: set[Claim] = set()
        self.refused: dict[str, int] = {}  # since the last warning, per listener
        self._warned: dict[str, float] = {}

    def claim(self, listener: str, per_listener: int | None = None) -> Claim | None:
        """A place for a new session on ``listener``, or None (full: refuse it).

        ``per_listener``: that listener's own bound (0: none but the process's);
        the table's when None."""
        bound = self.per_listener if per_listener is None else per_listener
        here = self.open.get(listener, 0)
        if self.total >= self.per_process:
            self._refuse(listener, f"{self.total} layer-4 sessions open in this process")
            return None
        if bound and here >= bound:
            self._refuse(listener, f"{here} sessions open on it")
            return None
        self.open[listener] = here + 1
        self.total += 1
        claim = Claim(self, listener)
        self.claims.add(claim)
        return claim

    def _release(self, claim: Claim) -> None:
        self.claims.discard(claim)
        self.total -= 1
        left = self.open.get(claim.listener, 0) - 1
        if left > 0:
            self.open[claim.listener] = left
        else:
            self.open.pop(claim.listener, None)

    def _refuse(self, listener: str, why: str) -> None:
        count = self.refused.get(listener, 0) + 1
        now = time.monotonic()
        if now - self._warned.get(listener, -WARN_EVERY) < WARN_EVERY:
            self.refused[listener] = count
            return
        self._warned[listener] = now
        self.refused.pop(listener, None)
        more = f" ({count - 1} more refused since the last warning)" if count > 1 else ""
        log.warning("%s: %s: new connections are closed at once%s", listener, why, more)

    async def drain(self, deadline: float) -> None:
        """Wait until no session is open, or ``deadline`` (the loop's clock)."""
        loop = asyncio.get_running_loop()
        while self.total and loop.time() < deadline:
            await asyncio.sleep(0.05)

    def abort(self) -> None:
        """Close every spliced session now (the end of a shutdown's grace)."""
        for claim in list(self.claims):
            if claim.session is not None:
                claim.session.abort()
