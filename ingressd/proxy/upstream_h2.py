"""HTTP/2 to upstream endpoints, for ``backend-protocol: GRPC`` and ``GRPCS``,
on the ``h2`` package: connections, their multiplexed streams, and the pool.

As nginx's ``grpc_pass`` (which ingress-nginx writes for these protocols,
template.go buildProxyPass): GRPC is HTTP/2 in cleartext with prior knowledge
(``grpc://``), GRPCS is TLS offering ALPN ``h2`` (``grpcs://``) with the route's
``proxy-ssl-*``. A connection is made ready by the upstream's SETTINGS, so its
stream limit is known before a request is sent on it, and an upstream that
does not speak HTTP/2 fails the connect, not a request.

Each exchange gets a stream (``H2Stream``, its ``UpstreamStream``); a connection
carries up to the upstream's MAX_CONCURRENT_STREAMS (at most ``MAX_STREAMS``) at
once, then another connection is opened. Connections are pooled per (endpoint,
TLS identity) and closed after ``idle_timeout`` without a stream.

Flow control has backpressure both ways, with bounded buffers:

* responses: a stream's window is reopened as its client takes the data, so a
  slow client (the exchange calls ``pause_reading``) holds back its own stream
  only: at most ``STREAM_WINDOW`` bytes beyond what the client's transport
  holds. The connection's window is reopened as soon as data is passed on, so
  one slow stream never stalls the others;
* requests: body bytes wait here for the upstream's window; past ``SEND_HIGH``
  the exchange is told to pause the client's body (``on_upstream_paused``).

A GOAWAY stops new streams on its connection; streams the upstream did not take
(above its last stream id, or refused with REFUSED_STREAM) are reported as
``StreamRefused``, which the exchange may send again: the upstream never
processed them (RFC 9113 8.7). Streams it did take run to their end.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from mypy_extensions import mypyc_attr

from ..model.backend import Endpoint
from ..policy.upstream_tls import check_peer
from . import grpc, http
from .settings import DEFAULT_HEAD_LIMIT
from .streams import Outgoing, UpstreamStream, upstream_fields
from .upstream_h1 import PoolKey, UpstreamHeadTooLarge, pool_key

if TYPE_CHECKING:
    from ..model.policy import UpstreamTLS

log: Final = logging.getLogger("ingressd.upstream")

# The window each stream's response gets: what one slow client can leave in
# ingressd's memory beyond its own socket buffer.
STREAM_WINDOW: Final = 256 * 1024
# The connection's window; reopened as data is passed on, never held for a stream.
CONNECTION_WINDOW: Final = 4 * 1024 * 1024
# Windows are reopened in steps of at least this (one WINDOW_UPDATE per read at most).
WINDOW_STEP: Final = 16 * 1024
# Request body bytes waiting for the upstream's window before the client is
# paused; it is resumed once they are down to SEND_LOW.
SEND_HIGH: Final = 64 * 1024
SEND_LOW: Final = 16 * 1024
# Streams at once on one connection, at most (fewer if the upstream says so),
# and over a connection's life, after which it takes no more and closes idle.
MAX_STREAMS: Final = 128
MAX_STREAMS_PER_CONNECTION: Final = 10_000
# HPACK decoding bound for one header block; each response head is then held
# to the route's proxy-buffer-size.
MAX_HEADER_LIST: Final = 256 * 1024

# Connection-specific fields (RFC 9113 8.2.2), and those the HTTP/2 request sets itself.
_NOT_FORWARDED: Final = frozenset(
    {
        b"host",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"http2-settings",
        b"content-length",
    }
)
_GOAWAY_TOLERANT: dict[object, object] | None = None

_CONFIG: Final = h2.config.H2Configuration(
    client_side=True,
    header_encoding=None,
    # What is sent is made here: names lowercased, values from the client's
    # request, which its own protocol's parser has validated (no CR, LF, NUL).
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
    validate_inbound_headers=True,
)


class InvalidUpstreamResponse(Exception):
    """The upstream broke the HTTP/2 protocol."""


class StreamRefused(Exception):
    """The upstream did not process the request: it may be sent again."""


class UpstreamStreamReset(Exception):
    """The upstream reset the stream."""


# An OSError, so that connecting reports it as any failed connect; mypyc
# compiles no native subclass of OSError's family, so this one stays a Python class.
@mypyc_attr(native_class=False)
class UpstreamProtocolError(ConnectionError):
    """Connecting: the upstream does not speak HTTP/2."""


def _state_machine() -> h2.connection.H2ConnectionStateMachine:
    """h2's connection state machine, except that a GOAWAY leaves it open.

    h2 takes a GOAWAY for the end of everything, yet RFC 9113 6.8 lets the
    streams up to its last stream id run to their end; gRPC servers stopping
    gracefully (a rolling update) send one and finish the calls under way.
    Here those go on; no new stream is opened on the connection.
    """
    global _GOAWAY_TOLERANT
    machine = h2.connection.H2ConnectionStateMachine()
    if _GOAWAY_TOLERANT is None:
        states = h2.connection.ConnectionState
        inputs = h2.connection.ConnectionInputs
        table = dict(machine._transitions)
        table[(states.CLIENT_OPEN, inputs.RECV_GOAWAY)] = (None, states.CLIENT_OPEN)
        _GOAWAY_TOLERANT = table  # type: ignore[assignment]
    machine._transitions = _GOAWAY_TOLERANT  # type: ignore[assignment]
    return machine


class H2Connection(asyncio.Protocol):
    """One HTTP/2 connection to an endpoint, carrying the streams of several exchanges."""

    def __init__(self, pool: H2Pool, endpoint: Endpoint, key: PoolKey) -> None:
        self.pool = pool
        self.endpoint = endpoint
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        conn = h2.connection.H2Connection(config=_CONFIG)
        conn.state_machine = _state_machine()
        # Our settings are in the first SETTINGS frame, ahead of any request,
        # so they hold for every stream: no push, our window, our header bound.
        conn.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
            },
        )
        conn.decoder.max_header_list_size = MAX_HEADER_LIST
        self.h2 = conn
        self.streams: dict[int, H2Stream] = {}  # by stream id, once sent
        self.active = 0  # streams taken from this connection and not done
        self.opened = 0  # streams taken over its life
        self.capacity = MAX_STREAMS
        self.goaway = False  # the upstream said GOAWAY: no new streams
        self.closed = False
        self.write_paused = False
        self.idle_since = self.loop.time()
        self._unacked = 0  # connection window consumed, not reopened yet
        # Resolved by the upstream's first SETTINGS (or failed by an error).
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self.touched: list[tuple[H2Stream, Outgoing]] = []  # streams with data this read
        self._flush_soon = False  # a flush is scheduled

    # -- state ----------------------------------------------------------------------

    def has_room(self) -> bool:
        return (
            not self.closed
            and not self.goaway
            and self.active < self.capacity
            and self.opened < MAX_STREAMS_PER_CONNECTION
            and self.ready.done()
        )

    def reserve(self) -> H2Stream:
        """A place for one stream on this connection."""
        self.active += 1
        self.opened += 1
        return H2Stream(self)

    def stream_done(self, stream: H2Stream) -> None:
        if stream.stream_id:
            self.streams.pop(stream.stream_id, None)
        self.active -= 1
        if self.active == 0 and not self.closed:
            if self.goaway or self.opened >= MAX_STREAMS_PER_CONNECTION:
                self.close()
            else:
                self.idle_since = self.loop.time()
                self.pool.idle(self)

    def write(self) -> None:
        """Send what h2 has made, soon: what every stream of the connection
        makes in one turn of the loop goes in one write (one syscall)."""
        if not self._flush_soon:
            self._flush_soon = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send what h2 has made, now."""
        self._flush_soon = False
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        """Say GOAWAY and close; streams still under way are lost."""
        if self.closed:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection()
            self.flush()
        self._fail(ConnectionResetError("the connection to the upstream was closed"))

    def _fail(self, exc: Exception) -> None:
        """The connection is over: every stream on it is lost with ``exc``."""
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.close()
        if not self.ready.done():
            self.ready.set_exception(exc)
            self.ready.exception()  # retrieved: whoever waits sees it, nobody else must
        for stream in list(self.streams.values()):
            stream.lost(exc)

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.h2.initiate_connection()
        # The connection window is not a setting: it is opened by WINDOW_UPDATE.
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            reason = f": {exc}" if exc else ""
            exc = UpstreamProtocolError(
                "the upstream does not speak HTTP/2: it closed the connection without "
                f"sending its settings{reason}"
            )
        self._fail(exc or ConnectionResetError("the upstream closed the connection"))

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        self.write_paused = True
        for stream in list(self.streams.values()):
            stream.update_paused()

    def resume_writing(self) -> None:
        self.write_paused = False
        for stream in list(self.streams.values()):
            stream.pump()
        self.write()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return  # what arrives after our GOAWAY, before the close: nobody reads it
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.warning("upstream %s broke HTTP/2: %s", self.endpoint, exc)
            self.flush()  # h2's GOAWAY, if it made one
            failure = (
                InvalidUpstreamResponse(f"the upstream broke HTTP/2: {exc}")
                if self.ready.done()
                else UpstreamProtocolError(f"the upstream does not speak HTTP/2 ({exc})")
            )
            self._fail(failure)
            return
        streams = self.streams
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                self._unacked += event.flow_controlled_length
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.on_data(event.data or b"", event.flow_controlled_length)
            elif isinstance(event, h2.events.ResponseReceived):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.on_head(event.headers or [], event.stream_ended is not None)
            elif isinstance(event, h2.events.StreamEnded):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.on_end()
            elif isinstance(event, h2.events.TrailersReceived):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.on_trailers(event.headers or [])
            elif isinstance(event, h2.events.WindowUpdated):
                if event.stream_id:
                    stream = streams.get(event.stream_id)
                    if stream is not None:
                        stream.pump()
                else:
                    for stream in list(streams.values()):
                        stream.pump()
            elif isinstance(event, h2.events.StreamReset):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.on_reset(event.error_code, event.remote_reset)
            elif isinstance(event, h2.events.InformationalResponseReceived):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.on_interim(event.headers or [])
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self._on_settings(event)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._on_goaway(event)
        if self.closed:
            return
        self._reopen_windows()
        self.flush()

    def _reopen_windows(self) -> None:
        """Give back the window of what this read passed on, and flush the clients."""
        if self._unacked >= WINDOW_STEP:
            self.h2.increment_flow_control_window(self._unacked)
            self._unacked = 0
        touched, self.touched = self.touched, []
        for stream, owner in touched:
            stream.touched = False
            if stream.owner is owner:
                stream.reopen(WINDOW_STEP)
                owner.client.flush()

    def _on_settings(self, event: h2.events.RemoteSettingsChanged) -> None:
        limit = self.h2.remote_settings.max_concurrent_streams
        self.capacity = max(0, min(MAX_STREAMS, limit))
        if not self.ready.done():
            self.ready.set_result(None)
        changed = event.changed_settings
        if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in changed:
            for stream in list(self.streams.values()):
                stream.pump()

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        self.goaway = True
        self.pool.forget(self)
        last = event.last_stream_id or 0
        code = event.error_code
        if code is not None and code != h2.errors.ErrorCodes.NO_ERROR:
            log.warning("upstream %s said GOAWAY (%s)", self.endpoint, _code_name(code))
        if not self.ready.done():
            self.ready.set_exception(UpstreamProtocolError("the upstream said GOAWAY at once"))
            self.ready.exception()
        for stream_id, stream in list(self.streams.items()):
            if stream_id > last:
                stream.lost(StreamRefused("the upstream said GOAWAY before taking the request"))
        if self.active == 0:
            self.close()


