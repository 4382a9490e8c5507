"""HTTP/1.1 from clients: one ``ClientConnection`` per connection, over httptools.

It parses request heads (bounded in size and time), hands each to an
``Exchange`` (``exchange.py``), answers pipelined requests in order, frames
each response as HTTP/1.1, closes lingering when a request body may still be
coming, and turns an accepted WebSocket upgrade into a byte tunnel.

Built on a raw Protocol rather than aiohttp.web + ClientSession because the
latter costs several times more CPU per proxied request (see the README).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Final

import httptools

from ..policy.limits import Slot
from . import http, pages
from .client_h2 import H2ClientConnection
from .exchange import PAUSE_PIPELINE, Exchange
from .peer import peer_of, trusted_for
from .state import ProxyState
from .streams import CLOCK, ClientStream, Connection, Outgoing, Tunnel

log: Final = logging.getLogger("ingressd.proxy")

# A connection closed with a request body still coming is drained this long (see close).
LINGER: Final = 2.0
# Over the connection cap: nginx's 503 page, made once (no request was read, so
# neither a Date nor the padding a User-Agent could ask for).
TOO_MANY_CONNECTIONS: Final = (
    http.status_line(503)
    + b"Content-Type: text/html\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
    % len(pages.page(503))
    + pages.page(503)
)


def protocol_factory(
    state: ProxyState, tls: bool, source: str | None = None
) -> Callable[[], ClientConnection]:
    """Client connections for one listener of ``state``'s proxy; ``source``: the
    client's address a PROXY protocol header gave (see peer.py)."""
    return lambda: ClientConnection(state, tls, source)


# Client timer phases
IDLE: Final = 0
HEAD: Final = 1
BODY: Final = 2
WAIT: Final = 3


