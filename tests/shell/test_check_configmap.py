"""``ingressd check --configmap``: each key of the controller ConfigMap judged, as serve
judges it; and the command line's flags given explicitly win over its keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from e2e_helpers import manifest_text
from k8s_objects import endpoint_slice, ingress, ingress_class, path, rule, service, snapshot

from ingressd import cli
from ingressd.check import check, render_json, render_text
from ingressd.control.controller import settings_for
from ingressd.model.objects import Obj
from ingressd.policy.configmap import read_configmap
from ingressd.proxy.settings import ProxySettings
from ingressd.routing.build import BuildOptions

CM = ("ingressd", "controller")


def configmap(data: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CM[1], "namespace": CM[0]},
        "data": data,
    }


def objects(data: dict[str, str]) -> list[Obj]:
    return [
        ingress_class(),
        service("web"),
        endpoint_slice("web", ["10.0.0.1"]),
        ingress("web", [rule("a.test", path("/", "web"))]),
        configmap(data),
    ]


def test_each_key_is_shown_with_its_status() -> None:
    data = {
        "hsts-max-age": "60",
        "proxy-body-size": "bad",
        "use-gzip": "true",
        "server-snippet": "return 200;",
    }
    report = check(snapshot(*objects(data)), BuildOptions(configmap=CM))
    statuses = {k.key: k.status for k in report.configmap}
    assert statuses == {
        "hsts-max-age": "supported",
        "proxy-body-size": "invalid",
        "use-gzip": "unsupported",
        "server-snippet": "refused",
    }
    assert report.exit_code == 1  # invalid and refused fail the check, as annotations do
    # Each key's message is shown with its key, not again among the input problems.
    assert not any("proxy-body-size" in p for p in report.problems)
    text = render_text(report)
    assert "Controller ConfigMap (--configmap):" in text
    assert "hsts-max-age='60'" in text
    assert "ConfigMap keys: 1 supported, 1 unsupported, 1 refused, 1 invalid" in text
    doc = json.loads(render_json(report))
    assert {k["key"]: k["status"] for k in doc["configmap"]} == statuses
    assert doc["summary"]["configmap"]["invalid"] == 1


def test_unsupported_keys_alone_do_not_fail_the_check() -> None:
    # (global-auth-url, the one key that denied while unsupported, is supported now.)
    report = check(snapshot(*objects({"use-gzip": "true"})), BuildOptions(configmap=CM))
    assert report.exit_code == 0
    supported = check(
        snapshot(*objects({"global-auth-url": "http://a/"})), BuildOptions(configmap=CM)
    )
    assert supported.exit_code == 0


def test_a_missing_configmap_is_an_input_problem() -> None:
    report = check(snapshot(*objects({})[:-1]), BuildOptions(configmap=CM))
    assert any("not found" in p for p in report.problems)
    assert report.exit_code == 1


def test_check_command_line_reads_the_configmap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "all.yaml").write_text(manifest_text(objects({"ssl-redirect": "nope"})))
    code = cli.main(
        [
            "check",
            "--manifests",
            str(tmp_path),
            "--configmap",
            "ingressd/controller",
            "--format",
            "json",
        ]
    )
    doc = json.loads(capsys.readouterr().out)
    assert code == 1
    assert doc["configmap"][0]["status"] == "invalid"


def test_only_flags_given_on_the_command_line_are_explicit() -> None:
    argv = ["serve", "--manifests", "x", "--configmap", "ingressd/controller"]
    args = cli.parser().parse_args([*argv, "--proxy-body-size", "2m", "--keepalive-timeout=9"])
    options = cli.build_options(args)
    assert options.configmap == CM
    assert dict(options.explicit) == {
        "proxy-body-size": "--proxy-body-size",
        "keep-alive": "--keepalive-timeout",
    }
    # the defaults alone are not explicit: the ConfigMap's keys win over them
    assert cli.build_options(cli.parser().parse_args(argv)).explicit == ()


def test_flag_given_wins_else_configmap_else_default() -> None:
    data = {"proxy-body-size": "8m", "proxy-read-timeout": "120", "keep-alive": "9"}
    argv = ["serve", "--manifests", "x", "--configmap", "ingressd/controller"]
    args = cli.parser().parse_args([*argv, "--proxy-body-size", "2m"])
    base = cli.config_from(args).proxy
    config = read_configmap(data, dict(cli.build_options(args).explicit)).config
    effective = settings_for(base, config)
    assert effective.max_body_size == 2 * 1024 * 1024  # the flag given
    assert effective.read_timeout == 120.0  # the ConfigMap
    assert effective.keepalive_timeout == 9.0
    assert effective.send_timeout == 60.0  # neither: ingress-nginx's default
    assert settings_for(base, read_configmap({}).config) is base


def test_settings_for_changes_only_what_the_configmap_sets() -> None:
    base = ProxySettings(read_timeout=30.0)
    config = read_configmap({"large-client-header-buffers": "2 16k"}).config
    effective = settings_for(base, config)
    assert (effective.max_request_line, effective.max_header_bytes) == (16384, 32768)
    assert effective.read_timeout == 30.0


async def test_new_settings_reach_the_live_upstream_pool() -> None:
    from ingressd.model.table import RouteTable
    from ingressd.proxy.state import ProxyState

    state = ProxyState(RouteTable(), ProxySettings())
    assert (state.pool.max_idle, state.pool.idle_timeout, state.pool.max_requests) == (
        64,
        60.0,
        10_000,
    )
    data = {
        "upstream-keepalive-connections": "3",
        "upstream-keepalive-timeout": "7",
        "upstream-keepalive-requests": "9",
        "keep-alive-requests": "2",
    }
    state.apply_settings(settings_for(state.settings, read_configmap(data).config))
    assert (state.pool.max_idle, state.pool.idle_timeout, state.pool.max_requests) == (3, 7.0, 9)
    assert state.settings.keepalive_requests == 2
