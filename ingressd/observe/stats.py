"""Counting what the proxy does, cheaply enough for the hot path.

Why not prometheus-client's metric objects per request: every
``labels(...).inc()`` or ``observe()`` is a label lookup, a lock and a method
call, and a request touches half a dozen metrics: several µs per request. Here
a finished request costs one dict probe on a tuple key and a few increments of
a ``RequestRecord``'s typed attributes (``RequestStats.request``); records are
copied out as plain lists (``view``, ``report``) and turned into metric
families only when Prometheus scrapes (``metrics.py``).

With ``--workers N`` each worker counts in its own ``RequestStats`` and sends
what changed to the main process about once a second (``report``); the main
process keeps the latest numbers of every worker, and those of workers that
died, in ``WorkerTotals`` (see the reasoning there).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

# Seconds; the proxy's own share is well under a millisecond, so the low end is
# finer than Prometheus's default buckets. +Inf is implied.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
REBUILD_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# One record per RequestKey, as views and reports carry it: a flat list, indexed by these.
COUNT, BYTES_IN, BYTES_OUT, DURATION_SUM, UPSTREAM_COUNT, UPSTREAM_SUM = range(6)
DURATION_BUCKETS = 6  # len(BUCKETS) + 1 counts (the last is +Inf), not cumulative
UPSTREAM_BUCKETS = DURATION_BUCKETS + len(BUCKETS) + 1
RECORD_SIZE: Final = UPSTREAM_BUCKETS + len(BUCKETS) + 1
# RequestRecord.buckets: the duration's counts, then the upstream's, from here.
_UPSTREAM_AT: Final = len(BUCKETS) + 1
# bucket()'s bounds as a list of floats: compiled, a loop over it compares machine floats.
_BOUNDS: Final[list[float]] = list(BUCKETS)

# (Ingress "namespace/name", backend "namespace/service:port", method, status).
# The method and status are kept as they came (cheaper than normalising per
# request, and bounded: the parser knows ~35 methods, statuses are 3 digits);
# the collector folds them into a fixed set of methods and status classes.
# The names are route-table values, never anything a client sent, so the
# number of series stays bounded by the table. Requests no Ingress answered
# have "" for both names.
RequestKey = tuple[str, str, bytes, int]
# (Ingress, backend, kind or reason)
EventKey = tuple[str, str, str]
# Layer-4 sessions (stream/): (kind "tcp", "udp" or "passthrough", what was
# listened to: "tcp/9000" or the passthrough host, backend "namespace/service:port",
# status as nginx's stream $status: 200, 502 no upstream). Bounded as RequestKey:
# every part comes from the configuration, never from a client.
StreamKey = tuple[str, str, str, int]
# One record per StreamKey: sessions, bytes from clients, bytes to clients.
SESSIONS, STREAM_IN, STREAM_OUT = range(3)

_METHOD_NAMES = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")
METHODS: dict[bytes, str] = {m.encode(): m for m in _METHOD_NAMES}
OTHER_METHOD = "OTHER"  # the label of every other method


def new_record() -> list[float]:
    return [0] * RECORD_SIZE


def bucket(value: float) -> int:
    """The histogram bucket ``value`` falls in: the first bound it does not
    exceed, ``len(BUCKETS)`` for +Inf (what ``bisect_left(BUCKETS, value)``
    gives). A scan from the low end rather than a call of ``bisect``: compiled,
    the call cost about 230 ns (the float boxed, the bounds compared as
    objects), the scan 25-70 ns; a proxy's durations mostly fall in the first
    buckets. (Pure Python: 70 ns to 160 ns at 30 ms, 350 beyond the last bound.)"""
    i = 0
    for bound in _BOUNDS:
        if value <= bound:
            return i
        i += 1
    return i


class RequestRecord:
    """One RequestKey's counts since the process started.

    Typed attributes rather than the flat list views carry: compiled, each
    increment is a machine add in the object, where an item of a list of
    floats was unboxed, added and boxed again (a new float per increment).
    ``as_list`` gives the flat list (``COUNT``, ``BYTES_IN``, ...).
    """

    __slots__ = (
        "buckets",
        "bytes_in",
        "bytes_out",
        "count",
        "duration_sum",
        "upstream_count",
        "upstream_sum",
    )

    def __init__(self) -> None:
        self.count = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.duration_sum = 0.0
        self.upstream_count = 0
        self.upstream_sum = 0.0
        # Not cumulative: the duration's len(BUCKETS) + 1 counts (+Inf last), then the upstream's.
        self.buckets: list[int] = [0] * (2 * _UPSTREAM_AT)

    def as_list(self) -> list[float]:
        """The record as views and reports carry it: indexed by COUNT, BYTES_IN, ..."""
        rec: list[float] = [
            self.count,
            self.bytes_in,
            self.bytes_out,
            self.duration_sum,
            self.upstream_count,
            self.upstream_sum,
        ]
        rec.extend(self.buckets)
        return rec


class RequestStats:
    """One process's counts since it started; only ever written by its event loop."""

    __slots__ = (
        "_reported",
        "accepted",
        "limit_full",
        "mirrors",
        "requests",
        "retries",
        "spans",
        "stream_open",
        "streams",
        "upstream_errors",
    )

    def __init__(self) -> None:
        self.requests: dict[RequestKey, RequestRecord] = {}
        self.streams: dict[StreamKey, list[int]] = {}
        # Layer-4 sessions open now, by listener ("tcp/9000", "udp/53", "https/443"
        # for passthrough): kept up to date by stream/bounds.py's SessionTable.
        self.stream_open: dict[str, int] = {}
        self.upstream_errors: dict[EventKey, int] = {}
        self.retries: dict[EventKey, int] = {}
        # mirror-target copies by (ingress, target host, sent|failed|dropped)
        self.mirrors: dict[EventKey, int] = {}
        # Requests refused because the limit table had no room to count them, by
        # (ingress, "", limit): limit-rps, limit-rpm, limit-connections, global-rate-limit.
        self.limit_full: dict[EventKey, int] = {}
        self.accepted = 0  # client connections
        # OpenTelemetry spans: exported, failed to export, dropped (observe/tracing.py
        # SpanQueue adds to them, the export thread to the first two).
        self.spans: list[int] = [0, 0, 0]
        self._reported: dict[RequestKey, float] = {}  # COUNT of each record at the last report

    def request(
        self,
        ingress: str,
        backend: str,
        method: bytes,
        status: int,
        duration: float,
        upstream: float | None,
        bytes_in: int,
        bytes_out: int,
    ) -> None:
        """A finished request; ``upstream`` is None when no upstream answered it."""
        key = (ingress, backend, method, status)
        rec = self.requests.get(key)
        if rec is None:
            rec = self.requests[key] = RequestRecord()
        rec.count += 1
        rec.bytes_in += bytes_in
        rec.bytes_out += bytes_out
        rec.duration_sum += duration
        buckets = rec.buckets
        buckets[bucket(duration)] += 1
        if upstream is not None:
            rec.upstream_count += 1
            rec.upstream_sum += upstream
            buckets[_UPSTREAM_AT + bucket(upstream)] += 1

    def upstream_error(self, ingress: str, backend: str, kind: str) -> None:
        key = (ingress, backend, kind)
        self.upstream_errors[key] = self.upstream_errors.get(key, 0) + 1

    def retry(self, ingress: str, backend: str, reason: str) -> None:
        key = (ingress, backend, reason)
        self.retries[key] = self.retries.get(key, 0) + 1

    def mirror(self, ingress: str, target: str, result: str) -> None:
        key = (ingress, target, result)
        self.mirrors[key] = self.mirrors.get(key, 0) + 1

    def table_full(self, ingress: str, limit: str) -> None:
        key = (ingress, "", limit)
        self.limit_full[key] = self.limit_full.get(key, 0) + 1

    def stream(self, key: StreamKey, bytes_in: int, bytes_out: int) -> None:
        """A finished layer-4 session (a TCP connection, a UDP flow)."""
        rec = self.streams.get(key)
        if rec is None:
            rec = self.streams[key] = [0, 0, 0]
        rec[0] += 1
        rec[1] += bytes_in
        rec[2] += bytes_out

    def view(self, active: int) -> ProxyView:
        """A copy of the numbers, to be read while the proxy goes on counting."""
        return ProxyView(
            {key: rec.as_list() for key, rec in self.requests.items()},
            dict(self.upstream_errors),
            dict(self.retries),
            self.accepted,
            active,
            {key: rec.copy() for key, rec in self.streams.items()},
            dict(self.stream_open),
            dict(self.mirrors),
            _spans(self.spans),
            dict(self.limit_full),
        )

    def report(self, active: int) -> Report:
        """What changed since the last report, copied, for the main process.

        Every request adds to its record's COUNT, so a record whose count is
        unchanged is unchanged; only the others are sent.
        """
        reported = self._reported
        changed = {}
        for key, rec in self.requests.items():
            if reported.get(key) != rec.count:
                reported[key] = rec.count
                changed[key] = rec.as_list()
        return Report(
            changed,
            dict(self.upstream_errors),
            dict(self.retries),
            self.accepted,
            active,
            {key: rec.copy() for key, rec in self.streams.items()},
            dict(self.stream_open),
            dict(self.mirrors),
            _spans(self.spans),
            dict(self.limit_full),
        )


