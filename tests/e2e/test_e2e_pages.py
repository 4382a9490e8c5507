"""End to end: ingressd's own answers against a real nginx, byte for byte.

A hand-made nginx (as tests/e2e/test_e2e_diff.py runs one) configured as
ingress-nginx's template renders these Ingresses under its defaults
(``server_tokens off``), and one ingressd serving them. For a request without a
route (404), a redirect (the ssl-redirect 308 and a permanent-redirect 301), a
backend without endpoints (503) and an upstream that refuses (502), both must
send the same status line, Content-Type and body bytes: nginx's built-in
pages; for HEAD the same head without a body; for a Chrome User-Agent nginx's
padding. Why ingressd answered is only in its log.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from e2e_helpers import (
    NGINX,
    NGINX_HTTP_BASE,
    BackgroundLoop,
    EchoServers,
    Ingressd,
    echo_backend,
    free_port,
    raw_exchange,
    start_nginx,
)
from k8s_objects import certificate, ingress, ingress_class, path, rule, tls_entry, tls_secret

A = "nginx.ingress.kubernetes.io/"
CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Safari/537.36"
)

NGINX_CONF = """\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log crit;
events {{ worker_connections 64; }}
http {{
{base}  # nginx.tmpl's defaults that shape these answers
  server_tokens off;
  default_type text/html;
  proxy_http_version 1.1;
  # ingress-nginx's catch-all server: its "/" goes to the internal server on 8181
  # ("backend for when default-backend-service is not configured"): return 404.
  server {{
    listen 127.0.0.1:{http} default_server;
    server_name _;
    location / {{ proxy_pass http://127.0.0.1:{internal}; }}
  }}
  server {{
    listen 127.0.0.1:{internal};
    location / {{ return 404; }}
  }}
  # spec.tls names the host: plain requests get lua_ingress.lua's 308 to https.
  server {{
    listen 127.0.0.1:{http};
    server_name tls.test;
    return 308 https://$host$request_uri;
  }}
  # permanent-redirect
  server {{
    listen 127.0.0.1:{http};
    server_name moved.test;
    return 301 https://example.com/new;
  }}
  # A Service without ready endpoints: balancer.lua finds no peer, 503.
  server {{
    listen 127.0.0.1:{http};
    server_name empty.test;
    location / {{ return 503; }}
  }}
  # An endpoint nothing listens on: 502.
  server {{
    listen 127.0.0.1:{http};
    server_name dead.test;
    location / {{ proxy_pass http://127.0.0.1:{dead}; }}
  }}
}}
"""


@dataclass
class Pair:
    nginx: int  # the ports of each
    ingressd: Ingressd


def objects(echo: EchoServers, dead: int) -> list[dict]:
    pem = certificate("tls.test")
    return [
        ingress_class(),
        *echo_backend("web", echo["web"]),
        *echo_backend("empty", echo["web"], ready=False),
        *echo_backend("dead", dead),
        tls_secret("tls", ["tls.test"], pem=pem),
        ingress("tls", [rule("tls.test", path("/", "web"))], tls=[tls_entry(["tls.test"], "tls")]),
        ingress(
            "moved",
            [rule("moved.test", path("/", "web"))],
            annotations={A + "permanent-redirect": "https://example.com/new"},
        ),
        ingress("empty", [rule("empty.test", path("/", "empty"))]),
        ingress("dead", [rule("dead.test", path("/", "dead"))]),
    ]


@pytest.fixture(scope="module")
def pair(upstream_loop: BackgroundLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    if NGINX is None:
        pytest.fail("nginx is required (scripts/test.sh installs nginx-light)")
    prefix = tmp_path_factory.mktemp("e2e-pages-nginx")
    pem = certificate("tls.test")
    (prefix / "tls.crt").write_bytes(pem[0])
    (prefix / "tls.key").write_bytes(pem[1])
    echo = EchoServers(upstream_loop, ["web"])
    http_port, internal, dead = free_port(), free_port(), free_port()
    base = NGINX_HTTP_BASE.format(prefix=prefix)
    conf = NGINX_CONF.format(prefix=prefix, base=base, http=http_port, internal=internal, dead=dead)
    with contextlib.ExitStack() as stack:
        stack.callback(echo.close)
        start_nginx(stack, prefix, conf, http_port)
        work = tmp_path_factory.mktemp("e2e-pages-ingressd")
        proc = Ingressd(work / "manifests", work / "ingressd.log")
        proc.update({"all.yaml": objects(echo, dead)})
        stack.callback(proc.stop)
        proc.start()
        yield Pair(http_port, proc)


@dataclass(frozen=True)
class Answer:
    status_line: bytes
    content_type: bytes | None
    location: bytes | None
    length: bytes | None  # Content-Length: the page's, also for HEAD
    body: bytes


def ask(port: int, host: str, target: str, method: str = "GET", agent: str = "") -> Answer:
    request = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
    if agent:
        request += f"User-Agent: {agent}\r\n"
    raw = raw_exchange(port, (request + "\r\n").encode())
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, raw[:300]
    lines = head.split(b"\r\n")
    fields = dict(
        (name.strip().lower(), value.strip())
        for name, _, value in (line.partition(b":") for line in lines[1:])
    )
    length = fields.get(b"content-length")
    assert length is not None, raw
    if method == "HEAD":
        assert body == b"", raw
    else:
        assert int(length) == len(body), raw
    return Answer(lines[0], fields.get(b"content-type"), fields.get(b"location"), length, body)


CASES = [
    ("nowhere.test", "/x", 404),
    ("tls.test", "/path?q=1", 308),
    ("moved.test", "/", 301),
    ("empty.test", "/", 503),
    ("dead.test", "/", 502),
]


@pytest.mark.parametrize(("host", "target", "status"), CASES)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_the_same_answer_as_nginx(
    pair: Pair, host: str, target: str, status: int, method: str
) -> None:
    want = ask(pair.nginx, host, target, method)
    got = ask(pair.ingressd.http_port, host, target, method)
    assert want.status_line.startswith(b"HTTP/1.1 %d " % status), want
    assert (got.status_line, got.content_type, got.length, got.body) == (
        want.status_line,
        want.content_type,
        want.length,
        want.body,
    )
    if status in (301, 308):
        # nginx's Location here, and ingressd's (its https port in the ssl-redirect)
        assert want.location is not None and got.location is not None
        assert got.location.split(b"/")[-1] == want.location.split(b"/")[-1]


@pytest.mark.parametrize(("host", "status"), [("nowhere.test", 404), ("empty.test", 503)])
def test_chrome_gets_nginx_s_padding(pair: Pair, host: str, status: int) -> None:
    want = ask(pair.nginx, host, "/", agent=CHROME)
    got = ask(pair.ingressd.http_port, host, "/", agent=CHROME)
    assert b"friendly error page" in want.body
    assert (got.status_line, got.content_type, got.body) == (
        want.status_line,
        want.content_type,
        want.body,
    )


def test_the_reason_is_in_the_log_not_the_body(pair: Pair) -> None:
    got = ask(pair.ingressd.http_port, "empty.test", "/why")
    assert b"endpoints" not in got.body
    pair.ingressd.wait_for_log(
        "GET empty.test/why: 503 Service Unavailable: no ready endpoints for default/empty:80"
    )
