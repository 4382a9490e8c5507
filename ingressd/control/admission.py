"""Admission review of Ingresses: what ingressd would refuse, answered before it is stored.

A pure function of a snapshot of the store and one ``AdmissionReview`` (v1)
body, parsed JSON. It builds what ingressd would build from the current
objects with the new or changed Ingress in place (``routing/build.py``, the
builder serving uses, over the Ingresses that share a host with it) and
sorts what it finds into kinds; the flag ``--admission-deny`` says which
kinds deny, and the others come back as ``warnings`` (``kubectl apply`` prints
them).

Unlike ingress-nginx's webhook (``CheckIngress`` in
internal/ingress/controller/controller.go, which renders nginx.conf from the
object and runs ``nginx -t`` on it: CVE-2025-1974), nothing here renders
configuration, runs a program or opens a file an object names: annotations are
parsed into typed values by ``policy/annotations.py`` and paths compiled by RE2.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..model.objects import Obj, Snapshot, object_key
from ..policy import annotations as ann
from ..routing.build import BuildOptions, build_table, ingress_owner

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"

# What a finding can be. The order is the order of the docs and of messages.
KINDS: tuple[str, ...] = ("refused", "invalid", "regex", "conflict", "unsupported", "problem")
KIND_HELP: dict[str, str] = {
    "refused": "an annotation ingressd refuses (raw configuration, snippets it cannot translate)",
    "invalid": "an annotation whose value does not parse",
    "regex": "a path that is matched as a regular expression RE2 cannot run",
    "conflict": "a host, path and pathType another Ingress of the class already has",
    "unsupported": "an annotation ingressd does not implement, or that does not apply to it",
    "problem": "anything else the build reports (a Service or Secret not found, an "
    "annotation overridden by its ingressd.io/ twin, ...)",
}
DEFAULT_DENY: frozenset[str] = frozenset({"refused", "invalid", "regex", "conflict"})

# The API server's limits on warnings (k8s.io/apiserver pkg/warning): longer ones
# are truncated, and past 4096 characters in all, further ones are dropped.
MAX_WARNING_CHARS = 256
MAX_WARNINGS_CHARS = 4096
# A denial's message comes back to kubectl whole; a bound keeps it readable.
MAX_MESSAGE_CHARS = 4096

_CONFLICT_MARK = "is already served by older Ingress"
_REGEX_MARK = "RE2 cannot run"
_REGEX_MARK_PATH = "is not a regular expression RE2 can run"


class ReviewError(ValueError):
    """The body is not an AdmissionReview v1 request (the webhook answers 400)."""


@dataclass(frozen=True, slots=True)
class ReviewRequest:
    uid: str
    operation: str  # CREATE, UPDATE, DELETE, CONNECT
    kind: tuple[str, str, str]  # (group, version, kind) of the object
    namespace: str
    name: str
    obj: Obj | None  # request.object


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # one of KINDS
    message: str


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    message: str = ""  # why it is denied
    warnings: tuple[str, ...] = ()
    checked: bool = True  # False: allowed without a review (over its time, not synced)


def parse_deny(text: str) -> frozenset[str]:
    """``--admission-deny``: a comma-separated list of KINDS, or "none"."""
    items = {item.strip() for item in text.split(",") if item.strip()}
    if items == {"none"}:
        return frozenset()
    unknown = sorted(items - set(KINDS))
    if unknown or not items:
        raise ValueError(
            f"unknown kind {', '.join(unknown) or '(empty)'}: expected a comma-separated "
            f"list of {', '.join(KINDS)}, or none"
        )
    return frozenset(items)


# -- the request -----------------------------------------------------------------------------


def parse_review(body: Any) -> ReviewRequest:
    """The request of an AdmissionReview v1 body; ReviewError says what is wrong."""
    if not isinstance(body, dict):
        raise ReviewError("the body is not a JSON object")
    if body.get("apiVersion") != API_VERSION or body.get("kind") != KIND:
        raise ReviewError(
            f"not an {KIND} {API_VERSION} (apiVersion {body.get('apiVersion')!r}, "
            f"kind {body.get('kind')!r})"
        )
    request = body.get("request")
    if not isinstance(request, dict):
        raise ReviewError("the AdmissionReview has no request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid or len(uid) > 128:
        raise ReviewError("request.uid is missing or not a string of at most 128 characters")
    operation = request.get("operation")
    if not isinstance(operation, str) or not operation:
        raise ReviewError("request.operation is missing")
    kind = request.get("kind")
    if not isinstance(kind, dict):
        raise ReviewError("request.kind is missing")
    gvk = tuple(str(kind.get(k) or "") for k in ("group", "version", "kind"))
    obj = request.get("object")
    if obj is not None and not isinstance(obj, dict):
        raise ReviewError("request.object is not an object")
    if operation in ("CREATE", "UPDATE") and obj is None:
        raise ReviewError(f"request.object is missing for {operation}")
    if obj is not None:
        _check_object(obj)
    namespace = request.get("namespace") or ""
    name = request.get("name") or ""
    if not isinstance(namespace, str) or not isinstance(name, str):
        raise ReviewError("request.namespace and request.name must be strings")
    return ReviewRequest(uid, operation, gvk, namespace, name, obj)  # type: ignore[arg-type]


def _check_object(obj: dict[str, Any]) -> None:
    """The shapes the review reads without looking twice; the API server sends nothing
    else (it validates an object before its validating webhooks see it), so anything
    else comes from some other caller and is refused."""
    meta = obj.get("metadata", {})
    if not isinstance(meta, dict):
        raise ReviewError("request.object.metadata is not an object")
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise ReviewError("request.object.metadata.annotations is not a map of strings")
    for key in ("namespace", "name", "generateName", "creationTimestamp"):
        if not isinstance(meta.get(key) or "", str):
            raise ReviewError(f"request.object.metadata.{key} is not a string")
    if not isinstance(obj.get("spec") or {}, dict):
        raise ReviewError("request.object.spec is not an object")


def response(uid: str, verdict: Verdict) -> dict[str, Any]:
    """The AdmissionReview the API server expects back: same apiVersion and kind, the uid."""
    answer: dict[str, Any] = {"uid": uid, "allowed": verdict.allowed}
    if not verdict.allowed:
        answer["status"] = {
            "status": "Failure",
            "code": 400,
            "reason": "BadRequest",
            "message": verdict.message,
        }
    if verdict.warnings:
        answer["warnings"] = list(verdict.warnings)
    return {"apiVersion": API_VERSION, "kind": KIND, "response": answer}


# -- the review ------------------------------------------------------------------------------


def is_reviewed(request: ReviewRequest) -> bool:
    """Only Ingress CREATE and UPDATE are looked at; anything else is allowed untouched."""
    return request.kind == ("networking.k8s.io", "v1", "Ingress") and request.operation in (
        "CREATE",
        "UPDATE",
    )


def review(
    snapshot: Snapshot,
    options: BuildOptions,
    request: ReviewRequest,
    deny: frozenset[str] = DEFAULT_DENY,
    watch_namespace: str | None = None,
    now: float | None = None,
) -> Verdict:
    if not is_reviewed(request):
        return Verdict(True)
    assert request.obj is not None  # parse_review: CREATE and UPDATE carry one
    found = findings(snapshot, options, request, watch_namespace, now)
    return decide(found, deny)


def decide(found: Iterable[Finding], deny: frozenset[str]) -> Verdict:
    denied: list[str] = []
    warned: list[str] = []
    for f in found:
        (denied if f.kind in deny else warned).append(f"{f.kind}: {f.message}")
    warnings = tuple(_bounded_warnings(warned))
    if denied:
        message = "ingressd would refuse this Ingress: " + "; ".join(denied)
        return Verdict(False, _cut(message, MAX_MESSAGE_CHARS), warnings)
    return Verdict(True, "", warnings)


def findings(
    snapshot: Snapshot,
    options: BuildOptions,
    request: ReviewRequest,
    watch_namespace: str | None = None,
    now: float | None = None,
) -> list[Finding]:
    """What ingressd would say about the Ingress of ``request`` among the current objects;
    nothing for an Ingress it does not serve (another class, another namespace, deleted)."""
    ing = _incoming(request)
    namespace, name = object_key(ing)
    meta = ing["metadata"]
    if meta.get("deletionTimestamp"):
        return []  # as CheckIngress: an Ingress being deleted is not checked
    if watch_namespace and namespace != watch_namespace:
        return []
    if not ingress_owner(snapshot, options, ing).ours:
        return []
    out: list[Finding] = []
    verdicts = ann.classify(meta.get("annotations") if isinstance(meta, dict) else None)
    reported = set()
    for v in verdicts:
        reported.add(v.reason)
        short = v.key.rpartition("/")[2]
        if v.status == "refused":
            # Refused because it cannot apply to ingressd (check.py _fails): it changes
            # nothing a client relies on, so it is only worth a warning.
            kind = "unsupported" if short in ann.NOT_APPLICABLE else "refused"
            out.append(Finding(kind, v.reason))
        elif v.status == "invalid":
            out.append(Finding("invalid", v.reason))
        elif v.status == "unsupported":
            out.append(Finding("unsupported", v.reason))
        elif v.status == "overridden":  # its ingressd.io/ twin is read instead
            out.append(Finding("problem", v.reason))
    local = _neighbourhood(snapshot, ing)
    out += _conflicts(local, options, ing)
    table = build_table(local, options, now=now)
    seen: set[str] = set()
    for p in table.problems:
        if p.ref != ("Ingress", namespace, name) or p.reason in reported or p.reason in seen:
            continue
        seen.add(p.reason)
        if _CONFLICT_MARK in p.reason:
            continue  # _conflicts says it, as ingress-nginx's checkOverlap would
        regex = _REGEX_MARK in p.reason or _REGEX_MARK_PATH in p.reason
        out.append(Finding("regex" if regex else "problem", p.reason))
    order = {k: i for i, k in enumerate(KINDS)}
    return sorted(out, key=lambda f: order[f.kind])


def _incoming(request: ReviewRequest) -> Obj:
    """The object under review as the store would hold it: kind, namespace, name and a
    creation time set (a CREATE may come before the API server has named it)."""
    assert request.obj is not None
    ing = dict(request.obj)
    ing["kind"] = "Ingress"
    ing["apiVersion"] = "networking.k8s.io/v1"
    meta = ing.get("metadata")
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta["namespace"] = meta.get("namespace") or request.namespace or "default"
    # generateName: the name is made after admission; a placeholder no object has.
    meta["name"] = meta.get("name") or request.name or f"{meta.get('generateName') or ''}(new)"
    if not meta.get("creationTimestamp"):
        # The newest of all: what it conflicts with is older, and keeps its routes.
        meta["creationTimestamp"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ing["metadata"] = meta
    return ing


# -- conflicts -------------------------------------------------------------------------------


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _locations(ing: Obj) -> Iterator[tuple[str, str, bool]]:
    """(host, path, Exact?) of each rule path with a Service backend, as ingress-nginx makes
    a location of it: an empty path is "/", ImplementationSpecific is a prefix."""
    for rule in map(_mapping, _list(_mapping(ing.get("spec")).get("rules"))):
        host = str(rule.get("host") or "").lower()
        for p in map(_mapping, _list(_mapping(rule.get("http")).get("paths"))):
            if not _mapping(p.get("backend")).get("service"):
                continue  # checkOverlap skips paths without a Service backend
            yield host, str(p.get("path") or "/"), p.get("pathType") == "Exact"


def _is_canary(ing: Obj) -> bool:
    found = ann.collect(_mapping(ing.get("metadata")).get("annotations"))
    return found.get("canary", ("", ""))[1].strip().lower() == "true"


def _conflicts(snapshot: Snapshot, options: BuildOptions, ing: Obj) -> list[Finding]:
    """ingress-nginx's checkOverlap (internal/ingress/controller/controller.go): a host and
    path another Ingress of the class already has denies, unless exactly one of the two
    is a canary (a canary is how a second Ingress shares a path). Unlike it, every
    conflicting path is reported, not the first one, and Prefix /p beside Exact /p is
    no conflict (they are two locations, as its getBackendServers makes them)."""
    mine = set(_locations(ing))
    if not mine:
        return []
    key = object_key(ing)
    canary = _is_canary(ing)
    out: list[Finding] = []
    for other_key, other in sorted(snapshot.of("Ingress").items()):
        if other_key == key or _mapping(other.get("metadata")).get("deletionTimestamp"):
            continue
        shared = mine & set(_locations(other))
        if not shared or canary != _is_canary(other):
            continue
        if not ingress_owner(snapshot, options, other).ours:
            continue
        for host, path, exact in sorted(shared):
            kind = "Exact" if exact else "Prefix"
            out.append(
                Finding(
                    "conflict",
                    f"host {host or '*'!r} and path {path!r} ({kind}) are already defined "
                    f"in Ingress {other_key[0]}/{other_key[1]}",
                )
            )
    return out


# -- the build -------------------------------------------------------------------------------


def _hosts(ing: Obj) -> set[str]:
    """The names whose part of the table ``ing`` can touch: its rule and TLS hosts, its
    server-alias names (routing/aliases.py weighs them against every rule host and
    alias), and each one's www. twin (from-to-www-redirect); "" for the catch-all."""
    spec = _mapping(ing.get("spec"))
    hosts = {str(_mapping(r).get("host") or "").lower() for r in _list(spec.get("rules"))}
    for entry in map(_mapping, _list(spec.get("tls"))):
        hosts.update(str(h).lower() for h in _list(entry.get("hosts")))
    if spec.get("defaultBackend") is not None:
        hosts.add("")
    annotations = _mapping(ing.get("metadata")).get("annotations")
    hosts.update(
        a.lower()
        for a in ann.server_aliases(annotations if isinstance(annotations, dict) else None)
    )
    hosts |= {h.removeprefix("www.") if h.startswith("www.") else f"www.{h}" for h in hosts if h}
    return hosts


