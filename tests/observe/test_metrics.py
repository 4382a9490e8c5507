"""The request counts (stats.py) and their exposition (metrics.py), without sockets.

Expositions are parsed back with prometheus-client's own parser, so what is
checked is what Prometheus would read.
"""

from __future__ import annotations

import bisect
import datetime as dt
import pickle
import time

import pytest
from k8s_objects import (
    build,
    endpoint_slice,
    ingress,
    path,
    rule,
    service,
    tls_entry,
    tls_secret,
)
from prometheus_client.parser import text_string_to_metric_families

import ingressd
from ingressd.model.table import RouteTable
from ingressd.observe.metrics import Metrics, route_labels, table_facts
from ingressd.observe.stats import (
    BUCKETS,
    BYTES_IN,
    BYTES_OUT,
    COUNT,
    DURATION_BUCKETS,
    DURATION_SUM,
    RECORD_SIZE,
    UPSTREAM_BUCKETS,
    UPSTREAM_COUNT,
    UPSTREAM_SUM,
    ProxyView,
    RebuildStats,
    RequestStats,
    WorkerTotals,
    bucket,
)
from ingressd.policy.tls import self_signed

WEB = ("default/web", "default/web:80")
API = ("shop/api", "shop/api:http")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(
    view: ProxyView,
    rebuilds: RebuildStats | None = None,
    table: RouteTable | None = None,
) -> Samples:
    """Every sample of the exposition: (name, sorted labels) -> value."""
    metrics = Metrics(lambda: view, rebuilds or RebuildStats(), lambda: table or RouteTable())
    body, content_type = metrics.render(None)
    assert content_type.startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = s.value
    return samples


def labels(**kv: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kv.items()))


def route(namespace: str, ingress: str, service: str) -> dict[str, str]:
    return {"namespace": namespace, "ingress": ingress, "service": service}


WEB_LABELS = route("default", "web", "web")
API_LABELS = route("shop", "api", "api")
NO_ROUTE = route("", "", "")


def test_route_labels_come_from_table_names() -> None:
    assert route_labels(*WEB) == ("default", "web", "web")
    assert route_labels(*API) == ("shop", "api", "api")
    assert route_labels("", "") == ("", "", "")


def test_requests_by_route_method_and_status_class() -> None:
    stats = RequestStats()
    for _ in range(3):
        stats.request(*WEB, b"GET", 200, 0.003, 0.002, 100, 1000)
    stats.request(*WEB, b"GET", 204, 0.003, 0.002, 100, 50)  # same class: same series
    stats.request(*WEB, b"POST", 502, 0.5, None, 5100, 80)
    stats.request(*API, b"PROPFIND", 207, 0.02, 0.01, 10, 10)  # an odd method: OTHER
    stats.request("", "", b"GET", 404, 0.0001, None, 70, 150)  # no Ingress matched
    stats.request(*WEB, b"GET", 499, 2.0, None, 90, 0)  # the client left
    samples = scrape(stats.view(active=2))

    def requests(method: str, status_class: str, where: dict[str, str]) -> float:
        return samples[
            (
                "ingressd_requests_total",
                labels(**where, method=method, status_class=status_class),
            )
        ]

    assert requests("GET", "2xx", WEB_LABELS) == 4
    assert requests("POST", "5xx", WEB_LABELS) == 1
    assert requests("GET", "4xx", WEB_LABELS) == 1
    assert requests("OTHER", "2xx", API_LABELS) == 1
    assert requests("GET", "4xx", NO_ROUTE) == 1
    total = sum(v for (n, _), v in samples.items() if n == "ingressd_requests_total")
    assert total == 8

    web = labels(**WEB_LABELS)
    assert samples[("ingressd_request_bytes_total", web)] == 4 * 100 + 5100 + 90
    assert samples[("ingressd_response_bytes_total", web)] == 3 * 1000 + 50 + 80 + 0
    assert samples[("ingressd_response_bytes_total", labels(**NO_ROUTE))] == 150
    assert samples[("ingressd_connections_active", ())] == 2


