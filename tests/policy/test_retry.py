"""proxy-next-upstream: parsing the conditions, and where a retry goes."""

from __future__ import annotations

import pytest

from ingressd.model.backend import Backend, Endpoint, affinity_value
from ingressd.model.policy import DEFAULT_NEXT_UPSTREAM, Affinity, NextUpstream, RoutePolicy
from ingressd.model.table import Route
from ingressd.policy.retry import next_endpoint, parse_conditions
from ingressd.routing.decide import Forward, retarget

A, B, C = (Endpoint("10.0.0.1", p) for p in (1, 2, 3))


def test_default_is_ingress_nginxs() -> None:
    d = DEFAULT_NEXT_UPSTREAM
    assert (d.error, d.timeout, d.invalid_header, d.statuses) == (True, True, False, frozenset())
    assert (d.non_idempotent, d.tries, d.time_limit) == (False, 3, 0.0)


def test_conditions() -> None:
    n = parse_conditions("error  timeout http_502 http_503 non_idempotent invalid_header")
    assert (n.error, n.timeout, n.invalid_header, n.non_idempotent) == (True, True, True, True)
    assert n.statuses == frozenset({502, 503})
    assert n.covers("invalid_header") and not NextUpstream().covers("invalid_header")
    only = parse_conditions("http_404")
    assert (only.error, only.timeout, only.statuses) == (False, False, frozenset({404}))
    off = parse_conditions("off")
    assert not off.covers("error") and not off.covers("timeout") and not off.statuses


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "no conditions"),
        ("error http_418", "'http_418' is not a condition"),
        ("errors", "'errors' is not a condition"),
        ("off error", "off cannot be combined"),
    ],
)
def test_bad_conditions(value: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_conditions(value)


def test_next_endpoint_follows_the_failed_one_and_skips_the_tried() -> None:
    backend = Backend("ns/svc:80", (A, B, C))
    assert next_endpoint(backend, [B]) == C
    assert next_endpoint(backend, [C]) == A
    assert next_endpoint(backend, [C, A]) == B
    assert next_endpoint(backend, [A, B, C]) is None
    assert next_endpoint(Backend("ns/one:80", (A,)), [A]) is None
    # The round-robin turn order is not disturbed by retries.
    before = [backend.pick() for _ in range(3)]
    next_endpoint(backend, [A])
    assert [backend.pick() for _ in range(3)] == before


def forward(backend: Backend, endpoint: Endpoint, policy: RoutePolicy, cookie: bool) -> Forward:
    route = Route("/", "Prefix", backend, "ns/ing", policy)
    headers = ((b"Set-Cookie", b"INGRESSCOOKIE=x; Path=/"),) if cookie else ()
    return Forward(endpoint, backend, "/", route, response_headers=headers)


def test_retarget_moves_plain_requests_to_the_next_endpoint() -> None:
    backend = Backend("ns/svc:80", (A, B))
    fwd = forward(backend, A, RoutePolicy(), cookie=False)
    nxt = retarget(fwd, [A], tls=False)
    assert nxt is not None and nxt.endpoint == B and nxt.route is fwd.route
    assert retarget(nxt, [A, B], tls=False) is None


def test_retarget_keeps_or_moves_sessions() -> None:
    backend = Backend("ns/svc:80", (A, B))
    keep = RoutePolicy(affinity=Affinity())
    move = RoutePolicy(affinity=Affinity(change_on_failure=True))
    # An established session (no cookie being set) stays, unless told to move.
    assert retarget(forward(backend, A, keep, cookie=False), [A], tls=False).endpoint == A
    moved = retarget(forward(backend, A, move, cookie=False), [A], tls=False)
    assert moved.endpoint == B
    assert moved.response_headers[-1][1].startswith(
        f"INGRESSCOOKIE={affinity_value('ns/svc:80', B)};".encode()
    )
    # A new session goes elsewhere either way, and its cookie names where it went.
    fresh = retarget(forward(backend, A, keep, cookie=True), [A], tls=False)
    assert fresh.endpoint == B
    cookies = [v for n, v in fresh.response_headers if n == b"Set-Cookie"]
    assert len(cookies) == 1 and cookies[0].startswith(
        f"INGRESSCOOKIE={affinity_value('ns/svc:80', B)};".encode()
    )
