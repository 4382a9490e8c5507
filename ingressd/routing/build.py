"""Objects in, routing table out: a pure function, testable without sockets.

Every problem is scoped to the smallest thing it affects (one path, one TLS
entry, one Ingress) and reported; everything else keeps its routes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from .. import annotations, basic_auth, upstream_tls
from ..model import (
    Backend,
    Endpoint,
    Problem,
    Route,
    RoutePolicy,
    RouteTable,
    TLSCertificate,
    VirtualHost,
)
from ..store import Obj, Snapshot, describe, object_key
from ..tls import TLSError, load_certificate

DEFAULT_CONTROLLER = "ingressd.io/ingress-controller"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"

_HOST_RE = re.compile(r"^(\*\.)?([a-z0-9]([-a-z0-9]*[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")


@dataclass(frozen=True, slots=True)
class BuildOptions:
    controller_name: str = DEFAULT_CONTROLLER
    ingress_class: str = "ingressd"  # value of the legacy kubernetes.io/ingress.class


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


@dataclass(slots=True)
class _Path:
    host: str
    path: str
    path_type: str
    backend: Backend


@dataclass(slots=True)
class _IngressPlan:
    """One of our Ingresses, parsed and validated but not yet merged."""

    obj: Obj
    name: str  # namespace/name
    describe: str
    origin: str
    policy: RoutePolicy
    paths: list[_Path] = field(default_factory=list)
    hosts: set[str] = field(default_factory=set)
    default_backend: Backend | None = None
    tls: list[tuple[list[str], str]] = field(default_factory=list)  # (hosts, secretName)
    unresolved: set[str] = field(default_factory=set)  # backends already reported


class _Builder:
    def __init__(self, snap: Snapshot, opts: BuildOptions, now: float | None) -> None:
        self.snap = snap
        self.opts = opts
        self.now = now
        self.problems: list[Problem] = []
        self._backends: dict[tuple[str, str, Any], Backend] = {}

    def problem(self, obj: Obj, reason: str) -> None:
        ns, name = object_key(obj)
        ref = (str(obj.get("kind", "")), ns, name)
        self.problems.append(Problem(describe(obj), reason, self.snap.origin(obj), ref))

    # -- which Ingresses are ours --------------------------------------------

    def is_ours(self, ing: Obj) -> bool:
        owner = ingress_owner(self.snap, self.opts, ing)
        # Only worth reporting when nothing could ever claim it here.
        if owner.via == "missing-class" and owner.class_name == self.opts.ingress_class:
            self.problem(ing, f"IngressClass {owner.class_name!r} does not exist")
        return owner.ours

    # -- backends ----------------------------------------------------------------

    def backend(self, namespace: str, spec: Any, service_upstream: bool = False) -> Backend:
        """Resolve an IngressBackend; raise ValueError for a malformed one."""
        name, ref = backend_ref(spec)
        key = (namespace, name, ref, service_upstream)
        backend = self._backends.get(key)
        if backend is None:
            backend = resolve_service(
                self.snap, namespace, name, ref, service_upstream=service_upstream
            )
            self._backends[key] = backend
        return backend

    def unresolved(self, plan: _IngressPlan, backend: Backend) -> None:
        """Report a backend whose routes will answer 503, once per Ingress."""
        if backend.error is not None and backend.name not in plan.unresolved:
            plan.unresolved.add(backend.name)
            self.problem(plan.obj, f"{backend.error}; its routes answer 503")

    # -- one Ingress -------------------------------------------------------------

    def plan(self, ing: Obj) -> _IngressPlan | None:
        meta = ing.get("metadata") or {}
        ns = meta.get("namespace") or "default"
        spec = ing.get("spec")
        if not isinstance(spec, dict):
            self.problem(ing, "spec is missing")
            return None
        policy, messages = annotations.parse_policy(meta.get("annotations"))
        policy, tls_messages = upstream_tls.resolve(self.snap, ns, policy)
        policy, auth_messages = basic_auth.resolve(self.snap, ns, policy)
        tls_messages += auth_messages
        messages += tls_messages
        for msg in messages:
            self.problem(ing, msg)
        plan = _IngressPlan(
            obj=ing,
            name=f"{ns}/{meta.get('name')}",
            describe=describe(ing),
            origin=self.snap.origin(ing),
            policy=policy,
        )
        if spec.get("defaultBackend") is not None:
            try:
                plan.default_backend = self.backend(
                    ns, spec["defaultBackend"], policy.service_upstream
                )
            except ValueError as exc:
                self.problem(ing, f"defaultBackend: {exc}")
            else:
                self.unresolved(plan, plan.default_backend)
        rules = spec.get("rules") or []
        if not isinstance(rules, list):
            self.problem(ing, "spec.rules must be a list")
            return None
        for i, rule in enumerate(rules):
            if not isinstance(rule, dict):
                self.problem(ing, f"rules[{i}] must be an object")
                continue
            host = str(rule.get("host") or "").lower()
            if host and not _HOST_RE.match(host):
                self.problem(ing, f"rules[{i}].host {host!r} is not a valid DNS name or wildcard")
                continue
            plan.hosts.add(host)
            paths = ((rule.get("http") or {}).get("paths")) or []
            for j, p in enumerate(paths):
                where = f"rules[{i}].http.paths[{j}]"
                if not isinstance(p, dict):
                    self.problem(ing, f"{where} must be an object")
                    continue
                path_type = p.get("pathType")
                if path_type not in PATH_TYPES:
                    self.problem(
                        ing,
                        f"{where}.pathType {path_type!r} must be one of {', '.join(PATH_TYPES)}",
                    )
                    continue
                path = p.get("path")
                if path is None or path == "":
                    if path_type != "ImplementationSpecific":
                        self.problem(ing, f"{where}.path is required for pathType {path_type}")
                        continue
                    path = "/"
                path = str(path)
                if not path.startswith("/") and not (policy.regex_paths and path_type != "Exact"):
                    self.problem(ing, f"{where}.path {path!r} must start with /")
                    continue
                try:
                    backend = self.backend(ns, p.get("backend"), policy.service_upstream)
                except ValueError as exc:
                    self.problem(ing, f"{where}: {exc}")
                    continue
                self.unresolved(plan, backend)
                plan.paths.append(_Path(host, path, path_type, backend))
        for i, tls in enumerate(spec.get("tls") or []):
            if not isinstance(tls, dict):
                self.problem(ing, f"tls[{i}] must be an object")
                continue
            hosts = [str(h).lower() for h in tls.get("hosts") or []]
            plan.tls.append((hosts, str(tls.get("secretName") or "")))
        if not plan.paths and plan.default_backend is None and not plan.tls:
            self.problem(ing, "has no usable rules and no defaultBackend")
        return plan


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


def _external_port(svc_port: dict | None, port: int | str) -> int | None:
    if svc_port is not None:
        target = svc_port.get("targetPort")
        if isinstance(target, int) and target > 0:
            return target
        return int(svc_port["port"])
    return port if isinstance(port, int) else None


def _creation_order(ing: Obj) -> tuple[str, str, str]:
    meta = ing.get("metadata") or {}
    # Objects from files usually have no timestamp: they sort after the ones that
    # do, then by namespace/name, so the order is still total.
    ts = str(meta.get("creationTimestamp") or "~")
    return (ts, meta.get("namespace") or "default", meta.get("name") or "")


def _prefix_key(path: str) -> str:
    return path.rstrip("/")


def build_table(
    snap: Snapshot,
    opts: BuildOptions = BuildOptions(),
    *,
    generation: int = 0,
    now: float | None = None,
) -> RouteTable:
    """Build the routing table; problems are returned in ``table.problems``."""
    b = _Builder(snap, opts, now)
    ours = sorted(
        (ing for ing in snap.of("Ingress").values() if b.is_ours(ing)), key=_creation_order
    )
    plans = [p for p in (b.plan(ing) for ing in ours) if p is not None]
    # Canary Ingresses make no routes, hosts or TLS of their own (as in
    # ingress-nginx): their paths become alternative backends of main routes.
    canaries = [p for p in plans if p.policy.canary is not None]
    plans = [p for p in plans if p.policy.canary is None]

    # ingress-nginx turns every path of a host into a regex once any Ingress on
    # that host asks for regex paths; users moving over depend on that.
    # An Ingress whose own regex is invalid is rejected whole (and so does not
    # turn its host into regex mode either).
    plans = [p for p in plans if not (p.policy.regex_paths and _bad_regex(b, p))]
    regex_hosts = {p.host for plan in plans if plan.policy.regex_paths for p in plan.paths}

    hosts: dict[str, dict[str, Any]] = {}

    def vhost_parts(host: str) -> dict[str, Any]:
        parts = hosts.get(host)
        if parts is None:
            parts = hosts[host] = {"exact": {}, "prefix": {}, "regex": [], "default": None}
        return parts

    for plan in plans:
        for p in plan.paths:
            parts = vhost_parts(p.host)
            regex = None
            if p.path_type == "Exact":
                bucket, key = parts["exact"], p.path
            elif p.host in regex_hosts:
                try:
                    regex = re.compile("^" + p.path, re.IGNORECASE)
                except re.error as exc:
                    b.problem(
                        plan.obj,
                        f"path {p.path!r} on host {p.host or '*'} is matched as a "
                        f"regular expression (another Ingress on this host uses regex) and "
                        f"is not valid: {exc}; path skipped",
                    )
                    continue
                bucket, key = None, p.path
            else:
                bucket, key = parts["prefix"], _prefix_key(p.path)
            route = Route(p.path, p.path_type, p.backend, plan.name, plan.policy, regex)  # type: ignore[arg-type]
            if bucket is None:
                if any(r.path == key for r in parts["regex"]):
                    _conflict(b, plan, p, next(r for r in parts["regex"] if r.path == key))
                    continue
                parts["regex"].append(route)
            elif key in bucket:
                _conflict(b, plan, p, bucket[key])
            else:
                bucket[key] = route
        if plan.default_backend is not None:
            route = Route("/", "Prefix", plan.default_backend, plan.name, plan.policy)
            for host in plan.hosts:
                parts = vhost_parts(host)
                if parts["default"] is None:
                    parts["default"] = route

    _attach_canaries(b, canaries, hosts, regex_hosts)
    certificates, tls_hosts = _certificates(b, plans)
    www_redirects = _www_redirects(plans, hosts, certificates)

    exact_hosts: dict[str, VirtualHost] = {}
    wildcard_hosts: dict[str, VirtualHost] = {}
    catch_all = None
    for host, parts in hosts.items():
        # nginx tries regex locations in order; ingress-nginx sorts longest first.
        regex_routes = sorted(parts["regex"], key=lambda r: -len(r.path))
        vhost = VirtualHost(
            host=host,
            exact=MappingProxyType(parts["exact"]),
            prefix=MappingProxyType(parts["prefix"]),
            regex=tuple(regex_routes),
            regex_mode=host in regex_hosts,
            default=parts["default"],
            tls=host in tls_hosts,
        )
        if not host:
            catch_all = vhost
        elif host.startswith("*."):
            wildcard_hosts[host[2:]] = vhost
        else:
            exact_hosts[host] = vhost
    default = next(
        (
            Route("/", "Prefix", p.default_backend, p.name, p.policy)
            for p in plans
            if p.default_backend is not None
        ),
        None,
    )
    return RouteTable(
        exact_hosts=MappingProxyType(exact_hosts),
        wildcard_hosts=MappingProxyType(wildcard_hosts),
        catch_all=catch_all,
        default=default,
        certificates=MappingProxyType(certificates),
        problems=tuple(b.problems),
        generation=generation,
        ingresses=tuple(object_key(ing) for ing in ours),
        www_redirects=MappingProxyType(www_redirects),
    )


def _www_redirects(
    plans: Iterable[_IngressPlan],
    hosts: Mapping[str, Any],
    certificates: dict[str, TLSCertificate],
) -> dict[str, str]:
    """from-to-www-redirect: www.host <-> host, for names no rule routes itself.

    Over HTTPS the redirect needs a certificate for the name asked for, so the
    host's own certificate serves it when it covers that name too.
    """
    out: dict[str, str] = {}
    for plan in plans:
        if not plan.policy.from_to_www_redirect:
            continue
        for host in sorted(plan.hosts):
            if not host or host.startswith("*."):
                continue
            alias = host[4:] if host.startswith("www.") else "www." + host
            if alias in hosts or alias in out:
                continue
            out[alias] = host
            cert = certificates.get(host)
            if cert is not None and alias not in certificates and cert.covers(alias):
                certificates[alias] = cert
    return out


def _bad_regex(b: _Builder, plan: _IngressPlan) -> bool:
    for p in plan.paths:
        if p.path_type == "Exact":
            continue
        try:
            re.compile("^" + p.path, re.IGNORECASE)
        except re.error as exc:
            b.problem(
                plan.obj,
                f"path {p.path!r} is not a valid regular expression ({exc}); Ingress skipped",
            )
            return True
    return False


def _conflict(b: _Builder, plan: _IngressPlan, p: _Path, winner: Route) -> None:
    if winner.ingress == plan.name:
        b.problem(
            plan.obj,
            f"path {p.path!r} ({p.path_type}) on host {p.host or '*'} is listed "
            "twice; the first one is used",
        )
    else:
        b.problem(
            plan.obj,
            f"path {p.path!r} ({p.path_type}) on host {p.host or '*'} is already "
            f"served by older Ingress {winner.ingress}; this rule is ignored",
        )


def _attach_canaries(
    b: _Builder,
    canaries: Iterable[_IngressPlan],
    hosts: Mapping[str, dict[str, Any]],
    regex_hosts: set[str],
) -> None:
    """Attach each canary path to the main route with the same host, path and pathType.

    The main route keeps its policy; only the backend a request goes to can
    change. The oldest canary for a route wins, as the oldest rule does.
    """
    for plan in canaries:
        if plan.default_backend is not None:
            b.problem(plan.obj, "defaultBackend of a canary Ingress is not supported; ignored")
        for p in plan.paths:
            where = f"host {p.host or '*'} path {p.path} ({p.path_type})"
            parts = hosts.get(p.host)
            if parts is None:
                b.problem(plan.obj, f"no main Ingress serves {where}; canary ignored")
                continue
            bucket: dict[Any, Route] | list[Route]
            if p.path_type == "Exact":
                bucket, key = parts["exact"], p.path
            elif p.host in regex_hosts:
                # A list, in which paths are unique: the index stands for the key.
                bucket = parts["regex"]
                key = next((i for i, r in enumerate(bucket) if r.path == p.path), None)
            else:
                bucket, key = parts["prefix"], _prefix_key(p.path)
            if isinstance(bucket, dict):
                main = bucket.get(key)
            else:
                main = bucket[key] if key is not None else None
            if main is None or main.path != p.path or main.path_type != p.path_type:
                b.problem(plan.obj, f"no main Ingress serves {where}; canary ignored")
                continue
            if main.canary is not None:
                if main.canary.ingress == plan.name:
                    b.problem(plan.obj, f"{where} is listed twice; the first one is used")
                else:
                    b.problem(
                        plan.obj,
                        f"{where} already has a canary from older Ingress "
                        f"{main.canary.ingress}; this canary is ignored",
                    )
                continue
            canary = replace(plan.policy.canary, backend=p.backend, ingress=plan.name)  # type: ignore[type-var]
            bucket[key] = replace(main, canary=canary)


def _certificates(
    b: _Builder, plans: Iterable[_IngressPlan]
) -> tuple[dict[str, TLSCertificate], set[str]]:
    certificates: dict[str, TLSCertificate] = {}
    tls_hosts: set[str] = set()
    loaded: dict[tuple[str, str], TLSCertificate | str] = {}
    for plan in plans:
        ns = plan.name.split("/", 1)[0]
        for hosts, secret_name in plan.tls:
            # A TLS entry without hosts covers the Ingress's own rule hosts.
            hosts = hosts or sorted(h for h in plan.hosts if h)
            tls_hosts.update(hosts)
            if not secret_name:
                continue  # the default certificate serves these hosts
            key = (ns, secret_name)
            if key not in loaded:
                secret = b.snap.get("Secret", ns, secret_name)
                if secret is None:
                    loaded[key] = f"TLS Secret {ns}/{secret_name} not found"
                else:
                    try:
                        loaded[key] = load_certificate(secret, now=b.now)
                    except TLSError as exc:
                        loaded[key] = str(exc)
            cert = loaded[key]
            if isinstance(cert, str):
                b.problem(plan.obj, f"{cert}; hosts {', '.join(hosts)} use the default certificate")
                continue
            for host in hosts:
                held = certificates.get(host)
                if held is not None:
                    if held.secret != cert.secret:
                        b.problem(
                            plan.obj,
                            f"TLS for host {host} already comes from Secret "
                            f"{held.secret} of an older Ingress; Secret {cert.secret} ignored",
                        )
                    continue
                if not cert.covers(host):
                    b.problem(
                        plan.obj,
                        f"certificate in Secret {cert.secret} does not cover host "
                        f"{host} (it names {', '.join(cert.dns_names) or 'nothing'}); the "
                        "default certificate is used",
                    )
                    continue
                certificates[host] = cert
    return certificates, tls_hosts
