"""What the load tests share: finding the tools they drive (installing what is
missing with apt-get), starting and stopping their servers (an nginx with a
config of its own in a temp dir among them), free ports on 127.0.0.1, and
reading h2load's output.

bench.py, grpc_scenario.py and stream_bench.py use it (and churn.py and
soak.py through bench.py). Nothing here prints but the installer, which says
what it installs.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
# Tools may live in sbin, which a non-root PATH often lacks.
TOOL_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin"]
)


class BenchError(RuntimeError):
    """A failure that makes the benchmark meaningless; reported and the run stops."""


# --- prerequisites ---------------------------------------------------------------


def not_found(names: Sequence[str], path: str = TOOL_PATH) -> list[str]:
    """Those of ``names`` that are not programs on ``path``, in their order."""
    return [name for name in names if not shutil.which(name, path=path)]


def sudo_prefix(path: str = TOOL_PATH, uid: int | None = None) -> list[str] | None:
    """How to run apt-get: as it is when root, else through ``sudo -n`` (never
    a password prompt); None when neither can be (no sudo on ``path``)."""
    if (os.geteuid() if uid is None else uid) == 0:
        return []
    return ["sudo", "-n"] if shutil.which("sudo", path=path) else None


def apt_install(
    missing: Callable[[], list[str]],
    packages: Mapping[str, Sequence[str]],
    path: str = TOOL_PATH,
    say: str = "",
) -> None:
    """apt-get install what ``missing()`` names, by ``packages`` (a missing
    thing -> the Debian packages that bring it, the first that installs wins);
    failures are only reported, by apt-get itself: the caller asks ``missing()``
    again and says what is still missing. ``say`` prefixes the "installing"
    lines (stderr)."""
    if not missing() or not shutil.which("apt-get", path=path):
        return
    sudo = sudo_prefix(path)
    if sudo is None:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "PATH": path}
    # A stale package index is the usual reason for a first failure, so update
    # once before trying again.
    for refresh in (False, True):
        if refresh:
            subprocess.run([*sudo, "apt-get", "update", "-qq"], env=env, check=False)
        for tool in missing():
            for package in packages[tool]:
                print(f"{say}installing {package} (apt-get)", file=sys.stderr)
                cmd = [*sudo, "apt-get", "install", "-y", "-qq", package]
                if subprocess.run(cmd, env=env, check=False).returncode == 0:
                    break
        if not missing():
            return


# --- ports -------------------------------------------------------------------------


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


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((LOOPBACK, port)) == 0


# --- what ingressd serves (manifest mode) -----------------------------------------------


def ingress_class() -> dict[str, Any]:
    """The IngressClass "ingressd", which the Ingresses below name."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": "ingressd"},
        "spec": {"controller": "ingressd.io/ingress-controller"},
    }


def ingress(
    name: str,
    namespace: str,
    host: str,
    service: str,
    port: int,
    annotations: Mapping[str, str],
    tls_secret: str = "",
) -> dict[str, Any]:
    """An Ingress sending all of ``host`` (path / as a Prefix) to ``service``'s
    ``port``; ``tls_secret``: the Secret ``host`` is served over TLS with."""
    spec: dict[str, Any] = {"ingressClassName": "ingressd"}
    if tls_secret:
        spec["tls"] = [{"hosts": [host], "secretName": tls_secret}]
    backend = {"service": {"name": service, "port": {"number": port}}}
    prefix = {"path": "/", "pathType": "Prefix", "backend": backend}
    spec["rules"] = [{"host": host, "http": {"paths": [prefix]}}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace, "annotations": dict(annotations)},
        "spec": spec,
    }


def service(name: str, namespace: str, port_name: str) -> dict[str, Any]:
    """A Service whose one TCP port, 80, is named ``port_name``."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ports": [{"name": port_name, "port": 80, "protocol": "TCP"}]},
    }


def endpoint_slice(
    name: str, namespace: str, service: str, port_name: str, port: int
) -> dict[str, Any]:
    """An EndpointSlice of ``service``: one ready endpoint, 127.0.0.1, whose
    port ``port_name`` is ``port``."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [LOOPBACK], "conditions": {"ready": True}}],
    }


# --- processes -----------------------------------------------------------------------


