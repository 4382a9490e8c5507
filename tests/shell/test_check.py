"""``ingressd check``: the report core, its renderings, the command line, a cluster read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import REPO_ROOT, manifest_text
from k8s_objects import (
    LEGACY_CLASS_ANNOTATION,
    endpoint_slice,
    ingress,
    ingress_class,
    path,
    rule,
    service,
    snapshot,
    tls_entry,
    tls_secret,
)
from kube_apiserver import KubeApiServer

from ingressd import cli
from ingressd.check import CheckReport, IngressReport, check, render_json, render_text
from ingressd.model.objects import Obj
from ingressd.policy.annotations import parse_policy
from ingressd.routing.build import BuildOptions

NGINX = "nginx.ingress.kubernetes.io/"
OURS = "ingressd.io/"
OPTS = BuildOptions()
OTHER_CONTROLLER = "k8s.io/ingress-nginx"


def report_of(*objs: Obj, with_class: bool = True, **kwargs: Any) -> CheckReport:
    if with_class:
        objs = (ingress_class(), *objs)
    return check(snapshot(*objs), OPTS, **kwargs)


def only(report: CheckReport, name: str = "web") -> IngressReport:
    [found] = [i for i in report.ingresses if i.name == name]
    return found


def web(name: str = "web", host: str = "a.test", service_name: str = "web", **kw: Any) -> Obj:
    return ingress(name, [rule(host, path("/", service_name))], **kw)


def squeezed(text: str) -> str:
    """Text with runs of spaces (column padding) as one space."""
    return " ".join(text.split())


def healthy(name: str = "web") -> list[Obj]:
    return [service(name), endpoint_slice(name, ["10.0.0.1", "10.0.0.2"])]


# -- annotations ---------------------------------------------------------------------------


def test_each_annotation_is_classified_with_the_builders_own_message() -> None:
    annotations = {
        NGINX + "rewrite-target": "/$1",
        NGINX + "ssl-redirect": "maybe",
        NGINX + "configuration-snippet": "more_set_headers 'X: y'; gzip on;",
        NGINX + "ssl-passthrough": "http://auth",
        NGINX + "proxy-body-size": "8m",
        OURS + "proxy-body-size": "16m",
        "example.com/unrelated": "x",
    }
    report = report_of(web(annotations=annotations), *healthy())
    verdicts = {a.key: (a.status, a.reason) for a in only(report).annotations}
    _, messages = parse_policy(annotations)
    assert verdicts == {
        NGINX + "rewrite-target": ("supported", ""),
        NGINX + "ssl-redirect": ("invalid", messages[2]),
        NGINX + "configuration-snippet": ("refused", messages[0]),
        NGINX + "ssl-passthrough": ("unsupported", messages[1]),
        OURS + "proxy-body-size": ("supported", ""),
        NGINX + "proxy-body-size": (
            "overridden",
            f"annotation {NGINX}proxy-body-size is overridden by {OURS}proxy-body-size",
        ),
    }
    assert messages[0].endswith(
        "is refused: directive 'gzip' (line 1) is not translated; it is not applied"
    )
    assert "'maybe' is invalid" in messages[2]
    # The build reports the same messages; they are listed once, with the annotations.
    assert only(report).problems == ()
    assert report.exit_code == 1


def test_custom_errors_and_default_backend_are_supported_and_checked() -> None:
    good = {NGINX + "custom-http-errors": "404,503", NGINX + "default-backend": "web"}
    report = report_of(web(annotations=good), *healthy())
    assert [(a.status, a.reason) for a in only(report).annotations] == [("supported", "")] * 2
    assert report.exit_code == 0
    bad = {NGINX + "custom-http-errors": "200", NGINX + "default-backend": "No/Such"}
    report = report_of(web(annotations=bad), *healthy())
    assert [a.status for a in only(report).annotations] == ["invalid", "invalid"]
    assert report.exit_code == 1
    # A Service that does not exist is the Ingress's problem.
    missing = {NGINX + "default-backend": "nope"}
    report = report_of(web(annotations=missing), *healthy())
    assert [a.status for a in only(report).annotations] == ["supported"]
    assert only(report).problems == (
        "default-backend: service default/nope not found; the annotation is ignored",
    )
    assert report.exit_code == 1


def test_check_reports_a_default_backend_service_that_cannot_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "app.yaml").write_text(manifest_text([ingress_class(), web(), *healthy()]))
    code = cli.main(["check", "--manifests", str(folder), "--default-backend-service", "x/errors"])
    out = capsys.readouterr().out
    assert code == 1
    assert "--default-backend-service x/errors: service x/errors not found" in out
    with pytest.raises(SystemExit) as exited:
        cli.main(["check", "--manifests", str(folder), "--default-backend-service", "x"])
    assert exited.value.code == 2
    with pytest.raises(SystemExit) as exited:
        cli.main(["check", "--manifests", str(folder), "--custom-http-errors", "404,302"])
    assert exited.value.code == 2


def test_invalid_access_control_says_its_routes_answer_503() -> None:
    annotations = {NGINX + "allowlist-source-range": "10.0.0.0/33"}
    [verdict] = only(report_of(web(annotations=annotations), *healthy())).annotations
    assert verdict.status == "invalid"
    assert verdict.reason.endswith("its routes answer 503 until it is fixed")


@pytest.mark.parametrize(
    ("annotations", "exit_code"),
    [
        ({}, 0),
        ({NGINX + "rewrite-target": "/"}, 0),
        # ignored, and said so: not a failure
        ({NGINX + "ssl-passthrough": "http://auth"}, 0),
        ({NGINX + "server-snippet": "x"}, 1),
        ({NGINX + "ssl-redirect": "yes"}, 1),
        # refused because it cannot apply to ingressd: listed, not a failure...
        ({NGINX + "http2-push-preload": "true"}, 0),
        ({NGINX + "enable-modsecurity": "true", NGINX + "enable-owasp-core-rules": "true"}, 0),
        ({NGINX + "modsecurity-snippet": "SecRuleEngine DetectionOnly"}, 0),
        # ...unless serving without it would open what ingress-nginx guards
        ({NGINX + "modsecurity-snippet": "SecRuleEngine On"}, 1),
    ],
)
def test_exit_code_follows_the_annotations(annotations: dict[str, str], exit_code: int) -> None:
    assert report_of(web(annotations=annotations), *healthy()).exit_code == exit_code


def test_what_cannot_apply_counts_as_refused() -> None:
    annotations = {NGINX + "http2-push-preload": "true", NGINX + "fastcgi-index": "index.php"}
    report = report_of(web(annotations=annotations), *healthy())
    assert report.summary()["annotations"]["refused"] == 2
    assert all("refused" in v.reason for v in only(report).annotations)


def test_snippets_are_shown_translated_directive_by_directive_or_refused() -> None:
    annotations = {
        NGINX + "configuration-snippet": 'more_set_headers "Request-Id: $req_id";\n'
        'if ($http_x_block ~* "yes") { return 403; }\n',
        NGINX + "server-snippet": "proxy_set_header X-A 1;\ngzip on;\n",
    }
    report = report_of(web(annotations=annotations), *healthy())
    text = render_text(report)
    assert (
        "  nginx.ingress.kubernetes.io/configuration-snippet translated:\n"
        "    more_set_headers (line 1): response header Request-Id: $req_id (every status; "
        "replaces any other)\n"
        "    return (line 2): when $http_x_block ~* 'yes': answers 403\n"
    ) in text
    assert (
        "refused    annotation nginx.ingress.kubernetes.io/server-snippet is refused: "
        "directive 'gzip' (line 2) is not translated; it is not applied"
    ) in text
    assert "server-snippet translated" not in text
    assert report.exit_code == 1
    doc = json.loads(render_json(report))
    assert doc["ingresses"][0]["snippets"] == [
        [
            NGINX + "configuration-snippet",
            [
                "more_set_headers (line 1): response header Request-Id: $req_id (every status; "
                "replaces any other)",
                "return (line 2): when $http_x_block ~* 'yes': answers 403",
            ],
        ]
    ]


def test_refused_annotation_of_another_controllers_ingress_fails_the_check_too() -> None:
    annotations = {NGINX + "configuration-snippet": "deny all;"}
    report = report_of(
        ingress_class("nginx", OTHER_CONTROLLER),
        web(class_name="nginx", annotations=annotations),
        *healthy(),
    )
    assert report.exit_code == 1
    text = render_text(report)
    assert "1 Ingress belongs to other classes (--all shows them; 1 with refused or invalid" in text
    assert "configuration-snippet" not in text
    assert "configuration-snippet is refused" in render_text(report, show_all=True)


# -- ownership -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("classes", "ingress_kwargs", "ours", "via", "text"),
    [
        pytest.param(
            [ingress_class()],
            {},
            True,
            "ingressClassName",
            "ours via ingressClassName 'ingressd' (controller ingressd.io/ingress-controller)",
            id="class-name",
        ),
        pytest.param(
            [ingress_class(default=True)],
            {"class_name": None},
            True,
            "default-class",
            "ours via default IngressClass 'ingressd'",
            id="default-class",
        ),
        pytest.param(
            [],
            {"class_name": None, "annotations": {LEGACY_CLASS_ANNOTATION: "ingressd"}},
            True,
            "legacy-annotation",
            "ours via kubernetes.io/ingress.class annotation 'ingressd'",
            id="legacy",
        ),
        pytest.param(
            [ingress_class("nginx", OTHER_CONTROLLER)],
            {"class_name": "nginx"},
            False,
            "other-controller",
            f"other controller {OTHER_CONTROLLER} (IngressClass 'nginx')",
            id="other-controller",
        ),
        pytest.param(
            [ingress_class("nginx", OTHER_CONTROLLER, default=True)],
            {"class_name": None},
            False,
            "other-controller",
            f"other controller {OTHER_CONTROLLER} (default IngressClass 'nginx')",
            id="other-default",
        ),
        pytest.param(
            [ingress_class()],
            {"class_name": None, "annotations": {LEGACY_CLASS_ANNOTATION: "nginx"}},
            False,
            "other-class",
            "other class 'nginx' (kubernetes.io/ingress.class annotation)",
            id="legacy-other",
        ),
        pytest.param(
            [ingress_class()],
            {"class_name": "missing"},
            False,
            "missing-class",
            "IngressClass 'missing' does not exist",
            id="missing-class",
        ),
        pytest.param(
            [ingress_class()],
            {"class_name": None},
            False,
            "no-class",
            "no class: no ingressClassName, no kubernetes.io/ingress.class annotation and no "
            "default IngressClass",
            id="no-class",
        ),
    ],
)
def test_ownership(
    classes: list[Obj], ingress_kwargs: dict[str, Any], ours: bool, via: str, text: str
) -> None:
    report = report_of(*classes, web(**ingress_kwargs), *healthy(), with_class=False)
    owner = only(report).owner
    assert (owner.ours, owner.via, owner.text) == (ours, via, text)
    # Only ours are detailed by default; the rest are counted.
    assert [i.name for i in report.ingresses if i.relevant] == (["web"] if ours else [])
    assert report.exit_code == 0


def test_our_class_missing_is_a_problem_and_shown() -> None:
    report = report_of(web(), *healthy(), with_class=False)
    ing = only(report)
    assert ing.owner.via == "missing-class" and not ing.ours
    assert ing.problems == ("IngressClass 'ingressd' does not exist",)
    assert ing.relevant
    assert report.exit_code == 1


# -- routes, TLS, problems -----------------------------------------------------------------


def test_routes_say_whether_their_service_resolves() -> None:
    report = report_of(
        ingress(
            "web",
            [
                rule(
                    "a.test",
                    path("/", "web"),
                    path("/gone", "gone"),
                    path("/port", "web", 81),
                    path("/idle", "idle", path_type="Exact"),
                )
            ],
            default_backend={"service": {"name": "web"}},
        ),
        *healthy(),
        service("idle"),
        endpoint_slice("idle", [("10.0.0.9", False)]),
    )
    routes = {(r.path, r.default_backend): r for r in only(report).routes}
    default = routes[("", True)]
    assert (
        default.backend == "" and default.error == "backend.service.port needs a number or a name"
    )
    ok = routes[("/", False)]
    assert (ok.host, ok.path_type, ok.backend, ok.service_found, ok.ready_endpoints) == (
        "a.test",
        "Prefix",
        "web:80",
        True,
        2,
    )
    assert ok.resolves
    gone = routes[("/gone", False)]
    assert (gone.service_found, gone.error) == (False, "service default/gone not found")
    port = routes[("/port", False)]
    assert (port.service_found, port.error) == (True, "service default/web has no port 81")
    idle = routes[("/idle", False)]
    assert (idle.error, idle.ready_endpoints, idle.resolves) == (None, 0, False)
    assert only(report).problems == (
        "defaultBackend: backend.service.port needs a number or a name",
        "service default/gone not found; its routes answer 503",
        "service default/web has no port 81; its routes answer 503",
    )
    text = squeezed(render_text(report))
    assert "a.test /gone Prefix -> gone:80 answers 503: service default/gone not found" in text
    assert "a.test /idle Exact -> idle:80 no ready endpoints (answers 503)" in text
    assert "a.test / Prefix -> web:80 ok, 2 ready endpoints" in text
    assert "(default backend) -> ? invalid backend: backend.service.port needs" in text


def test_conflicts_are_attributed_to_the_ingress_that_loses() -> None:
    report = report_of(
        web("old", created=1),
        web("new", created=2),
        *healthy(),
    )
    assert only(report, "old").problems == ()
    assert only(report, "new").problems == (
        "path '/' (Prefix) on host a.test is already served by older Ingress default/old; "
        "this rule is ignored",
    )
    assert report.exit_code == 1


def test_bad_regex_is_reported_on_its_ingress() -> None:
    annotations = {NGINX + "use-regex": "true"}
    bad = ingress("bad", [rule("a.test", path("/(", "web"))], annotations=annotations)
    report = report_of(bad, *healthy())
    problem, nothing_left = only(report, "bad").problems
    assert problem.startswith(
        "rules[0].http.paths[0].path '/(' is not a regular expression RE2 can run ("
    )
    assert problem.endswith("; path skipped")
    assert nothing_left == "has no usable rules and no defaultBackend"


def test_tls_entries_are_checked() -> None:
    report = report_of(
        ingress(
            "web",
            [rule("a.test", path("/", "web")), rule("b.test", path("/", "web"))],
            tls=[
                tls_entry(["a.test"], "a-tls"),
                tls_entry(None, "a-tls"),  # no hosts: the rule hosts
                tls_entry(["c.test"], "missing"),
                tls_entry(["d.test"], None),
            ],
        ),
        *healthy(),
        tls_secret("a-tls", ["a.test"]),
    )
    tls = only(report).tls
    assert [(t.hosts, t.secret, t.found, t.error, t.uncovered, t.ok) for t in tls] == [
        (("a.test",), "a-tls", True, None, (), True),
        # Without hosts, as in ingress-nginx: the rule hosts its certificate covers;
        # b.test quietly keeps the default certificate, which is no fault.
        (("a.test", "b.test"), "a-tls", True, None, ("b.test",), True),
        (("c.test",), "missing", False, "TLS Secret default/missing not found", (), False),
        (("d.test",), "", False, None, (), True),
    ]
    text = render_text(report)
    assert "a.test: Secret a-tls valid, covers every host" in text
    assert (
        "no hosts listed, so the rule hosts a.test, b.test: Secret a-tls valid, serves a.test; "
        "b.test get the default certificate" in text
    )
    assert "d.test: no secretName, the default certificate" in text
    assert not any("b.test" in p for p in only(report).problems), only(report).problems


@pytest.mark.parametrize("secret", ["present", "missing"])
def test_tls_entry_without_hosts_on_an_ingress_without_hosts(secret: str) -> None:
    # ingress-nginx's docs/examples/static-ip: a host-less rule and a TLS entry
    # without hosts. The rule is the catch-all server, which keeps the default
    # certificate (controller.go), so the entry applies to no host.
    objs = [tls_secret("tls", ["a.test"])] if secret == "present" else []
    report = report_of(
        ingress("web", [rule(None, path("/", "web"))], tls=[tls_entry(None, "tls")]),
        *healthy(),
        *objs,
    )
    text = render_text(report)
    assert "hosts  use" not in text  # was: a blank where the hosts go
    head = "no hosts listed, and the rules name none: "
    if secret == "present":
        assert head + "Secret tls valid, but it applies to no host" in text
        assert only(report).problems == ()
    else:
        assert head + "TLS Secret default/tls not found; it would apply to no host anyway" in text
        assert only(report).problems == (
            "TLS Secret default/tls not found; the entry lists no hosts and the rules name "
            "none: it applies to no host",
        )


def test_expired_certificate_is_invalid() -> None:
    report = report_of(
        ingress("web", [rule("a.test", path("/", "web"))], tls=[tls_entry(["a.test"], "a")]),
        *healthy(),
        tls_secret("a", ["a.test"]),
        now=4e9,  # the year 2096
    )
    [tls] = only(report).tls
    assert tls.found and tls.error is not None and "certificate expired" in tls.error


# -- renderings ----------------------------------------------------------------------------


def mixed_report() -> CheckReport:
    return report_of(
        ingress_class("nginx", OTHER_CONTROLLER),
        web(annotations={NGINX + "ssl-passthrough": "x"}),
        web("theirs", host="b.test", class_name="nginx"),
        *healthy(),
    )


def test_json_shape() -> None:
    report = mixed_report()
    doc = json.loads(render_json(report))
    assert set(doc) == {"notes", "ingresses", "problems", "streams", "configmap", "summary"}
    [ing] = doc["ingresses"]
    assert set(ing) == {
        "namespace",
        "name",
        "source",
        "owner",
        "ours",
        "routes",
        "tls",
        "annotations",
        "problems",
        "passthrough",
        "snippets",
    }
    assert ing["owner"] == {
        "ours": True,
        "via": "ingressClassName",
        "text": "ours via ingressClassName 'ingressd' (controller ingressd.io/ingress-controller)",
        "class_name": "ingressd",
    }
    assert ing["routes"] == [
        {
            "host": "a.test",
            "path": "/",
            "path_type": "Prefix",
            "backend": "web:80",
            "service_found": True,
            "ready_endpoints": 2,
            "error": None,
            "default_backend": False,
            "resolves": True,
        }
    ]
    assert ing["annotations"] == [
        {
            "key": NGINX + "ssl-passthrough",
            "value": "x",
            "status": "unsupported",
            "reason": (
                f"annotation {NGINX}ssl-passthrough is not supported by ingressd and is ignored"
            ),
        }
    ]
    assert doc["summary"] == {
        "ingresses": 2,
        "ours": 1,
        "other": 1,
        "routes": 1,
        "unresolved_routes": 0,
        "annotations": {
            "supported": 0,
            "unsupported": 1,
            "refused": 0,
            "invalid": 0,
            "overridden": 0,
        },
        "configmap": {
            "supported": 0,
            "unsupported": 0,
            "refused": 0,
            "invalid": 0,
            "overridden": 0,
        },
        "problems": 0,
        "exit_code": 0,
    }
    everything = json.loads(render_json(report, show_all=True))
    assert [i["name"] for i in everything["ingresses"]] == ["theirs", "web"]


def test_text_shows_ours_and_counts_the_others() -> None:
    text = render_text(mixed_report())
    assert text.startswith("Ingress default/web\n  class: ours via ingressClassName 'ingressd'")
    unsupported = f"    unsupported  annotation {NGINX}ssl-passthrough is not"
    assert unsupported in text
    assert "theirs" not in text
    assert "1 Ingress belongs to other classes (--all shows them)\n" in text
    assert text.endswith(
        "Summary: 2 Ingresses (1 served by ingressd, 1 other), 1 route (0 not resolving), "
        "0 problems\nAnnotations: 1 unsupported; exit code 0\n"
    )
    everything = render_text(mixed_report(), show_all=True)
    assert f"Ingress default/theirs\n  class: other controller {OTHER_CONTROLLER}" in everything
    assert "belong" not in everything


# -- the command line ----------------------------------------------------------------------


def write_manifests(folder: Path, files: dict[str, list[Obj] | str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_text(content if isinstance(content, str) else manifest_text(content))
    return folder


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    return write_manifests(tmp_path / "clean", {"app.yaml": [ingress_class(), web(), *healthy()]})


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ingressd", "check", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def test_cli_on_a_clean_folder(clean: Path) -> None:
    result = run_check("--manifests", str(clean))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Ingress default/web  ({clean / 'app.yaml'})\n")
    assert "    a.test  /  Prefix  -> web:80  ok, 2 ready endpoints\n" in result.stdout
    assert "exit code 0" in result.stdout
    # Manifest mode does not pay for the Kubernetes client (see ingressd/kube/config.py).
    imported = [line for line in result.stderr.splitlines() if "import time:" in line]
    assert imported and not [line for line in imported if "kubernetes" in line]


def test_cli_json_and_exit_code_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_manifests(
        tmp_path / "m",
        {
            "app.yaml": [
                ingress_class(),
                web(annotations={NGINX + "configuration-snippet": "x"}),
                *healthy(),
            ]
        },
    )
    assert cli.main(["check", "--manifests", str(folder), "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["annotations"]["refused"] == 1
    assert doc["summary"]["exit_code"] == 1
    assert doc["ingresses"][0]["source"] == str(folder / "app.yaml")


def test_cli_reports_files_that_do_not_parse(
    clean: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (clean / "broken.yaml").write_text("kind: [unclosed\n")
    assert cli.main(["check", "--manifests", str(clean)]) == 1
    out = capsys.readouterr().out
    assert f"Input problems:\n  {clean / 'broken.yaml'}: document 1: YAML syntax error" in out


def test_cli_unreadable_input_is_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli.main(["check", "--manifests", str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    assert cli.main(["check"]) == 2
    assert f"kubeconfig {tmp_path / 'no-kubeconfig'} (KUBECONFIG): no such file" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit) as exc:
        cli.main(["check", "--format", "xml"])
    assert exc.value.code == 2


# -- against an API server -----------------------------------------------------------------


@pytest.fixture
def apiserver() -> Iterator[KubeApiServer]:
    server = KubeApiServer(tokens={"token-a": "checker"})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def seed_cluster(server: KubeApiServer) -> None:
    for obj in [
        ingress_class(),
        ingress_class("nginx", OTHER_CONTROLLER),
        web(annotations={NGINX + "rewrite-target": "/", NGINX + "server-snippet": "x"}),
        web("theirs", host="b.test", class_name="nginx"),
        web("team", host="t.test", namespace="team-a"),
        web("team2", host="t2.test", namespace="team-a"),
        web("team3", host="t3.test", namespace="team-a"),
        *healthy(),
    ]:
        server.apply(obj)


def test_cluster_is_listed_once_without_watching_or_writing(
    tmp_path: Path, apiserver: KubeApiServer
) -> None:
    seed_cluster(apiserver)
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "kubeconfig", "token-a")
    result = run_check("--kubeconfig", str(kubeconfig), "--format", "json")
    assert result.returncode == 1, result.stderr
    doc = json.loads(result.stdout)
    shown = {(i["namespace"], i["name"]): i for i in doc["ingresses"]}
    assert set(shown) == {
        ("default", "web"),
        ("team-a", "team"),
        ("team-a", "team2"),
        ("team-a", "team3"),
    }
    web_report = shown[("default", "web")]
    assert [(a["key"], a["status"]) for a in web_report["annotations"]] == [
        (NGINX + "rewrite-target", "supported"),
        (NGINX + "server-snippet", "refused"),
    ]
    assert web_report["routes"][0]["ready_endpoints"] == 2
    team = shown[("team-a", "team")]
    assert team["routes"][0]["error"] == "service team-a/web not found"
    assert doc["summary"]["ingresses"] == 5 and doc["summary"]["other"] == 1
    # One LIST per kind (Secrets: TLS only), no watch, nothing written.
    requests = apiserver.requests
    assert {r.method for r in requests} == {"GET"}
    assert not [r for r in requests if r.query.get("watch") in ("true", "1")]
    assert sorted(r.path for r in requests) == [
        "/api/v1/secrets",
        "/api/v1/services",
        "/apis/discovery.k8s.io/v1/endpointslices",
        "/apis/networking.k8s.io/v1/ingressclasses",
        "/apis/networking.k8s.io/v1/ingresses",
    ]
    [secrets] = [r for r in requests if r.path.endswith("/secrets")]
    assert secrets.query["fieldSelector"] == "type=kubernetes.io/tls"


def test_cluster_namespace_and_pages(
    tmp_path: Path,
    apiserver: KubeApiServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ingressd.sources import kube

    seed_cluster(apiserver)
    monkeypatch.setattr(kube, "LIST_PAGE", 2)
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "kubeconfig", "token-a")
    args = ["check", "--kubeconfig", str(kubeconfig), "--watch-namespace", "team-a", "--all"]
    assert cli.main([*args, "--format", "json"]) == 1  # team-a has no Services
    doc = json.loads(capsys.readouterr().out)
    assert [i["name"] for i in doc["ingresses"]] == ["team", "team2", "team3"]
    ingress_lists = [r for r in apiserver.requests if r.path.endswith("/ingresses")]
    assert {r.path for r in ingress_lists} == {
        "/apis/networking.k8s.io/v1/namespaces/team-a/ingresses"
    }
    assert len(ingress_lists) == 2 and ingress_lists[1].query.get("continue")
    # A token the server does not know: the input cannot be read.
    bad = apiserver.write_kubeconfig(tmp_path / "bad", "token-unknown")
    assert cli.main(["check", "--kubeconfig", str(bad)]) == 2
    assert "cannot list IngressClass objects: HTTP 401" in capsys.readouterr().err


# -- the migration recipe: checking Ingresses of another class ---------------------------------

RECIPE = ["--controller-name", OTHER_CONTROLLER, "--ingress-class", "nginx"]
REALWORLD = REPO_ROOT / "tests" / "data" / "realworld" / "manifests"


def app_folder(tmp_path: Path, *extra: Obj) -> Path:
    """Application manifests as they are kept: Ingresses and Services, no IngressClass."""
    objs = [
        web("a", host="a.test", class_name="nginx"),
        web("b", host="b.test", class_name="nginx"),
        web(
            "legacy", host="c.test", class_name=None, annotations={LEGACY_CLASS_ANNOTATION: "nginx"}
        ),
        web("other", host="d.test", class_name="traefik"),
        *healthy(),
        *extra,
    ]
    (tmp_path / "app.yaml").write_text(manifest_text(objs))
    return tmp_path


def check_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = cli.main(["check", *argv, "--format", "json", "--all"])
    return code, json.loads(capsys.readouterr().out)


def test_the_recipe_takes_the_named_class_as_ours_when_the_folder_lacks_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = app_folder(tmp_path)
    code, doc = check_json(capsys, "--manifests", str(folder), *RECIPE)
    owners = {i["name"]: i["owner"]["via"] for i in doc["ingresses"]}
    assert owners == {
        "a": "ingressClassName",
        "b": "ingressClassName",
        "legacy": "legacy-annotation",
        "other": "missing-class",  # only the named class is taken
    }
    assert doc["notes"] == [
        f"IngressClass 'nginx' is not in {folder}: taken as ingressd's "
        f"(controller {OTHER_CONTROLLER}), as --ingress-class names it"
    ]
    assert not any("does not exist" in p for i in doc["ingresses"] for p in i["problems"])
    assert code == 0
    # Said once in the text report too, before the Ingresses.
    cli.main(["check", "--manifests", str(folder), *RECIPE])
    text = capsys.readouterr().out
    assert text.count("IngressClass 'nginx' is not in") == 1
    assert text.startswith("Note: IngressClass 'nginx'")


def test_an_ingressclass_in_the_folder_wins_over_the_implied_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = app_folder(tmp_path, ingress_class("nginx", "example.com/someone-else"))
    _, doc = check_json(capsys, "--manifests", str(folder), *RECIPE)
    assert doc["notes"] == []
    owners = {i["name"]: i["owner"]["via"] for i in doc["ingresses"]}
    assert owners["a"] == "other-controller"


def test_without_ingress_class_nothing_is_implied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The default class must exist, as in a cluster: only a class named on the
    # command line says which class this ingressd is installed as.
    folder = app_folder(tmp_path, web("ours", host="e.test"))
    code, doc = check_json(
        capsys, "--manifests", str(folder), "--controller-name", OTHER_CONTROLLER
    )
    assert doc["notes"] == []
    [ours] = [i for i in doc["ingresses"] if i["name"] == "ours"]
    assert ours["problems"] == ["IngressClass 'ingressd' does not exist"]
    assert code == 1


def test_the_cluster_decides_which_classes_exist(
    apiserver: KubeApiServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for obj in [web("a", host="a.test", class_name="nginx"), *healthy()]:
        apiserver.create(obj)
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "kubeconfig", "token-a")
    _, doc = check_json(capsys, "--kubeconfig", str(kubeconfig), *RECIPE)
    assert doc["notes"] == []
    assert [i["owner"]["text"] for i in doc["ingresses"]] == ["IngressClass 'nginx' does not exist"]


def _declared_owner(path: Path) -> str | None:
    """The class a real-world file's Ingress asks for, read independently of ingressd."""
    import yaml

    doc = yaml.safe_load(path.read_text())
    legacy = ((doc.get("metadata") or {}).get("annotations") or {}).get(LEGACY_CLASS_ANNOTATION)
    return legacy or (doc.get("spec") or {}).get("ingressClassName")


