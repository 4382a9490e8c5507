"""loadtests/routes.py --quick runs, builds what it generated and routes its mix correctly.

Timings are the benchmark's business, not the test's: none is asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "loadtests" / "routes.py"

# What the generator makes at each quick size: 3 paths per Ingress plus one regex
# path on every 7th (i % 7 == 3), a wildcard host on every 10th (i % 10 == 0),
# a TLS Secret on every 10th (i % 10 == 5).
EXPECTED = {
    10: {"routes": 31, "regex": 1, "wildcard_hosts": 1, "tls_secrets": 1},
    1000: {"routes": 3143, "regex": 143, "wildcard_hosts": 100, "tls_secrets": 100},
}
RESULT_KEYS = {
    "ingresses",
    "routes",
    "expected_routes",
    "problems",
    "build_ms",
    "change_apply_ms",
    "route_for_ns",
    "decide_ns",
    "route_for_ratio",
    "decide_ratio",
    "rss_mib",
    "mix",
}


@pytest.mark.timeout(150)  # above the subprocess timeout, so that one reports first
def test_quick_benchmark_builds_and_routes_what_it_generated(tmp_path: Path) -> None:
    out = tmp_path / "routes.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "targets" in proc.stdout

    report = json.loads(out.read_text())
    assert report["quick"] is True
    assert report["sizes"] == [10, 1000]
    assert {t["name"] for t in report["targets"]} == {
        "lookup ratio (decide, same requests)",
        "lookup ratio (decide)",
        "lookup ratio (route_for)",
        "one-Ingress change applied",
        "RSS with table live",
    }
    results = {r["ingresses"]: r for r in report["results"]}
    assert sorted(results) == [10, 1000]
    for n, want in EXPECTED.items():
        r = results[n]
        assert r.keys() >= RESULT_KEYS
        assert r["routes"] == r["expected_routes"] == want["routes"] == 3 * n + want["regex"]
        assert r["problems"] == 0
        assert r["services"] == r["endpoint_slices"] == n
        assert r["wildcard_hosts"] == want["wildcard_hosts"]
        assert r["exact_hosts"] == n - want["wildcard_hosts"]
        assert r["tls_secrets"] == r["certificates"] == want["tls_secrets"]
        # The pre-check routed every request of the mix where it should go.
        mix = r["mix"]
        assert mix["probes"] == mix["checked"] == 1000
        assert mix["mismatches"] == 0
        assert set(mix["by_kind"]) == {"exact", "wildcard", "regex", "miss"}
        assert mix["routed"] + mix["not_found"] == mix["probes"]
        assert mix["not_found"] == mix["by_kind"]["miss"]
