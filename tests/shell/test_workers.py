"""--workers: the default count, and the deltas the source process sends."""

from __future__ import annotations

from pathlib import Path

from k8s_objects import ingress, path, rule, service

from ingressd.model.objects import ObjectStore
from ingressd.workers import cgroup_cpu_limit, diff


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
