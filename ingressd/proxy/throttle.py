"""limit-rate and limit-rate-after: nginx's limit_rate on one response.

ngx_http_write_filter_module.c: once ``limit_rate_after`` bytes have gone out, a
response may have sent at most ``limit_rate * (now - start + 1)`` bytes more
(``start``: when the request began, so the first second is a burst); past that the
connection's writing is delayed until the average is back under the rate.
ingressd stops reading this response from its upstream for that long, after
forwarding what it read: the one response slows down, its connection and every
other one go on (an HTTP/2 upstream pauses only this stream).
"""

from __future__ import annotations


class Throttle:
    """Bytes sent so far on one response, against its rate."""

    __slots__ = ("after", "rate", "sent", "start")

    def __init__(self, rate: int, after: int, start: float) -> None:
        self.rate = rate  # bytes per second, > 0
        self.after = after  # bytes sent before the rate applies
        self.start = start  # when the request began (perf_counter)
        self.sent = 0

    def delay(self, size: int, now: float) -> float:
        """Seconds to hold the response back after ``size`` more bytes went out."""
        self.sent += size
        over = self.sent - self.after - self.rate * (now - self.start + 1.0)
        return over / self.rate if over > 0 else 0.0
