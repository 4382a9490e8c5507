"""Property tests: whatever a user writes into a manifest, the parsers only report it.

Annotations, manifest files, the table builder and the routing decision get
arbitrary input (hypothesis) and must never raise: a bad value is a message,
a bad document a problem, a bad path a skipped route, never an exception
that takes a reload (or a request) down.

The smallest inputs that once crashed them (hypothesis found each one) are
kept as explicit examples and as ``test_former_*`` cases: they must now be
reported, not raised.

The runs are derandomized (the same examples every run). To search for new
crashes, set ``INGRESSD_PROPERTY_EXAMPLES`` (say 3000): random and that many
(with ``--timeout 0``: the builder properties take minutes then).
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from k8s_objects import endpoint_slice, ingress, ingress_class, path, rule, service, snapshot
from k8s_objects import tls_entry as tls_of

from ingressd.model.objects import KINDS, Obj
from ingressd.model.policy import RoutePolicy
from ingressd.model.problems import Problem
from ingressd.model.table import RouteTable
from ingressd.policy.annotations import PREFIXES, SUPPORTED, Verdict, classify, parse_policy
from ingressd.routing.build import BuildOptions, build_table
from ingressd.routing.decide import Forward, RequestHead, Respond, decide
from ingressd.sources.manifests import (
    _collect,
    _parse_bytes,
    _parse_documents,
    load_directory,
    load_file,
)

_EXPLORE = int(os.environ.get("INGRESSD_PROPERTY_EXAMPLES", "0"))
PROPERTY = settings(
    max_examples=_EXPLORE or 100,
    derandomize=not _EXPLORE,
    deadline=None,
    database=None,  # no replay of earlier failures: every run is the same
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Whole folders and tables: each example costs ~40 ms, mostly in generating it.
HEAVY = settings(PROPERTY, max_examples=_EXPLORE or 60)
NGINX = "nginx.ingress.kubernetes.io/"
CRASHES = (AttributeError, TypeError, ValueError, KeyError, OverflowError)

# -- strategies ----------------------------------------------------------------------------

# Values that mean something to some annotation parser, or are near the edge of one.
INTERESTING_VALUES = (
    *("true", "false", "True", "0", "1", "-1", "01", "1.5", "1e9", "inf", "nan", ""),
    *("10m", "1k", "8K", "1g", "0", "9" * 5000, " 5 ", "\uff15", "\u0663", "\u00b2"),
    *("/", "/$1", "/$2$9", "$host", "/a(/|$)(.*)", "(", ".*", "[", "\\", "^$"),
    *("http://x", "https://a.b/c?$host", "http://$foo", "ftp://x", "https://"),
    *("1.2.3.4", "1.2.3.4/33", "10.0.0.0/8, ::/0", "::1", "a,b", ",,", "*"),
    *("round_robin", "ewma", "chash", "GRPC", "HTTPS", "AUTO_HTTP", "FCGI", "http"),
    *("on", "off", "Strict", "Lax", "None", "cookie", "balanced", "persistent"),
    *("error timeout", "http_500 non_idempotent", "off", "basic", "digest"),
    *("default/secret", "ns/", "/name", "a/b/c", "auth-file", "auth-map"),
    *("X-Header", "X Header", "GET", "get,POST", "\x00", "\r\n", "\u00e9", "\u0100", " "),
)
text_values = st.one_of(st.sampled_from(INTERESTING_VALUES), st.text(max_size=40))

our_keys = st.builds(
    lambda prefix, short: prefix + short,
    st.sampled_from(PREFIXES),
    st.one_of(st.sampled_from(sorted(SUPPORTED)), st.sampled_from(["", "server-snippet"])),
)
annotation_keys = st.one_of(
    our_keys,
    our_keys,
    st.builds(lambda prefix, s: prefix + s, st.sampled_from(PREFIXES), st.text(max_size=20)),
    st.text(max_size=30),
)
annotations = st.dictionaries(annotation_keys, text_values, max_size=12)

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False),
    text_values,
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``strategy``, sometimes any JSON value in its place."""
    return st.one_of(strategy, strategy, strategy, json_values)


