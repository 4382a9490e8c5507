"""End to end: deploy/example/ behind ingressd, as the README's "Try it" shows it.

The objects are what ``kubectl apply -k deploy/`` and ``kubectl apply -k
deploy/example/`` would send, plus ``examples/tls-secret.yaml`` (the demo
certificate) and the EndpointSlice a cluster would write for the echo Service,
pointing at the same echo server the example's Deployment runs, started
locally. ingressd serves them in manifest mode; the requests are the README's
curl lines, with the certificate checked rather than ``-k``.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml
from deploy_objects import DEPLOY, EXAMPLE, container, find, of_kind, option, render
from e2e_helpers import LOCALHOST, REPO_ROOT, EchoServers, Ingressd, IngressdFactory
from k8s_objects import endpoint_slice

pytestmark = pytest.mark.timeout(60)

HOST = "echo.demo.test"


@pytest.fixture
def served(ingressd: IngressdFactory, echo_servers: EchoServers) -> Ingressd:
    example = render(EXAMPLE)
    app = container(find(example, "Deployment", "echo"), "echo")
    service = find(example, "Service", "echo")
    [port] = service["spec"]["ports"]
    name = option(app["args"], "--name")
    assert name
    upstream = echo_servers.start(name)
    endpoints = endpoint_slice(
        service["metadata"]["name"],
        [LOCALHOST],
        upstream,
        port_name=port["name"],
        namespace=service["metadata"]["namespace"],
    )
    return ingressd(
        {
            "deploy.yaml": render(DEPLOY),
            "example.yaml": [*example, endpoints],
            "tls-secret.yaml": (REPO_ROOT / "examples" / "tls-secret.yaml").read_text(),
        }
    )


@pytest.fixture
def cafile(tmp_path: Path) -> str:
    secret = yaml.safe_load((REPO_ROOT / "examples" / "tls-secret.yaml").read_text())
    path = tmp_path / "demo-ca.pem"
    path.write_bytes(base64.b64decode(secret["data"]["tls.crt"]))
    return str(path)


def https(ing: Ingressd, cafile: str, target: str) -> dict:
    # curl --cacert demo-ca.pem --resolve echo.demo.test:443:ADDRESS https://echo.demo.test/...
    r = ing.curl("--cacert", cafile, *ing.resolve(HOST), ing.https_url(HOST, target))
    assert r.status == 200, r
    return r.json()


def test_the_example_host_is_in_its_ingresses() -> None:
    hosts = {r["host"] for i in of_kind(render(EXAMPLE), "Ingress") for r in i["spec"]["rules"]}
    assert hosts == {HOST}


def test_rewrite_path_reaches_the_app_rewritten(served: Ingressd, cafile: str) -> None:
    got = https(served, cafile, "/api/hello?x=1")  # the README's curl lines
    assert (got["service"], got["path"], got["query"]) == ("echo", "/hello", "x=1")
    assert got["headers"]["x-forwarded-proto"] == "https"
    assert https(served, cafile, "/api")["path"] == "/"
    assert https(served, cafile, "/API/a/b")["path"] == "/a/b"  # regex paths ignore case


def test_prefix_path_reaches_the_app_unchanged(served: Ingressd, cafile: str) -> None:
    assert https(served, cafile, "/hello")["path"] == "/hello"
    assert https(served, cafile, "/")["path"] == "/"
    # /api(/|$) needs a slash or the end after "api": /apix is the Prefix route's.
    assert https(served, cafile, "/apix/1")["path"] == "/apix/1"


def test_plain_http_is_redirected_to_https(served: Ingressd) -> None:
    r = served.get(HOST, "/api/hostname")
    assert r.status == 308
    assert r.header("Location") == f"https://{HOST}:{served.https_port}/api/hostname"


def test_nothing_is_reported(served: Ingressd) -> None:
    r = served.curl(f"http://{LOCALHOST}:{served.admin_port}/problems")
    assert r.json()["problems"] == []
    assert "rejected" not in served.log()
