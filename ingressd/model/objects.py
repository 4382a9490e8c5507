"""The Kubernetes objects ingressd reads, held the same way whatever their source.

Objects are kept as the plain JSON-shaped dicts the API server (or a YAML file)
gives, so the manifest source and the cluster source feed one pipeline; the
builder turns them into typed values and reports what it cannot use.
"""

from __future__ import annotations

import itertools
import operator
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

Obj = dict[str, Any]
# (namespace, name); cluster-scoped kinds use "" as namespace
Key = tuple[str, str]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"

# kind -> apiVersions we accept for it
KINDS: Mapping[str, tuple[str, ...]] = {
    # Only the TCP and UDP services ConfigMaps are read (stream/services.py).
    "ConfigMap": ("v1",),
    "IngressClass": ("networking.k8s.io/v1",),
    "Ingress": ("networking.k8s.io/v1",),
    "Service": ("v1",),
    "EndpointSlice": ("discovery.k8s.io/v1",),
    "Secret": ("v1",),
}
CLUSTER_SCOPED = frozenset({"IngressClass"})


# Strings up to this long are shared (see compact); longer ones are mostly one of a
# kind (certificates, keys, long annotations), not worth a lookup.
SHARE_MAX = 64
# Deeper than this, a value is kept as it is: sharing must not recurse without bound.
SHARE_DEPTH = 32
# Strings the fallback table (below) holds at most before it starts afresh.
SHARE_ENTRIES = 1 << 16


def interning_frees() -> bool:
    """Whether ``sys.intern``'s strings are freed once nothing else uses them.

    They are in CPython 3.11 and 3.13+; early 3.12 releases made them immortal
    (CPython gh-113993), and every name and resourceVersion read would then be
    kept for good. Immortal objects report a huge reference count.
    """
    probe = sys.intern("".join(("ingressd-", "interning-", "probe")))
    return sys.getrefcount(probe) < 1 << 20


_table: dict[str, str] = {}


def share_bounded(text: str) -> str:
    """``text``, or an equal string seen before, from a table of at most
    SHARE_ENTRIES strings that is emptied when full: it keeps at most that many
    strings that no object uses any more. (The GIL keeps the dict whole; two
    threads racing at worst share less.)"""
    found = _table.get(text)
    if found is None:
        if len(_table) >= SHARE_ENTRIES:
            _table.clear()
        _table[text] = found = text
    return found


share = sys.intern if interning_frees() else share_bounded


