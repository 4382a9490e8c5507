"""TLS: Secret validation, certificates in the table, and SNI selection on a socket."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from k8s_objects import (
    build,
    certificate,
    ingress,
    path,
    rule,
    service,
    tls_entry,
    tls_secret,
)

from ingressd.model.table import RouteTable, TLSCertificate, name_matches
from ingressd.policy.tls import CertificateSelector, TLSError, load_certificate, self_signed

HOST = "a.example.com"


def reasons(table: RouteTable, obj: str) -> list[str]:
    return [p.reason for p in table.problems if p.obj == obj]


def cert_without_san(common_name: str) -> tuple[bytes, bytes]:
    return self_signed(common_name, (), days=1)


def not_after(cert_pem: bytes) -> float:
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc.timestamp()


# -- load_certificate ------------------------------------------------------------------


@pytest.mark.parametrize("string_data", [False, True])
def test_load_good_secret(string_data: bool) -> None:
    cert_pem, key_pem = certificate(HOST, "B.Example.com")
    cert = load_certificate(tls_secret("web-tls", pem=(cert_pem, key_pem), string_data=string_data))
    assert cert.secret == "default/web-tls"
    assert cert.cert_pem == cert_pem
    assert cert.key_pem == key_pem
    assert cert.dns_names == ("a.example.com", "b.example.com")
    assert cert.not_after == pytest.approx(not_after(cert_pem))
    assert cert.covers("b.example.com")
    assert not cert.covers("c.example.com")


def test_string_data_takes_precedence_over_data() -> None:
    secret = tls_secret("web-tls", [HOST])
    good = certificate("b.example.com")
    secret["stringData"] = {"tls.crt": good[0].decode(), "tls.key": good[1].decode()}
    assert load_certificate(secret).dns_names == ("b.example.com",)


def test_common_name_used_when_there_is_no_san() -> None:
    cert = load_certificate(tls_secret("cn", pem=cert_without_san("Legacy.Example.com")))
    assert cert.dns_names == ("legacy.example.com",)


def test_chain_uses_leaf_certificate() -> None:
    leaf_cert, leaf_key = certificate(HOST)
    other_cert, _ = certificate("intermediate.example")
    cert = load_certificate(tls_secret("chain", pem=(leaf_cert + other_cert, leaf_key)))
    assert cert.dns_names == (HOST,)


def broken(**changes: object) -> dict:
    secret = tls_secret("bad", [HOST])
    for key, value in changes.items():
        if value is None:
            secret["data"].pop(key)
        else:
            secret["data"][key] = value
    return secret


OTHER_KEY = certificate("other.example")[1]
BAD_SECRETS = [
    pytest.param(
        tls_secret("bad", pem=(certificate(HOST)[0], OTHER_KEY)),
        "Secret default/bad: tls.key does not match the certificate in tls.crt",
        id="key-mismatch",
    ),
    pytest.param(
        tls_secret("bad", [HOST], secret_type="Opaque"),
        "Secret default/bad has type 'Opaque', want 'kubernetes.io/tls'",
        id="wrong-type",
    ),
    pytest.param(
        {k: v for k, v in tls_secret("bad", [HOST]).items() if k != "type"},
        "Secret default/bad has type 'Opaque', want 'kubernetes.io/tls'",
        id="no-type",
    ),
    pytest.param(
        broken(**{"tls.key": None}), "Secret default/bad lacks tls.crt or tls.key", id="no-key"
    ),
    pytest.param(
        broken(**{"tls.crt": None}), "Secret default/bad lacks tls.crt or tls.key", id="no-crt"
    ),
    pytest.param(
        broken(**{"tls.crt": ""}), "Secret default/bad lacks tls.crt or tls.key", id="empty-crt"
    ),
    pytest.param(
        {
            "kind": "Secret",
            "metadata": {"name": "bad", "namespace": "default"},
            "type": "kubernetes.io/tls",
        },
        "Secret default/bad lacks tls.crt or tls.key",
        id="no-data",
    ),
    pytest.param(
        broken(**{"tls.crt": "not base64!!"}), "data.tls.crt is not valid base64", id="b64-crt"
    ),
    pytest.param(broken(**{"tls.key": "abc"}), "data.tls.key is not valid base64", id="b64-key"),
    pytest.param(
        broken(**{"tls.crt": base64.b64encode(b"garbage").decode()}),
        "Secret default/bad: tls.crt is not a PEM certificate",
        id="garbage-crt",
    ),
    pytest.param(
        broken(**{"tls.crt": base64.b64encode(certificate(HOST)[1]).decode()}),
        "Secret default/bad: tls.crt is not a PEM certificate",
        id="key-in-crt",
    ),
    pytest.param(
        broken(**{"tls.key": base64.b64encode(b"-----BEGIN PRIVATE KEY-----\nxx\n").decode()}),
        "Secret default/bad: tls.key is not an unencrypted PEM key",
        id="garbage-key",
    ),
    pytest.param(
        broken(**{"tls.key": base64.b64encode(certificate(HOST)[0]).decode()}),
        "Secret default/bad: tls.key is not an unencrypted PEM key",
        id="cert-in-key",
    ),
]


@pytest.mark.parametrize(("secret", "message"), BAD_SECRETS)
def test_load_rejects(secret: dict, message: str) -> None:
    with pytest.raises(TLSError) as info:
        load_certificate(secret)
    assert str(info.value).startswith(message)


def test_encrypted_key_rejected() -> None:
    cert_pem, key_pem = certificate(HOST)
    key = serialization.load_pem_private_key(key_pem, None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(TLSError, match=r"tls\.key is not an unencrypted PEM key"):
        load_certificate(tls_secret("enc", pem=(cert_pem, encrypted)))


def test_expired_certificate_rejected() -> None:
    secret = tls_secret("old", [HOST])
    end = not_after(certificate(HOST)[0])
    load_certificate(secret, now=end - 60)  # still valid a minute before
    with pytest.raises(TLSError) as info:
        load_certificate(secret, now=end + 60)
    expected = dt.datetime.fromtimestamp(end, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    assert str(info.value) == f"Secret default/old: certificate expired at {expected}"


def test_not_yet_valid_certificate_rejected() -> None:
    secret = tls_secret("future", [HOST])
    with pytest.raises(TLSError, match="Secret default/future: certificate is not valid before "):
        load_certificate(secret, now=dt.datetime(2000, 1, 1, tzinfo=dt.UTC).timestamp())


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("a.example.com", "a.example.com", True),
        ("a.example.com", "b.example.com", False),
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", ".example.com", False),
        ("*.example.com", "*.example.com", True),
    ],
)
def test_name_matches(pattern: str, host: str, matches: bool) -> None:
    assert name_matches(pattern, host) is matches


# -- certificates in the table -----------------------------------------------------------


def tls_ingress(name: str, hosts: list[str] | None, secret: str | None, **kw: object) -> dict:
    rule_hosts = hosts or [HOST]
    return ingress(
        name,
        [rule(h, path(f"/{name}", "web")) for h in rule_hosts],
        tls=[tls_entry(hosts, secret)],
        **kw,  # type: ignore[arg-type]
    )


def test_certificates_per_host() -> None:
    table = build(
        tls_ingress("a", [HOST, "b.example.com"], "ab"),
        tls_ingress("c", ["c.example.com"], "c"),
        tls_secret("ab", [HOST, "b.example.com"]),
        tls_secret("c", ["c.example.com"]),
        service("web"),
    )
    assert table.problems == ()
    assert {h: c.secret for h, c in table.certificates.items()} == {
        HOST: "default/ab",
        "b.example.com": "default/ab",
        "c.example.com": "default/c",
    }
    assert table.certificate_for("c.example.com").secret == "default/c"  # type: ignore[union-attr]
    assert table.certificate_for("d.example.com") is None
    assert table.find_host(HOST).tls  # type: ignore[union-attr]


def test_wildcard_certificate_serves_subdomains() -> None:
    table = build(
        tls_ingress("w", ["*.example.com"], "wild"),
        tls_secret("wild", ["*.example.com"]),
        service("web"),
    )
    assert table.problems == ()
    assert set(table.certificates) == {"*.example.com"}
    assert table.certificate_for(HOST).secret == "default/wild"  # type: ignore[union-attr]
    assert table.certificate_for("example.com") is None
    assert table.certificate_for("x.a.example.com") is None


def test_exact_certificate_preferred_over_wildcard() -> None:
    table = build(
        tls_ingress("w", ["*.example.com"], "wild", created=1),
        tls_ingress("e", [HOST], "exact", created=2),
        tls_secret("wild", ["*.example.com"]),
        tls_secret("exact", [HOST]),
        service("web"),
    )
    assert table.problems == ()
    assert table.certificate_for(HOST).secret == "default/exact"  # type: ignore[union-attr]
    assert table.certificate_for("b.example.com").secret == "default/wild"  # type: ignore[union-attr]


def test_wildcard_certificate_for_listed_host() -> None:
    table = build(
        tls_ingress("w", [HOST], "wild"), tls_secret("wild", ["*.example.com"]), service("web")
    )
    assert table.problems == ()
    assert table.certificate_for(HOST).secret == "default/wild"  # type: ignore[union-attr]


def test_tls_without_hosts_covers_rule_hosts() -> None:
    table = build(
        ingress(
            "web",
            [rule(HOST, path("/")), rule("b.example.com", path("/")), rule(None, path("/x"))],
            tls=[tls_entry(None, "ab")],
        ),
        tls_secret("ab", [HOST, "b.example.com"]),
        service("web"),
    )
    assert table.problems == ()
    assert set(table.certificates) == {HOST, "b.example.com"}


def test_certificate_not_covering_host() -> None:
    table = build(
        tls_ingress("web", [HOST, "b.example.com"], "ab"),
        tls_secret("ab", ["b.example.com"]),
        service("web"),
    )
    assert set(table.certificates) == {"b.example.com"}
    assert reasons(table, "Ingress default/web") == [
        f"certificate in Secret default/ab does not cover host {HOST} (it names "
        "b.example.com); the default certificate is used"
    ]


def test_missing_secret() -> None:
    table = build(tls_ingress("web", [HOST], "nope"), service("web"))
    assert table.certificates == {}
    assert reasons(table, "Ingress default/web") == [
        f"TLS Secret default/nope not found; hosts {HOST} use the default certificate"
    ]
    assert table.find_host(HOST).tls  # type: ignore[union-attr]


def test_secret_in_other_namespace_is_not_used() -> None:
    table = build(
        tls_ingress("web", [HOST], "cert"),
        tls_secret("cert", [HOST], namespace="other"),
        service("web"),
    )
    assert table.certificates == {}
    assert len(reasons(table, "Ingress default/web")) == 1


def test_invalid_secret_is_reported_once_per_ingress() -> None:
    table = build(
        tls_ingress("web", [HOST], "bad"),
        tls_secret("bad", [HOST], secret_type="Opaque"),
        service("web"),
    )
    assert table.certificates == {}
    assert reasons(table, "Ingress default/web") == [
        "Secret default/bad has type 'Opaque', want 'kubernetes.io/tls'; "
        f"hosts {HOST} use the default certificate"
    ]


def test_expired_secret_in_build_uses_now() -> None:
    objs = (tls_ingress("web", [HOST], "cert"), tls_secret("cert", [HOST]), service("web"))
    assert set(build(*objs).certificates) == {HOST}
    later = build(*objs, now=not_after(certificate(HOST)[0]) + 1)
    assert later.certificates == {}
    assert "certificate expired at" in reasons(later, "Ingress default/web")[0]


def test_tls_without_secret_name_uses_default_certificate_silently() -> None:
    table = build(tls_ingress("web", [HOST], None), service("web"))
    assert table.problems == ()
    assert table.certificates == {}
    assert table.find_host(HOST).tls  # type: ignore[union-attr]


@pytest.mark.parametrize("order", [1, -1])
def test_oldest_ingress_wins_host_certificate(order: int) -> None:
    objs = [
        tls_ingress("old", [HOST], "old-cert", created=1),
        tls_ingress("new", [HOST], "new-cert", created=2),
    ][::order]
    table = build(
        *objs, tls_secret("old-cert", [HOST]), tls_secret("new-cert", [HOST]), service("web")
    )
    assert table.certificate_for(HOST).secret == "default/old-cert"  # type: ignore[union-attr]
    assert reasons(table, "Ingress default/new") == [
        f"TLS for host {HOST} already comes from Secret default/old-cert of older "
        "Ingress default/old; Secret default/new-cert ignored"
    ]
    assert reasons(table, "Ingress default/old") == []


# -- which hosts are TLS, and with which certificate (controller.go createServers) ---------


def test_every_rule_host_of_an_ingress_with_tls_is_served_over_tls() -> None:
    # b.test is not listed, and "ta" does not cover it: the default certificate
    # serves it, over TLS, so plain HTTP is redirected as in ingress-nginx.
    table = build(
        ingress(
            "web",
            [rule("a.test", path("/", "web")), rule("b.test", path("/", "web"))],
            tls=[tls_entry(["a.test"], "ta")],
        ),
        ingress("plain", [rule("c.test", path("/", "web"))]),
        tls_secret("ta", ["a.test"]),
        service("web"),
    )
    assert table.certificate_for("a.test").secret == "default/ta"  # type: ignore[union-attr]
    assert table.certificate_for("b.test") is None
    assert [table.find_host(h).tls for h in ("a.test", "b.test", "c.test")] == [  # type: ignore[union-attr]
        True,
        True,
        False,
    ]
    assert table.problems == ()


def test_an_unlisted_rule_host_takes_a_certificate_that_covers_it() -> None:
    table = build(
        ingress(
            "web",
            [rule("a.test", path("/", "web")), rule("b.test", path("/", "web"))],
            tls=[tls_entry(["a.test"], "ab")],
        ),
        tls_secret("ab", ["a.test", "b.test"]),
        service("web"),
    )
    assert table.certificate_for("b.test").secret == "default/ab"  # type: ignore[union-attr]


def test_the_oldest_ingress_with_a_rule_and_tls_decides_the_host() -> None:
    objs = [
        # No TLS section: it does not decide a.test ...
        ingress("notls", [rule("a.test", path("/x", "web"))], created=0),
        # ... this one does, with the default certificate (its entry is for another host) ...
        ingress(
            "first",
            [rule("a.test", path("/y", "web")), rule("o.test", path("/", "web"))],
            tls=[tls_entry(["o.test"], "other")],
            created=1,
        ),
        # ... and a younger one listing it cannot change that.
        ingress(
            "late",
            [rule("a.test", path("/z", "web"))],
            tls=[tls_entry(["a.test"], "ta")],
            created=2,
        ),
        # TLS for a host it has no rule for does nothing.
        ingress("norule", [rule("n.test", path("/", "web"))], tls=[tls_entry(["d.test"], "ta")]),
        ingress("d", [rule("d.test", path("/", "web"))], created=3),
        tls_secret("ta", ["a.test", "d.test"]),
        tls_secret("other", ["o.test"]),
        service("web"),
    ]
    table = build(*objs)
    assert table.certificate_for("a.test") is None
    assert table.find_host("a.test").tls  # type: ignore[union-attr]
    assert reasons(table, "Ingress default/late") == [
        "TLS for host a.test already comes from the default certificate of older Ingress "
        "default/first; Secret default/ta ignored"
    ]
    assert table.certificate_for("d.test") is None
    assert not table.find_host("d.test").tls  # type: ignore[union-attr]


def test_same_secret_in_two_ingresses_is_fine() -> None:
    table = build(
        tls_ingress("one", [HOST], "cert", created=1),
        tls_ingress("two", [HOST], "cert", created=2),
        tls_secret("cert", [HOST]),
        service("web"),
    )
    assert [p for p in table.problems if "TLS" in p.reason] == []
    assert table.certificate_for(HOST).secret == "default/cert"  # type: ignore[union-attr]


# -- SNI on a real socket ---------------------------------------------------------------


def peer_dns_names(der: bytes) -> list[str]:
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return san.value.get_values_for_type(x509.DNSName)


async def handshake_names(port: int, server_name: str) -> list[str]:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    async with asyncio.timeout(5):
        _reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname=server_name
        )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return peer_dns_names(der)
    finally:
        writer.close()
        try:
            async with asyncio.timeout(5):
                await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass


async def closing_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def test_sni_selects_certificate_per_host() -> None:
    table = build(
        tls_ingress("a", [HOST], "a-cert"),
        tls_ingress("w", ["*.wild.test"], "w-cert"),
        tls_secret("a-cert", [HOST]),
        tls_secret("w-cert", ["*.wild.test"]),
        service("web"),
    )
    assert table.problems == ()
    assert len(table.certificates) == 2
    selector = CertificateSelector(lambda: table, self_signed(dns_names=("ingress.local",)))
    server = await asyncio.start_server(
        closing_handler, "127.0.0.1", 0, ssl=selector.default_context
    )
    try:
        port = server.sockets[0].getsockname()[1]
        assert await handshake_names(port, HOST) == [HOST]
        assert await handshake_names(port, "A.Example.COM") == [HOST]
        assert await handshake_names(port, "x.wild.test") == ["*.wild.test"]
        assert await handshake_names(port, "unknown.test") == ["ingress.local"]
        assert await handshake_names(port, "wild.test") == ["ingress.local"]

        # --default-certificate replaces the generated one for unknown hosts only.
        fallback = load_certificate(tls_secret("fallback", ["fallback.test"]))
        selector.set_default(fallback)
        assert await handshake_names(port, "unknown.test") == ["fallback.test"]
        assert await handshake_names(port, HOST) == [HOST]
    finally:
        server.close()
        async with asyncio.timeout(5):
            await server.wait_closed()


def test_selector_caches_and_prunes_contexts() -> None:
    holder: dict[str, RouteTable] = {}
    holder["t"] = build(
        tls_ingress("a", [HOST], "a-cert"), tls_secret("a-cert", [HOST]), service("web")
    )
    selector = CertificateSelector(lambda: holder["t"], certificate("ingress.local"))
    cert: TLSCertificate = holder["t"].certificates[HOST]
    ctx = selector.context_for(cert)
    assert selector.context_for(cert) is ctx
    selector.prune()
    assert selector.context_for(cert) is ctx  # still in the table: kept
    holder["t"] = RouteTable()
    selector.prune()
    assert selector.context_for(cert) is not ctx  # dropped, then rebuilt


def rsa_pair(bits: int, host: str) -> tuple[bytes, bytes]:
    """A self-signed RSA certificate: cryptography takes 1024 bits, OpenSSL's default
    security level refuses to serve it ("ee key too small")."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(65537, bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def live_contexts() -> int:
    import gc

    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, ssl.SSLContext))


