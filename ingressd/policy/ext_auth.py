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

With ``auth-cache-key`` answers are remembered per key (auth_cache.py), as
ingress-nginx's proxy_cache on the auth location; connections to the service
are opened per subrequest or, with ``auth-keepalive``, reused (auth_client.py).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from urllib.parse import quote, urlsplit

from ..model.policy import ExternalAuth, Template
from . import auth_cache
from .auth_client import AuthConnections, AuthHTTPError, KeepAlive

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


def parse_template(text: str, key: bool = False) -> Template:
    """Split ``text`` at its ``$variables``; TemplateError for one not in ``VARIABLES``
    (nor, for a cache ``key``, one of auth_cache's: $http_NAME, $cookie_NAME …)."""
    parts: list[str] = []
    pos = 0
    for m in _VARIABLE.finditer(text):
        name = m.group(1) or m.group(2)
        if key and auth_cache.key_variable(name.lower()):
            parts += [text[pos : m.start()], name.lower()]
            pos = m.end()
            continue
        if name not in VARIABLES:
            if key:
                raise TemplateError(
                    f"${name} is not a variable ingressd knows in a cache key (those of "
                    "auth-url, $remote_user, $http_NAME, $cookie_NAME, $arg_NAME)"
                )
            known = ", ".join(f"${v}" for v in sorted(VARIABLES))
            raise TemplateError(f"${name} is not a variable ingressd knows ({known})")
        parts += [text[pos : m.start()], name]
        pos = m.end()
    parts.append(text[pos:])
    return Template(tuple(parts), text)


MAX_KEY_TEMPLATE = 1024


def parse_key_template(value: str) -> Template:
    """auth-cache-key: text and variables, rendered per request then hashed."""
    text = value.strip()
    if not text:
        raise TemplateError("the key is empty")
    if len(text) > MAX_KEY_TEMPLATE or any(c in text for c in "\r\n\0"):
        raise TemplateError(f"a key is one line of at most {MAX_KEY_TEMPLATE} characters")
    return parse_template(text, key=True)


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


def signin_for(auth: ExternalAuth, method: str, tls: bool, host: str, request_uri: str) -> str:
    """auth-signin's URL for a request answered 401 before any subrequest (Basic auth)."""
    req = AuthRequest(method, "https" if tls else "http", host, request_uri, "", "", "", ())
    return signin_url(auth, variables(req))


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
    if auth.proxy_set_headers:
        # auth-proxy-set-headers (policy/header_maps.py): each replaces any header of
        # its name, as proxy_set_header does; an empty value only removes.
        names = {name.decode("latin-1").lower() for name, _ in auth.proxy_set_headers}
        headers = [h for h in headers if h[0].lower() not in names]
        for name, template in auth.proxy_set_headers:
            value = template.render(values)
            if value:
                headers.append((name.decode("latin-1"), _no_control(value)))
    return headers


def _no_control(value: str) -> str:
    """A rendered value with control characters (a decoded URI may hold a CR or LF)
    escaped, so a variable can never split the subrequest's head."""
    if not any(c < " " or c == "\x7f" for c in value):
        return value
    return "".join(f"%{ord(c):02X}" if c < " " or c == "\x7f" else c for c in value)


