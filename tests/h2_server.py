"""An HTTP/2 server made with h2 on a real socket (prior knowledge, or TLS
with ALPN), scripted per test: what grpcio would not do on demand (hold a
window shut, say GOAWAY mid-call, reset, refuse, send oversized heads).

It runs on the event loop it is started on (a test's, or ``BackgroundLoop``'s).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from ingressd.proxy.http import Headers

LOCALHOST = "127.0.0.1"


@dataclass
class Request:
    headers: Headers
    body: bytes = b""
    ended: bool = False
    reset: int | None = None  # the error code of the client's RST_STREAM


@dataclass
class ServerConn:
    """One client connection to the test server, and what it received."""

    h2: h2.connection.H2Connection
    writer: asyncio.StreamWriter
    requests: dict[int, Request] = field(default_factory=dict)
    closed: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.closed:
            self.writer.write(data)

    def respond(
        self,
        stream_id: int,
        body: bytes = b"",
        trailers: Headers | None = None,
        headers: Headers | None = None,
        end: bool = True,
    ) -> None:
        head = [(b":status", b"200"), (b"content-type", b"application/grpc"), *(headers or [])]
        self.h2.send_headers(stream_id, head, end_stream=end and not body and not trailers)
        if body:
            self.send(stream_id, body, end=end and not trailers)
        if trailers:
            self.h2.send_headers(stream_id, trailers, end_stream=True)
        self.flush()

    def send(self, stream_id: int, data: bytes, end: bool = False) -> None:
        """As much of ``data`` as the windows allow (the rest is dropped: tests size it)."""
        size = self.h2.max_outbound_frame_size
        while data:
            room = min(self.h2.local_flow_control_window(stream_id), size)
            if room <= 0:
                break
            self.h2.send_data(stream_id, data[:room])
            data = data[room:]
        if end and not data:
            self.h2.end_stream(stream_id)
        self.flush()


Handler = Callable[[ServerConn, int, Request], None]


def echo(conn: ServerConn, stream_id: int, req: Request) -> None:
    conn.respond(stream_id, req.body, [(b"grpc-status", b"0"), (b"x-trail", b"t")])


class H2Server:
    """An HTTP/2 server (prior knowledge) on 127.0.0.1; ``handler`` answers
    each request once it has ended; ``settings`` are announced at start;
    ``auto_ack``: give back the window of request bodies as they come."""

    def __init__(
        self,
        handler: Handler | None = echo,
        settings: dict[int, int] | None = None,
        auto_ack: bool = True,
        on_headers: Handler | None = None,
    ) -> None:
        self.handler = handler
        self.on_headers = on_headers
        self.settings = settings or {}
        self.auto_ack = auto_ack
        self.conns: list[ServerConn] = []
        self.changed = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None
        self.ssl: ssl.SSLContext | None = None
        self.alpn: list[str | None] = []

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> H2Server:
        self.ssl = ssl_context
        self._server = await asyncio.start_server(self._serve, LOCALHOST, 0, ssl=ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in self.conns:
                conn.closed = True
                conn.writer.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.alpn.append(ssl_object.selected_alpn_protocol())
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        conn = ServerConn(h2.connection.H2Connection(config=config), writer)
        conn.h2.local_settings = h2.settings.Settings(client=False, initial_values=self.settings)
        self.conns.append(conn)
        conn.h2.initiate_connection()
        conn.flush()
        try:
            while not conn.closed:
                data = await asyncio.wait_for(reader.read(65536), 30)
                if not data:
                    break
                for event in conn.h2.receive_data(data):
                    self._event(conn, event)
                conn.flush()
                conn.changed.set()
                self.changed.set()
        except (OSError, TimeoutError, h2.exceptions.ProtocolError):
            pass
        finally:
            conn.closed = True
            conn.changed.set()
            self.changed.set()
            writer.close()

    def _event(self, conn: ServerConn, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            req = conn.requests[event.stream_id] = Request(list(event.headers))
            if self.on_headers is not None:
                self.on_headers(conn, event.stream_id, req)
        elif isinstance(event, h2.events.DataReceived):
            conn.requests[event.stream_id].body += event.data
            if self.auto_ack:
                conn.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            req = conn.requests[event.stream_id]
            req.ended = True
            if self.handler is not None:
                self.handler(conn, event.stream_id, req)
        elif isinstance(event, h2.events.StreamReset) and event.stream_id in conn.requests:
            conn.requests[event.stream_id].reset = event.error_code
