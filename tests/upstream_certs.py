"""Certificates for the upstream TLS tests: CAs, intermediates, server and client leaves.

``ingressd.policy.tls.self_signed`` makes server certificates only (its extended key
usage is serverAuth); mTLS needs a clientAuth one, and chain-depth checks need
CAs, so these tests issue their own.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ingressd.policy.tls import server_context


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...] = ()  # intermediates above ``cert``, nearest first

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def chain_pem(self) -> bytes:
        """The certificate and its intermediates, as a server presents them."""
        return self.cert_pem + b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in self.chain
        )

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def issue(
    common_name: str,
    *,
    issuer: Issued | None = None,
    ca: bool = False,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
    client: bool = False,
) -> Issued:
    """A CA (``ca=True``), or a server (or ``client``) leaf; self-signed without ``issuer``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    san += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    signer = issuer.key if issuer else key
    cert = builder.sign(signer, hashes.SHA256())
    chain = (
        () if issuer is None or issuer.cert.subject == issuer.cert.issuer else issuer_chain(issuer)
    )
    return Issued(cert, key, chain)


def issuer_chain(issuer: Issued) -> tuple[x509.Certificate, ...]:
    """The intermediates a leaf signed by ``issuer`` presents: ``issuer`` and its own."""
    return (issuer.cert, *issuer.chain)


def tls_server(issued: Issued, client_ca: bytes | None = None) -> ssl.SSLContext:
    """A server context presenting ``issued`` (and its chain); requiring a client
    certificate signed by ``client_ca`` when given."""
    ctx = server_context(issued.chain_pem, issued.key_pem)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=client_ca.decode())
    return ctx


def secret(
    name: str,
    *,
    namespace: str = "default",
    secret_type: str = "Opaque",
    **data: bytes,
) -> dict[str, Any]:
    """A Secret with ``data`` keys (``ca_crt`` -> ``ca.crt``, ``tls_crt`` -> ``tls.crt``…)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": secret_type,
        "data": {k.replace("_", "."): base64.b64encode(v).decode() for k, v in data.items()},
    }
