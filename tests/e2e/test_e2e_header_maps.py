"""End to end: ConfigMaps of headers in manifest mode, checked with curl.

One ingressd (``--configmap ingressd/controller``) and one set of echo upstreams
serve every case: the controller ConfigMap's ``add-headers`` and
``proxy-set-headers``, the ``custom-headers`` annotation under
``global-allowed-response-headers``, and ``auth-proxy-set-headers`` with a real
auth service recording its subrequests. Refused entries and missing maps are
reported at /problems; a missing auth map fails closed. Cluster mode (the maps
watched by name, changed live) is in test_e2e_cluster.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e_helpers import (
    LOCALHOST,
    BackgroundLoop,
    CurlResult,
    EchoServers,
    Ingressd,
    RecordingService,
    annotated,
    backends,
    curl,
    wait_for,
)

from ingressd.echo import SERVICE_HEADER
from ingressd.model.objects import Obj

pytestmark = pytest.mark.timeout(60)

A = "nginx.ingress.kubernetes.io/"


def configmap(namespace: str, name: str, data: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }


CONTROLLER = configmap(
    "ingressd",
    "controller",
    {
        "add-headers": "ingressd/response-headers",
        "proxy-set-headers": "ingressd/request-headers",
        "global-allowed-response-headers": "X-Custom, X-Frame-Options, X-Echo-Service, X-Literal",
    },
)
RESPONSE = {
    "X-Frame-Options": "DENY",
    "X-Global": "yes",
    "Connection": "close",  # refused: hop-by-hop
    "X-Seen-Host": "$host",  # a variable: rendered per request
    "X-Msec": "t=${msec}",  # refused: a variable ingressd does not know
}
REQUEST = {
    "X-Env": "prod",
    "X-Client": "ip=$remote_addr",
    "X-Cleared": "",  # an empty value: the client's header is not sent
    "X-Forwarded-Proto": "https",  # refused: ingressd sets it from the connection
    "Content-Length": "5",  # refused: framing
}
CUSTOM = {
    "X-Custom": "42",
    "X-Frame-Options": "SAMEORIGIN",  # replaces add-headers' value on this Ingress
    "X-Echo-Service": "custom",  # replaces the upstream's
    "X-Literal": "$remote_addr",  # custom-headers keeps "$" literal, as ingress-nginx
}


class AuthService(RecordingService):
    """Allows every subrequest and records its headers."""


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
    auth = f"http://{LOCALHOST}:{auth_service.port}/check"
    objs = [
        CONTROLLER,
        configmap("ingressd", "request-headers", REQUEST),
        configmap("default", "custom", CUSTOM),
        configmap("default", "not-allowed", {"X-Custom": "1", "X-Internal": "secret"}),
        configmap("default", "bad-name", {"X Custom": "1"}),
        configmap("default", "auth-headers", {"X-Auth-Env": "prod", "X-Seen-Host": "$host"}),
        configmap("default", "auth-forbidden", {"Transfer-Encoding": "chunked"}),
        annotated("plain.test"),
        annotated("custom.test", custom_headers="custom"),
        annotated("qualified.test", custom_headers="default/custom"),
        annotated("notallowed.test", custom_headers="default/not-allowed"),
        annotated("badname.test", custom_headers="bad-name"),
        annotated("missing.test", custom_headers="nowhere"),
        annotated("crossns.test", custom_headers="ingressd/response-headers"),
        annotated("auth.test", auth_url=auth, auth_proxy_set_headers="auth-headers"),
        annotated("authmissing.test", auth_url=auth, auth_proxy_set_headers="nowhere"),
        annotated("authforbidden.test", auth_url=auth, auth_proxy_set_headers="auth-forbidden"),
    ]
    workdir = tmp_path_factory.mktemp("e2e-header-maps")
    echo = EchoServers(upstream_loop, ["web", "api"])
    try:
        proc = Ingressd(
            workdir / "manifests",
            workdir / "ingressd.log",
            extra_args=["--configmap", "ingressd/controller"],
        )
        # The add-headers map in a file of its own: the live case rewrites it.
        response = [configmap("ingressd", "response-headers", RESPONSE)]
        proc.update({"all.yaml": [*backends(echo), *objs], "response.yaml": response})
        try:
            yield proc.start()
        finally:
            proc.stop()
    finally:
        echo.close()


def problems(ing: Ingressd) -> str:
    return curl(f"http://{LOCALHOST}:{ing.admin_port}/problems", check=False).body.decode()


def header(r: CurlResult, name: str) -> list[str]:
    return r.header_values(name)


def global_header(proc: Ingressd) -> list[str]:
    return header(proc.get("plain.test", "/", check=False), "X-Global")


# -- add-headers, proxy-set-headers ----------------------------------------------------------


def test_add_headers_reach_every_route_and_proxy_set_headers_every_upstream(
    proxy: Ingressd,
) -> None:
    r = proxy.get("plain.test", "/", "-H", "X-Env: client", "-H", "X-Cleared: client")
    assert r.status == 200
    assert header(r, "X-Frame-Options") == ["DENY"]
    assert header(r, "X-Global") == ["yes"]
    assert header(r, SERVICE_HEADER) == ["web"]  # the upstream's own headers stay
    upstream = r.json()["headers"]
    assert upstream["x-env"] == "prod"  # replaces the client's
    assert "x-cleared" not in upstream  # an empty value removes it
    assert upstream["x-forwarded-proto"] == "http"  # the refused entry is not applied
    assert upstream["x-client"] == "ip=127.0.0.1"
    assert header(r, "X-Seen-Host") == ["plain.test"]
    assert header(r, "X-Msec") == []
    assert r.json()["body_bytes"] == 0


def test_add_headers_are_on_ingressd_own_answers_too(proxy: Ingressd) -> None:
    """more_set_headers at http level runs on every status, nginx's own answers included."""
    r = proxy.get("missing.test", "/", check=False)
    assert r.status == 503
    assert header(r, "X-Global") == ["yes"]
    assert header(r, "X-Seen-Host") == ["missing.test"]
    # No route at all: ingressd's own 404 gets the literal ones, as nginx's default server.
    r = proxy.get("nowhere.test", "/", check=False)
    assert r.status == 404
    assert header(r, "X-Global") == ["yes"]


