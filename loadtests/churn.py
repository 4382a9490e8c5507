#!/usr/bin/env python3
"""Churn test: Ingress changes applied under load, with 10,000 Ingresses loaded.

The synthetic cluster of routes.py (N Ingresses with their Services,
EndpointSlices and TLS Secrets) is written as manifest files, every
EndpointSlice pointing at one fast nginx origin, and served by ingressd in
manifest mode. While wrk drives plain HTTP to a host that never changes, one
Ingress is changed every interval by rewriting (atomically) the one small file
that holds it: the change adds a rule for a new host, ``churn-<k>.example.com``.
A prober thread asks for that host (one request outstanding at a time, the
oldest pending change about every 2 ms) until it gets 200 instead of 404: the
time-to-apply of the change is from the rename of the file to that answer.

Reported: time-to-apply p50/p90/p99/max, changes not applied within the
timeout, wrk req/s and failed requests (non-2xx/3xx and socket errors), the
ingressd RSS at start and end and its CPU during the churn, then the targets
(p99 time-to-apply <= 100 ms, zero failed requests).

    .venv/bin/python loadtests/churn.py [--ingresses N] [--duration S] [--interval S]
        [--per-file N] [--format yaml|json] [--apply-timeout S] [--baseline S]
        [--connections C] [--threads T] [--workers W] [--json FILE]

Needs nginx and wrk, as bench.py does (it installs them when it can; exit 2).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ingressd.model.objects import Obj

# bench.py and routes.py are scripts next to this one, not a package: make them
# importable however this file is started.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench
import routes

LOOPBACK = bench.LOOPBACK
TARGET_APPLY_P99_MS = 100.0
READY_TIMEOUT_S = 180.0
IDLE_TIMEOUT_S = 120.0  # for ingressd to go quiet once ready
IDLE_CPU = 0.1  # quiet: below this share of one core over a second
WRK_WARMUP_S = 1.0  # wrk runs alone this long before the first change
PROGRESS_EVERY_S = 5.0
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class ChurnError(bench.BenchError):
    """A failure that makes the test meaningless; reported and the run stops."""


# --- the cluster as manifest files ----------------------------------------------------


def plain_http(i: int) -> bool:
    """An exact host served over plain HTTP: no wildcard, no TLS (it would
    redirect to HTTPS), no use-regex (it turns every path of the host into a regex)."""
    return not (routes.is_wildcard(i) or routes.is_tls(i) or routes.is_regex(i))


def point_at_origin(endpoint_slice: Obj, origin_port: int) -> Obj:
    """The Service's EndpointSlice with one ready endpoint: the origin."""
    endpoint_slice["ports"] = [{"name": "http", "port": origin_port, "protocol": "TCP"}]
    endpoint_slice["endpoints"] = [{**endpoint_slice["endpoints"][0], "addresses": [LOOPBACK]}]
    return endpoint_slice


