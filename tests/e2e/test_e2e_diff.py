"""End to end: ``ingressd diff`` between live servers that differ in planted ways.

Three ingressd processes in front of the same echo upstreams: ``target`` serves
the manifests ``diff`` reads, ``twin`` the very same manifests, ``changed`` a
copy with a few annotations changed (a redirect code, a rewrite target, the CORS
origin, a canary weight, a Basic auth realm). The diff of ``changed`` against
``target`` must report exactly those differences, and the diff of ``twin``
against ``target`` none. Each ingressd has ports of its own, so every
ssl-redirect's Location carries a different port: the normalisation is tested
on every TLS host's plain probe.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_helpers import (
    LOCALHOST,
    NGINX,
    NGINX_HTTP_BASE,
    REPO_ROOT,
    BackgroundLoop,
    EchoServers,
    Ingressd,
    echo_backend,
    free_port,
    start_nginx,
)
from k8s_objects import certificate, ingress, ingress_class, path, rule, tls_entry, tls_secret
from kube_apiserver import KubeApiServer

from ingressd import cli
from ingressd.model.objects import Obj

A = "nginx.ingress.kubernetes.io/"
REALWORLD = REPO_ROOT.parent / "shared" / "realworld" / "manifests"
CORS_FIELDS = {
    "header access-control-allow-origin",
    "header access-control-allow-credentials",
    "header access-control-allow-methods",
    "header access-control-allow-headers",
    "header access-control-max-age",
}


def annotated(name: str, host: str, *paths: dict, created: int = 1, **annotations: str) -> Obj:
    return ingress(
        name,
        [rule(host, *(paths or (path("/", "web"),)))],
        annotations={A + k.replace("_", "-"): v for k, v in annotations.items()},
        created=created,
    )


def manifests(echo: EchoServers, *, changed: bool) -> list[Obj]:
    """The served objects; ``changed``: with the planted differences."""

    def pick(same: str, other: str) -> str:
        return other if changed else same

    return [
        ingress_class(),
        *echo_backend("web", echo["web"]),
        *echo_backend("api", echo["api"]),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "htpasswd", "namespace": "default"},
            "type": "Opaque",
            "stringData": {"auth": "alice:{PLAIN}s3cret\n"},
        },
        # Planted: the redirect code.
        annotated(
            "redir",
            "redir.test",
            permanent_redirect="https://example.com/new",
            permanent_redirect_code=pick("301", "308"),
        ),
        # Planted: the rewrite target.
        annotated(
            "rw",
            "rw.test",
            path("/app(/|$)(.*)", "web", path_type="ImplementationSpecific"),
            use_regex="true",
            rewrite_target=pick("/$2", "/v2/$2"),
        ),
        # Planted: the allowed origin (the one the probes send is missing).
        annotated(
            "cors",
            "cors.test",
            enable_cors="true",
            cors_allow_origin=pick("https://a.example", "https://b.example"),
        ),
        # Planted: the canary weight (0: never; 100: always).
        annotated("can", "can.test"),
        ingress(
            "can-canary",
            [rule("can.test", path("/", "api"))],
            annotations={A + "canary": "true", A + "canary-weight": pick("0", "100")},
            created=2,
        ),
        # Planted: the Basic auth realm (WWW-Authenticate).
        annotated(
            "auth",
            "auth.test",
            auth_type="basic",
            auth_secret="htpasswd",
            auth_realm=pick("Staff", "Admins"),
        ),
        # Not changed: TLS (ssl-redirect to each side's own port), Exact and Prefix
        # paths, app-root, a wildcard host, a canary by header and cookie.
        ingress(
            "same",
            [
                rule(
                    "same.test",
                    path("/", "web"),
                    path("/exact", "api", path_type="Exact"),
                    path("/api/", "api"),
                )
            ],
            tls=[tls_entry(["same.test"], None)],
            annotations={A + "app-root": "/home"},
            created=1,
        ),
        annotated("wild", "*.wild.test"),
        annotated("hdr", "hdr.test"),
        ingress(
            "hdr-canary",
            [rule("hdr.test", path("/", "api"))],
            annotations={
                A + "canary": "true",
                A + "canary-by-header": "X-Canary",
                A + "canary-by-cookie": "canary",
            },
            created=2,
        ),
    ]


def start(workdir: Path, objs: list[Obj], *args: str) -> Ingressd:
    proc = Ingressd(workdir / "manifests", workdir / "ingressd.log", extra_args=args)
    proc.update({"all.yaml": objs})
    return proc.start()


def address(proc: Ingressd) -> str:
    return f"{LOCALHOST}:{proc.http_port},{proc.https_port}"


def diff(manifest_dir: Path, reference: str, target: str, *args: str) -> tuple[int, str, str]:
    """``ingressd diff`` as a user runs it: its exit code, stdout and stderr."""
    cmd = [sys.executable, "-m", "ingressd", "diff", "--manifests", str(manifest_dir)]
    cmd += ["--reference", reference, "--target", target, "--rate", "1000", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    return done.returncode, done.stdout, done.stderr


def found(report: dict[str, Any]) -> set[tuple[str, str]]:
    return {(i["ingress"], d["field"]) for i in report["ingresses"] for d in i["differences"]}


@pytest.fixture(scope="module")
def servers(
    upstream_loop: BackgroundLoop, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Ingressd]]:
    echo = EchoServers(upstream_loop, ["web", "api"])
    started: dict[str, Ingressd] = {}
    try:
        for name, changed in (("target", False), ("twin", False), ("changed", True)):
            workdir = tmp_path_factory.mktemp(f"e2e-diff-{name}")
            started[name] = start(workdir, manifests(echo, changed=changed))
        yield started
    finally:
        for proc in started.values():
            proc.stop()
        echo.close()


def test_identical_servers_show_no_difference(servers: dict[str, Ingressd]) -> None:
    target = servers["target"]
    code, out, err = diff(
        target.manifest_dir,  # type: ignore[arg-type]
        address(servers["twin"]),
        address(target),
        "--format",
        "json",
    )
    report = json.loads(out)
    assert found(report) == set(), out
    summary = report["summary"]
    assert code == 0, err
    assert summary["errors"] == 0
    assert summary["probes_sent"] > 40  # every route shape above was probed
    assert summary["methods_sent"] == ["GET", "OPTIONS"]
    assert summary["methods_not_sent"]["POST"] > 0


@pytest.fixture(scope="module")
def planted(servers: dict[str, Ingressd]) -> tuple[int, dict[str, Any], str]:
    """The JSON diff of ``changed`` (the reference) against ``target``, run once."""
    target = servers["target"]
    code, out, err = diff(
        target.manifest_dir,  # type: ignore[arg-type]
        address(servers["changed"]),
        address(target),
        "--format",
        "json",
    )
    return code, json.loads(out), err


def test_the_planted_differences_and_nothing_else(
    planted: tuple[int, dict[str, Any], str],
) -> None:
    code, report, err = planted
    assert code == 1, err
    fields = found(report)
    # The CORS headers, and the preflight's status: ingress-nginx answers an allowed
    # origin's preflight itself (204) and passes any other to the upstream (200).
    cors = {f for i, f in fields if i == "default/cors"}
    assert "header access-control-allow-origin" in cors and "status" in cors, cors
    assert cors <= CORS_FIELDS | {"status"}, cors
    assert fields - {("default/cors", f) for f in cors} == {
        ("default/redir", "status"),
        ("default/rw", "upstream path"),
        ("default/can", "backend"),
        ("default/auth", "header www-authenticate"),
    }
    by_name = {i["ingress"]: i for i in report["ingresses"]}
    rewrite = by_name["default/rw"]["differences"]
    assert {(d["reference"], d["ingressd"]) for d in rewrite} >= {("/v2/", "/")}
    redirect = by_name["default/redir"]["differences"][0]
    assert (redirect["reference"], redirect["ingressd"]) == ("308", "301")
    assert report["summary"]["ingresses_differing"] == 5
    assert report["summary"]["ingresses_not_probed"] == []


def test_the_curl_command_line_shows_the_difference(
    planted: tuple[int, dict[str, Any], str],
) -> None:
    """The report's command lines are ready to run: against each side they give
    that side's answer."""
    report = planted[1]
    redirect = next(i for i in report["ingresses"] if i["ingress"] == "default/redir")
    first = redirect["differences"][0]
    for side, status in (("curl_reference", "308"), ("curl_ingressd", "301")):
        done = subprocess.run(
            shlex.split(first[side]), capture_output=True, text=True, timeout=10, check=True
        )
        assert done.stdout.split()[1] == status, done.stdout


