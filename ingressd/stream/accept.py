"""Accepting connections ourselves, for listeners that read before anyone owns
the connection (a PROXY protocol header, a ClientHello for passthrough).

``loop.create_server`` hands every connection to a protocol at once; here each
accepted socket goes to an async ``handle`` first, which peeks (peek.py) and
then gives the socket to asyncio (``connect_accepted_socket``) or a splice.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable

log = logging.getLogger("ingressd.stream")

Handler = Callable[[socket.socket], Awaitable[None]]

# Connections whose first bytes are awaited at once, per listener: a flood of
# connections that send nothing costs at most this many sockets and tasks
# (each also bounded in time by its handler), and then new ones are closed.
MAX_PENDING = 4096

# accept() errors that concern one connection or a passing shortage, not the
# listener: keep accepting (after a pause for the shortages).
_SHORTAGES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Acceptor:
    """Accepts on one listening socket until closed; each connection's handler
    runs as its own task (cancelled by ``close``)."""

    def __init__(
        self,
        sock: socket.socket,
        handle: Handler,
        backlog: int = 1024,
        max_pending: int = MAX_PENDING,
    ) -> None:
        sock.setblocking(False)
        sock.listen(backlog)
        self.sock = sock
        self.handle = handle
        self.max_pending = max_pending
        self.refused = 0  # connections closed at once: max_pending were waiting
        self.pending: set[asyncio.Task[None]] = set()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError as exc:
                if exc.errno in _SHORTAGES:
                    log.warning("accept on %s: %s", self.sock.getsockname(), exc)
                    await asyncio.sleep(0.1)
                continue
            if len(self.pending) >= self.max_pending:
                if not self.refused % 1000:
                    log.warning(
                        "%s: %d connections wait for their first bytes; closing new ones",
                        self.sock.getsockname(),
                        len(self.pending),
                    )
                self.refused += 1
                conn.close()
                continue
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(self._one(conn))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def _one(self, conn: socket.socket) -> None:
        try:
            await self.handle(conn)
        except asyncio.CancelledError:
            conn.close()
            raise
        except Exception:
            log.exception("connection handler failed")
            conn.close()

    def stop(self) -> None:
        """No more accepting (the port is released); the connections accepted
        go on with their handlers (a shutdown's drain waits for ``pending``)."""
        self.task.cancel()
        if self.sock.fileno() != -1:
            self.sock.close()

    def close(self) -> None:
        """``stop``, and the handlers still running are cancelled."""
        self.stop()
        for task in list(self.pending):
            task.cancel()
