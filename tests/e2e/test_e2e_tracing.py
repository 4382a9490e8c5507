"""End to end: OpenTelemetry tracing, exported by OTLP/HTTP to a receiver in the test.

The receiver (tests/otlp_receiver.py) decodes the ``ExportTraceServiceRequest``
protobufs ingressd's exporter posts, so each check reads the spans as a
collector would: their ids and parents, attributes, resource. The echo upstream
shows the traceparent it received, the auth service the one its subrequest got.

Three ingressd processes share the module: one tracing everything (two workers,
a live collector), one sampling nothing of its own (TraceIdRatioBased 0,
parent-based), one whose collector is down.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import pytest
from e2e_helpers import (
    LOCALHOST,
    BackgroundLoop,
    EchoServers,
    Ingressd,
    RecordingService,
    backends,
    curl,
    free_port,
    sample_labels,
    scrape,
    serving,
    wait_for,
)
from k8s_objects import ingress, path, rule
from otlp_receiver import Receiver

from ingressd.model.objects import Obj

pytestmark = pytest.mark.timeout(90)

A = "nginx.ingress.kubernetes.io/"
CM = "ingressd/controller"
SERVER, CLIENT = 2, 3
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def configmap(data: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "controller", "namespace": "ingressd"},
        "data": data,
    }


def site(name: str, host: str, **annotations: str) -> Obj:
    return ingress(
        name,
        [rule(host, path("/", "web"))],
        annotations={A + k.replace("_", "-"): v for k, v in annotations.items()},
    )


def new_parent(sampled: bool = True) -> tuple[str, str, str]:
    """(trace id, span id, traceparent) of a client's own span."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def parse_traceparent(value: str) -> tuple[str, str, bool]:
    """(trace id, parent id, sampled) of a W3C traceparent (level 2 adds flag 02, random)."""
    m = _TRACEPARENT.match(value)
    assert m, f"not a traceparent: {value!r}"
    return m.group(1), m.group(2), bool(int(m.group(3), 16) & 1)


class AuthService(RecordingService):
    """Allows everything; records the headers of each subrequest."""


@pytest.fixture(scope="module")
def collector() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def auth_service(upstream_loop: BackgroundLoop) -> Iterator[AuthService]:
    with AuthService().serve(upstream_loop) as service:
        yield service


@pytest.fixture(scope="module")
def echo(upstream_loop: BackgroundLoop) -> Iterator[EchoServers]:
    servers = EchoServers(upstream_loop, ["web", "api"])
    yield servers
    servers.close()


def _tracing_config(port: int, service: str, **more: str) -> dict[str, str]:
    return {
        "otlp-collector-host": LOCALHOST,
        "otlp-collector-port": str(port),
        "otel-service-name": service,
        "otel-schedule-delay-millis": "50",
        **more,
    }


@pytest.fixture(scope="module")
def traced(
    tmp_path_factory: pytest.TempPathFactory,
    echo: EchoServers,
    collector: Receiver,
    auth_service: AuthService,
    curl_binary: str,
) -> Iterator[Ingressd]:
    auth_url = f"http://{LOCALHOST}:{auth_service.port}/check"
    objs = [
        *backends(echo),
        configmap(_tracing_config(collector.port, "traced", **{"enable-opentelemetry": "true"})),
        site("plain", "trace.test"),
        site(
            "untrusted",
            "untrusted.test",
            enable_opentelemetry="true",
            opentelemetry_trust_incoming_span="false",
        ),
        # The companion is read only beside enable-opentelemetry (main.go Parse).
        site("companion", "companion.test", opentelemetry_trust_incoming_span="false"),
        site("auth", "auth.test", auth_url=auth_url),
        site("off", "off.test", enable_opentelemetry="false"),
        site(
            "named",
            "named.test",
            enable_opentelemetry="true",
            opentelemetry_operation_name="proxy $service_name $request_method",
        ),
    ]
    workdir = tmp_path_factory.mktemp("e2e-tracing")
    with serving(workdir, objs, ["--configmap", CM, "--workers", "2"]) as proc:
        yield proc


@pytest.fixture(scope="module")
def sampled(
    tmp_path_factory: pytest.TempPathFactory,
    echo: EchoServers,
    collector: Receiver,
    curl_binary: str,
) -> Iterator[Ingressd]:
    data = _tracing_config(
        collector.port,
        "sampled",
        **{
            "enable-opentelemetry": "true",
            "otel-sampler": "TraceIdRatioBased",
            "otel-sampler-ratio": "0",
        },
    )
    objs = [*backends(echo), configmap(data), site("plain", "trace.test")]
    workdir = tmp_path_factory.mktemp("e2e-tracing-sampled")
    with serving(workdir, objs, ["--configmap", CM]) as proc:
        yield proc


