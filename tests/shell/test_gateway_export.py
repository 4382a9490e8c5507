"""``ingressd export gateway-api`` (ingressd/gateway_api.py, ingressd/export.py).

(a) Every emitted object is checked against the Gateway API v1.2.1 CRD schemas
(tests/data/gateway_api/v1.2.1.yaml, with jsonschema) and the CRDs' CEL rules
that matter (below, each with its CRD message).
(b) Round trips: for each translated annotation, what ingressd's own decision
(routing/decide.py) does with sample requests, and what the emitted objects do
with them under the Gateway API spec (tests/gateway_api_spec.py), agree; where
they cannot, the difference is in the report.
(c) The 67 real-world Ingresses of tests/data/realworld: no crash, every object
valid, what is dropped is reported.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Mapping
from contextlib import redirect_stderr, redirect_stdout
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from gateway_api_spec import GwRequest, GwResult, evaluate
from k8s_objects import (
    backend,
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

from ingressd.cli import main
from ingressd.export import render_yaml
from ingressd.gateway_api import Export, ExportOptions, dns_label, dns_name, export
from ingressd.model.objects import Obj
from ingressd.routing.build import BuildOptions, build_table
from ingressd.routing.decide import Forward, RequestHead, Respond, decide

DATA = Path(__file__).resolve().parents[1] / "data"
SCHEMAS = DATA / "gateway_api" / "v1.2.1.yaml"
REALWORLD = DATA / "realworld" / "manifests"
A = "nginx.ingress.kubernetes.io/"

# -- (a) the schemas and the CEL rules ---------------------------------------------------


@cache
def _schemas() -> dict[str, Any]:
    return yaml.safe_load(SCHEMAS.read_text())


def _validator(kind: str, channel: str) -> jsonschema.Draft202012Validator:
    doc = _schemas()
    defs = dict(doc["$defs"])
    if channel == "experimental":
        defs["redirectStatusCode"] = {"enum": [301, 302, 303, 307, 308]}
    return jsonschema.Draft202012Validator({**doc["kinds"][kind], "$defs": defs})


_PATH_CHARS = re.compile(r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$")
_GRPC_SERVICE = re.compile(r"(?i)^\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$")
_GRPC_METHOD = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*$")


def cel_errors(obj: Mapping[str, Any]) -> list[str]:
    """The CRDs' x-kubernetes-validations that the output could break, by their messages."""
    errors: list[str] = []
    spec = obj["spec"]
    kind = obj["kind"]
    if kind == "Gateway":
        listeners = spec["listeners"]
        names = [lst["name"] for lst in listeners]
        if len(names) != len(set(names)):
            errors.append("Listener name must be unique within the Gateway")
        combos = [(lst["port"], lst["protocol"], lst.get("hostname", "")) for lst in listeners]
        if len(combos) != len(set(combos)):
            errors.append(
                "Combination of port, protocol and hostname must be unique for each listener"
            )
        for lst in listeners:
            tls = lst.get("tls")
            if lst["protocol"] in ("HTTP", "TCP", "UDP") and tls is not None:
                errors.append("tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']")
            if lst["protocol"] in ("HTTPS", "TLS") and tls is None:
                errors.append("tls mode must be set for protocols ['HTTPS', 'TLS']")
            if (
                tls
                and tls.get("mode", "Terminate") == "Terminate"
                and not tls.get("certificateRefs")
            ):
                errors.append("certificateRefs or options must be specified when mode is Terminate")
    if kind in ("HTTPRoute", "GRPCRoute", "TLSRoute"):
        refs = [
            (p.get("namespace"), p["name"], p.get("sectionName"))
            for p in spec.get("parentRefs", ())
        ]
        if len(refs) != len(set(refs)):
            errors.append(
                "sectionName must be unique when parentRefs includes 2 or more references to the same parent"  # noqa: E501 (the CRD's message)
            )
        total = sum(len(r.get("matches", ())) for r in spec.get("rules", ()))
        if total >= 128:
            errors.append(
                "While 16 rules and 64 matches per rule are allowed, the total number of matches across all rules in a route must be less than 128"  # noqa: E501 (the CRD's message)
            )
        for r in spec.get("rules", ()):
            errors += _rule_errors(kind, r)
    if kind == "BackendTLSPolicy":
        v = spec["validation"]
        if ("caCertificateRefs" in v) == ("wellKnownCACertificates" in v):
            errors.append(
                "must specify either CACertificateRefs or WellKnownCACertificates, not both"
            )
    return errors


_FILTER_FIELDS = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestMirror": "requestMirror",
    "RequestRedirect": "requestRedirect",
    "URLRewrite": "urlRewrite",
    "ExtensionRef": "extensionRef",
}