HOSTS = ("a.test", "A.Test", "a.test.", "*.wild.test", "*", "", "1.2.3.4", "[::1]", "a..b", "-x")
PATHS = ("/", "/api", "/api/", "/a(/|$)(.*)", "/[", "(", "/.*", "", "rel", "/%2e%2e/x", "//a")
PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific", "prefix", "", "Regex")

hosts = st.one_of(st.sampled_from(HOSTS), st.text(max_size=30))
paths = st.one_of(st.sampled_from(PATHS), st.text(max_size=30).map(lambda s: "/" + s))
path_types = maybe(st.one_of(st.sampled_from(PATH_TYPES), st.none()))
port_refs = maybe(
    st.one_of(
        st.builds(lambda n: {"number": n}, st.integers(min_value=-1, max_value=70000)),
        st.builds(lambda n: {"name": n}, st.sampled_from(["http", "https", "", "nope"])),
    )
)
service_refs = st.fixed_dictionaries(
    {"name": maybe(st.sampled_from(["web", "api", "none", ""])), "port": port_refs}
)
backends = maybe(st.fixed_dictionaries({"service": maybe(service_refs)}))
ingress_paths = maybe(
    st.fixed_dictionaries(
        {"path": maybe(paths), "backend": backends}, optional={"pathType": path_types}
    )
)
rules = maybe(
    st.fixed_dictionaries(
        {},
        optional={
            "host": maybe(hosts),
            "http": maybe(
                st.fixed_dictionaries({"paths": maybe(st.lists(ingress_paths, max_size=4))})
            ),
        },
    )
)
tls_entries = maybe(
    st.fixed_dictionaries(
        {},
        optional={
            "hosts": maybe(st.lists(maybe(hosts), max_size=3)),
            "secretName": maybe(st.sampled_from(["junk-tls", "missing", ""])),
        },
    )
)
# use-regex and rewrite-target often, so that regex paths get built.
ingress_annotations = st.one_of(
    annotations,
    st.builds(
        lambda extra, regex, target: {
            **extra,
            NGINX + "use-regex": regex,
            NGINX + "rewrite-target": target,
        },
        annotations,
        st.sampled_from(["true", "false", "yes"]),
        text_values,
    ),
)


@st.composite
def ingresses(draw: st.DrawFn, index: int = 0) -> Obj:
    """An Ingress: the right shape mostly, any value anywhere sometimes."""
    metadata: dict[str, Any] = {
        "name": f"ing-{index}-{draw(st.text(max_size=8))}",
        "namespace": draw(st.sampled_from(["default", "other"])),
    }
    if draw(st.booleans()):
        metadata["annotations"] = draw(maybe(ingress_annotations))
    if draw(st.booleans()):
        metadata["creationTimestamp"] = draw(maybe(st.sampled_from(["2024-01-01T00:00:00Z", "x"])))
    spec = draw(
        st.fixed_dictionaries(
            {"ingressClassName": maybe(st.sampled_from(["ingressd", "ingressd", "other", ""]))},
            optional={
                "rules": maybe(st.lists(rules, max_size=4)),
                "tls": maybe(st.lists(tls_entries, max_size=2)),
                "defaultBackend": backends,
            },
        )
    )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata,
        "spec": draw(maybe(st.just(spec))),
    }


def ingress_lists(limit: int = 4) -> st.SearchStrategy[list[Obj]]:
    return st.integers(min_value=0, max_value=limit).flatmap(
        lambda n: st.tuples(*(ingresses(index=i) for i in range(n))).map(list)
    )


# Backing objects: each field of its API type with arbitrary values ("typed"),
# or sometimes any JSON value in its place ("any").


