"""TLS to upstreams: ``backend-protocol: HTTPS``/``AUTO_HTTP``/``GRPCS`` and ``proxy-ssl-*``.

The builder resolves an Ingress's ``proxy-ssl-secret`` from the snapshot and
turns it, with the other ``proxy-ssl-*`` annotations, into an ``UpstreamTLS``
kept on the route's policy: the ``ssl.SSLContext`` is made there, once per
(CA, client certificate, verify) and reused by every route and every rebuild
that asks for the same, never per request. The proxy connects with it and calls
``check_peer`` after the handshake.

As in ingress-nginx:

* without ``proxy-ssl-secret`` every other ``proxy-ssl-*`` annotation is
  ignored (and ingressd says so);
* ``proxy-ssl-verify`` and ``proxy-ssl-verify-depth`` apply only when the
  Secret has a ``ca.crt`` (nginx's ``proxy_ssl_verify`` needs a trusted CA);
* SNI is sent only with ``proxy-ssl-server-name: "on"``;
* a ``proxy-ssl-secret`` that is missing, unreadable or in another namespace
  denies the Ingress's locations: its routes answer 503.

``GRPCS`` is TLS offering ALPN ``h2`` (nginx's ``grpc_pass grpcs://``), with the
same ``proxy-ssl-*`` handling: its contexts are made apart from HTTP/1.1 ones,
which offer no ALPN, so neither is handed out for the other.

Python cannot check a name other than the SNI it sends, nor limit the chain
depth, inside the handshake: with verification on, the context verifies the
chain and ``check_peer`` then checks the certificate's name (``proxy-ssl-name``,
else the endpoint's address or host name) and the number of intermediate CAs.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import ssl
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from cryptography import x509

from ..model.policy import ProxySSL, UpstreamTLS
from ..model.table import name_matches
from .tls import (
    TLS_SECRET_TYPE,
    DirectSSLObject,
    TLSError,
    certificate_names,
    load_key_pair,
    secret_value,
)

if TYPE_CHECKING:
    from ..model.backend import Endpoint
    from ..model.objects import Snapshot
    from ..model.policy import RoutePolicy

# ingress-nginx's values of backend-protocol; the last two are not spoken by ingressd.
PROTOCOLS = ("HTTP", "HTTPS", "AUTO_HTTP", "GRPC", "GRPCS", "FCGI", "AJP")
UNSUPPORTED_PROTOCOLS = frozenset({"FCGI", "AJP"})
TLS_PROTOCOLS = frozenset({"HTTPS", "AUTO_HTTP", "GRPCS"})
# Spoken over HTTP/2 (proxy/upstream_h2.py): GRPC as h2c with prior knowledge,
# GRPCS as TLS with ALPN h2.
H2_PROTOCOLS = frozenset({"GRPC", "GRPCS"})
H2_ALPN = ("h2",)


class UpstreamTLSError(ssl.SSLError):
    """The upstream's certificate failed a check made after the handshake."""


@dataclass(frozen=True, slots=True)
class SecretMaterial:
    """The PEM blocks of a proxy-ssl-secret; empty values count as absent."""

    secret: str  # "namespace/name"
    ca: bytes | None  # ca.crt: CAs to verify the upstream with
    cert: bytes | None  # tls.crt and tls.key: the client certificate (mTLS)
    key: bytes | None

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (self.ca, self.cert, self.key):
            h.update(b"-" if part is None else hashlib.sha256(part).digest())
        return h.hexdigest()


def check_peer(tls: UpstreamTLS, ssl_object: Any, endpoint: Endpoint) -> None:
    """The certificate's name and chain depth, after the handshake; raise UpstreamTLSError."""
    if not tls.verify or ssl_object is None:
        return
    name = tls.name or endpoint.host
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise UpstreamTLSError("the upstream presented no certificate")
    cert = x509.load_der_x509_certificate(der)
    if not certificate_matches(cert, name):
        names = ", ".join(_cert_names(cert)) or "nothing"
        raise UpstreamTLSError(
            f"certificate verify failed: the certificate is not valid for {name!r} "
            f"(it names {names})"
        )
    chain = _verified_chain(ssl_object)
    if chain is not None:
        # The chain runs from the upstream's certificate to the trusted CA;
        # OpenSSL's depth counts the CAs between them.
        intermediates = max(len(chain) - 2, 0)
        if intermediates > tls.verify_depth:
            raise UpstreamTLSError(
                f"certificate verify failed: the chain has {intermediates} intermediate "
                f"CAs, proxy-ssl-verify-depth allows {tls.verify_depth}"
            )