def _rule_errors(kind: str, r: Mapping[str, Any]) -> list[str]:
    errors: list[str] = []
    filters = r.get("filters", ())
    types = [f["type"] for f in filters]
    for t in ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite"):
        if types.count(t) > 1:
            errors.append(f"{t} filter cannot be repeated")
    if "RequestRedirect" in types and "URLRewrite" in types:
        errors.append(
            "May specify either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite, but not both"  # noqa: E501 (the CRD's message)
        )
    if "RequestRedirect" in types and r.get("backendRefs"):
        errors.append("RequestRedirect filter must not be used together with backendRefs")
    for f in filters:
        field = _FILTER_FIELDS[f["type"]]
        present = [k for k in f if k != "type"]
        if present != [field]:
            errors.append(
                f"filter.{field} must be specified for {f['type']} filter.type, and no other"
            )
        body = f.get(field) or {}
        for mod in (body.get("path"),):
            if mod is None:
                continue
            want = "replaceFullPath" if mod["type"] == "ReplaceFullPath" else "replacePrefixMatch"
            if [k for k in mod if k != "type"] != [want]:
                errors.append(f"{want} must be specified when type is set to '{mod['type']}'")
            if mod["type"] == "ReplacePrefixMatch":
                matches = r.get("matches", ())
                if len(matches) != 1 or matches[0].get("path", {}).get("type") != "PathPrefix":
                    errors.append(
                        "When using ReplacePrefixMatch, exactly one PathPrefix match must be specified"  # noqa: E501 (the CRD's message)
                    )
        for key in ("set", "add"):
            names = [h["name"].lower() for h in body.get(key, ())] if isinstance(body, dict) else []
            if len(names) != len(set(names)):
                errors.append(f"header names in {key} must be unique")
    for m in r.get("matches", ()):
        p = m.get("path")
        if p is not None and p.get("type", "PathPrefix") in ("Exact", "PathPrefix"):
            value = p.get("value", "/")
            if not value.startswith("/"):
                errors.append(
                    "value must be an absolute path and start with '/' when type one of ['Exact', 'PathPrefix']"  # noqa: E501 (the CRD's message)
                )
            for bad in ("//", "/./", "/../", "%2f", "%2F", "#"):
                if bad in value:
                    errors.append(
                        f"must not contain '{bad}' when type one of ['Exact', 'PathPrefix']"
                    )
            if value.endswith(("/..", "/.")):
                errors.append(
                    "must not end with '/..' or '/.' when type one of ['Exact', 'PathPrefix']"
                )
            if not _PATH_CHARS.match(value):
                errors.append(
                    "must only contain valid characters for types ['Exact', 'PathPrefix']"
                )
        method = m.get("method")
        if method is not None:
            if "service" not in method and "method" not in method:
                errors.append("One or both of 'service' or 'method' must be specified")
            if method.get("type", "Exact") == "Exact":
                if "service" in method and not _GRPC_SERVICE.match(method["service"]):
                    errors.append("service must only contain valid characters")
                if "method" in method and not _GRPC_METHOD.match(method["method"]):
                    errors.append("method must only contain valid characters")
    for ref in r.get("backendRefs", ()):
        if (
            ref.get("group", "") == ""
            and ref.get("kind", "Service") == "Service"
            and "port" not in ref
        ):
            errors.append("Must have port for Service reference")
    return errors


