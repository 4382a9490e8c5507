"""Finding the cluster as kubectl does, and the command line of cluster mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_helpers import REPO_ROOT, Ingressd, free_port

from ingressd.cli import config_from, main, parser
from ingressd.kube.config import KubeConfigError
from ingressd.kube.kubeclient import connect


def kubeconfig(tmp_path: Path, namespace: str | None = "shop") -> Path:
    context: dict = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "secret-token"}}],
        "contexts": [{"name": "ctx", "context": context}],
        "current-context": "ctx",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


AMBIENT = ("KUBECONFIG", "POD_NAMESPACE", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")


@pytest.fixture(autouse=True)
def no_ambient_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing from the machine running the tests may leak in."""
    for var in AMBIENT:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_explicit_kubeconfig_gives_server_token_and_namespace(tmp_path: Path) -> None:
    cluster = connect(kubeconfig(tmp_path))
    try:
        conf = cluster.api.configuration
        assert conf.host == "https://127.0.0.1:6443"
        assert conf.api_key["BearerToken"] == "Bearer secret-token"
        assert cluster.namespace == "shop"
        assert conf.retries is False  # our backoff, not urllib3's, handles outages
    finally:
        cluster.close()


def test_namespace_defaults_and_pod_namespace_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = connect(kubeconfig(tmp_path, namespace=None))
    assert cluster.namespace == "default"
    cluster.close()
    monkeypatch.setenv("POD_NAMESPACE", "ingressd")
    cluster = connect(kubeconfig(tmp_path))
    assert cluster.namespace == "ingressd"
    cluster.close()


def test_kubeconfig_env_is_used_like_kubectl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path)))
    cluster = connect()
    assert cluster.api.configuration.host == "https://127.0.0.1:6443"
    cluster.close()


def test_kubeconfig_env_merges_files_as_kubectl_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first file that sets current-context decides; missing files are skipped.
    first = tmp_path / "first"
    first.write_text(yaml.safe_dump({"current-context": "ctx"}))
    second = kubeconfig(tmp_path)
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'gone'}:{first}:{second}")
    cluster = connect()
    try:
        assert cluster.server == "https://127.0.0.1:6443"
        assert cluster.namespace == "shop"
        assert "context ctx" in cluster.describe()
    finally:
        cluster.close()


def _valid() -> dict[str, Any]:
    return yaml.safe_load(kubeconfig_text())


def kubeconfig_text() -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "ctx",
        }
    )


def _without_current_context() -> str:
    doc = _valid()
    del doc["current-context"]
    return yaml.safe_dump(doc)


def _with(**changes: Any) -> str:
    doc = _valid()
    doc.update(changes)
    return yaml.safe_dump(doc)


LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)

# name -> (file content, None: no file; what the one line must say)
BAD_KUBECONFIGS: dict[str, tuple[str | bytes | None, str]] = {
    "missing": (None, "no such file"),
    "a directory": ("<dir>", "is a directory, not a file"),
    "empty": ("", "is empty"),
    "not UTF-8": (b"\xff\xfe\x00garbage", "not UTF-8 text"),
    "not YAML": (
        "{{{ not: [yaml\n",
        "not YAML: line 2, column 1: did not find expected ',' or ']'",
    ),
    "a YAML list": ("- a\n- b\n", "not a kubeconfig (a YAML list, not one mapping"),
    "another kind": ("apiVersion: v1\nkind: Service\n", "not a kubeconfig (kind 'Service'"),
    "a mapping of something else": ("foo: bar\n", "not a kubeconfig (none of clusters"),
    "clusters not a list": (_with(clusters={"c": 1}), "clusters is not a list"),
    "no current context": (_without_current_context(), "no current-context is set"),
    "unknown current context": (
        _with(**{"current-context": "nope"}),
        "current-context 'nope' is not among its contexts",
    ),
    "unknown cluster": (
        _with(contexts=[{"name": "ctx", "context": {"cluster": "gone", "user": "u"}}]),
        "context 'ctx' names cluster 'gone', which is not defined",
    ),
    "unknown user": (
        _with(contexts=[{"name": "ctx", "context": {"cluster": "c", "user": "gone"}}]),
        "context 'ctx' names user 'gone', which is not defined",
    ),
    "no server": (_with(clusters=[{"name": "c", "cluster": {}}]), "cluster 'c' has no server"),
    "an alias bomb": (LAUGHS, "not YAML: excessive aliasing"),
}


