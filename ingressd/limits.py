"""Per-client request rate and concurrency limits, with nginx's semantics.

ingress-nginx turns ``limit-rps``/``limit-rpm`` into nginx ``limit_req`` zones
(``burst = rate * limit-burst-multiplier``, ``nodelay``) and
``limit-connections`` into ``limit_conn``, keyed by the client address, one set
of zones per Ingress. This module is that, without sockets: the clock is an
argument, so tests drive it.

``RateLimiter`` is nginx's leaky bucket as ``ngx_http_limit_req_module`` computes
it, in integers: ``excess`` is in thousandths of a request, time in
milliseconds, the rate in thousandths of a request per second (``n * 1000 // 60``
for a per-minute rate, as nginx truncates it). A request is allowed when
``max(0, excess - rate * ms // 1000 + 1000) <= burst * 1000``; a rejected one
changes nothing. A client seen for the first time starts at ``excess = 0``.

Memory is bounded: each table holds at most ``MAX_KEYS`` clients in LRU order.
Adding a client first drops up to two least recently seen ones whose bucket has
drained so far that forgetting them changes nothing (nginx's expiry), and a full
table drops its least recently seen client (what nginx does when its zone is
full).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import Route, RouteTable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_KEYS = 100_000  # clients remembered per Ingress and rate
DEFAULT_BURST_MULTIPLIER = 5  # ingress-nginx's limit-burst-multiplier default
EXEMPT_CACHE = 4096  # allow-list answers remembered per Ingress (parsing costs microseconds)


@dataclass(frozen=True, slots=True)
class LimitConfig:
    """The limit-* annotations of one Ingress (at least one limit is set)."""

    rps: int | None = None
    rpm: int | None = None
    connections: int | None = None
    burst_multiplier: int = DEFAULT_BURST_MULTIPLIER
    allowlist: tuple[Network, ...] = ()  # clients exempt from every limit


class RateLimiter:
    """nginx ``limit_req rate=N burst=B nodelay`` for one zone."""

    __slots__ = ("_table", "burst", "cap", "rate")

    def __init__(self, requests: int, per_seconds: int, burst: int, cap: int = MAX_KEYS) -> None:
        self.rate = requests * 1000 // per_seconds  # thousandths of a request per second
        self.burst = burst * 1000
        self.cap = cap
        # key -> [excess, last]: thousandths of a request, milliseconds
        self._table: OrderedDict[str, list[int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def check(self, key: str, ms: int) -> int:
        """The client's excess if this request were accounted; over ``burst``: rejected."""
        entry = self._table.get(key)
        if entry is None:
            return 0
        self._table.move_to_end(key)  # nginx bumps the node even when it rejects
        elapsed = ms - entry[1]
        if elapsed < 0:  # nginx's guard against its clock going back
            elapsed = 1 if elapsed < -60000 else 0
        excess = entry[0] - self.rate * elapsed // 1000 + 1000
        return excess if excess > 0 else 0

    def account(self, key: str, ms: int, excess: int) -> None:
        """Record an allowed request: ``excess`` is what ``check`` returned."""
        table = self._table
        entry = table.get(key)
        if entry is not None:
            entry[0] = excess
            entry[1] = ms
            return
        self._expire(ms)
        if len(table) >= self.cap:
            table.popitem(last=False)
        table[key] = [excess, ms]

    def allow(self, key: str, now: float) -> bool:
        """Account one request from ``key`` at ``now`` (seconds) if the bucket allows it."""
        ms = int(now * 1000)
        excess = self.check(key, ms)
        if excess > self.burst:
            return False
        self.account(key, ms, excess)
        return True

    def _expire(self, ms: int) -> None:
        # An entry whose next request would start from excess 0 anyway is the
        # same as no entry: forget it. Checking the two oldest, as nginx does,
        # keeps each insertion O(1) and the table from filling with idle clients.
        table = self._table
        for _ in range(2):
            if not table:
                return
            key, (excess, last) = next(iter(table.items()))
            if excess + 1000 > self.rate * max(ms - last, 0) // 1000:
                return
            del table[key]