def test_text_report_one_line_per_difference(servers: dict[str, Ingressd]) -> None:
    target = servers["target"]
    code, out, _ = diff(
        target.manifest_dir,  # type: ignore[arg-type]
        address(servers["changed"]),
        address(target),
    )
    assert code == 1
    lines = out.splitlines()
    assert "Ingress default/redir: " in "\n".join(lines)
    status = [line for line in lines if line.startswith("  status: reference '308'")]
    assert status and all("curl " in line and "redir.test" in line for line in status)
    summary = lines.index(next(line for line in lines if line.startswith("Summary: ")))
    assert "methods sent: GET, OPTIONS" in lines[summary]
    assert lines[summary + 1].endswith("exit code 1")
    assert summary + 2 == len(lines)  # every served Ingress was probed: no "Not probed" line


def test_bounds_and_unsafe_methods(servers: dict[str, Ingressd]) -> None:
    target = servers["target"]
    code, out, _ = diff(
        target.manifest_dir,  # type: ignore[arg-type]
        address(servers["twin"]),
        address(target),
        "--format",
        "json",
        "--max-probes",
        "7",
        "--unsafe-methods",
    )
    summary = json.loads(out)["summary"]
    assert code == 0
    assert summary["probes_sent"] == 7
    assert summary["probes_over_bound"] == summary["probes_generated"] - 7
    assert summary["methods_not_sent"] == {}


