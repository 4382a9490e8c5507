"""What a client connection knows of its peer and socket, the same for every
request it carries, whatever its protocol (HTTP/1.1 or HTTP/2)."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Final

from ..model.policy import IPNetwork
from ..policy.tls import served_names
from .settings import ProxySettings


class Peer:
    """Built once per client connection. A plain class with an explicit
    ``__init__`` rather than a dataclass, as routing/decide.py's Forward (a
    compiled dataclass keeps a Python ``__init__``); immutable as the frozen
    dataclass it replaces: its fields are ``Final`` (no setter, compiled)."""

    __slots__ = (
        "client_ip",
        "forwarded_tail",
        "server_port",
        "tls_names",
        "tls_object",
        "trusted",
    )

    client_ip: Final[str]  # the peer's address
    server_port: Final[bytes]  # the port the client connected to
    tls_names: Final[tuple[str, ...] | None]  # of the certificate served; None: plain HTTP
    # The peer is a --trusted-proxies address: its X-Forwarded-For names the client.
    trusted: Final[bool]
    # X-Forwarded-Port, X-Forwarded-Proto, X-Scheme and, for an untrusted peer,
    # X-Real-IP, serialised once as HTTP/1.1 header lines ("\r\nName: value" each).
    forwarded_tail: Final[bytes]
    # The connection's ssl.SSLObject (None: plain HTTP), for hosts that check
    # client certificates (routing/client_auth.py); read only for them.
    tls_object: Final[object | None]

    def __init__(
        self,
        client_ip: str,
        server_port: bytes,
        tls_names: tuple[str, ...] | None,
        trusted: bool,
        forwarded_tail: bytes,
        tls_object: object | None = None,
    ) -> None:
        self.client_ip = client_ip
        self.server_port = server_port
        self.tls_names = tls_names
        self.trusted = trusted
        self.forwarded_tail = forwarded_tail
        self.tls_object = tls_object

    def _fields(self) -> tuple[object, ...]:
        return (
            self.client_ip,
            self.server_port,
            self.tls_names,
            self.trusted,
            self.forwarded_tail,
            self.tls_object,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Peer):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        names = ("client_ip", "server_port", "tls_names", "trusted", "forwarded_tail", "tls_object")
        pairs = ", ".join(f"{n}={v!r}" for n, v in zip(names, self._fields(), strict=True))
        return f"Peer({pairs})"


def peer_of(
    transport: asyncio.BaseTransport,
    tls: bool,
    trusted_proxies: tuple[IPNetwork, ...],
    source: str | None = None,
) -> Peer:
    """``source``: the client's address from a PROXY protocol header
    (--use-proxy-protocol), which then stands for the peer in everything a
    request does (X-Forwarded-For, X-Real-IP, allow/deny, limits, auth, the
    access log), as nginx's ``real_ip_header proxy_protocol`` sets $remote_addr."""
    if source is None:
        peer = transport.get_extra_info("peername")
        client_ip = peer[0] if peer else ""
    else:
        client_ip = source
    sock = transport.get_extra_info("sockname")
    server_port = str(sock[1]).encode() if sock else b""
    trusted = bool(trusted_proxies) and in_networks(client_ip, trusted_proxies)
    scheme = b"https" if tls else b"http"
    # X-Scheme as ingress-nginx sets it (nginx.tmpl: $pass_access_scheme).
    tail = b"\r\nX-Forwarded-Port: %b\r\nX-Forwarded-Proto: %b\r\nX-Scheme: %b" % (
        server_port,
        scheme,
        scheme,
    )
    if not trusted:
        # X-Real-IP is the peer for every request of the connection.
        tail += b"\r\nX-Real-IP: " + client_ip.encode()
    return Peer(
        client_ip=client_ip,
        server_port=server_port,
        tls_names=served_names(transport) if tls else None,
        trusted=trusted,
        forwarded_tail=tail,
        tls_object=transport.get_extra_info("ssl_object") if tls else None,
    )


def trusted_for(settings: ProxySettings, source: str | None) -> tuple[IPNetwork, ...]:
    """The peers whose headers name the client, for a connection whose PROXY protocol
    header named ``source`` (None: none). When the ConfigMap's use-forwarded-headers or
    enable-real-ip decide, a PROXY header's address is the client and no header
    replaces it, as ingress-nginx's real_ip_header proxy_protocol (nginx.tmpl); with
    --trusted-proxies the PROXY address may itself be a trusted proxy, as before."""
    if source is not None and settings.proxy_protocol_is_client:
        return ()
    return settings.trusted_proxies


def in_networks(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)
