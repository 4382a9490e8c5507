"""Client certificates in the TLS handshake, as nginx asks for them (``auth-tls-*``).

nginx's ``ssl_verify_client on`` does not end a handshake over a bad client
certificate: its verify callback (``ngx_ssl_verify_callback``) accepts every
certificate, OpenSSL records the first verification error, and the HTTP layer
answers it (``ngx_http_process_request``: 495 "The SSL certificate error" or
496 "No required SSL certificate was sent", both sent as 400; ingress-nginx's
``auth-tls-error-page`` redirects instead). The client sees an HTTP answer it
can show, not a TLS alert.

Python's ``ssl`` cannot do that by itself: a context with ``CERT_OPTIONAL``
verifies with OpenSSL's default callback, which aborts the handshake on any
error; and a context chosen in the SNI callback does not bring its verify mode
along (``SSL_set_SSL_CTX`` keeps the connection's, set from the listener's
context, which asks for no certificate). So ingressd does what nginx's SNI
callback does (``ngx_http_ssl_servername``: ``SSL_set_verify`` and
``SSL_set_verify_depth`` on the connection) through ctypes, on the very
``libssl`` the ``_ssl`` module is linked to, with nginx's accept-all callback;
and after the handshake reads ``SSL_get_verify_result`` as nginx does. The
pointers come from CPython's ``_ssl`` objects (the ``SSL_CTX *`` and ``SSL *``
follow the object header and, for a connection, its socket weakref: the layout
of every CPython since 3.6); each one is checked against OpenSSL before use
(the connection's ``SSL_CTX`` must be the context just set), and ``available``
runs a whole handshake in memory once. Where any of it fails, hosts with
client certificates fail closed (503, reported), never open.

The CA bundle and CRL are OpenSSL's ``ssl_client_certificate`` and ``ssl_crl``:
loaded into the host's context's store, CRLs checked along the whole chain
(``X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL``, as nginx sets them).
"""

from __future__ import annotations

import _ssl
import contextlib
import ctypes
import datetime as dt
import logging
import os
import ssl
import sys
import tempfile
import threading
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger("ingressd.tls")

SSL_VERIFY_PEER = 0x01
X509_V_FLAG_CRL_CHECK = 0x04
X509_V_FLAG_CRL_CHECK_ALL = 0x08
X509_V_OK = 0

# The errors ``optional_no_ca`` lets pass (nginx's ngx_ssl_verify_error_optional):
# the certificate is fine but for its issuer being unknown or untrusted.
OPTIONAL_NO_CA_ERRORS = frozenset({2, 18, 19, 20, 21, 24, 27})

_VERIFY_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


def _accept(_ok: int, _store: int | None) -> int:
    # As ngx_ssl_verify_callback: the verdict is OpenSSL's verify result, read
    # after the handshake; the handshake itself goes on.
    return 1


_ACCEPT = _VERIFY_CB(_accept)  # kept alive for as long as libssl may call it


class ClientTLSError(RuntimeError):
    pass


