#!/usr/bin/env python3
"""Layer 4: ingressd's TCP services and TLS passthrough against nginx's stream, in one run.

Both proxy the same backends over 127.0.0.1, in turn, round after round (so
drift on a shared machine hits both alike):

- TCP services (``tcp``):
  - throughput: ``iperf3 -c`` through the proxy to an ``iperf3 -s`` backend,
    one stream for ``--duration`` seconds (the TCP splice);
  - connections per second: ``--clients`` processes each opening a connection
    through the proxy, reading the backend's short answer to its end, closing,
    again and again; the backend is nginx's stream ``return`` (C, so the proxy
    is what is measured).
- TLS passthrough (``passthrough``): the proxy reads each ClientHello's SNI and
  splices the connection, TLS untouched, to an nginx HTTPS backend (its own
  ECDSA P-256 certificate):
  - throughput: ``curl`` (C, OpenSSL) downloading a 256 MiB file over TLS
    through the proxy, again and again for ``--duration`` seconds;
  - connections per second: ``--clients`` processes each doing a full TLS 1.3
    handshake through the proxy with the backend, one small request, reading
    to the end, closing, in a loop (no session resumption). The handshakes'
    cost is the clients' and the backend's; the proxy's own is its CPU per
    connection.

ingressd serves a ``tcp-services`` ConfigMap and an Ingress annotated
``ssl-passthrough: "true"`` from a manifest folder (``--workers 1``: one
process does both); nginx runs ``worker_processes 1`` with ``stream { server
{ proxy_pass } }`` blocks, as ingress-nginx's nginx.tmpl TCP services section
does, and a ``ssl_preread on`` server that picks its upstream by
``$ssl_preread_server_name`` (nginx's own way to pass TLS through by SNI).
Reported: medians over the rounds, the ingressd/nginx ratios, and the load
average before and after (the machine may be shared).

    .venv/bin/python loadtests/stream_bench.py [--duration 5] [--rounds 3] [--clients 4]
        [--scenarios tcp,passthrough] [--json FILE]

Needs iperf3, nginx with the stream module, curl and openssl (Debian: iperf3,
nginx-light, libnginx-mod-stream, curl, openssl); installs what is missing with
apt-get (as root, else through ``sudo -n``), and exits 2 naming what is still
missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tools
import yaml
from tools import LOOPBACK, TOOL_PATH, port_open

REPO = Path(__file__).resolve().parent.parent
STREAM_MODULES = (
    "/usr/lib/nginx/modules/ngx_stream_module.so",
    "/usr/share/nginx/modules/ngx_stream_module.so",
)
# What is missing -> the Debian packages that bring it, first that installs wins
# (nginx-light is the smallest build with ssl; newer Debian folds it into nginx).
PACKAGES = {
    "iperf3": ["iperf3"],
    "nginx": ["nginx-light", "nginx"],
    "nginx's stream module": ["libnginx-mod-stream"],
    "curl": ["curl"],
    "openssl": ["openssl"],
}
PASS_HOST = "pass.bench"
BIG_FILE = 256 * 1024 * 1024


def wait(proc: subprocess.Popen[bytes], check: Callable[[], bool], what: str, log: Path) -> None:
    """Until ``check()``; exit naming ``what`` if ``proc`` ends first or 15 s pass."""
    try:
        tools.wait_ready(proc, check, what, log, timeout=15.0)
    except tools.BenchError:
        raise SystemExit(f"stream_bench: {what} did not come up") from None


def stream_module() -> str | None:
    return next((m for m in STREAM_MODULES if Path(m).exists()), None)


def missing_tools(path: str | None = None) -> list[str]:
    """What the benchmark needs and cannot find (``path``: where to look)."""
    path = TOOL_PATH if path is None else path
    missing = tools.not_found(("iperf3", "nginx", "curl", "openssl"), path)
    if "nginx" not in missing and stream_module() is None:
        missing.append("nginx's stream module")
    return missing


def find_tools(path: str | None = None) -> dict[str, str]:
    """The tools' paths, installing what is missing first; exit 2 naming what is still missing."""
    path = TOOL_PATH if path is None else path
    tools.apt_install(lambda: missing_tools(path), PACKAGES, path, say="stream_bench: ")
    missing = missing_tools(path)
    if missing:
        packages = " ".join(PACKAGES[t][0] for t in missing)
        print(
            f"stream_bench: missing: {', '.join(missing)} (apt-get install {packages})",
            file=sys.stderr,
        )
        raise SystemExit(2)
    found = {t: str(shutil.which(t, path=path)) for t in ("iperf3", "nginx", "curl", "openssl")}
    found["module"] = str(stream_module())
    return found


