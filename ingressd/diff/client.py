"""Sending one probe to one server, and reading its answer, bounded.

A small HTTP/1.1 client of its own rather than a library's: the request goes
out exactly as the probe says (the target unnormalised, the Host header and
the SNI set, no headers added but ``Connection: close`` and, on a request
that has none, ``User-Agent``), one connection per request so a TLS
connection made with one SNI never carries another host's request. Certificates are not verified:
a reference usually serves self-signed or private-CA ones, and what is
compared is behaviour, not trust.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
from dataclasses import dataclass

import httptools

from .probes import Probe

MAX_BODY = 256 * 1024  # the body is read only to find an echo in it
MAX_HEAD = 64 * 1024
USER_AGENT = "ingressd-diff"


@dataclass(frozen=True, slots=True)
class Address:
    """One side: where to connect for plain HTTP and for TLS."""

    host: str
    http_port: int
    https_port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        """``HOST:PORT[,HTTPS_PORT]`` (``[v6]:PORT``). HTTPS_PORT may be left out
        only when PORT is 80 (then 443): any other pairing is not guessed."""
        head, _, tls = text.partition(",")
        host, sep, port = head.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{text!r} is not HOST:PORT[,HTTPS_PORT]")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        http_port = _port(port, text)
        if tls:
            https_port = _port(tls, text)
        elif http_port == 80:
            https_port = 443
        else:
            raise ValueError(f"{text!r}: give the HTTPS port too, as HOST:PORT,HTTPS_PORT")
        return cls(host, http_port, https_port)

    def port(self, scheme: str) -> int:
        return self.https_port if scheme == "https" else self.http_port

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.http_port},{self.https_port}"


def _port(value: str, text: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError(f"{text!r}: {value!r} is not a port number (1-65535)")
    return int(value)


@dataclass(frozen=True, slots=True)
class Echo:
    """What an echoing backend says it received."""

    path: str | None  # path and query
    host: str | None  # the Host header
    backend: str | None  # which backend answered (service name, pod name)


@dataclass(frozen=True, slots=True)
class Answer:
    """One server's answer to one probe; ``error`` set when there was none."""

    status: int = 0
    headers: tuple[tuple[str, str], ...] = ()  # names lowercase, in order
    echo: Echo | None = None
    error: str | None = None

    def values(self, name: str) -> tuple[str, ...]:
        return tuple(v for n, v in self.headers if n == name)


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


def request_bytes(probe: Probe) -> bytes:
    lines = [f"{probe.method} {probe.path} HTTP/1.1", f"Host: {probe.host}"]
    names = {n.lower() for n, _ in probe.headers}
    lines += [f"{n}: {v}" for n, v in probe.headers]
    if probe.cookies:
        lines.append("Cookie: " + "; ".join(f"{n}={v}" for n, v in probe.cookies))
    if "user-agent" not in names:
        lines.append(f"User-Agent: {USER_AGENT}")
    if probe.method in ("POST", "PUT", "PATCH"):
        lines.append("Content-Length: 0")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Reader:
    """httptools callbacks: the status, the headers, the body up to MAX_BODY."""

    def __init__(self, head_only: bool) -> None:
        self.head_only = head_only  # a HEAD answer has a Content-Length but no body
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.done = False
        self.head_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value)
        if self.head_bytes > MAX_HEAD:
            raise ValueError("response head over 64 KiB")
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        if self.head_only:
            self.done = True

    def on_body(self, data: bytes) -> None:
        self.body += data[: MAX_BODY - len(self.body)]
        if len(self.body) >= MAX_BODY:
            # Enough to read an echo (which is far smaller): the rest is not waited for,
            # so a large or endless body costs neither memory nor the timeout.
            self.done = True

    def on_message_complete(self) -> None:
        self.done = True


async def send(
    probe: Probe,
    address: Address,
    timeout: float,
    context: ssl.SSLContext | None = None,
) -> Answer:
    """``probe`` to ``address``; an Answer with ``error`` on any failure or after ``timeout``."""
    try:
        return await asyncio.wait_for(_send(probe, address, context), timeout)
    except TimeoutError:
        return Answer(error=f"no answer within {timeout:g} s")
    except (OSError, ssl.SSLError, ValueError, httptools.HttpParserError) as exc:
        return Answer(error=_reason(exc))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno and not isinstance(exc, ssl.SSLError):
        # asyncio's "Connect call failed (addr)" says less than the errno's own text.
        return os.strerror(exc.errno)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


async def _send(probe: Probe, address: Address, context: ssl.SSLContext | None) -> Answer:
    tls = probe.scheme == "https"
    reader, writer = await asyncio.open_connection(
        address.host,
        address.port(probe.scheme),
        ssl=(context or client_context()) if tls else None,
        server_hostname=probe.host if tls else None,
    )
    try:
        writer.write(request_bytes(probe))
        await writer.drain()
        state = _Reader(probe.method == "HEAD")
        parser = httptools.HttpResponseParser(state)
        while not state.done:
            data = await reader.read(65536)
            if not data:
                break
            parser.feed_data(data)
        status = parser.get_status_code()
    finally:
        writer.close()
        with contextlib.suppress(TimeoutError, OSError, ssl.SSLError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
    if not status:
        raise ValueError("the connection closed before a response")
    headers = tuple(state.headers)
    return Answer(status, headers, read_echo(headers, bytes(state.body)))


def read_echo(headers: tuple[tuple[str, str], ...], body: bytes) -> Echo | None:
    """What the backend received, when it says so: ingressd's echo (``ingressd/echo.py``:
    JSON with path, query, headers, service) or the echo server of ingress-nginx's e2e
    tests (text: "real path=", "query=", a "host=" request header)."""
    if not body:
        return None
    if body.lstrip().startswith(b"{"):
        try:
            doc = json.loads(body)
        except ValueError:
            return None
        if (
            not isinstance(doc, dict)
            or "path" not in doc
            or not isinstance(doc.get("headers"), dict)
        ):
            return None
        host = doc["headers"].get("host")
        suffix = f"?{doc['query']}" if doc.get("query") else ""
        return Echo(f"{doc['path']}{suffix}", _text(host), _text(doc.get("service")))
    text = body.decode("latin-1")
    if "Request Information:" not in text:
        return None
    fields: dict[str, str] = {}
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.endswith(":") and not line.startswith(("\t", " ")):
            section = stripped
            continue
        key, sep, value = stripped.partition("=")
        if sep:
            fields[f"{section}{key}"] = value
    real = fields.get("Request Information:real path")
    query = fields.get("Request Information:query")
    if real is not None and query:
        real = f"{real}?{query}"
    # Its "Hostname:" is the pod's name: with several replicas it changes from one
    # request to the next, so it does not say which backend answered.
    return Echo(real, fields.get("Request Headers:host"), None)


def _text(value: object) -> str | None:
    return str(value) if value is not None else None