class H2Stream(UpstreamStream):
    """One exchange's stream on an ``H2Connection``."""

    def __init__(self, conn: H2Connection) -> None:
        self.conn = conn
        self.transport = conn.transport
        self.tunnel: asyncio.Transport | None = None
        self.owner: Outgoing | None = None
        self.requests = conn.opened
        self.closed = False
        self.stream_id = 0
        self.head_limit = DEFAULT_HEAD_LIMIT
        self.head_seen = False
        self.paused = False  # the client is slow: the window is not reopened
        self.unacked = 0  # response bytes passed on whose window is not reopened yet
        self.pending: list[bytes] = []  # request body waiting for the upstream's window
        self.pending_bytes = 0
        self.end_pending = False  # the request ends once ``pending`` is sent
        self.sent_end = False
        self.ended = False  # the upstream ended its side
        self.told_paused = False
        self.touched = False  # in the connection's list for the end of this read
        self.trailers: http.Headers | None = None
        self.trailers_over = False

    # -- what the exchange asks (UpstreamStream) ---------------------------------------

    def begin(self, owner: Outgoing, head_only: bool, head_limit: int) -> None:
        self.owner = owner
        self.head_limit = head_limit

    def send_request(self, req: Outgoing, body: Sequence[bytes], end: bool) -> None:
        conn = self.conn
        if conn.closed or conn.goaway:
            # Taken from the pool just before the connection went: not sent.
            reason = StreamRefused("the upstream connection closed before the request was sent")
            conn.loop.call_soon(self.lost, reason)
            return
        h2conn = conn.h2
        try:
            stream_id = h2conn.get_next_available_stream_id()
            h2conn.send_headers(stream_id, request_headers(req), end_stream=end and not body)
        except h2.exceptions.ProtocolError as exc:
            conn.loop.call_soon(self.lost, InvalidUpstreamResponse(f"cannot send: {exc}"))
            return
        self.stream_id = stream_id
        conn.streams[stream_id] = self
        if end and not body:
            self.sent_end = True
        else:
            for part in body:
                self.pending.append(part)
                self.pending_bytes += len(part)
            self.end_pending = end
            self._pump()
        conn.write()

    def send_body(self, data: bytes) -> None:
        if self.closed or not data:
            return
        self.pending.append(data)
        self.pending_bytes += len(data)
        self._pump()
        self.conn.write()

    def end_body(self) -> None:
        if self.closed or self.sent_end:
            return
        self.end_pending = True
        self._pump()
        self.conn.write()

    def release(self) -> None:
        """The response is complete: the stream is done (the connection stays)."""
        self._finish()

    def close(self) -> None:
        self._finish()

    def abort(self) -> None:
        self._finish()

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        if self.paused:
            self.paused = False
            self.reopen(1)
            self.conn.write()

    def write(self, data: bytes) -> None:
        raise NotImplementedError("an HTTP/2 stream is never a tunnel")

    def writelines(self, parts: list[bytes]) -> None:
        raise NotImplementedError("an HTTP/2 stream is never a tunnel")

    # -- request body and its flow control ------------------------------------------------

    def pump(self) -> None:
        """The upstream opened its window (or the transport drained): send what waits."""
        if not self.closed and self.stream_id:
            self._pump()

    def _pump(self) -> None:
        conn = self.conn
        h2conn = conn.h2
        pending = self.pending
        stream_id = self.stream_id
        try:
            while pending and not conn.write_paused:
                room = min(
                    h2conn.local_flow_control_window(stream_id), h2conn.max_outbound_frame_size
                )
                if room <= 0:
                    break
                part = pending[0]
                if len(part) > room:
                    pending[0] = part[room:]
                    part = part[:room]
                else:
                    pending.pop(0)
                self.pending_bytes -= len(part)
                h2conn.send_data(stream_id, part)
            if not pending and self.end_pending and not self.sent_end:
                self.sent_end = True
                h2conn.end_stream(stream_id)
        except h2.exceptions.ProtocolError:
            # The stream closed under us (the upstream reset it or ended its
            # side): its reset or end, in this read's events, says what happened.
            self.pending = []
            self.pending_bytes = 0
            self.sent_end = True
        self.update_paused()

    def update_paused(self) -> None:
        """Tell the exchange to pause or resume the client's body."""
        owner = self.owner
        if owner is None:
            return
        if self.told_paused:
            if self.pending_bytes <= SEND_LOW and not self.conn.write_paused:
                self.told_paused = False
                owner.on_upstream_paused(False)
        elif self.pending_bytes >= SEND_HIGH or (self.conn.write_paused and self.pending):
            self.told_paused = True
            owner.on_upstream_paused(True)

    # -- response, as the connection reads it ---------------------------------------------

    def on_interim(self, headers: http.Headers) -> None:
        owner = self.owner
        status = _status(headers)
        if owner is not None and status is not None:
            owner.on_response_head(status, b"", [], False, None)
            self._touch(owner)

    def on_head(self, headers: http.Headers, ended: bool = False) -> None:
        """The response's head; ``ended``: it is the whole response (its
        HEADERS frame ended the stream)."""
        owner = self.owner
        if owner is None:
            return
        size = 0
        for name, value in headers:
            size += len(name) + len(value) + 4
        if size > self.head_limit:
            log.warning(
                "upstream %s sent too big header (over %d bytes, proxy-buffer-size)",
                self.conn.endpoint,
                self.head_limit,
            )
            self.lost(
                UpstreamHeadTooLarge(
                    f"upstream sent too big header (over {self.head_limit} bytes, "
                    "proxy-buffer-size)"
                )
            )
            return
        status = _status(headers)
        if status is None:
            self.lost(InvalidUpstreamResponse("the upstream sent a response without a status"))
            return
        self.head_seen = True
        fields, _, length = http.split_response([h for h in headers if h[0][:1] != b":"])
        if ended and status == 200:
            fields = self._trailers_only(fields)
        # Without a Content-Length the body ends with the stream: chunked, to an
        # HTTP/1.1 client.
        owner.on_response_head(status, b"", fields, length is None, length)
        if self.owner is owner:
            # Flushed at the end of the read, unless the stream ends in it too
            # (a Trailers-Only response goes as one piece).
            self._touch(owner)

    def _trailers_only(self, fields: http.Headers) -> http.Headers:
        """A gRPC Trailers-Only response (one HEADERS frame: the status and the
        trailing metadata, no message) is passed on as a head with its
        content-type and the rest as trailers of an empty body: a response
        every gRPC client reads the same, whatever the client side's framing
        (an HTTP/2 head and an empty end would lose the status; HTTP/1.1
        gets chunked trailers)."""
        grpc_status = False
        content_type: list[tuple[bytes, bytes]] = []
        rest: list[tuple[bytes, bytes]] = []
        for field in fields:
            if field[0] == b"content-type":
                content_type.append(field)
            else:
                grpc_status = grpc_status or field[0] == b"grpc-status"
                rest.append(field)
        if not grpc_status or not content_type or not grpc.is_grpc(content_type):
            return fields  # not gRPC: as it came
        self.trailers = rest
        return content_type

    def on_data(self, data: bytes, flow_length: int) -> None:
        owner = self.owner
        if owner is None:
            return
        self.unacked += flow_length
        if data:
            owner.on_response_body(data)
        if self.owner is owner:
            self._touch(owner)

    def _touch(self, owner: Outgoing) -> None:
        """Flush this stream's client, and reopen its window, at the end of the read."""
        if not self.touched:
            self.touched = True
            self.conn.touched.append((self, owner))

    def on_trailers(self, headers: http.Headers) -> None:
        size = 0
        for name, value in headers:
            size += len(name) + len(value) + 4
        if size > self.head_limit:
            self.trailers_over = True
            return
        self.trailers = [h for h in headers if h[0][:1] != b":"]

    def on_end(self) -> None:
        self.ended = True
        owner = self.owner
        if owner is None:
            return
        if self.trailers_over:
            # gRPC's status is in the trailers: a response that lost them must not
            # look complete, so it is cut off rather than ended without them.
            log.warning(
                "upstream %s sent trailers over %d bytes (proxy-buffer-size): response cut off",
                self.conn.endpoint,
                self.head_limit,
            )
            self.lost(
                UpstreamHeadTooLarge(
                    f"upstream sent too big trailers (over {self.head_limit} bytes, "
                    "proxy-buffer-size)"
                )
            )
            return
        owner.on_response_end(True, self.trailers)

    def on_reset(self, code: int, remote: bool) -> None:
        self.ended = self.sent_end = True
        exc: Exception
        if not remote:
            exc = InvalidUpstreamResponse("the upstream broke HTTP/2 on the stream")
        elif code == h2.errors.ErrorCodes.REFUSED_STREAM and not self.head_seen:
            exc = StreamRefused("the upstream refused the stream (REFUSED_STREAM)")
        else:
            exc = UpstreamStreamReset(f"the upstream reset the stream ({_code_name(code)})")
        self.lost(exc)

    def reopen(self, step: int) -> None:
        """Give the upstream back the window of what the client has taken."""
        if self.paused or self.unacked < step or self.ended or self.closed:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.conn.h2.increment_flow_control_window(self.unacked, self.stream_id)
        self.unacked = 0

    # -- endings --------------------------------------------------------------------------

    def lost(self, exc: Exception) -> None:
        """The stream failed: reset it if it is still open, and tell its exchange."""
        owner = self.owner
        self._finish()
        self.conn.write()
        if owner is not None:
            owner.on_upstream_lost(exc)

    def _finish(self) -> None:
        """Done with the stream: reset it unless both sides ended, and give back its place."""
        if self.closed:
            return
        self.closed = True
        self.owner = None
        conn = self.conn
        if self.stream_id and not (self.ended and self.sent_end) and not conn.closed:
            # RST_STREAM CANCEL: the client went away, or the response is over
            # with the request still under way; the upstream stops working on it.
            with contextlib.suppress(h2.exceptions.ProtocolError):
                conn.h2.reset_stream(self.stream_id, h2.errors.ErrorCodes.CANCEL)
            conn.write()
        self.pending = []
        self.pending_bytes = 0
        conn.stream_done(self)


