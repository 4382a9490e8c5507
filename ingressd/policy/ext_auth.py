"""External authentication: ingress-nginx's ``auth-url`` family.

Before a request is forwarded, ingressd asks the service at ``auth-url`` with
a subrequest: the client's headers without its body, plus the headers
ingress-nginx adds (X-Original-URL, X-Original-Method, X-Sent-From,
X-Auth-Request-Redirect, X-Real-IP, X-Forwarded-For, X-Request-ID). Then, as
nginx's auth_request does:

* 2xx: the request goes on; ``auth-response-headers`` are copied from the
  auth response to the upstream request, replacing what the client sent (a
  header the auth service did not send is removed, so a client cannot forge
  it), and the auth response's Set-Cookie is added to the client's response;
* 401: returned with the auth service's WWW-Authenticate, or, with
  ``auth-signin``, a 302 to the sign-in URL with ``rd=`` the original URL;
* 403: returned;
* anything else, or no answer: 500. The route never opens on an error.

URLs may use a fixed set of nginx variables (``$host``, ``$escaped_request_uri``
…), substituted per request: they are parsed into typed templates here, never
handed to a configuration language.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from ..model.policy import ExternalAuth, Template

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("ingressd.auth")

# Statuses nginx's add_header applies to without ``always``: the auth service's
# cookies reach these responses unless auth-always-set-cookie says all.
COOKIE_STATUSES = frozenset({200, 201, 204, 206, 301, 302, 303, 304, 307, 308})

METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"}
)

# Headers the subrequest never takes from the client: framing (no body is sent),
# the connection's own, and the ones ingressd sets itself.
_NOT_FORWARDED = frozenset(
    {
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"upgrade",
        b"te",
        b"trailer",
        b"expect",
        b"x-original-url",
        b"x-original-method",
        b"x-original-uri",
        b"x-scheme",
        b"x-sent-from",
        b"x-auth-request-redirect",
        b"x-real-ip",
        b"x-forwarded-for",
        b"x-request-id",
    }
)

# W3C trace context: replaced by the subrequest span's when the request is traced.
_TRACE_CONTEXT = frozenset({b"traceparent", b"tracestate"})

# Auth service bodies are not used; a larger one is not read at all.
_MAX_BODY = 64 * 1024


class TemplateError(ValueError):
    pass


_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")

# The nginx variables ingress-nginx users put in auth URLs, and what they mean here.
VARIABLES = frozenset(
    {
        "scheme",
        "pass_access_scheme",
        "host",
        "http_host",
        "best_http_host",
        "request_uri",
        "escaped_request_uri",
        "uri",
        "args",
        "is_args",
        "request_method",
        "remote_addr",
        "server_port",
    }
)


def parse_template(text: str) -> Template:
    """Split ``text`` at its ``$variables``; TemplateError for one not in ``VARIABLES``."""
    parts: list[str] = []
    pos = 0
    for m in _VARIABLE.finditer(text):
        name = m.group(1) or m.group(2)
        if name not in VARIABLES:
            known = ", ".join(f"${v}" for v in sorted(VARIABLES))
            raise TemplateError(f"${name} is not a variable ingressd knows ({known})")
        parts += [text[pos : m.start()], name]
        pos = m.end()
    parts.append(text[pos:])
    return Template(tuple(parts), text)


def parse_url_template(value: str) -> Template:
    """An absolute http(s) URL, possibly with variables (checked with sample values)."""
    text = value.strip()
    template = parse_template(text)
    sample = template.render(dict.fromkeys(VARIABLES, "x"))
    if any(c in sample for c in " \t\r\n\0"):
        raise TemplateError("a URL may not contain whitespace")
    parts = urlsplit(sample)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TemplateError("it is not an absolute http:// or https:// URL")
    return template


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """What the subrequest needs from the client's request."""

    method: str
    scheme: str  # "http" or "https", as the client came in
    host: str  # the Host header as sent (with port, if any)
    request_uri: str  # path and query as the client sent them
    client_ip: str
    server_port: str
    request_id: str
    headers: Sequence[tuple[bytes, bytes]]
    # traceparent/tracestate naming the subrequest's span (observe/tracing.py); they
    # replace the client's. () when the request is not traced.
    trace_headers: tuple[tuple[str, str], ...] = ()


