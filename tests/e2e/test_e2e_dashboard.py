"""deploy/monitoring/ingressd-dashboard.json against what ``/metrics`` really exports.

Every PromQL expression of the dashboard (panel targets, and the metric
selectors inside its ``label_values(...)`` template variables) is parsed by a
real PromQL parser (``promql-parser``, the Rust parser's Python binding), after
Grafana's interval variables are interpolated as Grafana would. From the syntax
tree come the sample names each selector names, the labels of its matchers,
and the labels of ``by``/``without``/``on``/``ignoring`` clauses. A real ingressd
then serves HTTP, HTTPS (so a certificate is in use), a 404, a 502 from a dead
upstream and a TCP service session, and one scrape of its ``/metrics`` must
show every one of those sample names with every label the dashboard uses on
it; ``rate`` and its kin must be applied to counters (or histogram series),
and histogram samples are told apart by their family's type, not by guessing
from a ``_bucket``/``_sum``/``_count`` suffix.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import promql_parser
import pytest
import yaml
from deploy_objects import MONITORING, find, render
from e2e_helpers import (
    LOCALHOST,
    REPO_ROOT,
    BackgroundLoop,
    EchoServers,
    Ingressd,
    backends,
    curl,
    echo_backend,
    free_port,
    raw_exchange,
    simple,
    wait_for,
)
from k8s_objects import endpoint_slice, ingress, path, rule, tls_entry, tls_secret
from prometheus_client.parser import text_string_to_metric_families

from ingressd.policy.tls import self_signed

pytestmark = pytest.mark.timeout(60)

DASHBOARD = REPO_ROOT / "deploy" / "monitoring" / "ingressd-dashboard.json"
ALERTS = REPO_ROOT / "deploy" / "monitoring" / "prometheusrule.yaml"
TCP_CM = "default/tcp-services"
# Grafana's built-in interval variables, replaced as Grafana does before the
# query reaches Prometheus; any other variable must sit inside a string.
INTERVAL_VARIABLE = re.compile(
    r"\$(?:__rate_interval|__interval|__range)\b"
    r"|\$\{__(?:rate_interval|interval|range)\}"
)
LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?P<selector>.+?)\s*,\s*(?P<label>\w+)\s*\)\s*$")
# Functions whose argument must be a counter: on a gauge they give nonsense.
COUNTER_FUNCTIONS = frozenset({"rate", "irate", "increase", "resets"})
# Requests to a Service with one dead and one live endpoint: enough that at
# least one goes to the dead one first, whatever the balancing order.
RETRY_REQUESTS = 8
GRAFANA_SCHEMA_VERSION = 39  # Grafana 10.4 / 11.x


@dataclass(frozen=True, slots=True)
class Use:
    """What a query needs from ``/metrics``: each of ``labels`` on one of ``samples``."""

    where: str
    samples: tuple[str, ...]
    labels: tuple[str, ...]
    counter: bool = False  # the samples are fed to rate() and its kin


@dataclass(frozen=True, slots=True)
class Exported:
    """One scrape: sample name -> its family's type, and the label names seen on it."""

    types: dict[str, str]
    labels: dict[str, frozenset[str]]