def _status(headers: http.Headers) -> int | None:
    for name, value in headers:
        if name == b":status":
            return int(value) if len(value) == 3 and value.isdigit() else None
    return None


def _code_name(code: int) -> str:
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return f"error {code}"


def request_headers(req: Outgoing) -> list[tuple[bytes, bytes]]:
    """The HTTP/2 request for ``req``: pseudo-headers, then the same fields the
    HTTP/1.1 request carries (``upstream_h1.encode_request``), as ingress-nginx's
    gRPC locations set them with ``grpc_set_header`` (nginx.tmpl): the client's
    headers less connection-specific ones, those the annotations and the auth
    service replace, and the forwarding headers. ``:authority`` is what Host
    would be (upstream-vhost, else the client's); ``te: trailers`` is always
    sent: ingressd reads trailers, and gRPC servers require it.
    """
    fwd = req.forward
    assert fwd is not None
    client = req.client
    headers, host_override, host, xff, real_ip = upstream_fields(req)
    authority = host_override or host
    out = [
        (b":method", req.method),
        (b":scheme", b"https" if fwd.tls is not None else b"http"),
        (b":authority", authority),
        (b":path", fwd.target.encode("latin-1")),
    ]
    for name, value in headers:
        lname = name.lower()
        if lname not in _NOT_FORWARDED:
            out.append((lname, value))
    out.append((b"te", b"trailers"))
    if req.req_length is not None and not req.req_chunked:
        out.append((b"content-length", req.req_length))
    scheme = b"https" if client.tls else b"http"
    port = client.server_port
    if client.trusted and req.forwarded is not None and req.proxy_settings().forwarded_headers:
        # use-forwarded-headers: a trusted peer's own, where it sent them
        for name, value in req.forwarded:
            if name == b"x-forwarded-port" and value:
                port = value
            elif name == b"x-forwarded-proto" and value:
                scheme = value
    out += [
        (b"x-forwarded-for", xff),
        (b"x-forwarded-host", host),
        (b"x-forwarded-port", port),
        (b"x-forwarded-proto", scheme),
        (b"x-scheme", scheme),
        (b"x-real-ip", real_ip),
    ]
    if req.request_id:  # none under generate-request-id: false
        out.append((b"x-request-id", req.request_id))
    if req.proxy_settings().original_uri_header:
        out.append((b"x-original-uri", req.url))
    if req.xff:
        out.append((b"x-original-forwarded-for", req.xff))
    return out


