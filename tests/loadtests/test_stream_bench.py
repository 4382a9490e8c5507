"""loadtests/stream_bench.py's own logic: what it needs, and saying what is missing.

No benchmark runs here (nothing is timed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

LOADTESTS = Path(__file__).resolve().parents[2] / "loadtests"
sys.path.insert(0, str(LOADTESTS))

import stream_bench  # noqa: E402


def test_missing_tools_are_named_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A PATH with nothing on it, apt-get included: nothing can be installed either.
    with pytest.raises(SystemExit) as exc:
        stream_bench.find_tools(str(tmp_path))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    for tool in ("iperf3", "nginx", "curl", "openssl"):
        assert tool in err
    assert "apt-get install iperf3 nginx-light curl openssl" in err


def test_every_missing_tool_has_a_package() -> None:
    assert set(stream_bench.PACKAGES) == {
        "iperf3",
        "nginx",
        "nginx's stream module",
        "curl",
        "openssl",
    }
    assert stream_bench.PACKAGES["nginx's stream module"] == ["libnginx-mod-stream"]
