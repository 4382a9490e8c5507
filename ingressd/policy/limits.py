"""Per-client request rate and concurrency limits, with nginx's semantics, per pod.

ingress-nginx turns ``limit-rps``/``limit-rpm`` into nginx ``limit_req`` zones
(``burst = rate * limit-burst-multiplier``, ``nodelay``) and
``limit-connections`` into ``limit_conn``, keyed by the client address, one set
of zones per Ingress (``internal/ingress/annotations/ratelimit/main.go``). The
zones live in shared memory, so a limit holds for the pod, whichever nginx
worker takes a connection. This module is that, without sockets: the clock is an
argument, so tests drive it.

**The arithmetic** is nginx's leaky bucket as ``ngx_http_limit_req_module``
computes it, in integers: ``excess`` is in thousandths of a request, time in
milliseconds, the rate in thousandths of a request per second (``n * 1000 // 60``
for a per-minute rate, as nginx truncates it). A request is allowed when
``max(0, excess - rate * ms // 1000 + 1000) <= burst * 1000``; a rejected one
changes nothing but the client's recency. A client seen for the first time
starts at ``excess = 0``. With both rates, a request is accounted in both or in
neither; the rates are checked before the concurrency (nginx runs limit_req
before limit_conn), so a request refused for concurrency still counts against
the rates.

**The table** (``LimitTable``) holds every client's counters in one fixed
block of memory: an mmap that the main process creates and hands to every
worker (``shared_limits.py``), or a private one when a single process serves.
One entry per (Ingress, limit settings, client address) holds both rates and
one count of requests in flight per process. A key hashes (BLAKE2b, keyed by
a secret made with the table, so nobody can aim at a bucket) to a bucket of
``WAYS`` entries; finding a client scans that bucket only.

- Reading and changing an entry happens under a lock on its bucket: an
  ``fcntl`` record lock on one byte of the table's file, which the kernel
  releases when a process dies, so a crashed worker never wedges the others.
  A private table takes no lock.
- Each process counts its requests in flight in its own column of the entry
  (taken under the lock, so the limit is exact; given back without one, since
  nobody else writes that column). When a worker dies the main process zeroes
  its column: the places its requests held are free again.
- Memory is bounded by the table's size. An entry whose buckets have drained
  so far that the next request would start from 0 anyway, and that holds no
  request in flight, is as good as absent, and is reused first. A full bucket
  drops its least recently seen entry that holds no request in flight (nginx
  drops the oldest node when its zone is full). When every entry of the bucket
  holds requests in flight the request is refused with the limit's status
  (503 unless the ConfigMap says otherwise), never let through: nginx's
  ``ngx_http_limit_req_lookup`` forces out the oldest nodes
  (``ngx_http_limit_req_expire(ctx, 0)``) and, when it still cannot allocate,
  returns NGX_ERROR, which ``ngx_http_limit_req_handler`` answers with
  ``limit_req_status``; ``limit_conn`` answers ``limit_conn_status`` when it cannot
  allocate a node. Counted in ``ingressd_limit_table_full_total``.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import itertools
import logging
import mmap
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Final

from ..model.policy import LimitConfig

if TYPE_CHECKING:
    from ..model.table import Route, RouteTable

log: Final = logging.getLogger("ingressd.limits")

EXEMPT_CACHE: Final = 4096  # allow-list answers remembered per Ingress (parsing costs microseconds)

# The table: entries per bucket, and how many entries by default (over all
# Ingresses). ingress-nginx gives each zone 5 MB: 40,000 to 80,000 clients.
WAYS: Final = 8
DEFAULT_ENTRIES: Final = 1 << 18

# Layout, in 8-byte words. The header:
_MAGIC: Final = 0x31544D4C44474E49  # "INGDLMT1", little-endian
_H_MAGIC: Final = 0
_H_BUCKETS: Final = 1
_H_WAYS: Final = 2
_H_COLUMNS: Final = 3
_H_SLOT_WORDS: Final = 4
_H_IN_USE: Final = 5
_SECRET_OFFSET: Final = 64  # bytes: the 32-byte hash key
_HEADER_WORDS: Final = 16
# A bucket: its clock (a counter of the times an entry of it was seen: its
# entries' recency, exact across processes where milliseconds would tie), then
# WAYS entries. An entry: its key, its recency, when it drains, the two rates,
# then one 32-bit count of requests in flight per process.
_TAG: Final = 0
_ZONE: Final = 1
_SEEN: Final = 2
_EXPIRES: Final = 3
_EXCESS: Final = 4  # rate i: _EXCESS + 2 * i
_LAST: Final = 5
_FIELDS: Final = 8
_MASK63: Final = (1 << 63) - 1

# What LimitTable.admit answers besides an entry's offset (a place was taken).
ADMITTED: Final = -1  # allowed, no place taken (no concurrency limit)
REFUSED_CONNS: Final = -2
NO_ROOM: Final = -3  # every entry of the bucket holds requests in flight
REFUSED_RATE: Final = -4  # rate i refused: REFUSED_RATE - i

_private_zones: Final = itertools.count(1)  # zones of standalone limiters (tests)
FULL_LOG_EVERY: Final = 10_000  # ms between two warnings that the table is full


def table_bytes(entries: int, columns: int) -> int:
    """Size of a table of ``entries`` (rounded down to whole buckets) for ``columns`` processes."""
    buckets = max(1, entries // WAYS)
    return (_HEADER_WORDS + buckets * _bucket_words(columns)) * 8


def format_table(buf: mmap.mmap, columns: int) -> None:
    """Write the header of a fresh (all-zero) table filling ``buf``."""
    words = _slot_words(columns)
    buckets = (len(buf) // 8 - _HEADER_WORDS) // _bucket_words(columns)
    if buckets < 1 or columns < 1:
        raise ValueError("a limit table needs at least one bucket and one column")
    q = memoryview(buf).cast("q")
    try:
        q[_H_BUCKETS] = buckets
        q[_H_WAYS] = WAYS
        q[_H_COLUMNS] = columns
        q[_H_SLOT_WORDS] = words
        buf[_SECRET_OFFSET : _SECRET_OFFSET + 32] = os.urandom(32)
        q[_H_MAGIC] = _MAGIC
    finally:
        q.release()


def private_table(entries: int = DEFAULT_ENTRIES) -> LimitTable:
    """A table for one process: anonymous memory (touched only as it is used), no locks."""
    buf = mmap.mmap(-1, table_bytes(entries, 1))
    format_table(buf, 1)
    return LimitTable(buf, -1, 0)


def _slot_words(columns: int) -> int:
    return _FIELDS + (columns + 1) // 2


def _bucket_words(columns: int) -> int:
    return 1 + WAYS * _slot_words(columns)


def _excess(excess: int, last: int, rate: int, ms: int) -> int:
    """The excess after one more request at ``ms``, as ngx_http_limit_req_lookup computes it."""
    elapsed = ms - last
    if elapsed < 0:  # nginx's guard against its clock going back
        elapsed = 1 if elapsed < -60000 else 0
    excess = excess - rate * elapsed // 1000 + 1000
    return excess if excess > 0 else 0


class LimitTable:
    """Every client's counters, in a fixed block of memory (see the module docstring).

    ``fd`` is the file the memory maps, whose record locks guard the buckets
    (-1: private memory, one process, no locks); ``column`` is this process's
    column of in-flight counts.
    """

    __slots__ = (
        "_c",
        "_q",
        "bucket_words",
        "buckets",
        "buf",
        "column",
        "columns",
        "fd",
        "full_logged",
        "latest",
        "secret",
        "slot_words",
    )

    def __init__(self, buf: mmap.mmap, fd: int, column: int) -> None:
        q = memoryview(buf).cast("q")
        if len(q) < _HEADER_WORDS or q[_H_MAGIC] != _MAGIC or q[_H_WAYS] != WAYS:
            q.release()
            raise ValueError("not an ingressd limit table")
        self.buckets: int = q[_H_BUCKETS]
        self.columns: int = q[_H_COLUMNS]
        self.slot_words: int = q[_H_SLOT_WORDS]
        self.bucket_words = 1 + WAYS * self.slot_words
        end = (_HEADER_WORDS + self.buckets * self.bucket_words) * 8
        if not 0 <= column < self.columns or end > len(buf):
            q.release()
            raise ValueError(f"limit table: column {column} or size does not fit its header")
        self.buf = buf
        self.fd = fd
        self.column = column
        self.secret = bytes(buf[_SECRET_OFFSET : _SECRET_OFFSET + 32])
        self._q = q
        self._c = memoryview(buf).cast("i")  # the in-flight counts, 32 bits each
        self.latest = 0  # the latest millisecond this process asked about (for live())
        self.full_logged = -FULL_LOG_EVERY  # when no_room() last logged

    @property
    def capacity(self) -> int:
        return self.buckets * WAYS

    def close(self) -> None:
        self._q.release()
        self._c.release()
        self.buf.close()

    # -- keys ------------------------------------------------------------------------

    def hasher(self, zone: int) -> hashlib.blake2b:
        """The keyed hash of ``zone``'s keys, to be copied per client (see ``locate``)."""
        h = hashlib.blake2b(digest_size=16, key=self.secret)
        h.update(zone.to_bytes(8, "little"))
        return h

    def locate(self, hasher: hashlib.blake2b, client: str) -> tuple[int, int]:
        """(bucket, tag) of ``client`` in the zone ``hasher`` was made for; tags are never 0."""
        h = hasher.copy()
        h.update(client.encode())
        value = int.from_bytes(h.digest(), "little")
        return (value >> 64) % self.buckets, (value & _MASK63) | 1

    # -- the one operation requests make -----------------------------------------------

    def admit(
        self,
        zone: int,
        bucket: int,
        tag: int,
        ms: int,
        rates: tuple[RateLimiter, ...],
        connections: int,
    ) -> int:
        """Check and account one request: every rate, then ``connections`` (0: none).

        Answers ADMITTED, the entry's offset when a place was taken (give it
        back with ``release``), or why not: REFUSED_RATE - i, REFUSED_CONNS, NO_ROOM.
        """
        if ms > self.latest:
            self.latest = ms
        fd = self.fd
        if fd >= 0:
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, bucket)
        try:
            return self._admit(zone, bucket, tag, ms, rates, connections)
        finally:
            if fd >= 0:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, bucket)

    def _admit(
        self,
        zone: int,
        bucket: int,
        tag: int,
        ms: int,
        rates: tuple[RateLimiter, ...],
        connections: int,
    ) -> int:
        # Once per request with a limit: the helpers (_find, _seen, _held) are inlined.
        q = self._q
        words = self.slot_words
        first = _HEADER_WORDS + bucket * self.bucket_words + 1
        at = first
        end = first + WAYS * words
        while at < end and (q[at] != tag or q[at + _ZONE] != zone):
            at += words
        held = 0
        # The excess of each rate (at most two: limit-rps, limit-rpm) if accounted.
        excess0 = excess1 = 0
        if at < end:
            # nginx bumps a node even when it refuses the request
            clock = q[first - 1] + 1
            q[first - 1] = clock
            q[at + _SEEN] = clock
            for i, rate in enumerate(rates):
                field = at + _EXCESS + 2 * rate.field
                elapsed = ms - q[field + 1]
                if elapsed < 0:  # nginx's guard against its clock going back
                    elapsed = 1 if elapsed < -60000 else 0
                excess = q[field] - rate.rate * elapsed // 1000 + 1000
                if excess < 0:
                    excess = 0
                if excess > rate.burst:
                    return REFUSED_RATE - i
                if i == 0:
                    excess0 = excess
                else:
                    excess1 = excess
            if connections:
                c = self._c
                cell = (at + _FIELDS) * 2
                for i in range(cell, cell + self.columns):
                    held += c[i]
        else:
            # A new client starts from 0, which every burst allows.
            at = self._allocate(first, zone, tag, ms)
            if at < 0:
                return NO_ROOM
        expires: int = q[at + _EXPIRES]
        for i, rate in enumerate(rates):
            excess = excess0 if i == 0 else excess1
            field = at + _EXCESS + 2 * rate.field
            q[field] = excess
            q[field + 1] = ms
            # Forgettable once a request would start from 0 again:
            # rate * (t - ms) // 1000 >= excess + 1000.
            drained = ms - (-(excess + 1000) * 1000 // rate.rate)
            if drained > expires:
                expires = drained
        q[at + _EXPIRES] = expires
        if not connections:
            return ADMITTED
        if held >= connections:
            return REFUSED_CONNS
        self._c[(at + _FIELDS) * 2 + self.column] += 1
        return at

    def window_admit(
        self, zone: int, bucket: int, tag: int, ms: int, window_ms: int, limit: int
    ) -> int:
        """global-rate-limit's sliding window (lua-resty-global-throttle, which
        ingress-nginx's global_throttle.lua uses): a request is allowed while
        ``previous * (window - elapsed) / window + current < limit``, where
        ``current`` counts this window's allowed requests and ``previous`` the last
        window's; an allowed one is counted. ADMITTED, REFUSED_RATE or NO_ROOM.

        The entry's first rate words hold (current, window number), the second's
        first word ``previous``; it is forgettable two windows after its own."""
        if ms > self.latest:
            self.latest = ms
        fd = self.fd
        if fd >= 0:
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, bucket)
        try:
            q = self._q
            first = _HEADER_WORDS + bucket * self.bucket_words + 1
            at = self._find(first, zone, tag)
            if at < 0:
                at = self._allocate(first, zone, tag, ms)
                if at < 0:
                    return NO_ROOM
            else:
                self._seen(first, at)
            index = ms // window_ms
            current, previous = q[at + _EXCESS], q[at + _EXCESS + 2]
            seen_index = q[at + _LAST]
            if index != seen_index:
                previous = current if index == seen_index + 1 else 0
                current = 0
                q[at + _LAST] = index
                q[at + _EXCESS + 2] = previous
            elapsed = ms - index * window_ms
            if previous * (window_ms - elapsed) + current * window_ms >= limit * window_ms:
                q[at + _EXCESS] = current
                return REFUSED_RATE
            q[at + _EXCESS] = current + 1
            expires = (index + 2) * window_ms
            if expires > q[at + _EXPIRES]:
                q[at + _EXPIRES] = expires
            return ADMITTED
        finally:
            if fd >= 0:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, bucket)

    def no_room(self, ms: int) -> None:
        """A request got NO_ROOM: say so, at most every FULL_LOG_EVERY ms (nginx logs
        "could not allocate node" each time)."""
        if ms - self.full_logged >= FULL_LOG_EVERY:
            self.full_logged = ms
            log.warning(
                "limit table full: a bucket's %d entries all hold requests in flight, "
                "so a request was refused; raise --limit-entries (now %d)",
                WAYS,
                self.capacity,
            )

    def release(self, at: int) -> None:
        """Give back a place taken by ``admit`` (no lock: only this process writes its column)."""
        cell = (at + _FIELDS) * 2 + self.column
        c = self._c
        if c[cell] > 0:
            c[cell] -= 1

    # -- entries -------------------------------------------------------------------------

    def _first(self, bucket: int) -> int:
        """The offset of the bucket's first entry (its clock is the word before)."""
        return _HEADER_WORDS + bucket * self.bucket_words + 1

    def _seen(self, first: int, at: int) -> None:
        q = self._q
        clock = q[first - 1] + 1
        q[first - 1] = clock
        q[at + _SEEN] = clock

    def _find(self, first: int, zone: int, tag: int) -> int:
        q = self._q
        words = self.slot_words
        at = first
        for _ in range(WAYS):
            if q[at] == tag and q[at + _ZONE] == zone:
                return at
            at += words
        return -1

    def _held(self, at: int) -> int:
        c = self._c
        cell = (at + _FIELDS) * 2
        held = 0
        for i in range(cell, cell + self.columns):
            held += c[i]
        return held

    def _allocate(self, first: int, zone: int, tag: int, ms: int) -> int:
        """An entry for a new key: a free or forgettable one, else the least recently
        seen one without requests in flight; -1 when every one has some."""
        q = self._q
        words = self.slot_words
        at = first
        chosen = -1
        oldest = 0
        for _ in range(WAYS):
            if q[at] == 0:
                chosen = at
                break
            if self._held(at) == 0:
                if q[at + _EXPIRES] <= ms:
                    chosen = at  # drained: the same as no entry
                    break
                if chosen < 0 or q[at + _SEEN] < oldest:
                    chosen, oldest = at, q[at + _SEEN]
            at += words
        if chosen < 0:
            return -1
        # The in-flight counts are all 0 already (only such entries are reused), and
        # stay untouched: each column is written by its own process only.
        q[chosen + _ZONE] = zone
        self._seen(first, chosen)
        q[chosen + _EXPIRES] = ms
        for field in range(chosen + _EXCESS, chosen + _FIELDS):
            q[field] = 0
        q[chosen + _TAG] = tag
        if not q[_H_IN_USE]:
            q[_H_IN_USE] = 1
        return chosen

    # -- looking without counting (tests, introspection) ----------------------------------

    def check(self, zone: int, bucket: int, tag: int, ms: int, rate: RateLimiter) -> int:
        """The client's excess in ``rate`` if a request were accounted at ``ms``."""
        fd = self.fd
        if fd >= 0:
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, bucket)
        try:
            first = self._first(bucket)
            at = self._find(first, zone, tag)
            if at < 0:
                return 0
            self._seen(first, at)
            q = self._q
            field = at + _EXCESS + 2 * rate.field
            return _excess(q[field], q[field + 1], rate.rate, ms)
        finally:
            if fd >= 0:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, bucket)

    def held(self, zone: int, bucket: int, tag: int) -> int:
        """Requests in flight for the key, over all processes."""
        at = self._find(self._first(bucket), zone, tag)
        return self._held(at) if at >= 0 else 0

    def release_key(self, zone: int, bucket: int, tag: int) -> None:
        """Give back one of this process's places for the key, if it holds any."""
        at = self._find(self._first(bucket), zone, tag)
        if at >= 0:
            self.release(at)

    def live(self, zone: int, in_flight_only: bool = False) -> int:
        """Entries of ``zone`` that still matter: with requests in flight, or (unless
        ``in_flight_only``) not drained as of the latest time this process asked about."""
        q = self._q
        latest = self.latest
        count = 0
        for bucket in range(self.buckets):
            at = self._first(bucket)
            for _ in range(WAYS):
                if q[at] == 0 or q[at + _ZONE] != zone:
                    pass
                elif self._held(at) > 0 or (not in_flight_only and q[at + _EXPIRES] > latest):
                    count += 1
                at += self.slot_words
        return count

    def clear_column(self, column: int) -> None:
        """Forget the places a process that died held (called by the main process
        before that worker is started again, so nobody else writes the column)."""
        if not self._q[_H_IN_USE]:
            return  # never used: do not touch (and so allocate) every page
        c = self._c
        for bucket in range(self.buckets):
            cell = (self._first(bucket) + _FIELDS) * 2 + column
            for _ in range(WAYS):
                if c[cell]:
                    c[cell] = 0
                cell += self.slot_words * 2


