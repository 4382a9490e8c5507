"""The HTTP/1.1 client of auth-url subrequests, with nginx's connection reuse.

ingress-nginx's auth location proxies to the auth URL directly, and nginx's
``auth_request`` keeps no connection to it: every subrequest opens one and asks
``Connection: close``. ``auth-keepalive: N`` (N > 0) gives the auth service an
upstream block of its own (nginx.tmpl ``upstream auth-external-auth-...``,
template.go shouldApplyAuthUpstream) with ``keepalive N`` idle connections,
``keepalive_requests`` (auth-keepalive-requests) subrequests per connection and
``keepalive_timeout`` (auth-keepalive-timeout) seconds idle. This client does
the same: connections are pooled per auth service and keep-alive setting, at
most N idle ones are kept (more are closed), a connection carries at most the
given number of subrequests, and an idle one is closed after the timeout.

Bounded: the answer's head may take 64 KiB, its body is read up to 64 KiB and
otherwise ignored (the connection is then closed rather than drained).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024
_READ = 16 * 1024


class AuthHTTPError(Exception):
    """The auth service could not be asked, or its answer not read."""


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """auth-keepalive, -requests, -timeout of one auth-url."""

    connections: int
    requests: int
    timeout: float


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: tuple[tuple[str, str], ...]

    def getall(self, name: str) -> list[str]:
        low = name.lower()
        return [v for n, v in self.headers if n.lower() == low]

    def get(self, name: str) -> str | None:
        found = self.getall(name)
        return found[0] if found else None


@dataclass(slots=True)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    uses: int = 0
    idle_since: float = 0.0


@dataclass(slots=True)
class _Answer:
    """httptools callbacks: what the parser has seen of one response."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    head_done: bool = False
    done: bool = False
    body: int = 0
    head_bytes: int = 0
    keep_alive: bool = False
    parser: httptools.HttpResponseParser | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value)
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body += len(body)

    def on_message_complete(self) -> None:
        self.done = True
        # Asked now: llhttp forgets the message's Connection once it is over.
        self.keep_alive = self.parser is not None and self.parser.should_keep_alive()


def _insecure_context() -> ssl.SSLContext:
    # Like ingress-nginx (proxy_ssl_verify off in the auth location), the auth
    # service's certificate is not verified; it is usually in-cluster.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _clean(value: str) -> bool:
    return not any(c in value for c in "\r\n\0")


# (TLS?, host, port, keep-alive settings): connections of one auth service and setting.
_PoolKey = tuple[bool, str, int, KeepAlive]


