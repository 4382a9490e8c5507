"""HTTP/2 clients for the tests, over TLS with ALPN h2 on 127.0.0.1.

``H2Client`` is a well-behaved client on the ``h2`` package (the sans-IO
library httpx and hypercorn use) over a blocking TLS socket: requests,
responses, trailers, resets, flow control it can hold back on purpose.
``RawH2`` sends frames made with ``hyperframe``/``hpack`` as they are, for the
tests that misbehave on purpose (floods, oversized header blocks), and reads
back what the server sends as frames. Every read has a deadline.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    InformationalResponseReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings
from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
)

LOCALHOST = "127.0.0.1"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

Headers = list[tuple[bytes, bytes]]


def tls_socket(
    port: int, server_name: str, alpn: Sequence[str] = ("h2",), timeout: float = 5.0
) -> ssl.SSLSocket:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(list(alpn))
    raw = socket.create_connection((LOCALHOST, port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname=server_name)


@dataclass
class Response:
    status: int = 0
    headers: Headers = field(default_factory=list)
    informational: list[int] = field(default_factory=list)
    body: bytes = b""
    trailers: Headers = field(default_factory=list)
    ended: bool = False
    reset: int | None = None  # RST_STREAM error code from the server

    def header(self, name: bytes) -> bytes | None:
        values = [v for n, v in self.headers if n == name]
        return b", ".join(values) if values else None

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class H2Client:
    """One HTTP/2 connection, driven by hand: ``request`` then ``response``."""

    def __init__(
        self,
        port: int,
        server_name: str,
        *,
        settings: dict[SettingCodes | int, int] | None = None,
        validate: bool = True,
        auto_ack: bool = True,
        timeout: float = 5.0,
    ) -> None:
        self.sock = tls_socket(port, server_name, timeout=timeout)
        self.alpn = self.sock.selected_alpn_protocol()
        config = H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=validate,
            normalize_outbound_headers=validate,
            split_outbound_cookies=False,
        )
        self.conn = H2Connection(config)
        if settings:
            self.conn.local_settings = Settings(client=True, initial_values=settings)
        # Acknowledge response data as it comes (False: hold it, so the
        # server's window for us closes).
        self.auto_ack = auto_ack
        self.responses: dict[int, Response] = {}
        self.terminated: ConnectionTerminated | None = None
        self.closed = False  # the server closed the socket
        self.conn.initiate_connection()
        self.flush()

    # -- sending ----------------------------------------------------------------------

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self,
        path: str,
        authority: str,
        *,
        method: str = "GET",
        headers: Iterable[tuple[str | bytes, str | bytes]] = (),
        body: bytes | None = None,
        end: bool = True,
        pseudo: Iterable[tuple[bytes, bytes]] = (),
    ) -> int:
        """Open a stream; ``end``: the request ends here (with ``body`` if any)."""
        sid = self.conn.get_next_available_stream_id()
        head: Headers = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            *pseudo,
            *((_b(n), _b(v)) for n, v in headers),
        ]
        self.responses[sid] = Response()
        self.conn.send_headers(sid, head, end_stream=end and not body)
        if body:
            self.send_body(sid, body, end=end)
        self.flush()
        return sid

    def send_body(self, sid: int, body: bytes, *, end: bool = False) -> None:
        """As much of ``body`` as the windows allow now; the rest is returned
        by ``send_body_all`` (which waits for windows)."""
        size = self.conn.max_outbound_frame_size
        for i in range(0, len(body), size):
            self.conn.send_data(sid, body[i : i + size], end_stream=end and i + size >= len(body))
        self.flush()

    def send_body_all(
        self, sid: int, body: bytes, *, end: bool = True, timeout: float = 30
    ) -> None:
        """Send ``body`` as the server opens the windows."""
        deadline = time.monotonic() + timeout
        view = memoryview(body)
        while view:
            window = self.conn.local_flow_control_window(sid)
            if window <= 0:
                if time.monotonic() >= deadline:
                    raise AssertionError("the server's window stayed closed")
                self.read(0.5)
                continue
            n = min(window, self.conn.max_outbound_frame_size, len(view))
            self.conn.send_data(sid, view[:n].tobytes(), end_stream=end and n == len(view))
            view = view[n:]
            self.flush()
        if end and not body:
            self.conn.end_stream(sid)
            self.flush()

    def reset(self, sid: int, code: int = 8) -> None:
        self.conn.reset_stream(sid, code)
        self.flush()

    # -- receiving --------------------------------------------------------------------

    def read(self, timeout: float) -> bool:
        """One read (up to ``timeout``); False when nothing came or the socket closed."""
        if self.closed:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, ssl.SSLWantReadError):
            return False
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
            self.closed = True
            return False
        if not data:
            self.closed = True
            return False
        try:
            events = self.conn.receive_data(data)
        except ProtocolError:
            self.closed = True
            return False
        for event in events:
            self._event(event)
        with contextlib.suppress(OSError):
            self.flush()
        return True

    def _event(self, event: object) -> None:
        if isinstance(event, ResponseReceived):
            r = self.responses.setdefault(event.stream_id, Response())
            r.headers = [(bytes(n), bytes(v)) for n, v in event.headers or []]
            r.status = int(dict(r.headers)[b":status"])
        elif isinstance(event, InformationalResponseReceived):
            r = self.responses.setdefault(event.stream_id, Response())
            r.informational.append(int(dict(event.headers or [])[b":status"]))
        elif isinstance(event, DataReceived):
            r = self.responses.setdefault(event.stream_id, Response())
            r.body += event.data or b""
            if self.auto_ack and event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, TrailersReceived):
            r = self.responses.setdefault(event.stream_id, Response())
            r.trailers = [(bytes(n), bytes(v)) for n, v in event.headers or []]
        elif isinstance(event, StreamEnded):
            self.responses.setdefault(event.stream_id, Response()).ended = True
        elif isinstance(event, StreamReset):
            self.responses.setdefault(event.stream_id, Response()).reset = event.error_code
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event

    def until(self, done: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what or done}")
            if not self.read(min(left, 1.0)) and self.closed and not done():
                raise AssertionError(f"connection closed while waiting for {what or done}")

    def response(self, sid: int, timeout: float = 10.0) -> Response:
        self.until(lambda: self.responses[sid].done, timeout, f"stream {sid}")
        return self.responses[sid]

    def get(self, path: str, authority: str, timeout: float = 10.0, **kwargs: object) -> Response:
        return self.response(self.request(path, authority, **kwargs), timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _b(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


class RawH2:
    """An HTTP/2 connection that sends frames as given (no state machine),
    and reads the server's frames back."""

    def __init__(self, port: int, server_name: str, timeout: float = 5.0) -> None:
        self.sock = tls_socket(port, server_name, timeout=timeout)
        self.alpn = self.sock.selected_alpn_protocol()
        self.encoder = Encoder()
        self._buf = b""
        self.frames: list[Frame] = []  # every frame received, in order
        self.closed = False
        self.send(PREFACE + SettingsFrame(0).serialize())

    def send(self, data: bytes) -> bool:
        """False when the server has closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.closed = True
            return False

    def headers_frame(
        self, sid: int, headers: Headers, *, end_stream: bool = True, end_headers: bool = True
    ) -> HeadersFrame:
        f = HeadersFrame(sid)
        f.data = self.encoder.encode(headers)
        if end_stream:
            f.flags.add("END_STREAM")
        if end_headers:
            f.flags.add("END_HEADERS")
        return f

    def get(
        self, sid: int, path: str, authority: str, extra: Sequence[tuple[bytes, bytes]] = ()
    ) -> bytes:
        """A GET's HEADERS frame, serialised."""
        head: Headers = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            *extra,
        ]
        return self.headers_frame(sid, head).serialize()

    def read(self, timeout: float) -> list[Frame]:
        """Frames that arrive within ``timeout`` (one read); [] on close or timeout."""
        if self.closed:
            return []
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except (TimeoutError, ssl.SSLWantReadError):
            return []
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
            self.closed = True
            return []
        if not data:
            self.closed = True
            return []
        self._buf += data
        out = []
        while len(self._buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self._buf[:9]))
            if len(self._buf) < 9 + length:
                break
            frame.parse_body(memoryview(self._buf[9 : 9 + length]))
            self._buf = self._buf[9 + length :]
            out.append(frame)
        self.frames += out
        return out

    def until_closed(self, timeout: float) -> None:
        """Read until the server closes the connection; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            if time.monotonic() >= deadline:
                raise AssertionError(f"the server kept the connection open {timeout} s")
            self.read(0.2)

    def goaway(self) -> GoAwayFrame | None:
        found = [f for f in self.frames if isinstance(f, GoAwayFrame)]
        return found[-1] if found else None

    def resets(self) -> dict[int, int]:
        """RST_STREAM received: stream id -> error code."""
        return {f.stream_id: f.error_code for f in self.frames if isinstance(f, RstStreamFrame)}

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> RawH2:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def continuation(sid: int, data: bytes, *, end_headers: bool = False) -> bytes:
    f = ContinuationFrame(sid)
    f.data = data
    if end_headers:
        f.flags.add("END_HEADERS")
    return f.serialize()