def served(ing: Ingressd, host: str, *headers: str) -> dict[str, str]:
    """The headers the upstream received for a GET of ``host``."""
    args = [a for h in headers for a in ("-H", h)]
    r = ing.get(host, "/items/1?q=secret", "-A", "tracing-test/1.0", *args)
    assert r.status == 200, r.body
    return r.json()["headers"]


def test_a_trusted_traceparent_is_continued_and_the_upstream_sees_ingressds_span(
    traced: Ingressd, collector: Receiver, echo: EchoServers
) -> None:
    trace_id, client_span, parent = new_parent()
    seen = served(traced, "trace.test", f"traceparent: {parent}", "tracestate: vendor=abc")
    got_trace, got_parent, flags = parse_traceparent(seen["traceparent"])
    assert got_trace == trace_id
    assert got_parent != client_span  # ingressd's span, not the client's
    assert flags
    assert seen["tracestate"] == "vendor=abc"
    [span] = collector.wait_spans(lambda s: s.span_id == got_parent)
    assert (span.trace_id, span.parent_span_id, span.kind) == (trace_id, client_span, SERVER)
    assert span.name == "GET /"
    a = span.attributes
    assert a["http.request.method"] == "GET"
    assert a["http.response.status_code"] == 200
    assert a["http.route"] == "/"
    assert a["url.path"] == "/items/1"
    assert "url.query" not in a  # queries may hold secrets
    assert a["url.scheme"] == "http"
    assert a["server.address"] == "trace.test"
    assert a["client.address"] == "127.0.0.1"
    assert a["user_agent.original"] == "tracing-test/1.0"
    assert a["network.protocol.version"] == "1.1"
    assert a["k8s.namespace.name"] == "default"
    assert a["ingressd.ingress.name"] == "plain"
    assert (a["ingressd.service.name"], a["ingressd.service.port"]) == ("web", "80")
    assert a["ingressd.upstream.address"] == f"{LOCALHOST}:{echo['web']}"
    assert a["ingressd.upstream.attempts"] == 1
    assert a["http.request.header.x-request-id"] == (seen["x-request-id"],)
    assert span.resource["service.name"] == "traced"
    assert span.start_ns < span.end_ns
    assert span.status_code == 0


def test_without_a_traceparent_a_new_trace_starts(traced: Ingressd, collector: Receiver) -> None:
    seen = served(traced, "trace.test")
    trace_id, span_id, _ = parse_traceparent(seen["traceparent"])
    assert "tracestate" not in seen
    [span] = collector.wait_spans(lambda s: s.span_id == span_id)
    assert (span.trace_id, span.parent_span_id) == (trace_id, "")


def test_an_untrusted_traceparent_starts_a_new_trace_and_is_not_forwarded(
    traced: Ingressd, collector: Receiver
) -> None:
    trace_id, client_span, parent = new_parent()
    seen = served(traced, "untrusted.test", f"traceparent: {parent}", "tracestate: vendor=abc")
    got_trace, got_parent, _ = parse_traceparent(seen["traceparent"])
    assert got_trace != trace_id
    assert got_parent != client_span
    assert "tracestate" not in seen  # the client's belongs to a trace not continued
    [span] = collector.wait_spans(lambda s: s.span_id == got_parent)
    assert (span.trace_id, span.parent_span_id) == (got_trace, "")


def test_trust_without_enable_opentelemetry_on_the_ingress_has_no_effect(
    traced: Ingressd, collector: Receiver
) -> None:
    trace_id, _, parent = new_parent()
    seen = served(traced, "companion.test", f"traceparent: {parent}")
    assert parse_traceparent(seen["traceparent"])[0] == trace_id  # continued: trusted
    traced.wait_for_log(
        'opentelemetry-trust-incoming-span: no effect without enable-opentelemetry: "true"'
    )


@pytest.mark.parametrize(
    "bad",
    [
        "00-zzzz-0000-01",
        "00-00000000000000000000000000000000-0000000000000001-01",  # all-zero trace id
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # version ff
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        "00-" + "a" * 500,
    ],
)
def test_a_malformed_traceparent_starts_a_new_trace_and_is_not_forwarded(
    traced: Ingressd, collector: Receiver, bad: str
) -> None:
    seen = served(traced, "trace.test", f"traceparent: {bad}", "tracestate: vendor=abc")
    _, got_parent, _ = parse_traceparent(seen["traceparent"])
    assert seen["traceparent"] != bad
    [span] = collector.wait_spans(lambda s: s.span_id == got_parent)
    assert span.parent_span_id == ""


