"""``ingressd check`` on upstream-hash-by, server-alias and conditional SameSite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from e2e_helpers import manifest_text
from k8s_objects import endpoint_slice, ingress, ingress_class, path, rule, service

from ingressd import cli

NGINX = "nginx.ingress.kubernetes.io/"


def test_check_reports_them_supported_and_invalid_values_invalid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = {
        NGINX + "upstream-hash-by": "$host$request_uri",
        NGINX + "upstream-hash-by-subset": "true",
        NGINX + "upstream-hash-by-subset-size": "3",
        NGINX + "server-alias": "b.test",
        NGINX + "affinity": "cookie",
        NGINX + "session-cookie-samesite": "None",
        NGINX + "session-cookie-conditional-samesite-none": "true",
    }
    bad = {
        NGINX + "upstream-hash-by": "$binary_remote_addr",
        NGINX + "upstream-hash-by-subset-size": "-1",
        NGINX + "server-alias": "b.test;evil",
        NGINX + "session-cookie-conditional-samesite-none": "maybe",
    }
    objs = [
        ingress_class(),
        service("web"),
        endpoint_slice("web", ["10.0.0.1"]),
        ingress("good", [rule("a.test", path("/", "web"))], annotations=good),
        ingress("bad", [rule("c.test", path("/", "web"))], annotations=bad),
        ingress(
            "taken",
            [rule("d.test", path("/", "web"))],
            annotations={NGINX + "server-alias": "a.test"},
        ),
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
    assert (
        "$binary_remote_addr is not a variable ingressd knows"
        in reasons[NGINX + "upstream-hash-by"]
    )
    # An alias that is another Ingress's host is a problem of the Ingress naming it.
    assert by_name["taken"]["problems"] == [
        "server-alias a.test of host d.test is ignored: an Ingress has a rule for a.test, "
        "which serves it"
    ]
    # Both balance the route: the cookie wins, as balancer.lua decides, and check says so.
    assert by_name["good"]["problems"] == [
        "upstream-hash-by: no effect beside affinity: cookie, which wins over it"
    ]
    assert code == 1