def test_histograms_count_every_request_in_the_right_bucket() -> None:
    stats = RequestStats()
    stats.request(*WEB, b"GET", 200, 0.003, 0.002, 1, 1)
    stats.request(*WEB, b"GET", 200, 0.003, 0.002, 1, 1)
    stats.request(*WEB, b"GET", 503, 0.0002, None, 1, 1)  # answered by ingressd
    stats.request(*WEB, b"GET", 200, 120.0, 119.0, 1, 1)  # beyond the last bucket
    samples = scrape(stats.view(0))
    web = WEB_LABELS

    def bucket(name: str, le: str) -> float:
        return samples[(f"{name}_bucket", labels(**web, le=le))]

    name = "ingressd_request_duration_seconds"
    assert samples[(f"{name}_count", labels(**web))] == 4
    assert samples[(f"{name}_sum", labels(**web))] == pytest.approx(120.0062)
    assert bucket(name, "0.001") == 1
    assert bucket(name, "0.0025") == 1
    assert bucket(name, "0.005") == 3  # cumulative
    assert bucket(name, "60.0") == 3
    assert bucket(name, "+Inf") == 4
    les = [
        float(le)
        for (n, lbl), _ in samples.items()
        if n == f"{name}_bucket"
        for k, le in lbl
        if k == "le"
    ]
    assert les == sorted(les) and len(les) == len(BUCKETS) + 1

    name = "ingressd_upstream_response_duration_seconds"
    assert samples[(f"{name}_count", labels(**web))] == 3  # the 503 never reached one
    assert bucket(name, "0.001") == 0
    assert bucket(name, "0.0025") == 2
    assert bucket(name, "+Inf") == 3


def test_a_bucket_bound_is_inclusive() -> None:
    stats = RequestStats()
    stats.request(*WEB, b"GET", 200, 0.005, None, 1, 1)
    samples = scrape(stats.view(0))
    bucket = "ingressd_request_duration_seconds_bucket"
    assert samples[(bucket, labels(**WEB_LABELS, le="0.0025"))] == 0
    assert samples[(bucket, labels(**WEB_LABELS, le="0.005"))] == 1


def test_upstream_errors_and_retries() -> None:
    stats = RequestStats()
    stats.upstream_error(*WEB, "connect_error")
    stats.upstream_error(*WEB, "connect_error")
    stats.upstream_error(*API, "read_timeout")
    stats.retry(*WEB, "error")
    samples = scrape(stats.view(0))
    errors = "ingressd_upstream_errors_total"
    assert samples[(errors, labels(**WEB_LABELS, kind="connect_error"))] == 2
    assert samples[(errors, labels(**API_LABELS, kind="read_timeout"))] == 1
    assert samples[("ingressd_upstream_retries_total", labels(**WEB_LABELS, reason="error"))] == 1


def test_a_record_is_the_same_list_on_both_builds() -> None:
    """What views and reports carry per key: counts as ints, sums as floats,
    each bucket as bisect_left over BUCKETS places it (a duration equal to a
    bound is in that bound's bucket: Prometheus's "le"), compiled and pure
    Python alike, as when the records were kept as these lists."""
    stats = RequestStats()
    durations = [0.0, 0.001, 0.0011, *BUCKETS, 61.0, 1e9]
    for i, d in enumerate(durations):
        upstream = None if i % 3 == 0 else d / 2
        stats.request(*WEB, b"GET", 200, d, upstream, 10, 20)
    expected: list[float] = [0] * RECORD_SIZE
    expected[COUNT] = len(durations)
    expected[BYTES_IN] = 10 * len(durations)
    expected[BYTES_OUT] = 20 * len(durations)
    for i, d in enumerate(durations):
        expected[DURATION_SUM] += d
        expected[DURATION_BUCKETS + bisect.bisect_left(BUCKETS, d)] += 1
        if i % 3:
            expected[UPSTREAM_COUNT] += 1
            expected[UPSTREAM_SUM] += d / 2
            expected[UPSTREAM_BUCKETS + bisect.bisect_left(BUCKETS, d / 2)] += 1
    for rec in (
        stats.view(active=0).requests[(*WEB, b"GET", 200)],
        stats.report(active=0).requests[(*WEB, b"GET", 200)],
    ):
        assert rec == expected
        assert [type(v) for v in rec] == [type(v) for v in expected]
    assert [bucket(d) for d in durations] == [bisect.bisect_left(BUCKETS, d) for d in durations]


