"""``ingressd check``: what ingressd would do with each Ingress, before you switch.

A pure function of a snapshot. Ownership comes from the builder's own class
selection, annotation verdicts from the parser serving uses, and problems from
a real ``build_table`` run, so the report cannot drift from what serving does.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from .model.objects import Obj, Snapshot, object_key
from .model.problems import Problem
from .policy import annotations as ann
from .policy.configmap import read_configmap
from .policy.snippets import TRANSLATED, translate
from .policy.tls import TLSError, load_certificate
from .routing.build import (
    BuildOptions,
    Ownership,
    backend_ref,
    build_table,
    ingress_owner,
    resolve_service,
)
from .stream.passthrough import ANNOTATION as PASSTHROUGH
from .stream.passthrough import build_passthrough, is_passthrough
from .stream.services import ConfigMapRef, read_services

STATUSES = ("supported", "unsupported", "refused", "invalid", "overridden")
# Statuses that make the check fail: the Ingress would not serve as written.
FAILING = frozenset({"refused", "invalid"})
_VALUE_WIDTH = 60


@dataclass(frozen=True, slots=True)
class AnnotationReport:
    key: str
    value: str
    status: str  # one of STATUSES
    reason: str  # the message the builder reports; "" when supported


def _fails(annotation: AnnotationReport) -> bool:
    """Whether the Ingress would not serve as written. An annotation refused because it
    cannot apply to ingressd (annotations.NOT_APPLICABLE) is counted as refused but
    does not fail: serving without it changes nothing a client relies on; where it
    would, it denies, and that is a problem that fails."""
    if annotation.status == "refused" and (annotation.key.rpartition("/")[2] in ann.NOT_APPLICABLE):
        return False
    return annotation.status in FAILING


@dataclass(frozen=True, slots=True)
class RouteReport:
    host: str  # "" matches every host
    path: str
    path_type: str
    backend: str  # "service:port"; "" when the backend itself is malformed
    service_found: bool
    ready_endpoints: int
    error: str | None = None  # why it does not resolve (the route answers 503 or is dropped)
    default_backend: bool = False  # spec.defaultBackend rather than a rule's path

    @property
    def resolves(self) -> bool:
        return self.error is None and self.ready_endpoints > 0


@dataclass(frozen=True, slots=True)
class TLSReport:
    hosts: tuple[str, ...]  # as listed; without a list, the Ingress's rule hosts
    secret: str  # "" when the entry names none: the default certificate serves it
    found: bool
    error: str | None = None  # why the Secret is unusable
    uncovered: tuple[str, ...] = ()  # hosts its certificate does not name
    # The entry lists no hosts: as in ingress-nginx, its certificate serves the
    # rule hosts it covers; the uncovered ones get the default, which is no fault.
    implicit: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and (self.implicit or not self.uncovered)


@dataclass(frozen=True, slots=True)
class IngressReport:
    namespace: str
    name: str
    source: str  # file it came from, when known
    owner: Ownership
    routes: tuple[RouteReport, ...]
    tls: tuple[TLSReport, ...]
    annotations: tuple[AnnotationReport, ...]
    # What the build reports for this Ingress, less the annotation messages,
    # which ``annotations`` already carries.
    problems: tuple[str, ...]
    # --enable-ssl-passthrough and the annotation: what does not apply to the
    # TLS connections of its hosts (paths but /, HTTP annotations). Not failing.
    passthrough: tuple[str, ...] = ()
    # Each configuration-/server-snippet translated into policy: (annotation key,
    # one line per directive saying what it became). A refused one says why in
    # ``annotations``.
    snippets: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def ours(self) -> bool:
        return self.owner.ours

    @property
    def relevant(self) -> bool:
        """Shown in detail by default: ours, or meant for us and broken (class missing)."""
        return self.owner.ours or bool(self.problems)

    @property
    def failing(self) -> bool:
        return bool(self.problems) or any(_fails(a) for a in self.annotations)


@dataclass(frozen=True, slots=True)
class StreamReport:
    """One entry of a TCP/UDP services ConfigMap that would listen."""

    listen: str  # "tcp/9000"
    backend: str  # "namespace/service:port"
    ready_endpoints: int
    error: str | None = None  # why its Service does not resolve (then it does not listen)
    decode_proxy: bool = False
    encode_proxy: bool = False


@dataclass(frozen=True, slots=True)
class CheckReport:
    ingresses: tuple[IngressReport, ...]
    # Problems not tied to one Ingress: files that do not parse, rejected objects.
    problems: tuple[str, ...] = ()
    # How the input was read, said once: an IngressClass taken from --ingress-class.
    notes: tuple[str, ...] = ()
    # The entries of the --tcp-services-configmap and --udp-services-configmap.
    streams: tuple[StreamReport, ...] = ()
    # The keys of the controller ConfigMap (--configmap), judged as annotations are.
    configmap: tuple[AnnotationReport, ...] = ()
    # A key of it is refused or invalid, or makes every route answer 403.
    configmap_failing: bool = False

    @property
    def exit_code(self) -> int:
        failing = self.configmap_failing or any(i.failing for i in self.ingresses)
        return 1 if self.problems or failing else 0

    def summary(self) -> dict[str, Any]:
        statuses = Counter(a.status for i in self.ingresses for a in i.annotations)
        ours = [i for i in self.ingresses if i.ours]
        return {
            "ingresses": len(self.ingresses),
            "ours": len(ours),
            "other": len(self.ingresses) - len(ours),
            "routes": sum(len(i.routes) for i in ours),
            "unresolved_routes": sum(not r.resolves for i in ours for r in i.routes),
            "annotations": {status: statuses[status] for status in STATUSES},
            "configmap": {
                status: sum(k.status == status for k in self.configmap) for status in STATUSES
            },
            "problems": len(self.problems) + sum(len(i.problems) for i in self.ingresses),
            "exit_code": self.exit_code,
        }


# -- building the report ---------------------------------------------------------------


def check(
    snapshot: Snapshot,
    options: BuildOptions,
    source_problems: Iterable[Problem] = (),
    *,
    now: float | None = None,
    notes: Iterable[str] = (),
    passthrough: bool = False,
    streams: Iterable[ConfigMapRef] = (),
    reserved: dict[int, str] | None = None,
) -> CheckReport:
    """Report on every Ingress in ``snapshot``; ``source_problems`` are the loader's.
    ``passthrough``: as ``serve --enable-ssl-passthrough``; ``streams``: the TCP/UDP
    services ConfigMaps, read as serve reads them (``reserved``: its own ports)."""
    table = build_table(snapshot, options, now=now)
    by_ingress: dict[tuple[str, str], list[str]] = {}
    loose = [str(p) for p in source_problems]
    problems = list(table.problems)
    if passthrough:
        problems += build_passthrough(snapshot, options)[1]
    keys, key_messages, configmap_failing = _configmap(snapshot, options)
    for problem in problems:
        if problem.reason in key_messages and problem.ref is not None:
            continue  # a ConfigMap key's message: shown with its key
        if problem.ref is not None and problem.ref[0] == "Ingress":
            by_ingress.setdefault(problem.ref[1:], []).append(problem.reason)
        else:
            loose.append(str(problem))
    ingresses = sorted(snapshot.of("Ingress").values(), key=object_key)
    reports = tuple(
        _ingress(snapshot, options, ing, by_ingress.get(object_key(ing), []), now, passthrough)
        for ing in ingresses
    )
    stream_reports: list[StreamReport] = []
    for ref in streams:
        entries, found = read_services(ref, snapshot, reserved or {})
        loose += [str(p) for p in found]
        if snapshot.get("ConfigMap", ref.namespace, ref.name) is None:
            loose.append(f"{ref}: not found ({ref.flag}): no {ref.protocol} services")
        for spec in entries:
            backend = spec.resolve(snapshot)
            if backend.error is not None:
                loose.append(f"{ref}: {ref.flag}: {spec.label}: {backend.error}")
            stream_reports.append(
                StreamReport(
                    spec.label,
                    spec.backend_name,
                    len(backend.endpoints),
                    backend.error,
                    spec.decode_proxy,
                    spec.encode_proxy,
                )
            )
    return CheckReport(
        reports, tuple(loose), tuple(notes), tuple(stream_reports), keys, configmap_failing
    )


def _configmap(
    snapshot: Snapshot, options: BuildOptions
) -> tuple[tuple[AnnotationReport, ...], frozenset[str], bool]:
    """The controller ConfigMap's keys as serve judges them, the messages they stand
    for (the build reports them too), and whether they fail the check."""
    if options.configmap is None:
        return (), frozenset(), False
    cm = snapshot.get("ConfigMap", *options.configmap)
    if cm is None:
        return (), frozenset(), False  # the build's "not found" problem says it
    reading = read_configmap(cm.get("data"), dict(options.explicit))
    keys = tuple(AnnotationReport(*v) for v in reading.verdicts)
    failing = reading.config.fail_closed is not None or any(k.status in FAILING for k in keys)
    return keys, frozenset(k.reason for k in keys if k.reason), failing


def _ingress(
    snap: Snapshot,
    opts: BuildOptions,
    ing: Obj,
    problems: list[str],
    now: float | None,
    passthrough: bool = False,
) -> IngressReport:
    namespace, name = object_key(ing)
    meta = _mapping(ing.get("metadata"))
    verdicts = [AnnotationReport(*v) for v in ann.classify(meta.get("annotations"))]
    reported = {v.reason for v in verdicts}
    owner = ingress_owner(snap, opts, ing)
    passing: list[str] = []
    if passthrough and owner.ours and is_passthrough(ing):
        verdicts = [
            AnnotationReport(v.key, v.value, "supported", "") if v.key == PASSTHROUGH else v
            for v in verdicts
        ]
        passing = _passthrough_notes(ing, verdicts)
    return IngressReport(
        namespace=namespace,
        name=name,
        source=snap.origin(ing),
        owner=owner,
        routes=tuple(_routes(snap, ing)),
        tls=tuple(_tls(snap, ing, now)),
        annotations=tuple(verdicts),
        problems=tuple(p for p in problems if p not in reported),
        passthrough=tuple(passing),
        snippets=_snippets(verdicts),
    )


def _snippets(verdicts: list[AnnotationReport]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """What each translated snippet became, directive by directive."""
    out = []
    for v in verdicts:
        short = v.key.rpartition("/")[2]
        if v.status == "supported" and short in TRANSLATED:
            out.append((v.key, translate(v.value, short).lines))  # type: ignore[arg-type]
    return tuple(out)


def _passthrough_notes(ing: Obj, verdicts: list[AnnotationReport]) -> list[str]:
    """What does not apply to a passthrough host's TLS connections (ingress-nginx
    routes them by SNI alone, to the backend of the path /)."""
    notes = []
    for rule in map(_mapping, _list(_mapping(ing.get("spec")).get("rules"))):
        host = str(rule.get("host") or "").lower()
        for p in map(_mapping, _list(_mapping(rule.get("http")).get("paths"))):
            path = str(p.get("path") or "/")
            if path != "/":
                notes.append(
                    f"path {host}{path} does not apply to TLS connections: passthrough "
                    "routes by host only, to the backend of /"
                )
    for v in verdicts:
        if v.key != PASSTHROUGH and v.status == "supported":
            notes.append(
                f"annotation {v.key} does not apply to TLS connections: they are passed "
                "through unread (it still applies to plain HTTP)"
            )
    return notes


def _mapping(value: Any) -> dict[str, Any]:
    # Reports cover Ingresses the builder never looks at, so shapes are not trusted.
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _namespace(ing: Obj) -> str:
    return object_key(ing)[0] or "default"  # as the builder resolves Services


def _routes(snap: Snapshot, ing: Obj) -> Iterable[RouteReport]:
    spec = _mapping(ing.get("spec"))
    ns = _namespace(ing)
    # service-upstream resolves to the ClusterIP, as serving does.
    meta_annotations = _mapping(_mapping(ing.get("metadata")).get("annotations"))
    cip = ann.parse_policy(meta_annotations)[0].service_upstream
    if spec.get("defaultBackend") is not None:
        yield _route(snap, ns, "", "", "", spec["defaultBackend"], default_backend=True, cip=cip)
    for rule in map(_mapping, _list(spec.get("rules"))):
        host = str(rule.get("host") or "").lower()
        for p in map(_mapping, _list(_mapping(rule.get("http")).get("paths"))):
            path_type = str(p.get("pathType") or "")
            path = str(p.get("path") or "")
            yield _route(snap, ns, host, path, path_type, p.get("backend"), cip=cip)


def _route(
    snap: Snapshot,
    ns: str,
    host: str,
    path: str,
    path_type: str,
    spec: Any,
    *,
    default_backend: bool = False,
    cip: bool = False,
) -> RouteReport:
    try:
        service, port = backend_ref(spec)
    except ValueError as exc:
        return RouteReport(host, path, path_type, "", False, 0, str(exc), default_backend)
    resolved = resolve_service(snap, ns, service, port, service_upstream=cip)
    return RouteReport(
        host,
        path,
        path_type,
        f"{service}:{port}",
        snap.get("Service", ns, service) is not None,
        len(resolved.endpoints),
        resolved.error,
        default_backend,
    )


def _tls(snap: Snapshot, ing: Obj, now: float | None) -> Iterable[TLSReport]:
    spec = _mapping(ing.get("spec"))
    ns = _namespace(ing)
    rules = map(_mapping, _list(spec.get("rules")))
    rule_hosts = tuple(sorted({str(r.get("host") or "").lower() for r in rules} - {""}))
    for entry in map(_mapping, _list(spec.get("tls"))):
        # As in the builder: an entry without hosts is about the Ingress's rule hosts.
        listed = tuple(str(h).lower() for h in _list(entry.get("hosts")))
        hosts, implicit = listed or rule_hosts, not listed
        secret_name = str(entry.get("secretName") or "")
        if not secret_name:
            yield TLSReport(hosts, "", False, implicit=implicit)
            continue
        secret = snap.get("Secret", ns, secret_name)
        if secret is None:
            error = f"TLS Secret {ns}/{secret_name} not found"
            yield TLSReport(hosts, secret_name, False, error, implicit=implicit)
            continue
        try:
            cert = load_certificate(secret, now=now)
        except TLSError as exc:
            yield TLSReport(hosts, secret_name, True, str(exc), implicit=implicit)
            continue
        uncovered = tuple(h for h in hosts if not cert.covers(h))
        yield TLSReport(hosts, secret_name, True, None, uncovered, implicit)


# -- rendering -------------------------------------------------------------------------


def shown(report: CheckReport, show_all: bool = False) -> list[IngressReport]:
    return [i for i in report.ingresses if show_all or i.relevant]


def render_json(report: CheckReport, show_all: bool = False) -> str:
    """One JSON document: the Ingresses shown, input problems and summary counts."""
    doc = {
        "notes": list(report.notes),
        "ingresses": [_ingress_json(i) for i in shown(report, show_all)],
        "problems": list(report.problems),
        "streams": [asdict(st) for st in report.streams],
        "configmap": [asdict(k) for k in report.configmap],
        "summary": report.summary(),
    }
    return json.dumps(doc, indent=2) + "\n"


def _ingress_json(report: IngressReport) -> dict[str, Any]:
    doc = asdict(report)
    # Derived values, so consumers need not repeat the rules.
    doc["ours"] = report.ours
    for route, out in zip(report.routes, doc["routes"], strict=True):
        out["resolves"] = route.resolves
    for tls, out in zip(report.tls, doc["tls"], strict=True):
        out["ok"] = tls.ok
    return doc


def render_text(report: CheckReport, show_all: bool = False) -> str:
    """What a person reads: each Ingress shown in detail, then a summary."""
    lines = [f"Note: {note}" for note in report.notes] + ([""] if report.notes else [])
    detailed = shown(report, show_all)
    for ingress in detailed:
        lines += _ingress_text(ingress)
        lines.append("")
    hidden = [] if show_all else [i for i in report.ingresses if not i.relevant]
    if hidden:
        failing = sum(i.failing for i in hidden)
        note = f"; {failing} with refused or invalid annotations" if failing else ""
        verb = "belongs" if len(hidden) == 1 else "belong"
        lines.append(
            f"{_plural(len(hidden), 'Ingress')} {verb} to other classes (--all shows them{note})"
        )
    if report.streams:
        lines.append("TCP/UDP services:")
        lines += _columns([_stream_row(st) for st in report.streams], "  ")
        lines.append("")
    if report.configmap:
        lines.append("Controller ConfigMap (--configmap):")
        lines += _columns([_annotation_row(k) for k in report.configmap], "  ")
        lines.append("")
    if report.problems:
        lines.append("Input problems:")
        lines += [f"  {p}" for p in report.problems]
    lines.append(_summary_text(report))
    return "\n".join(lines) + "\n"


def _ingress_text(report: IngressReport) -> list[str]:
    where = f"  ({report.source})" if report.source else ""
    lines = [f"Ingress {report.namespace}/{report.name}{where}", f"  class: {report.owner.text}"]
    if report.routes:
        lines.append("  routes:")
        lines += _columns([_route_row(r) for r in report.routes], "    ")
    if report.tls:
        lines.append("  tls:")
        lines += [f"    {_tls_text(t)}" for t in report.tls]
    if report.annotations:
        lines.append("  annotations:")
        lines += _columns([_annotation_row(a) for a in report.annotations], "    ")
    for key, translated in report.snippets:
        lines.append(f"  {key} translated:")
        lines += [f"    {line}" for line in translated]
    if report.passthrough:
        lines.append("  ssl-passthrough (TLS connections go to the backend untouched):")
        lines += [f"    {p}" for p in report.passthrough]
    if report.problems:
        lines.append("  problems:")
        lines += [f"    {p}" for p in report.problems]
    return lines


def _route_row(route: RouteReport) -> list[str]:
    if route.default_backend:
        where = ["(default backend)", "", ""]
    else:
        where = [route.host or "*", route.path or "(no path)", route.path_type or "(no type)"]
    if not route.backend:
        state = f"invalid backend: {route.error}"
    elif route.error is not None:
        state = f"answers 503: {route.error}"
    elif route.ready_endpoints == 0:
        state = "no ready endpoints (answers 503)"
    else:
        state = f"ok, {_plural(route.ready_endpoints, 'ready endpoint')}"
    return [*where, f"-> {route.backend or '?'}", state]


def _tls_text(tls: TLSReport) -> str:
    if tls.implicit:
        return _implicit_tls_text(tls)
    hosts = ", ".join(tls.hosts) or "(no hosts)"
    if not tls.secret:
        return f"{hosts}: no secretName, the default certificate"
    if tls.error is not None:
        return f"{hosts}: {tls.error}"  # the error names the Secret
    if tls.uncovered:
        return f"{hosts}: Secret {tls.secret} valid, but does not cover {', '.join(tls.uncovered)}"
    return f"{hosts}: Secret {tls.secret} valid, covers every host"


def _implicit_tls_text(tls: TLSReport) -> str:
    """An entry without hosts: which rule hosts it serves, as ingress-nginx picks them."""
    if not tls.hosts:
        # Only host-less rules: the catch-all server, which keeps the default certificate.
        head = "no hosts listed, and the rules name none"
        if not tls.secret:
            return f"{head}: no secretName; applies to no host"
        if tls.error is not None:
            return f"{head}: {tls.error}; it would apply to no host anyway"
        return f"{head}: Secret {tls.secret} valid, but it applies to no host"
    head = f"no hosts listed, so the rule hosts {', '.join(tls.hosts)}"
    if not tls.secret:
        return f"{head}: no secretName, the default certificate"
    if tls.error is not None:
        return f"{head}: {tls.error}; they get the default certificate"
    covered = [h for h in tls.hosts if h not in tls.uncovered]
    if not covered:
        return f"{head}: Secret {tls.secret} valid but covers none of them; the default certificate"
    served = f"Secret {tls.secret} valid, serves {', '.join(covered)}"
    if tls.uncovered:
        served += f"; {', '.join(tls.uncovered)} get the default certificate"
    return f"{head}: {served}"


def _annotation_row(annotation: AnnotationReport) -> list[str]:
    if annotation.status == "supported":
        value = repr(annotation.value)
        if len(value) > _VALUE_WIDTH:
            value = value[: _VALUE_WIDTH - 3] + "..."
        note = f" ({annotation.reason})" if annotation.reason else ""
        return [annotation.status, f"{annotation.key}={value}{note}"]
    return [annotation.status, annotation.reason]


def _columns(rows: list[list[str]], indent: str) -> list[str]:
    """Rows padded into aligned columns; the last column is left ragged."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        indent + "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    ]


def _stream_row(st: StreamReport) -> list[str]:
    proxy = "".join(
        flag
        for flag, on in ((" (PROXY in)", st.decode_proxy), (" (PROXY out)", st.encode_proxy))
        if on
    )
    if st.error is not None:
        state = f"not listening: {st.error}"
    else:
        state = f"{_plural(st.ready_endpoints, 'ready endpoint')}{proxy}"
    return [st.listen, f"-> {st.backend}", state]


def _summary_text(report: CheckReport) -> str:
    s = report.summary()
    counts = ", ".join(f"{n} {status}" for status, n in s["annotations"].items() if n)
    keys = ", ".join(f"{n} {status}" for status, n in s["configmap"].items() if n)
    if keys:
        counts += f"; ConfigMap keys: {keys}"
    return (
        f"Summary: {_plural(s['ingresses'], 'Ingress')} ({s['ours']} served by ingressd, "
        f"{s['other']} other), {_plural(s['routes'], 'route')} ({s['unresolved_routes']} not "
        f"resolving), {_plural(s['problems'], 'problem')}\n"
        f"Annotations: {counts or 'none'}; exit code {s['exit_code']}"
    )


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"1 {word}"
    return f"{n} {word}es" if word.endswith("s") else f"{n} {word}s"
