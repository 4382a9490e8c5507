"""TLS: certificates from Secrets, the default certificate, and SNI selection."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import ipaddress
import logging
import math
import os
import ssl
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..model.globals import DEFAULT_TLS, TLSParams
from ..model.policy import ClientAuth
from ..model.table import RouteTable, TLSCertificate
from . import tls_session
from .client_tls import client_context, request_certificate

log = logging.getLogger("ingressd.tls")

TLS_SECRET_TYPE = "kubernetes.io/tls"


# (from, until) in POSIX seconds, both included: when an answer about a Secret holds.
Span = tuple[float, float]
ALWAYS: Span = (-math.inf, math.inf)


class TLSError(ValueError):
    def __init__(self, message: str, span: Span = ALWAYS) -> None:
        super().__init__(message)
        # Only a certificate's validity dates make the same Secret's answer change
        # with time; a builder that keeps answers between builds must know when.
        self.span = span


def secret_value(secret: dict[str, Any], key: str) -> bytes | None:
    """A Secret value as bytes, from ``stringData`` or base64 ``data``."""
    string_data = secret.get("stringData") or {}
    data = secret.get("data") or {}
    if not isinstance(string_data, dict) or not isinstance(data, dict):
        raise TLSError("data and stringData must be mappings")
    if key in string_data:
        return str(string_data[key]).encode()
    if key not in data:
        return None
    value = data[key] or ""
    if not isinstance(value, str | bytes):
        raise TLSError(f"data.{key} is not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TLSError(f"data.{key} is not valid base64") from exc


def load_certificate(secret: dict[str, Any], now: float | None = None) -> TLSCertificate:
    """Validate a ``kubernetes.io/tls`` Secret; raise TLSError saying what is wrong."""
    return load_certificate_span(secret, now)[0]


def load_certificate_span(
    secret: dict[str, Any], now: float | None = None
) -> tuple[TLSCertificate, Span]:
    """``load_certificate``, and the span of time in which the answer stays the same.

    A TLSError raised carries its own span.
    """
    meta = secret.get("metadata") or {}
    name = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
    stype = secret.get("type", "Opaque")
    if stype != TLS_SECRET_TYPE:
        raise TLSError(f"Secret {name} has type {stype!r}, want {TLS_SECRET_TYPE!r}")
    cert_pem = secret_value(secret, "tls.crt")
    key_pem = secret_value(secret, "tls.key")
    if not cert_pem or not key_pem:
        raise TLSError(f"Secret {name} lacks tls.crt or tls.key")
    pair = _key_pair(cert_pem, key_pem)
    if isinstance(pair, str):
        raise TLSError(f"Secret {name}: {pair}")
    now = dt.datetime.now(dt.UTC).timestamp() if now is None else now
    if pair.not_after < now:
        raise TLSError(
            f"Secret {name}: certificate expired at {_utc(pair.not_after)}",
            (math.nextafter(pair.not_after, math.inf), math.inf),
        )
    if pair.not_before > now:
        raise TLSError(
            f"Secret {name}: certificate is not valid before {_utc(pair.not_before)}",
            (-math.inf, math.nextafter(pair.not_before, -math.inf)),
        )
    cert = TLSCertificate(
        secret=name,
        cert_pem=cert_pem,
        key_pem=key_pem,
        dns_names=pair.dns_names,
        not_after=pair.not_after,
    )
    return cert, (pair.not_before, pair.not_after)


def _utc(when: float) -> str:
    return f"{dt.datetime.fromtimestamp(when, dt.UTC):%Y-%m-%d %H:%M:%SZ}"


@dataclass(frozen=True, slots=True)
class _KeyPair:
    """What a certificate and its key say, whichever Secret holds them, whenever asked."""

    dns_names: tuple[str, ...]
    not_before: float  # POSIX seconds
    not_after: float


# Parsed pairs by a digest of their PEM: parsing the chain and the key and
# comparing public keys is most of the cost of loading a Secret, and every build
# loads every TLS Secret again, mostly unchanged. Bounded (least recently used
# first out) so rotated certificates do not pile up; a digest, not the PEM, so
# an entry is small.
_PAIR_CACHE_SIZE = 8192
_pairs: OrderedDict[bytes, _KeyPair | str] = OrderedDict()
_pairs_lock = threading.Lock()


def _key_pair(cert_pem: bytes, key_pem: bytes) -> _KeyPair | str:
    """The parsed pair, or why it is unusable (a message to follow "Secret ns/name: ")."""
    digest = hashlib.sha256(len(cert_pem).to_bytes(8, "big") + cert_pem + key_pem).digest()
    with _pairs_lock:
        pair = _pairs.get(digest)
        if pair is not None:
            _pairs.move_to_end(digest)
            return pair
    pair = _parse_key_pair(cert_pem, key_pem)
    with _pairs_lock:
        _pairs[digest] = pair
        while len(_pairs) > _PAIR_CACHE_SIZE:
            _pairs.popitem(last=False)
    return pair


def _parse_key_pair(cert_pem: bytes, key_pem: bytes) -> _KeyPair | str:
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        return f"tls.crt is not a PEM certificate ({exc})"
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        return f"tls.key is not an unencrypted PEM key ({exc})"
    leaf = chain[0]
    if leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        return "tls.key does not match the certificate in tls.crt"
    return _KeyPair(
        dns_names=certificate_names(leaf),
        not_before=leaf.not_valid_before_utc.timestamp(),
        not_after=leaf.not_valid_after_utc.timestamp(),
    )


def certificate_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return tuple(sorted({str(n).lower().rstrip(".") for n in names}))  # str: CN may be bytes


def self_signed(
    common_name: str = "ingressd default certificate",
    dns_names: tuple[str, ...] = ("ingress.local",),
    days: float = 365,
    organization: str = "ingressd",
    not_before: dt.datetime | None = None,
    ip_addresses: tuple[str, ...] = (),
) -> tuple[bytes, bytes]:
    """A fresh self-signed (cert PEM, key PEM), like ingress-nginx's fake certificate.

    With no ``dns_names`` nor ``ip_addresses`` the certificate has no SAN, only
    the common name.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    san += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