class ClientConnection(asyncio.Protocol, ClientStream, Connection):
    """One HTTP/1.1 client connection: requests parsed with httptools, answered
    in order (pipelining), the current response framed as HTTP/1.1.

    HTTP/1.1 answers one request at a time, so the connection is the
    ``ClientStream`` of each of its exchanges in turn, and the response's
    framing state is the connection's.
    """

    __slots__ = (
        "_deadline",
        "_head_bytes",
        "_paused",
        "_pending",
        "_phase",
        "_read_ahead",
        "_resp_chunked",
        "_timer",
        "_timer_at",
        "current",
        "done_reading",
        "limit_slot",
        "parser",
        "pipeline",
        "reading",
        "served",
        "source",
        "state",
        "transport",
        "tunnel",
    )

    def __init__(self, state: ProxyState, tls: bool, source: str | None = None) -> None:
        self.state = state
        self.tls = tls
        self.source = source
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
        self.tls_object: object | None = None  # the ssl.SSLObject (client certificates)
        self.server_port = b""
        self.current: Exchange | None = None  # the exchange whose response is next
        self.pipeline: deque[Exchange] = deque()
        self.reading: Exchange | None = None  # the exchange whose request is being parsed
        self.tunnel: Tunnel | None = None
        self.limit_slot: Slot | None = None  # held by a WebSocket tunnel until it closes
        # No more requests are read: the last one said Connection: close, or a
        # bad one follows requests still being answered (RFC 9112 9.6).
        self.done_reading = False
        self.served = 0  # requests read on this connection (keep-alive-requests)
        self.closing = False
        self._paused = 0
        self._head_bytes = 0
        self._phase = IDLE
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # when _timer fires (TimerHandle.when() is a call)
        # The current response: chunked to the client; bytes not written yet (a
        # head waits for the body that usually comes in the same upstream read,
        # so small responses cost one send).
        self._resp_chunked = False
        self._pending: list[bytes] = []
        self._read_ahead = False  # proxy-buffering set the write buffer's limits

    # -- connection lifetime --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.tls and _negotiated_h2(transport):
            # The client chose HTTP/2 by ALPN: the connection is the HTTP/2
            # protocol's from its first byte (this object is dropped).
            h2 = H2ClientConnection(self.state, self.source)
            transport.set_protocol(h2)
            h2.connection_made(transport)
            return
        self.transport = transport  # type: ignore[assignment]
        peer = peer_of(
            transport, self.tls, trusted_for(self.state.settings, self.source), self.source
        )
        self.client_ip = peer.client_ip
        self.server_port = peer.server_port
        self.tls_names = peer.tls_names
        self.tls_object = peer.tls_object
        self.trusted = peer.trusted
        self.forwarded_tail = peer.forwarded_tail
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

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

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

    def pause_body(self, reason: int) -> None:
        if not self._paused and not self.closing:
            self.transport.pause_reading()  # type: ignore[union-attr]
        self._paused |= reason

    def resume_body(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and not self.closing:
                self.transport.resume_reading()  # type: ignore[union-attr]

    def read_ahead(self, high: int, low: int) -> None:
        # The transport's write buffer is what waits for the client: past its
        # high-water mark pause_writing pauses the upstream. 0, 0: asyncio's own.
        transport = self.transport
        if transport is not None:
            if high:
                transport.set_write_buffer_limits(high=high, low=low)
            else:
                transport.set_write_buffer_limits()
        self._read_ahead = high > 0

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
        deadline = self._deadline = self.now() + timeout
        timer = self._timer
        if timer is not None and self._timer_at > deadline:
            # A shorter phase (header after idle) must not wait for the longer one.
            timer.cancel()
            timer = self._timer = None
        if timer is None:
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._on_timer)

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
            self._timer_at = self._deadline
            self._timer = self.loop.call_at(self._deadline, self._on_timer)
            return
        if self._phase == IDLE:
            self.close()
        elif self._phase == HEAD:
            self._timed_out("request header timeout")
        else:  # BODY: the client stopped sending its request body
            self._timed_out("request body timeout")

    def _timed_out(self, reason: str) -> None:
        """client-header-timeout, client-body-timeout: as nginx, no answer. nginx
        ends a timed-out request without sending anything (ngx_http_finalize_request
        terminates on NGX_HTTP_REQUEST_TIME_OUT) and, under ingress-nginx's
        ``reset_timedout_connection on`` (nginx.tmpl), resets the connection; its
        access log has the request as 408, and so has ingressd's."""
        if self.closing or self.done_reading:
            return
        current = self.current
        if current is not None and current is not self.reading and current.request_complete:
            # A pipelined head trickles while an earlier request is answered:
            # that answer goes first, then the connection closes.
            self._reject(408, reason)
            return
        log.info("client %s timed out: %s", self.client_ip, reason)
        timed_out = self.reading or current
        if timed_out is not None and not timed_out.logged:
            timed_out.record(408)
        for ex in (current, *self.pipeline, self.reading):
            if ex is not None:
                ex.abort()
        self.current = self.reading = None
        self.pipeline.clear()
        self.closing = True
        self.abort()

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
            self.pause_body(PAUSE_PIPELINE)
            failed = Exchange(self, self.state)
            failed.rejection = (status, reason)
            self.pipeline.append(failed)
            return
        if self.current is None or not self.current.response_started:
            answered = self.reading or self.current or Exchange(self, self.state)
            # The client gets nginx's page; why, only the log.
            log.debug("client %s: %d: %s", self.client_ip, status, reason)
            page = pages.page(status, pages.wants_padding(answered.headers))
            status = pages.wire_status(status)  # 494: 400
            data = http.local_response(status, page, keep_alive=False)
            self.transport.write(data)  # type: ignore[union-attr]
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
        CLOCK.at = self.loop.time()
        try:
            self._parse(data)
        finally:
            CLOCK.at = -1.0

    def _parse(self, data: bytes) -> None:
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
                self._reject(494, "request header fields too large")

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
        self.reading = Exchange(self, self.state)
        self._head_bytes = 0
        self._set_phase(HEAD, self.state.settings.client_header_timeout)

    def on_url(self, url: bytes) -> None:
        ex = self.reading
        assert ex is not None  # on_message_begin made it
        ex.url += url
        if len(ex.url) > self.state.settings.max_request_line:
            raise _Reject(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.reading
        if ex is None or ex.head_done:
            return  # trailers of a chunked body: not forwarded
        ex.header_count += 1
        ex.header_bytes += len(name) + len(value) + 4
        settings = self.state.settings
        if ex.header_count > settings.max_headers or ex.header_bytes > settings.max_header_bytes:
            # nginx's 494 (a head past large_client_header_buffers): status 400
            # with its "Request Header Or Cookie Too Large" page (pages.py).
            raise _Reject(494, "too many or too large request headers")
        _add_header(ex, name, value)

    def on_headers_complete(self) -> None:
        ex = self.reading
        if ex is None:
            return  # the parser calls on_message_begin first: never
        parser = self.parser
        ex.method = parser.get_method()
        keep_alive = parser.should_keep_alive()
        # llhttp keeps a connection alive without a Connection (or
        # Proxy-Connection) header only for a version with major and minor
        # above 0, and the only such one it parses is 1.1
        # (tests/proxy/test_http_version.py holds it to that): the version
        # string, formatted anew by each call, is not needed then.
        version = "1.1" if keep_alive and not ex.conn_header else parser.get_http_version()
        if version != "1.1" and version != "1.0":
            if version.startswith("0."):  # no version at all: HTTP/0.9's bare request line
                raise _Reject(400, "malformed request line")
            raise _Reject(505, f"HTTP/{version} is not supported here (HTTP/1.0 and 1.1 are)")
        if version == "1.0":
            ex.http10 = True
            ex.protocol = "HTTP/1.0"
        state = self.state
        self.served += 1
        cap = state.settings.keepalive_requests  # nginx's keepalive_requests; 0: none
        ex.keep_alive = keep_alive and not state.draining and (not cap or self.served < cap)
        if ex.upgrade_value is not None and parser.should_upgrade():
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
        error = _validate(ex)
        if error is not None:
            raise _Reject(*error)
        self._set_phase(BODY, self.state.settings.client_body_timeout)
        if self.current is None:
            self.current = ex
            ex.begin()
        else:
            # A pipelined request waits its turn; stop reading until it comes.
            self.pipeline.append(ex)
            self.pause_body(PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        self._deadline = self.now() + self.state.settings.client_body_timeout
        ex = self.reading
        assert ex is not None  # on_message_begin made it
        ex.request_body(body)

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

    def exchange_done(self, ex: Outgoing) -> None:
        if ex is not self.current:
            return
        self.current = None
        if self._read_ahead:
            self.read_ahead(0, 0)  # the next response has its own route
        if not ex.keep_alive or self.closing:
            self.close()
            return
        if self.pipeline:
            nxt = self.pipeline.popleft()
            self.current = nxt
            if not self.pipeline and not self.done_reading:
                self.resume_body(PAUSE_PIPELINE)
            nxt.begin()
        elif self.reading is None:
            self._set_phase(IDLE, self.state.settings.keepalive_timeout)

    # -- the current exchange's response, framed as HTTP/1.1 (ClientStream) -------------

    def interim(self, ex: Outgoing, status: int, reason: bytes) -> None:
        if not ex.http10:
            self.transport.write(http.status_line(status, reason) + b"\r\n")  # type: ignore[union-attr]

    def response_head(
        self,
        ex: Outgoing,
        status: int,
        reason: bytes,
        headers: http.Headers,
        chunked: bool,
        length: bytes | None,
    ) -> None:
        parts = [http.status_line(status, reason), http.date_line()]
        http.serialize_into(parts, headers)
        if status == 101:
            parts.append(
                b"Connection: upgrade\r\nUpgrade: " + (ex.upgrade_value or b"") + b"\r\n\r\n"
            )
            head = b"".join(parts)
            ex.sent = len(head)
            self.transport.write(head)  # type: ignore[union-attr]
            return
        self._resp_chunked = False
        close_delimited = False
        if ex.method != b"HEAD" and status != 204 and status != 304:
            if chunked:
                if ex.http10:
                    close_delimited = True  # HTTP/1.0 has no chunked coding
                else:
                    self._resp_chunked = True
                    parts.append(b"Transfer-Encoding: chunked\r\n")
            elif length is None:
                close_delimited = True
        if length is not None:
            parts.append(b"Content-Length: " + length + b"\r\n")
        if close_delimited or not ex.request_complete:
            # The body's end is the connection's; an unread request body cannot
            # be skipped safely: close after.
            ex.keep_alive = False
        if not ex.keep_alive:
            parts.append(b"Connection: close\r\n")
        elif ex.http10:
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        head = b"".join(parts)
        ex.sent = len(head)
        self._pending.append(head)

    def response_body(self, ex: Outgoing, data: bytes) -> None:
        pending = self._pending
        if self._resp_chunked:
            size = b"%x\r\n" % len(data)
            pending += (size, data, b"\r\n")
            ex.sent += len(size) + len(data) + 2
        else:
            pending.append(data)
            ex.sent += len(data)
        if len(pending) > 16:
            self.flush()

    def flush(self) -> None:
        pending = self._pending
        if pending:
            self._pending = []
            if self.tls and len(pending) > 1:
                # uvloop's TLS transport encrypts each part of writelines as a
                # record of its own (sslproto.pyx _do_write): a head and a small
                # body joined cost one record, one MAC and one send.
                self.transport.write(b"".join(pending))  # type: ignore[union-attr]
            else:
                self.transport.writelines(pending)  # type: ignore[union-attr]

    def response_end(self, ex: Outgoing, trailers: http.Headers | None) -> None:
        if self._resp_chunked:
            if trailers:
                # Trailer fields go on in the chunked body's end; framing ones never.
                end = b"0\r\n" + http.serialize(http.response_headers(trailers)) + b"\r\n"
            else:
                end = http.LAST_CHUNK
            self._pending.append(end)
            ex.sent += len(end)
        self.flush()

    def local_response(
        self,
        ex: Outgoing,
        status: int,
        body: bytes,
        location: str | None,
        headers: http.Headers | tuple[tuple[bytes, bytes], ...],
    ) -> None:
        data = http.local_response(
            status,
            body,
            keep_alive=ex.keep_alive,
            location=location,
            head_only=ex.method == b"HEAD",
            headers=headers,
        )
        self.transport.write(data)  # type: ignore[union-attr]
        ex.sent = len(data)

    def abort_response(self, ex: Outgoing) -> None:
        self.transport.abort()  # type: ignore[union-attr]

    def start_tunnel(
        self, upstream: Tunnel, tail: bytes, early: list[bytes], slot: Slot | None
    ) -> None:
        self.limit_slot = slot
        upstream.tunnel = self.transport
        if tail:
            self.transport.write(tail)  # type: ignore[union-attr]
        if early:
            upstream.writelines(early)
        self.tunnel = upstream
        self.current = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._paused = 0
        self.transport.resume_reading()  # type: ignore[union-attr]


def _negotiated_h2(transport: asyncio.BaseTransport) -> bool:
    sslobj = transport.get_extra_info("ssl_object")
    return sslobj is not None and sslobj.selected_alpn_protocol() == "h2"


class _Reject(Exception):
    """Raised inside a parser callback to stop parsing and answer an error."""


class _StopReading(Exception):
    """Raised inside a parser callback to stop parsing: the rest is ignored."""


# What a request header line is to the proxy, by its lowercase name: one dict
# probe per line. Names not in _KINDS are forwarded as they are, except
# Proxy-* (hop-by-hop by prefix).
_CONNECTION: Final = 1
_UPGRADE: Final = 2
_TRANSFER_ENCODING: Final = 3
_CONTENT_LENGTH: Final = 4
_DROP: Final = 5
_HOST: Final = 6
_XFF: Final = 7
_REQUEST_ID: Final = 8
_ORIGIN: Final = 9
_PROXY_CONNECTION: Final = 10
_FORWARDED: Final = 11
# Names seen that are forwarded as they are: _FORWARD plus their name class.
_FORWARD: Final = 16
# Names as clients send them ("User-Agent", "accept"), with what _KINDS holds for
# them: a browser's dozen header lines then cost a probe each, no lowered copy.
_SENT_KINDS: Final[dict[bytes, tuple[bytes, int]]] = {}
# Learned names are kept up to this many, in each (names are the client's choice).
_KINDS_MAX: Final = 4096
_KINDS: Final[dict[bytes, int]] = {
    # hop-by-hop, and what ingressd sets itself: never forwarded
    **dict.fromkeys(http.HOP_BY_HOP | http.OVERWRITTEN, _DROP),
    b"connection": _CONNECTION,
    b"upgrade": _UPGRADE,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"content-length": _CONTENT_LENGTH,
    b"host": _HOST,
    b"x-forwarded-for": _XFF,
    b"x-request-id": _REQUEST_ID,
    b"origin": _ORIGIN,
    # Hop-by-hop, but llhttp reads it as Connection (keep-alive): see on_headers_complete.
    b"proxy-connection": _PROXY_CONNECTION,
    # Never forwarded as sent, but kept for what a trusted peer may say of the client
    **dict.fromkeys(http.FORWARDED_IN, _FORWARDED),
}


def _kind(name: bytes) -> tuple[bytes, int]:
    """The lowercase name and kind of a header name as a client sent it, learned."""
    lname = name.lower()
    kind = _KINDS.get(lname, 0)
    if kind == 0:
        # A name not seen before: Proxy-* is hop-by-hop; any other is forwarded by
        # its class (nginx's valid, underscore, invalid names). Learned, bounded.
        kind = _DROP if lname.startswith(b"proxy-") else _FORWARD + http.name_class(lname)
        if len(_KINDS) < _KINDS_MAX:
            _KINDS[lname] = kind
    known = (lname, kind)
    if len(_SENT_KINDS) < _KINDS_MAX:
        _SENT_KINDS[name] = known
    return known


def _add_header(ex: Exchange, name: bytes, value: bytes) -> None:
    """Record one request header line on the exchange (HTTP/1.1 rules)."""
    known = _SENT_KINDS.get(name)
    if known is None:
        known = _kind(name)
    lname, kind = known
    if kind >= _FORWARD:
        # drop_names_from: NAME_UNDERSCORE by default; NAME_KEEP_ALL passes every class.
        if kind - _FORWARD < ex.state.settings.drop_names_from:
            ex.headers.append((name, value))
    elif kind == _DROP:
        pass
    elif kind == _FORWARDED:
        if ex.forwarded is None:
            ex.forwarded = [(lname, value)]
        elif len(ex.forwarded) < http.MAX_FORWARDED_IN:
            ex.forwarded.append((lname, value))
    elif kind == _HOST:
        ex.host = value
        ex.host_count += 1
        ex.headers.append((name, value))
    elif kind == _ORIGIN:
        ex.origin = value
        ex.headers.append((name, value))
    elif kind == _XFF:
        ex.xff = value if ex.xff is None else ex.xff + b", " + value
    elif kind == _REQUEST_ID:
        ex.request_id = value
    elif kind == _CONNECTION:
        ex.conn_header = True
        ex.conn_tokens = (ex.conn_tokens or set()) | http.connection_tokens(value)
    elif kind == _PROXY_CONNECTION:
        ex.conn_header = True  # not forwarded
    elif kind == _UPGRADE:
        ex.upgrade_value = value
    elif kind == _TRANSFER_ENCODING:
        ex.req_chunked = True
        ex.req_te = value if ex.req_te is None else ex.req_te + b", " + value
    else:  # _CONTENT_LENGTH
        ex.req_length = value.strip()


def _validate(ex: Exchange) -> tuple[int, str] | None:
    """Why an HTTP/1.1 request head cannot be served, if it cannot (status, reason)."""
    if ex.host_count > 1:
        return 400, "more than one Host header"
    if ex.req_te is not None and ex.http10:
        # HTTP/1.0 has no chunked coding; such a message cannot be framed safely.
        return 400, "Transfer-Encoding in an HTTP/1.0 request"
    url = ex.url
    if ex.method != b"CONNECT" and not url.startswith(b"/") and url != b"*":
        try:
            target = http.parse_target(url)
        except httptools.HttpParserInvalidURLError:
            return 400, "invalid request target"
        if not target.host:
            return 400, "absolute-form request target without a host"
    if ex.host is None and not ex.http10 and not ex.url.startswith(b"http"):
        return 400, "missing Host header"
    if ex.method == b"CONNECT":
        return 405, "CONNECT is not supported"
    if ex.req_te is not None and ex.req_te.strip().lower() != b"chunked":
        # httptools reports other codings only after on_headers_complete, when
        # the head may already be on a pooled upstream connection; and the
        # body is forwarded re-chunked, which would drop the other codings.
        te = ex.req_te.decode("latin-1")
        return 400, f"Transfer-Encoding {te!r} is not supported (only chunked)"
    return None
