#!/usr/bin/env python3
"""Proxy benchmark: ingressd against nginx, on one machine, over 127.0.0.1 only.

One nginx serves as the origin; in front of it, in turn, an nginx configured
like a typical ingress and ingressd in manifest mode. wrk drives both with the
same load, alternating nginx and ingressd round after round so that drift on a
shared machine (other jobs, thermal throttling) hits both alike. Reported per
scenario: median req/s, p50 and p99 latency, CPU time per request of the proxy
processes, and the ingressd/nginx ratios, then a PASS/FAIL block for the
performance targets.

    .venv/bin/python loadtests/bench.py [--duration S] [--rounds N] [--connections C]
        [--threads T] [--scenarios http,https,browser,body64k,allcores,limits,limitsall,h2,grpc]
        [--h2-clients C] [--h2-streams M] [--with-bare] [--no-pin] [--tracing-ratio R]
        [--json FILE]

Where the machine has CPUs to spare, the proxy under test, the origin and the
load generator are pinned to CPUs of their own (``plan_cpus``). The spread over
rounds is reported beside the medians, and a scenario that ran while the
machine was loaded (load average, or other processes' CPU time during it) is
flagged as unreliable.

``--tracing-ratio R`` runs ingressd with OpenTelemetry tracing on (its controller
ConfigMap: ``enable-opentelemetry``, sampler TraceIdRatioBased R), exporting by
OTLP/HTTP to a sink in this process that takes and drops what it is sent
(``OtlpSink``); nginx runs without tracing, so the ratios show its cost.

Needs nginx and wrk (Debian packages nginx-light or nginx, and wrk), and for
the h2 and grpc scenarios h2load (nghttp2-client); exits 2 when they are missing and
cannot be installed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import grpc_scenario
from browser_headers import BROWSER_HEADERS
from tools import (
    LOOPBACK,
    TOOL_PATH,
    BenchError,
    apt_install,
    endpoint_slice,
    free_ports,
    h2load_latencies,
    h2load_output,
    ingress,
    ingress_class,
    not_found,
    parse_h2load,
    percentile,
    port_open,
    run_load,
    service,
    start_server,
    tail,
    wait_ready,
)
from tools import start_nginx as nginx_in

from ingressd.policy.tls import self_signed

REPO = Path(__file__).resolve().parent.parent
HOST = "bench.local"
# The limits scenarios: another host, whose route has limit-rps and
# limit-connections set so high that they never refuse wrk (one client
# address): what is measured is the cost of counting.
LIMITS_HOST = "limits.local"
LIMIT_RPS = 1_000_000
LIMIT_CONNECTIONS = 10_000  # nginx's limit_conn takes at most 65535
SMALL_BODY = b"ok\n"
BIG_BODY = bytes(range(256)) * 256  # 64 KiB
CLK_TCK = os.sysconf("SC_CLK_TCK")
WARMUP_SECONDS = 1
PROXIES = ("nginx", "ingressd")
# churn.py and soak.py use these through bench (BenchError, LOOPBACK, free_ports,
# port_open, start_server and wait_ready are imported above for bench's own use).
_tail = tail


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    path: str
    tls: bool
    workers: int
    host: str = HOST
    # The load generator: wrk (HTTP/1.1), h2load (HTTP/2 by ALPN h2), or h2load
    # making gRPC calls (h2load-grpc, grpc_scenario.py).
    client: str = "wrk"
    # Request headers besides Host (wrk: set by a Lua script).
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def expected_body(self) -> bytes:
        return BIG_BODY if self.path == "/64k" else SMALL_BODY


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("http", "plain HTTP, GET / (3 B body), 1 worker each", "/", False, 1),
        Scenario("https", "TLS terminated, keep-alive, GET / (3 B body), 1 worker", "/", True, 1),
        Scenario(
            "browser",
            f"plain HTTP, GET / with {len(BROWSER_HEADERS)} browser headers (a cookie), "
            "1 worker each",
            "/",
            False,
            1,
            headers=BROWSER_HEADERS,
        ),
        Scenario("body64k", "plain HTTP, GET /64k (64 KiB body), 1 worker", "/64k", False, 1),
        Scenario(
            "allcores",
            "plain HTTP, GET /, workers = CPU count for both",
            "/",
            False,
            os.cpu_count() or 1,
        ),
        Scenario(
            "limits",
            "plain HTTP, GET / with limit-rps and limit-connections, 1 worker each",
            "/",
            False,
            1,
            LIMITS_HOST,
        ),
        Scenario(
            "limitsall",
            "plain HTTP, GET / with limit-rps and limit-connections, workers = CPU count "
            "(the counters shared by the workers)",
            "/",
            False,
            os.cpu_count() or 1,
            LIMITS_HOST,
        ),
        Scenario(
            "h2",
            "HTTP/2 over TLS (ALPN h2; nginx: listen ... ssl http2), GET / (3 B body), "
            "h2load, 1 worker each; the upstream gets HTTP/1.1",
            "/",
            True,
            1,
            client="h2load",
        ),
        Scenario(
            "grpc",
            "gRPC unary calls over HTTP/2 (TLS, ALPN h2) to a GRPC route (nginx: grpc_pass), "
            f"h2load {grpc_scenario.CLIENTS} connections x {grpc_scenario.STREAMS} streams, "
            "1 worker each",
            grpc_scenario.GRPC_PATH,
            True,
            1,
            grpc_scenario.GRPC_HOST,
            client="h2load-grpc",
        ),
    )
}
# Idle HTTP/2 connections opened to each proxy to measure its memory per
# connection (the h2 scenario).
IDLE_CONNECTIONS = 500


@dataclass
class Tools:
    nginx: str
    nginx_has_e: bool  # nginx -e (error log path), since 1.19.5
    wrk: str
    ingressd: str
    ingressd_has_workers: bool
    ingressd_has_access_log: bool = False  # --access-log (off here, as nginx's access_log off)
    h2load: str | None = None  # the h2 and grpc scenarios' load generator


@dataclass
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    socket_errors: dict[str, int]
    non_2xx_3xx: int

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values()) + self.non_2xx_3xx


@dataclass
class Run:
    proxy: str
    round: int
    wrk: WrkResult
    cpu_seconds: float
    # CPU time other processes on the machine used during the run (not this
    # script's tree, not kernel threads), and the run's wall time.
    others_cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    # The load generator's, the origins' and this script's CPU time during the run.
    client_cpu_seconds: float = 0.0

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds / self.wrk.requests * 1e6 if self.wrk.requests else float("nan")


@dataclass
class Summary:
    """Medians across rounds for one proxy in one scenario."""

    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float
    errors: int


@dataclass(frozen=True)
class Spread:
    """How far the rounds of one proxy and metric lie apart."""

    min: float
    max: float
    stdev: float | None  # sample standard deviation; None with a single round
    rel_stdev: float | None  # stdev / mean

    def range_text(self, digits: int = 1) -> str:
        return f"{self.min:.{digits}f}-{self.max:.{digits}f}"

    def rel_text(self) -> str:
        return "n/a" if self.rel_stdev is None else f"{self.rel_stdev * 100:.1f}%"


def spread(values: list[float]) -> Spread:
    """min, max and (from two values on) the standard deviation, absolute and
    relative to the mean; NaNs (a run without requests) are left out."""
    finite = [v for v in values if v == v]
    if not finite:
        nan = float("nan")
        return Spread(nan, nan, None, None)
    if len(finite) < 2:
        return Spread(finite[0], finite[0], None, None)
    stdev = statistics.stdev(finite)
    mean = statistics.fmean(finite)
    return Spread(min(finite), max(finite), stdev, stdev / mean if mean else None)


METRICS = ("rps", "p50_ms", "p99_ms", "cpu_us_per_request")


def _metric(run: Run, name: str) -> float:
    if name == "cpu_us_per_request":
        return run.cpu_us_per_request
    return float(getattr(run.wrk, name))


@dataclass(frozen=True)
class CpuPlan:
    """Which CPUs each party may run on; empty tuples: not pinned."""

    proxy: tuple[int, ...]
    origin: tuple[int, ...]
    client: tuple[int, ...]
    note: str

    @property
    def pinned(self) -> bool:
        return bool(self.proxy)


def plan_cpus(cpus: list[int], workers: int, pin: bool = True) -> CpuPlan:
    """Where the proxy under test (nginx, ingressd and the bare forwarder, in
    turn: they never run at once), the origin and the load generator run.

    The proxy gets CPUs of its own, one per worker, so that neither the origin
    nor wrk takes time from it mid-run and its CPU time per request is its
    own. With 2 CPUs and 1 worker that leaves one CPU that wrk and the origin
    share: both are C and far cheaper per request than the proxy, which is the
    bottleneck. With 3 or more, the origin gets one and wrk the rest. When the
    proxy's workers need every CPU but one (or fewer CPUs are available) there
    is nothing to split and nothing is pinned: the scheduler places them all.
    """
    cpus = sorted(cpus)
    if not pin:
        return CpuPlan((), (), (), "not pinned (--no-pin)")
    if len(cpus) < 2:
        return CpuPlan((), (), (), f"not pinned: {len(cpus)} CPU available")
    if len(cpus) == 2 and workers == 1:
        proxy: tuple[int, ...] = (cpus[0],)
        rest: tuple[int, ...] = (cpus[1],)
        return CpuPlan(
            proxy, rest, rest, f"proxy on CPU {cpus[0]}; origin and load generator on CPU {cpus[1]}"
        )
    if len(cpus) >= 3 and workers <= len(cpus) - 2:
        proxy, origin = tuple(cpus[:workers]), (cpus[workers],)
        client = tuple(cpus[workers + 1 :])
        return CpuPlan(
            proxy,
            origin,
            client,
            f"proxy on CPU {_cpu_list(proxy)}; origin on CPU {origin[0]}; "
            f"load generator on CPU {_cpu_list(client)}",
        )
    return CpuPlan(
        (),
        (),
        (),
        f"not pinned: {workers} proxy workers and {len(cpus)} CPUs leave nothing to split",
    )


def _cpu_list(cpus: tuple[int, ...]) -> str:
    return ",".join(str(c) for c in cpus)


# When the origin and the load generator, pinned apart from the proxy, keep
# their CPUs this busy, they may be what limits the proxy's req/s.
CLIENT_BUSY_LIMIT = 0.9


def client_busy(run: Run, plan: CpuPlan) -> float | None:
    """The share of their CPUs the origin and the load generator used during a
    run; None when they were not pinned apart from the proxy."""
    cpus = set(plan.client) | set(plan.origin)
    if not plan.pinned or not cpus or run.wall_seconds <= 0:
        return None
    return run.client_cpu_seconds / run.wall_seconds / len(cpus)


def client_bound_notes(result: ScenarioResult) -> list[str]:
    """A note per proxy whose rounds kept the origin's and wrk's CPUs busy."""
    if result.cpu_plan is None:
        return []
    notes = []
    for proxy in result.proxies:
        shares = [
            b
            for r in result.runs
            if r.proxy == proxy and (b := client_busy(r, result.cpu_plan)) is not None
        ]
        if shares and max(shares) >= CLIENT_BUSY_LIMIT:
            cpus = _cpu_list(
                tuple(sorted(set(result.cpu_plan.client) | set(result.cpu_plan.origin)))
            )
            notes.append(
                f"with {proxy} the origin and the load generator kept CPU {cpus} "
                f"{max(shares) * 100:.0f}% busy: {proxy}'s req/s may be bounded by them"
            )
    return notes


# A scenario is unreliable when the machine was loaded: a 1-minute load
# average above this many per CPU when the benchmark started, or other
# processes using more than this many CPUs' worth (per CPU) during its runs.
LOAD_LIMIT_PER_CPU = 0.5
OTHERS_LIMIT_PER_CPU = 0.1


@dataclass(frozen=True)
class Reliability:
    load_before: tuple[float, float, float]  # 1/5/15-minute load average
    load_after: tuple[float, float, float]
    load_judged: bool  # whether load_before was judged (the first scenario only)
    others_cpu_seconds: float  # other processes' CPU time during the measured runs
    measured_seconds: float  # wall time of the measured runs
    reasons: tuple[str, ...]

    @property
    def unreliable(self) -> bool:
        return bool(self.reasons)

    @property
    def others_cpus(self) -> float:
        """Other processes' CPU use during the runs, in CPUs."""
        return self.others_cpu_seconds / self.measured_seconds if self.measured_seconds else 0.0


