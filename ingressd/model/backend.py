"""Where a route's traffic goes: a Service port's endpoints, and the session cookie values."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .hashring import HashRing, subsets


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class _Turn:
    """A round-robin position: the one mutable part of a frozen Backend. A
    native counter once compiled (``next()`` on an itertools.count was a
    generic builtin lookup and call per request); only the event loop's
    thread picks."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


@dataclass(frozen=True, slots=True, eq=False)
class Backend:
    """A resolved Service port: the addresses traffic for a route goes to.

    ``error`` is set when the Service cannot be resolved at all (missing Service
    or port); the route then answers 503 with that text rather than falling
    through to a broader route that belongs to someone else.
    """

    name: str  # "namespace/service:port", for logs and error bodies
    endpoints: tuple[Endpoint, ...] = ()
    error: str | None = None
    # Round-robin cursor: runtime state, not part of the table's identity.
    _cursor: _Turn = field(default_factory=_Turn, repr=False)

    def pick(self) -> Endpoint | None:
        eps = self.endpoints
        if not eps:
            return None
        turn = self._cursor
        n = turn.n
        turn.n = n + 1
        return eps[n % len(eps)]

    # Cookie affinity maps, made on first use: only routes with affinity need
    # them, and hashing every endpoint of every backend on every build made up a
    # tenth of a rebuild. Made once per Backend, so a request's lookup is still
    # one dict probe. (Two threads may both make them: the results are equal.)
    _affinity: tuple[Mapping[Endpoint, str], Mapping[str, Endpoint]] | None = field(
        default=None, init=False, repr=False
    )

    @property
    def affinity_values(self) -> Mapping[Endpoint, str]:
        """The opaque session cookie value of each endpoint."""
        return self._affinity_maps()[0]

    @property
    def by_affinity(self) -> Mapping[str, Endpoint]:
        """The endpoint a session cookie value names."""
        return self._affinity_maps()[1]

    def _affinity_maps(self) -> tuple[Mapping[Endpoint, str], Mapping[str, Endpoint]]:
        maps = self._affinity
        if maps is None:
            values = {ep: affinity_value(self.name, ep) for ep in self.endpoints}
            by_value = {v: ep for ep, v in values.items()}
            maps = (MappingProxyType(values), MappingProxyType(by_value))
            object.__setattr__(self, "_affinity", maps)
        return maps

    # upstream-hash-by rings by subset size (0: one endpoint per node, chash.lua),
    # made once per Backend, i.e. once per endpoint set: a rebuild that keeps the
    # Service and its slices keeps the Backend and its rings. The builder makes
    # them for the routes that hash (routing/build.py), so no request pays for it.
    _rings: dict[int, HashTarget] = field(default_factory=dict, init=False, repr=False)

    def hash_ring(self, subset_size: int = 0) -> HashTarget:
        """The consistent-hash ring over the endpoints, and what each node stands for."""
        found = self._rings.get(subset_size)
        if found is None:
            found = hash_target(self.endpoints, subset_size)
            self._rings[subset_size] = found
        return found


class HashTarget:
    """A ring and its nodes: each node one endpoint (chash.lua), or with
    ``upstream-hash-by-subset`` a subset of them (chashsubset.lua)."""

    __slots__ = ("nodes", "ring")

    def __init__(self, ring: HashRing, nodes: tuple[tuple[Endpoint, ...], ...]) -> None:
        self.ring = ring
        self.nodes = nodes


def node_name(endpoint: Endpoint) -> str:
    """The node's name on the ring, as ingress-nginx writes it: ``address:port``,
    an IPv6 address in brackets (balancer.lua ``format_ipv6_endpoints``)."""
    host = endpoint.host
    if ":" in host:
        return f"[{host}]:{endpoint.port}"
    return f"{host}:{endpoint.port}"


def hash_target(endpoints: tuple[Endpoint, ...], subset_size: int = 0) -> HashTarget:
    if subset_size <= 0:
        ring = HashRing([node_name(e) for e in endpoints])
        return HashTarget(ring, tuple((e,) for e in endpoints))
    groups = subsets(len(endpoints), subset_size)
    # chashsubset.lua names the subsets "set1", "set2"...: the ring depends only on
    # how many there are.
    ring = HashRing([f"set{i + 1}" for i in range(len(groups))])
    return HashTarget(ring, tuple(tuple(endpoints[i] for i in g) for g in groups))


def affinity_value(backend: str, endpoint: Endpoint) -> str:
    """The session cookie value naming ``endpoint`` of ``backend``: opaque, not an address."""
    return hashlib.sha1(f"{backend}|{endpoint}".encode()).hexdigest()[:16]
