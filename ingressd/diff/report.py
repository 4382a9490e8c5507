"""The diff report: per Ingress, one line per difference with the request that
shows it as a curl command line, then a summary; text or JSON."""

from __future__ import annotations

import json
import shlex
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .client import Address, Answer
from .compare import Difference
from .probes import Probe

EXIT_SAME = 0
EXIT_DIFFERENT = 1
EXIT_ERROR = 2
NO_INGRESS = "(no Ingress: the default backend)"


@dataclass(frozen=True, slots=True)
class Result:
    probe: Probe
    reference: Answer
    target: Answer
    differences: tuple[Difference, ...]

    @property
    def errors(self) -> tuple[str, ...]:
        return tuple(
            f"{side}: {answer.error}"
            for side, answer in (("reference", self.reference), ("ingressd", self.target))
            if answer.error is not None
        )


@dataclass(frozen=True, slots=True)
class Report:
    reference: Address
    target: Address
    results: tuple[Result, ...]
    generated: int  # probes the table gave
    dropped: int  # left out by --max-probes
    skipped_methods: dict[str, int] = field(default_factory=dict)  # not sent: method -> probes
    problems: tuple[str, ...] = ()  # the build's, for information
    served: tuple[str, ...] = ()  # "namespace/name" of every Ingress the table serves

    @property
    def not_probed(self) -> tuple[str, ...]:
        """Ingresses served without a probe: no route survived the build (conflicts,
        refused paths), or the bound left them out."""
        probed = {r.probe.ingress for r in self.results}
        probed |= {r.probe.canary_ingress for r in self.results}
        return tuple(sorted(set(self.served) - probed))

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(sorted({r.probe.method for r in self.results}))

    @property
    def exit_code(self) -> int:
        if any(r.errors for r in self.results):
            return EXIT_ERROR
        return EXIT_DIFFERENT if any(r.differences for r in self.results) else EXIT_SAME

    def by_ingress(self) -> dict[str, list[Result]]:
        out: dict[str, list[Result]] = {}
        for r in self.results:
            out.setdefault(r.probe.ingress or NO_INGRESS, []).append(r)
        return dict(sorted(out.items()))

    def summary(self) -> dict[str, Any]:
        diffs = [d for r in self.results for d in r.differences]
        groups = self.by_ingress()
        return {
            "reference": str(self.reference),
            "ingressd": str(self.target),
            "ingresses_served": len(self.served),
            "ingresses": len(groups),
            "ingresses_differing": sum(any(r.differences for r in rs) for rs in groups.values()),
            "ingresses_not_probed": list(self.not_probed),
            "probes_generated": self.generated,
            "probes_sent": len(self.results),
            "probes_over_bound": self.dropped,
            "methods_sent": list(self.methods),
            "methods_not_sent": dict(sorted(self.skipped_methods.items())),
            "probes_differing": sum(bool(r.differences) for r in self.results),
            "differences": len(diffs),
            "by_field": dict(sorted(Counter(d.field for d in diffs).items())),
            "errors": sum(len(r.errors) for r in self.results),
            "build_problems": len(self.problems),
            "exit_code": self.exit_code,
        }


def curl(probe: Probe, address: Address) -> str:
    """A curl command line that sends ``probe`` to ``address`` as the diff sent it."""
    default = 443 if probe.scheme == "https" else 80
    host = f"[{probe.host}]" if ":" in probe.host else probe.host
    target = f"[{address.host}]" if ":" in address.host else address.host
    connect = f"{host}:{default}:{target}:{address.port(probe.scheme)}"
    args = ["curl", "-sS", "-o", "/dev/null", "-D", "-", "--path-as-is", "--connect-to", connect]
    if probe.scheme == "https":
        args.append("-k")
    if probe.method == "HEAD":
        args.append("-I")
    elif probe.method != "GET":
        args += ["-X", probe.method]
    for name, value in probe.headers:
        args += ["-H", f"{name}: {value}"]
    if probe.cookies:
        args += ["-b", "; ".join(f"{n}={v}" for n, v in probe.cookies)]
    args.append(f"{probe.scheme}://{host}{probe.path}")
    return shlex.join(args)


