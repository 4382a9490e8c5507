"""HTTP/2 upstream connections (proxy/upstream_h2.py) against a real HTTP/2
server made with h2 on a real socket, driven as the exchange drives them: the
pool hands out streams, a sink stands for the exchange.

The server is scripted per test, so that what grpcio would not do on demand
(hold a window shut, say GOAWAY mid-call, reset, refuse, send oversized heads)
can be checked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
from h2_server import H2Server, Request, ServerConn, echo
from hyperframe.frame import GoAwayFrame
from upstream_certs import issue, tls_server

from ingressd.model.backend import Backend, Endpoint
from ingressd.model.table import Route
from ingressd.policy.upstream_tls import H2_ALPN, upstream_tls
from ingressd.proxy import upstream_h2
from ingressd.proxy.http import Headers
from ingressd.proxy.streams import ClientStream, Outgoing
from ingressd.proxy.upstream_h1 import UpstreamHeadTooLarge, encode_request
from ingressd.proxy.upstream_h2 import (
    H2Pool,
    H2Stream,
    InvalidUpstreamResponse,
    StreamRefused,
    UpstreamProtocolError,
    UpstreamStreamReset,
    request_headers,
)
from ingressd.routing.decide import Forward

LOCALHOST = "127.0.0.1"
WAIT = 5.0  # every wait in these tests is bounded by this


async def until(predicate: Callable[[], Any], what: str) -> Any:
    """Wait (bounded) for ``predicate`` to hold, polling."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not (result := predicate()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
    return result


# -- the exchange's side ---------------------------------------------------------------------


class Client(ClientStream):
    """The ClientStream fields request_headers reads; flushes are counted."""

    def __init__(self, tls: bool = False, trusted: bool = False) -> None:
        self.loop = asyncio.get_running_loop()
        self.client_ip = "10.1.2.3"
        self.trusted = trusted
        self.tls = tls
        self.server_port = b"8443" if tls else b"8080"
        scheme = b"https" if tls else b"http"
        self.forwarded_tail = (
            b"\r\nX-Forwarded-Port: %b\r\nX-Forwarded-Proto: %b\r\nX-Scheme: %b"
            % (self.server_port, scheme, scheme)
        )
        if not trusted:
            self.forwarded_tail += b"\r\nX-Real-IP: " + self.client_ip.encode()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1


class Sink(Outgoing):
    """Stands for the exchange: the request it would send, and what it is told."""

    def __init__(self, endpoint: Endpoint, **fields: Any) -> None:
        self.client = fields.pop("client", None) or Client()
        self.method = b"POST"
        self.url = b"/test.Echo/Unary"
        self.headers = [(b"Host", b"svc.test"), (b"Content-Type", b"application/grpc")]
        self.host = b"svc.test"
        self.xff = None
        self.request_id = b"rid"
        self.conn_tokens = None
        self.req_chunked = False
        self.req_length = None
        self.no_body = False
        self.auth_headers = ()
        self.upgrade = False
        backend = Backend("default/echo:50051", (endpoint,))
        route = Route("/", "Prefix", backend, "default/echo")
        self.forward = Forward(endpoint, backend, "/test.Echo/Unary", route)
        for name, value in fields.items():
            setattr(self, name, value)
        self.status = 0
        self.head: Headers = []
        self.length: bytes | None = None
        self.chunked = False
        self.body = b""
        self.ended: bool | None = None
        self.trailers: Headers | None = None
        self.lost: Exception | None = None
        self.paused: list[bool] = []
        self.events = asyncio.Event()

    def real_ip(self) -> str:
        return self.client.client_ip

    def on_response_head(
        self, status: int, reason: bytes, headers: Headers, chunked: bool, length: bytes | None
    ) -> None:
        self.status, self.head, self.chunked, self.length = status, headers, chunked, length

    def on_response_body(self, data: bytes) -> None:
        self.body += data

    def flush(self) -> None:
        self.client.flush()

    def on_response_end(self, keep_alive: bool, trailers: Headers | None = None) -> None:
        self.ended, self.trailers = keep_alive, trailers
        self.stream.release()

    def on_upstream_lost(self, exc: Exception | None) -> None:
        self.lost = exc

    def on_upstream_paused(self, paused: bool) -> None:
        self.paused.append(paused)

    # The exchange's part: take a stream, send the request.
    stream: H2Stream

    async def start(
        self, pool: H2Pool, body: list[bytes] | None = None, end: bool = True, limit: int = 4096
    ) -> H2Stream:
        endpoint = self.forward.endpoint  # type: ignore[union-attr]
        stream = pool.take(endpoint) or await pool.connect(endpoint, 2.0)
        self.stream = stream
        stream.begin(self, False, limit)
        stream.send_request(self, body or [], end)
        return stream


