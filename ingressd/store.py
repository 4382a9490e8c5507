"""The Kubernetes objects ingressd reads, held the same way whatever their source.

Objects are kept as the plain JSON-shaped dicts the API server (or a YAML file)
gives, so the manifest source and the cluster source feed one pipeline; the
builder turns them into typed values and reports what it cannot use.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

Obj = dict[str, Any]
# (namespace, name); cluster-scoped kinds use "" as namespace
Key = tuple[str, str]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"

# kind -> apiVersions we accept for it
KINDS: Mapping[str, tuple[str, ...]] = {
    "IngressClass": ("networking.k8s.io/v1",),
    "Ingress": ("networking.k8s.io/v1",),
    "Service": ("v1",),
    "EndpointSlice": ("discovery.k8s.io/v1",),
    "Secret": ("v1",),
}
CLUSTER_SCOPED = frozenset({"IngressClass"})


def object_key(obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


def describe(obj: Obj) -> str:
    """ "Ingress default/web" — how objects are named in problems and logs."""
    ns, name = object_key(obj)
    kind = obj.get("kind", "object")
    return f"{kind} {ns}/{name}" if ns else f"{kind} {name}"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A consistent, read-only view of every object, taken for one build."""

    objects: Mapping[str, Mapping[Key, Obj]]
    # (namespace, service name) -> EndpointSlices of that Service
    slices_by_service: Mapping[Key, tuple[Obj, ...]]
    # (kind, namespace, name) -> where the object came from (file path), if known
    origins: Mapping[tuple[str, str, str], str] = field(default_factory=dict)

    def of(self, kind: str) -> Mapping[Key, Obj]:
        return self.objects.get(kind, MappingProxyType({}))

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        return self.of(kind).get((namespace, name))

    def origin(self, obj: Obj) -> str:
        ns, name = object_key(obj)
        return self.origins.get((obj.get("kind", ""), ns, name), "")


class ObjectStore:
    """Mutable collection of objects; ``snapshot()`` freezes it for a build."""

    def __init__(self) -> None:
        self._objects: dict[str, dict[Key, Obj]] = {kind: {} for kind in KINDS}
        self._origins: dict[tuple[str, str, str], str] = {}

    def put(self, obj: Obj, origin: str = "") -> bool:
        """Add or replace ``obj``; True if it differs from what was held."""
        kind = obj["kind"]
        key = object_key(obj)
        bucket = self._objects[kind]
        if origin:
            self._origins[(kind, *key)] = origin
        if bucket.get(key) == obj:
            return False
        bucket[key] = obj
        return True

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        self._origins.pop((kind, namespace, name), None)
        return self._objects[kind].pop((namespace, name), None) is not None

    def replace_all(self, kind: str, objs: Iterable[Obj], keep_origin: str = "") -> None:
        """Hold exactly ``objs`` of ``kind``, except those put with origin ``keep_origin``."""
        fresh = {object_key(o): o for o in objs}
        if keep_origin:
            for key, obj in self._objects[kind].items():
                if key not in fresh and self._origins.get((kind, *key)) == keep_origin:
                    fresh[key] = obj
        self._objects[kind] = fresh

    def origin_of(self, kind: str, namespace: str, name: str) -> str | None:
        """Where a held object came from ("" when unrecorded); None when not held."""
        if (namespace, name) not in self._objects[kind]:
            return None
        return self._origins.get((kind, namespace, name), "")

    def snapshot(self) -> Snapshot:
        by_service: dict[Key, list[Obj]] = defaultdict(list)
        for (ns, _), eps in self._objects["EndpointSlice"].items():
            labels = (eps.get("metadata") or {}).get("labels") or {}
            svc = labels.get(SERVICE_NAME_LABEL)
            if svc:
                by_service[(ns, svc)].append(eps)
        return Snapshot(
            objects=MappingProxyType(
                {kind: MappingProxyType(dict(b)) for kind, b in self._objects.items()}
            ),
            slices_by_service=MappingProxyType({k: tuple(v) for k, v in by_service.items()}),
            origins=MappingProxyType(dict(self._origins)),
        )
