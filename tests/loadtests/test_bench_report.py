"""loadtests/bench.py's own logic: the CPU plan, the spread over rounds, the
unreliable-run flag, other processes' CPU time, the wrk Lua script of the
browser scenario, and how the report and the targets show them.

No benchmark runs here and no timing is asserted: the figures are made up.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

LOADTESTS = Path(__file__).resolve().parents[2] / "loadtests"
sys.path.insert(0, str(LOADTESTS))

import bench  # noqa: E402


def run(proxy: str, rnd: int, rps: float, p99: float = 2.0, cpu: float = 1.0) -> bench.Run:
    wrk = bench.WrkResult(
        requests=int(rps * 5),
        rps=rps,
        p50_ms=1.0,
        p99_ms=p99,
        socket_errors={"connect": 0, "read": 0, "write": 0, "timeout": 0},
        non_2xx_3xx=0,
    )
    return bench.Run(proxy, rnd, wrk, cpu, others_cpu_seconds=0.1, wall_seconds=5.0)


def quiet(cpus: int = 2) -> bench.Reliability:
    return bench.judge_load(cpus, (0.1, 0.1, 0.1), (0.5, 0.2, 0.1), 0.0, 30.0, True)


# -- the CPU plan ---------------------------------------------------------------------


def test_two_cpus_give_the_proxy_one_and_the_origin_and_wrk_the_other() -> None:
    plan = bench.plan_cpus([0, 1], workers=1)
    assert (plan.proxy, plan.origin, plan.client) == ((0,), (1,), (1,))
    assert plan.pinned
    assert "CPU 0" in plan.note and "CPU 1" in plan.note


def test_more_cpus_give_each_worker_its_own_then_the_origin_then_wrk() -> None:
    plan = bench.plan_cpus([3, 1, 2, 0, 5, 4], workers=2)
    assert (plan.proxy, plan.origin, plan.client) == ((0, 1), (2,), (3, 4, 5))
    plan = bench.plan_cpus([0, 1, 2], workers=1)
    assert (plan.proxy, plan.origin, plan.client) == ((0,), (1,), (2,))


@pytest.mark.parametrize(
    ("cpus", "workers", "pin", "why"),
    [
        ([0], 1, True, "1 CPU"),
        ([], 1, True, "0 CPU"),
        ([0, 1], 2, True, "2 proxy workers and 2 CPUs"),
        ([0, 1, 2, 3], 4, True, "4 proxy workers and 4 CPUs"),
        ([0, 1, 2, 3], 3, True, "3 proxy workers and 4 CPUs"),
        ([0, 1, 2, 3], 1, False, "--no-pin"),
    ],
)
def test_nothing_is_pinned_when_there_is_nothing_to_split(
    cpus: list[int], workers: int, pin: bool, why: str
) -> None:
    plan = bench.plan_cpus(cpus, workers, pin)
    assert not plan.pinned
    assert plan.proxy == plan.origin == plan.client == ()
    assert why in plan.note


def test_origin_and_wrk_keeping_their_cpu_busy_is_noted_per_proxy() -> None:
    plan = bench.plan_cpus([0, 1], workers=1)
    result = bench.ScenarioResult(bench.SCENARIOS["http"], {"nginx": 1, "ingressd": 1}, [])
    result.cpu_plan = plan
    busy, idle = run("nginx", 1, 100.0), run("ingressd", 1, 50.0)
    busy.client_cpu_seconds, idle.client_cpu_seconds = 4.75, 2.0  # over 5 s on one CPU
    result.runs += [busy, idle]
    assert bench.client_busy(busy, plan) == pytest.approx(0.95)
    assert bench.client_busy(idle, plan) == pytest.approx(0.4)
    assert bench.client_bound_notes(result) == [
        "with nginx the origin and the load generator kept CPU 1 95% busy: "
        "nginx's req/s may be bounded by them"
    ]
    # Not pinned apart: their CPU is anybody's, nothing to say.
    assert bench.client_busy(busy, bench.plan_cpus([0, 1], workers=2)) is None
    result.cpu_plan = bench.plan_cpus([0, 1], 1, pin=False)
    assert bench.client_bound_notes(result) == []


# -- the spread over rounds -----------------------------------------------------------


def test_spread_gives_min_max_and_the_sample_stdev_absolute_and_relative() -> None:
    s = bench.spread([10.0, 12.0, 14.0])
    assert (s.min, s.max) == (10.0, 14.0)
    assert s.stdev == pytest.approx(2.0)
    assert s.rel_stdev == pytest.approx(2.0 / 12.0)
    assert s.range_text() == "10.0-14.0"
    assert s.rel_text() == "16.7%"


def test_spread_of_one_round_has_no_stdev_and_nans_are_left_out() -> None:
    one = bench.spread([5.0, float("nan")])
    assert (one.min, one.max, one.stdev, one.rel_stdev) == (5.0, 5.0, None, None)
    assert one.rel_text() == "n/a"
    none = bench.spread([])
    assert math.isnan(none.min) and none.stdev is None


def test_the_report_shows_each_proxys_spread_beside_the_medians() -> None:
    result = bench.ScenarioResult(bench.SCENARIOS["http"], {"nginx": 1, "ingressd": 1}, [])
    for rnd, (ngx, ing) in enumerate([(100.0, 50.0), (120.0, 70.0), (110.0, 60.0)], 1):
        result.runs += [run("nginx", rnd, ngx), run("ingressd", rnd, ing)]
    result.reliability = quiet()
    text = "\n".join(bench.table(result))
    assert "spread over 3 round(s)" in text
    assert "nginx    req/s 100.0-120.0 (9.1%)" in text
    assert "ingressd req/s 50.0-70.0 (16.7%)" in text
    assert result.summary("ingressd").rps == 60.0  # still the median
    spreads = result.spreads("nginx")
    assert set(spreads) == {"rps", "p50_ms", "p99_ms", "cpu_us_per_request"}
    assert "reliable" in text and "UNRELIABLE" not in text


# -- the unreliable flag --------------------------------------------------------------


def test_a_load_average_above_half_the_cpus_before_the_first_scenario_is_flagged() -> None:
    rel = bench.judge_load(2, (1.2, 0.5, 0.3), (1.5, 0.6, 0.3), 0.0, 30.0, True)
    assert rel.unreliable
    assert rel.reasons == ("load average 1.20 before it started (> 0.5 x 2 CPUs)",)
    assert not bench.judge_load(2, (0.9, 0.5, 0.3), (1.5, 0.6, 0.3), 0.0, 30.0, True).unreliable
    assert not bench.judge_load(4, (1.9, 0.5, 0.3), (1.5, 0.6, 0.3), 0.0, 30.0, True).unreliable


def test_later_scenarios_are_judged_on_other_processes_not_on_their_own_load_tail() -> None:
    """The 1-minute load after a scenario is mostly the benchmark's own."""
    rel = bench.judge_load(2, (2.5, 1.0, 0.5), (2.5, 1.0, 0.5), 1.0, 30.0, False)
    assert not rel.unreliable
    assert "includes the previous scenario's own load" in bench.reliability_text(rel)


