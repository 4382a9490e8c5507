"""``--workers N``: one process reads the source, N processes proxy.

The main process runs the source (folder watch, or the cluster's watches,
leader election and status write-back) and the admin listener. Each worker
is a separate Python process with its own event loop and its own listeners
on the proxy ports (SO_REUSEPORT: the kernel spreads connections over them).

Workers are fed object changes, not tables: a table holds SSL contexts,
compiled regexes and round-robin state, none of which crosses a process
boundary, while the objects are plain JSON-shaped dicts. After each build the
main process sends every worker what changed since the last one (objects put
or deleted, by identity first, then by value), without the fields no worker
reads (``for_worker``); the worker applies it to its own copy of the store and
builds the same table from the same snapshot with the same pure builder. So
the API server sees one client, whatever N is.

A worker that dies is started again with the whole state, after a backoff
that grows while it keeps dying. A worker whose main process goes away stops.

The limit-rps/-rpm/-connections counters hold per pod, as nginx's shared
memory zones do: the main process creates one table in shared memory
(``policy/shared_limits.py``) and hands it to every worker, which counts its
requests in flight in column ``index``. When a worker dies its column is
zeroed before it is started again, so the places its requests held are free.

Workers answer on the same pipe: ``("built", generation)`` once a table
serves, and ``("stats", Report)`` about once a second with their request
counts, which the main process sums for /metrics (``stats.WorkerTotals``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import multiprocessing
import operator
import os
import pickle
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from .model.objects import KINDS, Key, Obj, ObjectStore, Snapshot, changed_keys
from .model.problems import Problem
from .observe.stats import WorkerSlot, WorkerTotals
from .policy.limits import LimitRegistry
from .policy.shared_limits import SharedLimits, TableHandle

log = logging.getLogger("ingressd.workers")

# Backoff between restarts of a worker that keeps dying, in seconds.
RESTART_MIN = 0.5
RESTART_MAX = 30.0
# A worker that lived this long is healthy again: its next crash restarts it at once.
STABLE_AFTER = 60.0
# On stop, workers get --shutdown-grace to drain, plus this long to exit before they are killed.
STOP_MARGIN = 2.0
# Sent instead of a Delta when shutting down begins (see WorkerPool.drain).
DRAIN = "drain"
# How often a worker sends its request counts for /metrics (stats.WorkerTotals).
STATS_INTERVAL = 1.0
# A worker that cannot bind its ports exits with this code after sending
# ("fatal", message): restarting it would fail the same way, so the main
# process stops and exits with the message.
EXIT_CANNOT_LISTEN = 3


def default_count() -> int:
    """The CPUs this process may use: its CPU set, capped by a cgroup CPU quota.

    In a container the CPU set is usually the whole node; the Pod's CPU limit
    is the cgroup quota, and more workers than that only compete for it.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def cgroup_cpu_limit(root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs allowed by the cgroup (v2 ``cpu.max``, else v1 CFS quota); None: no limit."""
    try:
        with open(f"{root}/cpu.max") as f:
            quota, _, period = f.read().partition(" ")
        if quota.strip() == "max":
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open(f"{root}/cpu/cpu.cfs_quota_us") as f:
            quota_us = int(f.read())
        with open(f"{root}/cpu/cpu.cfs_period_us") as f:
            period_us = int(f.read())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


# -- what goes down the pipe ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delta:
    """Objects to put (with their origin) and keys to delete, then build."""

    generation: int
    full: bool  # True: replace everything held (a new or restarted worker)
    puts: tuple[tuple[Obj, str], ...]
    deletes: tuple[tuple[str, str, str], ...]  # (kind, namespace, name)
    problems: tuple[Problem, ...]  # the source's, for the worker's /problems parity


def diff(
    old: Snapshot | None, new: Snapshot
) -> tuple[list[tuple[Obj, str]], list[tuple[str, str, str]]]:
    """What changed from ``old`` to ``new``: objects to put and keys to delete."""
    puts: list[tuple[Obj, str]] = []
    deletes: list[tuple[str, str, str]] = []
    for kind, objs in new.objects.items():
        before: Mapping[Key, Obj] = old.of(kind) if old is not None else {}
        # By identity first: a store hands the same dict on until the object changes.
        for key in changed_keys(before, objs, operator.eq):
            obj = objs.get(key)
            if obj is None:
                deletes.append((kind, *key))
            else:
                puts.append((obj, new.origins.get((kind, *key), "")))
    return puts, deletes


# Fields no worker reads. A worker only builds tables, and the builder reads of
# objects their names and creationTimestamp; Ingresses' and IngressClasses'
# annotations and spec; EndpointSlices' labels, ports and their endpoints'
# addresses and conditions; Services' ports, type, externalName and clusterIP;
# Secrets' type, data and stringData (routing/build.py and the policy/ modules
# it calls). The source process keeps these fields (it writes Ingress status
# back, and the cluster source compares what it reads); sent to every worker
# they were a fifth of each worker's objects.
UNREAD_METADATA = frozenset(
    {"uid", "resourceVersion", "generation", "managedFields", "ownerReferences", "finalizers"}
)
# Kinds whose annotations are read; labels are read of EndpointSlices only
# (the Service they belong to).
ANNOTATED = frozenset({"Ingress", "IngressClass"})
UNREAD_ENDPOINT = frozenset({"targetRef", "nodeName", "zone", "hints", "deprecatedTopology"})
UNREAD_SERVICE_SPEC = frozenset(
    {
        "selector",
        "clusterIPs",
        "ipFamilies",
        "ipFamilyPolicy",
        "sessionAffinity",
        "sessionAffinityConfig",
        "internalTrafficPolicy",
        "externalTrafficPolicy",
    }
)


def for_worker(obj: Obj) -> Obj:
    """``obj`` without what no worker reads (a shallow copy; ``obj`` is left as it is)."""
    out = {k: v for k, v in obj.items() if k != "status"}
    kind = out.get("kind")
    meta = out.get("metadata")
    if isinstance(meta, dict):
        out["metadata"] = {
            k: v
            for k, v in meta.items()
            if k not in UNREAD_METADATA
            and (k != "annotations" or kind in ANNOTATED)
            and (k != "labels" or kind == "EndpointSlice")
        }
    if kind == "EndpointSlice":
        endpoints = out.get("endpoints")
        if isinstance(endpoints, list):
            out["endpoints"] = [
                {k: v for k, v in ep.items() if k not in UNREAD_ENDPOINT}
                if isinstance(ep, dict)
                else ep
                for ep in endpoints
            ]
    elif kind == "Service":
        spec = out.get("spec")
        if isinstance(spec, dict) and not UNREAD_SERVICE_SPEC.isdisjoint(spec):
            out["spec"] = {k: v for k, v in spec.items() if k not in UNREAD_SERVICE_SPEC}
    return out


def encode(
    generation: int, old: Snapshot | None, new: Snapshot, problems: tuple[Problem, ...] = ()
) -> bytes:
    """The message taking a worker holding ``old`` (None: nothing) to ``new``."""
    puts, deletes = diff(old, new)
    sent = tuple((for_worker(obj), origin) for obj, origin in puts)
    delta = Delta(generation, old is None, sent, tuple(deletes), problems)
    return pickle.dumps(delta, protocol=pickle.HIGHEST_PROTOCOL)


# -- the main process's side ----------------------------------------------------------


@dataclass
class _Worker:
    index: int
    process: Any = None  # multiprocessing.Process
    conn: Connection | None = None
    outbox: queue.SimpleQueue[bytes | None] = field(default_factory=queue.SimpleQueue)
    generation: int = 0  # the last table generation it reported built
    started: float = 0.0
    failures: int = 0
    restart_at: float = 0.0
    receiver: threading.Thread | None = None
    fatal: str | None = None  # why it could not serve (EXIT_CANNOT_LISTEN)


class WorkerPool:
    """Starts, feeds, restarts and stops the worker processes."""

    def __init__(self, config: Any, count: int, log_level: int = logging.INFO) -> None:
        self.config = config  # ServeConfig, pickled to each worker
        self.count = count
        self.log_level = log_level
        self._ctx = multiprocessing.get_context("spawn")
        self._workers = [_Worker(i) for i in range(count)]
        self._published: Snapshot | None = None
        self._problems: tuple[Problem, ...] = ()
        self._generation = 0
        self._stopping = False
        self._started = False  # every worker has served at once
        self.totals = WorkerTotals()  # the workers' request counts, for /metrics
        # limit-rps/-rpm/-connections counters, shared by the workers (one column each)
        self.limits = SharedLimits(config.limit_entries, count)
        # Set when a worker cannot bind its ports; on_fatal (on the loop) is told.
        self.fatal: str | None = None
        self.on_fatal: Callable[[], None] | None = None

    # -- lifecycle --

    def start(self) -> None:
        for worker in self._workers:
            self._spawn(worker)

    def _spawn(self, worker: _Worker) -> None:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(
            target=worker_main,
            args=(self.config, child, worker.index, self.log_level, self.limits.handle()),
            name=f"ingressd-worker-{worker.index}",
            daemon=False,
        )
        process.start()
        child.close()
        worker.process, worker.conn = process, parent
        worker.outbox = queue.SimpleQueue()
        worker.generation = 0
        worker.started = time.monotonic()
        threading.Thread(
            target=self._send_loop, args=(worker, parent, worker.outbox), daemon=True
        ).start()
        slot = self.totals.slot()
        worker.receiver = threading.Thread(
            target=self._receive_loop, args=(worker, parent, slot), daemon=True
        )
        worker.receiver.start()
        if self._published is not None:
            worker.outbox.put(self._encode(None, self._published))
        log.info("worker %d started (pid %d)", worker.index, process.pid)

    def _send_loop(
        self, worker: _Worker, conn: Connection, outbox: queue.SimpleQueue[bytes | None]
    ) -> None:
        # A thread per worker: a large first message must not hold up the event loop.
        while True:
            data = outbox.get()
            if data is None:
                return
            try:
                conn.send_bytes(data)
            except (OSError, ValueError):
                return  # the worker is gone; supervise() restarts it

    def _receive_loop(self, worker: _Worker, conn: Connection, slot: WorkerSlot) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                # Every report is read by now (the last one comes just before
                # the worker exits): its counts are kept for good.
                self.totals.retire(slot)
                return
            if isinstance(message, tuple) and message[:1] == ("built",):
                worker.generation = message[1]
            elif isinstance(message, tuple) and message[:1] == ("stats",):
                self.totals.update(slot, message[1])
            elif isinstance(message, tuple) and message[:1] == ("fatal",):
                worker.fatal = str(message[1])

    def _encode(self, old: Snapshot | None, new: Snapshot) -> bytes:
        return encode(self._generation, old, new, self._problems)

    def publish(self, snapshot: Snapshot, problems: Iterable[Problem] = ()) -> None:
        """Send what changed since the last publish to every worker."""
        self._generation += 1
        self._problems = tuple(problems)
        data = self._encode(self._published, snapshot)
        self._published = snapshot
        for worker in self._workers:
            if worker.conn is not None:
                worker.outbox.put(data)

    def drain(self) -> None:
        """Shutting down: from now on, every response closes its connection
        (the workers still serve until stop() while load balancers catch up)."""
        data = pickle.dumps(DRAIN, protocol=pickle.HIGHEST_PROTOCOL)
        for worker in self._workers:
            if worker.conn is not None:
                worker.outbox.put(data)

    @property
    def ready(self) -> bool:
        """At start, every worker serves a table; after that, at least one does.

        A worker being restarted leaves the others serving the ports, so the
        pod stays ready rather than dropping out of its Service meanwhile.
        """
        serving = sum(
            1
            for w in self._workers
            if w.generation >= 1 and w.process is not None and w.process.exitcode is None
        )
        if serving == self.count:
            self._started = True
        return serving == self.count or (self._started and serving > 0)

    def describe(self) -> str:
        built = sum(1 for w in self._workers if w.generation >= 1)
        return f"{built} of {self.count} workers have a routing table"

    async def supervise(self, stop: asyncio.Event) -> None:
        """Restart workers that exit, with a growing backoff while they keep dying."""
        while not stop.is_set():
            now = time.monotonic()
            for worker in self._workers:
                process = worker.process
                if process is not None and process.exitcode == EXIT_CANNOT_LISTEN:
                    await self._fail(worker)
                    return
                if process is not None and process.exitcode is not None:
                    lived = now - worker.started
                    worker.failures = 0 if lived >= STABLE_AFTER else worker.failures + 1
                    delay = min(RESTART_MAX, RESTART_MIN * 2 ** max(0, worker.failures - 1))
                    delay = 0.0 if worker.failures == 0 else delay
                    log.warning(
                        "worker %d (pid %d) exited with code %s after %.1f s; restarting in %.1f s",
                        worker.index,
                        process.pid,
                        process.exitcode,
                        lived,
                        delay,
                    )
                    self._forget(worker)
                    # Its requests died with it: free the limit-connections places they held.
                    self.limits.clear_column(worker.index)
                    worker.restart_at = now + delay
                elif process is None and now >= worker.restart_at and not self._stopping:
                    self._spawn(worker)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)

    async def _fail(self, worker: _Worker) -> None:
        """A worker could not bind its ports: no restart, the whole start fails."""
        if worker.receiver is not None:
            # Its message came before it exited; the receiver ends at the pipe's end.
            await asyncio.to_thread(worker.receiver.join, 2.0)
        self.fatal = worker.fatal or f"worker {worker.index} could not bind its ports"
        self._stopping = True
        self._forget(worker)
        if self.on_fatal is not None:
            self.on_fatal()

    def _forget(self, worker: _Worker) -> None:
        worker.outbox.put(None)
        if worker.conn is not None:
            worker.conn.close()
        if worker.process is not None:
            worker.process.close()
        worker.process, worker.conn, worker.generation = None, None, 0

    async def stop(self, grace: float) -> None:
        """Ask every worker to drain and exit; kill what is left after ``grace``."""
        self._stopping = True
        live = [w for w in self._workers if w.process is not None]
        for worker in live:
            with contextlib.suppress(OSError, ValueError):
                os.kill(worker.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace + STOP_MARGIN
        for worker in live:
            remaining = max(0.0, deadline - time.monotonic())
            await asyncio.to_thread(worker.process.join, remaining)
            if worker.process.exitcode is None:
                log.warning("worker %d did not stop in time; killing it", worker.index)
                worker.process.kill()
                await asyncio.to_thread(worker.process.join, 5.0)
            self._forget(worker)


# -- the worker's side ----------------------------------------------------------------


def worker_main(
    config: Any, conn: Connection, index: int, log_level: int, limits: TableHandle
) -> None:
    """Entry point of a worker process (spawned: a fresh interpreter)."""
    # A process group of its own: a signal for the whole group (Ctrl-C in a
    # terminal, a supervisor's kill of the group) reaches the main process
    # only, which keeps the workers serving through --shutdown-delay and then
    # stops them itself. Were the main process killed outright, its pipe
    # closes and the workers stop on their own.
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    from .observe.logs import configure

    configure(log_level, config.log_format, worker=index)
    import uvloop

    code = 0
    with contextlib.suppress(KeyboardInterrupt):
        code = uvloop.run(_worker(config, conn, index, limits))
    if code:
        sys.exit(code)


async def _worker(config: Any, conn: Connection, index: int, limits: TableHandle) -> int:
    """Serve until told to stop; the exit code (EXIT_CANNOT_LISTEN: ports not bound)."""
    from .control.controller import Controller
    from .listeners import ListenError
    from .model.table import RouteTable
    from .policy.tls import CertificateSelector, self_signed
    from .proxy.state import ProxyState
    from .serving import serve_proxy, until_listening

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    state = ProxyState(RouteTable(), config.proxy)
    state.limits = LimitRegistry(limits.attach(index))  # counted per pod, not per worker
    selector = CertificateSelector(lambda: state.table, self_signed(), http2=config.proxy.http2)
    from .stream.passthrough import PassthroughRouter

    passthrough = PassthroughRouter(config.build) if config.ssl_passthrough else None
    controller = Controller(
        state,
        selector,
        config.build,
        config.default_certificate,
        report=False,
        passthrough=passthrough,
    )
    store = ObjectStore()
    first = asyncio.Event()

    def apply(delta: Delta) -> None:
        if delta.full:
            for kind in KINDS:
                store.replace_all(kind, ())
        for kind, ns, name in delta.deletes:
            store.delete(kind, ns, name)
        for obj, origin in delta.puts:
            store.put(obj, origin)
        controller.apply(store.snapshot(), delta.problems)
        first.set()
        ack()

    def ack() -> None:
        # Counted as ready by the main process only once it can take connections.
        if state.listening:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("built", controller.generation))

    def receive() -> None:
        while True:
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):
                # The main process is gone: nobody feeds or supervises us any more.
                loop.call_soon_threadsafe(stop.set)
                return
            message = pickle.loads(data)
            if message == DRAIN:
                loop.call_soon_threadsafe(setattr, state, "draining", True)
            else:
                loop.call_soon_threadsafe(apply, message)

    threading.Thread(target=receive, daemon=True, name="ingressd-feed").start()
    # No listener before the first table: a connection would only get 404s.
    waiting = asyncio.ensure_future(first.wait())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    stopping.cancel()
    if stop.is_set():
        return 0
    proxy = asyncio.ensure_future(
        serve_proxy(config, state, selector, stop, reuse_port=True, passthrough=passthrough)
    )
    try:
        await until_listening(proxy, state)
    except ListenError as exc:
        # The main process held these ports, so another program took them in
        # between, or the address went away: say so once, there.
        with contextlib.suppress(OSError, ValueError):
            conn.send(("fatal", str(exc)))
        return EXIT_CANNOT_LISTEN
    ack()

    def report() -> None:
        with contextlib.suppress(OSError, ValueError):
            conn.send(("stats", state.stats.report(len(state.connections))))

    async def report_stats() -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            report()

    reporting = asyncio.ensure_future(report_stats())
    try:
        await proxy
    finally:
        reporting.cancel()
        report()  # the final counts, drained requests included
    return 0
