"""The bounded cache routing keeps per table (model/cache.py): keys are attacker-chosen."""

from __future__ import annotations

from typing import TypeVar

from ingressd.model.cache import CAPACITY, DOORKEEPER_SLOTS, BoundedCache

K = TypeVar("K")
V = TypeVar("V")


def ask(cache: BoundedCache[K, V], key: K, value: V) -> V | None:
    """As decide.routing uses the cache: get, and on a miss put what was worked
    out if the miss admitted it. Returns what get found."""
    found = cache.get(key)
    if found is None and cache.admit:
        cache.put(key, value)
    return found


def test_a_key_is_kept_on_its_second_miss_only() -> None:
    cache: BoundedCache[str, int] = BoundedCache(4)
    assert ask(cache, "a", 1) is None  # seen once: not kept
    assert not cache.admit and len(cache) == 0
    assert ask(cache, "a", 1) is None  # the second miss keeps it
    assert cache.admit and len(cache) == 1
    assert ask(cache, "a", 1) == 1


def test_keys_asked_for_once_never_enter() -> None:
    cache: BoundedCache[int, int] = BoundedCache(8)
    for n in range(1000):
        assert ask(cache, n, n) is None
    assert len(cache) == 0
    # What it remembers of them: a hash per slot, no more.
    assert len(cache._seen) == 8 * DOORKEEPER_SLOTS


def test_a_flood_of_new_keys_does_not_push_out_a_hot_one() -> None:
    cache: BoundedCache[str, str] = BoundedCache(16)
    ask(cache, "hot", "h")
    ask(cache, "hot", "h")
    for n in range(10_000):  # a scan: every key new, the hot one asked for now and then
        ask(cache, f"/scan/{n}", "")
        if n % 100 == 0:
            assert ask(cache, "hot", "h") == "h"
    assert ask(cache, "hot", "h") == "h"
    assert len(cache) == 1


def test_least_recently_used_goes_first_and_the_size_is_bounded() -> None:
    cache: BoundedCache[int, int] = BoundedCache(3)
    for key in (1, 2, 3):
        ask(cache, key, key)
        ask(cache, key, key)
    assert cache.get(1) == 1  # 2 is now the least recently used
    ask(cache, 4, 4)
    ask(cache, 4, 4)
    assert len(cache) == 3
    assert cache.get(2) is None
    assert [cache.get(k) for k in (1, 3, 4)] == [1, 3, 4]


def test_an_attacker_sending_each_key_twice_stays_within_the_bound() -> None:
    cache: BoundedCache[int, int] = BoundedCache(32)
    for n in range(5_000):
        ask(cache, n, n)
        ask(cache, n, n)
        assert len(cache) <= 32
    assert len(cache._seen) == 32 * DOORKEEPER_SLOTS


def test_keys_sharing_a_slot_are_admitted_all_the_same() -> None:
    """A thousand keys in use, each asked for in turn: with one doorkeeper slot
    per key, those sharing one wiped each other's mark and never got in."""
    cache: BoundedCache[str, int] = BoundedCache(2048)
    keys = [f"host-{n}.example/path" for n in range(1000)]
    for _ in range(3):
        for n, key in enumerate(keys):
            ask(cache, key, n)
    assert len(cache) >= 990


def test_capacity_zero_keeps_nothing() -> None:
    cache: BoundedCache[str, int] = BoundedCache(0)
    for _ in range(3):
        assert ask(cache, "a", 1) is None
        assert not cache.admit
    assert len(cache) == 0


def test_the_default_capacity_is_small() -> None:
    assert 256 <= CAPACITY <= 8192
    assert BoundedCache().capacity == CAPACITY
