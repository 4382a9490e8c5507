"""Access log lines and the JSON process log, without sockets.

A ``ClientConnection`` is driven with in-memory transports (as
``loadtests/hotpath.py`` does) and its access log written into a pipe, so
each line is what ingressd would print for that request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import replace

import pytest

from ingressd.model.backend import Backend, Endpoint
from ingressd.model.log_format import KNOWN, parse_format
from ingressd.model.policy import DEFAULT_POLICY
from ingressd.model.table import Route, RouteTable, VirtualHost
from ingressd.observe.access_log import PIPE_BUF, AccessLog
from ingressd.observe.log_format import VARIABLES
from ingressd.observe.logs import JsonFormatter, configure
from ingressd.policy.annotations import parse_cidrs
from ingressd.proxy.client_h1 import ClientConnection
from ingressd.proxy.settings import ProxySettings
from ingressd.proxy.state import ProxyState
from ingressd.proxy.upstream_h1 import UpstreamConnection

ENDPOINT = Endpoint("127.0.0.1", 9)
RESPONSE = b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nok\n"


class MemoryTransport(asyncio.Transport):
    def __init__(self, peer: tuple[str, int]) -> None:
        super().__init__()
        self.out: list[bytes] = []
        self.closed = False
        self._extra = {"peername": peer, "sockname": ("127.0.0.1", 8080)}

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self._extra.get(name, default)

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.out.append(bytes(data))

    def writelines(self, parts: object) -> None:  # type: ignore[override]
        self.out.append(b"".join(parts))  # type: ignore[arg-type]

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self.out)
        self.out.clear()
        return data


class Proxy:
    """One client connection in front of one pooled upstream connection."""

    def __init__(self, fmt: str, fd: int, **settings: object) -> None:
        backend = Backend("default/api:80", (ENDPOINT,))
        route = Route("/api", "Prefix", backend, "default/api")
        table = RouteTable(exact_hosts={"a.test": VirtualHost("a.test", prefix={"/api": route})})
        self.state = ProxyState(table, ProxySettings(access_log=fmt, **settings))  # type: ignore[arg-type]
        if self.state.access_log is not None:
            self.state.access_log.fd = fd
        self.client = ClientConnection(self.state, tls=False)
        self.client_tx = MemoryTransport(("192.0.2.7", 50000))
        self.client.connection_made(self.client_tx)
        self.upstream = UpstreamConnection(self.state.pool, ENDPOINT)
        self.upstream_tx = MemoryTransport(("127.0.0.1", 9))
        self.upstream.connection_made(self.upstream_tx)
        self.state.pool.release(self.upstream)

    def proxied(self, request: bytes) -> bytes:
        """Send ``request``; answer it upstream with RESPONSE; the bytes the upstream got."""
        self.client.data_received(request)
        sent = self.upstream_tx.take()
        self.upstream.data_received(RESPONSE)
        return sent

    def flush(self) -> None:
        if self.state.access_log is not None:
            self.state.access_log.flush()


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    try:
        yield r, w
    finally:
        os.close(r)
        os.close(w)


def read_lines(fd: int) -> list[str]:
    try:
        return os.read(fd, 1 << 20).decode().splitlines()
    except BlockingIOError:
        return []


async def test_json_line_fields(pipe: tuple[int, int]) -> None:
    r, w = pipe
    # enable-access-log-for-default-backend: the no-route answer below is logged too
    proxy = Proxy("json", w, log_default_backend=True)
    request = (
        b"POST /api/items?id=7&x=%22 HTTP/1.1\r\nHost: a.test\r\n"
        b'User-Agent: agent "quoted" \\ \xff\r\nReferer: https://r.test/\r\n'
        b"Content-Length: 5\r\n\r\nhello"
    )
    sent = proxy.proxied(request)
    answer = proxy.client_tx.take()
    proxy.client.data_received(b"GET /nowhere HTTP/1.0\r\n\r\n")  # no Host: no route
    proxy.flush()
    lines = read_lines(r)
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    request_id = re.search(rb"X-Request-ID: (\w+)\r\n", sent).group(1).decode()  # type: ignore[union-attr]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert first == {
        **first,
        "request_id": request_id,
        "client_addr": "192.0.2.7",
        "host": "a.test",
        "method": "POST",
        "path": "/api/items",
        "query": "id=7&x=%22",
        "protocol": "HTTP/1.1",
        "status": 201,
        "bytes_sent": len(answer),
        "upstream_addr": "127.0.0.1:9",
        "upstream_status": 201,
        "ingress": "default/api",
        "service": "default/api:80",
        "user_agent": 'agent "quoted" \\ \xff',
        "referer": "https://r.test/",
    }
    assert first["bytes_received"] == len(request)  # the head as sent, and the body
    assert (
        first["duration"] >= first["upstream_duration"] >= first["upstream_connect_duration"] >= 0
    )
    assert second["status"] == 404
    assert second["ingress"] == "" and second["service"] == ""
    assert second["upstream_addr"] is None and second["upstream_duration"] is None
    assert second["protocol"] == "HTTP/1.0"
    assert second["request_id"] and second["request_id"] != request_id
    assert second["user_agent"] is None


async def test_client_addr_follows_trusted_proxies(pipe: tuple[int, int]) -> None:
    r, w = pipe
    proxy = Proxy("json", w, trusted_proxies=parse_cidrs("192.0.2.0/24"))
    proxy.proxied(
        b"GET /api HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: 203.0.113.9, 192.0.2.50\r\n\r\n"
    )
    proxy.flush()
    (line,) = read_lines(r)
    assert json.loads(line)["client_addr"] == "203.0.113.9"  # the peer 192.0.2.7 is trusted


async def test_plain_line(pipe: tuple[int, int]) -> None:
    r, w = pipe
    proxy = Proxy("plain", w)
    proxy.proxied(b'GET /api/"x" HTTP/1.1\r\nHost: a.test\r\nUser-Agent: curl/8\r\n\r\n')
    proxy.flush()
    (line,) = read_lines(r)
    match = re.fullmatch(
        r'(\S+) - - \[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000)\] "GET (\S+) HTTP/1.1" '
        r'(\d{3}) (\d+) "-" "curl/8" (\d+) (\d+\.\d{3}) \[default/api\] \[default/api:80\] '
        r"127.0.0.1:9 (\d+\.\d{3}) 201 (\w{32})",
        line,
    )
    assert match, line
    assert match.group(1) == "192.0.2.7"
    assert match.group(3) == '/api/\\"x\\"'  # quotes escaped, as nginx does
    assert match.group(4) == "201"


async def test_off_formats_nothing() -> None:
    proxy = Proxy("off", -1)
    assert proxy.state.access_log is None
    proxy.proxied(b"GET /api HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert proxy.client_tx.take().startswith(b"HTTP/1.1 201")
    view = proxy.state.stats.view(0)
    assert sum(rec[0] for rec in view.requests.values()) == 1  # counted all the same


async def test_lines_are_written_in_pipe_sized_pieces_and_the_rest_on_a_timer(
    pipe: tuple[int, int],
) -> None:
    r, w = pipe
    proxy = Proxy("json", w)
    log = proxy.state.access_log
    assert log is not None
    writes: list[str] = []
    real = log._write

    def spy(text: str) -> None:
        writes.append(text)
        real(text)

    log._write = spy  # type: ignore[method-assign]
    for _ in range(40):
        proxy.proxied(b"GET /api HTTP/1.1\r\nHost: a.test\r\n\r\n")
    early = read_lines(r)
    assert 0 < len(early) < 40  # full pieces are out; the rest waits
    assert all(len(piece) <= PIPE_BUF and piece.endswith("\n") for piece in writes)
    assert len(writes) < len(early) / 4  # several lines per write
    await asyncio.sleep(0.25)  # the timer writes the rest
    assert len(early) + len(read_lines(r)) == 40
    assert all(len(piece) <= PIPE_BUF and piece.endswith("\n") for piece in writes)


def test_a_closed_stdout_turns_the_log_off() -> None:
    r, w = os.pipe()
    os.close(r)
    log = AccessLog("json", w)
    log._lines = ['{"x":1}\n']
    try:
        log.flush()  # EPIPE (SIGPIPE is ignored by Python)
    finally:
        os.close(w)
    assert log.broken


def test_json_process_log(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure("info", "json", worker=3)
    try:
        logging.getLogger("ingressd.test").warning(
            "hello %s", "world", extra={"ingress": "default/web"}
        )
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("ingressd.test").exception("failed")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert first == {
        "time": first["time"],
        "level": "warning",
        "logger": "ingressd.test",
        "message": "hello world",
        "worker": 3,
        "ingress": "default/web",
    }
    assert second["level"] == "error"
    assert "ValueError: boom" in second["exception"]


def test_json_formatter_copes_with_anything() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", ("\x00\n",), None)
    record.odd = object()
    out = json.loads(JsonFormatter().format(record))
    assert out["message"] == "\x00\n"
    assert out["odd"].startswith("<object")


# -- the ConfigMap's access-log keys and the enable-access-log annotation ---------------


async def test_what_no_rule_takes_is_left_out_unless_the_configmap_says(
    pipe: tuple[int, int],
) -> None:
    """enable-access-log-for-default-backend (false by default, as ingress-nginx's
    default server location's access_log off): a no-route 404 is not logged; a
    request refused before routing (400) is, as nginx logs it at server level."""
    r, w = pipe
    proxy = Proxy("json", w)
    proxy.proxied(b"GET /api HTTP/1.1\r\nHost: a.test\r\n\r\n")
    proxy.client.data_received(b"GET /nowhere HTTP/1.1\r\nHost: b.test\r\n\r\n")
    proxy.client.data_received(b"GET / HTTP/1.1\r\n\r\n")  # no Host: 400
    proxy.flush()
    assert [json.loads(line)["status"] for line in read_lines(r)] == [201, 400]


async def test_disable_access_log_writes_nothing(pipe: tuple[int, int]) -> None:
    r, w = pipe
    proxy = Proxy("json", w, access_log_off=True, log_default_backend=True)
    proxy.proxied(b"GET /api HTTP/1.1\r\nHost: a.test\r\n\r\n")
    proxy.client.data_received(b"GET /nowhere HTTP/1.1\r\nHost: b.test\r\n\r\n")
    proxy.flush()
    assert read_lines(r) == []


async def test_the_enable_access_log_annotation_leaves_a_route_out(pipe: tuple[int, int]) -> None:
    r, w = pipe
    proxy = Proxy("json", w)
    route = proxy.state.table.exact_hosts["a.test"].prefix["/api"]
    quiet = replace(route, policy=replace(DEFAULT_POLICY, access_log=False))
    proxy.state.table.exact_hosts["a.test"].prefix["/api"] = quiet
    proxy.proxied(b"GET /api HTTP/1.1\r\nHost: a.test\r\n\r\n")
    proxy.client.data_received(b"GET / HTTP/1.1\r\n\r\n")  # a 400: still logged
    proxy.flush()
    assert [json.loads(line)["status"] for line in read_lines(r)] == [400]


@pytest.mark.parametrize(
    ("escape", "agent", "expected"),
    [
        ("default", 'a "b" \\ \xff', "a \\x22b\\x22 \\x5C \\xFF"),
        ("json", 'a "b" \\ \xff', 'a \\"b\\" \\\\ \xff'),
        ("none", 'a "b" \\ \xff', 'a "b" \\ \xff'),
    ],
)
async def test_log_format_upstream_renders_nginx_variables(
    pipe: tuple[int, int], escape: str, agent: str, expected: str
) -> None:
    r, w = pipe
    fmt = parse_format(
        '$remote_addr - $remote_user "$request" $status $upstream_addr $upstream_status '
        '"$http_user_agent" $http_x_missing [$proxy_upstream_name] $namespace/$ingress_name '
        "$service_name:$service_port $req_id",
        escape,
    )
    proxy = Proxy("json", w, log_format=fmt)
    head = (
        b"GET /api?q=1 HTTP/1.1\r\nHost: a.test\r\nAuthorization: Basic YWxpY2U6cHc=\r\n"
        b"X-Request-ID: rid\r\nUser-Agent: " + agent.encode("latin-1") + b"\r\n\r\n"
    )
    proxy.proxied(head)
    proxy.flush()
    (line,) = read_lines(r)
    missing = "" if escape == "json" else "-"
    assert line == (
        f'192.0.2.7 - alice "GET /api?q=1 HTTP/1.1" 201 127.0.0.1:9 201 "{expected}" '
        f"{missing} [default/api:80] default/api api:80 rid"
    )


@pytest.mark.parametrize(
    "value",
    ["", "$nope", "$remote_addr ${unclosed", "a\nb", "$" + "x" * 5000, "$cookie_a"],
)
def test_log_format_upstream_refuses_what_it_cannot_render(value: str) -> None:
    with pytest.raises(ValueError):
        parse_format(value)


def test_every_variable_the_parser_takes_renders() -> None:
    assert set(VARIABLES) == KNOWN