def test_refused_entries_are_reported_with_their_reason(proxy: Ingressd) -> None:
    text = problems(proxy)
    assert "header 'Connection' is left out: it must not be set: hop-by-hop" in text
    assert "header 'X-Msec' is left out: $msec is not a variable ingressd knows" in text
    assert "header 'X-Forwarded-Proto' is left out: it must not be set" in text
    assert "header 'Content-Length' is left out: it must not be set: framing" in text


# -- custom-headers --------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["custom.test", "qualified.test"])
def test_custom_headers_set_the_allowed_headers_over_the_upstream_and_add_headers(
    proxy: Ingressd, host: str
) -> None:
    r = proxy.get(host, "/")
    assert r.status == 200
    assert header(r, "X-Custom") == ["42"]
    assert header(r, "X-Frame-Options") == ["SAMEORIGIN"]
    assert header(r, SERVICE_HEADER) == ["custom"]
    assert header(r, "X-Literal") == ["$remote_addr"]
    assert header(r, "X-Global") == ["yes"]  # add-headers still apply


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("notallowed.test", "header 'X-Internal': it is not listed in the controller ConfigMap"),
        ("badname.test", "header 'X Custom': the name is not a header name"),
        ("missing.test", "custom-headers ConfigMap default/nowhere not found"),
        ("crossns.test", "is in another namespace than the Ingress (default)"),
    ],
)
def test_custom_headers_that_cannot_apply_deny_as_ingress_nginx(
    proxy: Ingressd, host: str, reason: str
) -> None:
    r = proxy.get(host, "/", check=False)
    assert r.status == 503
    assert header(r, "X-Custom") == []
    assert reason in problems(proxy)


# -- auth-proxy-set-headers ------------------------------------------------------------------


def test_auth_proxy_set_headers_reach_the_auth_subrequest(
    proxy: Ingressd, auth_service: AuthService
) -> None:
    r = proxy.get("auth.test", "/private", "-H", "X-Auth-Env: forged")
    assert r.status == 200
    sub = auth_service.last()
    assert sub["x-auth-env"] == "prod"  # replaces the client's
    assert sub["x-seen-host"] == "auth.test"  # an auth-url variable, rendered
    assert r.json()["headers"]["x-auth-env"] == "forged"  # the upstream gets the client's


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("authmissing.test", "auth-proxy-set-headers ConfigMap default/nowhere not found"),
        ("authforbidden.test", "header 'Transfer-Encoding': it must not be set: framing"),
    ],
)
def test_auth_proxy_set_headers_that_cannot_apply_fail_closed(
    proxy: Ingressd, auth_service: AuthService, host: str, reason: str
) -> None:
    before = auth_service.count()
    r = proxy.get(host, "/", check=False)
    assert r.status == 503
    assert auth_service.count() == before  # never asked, never forwarded
    assert reason in problems(proxy)


# -- live -------------------------------------------------------------------------------------


def test_a_changed_map_applies_live(proxy: Ingressd) -> None:
    """Last: it edits the map the other cases read."""
    changed = configmap("ingressd", "response-headers", {**RESPONSE, "X-Global": "changed"})
    proxy.update({"response.yaml": [changed]})
    wait_for(lambda: global_header(proxy) == ["changed"], 10, what="the new add-headers value")
    assert header(proxy.get("custom.test", "/"), "X-Global") == ["changed"]
    proxy.update({"response.yaml": None})  # gone: served without, reported
    wait_for(lambda: global_header(proxy) == [], 10, what="add-headers gone")
    assert "add-headers: ConfigMap ingressd/response-headers not found" in problems(proxy)
