"""End to end: --default-backend-service, the default-backend annotation and custom-http-errors.

The default backends are real echo servers (``ingressd.echo``) started by the
test: they answer 200 with the request they received (method, path, query,
headers, body size), so each test sees the X- headers ingress-nginx sends an
error page backend. The upstreams answering 404 and 503 are echo servers too
(``/_echo/status/CODE``); the error backend that itself answers an error, or
that nobody listens for, shows that one request gets at most one error page.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import (
    LOCALHOST,
    BackgroundLoop,
    CurlResult,
    EchoServers,
    FaultyUpstream,
    Ingressd,
    curl,
    echo_backend,
    free_port,
    nginx_page,
    serving,
    wait_for,
)
from k8s_objects import endpoint_slice, ingress, ingress_class, path, rule, service
from kube_apiserver import KubeApiServer

from ingressd.model.objects import Obj

A = "nginx.ingress.kubernetes.io/"
ERROR_HEADERS = (
    "x-code",
    "x-format",
    "x-original-uri",
    "x-namespace",
    "x-ingress-name",
    "x-service-name",
    "x-service-port",
    "x-request-id",
)


def annotated(name: str, host: str, paths: list[dict[str, Any]], **annotations: str) -> Obj:
    return ingress(
        name,
        [rule(host, *paths)],
        annotations={A + k.replace("_", "-"): v for k, v in annotations.items()},
    )


def backend_at(name: str, port: int) -> list[Obj]:
    """Service ``name`` (port 80) with one ready endpoint, 127.0.0.1:``port``."""
    return [service(name), endpoint_slice(name, [LOCALHOST], port)]


@dataclass
class Env:
    proxy: Ingressd
    broken: FaultyUpstream  # an error page backend that answers 503 itself

    def get(self, host: str, target: str, *args: str) -> CurlResult:
        return self.proxy.get(host, target, *args, check=False)

    def h2(self, host: str, target: str, *args: str) -> CurlResult:
        return self.proxy.curl(
            "-k", "--http2", *args, *self.proxy.resolve(host), self.proxy.https_url(host, target)
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, upstream_loop: BackgroundLoop) -> Iterator[Env]:
    echo = EchoServers(upstream_loop, ["web", "global-errors", "custom-errors"])
    broken = FaultyUpstream(upstream_loop, "status:503")
    errors_404_503 = {
        "default_backend": "custom-errors",
        "custom_http_errors": "404, 503",
        "proxy_body_size": "0",  # for the large upload
    }
    objs = [
        ingress_class(),
        *echo_backend("web", echo["web"]),
        *echo_backend("global-errors", echo["global-errors"]),
        *echo_backend("custom-errors", echo["custom-errors"]),
        *echo_backend("empty", echo["web"], ready=False),  # no ready endpoint
        *backend_at("broken-errors", broken.port),
        *backend_at("down-errors", free_port()),  # nothing listens there
        annotated("plain", "plain.test", [path("/app", "web")]),
        annotated(
            "annot",
            "annot.test",
            [path("/app", "web"), path("/empty", "empty"), path("/missing", "nope", port="http")],
            **errors_404_503,
        ),
        annotated("standin", "standin.test", [path("/", "empty")], default_backend="custom-errors"),
        annotated("global", "global.test", [path("/", "web")]),
        annotated("list", "list.test", [path("/", "web")], custom_http_errors="503"),
        annotated("noeps", "noeps.test", [path("/", "empty")], custom_http_errors="503"),
        annotated(
            "passthru",
            "passthru.test",
            [path("/app", "web"), path("/empty", "empty")],
            custom_http_errors="503",
            disable_proxy_intercept_errors="true",
        ),
        annotated(
            "loop",
            "loop.test",
            [path("/", "web")],
            default_backend="broken-errors",
            custom_http_errors="503",
        ),
        annotated(
            "down",
            "down.test",
            [path("/", "web")],
            default_backend="down-errors",
            custom_http_errors="503",
        ),
    ]
    work = tmp_path_factory.mktemp("e2e-default-backend")
    args = ["--default-backend-service", "default/global-errors", "--custom-http-errors", "418"]
    try:
        with serving(work, objs, args) as proxy:
            yield Env(proxy, broken)
    finally:
        broken.close()
        echo.close()


def page(r: CurlResult) -> dict[str, Any]:
    """The echo of the request the default backend received."""
    assert r.status == 200, str(r)
    return r.json()


# -- --default-backend-service --------------------------------------------------------------


def test_unmatched_host_goes_to_the_default_backend_service(env: Env) -> None:
    seen = page(env.get("nowhere.test", "/some/where?x=1"))
    assert seen["service"] == "global-errors"
    # Sent as a request, not an error page: unchanged, and no X-Code.
    assert (seen["path"], seen["query"]) == ("/some/where", "x=1")
    assert "x-code" not in seen["headers"]
    assert seen["headers"]["host"] == "nowhere.test"


def test_unmatched_path_of_a_named_host_goes_to_the_default_backend_service(env: Env) -> None:
    # ingress-nginx: the host's "/" location has the global default backend.
    seen = page(env.get("plain.test", "/other"))
    assert (seen["service"], seen["path"]) == ("global-errors", "/other")
    assert page(env.get("plain.test", "/app/x"))["service"] == "web"


def test_unmatched_path_with_the_default_backend_annotation(env: Env) -> None:
    # As in ingress-nginx, the annotation's Service does not take the Ingress's
    # unmatched paths: they go to the global default backend, like any host's.
    seen = page(env.get("annot.test", "/elsewhere"))
    assert (seen["service"], seen["path"]) == ("global-errors", "/elsewhere")


# -- the default-backend annotation stands in for a Service without endpoints ----------------


@pytest.mark.parametrize(
    ("host", "target", "service", "port"),
    [
        ("standin.test", "/page?q=1", "empty", "80"),
        ("annot.test", "/empty/page?q=1", "empty", "80"),
        ("annot.test", "/missing/page?q=1", "nope", "http"),  # the Service does not exist
    ],
)
def test_rule_service_without_endpoints_is_served_by_the_annotation(
    env: Env, host: str, target: str, service: str, port: str
) -> None:
    r = env.get(host, target, "-H", "Accept: text/html", "-H", "X-Request-ID: rid-standin")
    seen = page(r)
    assert seen["service"] == "custom-errors"
    # The request itself, path unchanged, told why it came.
    assert seen["path"] + "?" + seen["query"] == target
    headers = seen["headers"]
    ingress_name = host.split(".")[0]
    assert headers["x-code"] == "503"
    assert headers["x-format"] == "text/html"
    assert headers["x-namespace"] == "default"
    assert headers["x-ingress-name"] == ingress_name
    assert headers["x-service-name"] == service
    assert headers["x-service-port"] == port
    assert headers["x-request-id"] == "rid-standin"
    assert "x-original-uri" not in headers


# -- custom-http-errors ---------------------------------------------------------------------


@pytest.mark.parametrize("code", [404, 503])
@pytest.mark.parametrize("protocol", ["HTTP/1.1", "HTTP/2"])
def test_custom_http_errors_from_the_upstream(env: Env, code: int, protocol: str) -> None:
    target = f"/app/_echo/status/{code}?a=b"
    args = ("-H", "Accept: application/json", "-H", "X-Request-ID: rid-1")
    r = (
        env.get("annot.test", target, *args)
        if protocol == "HTTP/1.1"
        else env.h2("annot.test", target, *args)
    )
    assert r.status == 200, str(r)  # the error page's own status, as error_page CODE = @named
    assert f"status {code}".encode() not in r.body  # the upstream's body is not passed on
    seen = r.json()
    # The annotation's Service serves the page; the URI is "/" with the query kept.
    assert (seen["service"], seen["path"], seen["query"]) == ("custom-errors", "/", "a=b")
    headers = seen["headers"]
    assert {h: headers.get(h) for h in ERROR_HEADERS} == {
        "x-code": str(code),
        "x-format": "application/json",
        "x-original-uri": target,
        "x-namespace": "default",
        "x-ingress-name": "annot",
        "x-service-name": "web",
        "x-service-port": "80",
        "x-request-id": "rid-1",
    }
    assert headers["host"].partition(":")[0] == "annot.test"  # with the port over HTTP/2
    assert seen["method"] == "GET"


def test_an_unlisted_status_passes_unchanged(env: Env) -> None:
    r = env.get("annot.test", "/app/_echo/status/500")
    assert r.status == 500 and b"custom-errors" not in r.body


def test_without_the_annotation_the_global_default_backend_serves_the_page(env: Env) -> None:
    seen = page(env.get("list.test", "/_echo/status/503"))
    assert (seen["service"], seen["headers"]["x-code"]) == ("global-errors", "503")
    assert seen["headers"]["x-ingress-name"] == "list"


def test_ingressd_own_answer_for_a_route_gets_the_error_page_too(env: Env) -> None:
    # ingressd's 503 for a Service without ready endpoints, as nginx's error_page
    # catches the balancer's 503.
    seen = page(env.get("noeps.test", "/x?y=1"))
    headers = seen["headers"]
    assert (seen["service"], seen["path"], seen["query"]) == ("global-errors", "/", "y=1")
    assert (headers["x-code"], headers["x-service-name"]) == ("503", "empty")
    assert headers["x-original-uri"] == "/x?y=1"


def test_disable_proxy_intercept_errors_passes_the_upstreams_answer(env: Env) -> None:
    """disable-proxy-intercept-errors: nginx's proxy_intercept_errors off. The
    upstream's own 503 reaches the client with its body; ingressd's own 503 (a
    Service without ready endpoints) still gets the error page, as nginx's
    error_page still catches the balancer's."""
    r = env.get("passthru.test", "/app/_echo/status/503")
    assert r.status == 503, str(r)
    assert dict(r.headers).get("X-Echo-Service") == "web"  # the upstream's own answer
    seen = page(env.get("passthru.test", "/empty/x"))
    assert (seen["service"], seen["headers"]["x-code"]) == ("global-errors", "503")


