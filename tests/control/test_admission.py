"""The admission review's verdicts (control/admission.py), as pure functions of a snapshot.

The webhook's wiring (TLS, HTTP statuses, bounds, certificates) is end to end in
tests/e2e/test_e2e_admission.py; the many cases of what denies and what warns are here.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from k8s_objects import (
    endpoint_slice,
    ingress,
    ingress_class,
    path,
    rule,
    service,
    snapshot,
)

from ingressd.control.admission import (
    DEFAULT_DENY,
    KINDS,
    MAX_WARNINGS_CHARS,
    ReviewError,
    parse_deny,
    parse_review,
    response,
    review,
)
from ingressd.model.objects import Obj
from ingressd.routing.build import BuildOptions

PREFIX = "nginx.ingress.kubernetes.io/"
OPTIONS = BuildOptions()


def admission_review(
    obj: Obj | None, operation: str = "CREATE", kind: str = "Ingress", **request: Any
) -> dict[str, Any]:
    """An AdmissionReview v1 body as the API server sends it."""
    meta = (obj or {}).get("metadata") or {}
    body: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": "networking.k8s.io", "version": "v1", "kind": kind},
        "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "ingresses"},
        "requestKind": {"group": "networking.k8s.io", "version": "v1", "kind": kind},
        "name": meta.get("name", ""),
        "namespace": meta.get("namespace", "default"),
        "operation": operation,
        "userInfo": {"username": "alice"},
        "object": obj,
        "oldObject": None,
        "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
    }
    body.update(request)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": body}


def current(*objs: Obj) -> Any:
    return snapshot(ingress_class(), service("web"), endpoint_slice("web", ["10.0.0.1"]), *objs)


def verdict(snap: Any, obj: Obj, deny: frozenset[str] = DEFAULT_DENY, **kw: Any) -> Any:
    return review(snap, OPTIONS, parse_review(admission_review(obj, **kw)), deny)


def web(name: str = "new", host: str = "a.test", p: str = "/", **kw: Any) -> Obj:
    return ingress(name, [rule(host, path(p, "web"))], **kw)


def test_a_clean_ingress_is_allowed_without_warnings() -> None:
    v = verdict(current(), web())
    assert v.allowed and v.warnings == ()


def test_a_refused_annotation_denies_with_the_reason() -> None:
    obj = web(annotations={PREFIX + "configuration-snippet": "lua_code_cache off;"})
    v = verdict(current(), obj)
    assert not v.allowed
    assert "refused: annotation nginx.ingress.kubernetes.io/configuration-snippet" in v.message


def test_an_invalid_annotation_value_denies() -> None:
    v = verdict(current(), web(annotations={PREFIX + "proxy-read-timeout": "soon"}))
    assert not v.allowed and "invalid:" in v.message and "proxy-read-timeout" in v.message


def test_an_unsupported_annotation_only_warns() -> None:
    v = verdict(current(), web(annotations={PREFIX + "enable-modsecurity": "true"}))
    assert v.allowed
    assert len(v.warnings) == 1 and v.warnings[0].startswith("ingressd: unsupported: ")


def test_a_regex_path_re2_cannot_run_denies() -> None:
    obj = web(p="/(?<=a)b", annotations={PREFIX + "use-regex": "true"})
    obj["spec"]["rules"][0]["http"]["paths"][0]["pathType"] = "ImplementationSpecific"
    v = verdict(current(), obj)
    assert not v.allowed and "regex:" in v.message and "RE2" in v.message


def test_a_path_another_ingress_has_denies_and_names_it() -> None:
    snap = current(web("old", created=1))
    v = verdict(snap, web())
    assert not v.allowed
    assert "host 'a.test' and path '/' (Prefix) are already defined in Ingress default/old" in (
        v.message
    )


def test_an_update_of_the_ingress_that_has_the_path_is_no_conflict() -> None:
    old = web("old", created=1)
    changed = web("old", created=1, annotations={PREFIX + "proxy-read-timeout": "30"})
    v = verdict(current(old), changed, operation="UPDATE")
    assert v.allowed and v.warnings == ()


def test_an_older_ingress_updated_onto_a_younger_ones_path_is_a_conflict_too() -> None:
    # ingress-nginx appends the reviewed Ingress last: whoever is older, the other keeps it.
    young = web("young", host="b.test", created=5)
    old = web("old", host="c.test", created=1)
    moved = web("old", host="b.test", created=1)
    v = verdict(current(young, old), moved, operation="UPDATE")
    assert not v.allowed and "default/young" in v.message


def test_exactly_one_canary_shares_a_path_but_two_canaries_do_not() -> None:
    snap = current(web("main", created=1))
    canary = {PREFIX + "canary": "true", PREFIX + "canary-weight": "10"}
    assert verdict(snap, web("c1", annotations=canary)).allowed
    both = current(web("main", created=1), web("c1", created=2, annotations=canary))
    v = verdict(both, web("c2", annotations=canary))
    assert not v.allowed and "default/c1" in v.message


def test_same_path_with_another_path_type_is_no_conflict() -> None:
    snap = current(web("old", created=1))
    obj = ingress("new", [rule("a.test", path("/", "web", path_type="Exact"))])
    assert verdict(snap, obj).allowed


def test_another_class_is_allowed_untouched() -> None:
    obj = web(annotations={PREFIX + "configuration-snippet": "x"}, class_name="nginx")
    snap = current(ingress_class("nginx", "k8s.io/ingress-nginx"), web("old", created=1))
    v = verdict(snap, obj)
    assert v.allowed and v.warnings == ()


def test_a_missing_service_only_warns() -> None:
    v = verdict(current(), ingress("new", [rule("a.test", path("/", "nope"))]))
    assert v.allowed
    assert any(w.startswith("ingressd: problem: ") and "nope" in w for w in v.warnings)


def test_the_deny_flag_moves_kinds_between_deny_and_warn() -> None:
    obj = web(annotations={PREFIX + "enable-modsecurity": "true"})
    assert not verdict(current(), obj, deny=parse_deny("unsupported")).allowed
    snippet = web(annotations={PREFIX + "configuration-snippet": "lua_code_cache off;"})
    v = verdict(current(), snippet, deny=parse_deny("none"))
    assert v.allowed and v.warnings[0].startswith("ingressd: refused: ")


def test_parse_deny() -> None:
    assert parse_deny("refused, conflict") == {"refused", "conflict"}
    assert parse_deny("none") == frozenset()
    assert parse_deny(",".join(KINDS)) == set(KINDS)
    for bad in ("", "bogus", "refused,nope"):
        with pytest.raises(ValueError):
            parse_deny(bad)


def test_other_operations_and_kinds_are_allowed() -> None:
    snippet = web(annotations={PREFIX + "configuration-snippet": "x"})
    assert verdict(current(), snippet, operation="DELETE").allowed
    assert verdict(current(), snippet, kind="IngressClass").allowed


def test_an_ingress_being_deleted_is_not_checked() -> None:
    obj = web(annotations={PREFIX + "configuration-snippet": "x"})
    obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert verdict(current(), obj, operation="UPDATE").allowed


def test_warnings_stay_within_the_api_servers_bounds() -> None:
    many = {f"{PREFIX}x-unknown-{i:03}": "v" * 300 for i in range(60)}
    v = verdict(current(), web(annotations=many))
    assert v.allowed
    assert all(len(w) <= 256 and w.isprintable() for w in v.warnings)
    assert sum(len(w) for w in v.warnings) <= MAX_WARNINGS_CHARS
    assert "more warnings left out" in v.warnings[-1]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ([], "not a JSON object"),
        ({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}, "not an"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "no request"),
        (
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}},
            "request.uid",
        ),
    ],
)
def test_malformed_reviews_say_what_is_wrong(body: Any, why: str) -> None:
    with pytest.raises(ReviewError, match=why):
        parse_review(body)


def test_a_create_without_an_object_is_malformed() -> None:
    body = admission_review(web())
    body["request"]["object"] = None
    with pytest.raises(ReviewError, match=r"request.object is missing for CREATE"):
        parse_review(body)


def test_the_response_echoes_the_uid_with_the_api_version_and_kind() -> None:
    body = admission_review(web(annotations={PREFIX + "configuration-snippet": "x"}))
    v = review(current(), OPTIONS, parse_review(body))
    out = response(body["request"]["uid"], v)
    assert out["apiVersion"] == "admission.k8s.io/v1" and out["kind"] == "AdmissionReview"
    assert out["response"]["uid"] == body["request"]["uid"]
    assert out["response"]["allowed"] is False
    assert out["response"]["status"]["code"] == 400
    assert "configuration-snippet" in out["response"]["status"]["message"]


def test_a_generated_name_is_reviewed_too() -> None:
    obj = web("")
    obj["metadata"]["generateName"] = "web-"
    v = verdict(current(web("old", created=1)), obj)
    assert not v.allowed and "default/old" in v.message


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"metadata": ["x"]}, "metadata is not an object"),
        ({"metadata": {"name": "x", "annotations": ["a"]}}, "annotations is not a map"),
        ({"metadata": {"name": "x", "annotations": {"a": 1}}}, "annotations is not a map"),
        ({"metadata": {"name": 5}}, "metadata.name is not a string"),
        ({"spec": "x"}, "spec is not an object"),
    ],
)
def test_an_object_of_another_shape_is_malformed(change: dict[str, Any], why: str) -> None:
    body = admission_review(web())
    body["request"]["object"].update(change)
    with pytest.raises(ReviewError, match=why):
        parse_review(body)


def test_a_server_alias_that_is_another_ingress_s_host_is_reported() -> None:
    # The other Ingress shares no host with it, only the alias: it is part of the build.
    snap = current(web("other", host="b.test", created=1))
    obj = web(annotations={PREFIX + "server-alias": "b.test"})
    v = verdict(snap, obj)
    assert v.allowed
    assert any(w.startswith("ingressd: problem: ") and "b.test" in w for w in v.warnings), v


def test_an_annotation_overridden_by_its_ingressd_twin_is_a_problem_warning() -> None:
    both = {PREFIX + "proxy-read-timeout": "30", "ingressd.io/proxy-read-timeout": "60"}
    v = verdict(current(), web(annotations=both))
    assert v.allowed
    assert v.warnings == (
        "ingressd: problem: annotation nginx.ingress.kubernetes.io/proxy-read-timeout is "
        "overridden by ingressd.io/proxy-read-timeout",
    )