def _spans(counts: list[int]) -> tuple[int, int, int]:
    return (counts[0], counts[1], counts[2])


@dataclass(frozen=True, slots=True)
class Report:
    """A worker's cumulative numbers: the records changed since its last report, the rest whole."""

    requests: dict[RequestKey, list[float]]
    upstream_errors: dict[EventKey, int]
    retries: dict[EventKey, int]
    accepted: int
    active: int  # client connections open now: a gauge, not kept once the worker is gone
    streams: dict[StreamKey, list[int]] = field(default_factory=dict)  # cumulative, whole
    stream_open: dict[str, int] = field(default_factory=dict)  # a gauge, as active
    mirrors: dict[EventKey, int] = field(default_factory=dict)  # cumulative, whole
    spans: tuple[int, int, int] = (0, 0, 0)  # cumulative: exported, failed, dropped
    limit_full: dict[EventKey, int] = field(default_factory=dict)  # cumulative, whole

    def __reduce__(self) -> tuple[type[Report], tuple[object, ...]]:
        # Sent to the main process by pickle: a compiled (mypyc) frozen
        # dataclass cannot be restored attribute by attribute.
        return (
            Report,
            (
                self.requests,
                self.upstream_errors,
                self.retries,
                self.accepted,
                self.active,
                self.streams,
                self.stream_open,
                self.mirrors,
                self.spans,
                self.limit_full,
            ),
        )


