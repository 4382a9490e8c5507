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
        [--threads T] [--scenarios http,https,body64k,allcores,limits,limitsall,h2,grpc]
        [--h2-clients C] [--h2-streams M] [--json FILE]

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
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import grpc_scenario

from ingressd.policy.tls import self_signed

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
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
# Tools may live in sbin, which a non-root PATH often lacks.
TOOL_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin"]
)
PROXIES = ("nginx", "ingressd")


class BenchError(RuntimeError):
    """A failure that makes the benchmark meaningless; reported and the run stops."""


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

    @property
    def expected_body(self) -> bytes:
        return BIG_BODY if self.path == "/64k" else SMALL_BODY


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("http", "plain HTTP, GET / (3 B body), 1 worker each", "/", False, 1),
        Scenario("https", "TLS terminated, keep-alive, GET / (3 B body), 1 worker", "/", True, 1),
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

    def ratios(self) -> dict[str, float]:
        """ingressd divided by nginx: above 1 is better for req/s, worse for the rest."""
        ngx, ing = self.summary("nginx"), self.summary("ingressd")
        return {
            "rps": _ratio(ing.rps, ngx.rps),
            "p50": _ratio(ing.p50_ms, ngx.p50_ms),
            "p99": _ratio(ing.p99_ms, ngx.p99_ms),
            "cpu_us_per_request": _ratio(ing.cpu_us_per_request, ngx.cpu_us_per_request),
        }


def _loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


# --- prerequisites ---------------------------------------------------------------


def _missing_tools(h2: bool = False) -> list[str]:
    names = ("nginx", "wrk", "h2load") if h2 else ("nginx", "wrk")
    return [name for name in names if not shutil.which(name, path=TOOL_PATH)]


def _try_install(h2: bool) -> None:
    """apt-get install what is missing, as root or through sudo; failures are only reported."""
    if not shutil.which("apt-get", path=TOOL_PATH):
        return
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if sudo and not shutil.which("sudo", path=TOOL_PATH):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "PATH": TOOL_PATH}
    # nginx-light is the smallest build with the ssl module; newer Debian folds
    # it into "nginx", hence the fallback. A stale package index is the usual
    # reason for a first failure, so update once before trying again.
    packages = {"nginx": ["nginx-light", "nginx"], "wrk": ["wrk"], "h2load": ["nghttp2-client"]}
    for refresh in (False, True):
        if refresh:
            subprocess.run([*sudo, "apt-get", "update", "-qq"], env=env, check=False)
        for tool in _missing_tools(h2):
            for package in packages[tool]:
                print(f"installing {package} (apt-get)", file=sys.stderr)
                cmd = [*sudo, "apt-get", "install", "-y", "-qq", package]
                if subprocess.run(cmd, env=env, check=False).returncode == 0:
                    break
        if not _missing_tools(h2):
            return


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
        "ingressd_commit": git.stdout.strip(),
        "ingressd_has_workers": tools.ingressd_has_workers,
    }


# --- processes -------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """Ports the kernel picks as free; all held open together so none repeats."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind((LOOPBACK, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start_server(stack: contextlib.ExitStack, cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start a server whose stop is registered on ``stack``, so it ends whatever happens.

    It gets its own session: Ctrl-C then reaches only this script, which stops
    the servers in order, and the process group holds the server's workers.
    """
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    stack.callback(stop_server, proc)
    return proc


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # Workers can outlive a master that died hard: clear what is left of its group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_ready(
    proc: subprocess.Popen[bytes], ready: Callable[[], bool], what: str, log: Path
) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with code {proc.returncode}:\n{_tail(log)}")
        if ready():
            return
        time.sleep(0.05)
    raise BenchError(f"{what} not ready after 30 s:\n{_tail(log)}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((LOOPBACK, port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


# --- CPU accounting --------------------------------------------------------------


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


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds used so far by ``root`` and all its descendants (nginx workers,
    ingressd worker processes). Counting reaped children's time too keeps the
    sum steady when a worker exits between two readings."""
    stats: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (st := _proc_stat(int(entry.name))) is not None:
            stats[int(entry.name)] = st
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo.extend(child for child, (ppid, _) in stats.items() if ppid == pid)
    return total / CLK_TCK


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


