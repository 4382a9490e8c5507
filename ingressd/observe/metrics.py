"""``/metrics``: the counts of ``stats.py`` and the live table as Prometheus metric families.

Nothing here runs per request: the families are built when Prometheus
scrapes, from the proxy's numbers (this process's, or the sum over the
workers), the rebuild counters and the routing table. A scrape copies the
numbers on the event loop (``Metrics.snapshot``), then builds and encodes the
exposition in a thread, so with one process a scrape of many series does not
hold up the requests sharing the loop for the whole encoding.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import accumulate

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from .. import BUILD, __version__
from ..model.backend import Backend
from ..model.table import Route, RouteTable
from .stats import (
    BUCKETS,
    BYTES_IN,
    BYTES_OUT,
    COUNT,
    DURATION_BUCKETS,
    DURATION_SUM,
    METHODS,
    OTHER_METHOD,
    REBUILD_BUCKETS,
    SESSIONS,
    STREAM_IN,
    STREAM_OUT,
    UPSTREAM_BUCKETS,
    UPSTREAM_COUNT,
    UPSTREAM_SUM,
    ProxyView,
    RebuildStats,
    add_record,
)

ROUTE_LABELS = ["namespace", "ingress", "service"]
_LE = [*(floatToGoString(b) for b in BUCKETS), "+Inf"]
_REBUILD_LE = [*(floatToGoString(b) for b in REBUILD_BUCKETS), "+Inf"]


@functools.lru_cache(maxsize=65536)
def route_labels(ingress: str, backend: str) -> tuple[str, str, str]:
    """("ns/name", "ns/service:port") -> (namespace, ingress name, service name)."""
    namespace, _, name = ingress.partition("/")
    service = backend.partition("/")[2].rpartition(":")[0] if backend else ""
    return namespace, name, service


class IngressdCollector(Collector):
    """Everything one scrape shows, from numbers copied when it began."""

    def __init__(
        self,
        view: ProxyView,
        rebuilds: RebuildStats,
        facts: TableFacts,
        admission: Mapping[str, int] | None = None,
    ) -> None:
        self.view = view
        self.rebuilds = rebuilds
        self.facts = facts
        self.admission = admission

    def collect(self) -> Iterator[Metric]:
        yield build_family()
        yield from proxy_families(self.view)
        yield from rebuild_families(self.rebuilds)
        yield from table_families(self.facts)
        if self.admission is not None:
            yield admission_family(self.admission)


def render(collector: Collector, accept: str | None) -> tuple[bytes, str]:
    """The exposition for a scrape's Accept header: (body, content type)."""
    # A registry of its own: the default one would add this process's
    # process_* and python_* metrics, which with workers describe only the
    # main process (the container's metrics cover CPU and memory).
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


