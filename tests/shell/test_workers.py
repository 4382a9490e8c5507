"""--workers: the default count, and the deltas the source process sends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from k8s_objects import endpoint_slice, ingress, path, rule, service

from ingressd.model.objects import Obj, ObjectStore
from ingressd.model.table import RouteTable
from ingressd.routing.build import build_table
from ingressd.workers import (
    UNREAD_ENDPOINT,
    UNREAD_METADATA,
    UNREAD_SERVICE_SPEC,
    cgroup_cpu_limit,
    diff,
    for_worker,
)


def write(root: Path, name: str, text: str) -> None:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text)


def test_cgroup_limits(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(str(tmp_path)) is None  # no cgroup files: no limit
    write(tmp_path, "cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(str(tmp_path)) is None
    write(tmp_path, "cpu.max", "250000 100000\n")
    assert cgroup_cpu_limit(str(tmp_path)) == 2.5
    v1 = tmp_path / "v1"
    write(v1, "cpu/cpu.cfs_quota_us", "-1\n")
    write(v1, "cpu/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_limit(str(v1)) is None
    write(v1, "cpu/cpu.cfs_quota_us", "50000\n")
    assert cgroup_cpu_limit(str(v1)) == 0.5


def test_diff_sends_only_what_changed() -> None:
    store = ObjectStore()
    web, api = service("web"), service("api")
    ing = ingress("web", [rule("web.test", path("/", "web"))])
    for obj in (web, api, ing):
        store.put(obj, "all.yaml")
    first = store.snapshot()
    puts, deletes = diff(None, first)
    assert sorted(o["metadata"]["name"] for o, _ in puts) == ["api", "web", "web"]
    assert {origin for _, origin in puts} == {"all.yaml"}
    assert deletes == []
    # An equal object put again (a re-read file) is not sent; a changed one and a deletion are.
    store.put(service("web"))
    store.put(ingress("web", [rule("web.test", path("/v2", "web"))]))
    store.delete("Service", "default", "api")
    second = store.snapshot()
    puts, deletes = diff(first, second)
    assert [(o["kind"], o["metadata"]["name"]) for o, _ in puts] == [("Ingress", "web")]
    assert deletes == [("Service", "default", "api")]
    assert diff(second, second) == ([], [])


# -- what workers are sent ------------------------------------------------------------------


def _cluster() -> list[Obj]:
    """The route benchmark's cluster (status, uids, targetRefs, selectors included),
    and the Service shapes whose fields the builder reads (named ports,
    ExternalName, service-upstream, an endpoint not ready)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "loadtests"))
    import routes

    objs = [o for kind in routes.generate_cluster(40).values() for o in kind]
    named = service("named", [("web", 8080)])
    named["spec"].update(clusterIP="10.96.0.5", clusterIPs=["10.96.0.5"], selector={"app": "named"})
    named["status"] = {"loadBalancer": {}}
    named["metadata"]["labels"] = {"app.kubernetes.io/name": "named"}
    named["metadata"]["annotations"] = {"meta.helm.sh/release-name": "named"}
    external = service("ext", [80], external_name="up.example.")
    eps = endpoint_slice("named", ["10.9.0.1", ("10.9.0.2", False)], 9090, port_name="web")
    for ep in eps["endpoints"]:
        ep["targetRef"] = {"kind": "Pod", "name": "p"}
        ep["nodeName"] = "node-1"
    upstream = {"nginx.ingress.kubernetes.io/service-upstream": "true"}
    objs += [
        named,
        external,
        eps,
        ingress("named", [rule("named.test", path("/", "named", "web"))]),
        ingress("ext", [rule("ext.test", path("/", "ext", 80))]),
        ingress("up", [rule("up.test", path("/", "named", "web"))], annotations=upstream),
    ]
    return objs


def _described(table: RouteTable, hosts: list[str]) -> list[Any]:
    out: list[Any] = []
    for host in hosts:
        for p in ("/", "/api/x", "/healthz", "/v1/items", "/nothing"):
            r = table.route_for(host, p)
            if r is None:
                out.append(None)
                continue
            b = r.backend
            out.append((r.ingress, r.path, r.path_type, b.name, b.endpoints, b.error, r.policy))
    certs = {h: (c.secret, c.dns_names) for h, c in table.certificates.items()}
    return [out, certs, [str(p) for p in table.problems], table.ingresses]


def test_workers_are_sent_objects_without_what_they_do_not_read() -> None:
    import pickle

    objs = _cluster()
    store = ObjectStore()
    for obj in objs:
        store.put(obj)
    full = store.snapshot()
    puts, _ = diff(None, full)
    sent = [for_worker(obj) for obj, _ in puts]
    for obj in sent:
        assert "status" not in obj
        assert UNREAD_METADATA.isdisjoint(obj["metadata"])
        if obj["kind"] not in ("Ingress", "IngressClass"):
            assert "annotations" not in obj["metadata"]
        if obj["kind"] != "EndpointSlice":
            assert "labels" not in obj["metadata"]
        if obj["kind"] == "EndpointSlice":
            assert all(UNREAD_ENDPOINT.isdisjoint(ep) for ep in obj["endpoints"])
        if obj["kind"] == "Service":
            assert UNREAD_SERVICE_SPEC.isdisjoint(obj["spec"])
    # The source process's objects are left whole (it writes Ingress status back).
    held = full.get("Ingress", "ns-01", "app-1")
    assert held is not None and "status" in held and "uid" in held["metadata"]
    assert len(pickle.dumps(sent)) < 0.8 * len(pickle.dumps([o for o, _ in puts]))
    # And a worker builds the very table the source process builds.
    worker = ObjectStore()
    for obj in sent:
        worker.put(obj)
    hosts = sorted({r["host"] for o in objs if o["kind"] == "Ingress" for r in o["spec"]["rules"]})
    hosts = [h.replace("*", "x") for h in hosts]
    want = _described(build_table(full), hosts)
    assert _described(build_table(worker.snapshot()), hosts) == want
    routed = [r for r in want[0] if r is not None]
    assert len(routed) > 100 and want[1]  # routes and certificates to compare
    by_ingress = {r[0]: r for r in routed}
    assert [str(e) for e in by_ingress["default/named"][4]] == ["10.9.0.1:9090"]
    assert [str(e) for e in by_ingress["default/up"][4]] == ["10.96.0.5:8080"]
    assert [str(e) for e in by_ingress["default/ext"][4]] == ["up.example:80"]