def test_other_processes_cpu_time_during_the_runs_is_flagged() -> None:
    # 0.25 CPUs' worth on 2 CPUs: above 0.1 x 2
    rel = bench.judge_load(2, (0.1, 0.1, 0.1), (0.2, 0.1, 0.1), 7.5, 30.0, False)
    assert rel.unreliable
    assert rel.others_cpus == pytest.approx(0.25)
    assert rel.reasons == ("other processes used 0.25 CPUs during the runs (> 0.1 x 2 CPUs)",)
    ok = bench.judge_load(2, (0.1, 0.1, 0.1), (0.2, 0.1, 0.1), 5.9, 30.0, False)
    assert not ok.unreliable


def test_an_unreliable_scenario_is_flagged_in_the_text_the_targets_and_the_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = bench.ScenarioResult(bench.SCENARIOS["http"], {"nginx": 1, "ingressd": 1}, [])
    result.runs += [run("nginx", 1, 100.0), run("ingressd", 1, 70.0)]
    result.reliability = bench.judge_load(2, (1.5, 1, 1), (2, 1, 1), 0.0, 10.0, True)
    results = {"http": result}
    checks = bench.check_targets(results)
    rps = next(c for c in checks if c.scenario == "http" and c.description.startswith("req/s"))
    assert rps.passed and rps.unreliable and rps.value == pytest.approx(0.7)
    bench.print_report(results, checks)
    out = capsys.readouterr().out
    assert "PASS  http      req/s ratio >= 0.6       0.70  (unreliable: machine loaded)" in out
    assert "UNRELIABLE: http ran on a loaded machine" in out
    doc = json.loads(json.dumps(bench.to_json(bench.Options(5, 1, 50, 1), {}, results, checks)))
    assert doc["unreliable"] == ["http"]
    rel = doc["scenarios"]["http"]["reliability"]
    assert rel["unreliable"] is True and rel["load_before"] == [1.5, 1, 1]
    assert doc["scenarios"]["http"]["spread"]["nginx"]["rps"]["min"] == 100.0
    assert all(t["unreliable"] for t in doc["targets"] if t["scenario"] == "http")