def test_the_global_list_applies_to_routes_without_the_annotation(env: Env) -> None:
    seen = page(env.get("global.test", "/_echo/status/418"))
    assert (seen["service"], seen["headers"]["x-code"]) == ("global-errors", "418")
    # Not listed globally: passes.
    assert env.get("global.test", "/_echo/status/503").status == 503
    # An annotation's list replaces the global one (nginx inherits error_page only
    # where a location sets none): 418 passes on annot.test.
    assert env.get("annot.test", "/app/_echo/status/418").status == 418


def test_the_error_page_is_fetched_without_the_request_body(env: Env) -> None:
    body = "x" * 100_000
    r = env.get("annot.test", "/app/_echo/status/503", "-X", "POST", "--data-binary", body)
    seen = page(r)
    assert (seen["method"], seen["body_bytes"]) == ("POST", 0)
    assert seen["headers"]["x-code"] == "503"
    assert "content-length" not in seen["headers"]


def test_an_error_page_that_errors_is_not_intercepted_again(env: Env) -> None:
    before = env.broken.requests
    r = env.get("loop.test", "/_echo/status/503")
    # The error backend's own 503 reaches the client: one fetch, never a loop.
    assert r.status == 503 and r.body == b"503 from a faulty upstream\n", str(r)
    assert env.broken.requests == before + 1


