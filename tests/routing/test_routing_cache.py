"""The per-table routing cache and the per-route constants never change an answer.

``decide`` keeps what routing found for a (Host header, path) pair in the
table's cache (``decide.routing``, ``model/cache.py``) and skips the feature
checks of routes built as ``plain``. Both are checked here against decide
without them: over the 67 real-world Ingresses in tests/data/realworld (each on
its own and all in one table) with many variants of each host and path, and
over the routing tests themselves, run with every decide answered from a warm
cache (``tests/routing_cache_shadow.py``).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import random
import re
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import REPO_ROOT
from k8s_objects import build, endpoint_slice, ingress, path, request, rule, service, tls_secret

from ingressd.model.cache import CAPACITY, DOORKEEPER_SLOTS
from ingressd.model.objects import Obj
from ingressd.model.table import Route, RouteTable
from ingressd.routing.decide import (
    MAX_CACHED_KEY,
    Action,
    Forward,
    RequestHead,
    decide,
    routing,
)
from ingressd.sources.manifests import load_file

REALWORLD = REPO_ROOT / "tests" / "data" / "realworld" / "manifests"
LEGACY_CLASS = "kubernetes.io/ingress.class"


# -- the real-world Ingresses, made ours, with their Services, endpoints and Secrets ---------


def realworld_files() -> list[Path]:
    files = sorted(REALWORLD.glob("*.yaml"))
    if len(files) != 67:
        pytest.fail(f"expected the 67 real-world manifests in {REALWORLD}, found {len(files)}")
    return files


def backing(ingresses: list[Obj]) -> list[Obj]:
    """Services (two ready endpoints each, so round robin shows) and TLS Secrets for
    everything ``ingresses`` name."""
    ports: dict[tuple[str, str], set[int | str]] = {}
    secrets: dict[tuple[str, str], list[str]] = {}
    for ing in ingresses:
        ns = ing["metadata"].get("namespace") or "default"
        spec = ing.get("spec") or {}
        backends = [spec.get("defaultBackend") or {}]
        for r in spec.get("rules") or []:
            backends += [p.get("backend") or {} for p in (r.get("http") or {}).get("paths") or []]
        for b in backends:
            svc = b.get("service") or {}
            if svc.get("name"):
                port = svc.get("port") or {}
                ports.setdefault((ns, svc["name"]), set()).add(
                    port.get("number") or port.get("name") or 80
                )
        for t in spec.get("tls") or []:
            if t.get("secretName"):
                secrets.setdefault((ns, t["secretName"]), []).extend(t.get("hosts") or [])
    objs: list[Obj] = []
    for n, ((ns, name), refs) in enumerate(sorted(ports.items(), key=str)):
        numbered = [p for p in refs if isinstance(p, int)]
        named = [p for p in refs if isinstance(p, str)]
        spec_ports: list[Any] = [*numbered, *((p, 8000 + i) for i, p in enumerate(named))]
        objs.append(service(name, spec_ports, namespace=ns))
        addresses = [f"10.{n // 250}.{n % 250}.1", f"10.{n // 250}.{n % 250}.2"]
        for p in numbered:
            objs.append(endpoint_slice(name, addresses, 8080, namespace=ns, name=f"{name}-{p}"))
        for p in named:
            objs.append(endpoint_slice(name, addresses, 9090, port_name=p, namespace=ns))
    for (ns, name), hosts in sorted(secrets.items()):
        names = [h for h in dict.fromkeys(hosts) if re.fullmatch(r"[a-z0-9*.-]+", h)]
        if names and name != "__INGRESS_SECRET__":  # left missing, as its source has it
            objs.append(tls_secret(name, names, namespace=ns))
    return objs


def made_ours(ing: Obj) -> Obj:
    ing = {**ing, "metadata": dict(ing["metadata"]), "spec": dict(ing.get("spec") or {})}
    annotations = dict(ing["metadata"].get("annotations") or {})
    annotations.pop(LEGACY_CLASS, None)
    ing["metadata"]["annotations"] = annotations
    ing["spec"]["ingressClassName"] = "ingressd"
    return ing


def realworld_ingresses() -> dict[str, list[Obj]]:
    out = {}
    for f in realworld_files():
        objs, _ = load_file(f)
        out[f.name] = [made_ours(o) for o in objs if o.get("kind") == "Ingress"]
    return out


# -- requests -------------------------------------------------------------------------


def hosts_of(table: RouteTable) -> list[str]:
    names = [*table.exact_hosts, *("*." + s for s in table.wildcard_hosts), *table.www_redirects]
    out = ["", "unknown.test", "127.0.0.1", "[::1]:8443"]
    for h in names:
        if h.startswith("*."):
            h = "one." + h[2:]
        out += [h, h.upper(), h + ":8080", h + ".", "x." + h]
    return list(dict.fromkeys(out))


def paths_of(table: RouteTable) -> list[str]:
    found = {"/"}
    for route in routes_of(table):
        found.add(route.path)
        # a regex's literal text, for something it may match
        found.add(re.sub(r"[\\^$()\[\]{}*+?|.]", "", route.path) or "/")
    out = ["/", "//", "/..", "/%41", "/%zz", "/a/./b/../c", "/" + "x" * (MAX_CACHED_KEY + 1)]
    for p in sorted(found):
        if not p.startswith("/"):
            p = "/" + p
        stem = p.rstrip("/")
        out += [p, stem or "/", stem + "/", stem + "/sub/item", p.upper(), stem + "%2Fx"]
        out += [stem + "/./x/../y", "/" + p, stem + "x", stem + "/%7e"]
    return list(dict.fromkeys(out))


def variants(host: str, path: str, n: int) -> RequestHead:
    """One of several request shapes around ``host`` and ``path``, by ``n``."""
    kind = n % 5
    head = request(host, path, "q=1" if n % 2 else "", tls=kind in (1, 2))
    if kind == 1:
        head.tls_names = ()
    elif kind == 2:
        head.tls_names = ("other.test",)
    elif kind == 3:
        head.method = "OPTIONS"
        head.origin = "https://app.example.com"
    elif kind == 4:
        head.headers = [
            (b"Cookie", b"canary=always; canary-session=always; route=x"),
            (b"X-Canary", b"always"),
            (b"Authorization", b"Basic Zm9vOmJhcg=="),
        ]
    return head


# -- tables ---------------------------------------------------------------------------


def routes_of(table: RouteTable) -> Iterator[Route]:
    vhosts = [*table.exact_hosts.values(), *table.wildcard_hosts.values()]
    if table.catch_all is not None:
        vhosts.append(table.catch_all)
    for v in vhosts:
        yield from v.exact.values()
        yield from v.prefix.values()
        yield from v.static.values()
        yield from v.regex
        if v.default is not None:
            yield v.default
    if table.default is not None:
        yield table.default


def twins(objs: list[Obj], count: int) -> list[RouteTable]:
    """``count`` tables built alike: each with its own backends, whose round-robin
    cursors then move in step when each is asked the same requests."""
    return [build(*objs, now=time.time()) for _ in range(count)]


def described(action: Action) -> tuple[Any, ...]:
    if isinstance(action, Forward):
        r = action.route
        return (
            "forward",
            str(action.endpoint),
            action.backend.name,
            action.target,
            (r.ingress, r.path, r.path_type),
            action.request_headers,
            action.response_headers,
            None if action.tls is None else action.tls.key,
        )
    route = None if action.route is None else (action.route.ingress, action.route.path)
    return ("respond", action.status, action.body, action.location, action.headers, route)


def compare(tables: list[RouteTable], heads: list[RequestHead], repeat: int = 3) -> int:
    """Ask every table each request ``repeat`` times (a miss, a miss that stores, a
    hit); every answer must be the first table's. Returns the requests asked."""
    asked = 0
    for n, head in enumerate(heads):
        for k in range(repeat):
            answers = []
            for table in tables:
                random.seed(n * 10 + k)  # canary weights draw the same for each
                answers.append(described(decide(table, head)))
            assert all(a == answers[0] for a in answers), (head, answers)
            asked += 1
    return asked


