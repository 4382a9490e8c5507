"""observe/tracing.py: which requests are traced, what their upstream is told, and
the export queue's bounds, on the real SDK (no collector: nothing is exported here;
tests/e2e/test_e2e_tracing.py exports to a receiver)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from time import perf_counter
from typing import Any

import pytest

from ingressd.model.backend import Backend, Endpoint
from ingressd.model.globals import TracingConfig
from ingressd.model.objects import ObjectStore
from ingressd.model.policy import RoutePolicy, RouteTracing
from ingressd.model.table import Route
from ingressd.observe import tracing
from ingressd.observe.tracing import ServerSpan, SpanQueue, Tracing

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
ON = TracingConfig(
    enabled=True, collector_host="127.0.0.1", collector_port=9, schedule_delay_ms=3_600_000
)


class Request:
    """What Tracing.begin reads of an exchange, and what it sets."""

    def __init__(self, *headers: tuple[bytes, bytes]) -> None:
        self.headers = list(headers)
        self.started = perf_counter()
        self.span: ServerSpan | None = None


def route(rule: RouteTracing | None = None) -> Route:
    backend = Backend("default/web:80", (Endpoint("127.0.0.1", 8080),))
    return Route("/", "Prefix", backend, "default/web", RoutePolicy(tracing=rule))


@pytest.fixture
def make() -> Iterator[Any]:
    made: list[Tracing] = []

    def factory(config: TracingConfig = ON) -> Tracing:
        made.append(Tracing(config))
        return made[-1]

    yield factory
    for t in made:
        t.queue.dropped = t.queue.failed = 0
        t.shutdown()


def begin(t: Tracing, rt: Route | None, *headers: tuple[bytes, bytes]) -> Request:
    req = Request(*headers)
    t.begin(req, rt)
    return req


def context_of(req: Request) -> dict[bytes, bytes]:
    """The trace context the upstream gets: traceparent and tracestate, once each."""
    found = [(n.lower(), v) for n, v in req.headers if n.lower() in (b"traceparent", b"tracestate")]
    assert len(found) == len(dict(found))
    return dict(found)


def parent_of(req: Request) -> str:
    return context_of(req)[b"traceparent"].decode()


def test_a_trusted_parent_is_continued(make: Any) -> None:
    req = begin(make(), route(), (b"traceparent", PARENT.encode()), (b"TraceState", b"k=v"))
    assert req.span is not None
    version, trace, span, flags = parent_of(req).split("-")
    assert (version, trace) == ("00", "0af7651916cd43dd8448eb211c80319c")
    assert span != "b7ad6b7169203331" and int(flags, 16) & 1
    assert context_of(req)[b"tracestate"] == b"k=v"


@pytest.mark.parametrize(
    ("config", "rule"),
    [
        (replace(ON, trust_incoming_span=False), None),  # the ConfigMap's
        (replace(ON, trust_incoming_span=False), RouteTracing(True)),  # the Ingress's not set
        (ON, RouteTracing(True, trust_incoming_span=False)),  # the Ingress's wins
    ],
)
def test_untrusted_starts_anew_and_empties_tracestate(
    make: Any, config: TracingConfig, rule: RouteTracing | None
) -> None:
    req = begin(
        make(config), route(rule), (b"traceparent", PARENT.encode()), (b"tracestate", b"k=v")
    )
    assert parent_of(req).split("-")[1] != "0af7651916cd43dd8448eb211c80319c"
    assert b"tracestate" not in context_of(req)  # the client's is not forwarded


def test_an_ingress_trusts_where_the_configmap_does_not(make: Any) -> None:
    t = make(replace(ON, trust_incoming_span=False))
    req = begin(t, route(RouteTracing(True, True)), (b"traceparent", PARENT.encode()))
    assert parent_of(req).split("-")[1] == "0af7651916cd43dd8448eb211c80319c"


def test_a_tracestate_without_a_traceparent_is_not_forwarded(make: Any) -> None:
    req = begin(make(), route(), (b"Host", b"a"), (b"tracestate", b"k=v"))
    assert list(context_of(req)) == [b"traceparent"]
    assert req.headers[0] == (b"Host", b"a")


def test_an_unsampled_request_gets_a_traceparent_without_a_span(make: Any) -> None:
    t = make(replace(ON, sampler="TraceIdRatioBased", ratio=0.0))
    req = begin(t, route())
    assert req.span is None
    assert parent_of(req).endswith("-00")
    parent = PARENT.replace("-01", "-00").encode()
    req = begin(t, route(), (b"traceparent", parent), (b"tracestate", b"k=v"))
    assert req.span is None
    _, trace, span, flags = parent_of(req).split("-")
    assert (trace, flags) == ("0af7651916cd43dd8448eb211c80319c", "00")
    assert span != "b7ad6b7169203331"
    assert context_of(req)[b"tracestate"] == b"k=v"


def test_which_routes_are_traced(make: Any) -> None:
    on, off = make(ON), make(replace(ON, enabled=False))
    assert begin(on, route()).span is not None
    assert begin(on, None).span is not None  # no Ingress matched: the ConfigMap decides
    assert begin(on, route(RouteTracing(False))).span is None  # "opentelemetry off"
    assert begin(off, route()).span is None
    assert begin(off, None).span is None
    assert begin(off, route(RouteTracing(True))).span is not None
    sent = [(b"traceparent", PARENT.encode()), (b"tracestate", b"k=v")]
    untraced = begin(on, route(RouteTracing(False)), *sent)
    assert untraced.headers == sent  # the client's headers pass as they are


@pytest.mark.parametrize(
    "headers",
    [
        [(b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-zz")],
        [(b"traceparent", PARENT.encode()), (b"traceparent", PARENT.encode())],
        [(b"traceparent", PARENT.encode() + b"-" + b"x" * 300)],
    ],
)
def test_malformed_or_repeated_parents_start_anew(
    make: Any, headers: list[tuple[bytes, bytes]]
) -> None:
    req = begin(make(), route(), *headers)
    assert parent_of(req).split("-")[1] != "0af7651916cd43dd8448eb211c80319c"


def test_update_reuses_replaces_and_stops(caplog: pytest.LogCaptureFixture) -> None:
    first = tracing.update(None, ON, False)
    assert first is not None
    try:
        assert tracing.update(first, ON, False) is first
        assert tracing.update(None, replace(ON, enabled=False), False) is None
        assert tracing.update(None, replace(ON, collector_host=""), True) is None
        assert "otlp-collector-host is empty" in caplog.text
        assert tracing.update(None, ON, False, serve=False) is None  # --workers' main process
        second = tracing.update(first, replace(ON, sampler="AlwaysOff"), False)
        assert second is not None and second is not first and first.closed
        assert tracing.update(second, replace(ON, enabled=False), False) is None
        assert second.closed
    finally:
        first.shutdown()


def test_annotated_finds_an_ingress_asking() -> None:
    store = ObjectStore()
    ing = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "a", "namespace": "default", "annotations": {}},
        "spec": {},
    }
    store.put(ing, "test")
    assert not tracing.annotated(store.snapshot())
    ing["metadata"]["annotations"] = {"nginx.ingress.kubernetes.io/enable-opentelemetry": "True"}
    store.put(ing, "test")
    assert tracing.annotated(store.snapshot())


class Exporter:
    def __init__(self) -> None:
        self.batches: list[int] = []

    def export(self, batch: list[object]) -> Any:
        self.batches.append(len(batch))

        class Result:
            name = "SUCCESS"

        return Result()

    def shutdown(self) -> None:
        pass


def test_the_queue_is_bounded_and_drops_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    exporter = Exporter()
    queue = SpanQueue(exporter, replace(ON, max_queue_size=5, max_export_batch_size=100))
    for n in range(12):
        queue.on_end(n)
    assert (len(queue.queue), queue.dropped) == (5, 7)
    assert "7 spans dropped so far" not in caplog.text  # logged once in a while, not per span
    assert "1 spans dropped so far" in caplog.text
    queue.shutdown()
    assert (queue.exported, queue.failed, queue.dropped) == (5, 0, 7)
    assert exporter.batches == [5]
    assert "5 spans exported to http://127.0.0.1:9/v1/traces, 0 failed to export, 7 dropped" in (
        caplog.text
    )


def test_batches_are_bounded_and_failures_counted() -> None:
    class Failing(Exporter):
        def export(self, batch: list[object]) -> Any:
            super().export(batch)
            raise ConnectionError("refused")

    exporter = Failing()
    queue = SpanQueue(exporter, replace(ON, max_export_batch_size=4))
    for n in range(10):
        queue.on_end(n)
    queue.shutdown()
    assert sum(exporter.batches) == 10 and max(exporter.batches) == 4
    assert (queue.exported, queue.failed, queue.dropped) == (0, 10, 0)


def test_what_update_says_is_logged_once_per_change_not_per_rebuild(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="ingressd.tracing")
    tracing._said[0] = None
    nowhere = replace(ON, collector_host="")
    for _ in range(3):  # every rebuild asks again
        assert tracing.update(None, nowhere, False) is None
    assert caplog.text.count("otlp-collector-host is empty") == 1
    for _ in range(3):  # the main process of --workers serves none: still said once
        assert tracing.update(None, ON, False, serve=False) is None
    assert caplog.text.count("tracing: exporting spans to") == 1
    for _ in range(3):
        assert tracing.update(None, replace(ON, enabled=False), False, serve=False) is None
    assert caplog.text.count("tracing: off") == 1