def backing(any_shape: bool) -> dict[str, st.SearchStrategy[Obj]]:
    def m(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return maybe(strategy) if any_shape else strategy

    numbers = st.integers(min_value=-5, max_value=70000)
    port_names = st.sampled_from(["", "http", "https", "grpc"])
    service_ports = m(
        st.lists(
            m(
                # The API requires a port's number; manifest mode does not.
                st.fixed_dictionaries(
                    {} if any_shape else {"port": numbers},
                    optional={
                        **({"port": m(numbers)} if any_shape else {}),
                        "name": m(port_names),
                        "targetPort": m(st.one_of(numbers, port_names)),
                    },
                )
            ),
            max_size=3,
        )
    )
    service_specs = m(
        st.fixed_dictionaries(
            {},
            optional={
                "ports": service_ports,
                "type": m(st.sampled_from(["ClusterIP", "ExternalName", "NodePort"])),
                "externalName": m(st.one_of(st.sampled_from(["ext.test", "ext.", ""]), st.text())),
                "clusterIP": m(st.one_of(st.sampled_from(["10.1.1.1", "None", ""]), st.text())),
            },
        )
    )
    slice_ports = m(
        st.lists(
            m(st.fixed_dictionaries({}, optional={"port": m(numbers), "name": m(port_names)})),
            max_size=3,
        )
    )
    addresses = st.one_of(st.sampled_from(["10.0.0.1", "fd00::1", ""]), st.text(max_size=10))
    endpoints = m(
        st.lists(
            m(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "addresses": m(st.lists(m(addresses), max_size=2)),
                        "conditions": m(
                            st.fixed_dictionaries(
                                {}, optional={"ready": m(st.one_of(st.booleans(), st.none()))}
                            )
                        ),
                    },
                )
            ),
            max_size=3,
        )
    )
    labels = m(
        st.fixed_dictionaries(
            {"kubernetes.io/service-name": m(st.sampled_from(["web", "api", ""]))}
        )
    )
    b64 = st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode())
    secret_keys = st.sampled_from(["tls.crt", "tls.key", "auth", "ca.crt"])
    return {
        "Service": st.builds(
            lambda name, spec: {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": "default"},
                "spec": spec,
            },
            st.sampled_from(["web", "api"]),
            service_specs,
        ),
        "EndpointSlice": st.builds(
            lambda i, labels, ports, endpoints: {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {"name": f"slice-{i}", "namespace": "default", "labels": labels},
                "ports": ports,
                "endpoints": endpoints,
            },
            st.integers(min_value=0, max_value=9),
            labels,
            slice_ports,
            endpoints,
        ),
        "Secret": st.builds(
            lambda kind, data, strings: {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "tls", "namespace": "default"},
                "type": kind,
                "data": data,
                "stringData": strings,
            },
            m(st.sampled_from(["kubernetes.io/tls", "Opaque"])),
            m(st.dictionaries(secret_keys, m(b64), max_size=3)),
            m(st.dictionaries(secret_keys, st.text(max_size=20), max_size=3)),
        ),
        "IngressClass": st.builds(
            lambda name, spec, default: {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "IngressClass",
                "metadata": {
                    "name": name,
                    "annotations": {"ingressclass.kubernetes.io/is-default-class": default},
                },
                "spec": spec,
            },
            st.sampled_from(["ingressd", "another"]),
            m(
                st.fixed_dictionaries(
                    {"controller": m(st.sampled_from(["ingressd.io/ingress-controller", "x"]))}
                )
            ),
            m(st.sampled_from(["true", "false"])),
        ),
    }


def backing_lists(any_shape: bool) -> st.SearchStrategy[list[Obj]]:
    kinds = backing(any_shape)
    return st.tuples(
        st.lists(kinds["Service"], max_size=2),
        st.lists(kinds["EndpointSlice"], max_size=3),
        st.lists(kinds["Secret"], max_size=1),
        st.lists(kinds["IngressClass"], max_size=2),
    ).map(lambda parts: [obj for part in parts for obj in part])


def fixed_backing() -> list[Obj]:
    """What the Ingresses point at: our class and another controller's default one,
    Services with endpoints, a TLS Secret that holds no certificate."""
    junk = base64.b64encode(b"not a certificate").decode()
    return [
        ingress_class(),
        ingress_class("other", "example.com/other", default=True),
        service("web", [("http", 80)]),
        endpoint_slice("web", ["10.0.0.1", ("10.0.0.2", False)], 8080, port_name="http"),
        service("api", [80, 443]),
        endpoint_slice("api", ["10.0.0.3"], 9090),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "junk-tls", "namespace": "default"},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": junk, "tls.key": junk},
        },
    ]


