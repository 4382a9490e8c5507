#!/usr/bin/env python3
"""Layer-4 benchmark: ingressd's TCP services against nginx's stream module, in one run.

Both proxy the same backends over 127.0.0.1, in turn, round after round (so
drift on a shared machine hits both alike):

- throughput: ``iperf3 -c`` through the proxy to an ``iperf3 -s`` backend, one
  stream for ``--duration`` seconds (the TCP splice: what passthrough and TCP
  services do after their first bytes);
- connections per second: ``--clients`` processes each opening a connection
  through the proxy, reading the backend's short answer to its end, closing,
  again and again; the backend is nginx's stream ``return`` (C, so the proxy
  is what is measured).

ingressd serves a ``tcp-services`` ConfigMap from a manifest folder
(``--workers 1``: stream services run in the main process); nginx runs
``worker_processes 1`` with a ``stream { server { proxy_pass } }`` block, as
ingress-nginx's nginx.tmpl TCP services section does. Reported: medians over
the rounds, and the ingressd/nginx ratios.

    .venv/bin/python loadtests/stream_bench.py [--duration 5] [--rounds 3] [--clients 4]
        [--json FILE]

Needs iperf3 and nginx with the stream module (Debian: iperf3, nginx-light,
libnginx-mod-stream); exits 2 when they are missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
STREAM_MODULES = (
    "/usr/lib/nginx/modules/ngx_stream_module.so",
    "/usr/share/nginx/modules/ngx_stream_module.so",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        socket.create_connection((LOOPBACK, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def wait(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"stream_bench: {what} did not come up")
        time.sleep(0.05)


def start(stack: contextlib.ExitStack, cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115 - closed with the stack
    stack.callback(out.close)
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    stack.callback(stop)
    return proc


def stream_module() -> str | None:
    return next((m for m in STREAM_MODULES if Path(m).exists()), None)


def nginx_conf(module: str, body: str, prefix: Path) -> str:
    return (
        f"load_module {module};\n"
        "worker_processes 1;\n"
        f"pid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log warn;\n"
        "events { worker_connections 16384; }\n"
        "stream {\n"
        f"{body}"
        "}\n"
    )


def start_nginx(
    stack: contextlib.ExitStack, nginx: str, module: str, prefix: Path, body: str, port: int
) -> None:
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "nginx.conf").write_text(nginx_conf(module, body, prefix))
    cmd = [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"]
    cmd += ["-e", str(prefix / "error.log")]
    start(stack, cmd, prefix / "stdout.log")
    wait(lambda: port_open(port), f"nginx ({prefix.name})")


def manifests(folder: Path, tcp: dict[str, tuple[int, int]]) -> None:
    """ingressd's objects: a Service per backend port and the tcp-services ConfigMap."""
    objs: list[dict[str, Any]] = []
    data = {}
    for name, (listen, backend) in (
        (name, value)
        for name, value in tcp.items()  # type: ignore[misc]
    ):
        objs += [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": "bench"},
                "spec": {"ports": [{"name": "tcp", "port": 9}]},
            },
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": name,
                    "namespace": "bench",
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [LOOPBACK]}],
                "ports": [{"name": "tcp", "port": backend, "protocol": "TCP"}],
            },
        ]
        data[str(listen)] = f"bench/{name}:tcp"
    objs.append(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "tcp-services", "namespace": "bench"},
            "data": data,
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench.yaml").write_text(yaml.safe_dump_all(objs))


# -- load ----------------------------------------------------------------------------------


def iperf(iperf3: str, port: int, seconds: float) -> float:
    """Gbit/s received by the iperf3 server through the proxy on ``port``."""
    out = subprocess.run(
        [iperf3, "-c", LOOPBACK, "-p", str(port), "-t", str(seconds), "-J"],
        capture_output=True,
        timeout=seconds + 30,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(
            f"stream_bench: iperf3 failed: {out.stdout[-500:]!r} {out.stderr[-500:]!r}"
        )
    doc = json.loads(out.stdout)
    return doc["end"]["sum_received"]["bits_per_second"] / 1e9


def _connect_loop(port: int, seconds: float, result: Any) -> None:
    done = errors = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=5) as s:
                s.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                while s.recv(4096):
                    pass
            done += 1
        except OSError:
            errors += 1
    result.put((done, errors))


