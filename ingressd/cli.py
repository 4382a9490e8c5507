"""Command line: ``ingressd serve``, ``ingressd demo`` and ``ingressd check``.

Tuning options, accepted by serve and demo but left out of their --help:
  --proxy-connect-timeout SECONDS  connecting to an upstream (default 5)
  --proxy-send-timeout SECONDS     upstream not accepting the request (default 60)
  --proxy-read-timeout SECONDS     upstream silent while a response is due (default 60)
Like ingress-nginx's proxy-*-timeout settings: connect -> 504, send/read -> 504
(or a cut-off response once it has started).
  --client-header-timeout SECONDS  whole request head must arrive within (default 60) -> 408
  --client-body-timeout SECONDS    gap allowed between request body reads (default 60) -> 408
  --keepalive-timeout SECONDS      idle keep-alive connection closed after (default 75)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__, access_log, logs
from .annotations import parse_buffer_size, parse_cidrs, parse_size
from .app import serve
from .check import check, render_json, render_text
from .config import WATCH_SECONDS, ClusterConfig, KubeConfigError, ServeConfig
from .limits import DEFAULT_ENTRIES
from .model import Problem
from .proxy.server import ProxySettings
from .proxy.upstream import DEFAULT_HEAD_LIMIT
from .routing.build import DEFAULT_CONTROLLER, BuildOptions
from .store import Snapshot
from .workers import default_count


def _common(
    p: argparse.ArgumentParser, address: str, shutdown_delay: float, access: str = "json"
) -> None:
    p.add_argument("--address", default=address, help=f"address to listen on (default {address})")
    p.add_argument(
        "--shutdown-delay",
        type=_seconds_or_zero,
        default=shutdown_delay,
        metavar="SECONDS",
        help="on SIGTERM, keep accepting this long while /readyz says unready, so load "
        f"balancers stop sending first (default {shutdown_delay:g})",
    )
    p.add_argument(
        "--shutdown-grace",
        type=_seconds_or_zero,
        default=10.0,
        metavar="SECONDS",
        help="then let open requests and WebSockets finish for up to this long (default 10)",
    )
    p.add_argument("--http-port", type=int, default=8080, help="plain HTTP port (default 8080)")
    p.add_argument("--https-port", type=int, default=8443, help="HTTPS port (default 8443)")
    p.add_argument(
        "--admin-port",
        type=int,
        default=10254,
        help="port of /healthz, /readyz, /problems and /metrics (default 10254)",
    )
    p.add_argument(
        "--https-redirect-port",
        type=int,
        default=None,
        help="port put in HTTP->HTTPS redirects (default: --https-port; 443 behind "
        "a load balancer that maps it)",
    )
    _class_options(p)
    p.add_argument(
        "--default-certificate",
        metavar="NS/NAME",
        help="TLS Secret served to hosts without a certificate of their own",
    )
    p.add_argument(
        "--proxy-body-size",
        type=_size,
        default=1024 * 1024,
        metavar="SIZE",
        help="largest request body (like ingress-nginx: 1m; 0 = unlimited); larger get 413",
    )
    p.add_argument(
        "--proxy-buffer-size",
        type=_buffer_size,
        default=DEFAULT_HEAD_LIMIT,
        metavar="SIZE",
        help="largest upstream response head, status line and headers (like ingress-nginx: "
        "4k; up to 1m); larger get 502, the proxy-buffer-size annotation overrides it",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--log-format",
        default="text",
        choices=logs.FORMATS,
        help="the process log on stderr: text lines, or JSON objects (default text)",
    )
    p.add_argument(
        "--access-log",
        default=access,
        choices=access_log.FORMATS,
        help="one line per request on stdout: JSON, a combined-log-like plain line, or "
        f"none (default {access})",
    )
    p.add_argument(
        "--trusted-proxies",
        type=_cidrs,
        default=(),
        metavar="CIDR[,CIDR]",
        help="load balancers or proxies in front of ingressd: from these peers, the "
        "X-Forwarded-For header names the client (for source ranges, limits, X-Real-IP); "
        "from anyone else it is replaced by the peer's address (default: none)",
    )
    p.add_argument(
        "--max-connections",
        type=_positive,
        default=16384,
        metavar="N",
        help="open client connections per worker process; at the cap, idle keep-alive "
        "connections are closed to make room, else new ones get 503 (default 16384)",
    )
    p.add_argument(
        "--limit-entries",
        type=_positive,
        default=DEFAULT_ENTRIES,
        metavar="N",
        help="clients the limit-rps/-rpm/-connections counters remember, over all Ingresses "
        "and shared by the workers: N x (64 + 4 x workers) bytes; drained clients are "
        f"forgotten first, then the least recently seen (default {DEFAULT_ENTRIES})",
    )
    p.add_argument(
        "--upstream-max-fails",
        type=int,
        default=3,
        metavar="N",
        help="consecutive failed connections that take an endpoint out of rotation "
        "(passive health; 0 = never; default 3)",
    )
    p.add_argument(
        "--upstream-fail-timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="how long such an endpoint stays out, doubled while it keeps failing (default 10)",
    )
    # Documented in the module docstring (``ingressd --help``), hidden from each command's.
    for flag, default in (
        ("proxy-connect", 5.0),
        ("proxy-send", 60.0),
        ("proxy-read", 60.0),
        ("client-header", 60.0),
        ("client-body", 60.0),
        ("keepalive", 75.0),
    ):
        p.add_argument(
            f"--{flag}-timeout",
            type=_seconds,
            default=default,
            metavar="SECONDS",
            help=argparse.SUPPRESS,
        )


def _class_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ingress-class",
        default="ingressd",
        help="value of the legacy kubernetes.io/ingress.class annotation to serve",
    )
    p.add_argument(
        "--controller-name",
        default=DEFAULT_CONTROLLER,
        help=f"spec.controller of IngressClasses to serve (default {DEFAULT_CONTROLLER})",
    )


def _sources(p: argparse.ArgumentParser, manifests_help: str) -> None:
    """Where the objects come from; none of them means the cluster, as kubectl finds it."""
    source = p.add_mutually_exclusive_group()
    source.add_argument("--manifests", type=Path, metavar="DIR", help=manifests_help)
    source.add_argument("--kubeconfig", type=Path, metavar="PATH", help="kubeconfig file to use")
    source.add_argument(
        "--in-cluster",
        action="store_true",
        help="use the Pod's service account (as in deploy/)",
    )
    p.add_argument(
        "--watch-namespace",
        metavar="NS",
        help="read only this namespace of the cluster (default: all namespaces)",
    )


def _size(value: str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _buffer_size(value: str) -> int:
    try:
        return parse_buffer_size(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cidrs(value: str) -> tuple:
    try:
        return parse_cidrs(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number from 1")
    return int(value)


def _seconds_or_zero(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < 86400:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds")
    return seconds


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} must be a positive number of seconds")
    return seconds


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="ingressd", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    top.add_argument("--version", action="version", version=f"ingressd {__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "serve",
        help="serve the Ingresses of a cluster, or of a folder of manifests",
        description="Serve the Ingresses of a cluster (--kubeconfig, --in-cluster, or as "
        "kubectl finds its configuration: KUBECONFIG, ~/.kube/config, in-cluster), "
        "or of a folder of manifests (--manifests).",
    )
    _sources(
        s,
        "folder of Kubernetes YAML (IngressClass, Ingress, Service, EndpointSlice, Secret); "
        "watched for changes",
    )
    publish = s.add_mutually_exclusive_group()
    publish.add_argument(
        "--publish-service",
        metavar="NS/NAME",
        help="Service whose load balancer (else cluster) addresses go into Ingress status",
    )
    publish.add_argument(
        "--publish-status-address",
        metavar="ADDR[,ADDR]",
        help="addresses (IPs or hostnames) to put into Ingress status",
    )
    s.add_argument(
        "--election-id",
        default="ingressd-leader",
        metavar="NAME",
        help="Lease used for leader election, in POD_NAMESPACE (default ingressd-leader)",
    )
    # Client-go's defaults; shorter in tests.
    for flag, default in (
        ("lease-duration", 15.0),
        ("renew-deadline", 10.0),
        ("retry-period", 2.0),
    ):
        s.add_argument(f"--{flag}", type=_seconds, default=default, help=argparse.SUPPRESS)
    s.add_argument("--watch-seconds", type=int, default=WATCH_SECONDS, help=argparse.SUPPRESS)
    s.add_argument("--secret-refresh", type=_seconds, default=30.0, help=argparse.SUPPRESS)
    s.add_argument(
        "--workers",
        type=_positive,
        default=default_count(),
        metavar="N",
        help="proxy processes, each with its own event loop, sharing the ports (SO_REUSEPORT); "
        "one more process reads the source. 1: a single process does everything "
        f"(default: the CPUs available, here {default_count()})",
    )
    _common(s, "0.0.0.0", shutdown_delay=5.0)
    d = sub.add_parser("demo", help="start demo upstreams and serve the bundled examples/")
    d.add_argument(
        "--manifests",
        type=Path,
        default=Path("examples"),
        metavar="DIR",
        help="folder of example manifests (default ./examples)",
    )
    d.add_argument(
        "--workers", type=_positive, default=1, metavar="N", help="proxy processes (default 1)"
    )
    _common(d, "127.0.0.1", shutdown_delay=0.0, access="plain")
    c = sub.add_parser(
        "check",
        help="report, per Ingress, what ingressd would serve and what it cannot",
        description="Report, per Ingress, which class owns it, its routes and whether their "
        "Services resolve, its TLS Secrets, how each annotation is treated and every problem "
        "the routing table build finds. Reads a folder of manifests, or lists the cluster once "
        "(read-only). Exit code: 0 all clear; 1 an annotation is refused or invalid, or an "
        "Ingress has problems; 2 the input cannot be read.",
    )
    _sources(c, "folder of Kubernetes YAML, as `serve --manifests` reads it")
    _class_options(c)
    c.add_argument("--format", choices=["text", "json"], default="text", help="default text")
    c.add_argument(
        "--all",
        action="store_true",
        help="show every Ingress in detail, not only the ones ingressd would serve",
    )
    c.set_defaults(log_level="warning")
    return top


def cluster_config(args: argparse.Namespace) -> ClusterConfig:
    addresses = tuple(
        a.strip() for a in (args.publish_status_address or "").split(",") if a.strip()
    )
    return ClusterConfig(
        kubeconfig=args.kubeconfig,
        in_cluster=args.in_cluster,
        watch_namespace=args.watch_namespace,
        publish_service=args.publish_service,
        publish_status_address=addresses,
        election_id=args.election_id,
        lease_duration=args.lease_duration,
        renew_deadline=args.renew_deadline,
        retry_period=args.retry_period,
        watch_seconds=args.watch_seconds,
        secret_refresh=args.secret_refresh,
    )


def config_from(args: argparse.Namespace) -> ServeConfig:
    in_cluster = args.command == "serve" and args.manifests is None
    return ServeConfig(
        manifests=args.manifests,
        cluster=cluster_config(args) if in_cluster else None,
        address=args.address,
        http_port=args.http_port,
        https_port=args.https_port,
        admin_port=args.admin_port,
        build=BuildOptions(controller_name=args.controller_name, ingress_class=args.ingress_class),
        proxy=ProxySettings(
            https_redirect_port=args.https_redirect_port or args.https_port,
            connect_timeout=args.proxy_connect_timeout,
            read_timeout=args.proxy_read_timeout,
            send_timeout=args.proxy_send_timeout,
            client_header_timeout=args.client_header_timeout,
            client_body_timeout=args.client_body_timeout,
            keepalive_timeout=args.keepalive_timeout,
            max_fails=args.upstream_max_fails,
            trusted_proxies=args.trusted_proxies,
            fail_timeout=args.upstream_fail_timeout,
            max_body_size=args.proxy_body_size,
            proxy_buffer_size=args.proxy_buffer_size,
            max_connections=args.max_connections,
            access_log=args.access_log,
        ),
        default_certificate=args.default_certificate,
        workers=args.workers,
        shutdown_delay=args.shutdown_delay,
        shutdown_grace=args.shutdown_grace,
        log_format=args.log_format,
        limit_entries=args.limit_entries,
    )


async def _demo(config: ServeConfig) -> None:
    from .demo import start_demo_upstreams

    upstreams = await start_demo_upstreams(config.manifests)
    names = ", ".join(f"{u.name}@{u.host}:{u.port}" for u in upstreams)
    logging.getLogger("ingressd.demo").info("demo upstreams: %s", names or "none")
    try:
        await serve(config)
    finally:
        for u in upstreams:
            await u.close()


class _Unreadable(Exception):
    """``check`` cannot read its input at all (exit code 2)."""


def _check_input(args: argparse.Namespace) -> tuple[Snapshot, tuple[Problem, ...]]:
    if args.manifests is not None:
        from .sources.manifests import load_directory

        result = load_directory(args.manifests)
        return result.store.snapshot(), result.problems
    # Imported only here: manifest mode must not pay for the client (see config.py).
    from .kubeclient import connect
    from .sources.kube import ListError, snapshot_once

    try:
        cluster = connect(args.kubeconfig, args.in_cluster)
    except KubeConfigError as exc:
        raise _Unreadable(str(exc)) from None
    try:
        return snapshot_once(cluster, args.watch_namespace), ()
    except ListError as exc:
        raise _Unreadable(str(exc)) from None
    finally:
        cluster.close()


def _check(args: argparse.Namespace) -> int:
    try:
        snapshot, problems = _check_input(args)
    except _Unreadable as exc:
        print(f"ingressd check: {exc}", file=sys.stderr)
        return 2
    options = BuildOptions(controller_name=args.controller_name, ingress_class=args.ingress_class)
    report = check(snapshot, options, problems)
    render = render_json if args.format == "json" else render_text
    sys.stdout.write(render(report, args.all))
    return report.exit_code


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.configure(args.log_level, getattr(args, "log_format", "text"))
    if args.manifests is not None and not args.manifests.is_dir():
        print(f"ingressd {args.command}: {args.manifests} is not a folder", file=sys.stderr)
        return 2
    if args.command == "check":
        return _check(args)
    config = config_from(args)
    import uvloop

    coro = _demo(config) if args.command == "demo" else serve(config)
    try:
        uvloop.run(coro)
    except KeyboardInterrupt:
        pass
    except (OSError, KubeConfigError) as exc:
        print(f"ingressd: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