def fixed_ingresses() -> list[Obj]:
    """Ingresses that read every part of the backing objects: ports by number and by
    name, service-upstream, an upstream TLS Secret, basic auth, a TLS host."""
    return [
        ingress(
            "cluster-ip-by-name",
            [rule("d.test", path("/", "web", "http"))],
            annotations={NGINX + "service-upstream": "true"},
        ),
        ingress(
            "ports",
            [rule("a.test", path("/", "web", "http"), path("/api", "api"), path("/s", "api", 443))],
            tls=[tls_of(["a.test"], "tls")],
        ),
        ingress(
            "cluster-ip",
            [rule("b.test", path("/", "web"))],
            annotations={NGINX + "service-upstream": "true"},
        ),
        ingress(
            "secrets",
            [rule("c.test", path("/", "api", "https"))],
            annotations={
                NGINX + "backend-protocol": "HTTPS",
                NGINX + "proxy-ssl-secret": "default/tls",
                NGINX + "auth-type": "basic",
                NGINX + "auth-secret": "tls",
            },
        ),
    ]


def table_of(objs: list[Obj]) -> RouteTable:
    return build_table(snapshot(*fixed_backing(), *objs), BuildOptions())


heads = st.builds(
    RequestHead,
    method=st.sampled_from(["GET", "POST", "OPTIONS", "HEAD", "PUT"]),
    host=st.one_of(
        st.sampled_from([*HOSTS, "a.test:80", "x.wild.test", "A.TEST.:8080"]), st.text(max_size=30)
    ),
    path=st.one_of(st.sampled_from(PATHS), st.text(max_size=40)),
    query=st.one_of(st.just(""), st.text(max_size=20)),
    client_ip=st.sampled_from(["192.0.2.1", "10.0.0.9", "::1", "", "not-an-ip"]),
    tls=st.booleans(),
    origin=st.one_of(st.none(), st.sampled_from(["https://a.test", "null", ""]), st.text()),
    headers=st.lists(
        st.tuples(
            st.one_of(
                st.sampled_from([b"Cookie", b"X-Canary", b"Origin", b"Host"]),
                st.binary(max_size=10),
            ),
            st.binary(max_size=30),
        ),
        max_size=4,
    ),
)

KIND_NAMES = (*KINDS, "List", "IngressList", "ConfigMap", "")
FOREIGN_KINDS = ("List", "IngressList", "ConfigMap", "Deployment", "")


@st.composite
def loose_documents(draw: st.DrawFn, kinds: tuple[str, ...] = KIND_NAMES) -> Any:
    """A document with apiVersion, kind and metadata right or wrong, and any other fields."""
    kind = draw(st.one_of(st.sampled_from(kinds), st.sampled_from(kinds), json_leaves))
    versions = KINDS.get(kind, ("v1",)) if isinstance(kind, str) else ("v1",)
    metadata = st.fixed_dictionaries(
        {"name": maybe(st.text(min_size=1, max_size=10))},
        optional={
            "namespace": maybe(st.sampled_from(["default", "other", ""])),
            "annotations": maybe(annotations),
            "labels": maybe(st.just({"kubernetes.io/service-name": "web"})),
        },
    )
    return draw(
        st.fixed_dictionaries(
            {
                "apiVersion": maybe(st.sampled_from([*versions, "v2"])),
                "kind": st.just(kind),
                "metadata": maybe(metadata),
            },
            optional={
                "spec": json_values,
                "data": json_values,
                "stringData": json_values,
                "type": maybe(st.just("kubernetes.io/tls")),
                "items": maybe(st.lists(json_values, max_size=3)),
                "endpoints": json_values,
                "ports": json_values,
            },
        )
    )


def documents(any_shape: bool) -> st.SearchStrategy[Any]:
    """One YAML/JSON document: an Ingress, a backing object, a loose document or anything.

    Not ``any_shape``: backing objects typed, loose documents of kinds not served.
    """
    kinds = backing(any_shape)
    return st.one_of(
        ingresses(index=0),
        st.integers(min_value=1, max_value=99).flatmap(lambda i: ingresses(index=i)),
        *kinds.values(),
        loose_documents(KIND_NAMES if any_shape else FOREIGN_KINDS),
        json_values,
    )


