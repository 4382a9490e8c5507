"""A small bounded cache for lookups whose keys outsiders choose.

The routing table memoises what routing found for a (Host, path) pair
(``RouteTable.routing_cache``, filled by ``routing/decide.py``). Every key is
attacker-chosen, so the cache must stay small, must cost O(1) per request
whether it hits or not, and must not be cheap to flush of the entries real
traffic keeps asking for. Two parts do that:

- **admission on second sight**: a key is only stored the second time it
  misses while its mark is still in the doorkeeper (``_seen``: one hash per
  slot, ``DOORKEEPER_SLOTS`` times ``capacity`` slots, rounded up to a power
  of two). A key has two slots, taken from two parts of its hash: its mark
  goes to the first unless that one is taken and the second free, and is
  found in either. With one slot each, two keys sharing it wiped each other's
  mark and, asked for in turn, were never admitted: with a thousand keys in
  use, two in five of them (the routing benchmark at 10,000 Ingresses went
  twice as slow as at 10 for that alone). A flood of paths each asked for
  once (a scan, random paths) never enters the cache, and costs each request
  a hash and two array slots on top of the uncached lookup. Only hashes are
  kept, no request's strings; str hashes are salted per process, so nobody
  can aim a key at a slot, and a collision can do no more than admit a key
  early or forget a first sighting;
- **least recently used eviction** among the admitted (a dict, which keeps
  insertion order: a hit takes its key out and puts it back at the end, an
  insert past ``capacity`` drops the first; plain dict operations, native in
  compiled code, where an ``OrderedDict``'s ``get`` and ``move_to_end`` were
  two generic method calls per request). To push a hot entry out, an
  attacker has to get ``capacity`` keys admitted, each sent twice, between
  two requests for it.

Even a cache flushed all the time only costs what routing without it costs,
plus those probes: the answer is the same either way (the cache only stores
values that depend on nothing but the key and an immutable table).

Memory: at most ``capacity`` entries and an array of ``DOORKEEPER_SLOTS`` times
``capacity`` (rounded up to a power of two) 64-bit hashes, allocated with the
cache; the caller bounds the length of the keys it offers
(``decide.MAX_CACHED_KEY``).
"""

from __future__ import annotations

from array import array
from typing import Final, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

# Entries per cache (and first sightings remembered): far more (host, path)
# pairs than the hot set of a worker, and small enough (at the key bound of
# decide.py, about 1.4 MB per table in the worst case: 700 bytes an entry) to
# hold in every worker.
CAPACITY: Final = 2048
# Doorkeeper slots per entry the cache may hold: 64 KiB of marks at CAPACITY.
DOORKEEPER_SLOTS: Final = 4
# Where a key's second slot comes from: bits of its hash above the first's.
_SECOND: Final = 24


class BoundedCache(Generic[K, V]):
    """At most ``capacity`` entries, admitted on their second miss, evicted least
    recently used first. Not thread-safe: one per event loop (a table is used by
    one process's loop; each worker builds its own)."""

    __slots__ = ("_entries", "_mask", "_seen", "admit", "capacity")

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity  # 0: store nothing
        self._entries: dict[K, V] = {}
        # The doorkeeper: the hash of the last key that missed, per slot (a
        # power of two of them, at least ``capacity``); -1, which no hash is,
        # marks an empty slot.
        slots = 1
        while slots < capacity * DOORKEEPER_SLOTS:
            slots *= 2
        self._mask = slots - 1
        # A C array of 64-bit hashes: allocated once, no object per mark.
        self._seen = array("q", [-1]) * slots
        # Set by a miss in get(): whether put() should keep what the caller
        # works out for that key. (One call on a miss, not two: a scan of new
        # keys pays as little as can be.)
        self.admit = False

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        """The value kept for ``key``; else None, and ``admit`` says whether this
        is the key's second miss (its mark still there), so worth keeping."""
        entries = self._entries
        value = entries.get(key)
        if value is not None:
            del entries[key]
            entries[key] = value  # now the most recently used
            return value
        mark = hash(key)  # never -1, the mark of a free slot
        mask = self._mask
        first = mark & mask
        second = (mark >> _SECOND) & mask
        seen = self._seen
        if seen[first] == mark:
            seen[first] = -1
            self.admit = self.capacity > 0
        elif seen[second] == mark:
            seen[second] = -1
            self.admit = self.capacity > 0
        else:
            # The first sighting (or its mark overwritten since).
            if seen[first] != -1 and seen[second] == -1:
                seen[second] = mark
            else:
                seen[first] = mark
            self.admit = False
        return None

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` for ``key`` (after a miss that set ``admit``)."""
        entries = self._entries
        entries[key] = value
        if len(entries) > self.capacity:
            del entries[next(iter(entries))]  # the least recently used