def test_an_error_backend_that_cannot_be_reached_answers_502(env: Env) -> None:
    r = env.get("down.test", "/_echo/status/503")
    assert (r.status, r.body) == (502, nginx_page(502)), str(r)
    env.proxy.wait_for_log("down-errors")
    assert env.get("down.test", "/fine").status == 200


# -- no default backend ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bare(
    tmp_path_factory: pytest.TempPathFactory, upstream_loop: BackgroundLoop
) -> Iterator[Ingressd]:
    """Custom errors without --default-backend-service."""
    echo = EchoServers(upstream_loop, ["web", "custom-errors"])
    objs = [
        ingress_class(),
        *echo_backend("web", echo["web"]),
        *echo_backend("empty", echo["web"], ready=False),
        *echo_backend("gone", echo["custom-errors"], ready=False),
        annotated("list", "list.test", [path("/", "web")], custom_http_errors="503"),
        annotated(
            "nostand",
            "nostand.test",
            [path("/", "empty")],
            default_backend="gone",  # no ready endpoint either
        ),
    ]
    work = tmp_path_factory.mktemp("e2e-no-default-backend")
    try:
        with serving(work, objs) as proxy:
            yield proxy
    finally:
        echo.close()


def test_without_a_default_backend_a_listed_status_becomes_404(bare: Ingressd) -> None:
    # ingress-nginx's error location then proxies to its internal default server,
    # which answers 404 to everything.
    r = bare.get("list.test", "/_echo/status/503", check=False)
    assert (r.status, r.body) == (404, nginx_page(404)), str(r)
    bare.wait_for_log("no default backend")
    assert bare.get("list.test", "/_echo/status/500", check=False).status == 500


