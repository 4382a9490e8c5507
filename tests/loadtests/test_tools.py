"""loadtests/tools.py, what bench.py, grpc_scenario.py and stream_bench.py share:
finding tools, free ports, starting and stopping servers (a real nginx where
one is installed), reading h2load's output. apt-get itself is never run here
(it needs the network): only what decides whether it would be.

No benchmark runs here (nothing is timed)."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

LOADTESTS = Path(__file__).resolve().parents[2] / "loadtests"
sys.path.insert(0, str(LOADTESTS))

import tools  # noqa: E402

NGINX = shutil.which("nginx", path=tools.TOOL_PATH)
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")


def executable(folder: Path, name: str) -> Path:
    """A file named ``name`` that shutil.which takes for a program (never run)."""
    path = folder / name
    path.write_text("#!/bin/sh\nexit 1\n")
    path.chmod(0o755)
    return path


# -- prerequisites ----------------------------------------------------------------------


def test_not_found_names_what_is_not_on_the_path_in_order(tmp_path: Path) -> None:
    executable(tmp_path, "wrk")
    assert tools.not_found(("nginx", "wrk", "h2load"), str(tmp_path)) == ["nginx", "h2load"]
    assert tools.not_found(("wrk",), str(tmp_path)) == []


def test_apt_get_runs_as_root_else_through_sudo_n_else_not_at_all(tmp_path: Path) -> None:
    assert tools.sudo_prefix(str(tmp_path), uid=0) == []
    assert tools.sudo_prefix(str(tmp_path), uid=1000) is None  # no sudo there
    executable(tmp_path, "sudo")
    assert tools.sudo_prefix(str(tmp_path), uid=1000) == ["sudo", "-n"]


def test_nothing_is_installed_when_nothing_is_missing_or_there_is_no_apt_get(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asked: list[str] = []

    def missing(names: list[str]) -> list[str]:
        asked.append("missing")
        return names

    # apt-get is on this path: only the empty list keeps it from running.
    executable(tmp_path, "apt-get")
    tools.apt_install(lambda: missing([]), {"wrk": ["wrk"]}, str(tmp_path), say="x: ")
    assert asked == ["missing"]
    # Something is missing, but there is no apt-get to install it with.
    asked.clear()
    (tmp_path / "apt-get").unlink()
    tools.apt_install(lambda: missing(["wrk"]), {"wrk": ["wrk"]}, str(tmp_path), say="x: ")
    assert asked == ["missing"]
    assert capsys.readouterr() == ("", "")


# -- ports ---------------------------------------------------------------------------------


def test_free_ports_are_all_different_and_free() -> None:
    ports = tools.free_ports(20)
    assert len(set(ports)) == 20
    with contextlib.ExitStack() as stack:
        for port in ports:
            s = stack.enter_context(socket.socket())
            s.bind((tools.LOOPBACK, port))


def test_port_open_while_something_listens() -> None:
    server = socket.create_server((tools.LOOPBACK, 0))
    port = server.getsockname()[1]
    assert tools.port_open(port)
    server.close()
    assert not tools.port_open(port)


# -- processes -------------------------------------------------------------------------------


def test_a_pinned_child_and_what_it_forks_run_on_the_planned_cpus() -> None:
    """The preexec pin the scripts start servers, wrk and h2load with, on a real child."""
    cpu = min(os.sched_getaffinity(0))
    out = subprocess.run(
        ["sh", "-c", "grep Cpus_allowed_list /proc/self/status"],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=tools.affinity((cpu,)),
    )
    assert out.stdout.split(":")[1].strip() == str(cpu)
    assert tools.affinity(()) is None


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (a killed one may be a
    zombie for a moment, till its new parent reaps it: waited for, 5 s at most)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.05)
    return True


def test_a_server_logs_to_its_file_and_its_whole_group_stops_with_the_stack(
    tmp_path: Path,
) -> None:
    log = tmp_path / "server.log"
    with contextlib.ExitStack() as stack:
        # A child in the background, as nginx's workers: it must go too.
        cmd = ["sh", "-c", "echo started; sleep 60 & exec sleep 60"]
        proc = tools.start_server(stack, cmd, log)
        assert os.getpgid(proc.pid) == proc.pid  # a session, so a group, of its own
        tools.wait_ready(proc, lambda: log.read_text() == "started\n", "sh", log, timeout=10)
    assert proc.returncode is not None
    assert not group_alive(proc.pid)


def test_waiting_for_a_server_that_exits_says_so_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with contextlib.ExitStack() as stack:
        proc = tools.start_server(stack, ["sh", "-c", "echo cannot bind >&2; exit 3"], log)
        with pytest.raises(tools.BenchError, match=r"(?s)^sh exited with code 3:\ncannot bind$"):
            tools.wait_ready(proc, lambda: False, "sh", log, timeout=10)


def test_waiting_for_a_server_that_never_gets_ready_ends(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with contextlib.ExitStack() as stack:
        proc = tools.start_server(stack, ["sleep", "60"], log)
        with pytest.raises(tools.BenchError, match=r"^sleep not ready after 0.2 s:"):
            tools.wait_ready(proc, lambda: False, "sleep", log, timeout=0.2)


def test_the_nginx_command_keeps_its_files_in_the_prefix(tmp_path: Path) -> None:
    cmd = tools.nginx_command("/usr/sbin/nginx", tmp_path)
    assert cmd == [
        "/usr/sbin/nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
        "-g", "daemon off;", "-e", str(tmp_path / "error.log"),
    ]  # fmt: skip
    assert "-e" not in tools.nginx_command("nginx", tmp_path, error_log_flag=False)


def nginx_conf(prefix: Path, port: int) -> str:
    temps = "".join(
        f"  {kind}_temp_path {prefix}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"worker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n"
        "events { worker_connections 64; }\n"
        f"http {{\n  access_log off;\n{temps}"
        f'  server {{ listen {tools.LOOPBACK}:{port}; return 200 "ok\\n"; }}\n}}\n'
    )


@needs_nginx
def test_an_nginx_of_its_own_in_a_temp_dir_serves_then_stops(tmp_path: Path) -> None:
    assert NGINX is not None
    prefix = tmp_path / "origin"  # made by start_nginx
    (port,) = tools.free_ports(1)
    with contextlib.ExitStack() as stack:
        proc = tools.start_nginx(stack, NGINX, prefix, nginx_conf(prefix, port), port)
        assert tools.port_open(port)
        with socket.create_connection((tools.LOOPBACK, port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200 OK")
        assert (prefix / "nginx.conf").read_text() == nginx_conf(prefix, port)
    assert proc.returncode is not None and not group_alive(proc.pid)
    assert not tools.port_open(port)


@needs_nginx
def test_an_nginx_that_rejects_its_config_is_reported_with_its_error(tmp_path: Path) -> None:
    assert NGINX is not None
    prefix = tmp_path / "broken"
    (port,) = tools.free_ports(1)
    conf = nginx_conf(prefix, port).replace("access_log off;", "no_such_directive on;")
    with contextlib.ExitStack() as stack, pytest.raises(tools.BenchError) as info:
        tools.start_nginx(stack, NGINX, prefix, conf, port, timeout=10)
    assert str(info.value).startswith("nginx (broken) exited with code 1:")
    assert 'unknown directive "no_such_directive"' in str(info.value)


# -- h2load -------------------------------------------------------------------------------

H2LOAD_OUTPUT = """starting benchmark...
spawning thread #0: 10 total client(s). 10 total requests
TLS Protocol: TLSv1.3
Application protocol: h2

