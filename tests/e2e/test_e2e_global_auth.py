"""End to end: the ConfigMap's global-auth-* keys, enable-global-auth and no-auth-locations.

One ingressd with a controller ConfigMap naming a real auth service on
127.0.0.1, which records what it is asked; the last test changes the ConfigMap.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from e2e_helpers import (
    LOCALHOST,
    BackgroundLoop,
    EchoServers,
    Ingressd,
    RecordingService,
    annotated,
    backends,
    serving,
    wait_for,
)

from ingressd.model.objects import Obj

A = "nginx.ingress.kubernetes.io/"
BASIC = "Authorization: Basic YWxpY2U6czNjcmV0"  # alice:s3cret


class AuthService(RecordingService):
    """200 for X-Token: good (X-Auth-User: alice), 401 with a challenge otherwise."""

    async def describe(self, request: web.Request) -> dict:
        return {"path": request.path, "method": request.method}

    async def answer(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-Token") == "good":
            return web.Response(text="ok", headers={"X-Auth-User": "alice"})
        return web.Response(status=401, headers={"WWW-Authenticate": 'Bearer realm="global"'})


@pytest.fixture(scope="module")
def auth_service(upstream_loop: BackgroundLoop) -> Iterator[AuthService]:
    with AuthService().serve(upstream_loop) as service:
        yield service


def controller(data: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ingressd-controller", "namespace": "default"},
        "data": data,
    }


@dataclass
class Site:
    proxy: Ingressd
    objs: list[Obj]
    global_data: dict[str, str]


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory,
    upstream_loop: BackgroundLoop,
    auth_service: AuthService,
    curl_binary: str,
) -> Iterator[Site]:
    url = f"http://{LOCALHOST}:{auth_service.port}"
    echo = EchoServers(upstream_loop, ["web", "api"])
    objs = [
        *backends(echo),
        annotated("plain.test"),
        annotated("optout.test", enable_global_auth="false"),
        annotated("own.test", auth_url=f"{url}/own"),
        annotated(
            "paths.test",
            "/",
            "/public",
            "/.well-known/acme-challenge",
            auth_type="basic",
            auth_secret="htpasswd",
        ),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "htpasswd", "namespace": "default"},
            "type": "Opaque",
            "stringData": {"auth": "alice:{PLAIN}s3cret\n"},
        },
    ]
    data = {
        "global-auth-url": f"{url}/global",
        "global-auth-response-headers": "X-Auth-User",
        "global-auth-cache-key": "$http_x_token",
        "no-auth-locations": "/.well-known/acme-challenge, /public",
    }
    args = ["--configmap", "default/ingressd-controller"]
    workdir = tmp_path_factory.mktemp("e2e-global-auth")
    try:
        with serving(workdir, [*objs, controller(data)], args) as proxy:
            yield Site(proxy, objs, data)
    finally:
        echo.close()


def test_every_route_asks_the_global_auth_service(site: Site, auth_service: AuthService) -> None:
    mark = auth_service.mark()
    denied = site.proxy.get("plain.test", "/x", check=False)
    assert denied.status == 401 and denied.header("WWW-Authenticate") == 'Bearer realm="global"'
    r = site.proxy.get("plain.test", "/x", "-H", "X-Token: good", "-H", "X-Auth-User: mallory")
    assert r.status == 200 and r.json()["headers"]["x-auth-user"] == "alice"
    seen = auth_service.since(mark)
    assert [s["path"] for s in seen] == ["/global", "/global"]
    # global-auth-cache-key: the same token is not asked again.
    assert site.proxy.get("plain.test", "/y", "-H", "X-Token: good").status == 200
    assert len(auth_service.since(mark)) == 2


def test_enable_global_auth_false_opts_an_ingress_out(
    site: Site, auth_service: AuthService
) -> None:
    mark = auth_service.mark()
    assert site.proxy.get("optout.test", "/").status == 200
    assert auth_service.since(mark) == []


def test_an_ingress_s_own_auth_url_wins(site: Site, auth_service: AuthService) -> None:
    mark = auth_service.mark()
    assert site.proxy.get("own.test", "/", check=False).status == 401
    assert site.proxy.get("own.test", "/", "-H", "X-Token: good").status == 200
    assert [s["path"] for s in auth_service.since(mark)] == ["/own", "/own"]


def test_no_auth_locations_skip_every_authentication(site: Site, auth_service: AuthService) -> None:
    mark = auth_service.mark()
    # Paths starting with a no-auth location: neither Basic auth nor the global service.
    assert site.proxy.get("paths.test", "/public/file").status == 200
    assert site.proxy.get("paths.test", "/.well-known/acme-challenge/token").status == 200
    assert auth_service.since(mark) == []
    # The Ingress's other path needs both (satisfy all).
    assert site.proxy.get("paths.test", "/", "-H", BASIC, check=False).status == 401
    assert site.proxy.get("paths.test", "/", "-H", "X-Token: good", check=False).status == 401
    assert site.proxy.get("paths.test", "/", "-H", BASIC, "-H", "X-Token: good").status == 200


def test_the_configmap_turns_global_auth_on_and_off_live(
    site: Site, auth_service: AuthService
) -> None:
    proxy = site.proxy
    proxy.update({"all.yaml": [*site.objs, controller({})]})
    wait_for(
        lambda: proxy.get("plain.test", "/", check=False).status == 200,
        10,
        what="global auth off",
    )
    # An invalid global-auth-url: every route answers 503 rather than serve without it.
    proxy.update({"all.yaml": [*site.objs, controller({"global-auth-url": "ftp://auth/"})]})
    wait_for(
        lambda: proxy.get("plain.test", "/", check=False).status == 503,
        10,
        what="invalid global-auth-url denies",
    )
    assert proxy.get("optout.test", "/", check=False).status == 503
    proxy.update({"all.yaml": [*site.objs, controller(site.global_data)]})
    wait_for(
        lambda: proxy.get("plain.test", "/", check=False).status == 401,
        10,
        what="global auth on again",
    )
