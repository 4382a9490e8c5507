#!/usr/bin/env python3
"""Route-table benchmark: how build, change, lookup and memory scale with Ingresses.

For each size N a synthetic cluster is generated (N Ingresses over 50
namespaces, a Service and an EndpointSlice per Ingress, a TLS Secret for 1 in
10), loaded into ingressd's ``ObjectStore`` as the cluster source loads it, and
measured through the product's own code paths:

* full build: ``build_table`` on a snapshot (median of 3);
* one-Ingress change: ``store.put`` of the edited Ingress, ``store.snapshot()``
  and ``Controller.apply`` (what ``ClusterRunner._rebuild`` runs once the
  debouncer fires), up to the swap of the new table (median of 5);
* lookups: ``RouteTable.route_for`` and ``decide`` over a fixed request mix,
  after checking that every request in the mix resolves to the route it should;
* memory: VmRSS once the first table is live, with the store, the snapshot and
  the SSL contexts held as a serving process holds them.

Each size runs in a fresh subprocess (``--one-size N --json FILE``) so its RSS
is its own; the parent aggregates, prints a table and the targets.

    python loadtests/routes.py [--sizes 10 1000 10000] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import base64
import copy
import datetime as dt
import gc
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingressd.control.controller import Controller
from ingressd.model.objects import SERVICE_NAME_LABEL, Obj, ObjectStore, compact
from ingressd.model.table import RouteTable, VirtualHost
from ingressd.policy.tls import TLS_SECRET_TYPE, CertificateSelector, self_signed
from ingressd.proxy.settings import ProxySettings
from ingressd.proxy.state import ProxyState
from ingressd.routing.build import DEFAULT_CONTROLLER, BuildOptions, build_table
from ingressd.routing.decide import (
    Forward,
    RequestHead,
    Respond,
    decide,
    normalize_host,
    normalize_path,
)
from ingressd.sources.kube import referenced_secrets

DEFAULT_SIZES = (10, 1000, 10000)
QUICK_SIZES = (10, 1000)

# Targets, as the brief states them; they are judged at 10,000 Ingresses.
TARGET_SIZE = 10000
TARGET_LOOKUP_RATIO = 1.2
# The mix of 'the same requests at every size' is over this many Ingresses.
SAME_REQUESTS_OVER = 10
TARGET_CHANGE_MS = 100.0
TARGET_RSS_MIB = 300.0

# -- the synthetic cluster -----------------------------------------------------------------

NAMESPACES = 50
CLASS_NAME = "ingressd"
REGEX_PATH = "/v[0-9]+/items"
USE_REGEX = "nginx.ingress.kubernetes.io/use-regex"
_EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

# Different residues so the classes overlap only where 7 and 10 make them
# (regex+wildcard, regex+TLS), never wildcard+TLS: certificates are for exact names.


def is_wildcard(i: int) -> bool:
    return i % 10 == 0


def is_tls(i: int) -> bool:
    return i % 10 == 5


def is_regex(i: int) -> bool:
    return i % 7 == 3


def namespace_of(i: int) -> str:
    return f"ns-{i % NAMESPACES:02d}"


def ingress_name(i: int) -> str:
    """ "namespace/name", as routes name their Ingress."""
    return f"{namespace_of(i)}/app-{i}"


def rule_host(i: int) -> str:
    return f"*.w{i}.example.com" if is_wildcard(i) else f"app-{i}.example.com"


def expected_routes(n: int) -> int:
    """3 paths per Ingress, plus the regex path of every regex Ingress."""
    return 3 * n + sum(1 for i in range(n) if is_regex(i))


def _meta(kind_code: int, i: int, name: str, **extra: Any) -> dict[str, Any]:
    # The bookkeeping fields the API server returns (managedFields and the
    # last-applied annotation are dropped by the cluster source, so not here):
    # the store holds them, so they count in RSS.
    meta = {
        "name": name,
        "namespace": namespace_of(i),
        "uid": f"{kind_code:08x}-0000-4000-8000-{i:012x}",
        "resourceVersion": str(100_000 + i),
        "creationTimestamp": (_EPOCH + dt.timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    meta.update(extra)
    return meta


def _backend(i: int) -> dict[str, Any]:
    # A fresh dict per path, as JSON decoding gives, rather than one shared.
    return {"service": {"name": f"svc-{i}", "port": {"number": 80}}}


def make_ingress(i: int) -> Obj:
    host = rule_host(i)
    paths: list[dict[str, Any]] = [
        {"path": "/", "pathType": "Prefix", "backend": _backend(i)},
        {"path": "/api", "pathType": "Prefix", "backend": _backend(i)},
        {"path": "/healthz", "pathType": "Exact", "backend": _backend(i)},
    ]
    extra: dict[str, Any] = {"generation": 1}
    if is_regex(i):
        extra["annotations"] = {USE_REGEX: "true"}
        paths.append(
            {"path": REGEX_PATH, "pathType": "ImplementationSpecific", "backend": _backend(i)}
        )
    spec: dict[str, Any] = {
        "ingressClassName": CLASS_NAME,
        "rules": [{"host": host, "http": {"paths": paths}}],
    }
    if is_tls(i):
        spec["tls"] = [{"hosts": [host], "secretName": f"app-{i}-tls"}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": _meta(1, i, f"app-{i}", **extra),
        "spec": spec,
        "status": {"loadBalancer": {}},
    }


def _ip(prefix: int, n: int) -> str:
    return f"{prefix}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def make_service(i: int) -> Obj:
    cluster_ip = _ip(172, i)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(2, i, f"svc-{i}"),
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
            "selector": {"app": f"app-{i}"},
            "sessionAffinity": "None",
        },
        "status": {"loadBalancer": {}},
    }


def make_endpoint_slice(i: int) -> Obj:
    endpoints = [
        {
            "addresses": [_ip(10, 2 * i + k)],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "nodeName": f"node-{(i + k) % 20}",
            "targetRef": {"kind": "Pod", "namespace": namespace_of(i), "name": f"app-{i}-{k}"},
        }
        for k in range(2)
    ]
    labels = {
        SERVICE_NAME_LABEL: f"svc-{i}",
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
    }
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": _meta(3, i, f"svc-{i}-x7k2p", labels=labels),
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }


def make_tls_secret(i: int) -> Obj:
    # One certificate per Secret, naming its own host: a shared pool would not
    # cover the hosts and the builder would report every one (and fall back to
    # the default certificate). ECDSA P-256 keys take ~0.2 ms each.
    host = rule_host(i)
    cert_pem, key_pem = self_signed(common_name=host, dns_names=(host,))
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": TLS_SECRET_TYPE,
        "metadata": _meta(4, i, f"app-{i}-tls"),
        "data": {
            "tls.crt": base64.b64encode(cert_pem).decode(),
            "tls.key": base64.b64encode(key_pem).decode(),
        },
    }


def make_ingress_class() -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": CLASS_NAME},
        "spec": {"controller": DEFAULT_CONTROLLER},
    }


def generate_cluster(n: int, keep: Callable[[Obj], Obj] | None = None) -> dict[str, list[Obj]]:
    """kind -> objects, as the initial list of each kind returns them.

    ``keep``: what is kept of each object as it is made (``compact``: as the
    sources keep what they read, each object as it comes).
    """
    k = keep or (lambda obj: obj)
    return {
        "IngressClass": [k(make_ingress_class())],
        "Ingress": [k(make_ingress(i)) for i in range(n)],
        "Service": [k(make_service(i)) for i in range(n)],
        "EndpointSlice": [k(make_endpoint_slice(i)) for i in range(n)],
        "Secret": [k(make_tls_secret(i)) for i in range(n) if is_tls(i)],
    }


def load_store(objects: dict[str, list[Obj]]) -> ObjectStore:
    store = ObjectStore()
    for kind, objs in objects.items():
        store.replace_all(kind, objs)  # what KubeSource does with a LISTED event
    return store


# -- the request mix -----------------------------------------------------------------------

# (request path, path of the route that should serve it) on any of our hosts
HIT_PATHS = (
    ("/", "/"),
    ("/api/users/42", "/api"),
    ("/healthz", "/healthz"),
    ("/static/app.js", "/"),
)
MIX_WEIGHTS = {"exact": 50, "wildcard": 20, "regex": 15, "miss": 15}


@dataclass(slots=True)
class Probe:
    kind: str  # a key of MIX_WEIGHTS
    head: RequestHead
    host: str  # as route_for takes it: normalised by the product's own function
    path: str
    want: tuple[str, str] | None  # (Ingress "ns/name", route path); None: 404


def concrete_host(i: int, rng: random.Random) -> str:
    """A name the rule host of Ingress ``i`` serves."""
    host = rule_host(i)
    return f"tenant{rng.randrange(1000)}{host[1:]}" if host.startswith("*.") else host


def host_header(host: str, tls: bool, rng: random.Random) -> str:
    # Some Host headers carry a port or capitals, as clients send them, so that
    # decide's normalisation is part of what is measured.
    roll = rng.random()
    if roll < 0.2:
        return f"{host}:{443 if tls else 80}"
    if roll < 0.3:
        return host.upper()
    return host


def make_probe(
    kind: str, host: str, path: str, want: tuple[str, str] | None, tls: bool, rng: random.Random
) -> Probe:
    query = "page=2" if rng.random() < 0.25 else ""
    head = RequestHead("GET", host_header(host, tls, rng), path, query, "10.1.2.3", tls)
    return Probe(kind, head, normalize_host(head.host), normalize_path(head.path), want)


def build_mix(n: int, count: int, seed: int = 1, spread: int | None = None) -> list[Probe]:
    """``count`` requests: the same mix of kinds at every size, over the whole
    table, or over its first ``spread`` Ingresses only (the same requests at
    every size, so that only the table's size differs)."""
    rng = random.Random(seed)
    over = min(n, spread or n)
    ids = {
        "exact": [i for i in range(over) if not is_wildcard(i)],
        "wildcard": [i for i in range(over) if is_wildcard(i)],
        "regex": [i for i in range(over) if is_regex(i)],
    }
    kinds = rng.choices(list(MIX_WEIGHTS), weights=list(MIX_WEIGHTS.values()), k=count)
    probes = []
    for kind in kinds:
        if kind == "miss":
            probes.append(miss_probe(over, rng))
            continue
        i = rng.choice(ids[kind])
        if kind == "regex":
            path, route_path = f"/v{rng.randint(1, 9)}/items/{rng.randrange(1000)}", REGEX_PATH
        else:
            path, route_path = rng.choice(HIT_PATHS)
        want = (ingress_name(i), route_path)
        probes.append(make_probe(kind, concrete_host(i, rng), path, want, is_tls(i), rng))
    return probes


def miss_probe(n: int, rng: random.Random) -> Probe:
    """A host nothing serves: unknown, one label under an exact host, two under a wildcard."""
    i = rng.randrange(n)
    host = rng.choice(
        (
            f"unknown-{rng.randrange(10**6)}.example.org",
            f"x.app-{i}.example.com",  # probes the wildcard map with an exact host's name
            f"a.b.w{i - i % 10}.example.com",  # a wildcard covers one label only
        )
    )
    return make_probe("miss", host, "/", None, False, rng)


def resolved(route: Any) -> tuple[str, str] | None:
    return None if route is None else (route.ingress, route.path)


def check_mix(table: RouteTable, probes: Sequence[Probe]) -> list[str]:
    """Every request must reach its route through both route_for and decide."""
    errors = []
    for p in probes:
        got = resolved(table.route_for(p.host, p.path))
        if got != p.want:
            errors.append(f"route_for({p.host!r}, {p.path!r}) -> {got}, want {p.want}")
        action = decide(table, p.head)
        if p.want is None:
            ok = isinstance(action, Respond) and action.status == 404
        else:
            ok = isinstance(action, Forward) and resolved(action.route) == p.want
        if not ok:
            errors.append(f"decide({p.head}) -> {summary(action)}, want {p.want or 404}")
    return errors


def summary(action: Forward | Respond) -> str:
    # The whole Forward repr runs to kilobytes; the route is what the check is about.
    if isinstance(action, Forward):
        return f"Forward to {resolved(action.route)}"
    return f"Respond {action.status} {action.body.strip()!r}"


# -- measuring -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Iterations:
    build: int
    change: int
    lookups: int  # per batch
    batches: int
    probes: int = 1000


FULL = Iterations(build=3, change=5, lookups=200_000, batches=5)
QUICK = Iterations(build=1, change=2, lookups=20_000, batches=3)


def rss_mib(field_name: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def elapsed_ms(start_ns: int) -> float:
    return (time.perf_counter_ns() - start_ns) / 1e6


def vhosts(table: RouteTable) -> list[VirtualHost]:
    found = [*table.exact_hosts.values(), *table.wildcard_hosts.values()]
    return [*found, table.catch_all] if table.catch_all is not None else found


def count_routes(table: RouteTable) -> int:
    return sum(len(v.exact) + len(v.prefix) + len(v.regex) for v in vhosts(table))


def make_controller() -> Controller:
    # As app.serve wires it: a selector, so apply also prepares SSL contexts.
    state = ProxyState(RouteTable(), ProxySettings())
    selector = CertificateSelector(lambda: state.table, self_signed())
    return Controller(state, selector, BuildOptions())


def time_builds(store: ObjectStore, options: BuildOptions, repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        snapshot = store.snapshot()
        start = time.perf_counter_ns()
        build_table(snapshot, options)
        samples.append(elapsed_ms(start))
    return samples


def lookup_ns(run: Callable[[], None], lookups: int, batches: int) -> list[float]:
    run()  # warm-up: first-touch costs are not lookup costs
    samples = []
    for _ in range(batches):
        start = time.perf_counter_ns()
        run()
        samples.append((time.perf_counter_ns() - start) / lookups)
    return samples


def route_for_run(table: RouteTable, probes: Sequence[Probe], lookups: int) -> Callable[[], None]:
    pairs = [(p.host, p.path) for p in probes] * (lookups // len(probes))
    route_for = table.route_for

    def run() -> None:
        for host, path in pairs:
            route_for(host, path)

    return run


def decide_run(table: RouteTable, probes: Sequence[Probe], lookups: int) -> Callable[[], None]:
    heads = [p.head for p in probes] * (lookups // len(probes))

    def run() -> None:
        for head in heads:
            decide(table, head)

    return run


def change_target(n: int) -> int:
    """An ordinary Ingress mid-table: exact host, no regex."""
    i = n // 2
    while is_wildcard(i) or is_regex(i):
        i += 1
    return i % n


def edited(original: Obj, k: int) -> Obj:
    """``original`` with one more path, as a watch MODIFIED event delivers it."""
    obj = copy.deepcopy(original)
    meta = obj["metadata"]
    meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1_000_000 + k)
    meta["generation"] += k + 1
    paths = obj["spec"]["rules"][0]["http"]["paths"]
    backend = copy.deepcopy(paths[0]["backend"])
    paths.append({"path": f"/added-{k}", "pathType": "Prefix", "backend": backend})
    return obj


@dataclass(slots=True)
class ChangeTimes:
    put_snapshot_ms: list[float] = field(default_factory=list)
    apply_ms: list[float] = field(default_factory=list)  # build + TLS + swap
    total_ms: list[float] = field(default_factory=list)  # event in -> new table live
    secrets_wanted_ms: list[float] = field(default_factory=list)  # after the swap


def time_changes(store: ObjectStore, controller: Controller, n: int, repeats: int) -> ChangeTimes:
    """Apply ``repeats`` one-Ingress edits the way ClusterRunner does; check each took."""
    i = change_target(n)
    original = store.snapshot().get("Ingress", namespace_of(i), f"app-{i}")
    assert original is not None
    times = ChangeTimes()
    for k in range(repeats):
        obj = edited(original, k)
        start = time.perf_counter_ns()
        assert store.put(obj)  # KubeSource._apply on MODIFIED
        snapshot = store.snapshot()  # ClusterRunner._rebuild, once debounced
        mid = time.perf_counter_ns()
        table = controller.apply(snapshot)
        end = time.perf_counter_ns()
        referenced_secrets(snapshot)  # the rest of _rebuild: secrets.wanted
        times.put_snapshot_ms.append((mid - start) / 1e6)
        times.apply_ms.append((end - mid) / 1e6)
        times.total_ms.append((end - start) / 1e6)
        times.secrets_wanted_ms.append(elapsed_ms(end))
        got = resolved(table.route_for(rule_host(i), f"/added-{k}/x"))
        if got != (ingress_name(i), f"/added-{k}"):
            fail(f"change {k}: /added-{k}/x on {rule_host(i)} resolves to {got}")
    return times


def fail(message: str) -> None:
    print(f"routes.py: {message}", file=sys.stderr)
    raise SystemExit(1)


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def run_one_size(n: int, it: Iterations) -> dict[str, Any]:
    """Everything for one size, in this (fresh) process."""
    baseline_mib = rss_mib()
    start = time.perf_counter_ns()
    # Each object's strings shared with the others' as it is made, as the
    # cluster source's trimmed() does with each object it reads.
    objects = generate_cluster(n, keep=compact)
    generate_ms = elapsed_ms(start)
    store = load_store(objects)
    counts = {kind: len(objs) for kind, objs in objects.items()}
    del objects  # the store holds the objects now, as in the product
    controller = make_controller()
    start = time.perf_counter_ns()
    table = controller.apply(store.snapshot())  # first table; creates the SSL contexts
    cold_apply_ms = elapsed_ms(start)
    gc.collect()  # leftovers of generation (certificate objects) are not held by the product
    rss = rss_mib()
    progress(f"N={n}: generated in {generate_ms:.0f} ms, first apply {cold_apply_ms:.0f} ms")

    routes, want_routes = count_routes(table), expected_routes(n)
    if table.problems or routes != want_routes:
        shown = "; ".join(str(p) for p in table.problems[:5])
        fail(f"N={n}: {routes} routes (want {want_routes}), problems: {shown or 'none'}")
    probes = build_mix(n, it.probes)
    errors = check_mix(table, probes)
    if errors:
        fail(
            f"N={n}: {len(errors)} of {len(probes)} requests misrouted:\n" + "\n".join(errors[:10])
        )

    builds = time_builds(store, controller.options, it.build)
    progress(f"N={n}: build {median(builds):.1f} ms")
    route_for_samples = lookup_ns(route_for_run(table, probes, it.lookups), it.lookups, it.batches)
    decide_samples = lookup_ns(decide_run(table, probes, it.lookups), it.lookups, it.batches)
    # The same requests at every size: the table's size alone. Requests spread
    # over a larger table also touch more memory, so they miss the CPU caches more.
    same = build_mix(n, it.probes, spread=SAME_REQUESTS_OVER)
    if errors := check_mix(table, same):
        fail(f"N={n}: {len(errors)} requests misrouted:\n" + "\n".join(errors[:10]))
    same_samples = lookup_ns(decide_run(table, same, it.lookups), it.lookups, it.batches)
    progress(
        f"N={n}: lookups {median(decide_samples):.0f} ns (decide), "
        f"{median(same_samples):.0f} ns (the same requests at every size)"
    )
    changes = time_changes(store, controller, n, it.change)
    progress(f"N={n}: change {median(changes.total_ms):.1f} ms")

    kinds = Counter(p.kind for p in probes)
    return {
        "ingresses": n,
        "namespaces": len({namespace_of(i) for i in range(n)}),
        "services": counts["Service"],
        "endpoint_slices": counts["EndpointSlice"],
        "tls_secrets": counts["Secret"],
        "routes": routes,
        "expected_routes": want_routes,
        "problems": len(table.problems),
        "exact_hosts": len(table.exact_hosts),
        "wildcard_hosts": len(table.wildcard_hosts),
        "certificates": len(table.certificates),
        "generate_ms": generate_ms,
        "cold_apply_ms": cold_apply_ms,
        "build_ms": median(builds),
        "build_ms_samples": builds,
        "change_apply_ms": median(changes.total_ms),
        "change_apply_ms_samples": changes.total_ms,
        "change_breakdown_ms": {
            "put_and_snapshot": median(changes.put_snapshot_ms),
            "controller_apply": median(changes.apply_ms),
            "secrets_wanted_after_swap": median(changes.secrets_wanted_ms),
        },
        "route_for_ns": median(route_for_samples),
        "route_for_ns_samples": route_for_samples,
        "decide_ns": median(decide_samples),
        "decide_ns_samples": decide_samples,
        "same_ns": median(same_samples),
        "same_ns_samples": same_samples,
        "lookups_per_batch": len(probes) * (it.lookups // len(probes)),
        "batches": it.batches,
        "mix": {
            "probes": len(probes),
            "checked": len(probes),
            "mismatches": len(errors),
            "by_kind": dict(sorted(kinds.items())),
            "routed": sum(1 for p in probes if p.want is not None),
            "not_found": sum(1 for p in probes if p.want is None),
        },
        "rss_mib": rss,
        "rss_baseline_mib": baseline_mib,
        "peak_rss_mib": rss_mib("VmHWM"),
    }


# -- the parent: one subprocess per size, then the report ---------------------------------


def run_size_subprocess(n: int, quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="routes-bench-") as tmp:
        out = Path(tmp) / f"size-{n}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one-size", str(n)]
        cmd += ["--json", str(out), *(["--quick"] if quick else [])]
        print(f"size {n}: running in a fresh process", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, check=False)  # its stderr (progress, failures) passes through
        if proc.returncode != 0:
            fail(f"size {n} failed (exit {proc.returncode})")
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def add_ratios(results: list[dict[str, Any]]) -> int:
    """Lookup time relative to the 10-Ingress table (else the smallest); returns that size."""
    base = next(
        (r for r in results if r["ingresses"] == 10), min(results, key=lambda r: r["ingresses"])
    )
    for r in results:
        r["route_for_ratio"] = r["route_for_ns"] / base["route_for_ns"]
        r["decide_ratio"] = r["decide_ns"] / base["decide_ns"]
        r["same_ratio"] = r["same_ns"] / base["same_ns"]
        # The fastest batch is the least disturbed by other load on the machine:
        # a second opinion on the ratios when the medians are noisy.
        for name in ("route_for", "decide", "same"):
            best = min(r[f"{name}_ns_samples"]) / min(base[f"{name}_ns_samples"])
            r[f"{name}_ratio_best"] = best
    return int(base["ingresses"])


def targets(results: list[dict[str, Any]], base_size: int) -> list[dict[str, Any]]:
    at = next((r for r in results if r["ingresses"] == TARGET_SIZE), results[-1])
    size = at["ingresses"]
    checks = [
        (
            "lookup ratio (decide, same requests)",
            at["same_ratio"],
            TARGET_LOOKUP_RATIO,
            f"x vs {base_size}",
        ),
        ("lookup ratio (decide)", at["decide_ratio"], TARGET_LOOKUP_RATIO, f"x vs {base_size}"),
        (
            "lookup ratio (route_for)",
            at["route_for_ratio"],
            TARGET_LOOKUP_RATIO,
            f"x vs {base_size}",
        ),
        ("one-Ingress change applied", at["change_apply_ms"], TARGET_CHANGE_MS, "ms"),
        ("RSS with table live", at["rss_mib"], TARGET_RSS_MIB, "MiB"),
    ]
    return [
        {
            "name": name,
            "ingresses": size,
            "value": value,
            "limit": limit,
            "unit": unit,
            "pass": value <= limit,
        }
        for name, value, limit, unit in checks
    ]


COLUMNS = (
    ("ingresses", "ingresses", "{:d}"),
    ("routes", "routes", "{:d}"),
    ("build ms", "build_ms", "{:.1f}"),
    ("change ms", "change_apply_ms", "{:.1f}"),
    ("route_for ns", "route_for_ns", "{:.0f}"),
    ("ratio", "route_for_ratio", "{:.2f}"),
    ("decide ns", "decide_ns", "{:.0f}"),
    ("ratio", "decide_ratio", "{:.2f}"),
    ("same ns", "same_ns", "{:.0f}"),
    ("ratio", "same_ratio", "{:.2f}"),
    ("RSS MiB", "rss_mib", "{:.1f}"),
)


def print_report(results: list[dict[str, Any]], checks: list[dict[str, Any]], base: int) -> None:
    widths = [max(len(title), 9) for title, _, _ in COLUMNS]
    print("  ".join(title.rjust(w) for (title, _, _), w in zip(COLUMNS, widths, strict=True)))
    for r in results:
        cells = [fmt.format(r[key]) for _, key, fmt in COLUMNS]
        print("  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
    print(
        f"(ratios: lookup time / lookup time at {base} Ingresses; lookups: median of batches; "
        f"route_for and decide: requests over the whole table; same: decide with the same "
        f"requests, over {SAME_REQUESTS_OVER} Ingresses, at every size)"
    )
    print()
    print("details")
    for r in results:
        b = r["change_breakdown_ms"]
        print(
            f"  N={r['ingresses']}: {r['services']} Services, "
            f"{r['endpoint_slices']} EndpointSlices, "
            f"{r['tls_secrets']} TLS Secrets, {r['certificates']} certificates, "
            f"{r['problems']} problems; hosts {r['exact_hosts']} exact + "
            f"{r['wildcard_hosts']} wildcard"
        )
        print(
            f"    first apply {r['cold_apply_ms']:.0f} ms (build + SSL contexts); change = "
            f"put+snapshot {b['put_and_snapshot']:.1f} + Controller.apply "
            f"{b['controller_apply']:.1f} ms (then secrets.wanted "
            f"{b['secrets_wanted_after_swap']:.1f} ms after the swap)"
        )
        print(
            f"    build samples {_samples(r['build_ms_samples'])} ms; change samples "
            f"{_samples(r['change_apply_ms_samples'])} ms"
        )
        print(
            f"    lookup samples ns: route_for {_samples(r['route_for_ns_samples'], 0)}, "
            f"decide {_samples(r['decide_ns_samples'], 0)}; ratios of the fastest batches: "
            f"route_for {r['route_for_ratio_best']:.2f}, decide {r['decide_ratio_best']:.2f}, "
            f"same {r['same_ratio_best']:.2f}"
        )
        print(
            f"    RSS baseline {r['rss_baseline_mib']:.1f} MiB (imports), with table "
            f"{r['rss_mib']:.1f} MiB, peak {r['peak_rss_mib']:.1f} MiB; "
            f"mix {r['mix']['by_kind']}, {r['lookups_per_batch']} lookups x {r['batches']}"
        )
    print()
    print("targets")
    for c in checks:
        note = "" if c["ingresses"] == TARGET_SIZE else f" (target is set at {TARGET_SIZE})"
        print(
            f"  {'PASS' if c['pass'] else 'FAIL'}  {c['name']} at {c['ingresses']}: "
            f"{c['value']:.2f} {c['unit']} (limit {c['limit']:g}){note}"
        )


def _samples(values: Sequence[float], digits: int = 1) -> str:
    return "[" + ", ".join(f"{v:.{digits}f}" for v in values) + "]"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", help=f"default {DEFAULT_SIZES}")
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}, few iterations")
    parser.add_argument("--json", metavar="FILE", help="write the numbers here")
    parser.add_argument("--one-size", type=int, metavar="N", help=argparse.SUPPRESS)  # internal
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    iterations = QUICK if args.quick else FULL
    if args.one_size is not None:
        if not args.json:
            fail("--one-size needs --json FILE")
        result = run_one_size(args.one_size, iterations)
        Path(args.json).write_text(json.dumps(result, indent=2))
        return 0
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    results = [run_size_subprocess(n, args.quick) for n in sizes]
    base = add_ratios(results)
    checks = targets(results, base)
    print_report(results, checks, base)
    if args.json:
        report = {"quick": args.quick, "sizes": list(sizes), "results": results, "targets": checks}
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