def certificate_matches(cert: x509.Certificate, name: str) -> bool:
    """Whether ``cert`` is for ``name``: an IP address against its IP SANs, else
    a DNS name against its DNS SANs (or the CN without a SAN), ``*.`` for one label."""
    try:
        ip = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        ip = None
    if ip is not None:
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return False
        return ip in san.value.get_values_for_type(x509.IPAddress)
    host = name.lower().rstrip(".")
    return any(name_matches(n, host) for n in certificate_names(cert))


def _cert_names(cert: x509.Certificate) -> list[str]:
    names = list(certificate_names(cert))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return names
    return names + [str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)]


def _verified_chain(ssl_object: Any) -> list[Any] | None:
    # Public from Python 3.13 (SSLObject.get_verified_chain); the C object has it since 3.10.
    getter = getattr(ssl_object, "get_verified_chain", None)
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_verified_chain", None)
    if getter is None:
        return None
    try:
        return list(getter() or ())
    except (ssl.SSLError, ValueError):
        return None


_SSL_SUFFIX = re.compile(r"\s*\(_ssl\.c:\d+\)$")


def describe_error(exc: BaseException) -> str:
    """A TLS failure in words, without the C source location."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, UpstreamTLSError):
        return str(exc.args[0]) if exc.args else "certificate check failed"
    text = str(exc.args[1]) if isinstance(exc, OSError) and len(exc.args) > 1 else str(exc)
    return _SSL_SUFFIX.sub("", text) or type(exc).__name__


# -- the Secret -------------------------------------------------------------------------


def load_secret(secret: dict[str, Any]) -> SecretMaterial:
    """ca.crt and/or tls.crt + tls.key of a proxy-ssl-secret; TLSError when unusable.

    Any Secret type is read. (In cluster mode ingressd watches only
    ``kubernetes.io/tls`` Secrets, so there a CA-only Secret must be of that
    type, with empty ``tls.crt`` and ``tls.key``.)
    """
    meta = secret.get("metadata") or {}
    name = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
    ca = secret_value(secret, "ca.crt") or None
    cert = secret_value(secret, "tls.crt") or None
    key = secret_value(secret, "tls.key") or None
    if (cert is None) != (key is None):
        have, lack = ("tls.crt", "tls.key") if key is None else ("tls.key", "tls.crt")
        raise TLSError(f"Secret {name} has {have} but no {lack}")
    if ca is None and cert is None:
        raise TLSError(f"Secret {name} has neither ca.crt nor tls.crt and tls.key")
    if ca is not None:
        try:
            x509.load_pem_x509_certificates(ca)
        except ValueError as exc:
            raise TLSError(
                f"Secret {name}: ca.crt is not a PEM certificate bundle ({exc})"
            ) from exc
    material = SecretMaterial(name, ca, cert, key)
    if cert is not None:
        _context(material, verify=False)  # loads the pair: a mismatch is reported now
    return material


def _secret_for(snap: Snapshot, namespace: str, ref: ProxySSL) -> SecretMaterial:
    ns = ref.namespace or namespace
    if ns != namespace:
        raise TLSError(
            f"Secret {ns}/{ref.secret} is not in the Ingress's namespace {namespace}; as in "
            "ingress-nginx (allow-cross-namespace-resources: false), other namespaces are refused"
        )
    secret = snap.get("Secret", ns, ref.secret)
    if secret is None:
        raise TLSError(
            f"Secret {ns}/{ref.secret} not found (in cluster mode ingressd sees only Secrets "
            f"of type {TLS_SECRET_TYPE})"
        )
    return load_secret(secret)


# -- proxy-ssl-protocols, proxy-ssl-ciphers ----------------------------------------------

# proxyssl/main.go validates ^(SSLv2|SSLv3|TLSv1|TLSv1\.1|TLSv1\.2|TLSv1\.3| )*$. ingressd
# speaks TLS 1.2 and 1.3 to upstreams: the older names are accepted and left out.
_OLD_PROTOCOLS = frozenset({"SSLv2", "SSLv3", "TLSv1", "TLSv1.1"})
_TLS_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
DEFAULT_CIPHERS = "DEFAULT"  # proxyssl/main.go defaultProxySSLCiphers
DEFAULT_PROTOCOLS = ("TLSv1.2", "TLSv1.3")


def parse_ssl_protocols(value: str) -> tuple[str, ...]:
    """proxy-ssl-protocols: the TLS versions ingressd may use, lowest first."""
    names = value.split()
    if not names or len(names) > 8:
        raise ValueError(f"{value[:100]!r} is not a list of TLS versions")
    for name in names:
        if name not in _TLS_VERSIONS and name not in _OLD_PROTOCOLS:
            raise ValueError(f"{name[:20]!r} is not one of SSLv2, SSLv3, TLSv1 … TLSv1.3")
    kept = sorted({n for n in names if n in _TLS_VERSIONS})
    if not kept:
        raise ValueError(f"{value[:100]!r}: ingressd speaks only TLSv1.2 and TLSv1.3 to upstreams")
    return tuple(kept)


# -- contexts ---------------------------------------------------------------------------

# Contexts by (secret material, verify); UpstreamTLS by its key. Bounded, so
# rotated Secrets do not pile up; a rebuild that keeps a Secret keeps its context.
_CACHE_SIZE = 1024
_cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_cache_lock = threading.Lock()


def _cached(key: tuple[Any, ...], make: Any) -> Any:
    with _cache_lock:
        value = _cache.get(key)
        if value is not None:
            _cache.move_to_end(key)
            return value
    value = make()
    with _cache_lock:
        value = _cache.setdefault(key, value)
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return value


def _context(
    material: SecretMaterial | None,
    verify: bool,
    alpn: tuple[str, ...] = (),
    ciphers: str = DEFAULT_CIPHERS,
    protocols: tuple[str, ...] = DEFAULT_PROTOCOLS,
) -> ssl.SSLContext:
    digest = material.digest if material is not None else ""
    return _cached(
        ("context", digest, verify, alpn, ciphers, protocols),
        lambda: _make_context(material, verify, alpn, ciphers, protocols),
    )


def _make_context(
    material: SecretMaterial | None,
    verify: bool,
    alpn: tuple[str, ...] = (),
    ciphers: str = DEFAULT_CIPHERS,
    protocols: tuple[str, ...] = DEFAULT_PROTOCOLS,
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.sslobject_class = DirectSSLObject
    # proxy_ssl_protocols: the lowest and highest listed (a gap cannot be expressed).
    ctx.minimum_version = _TLS_VERSIONS[protocols[0]]
    ctx.maximum_version = _TLS_VERSIONS[protocols[-1]]
    if ciphers != DEFAULT_CIPHERS:
        # proxy_ssl_ciphers: OpenSSL's list for TLS 1.2 (TLS 1.3 suites are not named
        # by it, as with nginx). Validated by the annotation parser.
        try:
            ctx.set_ciphers(ciphers)
        except ssl.SSLError as exc:
            raise TLSError(f"proxy-ssl-ciphers {ciphers!r}: {exc}") from exc
    if alpn:
        # GRPCS: nginx's grpc_pass grpcs:// offers h2 by ALPN; gRPC servers
        # refuse a handshake without it. HTTP/1.1 contexts offer nothing, as
        # nginx's proxy_pass https:// does.
        ctx.set_alpn_protocols(list(alpn))
    # The name is checked by check_peer: it need not be the SNI sent.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    name = material.secret if material is not None else ""
    if verify and material is not None and material.ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            ctx.load_verify_locations(cadata=material.ca.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as exc:
            raise TLSError(f"Secret {name}: ca.crt cannot be used ({exc})") from exc
    if material is not None and material.cert is not None and material.key is not None:
        _load_pair(ctx, material.cert, material.key, name)
    return ctx


def _load_pair(ctx: ssl.SSLContext, cert: bytes, key: bytes, name: str) -> None:
    try:
        load_key_pair(ctx, cert, key)
    except (ssl.SSLError, ValueError) as exc:
        raise TLSError(
            f"Secret {name}: tls.crt and tls.key are not a matching PEM certificate "
            f"and unencrypted key ({exc})"
        ) from exc


def upstream_tls(
    material: SecretMaterial | None, ref: ProxySSL | None, alpn: tuple[str, ...] = ()
) -> UpstreamTLS:
    """The UpstreamTLS for a Secret (or none: no verification, no client
    certificate); ``alpn``: the protocols offered (``H2_ALPN`` for GRPCS)."""
    verify = bool(ref is not None and ref.verify and material is not None and material.ca)
    depth = ref.verify_depth if ref is not None else 1
    name = ref.name if ref is not None else None
    sni = bool(ref is not None and ref.server_name)
    digest = material.digest if material is not None else ""
    # nginx.tmpl writes proxy_ssl_ciphers and proxy_ssl_protocols only beside a ca.crt.
    with_ca = ref is not None and material is not None and material.ca is not None
    ciphers = ref.ciphers if with_ca and ref is not None else DEFAULT_CIPHERS
    protocols = ref.protocols if with_ca and ref is not None else DEFAULT_PROTOCOLS
    key = (
        digest,
        verify,
        depth if verify else 0,
        name if (verify or sni) else None,
        sni,
        ciphers,
        protocols,
        alpn,
    )
    return _cached(
        ("upstream", *key),
        lambda: UpstreamTLS(
            context=_context(material, verify, alpn, ciphers, protocols),
            verify=verify,
            verify_depth=depth,
            name=name,
            server_name=sni,
            secret=material.secret if material is not None else None,
            key=key,
        ),
    )


def resolve(snap: Snapshot, namespace: str, policy: RoutePolicy) -> tuple[RoutePolicy, list[str]]:
    """The policy with its upstream TLS (or failing closed), and what to report.

    Called by the builder for every Ingress, with the Ingress's namespace.
    """
    ref = policy.proxy_ssl
    wants_tls = policy.backend_protocol in TLS_PROTOCOLS
    alpn = H2_ALPN if policy.backend_protocol == "GRPCS" else ()
    if ref is None:
        if not wants_tls:
            return policy, []
        return replace(policy, upstream_tls=upstream_tls(None, None, alpn)), []
    try:
        material = _secret_for(snap, namespace, ref)
        tls = upstream_tls(material, ref, alpn)
    except TLSError as exc:
        reason = f"proxy-ssl-secret: {exc}"
        if policy.fail_closed is None:
            policy = replace(policy, fail_closed=(503, reason))
        return policy, [f"{reason}; its routes answer 503"]
    messages = []
    if not wants_tls:
        messages.append(
            f"proxy-ssl-secret has no effect with backend-protocol {policy.backend_protocol} "
            "(ingress-nginx ignores it too): set HTTPS, AUTO_HTTP or GRPCS to use TLS to the "
            "upstream"
        )
        return policy, messages
    if material.ca is None and ref.verify:
        messages.append(
            f"proxy-ssl-verify has no effect: Secret {material.secret} has no ca.crt "
            "(as in ingress-nginx, the upstream's certificate is not verified)"
        )
    if material.ca is None and (ref.ciphers, ref.protocols) != (DEFAULT_CIPHERS, DEFAULT_PROTOCOLS):
        messages.append(
            f"proxy-ssl-ciphers and proxy-ssl-protocols have no effect: Secret "
            f"{material.secret} has no ca.crt (nginx.tmpl sets them only beside it)"
        )
    return replace(policy, upstream_tls=tls), messages