class AuthConnections:
    """Subrequests to auth services; idle connections pooled as auth-keepalive says."""

    def __init__(self) -> None:
        self._idle: dict[_PoolKey, deque[_Conn]] = {}
        self._tls: ssl.SSLContext | None = None
        self.opened = 0  # connections opened, for tests and metrics
        self._swept = 0.0

    def idle(self) -> int:
        return sum(len(q) for q in self._idle.values())

    async def request(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        connect_timeout: float,
        read_timeout: float,
        keepalive: KeepAlive | None = None,
    ) -> Reply:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AuthHTTPError(f"{url[:200]} is not an http(s) URL")
        tls = parts.scheme == "https"
        try:
            port = parts.port or (443 if tls else 80)
        except ValueError as exc:
            raise AuthHTTPError(str(exc)) from None
        host = parts.hostname
        # nginx.tmpl's auth location: "proxy_set_header Host {{ $externalAuth.Host }}",
        # authreq's Host being the URL's Hostname(): no port (an IPv6 address keeps
        # its brackets here, to stay a valid Host).
        authority = f"[{host}]" if ":" in host else host
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        lines = [f"{method} {target} HTTP/1.1", f"Host: {authority}"]
        for name, value in headers:
            if not _clean(name) or not _clean(value) or ":" in name:
                raise AuthHTTPError(f"header {name[:50]!r} cannot be sent")
            lines.append(f"{name}: {value}")
        if keepalive is None:
            lines.append("Connection: close")
        if not all(_clean(x) for x in (target, authority)):
            raise AuthHTTPError("the URL cannot be sent")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        key = None if keepalive is None else (tls, host, port, keepalive)
        conn = None
        if key is not None:
            conn = self._take(key, asyncio.get_running_loop().time())
        if conn is not None:
            try:
                return await self._exchange(conn, data, method, read_timeout, key, fresh=False)
            except _Stale:
                pass  # the service closed an idle connection: once more on a new one
        conn = await self._open(host, port, tls, connect_timeout)
        try:
            return await self._exchange(conn, data, method, read_timeout, key, True)
        except _Stale as exc:
            raise AuthHTTPError(str(exc) or "the connection was closed") from None

    def _take(self, key: _PoolKey, now: float) -> _Conn | None:
        queue = self._idle.get(key)
        while queue:
            conn = queue.pop()  # the most recently used, as nginx's keepalive cache
            if now - conn.idle_since < key[3].timeout and not conn.writer.is_closing():
                return conn
            conn.writer.close()
        return None

    async def _open(self, host: str, port: int, tls: bool, timeout: float) -> _Conn:
        context = None
        if tls:
            if self._tls is None:
                self._tls = _insecure_context()
            context = self._tls
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host, port, ssl=context, server_hostname=host if tls else None
                ),
                timeout,
            )
        except TimeoutError:
            raise AuthHTTPError(f"connecting to {host}:{port} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise AuthHTTPError(f"cannot connect to {host}:{port}: {exc}") from None
        self.opened += 1
        return _Conn(reader, writer)

    async def _exchange(
        self,
        conn: _Conn,
        data: bytes,
        method: str,
        read_timeout: float,
        key: _PoolKey | None,  # None: no keep-alive
        fresh: bool,
    ) -> Reply:
        answer = _Answer()
        parser = httptools.HttpResponseParser(answer)
        answer.parser = parser
        received = 0
        try:
            conn.writer.write(data)
            await asyncio.wait_for(conn.writer.drain(), read_timeout)
            while not answer.done:
                chunk = await asyncio.wait_for(conn.reader.read(_READ), read_timeout)
                if not chunk:
                    if received == 0:
                        raise _Stale("the auth service closed the connection")
                    if not answer.head_done:
                        raise AuthHTTPError("the answer was cut short")
                    break  # its body (unused) ended early, or at the close
                received += len(chunk)
                parser.feed_data(chunk)
                if answer.head_bytes > MAX_HEAD or (not answer.head_done and received > MAX_HEAD):
                    raise AuthHTTPError("the answer's head is larger than 64 KiB")
                if answer.head_done and (method == "HEAD" or answer.body > MAX_BODY):
                    break  # no body to wait for, or more than is read
        except _Stale:
            conn.writer.close()
            if fresh:
                raise AuthHTTPError("the auth service closed the connection") from None
            raise
        except TimeoutError:
            conn.writer.close()
            raise AuthHTTPError("no answer in time") from None
        except asyncio.CancelledError:
            conn.writer.close()  # the client went away: the connection is in no state to keep
            raise
        except (
            OSError,
            ssl.SSLError,
            httptools.HttpParserError,
            httptools.HttpParserUpgrade,
        ) as exc:
            conn.writer.close()
            if received == 0 and not fresh:
                raise _Stale(str(exc)) from None
            raise AuthHTTPError(str(exc) or type(exc).__name__) from None
        answer.parser = None  # no cycle to leave to the collector
        conn.uses += 1
        reply = Reply(parser.get_status_code(), tuple(answer.headers))
        if key is not None and answer.done and answer.keep_alive and conn.uses < key[3].requests:
            self._put(key, conn)
        else:
            conn.writer.close()
        return reply

    def _put(self, key: _PoolKey, conn: _Conn) -> None:
        now = asyncio.get_running_loop().time()
        queue = self._idle.setdefault(key, deque())
        conn.idle_since = now
        queue.append(conn)
        while len(queue) > key[3].connections:
            queue.popleft().writer.close()  # the least recently used goes
        if now - self._swept >= 1.0:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Close idle connections past their keepalive_timeout, as nginx does, at most
        once a second: a service no route asks any more keeps none open."""
        self._swept = now
        for key in list(self._idle):
            queue = self._idle[key]
            timeout = key[3].timeout
            while queue and now - queue[0].idle_since >= timeout:
                queue.popleft().writer.close()
            if not queue:
                del self._idle[key]

    async def close(self) -> None:
        for queue in self._idle.values():
            for conn in queue:
                conn.writer.close()
                with contextlib.suppress(Exception):
                    await conn.writer.wait_closed()
        self._idle.clear()


class _Stale(Exception):
    """A reused connection failed before any answer: the request may be sent again."""
