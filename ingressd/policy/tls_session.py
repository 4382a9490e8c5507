"""ssl-session-cache, ssl-session-cache-size and ssl-session-timeout on a server context.

Python's ssl module sets none of OpenSSL's session cache parameters, so they are set
through the same libssl that ``_ssl`` uses, on the context's ``SSL_CTX *``
(``client_tls`` finds both). The pointer is checked first: the options OpenSSL
reports for it must be the ones Python reports for the context; if anything does
not match, nothing is written and the reason is returned, for the caller to report
(the server keeps OpenSSL's defaults: a cache of 20,480 sessions, two hours).

ingress-nginx's template (nginx.tmpl): with ``ssl-session-cache`` on (the default),
``ssl_session_cache shared:SSL:<ssl-session-cache-size>`` and ``ssl_session_timeout
<ssl-session-timeout>`` ("10m" and "10m"); off, nginx's defaults: no cache, five
minutes. nginx counts its cache in bytes, about 4,000 sessions a megabyte
(ngx_http_ssl_module docs); OpenSSL counts sessions, so the size becomes
that many sessions. The timeout is also the lifetime hint of the session tickets
sent (TLS 1.3 always sends them; TLS 1.2 with ssl-session-tickets).
"""

from __future__ import annotations

import _ssl
import ctypes
import ssl
from functools import cache

from .client_tls import ClientTLSError, _ctx_pointer

# openssl/ssl.h
_SSL_CTRL_SET_SESS_CACHE_SIZE = 42
_SSL_CTRL_SET_SESS_CACHE_MODE = 44
_SSL_SESS_CACHE_OFF = 0x0000
_SSL_SESS_CACHE_SERVER = 0x0002

SESSIONS_PER_MIB = 4000  # nginx: "one megabyte of the cache contains about 4000 sessions"
NGINX_OFF_TIMEOUT = 300  # nginx's ssl_session_timeout default, used with the cache off


def sessions(cache_bytes: int) -> int:
    """nginx's cache size in bytes as OpenSSL's count of sessions."""
    return max(1, cache_bytes * SESSIONS_PER_MIB // (1024 * 1024))


class _Calls:
    def __init__(self) -> None:
        lib = ctypes.CDLL(_ssl.__file__)
        vp, cl = ctypes.c_void_p, ctypes.c_long
        self.set_timeout = lib.SSL_CTX_set_timeout
        self.set_timeout.argtypes = [vp, cl]
        self.set_timeout.restype = cl
        self.get_timeout = lib.SSL_CTX_get_timeout
        self.get_timeout.argtypes = [vp]
        self.get_timeout.restype = cl
        self.ctrl = lib.SSL_CTX_ctrl
        self.ctrl.argtypes = [vp, ctypes.c_int, cl, vp]
        self.ctrl.restype = cl
        self.get_options = lib.SSL_CTX_get_options
        self.get_options.argtypes = [vp]
        # OpenSSL 3: uint64_t; 1.1: unsigned long (64 bits on the platforms served)
        self.get_options.restype = ctypes.c_uint64


@cache
def _calls() -> _Calls:
    return _Calls()


def apply(ctx: ssl.SSLContext, cache: bool, cache_bytes: int, timeout: int) -> str | None:
    """ssl-session-cache (``cache``), -cache-size (``cache_bytes``, as nginx counts it)
    and -timeout (seconds) on ``ctx``; None when done, else why nothing was set."""
    try:
        calls = _calls()
        pointer = _ctx_pointer(ctx)
        if not pointer or calls.get_options(pointer) != int(ctx.options):
            return "the context's OpenSSL object is not where it was expected"
        if cache:
            calls.ctrl(pointer, _SSL_CTRL_SET_SESS_CACHE_MODE, _SSL_SESS_CACHE_SERVER, None)
            calls.ctrl(pointer, _SSL_CTRL_SET_SESS_CACHE_SIZE, sessions(cache_bytes), None)
            calls.set_timeout(pointer, timeout)
        else:
            calls.ctrl(pointer, _SSL_CTRL_SET_SESS_CACHE_MODE, _SSL_SESS_CACHE_OFF, None)
            calls.set_timeout(pointer, NGINX_OFF_TIMEOUT)
    except (OSError, AttributeError, ClientTLSError) as exc:
        return f"OpenSSL's session settings cannot be set here: {exc}"
    return None


def timeout_of(ctx: ssl.SSLContext) -> int:
    """The session timeout OpenSSL holds for ``ctx`` (for tests and check)."""
    return int(_calls().get_timeout(_ctx_pointer(ctx)))