def affinity(cpus: tuple[int, ...]) -> Callable[[], None] | None:
    """A preexec_fn that pins the child (and what it forks) to ``cpus``; None
    for no pinning."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def start_server(
    stack: contextlib.ExitStack, cmd: list[str], log: Path, cpus: tuple[int, ...] = ()
) -> subprocess.Popen[bytes]:
    """Start a server whose stop is registered on ``stack``, so it ends whatever happens.

    Its output goes to ``log``. It gets its own session: Ctrl-C then reaches
    only the script, which stops the servers in order, and the process group
    holds the server's workers. ``cpus``: pinned to these from its start,
    workers included.
    """
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=affinity(cpus),
        )  # fmt: skip
    stack.callback(stop_server, proc)
    return proc


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's group, SIGKILL after 10 s; then whatever is left
    of the group goes too."""
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


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log, "" when it cannot be read."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_ready(
    proc: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    what: str,
    log: Path,
    timeout: float = 30.0,
) -> None:
    """Until ``ready()``; BenchError, with the end of ``log``, when ``proc``
    exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with code {proc.returncode}:\n{tail(log)}")
        if ready():
            return
        time.sleep(0.05)
    raise BenchError(f"{what} not ready after {timeout:g} s:\n{tail(log)}")


def nginx_command(nginx: str, prefix: Path, error_log_flag: bool = True) -> list[str]:
    """nginx in the foreground on ``prefix``/nginx.conf. ``error_log_flag``:
    nginx has ``-e`` (1.19.5+); without it nginx first opens its built-in error
    log (/var/log/...), which a non-root user may not write: a harmless but
    confusing alert."""
    cmd = [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"]
    if error_log_flag:
        cmd += ["-e", str(prefix / "error.log")]
    return cmd


def start_nginx(
    stack: contextlib.ExitStack,
    nginx: str,
    prefix: Path,
    conf: str,
    port: int,
    *,
    error_log_flag: bool = True,
    cpus: tuple[int, ...] = (),
    timeout: float = 30.0,
) -> subprocess.Popen[bytes]:
    """An nginx of its own in the folder ``prefix`` (made if missing): ``conf``
    written to nginx.conf there, its output to stdout.log, stopped with
    ``stack``; returned once ``port`` accepts connections (BenchError, with the
    end of error.log, if it exits first or not within ``timeout``)."""
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "nginx.conf").write_text(conf)
    proc = start_server(
        stack, nginx_command(nginx, prefix, error_log_flag), prefix / "stdout.log", cpus
    )
    wait_ready(
        proc, lambda: port_open(port), f"nginx ({prefix.name})", prefix / "error.log", timeout
    )
    return proc


def run_load(
    name: str, cmd: list[str], seconds: float, cpus: tuple[int, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run the load generator ``name`` (``cmd``, about ``seconds`` long, pinned
    to ``cpus``; a minute more at the most) and return its output; BenchError
    when it fails."""
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=False, timeout=seconds + 60,
        preexec_fn=affinity(cpus),
    )  # fmt: skip
    if out.returncode != 0:
        raise BenchError(f"{name} failed ({out.returncode}): {out.stderr or out.stdout}")
    return out


# --- h2load ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class H2loadSummary:
    """What h2load's summary says of a run."""

    rps: float
    succeeded: int
    failed: int
    errored: int
    timeout: int
    non_2xx_3xx: int  # 4xx and 5xx answers


def parse_h2load(output: str) -> H2loadSummary:
    """h2load's summary lines; BenchError when they are not there."""
    rps = re.search(r"^finished in [\d.]+\w+, ([\d.]+) req/s", output, re.MULTILINE)
    done = re.search(
        r"^requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        output,
        re.MULTILINE,
    )
    codes = re.search(r"^status codes: \d+ 2xx, \d+ 3xx, (\d+) 4xx, (\d+) 5xx", output, re.M)
    if not rps or not done or not codes:
        raise BenchError(f"cannot parse h2load output:\n{output}")
    succeeded, failed, errored, timeout = (int(done.group(i)) for i in (1, 2, 3, 4))
    non_2xx_3xx = int(codes.group(1)) + int(codes.group(2))
    return H2loadSummary(float(rps.group(1)), succeeded, failed, errored, timeout, non_2xx_3xx)


def h2load_latencies(log: Path) -> list[float]:
    """The request latencies of h2load's ``--log-file``, in ms, sorted. It
    prints no percentiles: one line per request, "start_us<TAB>status<TAB>latency_us"."""
    with log.open() as f:
        return sorted(int(parts[2]) / 1000 for line in f if len(parts := line.split("\t")) == 3)


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0 to 1) of sorted values, nearest rank; NaN for none."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def h2load_output(cmd: list[str], seconds: float, cpus: tuple[int, ...] = ()) -> str:
    """Run an h2load ``cmd`` of about ``seconds`` (pinned to ``cpus``) and
    return its output; BenchError when it fails or did not get HTTP/2 by ALPN."""
    out = run_load("h2load", cmd, seconds, cpus)
    if "Application protocol: h2" not in out.stdout:
        raise BenchError(f"h2load did not get HTTP/2 (ALPN h2):\n{out.stdout}")
    return out.stdout
