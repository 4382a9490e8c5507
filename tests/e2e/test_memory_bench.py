"""loadtests/memory.py runs ingressd serve --workers 2 on a generated folder and
reports every process's memory; its breakdown pass runs too.

Memory figures are the benchmark's business, not the test's: none is asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "loadtests" / "memory.py"
FIELDS = {"rss", "pss", "uss", "peak_rss", "cpu_s"}


@pytest.mark.timeout(200)
def test_memory_benchmark_measures_every_process(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    cmd = [sys.executable, str(SCRIPT), "--ingresses", "120", "--workers", "2"]
    cmd += ["--settle", "0", "--cache", str(tmp_path / "cache"), "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=150, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["ingresses"] == 120 and report["workers"] == 2
    assert report["problems"] == 0, report["problem_sample"]
    assert report["sni_ok"] is True  # each TLS host got its own certificate
    assert report["reload_s"] > 0  # a new Ingress file was served by every worker
    roles = sorted(p["role"] for p in report["processes"])
    assert roles.count("worker") == 2 and "main (source, admin)" in roles
    for p in report["processes"]:
        assert p.keys() >= FIELDS
        assert 0 < p["uss"] <= p["pss"] <= p["rss"]
    assert "PASS" in proc.stdout or "FAIL" in proc.stdout
    # The folder is kept and used again.
    folders = list((tmp_path / "cache").iterdir())
    assert len(folders) == 1 and (folders[0] / ".complete").exists()


@pytest.mark.timeout(200)
def test_memory_breakdown_names_what_is_held(tmp_path: Path) -> None:
    out = tmp_path / "breakdown.json"
    cmd = [sys.executable, str(SCRIPT), "--ingresses", "60", "--breakdown"]
    cmd += ["--cache", str(tmp_path / "cache"), "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=150, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    phases = [p["phase"] for p in report["phases"]]
    assert any(p.startswith("source:") for p in phases)
    assert any(p.startswith("worker: store") for p in phases)
    for p in report["phases"]:
        assert {"rss_mib", "traced_mib", "per_ingress_bytes", "top"} <= p.keys()
    assert report["table_bytes"] > 0
    assert dict(report["table_types"]).get("Route", 0) > 0