# ALPN offers, in preference order: HTTP/2 first, as nginx's "listen ... ssl
# http2" (ingress-nginx's use-http2), unless turned off (--no-http2).
ALPN_H2 = ("h2", "http/1.1")
ALPN_H1 = ("http/1.1",)


class DirectSSLObject(ssl.SSLObject):
    """ssl.SSLObject whose ``read``, ``write`` and ``pending`` are the C object's own.

    ssl.SSLObject's are Python methods that only forward to the C object
    (Lib/ssl.py); uvloop's TLS transport takes them as bound methods right after
    ``wrap_bio`` and calls ``read`` at least twice per read event and ``write`` once
    per response, so each forward costs an interpreted frame per call. The C
    methods take the same arguments (``read(size[, buffer])``, ``write(data)``,
    ``pending()``) and raise the same errors, so these instance attributes serve
    in their place. Everything else is ssl.SSLObject's."""

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> DirectSSLObject:
        obj = super()._create(*args, **kwargs)  # type: ignore[misc]
        inner = obj._sslobj
        vars(obj).update(read=inner.read, write=inner.write, pending=inner.pending)
        return obj


def server_context(
    cert_pem: bytes,
    key_pem: bytes,
    alpn: tuple[str, ...] = ALPN_H1,
    params: TLSParams = DEFAULT_TLS,
) -> ssl.SSLContext:
    """A server SSLContext for one certificate, with the ConfigMap's TLS ``params``.

    By default TLS 1.2+ with ECDHE and AEAD ciphers only: what HTTP/2 requires
    too (RFC 9113 9.2), so a client offering h2 is never refused over its cipher.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.sslobject_class = DirectSSLObject
    ctx.set_alpn_protocols(list(alpn))
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    apply_params(ctx, params)
    load_key_pair(ctx, cert_pem, key_pem)
    return ctx


def apply_params(ctx: ssl.SSLContext, params: TLSParams) -> None:
    """ssl-protocols, ssl-ciphers and ssl-session-* on ``ctx`` (new handshakes).

    The handshake's versions and options are those of the listener's context, the
    one a connection starts with; the cipher list is the one of the context the SNI
    callback switches to (OpenSSL 3; tests/e2e/test_e2e_response_rewrite.py checks
    it, and a host's ssl-ciphers rely on it). So they are set on every context alike."""
    ctx.minimum_version = ssl.TLSVersion[params.min_version.replace(".", "_")]
    ctx.maximum_version = ssl.TLSVersion[params.max_version.replace(".", "_")]
    ctx.set_ciphers(params.ciphers)
    if params.session_tickets:
        ctx.options &= ~ssl.OP_NO_TICKET
    else:
        ctx.options |= ssl.OP_NO_TICKET
    if ctx.protocol == ssl.PROTOCOL_TLS_SERVER:
        why = tls_session.apply(
            ctx, params.session_cache, params.session_cache_bytes, params.session_timeout
        )
        if why is not None and why not in _SESSION_WARNED:
            _SESSION_WARNED.add(why)
            log.warning("ssl-session-cache/-size/-timeout not applied: %s", why)


_SESSION_WARNED: set[str] = set()  # each reason logged once per process


def load_key_pair(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """``ctx.load_cert_chain`` from memory; raises ssl.SSLError/ValueError as it does."""
    # ssl can only load keys from files: write them to a private directory for
    # the duration of the call.
    with tempfile.TemporaryDirectory(prefix="ingressd-tls-") as tmp:
        os.chmod(tmp, 0o700)
        cert_path = os.path.join(tmp, "tls.crt")
        key_path = os.path.join(tmp, "tls.key")
        with open(cert_path, "wb") as f:
            f.write(cert_pem)
        with open(os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(key_pem)
        ctx.load_cert_chain(cert_path, key_path)


def served_names(transport: object) -> tuple[str, ...]:
    """The names of the certificate a TLS connection got; (): the generated default."""
    sslobj = transport.get_extra_info("ssl_object")  # type: ignore[attr-defined]
    ctx = sslobj.context if sslobj is not None else None
    return getattr(ctx, "ingressd_names", ())


class CertificateSelector:
    """Picks the SSLContext for a handshake from the live table's certificates.

    Contexts are cached per certificate, so a table rebuild that keeps the same
    Secret reuses the context (and its session-ticket keys).
    """

    def __init__(
        self,
        table: Callable[[], RouteTable],
        default: tuple[bytes, bytes],
        http2: bool = True,
        *,
        serving: bool = True,
    ) -> None:
        self._table = table
        self._contexts: dict[tuple[bytes, bytes], ssl.SSLContext] = {}
        # False in the main process of --workers, which serves no TLS: there a
        # certificate is only checked once (``check``), its context not kept
        # (25 KiB each in OpenSSL: 1,000 TLS Secrets held 25 MiB for nothing).
        self.serving = serving
        self._checked: set[tuple[bytes, bytes]] = set()
        # Every context offers the same: the one SNI picks negotiates ALPN.
        self._http2 = http2  # --no-http2 turns HTTP/2 off whatever use-http2 says
        self._alpn = ALPN_H2 if http2 else ALPN_H1
        self._params = DEFAULT_TLS
        # The listener's context: it holds the generated certificate and runs
        # the SNI callback for every handshake.
        self.default_context = server_context(*default, alpn=self._alpn)
        self.default_context.sni_callback = self._sni
        self._fallback: ssl.SSLContext | None = None  # --default-certificate, when valid
        self._fallback_cert: TLSCertificate | None = None
        self._default_pair = default
        # auth-tls-* hosts: (cert PEM, key PEM, ClientAuth.key[, ssl-ciphers]) -> a
        # context that asks for client certificates (policy/client_tls.py).
        self._client_contexts: dict[tuple[bytes, ...], ssl.SSLContext] = {}
        # ssl-ciphers hosts: (cert PEM, key PEM, cipher list) -> a context with that list.
        # OpenSSL takes the cipher list of the context the SNI callback switches to
        # (the options, server preference among them, stay the listener's).
        self._cipher_contexts: dict[tuple[bytes, bytes, str], ssl.SSLContext] = {}

    def configure(self, params: TLSParams) -> None:
        """The ConfigMap's TLS settings, for the handshakes from now on."""
        if params == self._params:
            return
        self._params = params
        # use-http2: false takes h2 out of the ALPN offer (new handshakes).
        alpn = ALPN_H2 if self._http2 and params.http2 else ALPN_H1
        changed = alpn != self._alpn
        self._alpn = alpn
        for ctx in (
            self.default_context,
            *self._contexts.values(),
            *self._client_contexts.values(),
        ):
            apply_params(ctx, params)
            if changed:
                ctx.set_alpn_protocols(list(alpn))
        for (_, _, ciphers), ctx in self._cipher_contexts.items():
            apply_params(ctx, params)
            ctx.set_ciphers(ciphers)  # the host's own list stays
            if changed:
                ctx.set_alpn_protocols(list(alpn))
        for ckey, ctx in self._client_contexts.items():
            if len(ckey) > 3:
                ctx.set_ciphers(ckey[3].decode())

    def set_default(self, cert: TLSCertificate | None) -> None:
        """Serve ``cert`` (from --default-certificate) to hosts without their own."""
        self._fallback = self.context_for(cert) if cert is not None else None
        self._fallback_cert = cert

    def context_for(self, cert: TLSCertificate) -> ssl.SSLContext:
        key = (cert.cert_pem, cert.key_pem)
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = server_context(cert.cert_pem, cert.key_pem, self._alpn, self._params)
            # Read back per connection (served_names) to hold requests to the
            # names this certificate covers.
            ctx.ingressd_names = cert.dns_names  # type: ignore[attr-defined]
            self._contexts[key] = ctx
        return ctx

    def check(self, cert: TLSCertificate) -> None:
        """Raise (ssl.SSLError, OSError, ValueError) if OpenSSL cannot serve ``cert``.

        When serving, its context is made and kept for handshakes to come.
        """
        if self.serving:
            self.context_for(cert)
            return
        key = (cert.cert_pem, cert.key_pem)
        if key not in self._checked:
            server_context(cert.cert_pem, cert.key_pem, alpn=self._alpn)
            self._checked.add(key)

    def prune(self) -> None:
        """Forget contexts for certificates no longer in the table."""
        live = {(c.cert_pem, c.key_pem) for c in self._table().certificates.values()}
        self._checked &= live
        live.update(k for k, ctx in self._contexts.items() if ctx is self._fallback)
        for key in list(self._contexts):
            if key not in live:
                del self._contexts[key]
        if self._client_contexts:
            table = self._table()
            hosts = (*table.exact_hosts.values(), *table.wildcard_hosts.values())
            keys = {v.client_auth.key for v in hosts if v.client_auth is not None}
            for ckey in list(self._client_contexts):
                if ckey[2] not in keys:
                    del self._client_contexts[ckey]
        if self._cipher_contexts:
            table = self._table()
            hosts = (*table.exact_hosts.values(), *table.wildcard_hosts.values())
            lists = {v.ssl_ciphers for v in hosts if v.ssl_ciphers is not None}
            pairs = live | {self._default_pair}
            for tkey in list(self._cipher_contexts):
                if tkey[2] not in lists or tkey[:2] not in pairs:
                    del self._cipher_contexts[tkey]

    def _sni(
        self, sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext
    ) -> int | None:
        cert = None
        name = server_name.lower().rstrip(".") if server_name else None
        # What the client asked for, for hosts that check client certificates
        # (routing/client_auth.py): their requests must come under their own name.
        sslobj.ingressd_sni = name  # type: ignore[attr-defined]
        if name:
            table = self._table()
            cert = table.certificate_for(name)
            if table.client_auth or table.ssl_ciphers:
                vhost = table.find_host(name)
                if vhost is None or not vhost.host:
                    vhost = None  # the catch-all: the listener's settings
                ciphers = vhost.ssl_ciphers if vhost is not None else None
                if vhost is not None and vhost.client_auth is not None:
                    return self._ask_certificate(sslobj, name, cert, vhost.client_auth, ciphers)
                if ciphers is not None:
                    return self._with_ciphers(sslobj, name, cert, ciphers)
        if cert is not None:
            try:
                sslobj.context = self.context_for(cert)
                return None
            except (ssl.SSLError, OSError) as exc:  # validated at build; belt and braces
                log.error("cannot use certificate %s for %s: %s", cert.secret, server_name, exc)
        if self._fallback is not None:
            sslobj.context = self._fallback
        return None

    def _with_ciphers(
        self, sslobj: ssl.SSLObject, name: str, cert: TLSCertificate | None, ciphers: str
    ) -> int | None:
        """ssl-ciphers: the host's certificate (or the default one) with its cipher list."""
        if cert is None:
            cert = self._fallback_cert
        pair = (cert.cert_pem, cert.key_pem) if cert is not None else self._default_pair
        key = (*pair, ciphers)
        try:
            ctx = self._cipher_contexts.get(key)
            if ctx is None:
                ctx = server_context(*pair, self._alpn, self._params)
                ctx.set_ciphers(ciphers)
                ctx.ingressd_names = cert.dns_names if cert is not None else ()  # type: ignore[attr-defined]
                self._cipher_contexts[key] = ctx
            sslobj.context = ctx
        except (ssl.SSLError, OSError, ValueError) as exc:
            # Validated at parse time; a list OpenSSL refuses now gets no handshake
            # rather than one with ciphers the Ingress did not ask for.
            log.error("cannot use ssl-ciphers %r for %s: %s", ciphers, name, exc)
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        return None

    def _ask_certificate(
        self,
        sslobj: ssl.SSLObject,
        name: str,
        cert: TLSCertificate | None,
        auth: ClientAuth,
        ciphers: str | None = None,
    ) -> int | None:
        """auth-tls-*: the host's certificate, and a client certificate asked for
        (with the host's ssl-ciphers, if any)."""
        if cert is None:
            cert = self._fallback_cert
        pair = (cert.cert_pem, cert.key_pem) if cert is not None else self._default_pair
        key: tuple[bytes, ...] = (*pair, auth.key)
        if ciphers is not None:
            key = (*key, ciphers.encode())
        try:
            ctx = self._client_contexts.get(key)
            if ctx is None:
                base = server_context(*pair, self._alpn, self._params)
                if ciphers is not None:
                    base.set_ciphers(ciphers)
                ctx = client_context(base, auth.ca_pem, auth.crl, auth.key)
                ctx.ingressd_names = cert.dns_names if cert is not None else ()  # type: ignore[attr-defined]
                self._client_contexts[key] = ctx
            sslobj.context = ctx
            request_certificate(sslobj, auth.ref.depth)
        except (ssl.SSLError, OSError, ValueError, RuntimeError) as exc:
            # No certificate can be asked for: no handshake, rather than one without.
            log.error("cannot ask %s for a client certificate (%s): %s", name, auth.secret, exc)
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        return None
