"""deploy/ as ``kubectl apply -k`` would send it, and how the API server would judge it.

* ``render(folder)``: a small kustomize. It implements the parts of a
  kustomization.yaml this repository uses (``resources`` files and folders,
  ``namespace``, ``labels``, ``images``) and raises ``KustomizeError`` on
  anything else, so a kustomization that grows a feature it does not know
  fails the tests instead of being rendered wrongly.
* ``container_args(deployment, container)``: the container's args with
  ``$(VAR)`` references expanded from its env, as the kubelet does.
* ``Authorizer``: RBAC as the API server evaluates it for one ServiceAccount,
  from the Roles, ClusterRoles and bindings in a list of objects, and
  ``api_access`` to turn an HTTP request into what RBAC checks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from e2e_helpers import REPO_ROOT

from ingressd.model.objects import Obj

DEPLOY = REPO_ROOT / "deploy"
EXAMPLE = DEPLOY / "example"
MONITORING = DEPLOY / "monitoring"

# Kinds this renderer knows the scope of; any other kind is an error.
CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "IngressClass",
        "ValidatingWebhookConfiguration",
    }
)
NAMESPACED = frozenset(
    {
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Ingress",
        "Secret",
        "ConfigMap",
        "EndpointSlice",
        "PodMonitor",
        "ServiceMonitor",
    }
)
WORKLOADS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})


class KustomizeError(Exception):
    """The kustomization uses something ``render`` does not implement, or is malformed."""


def render(folder: Path) -> list[Obj]:
    """The objects ``kubectl apply -k folder`` would send, in resource order."""
    kfile = folder / "kustomization.yaml"
    if not kfile.is_file():
        raise KustomizeError(f"{folder}: no kustomization.yaml")
    spec = yaml.safe_load(kfile.read_text()) or {}
    known = {"apiVersion", "kind", "resources", "namespace", "labels", "images"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise KustomizeError(f"{kfile}: {unknown} not implemented by this renderer")
    if (spec.get("apiVersion"), spec.get("kind")) != (
        "kustomize.config.k8s.io/v1beta1",
        "Kustomization",
    ):
        raise KustomizeError(f"{kfile}: not a kustomize.config.k8s.io/v1beta1 Kustomization")
    objs: list[Obj] = []
    for entry in spec.get("resources") or []:
        objs += _resource(folder, entry)
    if "namespace" in spec:
        _set_namespace(objs, spec["namespace"], kfile)
    for entry in spec.get("labels") or []:
        _add_labels(objs, entry, kfile)
    for entry in spec.get("images") or []:
        _set_image(objs, entry, kfile)
    return objs


def _resource(folder: Path, entry: Any) -> list[Obj]:
    if not isinstance(entry, str) or "://" in entry or entry.startswith(("/", "..")):
        # kustomize refuses files outside the kustomization's folder too.
        raise KustomizeError(f"{folder}: resource {entry!r} is not a file or folder inside it")
    path = folder / entry
    if path.is_dir():
        return render(path)
    if not path.is_file():
        raise KustomizeError(f"{folder}: resource {entry} does not exist")
    objs = list(yaml.safe_load_all(path.read_text()))
    if None in objs:
        # kustomize's handling of empty (or comments-only) documents is not emulated.
        raise KustomizeError(f"{path}: an empty YAML document")
    for obj in objs:
        kind = obj.get("kind") if isinstance(obj, dict) else None
        if kind not in CLUSTER_SCOPED | NAMESPACED:
            raise KustomizeError(f"{path}: kind {kind!r} is not known to this renderer")
    return objs


def _set_namespace(objs: list[Obj], namespace: str, kfile: Path) -> None:
    for obj in objs:
        meta = obj.setdefault("metadata", {})
        if obj["kind"] == "Namespace" and meta.get("name") != namespace:
            # kustomize's handling of a second Namespace is not emulated here.
            raise KustomizeError(f"{kfile}: Namespace {meta.get('name')} is not {namespace}")
        if obj["kind"] in NAMESPACED:
            meta["namespace"] = namespace
        for subject in obj.get("subjects") or []:
            # kustomize may rewrite ServiceAccount subjects; make that a no-op.
            if subject.get("kind") == "ServiceAccount" and subject.get("namespace") != namespace:
                raise KustomizeError(
                    f"{kfile}: {obj['kind']} {meta.get('name')} names ServiceAccount "
                    f"{subject.get('name')} in {subject.get('namespace')!r}, not {namespace!r}"
                )


def _add_labels(objs: list[Obj], entry: Any, kfile: Path) -> None:
    if not isinstance(entry, dict) or set(entry) - {
        "pairs",
        "includeSelectors",
        "includeTemplates",
    }:
        raise KustomizeError(f"{kfile}: labels entry {entry!r} not implemented")
    if entry.get("includeSelectors"):
        raise KustomizeError(f"{kfile}: labels with includeSelectors not implemented")
    pairs = entry.get("pairs") or {}
    for obj in objs:
        obj["metadata"].setdefault("labels", {}).update(pairs)
        if entry.get("includeTemplates") and obj["kind"] in WORKLOADS:
            template = obj["spec"]["template"].setdefault("metadata", {})
            template.setdefault("labels", {}).update(pairs)


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """``registry:5000/name:tag@sha256:...`` -> (name, tag, digest)."""
    name, _, digest = image.partition("@")
    repo, colon, tag = name.rpartition(":")
    if colon and "/" not in tag:
        return repo, tag, digest or None
    return name, None, digest or None


def _set_image(objs: list[Obj], entry: Any, kfile: Path) -> None:
    if not isinstance(entry, dict) or set(entry) - {"name", "newName", "newTag", "digest"}:
        raise KustomizeError(f"{kfile}: images entry {entry!r} not implemented")
    for container in (c for obj in objs for c in containers(obj, init=True)):
        name, tag, digest = split_image(container["image"])
        if name != entry["name"]:
            continue
        if digest:
            raise KustomizeError(f"{kfile}: replacing {container['image']} not implemented")
        name = entry.get("newName", name)
        if "digest" in entry:
            container["image"] = f"{name}@{entry['digest']}"
        else:
            tag = entry.get("newTag", tag)
            container["image"] = name if tag is None else f"{name}:{tag}"


# -- looking things up ---------------------------------------------------------------------


def find(objs: Iterable[Obj], kind: str, name: str | None = None) -> Obj:
    """The one object of ``kind`` (and ``name``); fails when there is none or several."""
    found = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"].get("name"))]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def of_kind(objs: Iterable[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def pod_spec(obj: Obj) -> dict[str, Any] | None:
    if obj["kind"] in WORKLOADS:
        return obj["spec"]["template"]["spec"]
    return None


def containers(obj: Obj, init: bool = False) -> Iterator[dict[str, Any]]:
    spec = pod_spec(obj)
    if spec is None:
        return
    yield from spec.get("containers") or []
    if init:
        yield from spec.get("initContainers") or []


def container(obj: Obj, name: str) -> dict[str, Any]:
    found = [c for c in containers(obj) if c["name"] == name]
    assert len(found) == 1, f"{obj['kind']} {obj['metadata']['name']}: no container {name}"
    return found[0]


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def container_args(workload: Obj, name: str) -> list[str]:
    """The container's args with ``$(VAR)`` expanded from its env, as the kubelet does.

    Downward-API values: ``metadata.namespace`` is the workload's namespace,
    ``metadata.name`` a Pod name made up from the workload's. A reference to a
    variable that is not defined is an error here (the kubelet would pass it
    on literally, which is never what a manifest means).
    """
    c = container(workload, name)
    env: dict[str, str] = {}
    for var in c.get("env") or []:
        if "value" in var:
            env[var["name"]] = _expand(str(var["value"]), env)
            continue
        field = ((var.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if field == "metadata.namespace":
            env[var["name"]] = workload["metadata"]["namespace"]
        elif field == "metadata.name":
            env[var["name"]] = f"{workload['metadata']['name']}-0"
        else:
            raise KustomizeError(f"env {var['name']}: {var.get('valueFrom')} not implemented")
    return [_expand(arg, env) for arg in c.get("args") or []]


def _expand(text: str, env: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        if m.group(1) not in env:
            raise KustomizeError(f"$({m.group(1)}) in {text!r} is not defined in the env")
        return env[m.group(1)]

    return _VAR.sub(sub, text)


def option(args: Iterable[str], flag: str) -> str | None:
    """The value of ``--flag=value`` or ``--flag value`` in ``args`` (the last one wins)."""
    args = list(args)
    value = None
    for i, arg in enumerate(args):
        if arg.startswith(f"{flag}="):
            value = arg.partition("=")[2]
        elif arg == flag and i + 1 < len(args):
            value = args[i + 1]
    return value


# -- RBAC --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    """One request as RBAC sees it."""

    verb: str
    group: str  # "" is the core group
    resource: str  # with "/subresource" when there is one
    namespace: str  # "" for cluster-scoped requests and lists across all namespaces
    name: str  # "" for lists, watches and creates


def api_access(method: str, path: str, query: dict[str, str]) -> Access | None:
    """What RBAC checks for an HTTP request to the API; None for non-resource paths."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        return None
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    resource, name = rest[0], rest[1] if len(rest) > 1 else ""
    if len(rest) > 2:
        resource += "/" + rest[2]
    verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
    if verb is None:
        watching = query.get("watch", "").lower() in ("true", "1")
        verb = "get" if name else "watch" if watching else "list"
        if not name:
            # As the API server's RequestInfoFactory: a list or watch with the
            # field selector metadata.name=X is authorized as for the name X,
            # so RBAC resourceNames can grant it.
            for term in (query.get("fieldSelector") or "").split(","):
                key, sep, value = term.partition("=")
                if key.strip() == "metadata.name" and sep and not value.startswith("="):
                    name = value.strip()
    return Access(verb, group, resource, namespace, name)


