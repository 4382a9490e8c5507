"""OpenTelemetry's ConfigMap keys and annotations, parsed and bounded (policy/otel.py,
policy/configmap.py, policy/annotations.py), as ingress-nginx v1.15.1 reads them."""

from __future__ import annotations

import sys

import pytest

from ingressd.model.globals import DEFAULT_TRACING, TracingConfig
from ingressd.model.policy import RouteTracing
from ingressd.policy import otel
from ingressd.policy.annotations import classify as classify_annotations
from ingressd.policy.annotations import parse_policy
from ingressd.policy.configmap import REFUSED_PATHS, classify, read_configmap

A = "nginx.ingress.kubernetes.io/"


def test_defaults_are_ingress_nginx_s_but_the_otlp_http_port() -> None:
    assert read_configmap({}).config.tracing == DEFAULT_TRACING
    t = DEFAULT_TRACING
    assert (t.enabled, t.collector_host, t.service_name) == (False, "", "nginx")
    assert (t.sampler, t.ratio, t.parent_based) == ("AlwaysOn", 0.01, True)
    assert (t.max_queue_size, t.schedule_delay_ms, t.max_export_batch_size) == (2048, 5000, 512)
    assert t.trust_incoming_span is True
    assert t.collector_port == 4318  # OTLP/HTTP; ingress-nginx's 4317 is OTLP/gRPC


def test_every_key_sets_its_field() -> None:
    reading = read_configmap(
        {
            "enable-opentelemetry": "true",
            "otlp-collector-host": "otel-collector.monitoring.svc",
            "otlp-collector-port": "14318",
            "otel-service-name": "edge-proxy",
            "otel-sampler": "TraceIdRatioBased",
            "otel-sampler-ratio": "0.25",
            "otel-sampler-parent-based": "false",
            "otel-max-queuesize": "100",
            "otel-schedule-delay-millis": "200",
            "otel-max-export-batch-size": "50",
            "opentelemetry-trust-incoming-span": "false",
            "opentelemetry-operation-name": "ingress $namespace/$ingress_name",
        }
    )
    assert reading.messages == ()
    assert reading.config.tracing == TracingConfig(
        enabled=True,
        collector_host="otel-collector.monitoring.svc",
        collector_port=14318,
        service_name="edge-proxy",
        sampler="TraceIdRatioBased",
        ratio=0.25,
        parent_based=False,
        max_queue_size=100,
        schedule_delay_ms=200,
        max_export_batch_size=50,
        trust_incoming_span=False,
        operation_name=("ingress ", "namespace", "/", "ingress_name", ""),
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("otlp-collector-host", "http://collector:4318"),
        ("otlp-collector-host", "collector:4318"),
        ("otlp-collector-host", "a b"),
        ("otlp-collector-host", "x" * 300),
        ("otlp-collector-port", "0"),
        ("otlp-collector-port", "65536"),
        ("otlp-collector-port", "http"),
        ("otel-service-name", ""),
        ("otel-service-name", "a b"),
        ("otel-sampler", "ParentBased"),
        ("otel-sampler", "alwayson"),
        ("otel-sampler-ratio", "1.5"),
        ("otel-sampler-ratio", "-0.1"),
        ("otel-sampler-ratio", "nan"),
        ("otel-sampler-ratio", "half"),
        ("otel-max-queuesize", "0"),
        ("otel-max-queuesize", "10000000"),
        ("otel-schedule-delay-millis", "0"),
        ("otel-max-export-batch-size", "-1"),
        ("opentelemetry-operation-name", "GET $remote_user"),
        ("opentelemetry-operation-name", "a\nb"),
        ("opentelemetry-operation-name", "x" * 300),
        ("enable-opentelemetry", "yes"),
    ],
)
def test_a_bad_value_is_invalid_and_the_default_applies(key: str, value: str) -> None:
    reading = read_configmap({key: value})
    [verdict] = reading.verdicts
    assert verdict.status == "invalid", verdict
    assert reading.config.tracing == DEFAULT_TRACING