class RateLimiter:
    """nginx ``limit_req rate=N burst=B nodelay``: one zone's rate in a ``LimitTable``.

    Standalone (no ``table``) it gets a private table of ``cap`` entries.
    ``field`` says which of an entry's two rates it is.
    """

    __slots__ = ("_hasher", "burst", "field", "rate", "table", "zone")

    def __init__(
        self,
        requests: int,
        per_seconds: int,
        burst: int,
        cap: int = DEFAULT_ENTRIES,
        *,
        table: LimitTable | None = None,
        zone: int = 0,
        field: int = 0,
    ) -> None:
        self.rate = requests * 1000 // per_seconds  # thousandths of a request per second
        self.burst = burst * 1000
        self.table = table if table is not None else private_table(cap)
        self.zone = zone or next(_private_zones)
        self.field = field
        self._hasher = self.table.hasher(self.zone)

    def __len__(self) -> int:
        return self.table.live(self.zone)

    def check(self, key: str, ms: int) -> int:
        """The client's excess if this request were accounted; over ``burst``: rejected."""
        bucket, tag = self.table.locate(self._hasher, key)
        return self.table.check(self.zone, bucket, tag, ms, self)

    def allow(self, key: str, now: float) -> bool:
        """Account one request from ``key`` at ``now`` (seconds) if the bucket allows it."""
        bucket, tag = self.table.locate(self._hasher, key)
        verdict = self.table.admit(self.zone, bucket, tag, int(now * 1000), (self,), 0)
        return verdict == ADMITTED


