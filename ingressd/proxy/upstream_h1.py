"""HTTP/1.1 to upstream endpoints: the request as bytes, the response parsed
(httptools), and the keep-alive pool that reuses connections."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import httptools

from ..model.backend import Endpoint
from ..policy.upstream_tls import check_peer
from . import http
from .settings import DEFAULT_HEAD_LIMIT
from .streams import (
    CLOCK,
    Outgoing,
    ResponseSink,
    UpstreamStream,
    forwarded_tail,
    upstream_fields,
)

if TYPE_CHECKING:
    from ..model.policy import UpstreamTLS
    from .http import Headers

# Idle connections are keyed by the endpoint's host and port and UpstreamTLS.key
# (None: plain TCP). Not by the Endpoint itself: a dataclass's __hash__ and
# __eq__ are Python functions even when compiled, and the pool is probed twice
# per request (take, release); and after a table rebuild the endpoints are new
# objects, equal to the keys held but not the same.
PoolKey = tuple[str, int, object]

log: Final = logging.getLogger("ingressd.upstream")


class UpstreamHeadTooLarge(Exception):
    """The upstream's response head did not fit in the bound: nginx's "too big header"."""


class UpstreamConnection(asyncio.Protocol, UpstreamStream):
    """One TCP connection to an endpoint; owned by at most one exchange at a time.

    It goes back to the pool only with its parser at a message boundary and no
    byte read past the end of the response: an upstream that writes more than
    one response (or garbage) after the one asked for would otherwise hand
    those bytes to the next request, from another client.
    """

    __slots__ = (
        "_ended",
        "_head_limit",
        "_head_only",
        "_head_room",
        "_headers",
        "_in_head",
        "_parser",
        "_reason",
        "_skip_body",
        "_spoiled",
        "_trailer_bytes",
        "_trailers",
        "born",
        "chunked",
        "endpoint",
        "idle_since",
        "key",
        "pool",
    )

    def __init__(self, pool: UpstreamPool, endpoint: Endpoint, key: PoolKey | None = None) -> None:
        self.pool = pool
        self.endpoint = endpoint
        self.key: PoolKey = key if key is not None else (endpoint.host, endpoint.port, None)
        self.transport: asyncio.Transport | None = None
        self.owner: Outgoing | None = None
        self.tunnel: asyncio.Transport | None = None  # client transport once upgraded
        self.requests = 0
        self.closed = False
        self.idle_since = 0.0
        # When it was connected (the loop's clock; -1: not known, never too old), for
        # upstream-keepalive-time.
        self.born = -1.0
        self._parser: httptools.HttpResponseParser | None = None
        self._headers: Headers = []
        self._reason = b""
        self._head_only = False
        self._skip_body = False
        # Set when the response is complete, to whether the connection may be
        # reused; acted on once the read that completed it is parsed. None
        # while a response is awaited or being read (a new connection has none).
        self._ended: bool | None = True
        # Bytes were parsed after the end of the response: never reuse.
        self._spoiled = False
        self._in_head = True
        self._head_limit = self._head_room = DEFAULT_HEAD_LIMIT
        self.chunked = False  # the request's body goes chunked
        self._trailers: Headers = []  # of the response's chunked body
        self._trailer_bytes = 0

    # -- used by the exchange ----------------------------------------------------

    def begin(self, owner: Outgoing, head_only: bool, head_limit: int) -> None:
        """Start a request/response cycle owned by ``owner``; the response's head
        may take ``head_limit`` bytes."""
        self.owner = owner
        self.requests += 1
        self._head_only = head_only
        self._skip_body = False
        self._headers = []
        self._reason = b""
        self._ended = None
        self._in_head = True
        self._head_limit = self._head_room = head_limit
        if self._trailers:
            self._trailers = []
        self._trailer_bytes = 0
        if self._parser is None:
            # A parser that ended its last message cleanly parses the next one.
            self._parser = httptools.HttpResponseParser(self)

    @property
    def reusable(self) -> bool:
        """At a message boundary, with nothing read past the response it ended."""
        return self._ended is True and not self._spoiled and self.tunnel is None and not self.closed

    def send_request(self, req: Outgoing, body: Sequence[bytes], end: bool) -> None:
        """The request head, the body received so far and, with ``end``, its end."""
        self.chunked = req.req_chunked and not req.no_body
        head = encode_request(req)
        if not body and not (end and self.chunked):
            self.transport.write(head)  # type: ignore[union-attr]
            return
        parts = [head]
        if self.chunked:
            parts += [http.chunk(data) for data in body]
            if end:
                parts.append(http.LAST_CHUNK)
        else:
            parts += body
        if self.key[2] is not None:
            # TLS: one record rather than one per part (see client_h1.flush).
            self.transport.write(b"".join(parts))  # type: ignore[union-attr]
        else:
            self.transport.writelines(parts)  # type: ignore[union-attr]

    def send_body(self, data: bytes) -> None:
        self.transport.write(http.chunk(data) if self.chunked else data)  # type: ignore[union-attr]

    def end_body(self) -> None:
        if self.chunked:
            self.transport.write(http.LAST_CHUNK)  # type: ignore[union-attr]

    def release(self) -> None:
        self.pool.release(self)

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        """Raw bytes: a tunnel's (after an upgrade)."""
        self.transport.write(data)  # type: ignore[union-attr]

    def writelines(self, parts: list[bytes]) -> None:
        self.transport.writelines(parts)  # type: ignore[union-attr]

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.owner = None
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.owner = None
            if self.transport is not None:
                self.transport.abort()

    # -- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        owner = self.owner
        parser = self._parser
        # Tested through a local: a test of the attribute itself would leave
        # it narrowed to None for the type checker, and compiled code checks
        # that type when it reads the attribute again below, after the
        # parser's callbacks have set it (TypeError).
        ended: bool | None = self._ended
        if owner is None or parser is None or ended is not None:
            # Bytes from an idle connection mean it is out of step: drop it.
            self.close()
            return
        CLOCK.at = owner.client.loop.time()
        try:
            self._read(owner, parser, data)
        finally:
            CLOCK.at = -1.0

    def _read(self, owner: Outgoing, parser: httptools.HttpResponseParser, data: bytes) -> None:
        try:
            if self._in_head:
                room = self._head_room
                if len(data) > room:
                    # httptools keeps a partial header line to itself: feed no
                    # more than the bound, and go on only if the head ended in it.
                    parser.feed_data(data[:room])
                    if self._in_head:
                        self._head_too_large(owner)
                        return
                    data = data[room:]
                    if self.owner is owner and self._ended is None:
                        parser.feed_data(data)
                else:
                    self._head_room = room - len(data)
                    parser.feed_data(data)
            else:
                parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self._ended is None and self.owner is owner:
                offset = exc.args[0] if exc.args else len(data)
                owner.on_upstream_upgraded(data[offset:])
                return
            self._spoiled = True
        except httptools.HttpParserError as exc:
            if self._ended is None:
                log.warning("upstream %s sent a malformed response: %s", self.endpoint, exc)
                self.abort()
                owner.on_upstream_lost(exc)
                return
            self._spoiled = True  # garbage after a complete response
        # What this read produced goes to the client in one write.
        owner.client.flush()
        ended = self._ended
        if ended is not None and self.owner is owner:
            if self._spoiled:
                log.warning(
                    "upstream %s sent bytes after its response: connection not reused",
                    self.endpoint,
                )
            trailers = self._trailers or None
            if self._trailer_bytes > self._head_limit:
                log.warning(
                    "upstream %s sent trailers over %d bytes (proxy-buffer-size): dropped",
                    self.endpoint,
                    self._head_limit,
                )
                trailers = None
            owner.on_response_end(ended and not self._spoiled, trailers)

    def _head_too_large(self, owner: ResponseSink) -> None:
        log.warning(
            "upstream %s sent too big header (over %d bytes, proxy-buffer-size)",
            self.endpoint,
            self._head_limit,
        )
        self.abort()
        owner.on_upstream_lost(
            UpstreamHeadTooLarge(
                f"upstream sent too big header (over {self._head_limit} bytes, proxy-buffer-size)"
            )
        )

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost reports it

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        owner = self.owner
        self.owner = None
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None
        if owner is not None:
            owner.on_upstream_lost(exc)

    def pause_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.pause_reading()
        elif self.owner is not None:
            self.owner.on_upstream_paused(True)

    def resume_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.resume_reading()
        elif self.owner is not None:
            self.owner.on_upstream_paused(False)

    # -- httptools callbacks (they only record and pass on) ---------------------------
    # After the response is complete (``_ended`` set) they ignore what follows;
    # a new message beginning marks the connection spoiled.

    def on_message_begin(self) -> None:
        if self._ended is not None:
            self._spoiled = True

    def on_status(self, status: bytes) -> None:
        if self._ended is None:
            self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._skip_body or self._ended is not None:
            return
        if self._in_head:
            self._headers.append((name, value))
            return
        # A trailer field of a chunked body, bounded like the head.
        self._trailer_bytes += len(name) + len(value) + 4
        if self._trailer_bytes <= self._head_limit:
            self._trailers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._ended is not None:
            return
        self._in_head = False
        parser = self._parser
        status = parser.get_status_code()  # type: ignore[union-attr]
        headers, chunked, length = http.split_response(self._headers)
        self._headers = []
        reason, self._reason = self._reason, b""
        owner = self.owner
        if owner is None:
            return
        interim = 100 <= status < 200 and status != 101
        if not interim and self._head_only:
            # A response to HEAD has no body whatever its headers say; the
            # parser cannot be told so, so the cycle ends here.
            self._skip_body = True
        owner.on_response_head(status, reason, headers, chunked, length)
        if self._skip_body and self.owner is owner:
            # The parser would wait for the advertised body, so this connection
            # cannot be reused; HEAD is rare enough that a new one is cheaper
            # than guessing where the next response starts.
            self._parser = None
            self._ended = False

    def on_body(self, body: bytes) -> None:
        if self.owner is not None and not self._skip_body and self._ended is None:
            self.owner.on_response_body(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        if self.owner is None or self._ended is not None or parser is None:
            return
        if 100 <= parser.get_status_code() < 200:
            # An interim response (or 101, which ends in HttpParserUpgrade):
            # the final head gets the bound anew, from the next read on (the
            # rest of this read is bounded by the read size).
            self._in_head = True
            self._head_room = self._head_limit
            return
        self._ended = parser.should_keep_alive()


def encode_request(req: Outgoing) -> bytes:
    """The HTTP/1.1 request head for ``req``: the fields of ``upstream_fields``,
    Host where the client's or an annotation's is not among them, then the
    forwarding headers ingressd sets itself."""
    fwd = req.forward
    assert fwd is not None
    client = req.client
    headers, host_override, host, xff, real_ip = upstream_fields(req)
    route = fwd.route
    # proxy-http-version, connection-proxy-header (nginx.tmpl: proxy_http_version,
    # proxy_set_header Connection); a plain route has neither.
    policy = None if route.plain else route.policy
    http10 = policy is not None and policy.proxy_http_version == "1.0"
    parts = [
        req.method,
        b" ",
        fwd.target.encode("latin-1"),
        b" HTTP/1.0\r\n" if http10 else b" HTTP/1.1\r\n",
    ]
    http.serialize_into(parts, headers)
    if req.host is None and host_override is None:
        parts.append(b"Host: " + host + b"\r\n")  # HTTP/1.0 without one: the upstream's name
    # An untrusted peer's X-Real-IP is in the connection's forwarded_tail already.
    tail = client.forwarded_tail
    if client.trusted:
        tail = forwarded_tail(req) + b"\r\nX-Real-IP: " + real_ip
    parts += [
        b"X-Forwarded-For: ",
        xff,
        b"\r\nX-Forwarded-Host: ",
        host,
        tail,
        b"\r\n",
    ]
    if req.request_id:  # none under generate-request-id: false (nginx omits empty values)
        parts += [b"X-Request-ID: ", req.request_id, b"\r\n"]
    if req.proxy_settings().original_uri_header:
        parts += [b"X-Original-URI: ", req.url, b"\r\n"]
    if req.xff:
        # The client's own X-Forwarded-For, as received (nginx.tmpl:
        # X-Original-Forwarded-For $http_x_forwarded_for; nginx omits it when empty).
        parts += [b"X-Original-Forwarded-For: ", req.xff, b"\r\n"]
    # no_body: an error page's request (custom-http-errors), the client's body left out.
    length = req.req_length
    if req.req_chunked:
        if not req.no_body:
            parts.append(b"Transfer-Encoding: chunked\r\n")
    elif length is not None and not req.no_body:
        parts.append(b"Content-Length: " + length + b"\r\n")
    connection = policy.connection_header if policy is not None else None
    if connection is not None:
        # It replaces ingress-nginx's $connection_upgrade, beside an Upgrade too.
        parts += [b"Connection: ", connection, b"\r\n"]
        if req.upgrade:
            parts += [b"Upgrade: ", req.upgrade_value or b"", b"\r\n"]
    elif req.upgrade:
        parts.append(b"Connection: upgrade\r\nUpgrade: " + (req.upgrade_value or b"") + b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def pool_key(endpoint: Endpoint, tls: UpstreamTLS | None) -> PoolKey:
    """Idle connections are shared only by requests wanting the same endpoint *and* TLS."""
    return (endpoint.host, endpoint.port, tls.key if tls is not None else None)


class UpstreamPool:
    """Idle keep-alive connections per (endpoint, TLS identity), most recently used first.

    A plain and a TLS connection to one endpoint, or TLS connections made with
    different Secrets or checks, are never handed out for one another.
    """

    def __init__(
        self,
        connect_timeout: float = 5.0,
        idle_timeout: float = 60.0,
        max_idle_per_endpoint: int = 64,
        max_requests: int = 10_000,
        max_age: float = 3600.0,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle_per_endpoint
        self.max_requests = max_requests
        # upstream-keepalive-time (nginx's keepalive_time): a connection this old is
        # closed once the request it carries is done, never reused again.
        self.max_age = max_age
        self._idle: dict[PoolKey, deque[UpstreamConnection]] = {}
        self._reaper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the one it serves, once known

    def take(self, endpoint: Endpoint, tls: UpstreamTLS | None = None) -> UpstreamConnection | None:
        idle = self._idle.get(pool_key(endpoint, tls))
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    async def connect(
        self, endpoint: Endpoint, timeout: float | None = None, tls: UpstreamTLS | None = None
    ) -> UpstreamConnection:
        """A new connection; with ``tls``, handshaken and checked (ssl.SSLError if not)."""
        loop = asyncio.get_running_loop()
        key = pool_key(endpoint, tls)

        def factory() -> UpstreamConnection:
            return UpstreamConnection(self, endpoint, key)

        if tls is None:
            connecting = loop.create_connection(factory, endpoint.host, endpoint.port)
        else:
            connecting = loop.create_connection(
                factory,
                endpoint.host,
                endpoint.port,
                ssl=tls.context,
                server_hostname=tls.server_hostname(endpoint),
            )
        _, conn = await asyncio.wait_for(connecting, timeout or self.connect_timeout)
        conn.born = loop.time()
        if tls is not None:
            try:
                check_peer(tls, conn.transport.get_extra_info("ssl_object"), endpoint)  # type: ignore[union-attr]
            except Exception:
                conn.abort()
                raise
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection whose response is complete; it may be reused."""
        reusable = conn.reusable
        conn.owner = None
        if not reusable or conn.requests >= self.max_requests or self.max_idle <= 0:
            conn.close()
            return
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        now = CLOCK.now(loop)
        if conn.born >= 0 and now - conn.born >= self.max_age:
            conn.close()
            return
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = deque()
        elif len(idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = now
        idle.append(conn)
        if self._reaper is None:
            self._reaper = loop.call_later(self.idle_timeout / 2, self._reap)

    def forget(self, conn: UpstreamConnection) -> None:
        idle = self._idle.get(conn.key)
        if idle is not None:
            with contextlib.suppress(ValueError):
                idle.remove(conn)

    def _reap(self) -> None:
        self._reaper = None
        loop = asyncio.get_running_loop()
        cutoff = loop.time() - self.idle_timeout
        for key, idle in list(self._idle.items()):
            while idle and idle[0].idle_since <= cutoff:
                idle.popleft().close()
            if not idle:
                del self._idle[key]
        if self._idle:
            self._reaper = loop.call_later(self.idle_timeout / 2, self._reap)

    def idle_count(self) -> int:
        return sum(len(q) for q in self._idle.values())

    def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
