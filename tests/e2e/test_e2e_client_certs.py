"""End to end: client certificate authentication (``auth-tls-*``), with curl ``--cert``.

One ingressd (module-scoped) serves one host per case in front of the echo
upstreams; a CA, an intermediate, and client certificates (valid, expired,
revoked, from another CA, for another CN) are made here with ``cryptography``.
What the client sees is ingress-nginx's: 400 for a missing or bad certificate
(302 with auth-tls-error-page), 403 for a CN that does not match, 503 for a CA
Secret that cannot be used, 421 for a request under another SNI name; and the
upstream gets the ssl-client-* headers, never the client's own.
"""

from __future__ import annotations

import base64
import datetime as dt
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from e2e_helpers import (
    LOCALHOST,
    BackgroundLoop,
    CurlResult,
    EchoServers,
    Ingressd,
    RecordingListener,
    curl,
    echo_backend,
    nginx_page,
)
from k8s_objects import (
    ingress,
    ingress_class,
    path,
    rule,
    tls_entry,
    tls_secret,
)

from ingressd.model.objects import Obj

A = "nginx.ingress.kubernetes.io/"
NOW = dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Cert:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...] = ()  # intermediates the client sends along

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def files(self, where: Path, name: str) -> tuple[str, str]:
        cert_path, key_path = where / f"{name}.crt", where / f"{name}.key"
        chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)
        cert_path.write_bytes(self.pem + chain)
        key_path.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return str(cert_path), str(key_path)


def make(
    cn: str,
    issuer: Cert | None = None,
    *,
    ca: bool = False,
    start: dt.datetime | None = None,
    days: float = 30,
    org: str = "ingressd tests",
) -> Cert:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    begin = start or NOW - dt.timedelta(hours=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(begin)
        .not_valid_after(begin + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    else:
        eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
        builder = builder.add_extension(eku, critical=False)
    chain = () if issuer is None or issuer.cert.issuer == issuer.cert.subject else (issuer.cert,)
    return Cert(builder.sign(issuer.key if issuer else key, hashes.SHA256()), key, chain)


def crl(ca: Cert, *revoked: Cert) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(NOW - dt.timedelta(hours=1))
        .next_update(NOW + dt.timedelta(days=7))
    )
    for r in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(r.cert.serial_number)
            .revocation_date(NOW - dt.timedelta(minutes=30))
            .build()
        )
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def ca_secret(name: str, ca_pem: bytes, crl_pem: bytes | None = None) -> Obj:
    data = {"ca.crt": base64.b64encode(ca_pem).decode()}
    if crl_pem is not None:
        data["ca.crl"] = base64.b64encode(crl_pem).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        "type": "Opaque",
        "data": data,
    }


CA = make("client CA", ca=True)
INTERMEDIATE = make("client intermediate CA", CA, ca=True)
OTHER_CA = make("another CA", ca=True)
ALICE = make("alice", CA)
BOB = make("bob", CA)
EXPIRED = make("expired", CA, start=NOW - dt.timedelta(days=10), days=1)
REVOKED = make("revoked", CA)
STRANGER = make("alice", OTHER_CA)  # the right CN, the wrong CA
DEEP = make("deep", INTERMEDIATE)  # leaf -> intermediate -> CA: depth 2


def host_ingress(name: str, host: str, tls: bool = False, **annotations: str) -> Obj:
    return ingress(
        name,
        [rule(host, path("/", "web"))],
        annotations={A + k: v for k, v in annotations.items()},
        tls=[tls_entry([host], f"{name}-tls")] if tls else None,
    )


