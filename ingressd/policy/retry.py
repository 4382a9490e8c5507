"""proxy-next-upstream: when a failed try is repeated on the next endpoint.

As nginx's proxy_next_upstream: the conditions say which failures count
(``error``: the connection failed or broke before a response; ``timeout``;
``invalid_header``: the upstream's response could not be parsed;
``http_NNN``: the upstream answered that status), ``tries`` bounds the
attempts (0: no bound but the endpoints), ``timeout`` the time for all of them.
A request that reached an upstream is repeated only if its method is
idempotent, or ``non_idempotent`` allows it, and only if its body can be sent
again; a response that has begun to reach the client is never retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..model.policy import NextUpstream

if TYPE_CHECKING:
    from ..model.backend import Backend, Endpoint
    from .health import EndpointHealth

CONDITIONS = ("error", "timeout", "invalid_header", "non_idempotent", "off")
STATUSES = frozenset({403, 404, 429, 500, 502, 503, 504})
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})

# A request body sent to an upstream is kept up to this size so a retry can
# send it again; a larger one makes the request not retriable once sent.
REPLAY_LIMIT = 64 * 1024


def parse_conditions(value: str) -> NextUpstream:
    """The proxy-next-upstream value: space-separated conditions, or ``off``."""
    tokens = value.split()
    if not tokens:
        raise ValueError("no conditions")
    statuses: set[int] = set()
    flags: set[str] = set()
    for token in tokens:
        if token.startswith("http_") and token[5:].isdigit() and int(token[5:]) in STATUSES:
            statuses.add(int(token[5:]))
        elif token in CONDITIONS:
            flags.add(token)
        else:
            known = ", ".join([*CONDITIONS, *(f"http_{s}" for s in sorted(STATUSES))])
            raise ValueError(f"{token!r} is not a condition ({known})")
    if "off" in flags:
        if len(tokens) > 1:
            raise ValueError("off cannot be combined with other conditions")
        return NextUpstream(error=False, timeout=False)
    return NextUpstream(
        error="error" in flags,
        timeout="timeout" in flags,
        invalid_header="invalid_header" in flags,
        statuses=frozenset(statuses),
        non_idempotent="non_idempotent" in flags,
    )


def next_endpoint(
    backend: Backend, tried: Sequence[Endpoint], health: EndpointHealth | None = None
) -> Endpoint | None:
    """The endpoint after the last one tried, in the backend's order, not tried yet.

    Ejected endpoints (passive health) come last. The round-robin cursor is
    left alone, so a failing endpoint does not also take the turns of the one
    after it.
    """
    endpoints = backend.endpoints
    n = len(endpoints)
    try:
        start = endpoints.index(tried[-1]) + 1 if tried else 0
    except ValueError:
        start = 0
    fallback = None
    for i in range(n):
        endpoint = endpoints[(start + i) % n]
        if endpoint in tried:
            continue
        if health is None or not health.ejected or not health.is_ejected(endpoint):
            return endpoint
        fallback = fallback or endpoint
    return fallback
