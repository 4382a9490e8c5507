"""The client side of the proxy: an asyncio Protocol over httptools.

``ClientConnection`` owns one client connection (parser, timers, pipelining);
``Exchange`` owns one request and its response. The routing decision is made
by ``routing.decide``; this module only moves bytes.

Built on a raw Protocol rather than aiohttp.web + ClientSession because the
latter costs several times more CPU per proxied request (see the README).
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import os
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from time import perf_counter

import httptools

from ..model.backend import Endpoint
from ..model.policy import ExternalAuth, IPNetwork, LimitConfig
from ..model.table import Route, RouteTable
from ..observe.access_log import AccessLog
from ..observe.stats import RequestStats
from ..policy import ext_auth
from ..policy.cors import HEADER_NAMES as CORS_HEADERS
from ..policy.ewma import EwmaStore
from ..policy.health import EndpointHealth
from ..policy.limits import LimitRegistry, Slot
from ..policy.retry import IDEMPOTENT, REPLAY_LIMIT
from ..policy.tls import served_names
from ..policy.upstream_tls import describe_error as describe_tls_error
from ..routing.decide import Forward, RequestHead, Respond, decide, retarget
from . import http
from .upstream import DEFAULT_HEAD_LIMIT, UpstreamConnection, UpstreamHeadTooLarge, UpstreamPool

log = logging.getLogger("ingressd.proxy")

BUFFER_HIGH = 256 * 1024  # request body held while connecting, before reading pauses
# A connection closed with a request body still coming is drained this long (see close).
LINGER = 2.0
# Upstream timeouts are whole seconds (as ingress-nginx's annotations): checking
# them four times a second is precise enough and costs nothing per request.
SWEEP_INTERVAL = 0.25
# At the connection cap: how many open connections are looked at for an idle
# one (bounded: under a flood of new connections, each must stay cheap), and
# how often the cap is logged.
ROOM_SEARCH = 64
CAP_LOG_EVERY = 10.0
TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 21\r\nConnection: close\r\n\r\ntoo many connections\n"
)


@dataclass(frozen=True, slots=True)
class ProxySettings:
    https_redirect_port: int = 443
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    send_timeout: float = 60.0
    client_header_timeout: float = 60.0
    client_body_timeout: float = 60.0
    keepalive_timeout: float = 75.0
    # ingress-nginx's proxy-body-size default; 0 = unlimited. Larger bodies get 413.
    max_body_size: int = 1024 * 1024
    # ingress-nginx's proxy-buffer-size default: an upstream response head
    # (status line and headers) larger than this is a 502.
    proxy_buffer_size: int = DEFAULT_HEAD_LIMIT
    max_request_line: int = 8192
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    # Passive health: consecutive connection failures that eject an endpoint,
    # and for how long at first (doubling while it keeps failing); 0: never.
    max_fails: int = 3
    fail_timeout: float = 10.0
    # Peers whose X-Forwarded-For is believed (--trusted-proxies)
    trusted_proxies: tuple[IPNetwork, ...] = ()
    # Open client connections per process (--max-connections; ingress-nginx's
    # max-worker-connections default). At the cap an idle keep-alive connection
    # is closed to make room, else the new one gets a 503 and is closed.
    max_connections: int = 16384
    # "json", "plain" or "off" (the command line's default is json)
    access_log: str = "off"


# X-Request-ID when the client sent none: 32 hex digits like nginx's $request_id,
# a random per-process prefix and a counter, so unique without a syscall each.
_ID_PREFIX = os.urandom(8).hex().encode()
_ID_COUNTER = itertools.count(int.from_bytes(os.urandom(4)))


def new_request_id() -> bytes:
    return b"%b%016x" % (_ID_PREFIX, next(_ID_COUNTER))


class ProxyState:
    """What every connection shares: the live table, the pool, the settings."""

    def __init__(self, table: RouteTable, settings: ProxySettings) -> None:
        self.table = table  # replaced whole on every rebuild: one atomic store
        self.settings = settings
        self.pool = UpstreamPool(connect_timeout=settings.connect_timeout)
        self.connections: set[ClientConnection] = set()
        self.listening = False  # the proxy ports are open
        self.draining = False  # shutting down: no new keep-alive
        # limit-* counters by Ingress: they outlive the tables (Controller prunes them)
        self.limits = LimitRegistry()
        # load-balance: ewma response-time averages by endpoint: they outlive the tables
        self.ewma = EwmaStore()
        # passive health: failing endpoints by address; outlives the tables too
        self.health = EndpointHealth(settings.max_fails, settings.fail_timeout)
        self.auth = ext_auth.AuthClient()  # auth-url subrequests
        # Counted per request, read at scrape time (observe/stats.py, observe/metrics.py)
        self.stats = RequestStats()
        self.access_log = AccessLog(settings.access_log) if settings.access_log != "off" else None
        # Exchanges waiting on an upstream, checked for timeouts by one sweep
        # every SWEEP_INTERVAL rather than a timer per request.
        self.waiting: set[Exchange] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._cap_logged = -CAP_LOG_EVERY  # when the connection cap was last logged

    def make_room(self) -> bool:
        """At the connection cap: close an idle keep-alive connection, if one of
        the first few looked at is idle (a client sees the same as after its
        keep-alive timeout). False when none is: the new connection is refused."""
        now = time.monotonic()
        if now - self._cap_logged >= CAP_LOG_EVERY:
            self._cap_logged = now
            log.warning(
                "%d client connections open, the --max-connections of this process: "
                "closing idle ones, refusing new ones with 503 while none is idle",
                len(self.connections),
            )
        for conn in itertools.islice(self.connections, ROOM_SEARCH):
            if conn.idle:
                conn.close()
                self.connections.discard(conn)
                return True
        return False

    def watch(self, ex: Exchange) -> None:
        self.waiting.add(ex)
        if self._sweeper is None:
            loop = ex.client.loop
            self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for ex in list(self.waiting):
            ex.check_timeout(now)
        self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep, loop) if self.waiting else None

    def protocol_factory(self, tls: bool) -> Callable[[], ClientConnection]:
        return lambda: ClientConnection(self, tls)


# Pause reasons for the client's reading, so several can overlap.
PAUSE_PIPELINE = 1
PAUSE_UPSTREAM = 2
PAUSE_BUFFER = 4

# Client timer phases
IDLE, HEAD, BODY, WAIT = range(4)


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "_deadline",
        "_head_bytes",
        "_paused",
        "_phase",
        "_timer",
        "client_ip",
        "closing",
        "current",
        "done_reading",
        "forwarded_tail",
        "limit_slot",
        "loop",
        "parser",
        "pipeline",
        "reading",
        "server_port",
        "state",
        "tls",
        "tls_names",
        "transport",
        "trusted",
        "tunnel",
    )

    def __init__(self, state: ProxyState, tls: bool) -> None:
        self.state = state
        self.tls = tls
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = ""
        # X-Forwarded-Port/-Proto and X-Real-IP: the same for every request of
        # the connection, so serialised once.
        self.forwarded_tail = b""
        # The peer is a --trusted-proxies address: its X-Forwarded-For names the client.
        self.trusted = False
        self.tls_names: tuple[str, ...] | None = None  # of the certificate served
        self.server_port = b""
        self.current: Exchange | None = None  # the exchange whose response is next
        self.pipeline: deque[Exchange] = deque()
        self.reading: Exchange | None = None  # the exchange whose request is being parsed
        self.tunnel: UpstreamConnection | None = None
        self.limit_slot: Slot | None = None  # held by a WebSocket tunnel until it closes
        # No more requests are read: the last one said Connection: close, or a
        # bad one follows requests still being answered (RFC 9112 9.6).
        self.done_reading = False
        self.closing = False
        self._paused = 0
        self._head_bytes = 0
        self._phase = IDLE
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- connection lifetime --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        sock = transport.get_extra_info("sockname")
        self.server_port = str(sock[1]).encode() if sock else b""
        if self.tls:
            self.tls_names = served_names(transport)
        trusted = self.state.settings.trusted_proxies
        self.trusted = bool(trusted) and _in_networks(self.client_ip, trusted)
        scheme = b"https" if self.tls else b"http"
        # X-Scheme as ingress-nginx sets it (nginx.tmpl: $pass_access_scheme).
        self.forwarded_tail = (
            b"\r\nX-Forwarded-Port: %b\r\nX-Forwarded-Proto: %b\r\nX-Scheme: %b"
            % (
                self.server_port,
                scheme,
                scheme,
            )
        )
        if not self.trusted:
            # X-Real-IP is the peer for every request of the connection.
            self.forwarded_tail += b"\r\nX-Real-IP: " + self.client_ip.encode()
        state = self.state
        if len(state.connections) >= state.settings.max_connections and not state.make_room():
            self._refuse()
            return
        state.connections.add(self)
        state.stats.accepted += 1
        self._set_phase(IDLE, state.settings.keepalive_timeout)

    def _refuse(self) -> None:
        """Over the connection cap: 503, then a lingering close, as for a bad request."""
        self.closing = True
        transport = self.transport
        transport.write(TOO_MANY_CONNECTIONS)  # type: ignore[union-attr]
        if transport.can_write_eof():  # type: ignore[union-attr]
            transport.write_eof()  # type: ignore[union-attr]
        self.loop.call_later(LINGER, transport.close)  # type: ignore[union-attr]

    @property
    def idle(self) -> bool:
        """Between requests on a keep-alive connection: closing it loses nothing."""
        return (
            self._phase == IDLE
            and self.current is None
            and self.reading is None
            and self.tunnel is None
            and not self.closing
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.state.connections.discard(self)
        if self.limit_slot is not None:
            self.limit_slot.release()
            self.limit_slot = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None
        for ex in (self.current, *self.pipeline):
            if ex is not None:
                ex.abort()
        self.current = None
        self.pipeline.clear()

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        transport = self.transport
        reading = self.reading
        if reading is None or (reading.head_done and not reading.has_body()):
            # Nothing more can come from the client that it expects read: a
            # request without a body ends with its head (the parser reports the
            # end just after). Lingering here held TLS connections, which
            # cannot half-close, open LINGER seconds after every answer.
            transport.close()  # type: ignore[union-attr]
            return
        # The client may still be sending a body that was not read. Closing with
        # unread data makes the kernel reset the connection, which can destroy
        # the response before the client reads it; so, like nginx's lingering
        # close, stop writing, discard what still comes, and close on the
        # client's EOF or after LINGER seconds.
        if transport.can_write_eof():  # type: ignore[union-attr]
            transport.write_eof()  # type: ignore[union-attr]
        transport.resume_reading()  # type: ignore[union-attr]
        self.loop.call_later(LINGER, transport.close)  # type: ignore[union-attr]

    def shutdown(self) -> None:
        """Close when idle; otherwise finish the current response, then close.

        A WebSocket (or other upgraded) tunnel is left open for the grace period.
        """
        if self.tunnel is not None:
            return
        if self.current is None and self.reading is None:
            self.close()
        else:
            for ex in (self.current, *self.pipeline):
                if ex is not None:
                    ex.keep_alive = False

    # -- flow control ------------------------------------------------------------

    def pause(self, reason: int) -> None:
        if not self._paused and not self.closing:
            self.transport.pause_reading()  # type: ignore[union-attr]
        self._paused |= reason

    def resume(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and not self.closing:
                self.transport.resume_reading()  # type: ignore[union-attr]

    def pause_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.transport.pause_reading()  # type: ignore[union-attr]
        elif self.current is not None:
            self.current.client_paused(True)

    def resume_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.transport.resume_reading()  # type: ignore[union-attr]
        elif self.current is not None:
            self.current.client_paused(False)

    # -- timers --------------------------------------------------------------------
    # One timer per connection, moved lazily: phases only push the deadline, and
    # the timer re-arms itself when it fires early, so there is no per-request
    # timer churn.

    def _set_phase(self, phase: int, timeout: float) -> None:
        self._phase = phase
        self._deadline = self.loop.time() + timeout
        if self._timer is not None and self._timer.when() > self._deadline:
            # A shorter phase (header after idle) must not wait for the longer one.
            self._timer.cancel()
            self._timer = None
        if self._timer is None:
            self._timer = self.loop.call_at(self._deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closing or self._phase == WAIT:
            return
        now = self.loop.time()
        if self._paused and self._phase == BODY:
            # Reading is paused by ingressd itself (backpressure, pipelining):
            # the client is not the one being slow.
            self._deadline = now + self.state.settings.client_body_timeout
        if now < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._on_timer)
            return
        if self._phase == IDLE:
            self.close()
        elif self._phase == HEAD:
            self._reject(408, "request header timeout")
        else:  # BODY: the client stopped sending its request body
            self._reject(408, "request body timeout")

    def _reject(self, status: int, reason: str) -> None:
        """Answer an unusable request and close: nothing is forwarded."""
        if self.closing or self.done_reading:
            return
        current = self.current
        if current is not None and current is not self.reading and current.request_complete:
            # Earlier requests are being answered: they get their responses
            # first, then this error, then the connection closes.
            self.reading = None
            self.done_reading = True
            self.pause(PAUSE_PIPELINE)
            failed = Exchange(self)
            failed.rejection = (status, reason)
            self.pipeline.append(failed)
            return
        if self.current is None or not self.current.response_started:
            body = f"{status} {HTTPStatus(status).phrase}: {reason}\n"
            data = http.local_response(status, body.encode(), keep_alive=False)
            self.transport.write(data)  # type: ignore[union-attr]
            answered = self.reading or self.current or Exchange(self)
            if not answered.logged:
                answered.sent = len(data)
                answered.record(status)
        for ex in (self.current, *self.pipeline):
            if ex is not None:
                ex.abort()
        self.current = None
        self.pipeline.clear()
        self.close()

    # -- bytes in ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        if self.closing:
            return  # lingering: discarded
        if self.current is not None and self.current.upgrading:
            self.current.client_tail(data)
            return
        if self.done_reading:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            ex = self.current
            if ex is not None and ex.upgrading:
                ex.client_tail(data[offset:])
            return
        except httptools.HttpParserError as exc:
            reject = exc.__context__
            if isinstance(reject, _StopReading):
                return
            if isinstance(reject, _Reject):
                self._reject(*reject.args)
            else:
                self._reject(400, f"malformed request ({exc})")
            return
        if self._phase == HEAD:
            # httptools holds an incomplete header line internally, beyond the
            # reach of the callbacks: bound what a head may take in bytes.
            self._head_bytes += len(data)
            settings = self.state.settings
            if self._head_bytes > settings.max_request_line + settings.max_header_bytes:
                self._reject(431, "request header fields too large")

    def eof_received(self) -> bool | None:
        if self.closing:
            return False  # the end of a lingering close
        if self.reading is not None:
            # A request cut short (its body or head incomplete) can never be
            # finished: drop it and its upstream now rather than at a timeout.
            for ex in (self.current, *self.pipeline, self.reading):
                if ex is not None:
                    ex.abort()
            self.current = self.reading = None
            self.pipeline.clear()
            self.closing = True
            return False
        # A client that half-closes after its request still gets the response,
        # then the connection closes.
        if self.current is None:
            return False
        for ex in (self.current, *self.pipeline):
            ex.keep_alive = False
        return True

    # -- httptools callbacks: record, then act once the head is complete ------------------

    def on_message_begin(self) -> None:
        self.reading = Exchange(self)
        self._head_bytes = 0
        self._set_phase(HEAD, self.state.settings.client_header_timeout)

    def on_url(self, url: bytes) -> None:
        ex = self.reading
        ex.url += url  # type: ignore[union-attr]
        if len(ex.url) > self.state.settings.max_request_line:  # type: ignore[union-attr]
            raise _Reject(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.reading
        if ex is None or ex.head_done:
            return  # trailers of a chunked body: not forwarded
        ex.header_count += 1
        ex.header_bytes += len(name) + len(value) + 4
        settings = self.state.settings
        if ex.header_count > settings.max_headers or ex.header_bytes > settings.max_header_bytes:
            raise _Reject(431, "too many or too large request headers")
        ex.add_header(name, value)

    def on_headers_complete(self) -> None:
        ex = self.reading
        parser = self.parser
        ex.method = parser.get_method()  # type: ignore[union-attr]
        version = parser.get_http_version()  # type: ignore[union-attr]
        if version != "1.1" and version != "1.0":
            if version.startswith("0."):  # no version at all: HTTP/0.9's bare request line
                raise _Reject(400, "malformed request line")
            raise _Reject(505, f"HTTP/{version} is not supported here (HTTP/1.0 and 1.1 are)")
        ex.http10 = version == "1.0"
        ex.keep_alive = parser.should_keep_alive() and not self.state.draining  # type: ignore[union-attr]
        if ex.upgrade_value is not None and parser.should_upgrade():  # type: ignore[union-attr]
            if ex.has_body():
                # Its body would be taken for bytes of the new protocol.
                raise _Reject(400, "an Upgrade request cannot have a body")
            if ex.upgrade_value.strip().lower() == b"websocket":
                ex.upgrade = True
            else:
                # Only WebSocket is tunnelled: an h2c (or other) tunnel would let
                # a client send requests that routing and auth never see. The
                # request is answered as a plain one, and the connection closed
                # since the parser is past it.
                ex.upgrade_value = None
                ex.keep_alive = False
        ex.head_done = True
        error = ex.validate()
        if error is not None:
            raise _Reject(*error)
        self._set_phase(BODY, self.state.settings.client_body_timeout)
        if self.current is None:
            self.current = ex
            ex.begin()
        else:
            # A pipelined request waits its turn; stop reading until it comes.
            self.pipeline.append(ex)
            self.pause(PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        self._deadline = self.loop.time() + self.state.settings.client_body_timeout
        self.reading.request_body(body)  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        ex = self.reading
        self.reading = None
        self._phase = WAIT
        if ex is not None:
            ex.request_done()
            if not ex.keep_alive:
                # Whatever follows a request that ends the connection is ignored
                # (RFC 9112 9.6), not parsed as more requests.
                self.done_reading = True
                raise _StopReading

    # -- exchanges report back ---------------------------------------------------------

    def exchange_done(self, ex: Exchange) -> None:
        if ex is not self.current:
            return
        self.current = None
        if not ex.keep_alive or self.closing:
            self.close()
            return
        if self.pipeline:
            nxt = self.pipeline.popleft()
            self.current = nxt
            if not self.pipeline and not self.done_reading:
                self.resume(PAUSE_PIPELINE)
            nxt.begin()
        elif self.reading is None:
            self._set_phase(IDLE, self.state.settings.keepalive_timeout)

    def start_tunnel(self, upstream: UpstreamConnection) -> None:
        self.tunnel = upstream
        self.current = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._paused = 0
        self.transport.resume_reading()  # type: ignore[union-attr]


def _in_networks(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


class _Reject(Exception):
    """Raised inside a parser callback to stop parsing and answer an error."""


class _StopReading(Exception):
    """Raised inside a parser callback to stop parsing: the rest is ignored."""


class Exchange:
    """One request and its response."""

    __slots__ = (
        "_body_buf",
        "_buffered",
        "_connect_task",
        "_retried",
        "activity",
        "attempts",
        "auth_cookies",
        "auth_headers",
        "body_limit",
        "body_seen",
        "client",
        "client_writing_paused",
        "conn_tokens",
        "finished",
        "first_try_at",
        "forward",
        "head_done",
        "header_bytes",
        "header_count",
        "headers",
        "host",
        "host_count",
        "http10",
        "keep_alive",
        "lb_start",
        "limit_slot",
        "logged",
        "method",
        "origin",
        "pending",
        "read_timeout",
        "rejection",
        "replay",
        "replay_size",
        "req_chunked",
        "req_length",
        "req_te",
        "request_complete",
        "request_id",
        "resp_chunked",
        "resp_close_delimited",
        "response_started",
        "route",
        "send_paused_at",
        "send_timeout",
        "sent",
        "sent_body",
        "started",
        "status",
        "tried",
        "up_connect",
        "up_start",
        "upgrade",
        "upgrade_value",
        "upgrading",
        "upstream",
        "url",
        "xff",
    )

    def __init__(self, client: ClientConnection) -> None:
        self.client = client
        # For metrics and the access log: from the first byte of the request;
        # the status and bytes sent; the route of a local answer; the last
        # try's start and connect time (0: no upstream tried).
        self.started = perf_counter()
        self.status = 0
        self.sent = 0
        self.route: Route | None = None
        self.up_start = 0.0
        self.up_connect = 0.0
        self.logged = False  # counted (and logged) once, when it ends
        self.url = b""
        self.method = b""
        self.headers: http.Headers = []
        self.host: bytes | None = None
        self.host_count = 0
        self.xff: bytes | None = None
        self.request_id: bytes | None = None
        self.origin: bytes | None = None
        self.body_limit = 0  # bytes allowed in the request body, 0 = any
        self.body_seen = 0
        self.read_timeout = self.send_timeout = 0.0  # set per route in start()
        self.conn_tokens: set[bytes] | None = None
        self.upgrade_value: bytes | None = None
        self.req_chunked = False
        self.req_length: bytes | None = None
        self.req_te: bytes | None = None  # Transfer-Encoding as received, lines joined
        self.header_count = 0
        self.header_bytes = 0
        self.head_done = False
        self.http10 = False
        self.keep_alive = True
        self.upgrade = False
        self.upgrading = False
        self.request_complete = False
        self.forward: Forward | None = None
        self.upstream: UpstreamConnection | None = None
        self._body_buf: list[bytes] = []
        self._buffered = 0
        self._connect_task: asyncio.Task | None = None
        self._retried = False
        self.activity = 0.0
        self.send_paused_at: float | None = None
        self.sent_body = False
        self.response_started = False
        self.resp_chunked = False
        self.resp_close_delimited = False
        self.client_writing_paused = False
        self.finished = False
        # A limit-connections place, released once when the exchange ends (_finish/abort).
        self.limit_slot: Slot | None = None
        # load-balance: ewma routes: when the upstream was asked (connect included),
        # until its response time is recorded.
        self.lb_start: float | None = None
        # Response bytes not yet written to the client: a head waits for the body
        # that usually arrives in the same read, so small responses cost one send.
        self.pending: list[bytes] = []
        # auth-url: headers for the upstream request and cookies for the response
        self.auth_headers: tuple[tuple[bytes, bytes], ...] = ()
        self.auth_cookies: tuple[bytes, ...] = ()
        # (status, reason) when this stands for a request that could not be
        # read, answered in its turn after the requests before it
        self.rejection: tuple[int, str] | None = None
        # proxy-next-upstream: the endpoints tried so far, when the first try
        # began, and the body bytes sent (None once too large to send again).
        self.attempts = 0
        self.tried: list[Endpoint] = []
        self.first_try_at = 0.0
        self.replay: list[bytes] | None = []
        self.replay_size = 0

    # -- request head --------------------------------------------------------------------

    def add_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname in http.HOP_BY_HOP or lname.startswith(b"proxy-"):
            if lname == b"connection":
                self.conn_tokens = (self.conn_tokens or set()) | http.connection_tokens(value)
            elif lname == b"upgrade":
                self.upgrade_value = value
            elif lname == b"transfer-encoding":
                self.req_chunked = True
                self.req_te = value if self.req_te is None else self.req_te + b", " + value
            elif lname == b"content-length":
                self.req_length = value.strip()
            return
        if lname in http.OVERWRITTEN:
            return
        if lname == b"host":
            self.host = value
            self.host_count += 1
        elif lname == b"x-forwarded-for":
            self.xff = value if self.xff is None else self.xff + b", " + value
            return
        elif lname == b"x-request-id":
            self.request_id = value
            return
        elif lname == b"origin":
            self.origin = value
        self.headers.append((name, value))

    def has_body(self) -> bool:
        """Whether the request announced a body (chunked, or a non-zero Content-Length)."""
        return self.req_chunked or self.req_length not in (None, b"0")

    def real_ip(self) -> str:
        """The client's address: the peer's, or, behind --trusted-proxies, the
        rightmost X-Forwarded-For address that is not a trusted proxy (as nginx's
        real_ip_recursive)."""
        client = self.client
        if not client.trusted or not self.xff:
            return client.client_ip
        trusted = client.state.settings.trusted_proxies
        found = client.client_ip
        for part in reversed(self.xff.split(b",")):
            try:
                addr = ipaddress.ip_address(part.strip().decode("latin-1"))
            except ValueError:
                break  # garbage: keep the last address that made sense
            found = str(addr)
            if not any(addr in net for net in trusted):
                break
        return found

    def validate(self) -> tuple[int, str] | None:
        if self.host_count > 1:
            return 400, "more than one Host header"
        if self.req_te is not None and self.http10:
            # HTTP/1.0 has no chunked coding; such a message cannot be framed safely.
            return 400, "Transfer-Encoding in an HTTP/1.0 request"
        url = self.url
        if self.method != b"CONNECT" and not url.startswith(b"/") and url != b"*":
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                return 400, "invalid request target"
            if not parsed.host:
                return 400, "absolute-form request target without a host"
        if self.host is None and not self.http10 and not self.url.startswith(b"http"):
            return 400, "missing Host header"
        if self.method == b"CONNECT":
            return 405, "CONNECT is not supported"
        if self.req_te is not None and self.req_te.strip().lower() != b"chunked":
            # httptools reports other codings only after on_headers_complete, when
            # the head may already be on a pooled upstream connection; and the
            # body is forwarded re-chunked, which would drop the other codings.
            te = self.req_te.decode("latin-1")
            return 400, f"Transfer-Encoding {te!r} is not supported (only chunked)"
        return None

    def _head(self) -> RequestHead:
        url = self.url
        host = self.host or b""
        if url.startswith(b"/"):
            path, _, query = url.partition(b"?")
        elif url == b"*":
            path, query = b"*", b""
        else:
            # absolute-form: its authority takes precedence over Host (RFC 9112 3.2.2)
            parsed = httptools.parse_url(url)
            host = parsed.host or host
            if parsed.port:
                host += b":%d" % parsed.port
            path, query = parsed.path or b"/", parsed.query or b""
            self.host = host
            self.url = path + (b"?" + query if query else b"")
            # The upstream must see the host the request was routed by, not the
            # Host header it replaced.
            self.headers = [(b"Host", host)] + [
                (n, v) for n, v in self.headers if n.lower() != b"host"
            ]
        return RequestHead(
            method=self.method.decode("latin-1"),
            host=host.decode("latin-1"),
            path=path.decode("latin-1"),
            query=query.decode("latin-1"),
            client_ip=self.real_ip(),
            tls=self.client.tls,
            origin=self.origin.decode("latin-1") if self.origin is not None else None,
            headers=self.headers,
            tls_names=self.client.tls_names,
        )

    # -- running the exchange ---------------------------------------------------------------

    def begin(self) -> None:
        """Start, and answer 500 rather than leave the connection hanging on a bug."""
        if self.rejection is not None:
            status, reason = self.rejection
            self.keep_alive = False
            self.request_complete = True
            self.respond(status, f"{status} {HTTPStatus(status).phrase}: {reason}\n")
            return
        try:
            self.start()
        except Exception:
            log.exception("internal error handling %r", self.url[:200])
            self.keep_alive = False
            if self.response_started:
                self.abort()
                self.client.close()
            else:
                self.respond(500, "500 Internal Server Error\n")

    def start(self) -> None:
        client = self.client
        state = client.state
        settings = state.settings
        action = decide(
            state.table, self._head(), settings.https_redirect_port, state.ewma, state.health
        )
        if isinstance(action, Respond):
            self.route = action.route
            self.respond(action.status, action.body, action.location, action.headers)
            return
        self.forward = action
        policy = action.route.policy
        limit = policy.proxy_body_size
        self.body_limit = settings.max_body_size if limit is None else limit
        length = self.req_length
        if (
            self.body_limit
            and length is not None
            and length.isdigit()
            and (int(length) > self.body_limit)
        ):
            self._too_large()
            return
        # After the Content-Length check (nginx's client_max_body_size) as in nginx.
        if policy.limits is not None and not self._admit(action.route.ingress, policy.limits):
            return
        self.read_timeout = policy.proxy_read_timeout or settings.read_timeout
        self.send_timeout = policy.proxy_send_timeout or settings.send_timeout
        self.upgrading = self.upgrade
        if policy.external_auth is not None:
            # The body waits in _body_buf (reading pauses when it grows) until
            # the auth service has answered.
            self._connect_task = client.loop.create_task(self._authorize(policy.external_auth))
            return
        self._go()

    def _go(self) -> None:
        """Send the request to the chosen endpoint: a pooled connection, else a new one."""
        fwd = self.forward
        assert fwd is not None
        client = self.client
        self.attempts += 1
        self.tried.append(fwd.endpoint)
        policy = fwd.route.policy
        if self.attempts == 1 and policy.next_upstream.time_limit:
            self.first_try_at = client.loop.time()
        if policy.load_balance == "ewma":
            self.lb_start = client.loop.time()
        self.up_start = perf_counter()
        self.up_connect = 0.0
        conn = client.state.pool.take(fwd.endpoint, fwd.tls)
        if conn is not None:
            self._attach(conn)
        else:
            self._connect_task = client.loop.create_task(self._connect())

    async def _authorize(self, auth: ExternalAuth) -> None:
        client = self.client
        settings = client.state.settings
        policy = self.forward.route.policy  # type: ignore[union-attr]
        if self.request_id is None:
            # The auth service and the upstream see the same request id.
            self.request_id = new_request_id()
        req = ext_auth.AuthRequest(
            method=self.method.decode("latin-1"),
            scheme="https" if client.tls else "http",
            host=(self.host or b"").decode("latin-1"),
            request_uri=self.url.decode("latin-1"),
            client_ip=self.real_ip(),
            server_port=client.server_port.decode(),
            request_id=self.request_id.decode("latin-1"),
            headers=self.headers,
        )
        try:
            outcome = await ext_auth.check(
                client.state.auth.session(),
                auth,
                req,
                policy.proxy_connect_timeout or settings.connect_timeout,
                self.read_timeout,
            )
        except asyncio.CancelledError:
            return
        self._connect_task = None
        if self.finished:
            return
        if not outcome.allowed:
            cookies = tuple((b"Set-Cookie", c) for c in outcome.cookies)
            self.respond(outcome.status, outcome.body, outcome.location, outcome.headers + cookies)
            return
        self.auth_headers = outcome.upstream_headers
        self.auth_cookies = outcome.cookies
        self._go()

    def _auth_cookies(self, status: int) -> list[tuple[bytes, bytes]]:
        """The auth service's Set-Cookie for a response with ``status``, as nginx's add_header."""
        auth = self.forward.route.policy.external_auth  # type: ignore[union-attr]
        if auth is None or not (auth.always_set_cookie or status in ext_auth.COOKIE_STATUSES):
            return []
        return [(b"Set-Cookie", c) for c in self.auth_cookies]

    def _admit(self, ingress: str, limits: LimitConfig) -> bool:
        """limit-rps/-rpm/-connections: False once the 503 is answered."""
        client = self.client
        limiter = client.state.limits.get(ingress, limits)
        verdict = limiter.admit(self.real_ip(), client.loop.time())
        if isinstance(verdict, str):
            self.respond(503, verdict)
            return False
        self.limit_slot = verdict
        return True

    async def _connect(self) -> None:
        assert self.forward is not None
        where = f"{self.forward.backend.name} ({self.forward.endpoint})"
        try:
            timeout = self.forward.route.policy.proxy_connect_timeout
            conn = await self.client.state.pool.connect(
                self.forward.endpoint, timeout, self.forward.tls
            )
        except asyncio.CancelledError:
            return
        except TimeoutError:  # before OSError, of which it is one
            failure = ("timeout", 504, f"504 Gateway Timeout: connecting to {where} timed out")
            error = "connect_timeout"
        except ssl.SSLError as exc:  # the handshake, or check_peer after it
            fwd = self.forward
            failure = (
                "error",
                502,
                f"502 Bad Gateway: TLS to upstream {fwd.endpoint} ({fwd.backend.name}) "
                f"failed: {describe_tls_error(exc)}",
            )
            error = "tls"
        except OSError as exc:
            reason = exc.strerror or str(exc)
            failure = ("error", 502, f"502 Bad Gateway: cannot connect to {where}: {reason}")
            error = "connect_error"
        else:
            failure = None
        if failure is not None:
            self._connect_task = None
            self._upstream_error(error)
            self._connect_failed()
            kind, status, text = failure
            if not self._retry(kind, sent=False):
                self.respond(status, text + self._tries_note() + "\n")
            return
        self._connect_task = None
        self.up_connect = perf_counter() - self.up_start
        self.client.state.health.succeeded(self.forward.endpoint)
        if self.finished:
            conn.close()
            return
        self._attach(conn)

    def _connect_failed(self) -> None:
        self._lb_failed(connect=True)
        fwd = self.forward
        assert fwd is not None
        health = self.client.state.health
        if health.failed(fwd.endpoint):
            log.warning(
                "endpoint %s of %s ejected after %d failed connections; back in %.0f s",
                fwd.endpoint,
                fwd.backend.name,
                health.max_fails,
                health.ejected[fwd.endpoint] - time.monotonic(),
            )

    def _attach(self, conn: UpstreamConnection) -> None:
        self.upstream = conn
        fwd = self.forward
        head_limit = fwd.route.policy.proxy_buffer_size if fwd is not None else None
        conn.begin(
            self,
            self.method == b"HEAD",
            head_limit or self.client.state.settings.proxy_buffer_size,
        )
        loop = self.client.loop
        self.activity = loop.time()
        if self.upgrading:
            # Bytes after an upgrade request belong to the new protocol: they
            # wait for the upstream's 101.
            conn.write(self._request_head())
            self.client.state.watch(self)
            return
        conn.writelines([self._request_head(), *self._body_buf])
        if self._body_buf:
            self.sent_body = True
            for part in self._body_buf:
                self._keep_for_replay(part)
        self._body_buf = []
        if self._buffered:
            self._buffered = 0
            self.client.resume(PAUSE_BUFFER)
        if self.request_complete and self.req_chunked:
            conn.write(http.LAST_CHUNK)
        self.client.state.watch(self)

    def _request_head(self) -> bytes:
        fwd = self.forward
        assert fwd is not None
        client = self.client
        headers = self.headers
        if self.conn_tokens:
            # Headers the client's Connection names are hop-by-hop (RFC 9110
            # 7.6.1), except what routing used and what ingressd sets.
            named = self.conn_tokens - http.UNNOMINABLE
            if named:
                headers = http.drop_named(headers, named)
        peer = client.client_ip.encode("latin-1")
        host = self.host if self.host is not None else fwd.endpoint.host.encode()
        send_host = self.host is None
        extra = fwd.request_headers
        if self.auth_headers:
            extra = (*extra, *self.auth_headers)
        if extra:
            # Annotation headers (upstream-vhost, x-forwarded-prefix) and the
            # auth service's (auth-response-headers) replace the client's.
            names = {name.lower() for name, _ in extra}
            # An empty value removes the header (nginx's proxy_set_header NAME "").
            headers = [*http.drop_named(headers, names), *(h for h in extra if h[1])]
            send_host = send_host and b"host" not in names
        parts = [
            self.method,
            b" ",
            fwd.target.encode("latin-1"),
            b" HTTP/1.1\r\n",
            http.serialize(headers),
        ]
        if send_host:
            parts.append(b"Host: " + host + b"\r\n")
        if client.trusted:
            # A trusted proxy's chain goes on with the peer added; X-Real-IP is the client.
            xff = (self.xff + b", " + peer) if self.xff else peer
            tail = client.forwarded_tail + b"\r\nX-Real-IP: " + self.real_ip().encode("latin-1")
        else:
            # Anyone else's X-Forwarded-For is replaced, as ingress-nginx does by default.
            xff, tail = peer, client.forwarded_tail
        request_id = self.request_id
        if request_id is None:
            # Kept: retries, the access log and the upstream all see the same id.
            request_id = self.request_id = new_request_id()
        parts += [
            b"X-Forwarded-For: ",
            xff,
            b"\r\nX-Forwarded-Host: ",
            host,
            tail,
            b"\r\nX-Request-ID: ",
            request_id,
            b"\r\n",
        ]
        if self.xff:
            # The client's own X-Forwarded-For, as received (nginx.tmpl:
            # X-Original-Forwarded-For $http_x_forwarded_for; nginx omits it when empty).
            parts += [b"X-Original-Forwarded-For: ", self.xff, b"\r\n"]
        if self.req_chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        elif self.req_length is not None:
            parts.append(b"Content-Length: " + self.req_length + b"\r\n")
        if self.upgrade:
            parts.append(b"Connection: upgrade\r\nUpgrade: " + self.upgrade_value + b"\r\n")  # type: ignore[operator]
        parts.append(b"\r\n")
        return b"".join(parts)

    # -- request body ---------------------------------------------------------------------

    def request_body(self, data: bytes) -> None:
        if self.finished:
            return  # answered already (local response): the body is discarded
        self.body_seen += len(data)
        if self.body_limit and self.body_seen > self.body_limit:
            self._too_large()
            return
        conn = self.upstream
        if conn is None:
            self._body_buf.append(http.chunk(data) if self.req_chunked else data)
            self._buffered += len(data)
            if self._buffered > BUFFER_HIGH:
                self.client.pause(PAUSE_BUFFER)
            return
        self.sent_body = True
        self.activity = self.client.loop.time()
        if self.req_chunked:
            data = http.chunk(data)
        conn.write(data)
        if self.replay is not None:
            self._keep_for_replay(data)

    def request_done(self) -> None:
        self.request_complete = True
        if self.finished:
            self.client.exchange_done(self)
            return
        if self.upstream is not None and self.req_chunked:
            self.upstream.write(http.LAST_CHUNK)

    def client_tail(self, data: bytes) -> None:
        """Bytes after an upgrade request, held until the upstream agrees."""
        if data:
            self._body_buf.append(data)
            self._buffered += len(data)
            if self._buffered > BUFFER_HIGH:
                self.client.pause(PAUSE_BUFFER)

    # -- upstream response ---------------------------------------------------------------

    def on_response_head(
        self, status: int, reason: bytes, headers: http.Headers, chunked: bool, length: bool
    ) -> None:
        client = self.client
        self.activity = client.loop.time()
        if self.lb_start is not None:
            # ewma: the time from asking the upstream to its response head
            client.state.ewma.update(self.forward.endpoint, self.activity - self.lb_start)  # type: ignore[union-attr]
            self.lb_start = None
        if 100 <= status < 200 and status != 101:
            if not self.http10:
                client.transport.write(http.status_line(status, reason) + b"\r\n")  # type: ignore[union-attr]
            return
        if status == 101 and not self.upgrade:
            # An upgrade nobody asked for: refuse rather than desynchronise.
            self._upstream_error("invalid_response")
            self._upstream_failed("switched protocols without being asked")
            return
        statuses = self.forward.route.policy.next_upstream.statuses  # type: ignore[union-attr]
        if statuses and status in statuses and self._retry(f"http_{status}", sent=True):
            return  # this response is dropped with its connection
        self.response_started = True
        self.status = status
        out = http.response_headers(headers)
        extra = self.forward.response_headers if self.forward is not None else ()
        if extra:
            # CORS headers replace the upstream's; others (Set-Cookie) are added.
            if self.forward.route.policy.cors is not None:  # type: ignore[union-attr]
                out = http.drop_named(out, CORS_HEADERS)
            out = [*out, *extra]
        if self.auth_cookies:
            out = [*out, *self._auth_cookies(status)]
        parts = [http.status_line(status, reason), http.date_line(), http.serialize(out)]
        if status == 101:
            parts.append(
                b"Connection: upgrade\r\nUpgrade: " + (self.upgrade_value or b"") + b"\r\n\r\n"
            )
            head = b"".join(parts)
            self.sent = len(head)
            client.transport.write(head)  # type: ignore[union-attr]
            return
        no_body = self.method == b"HEAD" or status in (204, 304)
        if self.upgrading:
            self.upgrading = False
            self.keep_alive = False  # the client's parser is past the upgrade request
        if not no_body:
            if chunked:
                if self.http10:
                    self.resp_close_delimited = True
                else:
                    self.resp_chunked = True
                    parts.append(b"Transfer-Encoding: chunked\r\n")
            elif not length:
                self.resp_close_delimited = True
        if length:
            for name, value in headers:
                if name.lower() == b"content-length":
                    parts.append(b"Content-Length: " + value + b"\r\n")
                    break
        if self.resp_close_delimited or not self.request_complete:
            # An unread request body cannot be skipped safely: close after.
            self.keep_alive = False
        if not self.keep_alive:
            parts.append(b"Connection: close\r\n")
        elif self.http10:
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        head = b"".join(parts)
        self.sent = len(head)
        self.pending.append(head)

    def on_response_body(self, data: bytes) -> None:
        self.activity = self.client.loop.time()
        if self.resp_chunked:
            size = b"%x\r\n" % len(data)
            self.pending += (size, data, b"\r\n")
            self.sent += len(size) + len(data) + 2
        else:
            self.pending.append(data)
            self.sent += len(data)
        if len(self.pending) > 16:
            self.flush()

    def flush(self) -> None:
        """Write what the upstream's last read produced, in one call."""
        if self.pending:
            self.client.transport.writelines(self.pending)  # type: ignore[union-attr]
            self.pending = []

    def on_response_end(self, keep_alive: bool) -> None:
        if self.finished:
            return
        client = self.client
        if self.resp_chunked:
            self.pending.append(http.LAST_CHUNK)
            self.sent += len(http.LAST_CHUNK)
        self.flush()
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            if keep_alive and self.request_complete and not self.upgrade:
                if self.client_writing_paused:
                    conn.transport.resume_reading()  # type: ignore[union-attr]
                client.state.pool.release(conn)
            else:
                conn.close()
        self._finish()
        if self.request_complete or not self.keep_alive:
            client.exchange_done(self)

    def on_upstream_upgraded(self, tail: bytes) -> None:
        conn = self.upstream
        client = self.client
        if conn is None or not self.upgrade:
            return
        # The tunnel keeps the request's limit-connections place until it closes.
        client.limit_slot, self.limit_slot = self.limit_slot, None
        self._finish()
        self.upstream = None
        conn.owner = None
        conn.tunnel = client.transport
        if tail:
            client.transport.write(tail)  # type: ignore[union-attr]
        if self._body_buf:
            conn.writelines(self._body_buf)
            self._body_buf = []
        client.start_tunnel(conn)

    def on_upstream_lost(self, exc: Exception | None) -> None:
        conn = self.upstream
        self.upstream = None
        if self.finished:
            return
        if self.resp_close_delimited:
            self.flush()
            self._finish()
            self.client.exchange_done(self)  # keep_alive is already False
            return
        invalid = isinstance(exc, (httptools.HttpParserError, UpstreamHeadTooLarge))
        if invalid:
            error = "invalid_response"
        elif isinstance(exc, ssl.SSLError):
            error = "tls"
        else:
            error = "reset"
        if self.response_started:
            self._upstream_error(error)
            # Too late for an error status: cut the client off so it sees a
            # truncated response, never a short one that looks complete.
            self._finish()
            self.client.transport.abort()  # type: ignore[union-attr]
            return
        if (
            conn is not None
            and not invalid
            and conn.requests > 1
            and not self._retried
            and not self.sent_body
            and self.method in IDEMPOTENT
        ):
            # A pooled connection the upstream closed while idle: try a new one.
            self._retried = True
            self._cancel_timer()
            self._connect_task = self.client.loop.create_task(self._connect())
            return
        self._upstream_error(error)
        self._lb_failed()
        # nginx counts a head too big for proxy_buffer_size as invalid_header too.
        kind = "invalid_header" if invalid else "error"
        if self._retry(kind, sent=True):
            return
        if isinstance(exc, ssl.SSLError):
            # e.g. an mTLS upstream refusing the client certificate after the handshake
            self._upstream_failed(f"TLS to upstream failed: {describe_tls_error(exc)}")
            return
        reason = f"{exc}" if exc else "connection closed before a response"
        self._upstream_failed(reason + self._tries_note())

    def _upstream_failed(self, reason: str) -> None:
        self._lb_failed()
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.abort()
        self.respond(502, f"502 Bad Gateway: {self._upstream_name()}: {reason}\n")

    # -- proxy-next-upstream ---------------------------------------------------------------

    def _retry(self, kind: str, sent: bool) -> bool:
        """Send the request to the next endpoint if proxy-next-upstream allows; else False.

        ``sent``: whether the failed try had sent the request (not just failed to connect).
        """
        fwd = self.forward
        if fwd is None or self.finished or self.response_started:
            return False
        rule = fwd.route.policy.next_upstream
        if not (kind.startswith("http_") or rule.covers(kind)):
            return False
        if rule.tries and self.attempts >= rule.tries:
            return False
        loop = self.client.loop
        if rule.time_limit and loop.time() - self.first_try_at >= rule.time_limit:
            return False
        if sent:
            if self.method not in IDEMPOTENT and not rule.non_idempotent:
                return False
            if self.sent_body and self.replay is None:
                return False  # the body is gone: it cannot be sent again
        nxt = retarget(fwd, self.tried, self.client.tls, self.client.state.health)
        if nxt is None:
            return False
        self.client.state.stats.retry(fwd.route.ingress, fwd.backend.name, kind)
        log.warning(
            "%s %s: %s from %s (%s), trying %s (try %d)",
            self.method.decode("latin-1"),
            self.url.decode("latin-1"),
            kind,
            fwd.endpoint,
            fwd.backend.name,
            nxt.endpoint,
            self.attempts + 1,
        )
        self._cancel_timer()
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.abort()
        if self.sent_body:
            # Everything sent so far goes again; what the client sends next follows.
            self._body_buf = self.replay or []
            self.sent_body = False
        self.replay, self.replay_size = [], 0
        if self.send_paused_at is not None:
            self.send_paused_at = None
            self.client.resume(PAUSE_UPSTREAM)
        self.forward = nxt
        self._go()
        return True

    def _keep_for_replay(self, data: bytes) -> None:
        self.replay_size += len(data)
        if self.replay_size > REPLAY_LIMIT:
            self.replay = None
        elif self.replay is not None:
            self.replay.append(data)

    def _tries_note(self) -> str:
        return f" ({self.attempts} tries)" if self.attempts > 1 else ""

    def _lb_failed(self, connect: bool = False) -> None:
        """ewma: a failed connect or exchange counts as a response that took the timeout."""
        if self.lb_start is None or self.forward is None:
            return
        self.lb_start = None
        if connect:
            settings = self.client.state.settings
            penalty = self.forward.route.policy.proxy_connect_timeout or settings.connect_timeout
        else:
            penalty = self.read_timeout
        self.client.state.ewma.update(self.forward.endpoint, penalty)

    def _upstream_error(self, kind: str) -> None:
        fwd = self.forward
        if fwd is not None:
            self.client.state.stats.upstream_error(fwd.route.ingress, fwd.backend.name, kind)

    def _upstream_name(self) -> str:
        fwd = self.forward
        return f"{fwd.backend.name} ({fwd.endpoint})" if fwd else "upstream"

    def on_upstream_paused(self, paused: bool) -> None:
        if paused:
            self.send_paused_at = self.client.loop.time()
            self.client.pause(PAUSE_UPSTREAM)
        else:
            self.send_paused_at = None
            self.client.resume(PAUSE_UPSTREAM)

    def client_paused(self, paused: bool) -> None:
        self.client_writing_paused = paused
        conn = self.upstream
        if conn is not None and conn.transport is not None:
            if paused:
                conn.transport.pause_reading()
            else:
                conn.transport.resume_reading()

    # -- timeouts -------------------------------------------------------------------

    def check_timeout(self, now: float) -> None:
        """Called by the state's sweep while this exchange waits on its upstream."""
        if self.finished:
            self.client.state.waiting.discard(self)
        elif self.send_paused_at is not None and now - self.send_paused_at >= self.send_timeout:
            self._timed_out("sending the request to the upstream timed out", "send_timeout")
        elif self.client_writing_paused:
            # The client is slow to read; the upstream is not at fault.
            self.activity = now
        elif now - self.activity >= self.read_timeout:
            self._timed_out("the upstream did not answer in time", "read_timeout")

    def _too_large(self) -> None:
        """413 before the upstream answers; after that, only cutting off is left."""
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.abort()
        if self._connect_task is not None:
            self._connect_task.cancel()
            self._connect_task = None
        self.keep_alive = False  # the rest of the body is not read
        if self.response_started:
            self._finish()
            self.client.transport.abort()  # type: ignore[union-attr]
            return
        self.respond(
            413,
            f"413 Request Entity Too Large: the body exceeds {self.body_limit} bytes\n",
        )

    def _timed_out(self, reason: str, error: str) -> None:
        self._upstream_error(error)
        self._lb_failed()
        if self._retry("timeout", sent=True):
            return
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.abort()
        if self.response_started:
            self._finish()
            self.client.transport.abort()  # type: ignore[union-attr]
        else:
            note = self._tries_note()
            self.respond(504, f"504 Gateway Timeout: {self._upstream_name()}: {reason}{note}\n")

    def _cancel_timer(self) -> None:
        self.client.state.waiting.discard(self)

    # -- endings ---------------------------------------------------------------------

    def respond(
        self,
        status: int,
        body: str,
        location: str | None = None,
        headers: http.Headers | tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        """Answer with a response generated here."""
        client = self.client
        if self.finished or client.closing:
            return
        if self.upgrade:
            # The client's parser is past an upgrade request that did not happen.
            self.upgrading = False
            self.keep_alive = False
        if not self.request_complete and self.has_body():
            # Reading and discarding the body keeps the connection usable, but a
            # large upload is cheaper to cut off.
            self.keep_alive = False
        if self.auth_cookies:
            headers = (*headers, *self._auth_cookies(status))
        data = http.local_response(
            status,
            body.encode(),
            keep_alive=self.keep_alive,
            location=location,
            head_only=self.method == b"HEAD",
            headers=headers,
        )
        client.transport.write(data)  # type: ignore[union-attr]
        self.status = status
        self.sent = len(data)
        self._finish()
        if self.request_complete or not self.keep_alive:
            client.exchange_done(self)

    def _finish(self) -> None:
        if not self.logged:
            self.record(self.status)
        self.finished = True
        self._cancel_timer()
        if self.limit_slot is not None:
            self.limit_slot.release()
            self.limit_slot = None
        if self._buffered:
            self._buffered = 0
            self._body_buf = []
            self.client.resume(PAUSE_BUFFER)

    def abort(self) -> None:
        """The client went away: drop the upstream side too."""
        if not self.logged and not self.finished and self.head_done:
            # As nginx: 499 for a request whose client left before the answer.
            self.record(self.status if self.response_started else 499)
        self.finished = True
        self._cancel_timer()
        if self.limit_slot is not None:
            self.limit_slot.release()
            self.limit_slot = None
        if self._connect_task is not None:
            self._connect_task.cancel()
            self._connect_task = None
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.abort()

    def record(self, status: int) -> None:
        """Count the request, once, as it ends: metrics, then the access log line."""
        self.logged = True
        end = perf_counter()
        client = self.client
        state = client.state
        fwd = self.forward
        if fwd is not None:
            ingress, backend = fwd.route.ingress, fwd.backend.name
        elif self.route is not None:
            ingress, backend = self.route.ingress, self.route.backend.name
        else:
            ingress = backend = ""
        upstream = end - self.up_start if self.up_start else None
        # The request line as sent ("METHOD URL HTTP/1.x\r\n"), the headers, the body.
        bytes_in = len(self.method) + len(self.url) + 14 + self.header_bytes + self.body_seen
        duration = end - self.started
        state.stats.request(
            ingress,
            backend,
            self.method,
            status,
            duration,
            upstream if self.response_started else None,
            bytes_in,
            self.sent,
        )
        access = state.access_log
        if access is not None:
            if self.request_id is None:
                self.request_id = new_request_id()  # answered here: an id for the log only
            access.write(client.loop, self, status, duration, upstream, bytes_in, ingress, backend)