def judge_load(
    cpus: int,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    others_cpu_seconds: float,
    measured_seconds: float,
    judge_load_before: bool,
) -> Reliability:
    """Flag a scenario measured on a loaded machine.

    The load average before is judged only for the benchmark's first scenario:
    the 1-minute average decays over about a minute, so for the next ones it is
    mostly the benchmark's own previous scenario. Other processes' CPU time
    during the measured runs is judged for every scenario: it is what the
    load average only hints at, CPU taken from the proxy, the origin or wrk.
    """
    reasons = []
    if judge_load_before and load_before[0] > LOAD_LIMIT_PER_CPU * cpus:
        reasons.append(
            f"load average {load_before[0]:.2f} before it started "
            f"(> {LOAD_LIMIT_PER_CPU} x {cpus} CPUs)"
        )
    others = others_cpu_seconds / measured_seconds if measured_seconds else 0.0
    if others > OTHERS_LIMIT_PER_CPU * cpus:
        reasons.append(
            f"other processes used {others:.2f} CPUs during the runs "
            f"(> {OTHERS_LIMIT_PER_CPU} x {cpus} CPUs)"
        )
    return Reliability(
        load_before,
        load_after,
        judge_load_before,
        others_cpu_seconds,
        measured_seconds,
        tuple(reasons),
    )


@dataclass
class ScenarioResult:
    scenario: Scenario
    workers: dict[str, int]
    notes: list[str]
    # The 1/5/15-minute load when the scenario started: other jobs on the
    # machine are the main source of noise.
    loadavg: list[str] = field(default_factory=lambda: _loadavg())
    runs: list[Run] = field(default_factory=list)
    # h2: KiB of resident memory per idle HTTP/2 connection, by proxy.
    idle_kib: dict[str, float] = field(default_factory=dict)
    cpu_plan: CpuPlan | None = None
    # Cpus_allowed_list of each proxy's processes, as the kernel reports it.
    affinity: dict[str, str] = field(default_factory=dict)
    reliability: Reliability | None = None

    @property
    def proxies(self) -> list[str]:
        """nginx and ingressd, then any other measured (the bare forwarder)."""
        extra = [r.proxy for r in self.runs if r.proxy not in PROXIES]
        return [*PROXIES, *dict.fromkeys(extra)]

    def summary(self, proxy: str) -> Summary:
        runs = [r for r in self.runs if r.proxy == proxy]
        if not runs:  # not measured (the note says why)
            nan = float("nan")
            return Summary(rps=nan, p50_ms=nan, p99_ms=nan, cpu_us_per_request=nan, errors=0)
        return Summary(
            rps=statistics.median(r.wrk.rps for r in runs),
            p50_ms=statistics.median(r.wrk.p50_ms for r in runs),
            p99_ms=statistics.median(r.wrk.p99_ms for r in runs),
            cpu_us_per_request=statistics.median(r.cpu_us_per_request for r in runs),
            errors=sum(r.wrk.errors for r in runs),
        )

    def spreads(self, proxy: str) -> dict[str, Spread]:
        runs = [r for r in self.runs if r.proxy == proxy]
        return {m: spread([_metric(r, m) for r in runs]) for m in METRICS}

    def ratios(self, proxy: str = "ingressd", reference: str = "nginx") -> dict[str, float]:
        """``proxy`` divided by ``reference``: above 1 is better for req/s, worse for the rest."""
        a, b = self.summary(proxy), self.summary(reference)
        return {
            "rps": _ratio(a.rps, b.rps),
            "p50": _ratio(a.p50_ms, b.p50_ms),
            "p99": _ratio(a.p99_ms, b.p99_ms),
            "cpu_us_per_request": _ratio(a.cpu_us_per_request, b.cpu_us_per_request),
        }