class Metrics:
    """What ``/metrics`` reads: the proxy's numbers, the rebuild counters, the live table."""

    def __init__(
        self,
        proxy: Callable[[], ProxyView],
        rebuilds: RebuildStats,
        table: Callable[[], RouteTable],
        admission: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self.proxy = proxy  # must return a copy, or numbers nobody changes meanwhile
        self.rebuilds = rebuilds
        self.table = table
        # --admission-port: the webhook's answers by result (a copy, as ``proxy``)
        self.admission = admission
        self._facts: tuple[RouteTable, TableFacts] | None = None
        self._lock = threading.Lock()

    def facts(self, table: RouteTable) -> TableFacts:
        """The table's facts, walked once per table rather than once per scrape."""
        with self._lock:
            if self._facts is None or self._facts[0] is not table:
                self._facts = (table, table_facts(table))
            return self._facts[1]

    def snapshot(self) -> tuple[ProxyView, RebuildStats, RouteTable]:
        """On the event loop: copies of what the loop keeps changing (tables never change)."""
        return self.proxy(), self.rebuilds.copy(), self.table()

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """A whole scrape, in the calling thread."""
        view, rebuilds, table = self.snapshot()
        admission = self.admission() if self.admission is not None else None
        return render(IngressdCollector(view, rebuilds, self.facts(table), admission), accept)

    async def scrape(self, accept: str | None) -> tuple[bytes, str]:
        """A scrape from the event loop: copy here, build and encode in a thread."""
        view, rebuilds, table = self.snapshot()
        admission = self.admission() if self.admission is not None else None

        def build() -> tuple[bytes, str]:
            collector = IngressdCollector(view, rebuilds, self.facts(table), admission)
            return render(collector, accept)

        return await asyncio.to_thread(build)


def proxy_families(view: ProxyView) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "ingressd_requests",
        "Requests answered, by the Ingress and Service that served them (empty: no Ingress), "
        "method (others: OTHER) and status class; 499: the client went away first",
        labels=[*ROUTE_LABELS, "method", "status_class"],
    )
    bytes_in = CounterMetricFamily(
        "ingressd_request_bytes",
        "Bytes received from clients: request heads and bodies (de-chunked)",
        labels=ROUTE_LABELS,
    )
    bytes_out = CounterMetricFamily(
        "ingressd_response_bytes",
        "Bytes sent to clients: response heads and bodies",
        labels=ROUTE_LABELS,
    )
    # Histograms and byte counts per route only: times the method and status
    # class, 16 buckets each would multiply the series for little insight.
    by_route: dict[tuple[str, str, str], list[float]] = {}
    counts: dict[tuple[str, ...], float] = {}
    for (ingress, backend, method, status), rec in view.requests.items():
        labels = route_labels(ingress, backend)
        key: tuple[str, ...] = (*labels, METHODS.get(method, OTHER_METHOD), f"{status // 100}xx")
        counts[key] = counts.get(key, 0) + rec[COUNT]
        add_record(by_route, labels, rec)
    for key, n in counts.items():
        requests.add_metric(list(key), n)
    duration = HistogramMetricFamily(
        "ingressd_request_duration_seconds",
        "From the request's first byte to the response's last byte written (or the "
        "WebSocket upgrade)",
        labels=ROUTE_LABELS,
    )
    upstream = HistogramMetricFamily(
        "ingressd_upstream_response_duration_seconds",
        "From asking the upstream (connecting included, the last try) to the end of its "
        "response; requests an upstream answered",
        labels=ROUTE_LABELS,
    )
    nb = len(_LE)
    for labels, rec in by_route.items():
        bytes_in.add_metric(labels, rec[BYTES_IN])
        bytes_out.add_metric(labels, rec[BYTES_OUT])
        cumulative = accumulate(rec[DURATION_BUCKETS : DURATION_BUCKETS + nb])
        duration.add_metric(labels, list(zip(_LE, cumulative, strict=True)), rec[DURATION_SUM])
        if rec[UPSTREAM_COUNT]:
            cumulative = accumulate(rec[UPSTREAM_BUCKETS : UPSTREAM_BUCKETS + nb])
            upstream.add_metric(labels, list(zip(_LE, cumulative, strict=True)), rec[UPSTREAM_SUM])
    yield from (requests, duration, upstream, bytes_in, bytes_out)

    errors = CounterMetricFamily(
        "ingressd_upstream_errors",
        "Failed tries at an upstream, by kind: connect_error, connect_timeout, tls, "
        "reset (connection lost before the response), invalid_response, read_timeout, "
        "send_timeout",
        labels=[*ROUTE_LABELS, "kind"],
    )
    for (ingress, backend, kind), n in view.upstream_errors.items():
        errors.add_metric([*route_labels(ingress, backend), kind], n)
    retries = CounterMetricFamily(
        "ingressd_upstream_retries",
        "Requests sent again to another endpoint (proxy-next-upstream), by the failure "
        "that caused it: error, timeout, invalid_header, http_NNN",
        labels=[*ROUTE_LABELS, "reason"],
    )
    for (ingress, backend, reason), n in view.retries.items():
        retries.add_metric([*route_labels(ingress, backend), reason], n)
    yield errors
    yield retries
    if view.mirrors:
        mirrors = CounterMetricFamily(
            "ingressd_mirror_requests",
            "Copies of requests made for mirror-target, by result: sent (the mirror "
            "answered), failed (refused, reset or timed out), dropped (not sent: too many "
            "under way, or a body too large), denied (the target resolved to a denied address)",
            labels=["namespace", "ingress", "target", "result"],
        )
        for (ingress, target, result), n in view.mirrors.items():
            namespace, _, name = ingress.partition("/")
            mirrors.add_metric([namespace, name, target, result], n)
        yield mirrors
    if view.limit_full:
        full = CounterMetricFamily(
            "ingressd_limit_table_full",
            "Requests refused because the limit table had no room to count them (every "
            "entry of the key's bucket holds requests in flight): raise --limit-entries",
            labels=["namespace", "ingress", "limit"],
        )
        for (ingress, _, limit), n in view.limit_full.items():
            namespace, _, name = ingress.partition("/")
            full.add_metric([namespace, name, limit], n)
        yield full
    yield from stream_families(view)
    if any(view.spans):  # only once tracing has been on (README "Tracing")
        spans = CounterMetricFamily(
            "ingressd_tracing_spans",
            "OpenTelemetry spans: exported to the collector, failed to export (the "
            "collector refused them or did not answer), dropped (the export queue was full)",
            labels=["outcome"],
        )
        for outcome, n in zip(("exported", "failed", "dropped"), view.spans, strict=True):
            spans.add_metric([outcome], n)
        yield spans
    yield GaugeMetricFamily(
        "ingressd_connections_active", "Client connections open now", value=view.active
    )
    yield CounterMetricFamily(
        "ingressd_connections_accepted", "Client connections accepted", value=view.accepted
    )