class ManifestDir:
    """The cluster as files of ``per_file`` Ingresses each (with their Services,
    EndpointSlices and Secrets), kept as serialised documents so that a change
    re-serialises one Ingress and rewrites one file."""

    def __init__(self, root: Path, n: int, per_file: int, fmt: str, origin_port: int) -> None:
        self.root, self.per_file, self.fmt = root, per_file, fmt
        cluster = routes.generate_cluster(n)
        secrets = {s["metadata"]["name"]: s for s in cluster["Secret"]}
        self.docs: list[list[str]] = []  # per file, its documents
        self.ingresses: dict[int, Obj] = {}  # only those that will change
        for f in range(math.ceil(n / per_file)):
            docs = []
            for i in range(f * per_file, min(n, (f + 1) * per_file)):
                slice_ = point_at_origin(cluster["EndpointSlice"][i], origin_port)
                objs = [cluster["Ingress"][i], cluster["Service"][i], slice_]
                if routes.is_tls(i):
                    objs.append(secrets[f"app-{i}-tls"])
                docs += [self.dump(o) for o in objs]
            self.docs.append(docs)
        self.cluster = cluster  # until the changing Ingresses are chosen
        self.objects = sum(len(objs) for objs in cluster.values())
        root.mkdir()
        self.write(f"00-ingressclass.{fmt}", [self.dump(cluster["IngressClass"][0])])
        for f in range(len(self.docs)):
            self.write_file(f)
        self.bytes = sum(p.stat().st_size for p in root.iterdir())

    def keep(self, indexes: list[int]) -> None:
        """Keep the Ingresses that will change; let the rest of the cluster go."""
        self.ingresses = {i: self.cluster["Ingress"][i] for i in indexes}
        del self.cluster

    def dump(self, obj: Obj) -> str:
        if self.fmt == "json":
            return json.dumps(obj, separators=(",", ":"))
        return yaml.dump(obj, Dumper=_Dumper, sort_keys=False)

    def file_name(self, f: int) -> str:
        return f"cluster-{f:04d}.{self.fmt}"

    def write_file(self, f: int) -> None:
        self.write(self.file_name(f), self.docs[f])

    def write(self, name: str, docs: list[str]) -> None:
        if self.fmt == "json":
            text = '{"apiVersion":"v1","kind":"List","items":[\n' + ",\n".join(docs) + "\n]}\n"
        else:
            text = "---\n".join(docs)
        # Written under a dot name, which the manifest source skips, then renamed
        # over the old file: the watcher never reads half a file.
        tmp = self.root / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.root / name)

    def add_host(self, i: int, host: str) -> str:
        """Add a rule for ``host`` (to Ingress ``i``'s own Service) to Ingress ``i``;
        rewrite its file and return the file name. The rename is the change."""
        obj = self.ingresses[i]
        meta = obj["metadata"]
        meta["generation"] += 1
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1_000_000)
        backend = {"service": {"name": f"svc-{i}", "port": {"number": 80}}}
        path = {"path": "/", "pathType": "Prefix", "backend": backend}
        obj["spec"]["rules"].append({"host": host, "http": {"paths": [path]}})
        f, k = divmod(i, self.per_file)
        # The Ingress is the first document of its group of 3 or 4 in the file.
        self.docs[f][self._doc_index(f, k)] = self.dump(obj)
        self.write_file(f)
        return self.file_name(f)

    def _doc_index(self, f: int, k: int) -> int:
        first = f * self.per_file
        return sum(4 if routes.is_tls(j) else 3 for j in range(first, first + k))


def churn_order(n: int, per_file: int, exclude: int) -> list[int]:
    """Ingresses to change, interleaved across files so that consecutive changes
    hit different files: the k-th of file 0, of file 1, ..., then the k+1-th."""
    files = math.ceil(n / per_file)
    order = []
    for k in range(per_file):
        for f in range(files):
            i = f * per_file + k
            if i < n and i != exclude and plain_http(i):
                order.append(i)
    return order


# --- a small HTTP client for the probes -----------------------------------------------


