"""load-balance: ewma: the score math, the pick of two, slow start, the bounded store, parsing."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from k8s_objects import build, endpoint_slice, ingress, path, request, rule, service

from ingressd.model.backend import Endpoint
from ingressd.model.policy import DEFAULT_POLICY
from ingressd.policy.annotations import classify, parse_load_balance, parse_policy
from ingressd.policy.ewma import DECAY_TIME, EwmaStore
from ingressd.routing.decide import Forward, decide

A = Endpoint("10.0.0.1", 80)
B = Endpoint("10.0.0.2", 80)
C = Endpoint("10.0.0.3", 80)
NGINX = "nginx.ingress.kubernetes.io/"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def store(**kwargs: object) -> tuple[EwmaStore, Clock]:
    clock = Clock()
    return EwmaStore(clock=clock, rng=random.Random(7), **kwargs), clock  # type: ignore[arg-type]


def test_first_sample_is_the_average_then_time_weighted_updates() -> None:
    s, clock = store()
    assert s.score(A) == 0.0
    s.update(A, 0.2)
    assert s.score(A) == pytest.approx(0.2)
    clock.now += 5
    s.update(A, 0.4)
    w = math.exp(-5 / DECAY_TIME)
    assert s.score(A) == pytest.approx(0.2 * w + 0.4 * (1 - w))
    # A sample right after the last one barely moves the average.
    before = s.score(A)
    s.update(A, 10.0)
    assert s.score(A) == pytest.approx(before)


def test_score_decays_toward_zero_over_ten_seconds() -> None:
    s, clock = store()
    s.update(A, 1.0)
    clock.now += DECAY_TIME
    assert s.score(A) == pytest.approx(math.exp(-1))
    clock.now += 4 * DECAY_TIME
    assert s.score(A) == pytest.approx(math.exp(-5))
    assert s.score(A, now=clock.now - 5 * DECAY_TIME) == pytest.approx(1.0)
    # Reading does not change the stored average.
    clock.now -= 5 * DECAY_TIME
    assert s.score(A) == pytest.approx(1.0)


def test_pick_of_two_prefers_the_faster_endpoint() -> None:
    s, clock = store()
    s.update(A, 0.2)
    s.update(B, 0.001)
    assert all(s.pick((A, B)) == B for _ in range(50))
    # Among three, two random candidates: the slowest is never chosen, and each
    # of the others is (the fastest whenever it is a candidate).
    s.update(C, 0.01)
    counts = Counter(s.pick((A, B, C)) for _ in range(600))
    assert counts[A] == 0 and counts[B] > counts[C] > 0, counts
    # An idle endpoint's score decays: after a minute, A beats C's fresh 10 ms.
    clock.now += 60
    s.update(C, 0.01)
    assert s.pick((A, C)) == A


def test_one_or_no_endpoint() -> None:
    s, _ = store()
    assert s.pick((A,)) == A
    assert s.pick(()) is None
    assert len(s) == 0  # nothing to remember for a single endpoint


def test_slow_start_new_endpoints_start_at_the_average() -> None:
    s, _ = store()
    assert s.slow_start((A, B)) is None  # nothing measured: new endpoints start at 0
    s.pick((A, B))
    assert s.score(A) == s.score(B) == 0.0
    s.update(A, 0.1)
    s.update(B, 0.3)
    assert s.slow_start((A, B, C)) == pytest.approx(0.2)
    # C appears (a scale-up): when first considered it starts at its peers' mean,
    # rather than at 0, where it would take all the traffic.
    for _ in range(20):
        s.pick((A, B, C))
    assert C in s and s.score(C) == pytest.approx(0.2)


def test_unmeasured_endpoints_do_not_count_toward_slow_start() -> None:
    s, _ = store()
    s.pick((A, B))  # both seen, neither measured
    s.update(A, 0.4)
    assert s.slow_start((A, B, C)) == pytest.approx(0.4)
    # B was in flight when A's sample came back: its first sample still counts fully.
    s.update(B, 0.05)
    assert s.score(B) == pytest.approx(0.05)


def test_the_store_is_bounded() -> None:
    s, clock = store(max_entries=50)
    for i in range(500):
        s.update(Endpoint(f"10.1.{i // 256}.{i % 256}", 80), 0.01)
        clock.now += 0.001
    assert len(s) <= 50
    # The newest survive.
    assert Endpoint("10.1.1.243", 80) in s
    # Endpoints unseen for ten minutes are forgotten.
    s2, clock2 = store()
    s2.update(A, 0.1)
    clock2.now += 300
    s2.update(B, 0.1)
    clock2.now += 301
    s2.update(B, 0.1)  # prunes: A was last seen 601 s ago
    assert A not in s2 and B in s2


@pytest.mark.parametrize(
    ("value", "expected"), [("ewma", "ewma"), ("round_robin", "round_robin"), (" EWMA ", "ewma")]
)
def test_parse_valid_values(value: str, expected: str) -> None:
    assert parse_load_balance(value) == expected
    p, messages = parse_policy({NGINX + "load-balance": value})
    assert (p.load_balance, messages) == (expected, [])


@pytest.mark.parametrize("value", ["chash", "chashsubset", "sticky_balanced", "sticky_persistent"])
def test_other_ingress_nginx_balancers_are_unsupported(value: str) -> None:
    p, messages = parse_policy({NGINX + "load-balance": value})
    assert p.load_balance == "round_robin"
    assert messages == [
        f"annotation {NGINX}load-balance={value!r}: load balancer {value} "
        "is not supported by ingressd yet; round_robin is used"
    ]
    assert classify({NGINX + "load-balance": value})[0].status == "unsupported"


@pytest.mark.parametrize("value", ["", "least_conn", "random"])
def test_unknown_values_are_invalid(value: str) -> None:
    p, messages = parse_policy({NGINX + "load-balance": value})
    assert p is DEFAULT_POLICY or p.load_balance == "round_robin"
    assert len(messages) == 1 and "is invalid" in messages[0]
    assert "round_robin is used" in messages[0]


def _table(annotations: dict[str, str]):  # type: ignore[no-untyped-def]
    return build(
        ingress("web", [rule("a.test", path("/", "web"))], annotations=annotations),
        service("web"),
        endpoint_slice("web", ["10.0.0.1", "10.0.0.2"]),
    )


def test_decide_uses_the_store_for_ewma_routes_only() -> None:
    s, _ = store()
    slow, fast = Endpoint("10.0.0.1", 8080), Endpoint("10.0.0.2", 8080)
    s.update(slow, 0.5)
    s.update(fast, 0.001)
    ewma = _table({NGINX + "load-balance": "ewma"})
    picks = {decide(ewma, request("a.test"), ewma=s).endpoint for _ in range(20)}  # type: ignore[union-attr]
    assert picks == {fast}
    rr = _table({})
    picks = {decide(rr, request("a.test"), ewma=s).endpoint for _ in range(20)}  # type: ignore[union-attr]
    assert picks == {slow, fast}
    # Cookie affinity takes precedence: the cookie's endpoint is kept.
    sticky = _table({NGINX + "load-balance": "ewma", NGINX + "affinity": "cookie"})
    first = decide(sticky, request("a.test"), ewma=s)
    assert isinstance(first, Forward)
    cookie = dict(first.response_headers)[b"Set-Cookie"].split(b";")[0].decode()
    head = request("a.test")
    head.headers = [(b"Cookie", cookie.encode())]
    assert {decide(sticky, head, ewma=s).endpoint for _ in range(10)} == {first.endpoint}  # type: ignore[union-attr]
