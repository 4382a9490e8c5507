"""The cluster as a source: list, then watch, each kind ingressd reads.

The official ``kubernetes`` client is synchronous, so each kind's list+watch
loop runs in a daemon thread of its own and hands every event to the event
loop with ``call_soon_threadsafe``; nothing here blocks the proxy. Objects are
read as raw JSON (``_preload_content=False``), not as client models: the store
holds the same camelCase dicts the manifest source gives, and skipping model
deserialisation matters with thousands of objects.

A watch resumes from the last resourceVersion it saw (bookmarks included),
re-lists on 410 Gone, and reconnects after errors with capped, jittered
exponential backoff. While the API server is unreachable the store keeps what
it had, so the last good table keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from ..kube.config import WATCH_SECONDS
from ..kube.kubeclient import CONNECT_TIMEOUT, REQUEST_TIMEOUT, Cluster, brief
from ..model.objects import KINDS, Obj, ObjectStore, Snapshot, compact, object_key
from ..policy import annotations as ann
from ..policy import header_maps
from ..policy.tls import TLS_SECRET_TYPE

log = logging.getLogger("ingressd.kube")

TLS_SECRETS = "type=kubernetes.io/tls"
LIST_PAGE = 500
# ConfigMaps of headers watched at once (one thread each): a bound on what Ingress
# authors can make the controller hold open.
MAX_REFERENCED = 256
READ_IDLE_SECONDS = 120.0


# -- what to watch ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resource:
    kind: str
    api_version: str
    list_all: str  # method name on the API class, all namespaces
    list_namespaced: str | None  # None for cluster-scoped kinds
    api_class: type
    field_selector: str | None = None


RESOURCES: tuple[Resource, ...] = (
    Resource(
        "IngressClass",
        "networking.k8s.io/v1",
        "list_ingress_class",
        None,
        client.NetworkingV1Api,
    ),
    Resource(
        "Ingress",
        "networking.k8s.io/v1",
        "list_ingress_for_all_namespaces",
        "list_namespaced_ingress",
        client.NetworkingV1Api,
    ),
    Resource(
        "Service",
        "v1",
        "list_service_for_all_namespaces",
        "list_namespaced_service",
        client.CoreV1Api,
    ),
    Resource(
        "EndpointSlice",
        "discovery.k8s.io/v1",
        "list_endpoint_slice_for_all_namespaces",
        "list_namespaced_endpoint_slice",
        client.DiscoveryV1Api,
    ),
    # Only TLS Secrets: the controller has no business holding every Secret.
    Resource(
        "Secret",
        "v1",
        "list_secret_for_all_namespaces",
        "list_namespaced_secret",
        client.CoreV1Api,
        TLS_SECRETS,
    ),
)
# ConfigMaps are not watched whole: only the TCP/UDP services ones, when named.
assert {r.kind for r in RESOURCES} == set(KINDS) - {"ConfigMap"}


def configmap_resource(name: str) -> Resource:
    """One named ConfigMap (a TCP/UDP services one), listed and watched by name:
    the API server authorizes that against RBAC resourceNames."""
    return Resource(
        "ConfigMap",
        "v1",
        "list_config_map_for_all_namespaces",
        "list_namespaced_config_map",
        client.CoreV1Api,
        f"metadata.name={name}",
    )


class Gone(Exception):
    """410: the resourceVersion is too old to resume from; list again."""


class WatchError(Exception):
    """The watch stream said something other than 410 went wrong."""


def trimmed(obj: Obj, kind: str, api_version: str) -> Obj:
    """The object as the store keeps it: typed, without bookkeeping nobody reads,
    its strings shared with other objects' (objects.compact)."""
    obj["kind"] = kind
    obj["apiVersion"] = api_version
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        # managedFields and last-applied copies are often most of an object.
        meta.pop("managedFields", None)
        ann = meta.get("annotations")
        if ann:
            ann.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    shared: Obj = compact(obj)
    return shared


class Backoff:
    """Capped exponential backoff with full jitter, reset after a success.

    A success is a list or a watch request the API server answers: the delay
    grows only while the server keeps failing, and an outage that follows a
    recovery starts from the shortest delay again. (client-go's reflector
    resets after two minutes without a failure; an API server restarted every
    half minute then leaves watches waiting out the 30 s cap, and changes
    unserved for that long, after it is back.)
    """

    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0