def stream_families(view: ProxyView) -> Iterator[Metric]:
    """Layer-4 sessions: TCP and UDP services, TLS passthrough (stream/)."""
    labels = ["kind", "listen", "namespace", "service", "status"]
    sessions = CounterMetricFamily(
        "ingressd_stream_sessions",
        "Layer-4 sessions ended: TCP connections and UDP flows of the TCP/UDP services, TLS "
        "passthrough connections; by kind (tcp, udp, passthrough), what was listened to "
        "(tcp/PORT, udp/PORT, or the passthrough host), Service and status (200; 400: bad "
        "PROXY header; 502: no upstream reached; 503: refused, too many sessions open)",
        labels=labels,
    )
    bytes_in = CounterMetricFamily(
        "ingressd_stream_received_bytes",
        "Bytes layer-4 sessions received from clients",
        labels=labels,
    )
    bytes_out = CounterMetricFamily(
        "ingressd_stream_sent_bytes", "Bytes layer-4 sessions sent to clients", labels=labels
    )
    for (kind, listen, backend, status), rec in view.streams.items():
        namespace, _, rest = backend.partition("/")
        values = [kind, listen, namespace, rest.rpartition(":")[0], str(status)]
        sessions.add_metric(values, rec[SESSIONS])
        bytes_in.add_metric(values, rec[STREAM_IN])
        bytes_out.add_metric(values, rec[STREAM_OUT])
    open_now = GaugeMetricFamily(
        "ingressd_stream_sessions_open",
        "Layer-4 sessions open now, by listener: tcp/PORT, udp/PORT (UDP flows), "
        "https/PORT (TLS passthrough); bounded by --max-stream-sessions-per-port "
        "(--max-udp-flows for UDP) and, summed per process, --max-stream-sessions",
        labels=["listener"],
    )
    for listener, n in sorted(view.stream_open.items()):
        open_now.add_metric([listener], n)
    yield from (sessions, bytes_in, bytes_out, open_now)


def build_family() -> Metric:
    """ingressd_build_info: the version, and whether the compiled build runs."""
    info = InfoMetricFamily(
        "ingressd_build", "ingressd's version and build", labels=["version", "build"]
    )
    compiled = "compiled" if BUILD.startswith("compiled") else "pure-python"
    info.add_metric([__version__, compiled], {})
    return info