@contextlib.asynccontextmanager
async def served(server: H2Server, **pool_args: Any) -> AsyncIterator[tuple[H2Server, H2Pool]]:
    await server.start()
    pool = H2Pool(**pool_args)
    try:
        yield server, pool
    finally:
        pool.close()
        await server.close()


def ep(server: H2Server) -> Endpoint:
    return Endpoint(LOCALHOST, server.port)


# -- requests ----------------------------------------------------------------------------------


def _h1_fields(head: bytes) -> dict[str, str]:
    lines = head.decode().split("\r\n")[1:]
    return {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}


@pytest.mark.parametrize("trusted", [False, True])
async def test_the_request_carries_what_the_http1_request_carries(trusted: bool) -> None:
    client = Client(tls=True, trusted=trusted)
    sink = Sink(
        Endpoint(LOCALHOST, 9),
        client=client,
        headers=[
            (b"Host", b"svc.test"),
            (b"Content-Type", b"application/grpc"),
            (b"grpc-timeout", b"5S"),
            (b"X-Custom", b"v"),
            (b"Authorization", b"Basic eA=="),
            (b"X-Named", b"hop"),
        ],
        xff=b"192.0.2.1",
        conn_tokens={b"x-named"},
        req_length=b"12",
        auth_headers=((b"X-Auth-User", b"alice"),),
    )
    assert sink.forward is not None
    sink.forward = sink.forward.copy(
        request_headers=(
            (b"Host", b"inside.svc"),
            (b"Authorization", b""),
            (b"X-Forwarded-Prefix", b"/p"),
        ),
    )
    fields = request_headers(sink)
    names = [name for name, _ in fields]
    assert names[:4] == [b":method", b":scheme", b":authority", b":path"]
    assert all(name == name.lower() for name in names)
    got = {name.decode(): value.decode() for name, value in fields}
    # upstream-vhost is the authority; X-Forwarded-Host stays the client's Host.
    assert (got[":authority"], got["x-forwarded-host"]) == ("inside.svc", "svc.test")
    assert (got[":method"], got[":scheme"], got[":path"]) == ("POST", "http", "/test.Echo/Unary")
    assert got["te"] == "trailers" and got["grpc-timeout"] == "5S"
    # The same fields as the HTTP/1.1 request, less what HTTP/2 puts elsewhere.
    h1 = _h1_fields(encode_request(sink))
    h2_fields = {k: v for k, v in got.items() if not k.startswith(":") and k != "te"}
    assert h2_fields == {k: v for k, v in h1.items() if k != "host"}
    assert "authorization" not in got and "x-named" not in got
    assert got["x-auth-user"] == "alice" and got["x-original-forwarded-for"] == "192.0.2.1"
    assert len(names) == len(set(names))