def test_without_a_default_backend_unmatched_hosts_get_404(bare: Ingressd) -> None:
    r = bare.get("nowhere.test", "/", check=False)
    assert (r.status, r.body) == (404, nginx_page(404))
    bare.wait_for_log("404 Not Found: no route for host nowhere.test")


def test_an_annotation_service_without_endpoints_does_not_stand_in(bare: Ingressd) -> None:
    r = bare.get("nostand.test", "/", check=False)
    assert (r.status, r.body) == (503, nginx_page(503)), str(r)
    bare.wait_for_log("no ready endpoints")


def test_a_default_backend_service_without_endpoints_serves_404_and_is_reported(
    tmp_path: Path, upstream_loop: BackgroundLoop
) -> None:
    echo = EchoServers(upstream_loop, ["errors"])
    objs = [ingress_class(), *echo_backend("errors", echo["errors"], ready=False)]
    args = ["--default-backend-service", "default/errors"]
    try:
        with serving(tmp_path, objs, args) as proxy:
            r = proxy.get("nowhere.test", "/", check=False)
            assert (r.status, r.body) == (404, nginx_page(404)), str(r)
            problems = proxy.curl(f"http://{LOCALHOST}:{proxy.admin_port}/problems").text
            assert "--default-backend-service default/errors" in problems
            assert "has no ready endpoints" in problems
            # Endpoints become ready: served, and the problem is gone (live).
            proxy.update({"all.yaml": [ingress_class(), *echo_backend("errors", echo["errors"])]})
            proxy.wait_for(
                lambda: proxy.get("nowhere.test", "/", check=False).status == 200,
                what="the default backend serving",
            )
            problems = proxy.curl(f"http://{LOCALHOST}:{proxy.admin_port}/problems").text
            assert "default/errors" not in problems
    finally:
        echo.close()


def test_a_large_upload_answered_early_still_gets_the_error_page(env: Env, tmp_path: Path) -> None:
    # The upstream answers 503 without reading the 8 MiB body; ingressd may have
    # paused the upload for it. The page is fetched at once, the rest of the body
    # is read and dropped, and the connection closed after the answer.
    upload = tmp_path / "upload"
    upload.write_bytes(b"u" * (8 << 20))
    r = env.proxy.curl(
        "-H",
        "Host: annot.test",
        "--data-binary",
        f"@{upload}",
        env.proxy.http_url("/app/_echo/status/503"),
        max_time=20,
        check=False,
    )
    seen = page(r)
    assert (seen["service"], seen["body_bytes"]) == ("custom-errors", 0)
    assert seen["headers"]["x-code"] == "503"