@dataclass(frozen=True, slots=True)
class ProxyView:
    """The proxy's numbers as the collector reads them (one process's, or summed)."""

    requests: Mapping[RequestKey, list[float]]
    upstream_errors: Mapping[EventKey, int]
    retries: Mapping[EventKey, int]
    accepted: int
    active: int
    streams: Mapping[StreamKey, list[int]] = field(default_factory=dict)
    stream_open: Mapping[str, int] = field(default_factory=dict)
    mirrors: Mapping[EventKey, int] = field(default_factory=dict)
    spans: tuple[int, int, int] = (0, 0, 0)  # OpenTelemetry: exported, failed, dropped
    limit_full: Mapping[EventKey, int] = field(default_factory=dict)


def _add_records(into: dict[RequestKey, list[float]], records: Mapping) -> None:
    for key, rec in records.items():
        add_record(into, key, rec)


def add_record(into: dict[Any, list[float]], key: Any, rec: list[float]) -> None:
    """Add request record ``rec`` (count, bytes, buckets...) to ``into[key]``."""
    mine = into.get(key)
    if mine is None:
        into[key] = list(rec)
    else:
        for i, value in enumerate(rec):
            mine[i] += value


def _add_counts(into: dict[EventKey, int], counts: Mapping[EventKey, int]) -> None:
    for key, n in counts.items():
        into[key] = into.get(key, 0) + n


@dataclass(slots=True)
class WorkerSlot:
    """The latest numbers of one worker process (one per start: a restart gets a new slot)."""

    requests: dict[RequestKey, list[float]] = field(default_factory=dict)
    upstream_errors: dict[EventKey, int] = field(default_factory=dict)
    retries: dict[EventKey, int] = field(default_factory=dict)
    accepted: int = 0
    active: int = 0
    retired: bool = False
    streams: dict[StreamKey, list[int]] = field(default_factory=dict)
    stream_open: dict[str, int] = field(default_factory=dict)
    mirrors: dict[EventKey, int] = field(default_factory=dict)
    spans: tuple[int, int, int] = (0, 0, 0)
    limit_full: dict[EventKey, int] = field(default_factory=dict)