def test_two_traceparents_are_invalid_together(traced: Ingressd, collector: Receiver) -> None:
    trace_id, _, one = new_parent()
    _, _, two = new_parent()
    seen = served(traced, "trace.test", f"traceparent: {one}", f"traceparent: {two}")
    got_trace, got_parent, _ = parse_traceparent(seen["traceparent"])
    assert got_trace != trace_id
    [span] = collector.wait_spans(lambda s: s.span_id == got_parent)
    assert span.parent_span_id == ""


def test_the_auth_subrequest_gets_a_child_span(
    traced: Ingressd, collector: Receiver, auth_service: AuthService
) -> None:
    trace_id, client_span, parent = new_parent()
    seen = served(traced, "auth.test", f"traceparent: {parent}")
    with auth_service.lock:
        asked = auth_service.seen[-1]
    _, server_id, _ = parse_traceparent(seen["traceparent"])
    auth_trace, auth_id, _ = parse_traceparent(asked["traceparent"])
    assert auth_trace == trace_id
    assert auth_id not in (server_id, client_span)
    [server] = collector.wait_spans(lambda s: s.span_id == server_id)
    [auth] = collector.wait_spans(lambda s: s.span_id == auth_id)
    # client span -> ingressd's server span -> its auth-url child; upstream sees the server span
    assert server.parent_span_id == client_span
    assert (auth.parent_span_id, auth.trace_id, auth.kind) == (server_id, trace_id, CLIENT)
    assert auth.name == "auth-url"
    assert auth.attributes["url.full"].endswith("/check")
    assert auth.attributes["ingressd.auth.allowed"] is True
    assert server.start_ns <= auth.start_ns <= auth.end_ns <= server.end_ns


def test_a_route_annotated_off_passes_the_clients_headers_untouched(
    traced: Ingressd, collector: Receiver
) -> None:
    trace_id, _, parent = new_parent()
    seen = served(traced, "off.test", f"traceparent: {parent}", "tracestate: vendor=abc")
    assert (seen["traceparent"], seen["tracestate"]) == (parent, "vendor=abc")
    # A request on a traced route, sent after, is exported; nothing of the off one.
    _, later, _ = parse_traceparent(served(traced, "trace.test")["traceparent"])
    collector.wait_spans(lambda s: s.span_id == later)
    assert not collector.spans(lambda s: s.trace_id == trace_id)


def test_the_operation_name_annotation_names_the_span(
    traced: Ingressd, collector: Receiver
) -> None:
    _, span_id, _ = parse_traceparent(served(traced, "named.test")["traceparent"])
    [span] = collector.wait_spans(lambda s: s.span_id == span_id)
    assert span.name == "proxy web GET"


def test_an_http2_request_over_tls(traced: Ingressd, collector: Receiver) -> None:
    trace_id, client_span, parent = new_parent()
    url = traced.https_url("trace.test", "/h2")
    r = curl("-k", "--http2", *traced.resolve("trace.test"), "-H", f"traceparent: {parent}", url)
    assert r.status == 200
    upstream_parent = r.json()["headers"]["traceparent"]
    [span] = collector.wait_spans(lambda s: s.trace_id == trace_id)
    assert upstream_parent == f"00-{trace_id}-{span.span_id}-01"
    assert span.parent_span_id == client_span
    a = span.attributes
    assert (a["url.scheme"], a["network.protocol.version"]) == ("https", "2")
    assert (a["server.address"], a["server.port"]) == ("trace.test", traced.https_port)


def test_local_answers_and_errors_are_traced_too(traced: Ingressd, collector: Receiver) -> None:
    trace_id, _, parent = new_parent()
    r = traced.get("nowhere.test", "/", "-H", f"traceparent: {parent}", check=False)
    assert r.status == 404
    [span] = collector.wait_spans(lambda s: s.trace_id == trace_id)
    assert span.attributes["http.response.status_code"] == 404
    assert "http.route" not in span.attributes


