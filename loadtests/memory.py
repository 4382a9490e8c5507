#!/usr/bin/env python3
"""Memory at scale: every process of ``ingressd serve --workers N`` on a large folder.

A folder of N Ingresses (3 paths each, as ``loadtests/routes.py`` generates
them: a Service and an EndpointSlice per Ingress, a TLS Secret with a real
certificate of its own for 1 in 10) is written once and cached in a temporary
directory (certificates take a while to make). Then:

* **serve**: ``ingressd serve --manifests DIR --workers W`` is started, waited
  for until ``/readyz`` answers 200 (every worker serves the table), checked
  (SNI gives a TLS host its own certificate), and for the main process and
  every child the resident memory is read from ``/proc/PID/smaps_rollup``:
  RSS, PSS (shared pages split between the processes sharing them: what a
  process really costs) and USS (its private pages);
* **breakdown** (in a fresh process, ``--breakdown``): what one worker holds,
  step by step as a worker gets it (the store fed from the objects, the first
  table built, the SSL contexts), by tracemalloc (Python allocations, by
  where they were made) and by RSS (which also sees what OpenSSL and RE2
  allocate), then per Ingress; and the objects the table references, by type.

    python loadtests/memory.py [--ingresses 10000] [--workers 2] [--json FILE]
    python loadtests/memory.py --breakdown [--ingresses 10000]
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import routes  # the generators of the route-table benchmark

TARGET_MIB = 300.0
PER_FILE = 100  # Ingresses (with their Service, EndpointSlice and Secret) per manifest file
# Bump when what is generated changes, so a cached folder is made again.
FOLDER_VERSION = 1
READY_TIMEOUT = 600.0

_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


# -- the folder ------------------------------------------------------------------------------


def folder_for(n: int, cache: Path | None = None) -> Path:
    """The manifest folder for ``n`` Ingresses, made once and kept in a temp dir."""
    base = cache or Path(tempfile.gettempdir()) / "ingressd-memory-bench"
    folder = base / f"n{n}-v{FOLDER_VERSION}"
    (folder / RELOAD_FILE).unlink(missing_ok=True)  # left by an interrupted run
    if (folder / ".complete").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    start = time.monotonic()
    (folder / "class.yaml").write_text(yaml.dump(routes.make_ingress_class(), Dumper=_Dumper))
    for first in range(0, n, PER_FILE):
        docs: list[dict[str, Any]] = []
        for i in range(first, min(n, first + PER_FILE)):
            docs += [routes.make_ingress(i), routes.make_service(i), routes.make_endpoint_slice(i)]
            if routes.is_tls(i):
                docs.append(routes.make_tls_secret(i))
        text = yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False)
        (folder / f"apps-{first // PER_FILE:04d}.yaml").write_text(text)
    (folder / ".complete").write_text("")
    progress(f"wrote {n} Ingresses to {folder} in {time.monotonic() - start:.0f} s")
    return folder


# -- measuring processes --------------------------------------------------------------------


def smaps_rollup(pid: int) -> dict[str, float]:
    """MiB: Rss, Pss, Uss (private clean + dirty), Shared, Swap; and VmHWM (peak RSS);
    and the CPU seconds the process used so far (a machine under load makes the
    time to ready vary; this much less)."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                fields[parts[0][:-1]] = int(parts[1])
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                fields["VmHWM"] = int(line.split()[1])
    mib = {k: v / 1024 for k, v in fields.items()}
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    utime, stime = stat[stat.rindex(")") + 2 :].split()[11:13]
    return {
        "cpu_s": (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK"),
        "rss": mib.get("Rss", 0.0),
        "pss": mib.get("Pss", 0.0),
        "uss": mib.get("Private_Clean", 0.0) + mib.get("Private_Dirty", 0.0),
        "shared": mib.get("Shared_Clean", 0.0) + mib.get("Shared_Dirty", 0.0),
        "swap": mib.get("Swap", 0.0),
        "peak_rss": mib.get("VmHWM", 0.0),
    }


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after it.
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == pid:
            found.append(int(entry))
    return sorted(found)


def describe_process(pid: int, main: int) -> str:
    if pid == main:
        return "main (source, admin)"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    if "resource_tracker" in cmd:
        return "resource tracker"
    if "spawn_main" in cmd or "multiprocessing" in cmd:
        return "worker"
    return cmd[:60]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def served_names(port: int, server_name: str) -> tuple[str, ...]:
    """The DNS names of the certificate ingressd serves for ``server_name``."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    from cryptography import x509

    from ingressd.policy.tls import certificate_names

    return certificate_names(x509.load_der_x509_certificate(der))


RELOAD_FILE = "zz-reload-check.yaml"
RELOAD_HOST = "reload-check.example.com"
RELOAD_TIMEOUT = 60.0


def redirect_of(port: int) -> str | None:
    """Where ingressd redirects a request for RELOAD_HOST (None: no redirect)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET / HTTP/1.1\r\nHost: {RELOAD_HOST}\r\nConnection: close\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
    lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 301"):
        return None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "location":
            return value.strip()
    return None


def reload_check(folder: Path, port: int) -> float:
    """Add an Ingress (a permanent-redirect, answered by ingressd itself) to the
    folder; seconds until 8 fresh connections in a row (over every worker) get it."""
    ingress = routes.make_ingress(0)
    ingress["metadata"] = {"name": "reload-check", "namespace": routes.namespace_of(0)}
    ingress["metadata"]["annotations"] = {
        "nginx.ingress.kubernetes.io/permanent-redirect": "https://example.org/reloaded"
    }
    ingress["spec"]["rules"][0]["host"] = RELOAD_HOST
    ingress["spec"].pop("tls", None)
    if redirect_of(port) is not None:
        raise SystemExit(f"{RELOAD_HOST} is redirected before the file is written")
    start = time.monotonic()
    (folder / RELOAD_FILE).write_text(yaml.dump(ingress, Dumper=_Dumper))
    while True:
        if all(redirect_of(port) == "https://example.org/reloaded" for _ in range(8)):
            return time.monotonic() - start
        if time.monotonic() - start > RELOAD_TIMEOUT:
            raise SystemExit(f"the new Ingress was not served within {RELOAD_TIMEOUT:.0f} s")
        time.sleep(0.05)


def serve_and_measure(folder: Path, n: int, workers: int, settle: float) -> dict[str, Any]:
    ports = {name: free_port() for name in ("http", "https", "admin")}
    cmd = [
        sys.executable,
        "-m",
        "ingressd",
        "serve",
        "--manifests",
        str(folder),
        "--workers",
        str(workers),
        "--address",
        "127.0.0.1",
        "--http-port",
        str(ports["http"]),
        "--https-port",
        str(ports["https"]),
        "--admin-port",
        str(ports["admin"]),
        "--access-log",
        "off",
        "--log-level",
        "warning",
    ]
    log = tempfile.TemporaryFile()  # noqa: SIM115  (closed in the finally below)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    try:
        ready = f"http://127.0.0.1:{ports['admin']}/readyz"
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise SystemExit(f"ingressd exited with {proc.returncode}:\n{log.read().decode()}")
            status, _ = get(ready, timeout=2)
            if status == 200:
                break
            if time.monotonic() - start > READY_TIMEOUT:
                raise SystemExit(f"ingressd not ready after {READY_TIMEOUT:.0f} s")
            time.sleep(0.5)
        ready_s = time.monotonic() - start
        progress(f"ready after {ready_s:.1f} s; settling {settle:.0f} s")
        time.sleep(settle)
        status, body = get(f"http://127.0.0.1:{ports['admin']}/problems")
        problems = json.loads(body)["problems"] if status == 200 else [f"/problems: {status}"]
        # Each worker must give a TLS host its own certificate: connections go to
        # either worker, so try a few times over fresh connections.
        tls_hosts = [routes.rule_host(i) for i in range(n) if routes.is_tls(i)][:5]
        sni_ok = all(served_names(ports["https"], h) == (h,) for h in tls_hosts for _ in range(4))
        pids = [proc.pid, *children(proc.pid)]
        processes = [
            {"pid": pid, "role": describe_process(pid, proc.pid), **smaps_rollup(pid)}
            for pid in pids
        ]
        # After the memory is read: one new Ingress, served by every worker.
        reload_s = reload_check(folder, ports["http"])
        progress(f"a new Ingress file served by every worker after {reload_s:.2f} s")
    finally:
        (folder / RELOAD_FILE).unlink(missing_ok=True)
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    return {
        "ingresses": n,
        "workers": workers,
        "ready_s": ready_s,
        "problems": len(problems),
        "problem_sample": problems[:3],
        "sni_ok": sni_ok,
        "reload_s": reload_s,
        "processes": processes,
    }


def print_serve(result: dict[str, Any]) -> None:
    print(
        f"ingressd serve --workers {result['workers']}, {result['ingresses']} Ingresses: "
        f"ready in {result['ready_s']:.1f} s, {result['problems']} problems, "
        f"SNI {'ok' if result['sni_ok'] else 'WRONG'}, a new Ingress served by every "
        f"worker {result['reload_s']:.2f} s after its file was written"
    )
    head = f"{'RSS':>9}{'PSS':>9}{'USS':>9}{'peak RSS':>10}  MiB{'CPU s':>9}"
    print(f"  {'pid':>7}  {'process':<22}{head}")
    for p in result["processes"]:
        print(
            f"  {p['pid']:>7}  {p['role']:<22}{p['rss']:>9.1f}{p['pss']:>9.1f}{p['uss']:>9.1f}"
            f"{p['peak_rss']:>10.1f}     {p['cpu_s']:>9.1f}"
        )
    total = sum(p["pss"] for p in result["processes"])
    print(f"  total PSS {total:.1f} MiB")
    if result["problem_sample"]:
        print(f"  problems, e.g.: {result['problem_sample']}")
    for p in result["processes"]:
        if p["role"] in ("main (source, admin)", "worker"):
            verdict = "PASS" if p["rss"] <= TARGET_MIB else "FAIL"
            where = f"{p['role']} {p['pid']}"
            print(f"  {verdict}  {where}: RSS {p['rss']:.1f} MiB (limit {TARGET_MIB:g})")


# -- the breakdown: what one worker holds ----------------------------------------------------


def rss_now() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _where(stat: tracemalloc.StatisticDiff | tracemalloc.Statistic) -> str:
    frame = stat.traceback[0]
    name = frame.filename
    for marker in ("/ingressd/", "/site-packages/", "/lib/python"):
        at = name.rfind(marker)
        if at >= 0:
            name = name[at + 1 :]
            break
    return f"{name}:{frame.lineno}"


def walk_types(root: Any) -> collections.Counter[str]:
    """Bytes (sys.getsizeof) by type of every object reachable from ``root``, once each."""
    seen: set[int] = set()
    sizes: collections.Counter[str] = collections.Counter()
    stack = [root]
    skip = (type, type(sys), type(walk_types))
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        sizes[type(obj).__name__] += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return sizes


class Phases:
    """Memory taken by each step, by tracemalloc (``traced``) or by RSS (not both:
    tracing takes memory of its own, so RSS is measured in a separate run)."""

    def __init__(self, n: int, traced: bool, top: int) -> None:
        self.n = n
        self.traced = traced
        self.top = top
        self.done: list[dict[str, Any]] = []
        if traced:
            tracemalloc.start(1)
        gc.collect()
        self._mark()

    def _mark(self) -> None:
        self._snap = tracemalloc.take_snapshot() if self.traced else None
        self._rss = rss_now()

    def step(self, name: str) -> None:
        gc.collect()
        entry: dict[str, Any] = {"phase": name}
        if self._snap is not None:
            after = tracemalloc.take_snapshot()
            stats = after.compare_to(self._snap, "lineno")
            traced = sum(s.size_diff for s in stats)
            entry["traced_mib"] = traced / 2**20
            entry["per_ingress_bytes"] = traced / self.n
            entry["top"] = [
                {"where": _where(s), "mib": s.size_diff / 2**20, "count": s.count_diff}
                for s in sorted(stats, key=lambda s: -s.size_diff)[: self.top]
            ]
            del after, stats
        else:
            entry["rss_mib"] = rss_now() - self._rss
        self.done.append(entry)
        self._mark()


def breakdown_pass(folder: Path, n: int, top: int, traced: bool) -> dict[str, Any]:
    """What the source process and one worker hold, step by step, in this process."""
    import pickle

    from ingressd.control.controller import Controller
    from ingressd.model.objects import ObjectStore
    from ingressd.model.table import RouteTable
    from ingressd.policy.tls import CertificateSelector, self_signed
    from ingressd.proxy.settings import ProxySettings
    from ingressd.proxy.state import ProxyState
    from ingressd.routing.build import BuildOptions
    from ingressd.sources.manifests import LoadResult, ManifestSource
    from ingressd.workers import encode

    phases = Phases(n, traced, top)
    # The source process: the folder loaded as `serve --manifests` keeps it.
    got: list[LoadResult] = []
    source = ManifestSource(folder, got.append)
    source.load()
    phases.step("source: the folder loaded (parse cache, files, store)")
    # What a worker receives: the objects, pickled down the pipe.
    data = encode(1, None, got[0].store.snapshot())
    got.clear()
    del source
    phases.step(f"the first message to a worker ({len(data) / 2**20:.1f} MiB pickled)")
    delta = pickle.loads(data)
    del data
    store = ObjectStore()
    for obj, origin in delta.puts:
        store.put(obj, origin)
    del delta
    phases.step("worker: store (objects as received)")
    state = ProxyState(RouteTable(), ProxySettings())
    controller = Controller(state, None, BuildOptions(), report=False)
    table = controller.apply(store.snapshot())
    phases.step("worker: builder state + table")
    selector = CertificateSelector(lambda: state.table, self_signed())
    for used in {c.secret: c for c in table.certificates.values()}.values():
        selector.context_for(used)
    phases.step(f"worker: SSL contexts ({len(table.certificates)} certificates)")
    result: dict[str, Any] = {"phases": phases.done, "rss_mib": rss_now()}
    if traced:
        tracemalloc.stop()
        sizes = walk_types(table)
        result["table_types"] = sizes.most_common(top)
        result["table_bytes"] = sum(sizes.values())
    return result


def breakdown(folder: Path, n: int, top: int) -> dict[str, Any]:
    """Both passes, each in a fresh process; their phases side by side."""
    passes = {}
    for mode in ("rss", "traced"):
        with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp:
            out = Path(tmp) / "pass.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--ingresses", str(n)]
            cmd += ["--pass", mode, "--top", str(top), "--json", str(out)]
            if subprocess.run(cmd, check=False).returncode != 0:
                raise SystemExit(f"the {mode} pass failed")
            passes[mode] = json.loads(out.read_text())
    phases = [
        {**traced, **rss}
        for rss, traced in zip(passes["rss"]["phases"], passes["traced"]["phases"], strict=True)
    ]
    return {
        "ingresses": n,
        "rss_mib": passes["rss"]["rss_mib"],
        "phases": phases,
        "table_types": passes["traced"]["table_types"],
        "table_bytes": passes["traced"]["table_bytes"],
    }