async def test_connection_specific_fields_are_never_sent() -> None:
    sink = Sink(
        Endpoint(LOCALHOST, 9),
        headers=[
            (b"Host", b"svc.test"),
            (b"Connection", b"keep-alive"),
            (b"Keep-Alive", b"5"),
            (b"Proxy-Connection", b"x"),
            (b"Upgrade", b"h2c"),
            (b"TE", b"gzip"),
            (b"Transfer-Encoding", b"chunked"),
        ],
    )
    names = {name for name, _ in request_headers(sink)}
    forbidden = {b"host", b"connection", b"keep-alive", b"proxy-connection", b"upgrade"}
    assert not names & forbidden
    assert [v for n, v in request_headers(sink) if n == b"te"] == [b"trailers"]


# -- responses -----------------------------------------------------------------------------------


async def test_a_call_with_trailers() -> None:
    async with served(H2Server()) as (server, pool):
        sink = Sink(ep(server))
        await sink.start(pool, [b"\x00\x00\x00\x00\x02hi"])
        await until(lambda: sink.ended is not None, "the response")
        assert (sink.status, sink.body, sink.chunked, sink.length) == (
            200,
            b"\x00\x00\x00\x00\x02hi",
            True,
            None,
        )
        assert sink.head == [(b"content-type", b"application/grpc")]
        assert sink.trailers == [(b"grpc-status", b"0"), (b"x-trail", b"t")]
        (req,) = server.conns[0].requests.values()
        assert req.body == b"\x00\x00\x00\x00\x02hi" and req.ended


async def test_a_head_reaches_the_client_before_any_message() -> None:
    def head_only(conn: ServerConn, stream_id: int, req: Request) -> None:
        conn.respond(stream_id, end=False)  # initial metadata; messages come later

    async with served(H2Server(head_only)) as (server, pool):
        sink = Sink(ep(server))
        await sink.start(pool)
        await until(lambda: sink.status == 200, "the head")
        # Written to the client at once, not held until a message comes.
        await until(lambda: sink.client.flushes, "the head's flush")
        assert sink.ended is None


async def test_a_trailers_only_response_becomes_an_empty_one_with_trailers() -> None:
    def trailers_only(conn: ServerConn, stream_id: int, req: Request) -> None:
        fields = [(b"grpc-status", b"12"), (b"grpc-message", b"no"), (b"x-md", b"1")]
        conn.respond(stream_id, headers=fields)

    async with served(H2Server(trailers_only)) as (server, pool):
        sink = Sink(ep(server))
        await sink.start(pool)
        await until(lambda: sink.ended is not None, "the response")
        # One HEADERS frame that ended the stream: the content-type heads an
        # empty response, the status and metadata are its trailers.
        assert (sink.status, sink.head, sink.body) == (
            200,
            [(b"content-type", b"application/grpc")],
            b"",
        )
        assert sink.trailers == [(b"grpc-status", b"12"), (b"grpc-message", b"no"), (b"x-md", b"1")]


async def test_a_bodiless_response_that_is_not_grpc_comes_as_it_is() -> None:
    def plain(conn: ServerConn, stream_id: int, req: Request) -> None:
        conn.h2.send_headers(stream_id, [(b":status", b"200"), (b"x-a", b"1")], end_stream=True)
        conn.flush()

    async with served(H2Server(plain)) as (server, pool):
        sink = Sink(ep(server))
        await sink.start(pool)
        await until(lambda: sink.ended is not None, "the response")
        assert (sink.head, sink.trailers) == ([(b"x-a", b"1")], None)


async def test_a_head_over_proxy_buffer_size_is_refused() -> None:
    def big(conn: ServerConn, stream_id: int, req: Request) -> None:
        conn.respond(stream_id, headers=[(b"x-big", b"v" * 5000)])

    async with served(H2Server(big)) as (server, pool):
        sink = Sink(ep(server))
        await sink.start(pool, limit=4096)
        await until(lambda: sink.lost is not None, "the failure")
        assert isinstance(sink.lost, UpstreamHeadTooLarge) and sink.status == 0
        # The same head fits a larger bound.
        sink = Sink(ep(server))
        await sink.start(pool, limit=8192)
        await until(lambda: sink.ended is not None, "the response")