@dataclass(frozen=True)
class Grant:
    """One rule of one Role or ClusterRole, as bound: where it applies."""

    role: str  # "ClusterRole/NAME" or "Role/NS/NAME"
    index: int  # of the rule within the role
    namespace: str | None  # None: everywhere (a ClusterRole bound by a ClusterRoleBinding)
    rule: dict[str, Any]

    def allows(self, access: Access) -> bool:
        rule = self.rule
        if self.namespace is not None and access.namespace != self.namespace:
            return False
        names = rule.get("resourceNames") or []
        return (
            _matches(rule.get("verbs"), access.verb)
            and _matches(rule.get("apiGroups"), access.group)
            and _matches(rule.get("resources"), access.resource)
            and (not names or access.name in names)
        )

    def permissions(self) -> set[tuple[str, str, str]]:
        """Every (verb, group, resource) this rule grants."""
        return {
            (v, g, r)
            for v in self.rule.get("verbs") or []
            for g in self.rule.get("apiGroups") or []
            for r in self.rule.get("resources") or []
        }


def _matches(allowed: Any, value: str) -> bool:
    return isinstance(allowed, list) and ("*" in allowed or value in allowed)


class Authorizer:
    """RBAC for the ServiceAccount ``namespace/name``, from the objects that define it."""

    def __init__(self, objs: Iterable[Obj], namespace: str, name: str) -> None:
        objs = list(objs)
        roles = {
            (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
            for o in objs
            if o["kind"] in ("Role", "ClusterRole")
        }
        self.grants: list[Grant] = []
        for binding in objs:
            if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
                continue
            subjects = binding.get("subjects") or []
            if not any(
                s.get("kind") == "ServiceAccount"
                and s.get("name") == name
                and s.get("namespace") == namespace
                for s in subjects
            ):
                continue
            ref = binding["roleRef"]
            bound_ns = (
                binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
            )
            role_ns = bound_ns if ref["kind"] == "Role" else ""
            role = roles.get((ref["kind"], role_ns or "", ref["name"]))
            assert role is not None, f"{binding['kind']} {binding['metadata']['name']}: no {ref}"
            label = "/".join(filter(None, (ref["kind"], role_ns, ref["name"])))
            for i, rule in enumerate(role.get("rules") or []):
                self.grants.append(Grant(label, i, bound_ns, rule))

    def allowed_by(self, access: Access) -> list[Grant]:
        return [g for g in self.grants if g.allows(access)]
