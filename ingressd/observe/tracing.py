"""OpenTelemetry tracing: one server span per request, exported by OTLP/HTTP.

What ingress-nginx v1.15.1 does with its OpenTelemetry nginx module, on the
official Python SDK (``opentelemetry-sdk``) and its OTLP/HTTP protobuf exporter
(the ``tracing`` extra: neither is imported unless tracing is on):

- a request on a traced route (the ConfigMap's ``enable-opentelemetry``, or its
  Ingress's annotation, which wins: template.go ``buildOpentelemetryForLocation``)
  gets a SERVER span, from its first byte to its last, with HTTP's semantic
  conventions and the Ingress, Service and endpoint that served it;
- a client's W3C ``traceparent``/``tracestate`` is continued when trusted
  (``opentelemetry-trust-incoming-span``, true by default); otherwise, or when it
  does not parse, a new trace starts. Either way the upstream receives ingressd's
  own ``traceparent`` (its parent is ingressd's span), never the client's as is:
  ``begin`` replaces the trace context in the request's headers, so the data
  path forwards it as any header, at no cost of its own;
- the ``auth-url`` subrequest gets a CLIENT span of its own under it, and the
  auth service a ``traceparent`` naming that span.

``ex`` below is a ``proxy/exchange.py`` Exchange (typed Any: this layer is
below the data path's). The data path (``proxy/``, compiled) sees only
``ProxyState.tracing`` (None when no route is traced: one attribute test per
request) and the ``ServerSpan`` an exchange holds. Spans are queued as they end
and exported in batches by a thread of their own (``SpanQueue``), never on the
event loop; a full queue drops spans, counted and logged, and a collector that
is down costs requests nothing. With ``--workers N`` each worker exports its
own spans, told apart by ``service.instance.id`` (host name and process id).
"""

from __future__ import annotations

import collections
import importlib
import logging
import os
import random
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Any

from ..model.globals import TracingConfig
from ..model.objects import Snapshot
from ..model.table import Route
from ..policy.otel import missing
from ..routing.decide import find_header

log = logging.getLogger("ingressd.tracing")

# A client's traceparent is 55 characters in version 00; later versions may add
# fields. Longer ones (and tracestate past W3C's 512) are not parsed at all.
MAX_TRACEPARENT = 256
MAX_TRACESTATE = 512
DROP_LOG_EVERY = 10.0  # seconds between warnings about dropped or failed spans
# Seconds a stopping process waits for its last export (within workers.STOP_MARGIN).
SHUTDOWN_WAIT = 1.0
EXPORT_TIMEOUT = 10.0  # seconds one export (its retries included) may take
ANNOTATION = (
    "nginx.ingress.kubernetes.io/enable-opentelemetry",
    "ingressd.io/enable-opentelemetry",
)


def annotated(snapshot: Snapshot) -> bool:
    """Whether some Ingress turns tracing on for itself (as ingress-nginx loads its
    module when the ConfigMap or any location asks: shouldLoadOpentelemetryModule)."""
    for obj in snapshot.of("Ingress").values():
        notes = (obj.get("metadata") or {}).get("annotations") or {}
        for key in ANNOTATION:
            value = notes.get(key)
            if isinstance(value, str) and value.strip().lower() == "true":
                return True
    return False


def update(
    current: Tracing | None,
    config: TracingConfig,
    routes_ask: bool,
    *,
    serve: bool = True,
    report: bool = True,
    counts: list[int] | None = None,
) -> Tracing | None:
    """The tracing a process should run under ``config`` (None: none), reusing
    ``current`` when its settings are the same. ``routes_ask``: some Ingress
    enables tracing by annotation. ``serve``: this process proxies (the main
    process of --workers only reports). ``counts``: the process's span totals
    (RequestStats.spans)."""
    wanted = config.enabled or routes_ask
    why = None
    if wanted and not config.collector_host:
        why = "tracing is enabled but otlp-collector-host is empty: no spans are exported"
    elif wanted:
        why = missing()
    if report:
        _say(config, wanted, why)
    if not wanted or why is not None:
        if current is not None:
            current.close()
        return None
    if current is not None and current.config == config:
        return current
    if current is not None:
        current.close()
    return Tracing(config, counts) if serve else None


