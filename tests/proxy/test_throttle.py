"""limit-rate's arithmetic (proxy/throttle.py), against nginx's write filter, on a
given clock: no timing here."""

from __future__ import annotations

from ingressd.proxy.throttle import Throttle


def test_the_first_second_is_a_burst_then_the_rate() -> None:
    t = Throttle(rate=1000, after=0, start=100.0)
    # nginx: limit = rate * (now - start + 1) - (sent - after)
    assert t.allowed(100.0) == 1000
    t.sent = 1000
    assert t.allowed(100.0) == 0
    assert t.allowed(100.5) == 500
    assert t.allowed(102.0) == 2000


def test_limit_rate_after_goes_at_full_speed() -> None:
    t = Throttle(rate=1000, after=50_000, start=0.0)
    assert t.allowed(0.0) == 51_000
    t.sent = 51_000
    assert t.allowed(0.0) == 0


def test_a_wait_lets_a_step_through() -> None:
    t = Throttle(rate=100_000, after=0, start=0.0)
    t.sent = 100_000  # the burst is used up at once
    assert t.step == 10_000
    wait = t.wait(1_000_000, 0.0)
    assert abs(wait - 0.1) < 1e-9  # a step's worth, not the whole rest
    assert t.allowed(wait) >= t.step - 1
    assert abs(t.wait(500, 0.0) - 0.005) < 1e-9  # less than a step: just that
    slow = Throttle(rate=10, after=0, start=0.0)
    assert slow.step == 1024  # never byte by byte
