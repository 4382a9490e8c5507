"""One request and its response, whatever the protocols on either side.

An ``Exchange`` is made by a client protocol for each request head it reads
(``client_h1``), and carries it out: the routing decision (``routing.decide``),
limits, external auth, the choice and connection of an upstream, retries
(proxy-next-upstream), timeouts, the answers ingressd makes itself, and the
metrics and access log line once it ends. Framing belongs to the protocols on
either side (``streams.py`` says what each sees of the other).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import time
from http import HTTPStatus
from typing import Final

import httptools

from ..model.backend import Endpoint
from ..model.policy import ExternalAuth, GlobalRateLimit, LimitConfig
from ..model.snippet import RequestVars, SnippetPlan, edit_response, upstream_headers
from ..model.snippet import hide as hide_headers
from ..model.table import Route
from ..observe.tracing import AuthSpan, ServerSpan
from ..policy import chash, ext_auth
from ..policy.cors import HEADER_NAMES as CORS_HEADERS
from ..policy.limits import Slot
from ..policy.response_rewrite import apply as rewrite_response
from ..policy.retry import IDEMPOTENT, REPLAY_LIMIT
from ..policy.upstream_tls import H2_PROTOCOLS
from ..policy.upstream_tls import describe_error as describe_tls_error
from ..routing import client_auth, errors
from ..routing.decide import (
    SATISFIED,
    Forward,
    Headers,
    RequestHead,
    Respond,
    decide,
    find_header,
    normalize_host,
    normalize_path,
    retarget,
)
from . import grpc, http, pages
from .body import FEED_CHUNK, BodyBuffer, BufferFull
from .mirror import MirrorCopy
from .settings import ProxySettings
from .state import ProxyState, new_request_id
from .streams import ClientStream, Outgoing, UpstreamStream
from .throttle import Throttle
from .upstream_h1 import UpstreamHeadTooLarge
from .upstream_h2 import InvalidUpstreamResponse, StreamRefused

log: Final = logging.getLogger("ingressd.proxy")
# time.perf_counter, held Final: compiled code calls it without a module-dict lookup.
_clock: Final = time.perf_counter

_HSTS: Final = b"Strict-Transport-Security"
_HSTS_LOWER: Final = b"strict-transport-security"
BUFFER_HIGH: Final = 256 * 1024  # request body held while connecting, before reading pauses
# proxy-http-version 1.0 and a chunked request body: the whole body is read before
# the upstream is asked, to send its length (nginx buffers it so, to a file past
# client_body_buffer_size). Held in memory here: at most proxy-body-size, and this
# when that is 0 (unlimited) or larger; a larger body answers 413.
WHOLE_BODY_MAX: Final = 16 * 1024 * 1024
# Exchange.held of every request not throttled: shared, never appended to (a
# response's held parts start as a list of their own), so no list per request.
_NOTHING_HELD: Final[list[bytes]] = []

# Why the client's reading of request bodies is paused, as bits, so several can overlap.
PAUSE_PIPELINE = 1  # HTTP/1.1: a pipelined request waits for the one before it
PAUSE_UPSTREAM: Final = 2  # the upstream is slow to take the body
PAUSE_BUFFER: Final = 4  # the body waits (connecting, auth) and has filled its buffer


class Exchange(Outgoing):
    """One request and its response, whatever the protocols on either side."""

    __slots__ = (
        "_at_body_end",
        "_body_buf",
        "_buffered",
        "_connect_task",
        "_continue",
        "_feed_at",
        "_mirror",
        "_retried",
        "_spool",
        "_spool_wait",
        "activity",
        "attempts",
        "auth_cookies",
        "body_limit",
        "body_seen",
        "client_writing_paused",
        "conn_header",
        "error_page",
        "finished",
        "first_try_at",
        "go_waiting",
        "head_done",
        "header_bytes",
        "header_count",
        "held",
        "held_close",
        "held_end",
        "host_count",
        "lb_start",
        "limit_slot",
        "logged",
        "origin",
        "read_timeout",
        "rejection",
        "replay",
        "replay_gone",
        "replay_size",
        "req_te",
        "route",
        "send_paused_at",
        "send_timeout",
        "sent_body",
        "span",
        "started",
        "state",
        "status",
        "throttle",
        "throttled",
        "tried",
        "up_close_delimited",
        "up_connect",
        "up_start",
        "upstream",
        "whole_body",
    )

    def __init__(self, client: ClientStream, state: ProxyState) -> None:
        self.client = client
        self.state = state
        # For metrics and the access log: from the first byte of the request;
        # the status and bytes sent; the route of a local answer; the last
        # try's start and connect time (0: no upstream tried).
        self.started = _clock()
        self.status = 0
        self.sent = 0
        self.route: Route | None = None
        self.up_start = 0.0
        self.up_connect = 0.0
        self.logged = False  # counted (and logged) once, when it ends
        self.url = b""
        self.method = b""
        self.headers: http.Headers = []
        self.host: bytes | None = None
        self.host_count = 0
        # A Connection or Proxy-Connection header came (llhttp reads both for
        # keep-alive; client_h1 infers the version only without either).
        self.conn_header = False
        self.xff: bytes | None = None
        self.forwarded: list[tuple[bytes, bytes]] | None = None
        self.request_id: bytes | None = None
        self.origin: bytes | None = None
        self.body_limit = 0  # bytes allowed in the request body, 0 = any
        self.body_seen = 0
        self.read_timeout = self.send_timeout = 0.0  # set per route in start()
        self.conn_tokens: set[bytes] | None = None
        self.upgrade_value: bytes | None = None
        self.req_chunked = False
        self.req_length: bytes | None = None
        self.req_te: bytes | None = None  # Transfer-Encoding as received, lines joined
        self.header_count = 0
        self.header_bytes = 0
        self.head_done = False
        self.http10 = False
        self.protocol = "HTTP/1.1"
        self.keep_alive = True
        self.upgrade = False
        self.upgrading = False
        self.request_complete = False
        self.forward: Forward | None = None
        self.upstream: UpstreamStream | None = None
        # Body bytes waiting for an upstream (or the tunnel); None: none yet, so
        # a request without a body allocates no list.
        self._body_buf: list[bytes] | None = None
        self._buffered = 0
        self._connect_task: asyncio.Task | None = None
        self._retried = False
        self.activity = 0.0
        self.send_paused_at: float | None = None
        self.sent_body = False
        self.response_started = False
        # The upstream's response body ends when the upstream closes.
        self.up_close_delimited = False
        self.client_writing_paused = False
        self.finished = False
        # A limit-connections place, released once when the exchange ends (_finish/abort).
        self.limit_slot: Slot | None = None
        # load-balance: ewma routes: when the upstream was asked (connect included),
        # until its response time is recorded.
        self.lb_start: float | None = None
        # auth-url: headers for the upstream request and cookies for the response
        self.auth_headers: tuple[tuple[bytes, bytes], ...] = ()
        self.auth_cookies: tuple[bytes, ...] = ()
        # OpenTelemetry: the server span of a sampled request (observe/tracing.py,
        # which also puts the traceparent the upstream gets into ``headers``).
        self.span: ServerSpan | None = None
        # (status, reason) when this stands for a request that could not be
        # read, answered in its turn after the requests before it
        self.rejection: tuple[int, str] | None = None
        # proxy-next-upstream: the endpoints tried so far, when the first try
        # began, and the body bytes sent (None once too large to send again).
        self.attempts = 0
        # The endpoints tried before this one, made on the first retry.
        self.tried: list[Endpoint] | None = None
        self.first_try_at = 0.0
        # The body bytes sent, kept for another try (None: none yet), until
        # there are too many to keep (replay_gone).
        self.replay: list[bytes] | None = None
        self.replay_gone = False
        self.replay_size = 0
        # custom-http-errors: the error page is being fetched (never a second one),
        # without the client's body (read and dropped from then on).
        self.error_page = False
        self.no_body = False
        # limit-rate: the response's pace; whether reading it is held back for it;
        # the body over the rate, waiting; its end, when it came meanwhile (the
        # upstream's end, or its close for a body delimited by it).
        self.throttle: Throttle | None = None
        self.throttled = False
        self.held: list[bytes] = _NOTHING_HELD  # a list of its own once something is
        self.held_end: tuple[bool, http.Headers | None] | None = None
        self.held_close = False
        # proxy-http-version 1.0: a chunked body is read whole first (WHOLE_BODY_MAX);
        # the upstream is asked once it has ended.
        self.whole_body = False
        self.go_waiting = False
        # proxy-request-buffering: the body read whole first (proxy/body.py); the
        # exchange waits for its end to connect; how far its file part was sent.
        self._spool: BodyBuffer | None = None
        self.spooling = False
        self._spool_wait = False
        # request_done has work: the spool's wait, or an armed mirror copy
        self._at_body_end = False
        self._continue = False  # the client asked for 100 Continue, ingressd answers it
        self._feed_at = -1
        # mirror-target: the copy being made of this request (proxy/mirror.py)
        self._mirror: MirrorCopy | None = None

    # -- request head --------------------------------------------------------------------

    def has_body(self) -> bool:
        """Whether the request announced a body (chunked, or a non-zero Content-Length)."""
        return self.req_chunked or self.req_length not in (None, b"0")

    def real_ip(self) -> str:
        """The client's address: the peer's, or, behind a trusted proxy, the
        rightmost address of its forwarded-for header (X-Forwarded-For unless
        the ConfigMap names another) that is not a trusted proxy (as nginx's
        real_ip_recursive)."""
        client = self.client
        if not client.trusted:
            return client.client_ip
        settings = self.state.settings
        chain = self.xff
        if settings.real_ip_header != b"x-forwarded-for":
            chain = self.header_value(settings.real_ip_header)
        if not chain:
            return client.client_ip
        trusted = settings.trusted_proxies
        found = client.client_ip
        for part in reversed(chain.split(b",")):
            try:
                addr = ipaddress.ip_address(part.strip().decode("latin-1"))
            except ValueError:
                break  # garbage: keep the last address that made sense
            found = str(addr)
            if not any(addr in net for net in trusted):
                break
        return found

    def header_value(self, lname: bytes) -> bytes | None:
        """A request header's value (the first line of it), by lowercase name,
        among those forwarded and those kept aside (``forwarded``)."""
        if self.forwarded is not None:
            for name, value in self.forwarded:
                if name == lname:
                    return value
        return find_header(self.headers, lname)

    def forwarded_proto(self) -> bytes | None:
        """A trusted peer's X-Forwarded-Proto under use-forwarded-headers, else None."""
        if self.forwarded is None or not self.client.trusted:
            return None
        if not self.state.settings.forwarded_headers:
            return None
        for name, value in self.forwarded:
            if name == b"x-forwarded-proto":
                return value
        return None

    def proxy_settings(self) -> ProxySettings:
        return self.state.settings

    def _loggable(self, fwd: Forward | None, status: int) -> bool:
        """Whether the access log takes this request: skip-access-log-urls,
        disable-access-log, the route's enable-access-log annotation, and
        enable-access-log-for-default-backend for what no Ingress rule took: the
        --default-backend-service's requests and ingressd's own 404 for no route
        (ingress-nginx's default backend; requests refused before routing, a 400,
        are logged, as nginx logs them at server level)."""
        settings = self.state.settings
        if settings.access_log_off:
            return False
        skip = settings.skip_log_uris
        if skip and self.url.lower() in skip:
            return False
        route = fwd.route if fwd is not None else self.route
        if route is None:
            return status != 404 or self.rejection is not None or settings.log_default_backend
        if not route.ingress:  # --default-backend-service's fallback route
            return settings.log_default_backend
        return route.plain or route.policy.access_log

    def _fresh_id(self) -> bytes:
        """$req_id of a request without X-Request-ID: a new one, or none (b"") under
        generate-request-id: false (nginx.tmpl's map $http_x_request_id $req_id)."""
        return new_request_id() if self.state.settings.generate_request_id else b""

    def _head(self) -> RequestHead:
        url = self.url
        host = self.host or b""
        if url.startswith(b"/"):
            path, _, query = url.partition(b"?")
        elif url == b"*":
            path, query = b"*", b""
        else:
            # absolute-form: its authority takes precedence over Host (RFC 9112 3.2.2)
            parsed = http.parse_target(url)
            host = parsed.host or host
            if parsed.port:
                host += b":%d" % parsed.port
            path, query = parsed.path or b"/", parsed.query or b""
            self.host = host
            self.url = path + (b"?" + query if query else b"")
            # The upstream must see the host the request was routed by, not the
            # Host header it replaced.
            self.headers = [(b"Host", host)] + [
                (n, v) for n, v in self.headers if n.lower() != b"host"
            ]
        return RequestHead(
            method=self.method.decode("latin-1"),
            host=host.decode("latin-1"),
            path=path.decode("latin-1"),
            query=query.decode("latin-1"),
            client_ip=self.real_ip(),
            tls=self.client.tls,
            origin=self.origin.decode("latin-1") if self.origin is not None else None,
            headers=self.headers,
            tls_names=self.client.tls_names,
            server_port=self.client.server_port,
            scheme_https=self._scheme_https(),
        )

    def _scheme_https(self) -> bool | None:
        if self.forwarded is None:
            return None
        proto = self.forwarded_proto()
        return None if proto is None else proto.strip().lower() == b"https"

    # -- running the exchange ---------------------------------------------------------------

    def begin(self) -> None:
        """Start, and answer 500 rather than leave the connection hanging on a bug."""
        if self.rejection is not None:
            status, reason = self.rejection
            self.keep_alive = False
            self.request_complete = True
            self.respond(status, f"{status}: {reason}\n")
            return
        try:
            self.start()
        except Exception:
            log.exception("internal error handling %r", self.url[:200])
            self.keep_alive = False
            if self.response_started:
                self.abort()
                self.client.close()
            else:
                self.respond(500, "500 Internal Server Error\n")

    def start(self) -> None:
        client = self.client
        state = self.state
        settings = state.settings
        table = state.table
        head = self._head()
        action = decide(table, head, settings.https_redirect_port, state.ewma, state.health)
        if table.client_auth:  # some host checks client certificates (auth-tls-*)
            action = client_auth.apply(table, head, client.tls_object, action)
        tracing = state.tracing
        if tracing is not None:  # some route is traced
            tracing.begin(self, action.route)
        if isinstance(action, Respond):
            self.route = action.route
            self.respond(action.status, action.body, action.location, action.headers)
            return
        self.forward = action
        route = action.route
        policy = route.policy
        limit = None if route.plain else policy.proxy_body_size
        self.body_limit = settings.max_body_size if limit is None else limit
        length = self.req_length
        if (
            self.body_limit
            and length is not None
            and length.isdigit()
            and (int(length) > self.body_limit)
        ):
            self._too_large()
            return
        if self.req_chunked or (length is not None and length != b"0"):
            self._plan_body(route)
        if route.plain:
            # Route.plain: no annotation, so the proxy-wide settings and none of
            # the feature checks below (limits, backend protocol, auth-url).
            self.read_timeout = settings.read_timeout
            self.send_timeout = settings.send_timeout
            self.upgrading = self.upgrade
            self._proceed()
            return
        # After the Content-Length check (nginx's client_max_body_size) as in nginx.
        if policy.limits is not None and not self._admit(action.route.ingress, policy.limits):
            return
        if policy.global_limit is not None and not self._global_admit(route, policy.global_limit):
            return
        self.read_timeout = policy.proxy_read_timeout or settings.read_timeout
        self.send_timeout = policy.proxy_send_timeout or settings.send_timeout
        if self.upgrade and policy.backend_protocol in H2_PROTOCOLS:
            # HTTP/2 to the upstream has no Upgrade (and ingressd no extended
            # CONNECT): nginx's grpc_pass fails such a request too.
            self.respond(
                502,
                f"502 Bad Gateway: backend-protocol {policy.backend_protocol} cannot carry "
                "an Upgrade (WebSocket) request\n",
            )
            return
        if (
            policy.proxy_http_version == "1.0"
            and self.req_chunked
            and self._spool is None  # a spooled body goes with its length anyway
            and policy.backend_protocol not in H2_PROTOCOLS
            and not self.upgrade
        ):
            # HTTP/1.0 has no chunked bodies: as nginx, the body is read whole and
            # sent with its length (ngx_http_proxy_module: request buffering is
            # forced unless HTTP/1.1 is proxied).
            self.whole_body = True
            if not self.body_limit or self.body_limit > WHOLE_BODY_MAX:
                self.body_limit = WHOLE_BODY_MAX
        self.upgrading = self.upgrade
        snippet = route.snippet_plan
        if snippet is not None and snippet.upstream:
            self.forward = action.copy(request_headers=self._snippet_headers(action, snippet))
        if policy.mirror is not None and not self.upgrade:
            mirror = self._mirror = MirrorCopy(
                policy.mirror, self.has_body() and policy.mirror.request_body
            )
            for part in self._body_buf or ():  # read before the exchange began
                mirror.keep(part)
        if policy.external_auth is not None and action.access is not SATISFIED:
            # The body waits in _body_buf (reading pauses when it grows), or in
            # the spool, until the auth service has answered.
            self._connect_task = client.loop.create_task(self._authorize(policy.external_auth))
            return
        self._proceed()

    def _plan_body(self, route: Route) -> None:
        """proxy-request-buffering: whether this body is read whole before connecting.

        Not for upgrades, nor gRPC routes: nginx's grpc_pass always streams the
        body (ngx_http_grpc_module reads it unbuffered), as gRPC streams need.
        """
        settings = self.state.settings
        if route.plain:
            on = settings.request_buffering
            memory = settings.client_body_buffer_size
        else:
            policy = route.policy
            on = (
                settings.request_buffering
                if policy.request_buffering is None
                else (policy.request_buffering)
            )
            if policy.backend_protocol in H2_PROTOCOLS:
                on = False
            memory = policy.client_body_buffer_size or settings.client_body_buffer_size
        if not on or self.upgrade or self.request_complete:
            return
        spool = self._spool = BodyBuffer(memory, settings.body_temp_path, settings.body_temp_size)
        self.spooling = True
        expect = find_header(self.headers, b"expect")
        if expect is not None:
            # nginx answers "Expect: 100-continue" itself when it reads the body
            # (ngx_http_test_expect) and never passes Expect on (the proxy
            # module's default headers clear it): the upstream gets the body whole.
            self.headers = [h for h in self.headers if h[0].lower() != b"expect"]
            # Its 100 Continue goes once the request is cleared (_proceed), as
            # nginx's comes after its access phase.
            self._continue = expect.strip().lower() == b"100-continue"
        if self._body_buf:
            # Body bytes read before the exchange began (a pipelined request).
            held, self._body_buf = self._body_buf, None
            for part in held:
                if not self._spool_add(spool, part):
                    return
        if self._buffered:
            self._buffered = 0
            self.client.resume_body(PAUSE_BUFFER)

    def _spool_add(self, spool: BodyBuffer, data: bytes) -> bool:
        try:
            spool.add(data)
        except BufferFull as exc:
            self.respond(503, f"503 Service Unavailable: {exc}\n")
            return False
        except OSError as exc:
            log.error("cannot buffer a request body: %s", exc)
            self.respond(500, "500 Internal Server Error: the request body cannot be buffered\n")
            return False
        return True

    def _proceed(self) -> None:
        """The request may go to an upstream: now, or once its body is read whole."""
        mirror = self._mirror
        if mirror is not None:
            if self.request_complete or not mirror.with_body:
                self._send_mirror()
            else:
                mirror.armed = True  # request_done sends it
                self._at_body_end = True
        spool = self._spool
        if spool is not None:
            if not self.request_complete:
                self._spool_wait = True  # request_done goes on
                self._at_body_end = True
                if self._continue:
                    self._continue = False
                    self.client.interim(self, 100, b"Continue")
                return
            self._seal(spool)
        self._go()

    def _seal(self, spool: BodyBuffer) -> None:
        """The buffered body is whole: it goes with its length, even one the client
        sent chunked, as nginx sends a buffered body (ngx_http_proxy_create_request)."""
        self.req_chunked = False
        self.req_length = b"%d" % spool.size

    def _send_mirror(self) -> None:
        mirror = self._mirror
        if mirror is None:
            return
        self._mirror = None
        fwd = self.forward
        if fwd is None or self.finished:
            return
        query = self.url.partition(b"?")[2]
        body: bytes | None = None
        if mirror.with_body:
            spool = self._spool
            body = spool.read_all(mirror.body_limit) if spool is not None else mirror.body()
            if body is None:
                self.state.mirrors.dropped(self.state.stats, fwd.route.ingress, mirror.config)
                return
        host = (self.host or b"").decode("latin-1")
        self.state.mirrors.send(
            self.client.loop,
            self.state.stats,
            fwd.route.ingress,
            mirror.config,
            self.method.decode("latin-1"),
            self.url.decode("latin-1"),
            query.decode("latin-1"),
            normalize_host(host),
            "https" if self.client.tls else "http",
            self.headers,
            body,
        )

    def _go(self) -> None:
        """Send the request to the chosen endpoint: a pooled connection, else a new one."""
        fwd = self.forward
        assert fwd is not None
        if self.whole_body and not self.request_complete:
            self.go_waiting = True  # request_done goes on
            return
        client = self.client
        self.attempts += 1
        plain = fwd.route.plain  # no proxy-next-upstream-timeout, ewma or HTTP/2
        policy = fwd.route.policy
        if not plain and self.attempts == 1 and policy.next_upstream.time_limit:
            self.first_try_at = client.loop.time()
        if not plain and policy.load_balance == "ewma":
            self.lb_start = client.loop.time()
        self.up_start = _clock()
        self.up_connect = 0.0
        conn: UpstreamStream | None
        if not plain and policy.backend_protocol in H2_PROTOCOLS:
            conn = self.state.h2_pool.take(fwd.endpoint, fwd.tls)
        else:
            conn = self.state.pool.take(fwd.endpoint, fwd.tls)
        if conn is not None:
            self._attach(conn)
        else:
            self._connect_task = client.loop.create_task(self._connect())

    async def _authorize(self, auth: ExternalAuth) -> None:
        client = self.client
        settings = self.state.settings
        fwd = self.forward
        assert fwd is not None
        route = fwd.route
        policy = route.policy
        sent = self.request_id is not None  # the client's X-Request-ID
        if self.request_id is None:
            # The auth service and the upstream see the same request id.
            self.request_id = self._fresh_id()
        request_id = self.request_id
        if auth.keepalive and not auth.keepalive_share_vars and not sent:
            # ingress-nginx's keep-alive subrequest (ngx.location.capture without
            # share_all_vars) has variables of its own: a $req_id of its own too,
            # unless the client sent X-Request-ID (the $req_id map takes it).
            request_id = self._fresh_id()
        host = (self.host or b"").decode("latin-1")
        req = ext_auth.AuthRequest(
            method=self.method.decode("latin-1"),
            scheme="https" if client.tls else "http",
            host=host,
            request_uri=self.url.decode("latin-1"),
            client_ip=self.real_ip(),
            server_port=client.server_port.decode(),
            request_id=request_id.decode("latin-1"),
            # nginx.tmpl sets the ssl-client-* headers on the auth location too.
            headers=client_auth.subrequest_headers(self.headers, self.forward),  # type: ignore[arg-type]
        )
        span = self.span
        sub: AuthSpan | None = None
        if span is not None:
            sub = span.subrequest(self, auth.url.text)
            req = ext_auth.with_trace(req, sub.headers)
        try:
            outcome = await ext_auth.check(
                self.state.auth,
                auth,
                req,
                policy.proxy_connect_timeout or settings.connect_timeout,
                self.read_timeout,
                # nginx's cache key begins with the server name and the auth location,
                # one per Ingress path: answers are kept per host and route.
                f"{normalize_host(host)} {route.path_type} {route.path}",
            )
        except asyncio.CancelledError:
            if sub is not None:
                sub.end(None)
            return
        if sub is not None:
            sub.end(outcome.status)
        self._connect_task = None
        if self.finished:
            return
        pending = fwd.access
        if pending is not None and not outcome.allowed:
            outcome = ext_auth.with_local_denial(
                outcome, pending.status, pending.headers, auth, req
            )
        if not outcome.allowed:
            cookies = tuple((b"Set-Cookie", c) for c in outcome.cookies)
            self.respond(outcome.status, outcome.body, outcome.location, outcome.headers + cookies)
            return
        self.auth_headers = outcome.upstream_headers
        self.auth_cookies = outcome.cookies
        self._proceed()

    def _snippet_vars(self) -> RequestVars:
        """A snippet's variables for this request (model/snippet.py)."""
        path, _, query = self.url.partition(b"?")
        raw_path = path.decode("latin-1")
        host = (self.host or b"").decode("latin-1")
        return RequestVars(
            normalize_host(host),
            host,
            raw_path,
            normalize_path(raw_path) or raw_path,
            query.decode("latin-1"),
            "https" if self.client.tls else "http",
            self.real_ip(),
            self.method.decode("latin-1"),
            self.headers,
            (self.request_id or b"").decode("latin-1"),
            "",
            self.client.server_port.decode("latin-1"),
        )

    def _snippet_headers(self, fwd: Forward, snippet: SnippetPlan) -> Headers:
        """proxy_set_header of a snippet, after the annotations' headers."""
        if self.request_id is None:
            self.request_id = self._fresh_id()  # $req_id: the one the upstream gets
        return (*fwd.request_headers, *upstream_headers(snippet, self._snippet_vars()))

    def _auth_cookies(self, status: int) -> list[tuple[bytes, bytes]]:
        """The auth service's Set-Cookie for a response with ``status``, as nginx's add_header."""
        fwd = self.forward
        assert fwd is not None  # a response came: the request was forwarded
        auth = fwd.route.policy.external_auth
        if auth is None or not (auth.always_set_cookie or status in ext_auth.COOKIE_STATUSES):
            return []
        return [(b"Set-Cookie", c) for c in self.auth_cookies]

    def _admit(self, ingress: str, limits: LimitConfig) -> bool:
        """limit-rps/-rpm/-connections: False once the 503 is answered."""
        client = self.client
        limiter = self.state.limits.get(ingress, limits)
        verdict = limiter.admit(self.real_ip(), client.loop.time())
        if isinstance(verdict, str):
            settings = self.state.settings
            if limiter.table_full:
                what = "limit-rps" if limits.rps else "limit-rpm"
                self.state.stats.table_full(
                    ingress, "limit-connections" if limiter.refused_conns else what
                )
            status = (
                settings.limit_conn_status if limiter.refused_conns else settings.limit_req_status
            )
            if status != 503:
                # The refusal's text begins with "503 Service Unavailable: ".
                verdict = f"{status} {HTTPStatus(status).phrase}: {verdict.partition(': ')[2]}"
            self.respond(status, verdict)
            return False
        self.limit_slot = verdict
        return True

    def _global_admit(self, route: Route, config: GlobalRateLimit) -> bool:
        """global-rate-limit: False once the refusal (429 by default) is answered."""
        client_ip = self.real_ip()
        key = chash.render(config.key, self._snippet_vars()).decode("latin-1")
        state = self.state
        now = self.client.loop.time()
        if state.global_limits.admit(state.limits, route.ingress, config, key, client_ip, now):
            return True
        if state.global_limits.table_full:
            state.stats.table_full(route.ingress, "global-rate-limit")
        status = state.settings.global_limit_status
        self.respond(
            status,
            f"{status} {HTTPStatus(status).phrase}: global rate limit of {config.limit} requests "
            f"per {config.window} s exceeded for {config.key_text} on Ingress {route.ingress}\n",
        )
        return False

    async def _connect(self) -> None:
        fwd = self.forward
        assert fwd is not None
        where = f"{fwd.backend.name} ({fwd.endpoint})"
        grpc_status: int | None = None
        failure: tuple[str, int, str] | None
        try:
            timeout = fwd.route.policy.proxy_connect_timeout
            conn: UpstreamStream
            if fwd.route.policy.backend_protocol in H2_PROTOCOLS:
                conn = await self.state.h2_pool.connect(fwd.endpoint, timeout, fwd.tls)
            else:
                conn = await self.state.pool.connect(fwd.endpoint, timeout, fwd.tls)
        except asyncio.CancelledError:
            return
        except TimeoutError:  # before OSError, of which it is one
            failure = ("timeout", 504, f"504 Gateway Timeout: connecting to {where} timed out")
            error = "connect_timeout"
            # Nothing reached the upstream: a gRPC client may try again.
            grpc_status = grpc.UNAVAILABLE
        except ssl.SSLError as exc:  # the handshake, or check_peer after it
            failure = (
                "error",
                502,
                f"502 Bad Gateway: TLS to upstream {fwd.endpoint} ({fwd.backend.name}) "
                f"failed: {describe_tls_error(exc)}",
            )
            error = "tls"
        except OSError as exc:
            reason = exc.strerror or str(exc)
            failure = ("error", 502, f"502 Bad Gateway: cannot connect to {where}: {reason}")
            error = "connect_error"
        else:
            failure = None
        if failure is not None:
            self._connect_task = None
            self._upstream_error(error)
            self._connect_failed()
            kind, status, text = failure
            if not self._retry(kind, sent=False):
                self.respond(status, text + self._tries_note() + "\n", grpc_status=grpc_status)
            return
        self._connect_task = None
        self.up_connect = _clock() - self.up_start
        self.state.health.succeeded(fwd.endpoint)
        if self.finished:
            conn.close()
            return
        self._attach(conn)

    def _connect_failed(self) -> None:
        self._lb_failed(connect=True)
        fwd = self.forward
        assert fwd is not None
        health = self.state.health
        if health.failed(fwd.endpoint):
            log.warning(
                "endpoint %s of %s ejected after %d failed connections; back in %.0f s",
                fwd.endpoint,
                fwd.backend.name,
                health.max_fails,
                health.ejected[fwd.endpoint] - time.monotonic(),
            )

    def _attach(self, conn: UpstreamStream) -> None:
        self.upstream = conn
        fwd = self.forward
        head_limit = fwd.route.policy.proxy_buffer_size if fwd is not None else None
        conn.begin(
            self,
            self.method == b"HEAD",
            head_limit or self.state.settings.proxy_buffer_size,
        )
        self.activity = self.client.now()
        if self.request_id is None:
            # Kept: retries, the access log and the upstream all see the same id.
            self.request_id = self._fresh_id()
        if self.upgrading:
            # Bytes after an upgrade request belong to the new protocol: they
            # wait for the upstream's 101.
            conn.send_request(self, [], False)
            self.state.watch(self)
            return
        spool = self._spool
        if spool is not None:
            self.sent_body = True
            if spool.file is None:
                conn.send_request(self, spool.memory, True)
            else:
                conn.send_request(self, spool.memory, False)
                self._feed_at = 0
                self._feed()
            self.state.watch(self)
            return
        body = self._body_buf
        conn.send_request(self, body or (), self.request_complete)
        if body:
            self.sent_body = True
            for part in body:
                self._keep_for_replay(part)
            self._body_buf = None
        if self._buffered:
            self._buffered = 0
            self.client.resume_body(PAUSE_BUFFER)
        self.state.watch(self)

    def _feed(self) -> None:
        """Send the spool's file part on, until the upstream is slow to take it
        (on_upstream_paused resumes) or it is all sent."""
        spool = self._spool
        conn = self.upstream
        while spool is not None and conn is not None and self._feed_at >= 0:
            if self.send_paused_at is not None:
                return
            data = spool.read_file(self._feed_at, FEED_CHUNK)
            if not data:
                self._feed_at = -1
                conn.end_body()
                return
            self._feed_at += len(data)
            self.activity = self.client.now()
            conn.send_body(data)
            conn = self.upstream  # a failed write may have ended the try

    # -- request body ---------------------------------------------------------------------

    def request_body(self, data: bytes) -> None:
        if self.finished:
            return  # answered already (local response): the body is discarded
        self.body_seen += len(data)
        if self.no_body:
            return  # an error page is fetched without it
        if self.body_limit and self.body_seen > self.body_limit:
            self._too_large()
            return
        mirror = self._mirror
        if mirror is not None and mirror.with_body and self._spool is None:
            mirror.keep(data)
        spool = self._spool
        if spool is not None:
            self._spool_add(spool, data)
            return
        conn = self.upstream
        if conn is None:
            if self._body_buf is None:
                self._body_buf = [data]
            else:
                self._body_buf.append(data)
            self._buffered += len(data)
            if self._buffered > BUFFER_HIGH and not self.whole_body:
                self.client.pause_body(PAUSE_BUFFER)
            return
        self.sent_body = True
        self.activity = self.client.now()
        conn.send_body(data)
        if not self.replay_gone:
            self._keep_for_replay(data)

    def request_done(self) -> None:
        self.request_complete = True
        if self.finished:
            self.client.exchange_done(self)
            return
        if self._at_body_end:  # one test for requests without such work
            self._at_body_end = False
            mirror = self._mirror
            if mirror is not None and mirror.armed:
                self._send_mirror()  # cleared to go before its body had ended
            if self._spool_wait:
                self._spool_wait = False
                spool = self._spool
                if spool is not None:
                    self._seal(spool)
                self._go()
                return
        if self.whole_body and self.upstream is None:
            # The chunked body is all here: it goes as one of known length.
            self.req_chunked = False
            self.req_length = b"%d" % self._buffered
            if self.go_waiting:
                self.go_waiting = False
                self._go()
            return
        if self.upstream is not None:
            self.upstream.end_body()

    def client_tail(self, data: bytes) -> None:
        """Bytes after an upgrade request, held until the upstream agrees."""
        if data:
            if self._body_buf is None:
                self._body_buf = [data]
            else:
                self._body_buf.append(data)
            self._buffered += len(data)
            if self._buffered > BUFFER_HIGH:
                self.client.pause_body(PAUSE_BUFFER)

    # -- upstream response ---------------------------------------------------------------

    def on_response_head(
        self,
        status: int,
        reason: bytes,
        headers: http.Headers,
        chunked: bool,
        length: bytes | None,
    ) -> None:
        client = self.client
        self.activity = client.now()
        fwd = self.forward
        # A response came: the request was forwarded. Narrowed, not ignored: on
        # a union compiled code reads every attribute after it the generic way.
        assert fwd is not None
        if self.lb_start is not None:
            # ewma: the time from asking the upstream to its response head
            self.state.ewma.update(fwd.endpoint, self.activity - self.lb_start)
            self.lb_start = None
        if 100 <= status < 200 and status != 101:
            client.interim(self, status, reason)
            return
        if status == 101 and not self.upgrade:
            # An upgrade nobody asked for: refuse rather than desynchronise.
            self._upstream_error("invalid_response")
            self._upstream_failed("switched protocols without being asked")
            return
        route = fwd.route
        statuses = None if route.plain else route.policy.next_upstream.statuses
        if statuses and status in statuses and self._retry(f"http_{status}", sent=True):
            return  # this response is dropped with its connection
        if (
            status >= 400
            and not self.error_page
            and not route.policy.disable_intercept_errors
            and self._error_page(route, status)
        ):
            return  # this response is dropped with its connection, unread
        self.response_started = True
        self.status = status
        out = headers
        plain = route.plain
        snippet = None if plain else route.snippet_plan
        settings = self.state.settings
        hide = settings.hide_headers
        if hide:
            out = http.drop_named(out, hide)  # the ConfigMap's hide-headers
        if snippet is not None:
            out = hide_headers(snippet, out)  # proxy_hide_header: the upstream's only
        if not route.plain:
            policy = route.policy
            if policy.response_rewrite is not None:
                # proxy_redirect, proxy_cookie_*: on the upstream's own headers.
                out = rewrite_response(policy.response_rewrite, out)
            if policy.limit_rate and status != 101:
                self.throttle = Throttle(policy.limit_rate, policy.limit_rate_after, self.started)
        extra = fwd.response_headers
        if extra:
            # CORS headers replace the upstream's; others (Set-Cookie) are added.
            if route.policy.cors is not None:
                out = http.drop_named(out, CORS_HEADERS)
            out = [*out, *extra]
        hsts = fwd.hsts
        if hsts is not None:
            # Replaces the upstream's, as lua_ingress.lua sets ngx.header[...].
            out = http.replace_named(out, _HSTS_LOWER, _HSTS, hsts)
        if self.auth_cookies:
            out = [*out, *self._auth_cookies(status)]
        if not plain and route.response_names:
            # add-headers and custom-headers: more_set_headers, encoded at build time.
            out = http.set_named(out, route.response_names, route.policy.response_headers)
        if snippet is not None and (snippet.more or snippet.add):
            out = edit_response(snippet, status, out, self._snippet_vars())
        if route.plain:
            if settings.proxy_buffering:
                self._read_ahead(route)
        elif (
            route.policy.proxy_buffering
            if route.policy.proxy_buffering is not None
            else settings.proxy_buffering
        ):
            self._read_ahead(route)
        if status != 101:
            if self.upgrading:
                self.upgrading = False
                self.keep_alive = False  # the client's parser is past the upgrade request
            has_body = self.method != b"HEAD" and status != 204 and status != 304
            self.up_close_delimited = has_body and not chunked and length is None
        client.response_head(self, status, reason, out, chunked, length)

    def _read_ahead(self, route: Route) -> None:
        """proxy-buffering on: the response may wait for a slow client up to
        proxy-buffers-number x proxy-buffer-size before the upstream is paused,
        and is read again once what waits is down to proxy-busy-buffers-size
        (nginx's default: two buffers), less one buffer at most, as nginx checks."""
        settings = self.state.settings
        policy = route.policy
        size = policy.proxy_buffer_size or settings.proxy_buffer_size
        number = policy.proxy_buffers_number or settings.proxy_buffers_number
        busy = policy.proxy_busy_buffers_size or settings.proxy_busy_buffers_size or 2 * size
        high = number * size
        self.client.read_ahead(high, max(0, min(busy, high - size)))

    def on_response_body(self, data: bytes) -> None:
        self.activity = self.client.now()
        if self.throttle is None:
            self.client.response_body(self, data)
        elif self.held:
            self.held.append(data)  # read before the pause took effect
        else:
            self._send_throttled(data)

    def _send_throttled(self, data: bytes) -> None:
        """limit-rate: send what the rate allows now, hold the rest and wait."""
        throttle = self.throttle
        assert throttle is not None
        now = _clock()
        room = throttle.allowed(now)
        if room >= len(data):
            throttle.sent += len(data)
            self.client.response_body(self, data)
            return
        if room:
            throttle.sent += room
            self.client.response_body(self, data[:room])
            data = data[room:]
        self.held = [data]
        if not self.throttled:
            self.throttled = True
            conn = self.upstream
            if conn is not None:
                conn.pause_reading()
            self.client.loop.call_later(throttle.wait(len(data), now), self._unthrottle)

    def _unthrottle(self) -> None:
        """limit-rate: a wait is over: send on, then end or read on (unless the
        client is slow to read too)."""
        self.throttled = False
        if self.finished:
            self.held = []
            return
        data = b"".join(self.held)
        self.held = []
        self._send_throttled(data)
        self.client.flush()
        if self.held:
            return
        if self.held_close:
            self.held_close = False
            self._finish()
            self.client.exchange_done(self)  # keep_alive is already False
        elif self.held_end is not None:
            keep_alive, trailers = self.held_end
            self.held_end = None
            if self.upstream is not None:
                # Paused for the rate: a pooled connection must read again.
                self.upstream.resume_reading()
            self.on_response_end(keep_alive, trailers)
        elif self.upstream is not None and not self.client_writing_paused:
            self.upstream.resume_reading()

    def flush(self) -> None:
        """Write what the upstream's last read produced, in one call."""
        self.client.flush()

    def on_response_end(self, keep_alive: bool, trailers: http.Headers | None = None) -> None:
        if self.finished:
            return
        if self.held:
            self.held_end = (keep_alive, trailers)  # after the held body (limit-rate)
            return
        client = self.client
        client.response_end(self, trailers)
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            if (
                keep_alive
                and self.request_complete
                and not self.upgrade
                and (self.forward is None or self.forward.route.reuses_upstream)
            ):
                if self.client_writing_paused:
                    conn.resume_reading()
                conn.release()
            else:
                conn.close()
        self._finish()
        if self.request_complete or not self.keep_alive:
            client.exchange_done(self)

    def on_upstream_upgraded(self, tail: bytes) -> None:
        conn = self.upstream
        client = self.client
        if conn is None or not self.upgrade:
            return
        # The tunnel keeps the request's limit-connections place until it closes.
        slot, self.limit_slot = self.limit_slot, None
        body, self._body_buf = self._body_buf or [], None
        self._finish()
        self.upstream = None
        conn.owner = None
        client.start_tunnel(conn, tail, body, slot)

    def on_upstream_lost(self, exc: Exception | None) -> None:
        conn = self.upstream
        self.upstream = None
        if self.finished:
            return
        if self.up_close_delimited:
            # The upstream's close is the end of its body.
            if self.held:
                self.held_close = True  # after the held body (limit-rate)
                return
            self.client.flush()
            self._finish()
            self.client.exchange_done(self)  # keep_alive is already False
            return
        invalid = isinstance(
            exc, (httptools.HttpParserError, UpstreamHeadTooLarge, InvalidUpstreamResponse)
        )
        if invalid:
            error = "invalid_response"
        elif isinstance(exc, ssl.SSLError):
            error = "tls"
        else:
            error = "reset"
        if self.response_started:
            self._upstream_error(error)
            # Too late for an error status: cut the client off so it sees a
            # truncated response, never a short one that looks complete.
            self._finish()
            self.client.abort_response(self)
            return
        if (
            conn is not None
            and not invalid
            and conn.requests > 1
            and not self._retried
            and (not self.sent_body or self._spool is not None)
            and self.method in IDEMPOTENT
        ):
            # A pooled connection the upstream closed while idle: try a new one.
            self._retried = True
            self._cancel_timer()
            self._rewind_body()
            self._connect_task = self.client.loop.create_task(self._connect())
            return
        if (
            isinstance(exc, StreamRefused)
            and not self._retried
            and (not self.sent_body or not self.replay_gone)
        ):
            # HTTP/2: the upstream did not process the request (REFUSED_STREAM,
            # or a GOAWAY below its stream), so it goes again, whatever its
            # method (RFC 9113 8.7), on another stream.
            self._retried = True
            self._cancel_timer()
            self._rewind_body()
            self._connect_task = self.client.loop.create_task(self._connect())
            return
        self._upstream_error(error)
        self._lb_failed()
        # nginx counts a head too big for proxy_buffer_size as invalid_header too.
        kind = "invalid_header" if invalid else "error"
        if self._retry(kind, sent=True):
            return
        if isinstance(exc, ssl.SSLError):
            # e.g. an mTLS upstream refusing the client certificate after the handshake
            self._upstream_failed(f"TLS to upstream failed: {describe_tls_error(exc)}")
            return
        reason = f"{exc}" if exc else "connection closed before a response"
        self._upstream_failed(reason + self._tries_note())

    def _upstream_failed(self, reason: str) -> None:
        self._lb_failed()
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.abort()
        self.respond(502, f"502 Bad Gateway: {self._upstream_name()}: {reason}\n")

    # -- custom-http-errors ----------------------------------------------------------------

    def _error_page(self, route: Route, status: int) -> bool:
        """Answer ``status`` with the default backend's error page (routing/errors.py);
        False when ``status`` is not one the route intercepts.

        Once per request: the error page's own status passes whatever it is, and
        if it cannot be fetched the failure is answered as for any upstream.
        """
        table = self.state.table
        if (
            not errors.intercepted(table, route, status)
            or self.upgrade
            or grpc.is_grpc(self.headers)
        ):
            return False
        self.error_page = True
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.abort()  # the upstream's body is dropped with its connection, never read
        self._cancel_timer()
        uri = self.url.decode("latin-1")
        accept = find_header(self.headers, b"accept")
        action = errors.error_page(table, route, status, uri, uri.partition("?")[2], accept)
        if isinstance(action, Respond):
            self.route = action.route
            self.respond(action.status, action.body)
            return True
        # The error page is asked for with the client's method and headers, no body.
        self.no_body = True
        self.sent_body = False
        self.replay = None
        self.replay_gone = True
        self._body_buf = None
        self._drop_spool()
        self._mirror = None
        if self._buffered:
            self._buffered = 0
            self.client.resume_body(PAUSE_BUFFER)
        if self.send_paused_at is not None:  # paused for the upstream just dropped
            self.send_paused_at = None
            self.client.resume_body(PAUSE_UPSTREAM)
        if not self.request_complete and self.has_body():
            self.keep_alive = False  # the rest of the body is read and dropped
        settings = self.state.settings
        self.read_timeout = settings.read_timeout
        self.send_timeout = settings.send_timeout
        self.upgrading = False
        self.attempts = 0
        self.tried = None
        self._retried = False
        self.forward = action
        self._go()
        return True

    # -- proxy-next-upstream ---------------------------------------------------------------

    def _retry(self, kind: str, sent: bool) -> bool:
        """Send the request to the next endpoint if proxy-next-upstream allows; else False.

        ``sent``: whether the failed try had sent the request (not just failed to connect).
        """
        fwd = self.forward
        if fwd is None or self.finished or self.response_started:
            return False
        rule = fwd.route.policy.next_upstream
        if not (kind.startswith("http_") or rule.covers(kind)):
            return False
        if rule.tries and self.attempts >= rule.tries:
            return False
        loop = self.client.loop
        if rule.time_limit and loop.time() - self.first_try_at >= rule.time_limit:
            return False
        if sent:
            if self.method not in IDEMPOTENT and not rule.non_idempotent:
                return False
            if self.sent_body and self.replay_gone:
                return False  # the body is gone: it cannot be sent again
        tried = self.tried
        if tried is None:
            tried = self.tried = []
        tried.append(fwd.endpoint)  # the endpoint that just failed
        nxt = retarget(fwd, tried, self.client.tls, self.state.health, self.headers)
        if nxt is None:
            return False
        self.state.stats.retry(fwd.route.ingress, fwd.backend.name, kind)
        log.warning(
            "%s %s: %s from %s (%s), trying %s (try %d)",
            self.method.decode("latin-1"),
            self.url.decode("latin-1"),
            kind,
            fwd.endpoint,
            fwd.backend.name,
            nxt.endpoint,
            self.attempts + 1,
        )
        self._cancel_timer()
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.abort()
        self._rewind_body()
        self.forward = nxt
        self._go()
        return True

    def _rewind_body(self) -> None:
        """Before another try: everything sent so far goes again; what the
        client sends next follows. A buffered body is sent whole again."""
        if self._spool is not None:
            self._feed_at = -1
        elif self.sent_body:
            self._body_buf = self.replay
            self.sent_body = False
        self.replay, self.replay_size, self.replay_gone = None, 0, False
        if self.send_paused_at is not None:
            self.send_paused_at = None
            self.client.resume_body(PAUSE_UPSTREAM)

    def _keep_for_replay(self, data: bytes) -> None:
        self.replay_size += len(data)
        if self.replay_size > REPLAY_LIMIT:
            self.replay = None
            self.replay_gone = True
        elif not self.replay_gone:
            if self.replay is None:
                self.replay = [data]
            else:
                self.replay.append(data)

    def _tries_note(self) -> str:
        return f" ({self.attempts} tries)" if self.attempts > 1 else ""

    def _lb_failed(self, connect: bool = False) -> None:
        """ewma: a failed connect or exchange counts as a response that took the timeout."""
        if self.lb_start is None or self.forward is None:
            return
        self.lb_start = None
        if connect:
            settings = self.state.settings
            penalty = self.forward.route.policy.proxy_connect_timeout or settings.connect_timeout
        else:
            penalty = self.read_timeout
        self.state.ewma.update(self.forward.endpoint, penalty)

    def _upstream_error(self, kind: str) -> None:
        fwd = self.forward
        if fwd is not None:
            self.state.stats.upstream_error(fwd.route.ingress, fwd.backend.name, kind)

    def _upstream_name(self) -> str:
        fwd = self.forward
        return f"{fwd.backend.name} ({fwd.endpoint})" if fwd else "upstream"

    def on_upstream_paused(self, paused: bool) -> None:
        if paused:
            self.send_paused_at = self.client.loop.time()
            self.client.pause_body(PAUSE_UPSTREAM)
        else:
            self.send_paused_at = None
            self.client.resume_body(PAUSE_UPSTREAM)
            if self._feed_at >= 0:
                self._feed()

    def client_paused(self, paused: bool) -> None:
        self.client_writing_paused = paused
        conn = self.upstream
        if conn is not None:
            if paused:
                conn.pause_reading()
            elif not self.throttled:  # limit-rate resumes it when its pause is over
                conn.resume_reading()

    # -- timeouts -------------------------------------------------------------------

    def check_timeout(self, now: float) -> None:
        """Called by the state's sweep while this exchange waits on its upstream."""
        if self.finished:
            self.state.waiting.discard(self)
        elif self.send_paused_at is not None and now - self.send_paused_at >= self.send_timeout:
            self._timed_out("sending the request to the upstream timed out", "send_timeout")
        elif self.client_writing_paused or self.throttled:
            # The client is slow to read, or limit-rate holds the response back;
            # the upstream is not at fault.
            self.activity = now
        elif now - self.activity >= self.read_timeout:
            self._timed_out("the upstream did not answer in time", "read_timeout")

    def _too_large(self) -> None:
        """413 before the upstream answers; after that, only cutting off is left."""
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.abort()
        if self._connect_task is not None:
            self._connect_task.cancel()
            self._connect_task = None
        self.keep_alive = False  # the rest of the body is not read
        if self.response_started:
            self._finish()
            self.client.abort_response(self)
            return
        self.respond(
            413,
            f"413 Request Entity Too Large: the body exceeds {self.body_limit} bytes\n",
        )

    def _timed_out(self, reason: str, error: str) -> None:
        self._upstream_error(error)
        self._lb_failed()
        if self._retry("timeout", sent=True):
            return
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.abort()
        if self.response_started:
            self._finish()
            self.client.abort_response(self)
        else:
            note = self._tries_note()
            self.respond(
                504,
                f"504 Gateway Timeout: {self._upstream_name()}: {reason}{note}\n",
                grpc_status=grpc.DEADLINE_EXCEEDED,
            )

    def _cancel_timer(self) -> None:
        self.state.waiting.discard(self)

    # -- endings ---------------------------------------------------------------------

    def respond(
        self,
        status: int,
        body: str,
        location: str | None = None,
        headers: http.Headers | tuple[tuple[bytes, bytes], ...] = (),
        grpc_status: int | None = None,
    ) -> None:
        """Answer with a response generated here; to a gRPC call, as gRPC
        (``grpc_status``, else the one ``status`` maps to)."""
        client = self.client
        if self.finished or client.closing:
            return
        # An answer that brings its own body has its Content-Type (a snippet's
        # return); any other is answered with nginx's page for the status and
        # ``body`` is only why: for the log, never for the client.
        literal = pages.has_content_type(headers)
        if status >= 400 and not self.error_page and self.rejection is None:
            # Answers ingressd makes for a route (no endpoints, upstream failures,
            # limits, auth…) get the error page too, as nginx's error_page does.
            route = self.forward.route if self.forward is not None else self.route
            if route is not None and self._error_page(route, status):
                return
        if self.upgrade:
            # The client's parser is past an upgrade request that did not happen.
            self.upgrading = False
            self.keep_alive = False
        if not self.request_complete and self.has_body():
            # Reading and discarding the body keeps the connection usable, but a
            # large upload is cheaper to cut off.
            self.keep_alive = False
        if self.auth_cookies:
            headers = (*headers, *self._auth_cookies(status))
        fwd = self.forward
        if fwd is not None and fwd.hsts is not None:
            # An answer of ingressd's own once forwarding began (502, 504, 413,
            # limits, auth-url); decide's own answers carry the header already.
            headers = (*headers, (_HSTS, fwd.hsts))
        route = self.forward.route if self.forward is not None else self.route
        if route is not None and not route.plain:
            if route.response_names:
                # add-headers, custom-headers: nginx's header filters run on its own
                # answers too (more_set_headers applies to every status).
                headers = http.set_named(
                    headers, route.response_names, route.policy.response_headers
                )
            snippet = route.snippet_plan
            if snippet is not None and (snippet.more or snippet.add):
                # nginx's header filters run on its own answers too.
                if snippet.request_id and self.request_id is None:
                    self.request_id = self._fresh_id()  # $req_id always has a value
                headers = edit_response(snippet, status, list(headers), self._snippet_vars())
        elif route is None:
            table = self.state.table
            if table.http_header_names:
                # No route (ingressd's own 404, a bad request): add-headers still, as
                # nginx's default server has them.
                headers = http.set_named(headers, table.http_header_names, table.http_headers)
        if grpc.is_grpc(self.headers):
            status = pages.wire_status(status)
            self._respond_grpc(status, body, location, headers, grpc_status)
        elif literal:
            client.local_response(self, status, body.encode(), location, headers)
        else:
            self._log_reason(status, body)
            page = pages.page(status, status >= 400 and pages.wants_padding(self.headers))
            status = pages.wire_status(status)  # nginx's 495/496: 400 with their page
            client.local_response(self, status, page, location, headers)
        # The status ingressd meant, also for a gRPC answer (sent as 200): what
        # metrics and the access log count.
        self.status = status
        self._finish()
        if self.request_complete or not self.keep_alive:
            client.exchange_done(self)

    def _log_reason(self, status: int, reason: str) -> None:
        """Why ingressd answered ``status`` itself, for operators (the client sees
        nginx's page): a 5xx at warning, as nginx's error log has upstream
        failures and refusals; the rest (redirects, no route, denials) at debug."""
        reason = reason.strip()
        if not reason:
            return
        level = logging.WARNING if status >= 500 else logging.DEBUG
        if log.isEnabledFor(level):
            host = (self.host or b"").decode("latin-1")
            url = self.url[:200].decode("latin-1")
            log.log(level, "%s %s%s: %s", self.method.decode("latin-1"), host, url, reason)

    def _respond_grpc(
        self,
        status: int,
        body: str,
        location: str | None,
        headers: http.Headers | tuple[tuple[bytes, bytes], ...],
        code: int | None,
    ) -> None:
        """A gRPC answer: 200, ``application/grpc``, no message, the status in
        trailers: what a gRPC server answers, in a form every client side can
        frame (an HTTP/2 client side may send it as one HEADERS frame:
        gRPC's Trailers-Only). HTTP/1.0, which has no trailers, gets the
        status in the head."""
        message = body.strip() or f"{status} {HTTPStatus(status).phrase}"
        if location is not None:
            message += f" (Location: {location})"
        grpc_status = grpc.status_for(status) if code is None else code
        head = [(b"content-type", grpc.CONTENT_TYPE), *((n.lower(), v) for n, v in headers)]
        trailers = grpc.status_fields(grpc_status, message)
        client = self.client
        if self.http10:
            client.response_head(self, 200, b"", head + trailers, False, b"0")
            client.response_end(self, None)
        else:
            client.response_head(self, 200, b"", head, True, None)
            client.response_end(self, trailers)

    def _drop_spool(self) -> None:
        spool = self._spool
        if spool is not None:
            self._spool = None
            self._feed_at = -1
            self._spool_wait = False
            spool.close()

    def _finish(self) -> None:
        if not self.logged:
            self.record(self.status)
        self.finished = True
        if self._spool is not None:
            self._drop_spool()
        self._cancel_timer()
        if self.limit_slot is not None:
            self.limit_slot.release()
            self.limit_slot = None
        if self._buffered:
            self._buffered = 0
            self._body_buf = None
            self.client.resume_body(PAUSE_BUFFER)

    def abort(self) -> None:
        """The client went away: drop the upstream side too."""
        if not self.logged and not self.finished and self.head_done:
            # As nginx: 499 for a request whose client left before the answer.
            self.record(self.status if self.response_started else 499)
        self.finished = True
        self._cancel_timer()
        if self._spool is not None:
            self._drop_spool()
        if self.limit_slot is not None:
            self.limit_slot.release()
            self.limit_slot = None
        if self._connect_task is not None:
            self._connect_task.cancel()
            self._connect_task = None
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.abort()

    def record(self, status: int) -> None:
        """Count the request, once, as it ends: metrics, then the access log line."""
        self.logged = True
        end = _clock()
        client = self.client
        state = self.state
        fwd = self.forward
        if fwd is not None:
            ingress, backend = fwd.route.ingress, fwd.backend.name
        elif self.route is not None:
            ingress, backend = self.route.ingress, self.route.backend.name
        else:
            ingress = backend = ""
        upstream = end - self.up_start if self.up_start else None
        # The request line as sent ("METHOD URL HTTP/1.x\r\n"), the headers, the body.
        bytes_in = len(self.method) + len(self.url) + 14 + self.header_bytes + self.body_seen
        duration = end - self.started
        state.stats.request(
            ingress,
            backend,
            self.method,
            status,
            duration,
            upstream if self.response_started else None,
            bytes_in,
            self.sent,
        )
        span = self.span
        if span is not None:
            self.span = None
            span.end(self, status)
        access = state.access_log
        if access is not None and self._loggable(fwd, status):
            if self.request_id is None:
                self.request_id = self._fresh_id()  # answered here: an id for the log only
            access.write(client.loop, self, status, duration, upstream, bytes_in, ingress, backend)