def list_call(cluster: Cluster, resource: Resource, namespace: str | None) -> Callable[..., Any]:
    """The client method listing ``resource``, bound to ``namespace`` when it has one."""
    api = resource.api_class(cluster.api)
    if namespace and resource.list_namespaced:
        method = getattr(api, resource.list_namespaced)
        return lambda **kw: method(namespace, **kw)
    return getattr(api, resource.list_all)


def list_objects(list_method: Callable[..., Any], resource: Resource) -> tuple[list[Obj], str]:
    """Every object of one kind, page by page, and the list's resourceVersion."""
    items: list[Obj] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": LIST_PAGE, "_preload_content": False}
        if token:
            kwargs["_continue"] = token
        if resource.field_selector:
            kwargs["field_selector"] = resource.field_selector
        try:
            response = list_method(**kwargs, _request_timeout=(CONNECT_TIMEOUT, 60))
        except ApiException as exc:
            if exc.status == 410 and token:
                # The continue token expired mid-list: start the list over.
                items, token = [], None
                continue
            raise
        body = json.loads(response.data)
        for obj in body.get("items") or []:
            items.append(trimmed(obj, resource.kind, resource.api_version))
        meta = body.get("metadata") or {}
        token = meta.get("continue")
        if not token:
            break
    return items, meta.get("resourceVersion") or "0"


class ListError(Exception):
    """A one-shot list failed: no access, no connection, or not an API server."""


def snapshot_once(
    cluster: Cluster,
    namespace: str | None = None,
    configmaps: tuple[tuple[str, str], ...] = (),
    controller: tuple[str, str] | None = None,
) -> Snapshot:
    """The five kinds, and the named ConfigMaps, listed once (no watch), as
    ``ingressd check`` reads a cluster; then the ConfigMaps of headers that the
    Ingresses and the controller ConfigMap ``controller`` name."""
    store = ObjectStore()
    named = [(configmap_resource(name), ns) for ns, name in configmaps]
    _list_into(store, cluster, [*((r, namespace) for r in RESOURCES), *named])
    referenced = header_maps.references(store.snapshot(), controller) - set(configmaps)
    _list_into(store, cluster, [(configmap_resource(n), ns) for ns, n in sorted(referenced)])
    return store.snapshot()


def _list_into(
    store: ObjectStore, cluster: Cluster, resources: list[tuple[Resource, str | None]]
) -> None:
    for resource, where in resources:
        try:
            items, _ = list_objects(list_call(cluster, resource, where), resource)
        except (ApiException, HTTPError, OSError, ValueError) as exc:
            # ValueError: a body that is not JSON, from something that is not an API server.
            raise ListError(
                f"{cluster.describe()}: cannot list {resource.kind} objects: {brief(exc)}"
            ) from exc
        if resource.kind == "ConfigMap":
            for item in items:
                store.put(item)
        else:
            store.replace_all(resource.kind, items)


# Runs on the event loop: (kind, event type, object or None, listed objects or None)
Sink = Callable[[str, str, Obj | None, list[Obj] | None], None]


