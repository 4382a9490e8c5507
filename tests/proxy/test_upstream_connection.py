"""The upstream connection's parser bookkeeping, fed bytes directly (no sockets):
when a response ends, whether the connection may go back to the pool, and how
much of a response head it reads."""

from __future__ import annotations

import asyncio
import time

import pytest

from ingressd.model.backend import Endpoint
from ingressd.proxy.http import Headers
from ingressd.proxy.streams import ClientStream, Outgoing
from ingressd.proxy.upstream_h1 import UpstreamConnection, UpstreamHeadTooLarge, UpstreamPool

EP = Endpoint("127.0.0.1", 9)


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


class Clock:
    """The one thing of the event loop an upstream read asks: its time."""

    def time(self) -> float:
        return time.monotonic()


class Client(ClientStream):
    """The exchange's client: flushes are no-ops."""

    def __init__(self) -> None:
        self.loop = Clock()  # type: ignore[assignment]

    def flush(self) -> None:
        pass


class Sink(Outgoing):
    """What the exchange would be told."""

    def __init__(self) -> None:
        self.client = Client()
        self.heads: list[int] = []
        self.body = b""
        self.ends: list[bool] = []
        self.lost: list[Exception | None] = []
        self.trailers: Headers | None = None

    def on_response_head(
        self, status: int, reason: bytes, headers: Headers, chunked: bool, length: bool
    ) -> None:
        self.heads.append(status)

    def on_response_body(self, data: bytes) -> None:
        self.body += data

    def flush(self) -> None:
        pass

    def on_response_end(self, keep_alive: bool, trailers: Headers | None = None) -> None:
        self.ends.append(keep_alive)
        self.trailers = trailers

    def on_upstream_upgraded(self, tail: bytes) -> None:
        pass

    def on_upstream_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)

    def on_upstream_paused(self, paused: bool) -> None:
        pass


def connection(head_limit: int = 4096) -> tuple[UpstreamConnection, Sink]:
    conn = UpstreamConnection(UpstreamPool(), EP)
    conn.connection_made(Transport())
    sink = Sink()
    conn.begin(sink, False, head_limit)
    return conn, sink


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_a_clean_response_leaves_the_connection_reusable() -> None:
    conn, sink = connection()
    conn.data_received(OK)
    assert (sink.heads, sink.body, sink.ends) == ([200], b"ok", [True])
    assert conn.reusable


@pytest.mark.parametrize(
    "extra",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nPOISON",
        b"HTTP/1.1 200 OK\r\n",
        b"H",
        b"\x00garbage",
    ],
)
def test_bytes_past_the_response_make_it_unusable(extra: bytes) -> None:
    conn, sink = connection()
    conn.data_received(OK + extra)
    # The client got exactly one response, then the connection was not to be reused.
    assert (sink.heads, sink.body, sink.ends) == ([200], b"ok", [False])
    assert not conn.reusable


def test_the_pool_refuses_a_connection_mid_message() -> None:
    pool = UpstreamPool()
    conn = UpstreamConnection(pool, EP)
    conn.connection_made(Transport())
    conn.begin(Sink(), False, 4096)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    pool.release(conn)  # a caller's mistake must not pool it
    assert conn.closed
    assert pool.take(EP) is None


def test_bytes_on_an_idle_connection_close_it() -> None:
    pool = UpstreamPool()
    conn = UpstreamConnection(pool, EP)
    conn.connection_made(Transport())
    sink = Sink()
    conn.begin(sink, False, 4096)
    conn.data_received(OK)
    conn.owner = None  # back in the pool
    conn.data_received(b"HTTP/1.1 200 OK\r\n")
    assert conn.closed


@pytest.mark.parametrize("pieces", [1, 7, 300])
def test_the_head_bound_holds_however_the_bytes_arrive(pieces: int) -> None:
    conn, sink = connection(head_limit=1000)
    head = b"HTTP/1.1 200 OK\r\n" + b"X-A: " + b"a" * 2000 + b"\r\n\r\n"
    step = max(1, len(head) // pieces)
    for i in range(0, len(head), step):
        conn.data_received(head[i : i + step])
        if sink.lost:
            break
    assert sink.heads == []
    assert len(sink.lost) == 1 and isinstance(sink.lost[0], UpstreamHeadTooLarge)
    assert conn.closed


def test_a_head_that_just_fits_is_read_with_its_body_in_the_same_read() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
    conn, sink = connection(head_limit=len(head))
    conn.data_received(head + b"ok")
    assert (sink.heads, sink.body, sink.ends, sink.lost) == ([200], b"ok", [True], [])


def test_interim_responses_each_get_the_bound() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
    conn, sink = connection(head_limit=len(head))
    conn.data_received(interim)
    conn.data_received(head + b"ok")
    assert (sink.heads, sink.ends, sink.lost) == ([100, 200], [True], [])


def test_chunked_trailers_are_reported_with_the_end() -> None:
    conn, sink = connection()
    conn.data_received(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n"
        b"0\r\nX-Checksum: abc\r\ngrpc-status: 0\r\n\r\n"
    )
    assert (sink.heads, sink.body, sink.ends) == ([200], b"ok", [True])
    assert sink.trailers == [(b"X-Checksum", b"abc"), (b"grpc-status", b"0")]


def test_a_pool_keeping_no_idle_connections_closes_each_one() -> None:
    """upstream-keepalive-connections: "0" (the ConfigMap)."""
    pool = UpstreamPool(max_idle_per_endpoint=0)
    conn = UpstreamConnection(pool, EP)
    conn.connection_made(Transport())
    conn.begin(Sink(), False, 4096)
    conn.data_received(OK)
    pool.release(conn)
    assert conn.closed
    assert pool.take(EP) is None
