"""The seams of the data path: what a client protocol, the exchange and an
upstream protocol see of one another.

A client protocol (``client_h1``; HTTP/2 next) reads requests and hands each to
an ``Exchange`` (``exchange.py``), for which it is the ``ClientStream``: where the
response goes, framed its way. The exchange decides, admits, authenticates,
picks an endpoint and retries; it never touches framing. It gives the request
to an upstream protocol (``upstream_h1``) as an ``Outgoing``, and hears of the
response as its ``ResponseSink``.

These are plain base classes rather than ``typing.Protocol``: compiled with
mypyc, a call through a native base class is a vtable call, while a Protocol
call stays a generic Python one. Each declares the attributes it promises in
its ``__slots__`` (its subclasses add only their own), so that assigning one
through the base type type-checks and, in pure Python, no instance has a
``__dict__``. ``Connection`` is a mypyc trait: a client connection is both a
``ClientStream`` and a ``Connection``, and mypyc allows one native base class
besides traits. The seams an exchange and a client stream are seen through
(``ResponseSink``, ``Outgoing``, ``ClientStream``) may be implemented by
Python classes too (``allow_interpreted_subclasses``): the tests drive an
upstream connection with a recording sink, on either build.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from mypy_extensions import mypyc_attr, trait

from ..policy.limits import Slot
from .http import UNNOMINABLE, Headers, drop_named
from .settings import ProxySettings

if TYPE_CHECKING:
    from ..routing.decide import Forward


class ReadClock:
    """The event loop's time while one read is handled, shared by what it drives.

    A read from a client or an upstream runs the parser's callbacks, the
    exchange and the other side's writes; each used to ask the loop for the
    time (a method call on uvloop's loop, about 50 ns, several per request).
    uvloop's clock moves once per loop turn, so one reading per read is the
    same value. The side that reads sets it and clears it when done (reads
    never nest); anyone else, outside a read, asks the loop.
    """

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at = -1.0

    def now(self, loop: asyncio.AbstractEventLoop) -> float:
        at = self.at
        return at if at >= 0.0 else loop.time()


CLOCK: Final = ReadClock()


@mypyc_attr(allow_interpreted_subclasses=True)
class ResponseSink:
    """What an upstream connection reports to the exchange that owns it."""

    __slots__ = ()

    def on_response_head(
        self, status: int, reason: bytes, headers: Headers, chunked: bool, length: bytes | None
    ) -> None:
        """The response's head: ``headers`` are those to pass on
        (``http.split_response``); ``chunked`` and ``length`` (Content-Length)
        say how the upstream framed the body."""
        raise NotImplementedError

    def on_response_body(self, data: bytes) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Write what the upstream's last read produced (upstreams may call the
        client's flush directly: ``Outgoing.client``)."""
        raise NotImplementedError

    def on_response_end(self, keep_alive: bool, trailers: Headers | None = None) -> None:
        """The response is complete; ``keep_alive``: the connection may be reused;
        ``trailers``: the response's trailer fields, if it had any."""
        raise NotImplementedError

    def on_upstream_upgraded(self, tail: bytes) -> None:
        raise NotImplementedError

    def on_upstream_lost(self, exc: Exception | None) -> None:
        raise NotImplementedError

    def on_upstream_paused(self, paused: bool) -> None:
        raise NotImplementedError


@mypyc_attr(allow_interpreted_subclasses=True)
class ClientStream:
    """The client side of one exchange: where its response goes, and what the
    client connection knows (the same for all its requests)."""

    __slots__ = (
        "client_ip",
        "closing",
        "forwarded_tail",
        "loop",
        "server_port",
        "tls",
        "tls_names",
        "tls_object",
        "trusted",
    )

    loop: asyncio.AbstractEventLoop
    client_ip: str  # the peer's address
    trusted: bool  # the peer is a --trusted-proxies address
    tls: bool
    tls_names: tuple[str, ...] | None  # of the certificate served; None: plain HTTP
    tls_object: object | None  # the ssl.SSLObject, for client certificates; None: plain HTTP
    server_port: bytes
    # X-Forwarded-Port, X-Forwarded-Proto, X-Scheme and, for an untrusted peer,
    # X-Real-IP: the same for every request of a connection, so made once,
    # as HTTP/1.1 header lines ("\r\nName: value" each).
    forwarded_tail: bytes
    closing: bool  # no more responses can be written

    def now(self) -> float:
        """The event loop's time (the read being handled may have it already)."""
        return CLOCK.now(self.loop)

    def interim(self, ex: Outgoing, status: int, reason: bytes) -> None:
        """A 1xx response other than 101."""
        raise NotImplementedError

    def response_head(
        self,
        ex: Outgoing,
        status: int,
        reason: bytes,
        headers: Headers,
        chunked: bool,
        length: bytes | None,
    ) -> None:
        """The response's status and headers (hop-by-hop ones removed already);
        ``chunked``/``length``: how the upstream framed the body."""
        raise NotImplementedError

    def response_body(self, ex: Outgoing, data: bytes) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Write what the last upstream read produced."""
        raise NotImplementedError

    def response_end(self, ex: Outgoing, trailers: Headers | None) -> None:
        """The response is complete, with its trailer fields if it had any (they
        are passed on where the client's framing can carry them)."""
        raise NotImplementedError

    def local_response(
        self,
        ex: Outgoing,
        status: int,
        body: bytes,
        location: str | None,
        headers: Headers | tuple[tuple[bytes, bytes], ...],
    ) -> None:
        """A whole response made by ingressd (errors, redirects, preflights)."""
        raise NotImplementedError

    def abort_response(self, ex: Outgoing) -> None:
        """Too late for an error status: cut the response off, visibly truncated."""
        raise NotImplementedError

    def close(self) -> None:
        """Nothing more can be answered here: the HTTP/1.1 connection closes,
        the HTTP/2 stream is reset."""
        raise NotImplementedError

    def pause_body(self, reason: int) -> None:
        """Stop reading the request body (reasons are bits; several can overlap)."""
        raise NotImplementedError

    def read_ahead(self, high: int, low: int) -> None:
        """proxy-buffering: let up to ``high`` bytes of this response wait for the
        client before its upstream is paused, and read it again at ``low``; 0, 0:
        the protocol's own limits."""
        raise NotImplementedError

    def resume_body(self, reason: int) -> None:
        raise NotImplementedError

    def exchange_done(self, ex: Outgoing) -> None:
        """The exchange's response is complete (or abandoned)."""
        raise NotImplementedError

    def start_tunnel(
        self, upstream: Tunnel, tail: bytes, early: list[bytes], slot: Slot | None
    ) -> None:
        """The upstream switched protocols (101): from now on bytes go both ways
        unparsed. ``tail``: bytes the upstream sent after its 101; ``early``:
        bytes the client sent after its request; ``slot``: a limit-connections
        place the tunnel holds until it closes."""
        raise NotImplementedError


class Tunnel:
    """An upstream connection once it has switched protocols: raw bytes."""

    __slots__ = ("transport", "tunnel")

    transport: asyncio.Transport | None  # its own
    tunnel: asyncio.Transport | None  # the client's, once tunnelled

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def writelines(self, parts: list[bytes]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class UpstreamStream(Tunnel):
    """The upstream side of one exchange: an HTTP/1.1 connection (one request at
    a time), or a stream of a multiplexed connection."""

    __slots__ = ("closed", "owner", "requests")

    owner: Outgoing | None
    requests: int  # requests this connection carried, this one included
    closed: bool

    def begin(self, owner: Outgoing, head_only: bool, head_limit: int) -> None:
        """Start a request/response cycle owned by ``owner``; the response's head
        may take ``head_limit`` bytes."""
        raise NotImplementedError

    def send_request(self, req: Outgoing, body: Sequence[bytes], end: bool) -> None:
        """The request head, the body received so far and, with ``end``, its end."""
        raise NotImplementedError

    def send_body(self, data: bytes) -> None:
        raise NotImplementedError

    def end_body(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        """The response ended cleanly: the connection may serve another request."""
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the request: the connection (or stream) is not used again."""
        raise NotImplementedError

    def pause_reading(self) -> None:
        """The client is slow to take the response: stop reading it for now."""
        raise NotImplementedError

    def resume_reading(self) -> None:
        raise NotImplementedError


@mypyc_attr(allow_interpreted_subclasses=True)
class Outgoing(ResponseSink):
    """An exchange as the upstream protocols read it: the request to send."""

    __slots__ = (
        "auth_headers",
        "client",
        "conn_tokens",
        "forward",
        "forwarded",
        "headers",
        "host",
        "http10",
        "keep_alive",
        "method",
        "no_body",
        "protocol",
        "req_chunked",
        "req_length",
        "request_complete",
        "request_id",
        "response_started",
        "sent",
        "spooling",
        "upgrade",
        "upgrade_value",
        "upgrading",
        "url",
        "xff",
    )

    client: ClientStream
    method: bytes
    url: bytes  # path and query as received
    headers: Headers  # the client's, less hop-by-hop and overwritten ones
    host: bytes | None
    xff: bytes | None  # the client's X-Forwarded-For
    # The client's X-Forwarded-Proto, -Host, -Port and X-Real-IP (lowercase name,
    # value), kept only for what a trusted peer may say (use-forwarded-headers,
    # forwarded-for-header); None when it sent none of them.
    forwarded: list[tuple[bytes, bytes]] | None
    request_id: bytes | None
    conn_tokens: set[bytes] | None  # named by the client's Connection header
    req_chunked: bool  # the body's length is not known ahead
    req_length: bytes | None  # Content-Length as received
    no_body: bool  # the client's body is not sent (an error page's request)
    upgrade: bool  # a WebSocket upgrade is asked for
    upgrade_value: bytes | None
    auth_headers: tuple[tuple[bytes, bytes], ...]  # from the auth-url service
    forward: Forward | None
    http10: bool
    protocol: str  # the client's: "HTTP/1.0", "HTTP/1.1" or "HTTP/2.0", for logs
    keep_alive: bool  # the client connection may carry on after this exchange
    upgrading: bool  # waiting for the upstream's answer to an upgrade
    request_complete: bool
    response_started: bool
    sent: int  # bytes sent to the client
    # The exchange reads the request body whole into its own buffer before the
    # upstream is connected (proxy-request-buffering): the client may send on.
    spooling: bool

    def real_ip(self) -> str:
        raise NotImplementedError

    def proxy_settings(self) -> ProxySettings:
        raise NotImplementedError

    def check_timeout(self, now: float) -> None:
        """Called by the proxy's sweep while the exchange waits on its upstream."""
        raise NotImplementedError


@trait
class Connection:
    """A client connection, of any protocol, as the proxy's connection set holds it."""

    __slots__ = ()

    @property
    def idle(self) -> bool:
        """Between requests: closing it loses nothing."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:
        """Close when idle; otherwise finish what is under way, then close."""
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the connection at once (the drain's grace is over): its
        exchanges end as the client leaving."""
        raise NotImplementedError


def upstream_fields(req: Outgoing) -> tuple[Headers, bytes | None, bytes, bytes, bytes]:
    """What an upstream request carries of ``req``, whichever protocol frames it
    (``upstream_h1.encode_request``, ``upstream_h2.request_headers``), as
    ingress-nginx's nginx.tmpl sets it (``proxy_set_header``/``grpc_set_header``):

    - the client's headers, less those its Connection header names (hop-by-hop,
      RFC 9110 7.6.1, except what routing used and what ingressd sets) and those
      the annotations and the auth service replace, then theirs (an empty value
      removes the header, as nginx's ``proxy_set_header NAME ""``);
    - the Host an annotation set (upstream-vhost; None when none did, b"" when
      one removed it);
    - the host the request came for (X-Forwarded-Host, and Host unless replaced);
    - X-Forwarded-For: a trusted proxy's chain with the peer added, else the peer
      alone (ingress-nginx replaces anyone else's by default);
    - X-Real-IP: behind a trusted proxy the client it names, else the peer;
    - behind a trusted proxy under use-forwarded-headers (``forwarded``: not None),
      its X-Forwarded-Proto, -Port and -Host (the last also the Host), each where
      it sent one, as nginx.tmpl's $pass_access_scheme, $pass_port, $best_http_host.
    """
    fwd = req.forward
    assert fwd is not None
    client = req.client
    headers = req.headers
    if req.conn_tokens:
        named = req.conn_tokens - UNNOMINABLE
        if named:
            headers = drop_named(headers, named)
    host_override: bytes | None = None
    extra = fwd.request_headers
    if req.auth_headers:
        extra = (*extra, *req.auth_headers)
    if extra:
        names = {name.lower() for name, _ in extra}
        headers = [*drop_named(headers, names), *(h for h in extra if h[1])]
        if b"host" in names:
            host_override = b""
            for name, value in extra:
                if value and name.lower() == b"host":
                    host_override = value  # the last one set
    host = req.host if req.host is not None else fwd.endpoint.host.encode()
    peer = client.client_ip.encode("latin-1")
    if client.trusted:
        real_ip = req.real_ip().encode("latin-1")
        settings = req.proxy_settings()
        if not settings.full_forwarded_for:
            xff = real_ip  # ingress-nginx: X-Forwarded-For $remote_addr
        else:
            xff = (req.xff + b", " + peer) if req.xff else peer
        if req.forwarded is not None and settings.forwarded_headers:
            for name, value in req.forwarded:
                if name == b"x-forwarded-host" and value:
                    host = value
                    if host_override is None:
                        # nginx.tmpl: proxy_set_header Host $best_http_host
                        host_override = value
                        headers = [(b"Host", value), *drop_named(headers, {b"host"})]
                    break
    else:
        xff = real_ip = peer
    return headers, host_override, host, xff, real_ip


def forwarded_tail(req: Outgoing) -> bytes:
    """X-Forwarded-Port, -Proto and X-Scheme (HTTP/1.1 lines) of a request from a
    trusted peer: its own where it sent them under use-forwarded-headers, else
    the connection's (``ClientStream.forwarded_tail``, without X-Real-IP)."""
    client = req.client
    if req.forwarded is None or not req.proxy_settings().forwarded_headers:
        return client.forwarded_tail
    port = client.server_port
    proto = b"https" if client.tls else b"http"
    for name, value in req.forwarded:
        if name == b"x-forwarded-port" and value:
            port = value
        elif name == b"x-forwarded-proto" and value:
            proto = value
    return b"\r\nX-Forwarded-Port: %b\r\nX-Forwarded-Proto: %b\r\nX-Scheme: %b" % (
        port,
        proto,
        proto,
    )