class ConnLimiter:
    """nginx ``limit_conn N``: requests in flight per key."""

    __slots__ = ("_counts", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[str, int] = {}  # only keys with requests in flight

    def __len__(self) -> int:
        return len(self._counts)

    def count(self, key: str) -> int:
        return self._counts.get(key, 0)

    def acquire(self, key: str) -> bool:
        n = self._counts.get(key, 0)
        if n >= self.limit:
            return False
        self._counts[key] = n + 1
        return True

    def release(self, key: str) -> None:
        n = self._counts.get(key, 0)
        if n > 1:
            self._counts[key] = n - 1
        elif n == 1:
            del self._counts[key]
        # n == 0: nothing held (a bug elsewhere); never go negative.


class Slot:
    """One request's place in a ``ConnLimiter``; ``release`` is idempotent."""

    __slots__ = ("_conns", "_key")

    def __init__(self, conns: ConnLimiter, key: str) -> None:
        self._conns: ConnLimiter | None = conns
        self._key = key

    def release(self) -> None:
        conns, self._conns = self._conns, None
        if conns is not None:
            conns.release(self._key)


class IngressLimiter:
    """All limits of one Ingress, shared by all its paths."""

    __slots__ = ("_exempt_cache", "config", "conns", "ingress", "rates")

    def __init__(self, ingress: str, config: LimitConfig, cap: int = MAX_KEYS) -> None:
        self.ingress = ingress
        self.config = config
        mult = config.burst_multiplier
        # (limiter, rate, unit): burst = rate * multiplier, as ingress-nginx writes it
        self.rates = tuple(
            (RateLimiter(n, seconds, n * mult, cap), n, unit)
            for n, seconds, unit in ((config.rps, 1, "second"), (config.rpm, 60, "minute"))
            if n
        )
        self.conns = ConnLimiter(config.connections) if config.connections else None
        self._exempt_cache: dict[str, bool] = {}  # address -> in the allow-list

    def admit(self, client_ip: str, now: float) -> Slot | str | None:
        """May this client's request go ahead at ``now`` (seconds)?

        ``None``: yes; a ``Slot``: yes, and release it when the request ends;
        a string: no, it is the body of the 503 to answer.

        As in nginx, the rates are checked before the concurrency, and a
        request is accounted in every rate or in none.
        """
        if not client_ip or (self.config.allowlist and self._exempt(client_ip)):
            return None  # nginx does not limit an empty key
        if self.rates:
            ms = int(now * 1000)
            excesses = []
            for limiter, n, unit in self.rates:
                excess = limiter.check(client_ip, ms)
                if excess > limiter.burst:
                    return self._refusal(f"rate limit of {n} requests per {unit}", client_ip)
                excesses.append(excess)
            for (limiter, _, _), excess in zip(self.rates, excesses, strict=True):
                limiter.account(client_ip, ms, excess)
        conns = self.conns
        if conns is None:
            return None
        if not conns.acquire(client_ip):
            return self._refusal(f"limit of {conns.limit} concurrent requests", client_ip)
        return Slot(conns, client_ip)

    def _exempt(self, client_ip: str) -> bool:
        exempt = self._exempt_cache.get(client_ip)
        if exempt is None:
            if len(self._exempt_cache) >= EXEMPT_CACHE:
                self._exempt_cache.clear()
            exempt = self._exempt_cache[client_ip] = self._allowlisted(client_ip)
        return exempt

    def _allowlisted(self, client_ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(client_ip)
        except ValueError:
            return False
        return any(addr in net for net in self.config.allowlist)

    def _refusal(self, what: str, client_ip: str) -> str:
        return (
            f"503 Service Unavailable: {what} exceeded for {client_ip} on Ingress {self.ingress}\n"
        )


class LimitRegistry:
    """The live limiters, by (Ingress, limits): owned by the proxy, not the table.

    Tables are rebuilt and replaced all the time; the counters must outlive
    them. A changed limit annotation starts from fresh counters.
    """

    __slots__ = ("_limiters", "cap")

    def __init__(self, cap: int = MAX_KEYS) -> None:
        self.cap = cap
        self._limiters: dict[tuple[str, LimitConfig], IngressLimiter] = {}

    def __len__(self) -> int:
        return len(self._limiters)

    def get(self, ingress: str, config: LimitConfig) -> IngressLimiter:
        key = (ingress, config)
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = self._limiters[key] = IngressLimiter(ingress, config, self.cap)
        return limiter

    def retain(self, table: RouteTable) -> None:
        """Forget the limiters of Ingresses (or limit settings) ``table`` no longer has.

        Requests still in flight keep their ``Slot``; releasing it is harmless. A
        request still routed by the old table may bring an old limiter back: the
        next rebuild drops it again.
        """
        live = {(r.ingress, r.policy.limits) for r in _routes(table) if r.policy.limits}
        for key in [k for k in self._limiters if k not in live]:
            del self._limiters[key]


def _routes(table: RouteTable) -> Iterator[Route]:
    vhosts: Iterable = (*table.exact_hosts.values(), *table.wildcard_hosts.values())
    if table.catch_all is not None:
        vhosts = (*vhosts, table.catch_all)
    for vhost in vhosts:
        yield from vhost.exact.values()
        yield from vhost.prefix.values()
        yield from vhost.regex
        if vhost.default is not None:
            yield vhost.default
    if table.default is not None:
        yield table.default
