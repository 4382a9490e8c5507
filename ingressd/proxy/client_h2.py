"""HTTP/2 from clients: one ``H2ClientConnection`` per TLS connection that
chose ``h2`` by ALPN, on the ``h2`` package (sans-IO: it frames, we do the
I/O), and one ``H2Stream`` per request.

Each stream is the ``ClientStream`` of one ``Exchange``, fed as client_h1
feeds its exchanges (the head's fields, ``begin``, ``request_body``,
``request_done``, ``abort``), so routing, annotations, auth, limits, retries,
metrics and the access log are the same as for HTTP/1.1: only the framing
differs. Requests go to upstreams as HTTP/1.1, mapped as nginx maps them
(``ngx_http_v2.c``): ``:method`` and ``:path`` make the request line,
``:authority`` is the Host, split ``cookie`` fields are joined with "; ",
a body without ``content-length`` goes chunked (``h2_head.py``).
Request trailers are dropped: an HTTP/1.1 upstream gets none, as from nginx.

Flow control, both ways, per stream:

- request bodies: DATA is acknowledged (WINDOW_UPDATE) only once the exchange
  has passed it on (to its upstream, or discarded it). While the exchange
  holds back (``pause_body``: its upstream is slow to take the body) or holds
  the body itself (connecting, auth-url), acknowledgements wait, so the
  client's stream window closes: a stream holds at most its window (64 KiB,
  nginx's http2_body_preread_size) of unacknowledged body. The connection
  window is larger than all stream windows together, so held streams never
  stall the others.
- responses: each stream queues what its upstream sends and writes it as the
  client's stream and connection windows and max frame size allow, a frame
  per stream in turn over the streams with data. Past ``STREAM_HIGH`` queued
  on the stream (or ``CONN_HIGH`` on the connection) its exchange is told
  ``client_paused(True)``, which stops reading its upstream, until the window
  opens and the queue drains below ``STREAM_LOW``.

Protections (options in ``settings.py``; each has a test in
``tests/e2e/test_e2e_http2_protections.py``): concurrent streams (SETTINGS,
REFUSED_STREAM beyond, as nginx), the decoded header list (HPACK bounded,
GOAWAY ENHANCE_YOUR_CALM as nginx), header blocks in bytes and CONTINUATION
frames (CVE-2024-27316), streams reset by the client before their response
ends (rapid reset, CVE-2023-44487), PING/SETTINGS/PRIORITY/empty-frame floods,
what waits to be sent to a client that does not read, zero-window stalls
(``--client-send-timeout``, nginx's send_timeout), idle connections
(keep-alive timeout) and slow headers (client header timeout).

Control frames are counted as frames arrive (``_Frames``), not as h2's events,
since h2 answers some frames without an event (a WINDOW_UPDATE, RST_STREAM or
DATA on a closed stream is dropped or answered with RST_STREAM). A control
frame is any frame that asks work of us and carries neither a new request nor
request data: PING, SETTINGS, PRIORITY, unknown types, RST_STREAM on a stream
not open (a reset of an open one is rapid reset's to count), DATA with
no data and no END_STREAM (CVE-2019-9518), DATA on a closed stream, HEADERS
that open no stream (trailers, or on a stream gone), and WINDOW_UPDATE beyond
the two (stream, connection) each DATA frame we send earns the client. nginx bounds the same
by bytes (``ngx_http_v2_read_handler``: ``total_bytes / 8 > payload_bytes +
1048576`` is "http2 flood detected", where only DATA payload and request heads
count as payload); ingressd counts the frames, against
``--http2-max-control-frames`` per 10 s, and answers GOAWAY ENHANCE_YOUR_CALM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from http import HTTPStatus
from typing import Any, Final

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import H2Error, ProtocolError
from h2.frame_buffer import FrameBuffer
from h2.settings import SettingCodes, Settings
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from mypy_extensions import mypyc_attr

from ..policy.limits import Slot
from . import http
from .exchange import Exchange
from .h2_head import check_trailers, checked_request_head, read_head
from .peer import Peer, peer_of, trusted_for
from .settings import ProxySettings
from .state import ProxyState
from .streams import ClientStream, Connection, Outgoing, Tunnel

log: Final = logging.getLogger("ingressd.proxy")

# The stream window we grant (SETTINGS_INITIAL_WINDOW_SIZE): the protocol's
# default, and nginx's http2_body_preread_size; the connection's is raised to
# more than the streams' together (nginx raises it to the maximum).
STREAM_WINDOW: Final = 65535
CONN_WINDOW: Final = 16 * 1024 * 1024
# Response bytes queued per stream, and per connection, before the upstream
# is paused; it is resumed below STREAM_LOW.
STREAM_HIGH: Final = 64 * 1024
STREAM_LOW: Final = 16 * 1024
CONN_HIGH: Final = 1024 * 1024
# Response bytes framed before they are handed to the transport (which then
# says whether its buffer is full).
PUMP_BATCH: Final = 64 * 1024
# Bytes handed to the transport and not yet sent: past this, the client is
# not reading what ingressd must send it (acknowledgements, resets, heads):
# the connection is dropped rather than buffer without bound.
OUT_LIMIT: Final = 1024 * 1024
# Rates are counted over this window: at most N events per WINDOW seconds,
# in bursts of up to N (a token bucket).
RATE_WINDOW: Final = 10.0
# CONTINUATION frames one header block may take (besides the byte bound):
# below h2's own cap (64, a PROTOCOL_ERROR), so that a flood of empty ones is
# answered ENHANCE_YOUR_CALM like one of large ones.
MAX_CONTINUATIONS: Final = 32
# While streams are open, their timeouts are checked this often.
TICK: Final = 1.0
# A connection closed with GOAWAY is dropped this long after, if the client
# does not close it.
CLOSE_LINGER: Final = 2.0
# Streams whose closing h2 remembers (to tell late frames from errors);
# h2's own default keeps 65536 per connection.
CLOSED_STREAMS_KEPT = 1024
# Bytes of client input handed to h2 per turn of the event loop: a read can
# bring hundreds of KiB of small frames (PINGs, WINDOW_UPDATEs, resets), each
# an event; past this the rest waits for the next turn, reading paused, so the
# other connections of the worker are served in between.
READ_SLICE: Final = 64 * 1024

_CONNECTION_SPECIFIC: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te"}
)
_STATUS: Final = {s.value: str(s.value).encode() for s in HTTPStatus}


def _response_fields(
    status: int, headers: http.Headers | tuple[tuple[bytes, bytes], ...], local: bool = False
) -> list[tuple[bytes, bytes]]:
    """:status, date, then ``headers`` as HTTP/2 carries them: names lower-case,
    without connection-specific fields or pseudo-header look-alikes. One place
    for upstream and local answers alike."""
    out = [(b":status", _status(status)), (b"date", http.date_value())]
    server = http.server_value(local)
    if server is not None:
        out.append((b"server", server))
    for name, value in headers:
        lname = name.lower()
        if lname not in _CONNECTION_SPECIFIC and lname[:1] != b":":
            out.append((lname, value))
    return out


def _status(code: int) -> bytes:
    return _STATUS.get(code) or str(code).encode()


# Python classes even when compiled, as _H2 below: a native subclass turns a
# Python base class's class attribute into a per-instance default, and h2's
# ProtocolError sets its error_code that way (compiled, the GOAWAY said
# PROTOCOL_ERROR, not ENHANCE_YOUR_CALM).
@mypyc_attr(native_class=False)
class HeaderBlockTooLarge(ProtocolError):
    """A header block over its bound in bytes or CONTINUATION frames."""

    error_code = ErrorCodes.ENHANCE_YOUR_CALM


@mypyc_attr(native_class=False)
class ControlFlood(ProtocolError):
    """More control frames than ``--http2-max-control-frames`` allows."""

    error_code = ErrorCodes.ENHANCE_YOUR_CALM


class _Frames(FrameBuffer):
    """h2's frame buffer, with header blocks bounded in bytes and frames, and
    control frames counted (see the module docstring).

    h2 gathers a block's CONTINUATION frames until END_HEADERS before it
    decodes anything; it caps their count but not their size, so an endless
    CONTINUATION stream (CVE-2024-27316) could hold 64 x 16 KiB per
    connection. A block is cut at the header list bound (HPACK's encoding is
    never larger than the list it decodes to, which counts 32 bytes more per
    field), as nginx bounds the block by large_client_header_buffers.
    """

    def __init__(self, block_limit: int, controls: _Allowance) -> None:
        super().__init__(server=True)
        self.block_limit = block_limit
        self.controls = controls
        self.now = 0.0  # the loop's time of the read being parsed
        self.earned = 0  # WINDOW_UPDATEs the DATA frames we sent allow for free
        self.last_opened = 0  # the highest stream a HEADERS frame opened
        self.h2_streams: dict[int, Any] = {}  # h2's streams (set by the connection)
        self.block_bytes = 0
        self.block_frames = 0
        self.in_block = False  # a HEADERS frame waits for its CONTINUATIONs
        self.frames_done = 0  # complete frames read: a partial one after them is new

    def _update_header_buffer(self, f: Frame | None) -> Frame | None:
        self.frames_done += 1
        if isinstance(f, HeadersFrame):
            if f.stream_id > self.last_opened:
                self.last_opened = f.stream_id
            else:
                self._control("HEADERS frames that open no stream")
            if "END_HEADERS" not in f.flags:
                self.in_block = True
                self.block_bytes = len(f.data)
                self.block_frames = 0
        elif isinstance(f, DataFrame):
            if not f.data and "END_STREAM" not in f.flags:
                self._control("empty DATA frames")
            elif self._gone(f.stream_id):
                # h2 answers each with RST_STREAM (and a WINDOW_UPDATE), no event.
                self._control("DATA frames on closed streams")
        elif isinstance(f, WindowUpdateFrame):
            if self.earned > 0:
                self.earned -= 1
            else:
                self._control("WINDOW_UPDATE frames")
        elif isinstance(f, SettingsFrame):
            self._control("SETTINGS frames")
        elif isinstance(f, RstStreamFrame):
            # A reset of an open stream is the rapid-reset check's to count
            # (per stream it took up, as its events arrive); one of a stream
            # already closed or never opened costs h2 work and nothing else.
            if self._gone(f.stream_id):
                self._control("RST_STREAM frames on closed streams")
        elif isinstance(f, ContinuationFrame) and self.in_block:
            self.block_bytes += len(f.data)
            self.block_frames += 1
            if self.block_bytes > self.block_limit or self.block_frames > MAX_CONTINUATIONS:
                raise HeaderBlockTooLarge(
                    f"header block over {self.block_limit} bytes or "
                    f"{MAX_CONTINUATIONS} CONTINUATION frames"
                )
            if "END_HEADERS" in f.flags:
                self.in_block = False
        elif f is not None and not isinstance(f, GoAwayFrame):
            # PING, PRIORITY, unknown types (and what h2 refuses anyway: a
            # CONTINUATION outside a block, PUSH_PROMISE from a client).
            self._control(
                "CONTINUATION frames outside a header block"
                if isinstance(f, ContinuationFrame)
                else "PING, PRIORITY or unknown frames"
            )
        return super()._update_header_buffer(f)

    def _gone(self, sid: int) -> bool:
        """The stream is closed (or forgotten): nothing it is sent is a request's."""
        stream = self.h2_streams.get(sid)
        return stream is None or bool(stream.closed)

    def _control(self, what: str) -> None:
        if not self.controls.spend(self.now):
            raise ControlFlood(
                f"too many {what}: over {self.controls.limit} control frames per "
                f"{RATE_WINDOW:.0f} s"
            )

    @property
    def partial(self) -> bool:
        """A frame, or a header block, is only partly received."""
        return self.in_block or bool(self._data)


