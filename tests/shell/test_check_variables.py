"""``ingressd check`` on annotations whose values nginx evaluates variables in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from e2e_helpers import manifest_text
from k8s_objects import endpoint_slice, ingress, ingress_class, path, rule, service

from ingressd import cli

NGINX = "nginx.ingress.kubernetes.io/"


def test_check_names_the_variable_it_cannot_render(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = {
        NGINX + "permanent-redirect": "https://new.example.com$request_uri",
        NGINX + "app-root": "/app/$arg_lang",
    }
    bad = {
        NGINX + "temporal-redirect": "https://login.test/?next=$scheme://$host$request_urii",
        NGINX + "app-root": "/app/$document_root",
        NGINX + "x-forwarded-prefix": "/$http_",
    }
    objs = [
        ingress_class(),
        service("web"),
        endpoint_slice("web", ["10.0.0.1"]),
        ingress("good", [rule("a.test", path("/", "web"))], annotations=good),
        ingress("bad", [rule("b.test", path("/", "web"))], annotations=bad),
    ]
    (tmp_path / "all.yaml").write_text(manifest_text(objs))
    code = cli.main(["check", "--manifests", str(tmp_path), "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    by_name = {i["name"]: i for i in doc["ingresses"]}
    assert {a["key"]: a["status"] for a in by_name["good"]["annotations"]} == dict.fromkeys(
        good, "supported"
    )
    assert {a["key"]: a["status"] for a in by_name["bad"]["annotations"]} == dict.fromkeys(
        bad, "invalid"
    )
    reasons = {a["key"]: a["reason"] for a in by_name["bad"]["annotations"]}
    assert "$request_urii is not a variable ingressd knows" in reasons[NGINX + "temporal-redirect"]
    assert "$document_root is not a variable ingressd knows" in reasons[NGINX + "app-root"]
    assert "$http_ names no http" in reasons[NGINX + "x-forwarded-prefix"]
    assert code == 1
