"""``ingressd diff``: its options and what it does.

cli.py makes the parser with ``check``'s source and class options and reads the
objects as ``check`` does; the table is built here as ``serve`` builds it; the probes come from
that table, go to the reference and to a running ingressd (``--target``), and
their answers are compared.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import Callable

from ..model.objects import Snapshot
from ..routing.build import BuildOptions, build_table
from .client import Address
from .compare import DEFAULT_HEADERS, ERROR_HEADERS
from .probes import SAFE_METHODS, bound, generate
from .report import EXIT_ERROR, Report, render_json, render_text
from .runner import Limits, reachable, run

UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def _address(value: str) -> Address:
    try:
        return Address.parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _whole_up_to(top: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        if not value.isdigit() or not 1 <= int(value) <= top:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number from 1 to {top}")
        return int(value)

    return parse


def _positive_up_to(top: float, what: str) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = 0.0
        if not 0 < number <= top:
            raise argparse.ArgumentTypeError(f"{value!r} is not {what} {top:g}")
        return number

    return parse


_whole = _whole_up_to(1_000_000)
# Each probe in flight holds a connection to each side: bounded like the rest.
_concurrency = _whole_up_to(256)
_timeout = _positive_up_to(3600, "a number of seconds up to")
_rate = _positive_up_to(10000, "a rate per second up to")


def _header_name(value: str) -> str:
    name = value.strip().lower()
    if not name or any(not (c.isalnum() or c in "-_") for c in name):
        raise argparse.ArgumentTypeError(f"{value!r} is not a header name")
    return name


HELP = "compare a running ingressd with a live reference (ingress-nginx), probe by probe"
DESCRIPTION = (
    "Build the routing table serve would build from the same objects, make probe requests "
    "from each route (its path, a deeper path, a near-miss, regex samples, plain and TLS, "
    "canary headers and cookies, redirects, CORS preflights, unauthenticated requests), send "
    "each to the reference and to ingressd, and report, per Ingress, every difference in "
    "status, Location, the compared headers and what an echoing backend received. Exit code: "
    "0 no differences; 1 differences; 2 the input cannot be read or a server cannot be reached."
)


def add_arguments(d: argparse.ArgumentParser) -> None:
    """diff's own options, on the parser cli.py made with the source and class options
    ``check`` has (so they are the same options, not copies)."""
    d.add_argument(
        "--reference",
        type=_address,
        required=True,
        metavar="HOST:PORT[,HTTPS_PORT]",
        help="the reference, e.g. ingress-nginx's controller: its plain HTTP port and its "
        "HTTPS port (HTTPS_PORT may be left out only for port 80: 443) (default: none, "
        "required)",
    )
    d.add_argument(
        "--target",
        type=_address,
        required=True,
        metavar="HOST:PORT[,HTTPS_PORT]",
        help="the running ingressd serving the same objects: its --http-port and --https-port "
        "(default: none, required)",
    )
    p = d.add_argument_group("probes")
    p.add_argument(
        "--max-probes",
        type=_whole,
        default=2000,
        metavar="N",
        help="probes sent at most (each to both servers); past it each Ingress keeps its "
        "first probes, round-robin, and the report says how many were left out",
    )
    p.add_argument(
        "--rate",
        type=_rate,
        default=50.0,
        metavar="PER_SECOND",
        help="probes started per second: each server gets at most this many requests a second",
    )
    p.add_argument(
        "--concurrency",
        type=_concurrency,
        default=8,
        metavar="N",
        help="probes in flight at once (1-256)",
    )
    p.add_argument(
        "--timeout",
        type=_timeout,
        default=10.0,
        metavar="SECONDS",
        help="per request; a request without an answer by then is an error",
    )
    p.add_argument(
        "--unsafe-methods",
        action="store_true",
        help=f"also send the probes whose method changes state ({', '.join(UNSAFE_METHODS)}); "
        "without it only GET, HEAD and OPTIONS are sent, and the report counts the rest "
        "(default: off)",
    )
    c = d.add_argument_group("comparison")
    c.add_argument(
        "--compare-header",
        type=_header_name,
        action="append",
        default=[],
        metavar="NAME",
        help="also compare this response header (repeatable) (default: the CORS headers, "
        "Strict-Transport-Security, WWW-Authenticate; Content-Type on redirects and errors)",
    )
    c.add_argument(
        "--ignore-header",
        type=_header_name,
        action="append",
        default=[],
        metavar="NAME",
        help="do not compare this header of the default set, Content-Type included "
        "(repeatable) (default: none)",
    )
    c.add_argument(
        "--strict-ports",
        action="store_true",
        help="compare the ports in Location as they are; by default a side's own port, or "
        "the scheme's default port, reads as <http-port>/<https-port> (default: off)",
    )
    d.add_argument("--format", choices=["text", "json"], default="text", help="the report's format")
    # _check_input reads these (check's TCP/UDP services options), which diff has not.
    d.set_defaults(log_level="warning", tcp_services_configmap=None, udp_services_configmap=None)


def headers_of(args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The headers compared on every answer, and those compared on redirects and errors."""
    names = [h for h in DEFAULT_HEADERS if h not in args.ignore_header]
    names += [h for h in args.compare_header if h not in names]
    on_errors = tuple(h for h in ERROR_HEADERS if h not in args.ignore_header)
    return tuple(names), on_errors


def run_diff(args: argparse.Namespace, snapshot: Snapshot, options: BuildOptions) -> int:
    """Probe both sides with what ``snapshot`` builds to; the exit code."""
    table = build_table(snapshot, options)
    probes = generate(table)
    allowed = SAFE_METHODS | (frozenset(UNSAFE_METHODS) if args.unsafe_methods else frozenset())
    skipped = Counter(p.method for p in probes if p.method not in allowed)
    sendable = tuple(p for p in probes if p.method in allowed)
    chosen, dropped = bound(sendable, args.max_probes)
    limits = Limits(concurrency=args.concurrency, rate=args.rate, timeout=args.timeout)
    schemes = sorted({p.scheme for p in chosen})
    for side, address in (("reference", args.reference), ("ingressd (--target)", args.target)):
        why = asyncio.run(reachable(address, schemes, args.timeout))
        if why is not None:
            print(f"ingressd diff: the {side} cannot be reached: {why}", file=sys.stderr)
            return EXIT_ERROR
    headers, on_errors = headers_of(args)
    try:
        results = asyncio.run(
            run(
                chosen,
                args.reference,
                args.target,
                limits,
                headers,
                error_headers=on_errors,
                strict_ports=args.strict_ports,
            )
        )
    except KeyboardInterrupt:
        print("ingressd diff: interrupted; no report", file=sys.stderr)
        return EXIT_ERROR
    report = Report(
        args.reference,
        args.target,
        results,
        generated=len(probes),
        dropped=dropped,
        skipped_methods=dict(skipped),
        problems=tuple(str(p) for p in table.problems),
        served=tuple(f"{ns}/{name}" for ns, name in table.ingresses),
    )
    sys.stdout.write(render_json(report) if args.format == "json" else render_text(report))
    return report.exit_code
