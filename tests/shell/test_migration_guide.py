"""docs/migrating.md's `ingressd check` commands, run as written against a cluster.

The cluster is tests/kube_apiserver.py, the fake API server that speaks the real wire
protocol, holding what an ingress-nginx install has: the IngressClass `nginx` of
controller `k8s.io/ingress-nginx`, Ingresses of that class (one by the legacy class
annotation), and the controller ConfigMap `ingress-nginx/ingress-nginx-controller`.
Each command is taken from the guide's text (only the kubeconfig path and the
installed `ingressd` differ), so a guide whose commands stop working fails here.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import REPO_ROOT
from k8s_objects import (
    LEGACY_CLASS_ANNOTATION,
    endpoint_slice,
    ingress,
    ingress_class,
    path,
    rule,
    service,
)
from kube_apiserver import KubeApiServer

from ingressd import cli

GUIDE = REPO_ROOT / "docs" / "migrating.md"
NGINX = "nginx.ingress.kubernetes.io/"
CONFIGMAP = {
    "proxy-body-size": "8m",
    "use-gzip": "true",
    "enable-brotli": "true",
    "server-snippet": "return 200;",
}


def shell_blocks() -> list[str]:
    """The guide's ```sh blocks, continuation lines joined."""
    return [
        re.sub(r"\\\n\s*", " ", block)
        for block in re.findall(r"```sh\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    ]


def guide_commands() -> list[list[str]]:
    """Every `.venv/bin/ingressd check ...` of the guide, continuation lines joined,
    up to a pipe: the arguments after `ingressd`."""
    commands = []
    for block in shell_blocks():
        for line in block.splitlines():
            if line.startswith(".venv/bin/ingressd check"):
                commands.append(shlex.split(line.split(" | ")[0])[1:])
    return commands


@pytest.fixture
def server() -> Iterator[KubeApiServer]:
    server = KubeApiServer(tokens={"token-a": "admin"})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(tmp_path: Path, server: KubeApiServer) -> Path:
    for obj in [
        ingress_class("nginx", "k8s.io/ingress-nginx"),
        service("web"),
        endpoint_slice("web", ["10.0.0.1", "10.0.0.2"]),
        ingress(
            "shop",
            [rule("shop.example.com", path("/", "web"))],
            annotations={
                NGINX + "proxy-body-size": "8m",
                NGINX + "ssl-passthrough": "x",
            },
            class_name="nginx",
        ),
        ingress(
            "legacy",
            [rule("old.example.com", path("/", "web"))],
            annotations={LEGACY_CLASS_ANNOTATION: "nginx"},
            class_name=None,
        ),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "ingress-nginx-controller", "namespace": "ingress-nginx"},
            "data": CONFIGMAP,
        },
    ]:
        server.apply(obj)
    return server.write_kubeconfig(tmp_path / "kubeconfig", "token-a")


def run(args: list[str], kubeconfig: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    args = [str(kubeconfig) if a == "~/.kube/config" else a for a in args]
    if "--format" not in args:
        args += ["--format", "json"]
    code = cli.main(args)
    doc = json.loads(capsys.readouterr().out)
    doc["exit_code"] = code
    return doc


def test_the_guide_has_its_three_check_commands() -> None:
    commands = guide_commands()
    assert len(commands) == 3
    assert all(c[:3] == ["check", "--kubeconfig", "~/.kube/config"] for c in commands)


def test_step_1_inventory_reports_ingress_nginx_s_ingresses_and_configmap(
    cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = guide_commands()[0]
    doc = run(inventory, cluster, capsys)
    shown = {i["name"]: i for i in doc["ingresses"]}
    assert set(shown) == {"shop", "legacy"}  # by ingressClassName and by the legacy annotation
    assert all(i["ours"] for i in shown.values())
    assert shown["shop"]["routes"][0]["ready_endpoints"] == 2
    statuses = {a["key"]: a["status"] for a in shown["shop"]["annotations"]}
    assert statuses == {
        NGINX + "proxy-body-size": "supported",
        NGINX + "ssl-passthrough": "unsupported",
    }
    keys = {k["key"]: k["status"] for k in doc["configmap"]}
    assert keys == {
        "proxy-body-size": "supported",
        "use-gzip": "unsupported",
        "enable-brotli": "unsupported",
        "server-snippet": "refused",
    }
    assert doc["exit_code"] == 1  # the refused key: "0 means nothing refused, invalid or broken"


def test_step_2_copies_only_the_supported_keys(
    cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the guide's jq filter keeps: the keys the check reports as supported."""
    copy = guide_commands()[2]
    assert "--configmap" in copy and copy[-2:] == ["--format", "json"]
    doc = run(copy, cluster, capsys)
    supported = {k["key"]: k["value"] for k in doc["configmap"] if k["status"] == "supported"}
    assert supported == {"proxy-body-size": "8m"}


def test_step_2_pipeline_writes_the_patch_kubectl_applies(cluster: Path, tmp_path: Path) -> None:
    """The guide's whole pipeline, ingressd check | jq > file, run by a shell as written."""
    [block] = [b for b in shell_blocks() if "> ingressd-controller.json" in b]
    pipeline = block.splitlines()[0]
    assert pipeline.endswith("> ingressd-controller.json")
    pipeline = pipeline.replace(".venv/bin/ingressd", f"{sys.executable} -m ingressd")
    pipeline = pipeline.replace("~/.kube/config", str(cluster))
    # Not under pipefail, as a reader's shell: check exits 1 for the refused key it reports.
    subprocess.run(["bash", "-c", pipeline], cwd=tmp_path, check=True)
    patch = json.loads((tmp_path / "ingressd-controller.json").read_text())
    assert patch == {"data": {"proxy-body-size": "8m"}}


def test_step_3_copy_of_an_ingress_under_class_ingressd(server: KubeApiServer) -> None:
    """The guide's jq filter, on the Ingress as the API server returns it."""
    [block] = [b for b in shell_blocks() if "-ingressd" in b and "jq " in b]
    lexer = shlex.shlex(block, posix=True, punctuation_chars="|")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token == "|":
            commands.append([])
        else:
            commands[-1].append(token)
    assert [c[0] for c in commands] == ["kubectl", "jq", "kubectl"]
    jq = commands[1]
    server.apply(
        ingress(
            "web",
            [rule("shop.example.com", path("/", "web"))],
            annotations={LEGACY_CLASS_ANNOTATION: "nginx", NGINX + "proxy-body-size": "8m"},
            namespace="shop",
            class_name=None,
        )
    )
    original = server.get("Ingress", "shop", "web")
    assert original is not None and original["metadata"].get("uid")
    done = subprocess.run(jq, input=json.dumps(original), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    copy = json.loads(done.stdout)
    assert copy["metadata"]["name"] == "web-ingressd"
    assert copy["metadata"]["namespace"] == "shop"
    assert copy["spec"]["ingressClassName"] == "ingressd"
    assert copy["spec"]["rules"] == original["spec"]["rules"]
    assert copy["metadata"]["annotations"] == {NGINX + "proxy-body-size": "8m"}
    for field in ("uid", "resourceVersion", "creationTimestamp", "managedFields"):
        assert field not in copy["metadata"]
    assert "status" not in copy