class H2Pool:
    """HTTP/2 connections per (endpoint, TLS identity), each carrying many streams.

    ``take`` finds room on a connection that has some; ``connect`` opens a new
    one, or waits for the one already being opened for that key, so a burst of
    requests does not open a connection each.
    """

    def __init__(self, connect_timeout: float = 5.0, idle_timeout: float = 60.0) -> None:
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self._conns: dict[PoolKey, list[H2Connection]] = {}
        self._connecting: dict[PoolKey, asyncio.Task[H2Connection]] = {}
        self._reaper: asyncio.TimerHandle | None = None

    def take(self, endpoint: Endpoint, tls: UpstreamTLS | None = None) -> H2Stream | None:
        conns = self._conns.get(pool_key(endpoint, tls))
        if conns:
            for conn in conns:
                if conn.has_room():
                    return conn.reserve()
        return None

    async def connect(
        self, endpoint: Endpoint, timeout: float | None = None, tls: UpstreamTLS | None = None
    ) -> H2Stream:
        """A stream on a new connection (or one just opened for another request);
        TimeoutError, ssl.SSLError or OSError when the upstream cannot be reached."""
        loop = asyncio.get_running_loop()
        timeout = timeout or self.connect_timeout
        deadline = loop.time() + timeout
        key = pool_key(endpoint, tls)
        for _ in range(3):
            task = self._connecting.get(key)
            if task is None:
                task = loop.create_task(self._open(key, endpoint, tls, timeout))
                self._connecting[key] = task
                task.add_done_callback(functools.partial(self._opened, key))
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            conn = await asyncio.wait_for(asyncio.shield(task), remaining)
            if conn.capacity == 0:
                raise UpstreamProtocolError("the upstream allows no stream at all")
            if conn.has_room():
                return conn.reserve()
            stream = self.take(endpoint, tls)
            if stream is not None:
                return stream
        raise TimeoutError

    def _opened(self, key: PoolKey, task: asyncio.Task[H2Connection]) -> None:
        if self._connecting.get(key) is task:
            del self._connecting[key]
        if task.cancelled() or task.exception() is not None:
            return  # each waiter has it; retrieved here so nobody warns about it
        conn = task.result()
        if not conn.closed and not conn.goaway:
            self._conns.setdefault(key, []).append(conn)
            # Reaped like any idle connection should no waiter take a stream on
            # it (they all gave up meanwhile).
            self.idle(conn)

    async def _open(
        self, key: PoolKey, endpoint: Endpoint, tls: UpstreamTLS | None, timeout: float
    ) -> H2Connection:
        loop = asyncio.get_running_loop()
        made: list[H2Connection] = []

        def factory() -> H2Connection:
            conn = H2Connection(self, endpoint, key)
            made.append(conn)
            return conn

        async def establish() -> H2Connection:
            if tls is None:
                _, conn = await loop.create_connection(factory, endpoint.host, endpoint.port)
            else:
                _, conn = await loop.create_connection(
                    factory,
                    endpoint.host,
                    endpoint.port,
                    ssl=tls.context,
                    server_hostname=tls.server_hostname(endpoint),
                )
                ssl_object = conn.transport.get_extra_info("ssl_object")  # type: ignore[union-attr]
                check_peer(tls, ssl_object, endpoint)
                chosen = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
                if chosen not in (None, "h2"):
                    raise UpstreamProtocolError(
                        f"the upstream chose {chosen!r} by ALPN, not HTTP/2 (h2)"
                    )
            await conn.ready
            return conn

        try:
            return await asyncio.wait_for(establish(), timeout)
        except BaseException:
            for conn in made:
                if conn.transport is not None:
                    conn.transport.abort()
                conn.closed = True
            raise

    def idle(self, conn: H2Connection) -> None:
        """``conn`` has no stream left: reap it after ``idle_timeout``."""
        if self._reaper is None:
            self._reaper = conn.loop.call_later(self.idle_timeout / 2, self._reap)

    def forget(self, conn: H2Connection) -> None:
        conns = self._conns.get(conn.key)
        if conns is not None:
            with contextlib.suppress(ValueError):
                conns.remove(conn)
            if not conns:
                del self._conns[conn.key]

    def _reap(self) -> None:
        self._reaper = None
        loop = asyncio.get_running_loop()
        cutoff = loop.time() - self.idle_timeout
        idle_left = False
        for conns in list(self._conns.values()):
            for conn in list(conns):
                if conn.active == 0:
                    if conn.idle_since <= cutoff:
                        conn.close()
                    else:
                        idle_left = True
        if idle_left:
            self._reaper = loop.call_later(self.idle_timeout / 2, self._reap)

    def connection_count(self) -> int:
        return sum(len(conns) for conns in self._conns.values())

    def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for task in list(self._connecting.values()):
            task.cancel()
        for conns in list(self._conns.values()):
            for conn in list(conns):
                conn.close()
        self._conns.clear()