def test_each_worker_exports_its_own_spans(traced: Ingressd, collector: Receiver) -> None:
    trace_id, _, parent = new_parent()
    for _ in range(24):  # each curl a new connection: the kernel spreads them over workers
        served(traced, "trace.test", f"traceparent: {parent}")
    spans = collector.wait_spans(lambda s: s.trace_id == trace_id, count=24)
    instances = {s.resource["service.instance.id"] for s in spans}
    assert len(instances) == 2
    assert all(re.fullmatch(r".+:\d+", i) for i in instances)
    # /metrics sums the workers' counts (reported about once a second).
    exported = ("ingressd_tracing_spans_total", sample_labels(outcome="exported"))
    wait_for(lambda: scrape(traced.admin_port).get(exported, 0) >= 24, 5, what="exported count")


def test_ratio_zero_exports_nothing_of_its_own(sampled: Ingressd, collector: Receiver) -> None:
    parents = [parse_traceparent(served(sampled, "trace.test")["traceparent"]) for _ in range(5)]
    assert not any(flags for _, _, flags in parents)  # the upstream is told: not sampled
    # A sampled request sent after is exported; none of the unsampled ones was.
    trace_id, _, parent = new_parent(sampled=True)
    served(sampled, "trace.test", f"traceparent: {parent}")
    collector.wait_spans(lambda s: s.trace_id == trace_id)
    ids = {trace for trace, _, _ in parents}
    assert not collector.spans(lambda s: s.trace_id in ids)


def test_parent_based_sampling_follows_the_sampled_flag(
    sampled: Ingressd, collector: Receiver
) -> None:
    on_trace, _, on = new_parent(sampled=True)
    off_trace, _, off = new_parent(sampled=False)
    seen_off = served(sampled, "trace.test", f"traceparent: {off}")
    seen_on = served(sampled, "trace.test", f"traceparent: {on}")
    assert parse_traceparent(seen_on["traceparent"])[2]
    assert not parse_traceparent(seen_off["traceparent"])[2]
    [span] = collector.wait_spans(lambda s: s.trace_id == on_trace)
    assert span.resource["service.name"] == "sampled"
    assert not collector.spans(lambda s: s.trace_id == off_trace)


def test_turned_on_and_off_live(
    tmp_path_factory: pytest.TempPathFactory,
    echo: EchoServers,
    collector: Receiver,
    curl_binary: str,
) -> None:
    off = _tracing_config(collector.port, "live")
    on = {**off, "enable-opentelemetry": "true"}
    workdir = tmp_path_factory.mktemp("e2e-tracing-live")
    site_objs = [*backends(echo), site("plain", "trace.test")]
    with serving(workdir, [*site_objs, configmap(off)], ["--configmap", CM]) as proc:
        assert "traceparent" not in served(proc, "trace.test")
        proc.update({"all.yaml": [*site_objs, configmap(on)]})
        # OpenTelemetry is imported off the event loop, then the next request is traced.
        seen = wait_for(
            lambda: served(proc, "trace.test").get("traceparent"), 10, what="a traced request"
        )
        _, span_id, _ = parse_traceparent(seen)
        [span] = collector.wait_spans(lambda s: s.span_id == span_id)
        assert span.resource["service.name"] == "live"
        proc.wait_for_log("tracing: exporting spans to")
        proc.update({"all.yaml": [*site_objs, configmap(off)]})
        wait_for(lambda: "traceparent" not in served(proc, "trace.test"), 10, what="tracing off")


def test_a_collector_that_is_down_costs_requests_nothing_and_drops_are_counted(
    tmp_path_factory: pytest.TempPathFactory, echo: EchoServers, curl_binary: str
) -> None:
    data = _tracing_config(
        free_port(),  # nothing listens there
        "down",
        **{"enable-opentelemetry": "true", "otel-max-queuesize": "4"},
    )
    objs = [*backends(echo), configmap(data), site("plain", "trace.test")]
    workdir = tmp_path_factory.mktemp("e2e-tracing-down")
    with serving(workdir, objs, ["--configmap", CM]) as proc:
        for _ in range(30):
            assert proc.get("trace.test", "/", max_time=5).status == 200
        proc.wait_for_log("spans dropped so far", timeout=10)
        dropped = ("ingressd_tracing_spans_total", sample_labels(outcome="dropped"))
        assert scrape(proc.admin_port)[dropped] > 0
        proc.stop()
        line = proc.wait_for_log("spans exported to")
    m = re.search(r"(\d+) spans exported to \S+, (\d+) failed to export, (\d+) dropped", line)
    assert m, line
    exported, failed, dropped = map(int, m.groups())
    assert exported == 0
    assert dropped > 0
    assert failed + dropped <= 30  # an export still trying when it stopped counts as neither
