"""What the leader writes back, computed without a cluster."""

from __future__ import annotations

import pytest
from k8s_objects import build, endpoint_slice, ingress, path, rule, service

from ingressd.kube.status import (
    address,
    current_addresses,
    event_reason,
    normalized,
    service_addresses,
)
from ingressd.model.problems import Problem


def test_address_tells_ips_from_hostnames() -> None:
    assert address("203.0.113.7") == {"ip": "203.0.113.7"}
    assert address("2001:db8::1") == {"ip": "2001:db8::1"}
    assert address("lb.example.com") == {"hostname": "lb.example.com"}


def test_load_balancer_status_wins_over_cluster_ip() -> None:
    svc = service("ingressd")
    svc["spec"]["clusterIP"] = "10.96.0.10"
    svc["status"] = {
        "loadBalancer": {
            "ingress": [{"hostname": "lb.example.com", "ports": [{"port": 80}]}, {"ip": "1.2.3.4"}]
        }
    }
    assert service_addresses(svc) == [{"ip": "1.2.3.4"}, {"hostname": "lb.example.com"}]


def test_cluster_ips_and_external_ips_when_no_load_balancer_yet() -> None:
    svc = service("ingressd")
    svc["spec"].update(
        clusterIP="10.96.0.10", clusterIPs=["10.96.0.10", "fd00::a"], externalIPs=["192.0.2.9"]
    )
    assert service_addresses(svc) == [
        {"ip": "10.96.0.10"},
        {"ip": "192.0.2.9"},
        {"ip": "fd00::a"},
    ]


def test_headless_service_publishes_nothing() -> None:
    svc = service("ingressd")
    svc["spec"]["clusterIP"] = "None"
    assert service_addresses(svc) == []


def test_normalized_ignores_order_duplicates_and_extra_fields() -> None:
    a = normalized(
        [{"ip": "1.2.3.4", "ports": [{"port": 80}]}, {"hostname": "x"}, {"ip": "1.2.3.4"}]
    )
    b = normalized([{"hostname": "x"}, {"ip": "1.2.3.4"}])
    assert a == b == [{"ip": "1.2.3.4"}, {"hostname": "x"}]
    assert normalized([{}, "junk", {"ip": ""}]) == []


def test_current_addresses_of_an_ingress() -> None:
    ing = ingress("web")
    assert current_addresses(ing) == []
    ing["status"] = {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}
    assert current_addresses(ing) == [{"ip": "1.2.3.4"}]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (
            "rules[0].http.paths[0].path '/(' is not a regular expression RE2 can run (x); "
            "path skipped",
            "InvalidRegex",
        ),
        ("service default/nope not found; its routes answer 503", "BackendUnavailable"),
        ("path '/' (Prefix) on host a is already served by older Ingress x/y", "PathConflict"),
        ("TLS Secret default/s not found; hosts a use the default certificate", "InvalidTLS"),
        ("certificate in Secret default/s does not cover host a", "InvalidTLS"),
        ("annotation nginx.ingress.kubernetes.io/x is not supported", "InvalidAnnotation"),
        (
            "annotation nginx.ingress.kubernetes.io/auth-tls-secret is not supported by ingressd: "
            "it requests and verifies client certificates (mutual TLS)",
            "InvalidAnnotation",
        ),
        (
            "annotation nginx.ingress.kubernetes.io/auth-proxy-set-headers is not supported by "
            "ingressd: it adds headers to the auth-url subrequest, which the authentication "
            "service may decide on",
            "InvalidAnnotation",
        ),
        ("has no usable rules and no defaultBackend", "Rejected"),
    ],
)
def test_event_reasons(reason: str, expected: str) -> None:
    assert event_reason(Problem("Ingress default/x", reason)) == expected


def test_build_reports_a_missing_service_once_per_ingress_with_a_reference() -> None:
    table = build(
        ingress(
            "web",
            rules=[rule("a.example", path("/", "nope"), path("/x", "nope"), path("/y", "web"))],
            namespace="shop",
        ),
        service("web", namespace="shop"),
        endpoint_slice("web", ["10.0.0.1"], namespace="shop"),
    )
    missing = [p for p in table.problems if "not found" in p.reason]
    assert len(missing) == 1
    assert missing[0].ref == ("Ingress", "shop", "web")
    assert "shop/nope" in missing[0].reason and "503" in missing[0].reason
    assert table.ingresses == (("shop", "web"),)


def test_table_lists_only_ingresses_of_our_class() -> None:
    table = build(
        ingress("ours", rules=[rule("a.example", path("/", "web"))]),
        ingress("theirs", rules=[rule("b.example", path("/", "web"))], class_name="other"),
        service("web"),
    )
    assert table.ingresses == (("default", "ours"),)