def reference_errors(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    """What is not a schema rule but breaks an install: parents that do not exist, and
    cross-namespace references without a ReferenceGrant."""
    objects = list(objects)
    listeners = {
        (o["metadata"]["namespace"], o["metadata"]["name"], lst["name"])
        for o in objects
        if o["kind"] == "Gateway"
        for lst in o["spec"]["listeners"]
    }
    grants = {
        (o["metadata"]["namespace"], to["kind"], to.get("name"), fr["kind"], fr["namespace"])
        for o in objects
        if o["kind"] == "ReferenceGrant"
        for to in o["spec"]["to"]
        for fr in o["spec"]["from"]
    }
    errors = []
    for o in objects:
        ns = o["metadata"].get("namespace")
        spec = o["spec"]
        for p in spec.get("parentRefs", ()):
            if (p.get("namespace", ns), p["name"], p.get("sectionName")) not in listeners:
                errors.append(f"{o['kind']} {ns}/{o['metadata']['name']}: no listener {p}")
        refs = [b for r in spec.get("rules", ()) for b in r.get("backendRefs", ())]
        refs += [
            f["requestMirror"]["backendRef"]
            for r in spec.get("rules", ())
            for f in r.get("filters", ())
            if f["type"] == "RequestMirror"
        ]
        refs += [
            c
            for lst in spec.get("listeners", ())
            for c in (lst.get("tls") or {}).get("certificateRefs", ())
        ]
        for ref in refs:
            other = ref.get("namespace")
            if other is not None and other != ns:
                key = (other, ref.get("kind", "Service"), ref["name"], o["kind"], ns)
                if key not in grants:
                    errors.append(
                        f"{o['kind']} {ns}/{o['metadata']['name']}: no ReferenceGrant for {key}"
                    )
    return errors


def assert_valid(objects: Iterable[Mapping[str, Any]], channel: str = "standard") -> None:
    objects = list(objects)
    for obj in objects:
        where = f"{obj['kind']} {obj['metadata'].get('namespace')}/{obj['metadata']['name']}"
        schema_errors = [
            e.message
            for e in _validator(f"{obj['apiVersion']} {obj['kind']}", channel).iter_errors(obj)
        ]
        assert not schema_errors, (where, schema_errors, obj)
        assert not cel_errors(obj), (where, cel_errors(obj), obj)
    assert not reference_errors(objects)


def test_the_checks_refuse_what_the_crds_refuse() -> None:
    """The validation can fail: objects the CRDs reject are rejected here."""
    good = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "default"},
        "spec": {
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/a"}}],
                    "backendRefs": [{"group": "", "kind": "Service", "name": "web", "port": 80}],
                }
            ]
        },
    }
    validator = _validator("gateway.networking.k8s.io/v1 HTTPRoute", "standard")
    assert not list(validator.iter_errors(good)) and not cel_errors(good)
    bad_path = json.loads(json.dumps(good))
    bad_path["spec"]["rules"][0]["matches"][0]["path"]["value"] = "a//b"
    assert len(cel_errors(bad_path)) == 2  # no leading /, and holds //
    no_port = json.loads(json.dumps(good))
    del no_port["spec"]["rules"][0]["backendRefs"][0]["port"]
    assert cel_errors(no_port) == ["Must have port for Service reference"]
    code_308 = json.loads(json.dumps(good))
    code_308["spec"]["rules"][0] = {
        "filters": [
            {"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 308}}
        ]
    }
    assert list(validator.iter_errors(code_308))  # standard channel: 301 and 302 only
    assert not list(
        _validator("gateway.networking.k8s.io/v1 HTTPRoute", "experimental").iter_errors(code_308)
    )
    unknown = json.loads(json.dumps(good))
    unknown["spec"]["rules"][0]["timeout"] = "5s"  # a typo the API server would prune
    assert list(validator.iter_errors(unknown))


# -- (b) round trips: ingressd's decision and the Gateway API's meaning agree ------------


def _objects(*objs: Obj, configmap: Mapping[str, str] | None = None) -> tuple[Obj, ...]:
    extra: list[Obj] = [ingress_class()]
    if configmap is not None:
        extra.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "ingressd", "namespace": "default"},
                "data": dict(configmap),
            }
        )
    return (*extra, *objs)


def _services(*names: str, namespace: str = "default") -> list[Obj]:
    out: list[Obj] = []
    for i, name in enumerate(names):
        out += [
            service(name, namespace=namespace),
            endpoint_slice(name, [f"10.0.{i}.1"], namespace=namespace),
        ]
    return out


def pair(
    *objs: Obj,
    channel: str = "experimental",
    configmap: Mapping[str, str] | None = None,
    passthrough: bool = False,
) -> tuple[Any, Export]:
    snap = snapshot(*_objects(*objs, configmap=configmap))
    options = BuildOptions(configmap=("default", "ingressd") if configmap is not None else None)
    result = export(snap, options, ExportOptions(channel=channel, passthrough=passthrough))  # type: ignore[arg-type]
    assert_valid(result.objects, channel)
    return build_table(snap, options), result


def served(
    table: Any,
    host: str,
    path_: str,
    *,
    https: bool = False,
    query: str = "",
    headers: Mapping[str, str] | None = None,
) -> Forward | Respond:
    raw = tuple((k.encode(), v.encode()) for k, v in (headers or {}).items())
    head = RequestHead("GET", host, path_, query, "192.0.2.1", https, headers=raw)
    return decide(table, head)


def gw(
    result: Export,
    host: str,
    path_: str,
    *,
    https: bool = False,
    query: str = "",
    headers: Mapping[str, str] | None = None,
) -> GwResult | None:
    req = GwRequest(
        host,
        path_,
        "https" if https else "http",
        query,
        {k.lower(): v for k, v in (headers or {}).items()},
    )
    return evaluate(list(result.objects), req)


