"""End to end: the controller ConfigMap (--configmap) in manifest mode, checked with curl.

HSTS is on by default (ingress-nginx's ``hsts: true``): with no ConfigMap at all,
HTTPS responses of a host with a certificate of its own carry it, plain ones never.
Keys set through the ConfigMap change what clients see, live; a bad value is
reported and its default used while the rest serves; a flag given explicitly wins.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable
from pathlib import Path

import pytest
from e2e_helpers import (
    LOCALHOST,
    CurlResult,
    EchoServers,
    Ingressd,
    IngressdFactory,
    backends,
    curl,
    nginx_page,
    raw_exchange,
    wait_for,
)
from k8s_objects import ingress, path, rule, tls_entry, tls_secret

from ingressd.echo import SERVICE_HEADER
from ingressd.model.objects import Obj

pytestmark = pytest.mark.timeout(60)

DEFAULT_HSTS = "max-age=31536000; includeSubDomains"
CM = "ingressd/controller"


def configmap(data: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "controller", "namespace": "ingressd"},
        "data": data,
    }


def site(echo: EchoServers) -> list[Obj]:
    return [
        *backends(echo),
        tls_secret("secure-tls", ["secure.test"]),
        ingress(
            "secure",
            [rule("secure.test", path("/", "web"))],
            tls=[tls_entry(["secure.test"], "secure-tls")],
        ),
        ingress("plain", [rule("plain.test", path("/", "api"))]),
    ]


def https(ing: Ingressd, host: str, *args: str) -> CurlResult:
    return curl("-k", *ing.resolve(host), *args, ing.https_url(host, "/x"), check=False)


def post(ing: Ingressd, host: str, size: int) -> int:
    return https(ing, host, "--data-binary", "a" * size).status


def problems(ing: Ingressd) -> str:
    return curl(f"http://{LOCALHOST}:{ing.admin_port}/problems", check=False).body.decode()


def start(factory: IngressdFactory, objs: Iterable[Obj], *args: str) -> Ingressd:
    return factory({"all.yaml": list(objs)}, *args)


def test_without_a_configmap_https_responses_of_tls_hosts_carry_hsts(
    ingressd: IngressdFactory, echo_servers: EchoServers, tmp_path: Path
) -> None:
    ing = start(ingressd, site(echo_servers))
    served = https(ing, "secure.test")
    assert served.status == 200
    assert served.header("Strict-Transport-Security") == DEFAULT_HSTS
    # ingressd's own answers on that host too (a 413 here)
    body = tmp_path / "body"
    body.write_bytes(b"a" * (1024 * 1024 + 1))
    too_big = https(ing, "secure.test", "--data-binary", f"@{body}")
    assert too_big.status == 413
    assert too_big.header("Strict-Transport-Security") == DEFAULT_HSTS
    # never over plain HTTP (the 308 to https), nor for a host without TLS of its own
    redirect = ing.get("secure.test", "/x", check=False)
    assert redirect.status == 308 and redirect.header("Strict-Transport-Security") is None
    assert ing.get("plain.test", "/x").header("Strict-Transport-Security") is None
    plain_over_tls = https(ing, "plain.test")
    assert plain_over_tls.status == 200
    assert plain_over_tls.header("Strict-Transport-Security") is None
    # HTTP/2 the same
    h2 = https(ing, "secure.test", "--http2")
    assert h2.status == 200 and h2.header("strict-transport-security") == DEFAULT_HSTS


def test_configmap_keys_apply_live_and_a_bad_value_falls_back_to_its_default(
    ingressd: IngressdFactory, echo_servers: EchoServers
) -> None:
    data = {
        "hsts-max-age": "60",
        "hsts-preload": "true",
        "ssl-redirect": "false",
        "proxy-body-size": "10",
        "proxy-read-timeout": "abc",
        "server-snippet": "more_set_headers 'X: y';",
    }
    ing = start(ingressd, [*site(echo_servers), configmap(data)], "--configmap", CM)
    assert https(ing, "secure.test").header("Strict-Transport-Security") == (
        "max-age=60; includeSubDomains; preload"
    )
    assert ing.get("secure.test", "/x").status == 200  # ssl-redirect: false
    assert post(ing, "secure.test", 11) == 413
    assert post(ing, "secure.test", 10) == 200
    # the bad value and the refused snippet are reported; the rest serves
    found = problems(ing)
    assert "proxy-read-timeout='abc' is invalid" in found
    assert "server-snippet is refused" in found
    # a live change, no restart
    ing.update({"cm.yaml": [configmap({"hsts": "false"})], "all.yaml": site(echo_servers)})
    wait_for(
        lambda: https(ing, "secure.test").header("Strict-Transport-Security") is None,
        5,
        what="hsts: false applied",
    )
    assert ing.get("secure.test", "/x", check=False).status == 308  # back to the default
    assert post(ing, "secure.test", 11) == 200  # proxy-body-size back to 1m
    assert "proxy-read-timeout" not in problems(ing)


def test_a_flag_given_explicitly_wins_over_the_configmap_in_every_worker(
    ingressd: IngressdFactory, echo_servers: EchoServers
) -> None:
    data = {"proxy-body-size": "1m", "hsts-max-age": "60"}
    ing = start(
        ingressd,
        [*site(echo_servers), configmap(data)],
        "--configmap",
        CM,
        "--proxy-body-size",
        "5",
        "--workers",
        "2",
    )
    for _ in range(6):  # over both workers' connections
        assert post(ing, "secure.test", 6) == 413
        assert https(ing, "secure.test").header("Strict-Transport-Security") == (
            "max-age=60; includeSubDomains"
        )
    assert "overridden" not in problems(ing)  # not a problem: check lists it


def test_without_the_flag_a_configmap_in_the_folder_is_not_read(
    ingressd: IngressdFactory, echo_servers: EchoServers
) -> None:
    ing = start(ingressd, [*site(echo_servers), configmap({"hsts": "false"})])
    assert https(ing, "secure.test").header("Strict-Transport-Security") == DEFAULT_HSTS


def test_blocked_user_agents_and_hidden_headers(
    ingressd: IngressdFactory, echo_servers: EchoServers
) -> None:
    data = {"block-user-agents": "~*bot, BadClient", "hide-headers": f"{SERVICE_HEADER}"}
    ing = start(ingressd, [*site(echo_servers), configmap(data)], "--configmap", CM)
    assert ing.get("plain.test", "/x", "-A", "GoodBot/1.0", check=False).status == 403
    assert ing.get("plain.test", "/x", "-A", "badclient", check=False).status == 403
    served = ing.get("plain.test", "/x", "-A", "Mozilla/5.0")
    assert served.status == 200
    assert served.json()["service"] == "api"  # the upstream answered ...
    assert served.header(SERVICE_HEADER) is None  # ... and its header was hidden
    over_tls = https(ing, "secure.test", "-A", "crawlbot")
    assert over_tls.status == 403
    assert over_tls.header("Strict-Transport-Security") == DEFAULT_HSTS


def test_limit_req_status_code(ingressd: IngressdFactory, echo_servers: EchoServers) -> None:
    limited = ingress(
        "limited",
        [rule("limited.test", path("/", "web"))],
        annotations={
            "nginx.ingress.kubernetes.io/limit-rps": "1",
            "nginx.ingress.kubernetes.io/limit-burst-multiplier": "1",
        },
    )
    data = {"limit-req-status-code": "429"}
    ing = start(ingressd, [*site(echo_servers), limited, configmap(data)], "--configmap", CM)
    statuses = [ing.get("limited.test", "/x", check=False) for _ in range(6)]
    refused = [r for r in statuses if r.status != 200]
    assert refused, "the rate limit refused nothing"
    assert {r.status for r in refused} == {429}
    assert refused[0].body == nginx_page(429)
    ing.wait_for_log("429 Too Many Requests: rate limit of 1 requests per second")


def test_keep_alive_requests_closes_a_client_connection_after_that_many(
    ingressd: IngressdFactory, echo_servers: EchoServers
) -> None:
    data = {"keep-alive-requests": "2"}
    ing = start(ingressd, [*site(echo_servers), configmap(data)], "--configmap", CM)
    request = b"GET /x HTTP/1.1\r\nHost: plain.test\r\n\r\n"
    answer = raw_exchange(ing.http_port, request * 3)
    assert answer.count(b"HTTP/1.1 200") == 2  # the third is never read
    second = answer[answer.rindex(b"HTTP/1.1 200") :]
    assert b"\r\nconnection: close\r\n" in second.lower()


def test_ssl_protocols_apply_to_the_https_port_live(
    ingressd: IngressdFactory, echo_servers: EchoServers
) -> None:
    ing = start(
        ingressd,
        [*site(echo_servers), configmap({"ssl-protocols": "TLSv1.3"})],
        "--configmap",
        CM,
    )
    assert https(ing, "secure.test", "--tlsv1.3").status == 200
    refused = https(ing, "secure.test", "--tls-max", "1.2")
    assert refused.status == 0 and refused.exit_code != 0  # no TLS 1.2 handshake
    ing.update({"cm.yaml": None, "all.yaml": [*site(echo_servers), configmap({})]})
    wait_for(
        lambda: https(ing, "secure.test", "--tls-max", "1.2").status == 200,
        5,
        what="TLS 1.2 back with the default ssl-protocols",
    )


def test_header_names_nginx_drops_are_dropped_unless_the_configmap_allows_them(
    ingressd: IngressdFactory, echo_servers: EchoServers
) -> None:
    sent = ("-H", "X_Under: 1", "-H", "X.Dot: 2", "-H", "X-Fine: 3")
    ing = start(ingressd, site(echo_servers))
    for got in (
        ing.get("plain.test", "/x", *sent).json()["headers"],
        https(ing, "secure.test", "--http2", *sent).json()["headers"],
    ):
        assert got["x-fine"] == "3"
        assert "x_under" not in got and "x.dot" not in got
    data = {"enable-underscores-in-headers": "true"}
    ing = start(ingressd, [*site(echo_servers), configmap(data)], "--configmap", CM)
    got = ing.get("plain.test", "/x", *sent).json()["headers"]
    assert got["x_under"] == "1" and "x.dot" not in got
    data = {"ignore-invalid-headers": "false"}
    ing = start(ingressd, [*site(echo_servers), configmap(data)], "--configmap", CM)
    got = ing.get("plain.test", "/x", *sent).json()["headers"]
    assert got["x_under"] == "1" and got["x.dot"] == "2"


def test_skip_access_log_urls(
    ingressd: IngressdFactory, echo_servers: EchoServers, tmp_path: Path
) -> None:
    stdout = tmp_path / "access.log"
    data = {"skip-access-log-urls": "/healthz-probe,/ping?x=1"}
    ing = ingressd(
        {"all.yaml": [*site(echo_servers), configmap(data)]},
        "--configmap",
        CM,
        "--access-log",
        "json",
        stdout_path=stdout,
    )
    for target in ("/healthz-probe", "/PING?x=1", "/ping?x=2", "/logged"):
        assert ing.get("plain.test", target).status == 200

    def lines() -> list[str]:
        return [line for line in stdout.read_text().splitlines() if line.startswith("{")]

    wait_for(lambda: any('"/logged"' in line for line in lines()), 5, what="the access log")
    paths = [line.split('"path":"')[1].split('"')[0] for line in lines()]
    assert sorted(paths) == ["/logged", "/ping"]  # /ping?x=2 is another URI


def _client() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def _tls13_session(
    ing: Ingressd, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[ssl.SSLSession, bool]:
    """One TLS 1.3 request to secure.test, its response read (so the server's
    NewSessionTicket is in); the session and whether it was resumed."""
    with (
        socket.create_connection((LOCALHOST, ing.https_port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="secure.test", session=session) as tls,
    ):
        tls.sendall(b"GET /x HTTP/1.1\r\nHost: secure.test\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data[:100]
        assert tls.session is not None
        return tls.session, tls.session_reused


def test_ssl_session_keys_set_the_cache_and_the_timeout(
    ingressd: IngressdFactory, echo_servers: EchoServers
) -> None:
    """ssl-session-timeout (ingress-nginx's default 10m) is the lifetime clients are
    told for their session tickets; ssl-session-cache: "false" keeps no session, so
    none is resumed (with ssl-session-tickets off, TLS 1.3's tickets name a session
    the server must keep)."""
    ing = start(ingressd, [*site(echo_servers), configmap({})], "--configmap", CM)
    ctx = _client()
    session, _ = _tls13_session(ing, ctx)
    assert session.ticket_lifetime_hint == 600
    assert _tls13_session(ing, ctx, session)[1] is True  # resumed from the server's cache

    ing.update({"all.yaml": [*site(echo_servers), configmap({"ssl-session-timeout": "5m"})]})
    wait_for(
        lambda: _tls13_session(ing, ctx)[0].ticket_lifetime_hint == 300,
        5,
        what="ssl-session-timeout 5m",
    )
    off = {"ssl-session-cache": "false"}
    ing.update({"all.yaml": [*site(echo_servers), configmap(off)]})

    def not_resumed() -> bool:
        session, _ = _tls13_session(ing, ctx)
        return _tls13_session(ing, ctx, session)[1] is False

    wait_for(not_resumed, 5, what="no session resumed without the cache")
    assert "ssl-session" not in problems(ing)