def test_others_are_the_machines_busy_time_less_the_benchmarks_own() -> None:
    stat = "cpu  1000 20 300 9000 50 7 60 5 0 0\ncpu0 500 10 150 4500 25 3 30 2 0 0\n"
    assert bench.busy_ticks(stat) == 1000 + 20 + 300 + 5  # user nice system steal
    assert bench.machine_busy_ticks() > 0
    with pytest.raises(bench.BenchError):
        bench.busy_ticks("intr 1 2 3\n")
    assert bench.others_ticks(1000, 1500, 420) == 80
    # Clock skew between the readings never makes the others negative.
    assert bench.others_ticks(1000, 1400, 420) == 0


def test_tree_ticks_sums_a_process_and_its_descendants_only() -> None:
    P = bench.ProcStat
    snap = {1: P(0, 100), 10: P(1, 80), 20: P(1, 40), 21: P(20, 9), 22: P(21, 1), 30: P(2, 70)}
    assert bench.tree_pids(snap, 20) == {20, 21, 22}
    assert bench.tree_ticks(snap, 20) == 50
    assert bench.tree_ticks(snap, 99) == 0


def test_cpu_snapshot_sees_this_process_and_its_children() -> None:
    child = subprocess.Popen(["sleep", "5"])
    try:
        snap = bench.cpu_snapshot()
        me = bench.os.getpid()
        assert snap[child.pid].ppid == me
        assert {me, child.pid} <= bench.tree_pids(snap, me)
    finally:
        child.kill()
        child.wait()


# -- the browser scenario's request ---------------------------------------------------


def test_the_browser_scenario_sends_twelve_browser_headers_with_a_cookie() -> None:
    scenario = bench.SCENARIOS["browser"]
    names = [name.lower() for name, _ in scenario.headers]
    assert len(names) == 12 and len(set(names)) == 12
    assert {"user-agent", "accept", "accept-language", "accept-encoding", "cookie", "referer",
            "sec-ch-ua", "sec-fetch-site", "upgrade-insecure-requests"} <= set(names)  # fmt: skip
    assert dict(scenario.headers)["Cookie"].count("=") >= 3
    assert not scenario.tls and scenario.workers == 1 and scenario.client == "wrk"
    assert any(c.scenario == "browser" and "0.5" in c.description for c in bench.check_targets({}))


def test_hotpaths_browser_request_is_the_scenarios_headers_in_one_parseable_head() -> None:
    import httptools
    from browser_headers import browser_request

    seen: list[tuple[bytes, bytes]] = []
    done: list[bool] = []

    class Recorder:
        def on_header(self, name: bytes, value: bytes) -> None:
            seen.append((name, value))

        def on_message_complete(self) -> None:
            done.append(True)

    parser = httptools.HttpRequestParser(Recorder())
    parser.feed_data(browser_request(bench.HOST, "/api/items?id=7"))
    assert done and parser.get_method() == b"GET"
    assert seen[0] == (b"Host", bench.HOST.encode())
    assert [(n.decode(), v.decode()) for n, v in seen[1:]] == list(bench.BROWSER_HEADERS)