def test_hosts_and_addresses() -> None:
    assert otel.parse_collector_host("10.0.0.7") == "10.0.0.7"
    assert otel.parse_collector_host("[fd00::7]") == "[fd00::7]"
    assert otel.parse_collector_host("fd00::7") == "[fd00::7]"
    assert otel.parse_collector_host(" ") == ""


def test_opentelemetry_config_is_refused_with_a_reason() -> None:
    reading = read_configmap(
        {"opentelemetry-config": "/etc/ingress-controller/telemetry/opentelemetry.toml"}
    )
    [verdict] = reading.verdicts
    assert verdict.status == "refused"
    assert "file" in verdict.reason and "otlp-*" in verdict.reason
    assert set(REFUSED_PATHS) == {"opentelemetry-config"}


def test_enabled_without_a_collector_host_is_reported() -> None:
    reading = read_configmap({"enable-opentelemetry": "true"})
    assert reading.config.tracing.enabled
    assert any("otlp-collector-host is empty" in m for m in reading.messages)


def test_the_otlp_grpc_port_is_pointed_out() -> None:
    data = {"otlp-collector-host": "collector", "otlp-collector-port": "4317"}
    assert any("OTLP/gRPC's port" in m for m in read_configmap(data).messages)
    data["otlp-collector-port"] = "4318"
    assert read_configmap(data).messages == ()


def _without_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the tracing extra were not installed: its modules cannot be imported."""
    for name in list(sys.modules):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # type: ignore[arg-type]


def test_without_the_packages_enabling_is_reported_in_check_and_problems(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _without_opentelemetry(monkeypatch)
    why = otel.missing()
    assert why is not None and "pip install 'ingressd[tracing]'" in why
    data = {"enable-opentelemetry": "true", "otlp-collector-host": "collector"}
    assert {v.key: v.status for v in classify(data)}["enable-opentelemetry"] == "unsupported"
    reading = read_configmap(data)
    assert not reading.config.tracing.enabled
    assert any("ingressd[tracing]" in m for m in reading.messages)
    _, messages = parse_policy({A + "enable-opentelemetry": "true"})
    assert any("ingressd[tracing]" in m for m in messages)


def test_with_the_packages_nothing_is_missing() -> None:
    assert otel.missing() is None


def test_annotations_as_main_go_reads_them() -> None:
    policy, messages = parse_policy(
        {
            A + "enable-opentelemetry": "true",
            A + "opentelemetry-trust-incoming-span": "false",
            A + "opentelemetry-operation-name": "HTTP $request_method $service_name $uri",
        }
    )
    assert messages == []
    assert policy.tracing == RouteTracing(
        True,
        False,
        ("HTTP ", "request_method", " ", "service_name", " ", "uri", ""),
    )
    policy, messages = parse_policy({A + "enable-opentelemetry": "false"})
    assert (policy.tracing, messages) == (RouteTracing(False), [])


def test_companions_need_enable_opentelemetry_on_the_same_ingress() -> None:
    for enabled in (None, "false"):
        notes = {A + "opentelemetry-trust-incoming-span": "false"}
        if enabled is not None:
            notes[A + "enable-opentelemetry"] = enabled
        policy, messages = parse_policy(notes)
        assert policy.tracing == (None if enabled is None else RouteTracing(False))
        assert messages == [
            "opentelemetry-trust-incoming-span: no effect without "
            'enable-opentelemetry: "true" on the same Ingress'
        ]


def test_annotation_values_are_validated() -> None:
    verdicts = classify_annotations(
        {
            A + "enable-opentelemetry": "maybe",
            A + "opentelemetry-operation-name": "$http_cookie",
            A + "opentelemetry-trust-incoming-span": "true",
        }
    )
    assert {v.key.removeprefix(A): v.status for v in verdicts} == {
        "enable-opentelemetry": "invalid",
        "opentelemetry-operation-name": "invalid",
        "opentelemetry-trust-incoming-span": "supported",
    }