def _loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def _load_triple() -> tuple[float, float, float]:
    one, five, fifteen = (float(x) for x in _loadavg())
    return one, five, fifteen


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


# --- prerequisites ---------------------------------------------------------------


# What is missing -> the Debian packages that bring it, the first that installs
# wins: nginx-light is the smallest build with the ssl module; newer Debian
# folds it into "nginx".
PACKAGES = {"nginx": ["nginx-light", "nginx"], "wrk": ["wrk"], "h2load": ["nghttp2-client"]}


def _missing_tools(h2: bool = False) -> list[str]:
    return not_found(("nginx", "wrk", "h2load") if h2 else ("nginx", "wrk"))


def _try_install(h2: bool) -> None:
    """apt-get install what is missing, as root or through sudo; failures are only reported."""
    apt_install(lambda: _missing_tools(h2), PACKAGES)


def _ingressd_binary() -> str | None:
    for candidate in (Path(sys.executable).parent / "ingressd", REPO / ".venv/bin/ingressd"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("ingressd")


def find_tools(h2: bool = False) -> Tools:
    """The tools the benchmark needs; print what is missing and exit 2 if any is.
    ``h2``: the h2 scenario runs, which needs h2load too."""
    if _missing_tools(h2):
        _try_install(h2)
    missing = _missing_tools(h2)
    ingressd = _ingressd_binary()
    if ingressd is None:
        missing.append("ingressd (run: .venv/bin/pip install -e .)")
    if missing:
        print("missing prerequisites: " + ", ".join(missing), file=sys.stderr)
        print(
            "install them with: apt-get install -y nginx-light wrk nghttp2-client",
            file=sys.stderr,
        )
        sys.exit(2)
    assert ingressd is not None
    help_text = subprocess.run(
        [ingressd, "serve", "--help"], capture_output=True, text=True, check=False
    ).stdout
    nginx = str(shutil.which("nginx", path=TOOL_PATH))
    version = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", _first_line([nginx, "-v"]))
    return Tools(
        nginx=nginx,
        nginx_has_e=bool(version) and tuple(map(int, version.groups())) >= (1, 19, 5),
        wrk=str(shutil.which("wrk", path=TOOL_PATH)),
        ingressd=ingressd,
        ingressd_has_workers="--workers" in help_text,
        ingressd_has_access_log="--access-log" in help_text,
        h2load=shutil.which("h2load", path=TOOL_PATH),
    )


def _first_line(cmd: list[str]) -> str:
    """A version line: nginx and wrk print theirs on stderr, not stdout."""
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def environment(tools: Tools) -> dict[str, Any]:
    git = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return {
        "cpu_count": os.cpu_count(),
        "loadavg": _loadavg(),
        "nginx": _first_line([tools.nginx, "-v"]),
        "wrk": " ".join(_first_line([tools.wrk, "-v"]).split()[:2]),
        "ingressd": f"ingressd {importlib.metadata.version('ingressd')}",
        # "ingressd X, compiled with mypyc" or pure Python: which build is measured.
        "build": _first_line([tools.ingressd, "--version"]),
        "cpus_allowed": sorted(os.sched_getaffinity(0)),
        "ingressd_commit": git.stdout.strip(),
        "ingressd_has_workers": tools.ingressd_has_workers,
    }


# --- processes -------------------------------------------------------------------


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


# --- CPU accounting and placement ------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    ppid: int
    ticks: int  # utime + stime + cutime + cstime


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, CPU ticks) of a live process; ticks include its reaped children's."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after it.
    rest = data[data.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14-17.
    utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
    return int(rest[1]), utime + stime + cutime + cstime


def cpu_snapshot() -> dict[int, ProcStat]:
    """Every visible process's parent and CPU ticks, read at once."""
    stats: dict[int, ProcStat] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (st := _proc_stat(int(entry.name))) is not None:
            stats[int(entry.name)] = ProcStat(*st)
    return stats


def tree_pids(snapshot: dict[int, ProcStat], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, st in snapshot.items():
        children.setdefault(st.ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in found or pid not in snapshot:
            continue
        found.add(pid)
        todo.extend(children.get(pid, ()))
    return found


def tree_ticks(snapshot: dict[int, ProcStat], root: int) -> int:
    return sum(snapshot[pid].ticks for pid in tree_pids(snapshot, root))


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds used so far by ``root`` and all its descendants (nginx workers,
    ingressd worker processes). Counting reaped children's time too keeps the
    sum steady when a worker exits between two readings."""
    return tree_ticks(cpu_snapshot(), root) / CLK_TCK


def busy_ticks(proc_stat: str) -> int:
    """CPU time the whole machine spent running something, from /proc/stat's
    first line (ticks of USER_HZ, as /proc/PID/stat): user, nice, system, and
    steal (the hypervisor running someone else on our CPUs). Interrupt and
    softirq time are left out: on loopback much of it is the benchmark's own
    traffic, which processes' times may not include."""
    fields = proc_stat.split("\n", 1)[0].split()
    if not fields or fields[0] != "cpu":
        raise BenchError(f"unexpected /proc/stat: {proc_stat[:80]!r}")
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (int(x) for x in fields[1:9])
    return user + nice + system + steal


def machine_busy_ticks() -> int:
    return busy_ticks(Path("/proc/stat").read_text())


def others_ticks(busy_before: int, busy_after: int, ours: int) -> int:
    """What the machine ran besides the benchmark's own processes between two
    readings: its busy time less ``ours`` (this script's tree: the proxies,
    the origins, and wrk through its reaped children's time). Per-process
    times of the others would not do: a parent's reaped-children time jumps by
    a child's whole life when it is reaped, and processes outside this PID
    namespace are not in /proc at all."""
    return max(0, busy_after - busy_before - ours)


def pin_tree(root: int, cpus: tuple[int, ...] | set[int]) -> None:
    """Pin a running process tree, every thread of it, to ``cpus``."""
    for pid in tree_pids(cpu_snapshot(), root):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(tid), cpus)


def tree_affinity(root: int) -> str:
    """The distinct Cpus_allowed_list values of a process tree, e.g. "0" or "0-1"."""
    seen: list[str] = []
    for pid in sorted(tree_pids(cpu_snapshot(), root)):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("Cpus_allowed_list:"):
                    value = line.split(":", 1)[1].strip()
                    if value not in seen:
                        seen.append(value)
    return " ".join(seen)


# --- wrk -------------------------------------------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _latency_ms(output: str, percentile: str) -> float:
    m = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
    return float(m.group(1)) * _UNITS_MS[m.group(2)] if m else float("nan")


def parse_wrk(output: str) -> WrkResult:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in ", output, re.MULTILINE)
    if not rps or not total:
        raise BenchError(f"cannot parse wrk output:\n{output}")
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    kinds = ("connect", "read", "write", "timeout")
    return WrkResult(
        requests=int(total.group(1)),
        rps=float(rps.group(1)),
        p50_ms=_latency_ms(output, "50"),
        p99_ms=_latency_ms(output, "99"),
        socket_errors={k: int(sock.group(i + 1)) if sock else 0 for i, k in enumerate(kinds)},
        non_2xx_3xx=int(non2xx.group(1)) if non2xx else 0,
    )


def wrk_lua(headers: tuple[tuple[str, str], ...]) -> str:
    """A wrk script that sends ``headers`` with every request. Values go in Lua
    long brackets, whose level is chosen so that no value can close them."""

    def quote(text: str) -> str:
        level = 0
        while f"]{'=' * level}]" in text:
            level += 1
        return f"[{'=' * level}[{text}]{'=' * level}]"

    # The spaces matter: "t[[[k]]]" reads as a call of t with the string "[k".
    return "".join(f"wrk.headers[ {quote(k)} ] = {quote(v)}\n" for k, v in headers)


def run_wrk(
    wrk: str,
    url: str,
    seconds: int,
    connections: int,
    threads: int,
    host: str = HOST,
    script: Path | None = None,
    cpus: tuple[int, ...] = (),
) -> WrkResult:
    cmd = [
        wrk, "--latency", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
        "-H", f"Host: {host}", url,
    ]  # fmt: skip
    if script is not None:
        cmd[1:1] = ["-s", str(script)]
    out = run_load("wrk", cmd, seconds, cpus)
    if script is not None and out.stderr.strip():
        # A script wrk cannot load is reported on stderr, and wrk then runs
        # without it (exit code 0): the requests would lack their headers.
        raise BenchError(f"wrk could not run {script.name}: {out.stderr.strip()}")
    return parse_wrk(out.stdout)


# --- h2load ----------------------------------------------------------------------


def h2load_result(output: str, log_file: Path) -> WrkResult:
    """h2load's summary, and p50/p99 from its per-request log (it prints no percentiles)."""
    summary = parse_h2load(output)
    latencies = h2load_latencies(log_file)
    return WrkResult(
        requests=summary.succeeded,
        rps=summary.rps,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        socket_errors={
            "failed": summary.failed,
            "errored": summary.errored,
            "timeout": summary.timeout,
        },
        non_2xx_3xx=summary.non_2xx_3xx,
    )


def run_h2load(
    h2load: str,
    url: str,
    seconds: int,
    clients: int,
    streams: int,
    threads: int,
    host: str,
    cpus: tuple[int, ...] = (),
) -> WrkResult:
    with tempfile.NamedTemporaryFile(prefix="h2load-", suffix=".log") as log:
        cmd = [
            h2load, "-D", str(seconds), "-c", str(clients), "-m", str(streams),
            "-t", str(threads), "-H", f":authority: {host}", f"--log-file={log.name}", url,
        ]  # fmt: skip
        return h2load_result(h2load_output(cmd, seconds, cpus), Path(log.name))


def check_h2(h2load: str, port: int, scenario: Scenario) -> None:
    """A few requests by hand over HTTP/2: ALPN h2, every one a 200."""
    url = f"https://{LOOPBACK}:{port}{scenario.path}"
    out = subprocess.run(
        [h2load, "-n", "20", "-c", "1", "-m", "10", "-H", f":authority: {scenario.host}", url],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if "Application protocol: h2" not in out.stdout or "status codes: 20 2xx" not in out.stdout:
        raise BenchError(f"HTTP/2 check against port {port} failed:\n{out.stdout}{out.stderr}")


# --- memory per idle HTTP/2 connection ---------------------------------------------------

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def tree_rss_kib(root: int) -> int:
    """Resident memory of ``root`` and its descendants, in KiB."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (st := _proc_stat(int(entry.name))) is not None:
            children.setdefault(st[0], []).append(int(entry.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, ()))
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def idle_h2_kib(proc: subprocess.Popen[bytes], port: int, count: int) -> float:
    """Open ``count`` HTTP/2 connections (TLS, ALPN h2, the preface and
    SETTINGS, nothing more), let them settle, and return the proxy's resident
    memory growth per connection, in KiB."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    before = tree_rss_kib(proc.pid)
    socks: list[ssl.SSLSocket] = []
    try:
        for _ in range(count):
            raw = socket.create_connection((LOOPBACK, port), timeout=5)
            tls = ctx.wrap_socket(raw, server_hostname=HOST)
            if tls.selected_alpn_protocol() != "h2":
                raise BenchError(f"port {port} did not choose h2 by ALPN")
            tls.sendall(H2_PREFACE)
            tls.recv(65536)  # the server's SETTINGS
            socks.append(tls)
        time.sleep(1.0)
        after = tree_rss_kib(proc.pid)
    finally:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.close()
    return (after - before) / count


# --- the origin and the two proxies ----------------------------------------------


NGINX_TEMPS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def _nginx_main(prefix: Path, workers: int) -> str:
    """The top of an nginx.conf that keeps every file nginx writes inside ``prefix``."""
    # As root the workers would switch to "nobody", which cannot read the
    # private temp dir (certificates, the 64 KiB file): keep them root there.
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "".join(f"    {kind}_temp_path {prefix}/tmp/{kind};\n" for kind in NGINX_TEMPS)
    return (
        f"{user}worker_processes {workers};\n"
        f"pid {prefix}/nginx.pid;\n"
        f"lock_file {prefix}/nginx.lock;\n"
        f"error_log {prefix}/error.log warn;\n"
        # ingress-nginx's event settings.
        "events { worker_connections 16384; multi_accept on; }\n"
        "http {\n"
        "    access_log off;\n"
        f"{temp}"
    )


def origin_conf(prefix: Path, port: int) -> str:
    # A generous keepalive_requests: neither proxy should have to reconnect to
    # the origin mid-run, so upstream connection reuse is compared as is.
    return _nginx_main(prefix, 1) + (
        "    keepalive_requests 1000000;\n"
        "    server {\n"
        f"        listen {LOOPBACK}:{port} backlog=4096;\n"
        '        location = / { default_type text/plain; return 200 "ok\\n"; }\n'
        f"        location = /64k {{ root {prefix}/www; default_type application/octet-stream; }}\n"
        "    }\n"
        "}\n"
    )


def proxy_conf(
    prefix: Path,
    workers: int,
    origin: int,
    http_port: int,
    https_port: int,
    tls: Path,
    http2: bool = False,
) -> str:
    """nginx configured like ingress-nginx's server blocks: bench.local, and
    limits.local with the limit zones ingress-nginx writes for limit-rps and
    limit-connections (controller/template/template.go buildRateLimitZones and
    buildRateLimit; the geo/map pair that exempts limit-allowlist from nginx.tmpl).
    ``http2``: the TLS listener speaks HTTP/2 too, as ingress-nginx's (use-http2)."""
    h2 = " http2" if http2 else ""
    headers = "".join(
        f"            proxy_set_header {name} {value};\n"
        for name, value in (
            ("Host", "$host"),
            ("Connection", '""'),
            ("X-Request-ID", "$request_id"),
            ("X-Real-IP", "$remote_addr"),
            ("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
            ("X-Forwarded-Host", "$host"),
            ("X-Forwarded-Port", "$server_port"),
            ("X-Forwarded-Proto", "$scheme"),
        )
    )
    location = (
        "            proxy_pass http://origin;\n"
        "            proxy_http_version 1.1;\n"
        # ingress-nginx's defaults: responses stream to the client as they
        # arrive (as ingressd's do) rather than being buffered, to temp files
        # beyond 32 KiB.
        "            proxy_buffering off;\n"
        "            proxy_buffer_size 4k;\n"
        "            proxy_buffers 4 4k;\n"
        f"{headers}"
        # ingress-nginx sends HSTS on TLS hosts by default (hsts: true; lua_ingress.lua
        # header_filter sets it when the scheme is https), and so does ingressd.
        "            add_header Strict-Transport-Security $bench_hsts always;\n"
    )

    def server(host: str, limits: str = "") -> str:
        return (
            "    server {\n"
            f"        listen {LOOPBACK}:{http_port} reuseport backlog=4096;\n"
            f"        listen {LOOPBACK}:{https_port} ssl{h2} reuseport backlog=4096;\n"
            f"        server_name {host};\n"
            f"        ssl_certificate {tls}/tls.crt;\n"
            f"        ssl_certificate_key {tls}/tls.key;\n"
            "        location / {\n"
            f"{limits}{location}"
            "        }\n"
            "    }\n"
        )

    # Only the first server block may carry the listen options (reuseport, backlog).
    second = server(LIMITS_HOST, (
        f"            limit_conn bench_limits_conn {LIMIT_CONNECTIONS};\n"
        f"            limit_req zone=bench_limits_rps burst={LIMIT_RPS * 5} nodelay;\n"
    )).replace(" reuseport backlog=4096", "")  # fmt: skip
    # h2load does not reconnect after a GOAWAY: nginx must not end its
    # connections after keepalive_requests (ingressd has no such count).
    keepalive_requests = 10_000_000 if http2 else 10_000
    return _nginx_main(prefix, workers) + (
        f"    keepalive_requests {keepalive_requests};\n"
        "    ssl_session_cache shared:SSL:10m;\n"
        "    ssl_session_tickets on;\n"
        f"    upstream origin {{ server {LOOPBACK}:{origin}; keepalive 64; }}\n"
        '    map $scheme $bench_hsts { https "max-age=31536000; includeSubDomains"; default ""; }\n'
        "    limit_req_status 503;\n"
        "    limit_conn_status 503;\n"
        "    geo $remote_addr $allowlist_bench_limits { default 0; }\n"
        '    map $allowlist_bench_limits $limit_bench_limits { 0 $binary_remote_addr; 1 ""; }\n'
        "    limit_conn_zone $limit_bench_limits zone=bench_limits_conn:5m;\n"
        "    limit_req_zone $limit_bench_limits zone=bench_limits_rps:5m "
        f"rate={LIMIT_RPS}r/s;\n"
        f"{server(HOST)}"
        f"{second}"
        "}\n"
    )


def start_nginx(
    stack: contextlib.ExitStack,
    tools: Tools,
    prefix: Path,
    conf: str,
    port: int,
    cpus: tuple[int, ...] = (),
) -> subprocess.Popen[bytes]:
    for kind in NGINX_TEMPS:  # _nginx_main's temp paths
        (prefix / "tmp" / kind).mkdir(parents=True, exist_ok=True)
    return nginx_in(
        stack, tools.nginx, prefix, conf, port, error_log_flag=tools.nginx_has_e, cpus=cpus
    )


def write_certificate(directory: Path) -> tuple[bytes, bytes]:
    cert, key = self_signed(common_name=HOST, dns_names=(HOST, grpc_scenario.GRPC_HOST), days=30)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(cert)
    (directory / "tls.key").write_bytes(key)
    return cert, key


def manifests(origin: int, cert: bytes, key: bytes) -> dict[str, dict[str, Any]]:
    """The objects ingressd serves bench.local from, as in examples/."""
    ns = "bench"
    b64 = base64.b64encode
    # bench.local is under spec.tls: keep plain HTTP served, not redirected,
    # so the http scenarios measure proxying.
    plain = {"nginx.ingress.kubernetes.io/ssl-redirect": "false"}
    limits = {
        "nginx.ingress.kubernetes.io/limit-rps": str(LIMIT_RPS),
        "nginx.ingress.kubernetes.io/limit-connections": str(LIMIT_CONNECTIONS),
    }
    return {
        "ingressclass": ingress_class(),
        "ingress": ingress("bench", ns, HOST, "origin", 80, plain, tls_secret="bench-tls"),
        "service": service("origin", ns, "http"),
        "ingress-limits": ingress("bench-limits", ns, LIMITS_HOST, "origin", 80, limits),
        "endpointslice": endpoint_slice("origin-1", ns, "origin", "http", origin),
        "secret": {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "bench-tls", "namespace": ns},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": b64(cert).decode(), "tls.key": b64(key).decode()},
        },
    }


# --tracing-ratio: the controller ConfigMap ingressd reads (in its manifest folder).
TRACING_CONFIGMAP = "bench/ingressd-controller"


def tracing_configmap(ratio: float, collector_port: int) -> dict[str, Any]:
    namespace, name = TRACING_CONFIGMAP.split("/")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {
            "enable-opentelemetry": "true",
            "otlp-collector-host": LOOPBACK,
            "otlp-collector-port": str(collector_port),
            "otel-sampler": "TraceIdRatioBased",
            "otel-sampler-ratio": f"{ratio:g}",
        },
    }


class OtlpSink:
    """A collector that takes OTLP/HTTP posts and drops them (counting the bytes), in
    a thread of this process: the proxy's export costs what it would, the collector
    nothing of the proxy's CPUs."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        sink = self
        self.posts = 0
        self.bytes = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                sink.posts += 1
                sink.bytes += length
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def ingressd_log(workdir: Path, ports: list[int]) -> Path:
    return workdir / f"ingressd-{ports[0]}.log"


def start_ingressd(
    stack: contextlib.ExitStack,
    tools: Tools,
    workdir: Path,
    ports: list[int],
    workers: int,
    cpus: tuple[int, ...] = (),
) -> subprocess.Popen[bytes]:
    http_port, https_port, admin_port = ports
    cmd = [
        tools.ingressd, "serve", "--manifests", str(workdir / "manifests"),
        "--address", LOOPBACK, "--http-port", str(http_port), "--https-port", str(https_port),
        "--admin-port", str(admin_port), "--log-level", "warning",
    ]  # fmt: skip
    if tools.ingressd_has_workers:
        cmd += ["--workers", str(workers)]
    if tools.ingressd_has_access_log:
        cmd += ["--access-log", "off"]  # nginx runs with access_log off too
    if (workdir / "manifests" / "tracing.json").exists():
        cmd += ["--configmap", TRACING_CONFIGMAP]  # --tracing-ratio
    log = ingressd_log(workdir, ports)
    proc = start_server(stack, cmd, log, cpus)
    admin = f"http://{LOOPBACK}:{admin_port}"
    wait_ready(proc, lambda: http_ok(f"{admin}/readyz"), "ingressd", log)
    with urllib.request.urlopen(f"{admin}/problems", timeout=5) as resp:
        if problems := json.load(resp).get("problems"):
            print(f"WARNING: ingressd reports problems: {problems}")
    return proc


def fetch(
    port: int,
    path: str,
    tls: bool,
    host: str = HOST,
    headers: tuple[tuple[str, str], ...] = (),
) -> tuple[int, bytes]:
    conn: http.client.HTTPConnection
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(LOOPBACK, port, timeout=5, context=ctx)
    else:
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host, **dict(headers)})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def offers_h2(port: int) -> bool:
    """Whether the TLS listener on ``port`` agrees to HTTP/2 by ALPN."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection((LOOPBACK, port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=grpc_scenario.GRPC_HOST) as tls,
    ):
        return tls.selected_alpn_protocol() == "h2"


def check_proxy(name: str, port: int, scenario: Scenario, cert: bytes = b"") -> None:
    """One request by hand: wrk counts 3xx as success and never looks at bodies,
    so a redirect or a wrong route would otherwise pass for a fast proxy."""
    if scenario.client == "h2load-grpc":
        if (problem := grpc_scenario.check(port, cert)) is not None:
            raise BenchError(f"{name}: a gRPC call to {scenario.path} failed: {problem}")
        return
    status, body = fetch(port, scenario.path, scenario.tls, scenario.host, scenario.headers)
    if status != 200 or body != scenario.expected_body:
        raise BenchError(
            f"{name} answered {status} with {len(body)} bytes ({body[:200]!r}) for "
            f"{scenario.path}, expected 200 with {len(scenario.expected_body)} bytes"
        )


# --- running ---------------------------------------------------------------------


@dataclass
class Options:
    duration: int
    rounds: int
    connections: int
    threads: int
    h2_clients: int = 10
    h2_streams: int = 10
    pin: bool = True  # pin the proxy, the origin and the load generator (plan_cpus)
    with_bare: bool = False  # measure the bare forwarder too (BARE_SCENARIOS)
    tracing_ratio: float | None = None  # ingressd traces, sampling this share (OtlpSink)


# The scenarios --with-bare measures the bare forwarder in: HTTP/1.1 with
# small answers, 1 process, as in issue 16's comparison.
BARE_SCENARIOS = ("http", "https", "browser")
# What issue 16 measured for the bare forwarder against nginx (req/s ratios).
ISSUE_BARE_RATIOS = {"http": 0.93, "https": 0.80}
BARE_SCRIPT = Path(__file__).resolve().parent / "bare_forwarder.py"


@dataclass
class Target:
    proxy: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path


@dataclass(frozen=True)
class Measured:
    result: WrkResult
    cpu_seconds: float  # the proxy's process tree
    others_cpu_seconds: float  # everything else on the machine but this script's tree
    wall_seconds: float
    client_cpu_seconds: float  # this script's tree but the proxy: wrk, the origins, itself


def measure(
    tools: Tools,
    target: Target,
    scenario: Scenario,
    opts: Options,
    client_cpus: tuple[int, ...] = (),
    script: Path | None = None,
) -> Measured:
    scheme = "https" if scenario.tls else "http"
    url = f"{scheme}://{LOOPBACK}:{target.port}{scenario.path}"
    busy_before = machine_busy_ticks()
    before = cpu_snapshot()
    start = time.monotonic()
    if scenario.client == "h2load":
        assert tools.h2load is not None
        result = run_h2load(
            tools.h2load,
            url,
            opts.duration,
            opts.h2_clients,
            opts.h2_streams,
            opts.threads,
            scenario.host,
            client_cpus,
        )
    elif scenario.client == "h2load-grpc":
        assert tools.h2load is not None
        try:
            result = WrkResult(
                **grpc_scenario.run_h2load(tools.h2load, target.port, opts.duration, client_cpus)
            )
        except RuntimeError as exc:
            raise BenchError(str(exc)) from exc
    else:
        result = run_wrk(
            tools.wrk,
            url,
            opts.duration,
            opts.connections,
            opts.threads,
            scenario.host,
            script,
            client_cpus,
        )
    wall = time.monotonic() - start
    after = cpu_snapshot()
    busy_after = machine_busy_ticks()
    if target.proc.poll() is not None:
        raise BenchError(
            f"{target.proxy} exited ({target.proc.returncode}) during a run:\n{tail(target.log)}"
        )
    me = os.getpid()
    # This script's tree holds the proxies, the origins and (reaped, in its
    # children's time) the load generator.
    ours = tree_ticks(after, me) - tree_ticks(before, me)
    proxy = tree_ticks(after, target.proc.pid) - tree_ticks(before, target.proc.pid)
    others = others_ticks(busy_before, busy_after, ours)
    client = ours - proxy
    return Measured(result, proxy / CLK_TCK, others / CLK_TCK, wall, client / CLK_TCK)


def start_bare(
    stack: contextlib.ExitStack, workdir: Path, origin: int, cpus: tuple[int, ...]
) -> tuple[subprocess.Popen[bytes], list[int], Path]:
    """The bare forwarder (bare_forwarder.py) on a plain and a TLS port."""
    ports = free_ports(2)
    tls = workdir / "tls"
    cmd = [
        sys.executable, str(BARE_SCRIPT), "--upstream", f"{LOOPBACK}:{origin}",
        "--address", LOOPBACK, "--http-port", str(ports[0]), "--https-port", str(ports[1]),
        "--cert", str(tls / "tls.crt"), "--key", str(tls / "tls.key"),
    ]  # fmt: skip
    log = workdir / f"bare-{ports[0]}.log"
    proc = start_server(stack, cmd, log, cpus)
    wait_ready(proc, lambda: port_open(ports[0]) and port_open(ports[1]), "bare forwarder", log)
    return proc, ports, log


def run_scenario(
    tools: Tools,
    workdir: Path,
    origin: int,
    scenario: Scenario,
    opts: Options,
    grpc_origin: int = 0,
    cert: bytes = b"",
    origin_pids: tuple[int, ...] = (),
    first: bool = True,
) -> ScenarioResult:
    ingressd_workers = scenario.workers if tools.ingressd_has_workers else 1
    result = ScenarioResult(scenario, {"nginx": scenario.workers, "ingressd": ingressd_workers}, [])
    load_before = _load_triple()
    allowed = sorted(os.sched_getaffinity(0))
    plan = plan_cpus(allowed, max(scenario.workers, ingressd_workers), opts.pin)
    result.cpu_plan = plan
    if scenario.workers > 1 and not tools.ingressd_has_workers:
        result.notes.append("ingressd has no --workers yet: it runs as 1 process")
    print(
        f"\n== {scenario.name}: {scenario.description} (load {' '.join(result.loadavg)}) ==",
        flush=True,
    )
    print(f"cpus: {plan.note}")
    for note in result.notes:
        print(f"note: {note}")
    # The origins outlive the scenario: placed anew each time (anywhere when
    # this scenario pins nothing).
    for pid in origin_pids:
        pin_tree(pid, plan.origin or set(allowed))
    script = None
    if scenario.headers:
        script = workdir / f"{scenario.name}.lua"
        script.write_text(wrk_lua(scenario.headers))
    # Both proxies are started afresh per scenario (the worker count differs)
    # and stopped when it ends, also on errors.
    with contextlib.ExitStack() as stack:
        ngx_ports, ing_ports = free_ports(2), free_ports(3)
        prefix = workdir / f"nginx-{scenario.name}"
        if scenario.client == "h2load-grpc":
            # Its own server block on the TLS port, with http2 (grpc_scenario.py).
            main = _nginx_main(prefix, scenario.workers)
            conf = grpc_scenario.proxy_conf(main, grpc_origin, ngx_ports[1], workdir / "tls")
            ngx = start_nginx(stack, tools, prefix, conf, ngx_ports[1], plan.proxy)
        else:
            conf = proxy_conf(
                prefix,
                scenario.workers,
                origin,
                *ngx_ports,
                workdir / "tls",
                http2=scenario.client == "h2load",
            )
            ngx = start_nginx(stack, tools, prefix, conf, ngx_ports[0], plan.proxy)
        ing = start_ingressd(stack, tools, workdir, ing_ports, ingressd_workers, plan.proxy)
        port_index = 1 if scenario.tls else 0
        targets = [
            Target("nginx", ngx, ngx_ports[port_index], prefix / "error.log"),
            Target("ingressd", ing, ing_ports[port_index], ingressd_log(workdir, ing_ports)),
        ]
        if opts.with_bare and scenario.name in BARE_SCENARIOS:
            bare, bare_ports, bare_log = start_bare(stack, workdir, origin, plan.proxy)
            targets.append(Target("bare", bare, bare_ports[port_index], bare_log))
        if scenario.client == "h2load-grpc" and not offers_h2(ing_ports[1]):
            note = "ingressd does not offer HTTP/2 to clients (ALPN h2): only nginx measured"
            result.notes.append(note)
            print(f"note: {note}")
            targets = targets[:1]
        warm_up = replace(opts, duration=WARMUP_SECONDS, rounds=1)
        for t in targets:
            check_proxy(t.proxy, t.port, scenario, cert)
            if scenario.client == "h2load":
                assert tools.h2load is not None
                check_h2(tools.h2load, t.port, scenario)
            measure(tools, t, scenario, warm_up, plan.client, script)
            result.affinity[t.proxy] = tree_affinity(t.proc.pid)
        # A B A B ...: drift over time lands on both proxies alike.
        for rnd in range(1, opts.rounds + 1):
            for t in targets:
                m = measure(tools, t, scenario, opts, plan.client, script)
                run = Run(
                    t.proxy,
                    rnd,
                    m.result,
                    m.cpu_seconds,
                    m.others_cpu_seconds,
                    m.wall_seconds,
                    m.client_cpu_seconds,
                )
                result.runs.append(run)
                print_run(scenario, run, opts.rounds, plan)
        result.reliability = judge_load(
            len(allowed),
            load_before,
            _load_triple(),
            sum(r.others_cpu_seconds for r in result.runs),
            sum(r.wall_seconds for r in result.runs),
            first,
        )
        print_reliability(scenario.name, result.reliability)
        for note in client_bound_notes(result):
            result.notes.append(note)
            print(f"note: {note}", flush=True)
        if scenario.client == "h2load":
            for t in targets:
                result.idle_kib[t.proxy] = idle_h2_kib(t.proc, t.port, IDLE_CONNECTIONS)
                print(
                    f"  idle HTTP/2 connections: {t.proxy:<8} "
                    f"{result.idle_kib[t.proxy]:6.1f} KiB each ({IDLE_CONNECTIONS} open)",
                    flush=True,
                )
    return result


def print_run(scenario: Scenario, run: Run, rounds: int, plan: CpuPlan | None = None) -> None:
    w = run.wrk
    busy = client_busy(run, plan) if plan is not None else None
    side = "" if busy is None else f"  origin+wrk {busy * 100:3.0f}%"
    print(
        f"  round {run.round}/{rounds} {run.proxy:<8} {w.rps:>10.1f} req/s  "
        f"p50 {w.p50_ms:7.2f}ms  p99 {w.p99_ms:7.2f}ms  "
        f"cpu {run.cpu_us_per_request:7.1f}us/req  others {run.others_cpu_seconds:5.2f} cpu-s"
        f"{side}",
        flush=True,
    )
    if w.errors:
        errs = ", ".join(f"{k} {v}" for k, v in w.socket_errors.items() if v)
        print(
            f"WARNING: {scenario.name} {run.proxy} round {run.round}: "
            f"socket errors [{errs or 'none'}], non-2xx/3xx responses {w.non_2xx_3xx}: "
            "result suspect",
            flush=True,
        )


def reliability_text(rel: Reliability) -> str:
    before = " ".join(f"{x:.2f}" for x in rel.load_before)
    after = " ".join(f"{x:.2f}" for x in rel.load_after)
    judged = "" if rel.load_judged else " (includes the previous scenario's own load)"
    return (
        f"load {before} before{judged}, {after} after; other processes "
        f"{rel.others_cpus:.2f} CPUs during the runs"
    )


def print_reliability(name: str, rel: Reliability) -> None:
    print(f"  {reliability_text(rel)}", flush=True)
    if rel.unreliable:
        print(f"UNRELIABLE: {name}: {'; '.join(rel.reasons)}", flush=True)


# --- reporting -------------------------------------------------------------------

HEADER = (
    f"{'scenario':<9} {'proxy':<8} {'req/s':>10} {'p50':>9} {'p99':>9} "
    f"{'cpu_us/req':>11} {'errors':>7}"
)
# Ratio rows of the table: label, numerator, denominator.
RATIO_ROWS = (
    ("ratio", "ingressd", "nginx"),
    ("bare/ngx", "bare", "nginx"),
    ("ing/bare", "ingressd", "bare"),
)


def table(result: ScenarioResult) -> list[str]:
    name = result.scenario.name
    lines = [HEADER]
    measured = {r.proxy for r in result.runs}
    for proxy in result.proxies:
        s = result.summary(proxy)
        lines.append(
            f"{name:<9} {proxy:<8} {s.rps:>10.1f} {s.p50_ms:>7.2f}ms {s.p99_ms:>7.2f}ms "
            f"{s.cpu_us_per_request:>11.1f} {s.errors:>7}"
        )
    for label, a, b in RATIO_ROWS:
        if (a, b) != ("ingressd", "nginx") and not {a, b} <= measured:
            continue
        r = result.ratios(a, b)
        lines.append(
            f"{name:<9} {label:<8} {r['rps']:>10.2f} {r['p50']:>8.2f}x {r['p99']:>8.2f}x "
            f"{r['cpu_us_per_request']:>10.2f}x"
        )
    rounds = max((r.round for r in result.runs), default=0)
    lines.append(f"{name:<9} spread over {rounds} round(s): min-max (relative stdev)")
    for proxy in result.proxies:
        if proxy not in measured:
            continue
        sp = result.spreads(proxy)
        lines.append(
            f"{name:<9} {proxy:<8} req/s {sp['rps'].range_text()} ({sp['rps'].rel_text()})  "
            f"p50 {sp['p50_ms'].range_text(2)}ms  p99 {sp['p99_ms'].range_text(2)}ms  "
            f"cpu {sp['cpu_us_per_request'].range_text()}us/req "
            f"({sp['cpu_us_per_request'].rel_text()})"
        )
    if result.idle_kib:
        each = ", ".join(f"{p} {kib:.1f} KiB" for p, kib in result.idle_kib.items())
        lines.append(f"{name:<9} memory per idle HTTP/2 connection: {each}")
    if result.cpu_plan is not None:
        lines.append(f"{name:<9} cpus: {result.cpu_plan.note}")
    if result.reliability is not None:
        rel = result.reliability
        verdict = "UNRELIABLE: " + "; ".join(rel.reasons) if rel.unreliable else "reliable"
        lines.append(f"{name:<9} {reliability_text(rel)}: {verdict}")
    return lines


@dataclass
class TargetCheck:
    scenario: str
    description: str
    value: float | None
    passed: bool | None  # None: the scenario was not run
    unreliable: bool = False  # measured on a loaded machine (ScenarioResult.reliability)


# Issue 16's targets: ingressd relative to nginx, on medians, 1 worker each
# unless the scenario says otherwise.
TARGETS: tuple[tuple[str, str, str, Callable[[float], bool]], ...] = (
    ("http", "req/s ratio >= 0.6", "rps", lambda v: v >= 0.6),
    ("http", "p99 <= 2x nginx", "p99", lambda v: v <= 2.0),
    ("http", "cpu_us/req <= 2x nginx", "cpu_us_per_request", lambda v: v <= 2.0),
    ("https", "req/s ratio >= 0.6", "rps", lambda v: v >= 0.6),
    ("https", "p99 <= 2x nginx", "p99", lambda v: v <= 2.0),
    ("https", "cpu_us/req <= 2x nginx", "cpu_us_per_request", lambda v: v <= 2.0),
    ("browser", "req/s ratio >= 0.5", "rps", lambda v: v >= 0.5),
    ("allcores", "req/s ratio >= 0.6", "rps", lambda v: v >= 0.6),
    ("h2", "req/s ratio >= 0.5", "rps", lambda v: v >= 0.5),
)


def check_targets(results: dict[str, ScenarioResult]) -> list[TargetCheck]:
    """The performance targets: ingressd relative to nginx, on medians."""
    checks = []
    for scenario, text, key, ok in TARGETS:
        if scenario not in results:
            checks.append(TargetCheck(scenario, text, None, None))
            continue
        result = results[scenario]
        value = result.ratios()[key]
        unreliable = result.reliability is not None and result.reliability.unreliable
        checks.append(TargetCheck(scenario, text, value, bool(ok(value)), unreliable))
    return checks


def bare_lines(results: dict[str, ScenarioResult]) -> list[str]:
    """How far ingressd is from the bare forwarder, where both were measured."""
    lines = []
    for name, result in results.items():
        if not any(r.proxy == "bare" for r in result.runs):
            continue
        bare = result.ratios("bare", "nginx")
        ing = result.ratios("ingressd", "bare")
        issue = ISSUE_BARE_RATIOS.get(name)
        was = f" (issue 16 measured {issue:.2f})" if issue is not None else ""
        lines.append(
            f"{name:<9} bare/nginx req/s {bare['rps']:.2f}{was}, "
            f"cpu/req {bare['cpu_us_per_request']:.2f}x; "
            f"ingressd/bare req/s {ing['rps']:.2f}, cpu/req {ing['cpu_us_per_request']:.2f}x, "
            f"p99 {ing['p99']:.2f}x"
        )
    return lines


def print_report(results: dict[str, ScenarioResult], checks: list[TargetCheck]) -> None:
    print("\n== results (medians across rounds; ratio = ingressd / nginx) ==")
    for result in results.values():
        print()
        print("\n".join(table(result)))
        for note in result.notes:
            print(f"note: {note}")
    print("\n== targets ==")
    for c in checks:
        verdict = "SKIP" if c.passed is None else "PASS" if c.passed else "FAIL"
        value = "(not run)" if c.value is None else f"{c.value:.2f}"
        flag = "  (unreliable: machine loaded)" if c.unreliable else ""
        print(f"{verdict}  {c.scenario:<9} {c.description:<24} {value}{flag}")
    if lines := bare_lines(results):
        print("\n== against the bare forwarder (asyncio + uvloop + httptools, no routing) ==")
        print("\n".join(lines))
    unreliable = [n for n, r in results.items() if r.reliability and r.reliability.unreliable]
    if unreliable:
        print(
            f"\nUNRELIABLE: {', '.join(unreliable)} ran on a loaded machine "
            "(see each scenario's load line): compare ratios, rerun when it is quiet"
        )


def to_json(
    opts: Options,
    env: dict[str, Any],
    results: dict[str, ScenarioResult],
    checks: list[TargetCheck],
) -> dict[str, Any]:
    def runs(result: ScenarioResult) -> list[dict[str, Any]]:
        return [
            {**asdict(r), "cpu_us_per_request": r.cpu_us_per_request, "errors": r.wrk.errors}
            for r in result.runs
        ]

    def scenario(r: ScenarioResult) -> dict[str, Any]:
        measured = [p for p in r.proxies if any(run.proxy == p for run in r.runs)]
        rel = r.reliability
        out: dict[str, Any] = {
            "scenario": asdict(r.scenario),
            "workers": r.workers,
            "notes": r.notes,
            "loadavg": r.loadavg,
            "cpu_plan": asdict(r.cpu_plan) if r.cpu_plan else None,
            "affinity": r.affinity,
            "reliability": (
                {**asdict(rel), "unreliable": rel.unreliable, "others_cpus": rel.others_cpus}
                if rel
                else None
            ),
            "summary": {p: asdict(r.summary(p)) for p in r.proxies},
            "spread": {p: {m: asdict(v) for m, v in r.spreads(p).items()} for p in measured},
            "ratios": r.ratios(),
            "idle_kib_per_h2_connection": r.idle_kib,
            "runs": runs(r),
        }
        if "bare" in measured:
            out["ratios_bare_vs_nginx"] = r.ratios("bare", "nginx")
            out["ratios_ingressd_vs_bare"] = r.ratios("ingressd", "bare")
        return out

    return {
        "options": asdict(opts),
        "environment": env,
        "scenarios": {name: scenario(r) for name, r in results.items()},
        "targets": [asdict(c) for c in checks],
        "unreliable": [n for n, r in results.items() if r.reliability and r.reliability.unreliable],
    }


# --- main ------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=5, help="seconds per measured run (5)")
    p.add_argument("--rounds", type=int, default=3, help="nginx/ingressd pairs per scenario (3)")
    p.add_argument("--connections", type=int, default=50, help="wrk connections (50)")
    p.add_argument("--threads", type=int, default=1, help="wrk (and h2load) threads (1)")
    p.add_argument("--h2-clients", type=int, default=10, help="h2load connections (10)")
    p.add_argument(
        "--h2-streams", type=int, default=10, help="h2load streams at once per connection (10)"
    )
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)} (all)",
    )
    p.add_argument(
        "--with-bare",
        action="store_true",
        help=f"also measure loadtests/bare_forwarder.py in {','.join(BARE_SCENARIOS)}",
    )
    p.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the proxies, the origin and the load generator to CPUs",
    )
    p.add_argument(
        "--tracing-ratio",
        type=float,
        metavar="R",
        help="ingressd traces with OpenTelemetry, sampling R of the requests (0 to 1), "
        "exported to a sink in this process; nginx does not trace",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write all numbers here")
    args = p.parse_args(argv)
    if args.tracing_ratio is not None and not 0 <= args.tracing_ratio <= 1:
        p.error("--tracing-ratio is from 0 to 1")
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    if unknown := [n for n in names if n not in SCENARIOS]:
        p.error(f"unknown scenario(s) {','.join(unknown)}; choose from {','.join(SCENARIOS)}")
    if not names:
        p.error("no scenario selected")
    args.scenarios = names
    if min(args.duration, args.rounds, args.threads) < 1 or args.connections < args.threads:
        p.error("duration, rounds and threads must be >= 1, and connections >= threads")
    if min(args.h2_clients, args.h2_streams) < 1 or args.h2_clients < args.threads:
        p.error("h2 clients and streams must be >= 1, and h2 clients >= threads")
    if args.connections >= LIMIT_CONNECTIONS and any(n.startswith("limits") for n in names):
        p.error(f"the limits scenarios allow fewer than {LIMIT_CONNECTIONS} connections")
    return args


def _interrupt(signum: int, _frame: FrameType | None) -> NoReturn:
    # Every signal takes the path of Ctrl-C, so every server is stopped.
    raise KeyboardInterrupt(signal.Signals(signum).name)


def bench(tools: Tools, opts: Options, names: list[str]) -> dict[str, ScenarioResult]:
    results: dict[str, ScenarioResult] = {}
    with contextlib.ExitStack() as stack:
        # Entered first, so removed last: after every server has stopped.
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ingressd-bench-")))
        cert, key = write_certificate(workdir / "tls")
        origin_port = free_ports(1)[0]
        origin = workdir / "origin"
        (origin / "www").mkdir(parents=True)
        (origin / "www" / "64k").write_bytes(BIG_BODY)
        origin_proc = start_nginx(
            stack, tools, origin, origin_conf(origin, origin_port), origin_port
        )
        origin_pids = [origin_proc.pid]
        objects = manifests(origin_port, cert, key)
        grpc_origin = 0
        if any(SCENARIOS[n].client == "h2load-grpc" for n in names):
            # The gRPC origin: nginx over h2c answering as a gRPC server (grpc_scenario.py).
            grpc_origin = free_ports(1)[0]
            prefix = workdir / "grpc-origin"
            conf = grpc_scenario.origin_conf(_nginx_main(prefix, 1), prefix, grpc_origin)
            origin_pids.append(start_nginx(stack, tools, prefix, conf, grpc_origin).pid)
            objects.update(grpc_scenario.manifests(grpc_origin))
        if opts.tracing_ratio is not None:
            sink = OtlpSink()
            stack.callback(sink.close)
            stack.callback(
                lambda: print(f"tracing: the collector took {sink.posts} exports, {sink.bytes} B")
            )
            objects["tracing"] = tracing_configmap(opts.tracing_ratio, sink.port)
        (workdir / "manifests").mkdir()
        for name, obj in objects.items():
            (workdir / "manifests" / f"{name}.json").write_text(json.dumps(obj, indent=2))
        for i, name in enumerate(names):
            results[name] = run_scenario(
                tools,
                workdir,
                origin_port,
                SCENARIOS[name],
                opts,
                grpc_origin,
                cert,
                tuple(origin_pids),
                first=i == 0,
            )
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    opts = Options(
        args.duration,
        args.rounds,
        args.connections,
        args.threads,
        args.h2_clients,
        args.h2_streams,
        pin=not args.no_pin,
        with_bare=args.with_bare,
        tracing_ratio=args.tracing_ratio,
    )
    tools = find_tools(h2=any(SCENARIOS[n].client != "wrk" for n in args.scenarios))
    env = environment(tools)
    print(
        f"ingressd vs nginx on {LOOPBACK}: {env['cpu_count']} CPUs, load {' '.join(env['loadavg'])}"
        f"; {opts.duration}s x {opts.rounds} rounds, {opts.connections} connections, "
        f"{opts.threads} wrk thread(s)\n{env['build']} ({env['ingressd_commit']}), "
        f"{env['nginx']}, {env['wrk']}"
    )
    if opts.tracing_ratio is not None:
        ratio = opts.tracing_ratio
        print(f"note: ingressd traces (OpenTelemetry, ratio {ratio:g}); nginx does not")
    if not tools.ingressd_has_workers:
        print("note: ingressd has no --workers yet")
    # SIGINT too: a shell starts background jobs with it ignored, and Python
    # then leaves it so; the benchmark should stop cleanly whatever started it.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        results = bench(tools, opts, args.scenarios)
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"\nERROR: {exc}", file=sys.stderr)
        return 1
    checks = check_targets(results)
    print_report(results, checks)
    if args.json:
        args.json.write_text(json.dumps(to_json(opts, env, results, checks), indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