def test_a_selector_that_serves_nothing_checks_certificates_without_keeping_contexts() -> None:
    """The main process of --workers serves no TLS: holding an SSL context per
    certificate there (25 KiB each in OpenSSL) was memory for nothing."""
    hosts = [f"h{i}.example.com" for i in range(20)]
    holder: dict[str, RouteTable] = {}
    holder["t"] = build(
        *(tls_ingress(f"i{i}", [h], f"c{i}") for i, h in enumerate(hosts)),
        *(tls_secret(f"c{i}", [h]) for i, h in enumerate(hosts)),
        service("web"),
    )
    assert holder["t"].problems == ()
    certs = list(holder["t"].certificates.values())
    before = live_contexts()
    selector = CertificateSelector(lambda: holder["t"], certificate("ingress.local"), serving=False)
    for cert in certs * 2:
        selector.check(cert)
    selector.prune()
    assert live_contexts() - before <= 1  # the listener's default context only
    # A certificate OpenSSL refuses is still found out, and each time it is asked.
    weak = load_certificate(tls_secret("weak", pem=rsa_pair(1024, "weak.test")))
    for _ in range(2):
        with pytest.raises(ssl.SSLError):
            selector.check(weak)
    # Serving, the same check keeps the context for the handshakes to come.
    serving = CertificateSelector(lambda: holder["t"], certificate("ingress.local"))
    serving.check(certs[0])
    assert serving.context_for(certs[0]) is serving.context_for(certs[0])
    with pytest.raises(ssl.SSLError):
        serving.check(weak)


