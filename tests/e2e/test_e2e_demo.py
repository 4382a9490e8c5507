"""End to end: ``ingressd demo`` and the curl lines of README.md and examples/README.md.

The demo runs from the repository root on a copy of ``./examples`` whose
EndpointSlices name free ports instead of 18081-18083 (the ports
examples/services.yaml promises, checked here but not bound: tests use free
ports only); it starts its echo upstreams there, and ingressd gets free ports.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from e2e_helpers import (
    REPO_ROOT,
    CurlResult,
    Ingressd,
    examples_on_free_ports,
    nginx_page,
    websocket_upgrade_args,
)

from ingressd.demo import demo_endpoints

EXAMPLES = REPO_ROOT / "examples"
DEMO_PORTS = [18081, 18082, 18083]
# The demo's upstreams on free ports in the test (port -> the one used here),
# chosen when the demo starts.
UPSTREAM_PORTS: dict[int, int] = {}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, curl_binary: str) -> Iterator[Ingressd]:
    upstream_ports = sorted({port for _, port, _ in demo_endpoints(EXAMPLES)})
    assert upstream_ports == DEMO_PORTS  # what examples/README.md promises
    work = tmp_path_factory.mktemp("e2e-demo")
    folder, ports = examples_on_free_ports(work)
    UPSTREAM_PORTS.update(ports)
    proc = Ingressd(folder, work / "ingressd-demo.log", command="demo", cwd=REPO_ROOT)
    try:
        yield proc.start()
    finally:
        proc.stop()


def https(demo: Ingressd, host: str, target: str, *args: str) -> CurlResult:
    """``curl -k --resolve HOST:PORT:127.0.0.1 https://HOST:PORT/...``, as in the README."""
    return demo.curl("-k", *demo.resolve(host), *args, demo.https_url(host, target))


def test_demo_starts_its_upstreams(demo: Ingressd) -> None:
    line = demo.wait_for_log("demo upstreams: ")
    web, api, blog = (UPSTREAM_PORTS[p] for p in DEMO_PORTS)
    # Listed by port: with free ports the order is theirs.
    listed = line.split("demo upstreams: ", 1)[1].split(", ")
    assert sorted(listed) == sorted(
        [f"web@127.0.0.1:{web}", f"api@127.0.0.1:{api}", f"blog@127.0.0.1:{blog}"]
    )
    assert "rejected:" not in demo.log()  # the bundled examples are clean


def test_plain_http_to_tls_host_redirects(demo: Ingressd) -> None:
    # curl -i -H 'Host: demo.test' http://127.0.0.1:8080/
    r = demo.curl("-i", "-H", "Host: demo.test", demo.http_url("/"))
    assert r.status == 308
    # ingress-nginx drops the trailing "/" (lua_ingress.lua): "/" leaves none
    assert r.header("Location") == f"https://demo.test:{demo.https_port}"
    assert r.body.startswith(b"HTTP/1.1 308 Permanent Redirect\r\n")  # -i puts the head first


def test_https_root_is_served_by_web(demo: Ingressd) -> None:
    # curl -k --resolve demo.test:8443:127.0.0.1 https://demo.test:8443/
    r = https(demo, "demo.test", "/")
    got = r.json()
    assert (r.status, got["service"], got["path"]) == (200, "web", "/")
    assert got["headers"]["x-forwarded-proto"] == "https"


def test_https_with_the_demo_certificate(demo: Ingressd, tmp_path: Path) -> None:
    secret = yaml.safe_load((EXAMPLES / "tls-secret.yaml").read_text())
    cafile = tmp_path / "demo-ca.pem"
    cafile.write_bytes(base64.b64decode(secret["data"]["tls.crt"]))
    r = demo.curl(
        "--cacert", str(cafile), *demo.resolve("demo.test"), demo.https_url("demo.test", "/")
    )
    assert (r.status, r.json()["service"]) == (200, "web")


def test_https_api_prefix_and_exact_healthz(demo: Ingressd) -> None:
    users = https(demo, "demo.test", "/api/users").json()
    healthz = https(demo, "demo.test", "/healthz").json()
    below = https(demo, "demo.test", "/healthz/x").json()  # Exact: not below it
    assert (users["service"], users["path"]) == ("api", "/api/users")
    assert (healthz["service"], healthz["path"]) == ("api", "/healthz")
    assert (below["service"], below["path"]) == ("web", "/healthz/x")


def test_blog_rewrite(demo: Ingressd) -> None:
    # curl -H 'Host: blog.demo.test' http://127.0.0.1:8080/blog/posts/1
    r = demo.get("blog.demo.test", "/blog/posts/1")
    got = r.json()
    assert (r.status, got["service"], got["path"]) == (200, "blog", "/posts/1")
    assert demo.get("blog.demo.test", "/blog").json()["path"] == "/"


def test_wildcard_host(demo: Ingressd) -> None:
    # curl -H 'Host: one.apps.demo.test' http://127.0.0.1:8080/hello
    got = demo.get("one.apps.demo.test", "/hello").json()
    assert (got["service"], got["path"]) == ("web", "/hello")
    assert demo.get("a.b.apps.demo.test", "/hello", check=False).status == 404


def test_plain_host_and_websocket_upgrade(demo: Ingressd) -> None:
    # curl -H 'Host: plain.demo.test' http://127.0.0.1:8080/
    assert demo.get("plain.demo.test", "/").json()["service"] == "api"
    # curl -i -N ... -H 'Upgrade: websocket' ... http://127.0.0.1:8080/ws
    r = demo.curl(
        "-i",
        "-N",
        "-H",
        "Host: plain.demo.test",
        *websocket_upgrade_args(),
        demo.http_url("/ws"),
        max_time=1,
        check=False,  # the WebSocket stays open until curl gives up
    )
    assert r.status == 101, r
    assert r.header("Sec-WebSocket-Accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 1.3


def test_unknown_host_is_a_clear_404(demo: Ingressd) -> None:
    # curl -i -H 'Host: nowhere.test' http://127.0.0.1:8080/   (README.md)
    r = demo.curl("-i", "-H", "Host: nowhere.test", demo.http_url("/"))
    assert r.status == 404
    assert r.body.endswith(b"\r\n\r\n" + nginx_page(404))
    demo.wait_for_log("404 Not Found: no route for host nowhere.test path /")


def test_echo_status_helper(demo: Ingressd) -> None:
    # curl -i -H 'Host: plain.demo.test' http://127.0.0.1:8080/_echo/status/418
    r = demo.get("plain.demo.test", "/_echo/status/418")
    assert r.status == 418
    assert r.header("X-Echo-Service") == "api"
    assert re.fullmatch(r"418 I'?m a Teapot\n", r.text, re.IGNORECASE), r.text
