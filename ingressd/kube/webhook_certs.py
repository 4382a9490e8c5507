"""The admission webhook's serving certificate: made, kept and rotated by ingressd itself.

A self-signed CA and a serving certificate for ``SERVICE.NAMESPACE.svc``, both
kept in one Secret (type Opaque: the TLS Secret watch never holds it, and no
Ingress can name it as its certificate), so that no Job such as ingress-nginx's
kube-webhook-certgen is needed. The leader creates the Secret when it is absent,
keeps it while it is valid, and replaces it once less than a third of its
lifetime is left (or it is unusable: unparsable, the wrong names, not signed by
its CA); then it patches the ``ValidatingWebhookConfiguration``'s ``caBundle``
to the CA. Every replica reads the Secret and serves with it.

A rotation makes a new CA too, and keeps the previous CA in the Secret while it
is still valid: the ``caBundle`` holds both, so the API server trusts replicas
that still serve the old certificate until they have read the new one.

Only the ``cryptography`` package is used: no program is run, no file is read.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .kubeclient import REQUEST_TIMEOUT

log = logging.getLogger("ingressd.admission")

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CERT = "tls.crt"
KEY = "tls.key"
PREVIOUS_CA = "ca-previous.crt"
# Renewed once less than this share of the lifetime is left.
RENEW_SHARE = 1 / 3
# The clock of the API server may be behind ours.
BACKDATE = dt.timedelta(minutes=5)
# A Secret of ours holds five PEM blocks, a few KiB; anything far larger is not ours.
MAX_SECRET_VALUE = 64 * 1024


@dataclass(frozen=True, slots=True)
class CertBundle:
    ca_pem: bytes
    ca_key_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    previous_ca_pem: bytes = b""  # trusted in the caBundle until it expires


def dns_names(service: str, namespace: str) -> tuple[str, ...]:
    """The names the API server may dial the Service by; it checks ``SERVICE.NAMESPACE.svc``."""
    return (service, f"{service}.{namespace}", f"{service}.{namespace}.svc")


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def issue(
    service: str,
    namespace: str,
    lifetime: dt.timedelta,
    now: dt.datetime | None = None,
    previous_ca_pem: bytes = b"",
) -> CertBundle:
    """A new CA and a serving certificate it signed, both valid for ``lifetime``."""
    start = (now or dt.datetime.now(dt.UTC)) - BACKDATE
    end = start + BACKDATE + lifetime
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ingressd"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"ingressd admission CA {namespace}/{service}"),
        ]
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = dns_names(service, namespace)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[-1])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return CertBundle(
        ca.public_bytes(pem),
        _key_pem(ca_key),
        cert.public_bytes(pem),
        _key_pem(key),
        previous_ca_pem,
    )


# -- reading and judging a bundle ----------------------------------------------------------------


def from_secret(secret: dict[str, Any] | None) -> CertBundle | None:
    """The bundle a Secret holds; None when it lacks one of the four values."""
    data = (secret or {}).get("data")
    if not isinstance(data, dict):
        return None
    values: dict[str, bytes] = {}
    for key in (CA_CERT, CA_KEY, CERT, KEY, PREVIOUS_CA):
        raw = data.get(key)
        if not isinstance(raw, str) or len(raw) > MAX_SECRET_VALUE:
            continue
        try:
            values[key] = base64.b64decode(raw, validate=True)
        except ValueError:
            continue
    if not all(k in values for k in (CA_CERT, CA_KEY, CERT, KEY)):
        return None
    return CertBundle(
        values[CA_CERT], values[CA_KEY], values[CERT], values[KEY], values.get(PREVIOUS_CA, b"")
    )


def secret_data(bundle: CertBundle) -> dict[str, str]:
    data = {
        CA_CERT: bundle.ca_pem,
        CA_KEY: bundle.ca_key_pem,
        CERT: bundle.cert_pem,
        KEY: bundle.key_pem,
    }
    if bundle.previous_ca_pem:
        data[PREVIOUS_CA] = bundle.previous_ca_pem
    return {k: base64.b64encode(v).decode() for k, v in data.items()}


def _spent(cert: x509.Certificate, now: dt.datetime) -> bool:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return now >= end - (end - start) * RENEW_SHARE


def renewal_reason(
    bundle: CertBundle | None, service: str, namespace: str, now: dt.datetime | None = None
) -> str | None:
    """Why the bundle must be replaced, or None while it is good."""
    if bundle is None:
        return "no certificate yet"
    now = now or dt.datetime.now(dt.UTC)
    try:
        ca = x509.load_pem_x509_certificate(bundle.ca_pem)
        cert = x509.load_pem_x509_certificate(bundle.cert_pem)
        key = serialization.load_pem_private_key(bundle.key_pem, None)
        ca_key = serialization.load_pem_private_key(bundle.ca_key_pem, None)
    except (ValueError, TypeError) as exc:
        return f"unreadable: {exc}"
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "the certificate is not signed by the CA"
    if key.public_key() != cert.public_key() or ca_key.public_key() != ca.public_key():
        return "a key does not match its certificate"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    wanted = dns_names(service, namespace)[-1]
    if wanted not in san.get_values_for_type(x509.DNSName):
        return f"the certificate does not name {wanted}"
    for what, c in (("the certificate", cert), ("the CA", ca)):
        if _spent(c, now):
            return (
                f"{what} expires {c.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC (rotated "
                "once less than a third of its lifetime is left)"
            )
    return None


def ca_bundle(bundle: CertBundle, now: dt.datetime | None = None) -> bytes:
    """What the API server is to trust: the CA, and the previous one while it is valid."""
    out = bundle.ca_pem
    if bundle.previous_ca_pem and bundle.previous_ca_pem != bundle.ca_pem:
        try:
            previous = x509.load_pem_x509_certificate(bundle.previous_ca_pem)
        except ValueError:
            return out
        if previous.not_valid_after_utc > (now or dt.datetime.now(dt.UTC)):
            out += b"" if out.endswith(b"\n") else b"\n"
            out += bundle.previous_ca_pem
    return out


# -- the Secret and the ValidatingWebhookConfiguration (blocking; run in an executor) -----------


class WebhookCertificates:
    """The leader's writes and every replica's reads of the two objects."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        secret: str,
        webhook: str,
        service: str,
        lifetime: dt.timedelta,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.admission = client.AdmissionregistrationV1Api(api)
        self.namespace = namespace
        self.secret = secret
        self.webhook = webhook
        self.service = service
        self.lifetime = lifetime
        self._missing_webhook_said = False

    def read(self) -> CertBundle | None:
        """Every replica: the bundle in the Secret (None while there is none)."""
        secret = self._get_secret()
        return from_secret(secret)

    def ensure(self, now: dt.datetime | None = None) -> CertBundle | None:
        """The leader: create or rotate the Secret as needed, then set the caBundle.
        Returns the bundle now stored (None when a write lost a race: read next time)."""
        secret = self._get_secret()
        bundle = from_secret(secret)
        reason = renewal_reason(bundle, self.service, self.namespace, now)
        if reason is not None:
            # Trusted beside the new CA while replicas still serve what it signed
            # (ca_bundle() leaves it out once it is expired or unreadable).
            previous = bundle.ca_pem if bundle is not None else b""
            new = issue(self.service, self.namespace, self.lifetime, now, previous)
            if not self._write(secret, new):
                return None
            log.info(
                "admission certificate in Secret %s/%s %s: %s",
                self.namespace,
                self.secret,
                "created" if secret is None else "rotated",
                reason,
            )
            bundle = new
        assert bundle is not None
        self.set_ca_bundle(ca_bundle(bundle, now))
        return bundle

    def set_ca_bundle(self, pem: bytes) -> bool:
        """Patch every webhook of the ValidatingWebhookConfiguration whose caBundle differs."""
        try:
            response = self.admission.read_validating_webhook_configuration(
                self.webhook, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            if not self._missing_webhook_said:
                self._missing_webhook_said = True
                log.warning(
                    "ValidatingWebhookConfiguration %s not found: its caBundle is not set "
                    "(apply deploy/admission.yaml)",
                    self.webhook,
                )
            return False
        self._missing_webhook_said = False
        current = json.loads(response.data)  # type: ignore[attr-defined]
        wanted = base64.b64encode(pem).decode()
        ops: list[dict[str, Any]] = []
        for i, hook in enumerate(current.get("webhooks") or []):
            if ((hook or {}).get("clientConfig") or {}).get("caBundle") != wanted:
                ops.append(
                    {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": wanted}
                )
        if not ops:
            return False
        rv = (current.get("metadata") or {}).get("resourceVersion")
        if rv:
            # The webhooks were counted on this version: a concurrent edit fails the patch.
            ops.insert(0, {"op": "test", "path": "/metadata/resourceVersion", "value": rv})
        self.admission.patch_validating_webhook_configuration(
            self.webhook,
            ops,
            _content_type="application/json-patch+json",
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
        log.info("caBundle of ValidatingWebhookConfiguration %s set", self.webhook)
        return True

    def _get_secret(self) -> dict[str, Any] | None:
        try:
            response = self.core.read_namespaced_secret(
                self.secret,
                self.namespace,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        # _preload_content=False: the raw urllib3 response, its body unparsed
        secret: dict[str, Any] = json.loads(response.data)  # type: ignore[arg-type]
        return secret

    def _write(self, secret: dict[str, Any] | None, bundle: CertBundle) -> bool:
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": self.secret,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "ingressd"},
            },
            "type": "Opaque",
            "data": secret_data(bundle),
        }
        try:
            if secret is None:
                self.core.create_namespaced_secret(
                    self.namespace,
                    body,  # type: ignore[arg-type]  # a dict is sent as JSON as it is
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            else:
                # The resourceVersion read makes the replacement a compare-and-swap.
                meta = secret.get("metadata") or {}
                body["metadata"]["resourceVersion"] = meta.get("resourceVersion")
                body["metadata"]["labels"] = {
                    **(meta.get("labels") or {}),
                    **body["metadata"]["labels"],
                }
                body["metadata"]["annotations"] = meta.get("annotations") or {}
                body["type"] = secret.get("type") or "Opaque"  # a Secret's type cannot change
                self.core.replace_namespaced_secret(
                    self.secret,
                    self.namespace,
                    body,  # type: ignore[arg-type]
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                )
        except ApiException as exc:
            if exc.status in (409, 422):
                return False  # another writer was first; its Secret is read next time
            raise
        return True
