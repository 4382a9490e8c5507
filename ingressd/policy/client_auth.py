"""``auth-tls-*``: client certificate authentication (mTLS), as ingress-nginx v1.15.1.

The Secret (``auth-tls-secret``, in the Ingress's namespace as ingress-nginx's
default ``allow-cross-namespace-resources: false`` wants) holds the CA bundle
under ``ca.crt`` and optionally a CRL under ``ca.crl``
(``internal/ingress/controller/store/backend_ssl.go``: any Secret type). It is
server-wide in ingress-nginx (``controller.go`` createServers: the oldest
Ingress of a host whose auth-tls has a CA configures ``server.CertificateAuth``):
the certificate is asked for in the handshake of the host's SNI name
(``client_tls.py``), then each request of the host is judged as nginx judges it
(``ngx_http_process_request``, nginx.tmpl):

- no certificate with ``on``: 400 "No required SSL certificate was sent" (496);
- a certificate OpenSSL did not verify (wrong CA, expired, revoked, a chain
  longer than ``auth-tls-verify-depth``): 400 "The SSL certificate error"
  (495), unless ``optional_no_ca`` and the only fault is the issuer;
- both go to ``auth-tls-error-page`` instead when set (302, nginx's
  ``error_page 495 496 = URL``);
- ``auth-tls-match-cn``: the subject DN must match, else 403
  "client certificate unauthorized";
- the upstream gets ``ssl-client-verify`` (``SUCCESS``, ``NONE``,
  ``FAILED:reason``), ``ssl-client-subject-dn``, ``ssl-client-issuer-dn`` and,
  with ``auth-tls-pass-certificate-to-upstream``, ``ssl-client-cert`` (the PEM,
  URL-encoded as nginx's ``$ssl_client_escaped_cert``). A client's own headers
  of these names never reach it.

A Secret that cannot be used (missing, no ``ca.crt``, not PEM, another
namespace), or a machine where certificates cannot be asked for, makes every
route of the Ingress's hosts answer 503 (reported), never serve without the check.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..model.policy import ClientAuth
from . import client_tls
from .tls import TLSError, secret_value

if TYPE_CHECKING:
    from ..model.objects import Snapshot
    from ..model.policy import RoutePolicy

_DENIED = 503  # ingress-nginx's LocationDenied


def resolve(snap: Snapshot, namespace: str, policy: RoutePolicy) -> tuple[RoutePolicy, list[str]]:
    """The policy with its CA Secret loaded (``client_auth``), or failing closed."""
    ref = policy.client_auth_ref
    if ref is None:
        return policy, []
    ns = ref.namespace or namespace
    where = f"auth-tls-secret {ns}/{ref.secret}"
    if ns != namespace:
        # ingress-nginx: "cross namespace secrets are not supported" (LocationDenied).
        return _deny(policy, f"{where} is in another namespace than the Ingress ({namespace})")
    unavailable = client_tls.available()
    if unavailable is not None:
        return _deny(policy, f"{where}: {unavailable}")
    secret = snap.get("Secret", ns, ref.secret)
    if secret is None:
        return _deny(policy, f"{where} not found")
    try:
        ca = secret_value(secret, "ca.crt")
        crl = secret_value(secret, "ca.crl")
    except TLSError as exc:
        return _deny(policy, f"{where}: {exc}")
    problem = _check_material(ca, crl)
    if problem is not None:
        return _deny(policy, f"{where}: {problem}")
    assert ca is not None
    pem = ca.rstrip(b"\n") + b"\n" + (crl.rstrip(b"\n") + b"\n" if crl else b"")
    digest = hashlib.sha256()
    for part in (pem, ref.verify.encode(), str(ref.depth).encode()):
        digest.update(len(part).to_bytes(8, "big") + part)
    auth = ClientAuth(ref, f"{ns}/{ref.secret}", pem, bool(crl), digest.digest())
    return replace(policy, client_auth=auth), []


def _check_material(ca: bytes | None, crl: bytes | None) -> str | None:
    """Why the CA bundle or CRL cannot be used (as backend_ssl.go checks them), or None."""
    if not ca:
        return "has no ca.crt (the CA certificates that client certificates must chain to)"
    try:
        certs = x509.load_pem_x509_certificates(ca)
    except ValueError as exc:
        return f"ca.crt is not PEM certificates ({exc})"
    if crl:
        try:
            x509.load_pem_x509_crl(crl)
        except ValueError as exc:
            return f"ca.crl is not a PEM CRL ({exc})"
    if not certs:
        return "ca.crt holds no certificate"
    return None


def _deny(policy: RoutePolicy, reason: str) -> tuple[RoutePolicy, list[str]]:
    denied = (_DENIED, reason)
    policy = replace(
        policy,
        client_auth=None,
        fail_closed=policy.fail_closed or denied,
        host_fail_closed=policy.host_fail_closed or denied,
    )
    return policy, [f"{reason}; every route of its hosts answers 503"]


# -- a connection's certificate, judged -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a connection's client certificate came to under one ClientAuth."""

    status: int  # 0: may go on; 495, 496 (nginx's codes, answered 400); 421: set up otherwise
    verify: bytes  # $ssl_client_verify: SUCCESS, NONE, FAILED:reason
    subject_dn: bytes = b""  # $ssl_client_s_dn (RFC 4514), b"" without a certificate
    issuer_dn: bytes = b""
    escaped_pem: bytes = b""  # $ssl_client_escaped_cert

    def headers(self, auth: ClientAuth) -> tuple[tuple[bytes, bytes], ...]:
        """For the upstream request; an empty value removes the client's own."""
        cert = self.escaped_pem if auth.ref.pass_certificate else b""
        return (
            (b"ssl-client-verify", self.verify),
            (b"ssl-client-subject-dn", self.subject_dn),
            (b"ssl-client-issuer-dn", self.issuer_dn),
            (b"ssl-client-cert", cert),
        )


