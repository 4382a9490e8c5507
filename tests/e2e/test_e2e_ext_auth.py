"""End to end: external authentication (auth-url and friends) through the proxy with curl.

A real auth service on 127.0.0.1 decides by the X-Token header the client sends,
records every subrequest, and answers as oauth2-proxy-like services do.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from e2e_helpers import (
    LOCALHOST,
    BackgroundLoop,
    Ingressd,
    RecordingService,
    annotated,
    free_port,
    nginx_page,
    serving_echo,
    websocket_upgrade_args,
)

A = "nginx.ingress.kubernetes.io/"


class AuthService(RecordingService):
    """Records subrequests; answers by X-Token: good, forbidden, boom, slow, else 401."""

    async def describe(self, request: web.Request) -> dict:
        return {
            "method": request.method,
            "path": request.path_qs,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": await request.read(),
        }

    async def answer(self, request: web.Request) -> web.StreamResponse:
        token = request.headers.get("X-Token", "")
        if token == "good":
            resp = web.Response(text="ok")
            resp.headers["X-Auth-User"] = "alice"
            resp.headers["X-Auth-Groups"] = "staff"
            resp.headers.add("Set-Cookie", "session=abc; Path=/")
            return resp
        if token == "nouser":
            return web.Response(text="ok")
        if token == "forbidden":
            return web.Response(status=403, text="no")
        if token == "boom":
            return web.Response(status=502, text="upstream of auth broke")
        if token == "redirect":
            raise web.HTTPFound("https://login.example/")
        resp = web.Response(status=401, text="who are you")
        resp.headers["WWW-Authenticate"] = 'Bearer realm="test"'
        resp.headers.add("Set-Cookie", "csrf=xyz; Path=/")
        return resp


@pytest.fixture(scope="module")
def auth_service(upstream_loop: BackgroundLoop) -> Iterator[AuthService]:
    with AuthService().serve(upstream_loop) as service:
        yield service


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory,
    upstream_loop: BackgroundLoop,
    auth_service: AuthService,
    curl_binary: str,
) -> Iterator[Ingressd]:
    url = f"http://{LOCALHOST}:{auth_service.port}/check"
    dead = f"http://{LOCALHOST}:{free_port()}/check"  # nothing listens there
    ingresses = [
        annotated("ext.test", auth_url=url, auth_response_headers="X-Auth-User, X-Auth-Groups"),
        annotated(
            "signin.test",
            auth_url=url + "?host=$host",
            auth_signin="https://login.example/start",
        ),
        annotated(
            "signinrd.test",
            auth_url=url,
            auth_signin="https://login.example/start?rd=https://$host/home",
        ),
        annotated(
            "signinparam.test",
            auth_url=url,
            auth_signin="https://login.example/start?app=1",
            auth_signin_redirect_param="return_to",
        ),
        annotated(
            "method.test",
            auth_url=url,
            auth_method="POST",
            auth_request_redirect="https://$host/after",
        ),
        annotated("always.test", auth_url=url, auth_always_set_cookie="true"),
        annotated("dead.test", auth_url=dead),
        annotated("badurl.test", auth_url="ftp://auth.example/"),
        annotated("badvar.test", auth_url=url + "?u=$remote_user"),
    ]
    workdir = tmp_path_factory.mktemp("e2e-ext-auth")
    with serving_echo(workdir, upstream_loop, ingresses) as proc:
        yield proc


def test_allowed_requests_carry_the_auth_response_headers(
    proxy: Ingressd, auth_service: AuthService
) -> None:
    r = proxy.get(
        "ext.test",
        "/data?x=1",
        "-H",
        "X-Token: good",
        "-H",
        "X-Auth-User: mallory",  # a forged identity is replaced
        "-H",
        "X-Request-ID: req-42",
    )
    assert r.status == 200
    upstream = r.json()["headers"]
    assert upstream["x-auth-user"] == "alice"
    assert upstream["x-auth-groups"] == "staff"
    assert upstream["x-request-id"] == "req-42"
    assert r.header_values("Set-Cookie") == ["session=abc; Path=/"]
    sub = auth_service.last()
    assert sub["method"] == "GET"
    assert sub["path"] == "/check"
    h = sub["headers"]
    assert h["x-original-url"] == "http://ext.test/data?x=1"
    assert h["x-original-method"] == "GET"
    assert h["x-sent-from"] == "nginx-ingress-controller"
    assert h["x-auth-request-redirect"] == "/data?x=1"
    assert h["x-real-ip"] == "127.0.0.1"
    assert h["x-forwarded-for"] == "127.0.0.1"
    assert h["x-request-id"] == "req-42"
    assert h["x-token"] == "good"  # the client's headers go along
    # nginx.tmpl: Host is the auth URL's host name, without its port.
    assert h["host"] == LOCALHOST


def test_a_header_the_auth_service_did_not_send_is_removed(proxy: Ingressd) -> None:
    r = proxy.get("ext.test", "/", "-H", "X-Token: nouser", "-H", "X-Auth-User: mallory")
    assert r.status == 200
    assert "x-auth-user" not in r.json()["headers"]


def test_the_body_is_not_sent_to_the_auth_service_but_reaches_the_upstream(
    proxy: Ingressd, auth_service: AuthService
) -> None:
    body = "a=1&b=" + "x" * 5000
    r = proxy.get("ext.test", "/upload", "-H", "X-Token: good", "--data-binary", body)
    assert r.status == 200
    assert (r.json()["method"], r.json()["body_bytes"]) == ("POST", len(body))
    sub = auth_service.last()
    assert (sub["method"], sub["body"]) == ("GET", b"")
    assert "content-length" not in sub["headers"]
    assert sub["headers"]["x-original-method"] == "POST"


def test_denials_are_returned_to_the_client(proxy: Ingressd, auth_service: AuthService) -> None:
    before = auth_service.count()
    r = proxy.get("ext.test", "/", check=False)
    assert r.status == 401
    assert r.header("WWW-Authenticate") == 'Bearer realm="test"'
    assert r.header("Set-Cookie") is None  # only with auth-always-set-cookie
    assert "json" not in (r.header("Content-Type") or "")  # the upstream never answered
    r = proxy.get("ext.test", "/", "-H", "X-Token: forbidden", check=False)
    assert r.status == 403
    assert auth_service.count() == before + 2


def test_auth_service_errors_answer_500(proxy: Ingressd) -> None:
    for token in ("boom", "redirect"):
        r = proxy.get("ext.test", "/", "-H", f"X-Token: {token}", check=False)
        assert (r.status, r.body) == (500, nginx_page(500)), token
    r = proxy.get("dead.test", "/", "-H", "X-Token: good", check=False)
    assert (r.status, r.body) == (500, nginx_page(500))
    # The reasons are the log's, not the page's.
    for host in ("ext.test", "dead.test"):
        proxy.wait_for_log(f"GET {host}/: 500 Internal Server Error: the authentication service")


def test_signin_redirects_a_401_with_the_original_url(
    proxy: Ingressd, auth_service: AuthService
) -> None:
    r = proxy.get("signin.test", "/a%20b/page?q=1&r=2", check=False)
    assert r.status == 302
    location = r.header("Location") or ""
    assert location.startswith("https://login.example/start?rd=")
    assert parse_qs(urlsplit(location).query)["rd"] == ["http://signin.test/a%20b/page?q=1&r=2"]
    assert auth_service.last()["path"] == "/check?host=signin.test"
    # 403 is not a sign-in case
    r = proxy.get("signin.test", "/", "-H", "X-Token: forbidden", check=False)
    assert r.status == 403
    # an rd the annotation gives is kept as it is
    r = proxy.get("signinrd.test", "/x", check=False)
    assert r.header("Location") == "https://login.example/start?rd=https://signinrd.test/home"
    r = proxy.get("signinparam.test", "/x", check=False)
    assert r.header("Location") == (
        "https://login.example/start?app=1&return_to=http://signinparam.test%2Fx"
    )


def test_auth_method_and_request_redirect(proxy: Ingressd, auth_service: AuthService) -> None:
    r = proxy.get("method.test", "/p?z=9", "-H", "X-Token: good")
    assert r.status == 200
    sub = auth_service.last()
    assert sub["method"] == "POST"
    assert sub["body"] == b""
    h = sub["headers"]
    assert (h["x-original-uri"], h["x-scheme"]) == ("/p?z=9", "http")
    assert h["x-auth-request-redirect"] == "https://method.test/after"


def test_always_set_cookie_sets_it_on_denials_too(proxy: Ingressd) -> None:
    r = proxy.get("always.test", "/", check=False)
    assert r.status == 401
    assert r.header_values("Set-Cookie") == ["csrf=xyz; Path=/"]
    r = proxy.get("always.test", "/", "-H", "X-Token: good")
    assert r.header_values("Set-Cookie") == ["session=abc; Path=/"]


def test_invalid_auth_annotations_fail_closed(proxy: Ingressd) -> None:
    for host in ("badurl.test", "badvar.test"):
        r = proxy.get(host, "/", "-H", "X-Token: good", check=False)
        assert r.status == 503, host  # ingress-nginx's answer for a denied location
        assert r.body == nginx_page(503)
        proxy.wait_for_log(f"GET {host}/: 503 Service Unavailable: invalid auth-url annotation")
    log = proxy.log()
    assert "auth-url='ftp://auth.example/' is invalid" in log
    assert "$remote_user is not a variable ingressd knows" in log


def test_websocket_upgrades_are_authenticated_first(
    proxy: Ingressd, auth_service: AuthService
) -> None:
    denied = proxy.get("ext.test", "/ws", *websocket_upgrade_args(), max_time=2, check=False)
    assert denied.status == 401
    r = proxy.get(
        "ext.test", "/ws", "-H", "X-Token: good", *websocket_upgrade_args(), max_time=1, check=False
    )
    assert r.status == 101, r
    assert auth_service.last()["headers"]["x-original-url"] == "http://ext.test/ws"
    assert "upgrade" not in auth_service.last()["headers"]
