"""Real gRPC for the tests: a grpcio server with generic handlers (bytes in,
bytes out: no generated code, no protobuf), gRPC message framing, a raw
HTTP/1.1 client that speaks gRPC's framing over chunked bodies (what a
HTTP/1.1 client of a gRPC route sends), and what the gRPC end-to-end tests
serve (``grpc_ingress``, ``grpc_objects``, the upstream certificates).

Everything listens on 127.0.0.1, every wait has a deadline, and the servers
stop when asked (``close``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from e2e_helpers import free_port
from k8s_objects import endpoint_slice, ingress, ingress_class, path, rule, service, tls_entry
from upstream_certs import issue, secret

LOCALHOST = "127.0.0.1"
SERVICE = "test.Echo"
MAX_MESSAGE = 32 * 1024 * 1024  # the 10 MB message tests need more than grpc's 4 MB default
# grpcio's options for servers and channels that carry such messages.
MESSAGE_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
]


# -- gRPC's length-prefixed messages --------------------------------------------------------


def frame(message: bytes) -> bytes:
    """One gRPC message on the wire: uncompressed flag, 4-byte length, bytes."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def unframe(data: bytes) -> list[bytes]:
    """The messages in a whole gRPC body (fails on a partial one)."""
    out = []
    while data:
        assert len(data) >= 5, f"partial gRPC frame: {data!r}"
        size = int.from_bytes(data[1:5], "big")
        assert len(data) >= 5 + size, "partial gRPC message"
        out.append(data[5 : 5 + size])
        data = data[5 + size :]
    return out


# -- the server ------------------------------------------------------------------------------


@dataclass
class Seen:
    """What the backend saw of its calls."""

    metadata: list[dict[str, str]] = field(default_factory=list)  # per call, in order
    cancelled: list[str] = field(default_factory=list)  # methods whose call was cancelled
    deadlines: list[float | None] = field(default_factory=list)  # time remaining at start
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, context: grpc.ServicerContext) -> None:
        with self.lock:
            self.metadata.append({k: str(v) for k, v in context.invocation_metadata()})
            self.deadlines.append(context.time_remaining())

    def cancel(self, method: str) -> None:
        with self.lock:
            self.cancelled.append(method)


