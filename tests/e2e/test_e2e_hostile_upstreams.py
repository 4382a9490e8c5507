"""End to end: upstreams that misbehave in ways a client must never see.

- An upstream that writes more than the response asked for (a second, partial
  response, or garbage, in the same write) must not have its connection pooled:
  the next request on it, from another client, would get those bytes.
- An upstream whose response head never ends is read only up to
  proxy-buffer-size (ingress-nginx: 4k), then answered with 502, as nginx's
  "upstream sent too big header".
- Response headers nginx never passes on (Server, Date, X-Accel-*) do not reach
  the client; ingressd's own answers carry no Server header either.

Each upstream here is a raw asyncio server with a scripted answer, run by the
test on 127.0.0.1, that counts its connections and requests.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from e2e_helpers import LOCALHOST, BackgroundLoop, Ingressd, nginx_page, serving
from k8s_objects import endpoint_slice, ingress, ingress_class, path, rule, service

A = "nginx.ingress.kubernetes.io/"
MIB = 1 << 20


class ScriptedUpstream:
    """Reads each request head (bodies are not expected) and answers what
    ``script(n)`` returns for the n-th request on the connection (0-based):
    bytes to write, or a coroutine function given the writer and a counter of
    bytes written, for endless answers. Counts connections, requests, and bytes
    written per connection."""

    def __init__(
        self,
        loop: BackgroundLoop,
        script: Callable[[int], object],
    ) -> None:
        self._loop = loop
        self.script = script
        self.connections = 0
        self.requests = 0
        self.written: list[int] = []  # per connection, once it ended
        self.ended = 0  # connections ended
        self._lock = threading.Lock()
        self._server = loop.run(asyncio.start_server(self._handle, LOCALHOST, 0))
        self.port: int = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            index = self.connections
            self.connections += 1
            self.written.append(0)
        counter = [0]
        try:
            for n in range(100):
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                if not head:
                    return
                with self._lock:
                    self.requests += 1
                answer = self.script(n)
                if isinstance(answer, bytes):
                    writer.write(answer)
                    await writer.drain()
                    with self._lock:
                        self.written[index] += len(answer)
                else:
                    await answer(writer, counter)  # type: ignore[operator]
                    return
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            with self._lock:
                self.written[index] += counter[0]
            writer.close()
            self.ended += 1

    def close(self) -> None:
        async def _close() -> None:
            self._server.close()
            await self._server.wait_closed()

        self._loop.run(_close(), timeout=10)


def response(body: bytes, *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%b\r\n%b" % (len(body), extra, body)


def get(port: int, host: str, target: str = "/", timeout: float = 10.0) -> bytes:
    """One request on a new client connection; the raw answer until the proxy closes."""
    request = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    with socket.create_connection((LOCALHOST, port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while len(data) < 4 * MIB:
            part = s.recv(65536)
            if not part:
                break
            data += part
        return data


def status_and_body(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def header_names(answer: bytes) -> list[bytes]:
    head = answer.partition(b"\r\n\r\n")[0]
    return [line.split(b":", 1)[0].lower() for line in head.split(b"\r\n")[1:]]


# -- upstreams ------------------------------------------------------------------------------


def overrun(n: int) -> bytes:
    """The whole response, then the start of a second one nobody asked for."""
    return response(b"first\n") + b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nPOISON"


def overrun_garbage(n: int) -> bytes:
    return response(b"first\n") + b"\x00\x01 not http at all \r\n\r\n"


def overrun_headers_only(n: int) -> bytes:
    """A second response head that ends within the write: its body would be the next answer."""
    return response(b"first\n") + b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n"


Writer = Callable[[asyncio.StreamWriter, list[int]], object]


def endless(first: bytes, chunk: bytes) -> Writer:
    """``first``, then ``chunk`` again and again, up to 64 MiB, counting what was written."""

    async def write(writer: asyncio.StreamWriter, counter: list[int]) -> None:
        writer.write(first)
        for _ in range(64 * MIB // len(chunk)):
            writer.write(chunk)
            await writer.drain()
            counter[0] += len(chunk)

    return write


def endless_headers(n: int) -> Writer:
    return endless(b"HTTP/1.1 200 OK\r\n", (b"X-Filler: " + b"a" * 1000 + b"\r\n") * 16)


def endless_header_line(n: int) -> Writer:
    """One header line that never ends: httptools would hold it all itself."""
    return endless(b"HTTP/1.1 200 OK\r\nX-Long: ", b"b" * 16384)


def sized_head(size: int) -> Callable[[int], bytes]:
    """A response whose status line and headers take exactly ``size`` bytes."""

    def script(n: int) -> bytes:
        start = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Pad-Out: "
        filler = size - len(start) - 4  # the CRLF ending the line and the empty line
        return start + b"p" * filler + b"\r\n\r\nok\n"

    return script


def nginx_hidden(n: int) -> bytes:
    return response(
        b"shown\n",
        b"Server: gunicorn/20.1.0",
        b"Date: Thu, 01 Jan 1970 00:00:00 GMT",
        b"X-Accel-Redirect: /internal/secret",
        b"X-Accel-Buffering: no",
        b"X-Pad: avoid browser bug",
        b"X-Kept: yes",
    )


def chunked_with_trailers(n: int) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nshown\n\r\n"
        b"0\r\nX-Checksum: abc\r\nKeep-Alive: 5\r\n\r\n"
    )


SCRIPTS: dict[str, Callable[[int], object]] = {
    "overrun": overrun,
    "garbage": overrun_garbage,
    "headonly": overrun_headers_only,
    "endless": endless_headers,
    "endlessline": endless_header_line,
    "head4000": sized_head(4000),
    "head5000": sized_head(5000),
    "head9000": sized_head(9000),
    "hidden": nginx_hidden,
    "trailers": chunked_with_trailers,
}


@pytest.fixture(scope="module")
def upstreams(upstream_loop: BackgroundLoop) -> Iterator[dict[str, ScriptedUpstream]]:
    servers = {name: ScriptedUpstream(upstream_loop, s) for name, s in SCRIPTS.items()}  # type: ignore[arg-type]
    try:
        yield servers
    finally:
        for server in servers.values():
            server.close()


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory,
    upstreams: dict[str, ScriptedUpstream],
    curl_binary: str,
) -> Iterator[Ingressd]:
    objs: list = [ingress_class()]
    for name, server in upstreams.items():
        objs += [service(name), endpoint_slice(name, [LOCALHOST], server.port)]
        annotations = {}
        if name == "head9000":
            annotations[A + "proxy-buffer-size"] = "16k"
        objs.append(ingress(name, [rule(f"{name}.test", path("/", name))], annotations=annotations))
    with serving(tmp_path_factory.mktemp("hostile-upstreams"), objs) as proc:
        yield proc


# -- bytes after the response ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["overrun", "garbage", "headonly"])
def test_bytes_after_a_response_never_reach_the_next_client(
    proxy: Ingressd, upstreams: dict[str, ScriptedUpstream], name: str
) -> None:
    upstream = upstreams[name]
    before = upstream.connections
    for _ in range(3):  # three clients, one after the other
        status, body = status_and_body(get(proxy.http_port, f"{name}.test"))
        assert (status, body) == (200, b"first\n")
    # Each request had a connection of its own: none went back to the pool.
    assert upstream.connections - before == 3
    assert upstream.requests == upstream.connections
    proxy.wait_for_log(f"127.0.0.1:{upstream.port} sent bytes after its response")


# -- the response head's size ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["endless", "endlessline"])
def test_an_endless_response_head_is_read_only_up_to_the_bound(
    proxy: Ingressd, upstreams: dict[str, ScriptedUpstream], name: str
) -> None:
    upstream = upstreams[name]
    status, body = status_and_body(get(proxy.http_port, f"{name}.test", timeout=30))
    assert (status, body) == (502, nginx_page(502))
    line = proxy.wait_for_log(f"GET {name}.test/: 502 Bad Gateway: ")
    assert "upstream sent too big header" in line and "4096 bytes" in line, line
    # No retry (invalid_header is not in the default proxy-next-upstream), and
    # the upstream's writes stopped once ingressd stopped reading: what it got
    # out is the bound plus the kernel's socket buffers, not 64 MiB.
    proxy.wait_for(lambda: upstream.ended == 1, timeout=10, what="the upstream connection ends")
    assert (upstream.connections, upstream.requests) == (1, 1)
    assert upstream.written[0] < 16 * MIB


@pytest.mark.parametrize(
    ("name", "status"), [("head4000", 200), ("head5000", 502), ("head9000", 200)]
)
def test_proxy_buffer_size_bounds_the_response_head(
    proxy: Ingressd, name: str, status: int
) -> None:
    got, body = status_and_body(get(proxy.http_port, f"{name}.test"))
    assert got == status, body
    if status == 200:
        assert body == b"ok\n"


# -- headers nginx does not pass on ----------------------------------------------------------


def test_server_date_and_x_accel_headers_are_not_passed_on(proxy: Ingressd) -> None:
    answer = get(proxy.http_port, "hidden.test")
    status, body = status_and_body(answer)
    assert (status, body) == (200, b"shown\n")
    names = header_names(answer)
    assert b"server" not in names
    assert b"x-accel-redirect" not in names and b"x-accel-buffering" not in names
    assert b"x-pad" not in names
    assert names.count(b"date") == 1
    assert b"1970" not in answer.partition(b"\r\n\r\n")[0]  # ingressd's own Date
    assert b"x-kept" in names


def test_own_answers_carry_no_server_header(proxy: Ingressd) -> None:
    answer = get(proxy.http_port, "nowhere.test")
    assert status_and_body(answer)[0] == 404
    names = header_names(answer)
    assert b"server" not in names
    assert b"date" in names


def test_trailers_of_a_chunked_response_are_passed_on(proxy: Ingressd) -> None:
    answer = get(proxy.http_port, "trailers.test")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    # The trailer field follows the last chunk; a hop-by-hop one does not.
    assert body == b"6\r\nshown\n\r\n0\r\nX-Checksum: abc\r\n\r\n"