def _neighbourhood(snapshot: Snapshot, ing: Obj) -> Snapshot:
    """The snapshot with ``ing`` in place, and of the other Ingresses only those sharing a
    host with it: the builder merges Ingresses host by host, so what it says about
    ``ing`` depends on those alone, and a review costs what its hosts cost, not what
    the whole cluster's table does."""
    key = object_key(ing)
    hosts = _hosts(ing)
    ingresses: dict[tuple[str, str], Obj] = {key: ing}
    for other_key, other in snapshot.of("Ingress").items():
        if other_key != key and hosts & _hosts(other):
            ingresses[other_key] = other
    objects = dict(snapshot.objects)
    objects["Ingress"] = MappingProxyType(ingresses)
    return Snapshot(objects, snapshot.slices_by_service, snapshot.origins)


# -- bounds on what goes back ------------------------------------------------------------------


def _cut(text: str, limit: int) -> str:
    # Printable only: the API server refuses warnings with control characters.
    text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bounded_warnings(messages: list[str]) -> Iterator[str]:
    total = 0
    for i, message in enumerate(messages):
        text = _cut(f"ingressd: {message}", MAX_WARNING_CHARS)
        left = len(messages) - i - 1
        note = f"ingressd: {left + 1} more warnings left out (ingressd check lists them all)"
        if total + len(text) + (len(note) if left else 0) > MAX_WARNINGS_CHARS:
            yield note
            return
        total += len(text)
        yield text