def test_wrk_lua_quotes_every_value_so_that_none_can_end_its_string() -> None:
    lua = bench.wrk_lua((("A", 'x"y\\z'), ("B", "end]]here"), ("C", "]=]and]]")))
    assert lua == (
        'wrk.headers[ [[A]] ] = [[x"y\\z]]\n'
        "wrk.headers[ [[B]] ] = [=[end]]here]=]\n"
        "wrk.headers[ [[C]] ] = [==[]=]and]]]==]\n"
    )


@pytest.fixture
def recording_server() -> Iterator[tuple[int, list[bytes]]]:
    """A listener on 127.0.0.1 that answers every request ``200 ok`` and records
    the request heads; stopped after the test."""
    heads: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()

    def answer(conn: socket.socket) -> None:
        conn.settimeout(10)
        buf = b""
        with conn:
            while not stop.is_set():
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while b"\r\n\r\n" in buf:
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    heads.append(head)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")

    def serve() -> None:
        # wrk first connects once to check the address, then again to load it.
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], heads
    finally:
        stop.set()
        thread.join(timeout=10)
        server.close()


WRK = shutil.which("wrk")
needs_wrk = pytest.mark.skipif(WRK is None, reason="wrk is not installed")


@needs_wrk
def test_wrk_sends_the_browser_headers_through_the_lua_script(
    tmp_path: Path, recording_server: tuple[int, list[bytes]]
) -> None:
    """wrk itself runs the generated script against a listener that records
    what it receives."""
    port, heads = recording_server
    script = tmp_path / "browser.lua"
    script.write_text(bench.wrk_lua(bench.BROWSER_HEADERS))
    result = bench.run_wrk(str(WRK), f"http://127.0.0.1:{port}/", 1, 1, 1, bench.HOST, script)
    assert result.requests > 0 and heads
    lines = heads[0].decode().split("\r\n")
    assert lines[0] == "GET / HTTP/1.1"
    sent = dict(line.split(": ", 1) for line in lines[1:])
    assert sent["Host"] == bench.HOST
    for name, value in bench.BROWSER_HEADERS:
        assert sent[name] == value


@needs_wrk
def test_a_script_wrk_cannot_load_stops_the_benchmark(
    tmp_path: Path, recording_server: tuple[int, list[bytes]]
) -> None:
    """wrk reports a broken script on stderr and runs without it, exit code 0."""
    port, _ = recording_server
    script = tmp_path / "broken.lua"
    script.write_text("wrk.headers[[[A]]] = [[b]]\n")
    with pytest.raises(bench.BenchError, match=r"could not run broken\.lua"):
        bench.run_wrk(str(WRK), f"http://127.0.0.1:{port}/", 1, 1, 1, bench.HOST, script)


# -- the reference nginx ---------------------------------------------------------------


@pytest.mark.skipif(
    shutil.which("nginx", path=bench.TOOL_PATH) is None or shutil.which("curl") is None,
    reason="nginx or curl is not installed",
)
def test_the_reference_nginx_sends_hsts_on_tls_only_as_ingress_nginx_and_ingressd_do(
    tmp_path: Path,
) -> None:
    """ingress-nginx sends Strict-Transport-Security on HTTPS by default (and so
    does ingressd): the nginx it is measured against must pay for it too."""
    import contextlib

    tools = bench.find_tools()
    origin, http_port, https_port = bench.free_ports(3)
    bench.write_certificate(tmp_path / "tls")
    with contextlib.ExitStack() as stack:
        bench.start_nginx(
            stack,
            tools,
            tmp_path / "origin",
            bench.origin_conf(tmp_path / "origin", origin),
            origin,
        )
        conf = bench.proxy_conf(
            tmp_path / "proxy", 1, origin, http_port, https_port, tmp_path / "tls"
        )
        bench.start_nginx(stack, tools, tmp_path / "proxy", conf, http_port)

        def head(scheme: str, port: int) -> str:
            return subprocess.run(
                ["curl", "-sk", "-o", "/dev/null", "-D", "-", "--resolve",
                 f"{bench.HOST}:{port}:127.0.0.1", f"{scheme}://{bench.HOST}:{port}/"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout.lower()  # fmt: skip

        tls, plain = head("https", https_port), head("http", http_port)
    assert tls.startswith("http/1.1 200")
    assert "strict-transport-security: max-age=31536000; includesubdomains" in tls
    assert plain.startswith("http/1.1 200") and "strict-transport-security" not in plain