class ConnLimiter:
    """nginx ``limit_conn N``: requests in flight per key, in a ``LimitTable``."""

    __slots__ = ("_hasher", "limit", "table", "zone")

    def __init__(self, limit: int, *, table: LimitTable | None = None, zone: int = 0) -> None:
        self.limit = limit
        self.table = table if table is not None else private_table(WAYS * 64)
        self.zone = zone or next(_private_zones)
        self._hasher = self.table.hasher(self.zone)

    def __len__(self) -> int:
        """Keys with requests in flight."""
        return self.table.live(self.zone, in_flight_only=True)

    def count(self, key: str) -> int:
        bucket, tag = self.table.locate(self._hasher, key)
        return self.table.held(self.zone, bucket, tag)

    def acquire(self, key: str) -> bool:
        bucket, tag = self.table.locate(self._hasher, key)
        return self.table.admit(self.zone, bucket, tag, self.table.latest, (), self.limit) >= 0

    def release(self, key: str) -> None:
        bucket, tag = self.table.locate(self._hasher, key)
        self.table.release_key(self.zone, bucket, tag)  # nothing held: nothing to do


class Slot:
    """One request's place in a ``LimitTable``; ``release`` is idempotent."""

    __slots__ = ("_at", "_table")

    def __init__(self, table: LimitTable, at: int) -> None:
        self._table: LimitTable | None = table
        self._at = at

    def release(self) -> None:
        table, self._table = self._table, None
        if table is not None:
            table.release(self._at)