@mypyc_attr(native_class=False)
class _H2(H2Connection):
    """h2's connection with the stream limit left to us.

    h2 ends the whole connection (PROTOCOL_ERROR) when a client opens more
    streams than SETTINGS_MAX_CONCURRENT_STREAMS allows, which a client may do
    before it has read our SETTINGS; nginx refuses just the new stream
    (REFUSED_STREAM), and so does H2ClientConnection, which counts streams.
    """

    MAX_CLOSED_STREAMS = CLOSED_STREAMS_KEPT

    @property
    def open_inbound_streams(self) -> int:
        super().open_inbound_streams  # noqa: B018 -- h2 forgets closed streams here
        return 0


class _Allowance:
    """At most ``limit`` events per RATE_WINDOW seconds, in bursts of up to
    ``limit`` (a token bucket); 0: no limit."""

    __slots__ = ("limit", "stamp", "tokens")

    def __init__(self, limit: int, now: float) -> None:
        self.limit = limit
        self.tokens = float(limit)
        self.stamp = now

    def spend(self, now: float) -> bool:
        limit = self.limit
        if limit <= 0:
            return True
        tokens = min(float(limit), self.tokens + (now - self.stamp) * limit / RATE_WINDOW)
        self.stamp = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


def h2_settings(settings: ProxySettings) -> dict[SettingCodes, int]:
    """The SETTINGS ingressd sends. No SETTINGS_ENABLE_CONNECT_PROTOCOL:
    WebSocket stays on HTTP/1.1 (extended CONNECT is refused with 405)."""
    return {
        SettingCodes.MAX_CONCURRENT_STREAMS: settings.http2_max_concurrent_streams,
        SettingCodes.MAX_HEADER_LIST_SIZE: settings.http2_max_header_list_size,
        SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
        SettingCodes.ENABLE_PUSH: 0,
    }


