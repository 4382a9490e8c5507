"""loadtests/locustfile.py against ``ingressd demo``: a short headless locust run.

So that the locustfile never rots: every request it names must be sent at least
once and none may fail (locust counts a wrong status, a misroute or a mangled
body as a failure). No timing is asserted.

locust monkey-patches the standard library with gevent, so it only ever runs
as a subprocess; this module never imports it. The demo runs on a copy of
examples/ whose echo upstreams are on free ports, like test_e2e_demo.py.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import LOCALHOST, REPO_ROOT, Ingressd, examples_on_free_ports

LOCUSTFILE = REPO_ROOT / "loadtests" / "locustfile.py"
LOCUST_TIMEOUT = 60.0


def request_names() -> set[str]:
    """The ``name="..."`` of every request in the locustfile, one per ``@task``."""
    tree = ast.parse(LOCUSTFILE.read_text(), str(LOCUSTFILE))
    names = {
        kw.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        for kw in node.keywords
        if kw.arg == "name" and isinstance(kw.value, ast.Constant)
    }
    tasks = [
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        for deco in node.decorator_list
        if ast.unparse(deco.func if isinstance(deco, ast.Call) else deco) == "task"
    ]
    assert len(names) == len(tasks) >= 5, (names, tasks)  # one literal request name per task
    return names


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Ingressd]:
    folder, _ = examples_on_free_ports(tmp_path)
    proc = Ingressd(folder, tmp_path / "ingressd-demo.log", command="demo", cwd=REPO_ROOT)
    try:
        yield proc.start()
    finally:
        proc.stop()


def test_locustfile_against_the_demo(demo: Ingressd, tmp_path: Path) -> None:
    expected = request_names()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "INGRESSD_"))}
    env |= {
        "INGRESSD_HTTP": f"http://{LOCALHOST}:{demo.http_port}",
        "INGRESSD_HTTPS": f"https://{LOCALHOST}:{demo.https_port}",
        "INGRESSD_WAIT": "0.01,0.05",  # enough requests in 4 s for every task to run
    }
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        "5",
        "-r",
        "5",
        "-t",
        "4s",
        "--only-summary",
        "--json",  # the final stats, on stdout
        "--csv",
        str(tmp_path / "locust"),  # for the failure reasons, should there be any
    ]
    # cwd: a directory without locust.conf or a [tool.locust] pyproject.toml
    result = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=LOCUST_TIMEOUT
    )
    failures = tmp_path / "locust_failures.csv"
    report = (
        f"locust exit {result.returncode}\nstderr:\n{result.stderr[-4000:]}\n"
        f"failures:\n{failures.read_text() if failures.exists() else '-'}\n"
        f"ingressd log tail:\n{demo.log()[-2000:]}"
    )
    try:
        stats = json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"no JSON stats on stdout: {result.stdout[:500]!r}\n{report}")

    counts = {entry["name"]: entry["num_requests"] for entry in stats}
    failed = {entry["name"]: entry["num_failures"] for entry in stats if entry["num_failures"]}
    assert set(counts) == expected, report
    assert all(n >= 1 for n in counts.values()), (counts, report)
    assert sum(counts.values()) > 0
    assert not failed, (failed, report)
    assert result.returncode == 0, report
