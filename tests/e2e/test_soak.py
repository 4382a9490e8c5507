"""loadtests/soak.py, briefly: mixed traffic under churn, and no answer other than expected.

Timings and memory are the soak's report, not the test's business: none is
asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "loadtests" / "soak.py"
KINDS = {
    "get",
    "get_new",
    "get_404",
    "post",
    "https",
    "websocket",
    "slow",
    "disconnect",
    "sticky",
    "limited",
    "retry",
}


@pytest.mark.timeout(150)  # above the subprocess timeout, so that one reports first
def test_short_soak_has_no_unexpected_answers(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--duration", "8", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode == 2 and "missing prerequisites" in proc.stderr:
        pytest.skip(proc.stderr.strip())  # nginx (bench.py's origin) could not be installed
    assert out.exists(), proc.stdout + proc.stderr
    report = json.loads(out.read_text())

    assert report["unexpected"] == 0, json.dumps(report["unexpected_details"], indent=2)
    assert report["pass"] is True
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(report["kinds"]) == KINDS
    idle = [kind for kind, k in report["kinds"].items() if k["requests"] == 0]
    assert not idle, f"no requests of kind(s) {idle}"
    # The churn was applied: every change is a rewritten file, and changes
    # usually come far enough apart to make a table each.
    changes = sum(report["changes"].values())
    assert changes >= 10, report["changes"]
    assert report["generations"]["during"] >= 5, report["generations"]
    # Both ends of the endpoint churn: a dead port next to a live endpoint
    # (retried, still 200) and a dead port alone (502).
    assert {"add dead port alongside", "dead port only"} <= set(report["changes"])
    assert report["rss"]["samples"], "RSS was never sampled"