def objects(echo: EchoServers, auth_port: int) -> list[Obj]:
    on = {"auth-tls-secret": "default/client-ca"}
    return [
        ingress_class(),
        *echo_backend("web", echo["web"]),
        ca_secret("client-ca", CA.pem, crl(CA, REVOKED)),
        # A CRL for each CA of the chain: nginx checks revocation along all of it.
        ca_secret("client-ca-deep", CA.pem, crl(CA) + crl(INTERMEDIATE)),
        ca_secret("other-ca", OTHER_CA.pem),
        tls_secret("mtls-tls", ["mtls.test"]),
        tls_secret("other-tls", ["other.test"]),
        host_ingress(
            "mtls", "mtls.test", tls=True, **on, **{"auth-tls-pass-certificate-to-upstream": "true"}
        ),
        host_ingress("other", "other.test", tls=True),
        host_ingress("deep1", "deep1.test", **on),
        host_ingress(
            "deep2",
            "deep2.test",
            **{"auth-tls-secret": "client-ca-deep", "auth-tls-verify-depth": "2"},
        ),
        host_ingress("cn", "cn.test", **on, **{"auth-tls-match-cn": "CN=alice"}),
        host_ingress("opt", "opt.test", **on, **{"auth-tls-verify-client": "optional"}),
        host_ingress("noca", "noca.test", **on, **{"auth-tls-verify-client": "optional_no_ca"}),
        host_ingress("page", "page.test", **on, **{"auth-tls-error-page": "https://err.test/x"}),
        host_ingress("off", "off.test", **on, **{"auth-tls-verify-client": "off"}),
        host_ingress("gone", "gone.test", **{"auth-tls-secret": "default/not-there"}),
        host_ingress("otherca", "otherca.test", **{"auth-tls-secret": "other-ca"}),
        host_ingress(
            "authed", "authed.test", **on, **{"auth-url": f"http://{LOCALHOST}:{auth_port}/"}
        ),
    ]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingressd]:
    work = tmp_path_factory.mktemp("client-certs")
    loop = BackgroundLoop()
    echo = EchoServers(loop, ["web"])
    auth = RecordingListener(loop)  # the auth-url service: answers 200, records requests
    proc = Ingressd(work / "manifests", work / "ingressd.log")
    proc.update({"all.yaml": objects(echo, auth.port)})
    proc.auth = auth  # type: ignore[attr-defined]
    try:
        yield proc.start()
    finally:
        proc.stop()
        auth.close()
        echo.close()
        loop.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """curl arguments presenting each client certificate."""
    where = tmp_path_factory.mktemp("client-cert-files")
    out = {}
    for name, cert in {
        "alice": ALICE,
        "bob": BOB,
        "expired": EXPIRED,
        "revoked": REVOKED,
        "stranger": STRANGER,
        "deep": DEEP,
    }.items():
        cert_path, key_path = cert.files(where, name)
        out[name] = ["--cert", cert_path, "--key", key_path]
    out[""] = []
    return out


def get(
    proxy: Ingressd, host: str, cert: list[str], *args: str, sni: str | None = None
) -> CurlResult:
    """GET https://HOST/ with SNI ``sni`` (default: the host itself), presenting ``cert``."""
    name = sni or host
    return curl(
        "-k",
        *proxy.resolve(name),
        *cert,
        "-H",
        f"Host: {host}",
        *args,
        proxy.https_url(name, "/probe"),
        check=False,
    )


def upstream_headers(r: CurlResult) -> dict[str, str]:
    assert r.status == 200, r
    headers: dict[str, str] = r.json()["headers"]
    return headers


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
def test_valid_certificate_passes_with_the_headers(
    proxy: Ingressd, certs: dict[str, list[str]], http2: bool
) -> None:
    version = ["--http2"] if http2 else ["--http1.1"]
    forged = ["-H", "ssl-client-verify: SUCCESS", "-H", "ssl-client-subject-dn: CN=admin"]
    r = get(
        proxy, "mtls.test", certs["alice"], *version, "-o", "/dev/null", "-w", "%{http_version}"
    )
    h = upstream_headers(
        get(proxy, "mtls.test", certs["alice"], *version, *forged, "-H", "ssl-client-cert: x")
    )
    assert r.write_out == ("2" if http2 else "1.1")
    assert h["ssl-client-verify"] == "SUCCESS"
    assert h["ssl-client-subject-dn"] == "CN=alice,O=ingressd tests"
    assert h["ssl-client-issuer-dn"] == "CN=client CA,O=ingressd tests"
    # pass-certificate: the PEM, URL-encoded as nginx's $ssl_client_escaped_cert
    assert unquote(h["ssl-client-cert"]) == ALICE.pem.decode()
    assert "%0A" in h["ssl-client-cert"] and "\n" not in h["ssl-client-cert"]


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
def test_missing_certificate_answers_400(
    proxy: Ingressd, certs: dict[str, list[str]], http2: bool
) -> None:
    r = get(proxy, "mtls.test", certs[""], "--http2" if http2 else "--http1.1")
    assert (r.status, r.body) == (400, nginx_page(496)), r