def run_wrk(
    wrk: str, url: str, seconds: int, connections: int, threads: int, host: str = HOST
) -> WrkResult:
    cmd = [
        wrk, "--latency", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
        "-H", f"Host: {host}", url,
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=seconds + 60)
    if out.returncode != 0:
        raise BenchError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    return parse_wrk(out.stdout)


# --- h2load ----------------------------------------------------------------------


def parse_h2load(output: str, log_file: Path) -> WrkResult:
    """h2load's summary, and p50/p99 from its per-request log (it prints no
    percentiles): one line per request, "start_us<TAB>status<TAB>latency_us"."""
    rps = re.search(r"^finished in [\d.]+\w+, ([\d.]+) req/s", output, re.MULTILINE)
    done = re.search(
        r"^requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        output,
        re.MULTILINE,
    )
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output, re.M)
    if not rps or not done or not codes:
        raise BenchError(f"cannot parse h2load output:\n{output}")
    latencies = []
    with log_file.open() as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) == 3:
                latencies.append(int(parts[2]) / 1000)
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0

    failed, errored, timeout = (int(done.group(i)) for i in (4, 5, 6))
    return WrkResult(
        requests=int(done.group(3)),
        rps=float(rps.group(1)),
        p50_ms=pct(0.50) if latencies else float("nan"),
        p99_ms=pct(0.99) if latencies else float("nan"),
        socket_errors={"failed": failed, "errored": errored, "timeout": timeout},
        non_2xx_3xx=int(codes.group(3)) + int(codes.group(4)),
    )


def run_h2load(
    h2load: str, url: str, seconds: int, clients: int, streams: int, threads: int, host: str
) -> WrkResult:
    with tempfile.NamedTemporaryFile(prefix="h2load-", suffix=".log") as log:
        cmd = [
            h2load, "-D", str(seconds), "-c", str(clients), "-m", str(streams),
            "-t", str(threads), "-H", f":authority: {host}", f"--log-file={log.name}", url,
        ]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=seconds + 60)
        if out.returncode != 0:
            raise BenchError(f"h2load failed ({out.returncode}): {out.stderr or out.stdout}")
        if "Application protocol: h2" not in out.stdout:
            raise BenchError(f"h2load did not get HTTP/2 (ALPN h2):\n{out.stdout}")
        return parse_h2load(out.stdout, Path(log.name))


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


def _nginx_main(prefix: Path, workers: int) -> str:
    """The top of an nginx.conf that keeps every file nginx writes inside ``prefix``."""
    # As root the workers would switch to "nobody", which cannot read the
    # private temp dir (certificates, the 64 KiB file): keep them root there.
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "".join(
        f"    {kind}_temp_path {prefix}/tmp/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
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
    stack: contextlib.ExitStack, tools: Tools, prefix: Path, conf: str, port: int
) -> subprocess.Popen[bytes]:
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / "tmp" / kind).mkdir(parents=True, exist_ok=True)
    (prefix / "nginx.conf").write_text(conf)
    cmd = [tools.nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"]
    if tools.nginx_has_e:
        # Else nginx first opens its built-in error log (/var/log/...), which
        # a non-root user may not write: a harmless but confusing alert.
        cmd += ["-e", str(prefix / "error.log")]
    log = prefix / "stdout.log"
    proc = start_server(stack, cmd, log)
    wait_ready(proc, lambda: port_open(port), f"nginx ({prefix.name})", prefix / "error.log")
    return proc


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
    return {
        "ingressclass": {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": "ingressd"},
            "spec": {"controller": "ingressd.io/ingress-controller"},
        },
        "ingress": {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {
                "name": "bench",
                "namespace": ns,
                # bench.local is under spec.tls: keep plain HTTP served, not
                # redirected, so the http scenarios measure proxying.
                "annotations": {"nginx.ingress.kubernetes.io/ssl-redirect": "false"},
            },
            "spec": {
                "ingressClassName": "ingressd",
                "tls": [{"hosts": [HOST], "secretName": "bench-tls"}],
                "rules": [
                    {
                        "host": HOST,
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {
                                        "service": {"name": "origin", "port": {"number": 80}}
                                    },
                                }
                            ]
                        },
                    }
                ],
            },
        },
        "service": {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "origin", "namespace": ns},
            "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        },
        "ingress-limits": {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {
                "name": "bench-limits",
                "namespace": ns,
                "annotations": {
                    "nginx.ingress.kubernetes.io/limit-rps": str(LIMIT_RPS),
                    "nginx.ingress.kubernetes.io/limit-connections": str(LIMIT_CONNECTIONS),
                },
            },
            "spec": {
                "ingressClassName": "ingressd",
                "rules": [
                    {
                        "host": LIMITS_HOST,
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {
                                        "service": {"name": "origin", "port": {"number": 80}}
                                    },
                                }
                            ]
                        },
                    }
                ],
            },
        },
        "endpointslice": {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "origin-1",
                "namespace": ns,
                "labels": {"kubernetes.io/service-name": "origin"},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": origin, "protocol": "TCP"}],
            "endpoints": [{"addresses": [LOOPBACK], "conditions": {"ready": True}}],
        },
        "secret": {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "bench-tls", "namespace": ns},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": b64(cert).decode(), "tls.key": b64(key).decode()},
        },
    }