def uncached(table: RouteTable) -> RouteTable:
    table.routing_cache.capacity = 0
    return table


def not_plain(table: RouteTable) -> RouteTable:
    """Every route of ``table`` taken through decide's full checks."""
    for route in routes_of(table):
        object.__setattr__(route, "plain", False)
    return table


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    # session-cookie-expires: the same Expires from each twin
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)


@pytest.fixture(scope="module")
def ingresses() -> dict[str, list[Obj]]:
    return realworld_ingresses()


def check_objects(objs: list[Obj]) -> tuple[int, RouteTable]:
    cached, cold, full = twins(objs, 3)
    uncached(cold)
    not_plain(full)
    heads = [
        variants(h, p, n)
        for n, (h, p) in enumerate(itertools.product(hosts_of(cached), paths_of(cached)))
    ]
    return compare([cold, cached, full], heads), cached


def test_realworld_ingresses_each_on_its_own(ingresses: dict[str, list[Obj]]) -> None:
    asked = 0
    for name, ings in ingresses.items():
        n, table = check_objects([*ings, *backing(ings)])
        asked += n
        assert len(table.routing_cache) > 0, name  # the cache was used
    assert asked > 10_000


def test_realworld_ingresses_all_in_one_table(ingresses: dict[str, list[Obj]]) -> None:
    every = [ing for ings in ingresses.values() for ing in ings]
    asked, table = check_objects([*every, *backing(every)])
    assert asked > 50_000
    assert 0 < len(table.routing_cache) <= CAPACITY


