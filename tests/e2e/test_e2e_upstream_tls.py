"""End to end: backend-protocol, proxy-ssl-* and service-upstream, through the proxy with curl.

One ingressd serves one Ingress per case (each on its own host) in front of a
plain echo upstream, a TLS echo upstream (certificate for upstream.test and
127.0.0.1) and a TLS echo upstream that requires a client certificate.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from e2e_helpers import (
    LOCALHOST,
    BackgroundLoop,
    CurlResult,
    EchoServers,
    Ingressd,
    echo_backend,
    free_port,
    nginx_page,
)
from k8s_objects import endpoint_slice, ingress, ingress_class, path, rule, service
from upstream_certs import issue, secret

from ingressd.echo import EchoServer, start_echo
from ingressd.model.objects import Obj
from ingressd.policy.tls import TLS_SECRET_TYPE, self_signed, server_context

A = "nginx.ingress.kubernetes.io/"

UPSTREAM_CERT = self_signed(
    common_name="upstream.test", dns_names=("upstream.test",), ip_addresses=("127.0.0.1",)
)
OTHER_CA = self_signed(common_name="someone else", dns_names=("upstream.test",))
CLIENT = issue("ingressd client", client=True)


def annotated(host: str, service_name: str, port: int = 80, **annotations: str) -> Obj:
    return ingress(
        host.split(".")[0],
        [rule(host, path("/", service_name, port))],
        annotations={A + k.replace("_", "-"): v for k, v in annotations.items()},
    )


HTTPS = {"backend_protocol": "HTTPS"}
VERIFY = {**HTTPS, "proxy_ssl_secret": "default/upstream-ca", "proxy_ssl_verify": "on"}


@dataclass
class Setup:
    proxy: Ingressd
    tls_port: int
    sni: list[str | None]  # server names the TLS echo was asked for, one per handshake

    def get(self, host: str, path: str = "/") -> CurlResult:
        return self.proxy.get(host, path, check=False)

    def get_https(self, host: str, path: str = "/") -> CurlResult:
        proxy = self.proxy
        return proxy.curl(*proxy.resolve(host), "-k", proxy.https_url(host, path), check=False)


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, upstream_loop: BackgroundLoop, curl_binary: str
) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("e2e-upstream-tls")
    echo = EchoServers(upstream_loop, ["web"])
    sni: list[str | None] = []
    tls_ctx = server_context(*UPSTREAM_CERT)
    tls_ctx.sni_callback = lambda _obj, name, _ctx: sni.append(name)  # type: ignore[assignment,return-value]
    mtls_ctx = server_context(*UPSTREAM_CERT)
    mtls_ctx.verify_mode = ssl.CERT_REQUIRED
    mtls_ctx.load_verify_locations(cadata=CLIENT.cert_pem.decode())
    servers: list[EchoServer] = []
    try:
        for name, ctx in (("tlsecho", tls_ctx), ("mtls", mtls_ctx)):
            servers.append(upstream_loop.run(start_echo(LOCALHOST, 0, name, ssl_context=ctx)))
        tls_port, mtls_port = (s.port for s in servers)
        web_port, dead_port = echo["web"], free_port()
        # service-upstream: the ClusterIP (127.0.0.1) and Service port reach the
        # echo; the EndpointSlice points at a port nobody listens on.
        cip = service("cip", [web_port])
        cip["spec"]["clusterIP"] = LOCALHOST
        objects = [
            ingress_class(),
            *echo_backend("web", web_port),
            service("tlsecho", [443]),
            endpoint_slice("tlsecho", [LOCALHOST], tls_port),
            service("mtls", [443]),
            endpoint_slice("mtls", [LOCALHOST], mtls_port),
            cip,
            endpoint_slice("cip", [LOCALHOST], dead_port),
            secret("upstream-ca", ca_crt=UPSTREAM_CERT[0]),
            secret("wrong-ca", ca_crt=OTHER_CA[0]),
            secret(
                "client",
                secret_type=TLS_SECRET_TYPE,
                tls_crt=CLIENT.cert_pem,
                tls_key=CLIENT.key_pem,
            ),
            annotated("https.test", "tlsecho", 443, **HTTPS),
            annotated(
                "verify.test",
                "tlsecho",
                443,
                **VERIFY,
                proxy_ssl_name="upstream.test",
                proxy_ssl_server_name="on",
            ),
            annotated("verifyip.test", "tlsecho", 443, **VERIFY),
            annotated(
                "wrongca.test",
                "tlsecho",
                443,
                **{**VERIFY, "proxy_ssl_secret": "wrong-ca"},
                proxy_ssl_name="upstream.test",
            ),
            annotated("wrongname.test", "tlsecho", 443, **VERIFY, proxy_ssl_name="other.test"),
            annotated("mtls.test", "mtls", 443, **HTTPS, proxy_ssl_secret="client"),
            annotated("nocert.test", "mtls", 443, **HTTPS),
            annotated("plain.test", "tlsecho", 443),
            annotated("auto.test", "web", backend_protocol="auto_http"),
            annotated("autotls.test", "tlsecho", 443, backend_protocol="AUTO_HTTP"),
            annotated("grpc.test", "web", backend_protocol="GRPC"),
            annotated("nosecret.test", "tlsecho", 443, **HTTPS, proxy_ssl_secret="missing"),
            annotated("cip.test", "cip", web_port, service_upstream="true"),
            annotated("endpoints.test", "cip", web_port),
        ]
        proc = Ingressd(workdir / "manifests", workdir / "ingressd.log")
        proc.update({"all.yaml": objects})
        try:
            yield Setup(proc.start(), tls_port, sni)
        finally:
            proc.stop()
    finally:
        for server in servers:
            upstream_loop.run(server.close(), timeout=10)
        echo.close()


def test_https_to_a_tls_upstream_without_verification(setup: Setup) -> None:
    r = setup.get("https.test", "/hello?x=1")
    assert r.status == 200, r
    got = r.json()
    assert (got["service"], got["path"], got["query"]) == ("tlsecho", "/hello", "x=1")
    assert got["headers"]["host"] == "https.test"


def test_plain_and_tls_connections_to_one_endpoint_never_mix(setup: Setup) -> None:
    # A TLS connection to the echo is now pooled; the plain-HTTP route to the
    # same address must open its own, and the TLS server answers garbage to it.
    assert setup.get("https.test").status == 200
    r = setup.get("plain.test")
    assert r.status == 502, r
    assert r.body == nginx_page(502)
    setup.proxy.wait_for_log("502 Bad Gateway: default/tlsecho:443")
    assert setup.get("https.test").status == 200


def test_verification_with_the_right_ca_and_name(setup: Setup) -> None:
    r = setup.get("verify.test")
    assert (r.status, r.json()["service"]) == (200, "tlsecho")
    # proxy-ssl-server-name: on sends proxy-ssl-name as SNI; other routes send none.
    assert "upstream.test" in setup.sni and None in setup.sni
    assert set(setup.sni) <= {"upstream.test", None}
    # Without proxy-ssl-name the endpoint's address is verified (the IP SAN).
    assert setup.get("verifyip.test").status == 200


def test_verification_failures_answer_502_naming_tls(setup: Setup) -> None:
    # The client gets nginx's 502 page; the reason is in the log.
    r = setup.get("wrongca.test")
    assert (r.status, r.body) == (502, nginx_page(502)), r
    line = setup.proxy.wait_for_log("GET wrongca.test/: 502")
    assert f"TLS to upstream 127.0.0.1:{setup.tls_port} (default/tlsecho:443) failed" in line
    assert "certificate verify failed: self-signed certificate" in line
    r = setup.get("wrongname.test")
    assert r.status == 502, r
    line = setup.proxy.wait_for_log("GET wrongname.test/: 502")
    assert line.endswith(
        "failed: certificate verify failed: the certificate is not valid for 'other.test' "
        "(it names upstream.test, 127.0.0.1)"
    ), line


def test_mutual_tls_with_the_client_certificate_from_the_secret(setup: Setup) -> None:
    r = setup.get("mtls.test")
    assert (r.status, r.json()["service"]) == (200, "mtls")
    r = setup.get("nocert.test")
    assert r.status == 502, r
    # How a server refuses a missing client certificate varies (an alert, a close
    # or a reset, depending on timing); each is a 502 that names the upstream.
    reasons = ("TLS to upstream failed", "closed before a response", "Connection reset")
    line = setup.proxy.wait_for_log("GET nocert.test/: 502")
    assert any(reason in line for reason in reasons), line
    assert "default/mtls:443" in line


def test_auto_http_follows_the_clients_scheme(setup: Setup) -> None:
    r = setup.get("auto.test")
    assert (r.status, r.json()["service"]) == (200, "web")
    assert r.json()["headers"]["x-forwarded-proto"] == "http"
    # Over TLS, TLS to the upstream: the plain echo cannot answer that…
    r = setup.get_https("auto.test")
    assert r.status == 502, r
    setup.proxy.wait_for(
        lambda: any(
            "GET auto.test:" in line and "502 Bad Gateway: TLS to upstream" in line
            for line in setup.proxy.log().splitlines()
        ),
        what="the log's reason for the 502",
    )
    # … the TLS echo can, and only that way.
    r = setup.get_https("autotls.test")
    assert (r.status, r.json()["service"]) == (200, "tlsecho")
    assert setup.get("autotls.test").status == 502


def test_grpc_to_an_http1_upstream_answers_502_saying_so(setup: Setup) -> None:
    # GRPC is HTTP/2 with prior knowledge (test_e2e_grpc_upstream.py); an
    # upstream that only speaks HTTP/1.1 fails the connect, not a request.
    r = setup.get("grpc.test")
    assert r.status == 502
    line = setup.proxy.wait_for_log(
        f"502 Bad Gateway: cannot connect to default/web:80 ({LOCALHOST}:"
    )
    assert "the upstream does not speak HTTP/2" in line


def test_a_missing_proxy_ssl_secret_fails_closed_with_503(setup: Setup) -> None:
    r = setup.get("nosecret.test")
    assert (r.status, r.body) == (503, nginx_page(503))
    setup.proxy.wait_for_log("GET nosecret.test/: 503 Service Unavailable: proxy-ssl-secret")
    setup.proxy.wait_for_log("proxy-ssl-secret: Secret default/missing not found")


def test_service_upstream_goes_to_the_cluster_ip(setup: Setup) -> None:
    r = setup.get("cip.test", "/via-cluster-ip")
    assert r.status == 200, r
    assert (r.json()["service"], r.json()["path"]) == ("web", "/via-cluster-ip")
    # The same Service through its EndpointSlice reaches the dead port.
    r = setup.get("endpoints.test")
    assert r.status == 502, r
    setup.proxy.wait_for_log("GET endpoints.test/: 502 Bad Gateway: cannot connect")
