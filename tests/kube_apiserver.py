"""A small Kubernetes API server for tests, speaking the real REST wire protocol.

``KubeApiServer`` serves, over HTTPS on 127.0.0.1 with a certificate that clients
verify, exactly the resources an ingress controller uses: IngressClass, Ingress,
Service, EndpointSlice, Secret, Lease, Event and
ValidatingWebhookConfiguration. The real ``kubernetes`` client
reaches it through an ordinary kubeconfig (``write_kubeconfig``). It keeps what
clients rely on: one global resourceVersion, lists paged over a consistent
snapshot, watches that resume from a resourceVersion or fail with 410 Gone,
bookmarks, optimistic concurrency (409), status subresources that split spec
from status writes, merge and JSON patches, and a user per bearer token.

Tests reach behind the API with sync methods (``create``, ``update``, ``get``,
...), inspect every request and its user (``requests``, ``writes``), and cause
failures: ``stop``/``start`` (an outage; same port and state afterwards),
``cut_watches`` (connections cut mid-stream) and ``compact`` (watch history and
continue tokens expire).

It is not a real API server. There is no admission, defaulting or validation
beyond names, no RBAC (a known token is a user who may do anything), no
protobuf, CBOR or server-side apply, no managedFields, finalizers or graceful
deletion, only simple field and label selectors, and a strategic merge patch is
applied as a plain JSON merge patch (lists are replaced, not merged by key).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime as dt
import functools
import json
import secrets
import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from aiohttp import web
from e2e_helpers import LOCALHOST, BackgroundLoop

from ingressd.model.objects import Obj
from ingressd.policy.tls import self_signed, server_context

__all__ = ["RESOURCE_TYPES", "ApiError", "KubeApiServer", "Request", "ResourceType"]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
VERSION = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class ResourceType:
    kind: str
    group: str  # "" is the core group
    version: str
    plural: str
    namespaced: bool = True
    status: bool = False  # has /status; writes to the main resource keep the stored status

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """How error messages name it: ``ingresses.networking.k8s.io``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


RESOURCE_TYPES = (
    ResourceType("IngressClass", "networking.k8s.io", "v1", "ingressclasses", namespaced=False),
    ResourceType("Ingress", "networking.k8s.io", "v1", "ingresses", status=True),
    ResourceType("Service", "", "v1", "services", status=True),
    ResourceType("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices"),
    ResourceType("Secret", "", "v1", "secrets"),
    ResourceType("ConfigMap", "", "v1", "configmaps"),
    ResourceType("Lease", "coordination.k8s.io", "v1", "leases"),
    # Written by the admission webhook's leader (its caBundle): ingressd/kube/webhook_certs.py
    ResourceType(
        "ValidatingWebhookConfiguration",
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        namespaced=False,
    ),
    ResourceType("Event", "", "v1", "events"),
    ResourceType("Event", "events.k8s.io", "v1", "events"),
)
_BY_PATH = {(rt.group, rt.version, rt.plural): rt for rt in RESOURCE_TYPES}
_EVENT_TYPES = tuple(rt for rt in RESOURCE_TYPES if rt.kind == "Event")


class Request(NamedTuple):
    method: str
    path: str
    query: dict[str, str]
    user: str | None  # None: no token, or one the server does not know