def nginx_conf(module: str | None, body: str, prefix: Path, block: str = "stream") -> str:
    return (
        (f"load_module {module};\n" if module else "") + "worker_processes 1;\n"
        f"pid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log warn;\n"
        "events { worker_connections 16384; }\n"
        f"{block} {{\n"
        f"{body}"
        "}\n"
    )


def start_nginx(
    stack: contextlib.ExitStack,
    nginx: str,
    module: str | None,
    prefix: Path,
    body: str,
    port: int,
    block: str = "stream",
) -> None:
    conf = nginx_conf(module, body, prefix, block)
    try:
        tools.start_nginx(stack, nginx, prefix, conf, port, timeout=15.0)
    except tools.BenchError:
        raise SystemExit(f"stream_bench: nginx ({prefix.name}) did not come up") from None


def certificate(openssl: str, folder: Path) -> tuple[Path, Path]:
    """A self-signed ECDSA P-256 certificate for PASS_HOST (cheap handshakes)."""
    cert, key = folder / "pass.crt", folder / "pass.key"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={PASS_HOST}",
            "-addext",
            f"subjectAltName=DNS:{PASS_HOST}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def https_backend(port: int, cert: Path, key: Path, root: Path) -> str:
    """nginx's http block for the passthrough backend: a big file and a tiny answer."""
    return (
        "  access_log off;\n"
        f"  server {{ listen {LOOPBACK}:{port} ssl; ssl_certificate {cert}; "
        f"ssl_certificate_key {key}; ssl_protocols TLSv1.3; ssl_session_tickets off; "
        "keepalive_timeout 0; "
        f'root {root}; location = /ok {{ return 200 "ok\\n"; }} }}\n'
    )


def manifests(folder: Path, tcp: dict[str, tuple[int, int]], passthrough: int) -> None:
    """ingressd's objects: a Service per backend port, the tcp-services ConfigMap,
    and an Ingress passing PASS_HOST's TLS through to ``passthrough``."""
    objs: list[dict[str, Any]] = []
    data = {}
    backends = {name: backend for name, (_, backend) in tcp.items()}
    backends["secure"] = passthrough
    for name, backend in backends.items():
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
    for name, (listen, _) in tcp.items():
        data[str(listen)] = f"bench/{name}:tcp"
    objs.append(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "tcp-services", "namespace": "bench"},
            "data": data,
        }
    )
    passthrough_on = {"nginx.ingress.kubernetes.io/ssl-passthrough": "true"}
    objs += [
        tools.ingress_class(),
        tools.ingress("pass", "bench", PASS_HOST, "secure", 9, passthrough_on),
    ]
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


