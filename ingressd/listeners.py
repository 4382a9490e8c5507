"""The listening sockets: bound before anything else starts, or one clear error.

ingressd binds its sockets itself rather than leaving it to
``loop.create_server(host, port)``: the error then names the address and the
option that chose it (``cannot listen on 0.0.0.0:8080 (--http-port): address
already in use``), and the main process can hold every port before it starts
worker processes or the source, so that a port in use ends the start with one
line and exit code 1 instead of workers restarted forever.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Listener:
    """Where one listener goes, and the option that put it there."""

    flag: str  # "--http-port"
    address: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port} ({self.flag})"


class ListenError(Exception):
    """A listener that cannot be had; the message is the one line ingressd exits with."""

    @classmethod
    def of(cls, listener: Listener, reason: str) -> ListenError:
        return cls(f"cannot listen on {listener}: {reason}")

    @classmethod
    def from_os(cls, listener: Listener, exc: OSError) -> ListenError:
        return cls.of(listener, _reason(exc))


def _reason(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def bind(listener: Listener, *, reuse_port: bool = False) -> list[socket.socket]:
    """Sockets bound (not yet listening) to every address ``listener.address`` names.

    ``reuse_port``: SO_REUSEPORT, for the worker processes that share a port and
    for the main process holding it for them.
    """
    try:
        infos = socket.getaddrinfo(
            listener.address or None,
            listener.port,
            type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE,
        )
    except socket.gaierror as exc:
        raise ListenError.of(listener, f"cannot resolve the address: {_reason(exc)}") from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                # As asyncio does: "::" is IPv6 only when an IPv4 address is bound too.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.setblocking(False)
    except OSError as exc:
        close(sockets)
        raise ListenError.from_os(listener, exc) from None
    return sockets


def bind_all(listeners: list[Listener], *, reuse_port: bool = False) -> list[socket.socket]:
    """``bind`` each in turn; all or none."""
    sockets: list[socket.socket] = []
    try:
        for listener in listeners:
            sockets += bind(listener, reuse_port=reuse_port)
    except ListenError:
        close(sockets)
        raise
    return sockets


def close(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.close()