def request_text(probe: Probe) -> str:
    extra = [f"{n}: {v}" for n, v in probe.headers]
    extra += [f"cookie {n}={v}" for n, v in probe.cookies]
    more = f" [{'; '.join(extra)}]" if extra else ""
    return f"{probe.method} {probe.scheme}://{probe.host}{probe.path}{more}"


def render_text(report: Report) -> str:
    lines: list[str] = []
    for ingress, results in report.by_ingress().items():
        differing = [r for r in results if r.differences or r.errors]
        if not differing:
            continue
        count = sum(len(r.differences) for r in results)
        lines.append(f"Ingress {ingress}: {count} difference{'s' if count != 1 else ''}")
        for r in differing:
            why = "; ".join(r.probe.why)
            for d in r.differences:
                lines.append(
                    f"  {d.field}: reference {d.reference!r}, ingressd {d.target!r}"
                    f" | {request_text(r.probe)} ({why}; serves: {r.probe.expect})"
                    f" | {curl(r.probe, report.reference)}"
                )
            for error in r.errors:
                lines.append(f"  error: {error} | {request_text(r.probe)} ({why})")
        lines.append("")
    s = report.summary()
    methods = ", ".join(s["methods_sent"]) or "none"
    skipped = ", ".join(f"{m} ({n} probes)" for m, n in s["methods_not_sent"].items())
    lines.append(
        f"Summary: {s['probes_sent']} probes sent to the reference {s['reference']} and to "
        f"ingressd {s['ingressd']} ({s['probes_generated']} generated, "
        f"{s['probes_over_bound']} over --max-probes); methods sent: {methods}"
        + (f"; not sent (--unsafe-methods sends them): {skipped}" if skipped else "")
    )
    fields = ", ".join(f"{n} {f}" for f, n in s["by_field"].items())
    lines.append(
        f"{s['differences']} differences in {s['probes_differing']} probes; "
        f"{s['ingresses_differing']} of the {s['ingresses']} Ingresses probed differ"
        + (f" ({fields})" if fields else "")
        + f"; {s['errors']} errors; exit code {s['exit_code']}"
    )
    if report.not_probed:
        lines.append(
            f"Not probed ({len(report.not_probed)} served Ingresses without a route to probe, "
            f"or over --max-probes): {', '.join(report.not_probed)}"
        )
    if report.problems:
        lines.append(
            f"Note: the routing table build reported {len(report.problems)} problems "
            "(ingressd check lists them)"
        )
    return "\n".join(lines) + "\n"


def render_json(report: Report) -> str:
    ingresses = []
    for ingress, results in report.by_ingress().items():
        ingresses.append(
            {
                "ingress": ingress,
                "probes": len(results),
                "differences": [
                    {
                        "field": d.field,
                        "reference": d.reference,
                        "ingressd": d.target,
                        "request": _probe_json(r.probe),
                        "curl_reference": curl(r.probe, report.reference),
                        "curl_ingressd": curl(r.probe, report.target),
                    }
                    for r in results
                    for d in r.differences
                ],
                "errors": [
                    {"error": e, "request": _probe_json(r.probe)} for r in results for e in r.errors
                ],
            }
        )
    doc = {"ingresses": ingresses, "problems": list(report.problems), "summary": report.summary()}
    return json.dumps(doc, indent=2) + "\n"


def _probe_json(probe: Probe) -> dict[str, Any]:
    return {
        "method": probe.method,
        "scheme": probe.scheme,
        "host": probe.host,
        "path": probe.path,
        "headers": [list(h) for h in probe.headers],
        "cookies": [list(c) for c in probe.cookies],
        "why": list(probe.why),
        "serves": probe.expect,
    }
