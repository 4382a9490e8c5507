"""End to end: the real curl against a real ``ingressd serve`` and real upstreams.

One ingressd (and its upstreams) serves the whole module; tests that need
other settings start their own with the ``ingressd`` fixture.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from e2e_helpers import (
    LOCALHOST,
    BackgroundLoop,
    CurlResult,
    EchoServers,
    Ingressd,
    IngressdFactory,
    RecordingListener,
    echo_backend,
    free_port,
    nginx_page,
    pem_to_der,
    raw_exchange,
    served_certificate,
    websocket_upgrade_args,
)
from k8s_objects import certificate, ingress, ingress_class, path, rule, tls_entry, tls_secret

from ingressd.echo import pattern_bytes
from ingressd.model.objects import Obj
from ingressd.proxy.client_h1 import LINGER

SSL_REDIRECT_OFF = {"nginx.ingress.kubernetes.io/ssl-redirect": "false"}
REWRITE = {"nginx.ingress.kubernetes.io/rewrite-target": "/$2"}
REGEX_TYPE = "ImplementationSpecific"
TLS_HOSTS = {  # Secret name -> the names its certificate covers
    "a-tls": "a.secure.test",
    "b-tls": "b.secure.test",
    "wild-tls": "*.wild.test",
    "noredirect-tls": "noredirect.test",
}
GIB = 1 << 30
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass
class Env:
    ingressd: Ingressd
    echo: EchoServers
    recorder: RecordingListener
    dead_port: int  # a port nothing listens on
    cafiles: dict[str, str]  # Secret name -> path of its certificate (PEM)
    certs: dict[str, bytes]  # Secret name -> certificate PEM
    workdir: Path

    def get(self, host: str, target: str = "/", *args: str, **kwargs: Any) -> CurlResult:
        return self.ingressd.get(host, target, *args, **kwargs)

    def https(self, host: str, target: str = "/", *args: str, **kwargs: Any) -> CurlResult:
        ing = self.ingressd
        return ing.curl(*ing.resolve(host), *args, ing.https_url(host, target), **kwargs)


def manifests(echo: EchoServers, recorder_port: int, dead_port: int) -> list[Obj]:
    secrets = [tls_secret(name, [host]) for name, host in TLS_HOSTS.items()]
    return [
        ingress_class(),
        *echo_backend("web", echo["web"]),
        *echo_backend("api", echo["api"]),
        *echo_backend("raw", recorder_port),
        *echo_backend("dead", dead_port),
        *echo_backend("noready", echo["web"], ready=False),
        *secrets,
        ingress(
            "routes",
            [
                rule("app.test", path("/", "web"), path("/api", "api")),
                rule("missing.test", path("/", "nosuch")),
                rule("noready.test", path("/", "noready")),
                rule("dead.test", path("/", "dead")),
                rule("raw.test", path("/", "raw")),
            ],
        ),
        ingress(
            "guarded",
            [rule("app.test", path("/admin", "api"))],
            annotations={"nginx.ingress.kubernetes.io/whitelist-source-range": "10.0.0.0/8"},
        ),
        ingress(
            "uploads",
            [rule("upload.test", path("/", "web"))],
            annotations={"nginx.ingress.kubernetes.io/proxy-body-size": "0"},
        ),
        ingress(
            "uploads-streamed",
            [rule("stream-upload.test", path("/", "web"))],
            annotations={
                "nginx.ingress.kubernetes.io/proxy-body-size": "0",
                "nginx.ingress.kubernetes.io/proxy-request-buffering": "off",
            },
        ),
        ingress(
            "secure",
            [
                rule("a.secure.test", path("/", "web")),
                rule("b.secure.test", path("/", "api")),
                rule("*.wild.test", path("/", "web")),
            ],
            tls=[
                tls_entry(["a.secure.test"], "a-tls"),
                tls_entry(["b.secure.test"], "b-tls"),
                tls_entry(["*.wild.test"], "wild-tls"),
            ],
        ),
        ingress(
            "no-redirect",
            [rule("noredirect.test", path("/", "web"))],
            annotations=SSL_REDIRECT_OFF,
            tls=[tls_entry(["noredirect.test"], "noredirect-tls")],
        ),
        ingress(
            "rewrite",
            [rule("rw.test", path("/something(/|$)(.*)", "api", path_type=REGEX_TYPE))],
            annotations=REWRITE,
        ),
    ]


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, upstream_loop: BackgroundLoop, curl_binary: str
) -> Iterator[Env]:
    workdir = tmp_path_factory.mktemp("e2e-proxy")
    echo = EchoServers(upstream_loop, ["web", "api"])
    recorder = RecordingListener(upstream_loop)
    proc = Ingressd(workdir / "manifests", workdir / "ingressd.log")
    try:
        dead_port = free_port()
        objs = manifests(echo, recorder.port, dead_port)
        proc.update({"all.yaml": objs})
        certs = {name: certificate(host)[0] for name, host in TLS_HOSTS.items()}  # cached
        cafiles = {name: str(workdir / f"{name}.pem") for name in TLS_HOSTS}
        for name, pem in certs.items():
            Path(cafiles[name]).write_bytes(pem)
        proc.start()
        yield Env(proc, echo, recorder, dead_port, cafiles, certs, workdir)
    finally:
        proc.stop()
        recorder.close()
        echo.close()


# -- 1. routing and forwarded headers -------------------------------------------------------


def test_host_and_prefix_pick_the_service(env: Env) -> None:
    root = env.get("app.test", "/some/page")
    api = env.get("app.test", "/api/users/7")
    apix = env.get("app.test", "/apix")  # Prefix matches whole path elements only
    assert (root.status, root.json()["service"], root.json()["path"]) == (200, "web", "/some/page")
    assert (api.status, api.json()["service"], api.json()["path"]) == (200, "api", "/api/users/7")
    assert (apix.status, apix.json()["service"]) == (200, "web")
    assert api.header("X-Echo-Service") == "api"


def test_query_string_and_host_are_preserved(env: Env) -> None:
    got = env.get("app.test", "/api/search?q=a%20b&x=1&x=2&empty=").json()
    assert got["path"] == "/api/search"
    assert got["query"] == "q=a%20b&x=1&x=2&empty="
    assert got["headers"]["host"] == "app.test"
    with_port = env.get("APP.test:8080", "/").json()  # routed case-insensitively, sent as is
    assert with_port["service"] == "web"
    assert with_port["headers"]["host"] == "APP.test:8080"
    assert with_port["headers"]["x-forwarded-host"] == "APP.test:8080"


def test_absolute_form_target_is_routed_and_forwarded_by_its_authority(env: Env) -> None:
    # RFC 9112 3.2.2: the authority of an absolute-form target replaces Host.
    r = env.ingressd.curl(
        "-H",
        "Host: nobody.test",
        "--request-target",
        "http://app.test/api/abs?q=1",
        env.ingressd.http_url("/"),
    )
    got = r.json()
    assert (got["service"], got["path"], got["query"]) == ("api", "/api/abs", "q=1")
    assert got["headers"]["host"] == "app.test"
    assert got["headers"]["x-forwarded-host"] == "app.test"
    assert [n.lower() for n, _ in got["raw_headers"]].count("host") == 1
    # HTTP/1.0 without any Host header: the upstream still gets one.
    answer = raw_exchange(env.ingressd.http_port, b"GET http://app.test/old HTTP/1.0\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), answer[:300]
    old = json.loads(body)
    assert (old["path"], old["headers"]["host"]) == ("/old", "app.test")


@pytest.mark.parametrize(
    "target",
    [
        "/admin",
        "/%61dmin",
        "/%61dmin/x",
        "/%2Fadmin",
        "/public/%2e%2e/admin",
        "//admin/",
        "/x/..%2Fadmin",
    ],
)
def test_escapes_cannot_route_around_a_guarded_path(env: Env, target: str) -> None:
    # /admin is allow-listed; / on the same host is open. nginx routes by the
    # decoded, normalised path, so every spelling of /admin meets the guard.
    r = env.get("app.test", target, "--path-as-is")
    assert r.status == 403, (target, r.status, r.text)


@pytest.mark.parametrize("target", ["/a%zz", "/a%2", "/a%00b"])
def test_invalid_percent_encoding_is_400(env: Env, target: str) -> None:
    assert env.get("app.test", target, "--path-as-is").status == 400


def test_a_rewrite_sends_decoded_pieces_escaped_again(env: Env) -> None:
    got = env.get("rw.test", "/something/a%20b/%25/c%3Fd").json()
    assert got["path"] == "/a%20b/%25/c%3Fd"
    plain = env.get("app.test", "/some%20page/%2e/x").json()
    assert plain["path"] == "/some%20page/%2e/x"  # no rewrite: as the client sent it


def test_an_untrusted_x_forwarded_for_is_replaced(env: Env) -> None:
    plain = env.get("app.test").json()["headers"]
    spoofed = env.get("app.test", "/", "-H", "X-Forwarded-For: 1.2.3.4").json()["headers"]
    assert plain["x-forwarded-for"] == "127.0.0.1"
    # Without --trusted-proxies a client's X-Forwarded-For is not believed nor passed on.
    assert (spoofed["x-forwarded-for"], spoofed["x-real-ip"]) == ("127.0.0.1", "127.0.0.1")


def test_forwarded_headers_over_http(env: Env) -> None:
    h = env.get("app.test").json()["headers"]
    assert h["x-forwarded-proto"] == "http"
    assert h["x-forwarded-host"] == "app.test"
    assert h["x-forwarded-port"] == str(env.ingressd.http_port)
    assert h["x-real-ip"] == "127.0.0.1"


def test_forwarded_headers_over_https(env: Env) -> None:
    r = env.https("a.secure.test", "/", "--cacert", env.cafiles["a-tls"])
    h = r.json()["headers"]
    assert h["x-forwarded-proto"] == "https"
    assert h["x-forwarded-host"] == f"a.secure.test:{env.ingressd.https_port}"
    assert h["x-forwarded-port"] == str(env.ingressd.https_port)
    assert h["x-real-ip"] == "127.0.0.1"


def test_client_supplied_forwarding_headers_are_overwritten(env: Env) -> None:
    spoofed = [
        "-H",
        "X-Real-IP: 6.6.6.6",
        "-H",
        "X-Forwarded-Proto: https",
        "-H",
        "X-Forwarded-Port: 1",
        "-H",
        "X-Forwarded-Host: evil.test",
    ]
    got = env.get("app.test", "/", *spoofed).json()
    h = got["headers"]
    assert (h["x-real-ip"], h["x-forwarded-proto"]) == ("127.0.0.1", "http")
    assert (h["x-forwarded-port"], h["x-forwarded-host"]) == (
        str(env.ingressd.http_port),
        "app.test",
    )
    names = [n.lower() for n, _ in got["raw_headers"]]
    for name in ("x-real-ip", "x-forwarded-proto", "x-forwarded-port", "x-forwarded-host"):
        assert names.count(name) == 1, name


def test_request_id_generated_when_absent(env: Env) -> None:
    first = env.get("app.test").json()["headers"]["x-request-id"]
    second = env.get("app.test").json()["headers"]["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", first), first
    assert re.fullmatch(r"[0-9a-f]{32}", second), second
    assert first != second


def test_request_id_kept_when_present(env: Env) -> None:
    got = env.get("app.test", "/", "-H", "X-Request-ID: trace-abc-123").json()
    assert got["headers"]["x-request-id"] == "trace-abc-123"
    assert [n.lower() for n, _ in got["raw_headers"]].count("x-request-id") == 1


def test_hop_by_hop_headers_are_stripped(env: Env) -> None:
    hop = {
        "Connection": "keep-alive, X-Secret",
        "X-Secret": "1",
        "Keep-Alive": "5",
        "TE": "trailers",
        "Proxy-Authorization": "x",
        "X-Kept": "yes",
    }
    args = [a for name, value in hop.items() for a in ("-H", f"{name}: {value}")]
    got = env.get("app.test", "/", *args).json()
    h = got["headers"]
    for name in ("x-secret", "keep-alive", "te", "proxy-authorization", "connection"):
        assert name not in h, f"{name} reached the upstream: {got['raw_headers']}"
    assert h["x-kept"] == "yes"


@pytest.mark.parametrize(
    "nominated",
    [
        "Host",
        "host",
        "X-Forwarded-Host, X-Request-ID, Host",
        "X-Forwarded-For, X-Real-IP, X-Forwarded-Proto, X-Forwarded-Port, X-Scheme",
        "keep-alive, Host, X-Original-Forwarded-For, Content-Length",
    ],
)
def test_connection_cannot_remove_what_ingressd_routes_by_or_sets(env: Env, nominated: str) -> None:
    got = env.get(
        "app.test",
        "/",
        "-H",
        f"Connection: {nominated}",
        "-H",
        "X-Request-ID: rid-1",
        "-H",
        "X-Forwarded-For: 10.9.8.7",
    ).json()
    h = got["headers"]
    assert h["host"] == "app.test"
    assert h["x-forwarded-host"] == "app.test"
    assert h["x-request-id"] == "rid-1"
    assert (h["x-forwarded-for"], h["x-real-ip"]) == ("127.0.0.1", "127.0.0.1")
    assert (h["x-forwarded-proto"], h["x-scheme"]) == ("http", "http")
    assert h["x-forwarded-port"] == str(env.ingressd.http_port)
    assert h["x-original-forwarded-for"] == "10.9.8.7"
    names = [n.lower() for n, _ in got["raw_headers"]]
    assert names.count("host") == 1


def test_httpoxy_proxy_header_is_not_passed_on(env: Env) -> None:
    # ingress-nginx clears it (nginx.tmpl: proxy_set_header Proxy "")
    h = env.get("app.test", "/", "-H", "Proxy: http://evil.test:3128").json()["headers"]
    assert "proxy" not in h


def test_x_scheme_and_original_forwarded_for_as_ingress_nginx_sets_them(env: Env) -> None:
    plain = env.get("app.test").json()["headers"]
    assert plain["x-scheme"] == "http"
    assert "x-original-forwarded-for" not in plain  # nginx omits a header set to ""
    spoofed = env.get(
        "app.test", "/", "-H", "X-Scheme: https", "-H", "X-Original-Forwarded-For: 6.6.6.6"
    ).json()["headers"]
    assert spoofed["x-scheme"] == "http"
    assert "x-original-forwarded-for" not in spoofed
    chained = env.get(
        "app.test", "/", "-H", "X-Forwarded-For: 1.2.3.4", "-H", "X-Forwarded-For: 5.6.7.8"
    ).json()["headers"]
    assert chained["x-original-forwarded-for"] == "1.2.3.4, 5.6.7.8"
    secure = env.https("a.secure.test", "/", "--cacert", env.cafiles["a-tls"]).json()["headers"]
    assert secure["x-scheme"] == "https"


# -- 2. errors ingressd answers itself -------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "status"), [("nobody.test", 404), ("a.secure.test", 200), ("missing.test", 503)]
)
def test_tls_connection_close_ends_the_connection_after_the_response(
    env: Env, host: str, status: int
) -> None:
    """With Connection: close the client reading to end of stream gets it at once,
    over TLS as over plain HTTP (it used to wait LINGER seconds over TLS)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    with (
        socket.create_connection((LOCALHOST, env.ingressd.https_port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.sendall(request)
        started = time.monotonic()
        answer = b""
        while len(answer) < 1 << 20:
            try:
                part = tls.recv(65536)
            except ssl.SSLEOFError:  # closed without close_notify: still the end
                break
            if not part:
                break
            answer += part
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]
    assert elapsed < LINGER / 2, f"end of stream after {elapsed:.2f} s"


def test_unknown_host_is_404(env: Env) -> None:
    r = env.get("nobody.test", "/x")
    assert r.status == 404
    assert (r.header("Content-Type"), r.body) == ("text/html", nginx_page(404))
    env.ingressd.wait_for_log("404 Not Found: no route for host nobody.test path /x")
    # ingress-nginx sends no Server header by default (server-tokens off)
    assert r.header("Server") is None
    assert r.header("Date") is not None


def test_missing_service_is_503_naming_it(env: Env) -> None:
    r = env.get("missing.test", "/")
    assert r.status == 503
    assert r.body == nginx_page(503)
    env.ingressd.wait_for_log("503 Service Unavailable: service default/nosuch not found")


def test_no_ready_endpoints_is_503_naming_the_service(env: Env) -> None:
    r = env.get("noready.test", "/")
    assert r.status == 503
    assert r.body == nginx_page(503)
    env.ingressd.wait_for_log("503 Service Unavailable: no ready endpoints for default/noready:80")


def test_nothing_listening_is_502(env: Env) -> None:
    r = env.get("dead.test", "/")
    assert r.status == 502
    assert r.body == nginx_page(502)
    line = env.ingressd.wait_for_log(
        f"502 Bad Gateway: cannot connect to default/dead:80 (127.0.0.1:{env.dead_port}): "
    )
    assert "refused" in line.lower()


def slow_test_proxy(ingressd: IngressdFactory, echo_servers: EchoServers, *args: str) -> Ingressd:
    """An ingressd of its own, routing slow.test to web, with short timeouts in ``args``."""
    return ingressd(
        {
            "all.yaml": [
                ingress_class(),
                *echo_backend("web", echo_servers["web"]),
                ingress("slow", [rule("slow.test", path("/", "web"))]),
            ]
        },
        *args,
    )


def test_slow_upstream_is_504_after_read_timeout(
    ingressd: IngressdFactory, echo_servers: EchoServers
) -> None:
    proc = slow_test_proxy(ingressd, echo_servers, "--proxy-read-timeout", "1")
    start = time.monotonic()
    r = proc.get("slow.test", "/_echo/sleep/3000")
    elapsed = time.monotonic() - start
    assert r.status == 504
    assert r.body == nginx_page(504), r.text
    line = proc.wait_for_log("504 Gateway Timeout: default/web:80 (127.0.0.1:")
    assert line.endswith(": the upstream did not answer in time"), line
    assert 0.9 <= elapsed <= 2.5, elapsed
    fast = proc.get("slow.test", "/_echo/sleep/100")  # a quick answer is not cut off
    assert (fast.status, fast.json()["service"]) == (200, "web")


# -- 3. HTTPS and SNI ---------------------------------------------------------------------------


def test_each_tls_host_gets_its_own_certificate(env: Env) -> None:
    a = env.https("a.secure.test", "/a", "--cacert", env.cafiles["a-tls"])
    b = env.https("b.secure.test", "/b", "--cacert", env.cafiles["b-tls"])
    assert (a.status, a.json()["service"], a.json()["path"]) == (200, "web", "/a")
    assert (b.status, b.json()["service"], b.json()["path"]) == (200, "api", "/b")
    port = env.ingressd.https_port
    assert served_certificate(port, "a.secure.test") == pem_to_der(env.certs["a-tls"])
    assert served_certificate(port, "b.secure.test") == pem_to_der(env.certs["b-tls"])


def test_certificate_of_another_host_is_not_trusted(env: Env) -> None:
    wrong = env.https("b.secure.test", "/", "--cacert", env.cafiles["a-tls"], check=False)
    assert wrong.exit_code == 60, wrong  # CURLE_PEER_FAILED_VERIFICATION
    assert wrong.status == 0


def test_unknown_name_gets_the_default_certificate(env: Env) -> None:
    der = served_certificate(env.ingressd.https_port, "unknown.test")
    assert der not in {pem_to_der(pem) for pem in env.certs.values()}
    cert = x509.load_der_x509_certificate(der)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "ingressd default certificate"
    assert served_certificate(env.ingressd.https_port, None) == der  # no SNI at all
    r = env.https("unknown.test", "/", "-k")
    assert r.status == 404


def test_host_and_sni_must_agree_for_hosts_with_their_own_certificate(env: Env) -> None:
    # Connected as a.secure.test (its certificate), asking for b.secure.test: 421,
    # rather than b's content under a's certificate.
    r = env.https("a.secure.test", "/", "-k", "-H", "Host: b.secure.test", check=False)
    assert r.status == 421
    assert r.body == nginx_page(421)
    env.ingressd.wait_for_log("421 Misdirected Request: b.secure.test has its own certificate")
    # Without SNI the connection got the generated default certificate, which is
    # no tenant's: routed by Host, as ingress-nginx does (a verifying client fails
    # on the certificate anyway).
    port = env.ingressd.https_port
    r = env.ingressd.curl("-k", "-H", "Host: a.secure.test", f"https://127.0.0.1:{port}/")
    assert (r.status, r.json()["service"]) == (200, "web")
    # Hosts without a certificate of their own are served on any connection.
    r = env.https("a.secure.test", "/", "-k", "-H", "Host: app.test", check=False)
    assert (r.status, r.json()["service"]) == (200, "web")
    # A wildcard certificate covers its subdomains on one connection.
    r = env.https("shop.wild.test", "/", "-k", "-H", "Host: cart.wild.test", check=False)
    assert r.status != 421


def test_wildcard_certificate_serves_a_subdomain(env: Env) -> None:
    r = env.https("shop.wild.test", "/cart", "--cacert", env.cafiles["wild-tls"])
    assert (r.status, r.json()["service"], r.json()["path"]) == (200, "web", "/cart")
    der = served_certificate(env.ingressd.https_port, "shop.wild.test")
    assert der == pem_to_der(env.certs["wild-tls"])
    # A wildcard stands for exactly one label.
    deeper = served_certificate(env.ingressd.https_port, "a.shop.wild.test")
    assert deeper != pem_to_der(env.certs["wild-tls"])


# -- 4. HTTP -> HTTPS redirect ----------------------------------------------------------------


def test_tls_host_redirects_http_to_https(env: Env) -> None:
    r = env.get("a.secure.test", "/some/path?x=1&y=2")
    assert r.status == 308
    port = env.ingressd.https_port
    assert r.header("Location") == f"https://a.secure.test:{port}/some/path?x=1&y=2"
    followed = env.ingressd.curl(
        "-L",
        *env.ingressd.resolve("a.secure.test"),
        "--cacert",
        env.cafiles["a-tls"],
        "-H",
        "Host: a.secure.test",
        env.ingressd.http_url("/some/path?x=1"),
    )
    assert [status for status, _ in followed.responses] == [308, 200]
    assert followed.json()["path"] == "/some/path"


def test_ssl_redirect_false_serves_plain_http(env: Env) -> None:
    r = env.get("noredirect.test", "/page?x=1")
    assert r.status == 200
    assert (r.json()["service"], r.json()["path"], r.json()["query"]) == ("web", "/page", "x=1")
    over_tls = env.https("noredirect.test", "/", "--cacert", env.cafiles["noredirect-tls"])
    assert over_tls.status == 200


# -- 5. rewrite-target -----------------------------------------------------------------------------


def test_rewrite_target_with_capture_group(env: Env) -> None:
    got = env.get("rw.test", "/something/new?x=1").json()
    assert (got["service"], got["path"], got["query"]) == ("api", "/new", "x=1")
    bare = env.get("rw.test", "/something").json()
    assert bare["path"] == "/"
    deep = env.get("rw.test", "/something/a/b/c").json()
    assert deep["path"] == "/a/b/c"


# -- 6. WebSocket -------------------------------------------------------------------------------


def test_websocket_echo_through_the_proxy(env: Env) -> None:
    url = env.ingressd.http_url("/ws")
    binary = bytes(range(256)) * 512  # 128 KiB

    async def talk() -> tuple[str, bytes, str]:
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.ws_connect(url, headers={"Host": "app.test"}, heartbeat=None) as ws,
        ):
            await ws.send_str("hello through ingressd")
            text = await ws.receive_str(timeout=5)
            await ws.send_bytes(binary)
            data = await ws.receive_bytes(timeout=5)
            await ws.send_str("ünïcødé")
            third = await ws.receive_str(timeout=5)
            return text, data, third

    text, data, third = asyncio.run(asyncio.wait_for(talk(), 15))
    assert text == "hello through ingressd"
    assert data == binary
    assert third == "ünïcødé"


def test_websocket_upgrade_with_curl_gets_101(env: Env) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    r = env.get(
        "app.test",
        "/ws",
        "-N",
        *websocket_upgrade_args(key),
        max_time=1,
        check=False,  # the tunnel stays open until curl gives up
    )
    assert r.status == 101, r
    assert r.header("Upgrade") == "websocket"
    assert r.header("Connection").lower() == "upgrade"
    expected = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
    assert r.header("Sec-WebSocket-Accept") == expected


# -- 7. large and streamed bodies -----------------------------------------------------------


def test_one_gib_upload_streams_in_bounded_memory(env: Env) -> None:
    source = env.workdir / "one-gib.bin"
    with open(source, "wb") as f:
        f.truncate(GIB)  # sparse: no disk space, curl reads zeros
    before = env.ingressd.peak_rss_kib()
    try:
        start = time.monotonic()
        # Streamed (proxy-request-buffering off): buffered, the gibibyte would go
        # through a temporary file first.
        r = env.get("stream-upload.test", "/upload", "-T", str(source), max_time=90)
        elapsed = time.monotonic() - start
    finally:
        source.unlink()
    got = r.json()
    assert (r.status, got["method"], got["body_bytes"]) == (200, "PUT", GIB)
    assert elapsed < 60, f"1 GiB upload took {elapsed:.1f} s"
    peak = env.ingressd.peak_rss_kib()
    assert peak < 200 * 1024, f"ingressd peak RSS {peak / 1024:.0f} MiB"
    assert peak - before < 64 * 1024, f"peak RSS grew {(peak - before) / 1024:.0f} MiB"


def test_upload_body_arrives_intact(env: Env) -> None:
    source = env.workdir / "random.bin"
    data = os.urandom(8 << 20)
    source.write_bytes(data)
    chunked_args = ("-H", "Transfer-Encoding: chunked", "--data-binary", f"@{source}")
    try:
        sized = env.get("upload.test", "/u", "--data-binary", f"@{source}").json()
        # proxy-request-buffering on (the default): read whole (8 MiB: mostly in a
        # temporary file), then sent with its length, as nginx sends a buffered body.
        buffered = env.get("upload.test", "/u", *chunked_args).json()
        streamed = env.get("stream-upload.test", "/u", *chunked_args).json()
    finally:
        source.unlink()
    digest = hashlib.sha256(data).hexdigest()
    assert (sized["body_bytes"], sized["body_sha256"]) == (len(data), digest)
    assert sized["headers"]["content-length"] == str(len(data))
    assert (buffered["body_bytes"], buffered["body_sha256"]) == (len(data), digest)
    assert buffered["headers"]["content-length"] == str(len(data))
    assert "transfer-encoding" not in buffered["headers"]
    assert (streamed["body_bytes"], streamed["body_sha256"]) == (len(data), digest)
    assert streamed["headers"]["transfer-encoding"] == "chunked"


def test_256_mib_download(env: Env) -> None:
    size = 256 << 20
    r = env.get(
        "app.test",
        f"/_echo/bytes/{size}",
        "-o",
        os.devnull,
        "-w",
        "%{http_code} %{size_download}",
        max_time=60,
    )
    assert r.write_out == f"200 {size}"
    assert r.header("Content-Length") == str(size)
    assert env.ingressd.peak_rss_kib() < 200 * 1024


def test_chunked_response_stays_chunked(env: Env) -> None:
    r = env.get("app.test", "/_echo/chunked/100000")
    assert r.status == 200
    assert r.header("Transfer-Encoding") == "chunked"
    assert r.header("Content-Length") is None
    assert r.body == pattern_bytes(100000)


def test_content_length_response_keeps_it(env: Env) -> None:
    r = env.get("app.test", "/_echo/bytes/100000")
    assert r.status == 200
    assert r.header("Content-Length") == "100000"
    assert r.header("Transfer-Encoding") is None
    assert r.body == pattern_bytes(100000)


# -- 8. connections ---------------------------------------------------------------------------


def test_keep_alive_reuses_the_client_connection(env: Env) -> None:
    r = env.ingressd.curl(
        "-v",
        "-H",
        "Host: app.test",
        "-o",
        os.devnull,
        "-o",
        os.devnull,
        "-w",
        "%{http_code} %{num_connects}\n",
        env.ingressd.http_url("/one"),
        env.ingressd.http_url("/two"),
    )
    assert r.write_out.splitlines() == ["200 1", "200 0"]
    assert "Re-using existing connection" in r.stderr


def test_http_1_0_client(env: Env) -> None:
    r = env.get("app.test", "/old?x=1", "-0")
    assert r.status == 200
    got = r.json()
    assert (got["path"], got["query"], got["headers"]["host"]) == ("/old", "x=1", "app.test")
    # A chunked upstream response cannot be sent to an HTTP/1.0 client: it is
    # delimited by closing the connection instead.
    chunked = env.get("app.test", "/_echo/chunked/5000", "-0")
    assert chunked.status == 200
    assert chunked.header("Transfer-Encoding") is None
    assert chunked.header("Connection") == "close"
    assert chunked.body == pattern_bytes(5000)


# -- 10. hostile HTTP ---------------------------------------------------------------------------


def assert_rejected_not_forwarded(env: Env, request: bytes, status: int) -> bytes:
    """Send ``request`` on a raw socket: ``status`` comes back, the upstream sees nothing.

    The route's upstream is the recording listener. A request before and one
    after (the sentinels) prove it is reachable, pooled, and recording.
    """
    warm = env.get("raw.test", "/warm-up")
    assert (warm.status, warm.body) == (200, b"recorded\n")
    mark = env.recorder.mark()
    answer = raw_exchange(env.ingressd.http_port, request)
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 %d " % status), answer[:300]
    assert b"Connection: close" in answer
    sentinel = f"/sentinel-{uuid.uuid4().hex}"
    after = env.get("raw.test", sentinel)
    assert (after.status, after.body) == (200, b"recorded\n")
    time.sleep(0.1)  # let the listener read anything still in flight
    seen = env.recorder.since(mark)
    heads = re.findall(rb"[A-Z]+ (\S+) HTTP/1.1\r\n", seen)
    assert heads == [sentinel.encode()], seen[:2000]
    return answer


def test_content_length_with_transfer_encoding_is_400(env: Env) -> None:
    assert_rejected_not_forwarded(
        env,
        b"POST /smuggle HTTP/1.1\r\nHost: raw.test\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        b"GET /hidden HTTP/1.1\r\nHost: raw.test\r\n\r\n",
        400,
    )
    assert_rejected_not_forwarded(
        env,
        b"POST /smuggle HTTP/1.1\r\nHost: raw.test\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 5\r\n\r\n0\r\n\r\n",
        400,
    )


def test_transfer_encoding_other_than_chunked_is_400(env: Env) -> None:
    # httptools reports this only after the head is complete: ingressd must not
    # have forwarded anything by then.
    answer = assert_rejected_not_forwarded(
        env, b"POST /te HTTP/1.1\r\nHost: raw.test\r\nTransfer-Encoding: gzip\r\n\r\n", 400
    )
    assert answer.endswith(b"\r\n\r\n" + nginx_page(400))
    env.ingressd.wait_for_log("Transfer-Encoding 'gzip' is not supported")
    # httptools accepts this one (chunked comes last); forwarding it re-chunked
    # would silently drop the gzip coding.
    answer = assert_rejected_not_forwarded(
        env,
        b"POST /te HTTP/1.1\r\nHost: raw.test\r\nTransfer-Encoding: gzip\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    )
    env.ingressd.wait_for_log("Transfer-Encoding 'gzip, chunked' is not supported")


def test_two_different_content_lengths_are_400(env: Env) -> None:
    assert_rejected_not_forwarded(
        env,
        b"POST /cl HTTP/1.1\r\nHost: raw.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
        b"hello!",
        400,
    )


def test_header_over_32_kib_is_nginx_494(env: Env) -> None:
    # nginx's 494 "Request Header Or Cookie Too Large": status 400, a page of its own
    big = b"X-Big: " + b"a" * (33 * 1024) + b"\r\n"
    answer = assert_rejected_not_forwarded(
        env, b"GET /big HTTP/1.1\r\nHost: raw.test\r\n" + big + b"\r\n", 400
    )
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer[:200]
    assert answer.endswith(b"\r\n\r\n" + nginx_page(494)), answer[-300:]


def test_request_line_over_8_kib_is_414(env: Env) -> None:
    target = b"/" + b"a" * (8 * 1024 + 10)
    assert_rejected_not_forwarded(
        env, b"GET " + target + b" HTTP/1.1\r\nHost: raw.test\r\n\r\n", 414
    )


def test_obs_fold_is_400(env: Env) -> None:
    assert_rejected_not_forwarded(
        env, b"GET /fold HTTP/1.1\r\nHost: raw.test\r\nX-Folded: a\r\n b\r\n\r\n", 400
    )


def test_missing_host_in_http_1_1_is_400(env: Env) -> None:
    answer = assert_rejected_not_forwarded(env, b"GET /nohost HTTP/1.1\r\n\r\n", 400)
    assert answer.endswith(b"\r\n\r\n" + nginx_page(400))
    env.ingressd.wait_for_log("missing Host header")


# -- last: nothing above made ingressd log an error ------------------------------------------


def test_no_errors_logged(env: Env) -> None:
    log = env.ingressd.log()
    assert "ingressd serving" in log
    bad = [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line]
    assert bad == [], "\n".join(bad[:20])


# -- slow clients ----------------------------------------------------------------------------


def _read_until_closed(sock: Any, limit: float) -> bytes:
    sock.settimeout(limit)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def _read_until_closed_or_reset(sock: Any, limit: float) -> bytes:
    with contextlib.suppress(ConnectionResetError):
        return _read_until_closed(sock, limit)
    return b""


def test_slow_clients_are_cut_off_as_nginx_and_idle_connections_close(
    ingressd: IngressdFactory, echo_servers: EchoServers
) -> None:
    import socket

    proc = slow_test_proxy(
        ingressd,
        echo_servers,
        *("--client-header-timeout", "1", "--client-body-timeout", "1"),
        *("--keepalive-timeout", "1"),
    )
    addr = ("127.0.0.1", proc.http_port)
    # A slowloris client trickles its head: the deadline is for the whole head,
    # so the trickle does not keep the connection alive.
    with socket.create_connection(addr, timeout=5) as s:
        start = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: slow.test\r\n")
        for _ in range(4):
            time.sleep(0.4)
            try:
                s.sendall(b"X-Trickle: 1\r\n")
            except OSError:
                break
        # nginx answers nothing (its 408 is for the access log) and resets the
        # connection (ingress-nginx's reset_timedout_connection on).
        assert _read_until_closed_or_reset(s, 5) == b""
        proc.wait_for_log("timed out: request header timeout")
        assert time.monotonic() - start < 3
    # A client that announces a body and stops sending it.
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: slow.test\r\nContent-Length: 100\r\n\r\nabc")
        start = time.monotonic()
        assert _read_until_closed_or_reset(s, 5) == b""
        proc.wait_for_log("timed out: request body timeout")
        assert time.monotonic() - start < 3
    # Both are in the access log as 408, as nginx logs them, with nothing sent.
    proc.wait_for(
        lambda: proc.log().count('"status":408,"bytes_sent":0,') == 2, what="two 408 lines"
    )
    # An idle keep-alive connection is closed after the keep-alive timeout.
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: slow.test\r\n\r\n")
        start = time.monotonic()
        data = _read_until_closed(s, 5)
        assert data.startswith(b"HTTP/1.1 200 "), data[:100]
        assert 0.8 <= time.monotonic() - start <= 3


def test_connection_cap_reuses_idle_connections_then_refuses(
    ingressd: IngressdFactory, echo_servers: EchoServers
) -> None:
    import socket

    proc = slow_test_proxy(ingressd, echo_servers, "--max-connections", "3")
    addr = ("127.0.0.1", proc.http_port)
    request = b"GET /_echo/sleep/%d HTTP/1.1\r\nHost: slow.test\r\n\r\n"
    with contextlib.ExitStack() as stack:

        def connect() -> socket.socket:
            return stack.enter_context(socket.create_connection(addr, timeout=5))

        # Three keep-alive connections, idle after one request each.
        idle = [connect() for _ in range(3)]
        for s in idle:
            s.sendall(request % 0)
            assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
        # A fourth: an idle one is closed to make room, and the new one is served.
        fourth = connect()
        fourth.sendall(request % 1500)  # and stays busy
        open_ = []
        for s in idle:
            s.settimeout(0.2)
            try:
                if s.recv(1) == b"":
                    continue  # closed by ingressd
            except TimeoutError:
                open_.append(s)
        assert len(open_) == 2
        # The other two made busy too: three busy connections.
        for s in open_:
            s.sendall(request % 1500)
        time.sleep(0.3)
        refused = connect()
        refused.settimeout(5)
        answer = _read_until_closed(refused, 5)
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert answer.startswith(b"HTTP/1.1 503 Service Temporarily Unavailable\r\n")
        assert answer.endswith(b"\r\n\r\n" + nginx_page(503))
        # The busy ones are answered in full.
        fourth.settimeout(5)
        assert fourth.recv(65536).startswith(b"HTTP/1.1 200 ")
    assert "--max-connections of this process" in proc.log()
