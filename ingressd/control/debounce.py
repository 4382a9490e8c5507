"""Coalescing bursts of changes into one rebuild."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Debouncer:
    """Call ``action`` once a burst of ``poke()``s settles.

    It waits ``holdoff`` after the latest poke, but never longer than
    ``max_delay`` after the first one, so a steady trickle of events (a busy
    cluster) still gets rebuilds (Contour uses 100 ms / 500 ms).
    """

    def __init__(
        self, action: Callable[[], None], holdoff: float = 0.1, max_delay: float = 0.5
    ) -> None:
        self.action = action
        self.holdoff = holdoff
        self.max_delay = max_delay
        self._first: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def poke(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._first is None:
            self._first = now
        if self._timer is not None:
            self._timer.cancel()
        at = min(now + self.holdoff, self._first + self.max_delay)
        self._timer = loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._first = None
        self._timer = None
        self.action()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._first = None