def connections(port: int, seconds: float, clients: int) -> tuple[float, int]:
    """Connections per second (each: connect, read the answer to its end, close), errors."""
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_connect_loop, args=(port, seconds, results)) for _ in range(clients)
    ]
    start_time = time.monotonic()
    for p in procs:
        p.start()
    totals = [results.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join(10)
    took = max(time.monotonic() - start_time, seconds)
    return sum(t[0] for t in totals) / took, sum(t[1] for t in totals)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the run ---------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, each proxy once per round")
    ap.add_argument("--clients", type=int, default=4, help="connecting processes")
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args()

    iperf3, nginx, module = shutil.which("iperf3"), shutil.which("nginx"), stream_module()
    if not (iperf3 and nginx and module):
        print(
            "stream_bench: needs iperf3 and nginx with the stream module "
            "(apt-get install iperf3 nginx-light libnginx-mod-stream)",
            file=sys.stderr,
        )
        return 2

    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stream-bench-")))
        iperf_backend, return_backend = free_port(), free_port()
        start(stack, [iperf3, "-s", "-p", str(iperf_backend)], work / "iperf3.log")
        wait(lambda: port_open(iperf_backend), "iperf3 -s")
        start_nginx(
            stack,
            nginx,
            module,
            work / "backend",
            f'  server {{ listen {LOOPBACK}:{return_backend}; return "ok\\n"; }}\n',
            return_backend,
        )
        ports = {
            "nginx": (free_port(), free_port()),
            "ingressd": (free_port(), free_port()),
        }
        n_iperf, n_conn = ports["nginx"]
        start_nginx(
            stack,
            nginx,
            module,
            work / "proxy",
            f"  server {{ listen {LOOPBACK}:{n_iperf}; proxy_pass {LOOPBACK}:{iperf_backend}; }}\n"
            f"  server {{ listen {LOOPBACK}:{n_conn}; proxy_pass {LOOPBACK}:{return_backend}; }}\n",
            n_iperf,
        )
        nginx_pid = int((work / "proxy" / "nginx.pid").read_text())
        nginx_worker = int(
            subprocess.run(
                ["pgrep", "-P", str(nginx_pid)], capture_output=True, text=True, check=False
            ).stdout.split()[0]
        )
        i_iperf, i_conn = ports["ingressd"]
        manifests(
            work / "manifests", {"iperf": (i_iperf, iperf_backend), "ret": (i_conn, return_backend)}
        )
        admin, http, https = free_port(), free_port(), free_port()
        ingressd = start(
            stack,
            [
                sys.executable,
                "-m",
                "ingressd",
                "serve",
                "--manifests",
                str(work / "manifests"),
                "--address",
                LOOPBACK,
                "--http-port",
                str(http),
                "--https-port",
                str(https),
                "--admin-port",
                str(admin),
                "--workers",
                "1",
                "--access-log",
                "off",
                "--tcp-services-configmap",
                "bench/tcp-services",
            ],
            work / "ingressd.log",
        )
        wait(lambda: port_open(i_iperf) and port_open(i_conn), "ingressd's TCP services")
        pids = {"nginx": nginx_worker, "ingressd": ingressd.pid}

        results: dict[str, dict[str, list[float]]] = {
            name: {"gbps": [], "conn_per_s": [], "cpu_us_per_conn": []} for name in ports
        }
        for round_ in range(args.rounds):
            for name, (p_iperf, p_conn) in ports.items():
                results[name]["gbps"].append(iperf(iperf3, p_iperf, args.duration))
                before = cpu_seconds(pids[name])
                rate, errors = connections(p_conn, args.duration, args.clients)
                cpu = cpu_seconds(pids[name]) - before
                results[name]["conn_per_s"].append(rate)
                results[name]["cpu_us_per_conn"].append(cpu / max(1, rate * args.duration) * 1e6)
                gbps = results[name]["gbps"][-1]
                print(
                    f"round {round_ + 1} {name:8s} throughput {gbps:6.2f} Gbit/s"
                    f"  connections {rate:8.0f}/s ({errors} errors)",
                    flush=True,
                )
        summary = {
            name: {key: statistics.median(values) for key, values in r.items()}
            for name, r in results.items()
        }
        ratio = {
            key: summary["ingressd"][key] / summary["nginx"][key] if summary["nginx"][key] else 0.0
            for key in ("gbps", "conn_per_s", "cpu_us_per_conn")
        }
        print()
        print(f"{'':10s}{'Gbit/s':>10s}{'conn/s':>10s}{'CPU µs/conn':>13s}")
        for name in ports:
            s = summary[name]
            print(f"{name:10s}{s['gbps']:10.2f}{s['conn_per_s']:10.0f}{s['cpu_us_per_conn']:13.1f}")
        print(
            f"{'ratio':10s}{ratio['gbps']:10.2f}{ratio['conn_per_s']:10.2f}{ratio['cpu_us_per_conn']:13.2f}"
            "   (ingressd / nginx stream)"
        )
        if args.json:
            args.json.write_text(
                json.dumps({"rounds": results, "median": summary, "ratio": ratio}, indent=2)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
