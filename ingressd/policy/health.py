"""Passive health: endpoints that keep refusing connections are left out for a while.

No probes are sent: an endpoint whose connections fail ``max_fails`` times in
a row (refused, timed out, TLS handshake failed) is ejected for
``fail_timeout`` seconds, doubled each time it fails again right after
coming back (up to ``MAX_BACKOFF``), and forgiven by its first success.
Ejection only steers the choice of endpoint: when every endpoint of a
backend is ejected they are all tried anyway, since a flaky set that may
answer beats a certain 503.

State is kept per endpoint address across table rebuilds, like the EWMA
averages, and bounded: entries are dropped on success and pruned when old.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ..model.backend import Endpoint

MAX_BACKOFF: Final = 120.0
MAX_ENTRIES: Final = 10_000


@dataclass(slots=True)
class _State:
    failures: int = 0  # consecutive connection failures
    ejections: int = 0  # consecutive ejections, for the backoff
    until: float = 0.0  # ejected until this time (loop clock)


class EndpointHealth:
    def __init__(self, max_fails: int = 3, fail_timeout: float = 10.0) -> None:
        self.max_fails = max_fails
        self.fail_timeout = fail_timeout
        self._states: dict[Endpoint, _State] = {}
        # Endpoints ejected right now (until a time): the only thing the hot path reads.
        self.ejected: dict[Endpoint, float] = {}

    def failed(self, endpoint: Endpoint, now: float | None = None) -> bool:
        """Count a connection failure; True when it ejects the endpoint."""
        if self.max_fails <= 0:
            return False
        now = time.monotonic() if now is None else now
        state = self._states.get(endpoint)
        if state is None:
            if len(self._states) >= MAX_ENTRIES:
                self._prune(now)
            state = self._states[endpoint] = _State()
        state.failures += 1
        if state.failures < self.max_fails or state.until > now:
            return False
        backoff = min(MAX_BACKOFF, self.fail_timeout * 2**state.ejections)
        state.ejections += 1
        state.until = now + backoff
        self.ejected[endpoint] = state.until
        # Coming back, one more failure is enough to eject it again (for longer).
        state.failures = self.max_fails - 1
        return True

    def succeeded(self, endpoint: Endpoint) -> None:
        if self._states.pop(endpoint, None) is not None:
            self.ejected.pop(endpoint, None)

    def is_ejected(self, endpoint: Endpoint, now: float | None = None) -> bool:
        until = self.ejected.get(endpoint)
        if until is None:
            return False
        if until > (time.monotonic() if now is None else now):
            return True
        del self.ejected[endpoint]  # back in rotation, on probation
        return False

    def _prune(self, now: float) -> None:
        stale = [ep for ep, s in self._states.items() if s.until + MAX_BACKOFF < now]
        for ep in stale or list(self._states)[: len(self._states) // 2]:
            self._states.pop(ep, None)
            self.ejected.pop(ep, None)