class ApiError(Exception):
    """A failure the API answers with a Status object."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def _details(rt: ResourceType, name: str) -> Obj:
    details = {"name": name, "kind": rt.plural}
    if rt.group:
        details["group"] = rt.group
    return details


def _not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.qualified} "{name}" not found', _details(rt, name))


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _invalid(message: str) -> ApiError:
    return ApiError(422, "Invalid", message)


def _no_route() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource")


# -- selectors and patches -------------------------------------------------------------


_FIELDS: dict[str, Callable[[Obj], str]] = {
    "metadata.name": lambda o: o["metadata"].get("name", ""),
    "metadata.namespace": lambda o: o["metadata"].get("namespace", ""),
    "type": lambda o: o.get("type", ""),
}


def _terms(selector: str) -> list[tuple[str, str, str]]:
    """``a=b,c!=d`` -> [(key, "=" or "!=" or "", value)]; "" is a bare key."""
    terms = []
    for term in filter(None, (t.strip() for t in selector.split(","))):
        for op in ("!=", "==", "="):
            if op in term:
                key, _, value = term.partition(op)
                terms.append((key.strip(), "!=" if op == "!=" else "=", value.strip()))
                break
        else:
            terms.append((term, "", ""))
    return terms


def _selector(
    rt: ResourceType, query: Mapping[str, str], namespace: str | None
) -> Callable[[Obj], bool]:
    tests: list[Callable[[Obj], bool]] = []
    if namespace is not None:
        tests.append(lambda o: o["metadata"].get("namespace") == namespace)
    for key, op, value in _terms(query.get("fieldSelector", "")):
        get = _FIELDS.get(key)
        if get is None or not op or (key == "type" and rt.kind != "Secret"):
            raise _bad_request(f'field label not supported: "{key}"')
        tests.append(lambda o, get=get, op=op, value=value: (get(o) == value) == (op == "="))
    for key, op, value in _terms(query.get("labelSelector", "")):
        if " " in key or "(" in value:
            raise _bad_request(f"unsupported label selector term: {key!r}")  # set-based forms
        if op:
            tests.append(lambda o, k=key, op=op, v=value: (_labels(o).get(k) == v) == (op == "="))
        else:
            present, k = not key.startswith("!"), key.lstrip("!")
            tests.append(lambda o, k=k, present=present: (k in _labels(o)) == present)
    return lambda o: all(test(o) for test in tests)


def _labels(obj: Obj) -> dict[str, str]:
    return obj["metadata"].get("labels") or {}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(doc: Any, ops: list[Any]) -> Any:
    """RFC 6902 JSON patch: add, remove, replace and test."""
    doc = copy.deepcopy(doc)
    for op in ops:
        try:
            kind = op["op"]
            path = op["path"]
            tokens = [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")[1:]]
            if path and not path.startswith("/"):
                raise ValueError(path)
            parent = doc
            for token in tokens[:-1]:
                parent = parent[int(token) if isinstance(parent, list) else token]
            last = tokens[-1] if tokens else None
            if kind == "test":
                here = parent if last is None else parent[_index(parent, last)]
                if here != op["value"]:
                    raise _invalid(f"the server rejected our request: test failed at {path}")
            elif last is None:  # the whole document
                doc = None if kind == "remove" else copy.deepcopy(op["value"])
            elif kind == "add" and isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if not 0 <= index <= len(parent):
                    raise IndexError(index)
                parent.insert(index, copy.deepcopy(op["value"]))
            elif kind == "add":
                parent[last] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del parent[_index(parent, last)]
            elif kind == "replace":
                if isinstance(parent, dict) and last not in parent:
                    raise KeyError(last)  # unlike add, replace needs the target to exist
                parent[_index(parent, last)] = copy.deepcopy(op["value"])
            else:
                raise _invalid(f"unsupported JSON patch operation {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise _invalid(f"the server rejected our request: JSON patch {op!r}: {e!r}") from e
    return doc


def _index(container: Any, token: str) -> Any:
    return int(token) if isinstance(container, list) else token


# -- state -----------------------------------------------------------------------------


class _Change(NamedTuple):
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj  # new state; for DELETED the last state with the deletion's resourceVersion
    old: Obj | None


class _Mark(NamedTuple):
    rv: int  # a bookmark: everything up to here has been queued before it


@dataclass(eq=False)
class _Watch:
    rt: ResourceType
    match: Callable[[Obj], bool]
    loop: asyncio.AbstractEventLoop
    transport: asyncio.BaseTransport | None
    queue: asyncio.Queue[_Change | _Mark] = field(default_factory=asyncio.Queue)

    def push(self, item: _Change | _Mark) -> None:
        # A watch can outlive its loop by a moment during stop(); dropping is fine then.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def event(self, item: _Change | _Mark) -> Obj | None:
        if isinstance(item, _Mark):
            meta = {"resourceVersion": str(item.rv)}
            obj = {"kind": self.rt.kind, "apiVersion": self.rt.api_version, "metadata": meta}
            return {"type": "BOOKMARK", "object": obj}
        now = self.match(item.obj)
        before = item.old is not None and self.match(item.old)
        # An update that moves an object into or out of the selection is, to this
        # watch, the object appearing or disappearing.
        if item.type == "MODIFIED" and now != before:
            return {"type": "ADDED" if now else "DELETED", "object": item.obj}
        return {"type": item.type, "object": item.obj} if now else None


def _key(rt: ResourceType, obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "default") if rt.namespaced else "", meta.get("name") or ""


def _without_meta(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Store:
    """Objects, history and watches. Thread-safe; stored objects are never mutated.

    Each mutation bumps the global resourceVersion, appends to its type's history
    and queues the change on every watch of the type, all under the lock, so a
    watch sees changes in resourceVersion order and a new watch misses none.
    """

    def __init__(self, history_limit: int) -> None:
        self.lock = threading.RLock()
        self.rv = 0
        self.history_limit = history_limit
        self.objects: dict[ResourceType, dict[tuple[str, str], Obj]] = {
            rt: {} for rt in RESOURCE_TYPES
        }
        self.history: dict[ResourceType, deque[_Change]] = {rt: deque() for rt in RESOURCE_TYPES}
        # The history of a type holds every change after its horizon.
        self.horizon: dict[ResourceType, int] = dict.fromkeys(RESOURCE_TYPES, 0)
        self.watches: dict[ResourceType, list[_Watch]] = {rt: [] for rt in RESOURCE_TYPES}
        self.pages: dict[str, tuple[int, list[Obj]]] = {}  # continue token -> (rv, rest)

    def _commit(self, rt: ResourceType, type_: str, obj: Obj, old: Obj | None) -> Obj:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        if type_ == "DELETED":
            del self.objects[rt][_key(rt, obj)]
        else:
            self.objects[rt][_key(rt, obj)] = obj
        change = _Change(self.rv, type_, obj, old)
        history = self.history[rt]
        history.append(change)
        while len(history) > self.history_limit:
            self.horizon[rt] = history.popleft().rv
        for watch in self.watches[rt]:
            watch.push(change)
        return obj

    def get(self, rt: ResourceType, key: tuple[str, str]) -> Obj:
        with self.lock:
            obj = self.objects[rt].get(key)
        if obj is None:
            raise _not_found(rt, key[1])
        return obj

    def create(self, rt: ResourceType, obj: Obj, *, keep_status: bool) -> Obj:
        obj = copy.deepcopy(obj)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            meta["namespace"] = meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        # The API server resets status on create; tests seeding objects may set it.
        if rt.status and (not keep_status or "status" not in obj):
            obj["status"] = {"loadBalancer": {}}
        with self.lock:
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise _invalid(
                        f'{rt.kind} "" is invalid: metadata.name: Required value: '
                        "name or generateName is required"
                    )
                while not meta.get("name") or _key(rt, obj) in self.objects[rt]:
                    suffix = "".join(
                        secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5)
                    )
                    meta["name"] = meta["generateName"] + suffix
            if _key(rt, obj) in self.objects[rt]:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{rt.qualified} "{meta["name"]}" already exists',
                    _details(rt, meta["name"]),
                )
            meta["uid"] = str(uuid.uuid4())
            meta["generation"] = 1
            meta.setdefault("creationTimestamp", _now())
            return self._commit(rt, "ADDED", obj, None)

    def update(
        self,
        rt: ResourceType,
        key: tuple[str, str],
        build: Callable[[Obj], Obj],
        *,
        check_rv: bool = True,
        always: bool = False,
    ) -> Obj:
        """Replace the object at ``key`` with ``build(a copy of it)``.

        A metadata.resourceVersion in the result is a precondition. An update that
        changes nothing is not written, as in the real server: no new
        resourceVersion and no watch event (unless ``always``).
        """
        with self.lock:
            old = self.get(rt, key)
            new = build(copy.deepcopy(old))
            if not isinstance(new, dict) or not isinstance(new.get("metadata", {}), dict):
                raise _invalid(f"{rt.kind} {key[1]!r} is invalid: not an object")
            new["apiVersion"], new["kind"] = rt.api_version, rt.kind
            meta, old_meta = new.setdefault("metadata", {}), old["metadata"]
            if check_rv and meta.get("resourceVersion") not in (
                None,
                "",
                old_meta["resourceVersion"],
            ):
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {rt.qualified} "{key[1]}": the object has '
                    "been modified; please apply your changes to the latest version and try again",
                    _details(rt, key[1]),
                )
            for name in ("name", "namespace", "uid", "creationTimestamp", "resourceVersion"):
                if name in old_meta:
                    meta[name] = old_meta[name]
            meta["generation"] = old_meta["generation"]
            if new == old and not always:
                return old
            if _without_meta(new) != _without_meta(old):
                meta["generation"] += 1
            return self._commit(rt, "MODIFIED", new, old)

    def delete(self, rt: ResourceType, key: tuple[str, str]) -> Obj:
        with self.lock:
            old = self.get(rt, key)
            return self._commit(rt, "DELETED", copy.deepcopy(old), old)

    def list(
        self, rt: ResourceType, match: Callable[[Obj], bool], limit: int, token: str
    ) -> tuple[int, list[Obj], str, int]:
        """(resourceVersion, items, continue token or "", items left after these)."""
        with self.lock:
            if token:
                if token not in self.pages:
                    raise ApiError(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent "
                        "list result. You can start a new list without the continue parameter.",
                    )
                rv, items = self.pages[token]
            else:
                rv = self.rv
                items = [o for _, o in sorted(self.objects[rt].items()) if match(o)]
            if not limit or len(items) <= limit:
                return rv, items, "", 0
            token = secrets.token_urlsafe(12)
            self.pages[token] = (rv, items[limit:])
            return rv, items[:limit], token, len(items) - limit

    def watch(self, watch: _Watch, since: int | None) -> None:
        """Register ``watch``, queueing first what it must replay; call on its loop."""
        rt = watch.rt
        with self.lock:
            if since is None:
                for _, obj in sorted(self.objects[rt].items()):
                    rv = int(obj["metadata"]["resourceVersion"])
                    watch.queue.put_nowait(_Change(rv, "ADDED", obj, None))
            elif since < self.horizon[rt]:
                raise ApiError(
                    410, "Expired", f"too old resource version: {since} ({self.horizon[rt]})"
                )
            else:
                for change in self.history[rt]:
                    if change.rv > since:
                        watch.queue.put_nowait(change)
            self.watches[rt].append(watch)

    def unwatch(self, watch: _Watch) -> None:
        # ValueError: cut_watches or stop dropped it already.
        with self.lock, contextlib.suppress(ValueError):
            self.watches[watch.rt].remove(watch)

    def bookmark(self, watch: _Watch) -> None:
        # Queued behind every change up to self.rv, so the client may resume from it.
        with self.lock:
            watch.push(_Mark(self.rv))

    def drop_watches(self) -> list[_Watch]:
        with self.lock:
            dropped = [w for watches in self.watches.values() for w in watches]
            for watches in self.watches.values():
                watches.clear()
            return dropped

    def compact(self) -> None:
        with self.lock:
            for rt in RESOURCE_TYPES:
                self.history[rt].clear()
                self.horizon[rt] = self.rv
            self.pages.clear()


# -- the server ------------------------------------------------------------------------


class KubeApiServer:
    """The API server on 127.0.0.1, in an event loop of its own (a daemon thread).

    ``tokens`` maps bearer token -> user name. Objects are plain JSON dicts as
    ``kubectl get -o json`` prints them; ``kind`` arguments are a kind ("Ingress")
    or kind.group ("Event.events.k8s.io"; plain "Event" is core/v1).
    """

    def __init__(
        self,
        *,
        tokens: Mapping[str, str],
        bookmark_interval: float = 1.0,
        history_limit: int = 1000,
    ) -> None:
        self.tokens = dict(tokens)
        self.bookmark_interval = bookmark_interval
        self.port = 0  # chosen on the first start(), kept by later ones
        self.certificate_pem, key_pem = _certificate()
        self._ssl = server_context(self.certificate_pem, key_pem)
        self._store = _Store(history_limit)
        self._requests: list[Request] = []
        self._requests_lock = threading.Lock()
        self._background: BackgroundLoop | None = None
        self._runner: web.AppRunner | None = None

    # -- process -------------------------------------------------------------------

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the server has not been started")
        return f"https://{LOCALHOST}:{self.port}"

    def start(self) -> KubeApiServer:
        if self._background is not None:
            raise RuntimeError("the server is already running")
        background = BackgroundLoop()
        try:
            self._runner = background.run(self._listen())
        except BaseException:
            background.close()
            raise
        self._background = background
        return self

    def stop(self) -> None:
        """Close the listener and abort every connection, as a crashed server would."""
        background, self._background = self._background, None
        if background is None:
            return
        self._store.drop_watches()
        try:
            background.run(self._shutdown(), timeout=10)
        finally:
            background.close()

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_kubeconfig(self, path: str | Path, token: str, namespace: str = "default") -> Path:
        path = Path(path)
        ca = base64.b64encode(self.certificate_pem).decode()
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "test", "cluster": {"server": self.url, "certificate-authority-data": ca}}
            ],
            "users": [{"name": "test", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "test",
                    "context": {"cluster": "test", "user": "test", "namespace": namespace},
                }
            ],
            "current-context": "test",
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(kubeconfig, sort_keys=False))
        return path

    # -- state, behind the API -----------------------------------------------------

    def create(self, obj: Obj) -> Obj:
        """Store a new object; unlike the API, a given status is kept."""
        return copy.deepcopy(self._store.create(_type_of(obj), obj, keep_status=True))

    def update(self, obj: Obj) -> Obj:
        """Replace an object, always with a new resourceVersion, ignoring the one in ``obj``.

        Without a ``status`` in ``obj`` the stored status stays, as when a user
        replaces an object whose status a controller writes.
        """
        rt = _type_of(obj)

        def build(old: Obj) -> Obj:
            new = copy.deepcopy(obj)
            if "status" not in new and "status" in old:
                new["status"] = old["status"]
            return new

        return copy.deepcopy(
            self._store.update(rt, _key(rt, obj), build, check_rv=False, always=True)
        )

    def apply(self, obj: Obj) -> Obj:
        """Create ``obj``, or update it when it exists."""
        rt = _type_of(obj)
        with self._store.lock:
            if _key(rt, obj) in self._store.objects[rt]:
                return self.update(obj)
            return self.create(obj)

    def delete(self, kind: str, namespace: str | None, name: str) -> None:
        rt = _type_named(kind)
        self._store.delete(rt, ((namespace or "default") if rt.namespaced else "", name))

    def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        rt = _type_named(kind)
        with self._store.lock:
            obj = self._store.objects[rt].get(
                ((namespace or "default") if rt.namespaced else "", name)
            )
        return copy.deepcopy(obj)

    def list(self, kind: str) -> list[Obj]:
        """Every object of ``kind``, sorted by namespace and name."""
        rt = _type_named(kind)
        with self._store.lock:
            return copy.deepcopy([o for _, o in sorted(self._store.objects[rt].items())])

    def events(self) -> list[Obj]:
        """Events of both APIs (core/v1 and events.k8s.io/v1), oldest first."""
        with self._store.lock:
            found = [o for rt in _EVENT_TYPES for o in self._store.objects[rt].values()]
        return copy.deepcopy(sorted(found, key=lambda o: int(o["metadata"]["resourceVersion"])))

    @property
    def resource_version(self) -> str:
        """The latest resourceVersion, the one a list would return now."""
        return str(self._store.rv)

    # -- failures and observation -------------------------------------------------

    def compact(self) -> None:
        """Forget watch history and continue tokens: resuming from before now is 410 Gone."""
        self._store.compact()

    def cut_watches(self) -> None:
        """Abort every open watch's connection mid-stream (no terminating chunk)."""
        for watch in self._store.drop_watches():
            if watch.transport is not None:
                with contextlib.suppress(RuntimeError):
                    watch.loop.call_soon_threadsafe(watch.transport.abort)

    def watch_count(self, kind: str) -> int:
        rt = _type_named(kind)
        with self._store.lock:
            return len(self._store.watches[rt])

    @property
    def requests(self) -> list[Request]:
        with self._requests_lock:
            return list(self._requests)

    def writes(self, path_contains: str = "") -> list[tuple[str | None, str, str]]:
        """(user, method, path) of every request but GETs, optionally by path."""
        return [
            (r.user, r.method, r.path)
            for r in self.requests
            if r.method != "GET" and path_contains in r.path
        ]

    # -- HTTP ---------------------------------------------------------------------

    async def _listen(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        # handler_cancellation: a client that goes away ends its watch at once.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, LOCALHOST, self.port, ssl_context=self._ssl)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = runner.addresses[0][1]
        return runner

    async def _shutdown(self) -> None:
        runner = self._runner
        assert runner is not None
        for site in list(runner.sites):
            await site.stop()
        for connection in runner.server.connections if runner.server else ():
            if connection.transport is not None:
                connection.transport.abort()
        await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        user = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        with self._requests_lock:
            self._requests.append(Request(request.method, request.path, dict(request.query), user))
        try:
            if user is None:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            return await self._serve(request)
        except ApiError as e:
            return web.json_response(e.status(), status=e.code)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        path, method, query = request.path.rstrip("/"), request.method, request.query
        if path == "/version" and method == "GET":
            return web.json_response(VERSION)
        rt, namespace, name, sub = _route(path)
        if name is None:
            if method == "GET":
                match = _selector(rt, query, namespace)
                if query.get("watch", "").lower() in ("true", "1"):
                    return await self._watch(request, rt, match)
                return self._list(rt, match, query)
            if method == "POST" and (namespace is not None or not rt.namespaced):
                body = _check_body(rt, await _json_body(request), namespace, None)
                return web.json_response(
                    self._store.create(rt, body, keep_status=False), status=201
                )
            raise _method_not_allowed(method)
        key = (namespace or "", name)
        if method == "GET":
            return web.json_response(self._store.get(rt, key))
        if method == "PUT":
            body = _check_body(rt, await _json_body(request), namespace, name)
            obj = self._store.update(rt, key, lambda old: _split_status(rt, sub, old, body))
            return web.json_response(obj)
        if method == "PATCH":
            patch = await _json_body(request)
            apply = _patcher(request.content_type, patch)
            obj = self._store.update(rt, key, lambda old: _split_status(rt, sub, old, apply(old)))
            return web.json_response(obj)
        if method == "DELETE" and sub is None:
            uid = self._store.delete(rt, key)["metadata"]["uid"]
            details = {**_details(rt, name), "uid": uid}
            status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
            return web.json_response({**status, "details": details})
        raise _method_not_allowed(method)

    def _list(
        self, rt: ResourceType, match: Callable[[Obj], bool], query: Mapping[str, str]
    ) -> web.Response:
        limit = _int_param(query, "limit") or 0
        rv, items, token, remaining = self._store.list(rt, match, limit, query.get("continue", ""))
        meta: Obj = {"resourceVersion": str(rv)}
        if token:
            meta.update({"continue": token, "remainingItemCount": remaining})
        # Items of a real list carry no kind or apiVersion; the list itself does.
        bare = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in items]
        body = {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta}
        return web.json_response({**body, "items": bare})

    async def _watch(
        self, request: web.Request, rt: ResourceType, match: Callable[[Obj], bool]
    ) -> web.StreamResponse:
        timeout = _int_param(request.query, "timeoutSeconds")
        rv = request.query.get("resourceVersion", "")
        since = None if rv in ("", "0") else _int_param(request.query, "resourceVersion")
        bookmarks = request.query.get("allowWatchBookmarks", "").lower() == "true"
        watch = _Watch(rt, match, asyncio.get_running_loop(), request.transport)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        ticker: asyncio.Task[None] | None = None
        try:
            try:
                self._store.watch(watch, since)
            except ApiError as e:
                # The real server, too, answers 200 and then one ERROR event.
                await response.prepare(request)
                await response.write(_line({"type": "ERROR", "object": e.status()}))
                await response.write_eof()
                return response
            await response.prepare(request)
            if bookmarks:
                ticker = asyncio.create_task(self._tick(watch))
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout or None):
                        while True:
                            event = watch.event(await watch.queue.get())
                            if event is not None:
                                await response.write(_line(event))
                await response.write_eof()
            except ConnectionError:
                pass  # the client went away, or cut_watches()/stop() cut it
            return response
        finally:
            if ticker is not None:
                ticker.cancel()
            self._store.unwatch(watch)

    async def _tick(self, watch: _Watch) -> None:
        while True:
            await asyncio.sleep(self.bookmark_interval)
            self._store.bookmark(watch)


