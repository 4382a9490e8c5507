"""Passive health: ejection after consecutive connection failures, backoff, forgiveness."""

from __future__ import annotations

from ingressd.model.backend import Backend, Endpoint
from ingressd.policy.health import EndpointHealth
from ingressd.policy.retry import next_endpoint

A, B, C = (Endpoint("10.0.0.1", p) for p in (1, 2, 3))


def test_ejected_after_max_fails_then_back_with_a_growing_backoff() -> None:
    h = EndpointHealth(max_fails=3, fail_timeout=10)
    assert not h.failed(A, 0) and not h.failed(A, 1)
    assert h.failed(A, 2)  # the third in a row
    assert h.is_ejected(A, 5) and not h.is_ejected(B, 5)
    assert not h.is_ejected(A, 12.5)  # back after 10 s, on probation
    assert h.failed(A, 13)  # one more failure ejects it again, for twice as long
    assert h.is_ejected(A, 32) and not h.is_ejected(A, 33.5)


def test_a_success_forgives() -> None:
    h = EndpointHealth(max_fails=2, fail_timeout=10)
    h.failed(A, 0)
    h.succeeded(A)
    assert not h.failed(A, 1)  # the count started again
    assert h.failed(A, 2)
    h.succeeded(A)
    assert not h.is_ejected(A, 3) and not h.ejected


def test_zero_disables() -> None:
    h = EndpointHealth(max_fails=0)
    assert not any(h.failed(A, t) for t in range(10))
    assert not h.ejected


def test_failures_while_ejected_do_not_extend_it() -> None:
    h = EndpointHealth(max_fails=1, fail_timeout=10)
    assert h.failed(A, 0)
    assert not h.failed(A, 5)  # a request that tried it anyway (all ejected)
    assert not h.is_ejected(A, 10.5)


def test_next_endpoint_puts_ejected_ones_last() -> None:
    h = EndpointHealth(max_fails=1, fail_timeout=100)
    backend = Backend("ns/svc:80", (A, B, C))
    h.failed(B)
    assert next_endpoint(backend, [A], h) == C
    assert next_endpoint(backend, [A, C], h) == B  # only the ejected one is left: try it
