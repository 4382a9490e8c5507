"""``ingressd export gateway-api``: the command line and the writing.

The translation is ``gateway_api.export`` (pure); this module reads the source
as ``check`` does, writes the objects as YAML on stdout and the report of what
was not carried over on stderr (and, with ``--report-json``, to a file).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from .gateway_api import GATEWAY_API_VERSION, Export, ExportOptions, Finding, export
from .model.objects import Snapshot
from .model.problems import Problem
from .routing.build import BuildOptions

# Exit codes (docs/gateway-api.md): 0 everything carried over (approximations are
# reported, not counted); 1 something was dropped; 2 the input cannot be used.
EXIT_COMPLETE = 0
EXIT_DROPPED = 1


_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _label(value: str) -> str:
    if not _LABEL.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a namespace name (a DNS label)")
    return value


def _subdomain(value: str) -> str:
    if len(value) > 253 or not _SUBDOMAIN.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not an object name (a DNS subdomain)")
    return value


def add_parser(
    sub: Any,
    formatter: type[argparse.HelpFormatter],
    sources: Callable[[argparse.ArgumentParser, str], None],
    class_options: Callable[[argparse.ArgumentParser], None],
    ns_name: Callable[[str], str],
) -> None:
    """Register ``export gateway-api`` on the top-level subparsers ``sub``, with
    ``check``'s source and class options (cli.py passes its own, so they stay one)."""
    exp = sub.add_parser(
        "export",
        formatter_class=formatter,
        help="write the Ingresses ingressd would serve as other APIs' objects",
        description="Write the Ingresses ingressd would serve as objects of another API.",
    )
    targets = exp.add_subparsers(dest="target", required=True, metavar="TARGET")
    gw = targets.add_parser(
        "gateway-api",
        formatter_class=formatter,
        help=f"Gateway API {GATEWAY_API_VERSION} objects, as YAML on stdout",
        description=f"Write Gateway API {GATEWAY_API_VERSION} objects (Gateway, HTTPRoute, "
        "GRPCRoute, ReferenceGrant; with --channel experimental also TLSRoute and "
        "BackendTLSPolicy) for the Ingresses ingressd would serve, as multi-document YAML on "
        "stdout. What cannot be carried over exactly is reported per Ingress on stderr, with "
        "the annotation and the reason. Exit code: 0 nothing dropped (approximations are "
        "reported); 1 something was dropped; 2 the input cannot be read.",
    )
    sources(gw, "folder of Kubernetes YAML, as serve --manifests reads it")
    class_options(gw)
    gw.add_argument(
        "--configmap",
        type=ns_name,
        metavar="NS/NAME",
        help="the controller ConfigMap serve would read (its add-headers and "
        "proxy-set-headers are exported) (default: none)",
    )
    gw.add_argument(
        "--enable-ssl-passthrough",
        action="store_true",
        help="export as serve --enable-ssl-passthrough would serve: ssl-passthrough hosts "
        "become TLS listeners and TLSRoutes (experimental channel) (default: off)",
    )
    g = gw.add_argument_group("the Gateway")
    g.add_argument(
        "--gateway-class",
        type=_subdomain,
        default="ingressd",
        metavar="NAME",
        help="the Gateway's gatewayClassName: the GatewayClass of the implementation to run it",
    )
    g.add_argument(
        "--gateway-name", type=_subdomain, default="ingressd", metavar="NAME", help="its name"
    )
    g.add_argument(
        "--gateway-namespace",
        type=_label,
        default="default",
        metavar="NS",
        help="its namespace (Secrets of other namespaces get a ReferenceGrant)",
    )
    g.add_argument(
        "--channel",
        choices=["standard", "experimental"],
        default="standard",
        help="the Gateway API release channel installed: standard leaves out what only "
        "experimental has (TLSRoute, BackendTLSPolicy, redirect codes 303/307/308) and "
        "reports it",
    )
    gw.add_argument(
        "--report-json",
        type=Path,
        metavar="FILE",
        help="also write the report as JSON to FILE (default: none)",
    )
    gw.set_defaults(log_level="warning", tcp_services_configmap=None, udp_services_configmap=None)


def run(
    args: argparse.Namespace,
    snapshot: Snapshot,
    problems: Sequence[Problem],
    options: BuildOptions,
) -> int:
    """Export what ``snapshot`` (read as ``check`` reads it) would serve; the exit code."""
    result = export(
        snapshot,
        options,
        ExportOptions(
            gateway_class=args.gateway_class,
            gateway_name=args.gateway_name,
            gateway_namespace=args.gateway_namespace,
            channel=args.channel,
            passthrough=args.enable_ssl_passthrough,
        ),
    )
    sys.stdout.write(render_yaml(result))
    sys.stderr.write(render_report(result, [str(p) for p in problems]))
    if args.report_json is not None:
        args.report_json.write_text(render_json(result, [str(p) for p in problems]))
    return EXIT_DROPPED if result.dropped else EXIT_COMPLETE


def render_yaml(result: Export) -> str:
    """The objects as multi-document YAML, keys sorted: the same input, the same bytes."""
    if not result.objects:
        return ""
    return yaml.dump_all(
        list(result.objects), Dumper=_Dumper, sort_keys=True, default_flow_style=False
    )


class _Dumper(yaml.SafeDumper):
    """Safe YAML without anchors: rules share filter lists, and every document must
    stand alone (kubectl apply, diff tools)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render_report(result: Export, problems: Sequence[str] = ()) -> str:
    """What a person reads on stderr: per Ingress, each finding; then the counts."""
    lines = [f"# Gateway API {GATEWAY_API_VERSION}: what was not carried over exactly"]
    by: dict[str, list[Finding]] = {}
    for f in result.findings:
        by.setdefault(f.ingress, []).append(f)
    for ingress, findings in sorted(by.items()):
        lines.append(f"Ingress {ingress}" if ingress else "Export-wide")
        width = max(len(f.subject) for f in findings)
        lines += [f"  {f.severity:<12}  {f.subject:<{width}}  {f.reason}" for f in findings]
    if problems:
        lines.append("Input problems:")
        lines += [f"  {p}" for p in problems]
    s = result.summary()
    kinds = ", ".join(f"{n} {k}" for k, n in s["objects"].items()) or "no objects"
    lines.append(
        f"Summary: {s['ingresses']} Ingresses exported: {kinds}; {s['dropped']} dropped, "
        f"{s['approximated']} approximated"
    )
    return "\n".join(lines) + "\n"


def render_json(result: Export, problems: Sequence[str] = ()) -> str:
    doc = {
        "gateway_api": GATEWAY_API_VERSION,
        "findings": [
            {"ingress": f.ingress, "subject": f.subject, "severity": f.severity, "reason": f.reason}
            for f in result.findings
        ],
        "ingresses": list(result.ingresses),
        "problems": list(problems),
        "summary": result.summary(),
    }
    return json.dumps(doc, indent=2) + "\n"