# -- request helpers ---------------------------------------------------------------------


def _route(path: str) -> tuple[ResourceType, str | None, str | None, str | None]:
    """(type, namespace, name, subresource) of a resource path, else 404."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise _no_route()
    namespace = None
    if len(rest) > 2 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    rt = _BY_PATH.get((group, version, rest[0])) if 1 <= len(rest) <= 3 else None
    if rt is None or (namespace is not None and not rt.namespaced):
        raise _no_route()
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if (name is not None and rt.namespaced and namespace is None) or (
        sub is not None and not (sub == "status" and rt.status)
    ):
        raise _no_route()
    return rt, namespace, name, sub


def _method_not_allowed(method: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", f"the server does not allow this method: {method}")


async def _json_body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except ValueError as e:
        raise _bad_request(f"the request body is not JSON: {e}") from e


def _check_body(rt: ResourceType, body: Any, namespace: str | None, name: str | None) -> Obj:
    """Reject what the real server rejects: wrong kind, namespace or name; fill the namespace."""
    if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
        raise _bad_request("the request body is not a JSON object")
    for field_, want in (("kind", rt.kind), ("apiVersion", rt.api_version)):
        if body.get(field_, want) != want:
            raise _bad_request(f"{field_} {body[field_]!r} in the body, {want!r} expected")
    meta = body.setdefault("metadata", {})
    if namespace is not None:
        if meta.get("namespace", namespace) != namespace:
            raise _bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        meta["namespace"] = namespace
    if name is not None and meta.get("name", name) != name:
        raise _bad_request(
            f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
        )
    return body


def _split_status(rt: ResourceType, sub: str | None, old: Obj, new: Obj) -> Obj:
    """The main resource keeps the stored status; /status takes only the status."""
    if not rt.status or not isinstance(new, dict):
        return new
    if sub == "status":
        result = copy.deepcopy(old)
        result["status"] = new.get("status") or {}
        rv = (new.get("metadata") or {}).get("resourceVersion")
        if rv:
            result["metadata"]["resourceVersion"] = rv  # still a precondition
        return result
    new = dict(new)
    new["status"] = old.get("status")
    return new


def _patcher(content_type: str, patch: Any) -> Callable[[Obj], Any]:
    if content_type in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
        if not isinstance(patch, dict):
            raise _bad_request("a merge patch must be a JSON object")
        return lambda old: merge_patch(old, patch)
    if content_type == JSON_PATCH:
        if not isinstance(patch, list):
            raise _bad_request("a JSON patch must be a JSON array")
        return lambda old: json_patch(old, patch)
    raise ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format ({content_type}) - accepted media "
        f"types include: {JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_MERGE_PATCH}",
    )


def _int_param(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name, "")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise _bad_request(f"invalid {name}: {value!r}") from None


def _line(event: Obj) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


def _type_of(obj: Obj) -> ResourceType:
    for rt in RESOURCE_TYPES:
        if (rt.api_version, rt.kind) == (obj.get("apiVersion"), obj.get("kind")):
            return rt
    raise ValueError(f"not a kind this server serves: {obj.get('apiVersion')} {obj.get('kind')}")


def _type_named(kind: str) -> ResourceType:
    for rt in RESOURCE_TYPES:
        if kind in (rt.kind, f"{rt.kind}.{rt.group}"):
            return rt
    raise ValueError(f"not a kind this server serves: {kind!r}")


# -- TLS -------------------------------------------------------------------------------


@functools.cache
def _certificate() -> tuple[bytes, bytes]:
    """A self-signed (cert PEM, key PEM) for localhost and 127.0.0.1, which clients verify."""
    return self_signed("kube-apiserver", ("localhost",), days=1, ip_addresses=(LOCALHOST,))