def test_tls_objects_read_and_write_through_the_c_methods_with_the_same_results() -> None:
    """uvloop calls an SSLObject's read/write/pending for every read and write:
    ingressd's contexts make objects whose methods are the C object's own (no
    interpreted frame per call), and a whole exchange through them behaves as
    through ssl.SSLObject: a handshake, data both ways, read into a buffer,
    pending, and SSLWantReadError when nothing is left."""
    from ingressd.policy.tls import DirectSSLObject, server_context

    cert, key = self_signed("direct.test", ("direct.test",), days=1)
    server_ctx = server_context(cert, key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="direct.test")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    assert type(server) is DirectSSLObject and type(client) is ssl.SSLObject
    assert type(server.read).__name__ == "builtin_function_or_method"
    assert type(server.write).__name__ == "builtin_function_or_method"

    def pump() -> None:
        s_in.write(c_out.read())
        c_in.write(s_out.read())

    for _ in range(10):
        done = 0
        for side in (client, server):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        pump()
        if done == 2:
            break
    assert server.version() == client.version() is not None
    assert client.write(b"GET / HTTP/1.1\r\n\r\n") == 18
    pump()
    buf = bytearray(64)
    assert server.read(64, buf) == 18 and bytes(buf[:18]) == b"GET / HTTP/1.1\r\n\r\n"
    with pytest.raises(ssl.SSLWantReadError):
        server.read(64)
    assert server.pending() == 0
    assert server.write(b"HTTP/1.1 200 OK\r\n\r\n") == 19
    pump()
    assert client.read(1024) == b"HTTP/1.1 200 OK\r\n\r\n"
