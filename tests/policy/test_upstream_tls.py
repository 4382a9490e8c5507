"""backend-protocol, proxy-ssl-* and service-upstream: parsing, building, the pool, checks."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from k8s_objects import (
    build,
    endpoint_slice,
    ingress,
    ingress_class,
    path,
    request,
    rule,
    service,
    snapshot,
)
from upstream_certs import Issued, issue, secret, tls_server

from ingressd.check import check
from ingressd.model.backend import Endpoint
from ingressd.model.objects import Obj
from ingressd.model.policy import ProxySSL, UpstreamTLS
from ingressd.model.table import RouteTable
from ingressd.policy import annotations
from ingressd.policy.tls import TLS_SECRET_TYPE
from ingressd.policy.upstream_tls import (
    SecretMaterial,
    UpstreamTLSError,
    certificate_matches,
    upstream_tls,
)
from ingressd.proxy.upstream_h1 import UpstreamConnection, UpstreamPool, pool_key
from ingressd.routing.build import BuildOptions, resolve_service
from ingressd.routing.decide import Forward, Respond, decide

A = "nginx.ingress.kubernetes.io/"
HOST = "app.test"


def policy(**annotated: str) -> tuple[Any, list[str]]:
    return annotations.parse_policy({A + k.replace("_", "-"): v for k, v in annotated.items()})


def app(name: str = "app", host: str = HOST, service_name: str = "web", **annotated: str) -> Obj:
    return ingress(
        name,
        [rule(host, path("/", service_name))],
        annotations={A + k.replace("_", "-"): v for k, v in annotated.items()},
    )


def reasons(table: RouteTable) -> list[str]:
    return [p.reason for p in table.problems]


WEB = (service("web"), endpoint_slice("web", ["10.0.0.1"]))


# -- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("HTTP", "HTTP"), ("https", "HTTPS"), (" Auto_Http ", "AUTO_HTTP")],
)
def test_backend_protocol_values(value: str, expected: str) -> None:
    pol, messages = policy(backend_protocol=value)
    assert (pol.backend_protocol, messages, pol.fail_closed) == (expected, [], None)


def test_an_unknown_backend_protocol_is_reported_and_http_used() -> None:
    pol, messages = policy(backend_protocol="SPDY")
    assert pol.backend_protocol == "HTTP" and pol.fail_closed is None
    assert len(messages) == 1 and "'SPDY' is invalid" in messages[0]
    assert "HTTP is used" in messages[0]


@pytest.mark.parametrize(("value", "expected"), [("grpc", "GRPC"), (" GRPCS ", "GRPCS")])
def test_grpc_protocols_are_supported(value: str, expected: str) -> None:
    pol, messages = policy(backend_protocol=value)
    assert (pol.backend_protocol, messages, pol.fail_closed) == (expected, [], None)
    (verdict,) = annotations.classify({A + "backend-protocol": value})
    assert verdict.status == "supported"


@pytest.mark.parametrize("value", ["FCGI", "ajp"])
def test_protocols_ingressd_cannot_speak_fail_closed_with_502(value: str) -> None:
    pol, messages = policy(backend_protocol=value)
    protocol = value.upper()
    assert pol.fail_closed == (502, f"backend-protocol {protocol} is not supported by ingressd yet")
    assert messages == [
        f"annotation {A}backend-protocol={value!r}: protocol {protocol} is not supported "
        "by ingressd yet; its routes answer 502"
    ]
    (verdict,) = annotations.classify({A + "backend-protocol": value})
    assert verdict.status == "unsupported"


def test_proxy_ssl_annotations_are_parsed_beside_the_secret() -> None:
    pol, messages = policy(
        proxy_ssl_secret="default/up",
        proxy_ssl_verify="on",
        proxy_ssl_verify_depth="3",
        proxy_ssl_name="Upstream.Test",
        proxy_ssl_server_name="on",
    )
    assert messages == []
    assert pol.proxy_ssl == ProxySSL("default", "up", True, 3, "upstream.test", True)
    # A bare name means the Ingress's own namespace; everything else defaults as in ingress-nginx.
    pol, _ = policy(proxy_ssl_secret="up")
    assert pol.proxy_ssl == ProxySSL(None, "up", False, 1, None, False)
    pol, _ = policy(proxy_ssl_secret="up", proxy_ssl_name="10.0.0.7")
    assert pol.proxy_ssl.name == "10.0.0.7"


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        ("proxy-ssl-verify", "yes"),
        ("proxy-ssl-verify", "ON"),
        ("proxy-ssl-server-name", "true"),
        ("proxy-ssl-verify-depth", "0"),
        ("proxy-ssl-verify-depth", "two"),
        ("proxy-ssl-name", "$host"),
        ("proxy-ssl-name", "a b"),
    ],
)
def test_invalid_proxy_ssl_options_are_reported_and_the_default_kept(
    annotation: str, value: str
) -> None:
    pol, messages = annotations.parse_policy({A + "proxy-ssl-secret": "up", A + annotation: value})
    assert len(messages) == 1 and f"{annotation}={value!r} is invalid" in messages[0]
    assert pol.proxy_ssl == ProxySSL(None, "up")
    assert pol.fail_closed is None


@pytest.mark.parametrize("value", ["a/b/c", "Bad_Name", "", "ns/", "/name"])
def test_an_invalid_proxy_ssl_secret_fails_closed_with_503(value: str) -> None:
    pol, messages = policy(proxy_ssl_secret=value, proxy_ssl_verify="on")
    assert pol.fail_closed == (503, "invalid proxy-ssl-secret annotation")
    assert pol.proxy_ssl is None
    # Only the secret is reported: the routes answer 503 whatever the other options say.
    assert len(messages) == 1 and "its routes answer 503 until it is fixed" in messages[0]


def test_without_proxy_ssl_secret_the_other_options_are_ignored_and_reported() -> None:
    pol, messages = policy(
        backend_protocol="HTTPS", proxy_ssl_verify="on", proxy_ssl_name="up.test"
    )
    assert pol.proxy_ssl is None and pol.backend_protocol == "HTTPS"
    assert messages == [
        "proxy-ssl-verify has no effect without proxy-ssl-secret (ingress-nginx ignores it too)",
        "proxy-ssl-name has no effect without proxy-ssl-secret (ingress-nginx ignores it too)",
    ]


def test_service_upstream_is_a_bool() -> None:
    assert policy(service_upstream="true")[0].service_upstream is True
    pol, messages = policy(service_upstream="yes")
    assert pol.service_upstream is False and "is invalid" in messages[0]


# -- building ----------------------------------------------------------------------------

UPSTREAM = issue("upstream.test", dns_names=("upstream.test",), ip_addresses=("10.0.0.1",))
CLIENT = issue("ingressd", client=True)


def ca_secret(name: str = "up-ca", **kw: Any) -> Obj:
    return secret(name, ca_crt=UPSTREAM.cert_pem, **kw)


def client_secret(name: str = "up-client", **kw: Any) -> Obj:
    return secret(name, tls_crt=CLIENT.cert_pem, tls_key=CLIENT.key_pem, **kw)


def forward(table: RouteTable, host: str = HOST, *, tls: bool = False) -> Forward:
    action = decide(table, request(host, tls=tls))
    assert isinstance(action, Forward), action
    return action


def refused(table: RouteTable, host: str = HOST) -> Respond:
    action = decide(table, request(host))
    assert isinstance(action, Respond), action
    return action


def test_https_without_a_secret_speaks_tls_without_verifying() -> None:
    table = build(app(backend_protocol="HTTPS"), *WEB)
    assert table.problems == ()
    tls = forward(table).tls
    assert tls is not None and not tls.verify and tls.secret is None
    assert tls.context.verify_mode == ssl.CERT_NONE
    assert tls.server_hostname(Endpoint("10.0.0.1", 443)) == ""  # no SNI by default
    assert forward(build(app(), *WEB)).tls is None


def test_one_context_per_secret_and_setting_in_a_table() -> None:
    same = {"backend_protocol": "HTTPS", "proxy_ssl_secret": "up-ca", "proxy_ssl_verify": "on"}
    table = build(
        app("one", "one.test", **same),
        app("two", "two.test", **same),
        app("off", "off.test", **{**same, "proxy_ssl_verify": "off"}),
        app("mtls", "mtls.test", backend_protocol="HTTPS", proxy_ssl_secret="up-client"),
        ca_secret(),
        client_secret(),
        *WEB,
    )
    assert table.problems == ()
    one, two = forward(table, "one.test").tls, forward(table, "two.test").tls
    off, mtls = forward(table, "off.test").tls, forward(table, "mtls.test").tls
    assert one is two and one.verify and one.context.verify_mode == ssl.CERT_REQUIRED
    assert off is not None and off.context is not one.context and not off.verify
    assert mtls is not None and mtls.context not in (one.context, off.context)
    assert len({one.key, off.key, mtls.key}) == 3  # pooled connections are never shared
    # The same request over and over uses the objects built with the table.
    assert all(forward(table, "one.test").tls is one for _ in range(3))


def test_auto_http_uses_tls_only_for_tls_clients() -> None:
    table = build(app(backend_protocol="AUTO_HTTP"), *WEB)
    assert forward(table).tls is None
    assert forward(table, tls=True).tls is not None


@pytest.mark.parametrize(
    ("objs", "annotated", "message"),
    [
        pytest.param(
            (), {"proxy_ssl_secret": "nope"}, "Secret default/nope not found", id="missing"
        ),
        pytest.param(
            (ca_secret(namespace="other"),),
            {"proxy_ssl_secret": "other/up-ca"},
            "Secret other/up-ca is not in the Ingress's namespace default",
            id="other-namespace",
        ),
        pytest.param(
            (secret("empty", ca_crt=b""),),
            {"proxy_ssl_secret": "empty"},
            "Secret default/empty has neither ca.crt nor tls.crt and tls.key",
            id="empty",
        ),
        pytest.param(
            (secret("half", tls_crt=CLIENT.cert_pem),),
            {"proxy_ssl_secret": "half"},
            "Secret default/half has tls.crt but no tls.key",
            id="half-pair",
        ),
        pytest.param(
            (secret("garbage", ca_crt=b"not a certificate"),),
            {"proxy_ssl_secret": "garbage"},
            "Secret default/garbage: ca.crt is not a PEM certificate bundle",
            id="bad-ca",
        ),
        pytest.param(
            (secret("mismatch", tls_crt=CLIENT.cert_pem, tls_key=UPSTREAM.key_pem),),
            {"proxy_ssl_secret": "mismatch"},
            "Secret default/mismatch: tls.crt and tls.key are not a matching PEM",
            id="key-mismatch",
        ),
    ],
)
def test_an_unusable_proxy_ssl_secret_fails_closed_with_503_naming_it(
    objs: tuple[Obj, ...], annotated: dict[str, str], message: str
) -> None:
    table = build(app(backend_protocol="HTTPS", **annotated), *objs, *WEB)
    (problem,) = reasons(table)
    assert problem.startswith("proxy-ssl-secret: ") and message in problem
    assert problem.endswith("; its routes answer 503")
    answer = refused(table)
    assert answer.status == 503 and message in answer.body
    assert "on Ingress default/app" in answer.body


def test_a_ca_only_secret_may_be_a_tls_secret_with_empty_keys() -> None:
    # In cluster mode only kubernetes.io/tls Secrets are watched: this is how a
    # CA bundle gets there.
    ca_only = secret(
        "ca-tls", secret_type=TLS_SECRET_TYPE, ca_crt=UPSTREAM.cert_pem, tls_crt=b"", tls_key=b""
    )
    annotated = {"proxy_ssl_secret": "ca-tls", "proxy_ssl_verify": "on"}
    table = build(app(backend_protocol="HTTPS", **annotated), ca_only, *WEB)
    assert table.problems == ()
    assert forward(table).tls.verify  # type: ignore[union-attr]


def test_verify_without_a_ca_has_no_effect_as_in_ingress_nginx() -> None:
    annotated = {"proxy_ssl_secret": "up-client", "proxy_ssl_verify": "on"}
    table = build(app(backend_protocol="HTTPS", **annotated), client_secret(), *WEB)
    assert reasons(table) == [
        "proxy-ssl-verify has no effect: Secret default/up-client has no ca.crt (as in "
        "ingress-nginx, the upstream's certificate is not verified)"
    ]
    tls = forward(table).tls
    assert tls is not None and not tls.verify


def test_a_proxy_ssl_secret_with_http_has_no_effect_but_must_still_exist() -> None:
    table = build(app(proxy_ssl_secret="up-ca"), ca_secret(), *WEB)
    assert reasons(table) == [
        "proxy-ssl-secret has no effect with backend-protocol HTTP (ingress-nginx ignores it "
        "too): set HTTPS, AUTO_HTTP or GRPCS to use TLS to the upstream"
    ]
    assert forward(table).tls is None
    # As in ingress-nginx, a missing one still denies the location.
    assert refused(build(app(proxy_ssl_secret="gone"), *WEB)).status == 503


def test_grpc_routes_are_served_and_check_passes() -> None:
    objs = (app(backend_protocol="GRPC"), *WEB)
    fwd = forward(build(*objs))
    assert fwd.tls is None and fwd.route.policy.backend_protocol == "GRPC"
    report = check(snapshot(ingress_class(), *objs), BuildOptions())
    (ing,) = report.ingresses
    assert [a.status for a in ing.annotations] == ["supported"]
    assert not ing.problems and report.exit_code == 0


def test_grpcs_speaks_tls_offering_h2_with_the_proxy_ssl_annotations() -> None:
    annotated = {"proxy_ssl_secret": "up-ca", "proxy_ssl_verify": "on"}
    grpcs = forward(build(app(backend_protocol="GRPCS", **annotated), ca_secret(), *WEB)).tls
    https = forward(build(app(backend_protocol="HTTPS", **annotated), ca_secret(), *WEB)).tls
    assert grpcs is not None and https is not None
    assert grpcs.verify and https.verify
    # Made apart: the HTTP/1.1 context offers no ALPN, so neither is used for the other.
    assert grpcs.context is not https.context and grpcs.key != https.key
    # Without a Secret: TLS, unverified, still offering h2.
    plain = forward(build(app(backend_protocol="GRPCS"), *WEB)).tls
    assert plain is not None and not plain.verify and plain.key[-1] == ("h2",)


# -- service-upstream ----------------------------------------------------------------------


def cluster_service(name: str = "web", cluster_ip: str | None = "10.96.0.10") -> Obj:
    svc = service(name, [("http", 80), ("admin", 9000)])
    if cluster_ip is not None:
        svc["spec"]["clusterIP"] = cluster_ip
    return svc


SLICE = endpoint_slice("web", ["10.0.0.1", "10.0.0.2"], 8080, port_name="http")


@pytest.mark.parametrize(("port", "expected"), [(80, 80), ("http", 80), ("admin", 9000)])
def test_service_upstream_sends_to_the_cluster_ip_and_service_port(
    port: int | str, expected: int
) -> None:
    snap = snapshot(cluster_service(), SLICE)
    backend = resolve_service(snap, "default", "web", port, service_upstream=True)
    assert backend.endpoints == (Endpoint("10.96.0.10", expected),)
    # Without it, the EndpointSlice's endpoints as before.
    if port != "admin":
        plain = resolve_service(snap, "default", "web", port)
        assert {e.host for e in plain.endpoints} == {"10.0.0.1", "10.0.0.2"}


@pytest.mark.parametrize(
    ("cluster_ip", "why"), [("None", "is headless"), (None, "has no clusterIP"), ("", "has no")]
)
def test_service_upstream_needs_a_cluster_ip(cluster_ip: str | None, why: str) -> None:
    table = build(app(service_upstream="true"), cluster_service(cluster_ip=cluster_ip), SLICE)
    (problem,) = reasons(table)
    assert f"service default/web {why}" in problem and "service-upstream" in problem
    assert problem.endswith("its routes answer 503")
    assert refused(table).status == 503


def test_service_upstream_is_per_ingress_on_a_shared_service() -> None:
    table = build(
        app("cip", "cip.test", service_upstream="true"),
        app("eps", "eps.test"),
        cluster_service(),
        SLICE,
    )
    assert table.problems == ()
    assert forward(table, "cip.test").endpoint == Endpoint("10.96.0.10", 80)
    assert forward(table, "eps.test").endpoint.host in ("10.0.0.1", "10.0.0.2")


def test_service_upstream_keeps_external_name_services() -> None:
    svc = service("ext", [443], external_name="api.example.com")
    backend = resolve_service(snapshot(svc), "default", "ext", 443, service_upstream=True)
    assert backend.endpoints == (Endpoint("api.example.com", 443),)


# -- the pool keeps plain and TLS connections apart ---------------------------------------------


async def test_idle_connections_are_keyed_by_endpoint_and_tls() -> None:
    pool = UpstreamPool()
    ep = Endpoint("127.0.0.1", 8443)
    tls_a = upstream_tls(None, None)
    tls_b = upstream_tls(
        SecretMaterial("default/x", UPSTREAM.cert_pem, None, None), ProxySSL(None, "x", True)
    )
    plain = UpstreamConnection(pool, ep)
    secured = UpstreamConnection(pool, ep, pool_key(ep, tls_a))
    pool.release(plain)
    pool.release(secured)
    assert pool.take(ep, tls_b) is None
    assert pool.take(ep, tls_a) is secured
    assert pool.take(ep, tls_a) is None
    assert pool.take(ep) is plain
    pool.close()


# -- real handshakes against a local TLS server ----------------------------------------------


@asynccontextmanager
async def tls_listener(ctx: ssl.SSLContext, seen_sni: list[str | None]) -> AsyncIterator[int]:
    def sni(_obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        seen_sni.append(name)

    ctx.sni_callback = sni

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(1)
        except (OSError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def verifying(
    ca: Issued, *, depth: int = 1, name: str | None = None, sni: bool = False
) -> UpstreamTLS:
    material = SecretMaterial("default/ca", ca.cert_pem, None, None)
    return upstream_tls(material, ProxySSL(None, "ca", True, depth, name, sni))


async def connect(port: int, tls: UpstreamTLS) -> None:
    pool = UpstreamPool(connect_timeout=5)
    conn = await pool.connect(Endpoint("127.0.0.1", port), 5, tls)
    conn.close()
    pool.close()


async def test_verification_checks_chain_name_and_depth() -> None:
    root = issue("root", ca=True)
    mid1 = issue("mid1", ca=True, issuer=root)
    mid2 = issue("mid2", ca=True, issuer=mid1)
    leaf = issue("upstream.test", issuer=mid2, dns_names=("upstream.test",))
    assert len(leaf.chain) == 2
    seen: list[str | None] = []
    async with tls_listener(tls_server(leaf), seen) as port:
        # Two intermediates: depth 2 allows them, the default of 1 does not.
        await connect(port, verifying(root, depth=2, name="upstream.test"))
        with pytest.raises(UpstreamTLSError, match=r"2 intermediate CAs.*allows 1"):
            await connect(port, verifying(root, name="upstream.test"))
        # The name defaults to the address, which the certificate does not name.
        with pytest.raises(UpstreamTLSError, match=r"not valid for '127\.0\.0\.1'"):
            await connect(port, verifying(root, depth=2))
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect(port, verifying(issue("other", ca=True), depth=2))
        # SNI only when asked for, and then the proxy-ssl-name.
        await connect(port, verifying(root, depth=2, name="upstream.test", sni=True))
    assert seen == [None, None, None, None, "upstream.test"]


@pytest.mark.parametrize(
    ("name", "matches"),
    [
        ("upstream.test", True),
        ("UPSTREAM.test.", True),
        ("a.wild.test", True),
        ("a.b.wild.test", False),
        ("wild.test", False),
        ("10.0.0.1", True),
        ("10.0.0.2", False),
        ("other.test", False),
    ],
)
def test_certificate_names(name: str, matches: bool) -> None:
    cert = issue("x", dns_names=("upstream.test", "*.wild.test"), ip_addresses=("10.0.0.1",)).cert
    assert certificate_matches(cert, name) is matches


def test_without_a_san_the_common_name_counts() -> None:
    assert certificate_matches(issue("cn.test").cert, "cn.test")
    assert not certificate_matches(issue("10.0.0.1").cert, "10.0.0.1")
