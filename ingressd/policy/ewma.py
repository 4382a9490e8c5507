"""The ``load-balance: ewma`` balancer, as ingress-nginx's balancer/ewma.lua.

Per endpoint, an exponentially weighted moving average of upstream response
time, weighted by the time since its last update (``exp(-Δt / DECAY_TIME)``).
A request goes to the better of two distinct random endpoints, scored by their
average decayed toward 0 for the time they have been idle, so an endpoint left
alone is tried again eventually.

The routing table (and every Backend in it) is rebuilt on each change, so the
statistics live here, keyed by endpoint address, in a store the proxy owns;
entries for endpoints not seen for ``TTL`` seconds are dropped, and the store
never holds more than ``max_entries``.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence

from ..model.backend import Endpoint

DECAY_TIME = 10.0  # seconds, as ewma.lua
TTL = 600.0  # an endpoint unseen this long is forgotten
MAX_ENTRIES = 10_000
PRUNE_INTERVAL = 60.0

# Entry slots: the average, when it was last updated, when last seen (picked or updated).
_EWMA, _TOUCHED, _SEEN = range(3)
# "Last updated" of an endpoint never measured: its first sample gets all the
# weight and its score is 0, as a missing last_touched_at in ewma.lua.
_NEVER = -math.inf


class EwmaStore:
    """Response-time averages by endpoint, shared by every table the proxy serves."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        max_entries: int = MAX_ENTRIES,
        ttl: float = TTL,
    ) -> None:
        self.clock = clock
        self.rng = rng or random.Random()
        self.max_entries = max_entries
        self.ttl = ttl
        self._entries: dict[Endpoint, list[float]] = {}
        self._next_prune = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, endpoint: object) -> bool:
        return endpoint in self._entries

    # -- reading -----------------------------------------------------------------

    def score(self, endpoint: Endpoint, now: float | None = None) -> float:
        """The average decayed toward 0 for the time since its last update."""
        entry = self._entries.get(endpoint)
        if entry is None:
            return 0.0
        return _decayed(entry, self.clock() if now is None else now)

    def pick(self, endpoints: Sequence[Endpoint], now: float | None = None) -> Endpoint | None:
        """The lower-scored of two distinct random endpoints (the only one, if one)."""
        n = len(endpoints)
        if n < 2:
            return endpoints[0] if n else None
        if now is None:
            now = self.clock()
        rng = self.rng
        i = rng.randrange(n)
        j = rng.randrange(n - 1)
        if j >= i:
            j += 1
        a, b = endpoints[i], endpoints[j]
        ea, eb = self._seen(a, endpoints, now), self._seen(b, endpoints, now)
        return b if _decayed(eb, now) < _decayed(ea, now) else a

    def slow_start(self, peers: Sequence[Endpoint]) -> float | None:
        """What a new endpoint among ``peers`` starts at: the mean of the measured ones."""
        known = [
            e[_EWMA]
            for e in map(self._entries.get, peers)
            if e is not None and e[_TOUCHED] != _NEVER
        ]
        return sum(known) / len(known) if known else None

    # -- feedback ----------------------------------------------------------------

    def update(self, endpoint: Endpoint, rtt: float, now: float | None = None) -> None:
        """Fold one response time (seconds) into the endpoint's average."""
        if now is None:
            now = self.clock()
        entry = self._entries.get(endpoint)
        if entry is None:
            entry = self._add(endpoint, 0.0, _NEVER, now)
        weight = math.exp(-max(now - entry[_TOUCHED], 0.0) / DECAY_TIME)
        entry[_EWMA] = entry[_EWMA] * weight + rtt * (1.0 - weight)
        entry[_TOUCHED] = entry[_SEEN] = now
        if now >= self._next_prune:
            self.prune(now)

    def prune(self, now: float | None = None) -> None:
        """Forget endpoints not seen for ``ttl`` seconds."""
        if now is None:
            now = self.clock()
        self._next_prune = now + PRUNE_INTERVAL
        cutoff = now - self.ttl
        stale = [ep for ep, entry in self._entries.items() if entry[_SEEN] < cutoff]
        for ep in stale:
            del self._entries[ep]

    # -- internals ---------------------------------------------------------------

    def _seen(self, endpoint: Endpoint, peers: Sequence[Endpoint], now: float) -> list[float]:
        entry = self._entries.get(endpoint)
        if entry is not None:
            entry[_SEEN] = now
            return entry
        # Slow start: a new endpoint starts at the average of its peers' averages,
        # as ewma.lua's sync; with none known it starts unmeasured (score 0).
        start = self.slow_start(peers)
        if start is None:
            return self._add(endpoint, 0.0, _NEVER, now)
        return self._add(endpoint, start, now, now)

    def _add(self, endpoint: Endpoint, ewma: float, touched: float, now: float) -> list[float]:
        entries = self._entries
        if len(entries) >= self.max_entries:
            self.prune(now)
            if len(entries) >= self.max_entries:
                # Still full of live endpoints: drop the least recently seen tenth.
                by_age = sorted(entries, key=lambda ep: entries[ep][_SEEN])
                for ep in by_age[: max(1, len(by_age) // 10)]:
                    del entries[ep]
        entry = [ewma, touched, now]
        entries[endpoint] = entry
        return entry


def _decayed(entry: list[float], now: float) -> float:
    return entry[_EWMA] * math.exp(-max(now - entry[_TOUCHED], 0.0) / DECAY_TIME)