# -- the dashboard ---------------------------------------------------------------------------


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels") or [])  # a collapsed row holds its panels


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every query the dashboard sends to Prometheus."""
    for panel in all_panels(dashboard["panels"]):
        for target in panel.get("targets") or []:
            yield f"panel {panel['title']!r} target {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        m = LABEL_VALUES.match(text)
        assert m, f"variable {variable['name']}: only label_values(selector, label) is checked"
        where = f"variable {variable['name']!r}"
        yield where, f"count by ({m['label']}) ({m['selector']})"


def uses(where: str, expr: str) -> list[Use]:
    """What ``expr`` needs from ``/metrics``, read from its syntax tree."""
    tree = promql_parser.parse(INTERVAL_VARIABLE.sub("5m", expr))
    found: list[Use] = []

    def selectors(node: Any) -> tuple[str, ...]:
        names: list[str] = []

        def see(n: Any) -> None:
            if isinstance(n, promql_parser.VectorSelector):
                names.append(n.name)

        promql_parser.walk(node, see)
        return tuple(names)

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"{where}: a selector without a metric name"
            assert not node.matchers.or_matchers, f"{where}: 'or' matchers are not checked"
            labels = tuple(m.name for m in node.matchers.matchers if m.name != "__name__")
            found.append(Use(where, (node.name,), labels))
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            found.append(Use(where, selectors(node.expr), tuple(node.modifier.labels)))
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            matching = node.modifier.matching
            if matching is not None and matching.labels:
                for side in (node.lhs, node.rhs):
                    found.append(Use(where, selectors(side), tuple(matching.labels)))
            if node.modifier.group_labels:
                both = selectors(node.lhs) + selectors(node.rhs)
                found.append(Use(where, both, tuple(node.modifier.group_labels)))
        elif isinstance(node, promql_parser.Call) and node.func.name in COUNTER_FUNCTIONS:
            found.append(Use(where, selectors(node), (), counter=True))

    promql_parser.walk(tree, visit)
    return found


def alert_uses(rules: dict[str, Any]) -> list[Use]:
    return [
        use
        for group in rules["spec"]["groups"]
        for alert in group["rules"]
        for use in uses(f"alert {alert['alert']!r}", alert["expr"])
    ]


def dashboard_uses(dashboard: dict[str, Any]) -> list[Use]:
    return [use for where, expr in queries(dashboard) for use in uses(where, expr)]


def missing(exported: Exported, needed: list[Use]) -> list[str]:
    """What the dashboard names that the scrape does not have; empty when all is there."""
    errors = []
    for use in needed:
        assert use.samples, f"{use.where}: no metric under {use}"
        absent = [s for s in use.samples if s not in exported.types]
        if absent:
            errors.append(f"{use.where}: no metric {absent} on /metrics")
            continue
        for label in use.labels:
            if not any(label in exported.labels[s] for s in use.samples):
                errors.append(f"{use.where}: no label {label!r} on {list(use.samples)}")
        if use.counter:
            gauges = [s for s in use.samples if exported.types[s] not in ("counter", "histogram")]
            if gauges:
                errors.append(f"{use.where}: rate() and its kin over non-counters {gauges}")
    return errors


def test_dashboard_is_a_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= GRAFANA_SCHEMA_VERSION
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "ingress"} <= set(variables)
    panels = list(all_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        columns = range(pos["x"], pos["x"] + pos["w"])
        mine = {(x, y) for x in columns for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & mine, f"{panel['title']!r} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        # Every query goes to the data source the viewer picked, never a fixed one.
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']!r} has no unit"
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in (
        "request rate",
        "5xx",
        "4xx",
        "percentiles",
        "upstream",
        "connections",
        "rebuild",
        "problems",
        "certificate expiry",
    ):
        assert topic in titles, topic


# -- what /metrics exports ---------------------------------------------------------------------


def scrape_families(admin_port: int) -> Exported:
    answer = raw_exchange(
        admin_port, b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    types: dict[str, str] = {}
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            types[sample.name] = family.type
            labels.setdefault(sample.name, set()).update(sample.labels)
    return Exported(types, {name: frozenset(seen) for name, seen in labels.items()})


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory, upstream_loop: BackgroundLoop, curl_binary: str
) -> Iterator[Exported]:
    """One scrape of an ingressd that served every kind of traffic the dashboard shows."""
    tmp = tmp_path_factory.mktemp("dashboard")
    echo = EchoServers(upstream_loop, ["web", "api"])
    not_before = dt.datetime.fromtimestamp(int(time.time()) - 86400, dt.UTC)
    pem = self_signed("secure.test", ("secure.test",), days=30, not_before=not_before)
    tcp_port = free_port()
    objs = [
        *backends(echo),
        *echo_backend("dead", free_port()),  # nothing listens there: 502, upstream errors
        # A dead endpoint and a live one: requests sent to the dead one are retried.
        *echo_backend("retry", free_port()),
        endpoint_slice("retry", [LOCALHOST], echo["web"]),
        tls_secret("secure-tls", pem=pem),
        simple("web", "web.test", "web"),
        simple("dead", "dead.test", "dead"),
        simple("retry", "retry.test", "retry"),
        ingress(
            "secure",
            [rule("secure.test", path("/", "web"))],
            tls=[tls_entry(["secure.test"], "secure-tls")],
        ),
    ]
    tcp_services = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "tcp-services", "namespace": "default"},
        "data": {str(tcp_port): "default/api:80"},
    }
    proc = Ingressd(
        tmp / "manifests",
        tmp / "ingressd.log",
        extra_args=["--access-log", "off", "--tcp-services-configmap", TCP_CM],
    )
    proc.update({"all.yaml": objs, "tcp.yaml": [tcp_services]})
    held: socket.socket | None = None
    try:
        ing = proc.start()
        get = b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
        assert raw_exchange(ing.http_port, get % b"web.test").startswith(b"HTTP/1.1 200 ")
        assert raw_exchange(ing.http_port, get % b"nowhere.test").startswith(b"HTTP/1.1 404 ")
        assert raw_exchange(ing.http_port, get % b"dead.test").startswith(b"HTTP/1.1 502 ")
        for _ in range(RETRY_REQUESTS):
            answer = raw_exchange(ing.http_port, get % b"retry.test")
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        https = curl(
            "-k",
            "--resolve",
            f"secure.test:{ing.https_port}:{LOCALHOST}",
            f"https://secure.test:{ing.https_port}/",
        )
        assert https.status == 200, https
        # A TCP service session that ended, and one still open when scraped.
        wait_for(lambda: _answers(tcp_port, get % b"tcp.test"), 5, what="the TCP service")
        held = socket.create_connection((LOCALHOST, tcp_port), timeout=5)
        held.sendall(b"GET / HTTP/1.1\r\nHost: tcp.test\r\n\r\n")
        assert held.recv(64).startswith(b"HTTP/1.1 200 ")

        def complete() -> Exported | None:
            seen = scrape_families(ing.admin_port)
            wanted = (
                "ingressd_stream_sessions_total",
                "ingressd_stream_sessions_open",
                "ingressd_upstream_errors_total",
                "ingressd_upstream_retries_total",
            )
            return seen if all(name in seen.types for name in wanted) else None

        yield wait_for(complete, 5, what="the stream sessions counted")
    finally:
        if held is not None:
            held.close()
        proc.stop()
        echo.close()


def _answers(port: int, request: bytes) -> bool:
    try:
        return raw_exchange(port, request, timeout=2).startswith(b"HTTP/1.1 200 ")
    except OSError:
        return False


def test_every_metric_and_label_the_dashboard_names_is_exported(exported: Exported) -> None:
    needed = dashboard_uses(json.loads(DASHBOARD.read_text()))
    named = {s for use in needed for s in use.samples}
    # The walk found the queries: each panel family is among them.
    assert {
        "ingressd_requests_total",
        "ingressd_upstream_retries_total",
        "ingressd_request_duration_seconds_bucket",
        "ingressd_upstream_response_duration_seconds_bucket",
        "ingressd_connections_active",
        "ingressd_config_rebuild_duration_seconds_bucket",
        "ingressd_config_problems",
        "ingressd_ssl_certificate_expiry_timestamp_seconds",
    } <= named
    assert missing(exported, needed) == []


@pytest.mark.parametrize(
    ("expr", "complaint"),
    [
        # A metric that does not exist, and a histogram suffix on a counter.
        ("sum(rate(ingressd_request_total[5m]))", "no metric ['ingressd_request_total']"),
        ("rate(ingressd_requests_total_bucket[5m])", "no metric"),
        # Labels that do not exist on the metric: in a matcher, `by`, `without`, `on`.
        ('ingressd_requests_total{host="a"}', "no label 'host'"),
        ("sum by (pod) (ingressd_connections_active)", "no label 'pod'"),
        ("sum without (path) (ingressd_requests_total)", "no label 'path'"),
        (
            "histogram_quantile(0.9, sum by (le)"
            " (rate(ingressd_request_duration_seconds_count[5m])))",
            "no label 'le'",
        ),
        (
            "ingressd_requests_total / on (secret) ingressd_request_bytes_total",
            "no label 'secret'",
        ),
        # rate() over a gauge.
        ("rate(ingressd_connections_active[$__rate_interval])", "over non-counters"),
    ],
)
def test_a_name_that_is_not_exported_is_reported(
    exported: Exported, expr: str, complaint: str
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panel = next(p for p in all_panels(dashboard["panels"]) if p.get("targets"))
    panel["targets"][0]["expr"] = expr
    errors = missing(exported, dashboard_uses(dashboard))
    # Reported, and nothing else: the rest of the dashboard is still fine.
    assert errors and all(complaint in e and "'Request rate' target A" in e for e in errors), errors


def test_every_metric_and_label_the_example_alerts_name_is_exported(exported: Exported) -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    assert (rules["apiVersion"], rules["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    monitor = find(render(MONITORING), "PodMonitor")
    assert rules["metadata"]["namespace"] == monitor["metadata"]["namespace"]
    for group in rules["spec"]["groups"]:
        for alert in group["rules"]:
            assert alert["alert"] and alert["for"], alert
            assert alert["labels"]["severity"] in ("critical", "warning", "info"), alert
            assert alert["annotations"]["summary"], alert
    needed = alert_uses(rules)
    named = {s for use in needed for s in use.samples}
    assert "ingressd_ssl_certificate_expiry_timestamp_seconds" in named
    assert missing(exported, needed) == []


def test_a_template_variable_naming_a_missing_label_is_reported(exported: Exported) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "ingress")
    variable["query"]["query"] = "label_values(ingressd_requests_total, host)"
    errors = missing(exported, dashboard_uses(dashboard))
    assert errors == ["variable 'ingress': no label 'host' on ['ingressd_requests_total']"]


def test_the_pod_monitor_keeps_ingressds_namespace_label() -> None:
    # The dashboard filters on ingressd's `namespace` label; the operator adds
    # the Pod's own `namespace` target label, which wins unless labels are honoured.
    monitor = find(render(MONITORING), "PodMonitor")
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint.get("honorLabels") is True