def agree(table: Any, result: Export, host: str, path_: str, **kw: Any) -> None:
    """ingressd and the exported objects do the same with this request."""
    mine = served(table, host, path_, **kw)
    theirs = gw(result, host, path_, **kw)
    if isinstance(mine, Respond):
        if mine.status == 404:
            assert theirs is None, (path_, theirs)
            return
        assert theirs is not None and theirs.status is not None, (path_, mine, theirs)
        assert (mine.status, _url(mine.location)) == (theirs.status, _url(theirs.location))
        return
    assert theirs is not None and theirs.status is None, (path_, mine, theirs)
    ns, _, rest = mine.backend.name.partition("/")
    svc, _, port = rest.rpartition(":")
    assert theirs.backend() == (ns, svc, int(port)), (path_, mine.backend.name, theirs)
    assert mine.target.partition("?")[0] == theirs.upstream_path, (path_, mine.target, theirs)
    host_header = dict(mine.request_headers).get(b"Host")
    assert (host_header.decode() if host_header else host) == theirs.upstream_host


def _url(location: str | None) -> str | None:
    """A Location as a client reads it: "https://h" is "https://h/"."""
    if location is None or "://" not in location:
        return location
    scheme, _, rest = location.partition("://")
    return f"{scheme}://{rest}" if "/" in rest else f"{scheme}://{rest}/"


def findings(result: Export, subject: str) -> list[str]:
    return [f"{f.severity}: {f.reason}" for f in result.findings if f.subject == subject]


def web(
    *paths: Mapping[str, Any],
    annotations: Mapping[str, str] | None = None,
    host: str = "a.example",
    tls: bool = False,
    name: str = "web",
    namespace: str = "default",
    created: int = 1,
) -> Obj:
    return ingress(
        name,
        [rule(host, *(paths or (path("/", "web"),)))],
        annotations={A + k: v for k, v in (annotations or {}).items()},
        tls=[tls_entry([host], "cert")] if tls else None,
        namespace=namespace,
        created=created,
    )


def test_ssl_redirect_on_a_tls_host() -> None:
    """ssl-redirect (the default) on a host under spec.tls: plain HTTP gets 308 to
    https (lua_ingress.lua); the Gateway's HTTP listener answers the same."""
    table, result = pair(web(tls=True), tls_secret("cert", ("a.example",)), *_services("web"))
    for p, q in (("/x", ""), ("/", ""), ("/a/b", "q=1")):
        agree(table, result, "a.example", p, query=q)
        agree(table, result, "a.example", p, query=q, https=True)
    # one trailing "/" is dropped by ingress-nginx, kept by Gateway: reported, and real
    mine = served(table, "a.example", "/a/")
    assert isinstance(mine, Respond) and mine.location == "https://a.example/a"
    assert gw(result, "a.example", "/a/").location == "https://a.example/a/"  # type: ignore[union-attr]
    assert any("trailing /" in f for f in findings(result, "ssl-redirect"))
    _, standard = pair(
        web(tls=True), tls_secret("cert", ("a.example",)), *_services("web"), channel="standard"
    )
    assert gw(standard, "a.example", "/x").status == 301  # type: ignore[union-attr]
    assert any(
        "308 is not in the standard channel" in f for f in findings(standard, "ssl-redirect")
    )


def test_ssl_redirect_false_and_force_ssl_redirect() -> None:
    table, result = pair(
        web(annotations={"ssl-redirect": "false"}, tls=True),
        tls_secret("cert", ("a.example",)),
        *_services("web"),
    )
    agree(table, result, "a.example", "/x")  # served on HTTP too
    table, result = pair(web(annotations={"force-ssl-redirect": "true"}), *_services("web"))
    agree(table, result, "a.example", "/x")  # 308 without any TLS host
    assert gw(result, "a.example", "/x").status == 308  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("annotations", "status", "location"),
    [
        ({"permanent-redirect": "https://new.example/landing"}, 301, "https://new.example/landing"),
        (
            {"permanent-redirect": "https://new.example", "permanent-redirect-code": "308"},
            308,
            "https://new.example/",
        ),
        ({"temporal-redirect": "http://other.example:8080/t"}, 302, "http://other.example:8080/t"),
        # both: ingress-nginx reads temporal-redirect first (annotations/redirect/redirect.go)
        (
            {"temporal-redirect": "https://t.example/", "permanent-redirect": "https://p.example/"},
            302,
            "https://t.example/",
        ),
    ],
)
def test_permanent_and_temporal_redirects(
    annotations: dict[str, str], status: int, location: str
) -> None:
    table, result = pair(web(annotations=annotations), *_services("web"))
    subject = "temporal-redirect" if "temporal-redirect" in annotations else "permanent-redirect"
    assert findings(result, subject)  # the query string note, under the one that applies
    assert not result.dropped, result.findings
    for p in ("/", "/deep/path"):
        mine = served(table, "a.example", p)
        assert isinstance(mine, Respond) and mine.status == status
        # nginx's Location is the URL as written; a browser reads "https://new.example" as "/"
        assert mine.location.rstrip("/") == location.rstrip("/")  # type: ignore[union-attr]
        assert (gw(result, "a.example", p).status, gw(result, "a.example", p).location) == (
            status,
            location,
        )  # type: ignore[union-attr]