def test_a_report_sends_only_what_changed_and_survives_pickling() -> None:
    stats = RequestStats()
    stats.request(*WEB, b"GET", 200, 0.001, 0.001, 1, 1)
    stats.request(*API, b"GET", 200, 0.001, 0.001, 1, 1)
    stats.accepted = 2
    first = pickle.loads(pickle.dumps(stats.report(active=1)))
    assert len(first.requests) == 2
    assert (first.accepted, first.active) == (2, 1)
    stats.request(*WEB, b"GET", 200, 0.001, 0.001, 1, 1)
    second = stats.report(active=0)
    assert list(second.requests) == [(*WEB, b"GET", 200)]
    assert second.requests[(*WEB, b"GET", 200)][COUNT] == 2
    assert stats.report(active=0).requests == {}
    # A report is a copy: later requests do not change it.
    stats.request(*WEB, b"GET", 200, 0.001, 0.001, 1, 1)
    assert second.requests[(*WEB, b"GET", 200)][COUNT] == 2


def test_worker_totals_sum_workers_and_keep_the_dead_ones_counts() -> None:
    totals = WorkerTotals()
    workers = [RequestStats(), RequestStats()]
    slots = [totals.slot(), totals.slot()]
    for stats, n in zip(workers, (3, 5), strict=True):
        for _ in range(n):
            stats.request(*WEB, b"GET", 200, 0.001, 0.001, 10, 20)
        stats.upstream_error(*WEB, "reset")
        stats.accepted = n
    for stats, slot in zip(workers, slots, strict=True):
        totals.update(slot, stats.report(active=4))
    view = totals.view()
    assert view.requests[(*WEB, b"GET", 200)][COUNT] == 8
    assert view.upstream_errors[(*WEB, "reset")] == 2
    assert (view.accepted, view.active) == (8, 8)
    before = scrape(view)

    # Worker 0 dies; its successor starts from zero in a new slot.
    totals.retire(slots[0])
    totals.update(slots[0], workers[0].report(active=4))  # read late: ignored
    successor, slot = RequestStats(), totals.slot()
    successor.request(*WEB, b"GET", 200, 0.001, 0.001, 10, 20)
    totals.update(slot, successor.report(active=1))
    view = totals.view()
    assert view.requests[(*WEB, b"GET", 200)][COUNT] == 9
    assert view.accepted == 8
    assert view.active == 4 + 1  # the dead worker's connections are gone
    after = scrape(view)
    for key, value in before.items():
        if key[0].endswith(("_total", "_count", "_sum", "_bucket")):
            assert after[key] >= value, key


def test_rebuilds_and_leader() -> None:
    rebuilds = RebuildStats()
    samples = scrape(RequestStats().view(0), rebuilds)
    assert samples[("ingressd_config_rebuilds_total", ())] == 0
    assert samples[("ingressd_config_last_rebuild_success_timestamp_seconds", ())] == 0
    assert not any(name == "ingressd_leader" for name, _ in samples)  # no election

    rebuilds.succeeded(0.02)
    rebuilds.succeeded(0.2)
    rebuilds.failed(0.003)
    rebuilds.problems = 2
    rebuilds.leader = True
    samples = scrape(RequestStats().view(0), rebuilds)
    assert samples[("ingressd_config_rebuilds_total", ())] == 3
    assert samples[("ingressd_config_rebuild_errors_total", ())] == 1
    assert samples[("ingressd_config_rebuild_duration_seconds_count", ())] == 3
    assert samples[("ingressd_config_rebuild_duration_seconds_bucket", (("le", "0.005"),))] == 1
    assert samples[("ingressd_config_rebuild_duration_seconds_sum", ())] == pytest.approx(0.223)
    assert time.time() - samples[("ingressd_config_last_rebuild_success_timestamp_seconds", ())] < 5
    assert samples[("ingressd_config_problems", ())] == 2
    assert samples[("ingressd_leader", ())] == 1