@pytest.mark.parametrize("command", ["serve", "check"])
@pytest.mark.parametrize("case", list(BAD_KUBECONFIGS))
def test_an_unusable_kubeconfig_is_one_line_naming_the_file_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, case: str
) -> None:
    content, reason = BAD_KUBECONFIGS[case]
    path = tmp_path / "kubeconfig"
    if content == "<dir>":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    argv = [command, "--kubeconfig", str(path)]
    code, err = run_command(argv, tmp_path, capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"ingressd {command}: kubeconfig {path}: {reason}"), err


def run_command(argv: list[str], cwd: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """check in this process; serve as the real command, bounded in time: were it
    to accept what it is given, it would serve (on free ports) until stopped."""
    if argv[0] == "check":
        return main(argv), capsys.readouterr().err
    argv = [*argv, "--address", "127.0.0.1", "--workers", "1"]
    for flag in ("--http-port", "--https-port", "--admin-port"):
        argv += [flag, str(free_port())]
    env = {k: v for k, v in os.environ.items() if k not in AMBIENT}
    env.update(HOME=str(cwd / "home"), PYTHONPATH=str(REPO_ROOT))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ingressd", *argv],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=cwd,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"ingressd {' '.join(argv)} did not exit: it started serving"
        ) from None
    return proc.returncode, proc.stderr


@pytest.mark.parametrize("command", ["serve", "check"])
def test_in_cluster_outside_a_pod_says_so(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    code, err = run_command([command, "--in-cluster"], tmp_path, capsys)
    assert code == 2
    assert err == (
        f"ingressd {command}: --in-cluster: not running in a Pod (KUBERNETES_SERVICE_HOST "
        "and KUBERNETES_SERVICE_PORT are not set)\n"
    )
    # The environment of a Pod, but no service account mounted.
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(KubeConfigError) as exc:
        connect(in_cluster=True)
    assert str(exc.value).startswith(
        "--in-cluster: the service account in /var/run/secrets/kubernetes.io/serviceaccount "
        "is not usable"
    )


@pytest.mark.parametrize("command", ["serve", "check"])
def test_no_cluster_at_all_points_at_manifests_and_demo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    code, err = run_command([command], tmp_path, capsys)
    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith(f"ingressd {command}: no Kubernetes cluster configured: no --kubeconfig")
    assert f"ingressd {command} --manifests DIR" in err
    assert ("ingressd demo" in err) == (command == "serve")


def test_check_against_an_unreachable_server_names_it_and_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nothing listens there
    path = tmp_path / "kubeconfig"
    path.write_text(kubeconfig_text().replace("127.0.0.1:6443", f"127.0.0.1:{port}"))
    assert main(["check", "--kubeconfig", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(
        f"ingressd check: the API server https://127.0.0.1:{port} (kubeconfig {path}, "
        f"context ctx): cannot list IngressClass objects: cannot connect to 127.0.0.1:{port}: "
    ), err


def test_serve_keeps_trying_an_unreachable_server_and_says_where(tmp_path: Path) -> None:
    # A controller outlives its API server's outages (and may start during one):
    # not ready, retrying, and each warning says which address did not answer.
    port = free_port()
    path = tmp_path / "kubeconfig"
    path.write_text(kubeconfig_text().replace("127.0.0.1:6443", f"127.0.0.1:{port}"))
    proc = Ingressd(None, tmp_path / "ingressd.log", extra_args=["--kubeconfig", str(path)])
    try:
        proc.start(until="/healthz")
        proc.wait_for_log(f"reading the API server https://127.0.0.1:{port} (kubeconfig {path}")
        line = proc.wait_for_log("watch failed")
        assert f"cannot connect to 127.0.0.1:{port}" in line, line
        assert proc.admin_status("/readyz") == 503
    finally:
        assert proc.stop() == 0


def test_serve_without_manifests_is_cluster_mode() -> None:
    args = parser().parse_args(
        [
            "serve",
            "--kubeconfig",
            "/k",
            "--watch-namespace",
            "shop",
            "--publish-status-address",
            "192.0.2.1, lb.example.com",
            "--election-id",
            "my-lease",
        ]
    )
    config = config_from(args)
    assert config.manifests is None and config.cluster is not None
    assert config.cluster.kubeconfig == Path("/k")
    assert config.cluster.watch_namespace == "shop"
    assert config.cluster.publish_status_address == ("192.0.2.1", "lb.example.com")
    assert config.cluster.election_id == "my-lease"
    assert config.cluster.lease_duration == 15.0  # client-go's default


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--manifests", ".", "--kubeconfig", "/k"],
        ["serve", "--kubeconfig", "/k", "--in-cluster"],
        ["serve", "--publish-service", "a/b", "--publish-status-address", "1.2.3.4"],
    ],
)
def test_conflicting_options_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(argv)
    assert exc.value.code == 2