def test_unreachable_reference_is_exit_code_2(servers: dict[str, Ingressd]) -> None:
    target = servers["target"]
    port = free_port()
    code, out, err = diff(
        target.manifest_dir,  # type: ignore[arg-type]
        f"{LOCALHOST}:{port},{port}",
        address(target),
    )
    assert code == 2 and out == ""
    assert "the reference cannot be reached" in err and str(port) in err


def test_bad_address_is_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["diff", "--reference", "127.0.0.1:8080", "--target", "127.0.0.1:80"])
    assert exc.value.code == 2
    assert "give the HTTPS port too" in capsys.readouterr().err


def test_cluster_mode_reads_the_objects_once_and_writes_nothing(
    servers: dict[str, Ingressd], tmp_path: Path
) -> None:
    """The same objects from an API server (the repo's fake, real wire protocol)
    instead of a folder: read with one LIST per kind, nothing watched or written."""
    target = servers["target"]
    objs = list(yaml.safe_load_all((target.manifest_dir / "all.yaml").read_text()))  # type: ignore[operator]
    with KubeApiServer(tokens={"token-a": "differ"}) as apiserver:
        for obj in objs:
            apiserver.apply(obj)
        kubeconfig = apiserver.write_kubeconfig(tmp_path / "kubeconfig", "token-a")
        cmd = [sys.executable, "-m", "ingressd", "diff", "--kubeconfig", str(kubeconfig)]
        cmd += ["--reference", address(servers["changed"]), "--target", address(target)]
        cmd += ["--rate", "1000", "--format", "json"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
        requests = apiserver.requests
    assert done.returncode == 1, done.stderr
    assert ("default/redir", "status") in found(json.loads(done.stdout))
    assert {r.method for r in requests} == {"GET"}
    assert not [r for r in requests if r.query.get("watch") in ("true", "1")]


@pytest.mark.skipif(not REALWORLD.is_dir(), reason="shared/realworld is not beside the repo")
def test_realworld_manifests_against_two_ingressd(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """67 real Ingresses (their Services absent: every upstream answers 503): the
    diff between two ingressd serving them runs through, within its bound, with no
    difference and no error."""
    procs = []
    try:
        for name in ("a", "b"):
            workdir = tmp_path_factory.mktemp(f"e2e-diff-real-{name}")
            proc = Ingressd(
                REALWORLD, workdir / "ingressd.log", extra_args=["--ingress-class", "nginx"]
            )
            procs.append(proc.start())
        started = time.monotonic()
        code, out, err = diff(
            REALWORLD,
            address(procs[0]),
            address(procs[1]),
            "--ingress-class",
            "nginx",
            "--format",
            "json",
            "--max-probes",
            "1000",
        )
        summary = json.loads(out)["summary"]
        assert code == 0, (err, [i for i in json.loads(out)["ingresses"] if i["differences"]])
        assert summary["errors"] == 0 and summary["differences"] == 0
        assert 0 < summary["probes_sent"] <= 1000
        print(f"realworld: {summary} in {time.monotonic() - started:.1f} s")
    finally:
        for proc in procs:
            proc.stop()


# -- against a real nginx configured as ingress-nginx's template would be --------------------

NGINX_CONF = """\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 64; }}
http {{
{base}  proxy_http_version 1.1;
  proxy_set_header Host $host;
  # nginx.tmpl: HSTS on TLS requests of servers with a certificate of their own.
  map $scheme $hsts {{ https "max-age=31536000; includeSubDomains"; default ""; }}
  # lua_ingress.lua: the HTTPS redirect drops one trailing "/" of the request URI
  # ("/" included) unless preserve-trailing-slash.
  map $request_uri $redirect_uri {{ "~^(?<kept>.*)/$" $kept; default $request_uri; }}
  # ingress-nginx's catch-all server: no rule names the host.
  server {{
    listen 127.0.0.1:{http} default_server;
    listen 127.0.0.1:{https} ssl default_server;
    server_name _;
    return 404;
  }}
  server {{
    listen 127.0.0.1:{http};
    listen 127.0.0.1:{https} ssl;
    server_name nx.test;
    add_header Strict-Transport-Security $hsts always;
    # lua_ingress.lua: a TLS host's plain requests get 308 to https (port 443: no port).
    if ($scheme = http) {{ return 308 https://$host$redirect_uri; }}
    location / {{ proxy_pass http://127.0.0.1:{web}; }}
    # Planted: the manifests send Exact /exact to web.
    location = /exact {{ proxy_pass http://127.0.0.1:{api}; }}
    # controller/location.go: Prefix /api is "/api/" and "= /api".
    location /api/ {{ proxy_pass http://127.0.0.1:{api}; }}
    location = /api {{ proxy_pass http://127.0.0.1:{api}; }}
  }}
  server {{
    listen 127.0.0.1:{http};
    listen 127.0.0.1:{https} ssl;
    server_name r.test;
    # Planted: the manifests say permanent-redirect (301).
    return 302 https://example.com/new;
  }}
}}
"""


def test_against_nginx_configured_like_ingress_nginx(
    upstream_loop: BackgroundLoop, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A hand-made nginx.conf, as ingress-nginx's template renders two Ingresses, with
    two planted differences: the diff finds those and nothing else, also without
    --ignore-header: the pages each proxy makes itself (the 404 of no route, the
    ssl-redirect's 308) are nginx's built-in pages in both (proxy/pages.py)."""
    if NGINX is None:
        pytest.skip("nginx is not installed (scripts/test.sh installs nginx-light)")
    echo = EchoServers(upstream_loop, ["web", "api"])
    pem = certificate("nx.test")
    prefix = tmp_path_factory.mktemp("e2e-diff-nginx")
    (prefix / "tls.crt").write_bytes(pem[0])
    (prefix / "tls.key").write_bytes(pem[1])
    http_port, https_port = free_port(), free_port()
    objs = [
        ingress_class(),
        *echo_backend("web", echo["web"]),
        *echo_backend("api", echo["api"]),
        tls_secret("nx-tls", ["nx.test"], pem=pem),
        ingress(
            "nx",
            [
                rule(
                    "nx.test",
                    path("/", "web"),
                    path("/exact", "web", path_type="Exact"),
                    path("/api", "api"),
                )
            ],
            tls=[tls_entry(["nx.test"], "nx-tls")],
        ),
        annotated("r", "r.test", permanent_redirect="https://example.com/new"),
    ]
    with contextlib.ExitStack() as stack:
        stack.callback(echo.close)
        conf = NGINX_CONF.format(
            prefix=prefix,
            base=NGINX_HTTP_BASE.format(prefix=prefix),
            http=http_port,
            https=https_port,
            web=echo["web"],
            api=echo["api"],
        )
        start_nginx(stack, prefix, conf, https_port)
        proc = start(tmp_path_factory.mktemp("e2e-diff-nginx-ingressd"), objs)
        stack.callback(proc.stop)
        reference = f"{LOCALHOST}:{http_port},{https_port}"
        code, out, err = diff(
            proc.manifest_dir,  # type: ignore[arg-type]
            reference,
            address(proc),
            "--format",
            "json",
            "--ignore-header",
            "content-type",
        )
        assert code == 1, (err, out)
        report = json.loads(out)
        assert found(report) == {("default/nx", "backend"), ("default/r", "status")}, out
        nx = next(i for i in report["ingresses"] if i["ingress"] == "default/nx")
        assert {d["request"]["path"] for d in nx["differences"]} == {"/exact"}
        # Without --ignore-header: the pages each proxy makes itself are the same.
        code, out, _ = diff(proc.manifest_dir, reference, address(proc), "--format", "json")  # type: ignore[arg-type]
        extra = found(json.loads(out)) - {("default/nx", "backend"), ("default/r", "status")}
        assert extra == set(), out