class Reflector:
    """One kind's list+watch loop, in its own thread."""

    def __init__(
        self,
        cluster: Cluster,
        resource: Resource,
        namespace: str | None,
        loop: asyncio.AbstractEventLoop,
        sink: Sink,
        watch_seconds: int = WATCH_SECONDS,
    ) -> None:
        self.resource = resource
        self.namespace = namespace
        self.loop = loop
        self.sink = sink
        self.watch_seconds = watch_seconds
        self._list = list_call(cluster, resource, namespace)
        self.resource_version: str | None = None
        self._stopped = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(
            target=self._run, name=f"watch-{resource.kind}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        response = self._response
        if response is not None:
            # Wakes the thread out of a blocking read on the stream.
            with contextlib.suppress(Exception):
                response.shutdown()
            with contextlib.suppress(Exception):
                response.close()

    # -- the thread ------------------------------------------------------------------

    def _run(self) -> None:
        kind = self.resource.kind
        backoff = Backoff()
        while not self._stopped.is_set():
            try:
                if self.resource_version is None:
                    self._relist()
                    backoff.reset()
                self._watch(backoff.reset)
                backoff.reset()
            except Gone:
                log.info(
                    "%s: resourceVersion %s expired (410); listing again",
                    kind,
                    self.resource_version,
                )
                self.resource_version = None
            except Exception as exc:
                if self._stopped.is_set():
                    break
                delay = backoff.next()
                log.warning("%s watch failed (%s); retrying in %.1f s", kind, brief(exc), delay)
                self._stopped.wait(delay)
            finally:
                self._response = None

    def _relist(self) -> None:
        items, self.resource_version = list_objects(self._list, self.resource)
        log.debug(
            "%s: listed %d at resourceVersion %s",
            self.resource.kind,
            len(items),
            self.resource_version,
        )
        self._post("LISTED", None, items)

    def _watch(self, established: Callable[[], None]) -> None:
        """Watch from ``resource_version`` until the stream ends; ``established`` is
        called once the API server has accepted the watch."""
        seconds = int(self.watch_seconds * random.uniform(1.0, 1.2))
        kwargs: dict[str, Any] = {
            "watch": True,
            "allow_watch_bookmarks": True,
            "resource_version": self.resource_version,
            "timeout_seconds": seconds,
            "_preload_content": False,
            # API servers send a bookmark about once a minute; a silent stream
            # past this is a dead peer (a resume from resourceVersion is cheap).
            "_request_timeout": (CONNECT_TIMEOUT, READ_IDLE_SECONDS),
        }
        if self.resource.field_selector:
            kwargs["field_selector"] = self.resource.field_selector
        try:
            self._response = self._list(**kwargs)
        except ApiException as exc:
            if exc.status == 410:
                raise Gone from None
            raise
        established()
        if self._stopped.is_set():
            return
        for line in _lines(self._response):
            if self._stopped.is_set():
                return
            self._event(json.loads(line))

    def _event(self, event: dict[str, Any]) -> None:
        kind_of_event = event.get("type")
        obj = event.get("object") or {}
        if kind_of_event == "ERROR":
            if obj.get("code") == 410:
                raise Gone
            raise WatchError(f"{obj.get('reason', '')}: {obj.get('message', obj)}")
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if kind_of_event in ("ADDED", "MODIFIED", "DELETED"):
            self._post(kind_of_event, trimmed(obj, self.resource.kind, self.resource.api_version))
        elif kind_of_event != "BOOKMARK":
            log.warning(
                "%s watch: unknown event type %r ignored", self.resource.kind, kind_of_event
            )
        if rv:
            self.resource_version = rv

    def _post(self, kind_of_event: str, obj: Obj | None, items: list[Obj] | None = None) -> None:
        if not self._stopped.is_set():
            with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
                self.loop.call_soon_threadsafe(
                    self.sink, self.resource.kind, kind_of_event, obj, items
                )


def _lines(response: Any) -> Iterator[bytes]:
    """JSON lines of a watch stream; one event may span many chunks (big Secrets)."""
    pending: list[bytes] = []
    for chunk in response.stream(amt=None, decode_content=False):
        if b"\n" not in chunk:
            pending.append(chunk)
            continue
        first, *lines, rest = chunk.split(b"\n")
        pending.append(first)
        for line in (b"".join(pending), *lines):
            if line.strip():
                yield line
        pending = [rest]


class KubeSource:
    """Keeps an ObjectStore in step with the cluster and says when it changed.

    ``on_change`` is called (on the loop) after every change once all kinds have
    been listed; before that, ``synced`` is False and nothing is reported, so the
    first table is built from complete lists, not from whichever kind came first.
    """

    def __init__(
        self,
        cluster: Cluster,
        on_change: Callable[[], None],
        namespace: str | None = None,
        watch_seconds: int = WATCH_SECONDS,
        configmaps: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.cluster = cluster
        self.on_change = on_change
        self.namespace = namespace
        self.watch_seconds = watch_seconds
        self.configmaps = configmaps
        self.store = ObjectStore()
        self._unlisted = {r.kind for r in RESOURCES} | {
            f"ConfigMap {ns}/{n}" for ns, n in configmaps
        }
        self._reflectors: list[Reflector] = []
        self.synced = asyncio.Event()
        # ConfigMaps of headers that Ingresses or the controller ConfigMap name
        # (policy/header_maps.py), each watched by name while it is named, and
        # those of them listed at least once.
        self._referenced: dict[tuple[str, str], Reflector] = {}
        self._referenced_listed: set[tuple[str, str]] = set()
        self._referenced_progress = asyncio.Event()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for resource in RESOURCES:
            reflector = Reflector(
                self.cluster, resource, self.namespace, loop, self._apply, self.watch_seconds
            )
            self._reflectors.append(reflector)
            reflector.start()
        for ns, name in self.configmaps:
            # In its own namespace whatever --watch-namespace says, as ingress-nginx
            # reads --tcp-services-configmap.
            reflector = Reflector(
                self.cluster,
                configmap_resource(name),
                ns,
                loop,
                functools.partial(self._apply_named, ns, name),
                self.watch_seconds,
            )
            self._reflectors.append(reflector)
            reflector.start()

    def _apply_named(
        self, ns: str, name: str, kind: str, event: str, obj: Obj | None, items: list[Obj] | None
    ) -> None:
        """One named ConfigMap's list or event: its list replaces that one only."""
        if event != "LISTED":
            self._apply(kind, event, obj, items)
            return
        found = [o for o in items or () if object_key(o) == (ns, name)]
        changed = self.store.put(found[0]) if found else self.store.delete(kind, ns, name)
        label = f"ConfigMap {ns}/{name}"
        if label in self._unlisted:
            self._unlisted.discard(label)
            log.info("%s: initial list done (%s)", label, "found" if found else "absent")
            if not self._unlisted:
                self.synced.set()
            changed = True
        if changed and self.synced.is_set():
            self.on_change()

    def stop(self) -> None:
        for reflector in [*self._reflectors, *self._referenced.values()]:
            reflector.stop()

    # -- ConfigMaps named by Ingresses and the controller ConfigMap ---------------------

    def watch_referenced(self, wanted: set[tuple[str, str]]) -> None:
        """Watch each ConfigMap of ``wanted`` by name (a field selector on its name, as
        the other named ConfigMaps), and stop watching and forget the ones no longer
        named. At most MAX_REFERENCED (a thread each); past that the rest are not
        read, and what names them is reported as not found."""
        wanted = wanted - set(self.configmaps)  # watched already, for their own purpose
        changed = False
        for key in sorted(set(self._referenced) - wanted):
            self._referenced.pop(key).stop()
            self._referenced_listed.discard(key)
            changed |= self.store.delete("ConfigMap", *key)
        new = sorted(wanted - set(self._referenced))
        room = MAX_REFERENCED - len(self._referenced)
        if len(new) > room:
            log.warning(
                "%d ConfigMaps of headers are named; only %d are watched (the others are "
                "reported as not found)",
                len(wanted),
                MAX_REFERENCED,
            )
            new = new[: max(room, 0)]
        loop = asyncio.get_running_loop()
        for ns, name in new:
            reflector = Reflector(
                self.cluster,
                configmap_resource(name),
                ns,
                loop,
                functools.partial(self._apply_referenced, ns, name),
                self.watch_seconds,
            )
            self._referenced[(ns, name)] = reflector
            reflector.start()
        if changed and self.synced.is_set():
            self.on_change()

    def referenced_pending(self) -> set[tuple[str, str]]:
        """The watched ConfigMaps of headers not listed yet."""
        return set(self._referenced) - self._referenced_listed

    async def wait_referenced(self, timeout: float) -> bool:
        """Wait until every watched ConfigMap of headers has been listed once (True),
        or ``timeout`` seconds (False: what names the others sees them missing)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.referenced_pending():
            left = deadline - loop.time()
            if left <= 0:
                return False
            self._referenced_progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._referenced_progress.wait(), left)
        return True

    def _apply_referenced(
        self, ns: str, name: str, kind: str, event: str, obj: Obj | None, items: list[Obj] | None
    ) -> None:
        key = (ns, name)
        if key not in self._referenced:
            return  # no longer named; its reflector is stopping
        if event == "LISTED":
            found = [o for o in items or () if object_key(o) == key]
            changed = self.store.put(found[0]) if found else self.store.delete(kind, ns, name)
            if key not in self._referenced_listed:
                self._referenced_listed.add(key)
                self._referenced_progress.set()
                log.info("ConfigMap %s/%s: listed (%s)", ns, name, "found" if found else "absent")
                changed = True
        elif obj is None or object_key(obj) != key:
            return
        elif event == "DELETED":
            changed = self.store.delete(kind, ns, name)
        else:
            changed = self.store.put(obj)
        if changed and self.synced.is_set():
            self.on_change()

    def _apply(self, kind: str, event: str, obj: Obj | None, items: list[Obj] | None) -> None:
        if event == "LISTED":
            # Secrets fetched because an Ingress names them are not in this list.
            self.store.replace_all(kind, items or (), keep_origin=REFERENCED)
            changed = True
            if kind in self._unlisted:
                self._unlisted.discard(kind)
                log.info("%s: initial list of %d done", kind, len(items or ()))
                if not self._unlisted:
                    self.synced.set()
        elif obj is None:
            return
        elif event == "DELETED":
            meta = obj.get("metadata") or {}
            changed = self.store.delete(kind, meta.get("namespace") or "", meta.get("name") or "")
        else:
            changed = self.store.put(obj)
        if changed and self.synced.is_set():
            self.on_change()


# -- Secrets that Ingresses name ---------------------------------------------------------------

REFERENCED = "referenced"  # store origin of Secrets fetched by SecretFetcher
SECRET_ANNOTATIONS = ("auth-secret", "auth-tls-secret", "proxy-ssl-secret")


def referenced_secrets(snapshot: Snapshot) -> set[tuple[str, str]]:
    """(namespace, name) of every Secret an Ingress names in auth-secret, auth-tls-secret
    or proxy-ssl-secret."""
    wanted = set()
    for ing in snapshot.of("Ingress").values():
        meta = ing.get("metadata") or {}
        found = ann.collect(meta.get("annotations"))
        for short in SECRET_ANNOTATIONS:
            if short in found:
                try:
                    ns, name = ann.parse_secret_ref(found[short][1])
                except ann.AnnotationError:
                    continue  # reported by the builder
                wanted.add((ns or meta.get("namespace") or "default", name))
    return wanted


class SecretFetcher:
    """Keeps the Secrets that Ingresses name (basic-auth files, client and upstream CAs)
    in the store.

    The Secret watch holds only ``kubernetes.io/tls`` Secrets, so the controller
    never holds every Secret of the cluster; the few others an Ingress names are
    read one by one (GET), when first named and then every ``refresh`` seconds.
    """

    def __init__(self, cluster: Cluster, store: ObjectStore, on_change: Callable[[], None]) -> None:
        self.core = client.CoreV1Api(cluster.api)
        self.store = store
        self.on_change = on_change
        self.held: set[tuple[str, str]] = set()

    def wanted(self, snapshot: Snapshot) -> set[tuple[str, str]]:
        """The named Secrets the TLS watch does not already provide."""
        return {
            key
            for key in referenced_secrets(snapshot)
            if self.store.origin_of("Secret", *key) in (None, REFERENCED)
        }

    def fetch(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], Obj | None]:
        """Blocking: GET each Secret (None when it does not exist). Run in an executor."""
        out: dict[tuple[str, str], Obj | None] = {}
        for ns, name in sorted(keys):
            try:
                response = self.core.read_namespaced_secret(
                    name, ns, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException as exc:
                if exc.status == 404:
                    out[(ns, name)] = None
                    continue
                log.warning("cannot read Secret %s/%s: %s", ns, name, brief(exc))
                continue  # keep what is held
            except Exception as exc:
                log.warning("cannot read Secret %s/%s: %s", ns, name, brief(exc))
                continue
            # _preload_content=False: the raw urllib3 response, its body unparsed
            out[(ns, name)] = trimmed(json.loads(response.data), "Secret", "v1")  # type: ignore[arg-type]
        return out

    def apply(
        self, wanted: set[tuple[str, str]], fetched: dict[tuple[str, str], Obj | None]
    ) -> None:
        """On the loop: put what was read, drop what is gone or no longer named."""
        changed = False
        for key, obj in fetched.items():
            if self.store.origin_of("Secret", *key) not in (None, REFERENCED):
                continue  # the TLS watch has it now
            if obj is None or obj.get("type") == TLS_SECRET_TYPE:
                changed |= key in self.held and self.store.delete("Secret", *key)
                self.held.discard(key)
            else:
                changed |= self.store.put(obj, origin=REFERENCED)
                self.held.add(key)
        for key in self.held - wanted:
            changed |= self.store.delete("Secret", *key)
        self.held &= wanted
        if changed:
            self.on_change()