@pytest.mark.parametrize("who", ["expired", "stranger", "revoked"])
def test_bad_certificate_answers_400(
    proxy: Ingressd, certs: dict[str, list[str]], who: str
) -> None:
    r = get(proxy, "mtls.test", certs[who])
    assert (r.status, r.body) == (400, nginx_page(495)), r


def test_chain_depth(proxy: Ingressd, certs: dict[str, list[str]]) -> None:
    # leaf -> intermediate -> CA is too deep for the default depth 1 ...
    r = get(proxy, "deep1.test", certs["deep"])
    assert (r.status, r.body) == (400, nginx_page(495)), r
    # ... and fine with auth-tls-verify-depth: "2"
    h = upstream_headers(get(proxy, "deep2.test", certs["deep"]))
    assert h["ssl-client-verify"] == "SUCCESS"
    assert h["ssl-client-issuer-dn"] == "CN=client intermediate CA,O=ingressd tests"
    assert "ssl-client-cert" not in h  # no pass-certificate


def test_match_cn(proxy: Ingressd, certs: dict[str, list[str]]) -> None:
    assert upstream_headers(get(proxy, "cn.test", certs["alice"]))["ssl-client-verify"] == "SUCCESS"
    r = get(proxy, "cn.test", certs["bob"])
    assert (r.status, r.body) == (403, nginx_page(403)), r
    proxy.wait_for_log("403 Forbidden: client certificate unauthorized")


def test_optional(proxy: Ingressd, certs: dict[str, list[str]]) -> None:
    h = upstream_headers(get(proxy, "opt.test", certs[""], "-H", "ssl-client-subject-dn: forged"))
    assert h["ssl-client-verify"] == "NONE"
    assert "ssl-client-subject-dn" not in h  # the client's own is dropped
    assert upstream_headers(get(proxy, "opt.test", certs["bob"]))["ssl-client-verify"] == "SUCCESS"
    assert get(proxy, "opt.test", certs["stranger"]).status == 400  # present but bad


def test_optional_no_ca(proxy: Ingressd, certs: dict[str, list[str]]) -> None:
    h = upstream_headers(get(proxy, "noca.test", certs["stranger"]))
    assert h["ssl-client-verify"].startswith("FAILED:"), h
    assert h["ssl-client-issuer-dn"] == "CN=another CA,O=ingressd tests"
    assert get(proxy, "noca.test", certs["expired"]).status == 400  # not only the issuer


def test_error_page(proxy: Ingressd, certs: dict[str, list[str]]) -> None:
    for who in ("", "stranger"):
        r = get(proxy, "page.test", certs[who])
        assert r.status == 302 and r.header("Location") == "https://err.test/x", r
    assert get(proxy, "page.test", certs["alice"]).status == 200


def test_verify_off_asks_nothing(proxy: Ingressd, certs: dict[str, list[str]]) -> None:
    h = upstream_headers(get(proxy, "off.test", certs[""], "-H", "ssl-client-verify: forged"))
    assert h["ssl-client-verify"] == "forged"  # as nginx: no proxy_set_header at all


