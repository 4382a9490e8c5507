"""TLS passthrough (``--enable-ssl-passthrough``): which hosts go straight to a backend.

As ingress-nginx (``internal/ingress/controller/controller.go``, the
PassthroughBackends of getBackendServers; ``nginx.go`` feeds them to
``pkg/tcpproxy``): an Ingress of ours annotated
``nginx.ingress.kubernetes.io/ssl-passthrough: "true"`` marks its rules' hosts;
each host goes to the backend of its root path ``/`` (other paths are
ignored, with a warning there, a problem here); SNI is matched exactly
(tcpproxy's ``Get``), so a wildcard host is never a passthrough host. The
first Ingress by creation order to claim a host keeps it. Connections whose
SNI names no such host are terminated as usual.

Passthrough works below HTTP: paths, HTTP annotations, TLS Secrets of the
Ingress do not apply to its TLS connections (``ingressd check`` says so).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ..model.backend import Backend
from ..model.objects import Obj, Snapshot, describe, object_key
from ..model.problems import Problem
from ..routing.build import BuildOptions, backend_ref, ingress_owner, resolve_service

ANNOTATION = "nginx.ingress.kubernetes.io/ssl-passthrough"


def is_passthrough(ing: Obj) -> bool:
    meta = ing.get("metadata") or {}
    value = (meta.get("annotations") or {}).get(ANNOTATION)
    # ingress-nginx's parser.GetBoolAnnotation: strconv.ParseBool.
    return isinstance(value, str) and value in ("1", "t", "T", "true", "TRUE", "True")


@dataclass(frozen=True, slots=True)
class PassthroughTable:
    hosts: Mapping[str, Backend] = field(default_factory=lambda: MappingProxyType({}))


def build_passthrough(
    snapshot: Snapshot, options: BuildOptions
) -> tuple[PassthroughTable, list[Problem]]:
    hosts: dict[str, Backend] = {}
    owner: dict[str, str] = {}
    problems: list[Problem] = []
    ingresses = sorted(
        snapshot.of("Ingress").values(),
        key=lambda i: (
            str((i.get("metadata") or {}).get("creationTimestamp") or ""),
            object_key(i),
        ),
    )
    for ing in ingresses:
        if not is_passthrough(ing) or not ingress_owner(snapshot, options, ing).ours:
            continue
        ns, _ = object_key(ing)
        what = describe(ing)
        origin = snapshot.origin(ing)

        def problem(reason: str, what: str = what, origin: str = origin, ns: str = ns) -> None:
            name = what.split("/", 1)[1]
            problems.append(Problem(what, reason, origin, ("Ingress", ns, name)))

        for rule in (ing.get("spec") or {}).get("rules") or []:
            if not isinstance(rule, dict):
                continue
            host = str(rule.get("host") or "").lower()
            if not host or host.startswith("*"):
                problem(
                    f"ssl-passthrough: host {host or '(none)'!r} cannot be matched by SNI "
                    "exactly; its TLS connections are terminated"
                )
                continue
            root = None
            for p in ((rule.get("http") or {}).get("paths")) or []:
                if isinstance(p, dict) and (p.get("path") or "/") == "/":
                    root = p
                    break
            if root is None:
                problem(f"ssl-passthrough: host {host} has no path '/', whose backend it would use")
                continue
            if host in hosts:
                if owner[host] != what:
                    problem(f"ssl-passthrough: host {host} already passed through by {owner[host]}")
                continue
            try:
                service, port = backend_ref(root.get("backend"))
            except ValueError as exc:
                problem(f"ssl-passthrough: host {host}: {exc}")
                continue
            backend = resolve_service(snapshot, ns, service, port)
            if backend.error is not None:
                problem(f"ssl-passthrough: host {host}: {backend.error}")
            hosts[host] = backend
            owner[host] = what
    return PassthroughTable(MappingProxyType(hosts)), problems


class PassthroughRouter:
    """The live passthrough table of a process, replaced whole on each rebuild."""

    def __init__(self, options: BuildOptions) -> None:
        self.options = options
        self.table = PassthroughTable()

    def apply(self, snapshot: Snapshot) -> list[Problem]:
        self.table, problems = build_passthrough(snapshot, self.options)
        return problems

    def backend_for(self, host: str) -> Backend | None:
        return self.table.hosts.get(host)