def print_breakdown(result: dict[str, Any]) -> None:
    n = result["ingresses"]
    print(f"what the processes hold, {n} Ingresses (one process: source, then a worker's part)")
    for p in result["phases"]:
        print(
            f"  {p['phase']}: RSS +{p['rss_mib']:.1f} MiB; traced {p['traced_mib']:.1f} MiB, "
            f"{p['per_ingress_bytes']:.0f} B per Ingress"
        )
        for t in p["top"]:
            if t["mib"] >= 0.05:
                print(f"      {t['mib']:8.2f} MiB {t['count']:>9}  {t['where']}")
    print(
        f"  reachable from the table (sys.getsizeof, each object once): "
        f"{result['table_bytes'] / 2**20:.1f} MiB, {result['table_bytes'] / n:.0f} B per Ingress"
    )
    for name, size in result["table_types"]:
        print(f"      {size / 2**20:8.2f} MiB  {name}")


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--ingresses", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after ready")
    parser.add_argument("--cache", type=Path, help="where the folder is kept (a temp dir)")
    parser.add_argument("--breakdown", action="store_true", help="the per-Ingress breakdown")
    parser.add_argument("--top", type=int, default=12, help="lines per breakdown phase")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers here")
    passes = ("rss", "traced")
    parser.add_argument("--pass", dest="one_pass", choices=passes, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    folder = folder_for(args.ingresses, args.cache)
    if args.one_pass:  # internal: one pass of the breakdown, in a fresh process
        result = breakdown_pass(folder, args.ingresses, args.top, args.one_pass == "traced")
    elif args.breakdown:
        result = breakdown(folder, args.ingresses, args.top)
        print_breakdown(result)
    else:
        result = serve_and_measure(folder, args.ingresses, args.workers, args.settle)
        print_serve(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