def test_table_routes_endpoints_and_certificates() -> None:
    start = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    pem = self_signed("shop.example", ("shop.example",), days=90, not_before=start)
    table = build(
        ingress(
            "web",
            [rule("a.example", path("/", "web"), path("/x", "web", path_type="Exact"))],
        ),
        ingress(
            "api",
            [rule("shop.example", path("/api", "api", "http"))],
            tls=[tls_entry(["shop.example"], "shop-tls")],
            namespace="shop",
        ),
        ingress("lost", [rule("b.example", path("/", "missing"))]),
        service("web"),
        endpoint_slice("web", ["10.0.0.1", "10.0.0.2", ("10.0.0.3", False)]),
        service("api", [("http", 80)], namespace="shop"),
        endpoint_slice("api", ["10.1.0.1"], port_name="http", namespace="shop"),
        tls_secret("shop-tls", namespace="shop", pem=pem),
        now=start.timestamp() + 60,
    )
    facts = table_facts(table)
    assert facts.routes == 4
    assert facts.ingresses == 3
    assert facts.endpoints == {
        ("default", "web", "80"): 2,
        ("shop", "api", "http"): 1,
        ("default", "missing", "80"): 0,
    }
    samples = scrape(RequestStats().view(0), table=table)
    assert samples[("ingressd_routes", ())] == 4
    assert samples[("ingressd_ingresses", ())] == 3
    endpoints = "ingressd_backend_endpoints"
    assert samples[(endpoints, labels(namespace="default", service="web", port="80"))] == 2
    expiry = samples[
        (
            "ingressd_ssl_certificate_expiry_timestamp_seconds",
            labels(namespace="shop", secret="shop-tls"),
        )
    ]
    assert expiry == (start + dt.timedelta(days=90)).timestamp()


def test_table_facts_are_computed_once_per_table() -> None:
    table = build(ingress("web", [rule("a.example", path("/", "web"))]))
    metrics = Metrics(lambda: RequestStats().view(0), RebuildStats(), lambda: table)
    first = metrics.facts(table)
    assert metrics.facts(table) is first
    assert metrics.facts(build()) is not first


async def test_a_scrape_copies_on_the_loop_and_encodes_in_a_thread() -> None:
    stats = RequestStats()
    stats.request(*WEB, b"GET", 200, 0.001, 0.001, 1, 1)
    metrics = Metrics(lambda: stats.view(0), RebuildStats(), RouteTable)
    view, _, _ = metrics.snapshot()
    stats.request(*WEB, b"GET", 200, 0.001, 0.001, 1, 1)
    assert view.requests[(*WEB, b"GET", 200)][COUNT] == 1  # a copy: counting goes on
    body, _ = await metrics.scrape(None)
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["ingressd_requests"].samples[0].value == 2


def test_openmetrics_when_asked() -> None:
    stats = RequestStats()
    stats.request(*WEB, b"GET", 200, 0.001, 0.001, 1, 1)
    metrics = Metrics(lambda: stats.view(0), RebuildStats(), RouteTable)
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_build_info_says_the_version_and_whether_compiled() -> None:
    samples = scrape(RequestStats().view(0))
    build = "compiled" if ingressd.BUILD.startswith("compiled") else "pure-python"
    key = ("ingressd_build_info", labels(build=build, version=ingressd.__version__))
    assert samples[key] == 1