class WorkerTotals:
    """The main process's sum over its workers, for ``/metrics``.

    Design: each worker sends its cumulative numbers over the pipe it already
    has (``ingressd/workers.py``), about once a second and once more when it stops
    cleanly, and the main process sums them at scrape time. No files (the
    container's root file system is read-only; prometheus-client's
    multiprocess mode would need a directory and cleanup of dead processes'
    files), and a report costs a worker one pickle of the records that changed.

    Counters never go backwards: when a worker dies its slot is retired, its
    last numbers added to ``_retired`` for good, and its successor starts a new
    slot from zero. The price is staleness: a scrape sees each live worker as
    of its last report (up to ~1 s old), and a worker killed outright loses
    what it counted after its last report.

    Reports arrive on the pool's receiver threads, scrapes on the event loop:
    one lock covers both.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: list[WorkerSlot] = []
        self._retired = WorkerSlot()

    def slot(self) -> WorkerSlot:
        slot = WorkerSlot()
        with self._lock:
            self._live.append(slot)
        return slot

    def update(self, slot: WorkerSlot, report: Report) -> None:
        with self._lock:
            if slot.retired:
                return  # a report read after its worker was declared gone
            slot.requests.update(report.requests)
            slot.upstream_errors = report.upstream_errors
            slot.retries = report.retries
            slot.accepted = report.accepted
            slot.active = report.active
            slot.streams = report.streams
            slot.stream_open = report.stream_open
            slot.mirrors = report.mirrors
            slot.spans = report.spans
            slot.limit_full = report.limit_full

    def retire(self, slot: WorkerSlot) -> None:
        """The worker is gone: keep its counters, forget its gauges."""
        with self._lock:
            if slot.retired:
                return
            slot.retired = True
            self._live.remove(slot)
            kept = self._retired
            _add_records(kept.requests, slot.requests)
            _add_counts(kept.upstream_errors, slot.upstream_errors)
            _add_counts(kept.retries, slot.retries)
            _add_counts(kept.mirrors, slot.mirrors)
            _add_counts(kept.limit_full, slot.limit_full)
            _add_streams(kept.streams, slot.streams)
            kept.accepted += slot.accepted
            kept.spans = _add_spans(kept.spans, slot.spans)

    def view(self) -> ProxyView:
        with self._lock:
            return sum_slots([self._retired, *self._live])


def sum_slots(slots: Iterable[WorkerSlot]) -> ProxyView:
    requests: dict[RequestKey, list[float]] = {}
    errors: dict[EventKey, int] = {}
    retries: dict[EventKey, int] = {}
    streams: dict[StreamKey, list[int]] = {}
    stream_open: dict[str, int] = {}
    mirrors: dict[EventKey, int] = {}
    limit_full: dict[EventKey, int] = {}
    spans = (0, 0, 0)
    accepted = active = 0
    for slot in slots:
        _add_streams(streams, slot.streams)
        _add_open(stream_open, slot.stream_open)  # retire() keeps none: a gauge
        _add_records(requests, slot.requests)
        _add_counts(errors, slot.upstream_errors)
        _add_counts(retries, slot.retries)
        _add_counts(mirrors, slot.mirrors)
        _add_counts(limit_full, slot.limit_full)
        accepted += slot.accepted
        active += slot.active
        spans = _add_spans(spans, slot.spans)
    return ProxyView(
        requests,
        errors,
        retries,
        accepted,
        active,
        streams,
        stream_open,
        mirrors,
        spans,
        limit_full,
    )


def _add_spans(a: tuple[int, int, int], b: tuple[int, int, int]) -> tuple[int, int, int]:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def with_streams(
    view: ProxyView,
    streams: Mapping[StreamKey, list[int]],
    stream_open: Mapping[str, int] | None = None,
) -> ProxyView:
    """``view`` with ``streams`` and ``stream_open`` (the main process's own
    sessions, ended and open) added to its own."""
    if not streams and not stream_open:
        return view
    total = {key: list(rec) for key, rec in view.streams.items()}
    _add_streams(total, streams)
    open_now = dict(view.stream_open)
    _add_open(open_now, stream_open or {})
    return ProxyView(
        view.requests,
        view.upstream_errors,
        view.retries,
        view.accepted,
        view.active,
        total,
        open_now,
        view.mirrors,
        view.spans,
        view.limit_full,
    )


def _add_open(into: dict[str, int], counts: Mapping[str, int]) -> None:
    for key, n in counts.items():
        into[key] = into.get(key, 0) + n


def _add_streams(into: dict[StreamKey, list[int]], records: Mapping[StreamKey, list[int]]) -> None:
    for key, rec in records.items():
        mine = into.get(key)
        if mine is None:
            into[key] = list(rec)
        else:
            for i, value in enumerate(rec):
                mine[i] += value


class RebuildStats:
    """Routing table builds in the process that builds for the admin port (the main one)."""

    def __init__(self) -> None:
        self.total = 0
        self.errors = 0
        self.duration_sum = 0.0
        self.duration_buckets = [0] * (len(REBUILD_BUCKETS) + 1)
        self.last_success = 0.0  # POSIX seconds; 0: never
        self.problems = 0  # reported by the last build
        # Leader election: None when there is none (manifest mode), else whether we hold the Lease.
        self.leader: bool | None = None

    def copy(self) -> RebuildStats:
        # Field by field: a compiled (mypyc) instance has no __dict__ to copy.
        other = RebuildStats()
        other.total = self.total
        other.errors = self.errors
        other.duration_sum = self.duration_sum
        other.duration_buckets = list(self.duration_buckets)
        other.last_success = self.last_success
        other.problems = self.problems
        other.leader = self.leader
        return other

    def succeeded(self, duration: float) -> None:
        self.total += 1
        self.duration_sum += duration
        self.duration_buckets[bisect_left(REBUILD_BUCKETS, duration)] += 1
        self.last_success = time.time()

    def failed(self, duration: float) -> None:
        self.total += 1
        self.errors += 1
        self.duration_sum += duration
        self.duration_buckets[bisect_left(REBUILD_BUCKETS, duration)] += 1