def test_redirect_keeping_the_request_uri() -> None:
    """permanent-redirect https://new.example$request_uri keeps path and query, as a
    RequestRedirect without a path modifier does."""
    _, result = pair(
        web(annotations={"permanent-redirect": "https://new.example$request_uri"}),
        *_services("web"),
    )
    found = gw(result, "a.example", "/p/q", query="x=1")
    assert found is not None and found.location == "https://new.example/p/q?x=1"


def test_app_root() -> None:
    """app-root: "/" alone gets 302 to the app root; other paths are served."""
    table, result = pair(web(annotations={"app-root": "/app"}), *_services("web"))
    for p in ("/", "/app", "/x"):
        agree(table, result, "a.example", p)
    assert gw(result, "a.example", "/").status == 302  # type: ignore[union-attr]


def test_rewrite_target_in_a_regex_host_replaces_the_whole_path() -> None:
    """rewrite-target without capture groups: nginx's rewrite replaces the whole URI
    (ReplaceFullPath); the host's paths are case-insensitive regexes from the start."""
    table, result = pair(
        web(path("/foo", "web"), annotations={"rewrite-target": "/new"}), *_services("web")
    )
    for p in ("/foo", "/foo/bar", "/FOO/bar", "/foobar", "/other", "/"):
        agree(table, result, "a.example", p)
    assert any("RegularExpression" in f for f in findings(result, "path /foo"))


def test_rewrite_target_with_use_regex_false_replaces_the_prefix() -> None:
    table, result = pair(
        web(path("/foo", "web"), annotations={"rewrite-target": "/new", "use-regex": "false"}),
        *_services("web"),
    )
    for p in ("/foo", "/foo/", "/foo/bar/baz", "/foobar"):
        agree(table, result, "a.example", p)


def test_rewrite_target_with_capture_groups_is_reported() -> None:
    _, result = pair(
        web(
            path("/foo(/|$)(.*)", "web", path_type="ImplementationSpecific"),
            annotations={"rewrite-target": "/$2"},
        ),
        *_services("web"),
    )
    assert any("capture groups" in f for f in findings(result, "rewrite-target"))
    assert result.dropped


def test_upstream_vhost_and_x_forwarded_prefix() -> None:
    table, result = pair(
        web(
            path("/foo", "web"),
            annotations={
                "upstream-vhost": "internal.example",
                "rewrite-target": "/",
                "use-regex": "false",
                "x-forwarded-prefix": "/foo",
            },
        ),
        *_services("web"),
    )
    agree(table, result, "a.example", "/foo/bar")
    mine = served(table, "a.example", "/foo/bar")
    theirs = gw(result, "a.example", "/foo/bar")
    assert isinstance(mine, Forward) and theirs is not None
    assert (
        dict(mine.request_headers)[b"X-Forwarded-Prefix"].decode()
        == theirs.request_set["X-Forwarded-Prefix"]
    )


def test_variables_nginx_renders_are_not_exported_literally() -> None:
    _, result = pair(
        web(
            path("/foo", "web"),
            path("/", "web"),
            annotations={
                "app-root": "/app/$arg_lang",
                "rewrite-target": "/",
                "use-regex": "false",
                "x-forwarded-prefix": "/$http_x_tenant",
            },
        ),
        *_services("web"),
    )
    assert "$" not in json.dumps(result.objects)
    assert findings(result, "app-root") == ["dropped: RequestRedirect takes no nginx variables"]
    assert findings(result, "x-forwarded-prefix") == [
        "dropped: RequestHeaderModifier sets a literal value; nginx renders this one's variables"
    ]


def test_custom_headers() -> None:
    """custom-headers: each header replaces the upstream's."""
    headers = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "hdrs", "namespace": "default"},
        "data": {"X-A": "1", "X-B": "two words"},
    }
    table, result = pair(
        web(annotations={"custom-headers": "default/hdrs"}),
        headers,
        *_services("web"),
        configmap={"global-allowed-response-headers": "X-A,X-B"},
    )
    mine = served(table, "a.example", "/")
    theirs = gw(result, "a.example", "/")
    assert isinstance(mine, Forward) and theirs is not None
    sent = {n.decode(): v.decode() for n, v in mine.route.policy.response_headers}
    assert {k: v for k, v in sent.items() if v} == theirs.response_set
    assert [k for k, v in sent.items() if not v] == theirs.response_remove