async def check(
    client: AuthClient,
    auth: ExternalAuth,
    req: AuthRequest,
    connect_timeout: float,
    read_timeout: float,
    scope: str = "",
) -> Outcome:
    """Ask the auth service about ``req`` (or its cache); never raises for the service's failures.

    ``scope`` names where the request was routed (host and location): cached answers
    are kept per scope, as nginx's cache key starts with the server and auth location."""
    values = variables(req)
    url = auth.url.render(values)
    method = auth.method or "GET"
    key = None
    cache = client.cache
    if auth.cache_key is not None and method in ("GET", "HEAD"):
        # nginx's proxy_cache_methods: GET and HEAD only.
        query = req.request_uri.partition("?")[2]
        # nginx keys by server and auth location only; the auth URL and method are
        # added, so a changed auth-url never answers from the old service's entries.
        where = f"{scope}\0{method}\0{auth.url.text}"
        key = auth_cache.cache_key(
            where, auth_cache.render_key(auth.cache_key, values, req.headers, query)
        )
        if key is not None:
            answer = cache.get(key, time.monotonic())
            if answer is not None:
                client.cache_hits += 1
                return outcome(auth, answer.status, answer.headers, (), values, url)
    keepalive = (
        KeepAlive(auth.keepalive, auth.keepalive_requests, auth.keepalive_timeout)
        if auth.keepalive > 0
        else None
    )
    try:
        reply = await client.connections.request(
            method,
            url,
            subrequest_headers(auth, req, values),
            connect_timeout,
            read_timeout,
            keepalive,
        )
    except AuthHTTPError as exc:
        reason = str(exc) or type(exc).__name__
        log.warning("authentication service %s failed: %s", url, reason)
        return _error(f"the authentication service at {url} failed: {reason}")
    if key is not None:
        ttl = auth_cache.lifetime(reply.status, reply.headers, auth.cache_durations, time.time())
        if ttl > 0:
            kept = {h.lower() for h in auth.response_headers} | {"www-authenticate"}
            headers = tuple((n, v) for n, v in reply.headers if n.lower() in kept)
            cache.put(key, auth_cache.Answer(reply.status, headers), time.monotonic() + ttl)
    cookies = tuple(v.encode("latin-1") for v in reply.getall("Set-Cookie"))
    return outcome(auth, reply.status, reply.headers, cookies, values, url)


def outcome(
    auth: ExternalAuth,
    status: int,
    answer: Sequence[tuple[str, str]],
    cookies: tuple[bytes, ...],
    values: Mapping[str, str],
    url: str,
) -> Outcome:
    """What the auth service's answer (``status`` and headers) means for the request."""
    if 200 <= status < 300:
        found: dict[str, str] = {}
        for name, value in answer:
            found.setdefault(name.lower(), value)
        upstream = tuple(
            (name.encode("latin-1"), found.get(name.lower(), "").encode("latin-1"))
            for name in auth.response_headers
        )
        return Outcome(0, upstream_headers=upstream, cookies=cookies)
    kept = cookies if auth.always_set_cookie else ()
    if status == 401:
        if auth.signin is not None:
            return Outcome(302, "302 Found\n", location=signin_url(auth, values), cookies=kept)
        challenge = tuple(
            (b"WWW-Authenticate", v.encode("latin-1"))
            for n, v in answer
            if n.lower() == "www-authenticate"
        )
        return Outcome(401, "401 Authorization Required\n", headers=challenge, cookies=kept)
    if status == 403:
        return Outcome(
            403, "403 Forbidden: the authentication service denied access\n", cookies=kept
        )
    log.warning("authentication service %s answered %d", url, status)
    return _error(f"the authentication service at {url} answered {status}")


def with_local_denial(
    outcome: Outcome,
    status: int,
    headers: tuple[tuple[bytes, bytes], ...],
    auth: ExternalAuth,
    req: AuthRequest,
) -> Outcome:
    """satisfy "any": the address check or Basic auth denied (``status``, 403 or 401
    with ``headers``), and so did the service: nginx answers the access code it kept,
    a 401 over a 403 (ngx_http_core_access_phase), and auth-signin's error_page turns
    a 401 into the sign-in redirect. A service that failed still answers 500."""
    said = outcome.status
    if said not in (401, 403) and not (said == 302 and outcome.location is not None):
        return outcome
    if said == 403 and status != 401:
        return outcome
    if auth.signin is not None:
        if said == 302:
            return outcome
        location = signin_url(auth, variables(req))
        return Outcome(302, "302 Found\n", location=location, cookies=outcome.cookies)
    challenge = headers if status == 401 else ()
    if said == 401:
        challenge += outcome.headers
    return Outcome(401, "401 Authorization Required\n", headers=challenge, cookies=outcome.cookies)


def _error(reason: str) -> Outcome:
    return Outcome(500, f"500 Internal Server Error: {reason}\n")


class AuthClient:
    """Per process: the connections to auth services and the cache of their answers."""

    def __init__(self) -> None:
        self.connections = AuthConnections()
        self.cache = auth_cache.AuthCache()
        self.cache_hits = 0

    async def close(self) -> None:
        await self.connections.close()