def test_the_recipe_on_real_world_manifests(capsys: pytest.CaptureFixture[str]) -> None:
    # tests/data/realworld/manifests: Ingresses from public repositories (SOURCES.md).
    _, doc = check_json(capsys, "--manifests", str(REALWORLD), *RECIPE)
    files = sorted(REALWORLD.glob("*.yaml"))
    wanted = {str(f) for f in files if _declared_owner(f) == "nginx"}
    ours = {i["source"] for i in doc["ingresses"] if i["ours"]}
    # Files defining one Ingress twice count once (the first file in path order wins).
    assert ours <= wanted and len(ours) >= 30, (len(ours), len(wanted))
    missing_nginx = [
        i["name"]
        for i in doc["ingresses"]
        if i["owner"]["text"] == "IngressClass 'nginx' does not exist"
    ]
    assert missing_nginx == []
    assert len(doc["notes"]) == 1
    tls_lines = [p for i in doc["ingresses"] for p in i["problems"] if "TLS Secret" in p]
    assert tls_lines and not any("hosts  use" in p for p in tls_lines)


def test_passthrough_says_what_does_not_apply() -> None:
    objs = (
        ingress(
            "argocd",
            [rule("argocd.test", path("/", "argocd"), path("/api", "api"))],
            annotations={NGINX + "ssl-passthrough": "true", NGINX + "rewrite-target": "/x"},
        ),
        service("argocd"),
        endpoint_slice("argocd", ["10.0.0.1"]),
        service("api"),
        endpoint_slice("api", ["10.0.0.2"]),
        web("wild", host="*.apps.test", annotations={NGINX + "ssl-passthrough": "true"}),
    )
    # Without the flag, as in ingress-nginx, the annotation does nothing.
    off = only(report_of(*objs), "argocd")
    [verdict] = [a for a in off.annotations if a.key == NGINX + "ssl-passthrough"]
    assert verdict.status == "unsupported" and off.passthrough == ()
    on = report_of(*objs, passthrough=True)
    argocd = only(on, "argocd")
    [verdict] = [a for a in argocd.annotations if a.key == NGINX + "ssl-passthrough"]
    assert verdict.status == "supported"
    assert argocd.passthrough == (
        "path argocd.test/api does not apply to TLS connections: passthrough routes by host "
        "only, to the backend of /",
        f"annotation {NGINX}rewrite-target does not apply to TLS connections: they are "
        "passed through unread (it still applies to plain HTTP)",
    )
    assert not argocd.failing
    text = squeezed(render_text(on))
    assert "ssl-passthrough (TLS connections go to the backend untouched):" in text
    # A wildcard host cannot be matched by SNI exactly (tcpproxy compares names).
    assert any("cannot be matched by SNI exactly" in p for p in only(on, "wild").problems)