def test_canary_by_header_cookie_and_weight() -> None:
    """canary-by-header, -by-cookie and -weight in ingress-nginx's order: header, then
    cookie, then weight; the Gateway's rules keep that order by their precedence."""
    canary = web(
        name="web-canary",
        created=2,
        annotations={
            "canary": "true",
            "canary-by-header": "X-Canary",
            "canary-by-cookie": "c",
            "canary-weight": "0",
        },
    )
    canary["spec"]["rules"][0]["http"]["paths"][0]["backend"] = backend("web-v2")
    table, result = pair(web(), canary, *_services("web", "web-v2"))
    cases = [
        {},
        {"X-Canary": "always"},
        {"X-Canary": "never"},
        {"X-Canary": "other"},
        {"Cookie": "c=always"},
        {"Cookie": "a=1; c=always; b=2"},
        {"Cookie": "c=never"},
        {"X-Canary": "never", "Cookie": "c=always"},  # the header wins
        {"X-Canary": "always", "Cookie": "c=never"},
    ]
    for headers in cases:
        agree(table, result, "a.example", "/x", headers=headers)


def test_canary_header_value_and_weight() -> None:
    canary = web(
        name="web-canary",
        created=2,
        annotations={
            "canary": "true",
            "canary-by-header": "X-Version",
            "canary-by-header-value": "v2",
            "canary-weight": "30",
        },
    )
    canary["spec"]["rules"][0]["http"]["paths"][0]["backend"] = backend("web-v2")
    table, result = pair(web(), canary, *_services("web", "web-v2"))
    agree(table, result, "a.example", "/x", headers={"X-Version": "v2"})
    theirs = gw(result, "a.example", "/x", headers={"X-Version": "v1"})
    assert theirs is not None and sorted(theirs.backends) == [
        ("default", "web", 80, 70),
        ("default", "web-v2", 80, 30),
    ]
    route = served(table, "a.example", "/x").route  # type: ignore[union-attr]
    assert route.canary.weight == 30 and route.canary.total == 100  # random.randrange(100) < 30


def test_canary_in_another_namespace_gets_a_reference_grant() -> None:
    main_ = web(namespace="shop")
    canary = web(
        name="web-canary",
        namespace="beta",
        created=2,
        annotations={"canary": "true", "canary-weight": "100"},
    )
    table, result = pair(
        main_, canary, *_services("web", namespace="shop"), *_services("web", namespace="beta")
    )
    if served(table, "a.example", "/").route.canary is None:  # type: ignore[union-attr]
        pytest.skip("ingressd does not attach a canary across namespaces")
    grants = [o for o in result.objects if o["kind"] == "ReferenceGrant"]
    assert grants and grants[0]["metadata"]["namespace"] == "beta"


def test_mirror_target() -> None:
    table, result = pair(
        web(
            annotations={"mirror-target": "http://shadow.other.svc.cluster.local:8081$request_uri"}
        ),
        *_services("web"),
    )
    mine = served(table, "a.example", "/x")
    theirs = gw(result, "a.example", "/x")
    assert isinstance(mine, Forward) and theirs is not None
    m = mine.route.policy.mirror
    assert (
        m is not None and theirs.mirror == ("other", "shadow", m.port) and m.path == "$request_uri"
    )
    assert any(
        o["kind"] == "ReferenceGrant" and o["metadata"]["namespace"] == "other"
        for o in result.objects
    )
    _, external = pair(
        web(annotations={"mirror-target": "https://test.env.com/$request_uri"}), *_services("web")
    )
    assert any("not a Service" in f for f in findings(external, "mirror-target"))


def test_path_types() -> None:
    """Exact is exact; Prefix matches whole path elements, as PathPrefix does."""
    ing = ingress(
        "web",
        [
            rule(
                "a.example",
                path("/exact", "one", path_type="Exact"),
                path("/pre", "two"),
                path("/impl", "one", path_type="ImplementationSpecific"),
            )
        ],
        created=1,
    )
    table, result = pair(ing, *_services("one", "two"))
    for p in (
        "/exact",
        "/exact/",
        "/exact/x",
        "/pre",
        "/pre/",
        "/pre/x/y",
        "/prefix",
        "/impl/a",
        "/impla",
        "/",
    ):
        agree(table, result, "a.example", p)


def test_default_backend_is_a_catch_all_rule() -> None:
    ing = ingress(
        "web", [rule("a.example", path("/api", "one"))], default_backend=backend("two"), created=1
    )
    table, result = pair(ing, *_services("one", "two"))
    for p in ("/api/x", "/other", "/"):
        agree(table, result, "a.example", p)


