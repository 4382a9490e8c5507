"""limit-rate and limit-rate-after: nginx's limit_rate on one response.

ngx_http_write_filter_module.c: once ``limit_rate_after`` bytes have gone out, a
response may have sent at most ``limit_rate * (now - start + 1)`` bytes more
(``start``: when the request began, so the first second is a burst); what is
over waits, and the connection's writing is delayed until it is allowed.
ingressd holds back what is over, stops reading this response from its upstream
meanwhile, and sends the rest as time allows it: the one response slows down,
its connection and every other one go on (an HTTP/2 upstream pauses only this
stream).
"""

from __future__ import annotations


class Throttle:
    """Bytes sent so far on one response, against its rate."""

    __slots__ = ("after", "rate", "sent", "start", "step")

    def __init__(self, rate: int, after: int, start: float) -> None:
        self.rate = rate  # bytes per second, > 0
        self.after = after  # bytes sent before the rate applies
        self.start = start  # when the request began (perf_counter)
        self.sent = 0
        # What a wait lets through at least: about a tenth of a second's worth,
        # so a slow rate still sends in pieces rather than byte by byte.
        self.step = max(1024, rate // 10)

    def allowed(self, now: float) -> int:
        """Bytes that may go out now."""
        return max(0, int(self.after + self.rate * (now - self.start + 1.0)) - self.sent)

    def wait(self, size: int, now: float) -> float:
        """Seconds until ``size`` bytes (at most one step) may go out."""
        want = self.sent + min(size, self.step) - self.after
        return max(0.001, want / self.rate - 1.0 - (now - self.start))