def document_files(any_shape: bool) -> st.SearchStrategy[list[list[Any]]]:
    return st.lists(st.lists(documents(any_shape), max_size=4), min_size=1, max_size=3)


def write_manifests(files: list[list[Any]], root: Path) -> None:
    """Even files as YAML streams, odd ones as JSON (several documents: a List)."""
    for i, docs in enumerate(files):
        if i % 2:
            text = json.dumps(docs[0] if len(docs) == 1 else {"kind": "List", "items": docs})
            (root / f"f{i}.json").write_text(text)
        else:
            (root / f"f{i}.yaml").write_text(yaml.safe_dump_all(docs, allow_unicode=True))


def documents_of(files: list[list[Any]]) -> list[Any]:
    """Every document, those inside a List included."""
    out: list[Any] = []

    def walk(doc: Any) -> None:
        out.append(doc)
        if isinstance(doc, dict) and isinstance(doc.get("items"), list):
            for item in doc["items"]:
                walk(item)

    for docs in files:
        for doc in docs:
            walk(doc)
    return out


# -- (a), (b) annotations ----------------------------------------------------------------------

# The smallest crashing inputs found, one per bug.
HEADER_VALUE_NOT_LATIN1 = {NGINX + "x-forwarded-prefix": "\u0100"}
SUPERSCRIPT_DIGIT = {NGINX + "proxy-read-timeout": "\u00b2"}
TOO_MANY_DIGITS = {NGINX + "limit-rps": "9" * 4301}


def check_parse_policy(values: dict[str, str]) -> None:
    policy, messages = parse_policy(values)
    assert isinstance(policy, RoutePolicy)
    assert all(isinstance(m, str) and m for m in messages)
    # Every annotation rejected is named in a message (as `ingressd check` names it).
    for verdict in classify(values):
        if verdict.status in ("unsupported", "refused", "invalid"):
            assert any(m.startswith(verdict.reason) for m in messages), (verdict, messages)


def check_classify(values: dict[str, str]) -> None:
    verdicts = classify(values)
    assert all(isinstance(v, Verdict) for v in verdicts)
    assert all(v.status == "supported" or v.reason for v in verdicts)
    # One verdict for every annotation of ours, no more.
    assert sorted(v.key for v in verdicts) == sorted(k for k in values if k.startswith(PREFIXES))


@PROPERTY
@given(annotations)
@example(HEADER_VALUE_NOT_LATIN1)
@example(SUPERSCRIPT_DIGIT)
@example(TOO_MANY_DIGITS)
def test_parse_policy_never_raises(values: dict[str, str]) -> None:
    check_parse_policy(values)


@PROPERTY
@given(annotations)
@example({NGINX + "canary-by-header-value": "\u0100"})
@example({NGINX + "cors-max-age": "\u00b2"})
@example({NGINX + "proxy-body-size": "9" * 4301})
def test_classify_never_raises(values: dict[str, str]) -> None:
    check_classify(values)


@pytest.mark.parametrize(
    "values",
    [HEADER_VALUE_NOT_LATIN1, SUPERSCRIPT_DIGIT, TOO_MANY_DIGITS],
    ids=["header-value-not-latin-1", "superscript-digit", "4301-digits"],
)
def test_former_annotation_crashes_are_reported(values: dict[str, str]) -> None:
    check_parse_policy(values)
    _, messages = parse_policy(values)
    assert messages  # reported as invalid


# -- (c) manifest files ---------------------------------------------------------------------------


@PROPERTY
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)), st.sampled_from(["yaml", "json"]))
def test_manifest_file_of_any_text_never_raises(content: str | bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp, f"any.{suffix}")
        if isinstance(content, str):
            file.write_text(content)
        else:
            file.write_bytes(content)
        objs, problems = load_file(file)
    assert all(isinstance(o, dict) and o["kind"] in KINDS for o in objs)
    assert all(isinstance(p, Problem) for p in problems)