def test_unusable_ca_secret_answers_503(proxy: Ingressd, certs: dict[str, list[str]]) -> None:
    r = get(proxy, "gone.test", certs["alice"])
    assert (r.status, r.body) == (503, nginx_page(503)), r
    assert "auth-tls-secret default/not-there not found" in proxy.log()


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
@pytest.mark.parametrize("sni", ["other.test", "nowhere.test"])
def test_another_sni_name_cannot_reach_an_mtls_host(
    proxy: Ingressd, certs: dict[str, list[str]], sni: str, http2: bool
) -> None:
    """The SNI rule: a host's certificate check is not skipped by a handshake
    under another name (another host's, or one the default certificate serves)."""
    version = "--http2" if http2 else "--http1.1"
    for who in ("", "alice"):
        r = get(proxy, "mtls.test", certs[who], version, sni=sni)
        assert r.status == 421, r
    # the other host itself is served
    assert get(proxy, "other.test", certs[""], version).status == 200


def test_no_sni_is_judged_as_no_certificate(proxy: Ingressd, certs: dict[str, list[str]]) -> None:
    # curl sends no SNI for an IP address: the handshake asked for no certificate.
    url = f"https://{LOCALHOST}:{proxy.https_port}/probe"
    r = curl("-k", *certs["alice"], "-H", "Host: mtls.test", url, check=False)
    assert (r.status, r.body) == (400, nginx_page(496)), r
    r = curl("-k", "-H", "Host: opt.test", url, check=False)
    assert upstream_headers(r)["ssl-client-verify"] == "NONE"


def test_plain_http(proxy: Ingressd) -> None:
    # a TLS host redirects to https first, as ingress-nginx ...
    assert proxy.get("mtls.test", "/probe", check=False).status == 308
    # ... one without spec.tls is judged as sending no certificate
    r = proxy.get("deep1.test", "/probe", check=False)
    assert (r.status, r.body) == (400, nginx_page(496)), r
    assert upstream_headers(proxy.get("opt.test", "/probe"))["ssl-client-verify"] == "NONE"


