"""Reading the first bytes of an accepted socket before any protocol owns it.

A PROXY protocol header must be consumed exactly (the bytes after it are the
client's: TLS or HTTP), and a TLS ClientHello must be looked at without being
consumed (it goes on to the TLS termination or the passthrough backend as it
came). So both read with ``MSG_PEEK`` on the bare socket, then take exactly the
header (``recv(n)``) or nothing, and the socket is handed on whole to asyncio
(``connect_accepted_socket``) or to a splice.

Bounded in size (``limit``) and time (``deadline``). ``SO_RCVLOWAT`` makes the
socket readable again only once more bytes than were seen have arrived, so a
client sending its header a byte at a time costs one wake-up per segment, not
a busy loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import TypeVar

from .proxyproto import ProxyHeader, ProxyProtocolError, parse

T = TypeVar("T")


class PeekError(Exception):
    """The first bytes never made what was expected: the connection is closed."""


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket, deadline: float) -> None:
    fut: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, ready)
    try:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise PeekError("timed out")
        try:
            await asyncio.wait_for(fut, remaining)
        except TimeoutError:
            raise PeekError("timed out") from None
    finally:
        loop.remove_reader(fd)


async def peek(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    limit: int,
    deadline: float,
    complete: Callable[[bytes], T | None],
) -> T:
    """``complete(first bytes)`` once it gives an answer (it returns None while
    it needs more, raises on garbage); nothing is consumed."""
    lowat = False
    try:
        while True:
            await _readable(loop, sock, deadline)
            try:
                data = sock.recv(limit, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                continue
            if not data:
                raise PeekError("closed by the client")
            found = complete(data)
            if found is not None:
                return found
            if len(data) >= limit:
                raise PeekError(f"more than {limit} bytes")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, len(data) + 1)
            lowat = True
    finally:
        if lowat:
            # Whoever reads next must be woken by any byte.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)


async def read_proxy_header(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, limit: int, deadline: float
) -> ProxyHeader:
    """The PROXY protocol header at the start of ``sock``, consumed exactly.

    Raises PeekError (closed, timed out, too long) or ProxyProtocolError."""
    header = await peek(loop, sock, limit, deadline, parse)
    taken = 0
    while taken < header.length:
        # Peeked already, so in the socket's buffer: this does not block.
        chunk = sock.recv(header.length - taken)
        if not chunk:
            raise PeekError("closed by the client")
        taken += len(chunk)
    return header


__all__ = ["PeekError", "ProxyProtocolError", "peek", "read_proxy_header"]
