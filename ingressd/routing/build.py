"""Objects in, routing table out: a pure function of a snapshot, testable without sockets.

Every problem is scoped to the smallest thing it affects (one path, one TLS
entry, one Ingress) and reported; everything else keeps its routes.

Builds are incremental. ``TableBuilder`` keeps what each Ingress and each host
came to in its last build, with the objects that were read to get there, and
redoes only what read an object that is not the same (``is``) in the new
snapshot. That test is sound because objects are never modified in place: the
store replaces a changed object with a new dict, and a snapshot shares the
unchanged ones. So a one-Ingress change costs about the same with 10 or 10,000
Ingresses. ``build_table`` is one build with nothing kept; both give the same
table for the same snapshot.
"""

from __future__ import annotations

import bisect
import contextlib
import enum
import gc
import operator
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from ..model.backend import Backend, Endpoint
from ..model.globals import GlobalConfig
from ..model.objects import Key, Obj, Snapshot, changed_keys, describe, object_key
from ..model.policy import DEFAULT_POLICY, Canary, ClientAuth, RoutePolicy
from ..model.problems import Problem
from ..model.regex import RegexError, UserRegex, fixed, user_regex
from ..model.snippet import SnippetPolicy
from ..model.table import Route, RouteTable, TLSCertificate, VirtualHost
from ..policy import annotations as ann
from ..policy import basic_auth, client_auth, header_maps, upstream_tls
from ..policy.configmap import DEFAULT_READING, Reading, read_configmap
from ..policy.tls import ALWAYS, Span, TLSError, load_certificate_span
from . import aliases as server_alias

DEFAULT_CONTROLLER = "ingressd.io/ingress-controller"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"

# Rule hosts come from manifests: validated on RE2, linear whatever the value (model/regex.py).
_HOST_RE = fixed(r"^(\*\.)?([a-z0-9]([-a-z0-9]*[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")


@dataclass(frozen=True, slots=True)
class BuildOptions:
    controller_name: str = DEFAULT_CONTROLLER
    ingress_class: str = "ingressd"  # value of the legacy kubernetes.io/ingress.class
    # --default-backend-service "namespace/name": serves what no rule takes, and the
    # error pages of custom-http-errors (ingress-nginx's upstream-default-backend).
    default_backend_service: str | None = None
    # The global custom-http-errors list (ConfigMap key custom-http-errors, or
    # --custom-http-errors): 4xx/5xx statuses answered with the default backend's page.
    custom_http_errors: tuple[int, ...] = ()
    # (namespace, name) of the controller ConfigMap (--configmap); None: its defaults.
    configmap: tuple[str, str] | None = None
    # (ConfigMap key, flag) of the command-line flags given explicitly: they win.
    explicit: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Ownership:
    """Whether an Ingress is ours, and why, in words ``ingressd check`` prints."""

    ours: bool
    # ours: "ingressClassName", "default-class", "legacy-annotation";
    # not ours: "other-controller", "other-class", "missing-class", "no-class"
    via: str
    text: str
    class_name: str | None = None  # the class named, or the default one that applied


def ingress_owner(snap: Snapshot, opts: BuildOptions, ing: Obj) -> Ownership:
    """Which class owns ``ing``: the legacy annotation, else ingressClassName, else the default."""
    meta = ing.get("metadata") or {}
    legacy = (meta.get("annotations") or {}).get(LEGACY_CLASS_ANNOTATION)
    if legacy is not None:
        where = f"{LEGACY_CLASS_ANNOTATION} annotation"
        if legacy == opts.ingress_class:
            return Ownership(True, "legacy-annotation", f"ours via {where} {legacy!r}", legacy)
        return Ownership(False, "other-class", f"other class {legacy!r} ({where})", legacy)
    class_name = (ing.get("spec") or {}).get("ingressClassName")
    classes = snap.of("IngressClass")
    if class_name:
        ic = classes.get(("", class_name))
        if ic is None:
            text = f"IngressClass {class_name!r} does not exist"
            return Ownership(False, "missing-class", text, class_name)
        controller = _controller(ic)
        if controller == opts.controller_name:
            text = f"ours via ingressClassName {class_name!r} (controller {controller})"
            return Ownership(True, "ingressClassName", text, class_name)
        text = f"other controller {controller} (IngressClass {class_name!r})"
        return Ownership(False, "other-controller", text, class_name)
    defaults = sorted(
        (_controller(ic) != opts.controller_name, name)
        for (_, name), ic in classes.items()
        if ((ic.get("metadata") or {}).get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION)
        == "true"
    )
    if not defaults:
        text = (
            f"no class: no ingressClassName, no {LEGACY_CLASS_ANNOTATION} annotation "
            "and no default IngressClass"
        )
        return Ownership(False, "no-class", text)
    # A default of ours wins over another controller's, as is_ours has always had it.
    theirs, name = defaults[0]
    if not theirs:
        return Ownership(True, "default-class", f"ours via default IngressClass {name!r}", name)
    text = f"other controller {_controller(classes[('', name)])} (default IngressClass {name!r})"
    return Ownership(False, "other-controller", text, name)


def _controller(ingress_class: Obj) -> str:
    return str((ingress_class.get("spec") or {}).get("controller") or "")


def backend_ref(spec: Any) -> tuple[str, int | str]:
    """(Service name, port number or name) of an IngressBackend; ValueError if malformed."""
    if not isinstance(spec, dict):
        raise ValueError("backend is missing")
    if "resource" in spec:
        raise ValueError("resource backends are not supported; use a Service")
    svc = spec.get("service")
    if not isinstance(svc, dict) or not svc.get("name"):
        raise ValueError("backend.service.name is missing")
    port = svc.get("port") or {}
    if not isinstance(port, dict):
        raise ValueError("backend.service.port must be an object")
    if port.get("number") is not None:
        try:
            number = int(port["number"])
        except (TypeError, ValueError):
            raise ValueError(f"backend port {port['number']!r} is not a number") from None
        if not 0 < number < 65536:
            raise ValueError(f"backend port {number} is out of range")
        return str(svc["name"]), number
    if port.get("name"):
        return str(svc["name"]), str(port["name"])
    raise ValueError("backend.service.port needs a number or a name")


# -- what planning an Ingress read -------------------------------------------------------

# (kind, key) of an object looked up while planning an Ingress, found or not: the
# plan stays valid while that lookup gives the same object. _SLICES stands for
# ``Snapshot.slices_by_service``, and the key _WHOLE for the whole kind (read by
# iterating over it).
Dep = tuple[str, Key]
_SLICES = "EndpointSlice by Service"
_WHOLE: Key = ("\0", "\0")


class _Reads(Mapping[Key, Any]):
    """One kind of a snapshot, noting in ``deps`` what is looked up in it."""

    __slots__ = ("_deps", "_inner", "_kind")

    def __init__(self, kind: str, inner: Mapping[Key, Any], deps: set[Dep]) -> None:
        self._kind = kind
        self._inner = inner
        self._deps = deps

    def __getitem__(self, key: Key) -> Any:
        self._deps.add((self._kind, key))
        return self._inner[key]

    def get(self, key: Key, default: Any = None) -> Any:
        self._deps.add((self._kind, key))
        return self._inner.get(key, default)

    def __contains__(self, key: object) -> bool:
        self._deps.add((self._kind, key))  # type: ignore[arg-type]
        return key in self._inner

    def __iter__(self) -> Iterator[Key]:
        self._deps.add((self._kind, _WHOLE))
        return iter(self._inner)

    def __len__(self) -> int:
        self._deps.add((self._kind, _WHOLE))
        return len(self._inner)


class _ObjectReads(Mapping[str, Mapping[Key, Obj]]):
    """``Snapshot.objects`` whose kinds note what is looked up in them."""

    __slots__ = ("_deps", "_kinds", "_objects")

    def __init__(self, objects: Mapping[str, Mapping[Key, Obj]], deps: set[Dep]) -> None:
        self._objects = objects
        self._deps = deps
        self._kinds: dict[str, _Reads] = {}

    def __getitem__(self, kind: str) -> Mapping[Key, Obj]:
        reads = self.get(kind)
        if reads is None:
            raise KeyError(kind)
        return reads

    def get(self, kind: str, default: Any = None) -> Any:
        reads = self._kinds.get(kind)
        if reads is None:
            inner = self._objects.get(kind, default)
            if inner is None:
                return None
            reads = self._kinds[kind] = _Reads(kind, inner, self._deps)
        return reads

    def __iter__(self) -> Iterator[str]:
        return iter(self._objects)

    def __len__(self) -> int:
        return len(self._objects)


def _reading(snap: Snapshot, deps: set[Dep]) -> Snapshot:
    """``snap`` as one Ingress's plan sees it: every lookup is noted in ``deps``.

    Whatever the planning code reads (here, in upstream_tls or basic_auth) is
    noted, so a new lookup there cannot make a kept plan silently stale.
    """
    return Snapshot(
        objects=_ObjectReads(snap.objects, deps),
        slices_by_service=_Reads(_SLICES, snap.slices_by_service, deps),
        origins=snap.origins,
    )