def test_session_resumption_is_judged_by_its_own_host(proxy: Ingressd, tmp_path: Path) -> None:
    """A resumed session keeps its first handshake's verdict on its host, and on a
    host with other settings (another CA bundle) counts for nothing."""
    cert_path, key_path = ALICE.files(tmp_path, "alice")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(cert_path, key_path)
    ctx.set_alpn_protocols(["http/1.1"])

    def ask(host: str, session: ssl.SSLSession | None) -> tuple[bytes, ssl.SSLSession | None, bool]:
        raw = socket.create_connection((LOCALHOST, proxy.https_port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname=host, session=session) as tls:
            request = f"GET /probe HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            tls.sendall(request.encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
            return data.split(b"\r\n", 1)[0], tls.session, tls.session_reused

    first, session, _ = ask("mtls.test", None)
    assert first == b"HTTP/1.1 200 OK"
    again, _, reused = ask("mtls.test", session)
    assert again == b"HTTP/1.1 200 OK" and reused
    # otherca.test trusts another CA only. OpenSSL resumes a session under another
    # SNI name (the session cache is the listener's): the verdict of a handshake
    # against mtls.test's CA must not carry over.
    there, _, reused_there = ask("otherca.test", session)
    assert reused_there
    assert there == b"HTTP/1.1 400 Bad Request"


def test_worker_processes_ask_for_certificates_too(
    tmp_path: Path, certs: dict[str, list[str]]
) -> None:
    """With --workers, each worker's TLS listener asks and judges as one process does."""
    loop = BackgroundLoop()
    echo = EchoServers(loop, ["web"])
    proc = Ingressd(
        tmp_path / "manifests", tmp_path / "ingressd.log", extra_args=["--workers", "2"]
    )
    proc.update({"all.yaml": objects(echo, 9)})
    try:
        proc.start()
        for _ in range(4):  # connections land on either worker
            assert (
                upstream_headers(get(proc, "mtls.test", certs["alice"]))["ssl-client-verify"]
                == "SUCCESS"
            )
            assert get(proc, "mtls.test", certs["stranger"]).status == 400
            assert get(proc, "mtls.test", certs[""], sni="other.test").status == 421
    finally:
        proc.stop()
        echo.close()
        loop.close()


def test_the_auth_service_gets_the_headers_too(
    proxy: Ingressd, certs: dict[str, list[str]]
) -> None:
    """nginx.tmpl sets the ssl-client-* headers in the auth-url location as well."""
    auth: RecordingListener = proxy.auth  # type: ignore[attr-defined]
    mark = auth.mark()
    forged = ["-H", "ssl-client-verify: SUCCESS", "-H", "ssl-client-subject-dn: CN=admin"]
    h = upstream_headers(get(proxy, "authed.test", certs["bob"], *forged))
    assert h["ssl-client-subject-dn"] == "CN=bob,O=ingressd tests"
    seen = auth.since(mark).lower()
    assert b"ssl-client-verify: success\r\n" in seen
    assert b"ssl-client-subject-dn: cn=bob,o=ingressd tests\r\n" in seen
    assert b"cn=admin" not in seen


def test_a_connection_made_under_old_settings_gets_421(
    tmp_path: Path, certs: dict[str, list[str]]
) -> None:
    """The host's CA settings change while a keep-alive connection is open: what that
    handshake verified no longer counts there (421: the client connects again)."""
    loop = BackgroundLoop()
    echo = EchoServers(loop, ["web"])
    proc = Ingressd(tmp_path / "manifests", tmp_path / "ingressd.log")
    base = [ingress_class(), *echo_backend("web", echo["web"]), ca_secret("ca", CA.pem)]
    live = {"auth-tls-secret": "ca"}
    proc.update({"all.yaml": [*base, host_ingress("live", "live.test", **live)]})
    cert_path, key_path = ALICE.files(tmp_path, "alice")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(cert_path, key_path)
    ctx.set_alpn_protocols(["http/1.1"])

    def ask(tls: ssl.SSLSocket) -> bytes:
        tls.sendall(b"GET /probe HTTP/1.1\r\nHost: live.test\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += tls.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += tls.recv(65536)
        return head.split(b"\r\n", 1)[0]

    try:
        proc.start()
        raw = socket.create_connection((LOCALHOST, proc.https_port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="live.test") as tls:
            assert ask(tls) == b"HTTP/1.1 200 OK"
            changed = host_ingress("live", "live.test", **live, **{"auth-tls-verify-depth": "2"})
            proc.update({"all.yaml": [*base, changed, host_ingress("marker", "marker.test")]})
            proc.wait_for(lambda: proc.get("marker.test", check=False).status == 200, 10)
            assert ask(tls) == b"HTTP/1.1 421 Misdirected Request"
        r = get(proc, "live.test", certs["alice"])  # a new connection: fine
        assert upstream_headers(r)["ssl-client-verify"] == "SUCCESS"
    finally:
        proc.stop()
        echo.close()
        loop.close()


def test_the_configmap_tls_settings_apply_to_hosts_with_client_certificates(
    tmp_path: Path, certs: dict[str, list[str]]
) -> None:
    """ssl-protocols of the controller ConfigMap holds on the contexts that ask for
    client certificates as on the others."""
    loop = BackgroundLoop()
    echo = EchoServers(loop, ["web"])
    proc = Ingressd(
        tmp_path / "manifests",
        tmp_path / "ingressd.log",
        extra_args=["--configmap", "ingressd/controller"],
    )
    controller = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "controller", "namespace": "ingressd"},
        "data": {"ssl-protocols": "TLSv1.3"},
    }
    proc.update({"all.yaml": [*objects(echo, 9), controller]})
    try:
        proc.start()
        ok = get(proc, "mtls.test", certs["alice"], "--tlsv1.3")
        assert upstream_headers(ok)["ssl-client-verify"] == "SUCCESS"
        refused = get(proc, "mtls.test", certs["alice"], "--tls-max", "1.2")
        assert refused.status == 0 and refused.exit_code != 0, refused  # no TLS 1.2
    finally:
        proc.stop()
        echo.close()
        loop.close()
