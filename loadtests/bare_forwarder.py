#!/usr/bin/env python3
"""A bare HTTP/1.1 forwarder: asyncio + uvloop + httptools, the floor for ingressd.

The reference of issue 16: what the same stack as ingressd's (uvloop's event
loop and transports, httptools' parser) costs per request when almost no
Python runs around it. It forwards every request to one upstream, adding the
headers ingressd adds (X-Forwarded-For/-Host/-Port/-Proto, X-Scheme,
X-Real-IP, X-Request-ID), over pooled keep-alive upstream connections, and
passes the upstream's response bytes through as they come. There is no
routing, no metrics, no timeouts, no limits, no access log: ingressd's
distance from it is the cost of those and of the Python around them.

    python loadtests/bare_forwarder.py --upstream 127.0.0.1:PORT --http-port P
        [--https-port P --cert FILE --key FILE] [--address 127.0.0.1]

bench.py starts it with ``--with-bare``. It is a measuring tool, not a proxy to
deploy: one request at a time per client connection (a pipelined request
closes the connection), no Upgrade, no timeouts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
from typing import Any, cast

import httptools
import uvloop

# Hop-by-hop headers, and the ones the forwarder sets itself.
DROPPED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-proto",
        b"x-scheme",
        b"x-real-ip",
        b"x-request-id",
    }
)
# At most this many idle upstream connections are kept.
POOL_SIZE = 128
# A request head larger than this closes the client connection (httptools has no limit).
MAX_HEAD = 64 * 1024


class Upstream(asyncio.Protocol):
    """One keep-alive connection to the upstream; the response is parsed only to
    find where it ends, and its bytes go to the client as they are."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:  # nothing asked: the upstream is talking out of turn
            self.close()
            return
        client.send(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()
            client.close()

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        keep = self.parser.should_keep_alive()
        self.parser = httptools.HttpResponseParser(self)
        if client is not None and not client.response_done():
            keep = False  # the request was not sent whole: this connection's framing is lost
        if keep:
            self.pool.release(self)
        else:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.forget(self)
        client, self.client = self.client, None
        if client is not None:
            # A response read until the close is complete now; any other ends the client too.
            client.close()
        self.transport = None

    def pause_writing(self) -> None:  # the upstream does not read what we send
        pass

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Pool:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[Upstream] = []

    def release(self, conn: Upstream) -> None:
        if conn.transport is None or conn.transport.is_closing() or len(self.idle) >= POOL_SIZE:
            conn.close()
        else:
            self.idle.append(conn)

    def forget(self, conn: Upstream) -> None:
        if conn in self.idle:
            self.idle.remove(conn)

    def acquire(self) -> Upstream | None:
        while self.idle:
            conn = self.idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def connect(self) -> Upstream:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: Upstream(self), self.host, self.port)
        return conn