# -- cluster mode ---------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_cluster_mode_follows_the_default_backend_service(
    tmp_path: Path, upstream_loop: BackgroundLoop
) -> None:
    """Against the API test server: the Service and its EndpointSlices are watched like
    any other, so the default backend starts serving when its endpoint becomes ready."""
    echo = EchoServers(upstream_loop, ["web", "errors"])
    server = KubeApiServer(tokens={"token-a": "controller-a"}, bookmark_interval=0.5)
    server.start()
    proxy = None
    try:
        for obj in [
            ingress_class(),
            *echo_backend("web", echo["web"]),
            *echo_backend("errors", echo["errors"], ready=False),
            annotated("list", "list.test", [path("/", "web")], custom_http_errors="503"),
        ]:
            server.apply(obj)
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig", "token-a", namespace="x")
        proxy = Ingressd(
            None,
            tmp_path / "ingressd.log",
            extra_args=[
                "--kubeconfig",
                str(kubeconfig),
                "--publish-status-address",
                "192.0.2.10",
                "--default-backend-service",
                "default/errors",
            ],
        ).start()
        assert proxy.get("nowhere.test", "/", check=False).status == 404
        assert proxy.get("list.test", "/_echo/status/503", check=False).status == 404
        server.apply(echo_backend("errors", echo["errors"])[1])  # its endpoint is ready now
        proxy.wait_for(
            lambda: proxy.get("nowhere.test", "/", check=False).status == 200,  # type: ignore[union-attr]
            what="the default backend serving",
        )
        assert page(proxy.get("nowhere.test", "/x", check=False))["service"] == "errors"
        seen = page(proxy.get("list.test", "/_echo/status/503", check=False))
        assert (seen["service"], seen["headers"]["x-code"]) == ("errors", "503")
    finally:
        if proxy is not None:
            proxy.stop()
        server.stop()
        echo.close()


# -- the ConfigMap's custom-http-errors key ---------------------------------------------------


def test_the_configmap_key_lists_the_statuses_live(
    tmp_path: Path, upstream_loop: BackgroundLoop
) -> None:
    """custom-http-errors in the controller ConfigMap: the global list, as the flag
    sets it; a change applies without a restart; an annotation's list still wins."""
    echo = EchoServers(upstream_loop, ["web", "errors"])

    def controller(codes: str) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "ingressd-controller", "namespace": "default"},
            "data": {"custom-http-errors": codes},
        }

    objs = [
        ingress_class(),
        *echo_backend("web", echo["web"]),
        *echo_backend("errors", echo["errors"]),
        ingress("plain", [rule("plain.test", path("/", "web"))]),
        annotated("own", "own.test", [path("/", "web")], custom_http_errors="502"),
    ]
    args = [
        "--default-backend-service",
        "default/errors",
        "--configmap",
        "default/ingressd-controller",
    ]
    try:
        with serving(tmp_path, [*objs, controller("404, 503")], args) as proxy:
            r = proxy.get("plain.test", "/_echo/status/503", check=False)
            got = page(r)
            assert got["headers"]["x-code"] == "503" and got["path"] == "/", got
            assert proxy.get("plain.test", "/_echo/status/500", check=False).status == 500
            # An Ingress's own list replaces the global one.
            assert proxy.get("own.test", "/_echo/status/503", check=False).status == 503
            proxy.update({"all.yaml": [*objs, controller("500")]})

            def applied() -> bool:
                r = proxy.get("plain.test", "/_echo/status/500", check=False)
                return r.status == 200 and r.json()["headers"]["x-code"] == "500"

            wait_for(applied, 10, what="the ConfigMap's new list applied")
            assert proxy.get("plain.test", "/_echo/status/503", check=False).status == 503
            # A bad value is reported, and its default (none) used.
            proxy.update({"all.yaml": [*objs, controller("302")]})
            wait_for(
                lambda: proxy.get("plain.test", "/_echo/status/500", check=False).status == 500,
                10,
                what="the bad value's default applied",
            )
            problems = curl(
                f"http://{LOCALHOST}:{proxy.admin_port}/problems", check=False
            ).body.decode()
            assert "custom-http-errors" in problems, problems
    finally:
        echo.close()
