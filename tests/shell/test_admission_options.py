"""``serve``'s admission webhook options (ingressd/admission_options.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingressd.cli import EXIT_USAGE, cluster_config, main, parser
from ingressd.kube.config import AdmissionConfig


def test_off_by_default() -> None:
    assert cluster_config(parser().parse_args(["serve"])).admission is None


def test_the_options_make_the_config() -> None:
    args = parser().parse_args(
        [
            "serve",
            "--address",
            "10.0.0.1",
            "--admission-port",
            "8444",
            "--admission-deny",
            "refused,conflict",
            "--admission-timeout",
            "0.5",
            "--admission-service",
            "hook",
            "--admission-secret",
            "hook-cert",
            "--admission-webhook",
            "hook-config",
            "--admission-cert-days",
            "30",
            "--admission-cert-refresh",
            "5",
        ]
    )
    assert cluster_config(args).admission == AdmissionConfig(
        port=8444,
        address="10.0.0.1",
        service="hook",
        secret="hook-cert",
        webhook="hook-config",
        deny=frozenset({"refused", "conflict"}),
        budget=0.5,
        cert_days=30.0,
        cert_refresh=5.0,
    )


@pytest.mark.parametrize(
    "bad",
    [
        ["--admission-port", "0"],
        ["--admission-port", "70000"],
        ["--admission-deny", "bogus"],
        ["--admission-timeout", "-1"],
        ["--admission-secret", "Not_A_Name"],
        ["--admission-service", "-x"],
    ],
)
def test_bad_values_are_usage_errors(bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(["serve", *bad])
    assert exc.value.code == EXIT_USAGE
    assert bad[0] in capsys.readouterr().err


def test_manifest_mode_has_no_webhook(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--manifests", str(tmp_path), "--admission-port", "8444"]) == EXIT_USAGE
    assert "--admission-port needs cluster mode" in capsys.readouterr().err