class Client(asyncio.Protocol):
    def __init__(self, pool: Pool, tls: bool, prefix: bytes) -> None:
        self.pool = pool
        self.tls = tls
        self.prefix = prefix  # random per process; the request counter follows it
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.tail = b""
        self.client_ip = b""
        self.url = b""
        self.headers: list[bytes] = []
        self.host = b""
        self.head_size = 0
        self.chunked = False
        self.upstream: Upstream | None = None
        self.pending: list[bytes] = []  # what waits for an upstream connection
        self.in_flight = False
        self.request_complete = False
        self.closed = False

    # -- the client side ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.client_ip = peer[0].encode() if peer else b""
        scheme = b"https" if self.tls else b"http"
        # What is the same for every request of the connection, serialised once.
        self.tail = b"X-Forwarded-Port: %b\r\nX-Forwarded-Proto: %b\r\nX-Scheme: %b\r\n" % (
            str(sock[1]).encode() if sock else b"",
            scheme,
            scheme,
        )
        self.tail += b"X-Real-IP: %b\r\nX-Forwarded-For: %b\r\n" % (self.client_ip, self.client_ip)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.close()
        except httptools.HttpParserError:
            self.reply_error(b"400 Bad Request")

    def on_message_begin(self) -> None:
        if self.in_flight:  # pipelining is not supported: the answers would mix
            self.close()
            return
        self.in_flight = True
        self.request_complete = False
        self.url = b""
        self.headers = []
        self.host = b""
        self.head_size = 0
        self.chunked = False

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)
        if self.head_size > MAX_HEAD:
            self.reply_error(b"431 Request Header Fields Too Large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value) + 4
        if self.head_size > MAX_HEAD:
            self.reply_error(b"431 Request Header Fields Too Large")
            return
        lower = name.lower()
        if lower == b"host":
            self.host = value
        elif lower == b"transfer-encoding":
            self.chunked = b"chunked" in value.lower()
        if lower not in DROPPED:
            self.headers.append(b"%b: %b\r\n" % (name, value))

    def on_headers_complete(self) -> None:
        if self.closed:
            return
        rid = b"%b%016x" % (self.prefix, next(COUNTER))
        method = self.parser.get_method()
        head = b"".join(
            (
                b"%b %b HTTP/1.1\r\n" % (method, self.url),
                *self.headers,
                b"X-Forwarded-Host: %b\r\n" % self.host,
                self.tail,
                b"X-Request-ID: %b\r\n" % rid,
                b"Transfer-Encoding: chunked\r\n" if self.chunked else b"",
                b"\r\n",
            )
        )
        self.to_upstream(head)

    def on_body(self, body: bytes) -> None:
        self.to_upstream(b"%x\r\n%b\r\n" % (len(body), body) if self.chunked else body)

    def on_message_complete(self) -> None:
        if self.chunked:
            self.to_upstream(b"0\r\n\r\n")
        self.request_complete = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        upstream, self.upstream = self.upstream, None
        if upstream is not None and upstream.client is self:
            upstream.client = None
            upstream.close()  # mid-response: it cannot be reused

    def pause_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()

    # -- towards the upstream -----------------------------------------------------

    def to_upstream(self, data: bytes) -> None:
        if self.closed:
            return
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.write(data)
            return
        self.pending.append(data)
        if len(self.pending) > 1:
            return  # already waiting for a connection
        conn = self.pool.acquire()
        if conn is not None:
            self.attach(conn)
        else:
            asyncio.get_running_loop().create_task(self.connect())

    async def connect(self) -> None:
        try:
            conn = await self.pool.connect()
        except OSError:
            self.reply_error(b"502 Bad Gateway")
            return
        if self.closed:
            self.pool.release(conn)
            return
        self.attach(conn)

    def attach(self, conn: Upstream) -> None:
        self.upstream = conn
        conn.client = self
        assert conn.transport is not None
        conn.transport.writelines(self.pending)
        self.pending = []

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def response_done(self) -> bool:
        """The response is through; whether the request had been sent whole."""
        self.upstream = None
        self.in_flight = False
        if not self.request_complete:  # answered before the whole body: as nginx, close
            self.close()
            return False
        return True

    def reply_error(self, status: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(
                b"HTTP/1.1 %b\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % status
            )
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _counter() -> Any:
    n = 0
    while True:
        n += 1
        yield n


COUNTER = _counter()


async def serve(args: argparse.Namespace) -> None:
    host, _, port = args.upstream.rpartition(":")
    pool = Pool(host, int(port))
    prefix = os.urandom(8).hex().encode()
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(
            lambda: Client(pool, False, prefix), args.address, args.http_port, backlog=4096
        )
    ]
    if args.https_port:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)
        servers.append(
            await loop.create_server(
                lambda: Client(pool, True, prefix),
                args.address,
                args.https_port,
                ssl=ctx,
                backlog=4096,
            )
        )
    await asyncio.gather(*(s.serve_forever() for s in servers))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", required=True, help="HOST:PORT of the one upstream")
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--https-port", type=int, default=0)
    p.add_argument("--cert", help="PEM certificate chain (with --https-port)")
    p.add_argument("--key", help="PEM private key (with --https-port)")
    args = p.parse_args(argv)
    if args.https_port and not (args.cert and args.key):
        p.error("--https-port needs --cert and --key")
    return args


def main(argv: list[str] | None = None) -> None:
    uvloop.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