def with_trace(req: AuthRequest, headers: tuple[tuple[str, str], ...]) -> AuthRequest:
    return replace(req, trace_headers=headers)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer: go on with ``upstream_headers``, or answer ``status`` to the client."""

    status: int  # 0: allowed
    body: str = ""
    location: str | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()  # for the client's response (deny)
    upstream_headers: tuple[tuple[bytes, bytes], ...] = ()  # empty value: removed
    cookies: tuple[bytes, ...] = ()  # Set-Cookie values for the client's response

    @property
    def allowed(self) -> bool:
        return self.status == 0


def variables(req: AuthRequest) -> dict[str, str]:
    path, sep, query = req.request_uri.partition("?")
    host = req.host.rsplit(":", 1)[0] if not req.host.endswith("]") else req.host
    return {
        "scheme": req.scheme,
        "pass_access_scheme": req.scheme,
        "host": host.lower(),
        "http_host": req.host,
        "best_http_host": req.host,
        "request_uri": req.request_uri,
        "escaped_request_uri": quote(req.request_uri, safe=""),
        "uri": path,
        "args": query,
        "is_args": "?" if sep else "",
        "request_method": req.method,
        "remote_addr": req.client_ip,
        "server_port": req.server_port,
    }


def signin_url(auth: ExternalAuth, values: Mapping[str, str]) -> str:
    """auth-signin with the original URL as ``rd`` (unless the URL names it already)."""
    assert auth.signin is not None
    url = auth.signin.render(values)
    query = urlsplit(url).query
    param = auth.signin_param
    if any(p.split("=", 1)[0] == param for p in query.split("&") if p):
        return url
    original = f"{values['scheme']}://{values['http_host']}{values['escaped_request_uri']}"
    return f"{url}{'&' if query else '?'}{param}={original}"


def subrequest_headers(
    auth: ExternalAuth, req: AuthRequest, values: Mapping[str, str]
) -> list[tuple[str, str]]:
    headers = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in req.headers
        if name.lower() not in _NOT_FORWARDED
        and not (req.trace_headers and name.lower() in _TRACE_CONTEXT)
    ]
    headers += req.trace_headers
    redirect = auth.request_redirect.render(values) if auth.request_redirect else req.request_uri
    headers += [
        ("X-Original-URL", f"{req.scheme}://{req.host}{req.request_uri}"),
        ("X-Original-Method", req.method),
        ("X-Sent-From", "nginx-ingress-controller"),
        ("X-Real-IP", req.client_ip),
        ("X-Forwarded-For", req.client_ip),
        ("X-Auth-Request-Redirect", redirect),
        ("X-Request-ID", req.request_id),
    ]
    if auth.method is not None:
        headers += [("X-Original-URI", req.request_uri), ("X-Scheme", req.scheme)]
    return headers


async def check(
    session: aiohttp.ClientSession,
    auth: ExternalAuth,
    req: AuthRequest,
    connect_timeout: float,
    read_timeout: float,
) -> Outcome:
    """Ask the auth service about ``req``; never raises for the service's failures."""
    import aiohttp

    values = variables(req)
    url = auth.url.render(values)
    try:
        async with session.request(
            auth.method or "GET",
            url,
            headers=subrequest_headers(auth, req, values),
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=connect_timeout, sock_read=read_timeout
            ),
        ) as resp:
            status = resp.status
            answer = resp.headers
            if resp.content_length is None or resp.content_length <= _MAX_BODY:
                await resp.content.read(_MAX_BODY)
    except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
        log.warning("authentication service %s failed: %s", url, reason)
        return _error(f"the authentication service at {url} failed: {reason}")
    cookies = tuple(v.encode("latin-1") for v in answer.getall("Set-Cookie", ()))
    if 200 <= status < 300:
        upstream = tuple(
            (name.encode("latin-1"), answer.get(name, "").encode("latin-1"))
            for name in auth.response_headers
        )
        return Outcome(0, upstream_headers=upstream, cookies=cookies)
    kept = cookies if auth.always_set_cookie else ()
    if status == 401:
        if auth.signin is not None:
            return Outcome(302, "302 Found\n", location=signin_url(auth, values), cookies=kept)
        challenge = tuple(
            (b"WWW-Authenticate", v.encode("latin-1"))
            for v in answer.getall("WWW-Authenticate", ())
        )
        return Outcome(401, "401 Authorization Required\n", headers=challenge, cookies=kept)
    if status == 403:
        return Outcome(
            403, "403 Forbidden: the authentication service denied access\n", cookies=kept
        )
    log.warning("authentication service %s answered %d", url, status)
    return _error(f"the authentication service at {url} answered {status}")


def _error(reason: str) -> Outcome:
    return Outcome(500, f"500 Internal Server Error: {reason}\n")


class AuthClient:
    """The HTTP client for subrequests: one keep-alive pool per process, made on first use."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            import aiohttp

            # ssl=False: like ingress-nginx (proxy_ssl_verify off), the auth
            # service's certificate is not verified; it is usually in-cluster.
            connector = aiohttp.TCPConnector(ssl=False, limit=0, keepalive_timeout=60)
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            # Let the connector's transports finish closing.
            await asyncio.sleep(0)
            self._session = None