def check_folder(files: list[list[Any]], build: bool) -> None:
    """Load a folder of these documents (and build what loads): both only report."""
    with tempfile.TemporaryDirectory() as tmp:
        write_manifests(files, Path(tmp))
        result = load_directory(Path(tmp))
    assert all(isinstance(p, Problem) for p in result.problems)
    snap = result.store.snapshot()
    if build:
        assert isinstance(build_table(snap, BuildOptions()), RouteTable)


LABELS_A_LIST = {
    "apiVersion": "discovery.k8s.io/v1",
    "kind": "EndpointSlice",
    "metadata": {"name": "web", "labels": ["kubernetes.io/service-name"]},
}


def whole_stream(text: str) -> tuple[list[Obj], list[Problem]] | None:
    """What parsing ``text`` as one YAML stream gives (None: a syntax error)."""
    docs, error = _parse_documents(text, json_file=False)
    if error is not None:
        return None
    objs: list[Obj] = []
    problems: list[Problem] = []
    for index, doc in enumerate(docs, start=1):
        _collect(doc, f"document {index}", "f.yaml", objs, problems)
    return objs, problems


@PROPERTY
@given(
    st.lists(documents(any_shape=True), max_size=5),
    st.lists(st.sampled_from(["", "# c\n", "--- # c\n", "---\n", "...\n"]), max_size=5),
    st.text(max_size=40),
)
def test_yaml_document_by_document_equals_whole_stream(
    docs: list[Any], extras: list[str], noise: str
) -> None:
    """Parsing a file one document at a time (reusing unchanged ones) gives what
    parsing it as one stream does; where the stream has a syntax error, so does it."""
    pieces = [yaml.safe_dump(d, allow_unicode=True) for d in docs]
    text = "".join(f"{extra}---\n{piece}" for extra, piece in zip(extras, pieces, strict=False))
    text += "".join(pieces[len(extras) :]) and "---\n" + "---\n".join(pieces[len(extras) :])
    for candidate in (text, text + noise, noise + text):
        expected = whole_stream(candidate)
        got = _parse_bytes(Path("f.yaml"), candidate.encode())
        if expected is None:
            assert got.objects is None
        else:
            assert (got.objects, got.problems) == expected


@PROPERTY
@given(document_files(any_shape=True))
@example([[LABELS_A_LIST]])
def test_manifest_folder_of_any_documents_loads(files: list[list[Any]]) -> None:
    check_folder(files, build=False)


@HEAVY
@given(document_files(any_shape=False))
def test_manifest_folder_loads_and_builds_typed(files: list[list[Any]]) -> None:
    check_folder(files, build=True)


# -- (d), (e) the table and the decision ---------------------------------------------------------


def _ingress(spec: Any, annotations: Any = None) -> Obj:
    meta: dict[str, Any] = {"name": "x", "namespace": "default"}
    if annotations is not None:
        meta["annotations"] = annotations
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


OURS = {"ingressClassName": "ingressd"}
WEB = {"service": {"name": "web", "port": {"number": 80}}}
INF = float("inf")
# The smallest crashing Ingresses found, one per crash site.
INGRESS_CRASHES = {
    "spec-a-string": _ingress("x"),
    "annotations-a-list": _ingress({}, annotations=["a"]),
    "class-name-a-list": _ingress({"ingressClassName": ["ingressd"]}),
    "tls-a-number": _ingress({**OURS, "tls": 1}),
    "tls-hosts-a-number": _ingress({**OURS, "tls": [{"hosts": 1}]}),
    "http-a-list": _ingress({**OURS, "rules": [{"host": "a.test", "http": ["x"]}]}),
    "paths-a-number": _ingress({**OURS, "rules": [{"host": "a.test", "http": {"paths": 1}}]}),
    "port-number-inf": _ingress(
        {**OURS, "defaultBackend": {"service": {"name": "web", "port": {"number": INF}}}}
    ),
    "annotation-superscript-digit": _ingress(
        {**OURS, "defaultBackend": WEB}, annotations=SUPERSCRIPT_DIGIT
    ),
}