NO_CERTIFICATE = Verdict(0, b"NONE")

# Verdicts of full handshakes by (ClientAuth.key, digest of the chain): a resumed
# session is judged by its first handshake's verdict under the same settings, and
# by nothing else (a session set up for another host does not carry over).
_CACHE_SIZE = 4096
_verdicts: OrderedDict[tuple[bytes, bytes], tuple[int, str]] = OrderedDict()
_verdicts_lock = threading.Lock()


def judge(sslobj: object | None, auth: ClientAuth) -> Verdict:
    """The connection's client certificate under ``auth`` (kept on the connection)."""
    if sslobj is None:
        return _missing(auth)
    known = getattr(sslobj, "ingressd_verdict", None)
    if known is not None and known[0] == auth.key:
        verdict: Verdict = known[1]
        return verdict
    found = _judge(sslobj, auth)
    sslobj.ingressd_verdict = (auth.key, found)  # type: ignore[attr-defined]
    return found


def _missing(auth: ClientAuth) -> Verdict:
    return Verdict(496, b"NONE") if auth.ref.verify == "on" else NO_CERTIFICATE


def _judge(sslobj: object, auth: ClientAuth) -> Verdict:
    tag = client_tls.context_tag(sslobj)
    peer = sslobj.getpeercert(binary_form=True)  # type: ignore[attr-defined]
    if tag != auth.key:
        if tag is None:
            return _missing(auth)  # no certificate was asked for in this handshake
        # Set up under other settings (the host's changed since): a new connection is.
        return Verdict(421, b"NONE")
    if not peer:
        return _missing(auth)
    chain = _chain(sslobj, peer)
    key = (auth.key, hashlib.sha256(b"".join(chain)).digest())
    if sslobj.session_reused:  # type: ignore[attr-defined]
        with _verdicts_lock:
            found = _verdicts.get(key)
        code, words = found if found is not None else (-1, "session not verified for this host")
    else:
        code, words = client_tls.verify_result(sslobj)
        with _verdicts_lock:
            _verdicts[key] = (code, words)
            _verdicts.move_to_end(key)
            while len(_verdicts) > _CACHE_SIZE:
                _verdicts.popitem(last=False)
    cert = x509.load_der_x509_certificate(peer)
    ok = code == client_tls.X509_V_OK or (
        auth.ref.verify == "optional_no_ca" and code in client_tls.OPTIONAL_NO_CA_ERRORS
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return Verdict(
        0 if ok else 495,
        b"SUCCESS" if code == client_tls.X509_V_OK else _safe("FAILED:" + words),
        _safe(cert.subject.rfc4514_string()),
        _safe(cert.issuer.rfc4514_string()),
        # nginx's ngx_escape_uri(NGX_ESCAPE_URI_COMPONENT): all but A-Z a-z 0-9 - . _ ~
        quote(pem, safe="").encode("ascii"),
    )


def _chain(sslobj: object, peer: bytes) -> list[bytes]:
    inner = getattr(sslobj, "_sslobj", sslobj)
    get = getattr(sslobj, "get_unverified_chain", None) or getattr(
        inner, "get_unverified_chain", None
    )
    chain = get() if get is not None else None
    if not chain:
        return [peer]
    return [c if isinstance(c, bytes) else c.public_bytes(2) for c in chain]  # 2: DER


def _safe(text: str) -> bytes:
    """A header value: UTF-8, control characters escaped as RFC 4514 does (``\\0A``)."""
    out = (f"\\{ord(c):02X}" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in text)
    return "".join(out).encode()


def matches_cn(auth: ClientAuth, verdict: Verdict) -> bool:
    """auth-tls-match-cn (nginx.tmpl: ``$ssl_client_s_dn !~ MatchCN`` answers 403)."""
    pattern = auth.ref.match_cn
    return pattern is None or pattern.matches_bytes(verdict.subject_dn)