class _LibSSL:
    """The functions of the libssl that ``_ssl`` uses (its handle's dependencies)."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(_ssl.__file__)
        vp, ci, cl = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
        self.set_verify = lib.SSL_set_verify
        self.set_verify.argtypes = [vp, ci, vp]
        self.set_verify.restype = None
        self.set_verify_depth = lib.SSL_set_verify_depth
        self.set_verify_depth.argtypes = [vp, ci]
        self.set_verify_depth.restype = None
        self.get_ctx = lib.SSL_get_SSL_CTX
        self.get_ctx.argtypes = [vp]
        self.get_ctx.restype = vp
        self.verify_result = lib.SSL_get_verify_result
        self.verify_result.argtypes = [vp]
        self.verify_result.restype = cl
        self.error_string = lib.X509_verify_cert_error_string
        self.error_string.argtypes = [cl]
        self.error_string.restype = ctypes.c_char_p
        self.ctx_verify_mode = lib.SSL_CTX_get_verify_mode
        self.ctx_verify_mode.argtypes = [vp]
        self.ctx_verify_mode.restype = ci
        self.ctx_store = lib.SSL_CTX_get_cert_store
        self.ctx_store.argtypes = [vp]
        self.ctx_store.restype = vp
        self.store_set_flags = lib.X509_STORE_set_flags
        self.store_set_flags.argtypes = [vp, ctypes.c_ulong]
        self.store_set_flags.restype = ci


_HEAD = object.__basicsize__  # PyObject_HEAD
_PTR = ctypes.sizeof(ctypes.c_void_p)


@cache
def _lib() -> _LibSSL:
    return _LibSSL()


def _ctx_pointer(ctx: ssl.SSLContext) -> int:
    """The ``SSL_CTX *`` of a context (PySSLContext: the header, then ``ctx``)."""
    return ctypes.c_void_p.from_address(id(ctx) + _HEAD).value or 0


def _ssl_pointer(sslobj: object) -> int:
    """The ``SSL *`` of a connection (PySSLSocket: the header, the socket weakref, ``ssl``),
    checked: its ``SSL_CTX`` must be the one of the context it reports."""
    inner = getattr(sslobj, "_sslobj", sslobj)
    context = getattr(sslobj, "context", None)
    if not isinstance(context, ssl.SSLContext):
        raise ClientTLSError("not a TLS connection")
    pointer = ctypes.c_void_p.from_address(id(inner) + _HEAD + _PTR).value or 0
    if not pointer or _lib().get_ctx(pointer) != _ctx_pointer(context):
        raise ClientTLSError("the TLS connection's OpenSSL object is not where it was expected")
    return pointer


def client_context(base: ssl.SSLContext, ca_pem: bytes, crl: bool, tag: bytes) -> ssl.SSLContext:
    """``base`` (a server context of one certificate, fresh) made to check client
    certificates against ``ca_pem`` (CA certificates, and CRLs when ``crl``).

    ``tag`` is kept on the context: what a connection's verify result was judged
    against (``verify_result``)."""
    with tempfile.TemporaryDirectory(prefix="ingressd-ca-") as tmp:
        path = os.path.join(tmp, "ca.pem")
        with open(path, "wb") as f:
            f.write(ca_pem)
        # From a file, OpenSSL reads CRLs too (X509_load_cert_crl_file); cadata does not.
        base.load_verify_locations(cafile=path)
    base.verify_mode = ssl.CERT_OPTIONAL
    if crl:
        lib = _lib()
        pointer = _ctx_pointer(base)
        if lib.ctx_verify_mode(pointer) != SSL_VERIFY_PEER:
            raise ClientTLSError("the TLS context's OpenSSL object is not where it was expected")
        # On the store: a connection's own parameters come from the listener's
        # context, the store from the context the SNI callback chose.
        flags = X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL
        if lib.store_set_flags(lib.ctx_store(pointer), flags) != 1:
            raise ClientTLSError("cannot turn CRL checking on")
    base.ingressd_client_auth = tag  # type: ignore[attr-defined]
    return base


def request_certificate(sslobj: object, depth: int) -> None:
    """In the SNI callback, once ``sslobj.context`` is a ``client_context``: ask
    this connection for a certificate, accept whatever comes (judged later)."""
    lib = _lib()
    pointer = _ssl_pointer(sslobj)
    lib.set_verify(pointer, SSL_VERIFY_PEER, ctypes.cast(_ACCEPT, ctypes.c_void_p))
    lib.set_verify_depth(pointer, depth)


def verify_result(sslobj: object) -> tuple[int, str]:
    """OpenSSL's verdict on the connection's client certificate chain, and its words."""
    lib = _lib()
    code = int(lib.verify_result(_ssl_pointer(sslobj)))
    words = lib.error_string(code)
    return code, (words or b"unknown error").decode("ascii", "replace")


def context_tag(sslobj: object) -> bytes | None:
    """The ``tag`` of the client context the handshake used; None: no certificate was asked."""
    context = getattr(sslobj, "context", None)
    tag = getattr(context, "ingressd_client_auth", None)
    return tag if isinstance(tag, bytes) else None


_checked: list[str | None] = []
_checked_lock = threading.Lock()


def available() -> str | None:
    """None when client certificates work here, else why not (checked once, by a
    handshake in memory with a certificate made for it)."""
    with _checked_lock:
        if not _checked:
            try:
                # The struct layouts _ctx_pointer and _ssl_pointer rely on, as far as
                # they are known; another interpreter is not probed (a wrong pointer
                # handed to OpenSSL would crash rather than fail).
                if sys.implementation.name != "cpython" or not (3, 8) <= sys.version_info < (3, 15):
                    raise ClientTLSError(f"not a known CPython ({sys.version.split()[0]})")
                _self_test()
                _checked.append(None)
            except Exception as exc:  # any failure: no client certificates, fail closed
                log.error("client certificates (auth-tls-*) cannot be checked: %s", exc)
                _checked.append(f"client certificates cannot be checked here: {exc}"[:300])
        return _checked[0]


_Pair = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _pair(cn: str, issuer: _Pair | None, ca: bool) -> _Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    signer, issuer_name = (key, name) if issuer is None else (issuer[1], issuer[0].subject)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(signer, hashes.SHA256())
    )
    return cert, key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_key_pair(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """``ctx.load_cert_chain`` from memory (ssl reads keys from files only)."""
    with tempfile.TemporaryDirectory(prefix="ingressd-tls-") as tmp:
        os.chmod(tmp, 0o700)
        cert_path, key_path = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
        with open(cert_path, "wb") as f:
            f.write(cert_pem)
        with open(os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(key_pem)
        ctx.load_cert_chain(cert_path, key_path)


def _self_test() -> None:
    ca = _pair("ingressd self-test CA", None, True)
    server = _pair("self-test.invalid", ca, False)
    client = _pair("self-test client", ca, False)
    listener = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    load_key_pair(listener, _pem(server[0]), _key_pem(server[1]))
    chosen = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    load_key_pair(chosen, _pem(server[0]), _key_pem(server[1]))
    chosen = client_context(chosen, _pem(ca[0]), False, b"self-test")

    def sni(sslobj: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        sslobj.context = chosen
        request_certificate(sslobj, 1)

    listener.sni_callback = sni
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    load_key_pair(cctx, _pem(client[0]), _key_pem(client[1]))
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    cside = cctx.wrap_bio(c_in, c_out, server_hostname="self-test.invalid")
    sside = listener.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(8):
        for side, out, into in ((cside, c_out, s_in), (sside, s_out, c_in)):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
            into.write(out.read())
    with contextlib.suppress(ssl.SSLWantReadError):
        sside.read(1)  # TLS 1.3: the client's certificate follows its Finished
    peer = sside.getpeercert(binary_form=True)
    if peer != client[0].public_bytes(serialization.Encoding.DER):
        raise ClientTLSError("the client certificate did not arrive")
    code, words = verify_result(sside)
    if code != X509_V_OK or context_tag(sside) != b"self-test":
        raise ClientTLSError(f"a valid client certificate was judged {words!r}")