finished in 5.00s, 12345.67 req/s, 1.21MB/s
requests: 61730 total, 61740 started, 61730 done, 61700 succeeded, 30 failed, 20 errored, 10 timeout
status codes: 61700 2xx, 0 3xx, 7 4xx, 23 5xx
traffic: 6.06MB (6354321) total, 1.18MB (1234567) headers (space savings 95.00%), 0B (0) data
"""


def test_h2loads_summary_is_read() -> None:
    assert tools.parse_h2load(H2LOAD_OUTPUT) == tools.H2loadSummary(
        rps=12345.67, succeeded=61700, failed=30, errored=20, timeout=10, non_2xx_3xx=30
    )


def test_h2load_output_without_its_summary_is_an_error() -> None:
    with pytest.raises(tools.BenchError, match="cannot parse h2load output"):
        tools.parse_h2load(H2LOAD_OUTPUT.replace("status codes:", "codes:"))


def test_h2loads_request_log_gives_sorted_latencies_in_ms(tmp_path: Path) -> None:
    log = tmp_path / "requests.log"
    log.write_text("1000\t200\t2500\n1001\t200\t1500\nnot a request line\n1002\t503\t500\n")
    assert tools.h2load_latencies(log) == [0.5, 1.5, 2.5]


def test_percentiles_by_nearest_rank_and_nan_for_none() -> None:
    values = [float(v) for v in range(1, 101)]
    assert tools.percentile(values, 0.50) == 51.0
    assert tools.percentile(values, 0.99) == 100.0
    assert tools.percentile(values, 1.0) == 100.0  # never past the end
    assert tools.percentile([7.0], 0.99) == 7.0
    assert math.isnan(tools.percentile([], 0.5))


def test_a_failed_h2load_or_one_without_http2_stops_the_run() -> None:
    with pytest.raises(tools.BenchError, match=r"^h2load failed \(3\): oops"):
        tools.h2load_output(["sh", "-c", "echo oops; exit 3"], 1)
    with pytest.raises(tools.BenchError, match=r"did not get HTTP/2 \(ALPN h2\)"):
        tools.h2load_output(["sh", "-c", "echo Application protocol: http/1.1"], 1)
    assert "Application protocol: h2" in tools.h2load_output(["echo", H2LOAD_OUTPUT], 1)


# -- what ingressd serves -------------------------------------------------------------------


def test_the_objects_made_here_are_an_ingress_ingressd_routes_to_its_endpoint(
    tmp_path: Path,
) -> None:
    """ingressd's own ``check`` reads them: ours, the route resolved to one
    ready endpoint, TLS from the named Secret."""
    import yaml

    from ingressd.policy.tls import self_signed

    cert, key = self_signed(common_name="a.local", dns_names=("a.local",), days=1)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "a-tls", "namespace": "bench"},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(cert).decode(),
            "tls.key": base64.b64encode(key).decode(),
        },
    }
    notes = {"nginx.ingress.kubernetes.io/ssl-redirect": "false"}
    objs = [
        tools.ingress_class(),
        tools.ingress("a", "bench", "a.local", "origin", 80, notes, tls_secret="a-tls"),
        tools.service("origin", "bench", "http"),
        tools.endpoint_slice("origin-1", "bench", "origin", "http", 4321),
        secret,
    ]
    (tmp_path / "a.yaml").write_text(yaml.safe_dump_all(objs))
    cmd = [sys.executable, "-m", "ingressd", "check", "--manifests", str(tmp_path)]
    out = subprocess.run([*cmd, "--format", "json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    (report,) = json.loads(out.stdout)["ingresses"]
    assert report["ours"] and report["problems"] == []
    (route,) = report["routes"]
    assert (route["host"], route["path"], route["path_type"]) == ("a.local", "/", "Prefix")
    assert route["resolves"] and route["ready_endpoints"] == 1
    assert report["tls"] and report["annotations"][0]["status"] == "supported"
    assert tools.ingress("b", "bench", "b.local", "origin", 80, {})["spec"].keys() == {
        "ingressClassName",
        "rules",
    }  # no tls_secret, no spec.tls