def test_the_routing_tests_pass_with_every_decide_from_a_warm_cache() -> None:
    """The routing test corpus, run again with each decide answered from the cache."""
    corpus = [
        "tests/routing/test_decide.py",
        "tests/routing/test_decide_order.py",
        "tests/routing/test_canary_affinity.py",
        "tests/routing/test_routing_match.py",
        "tests/routing/test_routing_locations.py",
        "tests/model/test_regex_linear.py",
        "tests/policy/test_access_fail_closed.py",
        "tests/policy/test_basic_auth.py",
        "tests/policy/test_upstream_tls.py",
        "tests/policy/test_ewma.py",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "tests")}
    args = ["-q", "-p", "no:cacheprovider", "-p", "routing_cache_shadow", *corpus]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    found = re.search(r"routing cache shadow: (\d+) decide calls, (\d+) answered", result.stdout)
    assert found, result.stdout[-2000:]
    calls, cached = int(found[1]), int(found[2])
    assert calls > 300 and cached > 0.9 * calls, (calls, cached)


# -- what is cached, and what is not --------------------------------------------------


def web_table() -> RouteTable:
    return build(
        ingress("web", [rule("a.example", path("/", "web"))]),
        service("web"),
        endpoint_slice("web", ["10.0.0.1"]),
    )


def test_an_answer_is_stored_on_its_second_ask_and_reused() -> None:
    table = web_table()
    first = routing(table, "A.example:80", "/x")
    assert len(table.routing_cache) == 0
    second = routing(table, "A.example:80", "/x")
    assert second == first and len(table.routing_cache) == 1
    third = routing(table, "A.example:80", "/x")
    assert third == second and third[2] is second[2]  # the same route object


def test_long_keys_are_never_stored() -> None:
    table = web_table()
    long_path = "/" + "a" * MAX_CACHED_KEY
    for _ in range(3):
        assert routing(table, "a.example", long_path)[2] is not None
    assert len(table.routing_cache) == 0
    assert set(table.routing_cache._seen) == {-1}  # not even remembered


def test_random_paths_leave_the_cache_empty_and_bounded() -> None:
    table = web_table()
    rng = random.Random(5)
    for _ in range(3 * CAPACITY):
        fwd = decide(table, request("a.example", f"/{rng.getrandbits(64):x}"))
        assert isinstance(fwd, Forward)
    assert len(table.routing_cache) == 0
    assert len(table.routing_cache._seen) == CAPACITY * DOORKEEPER_SLOTS


def test_a_full_cache_of_the_longest_keys_stays_small() -> None:
    table = web_table()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for n in range(2 * CAPACITY):
            host = f"h{n}.a.example"
            long_path = f"/{n}/".ljust(MAX_CACHED_KEY - len(host), "x")
            for _ in range(2):
                routing(table, host, long_path)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert len(table.routing_cache) == CAPACITY
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown < 3 * 1024 * 1024, grown  # about 1 KB per entry at most


def test_every_table_starts_with_an_empty_cache_of_its_own() -> None:
    table = web_table()
    for _ in range(2):
        routing(table, "a.example", "/")
    assert len(table.routing_cache) == 1
    again = dataclasses.replace(table, generation=table.generation + 1)
    assert again.routing_cache is not table.routing_cache
    assert len(again.routing_cache) == 0
    assert dataclasses.replace(table) == table  # the cache is not part of what a table is


def test_plain_routes_are_the_ones_without_features() -> None:
    plain = {r.ingress: r.plain for r in routes_of(web_table())}
    assert plain == {"default/web": True}
    annotated = build(
        ingress(
            "web",
            [rule("a.example", path("/", "web"))],
            annotations={"nginx.ingress.kubernetes.io/upstream-vhost": "internal"},
        ),
        service("web"),
        endpoint_slice("web", ["10.0.0.1"]),
    )
    routes = list(routes_of(annotated))
    assert routes and not any(r.plain for r in routes)
    assert {r.upstream_headers for r in routes} == {((b"Host", b"internal"),)}