def rebuild_families(stats: RebuildStats) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "ingressd_config_rebuilds", "Routing table builds, failed ones included", value=stats.total
    )
    yield CounterMetricFamily(
        "ingressd_config_rebuild_errors",
        "Routing table builds that failed (the previous table kept serving)",
        value=stats.errors,
    )
    duration = HistogramMetricFamily(
        "ingressd_config_rebuild_duration_seconds",
        "Time to build a routing table and swap it in",
    )
    counts = accumulate(stats.duration_buckets)
    duration.add_metric([], list(zip(_REBUILD_LE, counts, strict=True)), stats.duration_sum)
    yield duration
    yield GaugeMetricFamily(
        "ingressd_config_last_rebuild_success_timestamp_seconds",
        "When the last successful routing table build finished (POSIX time; 0: never)",
        value=stats.last_success,
    )
    yield GaugeMetricFamily(
        "ingressd_config_problems",
        "Problems the last routing table build reported: files, objects, certificates "
        "(listed at /problems)",
        value=stats.problems,
    )
    if stats.leader is not None:
        yield GaugeMetricFamily(
            "ingressd_leader",
            "1 when this replica holds the leader Lease (writes Ingress status and Events)",
            value=1 if stats.leader else 0,
        )


def admission_family(counts: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily(
        "ingressd_admission_reviews",
        "AdmissionReviews the webhook answered (--admission-port), by result: allowed, warned "
        "(allowed with warnings), denied, unchecked (allowed: over its time or not synced), "
        "rejected (not a review: HTTP 4xx)",
        labels=["result"],
    )
    for result, count in counts.items():
        family.add_metric([result], count)
    return family


@dataclass(frozen=True, slots=True)
class TableFacts:
    routes: int
    ingresses: int
    # (namespace, service, port) -> ready endpoints
    endpoints: dict[tuple[str, str, str], int]
    # (namespace, Secret name) -> not_after (POSIX seconds)
    certificates: dict[tuple[str, str], float]


def table_facts(table: RouteTable) -> TableFacts:
    routes = 0
    backends: dict[str, Backend] = {}

    def see(route: Route | None) -> None:
        if route is None:
            return
        backends[route.backend.name] = route.backend
        if route.canary is not None and route.canary.backend is not None:
            backends[route.canary.backend.name] = route.canary.backend

    hosts = [*table.exact_hosts.values(), *table.wildcard_hosts.values()]
    if table.catch_all is not None:
        hosts.append(table.catch_all)
    for vhost in hosts:
        for group in (vhost.exact.values(), vhost.prefix.values(), vhost.regex):
            for route in group:
                routes += 1
                see(route)
        see(vhost.default)
    see(table.default)
    endpoints = {}
    for name, backend in backends.items():
        namespace, _, rest = name.partition("/")
        service, _, port = rest.rpartition(":")
        endpoints[(namespace, service, port)] = len(backend.endpoints)
    certificates = {}
    for cert in table.certificates.values():
        namespace, _, secret = cert.secret.partition("/")
        certificates[(namespace, secret)] = cert.not_after
    return TableFacts(routes, len(table.ingresses), endpoints, certificates)


def table_families(facts: TableFacts) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "ingressd_routes",
        "Routes (host and path) in the live routing table, default backends not counted",
        value=facts.routes,
    )
    yield GaugeMetricFamily(
        "ingressd_ingresses", "Ingresses this controller serves", value=facts.ingresses
    )
    endpoints = GaugeMetricFamily(
        "ingressd_backend_endpoints",
        "Ready endpoints of each Service port the routing table sends to",
        labels=["namespace", "service", "port"],
    )
    for key, n in sorted(facts.endpoints.items()):
        endpoints.add_metric(list(key), n)
    yield endpoints
    expiry = GaugeMetricFamily(
        "ingressd_ssl_certificate_expiry_timestamp_seconds",
        "When the certificate of each TLS Secret in use expires (POSIX time, notAfter)",
        labels=["namespace", "secret"],
    )
    for secret, not_after in sorted(facts.certificates.items()):
        expiry.add_metric(list(secret), not_after)
    yield expiry