def test_default_backend_of_a_regex_host_stays_last() -> None:
    """In a regex host the default is a catch-all regex after the others, not a
    PathPrefix / that an implementation may prefer to every regex."""
    ing = ingress(
        "web",
        [rule("a.example", path("/api", "one"))],
        default_backend=backend("two"),
        annotations={A + "use-regex": "true"},
        created=1,
    )
    table, result = pair(ing, *_services("one", "two"))
    for p in ("/api/x", "/API", "/other", "/"):
        agree(table, result, "a.example", p)


def test_wildcard_hosts_differ_by_label_count() -> None:
    table, result = pair(web(host="*.w.example"), *_services("web"))
    agree(table, result, "one.w.example", "/x")
    assert isinstance(served(table, "a.b.w.example", "/x"), Respond)  # one label only
    assert gw(result, "a.b.w.example", "/x") is not None  # one or more
    assert any("one or more labels" in f for f in findings(result, "host *.w.example"))


@pytest.mark.parametrize(
    "annotations",
    [
        {"auth-url": "http://auth.example/check"},
        {"whitelist-source-range": "10.0.0.0/8"},
        {"auth-type": "basic", "auth-secret": "missing"},
    ],
)
def test_access_control_is_not_exported_open(annotations: dict[str, str]) -> None:
    """What Gateway API cannot protect is left out and reported, never served open."""
    _, result = pair(web(annotations=annotations), *_services("web"))
    assert gw(result, "a.example", "/") is None
    assert not [o for o in result.objects if o["kind"] == "HTTPRoute"]
    assert any("routes not exported" in f for f in findings(result, "host a.example"))
    assert result.dropped


def test_grpc_backend_tls_and_passthrough() -> None:
    grpc = ingress(
        "rpc",
        [rule("g.example", path("/", "rpc"), path("/pkg.Greeter", "rpc"))],
        annotations={
            A + "backend-protocol": "GRPCS",
            A + "proxy-ssl-secret": "default/ca",
            A + "proxy-ssl-verify": "on",
            A + "proxy-ssl-name": "rpc.internal",
        },
        tls=[tls_entry(["g.example"], "cert")],
        created=1,
    )
    ca = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "ca", "namespace": "default"},
        "data": {"ca.crt": tls_secret("x")["data"]["tls.crt"]},
    }
    passthrough = ingress(
        "pt",
        [rule("p.example", path("/", "pt"))],
        annotations={A + "ssl-passthrough": "true"},
        created=2,
    )
    table, result = pair(
        grpc,
        ca,
        tls_secret("cert", ("g.example",)),
        passthrough,
        *_services("rpc", "pt"),
        passthrough=True,
    )
    kinds = {o["kind"] for o in result.objects}
    assert {"GRPCRoute", "BackendTLSPolicy", "TLSRoute", "Gateway"} <= kinds
    policy = next(o for o in result.objects if o["kind"] == "BackendTLSPolicy")
    assert policy["spec"]["validation"]["hostname"] == "rpc.internal"
    # ingressd speaks TLS to it with that name, verifying: so does the policy
    forward = served(table, "g.example", "/", https=True)
    assert isinstance(forward, Forward) and forward.tls is not None
    assert (forward.tls.name, forward.tls.verify) == ("rpc.internal", True)
    assert policy["spec"]["validation"]["caCertificateRefs"][0]["kind"] == "ConfigMap"
    route = next(o for o in result.objects if o["kind"] == "GRPCRoute")
    methods = [m.get("method") for r in route["spec"]["rules"] for m in r.get("matches", [])]
    assert {"type": "Exact", "service": "pkg.Greeter"} in methods
    _, standard = pair(
        grpc, ca, tls_secret("cert", ("g.example",)), *_services("rpc"), channel="standard"
    )
    assert "BackendTLSPolicy" not in {o["kind"] for o in standard.objects}
    assert any("experimental" in f for f in findings(standard, "backend-protocol"))


def test_route_names_never_collide() -> None:
    """Ingress "a" of host "b.example" and Ingress "a-b.example" of every host would
    both be named a-b.example: the second gets a digest."""
    one = ingress("a", [rule("b.example", path("/", "web"))], created=1)
    two = ingress("a-b.example", [rule(None, path("/", "web"))], created=2)
    _, result = pair(one, two, *_services("web"))
    names = [o["metadata"]["name"] for o in result.objects if o["kind"] == "HTTPRoute"]
    assert len(names) == 2 and len(set(names)) == 2, names