def compact(value: Any, depth: int = 0) -> Any:
    """A copy of the JSON-shaped ``value`` whose keys and short strings are shared.

    Why: a parser makes a new string for every key and value it reads, so
    10,000 Ingresses with their Services and EndpointSlices held "metadata",
    "namespace", "pathType", "Prefix", "addresses" ... over a million times:
    half of what the objects cost, and every worker process holds them all
    again. Shared strings are freed with the last object using them (or, where
    interned strings are immortal, kept at most SHARE_ENTRIES at a time).
    Dicts and lists are copied (the caller's may be shared by YAML anchors);
    other values are kept.
    """
    kind = type(value)
    if kind is str:
        return share(value) if len(value) <= SHARE_MAX else value
    if depth >= SHARE_DEPTH:
        return value
    if kind is dict:
        intern = share
        return {
            (intern(k) if type(k) is str and len(k) <= SHARE_MAX else k): compact(v, depth + 1)
            for k, v in value.items()
        }
    if kind is list:
        return [compact(v, depth + 1) for v in value]
    return value


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
    """Mutable collection of objects; ``snapshot()`` freezes it for a build.

    Objects are never modified in place: ``put`` replaces. A snapshot shares the
    object dicts, and hands out a kind's mapping again, the same object, while
    nothing of that kind changed. Builders rely on both to tell what changed
    by identity (routing/build.py).
    """

    def __init__(self) -> None:
        self._objects: dict[str, dict[Key, Obj]] = {kind: {} for kind in KINDS}
        self._origins: dict[tuple[str, str, str], str] = {}
        # EndpointSlices by (namespace, Service), kept as slices come and go:
        # grouping all of them again for every snapshot cost milliseconds.
        self._slices: dict[Key, dict[Key, Obj]] = {}
        # What the last snapshot handed out, while still true; None: to be made.
        self._frozen: dict[str, Mapping[Key, Obj] | None] = dict.fromkeys(KINDS)
        self._frozen_slices: dict[Key, tuple[Obj, ...]] = {}
        self._stale_slices: set[Key] = set()  # Services whose tuple is to be made again
        self._slices_view: Mapping[Key, tuple[Obj, ...]] | None = None
        self._origins_view: Mapping[tuple[str, str, str], str] | None = None

    def put(self, obj: Obj, origin: str = "") -> bool:
        """Add or replace ``obj``; True if it differs from what was held."""
        kind = obj["kind"]
        key = object_key(obj)
        bucket = self._objects[kind]
        if origin and self._origins.get((kind, *key)) != origin:
            self._origins[(kind, *key)] = origin
            self._origins_view = None
        old = bucket.get(key)
        if old == obj:
            return False
        bucket[key] = obj
        self._frozen[kind] = None
        if kind == "EndpointSlice":
            self._reslice(key, old, obj)
        return True

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        if self._origins.pop((kind, namespace, name), None) is not None:
            self._origins_view = None
        old = self._objects[kind].pop((namespace, name), None)
        if old is None:
            return False
        self._frozen[kind] = None
        if kind == "EndpointSlice":
            self._reslice((namespace, name), old, None)
        return True

    def replace_all(self, kind: str, objs: Iterable[Obj], keep_origin: str = "") -> None:
        """Hold exactly ``objs`` of ``kind``, except those put with origin ``keep_origin``."""
        fresh = {object_key(o): o for o in objs}
        if keep_origin:
            for key, obj in self._objects[kind].items():
                if key not in fresh and self._origins.get((kind, *key)) == keep_origin:
                    fresh[key] = obj
        self._objects[kind] = fresh
        self._frozen[kind] = None
        if kind == "EndpointSlice":
            self._stale_slices.update(self._slices)
            self._slices = {}
            for key, obj in fresh.items():
                self._reslice(key, None, obj)

    def origin_of(self, kind: str, namespace: str, name: str) -> str | None:
        """Where a held object came from ("" when unrecorded); None when not held."""
        if (namespace, name) not in self._objects[kind]:
            return None
        return self._origins.get((kind, namespace, name), "")

    def snapshot(self) -> Snapshot:
        # Unchanged parts are the last snapshot's own (immutable) mappings; a
        # changed kind is copied once, which costs little beside what it saves.
        objects = {}
        for kind, bucket in self._objects.items():
            frozen = self._frozen[kind]
            if frozen is None:
                frozen = self._frozen[kind] = MappingProxyType(dict(bucket))
            objects[kind] = frozen
        if self._origins_view is None:
            self._origins_view = MappingProxyType(dict(self._origins))
        return Snapshot(
            objects=MappingProxyType(objects),
            slices_by_service=self._slices_snapshot(),
            origins=self._origins_view,
        )

    # -- EndpointSlices by Service ---------------------------------------------------------

    def _reslice(self, key: Key, old: Obj | None, new: Obj | None) -> None:
        """Move slice ``key`` from its old Service's group to its new one's."""
        was = None if old is None else _service_of(key, old)
        now = None if new is None else _service_of(key, new)
        if was is not None and was != now:
            group = self._slices[was]
            del group[key]
            if not group:
                del self._slices[was]
            self._stale_slices.add(was)
        if now is not None:
            self._slices.setdefault(now, {})[key] = new  # type: ignore[assignment]
            self._stale_slices.add(now)

    def _slices_snapshot(self) -> Mapping[Key, tuple[Obj, ...]]:
        if self._stale_slices:
            # A new dict: the last snapshot's stays as it was.
            groups = dict(self._frozen_slices)
            for service in self._stale_slices:
                group = self._slices.get(service)
                if group:
                    groups[service] = tuple(group.values())
                else:
                    groups.pop(service, None)
            self._stale_slices.clear()
            self._frozen_slices = groups
            self._slices_view = None
        if self._slices_view is None:
            self._slices_view = MappingProxyType(self._frozen_slices)
        return self._slices_view


def _service_of(key: Key, eps: Obj) -> Key | None:
    meta = eps.get("metadata")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    svc = labels.get(SERVICE_NAME_LABEL) if isinstance(labels, dict) else None
    return (key[0], svc) if isinstance(svc, str) and svc else None


def changed_keys(old: Mapping[Any, Any], new: Mapping[Any, Any], same: Callable[..., bool]) -> list:
    """Keys whose value in ``new`` is not ``old``'s (nor ``same`` as it), removed ones too."""
    if old is new:
        return []
    keys = list(new)
    if len(keys) == len(old) and keys == list(old):
        # The same keys in the same order (as after puts to a store): compare the
        # values pairwise without a Python-level loop, several times faster.
        changed = list(itertools.compress(keys, map(operator.is_not, old.values(), new.values())))
        return [key for key in changed if not same(old[key], new[key])]
    changed = []
    added = 0
    get = old.get
    for key, value in new.items():
        was = get(key)
        if was is value:
            continue
        if was is None:
            added += 1
            changed.append(key)
        elif not same(was, value):
            changed.append(key)
    if len(old) + added != len(new):  # some were removed
        changed += [key for key in old if key not in new]
    return changed
