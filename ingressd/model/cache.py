"""A small bounded cache for lookups whose keys outsiders choose.

The routing table memoises what routing found for a (Host, path) pair
(``RouteTable.routing_cache``, filled by ``routing/decide.py``). Every key is
attacker-chosen, so the cache must stay small, must cost O(1) per request
whether it hits or not, and must not be cheap to flush of the entries real
traffic keeps asking for. Two parts do that:

- **admission on second sight**: a key is only stored the second time it
  misses within one window of ``capacity`` first sightings (``_seen``, a set
  cleared when full). A flood of paths each asked for once (a scan, random
  paths) never enters the cache, and costs each request one set probe and
  insert on top of the uncached lookup;
- **least recently used eviction** among the admitted (an ``OrderedDict``:
  a hit moves its key to the end, an insert past ``capacity`` drops the
  first). To push a hot entry out, an attacker has to get ``capacity`` keys
  admitted, each sent twice, between two requests for it.

Even a cache flushed all the time only costs what routing without it costs,
plus those probes: the answer is the same either way (the cache only stores
values that depend on nothing but the key and an immutable table).

Memory: at most ``capacity`` entries and ``capacity`` remembered keys; the
caller bounds the length of what it stores (``decide.MAX_CACHED_KEY``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

# Entries per cache (and first sightings remembered): far more (host, path)
# pairs than the hot set of a worker, and small enough (at the key bound of
# decide.py, under 2 MB per table in the worst case) to hold in every worker.
CAPACITY = 2048


class BoundedCache(Generic[K, V]):
    """At most ``capacity`` entries, admitted on their second miss, evicted least
    recently used first. Not thread-safe: one per event loop (a table is used by
    one process's loop; each worker builds its own)."""

    __slots__ = ("_entries", "_seen", "capacity")

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity  # 0: store nothing
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._seen: set[K] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        entries = self._entries
        value = entries.get(key)
        if value is not None:
            entries.move_to_end(key)
        return value

    def offer(self, key: K, value: V) -> None:
        """``value`` was just worked out for ``key`` (a miss): keep it if ``key`` missed
        before, within the window."""
        seen = self._seen
        if key not in seen:
            if len(seen) >= self.capacity:
                seen.clear()  # a new window: O(capacity) once per capacity misses
            if self.capacity > 0:
                seen.add(key)
            return
        seen.discard(key)
        entries = self._entries
        entries[key] = value
        if len(entries) > self.capacity:
            entries.popitem(last=False)
