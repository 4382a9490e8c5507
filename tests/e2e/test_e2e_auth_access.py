"""End to end: auth-cache-*, auth-keepalive*, satisfy, with a real auth service.

The auth service on 127.0.0.1 records every subrequest with the connection it
came on (its peer port), so the tests count what reached it: cached answers
never do, kept-alive subrequests share connections. One ingressd serves the
module's cases.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from aiohttp import web
from e2e_helpers import (
    LOCALHOST,
    BackgroundLoop,
    Ingressd,
    RecordingService,
    annotated,
    serving_echo,
)

A = "nginx.ingress.kubernetes.io/"
BASIC = "Authorization: Basic YWxpY2U6czNjcmV0"  # alice:s3cret


class AuthService(RecordingService):
    """Answers by X-Token: good (200), cookie (200 with Set-Cookie), nostore (200,
    Cache-Control: no-store), forbidden (403), boom (502), else 401."""

    async def describe(self, request: web.Request) -> dict:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        return {
            "path": request.path,
            "peer": peer[1] if peer else 0,
            "headers": {k.lower(): v for k, v in request.headers.items()},
        }

    async def answer(self, request: web.Request) -> web.StreamResponse:
        token = request.headers.get("X-Token", "")
        if token.startswith("good"):
            resp = web.Response(text="ok")
            resp.headers["X-Auth-User"] = token
            return resp
        if token == "cookie":
            resp = web.Response(text="ok")
            resp.headers["Set-Cookie"] = "s=1; Path=/"
            return resp
        if token == "nostore":
            return web.Response(text="ok", headers={"Cache-Control": "no-store"})
        if token == "forbidden":
            return web.Response(status=403, text="no")
        if token == "boom":
            return web.Response(status=502, text="broken")
        return web.Response(
            status=401, text="who", headers={"WWW-Authenticate": 'Bearer realm="svc"'}
        )


@pytest.fixture(scope="module")
def auth_service(upstream_loop: BackgroundLoop) -> Iterator[AuthService]:
    with AuthService().serve(upstream_loop, keepalive_timeout=30) as service:
        yield service


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory,
    upstream_loop: BackgroundLoop,
    auth_service: AuthService,
    curl_binary: str,
) -> Iterator[Ingressd]:
    url = f"http://{LOCALHOST}:{auth_service.port}"
    basic = {"auth_type": "basic", "auth_secret": "htpasswd", "auth_realm": "Staff"}
    ingresses = [
        annotated(
            "cache.test",
            auth_url=f"{url}/cache",
            auth_cache_key="$http_x_token",
            auth_response_headers="X-Auth-User",
        ),
        annotated("cache2.test", auth_url=f"{url}/cache", auth_cache_key="$http_x_token"),
        annotated(
            "short.test",
            auth_url=f"{url}/short",
            auth_cache_key="$http_x_token",
            auth_cache_duration="200 1s, 403 1m",
        ),
        annotated("posted.test", auth_url=f"{url}/posted", auth_cache_key="k", auth_method="POST"),
        annotated("nokeep.test", auth_url=f"{url}/nokeep"),
        annotated(
            "keep.test",
            auth_url=f"{url}/keep",
            auth_keepalive="2",
            auth_keepalive_requests="3",
        ),
        annotated(
            "keepidle.test",
            auth_url=f"{url}/keepidle",
            auth_keepalive="4",
            auth_keepalive_timeout="1",
        ),
        annotated(
            "sharevars.test",
            auth_url=f"{url}/share",
            auth_keepalive="2",
            auth_keepalive_share_vars="true",
        ),
        # satisfy: the client is 127.0.0.1, in the first allow-list and not the second.
        annotated("anyin.test", satisfy="any", whitelist_source_range="127.0.0.1/32", auth_url=url),
        annotated("anyout.test", satisfy="any", whitelist_source_range="10.0.0.0/8", auth_url=url),
        annotated("anybasic.test", satisfy="any", whitelist_source_range="10.0.0.0/8", **basic),
        annotated(
            "anyall.test",
            satisfy="any",
            whitelist_source_range="10.0.0.0/8",
            auth_url=url,
            **basic,
        ),
        annotated(
            "anysignin.test",
            satisfy="any",
            auth_url=url,
            auth_signin="https://login.example/start",
            **basic,
        ),
        annotated("anydeny.test", satisfy="any", denylist_source_range="127.0.0.1", auth_url=url),
        annotated("allout.test", whitelist_source_range="10.0.0.0/8", auth_url=url),
        annotated("allbasic.test", auth_url=url, **basic),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "htpasswd", "namespace": "default"},
            "type": "Opaque",
            "stringData": {"auth": "alice:{PLAIN}s3cret\n"},
        },
    ]
    workdir = tmp_path_factory.mktemp("e2e-auth-access")
    with serving_echo(workdir, upstream_loop, ingresses) as proc:
        yield proc


def token(value: str) -> tuple[str, str]:
    return ("-H", f"X-Token: {value}")


# -- auth-cache-key, auth-cache-duration ---------------------------------------------------


def test_cached_answers_are_not_asked_again(proxy: Ingressd, auth_service: AuthService) -> None:
    mark = auth_service.mark()
    for _ in range(3):
        r = proxy.get("cache.test", "/a", *token("good-1"))
        assert r.status == 200
        # A cached allow still carries the answer's auth-response-headers.
        assert r.json()["headers"]["x-auth-user"] == "good-1"
    assert len(auth_service.since(mark)) == 1
    # Another key is another entry; the first stays cached.
    assert proxy.get("cache.test", "/b", *token("good-2")).json()["headers"]["x-auth-user"] == (
        "good-2"
    )
    assert proxy.get("cache.test", "/c", *token("good-1")).status == 200
    assert len(auth_service.since(mark)) == 2


def test_a_cached_denial_stays_a_denial(proxy: Ingressd, auth_service: AuthService) -> None:
    mark = auth_service.mark()
    for _ in range(3):
        r = proxy.get("cache.test", "/", *token("who-knows"), check=False)
        assert r.status == 401 and r.header("WWW-Authenticate") == 'Bearer realm="svc"'
    assert len(auth_service.since(mark)) == 1  # 401 is cached by default (200 202 401 5m)
    # 403 is not in the default durations: asked every time, denied every time.
    for _ in range(2):
        assert proxy.get("cache.test", "/", *token("forbidden"), check=False).status == 403
    assert len(auth_service.since(mark)) == 3
    # An auth service failure is never cached, and never opens the route.
    for _ in range(2):
        assert proxy.get("cache.test", "/", *token("boom"), check=False).status == 500
    assert len(auth_service.since(mark)) == 5


def test_answers_nginx_would_not_cache_are_asked_again(
    proxy: Ingressd, auth_service: AuthService
) -> None:
    mark = auth_service.mark()
    for value in ("cookie", "cookie", "nostore", "nostore"):
        assert proxy.get("cache.test", "/", *token(value)).status == 200
    assert len(auth_service.since(mark)) == 4  # Set-Cookie, Cache-Control: no-store
    # A POST subrequest is not cached (proxy_cache_methods GET HEAD).
    for _ in range(2):
        assert proxy.get("posted.test", "/", *token("good")).status == 200
    assert len(auth_service.since(mark)) == 6


def test_entries_are_per_host_and_expire(proxy: Ingressd, auth_service: AuthService) -> None:
    mark = auth_service.mark()
    assert proxy.get("cache.test", "/", *token("good-3")).status == 200
    assert proxy.get("cache2.test", "/", *token("good-3")).status == 200  # another location
    assert len(auth_service.since(mark)) == 2
    # auth-cache-duration "200 1s, 403 1m": an allow is asked again after a second.
    assert proxy.get("short.test", "/", *token("good-4")).status == 200
    assert proxy.get("short.test", "/", *token("good-4")).status == 200
    assert len(auth_service.since(mark)) == 3
    time.sleep(1.2)
    assert proxy.get("short.test", "/", *token("good-4")).status == 200
    assert len(auth_service.since(mark)) == 4
    # ... and 403 is cached there.
    for _ in range(2):
        assert proxy.get("short.test", "/", *token("forbidden"), check=False).status == 403
    assert len(auth_service.since(mark)) == 5


# -- auth-keepalive* -----------------------------------------------------------------------


def connections(seen: list[dict]) -> int:
    return len({s["peer"] for s in seen})


def test_without_keepalive_every_subrequest_has_its_own_connection(
    proxy: Ingressd, auth_service: AuthService
) -> None:
    mark = auth_service.mark()
    for _ in range(3):
        assert proxy.get("nokeep.test", "/", *token("good")).status == 200
    seen = auth_service.since(mark)
    assert len(seen) == 3 and connections(seen) == 3
    assert all(s["headers"]["connection"].lower() == "close" for s in seen)


def test_keepalive_reuses_connections_up_to_its_request_limit(
    proxy: Ingressd, auth_service: AuthService
) -> None:
    mark = auth_service.mark()
    for _ in range(5):
        assert proxy.get("keep.test", "/", *token("good")).status == 200
    seen = auth_service.since(mark)
    # auth-keepalive-requests 3: the first connection carries 3, the next one 2.
    assert [s["peer"] for s in seen].count(seen[0]["peer"]) == 3
    assert connections(seen) == 2
    assert all("connection" not in s["headers"] for s in seen)


def test_an_idle_connection_is_closed_after_the_keepalive_timeout(
    proxy: Ingressd, auth_service: AuthService
) -> None:
    mark = auth_service.mark()
    for _ in range(2):
        assert proxy.get("keepidle.test", "/", *token("good")).status == 200
    assert connections(auth_service.since(mark)) == 1
    time.sleep(1.3)  # auth-keepalive-timeout 1
    assert proxy.get("keepidle.test", "/", *token("good")).status == 200
    assert connections(auth_service.since(mark)) == 2


def test_share_vars_decides_whether_the_subrequest_has_the_request_id(
    proxy: Ingressd, auth_service: AuthService
) -> None:
    mark = auth_service.mark()
    r = proxy.get("sharevars.test", "/", *token("good"))
    assert (
        auth_service.since(mark)[0]["headers"]["x-request-id"]
        == (r.json()["headers"]["x-request-id"])
    )
    mark = auth_service.mark()
    r = proxy.get("keep.test", "/", *token("good"))
    upstream_id = r.json()["headers"]["x-request-id"]
    assert auth_service.since(mark)[0]["headers"]["x-request-id"] != upstream_id
    # A client's X-Request-ID is $req_id for both, shared or not.
    mark = auth_service.mark()
    r = proxy.get("keep.test", "/", *token("good"), "-H", "X-Request-ID: rid-7")
    assert auth_service.since(mark)[0]["headers"]["x-request-id"] == "rid-7"
    assert r.json()["headers"]["x-request-id"] == "rid-7"


# -- satisfy ---------------------------------------------------------------------------------


def test_satisfy_any_an_allowed_address_needs_no_authentication(
    proxy: Ingressd, auth_service: AuthService
) -> None:
    mark = auth_service.mark()
    assert proxy.get("anyin.test", "/").status == 200
    assert auth_service.since(mark) == []  # not even asked


def test_satisfy_any_the_auth_service_decides_for_other_addresses(
    proxy: Ingressd, auth_service: AuthService
) -> None:
    assert proxy.get("anyout.test", "/", *token("good")).status == 200
    denied = proxy.get("anyout.test", "/", check=False)
    assert denied.status == 401 and denied.header("WWW-Authenticate") == 'Bearer realm="svc"'
    assert proxy.get("anyout.test", "/", *token("forbidden"), check=False).status == 403
    # A failing auth service still fails closed.
    assert proxy.get("anyout.test", "/", *token("boom"), check=False).status == 500


def test_satisfy_any_with_basic_auth(proxy: Ingressd, auth_service: AuthService) -> None:
    assert proxy.get("anybasic.test", "/", "-H", BASIC).status == 200
    r = proxy.get("anybasic.test", "/", check=False)
    assert r.status == 401 and r.header("WWW-Authenticate") == 'Basic realm="Staff"'
    # Valid credentials suffice: the auth service is not asked.
    mark = auth_service.mark()
    assert proxy.get("anyall.test", "/", "-H", BASIC).status == 200
    assert auth_service.since(mark) == []
    # Without credentials the auth service may still allow ...
    assert proxy.get("anyall.test", "/", *token("good")).status == 200
    # ... and when it does not, Basic's 401 wins over its 403 (nginx keeps a 401).
    r = proxy.get("anyall.test", "/", *token("forbidden"), check=False)
    assert r.status == 401 and r.header_values("WWW-Authenticate") == ['Basic realm="Staff"']
    # Both said 401: both challenges.
    r = proxy.get("anyall.test", "/", check=False)
    assert r.status == 401
    assert r.header_values("WWW-Authenticate") == ['Basic realm="Staff"', 'Bearer realm="svc"']


def test_satisfy_any_signin_redirects_the_final_401(proxy: Ingressd) -> None:
    r = proxy.get("anysignin.test", "/page", *token("forbidden"), check=False)
    assert r.status == 302
    assert r.header("Location") == ("https://login.example/start?rd=http://anysignin.test%2Fpage")
    assert proxy.get("anysignin.test", "/page", "-H", BASIC).status == 200


def test_satisfy_any_a_denied_address_may_still_authenticate(proxy: Ingressd) -> None:
    assert proxy.get("anydeny.test", "/", *token("good")).status == 200
    r = proxy.get("anydeny.test", "/", *token("forbidden"), check=False)
    assert r.status == 403


def test_satisfy_all_asks_for_everything(proxy: Ingressd, auth_service: AuthService) -> None:
    mark = auth_service.mark()
    r = proxy.get("allout.test", "/", *token("good"), check=False)
    assert r.status == 403 and auth_service.since(mark) == []  # the address fails first
    assert proxy.get("allbasic.test", "/", "-H", BASIC, *token("good")).status == 200
    assert proxy.get("allbasic.test", "/", *token("good"), check=False).status == 401
    assert proxy.get("allbasic.test", "/", "-H", BASIC, *token("no"), check=False).status == 401