def test_names_are_dns_names_bounded_and_stable() -> None:
    long = "a" * 300
    name = dns_name(long, "*.Example.COM")
    assert len(name) <= 253 and name == dns_name(long, "*.Example.COM")
    assert name != dns_name(long, "other.example")
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", name)
    label = dns_label("https", "x" * 100 + ".example.com")
    assert len(label) <= 63 and "." not in label
    assert dns_name("web", "*.w.example") == "web-wildcard.w.example"


# -- (c) the real-world Ingresses, through the command line ------------------------------


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("channel", ["standard", "experimental"])
def test_realworld_manifests(channel: str, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    argv = (
        "export",
        "gateway-api",
        "--manifests",
        str(REALWORLD),
        "--ingress-class",
        "nginx",
        "--channel",
        channel,
        "--enable-ssl-passthrough",
        "--report-json",
        str(report),
    )
    code, out, err = _run(*argv)
    objects = [o for o in yaml.safe_load_all(out) if o is not None]
    assert_valid(objects, channel)
    doc = json.loads(report.read_text())
    summary = doc["summary"]
    print(channel, json.dumps(summary))
    assert summary["ingresses"] >= 30 and summary["objects"]["HTTPRoute"] >= 30
    assert code == 1 and summary["dropped"] > 0  # auth, rate limits, affinity, snippets ...
    reasons = {(f["ingress"], f["subject"]): f["reason"] for f in doc["findings"]}
    assert (
        "routes not exported: auth-url"
        in reasons[("default/external-auth", "host external-auth-01.sample.com")]
    )
    assert "capture groups" in reasons[("default/rewrite", "rewrite-target")]
    assert "sessionPersistence" in reasons[("default/nginx-test", "affinity")]
    assert "Summary:" in err and "dropped" in err
    # the same input gives the same bytes, and every document stands alone
    assert _run(*argv)[1] == out
    assert "&id" not in out and "*id" not in out


def test_cli_exit_codes(tmp_path: Path) -> None:
    (tmp_path / "all.yaml").write_text(
        yaml.safe_dump_all([ingress_class(), web(), *_services("web")])
    )
    code, out, err = _run("export", "gateway-api", "--manifests", str(tmp_path))
    assert code == 0, err
    kinds = [o["kind"] for o in yaml.safe_load_all(out)]
    assert kinds == ["Gateway", "HTTPRoute"]
    code, _, err = _run("export", "gateway-api", "--manifests", str(tmp_path / "missing"))
    assert code == 2 and "is not a folder" in err


def test_yaml_documents_have_no_anchors() -> None:
    """Rules that share a filter list are written out in full, not as YAML aliases."""
    canary = web(name="c", created=2, annotations={"canary": "true", "canary-by-header": "X-C"})
    canary["spec"]["rules"][0]["http"]["paths"][0]["backend"] = backend("web-v2")
    main_ = web(annotations={"upstream-vhost": "internal.example"})
    _, result = pair(main_, canary, *_services("web", "web-v2"))
    out = render_yaml(result)
    assert "&id" not in out and "*id" not in out
    assert out.count("hostname: internal.example") == 3  # the always, never and weighted rules


def test_cluster_mode_reads_the_cluster_once(tmp_path: Path) -> None:
    """--kubeconfig: the objects are listed once through the API (read-only), as check
    lists them, and exported the same as from a folder."""
    server = KubeApiServer(tokens={"token-a": "exporter"})
    server.start()
    try:
        objects = [
            ingress_class(),
            web(annotations={"app-root": "/app"}, tls=True),
            tls_secret("cert", ("a.example",)),
            *_services("web"),
        ]
        for obj in objects:
            server.apply(obj)
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig", "token-a")
        code, out, err = _run("export", "gateway-api", "--kubeconfig", str(kubeconfig))
        assert {r.method for r in server.requests} == {"GET"}
    finally:
        server.stop()
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "all.yaml").write_text(yaml.safe_dump_all(objects))
    assert (code, out) == _run("export", "gateway-api", "--manifests", str(tmp_path / "folder"))[:2]
    kinds = sorted(o["kind"] for o in yaml.safe_load_all(out))
    assert kinds == ["Gateway", "HTTPRoute", "HTTPRoute"], err


def test_configmap_proxy_set_headers() -> None:
    """The controller ConfigMap's proxy-set-headers: set on every upstream request."""
    headers = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "upstream-headers", "namespace": "default"},
        "data": {"X-Env": "prod"},
    }
    table, result = pair(
        web(),
        headers,
        *_services("web"),
        configmap={"proxy-set-headers": "default/upstream-headers"},
    )
    mine = served(table, "a.example", "/")
    theirs = gw(result, "a.example", "/")
    assert isinstance(mine, Forward) and theirs is not None
    sent = {n.decode(): v.decode() for n, v in mine.request_headers}
    assert sent == theirs.request_set == {"X-Env": "prod"}