def ingressd_log(workdir: Path, ports: list[int]) -> Path:
    return workdir / f"ingressd-{ports[0]}.log"


def start_ingressd(
    stack: contextlib.ExitStack, tools: Tools, workdir: Path, ports: list[int], workers: int
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
    log = ingressd_log(workdir, ports)
    proc = start_server(stack, cmd, log)
    admin = f"http://{LOOPBACK}:{admin_port}"
    wait_ready(proc, lambda: http_ok(f"{admin}/readyz"), "ingressd", log)
    with urllib.request.urlopen(f"{admin}/problems", timeout=5) as resp:
        if problems := json.load(resp).get("problems"):
            print(f"WARNING: ingressd reports problems: {problems}")
    return proc


def fetch(port: int, path: str, tls: bool, host: str = HOST) -> tuple[int, bytes]:
    conn: http.client.HTTPConnection
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(LOOPBACK, port, timeout=5, context=ctx)
    else:
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host})
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
    status, body = fetch(port, scenario.path, scenario.tls, scenario.host)
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


@dataclass
class Target:
    proxy: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path


def measure(
    tools: Tools, target: Target, scenario: Scenario, opts: Options
) -> tuple[WrkResult, float]:
    scheme = "https" if scenario.tls else "http"
    url = f"{scheme}://{LOOPBACK}:{target.port}{scenario.path}"
    before = tree_cpu_seconds(target.proc.pid)
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
        )
    elif scenario.client == "h2load-grpc":
        assert tools.h2load is not None
        try:
            result = WrkResult(**grpc_scenario.run_h2load(tools.h2load, target.port, opts.duration))
        except RuntimeError as exc:
            raise BenchError(str(exc)) from exc
    else:
        result = run_wrk(
            tools.wrk, url, opts.duration, opts.connections, opts.threads, scenario.host
        )
    after = tree_cpu_seconds(target.proc.pid)
    if target.proc.poll() is not None:
        raise BenchError(
            f"{target.proxy} exited ({target.proc.returncode}) during a run:\n{_tail(target.log)}"
        )
    return result, after - before


