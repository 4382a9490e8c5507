"""Finding the cluster as kubectl does, and the command line of cluster mode."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ingressd.cli import config_from, main, parser
from ingressd.kubeclient import KubeConfigError, connect


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


@pytest.fixture(autouse=True)
def no_ambient_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing from the machine running the tests may leak in."""
    for var in ("KUBECONFIG", "POD_NAMESPACE", "KUBERNETES_SERVICE_HOST"):
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


@pytest.mark.parametrize("in_cluster", [False, True])
def test_no_configuration_is_a_clear_error(tmp_path: Path, in_cluster: bool) -> None:
    with pytest.raises(KubeConfigError, match="no usable Kubernetes configuration"):
        connect(tmp_path / "missing" if not in_cluster else None, in_cluster=in_cluster)


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


def test_unusable_kubeconfig_exits_1_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["serve", "--kubeconfig", str(tmp_path / "nope"), "--address", "127.0.0.1"])
    assert code == 1
    assert "no usable Kubernetes configuration" in capsys.readouterr().err