_said: list[object] = [None]  # what _say last logged: once per change, not per rebuild


def _say(config: TracingConfig, wanted: bool, why: str | None) -> None:
    said = (config, wanted, why)
    if said == _said[0]:
        return
    first = _said[0] is None
    _said[0] = said
    if why is not None:
        log.warning("%s", why)
    elif wanted:
        log.info(
            "tracing: exporting spans to %s as service %r (sampler %s%s%s)",
            endpoint(config),
            config.service_name,
            config.sampler,
            f" {config.ratio:g}" if config.sampler == "TraceIdRatioBased" else "",
            ", parent-based" if config.parent_based else "",
        )
    elif not first:
        log.info("tracing: off")


def must_import(config: TracingConfig, routes_ask: bool) -> bool:
    """Whether ``update`` would make a Tracing whose modules are not imported yet:
    importing them takes the better part of a second, which the caller should not
    spend on its event loop (``import_then``)."""
    return (
        (config.enabled or routes_ask)
        and bool(config.collector_host)
        and _MODULES[0] not in sys.modules
        and missing() is None
    )


def import_then(done: Callable[[], object]) -> None:
    """Import what a Tracing needs in a thread of its own, then call ``done`` there."""

    def run() -> None:
        try:
            for name in _MODULES:
                importlib.import_module(name)
        except Exception:  # reported by update(), which imports again
            log.debug("tracing: importing OpenTelemetry failed", exc_info=True)
        done()

    threading.Thread(target=run, name="ingressd-otel-import", daemon=True).start()


_MODULES = (
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.sdk.resources",
    "opentelemetry.trace",
)


def endpoint(config: TracingConfig) -> str:
    return f"http://{config.collector_host}:{config.collector_port}/v1/traces"