def tls_download(curl: str, port: int, seconds: float) -> float:
    """Gbit/s: curl downloading the big file over TLS through ``port``, again and
    again, for ``seconds`` (connection set-up included, negligible at 256 MiB)."""
    got = 0
    took = 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end or not got:
        out = subprocess.run(
            [
                curl,
                "-sSk",
                "-o",
                "/dev/null",
                "-w",
                "%{size_download} %{time_total}",
                "--resolve",
                f"{PASS_HOST}:{port}:{LOOPBACK}",
                f"https://{PASS_HOST}:{port}/big",
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=False,
        )
        size, _, total = out.stdout.partition(" ")
        if out.returncode != 0 or int(size or 0) != BIG_FILE:
            raise SystemExit(
                f"stream_bench: curl through {port} failed: {out.stdout!r} {out.stderr[-500:]!r}"
            )
        got += int(size)
        took += float(total)
    return got * 8 / took / 1e9


def _tls_loop(port: int, seconds: float, result: Any) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    request = f"GET /ok HTTP/1.1\r\nHost: {PASS_HOST}\r\nConnection: close\r\n\r\n".encode()
    done = errors = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with (
                socket.create_connection((LOOPBACK, port), timeout=5) as raw,
                ctx.wrap_socket(raw, server_hostname=PASS_HOST) as s,
            ):
                s.sendall(request)
                answer = b""
                while chunk := s.recv(4096):
                    answer += chunk
            if not answer.startswith(b"HTTP/1.1 200"):
                raise OSError(answer[:50])
            done += 1
        except (OSError, ssl.SSLError):
            errors += 1
    result.put((done, errors))


def connections(
    port: int, seconds: float, clients: int, loop: Callable[..., None] | None = None
) -> tuple[float, int]:
    """Connections per second (each: connect, read the answer to its end, close), errors."""
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    target = loop or _connect_loop
    procs = [ctx.Process(target=target, args=(port, seconds, results)) for _ in range(clients)]
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


SCENARIOS = ("tcp", "passthrough")
# Per scenario: (key, column title, format) of what is measured.
MEASURES = {
    "tcp": (("gbps", "Gbit/s", "{:.2f}"), ("conn_per_s", "conn/s", "{:.0f}")),
    "passthrough": (
        ("tls_gbps", "TLS Gbit/s", "{:.2f}"),
        ("tls_conn_per_s", "TLS conn/s", "{:.0f}"),
    ),
}


def measure(
    scenario: str,
    found: dict[str, str],
    ports: tuple[int, int, int],
    pid: int,
    args: argparse.Namespace,
) -> tuple[dict[str, float], int]:
    """One proxy, one scenario: the figures, and the connection errors."""
    p_iperf, p_conn, p_tls = ports
    prefix = "" if scenario == "tcp" else "tls_"
    if scenario == "tcp":
        gbps = iperf(found["iperf3"], p_iperf, args.duration)
        before = cpu_seconds(pid)
        rate, errors = connections(p_conn, args.duration, args.clients)
    else:
        gbps = tls_download(found["curl"], p_tls, args.duration)
        before = cpu_seconds(pid)
        rate, errors = connections(p_tls, args.duration, args.clients, _tls_loop)
    cpu = cpu_seconds(pid) - before
    return {
        f"{prefix}gbps": gbps,
        f"{prefix}conn_per_s": rate,
        f"{prefix}cpu_us_per_conn": cpu / max(1, rate * args.duration) * 1e6,
    }, errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, each proxy once per round")
    ap.add_argument("--clients", type=int, default=4, help="connecting processes")
    ap.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="tcp, passthrough, or both (default)"
    )
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args()
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown or not scenarios:
        ap.error(
            f"--scenarios: {', '.join(sorted(unknown)) or 'none'}; choose from tcp, passthrough"
        )

    found = find_tools()
    nginx, module = found["nginx"], found["module"]
    load_before = os.getloadavg()
    print(
        f"load average before: {' '.join(f'{x:.2f}' for x in load_before)} ({os.cpu_count()} CPUs)"
    )

    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stream-bench-")))
        iperf_backend, return_backend, tls_backend = tools.free_ports(3)
        iperf_log = work / "iperf3.log"
        iperf_cmd = [found["iperf3"], "-s", "-p", str(iperf_backend)]
        iperf_server = tools.start_server(stack, iperf_cmd, iperf_log)
        wait(iperf_server, lambda: port_open(iperf_backend), "iperf3 -s", iperf_log)
        start_nginx(
            stack,
            nginx,
            module,
            work / "backend",
            f'  server {{ listen {LOOPBACK}:{return_backend}; return "ok\\n"; }}\n',
            return_backend,
        )
        # nginx's workers run as nobody when started as root: the file must be theirs to read.
        work.chmod(0o755)
        root = work / "www"
        root.mkdir(mode=0o755)
        with open(root / "big", "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(BIG_FILE >> 20):
                f.write(block)
        cert, key = certificate(found["openssl"], work)
        start_nginx(
            stack,
            nginx,
            None,
            work / "tls-backend",
            https_backend(tls_backend, cert, key, root),
            tls_backend,
            block="http",
        )
        # One call: ports held together are all different.
        free = tools.free_ports(8)
        ports = {"nginx": (free[0], free[1], free[2]), "ingressd": (free[3], free[4], free[5])}
        n_iperf, n_conn, n_tls = ports["nginx"]
        start_nginx(
            stack,
            nginx,
            module,
            work / "proxy",
            f"  server {{ listen {LOOPBACK}:{n_iperf}; proxy_pass {LOOPBACK}:{iperf_backend}; }}\n"
            f"  server {{ listen {LOOPBACK}:{n_conn}; proxy_pass {LOOPBACK}:{return_backend}; }}\n"
            # TLS passthrough by SNI: nginx's ssl_preread reads the ClientHello's
            # name, the map picks the upstream; the TLS goes through untouched.
            "  map $ssl_preread_server_name $passthrough {\n"
            f"    {PASS_HOST} {LOOPBACK}:{tls_backend};\n"
            f"    default {LOOPBACK}:1;\n"
            "  }\n"
            f"  server {{ listen {LOOPBACK}:{n_tls}; ssl_preread on; proxy_pass $passthrough; }}\n",
            n_iperf,
        )
        nginx_pid = int((work / "proxy" / "nginx.pid").read_text())
        nginx_worker = int(
            subprocess.run(
                ["pgrep", "-P", str(nginx_pid)], capture_output=True, text=True, check=False
            ).stdout.split()[0]
        )
        i_iperf, i_conn, i_tls = ports["ingressd"]
        manifests(
            work / "manifests",
            {"iperf": (i_iperf, iperf_backend), "ret": (i_conn, return_backend)},
            tls_backend,
        )
        admin, http = free[6], free[7]
        ingressd_log = work / "ingressd.log"
        ingressd = tools.start_server(
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
                str(i_tls),
                "--admin-port",
                str(admin),
                "--workers",
                "1",
                "--access-log",
                "off",
                "--tcp-services-configmap",
                "bench/tcp-services",
                "--enable-ssl-passthrough",
                "--shutdown-grace",
                "0",
            ],
            ingressd_log,
        )
        wait(
            ingressd,
            lambda: port_open(i_iperf) and port_open(i_conn) and port_open(i_tls),
            "ingressd's TCP services and HTTPS port",
            ingressd_log,
        )
        pids = {"nginx": nginx_worker, "ingressd": ingressd.pid}

        results: dict[str, dict[str, list[float]]] = {name: {} for name in ports}
        for round_ in range(args.rounds):
            for scenario in scenarios:
                for name in ports:
                    figures, errors = measure(scenario, found, ports[name], pids[name], args)
                    for key, value in figures.items():
                        results[name].setdefault(key, []).append(value)
                    shown = "  ".join(
                        f"{title} {fmt.format(figures[key])}"
                        for key, title, fmt in MEASURES[scenario]
                    )
                    print(
                        f"round {round_ + 1} {scenario:11s} {name:8s} {shown} ({errors} errors)",
                        flush=True,
                    )
        summary = {
            name: {key: statistics.median(values) for key, values in r.items()}
            for name, r in results.items()
        }
        ratio = {
            key: summary["ingressd"][key] / summary["nginx"][key] if summary["nginx"][key] else 0.0
            for key in summary["nginx"]
        }
        load_after = os.getloadavg()
        print()
        for scenario in scenarios:
            prefix = "" if scenario == "tcp" else "tls_"
            keys = [(f"{prefix}gbps", "Gbit/s"), (f"{prefix}conn_per_s", "conn/s")]
            keys.append((f"{prefix}cpu_us_per_conn", "CPU µs/conn"))
            print(f"{scenario:12s}" + "".join(f"{title:>13s}" for _, title in keys))
            for name in ports:
                s = summary[name]
                print(f"{name:12s}{s[keys[0][0]]:13.2f}{s[keys[1][0]]:13.0f}{s[keys[2][0]]:13.1f}")
            print(
                f"{'ratio':12s}"
                + "".join(f"{ratio[key]:13.2f}" for key, _ in keys)
                + "   (ingressd / nginx stream)"
            )
            print()
        print(
            f"load average after: {' '.join(f'{x:.2f}' for x in load_after)} "
            f"({os.cpu_count()} CPUs)"
        )
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "rounds": results,
                        "median": summary,
                        "ratio": ratio,
                        "load_average": {"before": load_before, "after": load_after},
                    },
                    indent=2,
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