def _same_items(a: tuple[Obj, ...], b: tuple[Obj, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _never(a: Any, b: Any) -> bool:
    return False


class _Index:
    """Something -> the Ingresses, by key, filed under it.

    Most things have one Ingress: it is kept bare rather than in a set of one
    (216 bytes, times tens of thousands of things).
    """

    __slots__ = ("_map",)

    def __init__(self) -> None:
        self._map: dict[Any, Key | set[Key]] = {}

    def __len__(self) -> int:
        return len(self._map)

    def add(self, thing: Any, key: Key) -> None:
        held = self._map.get(thing)
        if held is None:
            self._map[thing] = key
        elif isinstance(held, set):
            held.add(key)
        elif held != key:
            self._map[thing] = {held, key}

    def discard(self, thing: Any, key: Key) -> None:
        held = self._map.get(thing)
        if isinstance(held, set):
            held.discard(key)
            if len(held) == 1:
                self._map[thing] = next(iter(held))
        elif held == key:
            del self._map[thing]

    def get(self, thing: Any) -> Collection[Key]:
        held = self._map.get(thing)
        if held is None:
            return ()
        return held if isinstance(held, set) else (held,)


# -- one Ingress -------------------------------------------------------------------------

# Problems are kept tagged with where a from-scratch build reports them, so that
# parts redone separately still list them in one order:
# (phase, creation order of the Ingress, index, index).
Order = tuple[str, tuple[int, ...], str]
Tag = tuple[int, Order, int, int]
_PLAN, _MERGE, _CANARY, _TLS = range(1, 5)

BackendKey = tuple[str, str, int | str, bool]  # namespace, Service, port, service-upstream


class _Role(enum.Enum):
    NOT_OURS = "not ours"
    UNPLANNED = "ours, unusable"  # no spec, or rules not a list
    MAIN = "main"
    CANARY = "canary"  # adds alternative backends to main routes


@dataclass(slots=True)
class _Path:
    host: str
    path: str
    path_type: str
    backend: Backend


@dataclass(slots=True)
class _TLSEntry:
    """One spec.tls entry of a main Ingress, its certificate loaded."""

    hosts: list[str]  # as listed, else the Ingress's rule hosts
    cert: TLSCertificate | str | None  # or why the Secret is unusable; None: no secretName
    # No hosts listed: as in ingress-nginx (controller.go, extractTLSSecretName), the
    # certificate serves the rule hosts it covers and the others quietly keep the
    # default one (their https redirect stays, as there).
    implicit: bool = False


@dataclass(slots=True)
class _IngressPlan:
    """One of our Ingresses, parsed and validated but not yet merged."""

    name: str  # namespace/name
    policy: RoutePolicy
    paths: list[_Path] = field(default_factory=list)
    # Rule hosts: a set while planning, then a tuple in the set's order (smaller).
    hosts: set[str] | tuple[str, ...] = field(default_factory=set)
    default_backend: Backend | None = None
    tls: list[tuple[list[str], str]] = field(default_factory=list)  # (hosts, secretName)
    has_rules: bool = False  # spec.rules is not empty (valid or not)
    aliases: tuple[str, ...] = ()  # server-alias (routing/aliases.py)


@dataclass(slots=True, eq=False)
class _Entry:
    """One Ingress as the last build saw it, and all that follows from it alone."""

    obj: Obj
    origin: str
    deps: tuple[Dep, ...]
    role: _Role
    order: Order
    owner_problem: Problem | None = None  # our IngressClass is missing
    plan: _IngressPlan | None = None
    tls: tuple[_TLSEntry, ...] = ()  # main Ingresses only
    default_route: Route | None = None
    # The hosts whose part of the table this Ingress takes part in.
    hosts: tuple[str, ...] = ()
    # Paths by host, when they are on more than one (else all of plan.paths).
    paths_by_host: dict[str, list[tuple[int, _Path]]] | None = None
    problems: list[tuple[Tag, Problem]] = field(default_factory=list)
    backends: tuple[BackendKey, ...] = ()
    span: Span = ALWAYS  # while the certificates' validity dates give the same answers


def _paths_on(entry: _Entry, host: str) -> Iterable[tuple[int, _Path]]:
    """(index, path) of the entry's paths on ``host``."""
    if entry.paths_by_host is not None:
        return entry.paths_by_host.get(host, ())
    paths = entry.plan.paths  # type: ignore[union-attr]
    return enumerate(paths) if paths and paths[0].host == host else ()


def _problem(obj: Obj, origin: str, reason: str) -> Problem:
    ns, name = object_key(obj)
    return Problem(describe(obj), reason, origin, (str(obj.get("kind", "")), ns, name))


_NEGATED = tuple(-o for o in range(128))


def _creation_order(ing: Obj) -> tuple[str, tuple[int, ...]]:
    """Oldest first; Ingresses created in the same second (the API server's
    timestamps have whole seconds: every ``kubectl apply -f DIR``) by
    "namespace/name" *descending*, as ingress-nginx's store sorts them
    (``sortIngressSlice``: ``return in > jn``)."""
    meta = ing.get("metadata") or {}
    # Objects from files usually have no timestamp: they sort after the ones that
    # do, then by namespace/name, so the order is still total.
    ts = str(meta.get("creationTimestamp") or "~")
    key = f"{meta.get('namespace') or 'default'}/{meta.get('name') or ''}"
    # Descending as a tuple that sorts ascending: negated code points, and a
    # last element above them all so that a prefix sorts after what extends it.
    # Negated ASCII code points are shared ints: made afresh they were a tenth of
    # what the builder keeps (10,000 Ingresses, a new int per character).
    return (ts, (*(_NEGATED[o] if (o := ord(c)) < 128 else -o for c in key), 1))


def _order(ing: Obj) -> Order:
    # The stored namespace breaks the one tie left ("" and "default").
    return (*_creation_order(ing), object_key(ing)[0])


@dataclass(slots=True, eq=False)
class _Resolved:
    """A Service port resolved, with the objects it was resolved from."""

    service: Obj | None
    slices: tuple[Obj, ...]
    backend: Backend
    users: int = 0  # kept plans using it


class _Planner:
    """Plans one Ingress, reading the snapshot through a ``_reading`` view."""

    def __init__(self, run: _Run, reads: Snapshot, ing: Obj, origin: str, order: Order) -> None:
        self.run = run
        self.snap = reads
        self.ing = ing
        self.origin = origin
        self.order = order
        self.problems: list[tuple[Tag, Problem]] = []
        self.backends: dict[BackendKey, Backend] = {}  # resolved for this Ingress
        self.reported: set[str] = set()  # backends already reported unresolved

    def problem(self, reason: str, tag: Tag | None = None) -> None:
        where = (_PLAN, self.order, 0, 0) if tag is None else tag
        self.problems.append((where, _problem(self.ing, self.origin, reason)))

    # -- backends ----------------------------------------------------------------

    def backend(self, namespace: str, spec: Any, service_upstream: bool = False) -> Backend:
        """Resolve an IngressBackend; raise ValueError for a malformed one.

        The Backend of the last build is kept while its Service and slices are
        the same objects: so is its round-robin position, and a Backend is new
        exactly when its endpoints may have changed.
        """
        name, ref = backend_ref(spec)
        key = (namespace, name, ref, service_upstream)
        backend = self.backends.get(key)
        if backend is None:
            backend = self.backends[key] = self._resolve(key)
        return backend

    def _resolve(self, key: BackendKey) -> Backend:
        namespace, name, ref, service_upstream = key
        svc = self.snap.get("Service", namespace, name)
        slices = self.snap.slices_by_service.get((namespace, name), ())
        known = self.run.backends.get(key)
        if known is not None and known.service is svc and _same_items(known.slices, slices):
            return known.backend
        try:
            backend = resolve_service(
                self.snap, namespace, name, ref, service_upstream=service_upstream
            )
        except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
            label = f"{namespace}/{name}:{ref}"
            reason = f"service {namespace}/{name} or its EndpointSlices are malformed"
            backend = Backend(label, error=f"{reason}: {_malformed(exc)}")
        users = 0 if known is None else known.users
        self.run.backends[key] = _Resolved(svc, slices, backend, users)
        return backend

    def custom_default(self, ns: str, policy: RoutePolicy) -> RoutePolicy:
        """The default-backend annotation's Service, resolved as ingress-nginx does
        (controller.go getBackendServers): its first port's endpoints, used only
        while there are some; a Service that cannot be read is reported."""
        name = policy.default_backend
        if name is None:
            return policy
        backend = resolve_default_service(self.snap, ns, name)
        if backend.error is not None:
            self.problem(f"default-backend: {backend.error}; the annotation is ignored")
            return policy
        if not backend.endpoints:
            return policy
        return replace(policy, custom_default=backend)

    def unresolved(self, plan: _IngressPlan, backend: Backend) -> None:
        """Report a backend whose routes will answer 503, once per Ingress."""
        if backend.error is not None and backend.name not in self.reported:
            self.reported.add(backend.name)
            self.problem(f"{backend.error}; its routes answer 503")

    # -- the Ingress -------------------------------------------------------------

    def plan(self) -> _IngressPlan | None:
        ing = self.ing
        meta = ing.get("metadata") or {}
        ns = meta.get("namespace") or "default"
        spec = ing.get("spec")
        if not isinstance(spec, dict):
            self.problem("spec is missing")
            return None
        policy, messages = self.run.parse_policy(meta.get("annotations"))
        policy, tls_messages = upstream_tls.resolve(self.snap, ns, policy)
        policy, auth_messages = basic_auth.resolve(self.snap, ns, policy)
        tls_messages += auth_messages
        policy, ca_messages = client_auth.resolve(self.snap, ns, policy)
        tls_messages += ca_messages
        policy, header_messages = header_maps.resolve(self.snap, ns, policy, self.run.allowed)
        tls_messages += header_messages
        policy = self.custom_default(ns, policy)
        messages += tls_messages
        for msg in messages:
            self.problem(msg)
        plan = _IngressPlan(name=f"{ns}/{meta.get('name')}", policy=policy)
        if spec.get("defaultBackend") is not None:
            try:
                plan.default_backend = self.backend(
                    ns, spec["defaultBackend"], policy.service_upstream
                )
            except ValueError as exc:
                self.problem(f"defaultBackend: {exc}")
            else:
                self.unresolved(plan, plan.default_backend)
        rules = spec.get("rules") or []
        if not isinstance(rules, list):
            self.problem("spec.rules must be a list")
            return None
        plan.has_rules = bool(rules)
        for i, rule in enumerate(rules):
            if not isinstance(rule, dict):
                self.problem(f"rules[{i}] must be an object")
                continue
            host = str(rule.get("host") or "").lower()
            if host and not _HOST_RE.match(host):
                self.problem(f"rules[{i}].host {host!r} is not a valid DNS name or wildcard")
                continue
            plan.hosts.add(host)  # type: ignore[union-attr]
            paths = ((rule.get("http") or {}).get("paths")) or []
            for j, p in enumerate(paths):
                self.path(plan, ns, host, f"rules[{i}].http.paths[{j}]", p)
        for i, tls in enumerate(spec.get("tls") or []):
            if not isinstance(tls, dict):
                self.problem(f"tls[{i}] must be an object")
                continue
            hosts = [str(h).lower() for h in tls.get("hosts") or []]
            plan.tls.append((hosts, str(tls.get("secretName") or "")))
        if not plan.paths and plan.default_backend is None and not plan.tls:
            self.problem("has no usable rules and no defaultBackend")
        plan.hosts = tuple(plan.hosts)
        plan.aliases = ann.server_aliases(meta.get("annotations"))
        _warm_hash_rings(plan)
        return plan

    def path(self, plan: _IngressPlan, ns: str, host: str, where: str, p: Any) -> None:
        if not isinstance(p, dict):
            self.problem(f"{where} must be an object")
            return
        path_type = p.get("pathType")
        if path_type not in PATH_TYPES:
            self.problem(f"{where}.pathType {path_type!r} must be one of {', '.join(PATH_TYPES)}")
            return
        path = p.get("path")
        if path is None or path == "":
            if path_type != "ImplementationSpecific":
                self.problem(f"{where}.path is required for pathType {path_type}")
                return
            path = "/"
        path = str(path)
        policy = plan.policy
        if not path.startswith("/") and not (policy.regex_for(path) and path_type != "Exact"):
            self.problem(f"{where}.path {path!r} must start with /")
            return
        if policy.canary is None and policy.regex_for(path):
            # This path makes its host a regex host: RE2 must be able to run it.
            # Left out alone, it neither serves nor turns the host to regex mode.
            try:
                user_regex("^" + path, ignore_case=True)
            except RegexError as exc:
                self.problem(
                    f"{where}.path {path!r} is not a regular expression RE2 can run ({exc}); "
                    "path skipped"
                )
                return
        try:
            backend = self.backend(ns, p.get("backend"), plan.policy.service_upstream)
        except ValueError as exc:
            self.problem(f"{where}: {exc}")
            return
        self.unresolved(plan, backend)
        plan.paths.append(_Path(host, path, path_type, backend))

    def tls(self, plan: _IngressPlan, ns: str) -> tuple[tuple[_TLSEntry, ...], Span]:
        """Load the certificate of each TLS entry; an unusable one is reported here."""
        entries = []
        lo, hi = ALWAYS
        for e, (hosts, secret_name) in enumerate(plan.tls):
            implicit = not hosts
            # A TLS entry without hosts is about the Ingress's own rule hosts.
            hosts = hosts or sorted(h for h in plan.hosts if h)
            cert: TLSCertificate | str | None = None
            if secret_name:
                cert, (start, end) = self.run.certificate(self.snap, ns, secret_name)
                lo, hi = max(lo, start), min(hi, end)
                if isinstance(cert, str):
                    if hosts:
                        listed = "" if not implicit else "the entry lists no hosts: "
                        fallback = f"{listed}hosts {', '.join(hosts)} use the default certificate"
                    else:
                        # A rule without a host is the catch-all, which keeps the default.
                        fallback = (
                            "the entry lists no hosts and the rules name none: "
                            "it applies to no host"
                        )
                    self.problem(f"{cert}; {fallback}", (_TLS, self.order, e, -1))
            entries.append(_TLSEntry(hosts, cert, implicit))
        return tuple(entries), (lo, hi)


class _Run:
    """What one build shares between the Ingresses it plans."""

    def __init__(self, builder: TableBuilder, snap: Snapshot, now: float) -> None:
        self.snap = snap
        self.opts = builder.opts
        self.now = now
        self.backends = builder._backends
        self.base = builder._base  # the route defaults the controller ConfigMap sets
        # global-allowed-response-headers: what custom-headers may set
        self.allowed = builder._reading.config.allowed_response_headers
        # retry-non-idempotent: added to every route's proxy-next-upstream, annotated or not
        self.retry_all = builder._reading.config.retry_non_idempotent
        self._policies: dict[tuple[tuple[str, str], ...], tuple[RoutePolicy, tuple[str, ...]]] = {}
        self._certificates: dict[Key, tuple[TLSCertificate | str, Span]] = {}

    def parse_policy(self, raw: Any) -> tuple[RoutePolicy, list[str]]:
        """``annotations.parse_policy``, once per distinct annotations in a build.

        Ingresses often share their annotations, and a policy is frozen, so
        sharing one is safe. Only all-string annotations are keyed: 1 and True
        would be one key but are parsed as different text.
        """
        if not isinstance(raw, dict) or not all(
            type(k) is str and type(v) is str for k, v in raw.items()
        ):
            policy, messages = ann.parse_policy(raw, self.base)
            return _retrying_all(policy, self.retry_all), messages
        key = tuple(raw.items())
        known = self._policies.get(key)
        if known is None:
            policy, messages = ann.parse_policy(raw, self.base)
            policy = _retrying_all(policy, self.retry_all)
            known = self._policies[key] = (policy, tuple(messages))
        return known[0], list(known[1])

    def certificate(self, reads: Snapshot, ns: str, name: str) -> tuple[TLSCertificate | str, Span]:
        """The Secret's certificate, or why it cannot be used; and while that holds."""
        secret = reads.get("Secret", ns, name)  # through ``reads``: the plan depends on it
        known = self._certificates.get((ns, name))
        if known is None:
            if secret is None:
                known = (f"TLS Secret {ns}/{name} not found", ALWAYS)
            else:
                try:
                    known = load_certificate_span(secret, now=self.now)
                except TLSError as exc:
                    known = (str(exc), exc.span)
            self._certificates[(ns, name)] = known
        return known

    def entry(self, ing: Obj) -> _Entry:
        """Everything about ``ing`` that does not depend on other Ingresses."""
        deps: set[Dep] = set()
        reads = _reading(self.snap, deps)
        origin = self.snap.origin(ing)
        order = _order(ing)
        try:
            owner = ingress_owner(reads, self.opts, ing)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            # Fields of the wrong type (a manifest the API server's schema would
            # have refused): this Ingress is reported and skipped, never the build.
            problem = _problem(ing, origin, f"is malformed: {_malformed(exc)}")
            return _Entry(ing, origin, tuple(deps), _Role.NOT_OURS, order, problem)
        owner_problem = None
        # Only worth reporting when nothing could ever claim it here.
        if owner.via == "missing-class" and owner.class_name == self.opts.ingress_class:
            reason = f"IngressClass {owner.class_name!r} does not exist"
            owner_problem = _problem(ing, origin, reason)
        if not owner.ours:
            return _Entry(ing, origin, tuple(deps), _Role.NOT_OURS, order, owner_problem)
        planner = _Planner(self, reads, ing, origin, order)
        try:
            plan = planner.plan()
        except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
            planner.backends.clear()
            planner.problem(f"is malformed and not served: {_malformed(exc)}")
            plan = None
        entry = _Entry(ing, origin, (), _Role.UNPLANNED, order, owner_problem, plan)
        if plan is not None:
            _take_role(entry, planner, plan)
            if len({p.host for p in plan.paths}) > 1:
                entry.paths_by_host = {}
                for j, p in enumerate(plan.paths):
                    entry.paths_by_host.setdefault(p.host, []).append((j, p))
        entry.deps = tuple(deps)  # complete now: TLS Secrets were read last
        entry.problems = planner.problems
        entry.backends = tuple(planner.backends)
        return entry


def _warm_hash_rings(plan: _IngressPlan) -> None:
    """upstream-hash-by: make the rings of the plan's backends now, at build time,
    so that no request pays for it (a Backend keeps its rings while its endpoints
    stay the same)."""
    hashing = plan.policy.upstream_hash
    if hashing is None or plan.policy.canary is not None:
        return
    size = hashing.subset_size if hashing.subset else 0
    for p in plan.paths:
        p.backend.hash_ring(size)
    if plan.default_backend is not None:
        plan.default_backend.hash_ring(size)


def _take_role(entry: _Entry, planner: _Planner, plan: _IngressPlan) -> None:
    """Main or canary; and the hosts whose part of the table that touches."""
    if plan.policy.canary is not None:
        # Canary Ingresses make no routes, hosts or TLS of their own (as in
        # ingress-nginx): their paths become alternative backends of main routes.
        entry.role = _Role.CANARY
        if plan.default_backend is not None:
            planner.problem(
                "defaultBackend of a canary Ingress is not supported; ignored",
                (_CANARY, entry.order, -1, 0),
            )
        entry.hosts = tuple(dict.fromkeys(p.host for p in plan.paths))
    else:
        entry.role = _Role.MAIN
        ns = (entry.obj.get("metadata") or {}).get("namespace") or "default"
        entry.tls, entry.span = planner.tls(plan, ns)
        # Every rule host: an Ingress with a rule for a host shapes it even without
        # paths there (ingress-nginx's "/" location of the host carries the
        # annotations of the oldest one; server-wide access control applies).
        hosts = dict.fromkeys(p.host for p in plan.paths)
        hosts.update(dict.fromkeys(plan.hosts))
        if plan.default_backend is not None:
            entry.default_route = Route("/", "Prefix", plan.default_backend, plan.name, plan.policy)
        for t in entry.tls:
            hosts.update(dict.fromkeys(t.hosts))  # its certificate and VirtualHost.tls
        entry.hosts = tuple(hosts)


def _malformed(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


def resolve_service(
    snap: Snapshot, namespace: str, name: str, port: int | str, *, service_upstream: bool = False
) -> Backend:
    """Service port -> ready endpoint addresses (EndpointSlices), or an error.

    With ``service_upstream`` (the annotation), the one endpoint is the
    Service's ClusterIP and port, as in ingress-nginx.
    """
    label = f"{namespace}/{name}:{port}"
    svc = snap.get("Service", namespace, name)
    if svc is None:
        return Backend(label, error=f"service {namespace}/{name} not found")
    spec = svc.get("spec") or {}
    svc_port = None
    for sp in spec.get("ports") or []:
        if (isinstance(port, int) and sp.get("port") == port) or (
            isinstance(port, str) and sp.get("name") == port
        ):
            svc_port = sp
            break
    if spec.get("type") == "ExternalName":
        external = spec.get("externalName")
        if not external:
            return Backend(label, error=f"service {namespace}/{name} has no externalName")
        number = _external_port(svc_port, port)
        if number is None:
            return Backend(label, error=f"service {namespace}/{name} has no port {port!r}")
        return Backend(label, endpoints=(Endpoint(str(external).rstrip("."), number),))
    if svc_port is None:
        return Backend(label, error=f"service {namespace}/{name} has no port {port!r}")
    if service_upstream:
        cluster_ip = str(spec.get("clusterIP") or "")
        if not cluster_ip or cluster_ip == "None":
            why = "is headless" if cluster_ip == "None" else "has no clusterIP"
            return Backend(
                label,
                error=f"service {namespace}/{name} {why}; service-upstream needs a ClusterIP",
            )
        return Backend(label, endpoints=(Endpoint(cluster_ip, int(svc_port["port"])),))
    port_name = svc_port.get("name") or ""
    found: set[Endpoint] = set()
    for eps in snap.slices_by_service.get((namespace, name), ()):
        number = None
        for ep_port in eps.get("ports") or []:
            if (ep_port.get("name") or "") == port_name and ep_port.get("port"):
                number = int(ep_port["port"])
                break
        if number is None:
            continue
        for ep in eps.get("endpoints") or []:
            # A nil "ready" means unknown, which the API says to treat as ready.
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            addresses = ep.get("addresses") or []
            if addresses:
                found.add(Endpoint(str(addresses[0]), number))
    return Backend(label, endpoints=tuple(sorted(found, key=lambda e: (e.host, e.port))))


def resolve_default_service(snap: Snapshot, namespace: str, name: str) -> Backend:
    """A default backend Service: its first port, as ingress-nginx takes it
    (controller.go getDefaultUpstream and the default-backend annotation:
    ``Spec.Ports[0]``), resolved like any Service port; or why it cannot be."""
    label = f"{namespace}/{name}"
    try:
        svc = snap.get("Service", namespace, name)
        if svc is None:
            return Backend(label, error=f"service {namespace}/{name} not found")
        ports = (svc.get("spec") or {}).get("ports") or []
        first = ports[0] if ports else None
        if not isinstance(first, dict) or first.get("port") is None:
            return Backend(label, error=f"service {namespace}/{name} has no ports")
        return resolve_service(snap, namespace, name, int(first["port"]))
    except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
        reason = f"service {namespace}/{name} or its EndpointSlices are malformed"
        return Backend(label, error=f"{reason}: {_malformed(exc)}")


def _external_port(svc_port: dict | None, port: int | str) -> int | None:
    if svc_port is not None:
        target = svc_port.get("targetPort")
        if isinstance(target, int) and target > 0:
            return target
        return int(svc_port["port"])
    return port if isinstance(port, int) else None


def _prefix_key(path: str) -> str:
    return path.rstrip("/")


# -- one host ------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _HostResult:
    """One host's part of the table, from the Ingresses that take part in it."""

    vhost: VirtualHost | None  # None: no route names the host (it may still have TLS)
    cert: TLSCertificate | None
    problems: list[tuple[Tag, Problem]]


@dataclass(slots=True, eq=False)
class _Candidate:
    """A path that holds its location on a host, before it becomes a Route."""

    entry: _Entry
    path: _Path
    tag: Tag
    canary: Canary | None = None

    @property
    def plan(self) -> _IngressPlan:
        return self.entry.plan  # type: ignore[return-value]


def _merge_host(
    host: str,
    entries: list[_Entry],
    no_tls: tuple[str, ...] = (),
    no_auth: tuple[str, ...] = (),
) -> _HostResult:
    """Routes, canaries and certificate of ``host``; ``entries`` in creation order.

    The oldest Ingress wins every conflict, as in ingress-nginx. Two paths
    conflict when ingress-nginx would make one location of them: the same
    path and kind (ImplementationSpecific is Prefix to it); without regex
    mode also Prefix ``/p`` and ``/p/``, which both become ``location /p/``
    (nginx refuses such a configuration; the older one keeps serving).
    """
    problems: list[tuple[Tag, Problem]] = []
    mains = [e for e in entries if e.role is _Role.MAIN]
    # One location per path and kind (controller.go getBackendServers); the first wins.
    found: dict[tuple[str, bool], _Candidate] = {}  # (path, Exact?), in merge order
    default: Route | None = None
    deny: tuple[int, str] | None = None  # access control that must hold host-wide
    mtls: ClientAuth | None = None  # auth-tls-*: the host's client certificate check
    mtls_owner = ""  # the Ingress it comes from
    server_snippet: SnippetPolicy | None = None  # every route of the host gets it
    first: RoutePolicy | None = None  # of the oldest Ingress with a rule for the host
    ciphers: str | None = None  # ssl-ciphers: the oldest Ingress's that sets it
    ciphers_owner = ""
    owner = ""  # that Ingress
    routed = False  # a host with paths or a defaultBackend gets a VirtualHost
    for e in mains:
        plan: _IngressPlan = e.plan  # type: ignore[assignment]
        if host in plan.hosts:
            if first is None:
                first, owner = plan.policy, plan.name
                # The host's "/" location is made by the oldest Ingress with a
                # rule for it, with its defaultBackend or none (controller.go
                # createServers: a server already configured is skipped). The
                # catch-all server "_" is made before any Ingress: rules without
                # a host never give it theirs (the table's default serves it).
                default = e.default_route if host else None
            deny = deny or plan.policy.host_fail_closed
            mine = plan.policy.client_auth
            if mine is not None:
                # controller.go createServers: the oldest Ingress of the host whose
                # auth-tls has a CA sets the server's CertificateAuth; the rest cannot.
                where: Tag = (_MERGE, e.order, -2, plan.hosts.index(host))  # type: ignore[union-attr]
                reason = ""
                if not host:
                    # The catch-all has no SNI name to ask for a certificate under.
                    denied = "auth-tls-secret on rules without a host is not supported by ingressd"
                    deny = deny or (403, denied)
                    reason = f"{denied}; its routes without a host answer 403"
                elif mtls is None:
                    mtls, mtls_owner = mine, plan.name
                elif mine.key != mtls.key:
                    reason = (
                        f"auth-tls-* of this Ingress do not apply to host {host}: client "
                        f"certificates there are checked as older Ingress {mtls_owner} says "
                        "(server-wide, as in ingress-nginx)"
                    )
                if reason:
                    problems.append((where, _problem(e.obj, e.origin, reason)))
            mine_ciphers = plan.policy.ssl_ciphers
            if mine_ciphers is not None and host:
                # controller.go createServers: a server's SSLCiphers come from the
                # first Ingress of the host that sets them; the others' do not apply.
                if ciphers is None:
                    ciphers, ciphers_owner = mine_ciphers, plan.name
                elif mine_ciphers != ciphers:
                    reason = (
                        f"ssl-ciphers of this Ingress do not apply to host {host}: older "
                        f"Ingress {ciphers_owner} sets them (server-wide, as in ingress-nginx)"
                    )
                    where = (_MERGE, e.order, -3, plan.hosts.index(host))  # type: ignore[union-attr]
                    problems.append((where, _problem(e.obj, e.origin, reason)))
            if server_snippet is None:
                # One server-snippet per server: the oldest Ingress's (controller.go
                # createServers skips the others).
                server_snippet = plan.policy.server_snippet
        for j, p in _paths_on(e, host):
            routed = True
            key = (p.path, p.path_type == "Exact")
            tag: Tag = (_MERGE, e.order, j, 0)
            winner = found.get(key)
            if winner is not None:
                problems.append((tag, _conflict(e, p, winner.plan.name)))
                continue
            found[key] = _Candidate(e, p, tag)
        if plan.default_backend is not None and host in plan.hosts:
            routed = True
            if not host:
                reason = (
                    "defaultBackend does not serve requests for other hosts: as in "
                    "ingress-nginx, only the oldest Ingress with a defaultBackend and no "
                    "rules does"
                )
            elif owner != plan.name:
                reason = (
                    f"defaultBackend does not serve host {host}: older Ingress {owner} "
                    "has rules for it, and as in ingress-nginx its defaultBackend (or none) "
                    "serves the host's unmatched paths"
                )
            else:
                reason = ""
            if reason:
                # One per host of the Ingress, in a fixed order however it was built.
                tag = (_MERGE, e.order, -1, plan.hosts.index(host))  # type: ignore[union-attr]
                problems.append((tag, _problem(e.obj, e.origin, reason)))
    # ingress-nginx turns every location of a host into a regex once one of them
    # asks for it (template.go enforceRegexModifier), the host's own "/" location
    # included: it carries the annotations of the oldest Ingress with a rule for
    # the host, unless a Prefix "/" path took its place.
    root = found.get(("/", False))
    root_policy = root.plan.policy if root is not None else first
    regex_mode = any(c.plan.policy.regex_for(c.path.path) for c in found.values()) or (
        root_policy is not None and root_policy.regex_for("/")
    )
    if not regex_mode:
        _drop_slash_twins(found, problems)
    for e in entries:
        if e.role is _Role.CANARY:
            _attach_canary(e, host, routed, found, problems)
    cert, tls = _host_certificate(host, mains, problems)
    vhost = None
    if routed:
        policies = _Policies(deny, server_snippet, no_tls, no_auth)
        if default is not None and (deny is not None or server_snippet is not None):
            default = replace(default, policy=policies.of(default.policy))
        if regex_mode:
            vhost = _regex_host(host, found, policies, default, tls, problems)
        else:
            vhost = _static_host(host, found, policies, default, tls)
        if host and (deny is not None or (first is not None and _restricts(first))):
            vhost = replace(vhost, guarded=True)
        if mtls is not None:
            vhost = replace(vhost, client_auth=mtls)
        if ciphers is not None:
            vhost = replace(vhost, ssl_ciphers=ciphers)
    return _HostResult(vhost, cert, problems)


def _restricts(policy: RoutePolicy) -> bool:
    """Whether ``policy`` limits who gets an answer. ingress-nginx gives a host's "/"
    location, which its unmatched paths reach, the annotations of its oldest Ingress
    (controller.go createServers); ingressd does not send those paths to the default
    backend unless they would reach it unrestricted (RouteTable.route_in)."""
    return (
        policy.fail_closed is not None
        or policy.allow_source is not None
        or policy.deny_source is not None
        or policy.auth is not None
        or policy.basic_auth is not None
        or policy.external_auth is not None
    )


class _Policies:
    """Each Ingress's policy on this host: with the host-wide denial, when there is
    one, the host's server-snippet, and without HTTPS redirects on paths under the
    ConfigMap's no-tls-redirect-locations."""

    __slots__ = (
        "_deny",
        "_no_auth",
        "_no_tls",
        "_seen",
        "_server_snippet",
        "_unauthenticated",
        "_unredirected",
    )

    def __init__(
        self,
        deny: tuple[int, str] | None,
        server_snippet: SnippetPolicy | None = None,
        no_tls: tuple[str, ...] = (),
        no_auth: tuple[str, ...] = (),
    ) -> None:
        self._deny = deny
        self._server_snippet = server_snippet
        self._no_tls = no_tls
        self._no_auth = no_auth
        self._seen: dict[int, RoutePolicy] = {}
        self._unredirected: dict[int, RoutePolicy] = {}
        self._unauthenticated: dict[int, RoutePolicy] = {}

    def of(self, policy: RoutePolicy, path: str | None = None) -> RoutePolicy:
        deny = self._deny if policy.fail_closed is None else None
        snippet = self._server_snippet
        if deny is not None or policy.server_snippet is not snippet:
            changed = self._seen.get(id(policy))
            if changed is None:
                changed = policy
                if deny is not None:
                    changed = replace(changed, fail_closed=deny)
                if changed.server_snippet is not snippet:
                    changed = replace(changed, server_snippet=snippet)
                self._seen[id(policy)] = changed
            policy = changed
        if (
            path is not None
            and (policy.ssl_redirect or policy.force_ssl_redirect)
            and any(path.startswith(loc) for loc in self._no_tls)
        ):
            # template.go locationConfigForLua: force_no_ssl_redirect is whether the
            # location's path starts with one of no-tls-redirect-locations
            # (isLocationInLocationList), and lua_ingress.lua then never redirects.
            kept = self._unredirected.get(id(policy))
            if kept is None:
                kept = self._unredirected[id(policy)] = replace(
                    policy, ssl_redirect=False, force_ssl_redirect=False
                )
            policy = kept
        if (
            path is not None
            and (policy.external_auth is not None or policy.basic_auth is not None)
            and any(path.startswith(loc) for loc in self._no_auth)
        ):
            # nginx.tmpl (and template.go buildAllowedLocation): the auth_request, the
            # sign-in error_page and auth_basic are all left out of a location whose
            # path starts with one of no-auth-locations (isLocationInLocationList).
            bare = self._unauthenticated.get(id(policy))
            if bare is None:
                bare = self._unauthenticated[id(policy)] = replace(
                    policy, external_auth=None, basic_auth=None, auth=None
                )
            policy = bare
        return policy


def _route(c: _Candidate, policies: _Policies, regex: UserRegex | None = None) -> Route:
    p, plan = c.path, c.plan
    policy = plan.policy
    return Route(
        p.path,
        p.path_type,  # type: ignore[arg-type]
        p.backend,
        plan.name,
        policies.of(policy, p.path),
        regex,
        c.canary,
        policy.rewrites(p.path),
    )


def _drop_slash_twins(
    found: dict[tuple[str, bool], _Candidate], problems: list[tuple[Tag, Problem]]
) -> None:
    """Prefix /p and /p/ both become "location /p/", which nginx refuses as a
    duplicate: the configuration without the younger one keeps serving."""
    seen: dict[str, _Candidate] = {}
    for key, c in list(found.items()):
        if key[1]:
            continue
        winner = seen.setdefault(_prefix_key(c.path.path), c)
        if winner is not c:
            del found[key]
            problems.append((c.tag, _conflict(c.entry, c.path, winner.plan.name)))


def _static_host(
    host: str,
    found: dict[tuple[str, bool], _Candidate],
    policies: _Policies,
    default: Route | None,
    tls: bool,
) -> VirtualHost:
    """A host of static locations; see VirtualHost for what nginx makes of them."""
    exact: dict[str, Route] = {}
    prefix: dict[str, Route] = {}
    for (path, is_exact), c in found.items():
        if is_exact:
            exact[path] = _route(c, policies)
        else:
            prefix[_prefix_key(path)] = _route(c, policies)
    static = dict(exact)
    for route in prefix.values():
        if route.path != "/":
            static.setdefault(route.path, route)  # the "= /p" twin, unless Exact /p exists
    # Exact first: when "= /p/" and "/p/" both exist, nginx's tree node gives the exact one.
    for route in (*exact.values(), *prefix.values()):
        name = route.path
        if route.path_type != "Exact" and not name.endswith("/"):
            name += "/"
        if len(name) > 1 and name.endswith("/") and name[:-1] not in static:
            static[name[:-1]] = Route(
                route.path,
                route.path_type,
                route.backend,
                route.ingress,
                route.policy,
                slash_redirect=name,
            )
    return VirtualHost(
        host=host,
        exact=MappingProxyType(exact),
        prefix=MappingProxyType(prefix),
        default=default,
        tls=tls,
        static=MappingProxyType(static),
    )


def _regex_host(
    host: str,
    found: dict[tuple[str, bool], _Candidate],
    policies: _Policies,
    default: Route | None,
    tls: bool,
    problems: list[tuple[Tag, Problem]],
) -> VirtualHost:
    """A host of regex locations, in ingress-nginx's order; see VirtualHost."""
    # ingress-nginx's own "/" location (the default backend) is created before any
    # path's; a Prefix "/" path takes it over, and its place (controller.go
    # getBackendServers: "Replacing location").
    items: list[tuple[str, Route | None]] = []
    root = found.get(("/", False))
    if root is None:
        items.append(("/", None))
    for (path, is_exact), c in sorted(found.items(), key=lambda kv: kv[1] is not root):
        policy = c.plan.policy
        if is_exact or path == "/" or policy.use_regex or policy.rewrites(path):
            pattern = path  # updateServerLocations leaves these alone
        elif (path, True) in found and not path.endswith("/"):
            # Prefix /p beside Exact /p: only "/p/", the exact name being taken
            # (location.go); else "/p/" and "= /p", which as regexes are "^/p".
            pattern = path + "/"
        else:
            pattern = path
        try:
            compiled = user_regex("^" + pattern, ignore_case=True)
        except RegexError as exc:
            reason = (
                f"path {path!r} on host {host or '*'} is matched as a regular expression "
                f"(an Ingress on this host uses regex) and RE2 cannot run it ({exc}); path skipped"
            )
            problems.append((c.tag, _problem(c.entry.obj, c.entry.origin, reason)))
            continue
        items.append((path, _route(c, policies, compiled)))
    # controller.go getBackendServers: stable sorts by path, descending, then by
    # length, descending (Go compares bytes: UTF-8).
    items.sort(key=_utf8_of, reverse=True)
    items.sort(key=_utf8_len, reverse=True)
    order: list[tuple[UserRegex, Route | None]] = []
    for _, located in items:
        matcher = located.regex if located is not None else user_regex("^/", ignore_case=True)
        order.append((matcher, located))  # type: ignore[arg-type]
    return VirtualHost(
        host=host,
        regex=tuple(r for _, r in items if r is not None),
        regex_mode=True,
        default=default,
        tls=tls,
        order=tuple(order),
    )


def _utf8_of(item: tuple[str, Route | None]) -> bytes:
    return item[0].encode("utf-8", "surrogatepass")


def _utf8_len(item: tuple[str, Route | None]) -> int:
    return len(item[0].encode("utf-8", "surrogatepass"))


def _conflict(e: _Entry, p: _Path, winner: str) -> Problem:
    plan: _IngressPlan = e.plan  # type: ignore[assignment]
    if winner == plan.name:
        reason = (
            f"path {p.path!r} ({p.path_type}) on host {p.host or '*'} is listed "
            "twice; the first one is used"
        )
    else:
        reason = (
            f"path {p.path!r} ({p.path_type}) on host {p.host or '*'} is already "
            f"served by older Ingress {winner}; this rule is ignored"
        )
    return _problem(e.obj, e.origin, reason)


def _attach_canary(
    e: _Entry,
    host: str,
    routed: bool,
    found: dict[tuple[str, bool], _Candidate],
    problems: list[tuple[Tag, Problem]],
) -> None:
    """Attach each canary path on ``host`` to the main route with the same path and pathType.

    ImplementationSpecific and Prefix are one pathType here, as in ingress-nginx
    (mergeAlternativeBackends compares them after SetDefaultNGINXPathType).
    The main route keeps its policy; only the backend a request goes to can
    change. The oldest canary for a route wins, as the oldest rule does.
    """
    plan: _IngressPlan = e.plan  # type: ignore[assignment]
    for j, p in _paths_on(e, host):
        tag: Tag = (_CANARY, e.order, j, 0)
        where = f"host {p.host or '*'} path {p.path} ({p.path_type})"
        main = found.get((p.path, p.path_type == "Exact")) if routed else None
        if main is None:
            problems.append(
                (tag, _problem(e.obj, e.origin, f"no main Ingress serves {where}; canary ignored"))
            )
            continue
        if main.canary is not None:
            if main.canary.ingress == plan.name:
                reason = f"{where} is listed twice; the first one is used"
            else:
                reason = (
                    f"{where} already has a canary from older Ingress "
                    f"{main.canary.ingress}; this canary is ignored"
                )
            problems.append((tag, _problem(e.obj, e.origin, reason)))
            continue
        main.canary = replace(plan.policy.canary, backend=p.backend, ingress=plan.name)  # type: ignore[type-var]


def _host_certificate(
    host: str, mains: list[_Entry], problems: list[tuple[Tag, Problem]]
) -> tuple[TLSCertificate | None, bool]:
    """The certificate for ``host`` (None: the default one), and whether it is served
    over TLS at all (and so redirected to https), as ingress-nginx decides both
    (controller.go createServers): the oldest Ingress that has a rule for the host
    and a spec.tls section decides. Its entry listing the host gives the Secret;
    with no entry listing it, the first entry whose certificate covers the host
    does (extractTLSSecretName); failing all, the default certificate serves it,
    over TLS still. Younger Ingresses cannot change it.
    """
    cert: TLSCertificate | None = None
    decider = ""
    for e in mains:
        plan: _IngressPlan = e.plan  # type: ignore[assignment]
        if host not in plan.hosts or not e.tls:
            continue
        if not decider:
            decider = plan.name
            cert = _decide_certificate(host, e, problems)
            continue
        for i, entry in enumerate(e.tls):
            mine = entry.cert
            if entry.implicit or not isinstance(mine, TLSCertificate) or host not in entry.hosts:
                continue
            if cert is not None and cert.secret == mine.secret:
                continue
            taken = f"Secret {cert.secret}" if cert is not None else "the default certificate"
            reason = (
                f"TLS for host {host} already comes from {taken} of older Ingress "
                f"{decider}; Secret {mine.secret} ignored"
            )
            tag: Tag = (_TLS, e.order, i, entry.hosts.index(host))
            problems.append((tag, _problem(e.obj, e.origin, reason)))
    return cert, bool(decider)


def _decide_certificate(
    host: str, e: _Entry, problems: list[tuple[Tag, Problem]]
) -> TLSCertificate | None:
    """The certificate Ingress ``e`` gives ``host``, a rule host of its (None: the default)."""
    for i, entry in enumerate(e.tls):
        if entry.implicit or host not in entry.hosts:
            continue
        mine = entry.cert
        if not isinstance(mine, TLSCertificate):
            return None  # no secretName, or unusable (reported with the entry)
        if mine.covers(host):
            return mine
        reason = (
            f"certificate in Secret {mine.secret} does not cover host {host} (it names "
            f"{', '.join(mine.dns_names) or 'nothing'}); the default certificate is used"
        )
        tag: Tag = (_TLS, e.order, i, entry.hosts.index(host))
        problems.append((tag, _problem(e.obj, e.origin, reason)))
        return None
    # No entry lists the host: an entry whose certificate covers it serves it.
    for entry in e.tls:
        mine = entry.cert
        if isinstance(mine, TLSCertificate) and mine.covers(host):
            return mine
    return None


# -- the builder -----------------------------------------------------------------------------


class TableBuilder:
    """Builds routing tables from successive snapshots, redoing only what changed.

    Kept between builds: each Ingress's plan (with what it read), each resolved
    Service port, each host's part of the table. A build finds what changed by
    comparing the new snapshot with the last one object by object (a kind whose
    mapping is the same object is skipped whole), replans the Ingresses that
    read a changed object, and redoes the hosts those Ingresses take part in.

    One builder serves one thread (the controller's event loop).
    """

    def __init__(self, opts: BuildOptions = BuildOptions()) -> None:
        self.opts = opts
        self.planned = 0  # Ingresses planned, over all builds: a measure of work done
        # The controller ConfigMap as last read, the object it was read from, and
        # the route defaults it makes; a change of its settings rebuilds everything.
        self._reading: Reading = DEFAULT_READING
        self._configmap: Obj | None = None
        # The ConfigMaps of headers its add-headers and proxy-set-headers name, as
        # last read (None: not named or not found), and what reading them reported.
        self._header_maps: tuple[Obj | None, Obj | None] = (None, None)
        self._header_problems: tuple[Problem, ...] = ()
        self._base: RoutePolicy = DEFAULT_POLICY
        self._reset()

    @property
    def size(self) -> int:
        """How many Ingresses the last build saw."""
        return len(self._entries)

    def _reset(self) -> None:
        self._snap: Snapshot | None = None
        self._entries: dict[Key, _Entry] = {}
        self._dependents = _Index()  # what was read -> the Ingresses that read it
        self._backends: dict[BackendKey, _Resolved] = {}
        self._by_host = _Index()  # host -> the Ingresses taking part in it
        self._hosts: dict[str, _HostResult] = {}
        self._ours: list[tuple[Order, Key]] = []  # our Ingresses, in creation order
        self._ours_changed = False
        self._defaults: set[Key] = set()  # main Ingresses with a defaultBackend
        self._www: set[Key] = set()  # main Ingresses with from-to-www-redirect
        self._aliased: set[Key] = set()  # main Ingresses with server-alias
        self._problem_entries: set[Key] = set()
        self._problem_hosts: set[str] = set()
        self._owner_problems = 0
        self._spans: dict[Key, Span] = {}  # Ingresses whose certificates depend on the time
        self._span: Span | None = ALWAYS  # their intersection; None: to be computed
        # The last table's parts, handed on while unchanged (never modified once handed).
        self._exact: dict[str, VirtualHost] = {}
        self._wildcard: dict[str, VirtualHost] = {}
        self._catch_all: VirtualHost | None = None
        self._certificates: dict[str, TLSCertificate] = {}
        self._client_auth_hosts: set[str] = set()  # hosts whose VirtualHost has client_auth
        self._cipher_hosts: set[str] = set()  # hosts whose VirtualHost has ssl_ciphers
        self._last: RouteTable | None = None
        # --default-backend-service: the Service and slices it was resolved from, its
        # route (None: ingressd's own 404) and the problem it makes, if any.
        self._fallback_from: tuple[Obj | None, tuple[Obj, ...]] | None = None
        self._fallback: tuple[Route | None, Problem | None] = (None, None)

    def build(self, snap: Snapshot, *, generation: int = 0, now: float | None = None) -> RouteTable:
        """The table for ``snap``; problems are returned in ``table.problems``."""
        try:
            with _collector_paused():
                return self._build(snap, generation, time.time() if now is None else now)
        except BaseException:
            # A build stopped halfway leaves the kept state matching no snapshot.
            self._reset()
            raise

    def _build(self, snap: Snapshot, generation: int, now: float) -> RouteTable:
        self._configmap_unchanged = True
        self._read_configmap(snap)
        first = self._snap is None
        dirty = self._dirty(snap, now)
        run = _Run(self, snap, now)
        ingresses = snap.of("Ingress")
        touched: dict[str, None] = {}  # hosts to redo, in order
        for key in dirty:
            ing = ingresses.get(key)
            self._replace(key, None if ing is None else run.entry(ing), touched)
        self.planned += len(dirty)
        self._snap = snap
        if first:
            self._ours.sort()
            touched = self._appearance_order(touched)
        self._redo_hosts(touched)
        last = self._last
        fallback_changed = self._default_backend(snap)
        if last is not None and not dirty and self._configmap_unchanged:
            if fallback_changed:
                table = replace(
                    last,
                    generation=generation,
                    fallback=self._fallback[0],
                    problems=self._problems(snap),
                )
            else:
                table = replace(last, generation=generation)
        else:
            table = self._table(snap, generation, last)
        self._last = table
        return table

    def _default_backend(self, snap: Snapshot) -> bool:
        """Resolve --default-backend-service again if its Service or slices changed
        (then True). Kept while they are the same objects, round-robin position too.

        As ingress-nginx (controller.go getDefaultUpstream): without the Service or
        without ready endpoints, its internal default server answers 404 instead.
        """
        ref = self.opts.default_backend_service
        if not ref:
            return False
        ns, _, name = ref.partition("/")
        svc = snap.get("Service", ns, name)
        slices = snap.slices_by_service.get((ns, name), ())
        kept = self._fallback_from
        if kept is not None and kept[0] is svc and _same_items(kept[1], slices):
            return False
        self._fallback_from = (svc, tuple(slices))
        backend = resolve_default_service(snap, ns, name)
        reason = None
        if backend.error is not None:
            reason = backend.error
        elif not backend.endpoints:
            reason = f"service {ns}/{name} has no ready endpoints"
        if reason is None:
            policy = _http_level(self._base)
            self._fallback = (Route("/", "Prefix", backend, "", policy), None)
        else:
            reason += "; what it would serve gets ingressd's own 404"
            problem = Problem(f"--default-backend-service {ref}", reason, "", ("Service", ns, name))
            self._fallback = (None, problem)
        return True

    def _read_configmap(self, snap: Snapshot) -> None:
        """The controller ConfigMap's settings; everything is planned again when they change.

        Every policy depends on them, and they change rarely: a full build then
        is simpler than tracking which Ingresses read which key, and as sound."""
        ref = self.opts.configmap
        cm = snap.get("ConfigMap", *ref) if ref is not None else None
        if cm is self._configmap and self._snap is not None:
            config = self._reading.config
            maps = _header_maps(snap, config)
            if _same_items(maps, self._header_maps):  # type: ignore[arg-type]
                return
            reading = self._reading
        else:
            self._configmap = cm
            data = cm.get("data") if cm is not None else None
            reading = read_configmap(data, dict(self.opts.explicit))
            maps = _header_maps(snap, reading.config)
        base, problems = _base_policy_with_headers(snap, reading.config, maps, ref, cm)
        if reading.config != self._reading.config or base != self._base:
            self._reset()
            self._base = base
        elif reading != self._reading or problems != self._header_problems:
            self._configmap_unchanged = False  # the same settings, other problems: a new table
        self._reading = reading
        self._header_maps = maps
        self._header_problems = problems

    # -- what changed ------------------------------------------------------------

    def _dirty(self, snap: Snapshot, now: float) -> dict[Key, None]:
        """The Ingresses to plan again (or forget), in a stable order."""
        prev = self._snap
        if prev is None:
            return dict.fromkeys(snap.of("Ingress"))
        dirty: dict[Key, None] = {}
        for kind in (*snap.objects, *(k for k in prev.objects if k not in snap.objects)):
            keys = changed_keys(prev.of(kind), snap.of(kind), _never)
            if kind == "Ingress":
                dirty.update(dict.fromkeys(keys))
            self._mark(kind, keys, dirty)
        keys = changed_keys(prev.slices_by_service, snap.slices_by_service, _same_items)
        self._mark(_SLICES, keys, dirty)
        for kind, ns, name in changed_keys(prev.origins, snap.origins, operator.eq):
            if kind == "Ingress":  # problems name where their Ingress came from
                dirty[(ns, name)] = None
        if self._span is None:
            spans = self._spans.values()
            self._span = (
                max((s[0] for s in spans), default=ALWAYS[0]),
                min((s[1] for s in spans), default=ALWAYS[1]),
            )
        if not self._span[0] <= now <= self._span[1]:
            # A certificate has expired or become valid since it was loaded.
            dirty.update(
                (key, None) for key, (lo, hi) in self._spans.items() if not lo <= now <= hi
            )
        return dirty

    def _mark(self, kind: str, keys: list[Key], dirty: dict[Key, None]) -> None:
        if not keys:
            return
        dependents = self._dependents
        for key in (*keys, _WHOLE):
            dirty.update(dict.fromkeys(dependents.get((kind, key))))

    # -- keeping entries -------------------------------------------------------------

    def _replace(self, key: Key, new: _Entry | None, touched: dict[str, None]) -> None:
        old = self._entries.pop(key, None)
        self._reorder(key, old, new)
        if new is not None:  # before the old one lets go: a Backend both use stays
            for backend in new.backends:
                self._backends[backend].users += 1
        if old is not None:
            for backend in old.backends:
                resolved = self._backends[backend]
                resolved.users -= 1
                if resolved.users <= 0:
                    del self._backends[backend]
            self._unindex(key, old, touched)
        if new is not None:
            self._entries[key] = new
            self._index(key, new, touched)

    def _reorder(self, key: Key, old: _Entry | None, new: _Entry | None) -> None:
        """Keep ``_ours`` (what RouteTable.ingresses lists) sorted; note when it changes."""
        was = None if old is None or old.role is _Role.NOT_OURS else (old.order, key)
        now = None if new is None or new.role is _Role.NOT_OURS else (new.order, key)
        if was == now:
            return
        if was is not None:
            del self._ours[bisect.bisect_left(self._ours, was)]
        if now is not None:
            if self._snap is None:  # the first build sorts them all once, at its end
                self._ours.append(now)
            else:
                bisect.insort(self._ours, now)
        self._ours_changed = True

    def _index(self, key: Key, e: _Entry, touched: dict[str, None]) -> None:
        for dep in e.deps:
            self._dependents.add(dep, key)
        for host in e.hosts:
            self._by_host.add(host, key)
            touched[host] = None
        if e.role is _Role.MAIN and e.plan is not None:
            if e.plan.default_backend is not None and not e.plan.has_rules:
                # controller.go createServers: only an Ingress with a backend and
                # no rules configures the catch-all server; the oldest one wins.
                self._defaults.add(key)
            if e.plan.policy.from_to_www_redirect:
                self._www.add(key)
            if e.plan.aliases:
                self._aliased.add(key)
        if e.problems:
            self._problem_entries.add(key)
        if e.owner_problem is not None:
            self._owner_problems += 1
        if e.span != ALWAYS:
            self._spans[key] = e.span
            self._span = None

    def _unindex(self, key: Key, e: _Entry, touched: dict[str, None]) -> None:
        for dep in e.deps:
            self._dependents.discard(dep, key)
        for host in e.hosts:
            self._by_host.discard(host, key)
            touched[host] = None
        self._defaults.discard(key)
        self._www.discard(key)
        self._aliased.discard(key)
        self._problem_entries.discard(key)
        if e.owner_problem is not None:
            self._owner_problems -= 1
        if self._spans.pop(key, None) is not None:
            self._span = None

    # -- hosts -------------------------------------------------------------------------

    def _appearance_order(self, touched: dict[str, None]) -> dict[str, None]:
        """Hosts in the order a from-scratch merge meets them, so a full build lists them so."""
        order: dict[str, None] = {}
        for _, key in self._ours:
            e = self._entries[key]
            if e.role is _Role.MAIN and e.plan is not None:
                order.update((p.host, None) for p in e.plan.paths)
                if e.plan.default_backend is not None:
                    order.update(dict.fromkeys(e.plan.hosts))
        order.update(touched)
        return order

    def _redo_hosts(self, touched: Iterable[str]) -> None:
        copied: set[str] = set()
        for host in touched:
            keys = self._by_host.get(host)
            new = None
            if keys:
                new = _merge_host(
                    host,
                    sorted((self._entries[k] for k in keys), key=_entry_order),
                    self._reading.config.no_tls_redirect_locations,
                    self._reading.config.no_auth_locations,
                )
            old = self._hosts.pop(host, None)
            self._problem_hosts.discard(host)
            if new is not None and (new.vhost or new.cert or new.problems):
                self._hosts[host] = new
                if new.problems:
                    self._problem_hosts.add(host)
            vhost = None if new is None else new.vhost
            if vhost is not None and vhost.client_auth is not None:
                self._client_auth_hosts.add(host)
            else:
                self._client_auth_hosts.discard(host)
            if vhost is not None and vhost.ssl_ciphers is not None:
                self._cipher_hosts.add(host)
            else:
                self._cipher_hosts.discard(host)
            if vhost is not None or (old is not None and old.vhost is not None):
                if not host:
                    self._catch_all = vhost
                elif host.startswith("*."):
                    _put(self._own("_wildcard", copied), host[2:], vhost)
                else:
                    _put(self._own("_exact", copied), host, vhost)
            cert = None if new is None else new.cert
            if cert is not (None if old is None else old.cert):
                _put(self._own("_certificates", copied), host, cert)

    def _own(self, name: str, copied: set[str]) -> dict[str, Any]:
        """The dict ``name``, copied once per build: the last table's stays as it was."""
        if name not in copied:
            setattr(self, name, dict(getattr(self, name)))
            copied.add(name)
        return getattr(self, name)

    def _routed(self, host: str) -> bool:
        result = self._hosts.get(host)
        return result is not None and result.vhost is not None

    # -- the table ---------------------------------------------------------------------

    def _table(self, snap: Snapshot, generation: int, last: RouteTable | None) -> RouteTable:
        if last is None or self._ours_changed:
            ingresses = tuple(key for _, key in self._ours)
        else:
            ingresses = last.ingresses
        self._ours_changed = False
        default = None
        if self._defaults:
            first = min(self._defaults, key=lambda k: self._entries[k].order)
            default = self._entries[first].default_route
        certificates, www = self._www_redirects()
        exact, wildcard, problems = self._exact, self._wildcard, self._problems(snap)
        if self._aliased:
            exact, wildcard, certificates, problems = self._with_aliases(certificates, problems)
        return RouteTable(
            exact_hosts=MappingProxyType(exact),
            wildcard_hosts=MappingProxyType(wildcard),
            catch_all=self._catch_all,
            default=default,
            certificates=MappingProxyType(certificates),
            problems=problems,
            generation=generation,
            ingresses=ingresses,
            www_redirects=MappingProxyType(www),
            fallback=self._fallback[0],
            # --custom-http-errors given explicitly wins over the ConfigMap's key.
            custom_http_errors=(
                frozenset(self.opts.custom_http_errors) or self._reading.config.custom_http_errors
            ),
            config=self._reading.config,
            hsts=self._reading.config.hsts_header,
            client_auth=bool(self._client_auth_hosts),
            ssl_ciphers=bool(self._cipher_hosts),
            http_headers=self._base.response_headers,
            http_header_names=frozenset(n.lower() for n, _ in self._base.response_headers),
        )

    def _www_redirects(self) -> tuple[dict[str, TLSCertificate], dict[str, str]]:
        """from-to-www-redirect: www.host <-> host, for names no rule routes itself.

        Over HTTPS the redirect needs a certificate for the name asked for, so the
        host's own certificate serves it when it covers that name too.
        """
        if not self._www:
            return self._certificates, {}
        certificates = dict(self._certificates)
        out: dict[str, str] = {}
        for key in sorted(self._www, key=lambda k: self._entries[k].order):
            plan = self._entries[key].plan
            assert plan is not None
            for host in sorted(plan.hosts):
                if not host or host.startswith("*."):
                    continue
                alias = host[4:] if host.startswith("www.") else "www." + host
                if self._routed(alias) or alias in out:
                    continue
                out[alias] = host
                cert = certificates.get(host)
                if cert is not None and alias not in certificates and cert.covers(alias):
                    certificates[alias] = cert
        return certificates, out

    def _with_aliases(
        self, certificates: dict[str, TLSCertificate], problems: tuple[Problem, ...]
    ) -> tuple[
        dict[str, VirtualHost],
        dict[str, VirtualHost],
        dict[str, TLSCertificate],
        tuple[Problem, ...],
    ]:
        """The table's hosts, certificates and problems with server-alias applied.

        Worked out whole at each build with aliases (they depend on every rule
        host), over the Ingresses that have them; the host dicts are copied only then.
        """
        entries = self._entries
        claims = []
        for key in sorted(self._aliased, key=lambda k: entries[k].order):
            e = entries[key]
            assert e.plan is not None
            hosts = tuple(sorted(e.plan.hosts))
            claims.append(server_alias.AliasClaim(e.plan.name, hosts, e.plan.aliases, e))
        found = server_alias.resolve(claims, self._is_rule_host, self._vhost, certificates)
        exact = {**found.exact, **self._exact} if found.exact else self._exact
        wildcard = {**found.wildcard, **self._wildcard} if found.wildcard else self._wildcard
        if found.certificates:
            certificates = {**found.certificates, **certificates}
        if found.problems:
            extra = []
            for claim, reason in found.problems:
                owner = claim.ref
                assert isinstance(owner, _Entry)
                extra.append(_problem(owner.obj, owner.origin, reason))
            problems = (*problems, *extra)
        return exact, wildcard, certificates, problems

    def _is_rule_host(self, host: str) -> bool:
        """Whether an Ingress of ours (not a canary) has a rule for ``host``."""
        entries = self._entries
        for key in self._by_host.get(host):
            plan = entries[key].plan
            if entries[key].role is _Role.MAIN and plan is not None and host in plan.hosts:
                return True
        return False

    def _vhost(self, host: str) -> VirtualHost | None:
        if host.startswith("*."):
            return self._wildcard.get(host[2:])
        return self._exact.get(host)

    def _configmap_problems(self, snap: Snapshot) -> list[Problem]:
        ref = self.opts.configmap
        if ref is None:
            return []
        what = f"ConfigMap {ref[0]}/{ref[1]}"
        cm = self._configmap
        if cm is None:
            return [Problem(what, "not found (--configmap); ingress-nginx's defaults apply")]
        origin = snap.origin(cm)
        found = [Problem(what, msg, origin, ("ConfigMap", *ref)) for msg in self._reading.messages]
        return found + list(self._header_problems)

    def _problems(self, snap: Snapshot) -> tuple[Problem, ...]:
        """Every problem, in the order a from-scratch build finds them."""
        found: list[Problem] = self._configmap_problems(snap)
        if self._owner_problems:  # first, in the snapshot's order
            entries = self._entries
            for key in snap.of("Ingress"):
                problem = entries[key].owner_problem
                if problem is not None:
                    found.append(problem)
        tagged = [t for key in self._problem_entries for t in self._entries[key].problems]
        tagged += [t for host in self._problem_hosts for t in self._hosts[host].problems]
        tagged.sort(key=_tag)  # stable: one Ingress's problems with one tag keep their order
        found += [problem for _, problem in tagged]
        if self._fallback[1] is not None:
            found.append(self._fallback[1])
        return tuple(found)


def _retrying_all(policy: RoutePolicy, retry_all: bool) -> RoutePolicy:
    """retry-non-idempotent: template.go buildNextUpstream appends non_idempotent to
    every location's proxy_next_upstream, whatever its annotation says."""
    if not retry_all or policy.next_upstream.non_idempotent:
        return policy
    return replace(policy, next_upstream=replace(policy.next_upstream, non_idempotent=True))


def _base_policy(config: GlobalConfig) -> RoutePolicy:
    """The policy of a route without annotations, under the ConfigMap's defaults."""
    changes: dict[str, Any] = dict(config.route_defaults)
    if config.retry_non_idempotent:
        retry = changes.get("next_upstream", DEFAULT_POLICY.next_upstream)
        changes["next_upstream"] = replace(retry, non_idempotent=True)
    if config.fail_closed is not None:
        changes["fail_closed"] = config.fail_closed
    if not changes:
        return DEFAULT_POLICY
    policy = replace(DEFAULT_POLICY, **changes)
    return DEFAULT_POLICY if policy == DEFAULT_POLICY else policy


def _http_level(base: RoutePolicy) -> RoutePolicy:
    """What of the ConfigMap's route defaults the default backend gets: the headers of
    add-headers and proxy-set-headers, which nginx.tmpl sets at http level and in
    every location, the default server's included."""
    if not (base.response_headers or base.proxy_set_headers or base.header_templates):
        return DEFAULT_POLICY
    return replace(
        DEFAULT_POLICY,
        response_headers=base.response_headers,
        proxy_set_headers=base.proxy_set_headers,
        header_templates=base.header_templates,
    )


def _header_maps(snap: Snapshot, config: GlobalConfig) -> tuple[Obj | None, Obj | None]:
    """The ConfigMaps add-headers and proxy-set-headers name, as in ``snap``."""
    refs = (config.add_headers, config.proxy_set_headers)
    return tuple(snap.get("ConfigMap", *r) if r is not None else None for r in refs)  # type: ignore[return-value]


def _base_policy_with_headers(
    snap: Snapshot,
    config: GlobalConfig,
    maps: tuple[Obj | None, Obj | None],
    controller: tuple[str, str] | None,
    controller_obj: Obj | None,
) -> tuple[RoutePolicy, tuple[Problem, ...]]:
    """``_base_policy`` with the headers of add-headers and proxy-set-headers, and what
    reading those ConfigMaps reported. As ingress-nginx (controller.go OnUpdate: a
    ConfigMap it cannot read is logged and left out), a missing or invalid one is
    reported and the routes serve without its headers. A missing one is reported on
    the controller ConfigMap (``controller``), which names it: an Event needs an
    object that exists."""
    base = _base_policy(config)
    problems: list[Problem] = []
    changes: dict[str, Any] = {}
    templated: dict[str, tuple[tuple[bytes, tuple[str, ...]], ...]] = {}
    purposes: tuple[header_maps.Purpose, header_maps.Purpose] = ("add-headers", "proxy-set-headers")
    for purpose, ref, cm in zip(
        purposes, (config.add_headers, config.proxy_set_headers), maps, strict=True
    ):
        if ref is None:
            continue
        what = f"ConfigMap {ref[0]}/{ref[1]}"
        subject = ("ConfigMap", *ref)
        if cm is None:
            reason = f"{purpose}: {what} not found; its headers are not set"
            where = f"ConfigMap {controller[0]}/{controller[1]}" if controller else what
            origin = snap.origin(controller_obj) if controller_obj is not None else ""
            ctl = ("ConfigMap", *controller) if controller else None
            problems.append(Problem(where, reason, origin, ctl))
            continue
        found = header_maps.read(cm.get("data"), purpose)
        origin = snap.origin(cm)
        if found.error is not None:
            reason = (
                f"{found.error} ({purpose} of the controller ConfigMap); its headers are not set"
            )
            problems.append(Problem(what, reason, origin, subject))
            continue
        problems += [Problem(what, f"{r} ({purpose})", origin, subject) for r in found.refused]
        field_name = "response_headers" if purpose == "add-headers" else "proxy_set_headers"
        if found.headers:
            changes[field_name] = found.headers
        templated[purpose] = found.templated
    templates = header_maps.templates_policy(
        templated.get("add-headers", ()), templated.get("proxy-set-headers", ())
    )
    if templates is not None:
        changes["header_templates"] = templates
    if changes:
        base = replace(base, **changes)
    return base, tuple(problems)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while building.

    Why: what a build allocates outlives it (the table, the builder's state)
    and holds no reference cycles, so a collection meanwhile frees nothing; and
    a full build allocates so much that collections walking the growing heap
    over and over made up about half of its time.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _entry_order(e: _Entry) -> Order:
    return e.order


def _tag(t: tuple[Tag, Problem]) -> Tag:
    return t[0]


def _put(d: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        d.pop(key, None)
    else:
        d[key] = value


def build_table(
    snap: Snapshot,
    opts: BuildOptions = BuildOptions(),
    *,
    generation: int = 0,
    now: float | None = None,
) -> RouteTable:
    """Build the routing table from scratch; problems are returned in ``table.problems``."""
    return TableBuilder(opts).build(snap, generation=generation, now=now)