def zone_id(ingress: str, config: LimitConfig) -> int:
    """The same number in every process for the same Ingress and limit settings
    (``hash()`` is salted per process), so workers share counters, and a changed
    setting starts from fresh ones."""
    digest = hashlib.blake2b(f"{ingress}\0{config!r}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "little") & _MASK63) | 1


class IngressLimiter:
    """All limits of one Ingress, shared by all its paths (and all worker processes)."""

    __slots__ = (
        "_exempt_cache",
        "_hasher",
        "_limit",
        "_rates",
        "config",
        "conns",
        "ingress",
        "rates",
        "refused_conns",
        "table",
        "table_full",
        "zone",
    )

    def __init__(self, ingress: str, config: LimitConfig, table: LimitTable | None = None) -> None:
        self.ingress = ingress
        # Whether the last refusal was limit_conn's (else limit_req's): the status
        # answered differs when the ConfigMap sets limit-conn-status-code.
        self.refused_conns = False
        self.table_full = False  # whether the last refusal was for want of room
        self.config = config
        self.table = table if table is not None else private_table()
        self.zone = zone_id(ingress, config)
        mult = config.burst_multiplier
        # (limiter, rate, unit): burst = rate * multiplier, as ingress-nginx writes it
        self.rates = tuple(
            (
                RateLimiter(n, seconds, n * mult, table=self.table, zone=self.zone, field=field),
                n,
                unit,
            )
            for field, n, seconds, unit in (
                (0, config.rps, 1, "second"),
                (1, config.rpm, 60, "minute"),
            )
            if n
        )
        self._rates = tuple(limiter for limiter, _, _ in self.rates)
        self.conns = (
            ConnLimiter(config.connections, table=self.table, zone=self.zone)
            if config.connections
            else None
        )
        self._limit = config.connections or 0
        self._hasher = self.table.hasher(self.zone)
        self._exempt_cache: dict[str, bool] = {}  # address -> in the allow-list

    def admit(self, client_ip: str, now: float) -> Slot | str | None:
        """May this client's request go ahead at ``now`` (seconds)?

        ``None``: yes; a ``Slot``: yes, and release it when the request ends;
        a string: no, it is the body of the 503 to answer.
        """
        if not client_ip or (self.config.allowlist and self._exempt(client_ip)):
            return None  # nginx does not limit an empty key
        table = self.table
        h = self._hasher.copy()  # table.locate, inlined: once per limited request
        h.update(client_ip.encode())
        value = int.from_bytes(h.digest(), "little")
        limit = self._limit
        ms = int(now * 1000)
        verdict = table.admit(
            self.zone, (value >> 64) % table.buckets, (value & _MASK63) | 1, ms, self._rates, limit
        )
        if verdict == ADMITTED:
            return None
        if verdict >= 0:
            return Slot(table, verdict)
        self.table_full = False
        if verdict == REFUSED_CONNS:
            self.refused_conns = True
            return self._refusal(f"limit of {limit} concurrent requests", client_ip)
        if verdict == NO_ROOM:
            self.refused_conns = self.conns is not None
            self.table_full = True
            table.no_room(ms)
            return (
                f"503 Service Unavailable: no room to count the requests of {client_ip} "
                f"on Ingress {self.ingress} (the limit table is full)\n"
            )
        _, n, unit = self.rates[REFUSED_RATE - verdict]
        self.refused_conns = False
        return self._refusal(f"rate limit of {n} requests per {unit}", client_ip)

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
    them (they live in ``table``, keyed by ``zone_id``). A changed limit
    annotation starts from fresh counters (changed back before the old ones
    drained, it finds those again, as nginx keeps a zone across reloads).
    Without a ``table``, a private one of ``entries`` is made on first use.
    """

    __slots__ = ("_limiters", "_table", "entries")

    def __init__(self, table: LimitTable | None = None, entries: int = DEFAULT_ENTRIES) -> None:
        self._table = table
        self.entries = entries
        self._limiters: dict[tuple[str, LimitConfig], IngressLimiter] = {}

    def __len__(self) -> int:
        return len(self._limiters)

    @property
    def table(self) -> LimitTable:
        if self._table is None:
            self._table = private_table(self.entries)
        return self._table

    def get(self, ingress: str, config: LimitConfig) -> IngressLimiter:
        key = (ingress, config)
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = self._limiters[key] = IngressLimiter(ingress, config, self.table)
        return limiter

    def retain(self, table: RouteTable) -> None:
        """Forget the limiters of Ingresses (or limit settings) ``table`` no longer has.

        Their entries in the limit table drain and are reused like any other.
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