def test_open_stream_sessions_are_summed_over_workers_and_the_main_process() -> None:
    """ingressd_stream_sessions_open: each worker's open passthrough sessions
    (sent in its reports, through pickle), plus the main process's TCP
    services; a worker gone holds nothing open any more."""
    from ingressd.observe.stats import with_streams

    totals = WorkerTotals()
    workers = [RequestStats(), RequestStats()]
    slots = [totals.slot(), totals.slot()]
    workers[0].stream_open["https/443"] = 2
    workers[1].stream_open["https/443"] = 3
    for stats, slot in zip(workers, slots, strict=True):
        totals.update(slot, pickle.loads(pickle.dumps(stats.report(active=0))))
    main = RequestStats()
    main.stream_open["tcp/5432"] = 7
    main.stream(("tcp", "tcp/5432", "db/pg:5432", 503), 0, 0)
    samples = scrape(with_streams(totals.view(), main.streams, main.stream_open))
    assert samples[("ingressd_stream_sessions_open", (("listener", "https/443"),))] == 5
    assert samples[("ingressd_stream_sessions_open", (("listener", "tcp/5432"),))] == 7
    refused = (("kind", "tcp"), ("listen", "tcp/5432"), ("namespace", "db"))
    refused += (("service", "pg"), ("status", "503"))
    assert samples[("ingressd_stream_sessions_total", refused)] == 1
    totals.retire(slots[0])
    samples = scrape(with_streams(totals.view(), main.streams, main.stream_open))
    assert samples[("ingressd_stream_sessions_open", (("listener", "https/443"),))] == 3


def test_mirror_copies_are_counted_and_summed_over_workers() -> None:
    totals = WorkerTotals()
    workers = [RequestStats(), RequestStats()]
    slots = [totals.slot(), totals.slot()]
    for stats, n in zip(workers, (2, 3), strict=True):
        for _ in range(n):
            stats.mirror("default/app", "mirror.example", "sent")
        stats.mirror("default/app", "mirror.example", "dropped")
    for stats, slot in zip(workers, slots, strict=True):
        totals.update(slot, pickle.loads(pickle.dumps(stats.report(active=0))))
    totals.retire(slots[0])  # a dead worker's copies stay counted
    samples = scrape(totals.view())
    name = "ingressd_mirror_requests_total"
    key = {"namespace": "default", "ingress": "app", "target": "mirror.example"}
    assert samples[(name, labels(**key, result="sent"))] == 5
    assert samples[(name, labels(**key, result="dropped"))] == 2
    # Without a mirror, no family at all.
    assert not any(k[0] == name for k in scrape(RequestStats().view(0)))


def test_tracing_spans_are_summed_over_workers_and_kept_when_one_dies() -> None:
    totals = WorkerTotals()
    workers = [RequestStats(), RequestStats()]
    slots = [totals.slot(), totals.slot()]
    assert not any(key[0].startswith("ingressd_tracing") for key in scrape(totals.view()))
    workers[0].spans[:] = [5, 1, 2]  # as observe/tracing.py's SpanQueue counts them
    workers[1].spans[:] = [7, 0, 3]
    for stats, slot in zip(workers, slots, strict=True):
        report = pickle.loads(pickle.dumps(stats.report(active=0)))
        assert report.spans == tuple(stats.spans)
        totals.update(slot, report)
    totals.retire(slots[0])
    samples = scrape(totals.view())
    for outcome, n in (("exported", 12), ("failed", 1), ("dropped", 5)):
        assert samples[("ingressd_tracing_spans_total", labels(outcome=outcome))] == n


def test_refusals_for_a_full_limit_table_are_counted_and_summed_over_workers() -> None:
    totals = WorkerTotals()
    workers = [RequestStats(), RequestStats()]
    slots = [totals.slot(), totals.slot()]
    name = "ingressd_limit_table_full_total"
    assert not any(k[0] == name for k in scrape(totals.view()))
    workers[0].table_full("default/app", "global-rate-limit")
    workers[1].table_full("default/app", "global-rate-limit")
    workers[1].table_full("default/app", "limit-connections")
    for stats, slot in zip(workers, slots, strict=True):
        totals.update(slot, pickle.loads(pickle.dumps(stats.report(active=0))))
    totals.retire(slots[0])  # a dead worker's refusals stay counted
    samples = scrape(totals.view())
    key = {"namespace": "default", "ingress": "app"}
    assert samples[(name, labels(**key, limit="global-rate-limit"))] == 2
    assert samples[(name, labels(**key, limit="limit-connections"))] == 1