class H2ClientConnection(asyncio.Protocol, Connection):
    """One HTTP/2 client connection: its streams, their output, its timers."""

    __slots__ = (
        "_backlog",
        "_close_timer",
        "_frames_mark",
        "_goaway_last",
        "_header_since",
        "_idle_deadline",
        "_new_streams",
        "_out",
        "_pumping",
        "_resets",
        "_scheduled",
        "_timer",
        "_write_blocked_since",
        "_write_paused",
        "closing",
        "frames",
        "h2",
        "loop",
        "out_total",
        "paused_streams",
        "peer",
        "ready",
        "settings",
        "source",
        "state",
        "streams",
        "transport",
    )

    def __init__(self, state: ProxyState, source: str | None = None) -> None:
        self.state = state
        self.source = source  # the client's address from a PROXY protocol header
        self.settings = settings = state.settings
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        conn = _H2(
            config=H2Configuration(
                client_side=False,
                header_encoding=None,
                # What we send is built here: lower-case names, no
                # connection-specific fields, pseudo-headers first. h2 still
                # normalises it (whitespace, never-indexed cookies); its
                # checks on top cost more per response than they find.
                validate_outbound_headers=False,
                # Received heads are checked (and cookies joined) by
                # h2_head.checked_request_head: one pass for a plain head,
                # h2's own checks for any other.
                validate_inbound_headers=False,
                normalize_inbound_headers=False,
            )
        )
        conn.local_settings = Settings(client=False, initial_values=h2_settings(settings))
        # In force from the first header block, not only once the client has
        # acknowledged our SETTINGS.
        conn.decoder.max_header_list_size = settings.http2_max_header_list_size
        now = self.loop.time()
        self.frames = conn.incoming_buffer = _Frames(
            settings.http2_max_header_list_size,
            _Allowance(settings.http2_max_control_frames, now),
        )
        self.frames.h2_streams = conn.streams
        self.h2 = conn
        self.streams: dict[int, H2Stream] = {}  # being answered
        self.ready: dict[int, H2Stream] = {}  # with output waiting, in turn
        self.out_total = 0  # response bytes queued in streams
        self.paused_streams = 0  # streams whose upstream is paused (client_paused)
        self._scheduled = False  # a pump is due in this loop iteration
        self._out: list[bytes] = []  # frames taken from h2, not yet written
        self._pumping = False
        self._write_paused = False
        self._backlog = b""  # read, not yet handed to h2 (READ_SLICE)
        self._write_blocked_since: float | None = None
        self._header_since: float | None = None
        self._frames_mark = 0  # frames.frames_done after the last read
        self._idle_deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._goaway_last: int | None = None  # draining: streams above are refused
        self._new_streams = 0  # opened in this read
        self._resets = _Allowance(settings.http2_max_resets, now)
        self.closing = False

    # -- connection lifetime ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        state = self.state
        self.peer = peer_of(transport, True, trusted_for(self.settings, self.source), self.source)
        h2c = self.h2
        h2c.initiate_connection()
        h2c.increment_flow_control_window(CONN_WINDOW - 65535)
        if len(state.connections) >= self.settings.max_connections and not state.make_room():
            # As client_h1's 503, in HTTP/2's terms: nothing was processed.
            self._goaway(ErrorCodes.REFUSED_STREAM, b"too many connections")
            return
        state.connections.add(self)
        state.stats.accepted += 1
        self._write()
        self._idle_deadline = self.loop.time() + self.settings.keepalive_timeout
        self._arm()

    @property
    def idle(self) -> bool:
        return not self.streams and not self.closing

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.state.connections.discard(self)
        for timer in (self._timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._close_timer = None
        streams, self.streams = self.streams, {}
        self.ready.clear()
        for stream in streams.values():
            stream.drop()

    def close(self) -> None:
        """GOAWAY (nothing more is processed) and close."""
        if not self.closing:
            self._goaway(ErrorCodes.NO_ERROR, b"")

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def shutdown(self) -> None:
        """GOAWAY naming the last stream taken; those finish, then the
        connection closes (the proxy's grace bounds how long)."""
        if self.closing or self._goaway_last is not None:
            return
        if not self.streams:
            self.close()
            return
        # h2's own GOAWAY would close its state machine, and the streams under
        # way with it: this one is written beside it.
        self._goaway_last = last = self.h2.highest_inbound_stream_id
        self._take()
        self._out.append(GoAwayFrame(stream_id=0, last_stream_id=last, error_code=0).serialize())
        self._write()

    def _goaway(self, code: ErrorCodes | None, reason: bytes = b"") -> None:
        """End the connection: GOAWAY (None: h2 queued its own), then close;
        streams under way are dropped."""
        if self.closing:
            return
        self.closing = True
        transport = self.transport
        if code is not None:
            with contextlib.suppress(H2Error):
                self.h2.close_connection(
                    error_code=code,
                    additional_data=reason or None,
                    # Never above what an earlier GOAWAY (draining) named.
                    last_stream_id=self._goaway_last,
                )
        self._take()
        if transport is not None:
            if self._out:
                transport.writelines(self._out)
                self._out = []
            transport.close()
            # A client that does not read would keep the close waiting.
            self._close_timer = self.loop.call_later(CLOSE_LINGER, transport.abort)
        streams, self.streams = self.streams, {}
        self.ready.clear()
        for stream in streams.values():
            stream.drop()

    def _calm(self, why: str) -> None:
        log.warning("HTTP/2 client %s: %s: connection closed", self.peer_ip, why)
        self._goaway(ErrorCodes.ENHANCE_YOUR_CALM, why.encode())

    @property
    def peer_ip(self) -> str:
        return self.peer.client_ip if self.peer is not None else "?"

    # -- bytes in ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self._backlog:
            self._backlog += data  # read while pausing took effect
            return
        if len(data) > READ_SLICE:
            self._backlog = data[READ_SLICE:]
            data = data[:READ_SLICE]
            self.transport.pause_reading()  # type: ignore[union-attr]
            self.loop.call_soon(self._next_slice)
        self._receive(data)

    def _next_slice(self) -> None:
        data = self._backlog
        if self.closing or not data:
            self._backlog = b""
            return
        if len(data) > READ_SLICE:
            self._backlog = data[READ_SLICE:]
            data = data[:READ_SLICE]
            self.loop.call_soon(self._next_slice)
        else:
            self._backlog = b""
            self.transport.resume_reading()  # type: ignore[union-attr]
        self._receive(data)

    def _receive(self, data: bytes) -> None:
        self._new_streams = 0
        now = self.frames.now = self.loop.time()
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as exc:
            # h2 queued its GOAWAY: PROTOCOL_ERROR, ENHANCE_YOUR_CALM for an
            # oversized header list or block, FLOW_CONTROL_ERROR... Malformed
            # requests are connection errors in h2, which RFC 9113 5.4 allows.
            calm = exc.error_code == ErrorCodes.ENHANCE_YOUR_CALM
            level = logging.WARNING if calm else logging.INFO
            log.log(level, "HTTP/2 client %s: %s: connection closed", self.peer_ip, exc)
            self._goaway(None)
            return
        for event in events:
            if self.closing:
                return
            self._event(event, now)
        if self.closing:
            return
        if self.ready:
            self.pump()
        self._write()
        frames = self.frames
        if frames.partial:
            # The header timeout bounds how long one frame, or one header block,
            # takes to arrive. A read that completed frames and ended inside the
            # next one started a new frame: a client sending whole frames steadily
            # (read boundaries fall anywhere) is never cut, a trickled frame or a
            # block whose CONTINUATIONs trickle is.
            if self._header_since is None:
                self._header_since = now
                self._arm()
            elif frames.frames_done != self._frames_mark and not frames.in_block:
                self._header_since = now
        else:
            self._header_since = None
        self._frames_mark = frames.frames_done

    def _event(self, event: Event, now: float) -> None:
        if isinstance(event, DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.data(event.data or b"", event.flow_controlled_length or 0, now)
            elif event.flow_controlled_length:
                # A stream answered already: its window matters no more, the
                # connection's does.
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, RequestReceived):
            self._request(event, now)
        elif isinstance(event, StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.end()
        elif isinstance(event, WindowUpdated):
            if self.ready:
                self.pump()
        elif isinstance(event, StreamReset):
            self._reset_by_client(event.stream_id, now)
        elif isinstance(event, RemoteSettingsChanged):
            # Counted as a control frame by _Frames, as PING, PRIORITY and the rest.
            if SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings and self.ready:
                self.pump()
        elif isinstance(event, TrailersReceived):
            # Request trailers are not passed on (an HTTP/1.1 upstream gets
            # none), but malformed ones end the connection.
            try:
                check_trailers(event.headers or [])
            except ProtocolError as exc:
                self._malformed(exc)
        elif isinstance(event, ConnectionTerminated):
            # The client's GOAWAY: h2 sends nothing more, so nothing can finish.
            self._goaway(ErrorCodes.NO_ERROR, b"")

    def _malformed(self, exc: ProtocolError) -> None:
        # As h2 ends a connection whose peer broke HTTP/2's rules (RFC 9113
        # 5.4 allows a connection error for a malformed request).
        log.info("HTTP/2 client %s: %s: connection closed", self.peer_ip, exc)
        self._goaway(ErrorCodes.PROTOCOL_ERROR)

    def _request(self, event: RequestReceived, now: float) -> None:
        try:
            headers = checked_request_head(event.headers or [])
        except ProtocolError as exc:
            self._malformed(exc)
            return
        sid = event.stream_id
        limit = self.settings.http2_max_concurrent_streams
        if (
            len(self.streams) >= limit
            or self._new_streams >= 2 * limit
            or (self._goaway_last is not None and sid > self._goaway_last)
        ):
            # nginx's answers to too many streams, at once or in one read
            # (its rapid-reset mitigation), and to streams after GOAWAY.
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            return
        self._new_streams += 1
        stream = H2Stream(self, sid)
        ex = Exchange(stream, self.state)
        stream.ex = ex
        has_body = event.stream_ended is None
        ex.rejection = read_head(ex, headers, self.settings, has_body)
        if has_body:
            stream.body_deadline = now + self.settings.client_body_timeout
        else:
            stream.remote_done = True  # its StreamEnded event follows
        self.streams[sid] = stream
        if len(self.streams) == 1:
            self._arm()
        ex.begin()

    def _reset_by_client(self, sid: int, now: float) -> None:
        stream = self.streams.pop(sid, None)
        if stream is None:
            return
        self.ready.pop(sid, None)
        stream.drop()
        # Reset before its response ended: what a rapid-reset attack does
        # with every stream (CVE-2023-44487).
        if not self._resets.spend(now):
            self._calm(
                f"streams reset before their response ended "
                f"(over {self.settings.http2_max_resets} per 10 s)"
            )
        elif not self.streams:
            self._went_idle()

    # -- bytes out --------------------------------------------------------------------

    def _take(self) -> int:
        """Move what h2 framed to the write queue; its size."""
        data = self.h2.data_to_send()
        if data:
            self._out.append(data)
        return len(data)

    def _write(self) -> None:
        self._take()
        if not self._out or self.transport is None:
            return
        transport = self.transport
        out = self._out
        self._out = []
        # Not joined into one TLS record as client_h1.flush does: curl (7.88)
        # fails a stream whose early response (a 413 before the whole body) and
        # the RST_STREAM (NO_ERROR) ending its upload arrive in one record
        # (tests/e2e/test_e2e_configmap.py, HTTP/2 413).
        transport.writelines(out)
        if transport.get_write_buffer_size() > OUT_LIMIT:
            log.warning(
                "HTTP/2 client %s does not read: over %d bytes wait to be sent; dropped",
                self.peer_ip,
                OUT_LIMIT,
            )
            transport.abort()

    def pump(self) -> None:
        """Send queued response data as the flow-control windows allow, a
        frame per stream in turn, until the windows, the queues or the
        transport's buffer run out."""
        if self._pumping or self.closing:
            return
        self._pumping = True
        try:
            while self.ready and not self._write_paused:
                moved = batch = 0
                for stream in list(self.ready.values()):
                    sent = stream.send()
                    moved += sent
                    batch += sent
                    if batch >= PUMP_BATCH:
                        # Hand it to the transport now, which says when its
                        # buffer is full: the pump stops there, whatever
                        # the number of streams with data.
                        self._write()
                        batch = 0
                        if self._write_paused or self.closing:
                            break
                self._write()
                if not moved or self.closing:
                    break
        finally:
            self._pumping = False
        if self.paused_streams and self.out_total < CONN_HIGH:
            for stream in list(self.streams.values()):
                if stream.upstream_paused and stream.out_bytes <= stream.low:
                    stream.resume_upstream()

    def schedule(self) -> None:
        """Pump (and write) once this loop iteration's upstream reads are in:
        a response's data and its end, or several streams' data, go out
        together."""
        if not self._scheduled and not self.closing:
            self._scheduled = True
            self.loop.call_soon(self._scheduled_pump)

    def _scheduled_pump(self) -> None:
        self._scheduled = False
        if self.closing:
            return
        if self.ready:
            self.pump()
        else:
            self._write()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._write_blocked_since = self.loop.time()
        self._arm()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._write_blocked_since = None
        if self.ready:
            self.pump()

    # -- streams report back ----------------------------------------------------------

    def finished(self, stream: H2Stream) -> None:
        """``stream`` is answered (or dropped): it no longer counts."""
        # Its exchange is complete (or aborted): the stream's part is over, and
        # the cycle between them is broken for the reference counter.
        stream.ex = None
        if stream.upstream_paused:
            stream.upstream_paused = False
            self.paused_streams -= 1
        if self.streams.pop(stream.sid, None) is None:
            return
        self.ready.pop(stream.sid, None)
        if not self.streams:
            self._went_idle()

    def _went_idle(self) -> None:
        if self._goaway_last is not None:
            self.close()  # draining, and the last stream is done
            return
        self._idle_deadline = self.loop.time() + self.settings.keepalive_timeout

    # -- timers -------------------------------------------------------------------------
    # One timer per connection: a tick while streams are open (their body and
    # send timeouts), else the idle deadline.

    def _arm(self) -> None:
        if self.closing:
            return
        if self.streams or self._header_since is not None or self._write_blocked_since:
            when = self.loop.time() + TICK
        else:
            when = self._idle_deadline
        timer = self._timer
        if timer is not None:
            if timer.when() <= when:
                return
            timer.cancel()
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closing:
            return
        now = self.loop.time()
        settings = self.settings
        if self._header_since is not None and now - self._header_since >= (
            settings.client_header_timeout
        ):
            log.info("HTTP/2 client %s: request header timeout", self.peer_ip)
            self._goaway(ErrorCodes.PROTOCOL_ERROR, b"request header timeout")
            return
        blocked = self._write_blocked_since
        if blocked is not None and now - blocked >= settings.client_send_timeout:
            log.info("HTTP/2 client %s: send timeout (not reading)", self.peer_ip)
            self.transport.abort()  # type: ignore[union-attr]
            return
        if self.streams:
            for stream in list(self.streams.values()):
                stream.check(now)
        elif now >= self._idle_deadline and self._header_since is None and blocked is None:
            self.close()  # the keep-alive timeout: GOAWAY NO_ERROR, as nginx
            return
        self._arm()


class H2Stream(ClientStream):
    """One request on an HTTP/2 connection: the ClientStream of its exchange."""

    __slots__ = (
        "blocked_since",
        "body_deadline",
        "conn",
        "end_pending",
        "ex",
        "high",
        "low",
        "out",
        "out_bytes",
        "paused",
        "remote_done",
        "sent_end",
        "sid",
        "trailers",
        "unacked",
        "upstream_paused",
    )

    def __init__(self, conn: H2ClientConnection, sid: int) -> None:
        peer = conn.peer
        assert peer is not None
        self.conn = conn
        self.sid = sid
        self.ex: Exchange | None = None
        self.loop = conn.loop
        self.client_ip = peer.client_ip
        self.trusted = peer.trusted
        self.tls = True
        self.tls_names = peer.tls_names
        self.tls_object = peer.tls_object
        self.server_port = peer.server_port
        self.forwarded_tail = peer.forwarded_tail
        self.closing = False  # reset, or the connection is going: nothing more is sent
        self.out: deque[bytes | memoryview] = deque()  # response data not sent yet
        self.out_bytes = 0
        self.end_pending = False  # the response is complete: END_STREAM after ``out``
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.sent_end = False
        self.upstream_paused = False  # the exchange was told client_paused(True)
        # Response bytes queued on the stream before its upstream is paused, and
        # below which it is read again (proxy-buffering sets them: read_ahead).
        self.high = STREAM_HIGH
        self.low = STREAM_LOW
        self.blocked_since: float | None = None  # output waiting on a closed window
        # Request side: why the exchange holds the body back (pause_body bits);
        # body bytes not acknowledged yet; END_STREAM received; the body timeout.
        self.paused = 0
        self.unacked = 0
        self.remote_done = False
        self.body_deadline: float | None = None

    # -- request body -----------------------------------------------------------------

    def data(self, data: bytes, flow_len: int, now: float) -> None:
        self.unacked += flow_len
        if self.body_deadline is not None:
            self.body_deadline = now + self.conn.settings.client_body_timeout
        ex = self.ex
        if data and ex is not None:
            ex.request_body(data)
        self._ack()

    def end(self) -> None:
        self.remote_done = True
        self.body_deadline = None
        if self.ex is not None:
            self.ex.request_done()

    def _ack(self) -> bool:
        """Acknowledge body bytes the exchange passed on (or discarded)."""
        ex = self.ex
        if (
            self.unacked
            and not self.paused
            and ex is not None
            and (ex.upstream is not None or ex.finished or ex.spooling)
        ):
            self.conn.h2.acknowledge_received_data(self.unacked, self.sid)
            self.unacked = 0
            return True
        return False

    def pause_body(self, reason: int) -> None:
        self.paused |= reason

    def read_ahead(self, high: int, low: int) -> None:
        self.high = high or STREAM_HIGH
        self.low = low if high else STREAM_LOW

    def resume_body(self, reason: int) -> None:
        # Also called when a body held while connecting was sent on: its
        # acknowledgements may go.
        self.paused &= ~reason
        if self._ack():
            self.conn.schedule()

    # -- the response (ClientStream) ------------------------------------------------------

    def interim(self, ex: Outgoing, status: int, reason: bytes) -> None:
        if not self.closing:
            self._headers([(b":status", _status(status))], False)

    def response_head(
        self,
        ex: Outgoing,
        status: int,
        reason: bytes,
        headers: http.Headers,
        chunked: bool,
        length: bytes | None,
    ) -> None:
        if self.closing:
            return
        out = _response_fields(status, headers)
        if length is not None:
            out.append((b"content-length", length))
        bodiless = ex.method == b"HEAD" or status == 204 or status == 304
        self._headers(out, bodiless)

    def response_body(self, ex: Outgoing, data: bytes) -> None:
        if self.closing or self.sent_end or not data:
            return
        self.out.append(data)
        self.out_bytes += len(data)
        self._count(len(data))
        conn = self.conn
        conn.out_total += len(data)
        conn.ready[self.sid] = self
        if not self.upstream_paused and (self.out_bytes > self.high or conn.out_total > CONN_HIGH):
            self.upstream_paused = True
            conn.paused_streams += 1
            if self.ex is not None:
                self.ex.client_paused(True)

    def flush(self) -> None:
        self.conn.schedule()

    def response_end(self, ex: Outgoing, trailers: http.Headers | None) -> None:
        if self.closing or self.sent_end:
            return
        if trailers:
            kept = [(n.lower(), v) for n, v in http.response_headers(trailers)]
            self.trailers = [h for h in kept if h[0] not in _CONNECTION_SPECIFIC] or None
        self.end_pending = True
        self.conn.ready[self.sid] = self
        self.conn.schedule()

    def local_response(
        self,
        ex: Outgoing,
        status: int,
        body: bytes,
        location: str | None,
        headers: http.Headers | tuple[tuple[bytes, bytes], ...],
    ) -> None:
        if self.closing:
            return
        out = _response_fields(status, headers, local=True)
        if status == 204:
            body = b""  # neither body nor content-length
        else:
            # nginx's page (http.local_response says which bodies come here)
            if body and not any(name.lower() == b"content-type" for name, _ in headers):
                out.append((b"content-type", b"text/html"))
            out.append((b"content-length", str(len(body)).encode()))
        if location is not None:
            out.append((b"location", location.encode("latin-1", "replace")))
        if ex.method == b"HEAD":
            body = b""
        self._headers(out, not body)
        if body and not self.closing:
            self.out.append(body)
            self.out_bytes += len(body)
            self._count(len(body))
            self.conn.out_total += len(body)
            self.end_pending = True
            self.conn.ready[self.sid] = self
            self.conn.schedule()

    def abort_response(self, ex: Outgoing) -> None:
        """Too late for an error status: the stream is reset, so the client
        sees it cut off (the connection's other streams go on)."""
        self.reset(ErrorCodes.INTERNAL_ERROR)

    def close(self) -> None:
        self.reset(ErrorCodes.INTERNAL_ERROR)

    def exchange_done(self, ex: Outgoing) -> None:
        if self._ack():
            self.conn.schedule()

    def start_tunnel(
        self, upstream: Tunnel, tail: bytes, early: list[bytes], slot: Slot | None
    ) -> None:
        # Never asked for: upgrades are HTTP/1.1's (extended CONNECT is refused).
        upstream.close()
        if slot is not None:
            slot.release()
        self.reset(ErrorCodes.INTERNAL_ERROR)

    # -- framing ----------------------------------------------------------------------------

    def _count(self, sent: int) -> None:
        """Bytes sent to the client, for the access log and metrics."""
        ex = self.ex
        if ex is not None:
            ex.sent += sent

    def _headers(self, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        conn = self.conn
        try:
            conn.h2.send_headers(self.sid, headers, end_stream=end)
        except H2Error as exc:
            log.warning("HTTP/2 stream %d: cannot send the response head: %s", self.sid, exc)
            self.reset(ErrorCodes.INTERNAL_ERROR)
            return
        self._count(conn._take())
        if end:
            self._sent_end()

    def send(self) -> int:
        """One turn of the connection's pump: a frame, if the windows allow;
        the bytes it framed (0: none)."""
        conn = self.conn
        h2c = conn.h2
        sid = self.sid
        try:
            if self.out:
                window = h2c.local_flow_control_window(sid)
                if window <= 0:
                    if self.blocked_since is None:
                        self.blocked_since = conn.loop.time()
                    return 0
                chunk = self._take(min(window, h2c.max_outbound_frame_size))
                last = not self.out and self.end_pending and self.trailers is None
                h2c.send_data(sid, chunk, end_stream=last)
                # The client may acknowledge it with a WINDOW_UPDATE for the
                # stream and one for the connection: those are not a flood.
                conn.frames.earned += 2
                self.blocked_since = None
                if last:
                    self._sent_end()
                elif not self.out and not self.end_pending:
                    conn.ready.pop(sid, None)
                if (
                    self.upstream_paused
                    and self.out_bytes <= self.low
                    and conn.out_total < CONN_HIGH
                ):
                    self.resume_upstream()
                return len(chunk) + 9
            if self.end_pending:
                if self.trailers:
                    h2c.send_headers(sid, self.trailers, end_stream=True)
                else:
                    h2c.end_stream(sid)
                self._sent_end()
                return 9
        except H2Error as exc:
            log.debug("HTTP/2 stream %d: %s", sid, exc)
            self.reset(ErrorCodes.INTERNAL_ERROR)
            return 0
        conn.ready.pop(sid, None)
        return 0

    def _take(self, size: int) -> bytes | memoryview:
        out = self.out
        first = out[0]
        if len(first) <= size:
            out.popleft()
            chunk = first
        else:
            view = memoryview(first)
            chunk = view[:size]
            out[0] = view[size:]
        n = len(chunk)
        self.out_bytes -= n
        self.conn.out_total -= n
        return chunk

    def resume_upstream(self) -> None:
        self.upstream_paused = False
        self.conn.paused_streams -= 1
        if self.ex is not None and not self.closing:
            self.ex.client_paused(False)

    def _sent_end(self) -> None:
        """END_STREAM went out: the response is complete."""
        self.sent_end = True
        conn = self.conn
        if not self.remote_done:
            # The rest of the request is not needed (RFC 9113 8.1).
            self.remote_done = True
            with contextlib.suppress(H2Error):
                conn.h2.reset_stream(self.sid, ErrorCodes.NO_ERROR)
            self._release()
        conn.finished(self)

    def reset(self, code: ErrorCodes) -> None:
        """End the stream here with RST_STREAM; its exchange is dropped."""
        if self.closing or self.sent_end:
            return
        conn = self.conn
        if not self.sent_end:
            with contextlib.suppress(H2Error):
                conn.h2.reset_stream(self.sid, code)
        self.drop()
        conn.finished(self)
        conn.schedule()

    def drop(self) -> None:
        """Nothing more is sent on this stream: its exchange (if still running)
        is aborted, its queue freed."""
        if self.closing:
            return
        self.closing = True
        self.conn.out_total -= self.out_bytes
        self.out.clear()
        self.out_bytes = 0
        ex = self.ex
        if ex is not None and not ex.finished:
            ex.abort()
        self._release()
        if self.upstream_paused:
            self.upstream_paused = False
            self.conn.paused_streams -= 1
        self.ex = None

    def _release(self) -> None:
        if self.unacked and not self.conn.closing:
            # The connection's window is given back; the stream's is moot.
            self.conn.h2.acknowledge_received_data(self.unacked, self.sid)
        self.unacked = 0

    # -- timeouts ---------------------------------------------------------------------------

    def check(self, now: float) -> None:
        """The connection's tick: body and send timeouts."""
        settings = self.conn.settings
        deadline = self.body_deadline
        if (
            deadline is not None
            and now >= deadline
            and not self.paused
            and not self.unacked
            and not self.remote_done
        ):
            self._body_timeout()
            return
        if (self.paused or self.unacked) and deadline is not None:
            # Held back by ingressd itself: the client is not the slow one.
            self.body_deadline = now + settings.client_body_timeout
        since = self.blocked_since
        if since is not None and now - since >= settings.client_send_timeout:
            log.info(
                "HTTP/2 client %s: stream %d: window closed for %.0f s (client send timeout)",
                self.client_ip,
                self.sid,
                now - since,
            )
            self.reset(ErrorCodes.CANCEL)

    def _body_timeout(self) -> None:
        ex = self.ex
        self.body_deadline = None
        if ex is None or ex.response_started or ex.finished:
            self.reset(ErrorCodes.CANCEL)
            return
        # As nginx: no answer, the stream reset (ngx_http_v2_close_stream sends
        # RST_STREAM PROTOCOL_ERROR for a timed-out stream), 408 in the access log.
        log.info("HTTP/2 client %s: stream %d: request body timeout", self.client_ip, self.sid)
        if not ex.logged:
            ex.record(408)
        self.reset(ErrorCodes.PROTOCOL_ERROR)
