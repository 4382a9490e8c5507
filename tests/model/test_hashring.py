"""The consistent-hash ring of upstream-hash-by (model/hashring.py, Backend.hash_ring)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

from ingressd.model.backend import Backend, Endpoint, hash_target
from ingressd.model.hashring import MAX_POINTS, POINTS_PER_NODE, HashRing, subsets


def test_matches_lua_resty_balancer() -> None:
    # lua-resty-balancer t/chash.t "TEST 1: find", the ring ingress-nginx's chash
    # balancer is: nodes server1..3 of weights 10, 2, 1; keys 1..100000.
    ring = HashRing(["server1", "server2", "server3"], [10, 2, 1])
    counts = Counter(ring.find(str(i).encode()) for i in range(1, 100_001))
    assert counts == {0: 75588, 1: 16114, 2: 8298}
    assert len(ring) == 2080


def endpoints(n: int, start: int = 0) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(f"10.0.{i // 250}.{i % 250 + 1}", 8080) for i in range(start, n))


KEYS = [f"/item/{i}?page={i % 7}".encode() for i in range(2000)]


def assignment(eps: tuple[Endpoint, ...]) -> list[Endpoint]:
    target = hash_target(eps)
    return [target.nodes[target.ring.find(k)][0] for k in KEYS]


def test_adding_an_endpoint_moves_only_its_share_of_keys_and_only_to_it() -> None:
    before = assignment(endpoints(5))
    after = assignment(endpoints(6))
    new = endpoints(6)[-1]
    moved = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert all(b == new for _, b in moved)  # no key moves between old endpoints
    share = len(moved) / len(KEYS)
    assert 0.08 <= share <= 0.30, share  # about 1/6
    # and every endpoint gets some keys
    assert set(after) == set(endpoints(6))


def test_removing_an_endpoint_moves_only_its_keys() -> None:
    before = assignment(endpoints(6))
    gone = endpoints(6)[2]
    after = assignment(tuple(e for e in endpoints(6) if e != gone))
    for a, b in zip(before, after, strict=True):
        assert a in (b, gone)


def test_the_same_endpoints_give_the_same_ring_in_another_process() -> None:
    # No per-process salt: a worker (another process, another PYTHONHASHSEED) agrees.
    eps = endpoints(7)
    here = [str(e) for e in assignment(eps)[:300]]
    code = (
        "from ingressd.model.backend import Endpoint, hash_target\n"
        f"eps = tuple(Endpoint(h, p) for h, p in {[(e.host, e.port) for e in eps]!r})\n"
        "t = hash_target(eps)\n"
        f"keys = [f'/item/{{i}}?page={{i % 7}}'.encode() for i in range(300)]\n"
        "print('\\n'.join(str(t.nodes[t.ring.find(k)][0]) for k in keys))\n"
    )
    for seed in ("1", "12345"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
            timeout=60,
        )
        assert out.stdout.split() == here


def test_a_backend_keeps_its_ring() -> None:
    backend = Backend("default/s:80", endpoints(4))
    assert backend.hash_ring() is backend.hash_ring()
    assert backend.hash_ring(2) is not backend.hash_ring()
    assert len(backend.hash_ring().ring) == 4 * POINTS_PER_NODE


def test_ipv6_nodes_are_named_as_ingress_nginx_names_them() -> None:
    eps = (Endpoint("fd00::1", 80), Endpoint("fd00::2", 80))
    want = HashRing(["[fd00::1]:80", "[fd00::2]:80"])
    got = hash_target(eps).ring
    assert [got.find(k) for k in KEYS[:200]] == [want.find(k) for k in KEYS[:200]]


def test_the_ring_is_bounded() -> None:
    ring = HashRing([f"n{i}" for i in range(5000)])
    assert len(ring) <= MAX_POINTS
    assert {ring.find(k) for k in KEYS} - set(range(5000)) == set()
    assert HashRing([]).find(b"x") == -1


def test_subsets_as_chashsubset_lua_builds_them() -> None:
    assert subsets(6, 3) == [[0, 1, 2], [3, 4, 5]]
    # The last subset is filled up with the first endpoints again.
    assert subsets(7, 3) == [[0, 1, 2], [3, 4, 5], [6, 0, 1]]
    assert subsets(1, 3) == [[0, 0, 0]]
    assert subsets(0, 3) == []
    target = hash_target(endpoints(7), 3)
    assert [len(n) for n in target.nodes] == [3, 3, 3]
    # The subsets' ring names them "set1".."setN": it depends on their number only.
    other = hash_target(endpoints(109, 100), 3)
    assert [target.ring.find(k) for k in KEYS] == [other.ring.find(k) for k in KEYS]


def test_successors_walk_the_ring_from_the_key() -> None:
    ring = HashRing([f"n{i}" for i in range(5)])
    for key in KEYS[:50]:
        order = ring.successors(key)
        assert order[0] == ring.find(key)
        assert sorted(order) == list(range(5))
