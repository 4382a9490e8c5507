"""End to end: the access log on stdout (json by default, plain, off) and ``--log-format json``.

ingressd's stdout goes to a file of its own here; each request's line is
compared with what the client sent and received and what the upstream saw.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_helpers import (
    BackgroundLoop,
    EchoServers,
    Ingressd,
    backends,
    raw_exchange,
    simple,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)

Start = Callable[..., tuple[Ingressd, Path]]
# The no-route 404s below are logged too (ingress-nginx leaves out what its default
# backend serves unless this key says otherwise: test_e2e_configmap_live.py).
LOG_DEFAULT_BACKEND = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "controller", "namespace": "ingressd"},
    "data": {"enable-access-log-for-default-backend": "true"},
}


@pytest.fixture
def start(
    tmp_path: Path, upstream_loop: BackgroundLoop, curl_binary: str
) -> Iterator[tuple[Start, EchoServers]]:
    """``start(*extra_args)`` -> (ingressd serving web.test and api.test, its stdout file)."""
    echo = EchoServers(upstream_loop, ["web", "api"])
    started: list[Ingressd] = []

    def run(*extra: str) -> tuple[Ingressd, Path]:
        n = len(started)
        stdout = tmp_path / f"stdout-{n}.log"
        proc = Ingressd(
            tmp_path / f"manifests-{n}",
            tmp_path / f"ingressd-{n}.log",
            extra_args=["--configmap", "ingressd/controller", *extra],
            stdout_path=stdout,
        )
        started.append(proc)
        proc.update(
            {
                "all.yaml": [
                    *backends(echo),
                    simple("web", "web.test", "web"),
                    simple("api", "api.test", "api"),
                    LOG_DEFAULT_BACKEND,
                ]
            }
        )
        return proc.start(), stdout

    try:
        yield run, echo
    finally:
        for proc in started:
            proc.stop()
        echo.close()


def lines(path: Path, n: int) -> list[str]:
    """The first ``n`` lines of ``path``, once it has them (the log is flushed every 100 ms)."""
    found = wait_for(
        lambda: len(text := path.read_text().splitlines()) >= n and text,
        5,
        what=f"{n} access log lines",
    )
    return found[:n]


def body(answer: bytes) -> dict:
    return json.loads(answer.partition(b"\r\n\r\n")[2])


def test_json_lines_describe_each_request(start: tuple[Start, EchoServers]) -> None:
    run, echo = start
    ing, stdout = run()  # json is the default
    get = (
        b"GET /hello/world?x=1&y=%22 HTTP/1.1\r\nHost: web.test\r\n"
        b"User-Agent: test-agent/1.0\r\nReferer: http://ref.test/a\r\nConnection: close\r\n\r\n"
    )
    upload = b"x" * 2000
    post = (
        b"POST /upload HTTP/1.1\r\nHost: api.test:8080\r\nX-Request-ID: client-chosen-id\r\n"
        b"Content-Length: 2000\r\nConnection: close\r\n\r\n" + upload
    )
    missing = b"GET /nothing HTTP/1.1\r\nHost: nowhere.test\r\nConnection: close\r\n\r\n"
    answers = [raw_exchange(ing.http_port, data) for data in (get, post, missing)]
    assert [a[:12] for a in answers] == [b"HTTP/1.1 200", b"HTTP/1.1 200", b"HTTP/1.1 404"]

    first, second, third = (json.loads(line) for line in lines(stdout, 3))
    seen = body(answers[0])
    assert first["request_id"] == seen["headers"]["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", first["request_id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert first == {
        **first,
        "client_addr": "127.0.0.1",
        "host": "web.test",
        "method": "GET",
        "path": "/hello/world",
        "query": "x=1&y=%22",
        "protocol": "HTTP/1.1",
        "status": 200,
        "bytes_sent": len(answers[0]),
        "bytes_received": len(get),
        "upstream_addr": f"127.0.0.1:{echo['web']}",
        "upstream_status": 200,
        "ingress": "default/web",
        "service": "default/web:80",
        "user_agent": "test-agent/1.0",
        "referer": "http://ref.test/a",
    }
    for field in ("duration", "upstream_connect_duration", "upstream_duration"):
        assert first[field] >= 0, field
    assert first["duration"] >= first["upstream_duration"]

    # A client's X-Request-ID is kept, and is what the upstream saw.
    assert second["request_id"] == "client-chosen-id" == body(answers[1])["headers"]["x-request-id"]
    assert body(answers[1])["body_bytes"] == 2000
    assert (second["method"], second["status"], second["host"]) == ("POST", 200, "api.test:8080")
    assert second["bytes_received"] == len(post)
    assert (second["ingress"], second["service"]) == ("default/api", "default/api:80")
    assert second["user_agent"] is None and second["referer"] is None

    # No Ingress: empty names, no upstream.
    assert third["status"] == 404 and third["bytes_sent"] == len(answers[2])
    assert (third["ingress"], third["service"]) == ("", "")
    assert third["upstream_addr"] is None and third["upstream_duration"] is None
    assert third["request_id"] and third["duration"] >= 0


def test_off_writes_nothing(start: tuple[Start, EchoServers]) -> None:
    run, _ = start
    ing, stdout = run("--access-log", "off")
    for _ in range(3):
        answer = raw_exchange(
            ing.http_port, b"GET / HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 200")
    assert ing.stop() == 0  # a clean stop writes whatever was buffered
    assert stdout.read_text() == ""


PLAIN = re.compile(
    r"(?P<client>\S+) - - \[(?P<time>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000)\] "
    r'"(?P<method>\S+) (?P<target>\S+) (?P<protocol>HTTP/1\.[01])" (?P<status>\d{3}) '
    r'(?P<bytes_sent>\d+) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)" (?P<bytes_received>\d+) '
    r"(?P<duration>\d+\.\d{3}) \[(?P<ingress>[^\]]*)\] \[(?P<service>[^\]]*)\] "
    r"(?P<upstream>\S+) (?P<upstream_time>\S+) (?P<upstream_status>\S+) (?P<request_id>\S+)"
)


def test_plain_lines_and_json_process_log(start: tuple[Start, EchoServers]) -> None:
    run, echo = start
    ing, stdout = run("--access-log", "plain", "--log-format", "json")
    get = b'GET /a"b HTTP/1.1\r\nHost: web.test\r\nUser-Agent: ua\r\nConnection: close\r\n\r\n'
    answers = [
        raw_exchange(ing.http_port, get),
        raw_exchange(ing.http_port, b"GET /x HTTP/1.0\r\nHost: nowhere.test\r\n\r\n"),
    ]
    first, second = (PLAIN.fullmatch(line) for line in lines(stdout, 2))
    assert first and second, stdout.read_text()
    assert first.group("client", "method", "protocol", "status") == (
        "127.0.0.1",
        "GET",
        "HTTP/1.1",
        "200",
    )
    assert first.group("target") == '/a\\"b'  # the quote escaped, so the line still parses
    assert int(first.group("bytes_sent")) == len(answers[0])
    assert int(first.group("bytes_received")) == len(get)
    assert first.group("agent", "referer") == ("ua", "-")
    assert first.group("ingress", "service") == ("default/web", "default/web:80")
    assert first.group("upstream", "upstream_status") == (f"127.0.0.1:{echo['web']}", "200")
    assert float(first.group("upstream_time")) >= 0
    assert second.group("status", "protocol", "ingress", "upstream") == (
        "404",
        "HTTP/1.0",
        "-",
        "-",
    )

    # The process log (stderr) is JSON objects, one per line.
    records = [json.loads(line) for line in ing.log().splitlines() if line.strip()]
    assert records and all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    assert any(r["message"].startswith("ingressd serving") for r in records)