def test_stream_services_are_checked() -> None:
    from ingressd.stream.services import ConfigMapRef

    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "tcp-services", "namespace": "ingressd"},
        "data": {"9000": "default/db:5432:PROXY", "9001": "default/nope:1", "x": "bad"},
    }
    refs = (
        ConfigMapRef.parse("TCP", "--tcp-services-configmap", "ingressd/tcp-services"),
        ConfigMapRef.parse("UDP", "--udp-services-configmap", "ingressd/udp-services"),
    )
    report = report_of(
        cm, service("db", [5432]), endpoint_slice("db", ["10.0.0.9"], 5432), streams=refs
    )
    assert [(s.listen, s.backend, s.ready_endpoints, s.error) for s in report.streams] == [
        ("tcp/9000", "default/db:5432", 1, None),
        ("tcp/9001", "default/nope:1", 0, "service default/nope not found"),
    ]
    assert report.streams[0].decode_proxy and not report.streams[0].encode_proxy
    problems = "\n".join(report.problems)
    assert "TCP port 'x': not a port number (1-65535)" in problems
    assert "tcp/9001: service default/nope not found" in problems
    assert "ConfigMap ingressd/udp-services: not found (--udp-services-configmap)" in problems
    assert report.exit_code == 1
    text = squeezed(render_text(report))
    assert "TCP/UDP services: tcp/9000 -> default/db:5432 1 ready endpoint (PROXY in)" in text
    assert json.loads(render_json(report))["streams"][0]["listen"] == "tcp/9000"


