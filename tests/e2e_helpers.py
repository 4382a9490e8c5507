"""Running real things for the end-to-end tests: ingressd, upstreams, curl.

Everything listens on 127.0.0.1 on free ports, every wait has a deadline, and
everything started here has a way to stop it. The pytest fixtures built on
these live in ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from k8s_objects import endpoint_slice, ingress, ingress_class, path, rule, service
from prometheus_client.parser import text_string_to_metric_families

from ingressd.echo import EchoServer, start_echo
from ingressd.model.objects import Obj

T = TypeVar("T")

LOCALHOST = "127.0.0.1"
CURL = "/usr/bin/curl"
REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


def nginx_page(status: int) -> bytes:
    """The body ingress-nginx sends for an answer of its own with ``status``:
    nginx's built-in page (ingressd.proxy.pages; tests/proxy/test_pages.py and
    tests/e2e/test_e2e_pages.py hold it to nginx's). Why ingressd answered is in
    its log, not in this body."""
    from ingressd.proxy.pages import page

    return page(status)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOCALHOST, port))
        except OSError:
            return False
        return True


def wait_for(
    predicate: Callable[[], T], timeout: float, interval: float = 0.05, what: str = "condition"
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


# -- upstreams in a background event loop ---------------------------------------------------


class BackgroundLoop:
    """An asyncio loop in a daemon thread, so sync tests can block on curl."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="e2e-upstreams")
        self._thread.daemon = True
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        if self.loop.is_closed():
            return

        async def _cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.run(_cancel_rest(), timeout=5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self.loop.close()


@contextlib.contextmanager
def aiohttp_service(
    loop: BackgroundLoop, handler: Callable[[Any], Coroutine[Any, Any, Any]], **runner: Any
) -> Iterator[int]:
    """An aiohttp server on 127.0.0.1 (a free port) run by ``loop``, every method
    and path to ``handler``; its port. ``runner``: AppRunner options (keepalive_timeout)."""
    from aiohttp import web

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    app_runner = web.AppRunner(app, access_log=None, **runner)

    async def start() -> int:
        await app_runner.setup()
        site = web.TCPSite(app_runner, LOCALHOST, 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    port = loop.run(start())
    try:
        yield port
    finally:
        loop.run(app_runner.cleanup())


@dataclass
class RecordingService:
    """An HTTP service (an auth service, mostly) that records what each request
    looked like (``describe``: its lowercase headers unless a subclass says
    otherwise) and answers it (``answer``: 200 "ok" unless a subclass says
    otherwise). ``serve`` runs it on a free port of 127.0.0.1."""

    port: int = 0
    seen: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def describe(self, request: Any) -> Any:
        return {k.lower(): v for k, v in request.headers.items()}

    async def answer(self, request: Any) -> Any:
        from aiohttp import web

        return web.Response(text="ok")

    async def handle(self, request: Any) -> Any:
        entry = await self.describe(request)
        with self.lock:
            self.seen.append(entry)
        return await self.answer(request)

    @contextlib.contextmanager
    def serve(self, loop: BackgroundLoop, **runner: Any) -> Iterator[Any]:
        with aiohttp_service(loop, self.handle, **runner) as port:
            self.port = port
            yield self

    def count(self) -> int:
        with self.lock:
            return len(self.seen)

    mark = count  # what since() takes

    def last(self) -> Any:
        with self.lock:
            return self.seen[-1]

    def since(self, mark: int) -> list[Any]:
        with self.lock:
            return self.seen[mark:]


def annotated(host: str, *paths: str, **annotations: str) -> Obj:
    """An Ingress named after ``host``'s first label, its ``paths`` (default "/") to
    Service ``web``, with nginx annotations as keywords (``auth_url`` for auth-url)."""
    prefix = "nginx.ingress.kubernetes.io/"
    return ingress(
        host.split(".")[0],
        [rule(host, *(path(p, "web") for p in paths or ("/",)))],
        annotations={prefix + k.replace("_", "-"): v for k, v in annotations.items()},
    )


class EchoServers(Mapping[str, int]):
    """Echo upstreams (``ingressd.echo``) by service name -> port."""

    def __init__(self, loop: BackgroundLoop, names: Iterable[str] = ()) -> None:
        self._loop = loop
        self._servers: dict[str, EchoServer] = {}
        for name in names:
            self.start(name)

    def start(self, name: str) -> int:
        if name in self._servers:
            raise ValueError(f"echo server {name!r} is already running")
        server = self._loop.run(start_echo(LOCALHOST, 0, name))
        self._servers[name] = server
        return server.port

    def close(self) -> None:
        servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            self._loop.run(server.close(), timeout=10)

    def __getitem__(self, name: str) -> int:
        return self._servers[name].port

    def __iter__(self) -> Iterator[str]:
        return iter(self._servers)

    def __len__(self) -> int:
        return len(self._servers)


class RecordingListener:
    """A raw TCP upstream that records every byte it receives.

    It answers each request (head, plus a Content-Length or chunked body) with
    ``200 recorded`` and keeps the connection open, so ingressd pools it: a
    request that reaches the upstream shows up here whether ingressd opened a
    new connection or reused one. Tests use it to prove that a request was, or
    was not, passed on.
    """

    RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nrecorded\n"
    MAX_BYTES = 16 << 20  # per connection; more ends it

    def __init__(self, loop: BackgroundLoop) -> None:
        self._loop = loop
        self.received: list[bytes] = []  # one entry per connection, appended to as bytes come
        self.requests = 0  # request heads read, on all connections
        self._lock = threading.Lock()
        self._server = loop.run(asyncio.start_server(self._handle, LOCALHOST, 0))
        self.port: int = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            index = len(self.received)
            self.received.append(b"")
        buf = b""
        try:
            for _ in range(1000):  # requests on this connection
                while b"\r\n\r\n" not in buf:
                    buf += await self._read(reader, index)
                head, _, buf = buf.partition(b"\r\n\r\n")
                with self._lock:
                    self.requests += 1
                lower = head.lower()
                if b"transfer-encoding: chunked" in lower:
                    while b"0\r\n\r\n" not in buf:
                        buf += await self._read(reader, index)
                    buf = buf.partition(b"0\r\n\r\n")[2]
                elif b"content-length:" in lower:
                    length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
                    while len(buf) < length:
                        buf += await self._read(reader, index)
                    buf = buf[length:]
                if not await self.answer(reader, writer):
                    break
        except (TimeoutError, OSError, EOFError, ValueError):
            pass
        finally:
            writer.close()

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False closes the connection."""
        writer.write(self.RESPONSE)
        await writer.drain()
        return True

    async def _read(self, reader: asyncio.StreamReader, index: int) -> bytes:
        data = await asyncio.wait_for(reader.read(65536), 30)
        if not data:
            raise EOFError
        with self._lock:
            self.received[index] += data
            if len(self.received[index]) > self.MAX_BYTES:
                raise EOFError
        return data

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self.received)

    def mark(self) -> list[int]:
        """Where every connection's record ends now; pass it to ``since``."""
        with self._lock:
            return [len(b) for b in self.received]

    def since(self, mark: list[int]) -> bytes:
        """Every byte received after ``mark``, connection by connection."""
        with self._lock:
            return b"".join(
                data[mark[i] if i < len(mark) else 0 :] for i, data in enumerate(self.received)
            )

    def close(self) -> None:
        async def _close() -> None:
            self._server.close()
            await self._server.wait_closed()

        self._loop.run(_close(), timeout=10)


class FaultyUpstream(RecordingListener):
    """An upstream that misbehaves on purpose, after reading each whole request.

    ``mode``: ``"status:N"`` answers status N (keep-alive); ``"reset"`` closes
    the connection without answering; ``"stall"`` never answers (until the
    peer goes); ``"garbage"`` answers bytes that are not HTTP. ``requests``
    counts what reached it. (A refused connection needs no server: use a free port.)
    """

    def __init__(self, loop: BackgroundLoop, mode: str) -> None:
        self.mode = mode
        super().__init__(loop)

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if self.mode.startswith("status:"):
            status = int(self.mode[7:])
            body = f"{status} from a faulty upstream\n".encode()
            writer.write(
                b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%b" % (status, len(body), body)
            )
            await writer.drain()
            return True
        if self.mode == "stall":
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(reader.read(), 30)
            return False
        if self.mode == "garbage":
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            await writer.drain()
            return True
        return False  # reset


# -- manifests ----------------------------------------------------------------------------


def echo_backend(name: str, port: int, *, ready: bool = True) -> list[Obj]:
    """Service ``name`` (port 80) and an EndpointSlice sending it to 127.0.0.1:``port``."""
    return [service(name), endpoint_slice(name, [(LOCALHOST, ready)], port)]


def manifest_text(objs: Iterable[Obj]) -> str:
    return yaml.safe_dump_all(list(objs), sort_keys=False)


def write_file(path: Path, text: str) -> None:
    """Replace ``path`` in one step, as editors and kubectl-style tools do.

    The temporary name starts with a dot, which the manifest loader ignores.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# -- curl -------------------------------------------------------------------------------


@dataclass
class CurlResult:
    status: int  # of the last response (0 when there was none)
    headers: list[tuple[str, str]]  # of the last response, in order
    body: bytes
    stderr: str
    exit_code: int
    write_out: str = ""  # what -w printed
    responses: list[tuple[int, list[tuple[str, str]]]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return ", ".join(values) if values else None

    def header_values(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for n, v in self.headers if n.lower() == lname]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise AssertionError(f"not JSON (status {self.status}): {self.body[:500]!r}") from None

    def __str__(self) -> str:
        return (
            f"curl exit {self.exit_code}, status {self.status}, headers {self.headers}, "
            f"body {self.body[:300]!r}, stderr {self.stderr[-1000:]!r}"
        )


def parse_header_dump(raw: bytes) -> list[tuple[int, list[tuple[str, str]]]]:
    """The (status, headers) of every response in a ``curl -D`` dump."""
    responses: list[tuple[int, list[tuple[str, str]]]] = []
    for line in raw.decode("latin-1").split("\r\n"):
        if line.startswith("HTTP/"):
            parts = line.split(" ", 2)
            responses.append((int(parts[1]), []))
        elif line and responses and ":" in line:
            name, _, value = line.partition(":")
            responses[-1][1].append((name.strip(), value.strip()))
    return responses


def websocket_upgrade_args(key: str = "dGhlIHNhbXBsZSBub25jZQ==") -> list[str]:
    """curl arguments that ask for a WebSocket upgrade (the README's example key)."""
    headers = (
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Version: 13",
        f"Sec-WebSocket-Key: {key}",
    )
    return [arg for header in headers for arg in ("-H", header)]


def curl(*args: str, max_time: float = 10.0, check: bool = True) -> CurlResult:
    """Run the real curl; ``args`` are curl arguments including the URL.

    Headers come from ``-D`` (a temporary file), the body from curl's stdout.
    With ``-w`` stdout becomes ``write_out`` instead, so send bodies elsewhere
    with ``-o``. ``check`` fails the test when curl itself fails (no response,
    timeout, TLS error), with curl's stderr in the message.
    """
    fd, header_path = _tempfile()
    try:
        cmd = [CURL, "-s", "-S", "--max-time", f"{max_time:g}", "-D", header_path, *args]
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=max_time + 10,
            check=False,
        )
        with os.fdopen(fd, "rb") as f:
            responses = parse_header_dump(f.read())
    finally:
        os.unlink(header_path)
    status, headers = responses[-1] if responses else (0, [])
    write_out = ""
    body = proc.stdout
    if "-w" in args:
        write_out, body = proc.stdout.decode("latin-1"), b""
    result = CurlResult(
        status=status,
        headers=headers,
        body=body,
        stderr=proc.stderr.decode("utf-8", "replace"),
        exit_code=proc.returncode,
        write_out=write_out,
        responses=responses,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"curl {' '.join(args)} failed: {result}")
    return result


def _tempfile() -> tuple[int, str]:
    return tempfile.mkstemp(prefix="e2e-curl-headers-")


# -- raw sockets and TLS ------------------------------------------------------------------


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` to 127.0.0.1:``port`` and return everything read until close."""
    deadline = time.monotonic() + timeout
    out = b""
    with socket.create_connection((LOCALHOST, port), timeout=timeout) as s:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(data)  # on failure, the answer may already be waiting
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
    return out


def served_certificate(port: int, server_name: str | None, timeout: float = 5.0) -> bytes:
    """DER of the certificate 127.0.0.1:``port`` presents for SNI ``server_name``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((LOCALHOST, port), timeout=timeout) as raw,
        ctx.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def pem_to_der(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode())


# -- what ingressd serves -------------------------------------------------------------------


RELOAD_DEADLINE = 1.0  # a change must be served this soon after it is written


def backends(echo: Mapping[str, int]) -> list[Obj]:
    return [ingress_class(), *echo_backend("web", echo["web"]), *echo_backend("api", echo["api"])]


def simple(name: str, host: str, service: str, **kwargs: object) -> Obj:
    return ingress(name, [rule(host, path("/", service))], **kwargs)  # type: ignore[arg-type]


def served_by(ing: Ingressd, host: str) -> str | None:
    """The echo service answering ``host``, or None when it is not a 200 JSON echo."""
    r = ing.get(host, "/probe", check=False)
    return r.json()["service"] if r.status == 200 else None


def time_until(check: Callable[[], bool], what: str, timeout: float = 3.0) -> float:
    """Seconds until ``check()`` holds, polled with curl; fails after ``timeout``."""
    start = time.monotonic()
    wait_for(check, timeout, interval=0.02, what=what)
    return time.monotonic() - start


@contextlib.contextmanager
def serving(
    workdir: Path, objs: Iterable[Obj], extra_args: Iterable[str] = ()
) -> Iterator[Ingressd]:
    """An ingressd serving ``objs`` from a manifest folder in ``workdir``, stopped after."""
    proc = Ingressd(workdir / "manifests", workdir / "ingressd.log", extra_args=extra_args)
    proc.update({"all.yaml": list(objs)})
    try:
        yield proc.start()
    finally:
        proc.stop()


@contextlib.contextmanager
def serving_echo(
    workdir: Path, loop: BackgroundLoop, ingresses: Iterable[Obj]
) -> Iterator[Ingressd]:
    """``serving`` the Ingresses in front of echo upstreams ``web`` and ``api``."""
    echo = EchoServers(loop, ["web", "api"])
    try:
        with serving(workdir, [*backends(echo), *ingresses]) as proc:
            yield proc
    finally:
        echo.close()


# -- ingressd as a subprocess ---------------------------------------------------------------


class Ingressd:
    """``python -m ingressd serve`` (or ``demo``) in a subprocess, on free ports.

    Manifests are written into ``manifest_dir``; stderr (the log, at debug
    level) goes to ``log_path`` so tests can look for lines in it, and so does
    stdout (the access log) unless ``stdout_path`` names a file of its own.
    """

    def __init__(
        self,
        manifest_dir: Path | None,
        log_path: Path,
        *,
        command: str = "serve",
        extra_args: Iterable[str] = (),
        cwd: Path | None = None,
        new_session: bool = False,
        stdout_path: Path | None = None,
    ) -> None:
        self.manifest_dir = manifest_dir
        # A session (and process group) of its own, for tests that signal the group.
        self.new_session = new_session
        self.log_path = log_path
        self.stdout_path = stdout_path
        self.command = command
        self.extra_args = list(extra_args)
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.http_port = self.https_port = self.admin_port = 0
        if manifest_dir is not None:
            manifest_dir.mkdir(parents=True, exist_ok=True)

    # -- manifests ------------------------------------------------------------------

    def update(self, files: Mapping[str, Iterable[Obj] | str | None]) -> None:
        """Write (objects or raw text) or, for None, delete each named manifest file."""
        assert self.manifest_dir is not None
        for name, content in files.items():
            path = self.manifest_dir / name
            if content is None:
                path.unlink(missing_ok=True)
            else:
                write_file(path, content if isinstance(content, str) else manifest_text(content))

    # -- lifetime --------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, attempts: int = 3, until: str = "/readyz") -> Ingressd:
        """Start on fresh free ports (again, if another process took one meanwhile).

        Returns once the admin ``until`` path answers 200: ``/healthz`` to
        return before ingressd is ready to route.
        """
        for _ in range(attempts):
            self._spawn()
            try:
                self._wait_ready(until)
                return self
            except _PortClash:
                self.stop()
        raise AssertionError(f"ingressd could not bind its ports {attempts} times:\n{self.log()}")

    def _spawn(self) -> None:
        self.http_port, self.https_port, self.admin_port = _distinct_free_ports(3)
        cmd = [sys.executable, "-m", "ingressd", self.command]
        if self.manifest_dir is not None:
            cmd += ["--manifests", str(self.manifest_dir)]
        cmd += [
            "--address",
            LOCALHOST,
            "--http-port",
            str(self.http_port),
            "--https-port",
            str(self.https_port),
            "--admin-port",
            str(self.admin_port),
            "--log-level",
            "debug",
            *self.extra_args,
        ]
        if "--workers" not in self.extra_args:
            cmd += ["--workers", "1"]  # one process unless a test is about workers
        if "--shutdown-delay" not in self.extra_args:
            cmd += ["--shutdown-delay", "0"]  # stop at once unless a test is about draining
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        with (
            open(self.log_path, "ab") as log,
            open(self.stdout_path or self.log_path, "ab") as out,
        ):
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=log,
                cwd=self.cwd or REPO_ROOT,
                env=env,
                start_new_session=self.new_session,
            )

    def _wait_ready(self, until: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            code = self.proc.poll()  # type: ignore[union-attr]
            if code is not None:
                log = self.log()
                if "Address already in use" in log or "address already in use" in log:
                    raise _PortClash
                raise AssertionError(f"ingressd exited with {code} before ready:\n{log}")
            if self.admin_status(until) == 200:
                if not _listens_on(self.proc.pid, self.admin_port):  # type: ignore[union-attr]
                    # Another process took the admin port first and answered: this
                    # one is about to exit for it.
                    raise _PortClash
                return
            time.sleep(0.05)
        raise AssertionError(f"ingressd not ready within {READY_TIMEOUT:.0f} s:\n{self.log()}")

    def admin_status(self, path: str) -> int:
        """Status of a GET to the admin port, 0 when it does not answer."""
        request = f"GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n".encode()
        try:
            answer = raw_exchange(self.admin_port, request, timeout=2)
        except OSError:
            return 0
        try:
            return int(answer.split(b" ", 2)[1])
        except (IndexError, ValueError):
            return 0

    def stop(self) -> int | None:
        """SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL. Returns the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait(STOP_TIMEOUT)
        return proc.returncode

    def __enter__(self) -> Ingressd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- observing --------------------------------------------------------------------

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, text: str, timeout: float = 5.0) -> str:
        """Wait until ``text`` appears in the log; return the first line holding it."""

        def find() -> str | None:
            for line in self.log().splitlines():
                if text in line:
                    return line
            return None

        return wait_for(find, timeout, what=f"log line containing {text!r}")

    def wait_for(
        self, predicate: Callable[[], T], timeout: float = 5.0, what: str = "condition"
    ) -> T:
        return wait_for(predicate, timeout, what=what)

    def peak_rss_kib(self) -> int:
        """VmHWM (peak resident set size) of the ingressd process, in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc status")

    # -- talking to it -------------------------------------------------------------------

    def http_url(self, path: str = "/") -> str:
        return f"http://{LOCALHOST}:{self.http_port}{path}"

    def https_url(self, host: str, path: str = "/") -> str:
        """https://host:PORT/path; pair it with ``resolve(host)``."""
        return f"https://{host}:{self.https_port}{path}"

    def resolve(self, host: str) -> list[str]:
        return ["--resolve", f"{host}:{self.https_port}:{LOCALHOST}"]

    def curl(self, *args: str, **kwargs: Any) -> CurlResult:
        return curl(*args, **kwargs)

    def get(self, host: str, path: str = "/", *args: str, **kwargs: Any) -> CurlResult:
        """Plain-HTTP request with ``Host: host``."""
        return curl("-H", f"Host: {host}", *args, self.http_url(path), **kwargs)


IngressdFactory = Callable[..., Ingressd]  # the ``ingressd`` fixture (conftest.py)

# (sample name, sorted label pairs) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(admin_port: int) -> Samples:
    """Every sample ``/metrics`` shows now, parsed as Prometheus would."""
    answer = raw_exchange(
        admin_port, b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise AssertionError(f"/metrics answered {head[:200]!r}")
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def sample_labels(**labels: str) -> tuple[tuple[str, str], ...]:
    """The key part of ``Samples`` for these labels."""
    return tuple(sorted(labels.items()))


class _PortClash(Exception):
    pass


def _distinct_free_ports(n: int) -> list[int]:
    ports: list[int] = []
    for _ in range(10 * n):
        port = free_port()
        if port not in ports:
            ports.append(port)
            if len(ports) == n:
                return ports
    raise AssertionError(f"could not find {n} distinct free ports")


def examples_on_free_ports(dest: Path) -> tuple[Path, dict[int, int]]:
    """A copy of the bundled ``examples/`` under ``dest`` whose EndpointSlices
    name free ports instead of the demo's fixed ones, and the mapping from
    each fixed port to its stand-in: ``ingressd demo --manifests`` on it starts
    its echo upstreams where no other process can be (tests use free ports only)."""
    folder = dest / "examples"
    shutil.copytree(REPO_ROOT / "examples", folder)
    services = folder / "services.yaml"
    text = services.read_text()
    fixed = sorted({int(p) for p in re.findall(r"^    port: (\d+)$", text, re.M)})
    ports = dict(zip(fixed, _distinct_free_ports(len(fixed)), strict=True))
    for port, free in ports.items():
        text = text.replace(f"    port: {port}\n", f"    port: {free}\n")
    services.write_text(text)
    return folder, ports


# -- a hand-made nginx, to hold ingressd's answers against nginx's own ------------------------

NGINX = shutil.which("nginx", path=f"/usr/sbin:/usr/local/sbin:{os.environ.get('PATH', '')}")
# What every such nginx.conf starts its http block with: temp paths of its own (not the
# built-in /var/lib ones) and the test certificate ``start_nginx``'s caller wrote.
NGINX_HTTP_BASE = """\
  access_log off;
  client_body_temp_path {prefix}/client_body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  ssl_certificate {prefix}/tls.crt;
  ssl_certificate_key {prefix}/tls.key;
"""


def start_nginx(stack: contextlib.ExitStack, prefix: Path, conf: str, port: int) -> None:
    """Run nginx with ``conf`` (its files under ``prefix``) until ``stack`` closes,
    once it accepts connections on ``port``."""
    if NGINX is None:
        raise AssertionError("nginx is required (scripts/test.sh installs nginx-light)")
    (prefix / "nginx.conf").write_text(conf)
    cmd = [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"]
    cmd += ["-e", str(prefix / "error.log")]  # not the built-in /var/log path first
    log = stack.enter_context((prefix / "stdout.log").open("wb"))
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    stack.callback(_stop_process, proc)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, (prefix / "error.log").read_text(errors="replace")
        with contextlib.suppress(OSError), socket.create_connection((LOCALHOST, port), 0.5):
            return
        time.sleep(0.05)
    raise AssertionError("nginx did not listen within 10 s")


def _listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the socket listening on ``port`` (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                # local address "ADDR:PORT" in hex; state 0A is LISTEN
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                    inodes.add(f"socket:[{fields[9]}]")
    fds = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        for fd in fds.iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in inodes:
                    return True
    return False


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