def _wait_while_active(context: grpc.ServicerContext, seconds: float) -> bool:
    """Sleep up to ``seconds`` in small steps; False as soon as the call is cancelled."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not context.is_active():
            return False
        time.sleep(0.01)
    return context.is_active()


class EchoService:
    """``test.Echo``: Unary, ServerStream, ClientStream and Bidi.

    Unary takes a command: ``echo:DATA`` (answers DATA), ``status:CODE:MESSAGE``
    (fails with that status), ``sleep:SECONDS`` (answers ``slept`` unless
    cancelled first), ``big:N`` (N bytes), ``meta`` (the call's metadata as
    JSON). Every call answers initial metadata ``x-init: yes`` and trailing
    metadata ``x-trail: done`` (and ``x-trail-bin``, binary).
    ServerStream takes ``COUNT:SIZE:DELAY`` and sends COUNT messages of SIZE
    bytes, DELAY seconds apart. ClientStream answers JSON with the count, total
    size and SHA-256 of what it got. Bidi echoes each message as it comes.
    """

    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    def _watch(self, context: grpc.ServicerContext, method: str) -> list[bool]:
        """Record the call as cancelled if it ends before the handler says it is
        done (appends to the list returned): whether grpcio cancels it while the
        handler waits or while it sends, the call's end is seen."""
        done: list[bool] = []

        def ended() -> None:
            if not done:
                self.seen.cancel(method)

        context.add_callback(ended)
        return done

    def _metadata(self, context: grpc.ServicerContext) -> None:
        self.seen.record(context)
        context.send_initial_metadata((("x-init", "yes"),))
        context.set_trailing_metadata((("x-trail", "done"), ("x-trail-bin", b"\x00\xff")))

    def unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.seen.record(context)
        done = self._watch(context, "Unary")
        context.set_trailing_metadata((("x-trail", "done"), ("x-trail-bin", b"\x00\xff")))
        answer = self._answer(request, context)
        done.append(True)
        # The head goes with the answer, not before: a slow call sends nothing
        # until it is done.
        context.send_initial_metadata((("x-init", "yes"),))
        return answer

    def _answer(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        command, _, arg = request.partition(b":")
        if command == b"echo":
            return arg
        if command == b"status":
            code, _, message = arg.partition(b":")
            status = next(s for s in grpc.StatusCode if s.value[0] == int(code))
            context.abort(status, message.decode())
        if command == b"sleep":
            if not _wait_while_active(context, float(arg)):
                context.abort(grpc.StatusCode.CANCELLED, "cancelled")
            return b"slept"
        if command == b"big":
            return b"b" * int(arg)
        if command == b"meta":
            return json.dumps(self.seen.metadata[-1]).encode()
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown command {command!r}")
        return b""  # not reached: abort raises

    def server_stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        self._metadata(context)
        done = self._watch(context, "ServerStream")
        count, size, delay = request.split(b":")
        for i in range(int(count)):
            if i and float(delay) and not _wait_while_active(context, float(delay)):
                return
            yield (b"%d:" % i).ljust(int(size), b"s")
        done.append(True)

    def client_stream(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        self._metadata(context)
        count = total = 0
        digest = hashlib.sha256()
        for message in requests:
            count += 1
            total += len(message)
            digest.update(message)
        return json.dumps({"count": count, "total": total, "sha256": digest.hexdigest()}).encode()

    def bidi(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        self._metadata(context)
        done = self._watch(context, "Bidi")
        for message in requests:
            yield b"re:" + message
        done.append(True)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
                "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream),
                "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream),
                "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi),
            },
        )


class GrpcBackend:
    """A grpcio server of ``EchoService`` on 127.0.0.1; plain, or TLS with
    ``cert``/``key`` (PEM). ``restart`` brings it back on the same port."""

    def __init__(self, cert: bytes | None = None, key: bytes | None = None) -> None:
        self.seen = Seen()
        self.cert, self.key = cert, key
        self.port = 0
        self._server: grpc.Server | None = None
        self.start()

    def start(self) -> None:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16),
            options=[*MESSAGE_OPTIONS, ("grpc.so_reuseport", 0)],
        )
        server.add_generic_rpc_handlers((EchoService(self.seen).handler(),))
        address = f"{LOCALHOST}:{self.port}"
        if self.cert is not None and self.key is not None:
            creds = grpc.ssl_server_credentials([(self.key, self.cert)])
            port = server.add_secure_port(address, creds)
        else:
            port = server.add_insecure_port(address)
        assert port, f"grpc server cannot listen on {address}"
        self.port = port
        server.start()
        self._server = server

    def stop(self, grace: float | None = None) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace).wait(10)

    def restart(self) -> None:
        self.stop()
        deadline = time.monotonic() + 10
        while True:
            try:
                self.start()
                return
            except (AssertionError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> GrpcBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GrpcProcess:
    """``EchoService`` in a process of its own, so that it can die abruptly
    (SIGKILL: no trailers, no GOAWAY, the connection just ends)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the port, once serving
        assert line.strip().isdigit(), f"grpc process did not start: {line!r}"
        self.port = int(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# -- a gRPC call over HTTP/1.1 ---------------------------------------------------------------


@dataclass
class H1Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    trailers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n.lower() == name), None)

    def trailer(self, name: str) -> str | None:
        return next((v for n, v in self.trailers if n.lower() == name), None)

    @property
    def grpc_status(self) -> int | None:
        """From the trailers, else (a Trailers-Only answer) from the head."""
        value = self.trailer("grpc-status") or self.header("grpc-status")
        return int(value) if value is not None else None

    @property
    def grpc_message(self) -> str | None:
        return self.trailer("grpc-message") or self.header("grpc-message")

    @property
    def messages(self) -> list[bytes]:
        return unframe(self.body)


class H1Call:
    """One gRPC call over HTTP/1.1 on a raw socket: the request body goes
    chunked, message by message; the response is read as it comes."""

    def __init__(
        self,
        port: int,
        host: str,
        method: str,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
        tls_server_name: str | None = None,
    ) -> None:
        self.timeout = timeout
        self.sock: Any = socket.create_connection((LOCALHOST, port), timeout=timeout)
        if tls_server_name is not None:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            self.sock = ctx.wrap_socket(self.sock, server_hostname=tls_server_name)
        lines = [
            f"POST /{SERVICE}/{method} HTTP/1.1",
            f"Host: {host}",
            "Content-Type: application/grpc",
            "TE: trailers",
            "Transfer-Encoding: chunked",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
        ]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self._buf = b""
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self._chunked = False
        self._length: int | None = None
        self._pending = b""  # body bytes read, not yet taken as messages
        self.trailers: list[tuple[str, str]] = []
        self.done = False

    def send(self, message: bytes) -> None:
        data = frame(message)
        self.sock.sendall(b"%x\r\n%b\r\n" % (len(data), data))

    def end(self) -> None:
        self.sock.sendall(b"0\r\n\r\n")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError("connection closed")
        self._buf += data

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            self._fill()
        line, _, self._buf = self._buf.partition(b"\r\n")
        return line

    def _exactly(self, size: int) -> bytes:
        while len(self._buf) < size:
            self._fill()
        data, self._buf = self._buf[:size], self._buf[size:]
        return data

    def read_head(self) -> None:
        if self.status:
            return
        status_line = self._line()
        self.status = int(status_line.split(b" ")[1])
        while line := self._line():
            name, _, value = line.decode("latin-1").partition(":")
            self.headers.append((name.strip(), value.strip()))
            if name.lower() == "transfer-encoding" and "chunked" in value.lower():
                self._chunked = True
            elif name.lower() == "content-length":
                self._length = int(value)

    def read_message(self) -> bytes | None:
        """The next response message, or None at the end of the body."""
        self.read_head()
        head = self._body_bytes(5)
        if head is None:
            return None
        size = int.from_bytes(head[1:5], "big")
        data = self._body_bytes(size)
        assert data is not None, "the body ended inside a message"
        return data

    def _body_bytes(self, size: int) -> bytes | None:
        while len(self._pending) < size:
            if self.done:
                return None
            if not self._chunked:
                remaining = self._length or 0
                self._pending += self._exactly(remaining)
                self._length = 0
                self.done = True
                continue
            chunk_size = int(self._line().split(b";")[0], 16)
            if chunk_size == 0:
                trailers = []
                while line := self._line():
                    name, _, value = line.decode("latin-1").partition(":")
                    trailers.append((name.strip(), value.strip()))
                self.trailers = trailers
                self.done = True
                continue
            self._pending += self._exactly(chunk_size)
            self._exactly(2)
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def finish(self) -> H1Response:
        """Read the rest of the response."""
        self.read_head()
        messages = []
        while (message := self.read_message()) is not None:
            messages.append(frame(message))
        return H1Response(self.status, self.headers, b"".join(messages), self.trailers)


def h1_call(
    port: int,
    host: str,
    method: str,
    messages: list[bytes],
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> H1Response:
    """A whole gRPC call over HTTP/1.1: send every message, end, read the response."""
    call = H1Call(port, host, method, headers, timeout)
    try:
        for message in messages:
            call.send(message)
        call.end()
        return call.finish()
    finally:
        call.close()


# -- what the gRPC end-to-end tests serve ---------------------------------------------------

ANNOTATION = "nginx.ingress.kubernetes.io/"
# The GRPCS backends' CA, and their certificate (for upstream.test and 127.0.0.1).
UPSTREAM_CA = issue("grpc test CA", ca=True)
UPSTREAM = issue(
    "upstream.test", issuer=UPSTREAM_CA, dns_names=("upstream.test",), ip_addresses=(LOCALHOST,)
)


def grpc_ingress(
    name: str, host: str, svc: str, *, prefix: str = "/", tls: str = "", **annotations: str
) -> dict[str, Any]:
    """An Ingress of ``backend-protocol: GRPC`` routing ``host`` under ``prefix``
    to ``svc``; ``tls``: the Secret it serves ``host`` with; ``annotations`` by
    their names with "_" for "-" (``proxy_read_timeout="1"``)."""
    notes = {ANNOTATION + "backend-protocol": "GRPC"}
    notes.update({ANNOTATION + k.replace("_", "-"): v for k, v in annotations.items()})
    return ingress(
        name,
        [rule(host, path(prefix, svc))],
        annotations=notes,
        tls=[tls_entry([host], tls)] if tls else None,
    )


def grpcs_ingress(
    name: str,
    host: str,
    ca: str,
    route: Callable[..., dict[str, Any]] = grpc_ingress,
    **annotations: str,
) -> dict[str, Any]:
    """A GRPCS route of ``host`` to the Service grpctls, its certificate
    verified with the CA of the Secret ``ca`` (in "default")."""
    return route(
        name,
        host,
        "grpctls",
        backend_protocol="GRPCS",
        proxy_ssl_secret=f"default/{ca}",
        proxy_ssl_verify="on",
        **annotations,
    )


def grpc_objects(
    main: GrpcBackend,
    tls: GrpcBackend,
    route: Callable[..., dict[str, Any]] = grpc_ingress,
    **grpcs: str,
) -> list[dict[str, Any]]:
    """What both gRPC e2e files serve: Services grpc (``main``), grpctls
    (``tls``, which must present ``UPSTREAM``) and dead (nothing listens), the
    upstream CA's Secret, and the routes grpc.test (20m bodies), down.test,
    slow.test (a 1 s read timeout) and grpcs.test (GRPCS to grpctls, verified
    as upstream.test; ``grpcs``: more of its annotations). ``route`` makes the
    Ingresses (``grpc_ingress`` with a file's own prefix and TLS)."""
    return [
        ingress_class(),
        service("grpc"),
        endpoint_slice("grpc", [LOCALHOST], main.port),
        service("grpctls"),
        endpoint_slice("grpctls", [LOCALHOST], tls.port),
        service("dead"),
        endpoint_slice("dead", [LOCALHOST], free_port()),
        secret("grpc-ca", ca_crt=UPSTREAM_CA.cert_pem),
        route("grpc", "grpc.test", "grpc", proxy_body_size="20m"),
        route("down", "down.test", "dead"),
        route("slow", "slow.test", "grpc", proxy_read_timeout="1"),
        grpcs_ingress(
            "grpcs", "grpcs.test", "grpc-ca", route, proxy_ssl_name="upstream.test", **grpcs
        ),
    ]


T = TypeVar("T")


def concurrently(
    call: Callable[[int], T], count: int, timeout: float = 20.0
) -> tuple[list[T], float]:
    """``call(0)`` to ``call(count - 1)`` each in a thread of its own, all at
    once: what they returned (in the order they finished; a call that raised
    leaves nothing) and the seconds they took together. Each thread is waited
    for at most ``timeout`` seconds."""
    results: list[T] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        result = call(i)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(count)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    with lock:
        return list(results), time.monotonic() - start


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    backend = GrpcBackend()
    print(backend.port, flush=True)
    threading.Event().wait(120)  # bounded: a forgotten process ends by itself