def run_scenario(
    tools: Tools,
    workdir: Path,
    origin: int,
    scenario: Scenario,
    opts: Options,
    grpc_origin: int = 0,
    cert: bytes = b"",
) -> ScenarioResult:
    ingressd_workers = scenario.workers if tools.ingressd_has_workers else 1
    result = ScenarioResult(scenario, {"nginx": scenario.workers, "ingressd": ingressd_workers}, [])
    if scenario.workers > 1 and not tools.ingressd_has_workers:
        result.notes.append("ingressd has no --workers yet: it runs as 1 process")
    print(
        f"\n== {scenario.name}: {scenario.description} (load {' '.join(result.loadavg)}) ==",
        flush=True,
    )
    for note in result.notes:
        print(f"note: {note}")
    # Both proxies are started afresh per scenario (the worker count differs)
    # and stopped when it ends, also on errors.
    with contextlib.ExitStack() as stack:
        ngx_ports, ing_ports = free_ports(2), free_ports(3)
        prefix = workdir / f"nginx-{scenario.name}"
        if scenario.client == "h2load-grpc":
            # Its own server block on the TLS port, with http2 (grpc_scenario.py).
            main = _nginx_main(prefix, scenario.workers)
            conf = grpc_scenario.proxy_conf(main, grpc_origin, ngx_ports[1], workdir / "tls")
            ngx = start_nginx(stack, tools, prefix, conf, ngx_ports[1])
        else:
            conf = proxy_conf(
                prefix,
                scenario.workers,
                origin,
                *ngx_ports,
                workdir / "tls",
                http2=scenario.client == "h2load",
            )
            ngx = start_nginx(stack, tools, prefix, conf, ngx_ports[0])
        ing = start_ingressd(stack, tools, workdir, ing_ports, ingressd_workers)
        port_index = 1 if scenario.tls else 0
        targets = [
            Target("nginx", ngx, ngx_ports[port_index], prefix / "error.log"),
            Target("ingressd", ing, ing_ports[port_index], ingressd_log(workdir, ing_ports)),
        ]
        if scenario.client == "h2load-grpc" and not offers_h2(ing_ports[1]):
            note = "ingressd does not offer HTTP/2 to clients (ALPN h2): only nginx measured"
            result.notes.append(note)
            print(f"note: {note}")
            targets = targets[:1]
        warm_up = Options(
            WARMUP_SECONDS, 1, opts.connections, opts.threads, opts.h2_clients, opts.h2_streams
        )
        for t in targets:
            check_proxy(t.proxy, t.port, scenario, cert)
            if scenario.client == "h2load":
                assert tools.h2load is not None
                check_h2(tools.h2load, t.port, scenario)
            measure(tools, t, scenario, warm_up)
        # A B A B ...: drift over time lands on both proxies alike.
        for rnd in range(1, opts.rounds + 1):
            for t in targets:
                wrk, cpu = measure(tools, t, scenario, opts)
                run = Run(t.proxy, rnd, wrk, cpu)
                result.runs.append(run)
                print_run(scenario, run, opts.rounds)
        if scenario.client == "h2load":
            for t in targets:
                result.idle_kib[t.proxy] = idle_h2_kib(t.proc, t.port, IDLE_CONNECTIONS)
                print(
                    f"  idle HTTP/2 connections: {t.proxy:<8} "
                    f"{result.idle_kib[t.proxy]:6.1f} KiB each ({IDLE_CONNECTIONS} open)",
                    flush=True,
                )
    return result