class SpanQueue:
    """The SDK's span processor interface, with a bounded queue exported in
    batches by a thread of its own (the SDK's BatchSpanProcessor works the same
    way, but logs every span it drops and keeps no count an operator can read).

    ``on_end`` runs on the event loop: it appends, or, when the queue is full,
    drops and counts. The thread exports at most ``batch`` spans per request,
    every ``delay`` seconds or as soon as a batch is waiting.
    """

    def __init__(self, exporter: Any, config: TracingConfig, counts: list[int] | None = None):
        self.exporter = exporter
        # The process's totals for /metrics (RequestStats.spans: exported, failed,
        # dropped), which outlive this queue when the settings change.
        self.counts = counts if counts is not None else [0, 0, 0]
        self.where = endpoint(config)
        self.port = config.collector_port
        self.capacity = config.max_queue_size
        self.batch = config.max_export_batch_size
        self.delay = config.schedule_delay_ms / 1000.0
        self.queue: collections.deque[Any] = collections.deque()
        self.exported = 0  # spans the collector took
        self.failed = 0  # spans in exports that failed
        self.dropped = 0  # spans never queued: the queue was full
        self._drop_logged_at = -DROP_LOG_EVERY
        self._fail_logged_at = -DROP_LOG_EVERY
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="ingressd-otel-export", daemon=True)
        self._thread.start()

    # -- the SDK's SpanProcessor interface ---------------------------------------------

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def _on_ending(self, span: Any) -> None:
        pass

    def on_end(self, span: Any) -> None:
        queue = self.queue
        if len(queue) >= self.capacity or self._stopping:
            self.dropped += 1
            self.counts[2] += 1
            now = time.monotonic()
            if now - self._drop_logged_at >= DROP_LOG_EVERY:
                self._drop_logged_at = now
                log.warning(
                    "tracing: %d spans dropped so far: the export queue (otel-max-queuesize "
                    "%d) is full; the collector at %s is slow or unreachable",
                    self.dropped,
                    self.capacity,
                    self.where,
                )
            return
        queue.append(span)
        if len(queue) >= self.batch and not self._wake.is_set():
            self._wake.set()

    def shutdown(self) -> None:
        """Export what is queued (waiting SHUTDOWN_WAIT at most), then stop."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join(SHUTDOWN_WAIT)
        left = len(self.queue)
        self.queue.clear()
        self.dropped += left
        self.counts[2] += left
        if self._thread.is_alive():
            log.warning("tracing: the last export to %s did not end in time", self.where)
        else:
            try:
                self.exporter.shutdown()
            except Exception:  # the exporter's own failure ends nothing here
                log.debug("tracing: exporter shutdown failed", exc_info=True)
        log.log(
            logging.WARNING if self.dropped or self.failed else logging.INFO,
            "tracing: %d spans exported to %s, %d failed to export, %d dropped",
            self.exported,
            self.where,
            self.failed,
            self.dropped,
        )

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self._wake.set()
        return True

    # -- the export thread ----------------------------------------------------------------

    def _run(self) -> None:
        wake = self._wake
        while not self._stopping:
            wake.wait(self.delay)
            wake.clear()
            self._export()
        self._export()

    def _export(self) -> None:
        queue = self.queue
        while queue:
            batch: list[Any] = []
            while queue and len(batch) < self.batch:
                batch.append(queue.popleft())
            try:
                ok = self.exporter.export(batch).name == "SUCCESS"
                reason = "the collector refused them or did not answer"
            except Exception as exc:  # any failure counts; the thread goes on
                ok, reason = False, str(exc) or type(exc).__name__
            if ok:
                self.exported += len(batch)
                self.counts[0] += len(batch)
                continue
            self.failed += len(batch)
            self.counts[1] += len(batch)
            now = time.monotonic()
            if now - self._fail_logged_at >= DROP_LOG_EVERY:
                self._fail_logged_at = now
                hint = (
                    " (4317 is OTLP/gRPC's port; ingressd speaks OTLP/HTTP, 4318 by default)"
                    if self.port == 4317
                    else ""
                )
                log.warning(
                    "tracing: exporting %d spans to %s failed: %s%s; %d spans failed so far",
                    len(batch),
                    self.where,
                    reason,
                    hint,
                    self.failed,
                )


class _Ids:
    """The SDK's ids: span ids random, a new trace's id the one ``Tracing.begin``
    drew to decide on sampling (set just before it asks the SDK for the span)."""

    def __init__(self) -> None:
        self.trace_id = 0

    def generate_span_id(self) -> int:
        return _random_id(64)

    def generate_trace_id(self) -> int:
        return self.trace_id or _random_id(128)

    def is_trace_id_random(self) -> bool:
        return True


def _random_id(bits: int) -> int:
    value = random.getrandbits(bits)
    while not value:
        value = random.getrandbits(bits)
    return value


# A W3C traceparent (trace-context level 1, section 3.2): version, trace id, parent
# id, flags, lowercase hex; a later version may append fields ("-..."). Anchored, on
# a value of at most MAX_TRACEPARENT characters.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[^\s]*)?")
_LOW64 = (1 << 64) - 1
_TRACE_CONTEXT = (b"traceparent", b"tracestate")
_VERSIONS = {"HTTP/1.0": "1.0", "HTTP/1.1": "1.1", "HTTP/2.0": "2"}


class Tracing:
    """One process's tracer, made from the ConfigMap's settings.

    Whether a request is sampled is decided here, before the SDK is asked for a
    span, with the SDK's own rules (``otel-sampler``'s TraceIdRatioBased bound,
    ParentBased on the incoming sampled flag): a request not sampled gets only
    its traceparent (a new span id, flags 00) and costs a few microseconds, where
    the SDK's start_span for a span it then drops cost about 20 (hotpath.py).
    A sampled one gets the SDK's span, under a provider that samples all it is
    asked for.
    """

    def __init__(self, config: TracingConfig, counts: list[int] | None = None) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace import sampling as samplers
        from opentelemetry.trace import (
            NonRecordingSpan,
            SpanContext,
            SpanKind,
            TraceFlags,
            TraceState,
            set_span_in_context,
        )

        from .. import __version__

        # The SDK and exporter log each retry and each bad header a client sends;
        # SpanQueue reports failures itself, once in a while.
        logging.getLogger("opentelemetry").setLevel(logging.ERROR)
        self.config = config
        # otel-sampler, as the SDK's samplers decide (sampling.py): a root span is
        # sampled when the low 64 bits of its trace id are below the bound.
        if config.sampler == "AlwaysOff":
            self.bound = 0
        elif config.sampler == "TraceIdRatioBased":
            self.bound = samplers.TraceIdRatioBased(config.ratio).bound
        else:
            self.bound = _LOW64 + 1
        host = socket.gethostname()
        resource = Resource.create(
            {
                "service.name": config.service_name,
                "service.version": __version__,
                "service.instance.id": f"{host}:{os.getpid()}",
                "host.name": host,
                "process.pid": os.getpid(),
            }
        )
        exporter = OTLPSpanExporter(endpoint=endpoint(config), timeout=EXPORT_TIMEOUT)
        self.queue = SpanQueue(exporter, config, counts)
        self.ids = _Ids()
        self.provider = TracerProvider(
            sampler=samplers.ALWAYS_ON,  # decided in begin()
            resource=resource,
            shutdown_on_exit=False,
            id_generator=self.ids,  # type: ignore[arg-type]
        )
        self.provider.add_span_processor(self.queue)  # type: ignore[arg-type]
        self.tracer = self.provider.get_tracer("ingressd", __version__)
        self.server_kind = SpanKind.SERVER
        self.client_kind = SpanKind.CLIENT
        self._remote = (NonRecordingSpan, SpanContext, TraceFlags, TraceState, set_span_in_context)
        self.closed = False

    def close(self) -> None:
        """Replaced or turned off: export what is queued, from a thread (never the loop's)."""
        if not self.closed:
            self.closed = True
            threading.Thread(target=self.shutdown, name="ingressd-otel-close", daemon=True).start()

    def shutdown(self) -> None:
        self.closed = True
        self.queue.shutdown()

    # -- per request -------------------------------------------------------------------

    def begin(self, ex: Any, route: Route | None) -> None:
        """Start ``ex``'s server span if its route is traced; set what the upstream gets."""
        config = self.config
        rule = route.policy.tracing if route is not None else None
        if rule is None:
            if not config.enabled:
                return
            trust, name = config.trust_incoming_span, config.operation_name
        else:
            if not rule.enabled:
                return  # as nginx's "opentelemetry off": the client's headers pass as they are
            own = rule.trust_incoming_span
            trust = config.trust_incoming_span if own is None else own
            name = rule.operation_name or config.operation_name
        headers = ex.headers
        # The usual case, no trace context sent, is found by the compiled routing
        # code's scans; only a request that has one pays for a closer look.
        sent = find_header(headers, b"traceparent") is not None
        if sent or find_header(headers, b"tracestate") is not None:
            parent = self._incoming(headers) if trust and sent else None
            # Never forwarded as sent: ours replaces it (a trusted tracestate goes on).
            headers = [h for h in headers if h[0].lower() not in _TRACE_CONTEXT]
            ex.headers = headers
        else:
            parent = None
        if parent is not None:
            trace_id, parent_id, flags, state = parent
            # ParentBased: a sampled parent's children are sampled, an unsampled one's not.
            sampled = bool(flags & 1) if config.parent_based else (trace_id & _LOW64) < self.bound
        else:
            trace_id, parent_id, flags, state = _random_id(128), 0, 0, ""
            sampled = (trace_id & _LOW64) < self.bound
        if not sampled:
            # Not recorded: the upstream is told so, under a span id of ours.
            headers.append((b"traceparent", b"00-%032x-%016x-00" % (trace_id, _random_id(64))))
            if state:
                headers.append((b"tracestate", state.encode("latin-1")))
            return
        context = None
        if parent is not None:
            nonrecording, span_context, trace_flags, trace_state, in_context = self._remote
            remote = span_context(
                trace_id,
                parent_id,
                is_remote=True,
                trace_flags=trace_flags(flags),
                trace_state=trace_state.from_header([state]) if state else None,
            )
            context = in_context(nonrecording(remote))
        else:
            self.ids.trace_id = trace_id
        # The span begins with the request's first byte, as nginx's does.
        start = time.time_ns() - int((perf_counter() - ex.started) * 1e9)
        try:
            span = self.tracer.start_span("HTTP", context, self.server_kind, start_time=start)
        finally:
            self.ids.trace_id = 0
        ctx = span.get_span_context()
        headers.append((b"traceparent", b"00-%032x-%016x-01" % (ctx.trace_id, ctx.span_id)))
        if ctx.trace_state:
            headers.append((b"tracestate", ctx.trace_state.to_header().encode("latin-1")))
        ex.span = ServerSpan(self, span, route, name)

    def _incoming(self, headers: Sequence[tuple[bytes, bytes]]) -> tuple[int, int, int, str] | None:
        """The client's (trace id, parent id, flags, tracestate), or None to start anew:
        none sent, one that does not parse, or more than one (W3C trace context)."""
        parents: list[bytes] = []
        states: list[bytes] = []
        for name, value in headers:
            lname = name.lower()
            if lname == b"traceparent":
                parents.append(value)
            elif lname == b"tracestate":
                states.append(value)
        if len(parents) != 1 or len(parents[0]) > MAX_TRACEPARENT:
            return None
        m = _TRACEPARENT.fullmatch(parents[0].decode("latin-1").strip(" \t"))
        if m is None:
            return None
        version, trace_hex, parent_hex, flags_hex, rest = m.groups()
        # Version ff is invalid; version 00 has exactly four fields.
        if version == "ff" or (version == "00" and rest):
            return None
        trace_id, parent_id = int(trace_hex, 16), int(parent_hex, 16)
        if not trace_id or not parent_id:
            return None
        state = b",".join(states)
        if len(state) > MAX_TRACESTATE:
            state = b""  # too long to be kept (W3C: 512); the trace goes on without it
        return trace_id, parent_id, int(flags_hex, 16), state.decode("latin-1")


class ServerSpan:
    """A request's server span, as its exchange holds it until it ends."""

    __slots__ = ("name", "route", "span", "tracing")

    def __init__(self, tracing: Tracing, span: Any, route: Route | None, name: tuple[str, ...]):
        self.tracing = tracing
        self.span = span
        self.route = route
        self.name = name

    def subrequest(self, ex: Any, url: str) -> AuthSpan:
        """A CLIENT span for the auth-url subrequest, under this one."""
        from opentelemetry.trace import set_span_in_context

        tracing = self.tracing
        parent = set_span_in_context(self.span)
        child = tracing.tracer.start_span("auth-url", parent, tracing.client_kind)
        ctx = child.get_span_context()
        parent_id = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
        headers = [("traceparent", parent_id)]
        if ctx.trace_state:
            headers.append(("tracestate", ctx.trace_state.to_header()))
        if child.is_recording():
            child.set_attributes(
                {
                    "http.request.method": ex.method.decode("latin-1"),
                    "url.full": url,
                    "ingressd.subrequest": "auth-url",
                }
            )
        return AuthSpan(child, tuple(headers))

    def end(self, ex: Any, status: int) -> None:
        """The request ended with ``status`` (499: the client left first)."""
        span = self.span
        if span.is_recording():
            self._describe(ex, status)
        span.end()

    def _describe(self, ex: Any, status: int) -> None:
        from opentelemetry.trace import Status, StatusCode

        span = self.span
        route = self.route
        fwd = ex.forward
        if fwd is not None:
            route = fwd.route
        method = ex.method.decode("latin-1")
        path = ex.url.partition(b"?")[0].decode("latin-1")
        host = (ex.host or b"").decode("latin-1")
        hostname, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
        if not hostname or not port.isdigit():
            hostname, port = host, ""
        scheme = "https" if ex.client.tls else "http"
        attrs: dict[str, Any] = {
            "http.request.method": method,
            "http.response.status_code": status,
            "url.path": path,
            "url.scheme": scheme,
            "server.address": hostname.lower(),
            "client.address": ex.real_ip(),
            "network.peer.address": ex.client.client_ip,
            "network.protocol.name": "http",
            # Semantic conventions spell HTTP/2 "2".
            "network.protocol.version": _VERSIONS.get(ex.protocol, "1.1"),
            "http.request.body.size": ex.body_seen,
            "ingressd.response.bytes": ex.sent,
        }
        if port:
            attrs["server.port"] = int(port)
        agent = _header(ex.headers, b"user-agent")
        if agent is not None:
            attrs["user_agent.original"] = agent[:1024].decode("latin-1")
        if ex.request_id is not None:
            attrs["http.request.header.x-request-id"] = (ex.request_id.decode("latin-1"),)
        namespace = ingress = service = service_port = ""
        if route is not None:
            attrs["http.route"] = route.path
            namespace, _, ingress = route.ingress.partition("/")
            svc = (fwd.backend if fwd is not None else route.backend).name
            service, _, service_port = svc.partition("/")[2].rpartition(":")
            attrs.update(
                {
                    "k8s.namespace.name": namespace,
                    "ingressd.ingress.namespace": namespace,
                    "ingressd.ingress.name": ingress,
                    "ingressd.service.name": service,
                    "ingressd.service.port": service_port,
                }
            )
        if fwd is not None and ex.attempts:
            attrs["ingressd.upstream.address"] = str(fwd.endpoint)
            attrs["ingressd.upstream.attempts"] = ex.attempts
        span.set_attributes(attrs)
        name = self.name
        if name:
            values = {
                "request_method": method,
                "uri": path,
                "host": hostname.lower(),
                "scheme": scheme,
                "namespace": namespace,
                "ingress_name": ingress,
                "service_name": service,
                "service_port": service_port,
                "location_path": route.path if route is not None else "",
            }
            span.update_name("".join(p if i % 2 == 0 else values[p] for i, p in enumerate(name)))
        else:
            # HTTP semantic conventions: "{method} {http.route}".
            span.update_name(f"{method} {route.path}" if route is not None else method)
        if status >= 500:
            span.set_attribute("error.type", str(status))
            span.set_status(Status(StatusCode.ERROR))


class AuthSpan:
    """The auth-url subrequest's span, and the headers that name it to the auth service."""

    __slots__ = ("headers", "span")

    def __init__(self, span: Any, headers: tuple[tuple[str, str], ...]) -> None:
        self.span = span
        self.headers = headers

    def end(self, status: int | None) -> None:
        """``status``: 0 allowed, else what the client is answered; None: cancelled."""
        span = self.span
        if span.is_recording() and status is not None:
            from opentelemetry.trace import Status, StatusCode

            span.set_attribute("ingressd.auth.allowed", status == 0)
            if status:
                span.set_attribute("ingressd.auth.answer", status)
            if status >= 500:
                span.set_attribute("error.type", str(status))
                span.set_status(Status(StatusCode.ERROR))
        span.end()


def _header(headers: Sequence[tuple[bytes, bytes]], lname: bytes) -> bytes | None:
    for name, value in headers:
        if name.lower() == lname:
            return value
    return None