@PROPERTY
@given(ingress_lists())
@example([INGRESS_CRASHES["spec-a-string"]])
def test_build_table_never_raises(objs: list[Obj]) -> None:
    table = table_of(objs)
    assert isinstance(table, RouteTable)
    assert all(isinstance(p, Problem) for p in table.problems)


@pytest.mark.parametrize("obj", INGRESS_CRASHES.values(), ids=INGRESS_CRASHES.keys())
def test_former_ingress_crashes_are_reported(obj: Obj) -> None:
    assert table_of([obj]).problems


def _backing_table(objs: list[Obj]) -> RouteTable:
    return build_table(snapshot(ingress_class(), *objs, *fixed_ingresses()), BuildOptions())


WEB_HTTP = service("web", [("http", 80)])  # what fixed_ingresses read by port name


def _slice(**fields: Any) -> Obj:
    return {**endpoint_slice("web", ["10.0.0.1"], port_name="http"), **fields}


def _service(spec: Any) -> Obj:
    return {**service("web"), "spec": spec}


def _secret(**fields: Any) -> Obj:
    obj = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls"}
    return {**obj, "metadata": {"name": "tls", "namespace": "default"}, **fields}


# The smallest crashing backing objects found, one per crash site.
BACKING_CRASHES = {
    "service-spec-a-string": [_service("x")],
    "service-ports-a-number": [_service({"ports": 1})],
    "service-port-a-number": [_service({"ports": [80]})],
    "slice-ports-item-a-string": [WEB_HTTP, _slice(ports=["x"])],
    "slice-port-inf": [WEB_HTTP, _slice(ports=[{"name": "http", "port": INF}])],
    "slice-endpoints-a-number": [WEB_HTTP, _slice(endpoints=1)],
    "slice-endpoint-a-string": [WEB_HTTP, _slice(endpoints=["x"])],
    "slice-conditions-a-list": [
        WEB_HTTP,
        _slice(endpoints=[{"addresses": ["10.0.0.1"], "conditions": ["ready"]}]),
    ],
    "slice-addresses-a-mapping": [WEB_HTTP, _slice(endpoints=[{"addresses": {"a": 1}}])],
    "slice-labels-a-list": [
        WEB_HTTP,
        {**endpoint_slice("web", ["10.0.0.1"]), "metadata": LABELS_A_LIST["metadata"]},
    ],
    "external-name-port-without-number": [
        _service({"type": "ExternalName", "externalName": "ext.test", "ports": [{"name": "http"}]})
    ],
    "service-upstream-port-without-number": [
        _service({"clusterIP": "10.1.1.1", "ports": [{"name": "http"}]})
    ],
    "class-spec-a-number": [{**ingress_class(), "spec": 1}],
    "secret-data-a-number": [service("api", [443]), _secret(data=1)],
    "secret-string-data-a-number": [service("api", [443]), _secret(stringData=1)],
    "secret-data-value-a-list": [service("api", [443]), _secret(data={"tls.crt": ["x"]})],
}


@PROPERTY
@given(backing_lists(any_shape=True))
@example(BACKING_CRASHES["service-spec-a-string"])
def test_build_table_with_backing_objects_of_any_shape_never_raises(objs: list[Obj]) -> None:
    assert isinstance(_backing_table(objs), RouteTable)


@PROPERTY
@given(backing_lists(any_shape=False))
def test_build_table_with_typed_backing_objects_never_raises(objs: list[Obj]) -> None:
    assert isinstance(_backing_table(objs), RouteTable)


@pytest.mark.parametrize("objs", BACKING_CRASHES.values(), ids=BACKING_CRASHES.keys())
def test_former_backing_crashes_are_reported(objs: list[Obj]) -> None:
    assert _backing_table(objs).problems


@HEAVY
@given(ingress_lists(), backing_lists(any_shape=False), st.lists(heads, min_size=1, max_size=8))
def test_decide_never_raises(
    objs: list[Obj], backing_objs: list[Obj], requests: list[RequestHead]
) -> None:
    table = build_table(snapshot(*fixed_backing(), *backing_objs, *objs), BuildOptions())
    for head in requests:
        action = decide(table, head)
        assert isinstance(action, Forward | Respond)
        if isinstance(action, Respond):
            assert 100 <= action.status < 600