def print_run(scenario: Scenario, run: Run, rounds: int) -> None:
    w = run.wrk
    print(
        f"  round {run.round}/{rounds} {run.proxy:<8} {w.rps:>10.1f} req/s  "
        f"p50 {w.p50_ms:7.2f}ms  p99 {w.p99_ms:7.2f}ms  "
        f"cpu {run.cpu_us_per_request:7.1f}us/req",
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


# --- reporting -------------------------------------------------------------------

HEADER = (
    f"{'scenario':<9} {'proxy':<8} {'req/s':>10} {'p50':>9} {'p99':>9} "
    f"{'cpu_us/req':>11} {'errors':>7}"
)


def table(result: ScenarioResult) -> list[str]:
    name = result.scenario.name
    lines = [HEADER]
    for proxy in PROXIES:
        s = result.summary(proxy)
        lines.append(
            f"{name:<9} {proxy:<8} {s.rps:>10.1f} {s.p50_ms:>7.2f}ms {s.p99_ms:>7.2f}ms "
            f"{s.cpu_us_per_request:>11.1f} {s.errors:>7}"
        )
    r = result.ratios()
    lines.append(
        f"{name:<9} {'ratio':<8} {r['rps']:>10.2f} {r['p50']:>8.2f}x {r['p99']:>8.2f}x "
        f"{r['cpu_us_per_request']:>10.2f}x"
    )
    if result.idle_kib:
        each = ", ".join(f"{p} {kib:.1f} KiB" for p, kib in result.idle_kib.items())
        lines.append(f"{name:<9} memory per idle HTTP/2 connection: {each}")
    return lines


@dataclass
class TargetCheck:
    scenario: str
    description: str
    value: float | None
    passed: bool | None  # None: the scenario was not run


def check_targets(results: dict[str, ScenarioResult]) -> list[TargetCheck]:
    """The performance targets: ingressd relative to nginx, on medians."""
    specs = [
        ("http", "req/s ratio >= 0.6", "rps", lambda v: v >= 0.6),
        ("http", "p99 <= 2x nginx", "p99", lambda v: v <= 2.0),
        ("http", "cpu_us/req <= 2x nginx", "cpu_us_per_request", lambda v: v <= 2.0),
        ("https", "req/s ratio >= 0.6", "rps", lambda v: v >= 0.6),
        ("allcores", "req/s ratio >= 0.6", "rps", lambda v: v >= 0.6),
        ("h2", "req/s ratio >= 0.5", "rps", lambda v: v >= 0.5),
    ]
    checks = []
    for scenario, text, key, ok in specs:
        if scenario not in results:
            checks.append(TargetCheck(scenario, text, None, None))
            continue
        value = results[scenario].ratios()[key]
        checks.append(TargetCheck(scenario, text, value, bool(ok(value))))
    return checks


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
        print(f"{verdict}  {c.scenario:<9} {c.description:<24} {value}")


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

    return {
        "options": asdict(opts),
        "environment": env,
        "scenarios": {
            name: {
                "scenario": asdict(r.scenario),
                "workers": r.workers,
                "notes": r.notes,
                "loadavg": r.loadavg,
                "summary": {p: asdict(r.summary(p)) for p in PROXIES},
                "ratios": r.ratios(),
                "idle_kib_per_h2_connection": r.idle_kib,
                "runs": runs(r),
            }
            for name, r in results.items()
        },
        "targets": [asdict(c) for c in checks],
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
    p.add_argument("--json", type=Path, metavar="FILE", help="also write all numbers here")
    args = p.parse_args(argv)
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
        start_nginx(stack, tools, origin, origin_conf(origin, origin_port), origin_port)
        objects = manifests(origin_port, cert, key)
        grpc_origin = 0
        if any(SCENARIOS[n].client == "h2load-grpc" for n in names):
            # The gRPC origin: nginx over h2c answering as a gRPC server (grpc_scenario.py).
            grpc_origin = free_ports(1)[0]
            prefix = workdir / "grpc-origin"
            conf = grpc_scenario.origin_conf(_nginx_main(prefix, 1), prefix, grpc_origin)
            start_nginx(stack, tools, prefix, conf, grpc_origin)
            objects.update(grpc_scenario.manifests(grpc_origin))
        (workdir / "manifests").mkdir()
        for name, obj in objects.items():
            (workdir / "manifests" / f"{name}.json").write_text(json.dumps(obj, indent=2))
        for name in names:
            results[name] = run_scenario(
                tools, workdir, origin_port, SCENARIOS[name], opts, grpc_origin, cert
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
    )
    tools = find_tools(h2=any(SCENARIOS[n].client != "wrk" for n in args.scenarios))
    env = environment(tools)
    print(
        f"ingressd vs nginx on {LOOPBACK}: {env['cpu_count']} CPUs, load {' '.join(env['loadavg'])}"
        f"; {opts.duration}s x {opts.rounds} rounds, {opts.connections} connections, "
        f"{opts.threads} wrk thread(s)\n{env['ingressd']} ({env['ingressd_commit']}), "
        f"{env['nginx']}, {env['wrk']}"
    )
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