async def test_trailers_over_the_bound_cut_the_response() -> None:
    def big_trailers(conn: ServerConn, stream_id: int, req: Request) -> None:
        conn.respond(stream_id, b"data", [(b"grpc-status", b"0"), (b"x-big", b"v" * 5000)])

    async with served(H2Server(big_trailers)) as (server, pool):
        sink = Sink(ep(server))
        await sink.start(pool)
        await until(lambda: sink.lost is not None, "the failure")
        assert isinstance(sink.lost, UpstreamHeadTooLarge) and sink.ended is None


async def test_an_upstream_reset_mid_response_is_reported() -> None:
    def half(conn: ServerConn, stream_id: int, req: Request) -> None:
        if stream_id > 1:
            echo(conn, stream_id, req)
            return
        conn.respond(stream_id, b"part", end=False)
        conn.h2.reset_stream(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        conn.flush()

    async with served(H2Server(half)) as (server, pool):
        sink = Sink(ep(server))
        await sink.start(pool)
        await until(lambda: sink.lost is not None, "the reset")
        assert isinstance(sink.lost, UpstreamStreamReset)
        assert "INTERNAL_ERROR" in str(sink.lost) and sink.body == b"part"
        # The connection goes on serving.
        sink2 = Sink(ep(server))
        await sink2.start(pool)
        await until(lambda: sink2.ended is not None, "the next response")
        assert len(server.conns) == 1


async def test_refused_streams_can_be_sent_again() -> None:
    def refuse(conn: ServerConn, stream_id: int, req: Request) -> None:
        conn.h2.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
        conn.flush()

    async with served(H2Server(refuse)) as (server, pool):
        sink = Sink(ep(server))
        await sink.start(pool)
        await until(lambda: sink.lost is not None, "the refusal")
        assert isinstance(sink.lost, StreamRefused)


async def test_a_protocol_error_fails_every_stream_of_the_connection() -> None:
    def garbage(conn: ServerConn, stream_id: int, req: Request) -> None:
        conn.writer.write(
            b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00"
        )  # WINDOW_UPDATE 0
        conn.closed = True

    async with served(H2Server(garbage)) as (server, pool):
        sink = Sink(ep(server))
        await sink.start(pool)
        await until(lambda: sink.lost is not None, "the failure")
        assert isinstance(sink.lost, InvalidUpstreamResponse)
        assert pool.connection_count() == 0


# -- multiplexing and the pool -------------------------------------------------------------------


async def test_streams_share_a_connection_up_to_the_peers_limit() -> None:
    held: list[tuple[ServerConn, int, Request]] = []

    def hold(conn: ServerConn, stream_id: int, req: Request) -> None:
        held.append((conn, stream_id, req))

    limit = {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 2}
    async with served(H2Server(hold, settings=limit)) as (server, pool):
        sinks = [Sink(ep(server)) for _ in range(5)]
        for sink in sinks:
            await sink.start(pool)
        await until(lambda: len(held) == 5, "5 requests")
        # 2 + 2 + 1: a connection takes as many streams as its peer allows, then another.
        assert sorted(len(c.requests) for c in server.conns) == [1, 2, 2]
        for conn, stream_id, req in held:
            echo(conn, stream_id, req)
        await until(lambda: all(s.ended is not None for s in sinks), "5 responses")
        # Back in the pool with room: the next request opens nothing new.
        await Sink(ep(server)).start(pool)
        await until(lambda: len(held) == 6, "the 6th request")
        assert len(server.conns) == 3


async def test_a_burst_waits_for_the_connection_being_opened() -> None:
    async with served(H2Server()) as (server, pool):
        sinks = [Sink(ep(server)) for _ in range(20)]
        await asyncio.gather(*(s.start(pool) for s in sinks))
        await until(lambda: all(s.ended is not None for s in sinks), "20 responses")
        assert len(server.conns) == 1


async def test_goaway_finishes_the_streams_it_took_and_refuses_the_rest() -> None:
    held: list[tuple[ServerConn, int, Request]] = []

    def hold(conn: ServerConn, stream_id: int, req: Request) -> None:
        held.append((conn, stream_id, req))

    async with served(H2Server(hold)) as (server, pool):
        first, second = Sink(ep(server)), Sink(ep(server))
        await first.start(pool)
        await second.start(pool)
        await until(lambda: len(held) == 2, "2 requests")
        conn = server.conns[0]
        # GOAWAY: only the first stream was taken. (Written by hand: h2, as a
        # server, would send nothing more after one.)
        goaway = GoAwayFrame(0)
        goaway.last_stream_id = held[0][1]
        conn.writer.write(goaway.serialize())
        await until(lambda: second.lost is not None, "the refusal")
        assert isinstance(second.lost, StreamRefused)
        # No new stream on that connection; the one it took still finishes.
        third = Sink(ep(server))
        await third.start(pool)
        await until(lambda: len(server.conns) == 2, "a new connection")
        echo(*held[0])
        await until(lambda: first.ended is not None, "the first response")
        assert first.lost is None and first.trailers == [(b"grpc-status", b"0"), (b"x-trail", b"t")]
        # Once its last stream is done, the connection is closed.
        await until(lambda: conn.closed, "the old connection's close")


async def test_idle_connections_are_closed_after_the_idle_timeout() -> None:
    async with served(H2Server(), idle_timeout=0.2) as (server, pool):
        sink = Sink(ep(server))
        await sink.start(pool)
        await until(lambda: sink.ended is not None, "the response")
        assert pool.connection_count() == 1
        await until(lambda: server.conns[0].closed, "the idle connection's close")
        assert pool.connection_count() == 0


async def test_a_connection_nobody_waits_for_any_more_is_reaped_too() -> None:
    async with served(H2Server(), idle_timeout=0.2) as (server, pool):
        waiter = asyncio.ensure_future(pool.connect(ep(server), 2.0))
        await asyncio.sleep(0)
        waiter.cancel()  # its client went away while the connection was being made
        await until(lambda: server.conns, "the connection")
        await until(lambda: pool.connection_count() == 1, "the pooled connection")
        await until(lambda: server.conns[0].closed, "the idle connection's close")
        assert pool.connection_count() == 0


async def test_an_upstream_that_does_not_speak_http2_fails_the_connect() -> None:
    async def http1(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(http1, LOCALHOST, 0)
    pool = H2Pool()
    try:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(UpstreamProtocolError, match="does not speak HTTP/2"):
            await pool.connect(Endpoint(LOCALHOST, port), 2.0)
    finally:
        pool.close()
        server.close()
        await server.wait_closed()


# -- cancellation and flow control ----------------------------------------------------------------


async def test_abort_resets_the_stream_upstream_with_cancel() -> None:
    async with served(H2Server(handler=None)) as (server, pool):
        sink = Sink(ep(server))
        stream = await sink.start(pool, [b"x"], end=False)
        await until(lambda: server.conns and server.conns[0].requests, "the request")
        stream.abort()  # the client went away
        req = next(iter(server.conns[0].requests.values()))
        await until(lambda: req.reset is not None, "the RST_STREAM")
        assert req.reset == h2.errors.ErrorCodes.CANCEL
        assert pool.take(ep(server)) is not None  # the connection stays


async def test_a_slow_client_holds_back_its_own_stream_only() -> None:
    size = 2 * 1024 * 1024

    def flood(conn: ServerConn, stream_id: int, req: Request) -> None:
        conn.respond(stream_id, end=False)
        conn.send(stream_id, b"x" * size)  # as much as the windows let through now

    async with served(H2Server(flood)) as (server, pool):
        slow, fast = Sink(ep(server)), Sink(ep(server))
        slow_stream = await slow.start(pool)
        slow_stream.pause_reading()  # its client is not reading
        await fast.start(pool)
        conn = server.conns[0]
        await until(lambda: len(conn.requests) == 2, "2 requests")
        slow_id, fast_id = sorted(conn.requests)

        def top_up() -> None:
            for stream_id in (slow_id, fast_id):
                with contextlib.suppress(Exception):
                    left = size - len(slow.body if stream_id == slow_id else fast.body)
                    conn.send(stream_id, b"x" * max(0, min(left, 1 << 20)))

        # The fast stream gets all of its data while the slow one is held at its window.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while len(fast.body) < size and loop.time() < deadline:
            top_up()
            await asyncio.sleep(0.01)
        assert len(fast.body) == size
        assert len(slow.body) <= upstream_h2.STREAM_WINDOW
        # Once its client reads again, the slow stream gets the rest.
        slow_stream.resume_reading()
        while len(slow.body) < size and loop.time() < deadline:
            top_up()
            await asyncio.sleep(0.01)
        assert len(slow.body) == size


async def test_a_slow_upstream_pauses_the_request_body() -> None:
    async with served(H2Server(handler=None, auto_ack=False)) as (server, pool):
        sink = Sink(ep(server))
        stream = await sink.start(pool, [], end=False)
        chunk = b"y" * 16384
        for _ in range(10):  # 160 KiB against the upstream's 64 KiB window
            stream.send_body(chunk)
        assert sink.paused == [True]  # the client's body is paused, not buffered without end
        assert stream.pending_bytes <= 10 * len(chunk) - 65535 + len(chunk)
        conn = server.conns[0]
        await until(lambda: conn.requests, "the request")
        (stream_id,) = conn.requests
        await until(lambda: len(conn.requests[stream_id].body) == 65535, "a full window")
        # The upstream takes it: its window opens, the rest goes, the body resumes.
        conn.h2.acknowledge_received_data(65535, stream_id)
        conn.h2.increment_flow_control_window(1 << 20)
        conn.h2.increment_flow_control_window(1 << 20, stream_id)
        conn.flush()
        await until(lambda: sink.paused == [True, False], "the resume")
        stream.end_body()
        await until(lambda: conn.requests[stream_id].ended, "the request's end")
        assert len(conn.requests[stream_id].body) == 10 * len(chunk)


# -- GRPCS: TLS with ALPN h2 --------------------------------------------------------------------


async def test_grpcs_offers_h2_by_alpn_and_https_offers_nothing() -> None:
    ca = issue("test CA", ca=True)
    leaf = issue("upstream.test", issuer=ca, ip_addresses=(LOCALHOST,))
    server_ctx = tls_server(leaf)
    server_ctx.set_alpn_protocols(["h2", "http/1.1"])
    server = await H2Server().start(server_ctx)
    pool = H2Pool()
    try:
        tls = upstream_tls(None, None, H2_ALPN)
        sink = Sink(Endpoint(LOCALHOST, server.port))
        assert sink.forward is not None
        sink.forward = sink.forward.copy(tls=tls)
        stream = await pool.connect(Endpoint(LOCALHOST, server.port), 2.0, tls)
        sink.stream = stream
        stream.begin(sink, False, 4096)
        stream.send_request(sink, [b"tls"], True)
        await until(lambda: sink.ended is not None, "the response")
        assert server.alpn == ["h2"] and sink.body == b"tls"
        (req,) = server.conns[0].requests.values()
        assert (b":scheme", b"https") in req.headers
        # The HTTP/1.1 context for the same Secret is another, and offers no ALPN.
        https = upstream_tls(None, None)
        assert https.context is not tls.context and https.key != tls.key
        _reader, writer = await asyncio.open_connection(
            LOCALHOST, server.port, ssl=https.context, server_hostname=""
        )
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() is None
        writer.close()
    finally:
        pool.close()
        await server.close()