def test_stream_entries_on_serves_own_ports_are_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """serve refuses a TCP/UDP services entry on one of its own ports; check
    says so too, for the ports serve would be given."""
    folder = tmp_path / "m"
    folder.mkdir()
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "tcp-services", "namespace": "ingressd"},
        "data": {"8080": "default/db:5432", "9000": "default/db:5432"},
    }
    objs = [cm, service("db", [5432]), endpoint_slice("db", ["10.0.0.9"], 5432)]
    (folder / "all.yaml").write_text(manifest_text(objs))
    base = [
        "check",
        "--manifests",
        str(folder),
        "--tcp-services-configmap",
        "ingressd/tcp-services",
    ]
    assert cli.main(base) == 1
    out = capsys.readouterr().out
    assert "TCP port '8080': port 8080 is the controller's own (--http-port)" in out
    assert out.count("is the controller's own") == 1
    # Told the ports serve listens on, check judges by those.
    assert cli.main([*base, "--http-port", "8081", "--admin-port", "9000"]) == 1
    out = capsys.readouterr().out
    assert "TCP port '9000': port 9000 is the controller's own (--admin-port)" in out
    assert out.count("is the controller's own") == 1
    assert cli.main([*base, "--http-port", "8081"]) == 0


def test_cluster_check_reads_the_configmaps_of_headers_that_are_named(
    tmp_path: Path, apiserver: KubeApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """After the lists, check reads by name the ConfigMaps of headers the Ingresses
    and the controller ConfigMap name (and no other), and judges them as serve does."""

    def configmap(namespace: str, name: str, data: dict[str, str]) -> Obj:
        meta = {"name": name, "namespace": namespace}
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}

    for obj in [
        ingress_class(),
        *healthy(),
        web("team", annotations={NGINX + "custom-headers": "team"}),
        web("gone", host="g.test", annotations={NGINX + "custom-headers": "gone"}),
        configmap("default", "team", {"X-Team": "a"}),
        configmap("default", "unrelated", {"X-Team": "b"}),
        configmap(
            "ingressd",
            "controller",
            {"add-headers": "ingressd/response", "global-allowed-response-headers": "X-Team"},
        ),
        configmap("ingressd", "response", {"Connection": "close"}),
    ]:
        apiserver.apply(obj)
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "kubeconfig", "token-a")
    args = ["check", "--kubeconfig", str(kubeconfig), "--configmap", "ingressd/controller"]
    assert cli.main([*args, "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    shown = {i["name"]: i["problems"] for i in doc["ingresses"]}
    assert shown["team"] == []
    assert shown["gone"] == [
        "custom-headers ConfigMap default/gone not found; its routes answer 503"
    ]
    assert any("header 'Connection' is left out" in p for p in doc["problems"])
    asked = {
        (r.path, r.query.get("fieldSelector"))
        for r in apiserver.requests
        if r.path.endswith("/configmaps")
    }
    assert asked == {
        ("/api/v1/namespaces/ingressd/configmaps", "metadata.name=controller"),
        ("/api/v1/namespaces/ingressd/configmaps", "metadata.name=response"),
        ("/api/v1/namespaces/default/configmaps", "metadata.name=team"),
        ("/api/v1/namespaces/default/configmaps", "metadata.name=gone"),
    }