class RawClient:
    """HTTP/1.1 GET over one kept-alive socket, one request at a time: far less
    overhead than http.client, and no connection churn on the proxy."""

    def __init__(self, port: int, timeout: float) -> None:
        self.port, self.timeout = port, timeout
        self.sock: socket.socket | None = None
        self.buf = b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buf = None, b""

    def get(self, host: str, path: str = "/") -> tuple[int, bytes]:
        """(status, body); raises OSError or ValueError when no answer could be read."""
        reused = self.sock is not None
        try:
            return self._get(host, path)
        except (OSError, ValueError):
            self.close()
            if not reused:
                raise
        # The kept-alive connection had been closed by the proxy: once more, anew.
        return self._get(host, path)

    def _get(self, host: str, path: str) -> tuple[int, bytes]:
        if self.sock is None:
            self.sock = socket.create_connection((LOOPBACK, self.port), timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        lines = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        if "chunked" in headers.get("transfer-encoding", ""):
            body = self._chunked()
        elif "content-length" in headers:
            body = self._exactly(int(headers["content-length"]))
        else:  # delimited by the end of the connection
            while chunk := self.sock.recv(65536):
                self.buf += chunk
            body = self.buf
            self.close()
        if headers.get("connection") == "close":
            self.close()
        return status, body

    def _recv(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the proxy")
        self.buf += chunk

    def _until(self, sep: bytes) -> bytes:
        while (at := self.buf.find(sep)) < 0:
            self._recv()
        out, self.buf = self.buf[:at], self.buf[at + len(sep) :]
        return out

    def _exactly(self, size: int) -> bytes:
        while len(self.buf) < size:
            self._recv()
        out, self.buf = self.buf[:size], self.buf[size:]
        return out

    def _chunked(self) -> bytes:
        body = b""
        while size := int(self._until(b"\r\n").split(b";")[0], 16):
            body += self._exactly(size)
            self._until(b"\r\n")
        while self._until(b"\r\n"):  # trailers, up to the empty line
            pass
        return body


# --- the changes and their probes -----------------------------------------------------


@dataclass
class Change:
    seq: int
    ingress: int
    host: str
    file: str
    due: float  # perf_counter of the schedule
    written: float  # perf_counter right after the rename
    applied_ms: float | None = None  # rename -> first 200
    # From the prober's previous answer (to any probe; or the rename) to the
    # first 200: how late the prober could have been to see it, for a change
    # that went live no earlier than the older ones.
    gap_ms: float | None = None
    out_of_order: bool = False  # answered 200 while an older change still did not
    timed_out: bool = False
    probes: int = 0

    @property
    def late_ms(self) -> float:
        return (self.written - self.due) * 1000


class Prober(threading.Thread):
    """Probes pending changes, one request at a time, a round about every
    ``period`` seconds, until each answers 200 or ``timeout`` has passed."""

    def __init__(self, port: int, period: float, timeout: float) -> None:
        super().__init__(name="prober", daemon=True)
        self.period, self.timeout = period, timeout
        self.client = RawClient(port, timeout=max(15.0, timeout))
        self.lock = threading.Lock()
        self.pending: list[Change] = []
        self.finished: list[Change] = []
        self.errors = 0  # probes without an answer
        self.unexpected: Counter[int] = Counter()  # statuses other than 200 and 404
        self.requests = 0
        self.last_answer = 0.0  # perf_counter of the latest answer to any probe
        self._drain = threading.Event()  # no more changes: stop once none is pending
        self._abort = threading.Event()

    def add(self, change: Change) -> None:
        with self.lock:
            self.pending.append(change)

    def counts(self) -> tuple[int, int, int]:
        """(applied, pending, timed out) so far."""
        with self.lock:
            timed_out = sum(1 for c in self.finished if c.timed_out)
            return len(self.finished) - timed_out, len(self.pending), timed_out

    def run(self) -> None:
        try:
            self._loop()
        finally:
            self.client.close()

    def _loop(self) -> None:
        turn = 0
        while not self._abort.is_set():
            cycle = time.perf_counter()
            with self.lock:
                todo = list(self.pending)  # oldest first
            if not todo and self._drain.is_set():
                return
            # The oldest pending change first, and while changes answer 200 the
            # next ones at once: changes mostly go live in order, often several
            # with one table, so each is seen about one probe after it is live,
            # however many are pending. Then one of the others, in turn, for a
            # change that went live before an older one.
            rest: list[Change] = []
            for n, change in enumerate(todo):
                if self._abort.is_set():
                    return
                if not self._probe(change):
                    rest = todo[n + 1 :]
                    break
            if rest:
                self._probe(rest[turn % len(rest)], out_of_order=True)
                turn += 1
            time.sleep(max(0.0, cycle + self.period - time.perf_counter()))

    def _probe(self, change: Change, out_of_order: bool = False) -> bool:
        """Probe ``change`` once; True when it is settled (live or given up).
        ``out_of_order``: an older change has just answered 404."""
        self.requests += 1
        change.probes += 1
        try:
            status, _ = self.client.get(change.host)
        except (OSError, ValueError):
            status = None
            self.errors += 1
        now = time.perf_counter()
        previous = self.last_answer
        if status is not None:
            self.last_answer = now
        if status == 200:
            change.applied_ms = (now - change.written) * 1000
            change.gap_ms = (now - max(change.written, previous)) * 1000
            change.out_of_order = out_of_order
        elif now - change.written >= self.timeout:
            change.timed_out = True
        else:
            if status is not None and status != 404:
                self.unexpected[status] += 1
            return False
        with self.lock:
            self.pending.remove(change)
            self.finished.append(change)
        return True

    def drain(self) -> None:
        """Wait until every change has been applied or has timed out."""
        self._drain.set()
        self.join()

    def abort(self) -> None:
        self._abort.set()
        self.join(timeout=2)


# --- ingressd and its process tree ----------------------------------------------------


def tree_pids(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            data = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(data[data.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(parents.get(pid, []))
    return pids


def tree_memory_mib(root: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) summed over ``root`` and its descendants."""
    total = {"VmRSS": 0, "VmHWM": 0}
    for pid in tree_pids(root):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in total:
                    total[key] += int(value.split()[0])  # kB
    return {"rss_mib": total["VmRSS"] / 1024, "peak_rss_mib": total["VmHWM"] / 1024}


def admin_state(admin_port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{admin_port}/problems", timeout=30) as resp:
        state: dict[str, Any] = json.load(resp)
        return state


def start_ingressd(
    stack: contextlib.ExitStack,
    tools: bench.Tools,
    manifests: Path,
    ports: list[int],
    workers: int,
    log: Path,
) -> tuple[subprocess.Popen[bytes], float]:
    """ingressd serving ``manifests``, once /readyz says so; and how long that took."""
    http_port, https_port, admin_port = ports
    cmd = [
        tools.ingressd, "serve", "--manifests", str(manifests),
        "--address", LOOPBACK, "--http-port", str(http_port), "--https-port", str(https_port),
        "--admin-port", str(admin_port), "--log-level", "warning",
    ]  # fmt: skip
    if tools.ingressd_has_workers:
        cmd += ["--workers", str(workers)]
    if tools.ingressd_has_access_log:
        cmd += ["--access-log", "off"]  # a line per request would only fill the log
    start = time.perf_counter()
    proc = bench.start_server(stack, cmd, log)
    # bench.wait_ready gives up after 30 s; loading 10,000 Ingresses takes longer.
    ready = f"http://{LOOPBACK}:{admin_port}/readyz"
    deadline = start + READY_TIMEOUT_S
    while not bench.http_ok(ready):
        if proc.poll() is not None:
            raise ChurnError(f"ingressd exited with code {proc.returncode}:\n{bench._tail(log)}")
        if time.perf_counter() > deadline:
            raise ChurnError(
                f"ingressd not ready after {READY_TIMEOUT_S:.0f} s:\n{bench._tail(log)}"
            )
        time.sleep(0.1)
    return proc, time.perf_counter() - start


def wait_idle(pid: int) -> tuple[float, float]:
    """Wait until ingressd's process tree uses less than IDLE_CPU of a core over
    a second (work left over from loading would slow the baseline and delay the
    first change); (seconds waited, CPU seconds used meanwhile)."""
    start = time.perf_counter()
    first = last = bench.tree_cpu_seconds(pid)
    while time.perf_counter() - start < IDLE_TIMEOUT_S:
        time.sleep(1.0)
        now = bench.tree_cpu_seconds(pid)
        if now - last < IDLE_CPU:
            break
        last = now
    else:
        say(f"WARNING: ingressd still busy {IDLE_TIMEOUT_S:.0f} s after it was ready")
    return time.perf_counter() - start, last - first


# --- running ---------------------------------------------------------------------------


@dataclass
class Options:
    ingresses: int
    per_file: int
    format: str
    duration: float
    interval: float
    apply_timeout: float
    probe_period_ms: float
    connections: int
    threads: int
    workers: int
    baseline: int


@dataclass
class Result:
    setup: dict[str, Any] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    prober: dict[str, Any] = field(default_factory=dict)
    baseline: bench.WrkResult | None = None
    wrk: bench.WrkResult | None = None
    ingressd: dict[str, Any] = field(default_factory=dict)


def say(message: str) -> None:
    print(message, flush=True)


def check_answer(client: RawClient, host: str, want: int, body: bytes | None = None) -> None:
    status, got = client.get(host)
    if status != want or (body is not None and got != body):
        raise ChurnError(f"{host}: answered {status} {got[:200]!r}, expected {want} {body!r}")


def run(tools: bench.Tools, opts: Options) -> Result:
    result = Result()
    with contextlib.ExitStack() as stack:
        # Entered first, so removed last: after every process has stopped.
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ingressd-churn-")))
        origin_port = bench.free_ports(1)[0]
        origin = workdir / "origin"
        (origin / "www").mkdir(parents=True)
        conf = bench.origin_conf(origin, origin_port)
        bench.start_nginx(stack, tools, origin, conf, origin_port)

        start = time.perf_counter()
        files = ManifestDir(
            workdir / "manifests", opts.ingresses, opts.per_file, opts.format, origin_port
        )
        target = next(i for i in range(opts.ingresses) if plain_http(i))
        order = churn_order(opts.ingresses, opts.per_file, exclude=target)
        if not order:
            raise ChurnError(f"no Ingress to change besides app-{target}: use more Ingresses")
        files.keep(order)
        target_host = routes.rule_host(target)
        result.setup = {
            "files": len(files.docs) + 1,
            "objects": files.objects,
            "megabytes": files.bytes / 1e6,
            "write_s": time.perf_counter() - start,
            "wrk_host": target_host,
            "changed_ingresses": len(order),
        }
        say(
            f"wrote {files.objects} objects in {len(files.docs) + 1} {opts.format} files "
            f"({files.bytes / 1e6:.1f} MB) in {result.setup['write_s']:.1f} s"
        )

        ports = bench.free_ports(3)
        say(f"starting ingressd (up to {READY_TIMEOUT_S:.0f} s to load) ...")
        ingressd, ready_s = start_ingressd(
            stack, tools, files.root, ports, opts.workers, workdir / "ingressd.log"
        )
        state = admin_state(ports[2])
        problems = state.get("problems", [])
        result.setup |= {"ready_s": ready_s, "problems_at_start": len(problems)}
        result.ingressd["start"] = tree_memory_mib(ingressd.pid)
        say(
            f"ingressd ready after {ready_s:.1f} s: table generation {state.get('generation')}, "
            f"{len(problems)} problems, RSS {result.ingressd['start']['rss_mib']:.1f} MiB"
        )
        for p in problems[:3]:
            say(f"  problem: {p}")
        idle_s, idle_cpu = wait_idle(ingressd.pid)
        result.setup |= {"idle_after_ready_s": idle_s, "cpu_after_ready_s": idle_cpu}
        say(f"ingressd quiet {idle_s:.1f} s after ready ({idle_cpu:.1f} s of CPU meanwhile)")

        client = RawClient(ports[0], timeout=30)
        check_answer(client, target_host, 200, bench.SMALL_BODY)
        check_answer(client, "churn-0.example.com", 404)
        client.close()

        if opts.baseline:
            say(f"wrk baseline: {opts.baseline} s without changes ...")
            cmd = wrk_command(tools, opts, target_host, ports[0], opts.baseline)
            out = subprocess.run(
                cmd, capture_output=True, text=True, check=False, timeout=opts.baseline + 60
            )
            if out.returncode != 0:
                raise ChurnError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
            result.baseline = bench.parse_wrk(out.stdout)

        prober = Prober(ports[0], opts.probe_period_ms / 1000, opts.apply_timeout)
        stack.callback(prober.abort)  # on errors and Ctrl-C; a no-op after drain()
        # wrk runs past the churn until the last change is settled, then gets
        # SIGINT, on which it stops and prints its results as usual.
        seconds = math.ceil(WRK_WARMUP_S + opts.duration + opts.apply_timeout + 10)
        wrk_cmd = wrk_command(tools, opts, target_host, ports[0], seconds)
        wrk_log = workdir / "wrk.log"
        say(
            f"wrk: {opts.threads} thread(s), {opts.connections} connections, Host {target_host}; "
            f"churn: one change every {opts.interval * 1000:.0f} ms for {opts.duration:g} s, "
            f"round-robin over {len(order)} Ingresses"
        )
        wrk = bench.start_server(stack, wrk_cmd, wrk_log)
        time.sleep(WRK_WARMUP_S)
        cpu_before = bench.tree_cpu_seconds(ingressd.pid)
        gen_before = admin_state(ports[2]).get("generation")
        prober.start()
        churn_s = churn(files, order, prober, opts, result.changes)
        prober.drain()
        settle_s = time.perf_counter() - churn_s
        cpu = bench.tree_cpu_seconds(ingressd.pid) - cpu_before
        wrk.send_signal(signal.SIGINT)
        try:
            wrk.wait(timeout=30)
        except Exception as exc:
            raise ChurnError(f"wrk did not stop on SIGINT:\n{bench._tail(wrk_log)}") from exc
        if ingressd.poll() is not None:
            log = bench._tail(workdir / "ingressd.log")
            raise ChurnError(f"ingressd exited ({ingressd.returncode}) during the churn:\n{log}")
        result.wrk = bench.parse_wrk(wrk_log.read_text())
        gen_after = admin_state(ports[2]).get("generation")
        result.ingressd |= {
            "end": tree_memory_mib(ingressd.pid),
            "cpu_s_churn": cpu,
            "churn_and_settle_s": settle_s,
            "generation_before": gen_before,
            "generation_after": gen_after,
            "log_tail": bench._tail(workdir / "ingressd.log", 5),
        }
        result.prober = {
            "requests": prober.requests,
            "errors": prober.errors,
            "unexpected_statuses": dict(prober.unexpected),
        }
    return result


def wrk_command(tools: bench.Tools, opts: Options, host: str, port: int, seconds: int) -> list[str]:
    return [
        tools.wrk, "--latency", "-t", str(opts.threads), "-c", str(opts.connections),
        "-d", f"{seconds}s", "-H", f"Host: {host}", f"http://{LOOPBACK}:{port}/",
    ]  # fmt: skip


def churn(
    files: ManifestDir, order: list[int], prober: Prober, opts: Options, out: list[Change]
) -> float:
    """Make the changes on schedule; returns the perf_counter it started at."""
    count = max(1, round(opts.duration / opts.interval))
    start = time.perf_counter()
    next_progress = start + PROGRESS_EVERY_S
    for seq in range(count):
        due = start + seq * opts.interval
        if (wait := due - time.perf_counter()) > 0:
            time.sleep(wait)
        i = order[seq % len(order)]
        host = f"churn-{seq}.example.com"
        name = files.add_host(i, host)
        change = Change(seq, i, host, name, due, time.perf_counter())
        out.append(change)
        prober.add(change)
        if change.written >= next_progress:
            next_progress += PROGRESS_EVERY_S
            applied, pending, timed_out = prober.counts()
            say(
                f"  t={change.written - start:5.1f}s changes {seq + 1:4d}  applied {applied:4d}  "
                f"pending {pending:3d}  timed out {timed_out:3d}"
            )
    return start


# --- reporting -------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest rank of sorted ``values``; nan when there are none."""
    if not values:
        return math.nan
    return values[max(0, math.ceil(p / 100 * len(values)) - 1)]


def apply_stats(changes: list[Change]) -> dict[str, Any]:
    """Over all changes, a change never applied counting as infinitely slow."""
    every = sorted(math.inf if c.applied_ms is None else c.applied_ms for c in changes)
    applied = [v for v in every if v != math.inf]
    gaps = sorted(c.gap_ms for c in changes if c.gap_ms is not None)
    return {
        "changes": len(changes),
        "applied": len(applied),
        "not_applied": len(every) - len(applied),
        **{f"p{p}_ms": percentile(every, p) for p in (50, 90, 99)},
        "max_ms": every[-1] if every else math.nan,
        "applied_mean_ms": sum(applied) / len(applied) if applied else math.nan,
        "probe_gap_p50_ms": percentile(gaps, 50),
        "probe_gap_max_ms": gaps[-1] if gaps else math.nan,
        "out_of_order": sum(1 for c in changes if c.out_of_order),
        "max_late_ms": max((c.late_ms for c in changes), default=0.0),
    }


def failed_requests(w: bench.WrkResult) -> int:
    return w.non_2xx_3xx + sum(w.socket_errors.values())


def fmt_ms(value: float, timeout: float) -> str:
    if value == math.inf:
        return f"> {timeout * 1000:.0f} ms"
    return f"{value:.1f} ms"


def report(opts: Options, result: Result) -> list[dict[str, Any]]:
    stats = apply_stats(result.changes)
    w = result.wrk
    assert w is not None
    ing = result.ingressd
    t = opts.apply_timeout
    say("\n== results ==")
    say(
        f"changes            {stats['changes']} (latest write {stats['max_late_ms']:.1f} ms "
        "behind schedule)"
    )
    # A probe sent before the timeout may answer 200 after it (ingressd busy): applied.
    say(
        f"applied            {stats['applied']}; given up {stats['not_applied']} "
        f"(no 200 within {t:g} s)"
    )
    say(
        "time-to-apply      "
        + "  ".join(f"p{p} {fmt_ms(stats[f'p{p}_ms'], t)}" for p in (50, 90, 99))
        + f"  max {fmt_ms(stats['max_ms'], t)}"
    )
    say(
        f"probe gap          p50 {stats['probe_gap_p50_ms']:.1f} ms, "
        f"max {stats['probe_gap_max_ms']:.1f} ms (previous answer -> first 200); "
        f"{stats['out_of_order']} changes went live before an older one"
    )
    gens = (ing["generation_before"], ing["generation_after"])
    swaps = gens[1] - gens[0] if None not in gens else "?"
    say(
        f"table swaps        {swaps} during churn and settling "
        f"(generation {gens[0]} -> {gens[1]}, {ing['churn_and_settle_s']:.1f} s)"
    )
    p = result.prober
    say(
        f"probes             {p['requests']} requests, {p['errors']} without answer, "
        f"unexpected statuses {p['unexpected_statuses'] or 'none'}"
    )
    errs = ", ".join(f"{k} {v}" for k, v in w.socket_errors.items())
    if (b := result.baseline) is not None:
        say(
            f"wrk, no churn      {b.rps:.1f} req/s, p50 {b.p50_ms:.2f} ms, "
            f"p99 {b.p99_ms:.2f} ms, {b.requests} requests, {failed_requests(b)} failed "
            f"({opts.baseline} s before the churn)"
        )
    say(
        f"wrk                {w.rps:.1f} req/s, p50 {w.p50_ms:.2f} ms, p99 {w.p99_ms:.2f} ms, "
        f"{w.requests} requests"
    )
    say(f"wrk failures       non-2xx/3xx {w.non_2xx_3xx}; socket errors: {errs}")
    s, e = ing["start"], ing["end"]
    say(
        f"ingressd RSS       start {s['rss_mib']:.1f} MiB, end {e['rss_mib']:.1f} MiB "
        f"(peak {e['peak_rss_mib']:.1f} MiB)"
    )
    busy = ing["cpu_s_churn"] / ing["churn_and_settle_s"] * 100
    say(
        f"ingressd CPU       {ing['cpu_s_churn']:.1f} s over {ing['churn_and_settle_s']:.1f} s "
        f"of churn and settling ({busy:.0f}% of one core)"
    )
    checks = [
        {
            "name": f"p99 time-to-apply <= {TARGET_APPLY_P99_MS:g} ms",
            "value": fmt_ms(stats["p99_ms"], t),
            "pass": stats["p99_ms"] <= TARGET_APPLY_P99_MS,
        },
        {
            "name": "zero failed requests",
            "value": str(failed_requests(w)),
            "pass": failed_requests(w) == 0,
        },
    ]
    say("\n== targets ==")
    for c in checks:
        say(f"{'PASS' if c['pass'] else 'FAIL'}  {c['name']:<28} {c['value']}")
    return checks


def _finite(value: Any) -> Any:
    """JSON has no infinity or nan: null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def to_json(
    opts: Options, env: dict[str, Any], result: Result, checks: list[dict[str, Any]]
) -> dict[str, Any]:
    def change(c: Change) -> dict[str, Any]:
        return {**asdict(c), "late_ms": c.late_ms}

    assert result.wrk is not None
    return _finite(
        {
            "options": asdict(opts),
            "environment": env,
            "setup": result.setup,
            "time_to_apply": apply_stats(result.changes),
            "prober": result.prober,
            "wrk": {**asdict(result.wrk), "failed_requests": failed_requests(result.wrk)},
            "wrk_baseline": asdict(result.baseline) if result.baseline else None,
            "ingressd": result.ingressd,
            "targets": checks,
            "changes": [change(c) for c in result.changes],
        }
    )


# --- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add: Callable[..., Any] = p.add_argument
    add("--ingresses", type=int, default=10000, help="Ingresses in the cluster (10000)")
    add("--per-file", type=int, default=100, help="Ingresses per manifest file (100)")
    add("--format", choices=("yaml", "json"), default="yaml", help="manifest files (yaml)")
    add("--duration", type=float, default=30.0, help="seconds of churn (30)")
    add("--interval", type=float, default=0.1, help="seconds between changes (0.1)")
    add("--apply-timeout", type=float, default=10.0, help="give a change up after (10) s")
    add("--probe-period", type=float, default=2.0, help="ms between probes of a change (2)")
    add("--connections", type=int, default=20, help="wrk connections (20)")
    add("--threads", type=int, default=1, help="wrk threads (1)")
    add("--workers", type=int, default=1, help="ingressd --workers, when it has it (1)")
    add("--baseline", type=int, default=3, help="seconds of wrk before the churn; 0: none (3)")
    add("--json", type=Path, metavar="FILE", help="also write every number and change here")
    args = p.parse_args(argv)
    if args.ingresses < 3 or args.per_file < 1:
        p.error("--ingresses must be >= 3 and --per-file >= 1")
    if min(args.duration, args.interval, args.apply_timeout, args.probe_period) <= 0:
        p.error("--duration, --interval, --apply-timeout and --probe-period must be > 0")
    if args.baseline < 0:
        p.error("--baseline must be >= 0")
    if args.threads < 1 or args.connections < args.threads or args.workers < 1:
        p.error("threads and workers must be >= 1, and connections >= threads")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    opts = Options(
        ingresses=args.ingresses,
        per_file=args.per_file,
        format=args.format,
        duration=args.duration,
        interval=args.interval,
        apply_timeout=args.apply_timeout,
        probe_period_ms=args.probe_period,
        connections=args.connections,
        threads=args.threads,
        workers=args.workers,
        baseline=args.baseline,
    )
    tools = bench.find_tools()
    env = bench.environment(tools)
    say(
        f"churn: {opts.ingresses} Ingresses, {opts.per_file} per {opts.format} file; "
        f"{env['cpu_count']} CPUs, load {' '.join(env['loadavg'])}\n"
        f"{env['ingressd']} ({env['ingressd_commit']}), {env['nginx']}, {env['wrk']}"
    )
    if not tools.ingressd_has_workers:
        say("note: ingressd has no --workers yet: it runs as 1 process")
    else:
        say(f"ingressd runs with --workers {opts.workers}")
    # As bench.py: every signal takes the path of Ctrl-C, so everything is stopped.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, bench._interrupt)
    try:
        result = run(tools, opts)
    except KeyboardInterrupt:
        print("\ninterrupted; processes stopped, temporary files removed", file=sys.stderr)
        return 130
    except bench.BenchError as exc:
        print(f"\nERROR: {exc}", file=sys.stderr)
        return 1
    checks = report(opts, result)
    if args.json:
        data = to_json(opts, env, result, checks)
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        say(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
