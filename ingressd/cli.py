"""Command line: ingressd serve, ingressd demo and ingressd check."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

from . import BUILD, __version__
from .admission_options import add_options as admission_options
from .admission_options import admission_config
from .app import serve
from .check import check, render_json, render_text
from .config import ServeConfig
from .export import add_parser as add_export
from .export import run as run_export
from .kube.config import WATCH_SECONDS, ClusterConfig, KubeConfigError, NoClusterError
from .listeners import ListenError
from .model.objects import Snapshot
from .model.problems import Problem
from .observe import access_log, logs
from .policy.annotations import parse_buffer_size, parse_cidrs, parse_http_errors, parse_size
from .policy.configmap import FLAGS as CONFIGMAP_FLAGS
from .policy.limits import DEFAULT_ENTRIES
from .proxy.settings import DEFAULT_HEAD_LIMIT, ProxySettings
from .routing.build import DEFAULT_CONTROLLER, BuildOptions
from .stream.connect import StreamSettings
from .stream.manager import StreamConfig
from .stream.services import ConfigMapRef
from .workers import default_count

DEFAULT_INGRESS_CLASS = "ingressd"

# Exit codes, the same for every command (docs/manifests.md and docs/check.md: "Exit codes").
EXIT_OK = 0
EXIT_FAILED = 1  # serve/demo: a listener could not be bound; check: problems found
EXIT_USAGE = 2  # bad arguments, or input/configuration that cannot be used at all

DESCRIPTION = """\
ingressd: a Kubernetes ingress controller and reverse proxy for Ingresses
written for ingress-nginx.

  ingressd serve --manifests DIR   serve the Ingresses of a folder of manifests
  ingressd serve                   serve the Ingresses of the cluster, found as
                                   kubectl finds it (--kubeconfig, --in-cluster)
  ingressd demo                    serve the bundled examples/ with demo upstreams
  ingressd check                   report what ingressd would do with each Ingress
  ingressd diff --reference ADDR --target ADDR
                                   compare a running ingressd with a live reference
  ingressd export gateway-api      write them as Gateway API objects (YAML)

Run "ingressd COMMAND --help" for the options of a command.

exit codes: 0 success; 1 serve/demo: a listener could not be bound, check:
an Ingress has problems or an annotation is refused or invalid, diff: the
two servers differ; 2 the arguments, the kubeconfig or the input cannot be
used (diff: or a server cannot be reached)."""

NO_CLUSTER_HINT = {
    "serve": "to serve a folder of manifests instead: ingressd serve --manifests DIR; "
    "to try ingressd: ingressd demo",
    "check": "to check a folder of manifests instead: ingressd check --manifests DIR",
    "diff": "to read a folder of manifests instead: ingressd diff --manifests DIR",
    "export": "to export a folder of manifests instead: ingressd export gateway-api "
    "--manifests DIR",
}


class _Formatter(argparse.HelpFormatter):
    """Every option's help ends with its default: "(default: ...)".

    Options whose default is not a plain value (None: "as kubectl finds it",
    "the HTTPS port") say it in their own help text, which the help test checks.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default:" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        if isinstance(action, argparse._StoreTrueAction):
            return f"{text} (default: off)"
        if action.default is None:
            return text
        return f"{text} (default: {_shown(action.default)})"


class _TopFormatter(_Formatter, argparse.RawDescriptionHelpFormatter):
    """The top-level help: its description is laid out by hand."""


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value) or "none"
    return str(value).replace("%", "%%")


class _Given(argparse.Action):
    """Stores the value and notes that the flag was on the command line: such a
    flag wins over the controller ConfigMap's key (policy/configmap.py FLAGS)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        given = set(getattr(namespace, "given_flags", ()))
        given.add(self.option_strings[0])
        namespace.given_flags = given


class _GivenTrue(_Given):
    """A switch (as store_true) that notes it was given, as _Given does."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        super().__call__(parser, namespace, True, option_string)


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (1-65535)")
    return int(value)


def _http_errors(value: str) -> tuple[int, ...]:
    try:
        return tuple(sorted(parse_http_errors(value)))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc}") from None


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


def _count(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number from 0")
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


def _ns_name(value: str) -> str:
    try:
        ConfigMapRef.parse("TCP", "", value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not NAMESPACE/NAME") from None
    return value


def _listeners(p: argparse.ArgumentParser, address: str) -> None:
    g = p.add_argument_group("listeners")
    g.add_argument("--address", default=address, help="address to listen on")
    g.add_argument("--http-port", type=_port, default=8080, metavar="PORT", help="plain HTTP port")
    g.add_argument("--https-port", type=_port, default=8443, metavar="PORT", help="HTTPS port")
    g.add_argument(
        "--admin-port",
        type=_port,
        default=10254,
        metavar="PORT",
        help="port of /healthz, /readyz, /problems and /metrics",
    )
    g.add_argument(
        "--https-redirect-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="port put in HTTP->HTTPS redirects; 443 behind a load balancer that maps it "
        "(default: the HTTPS port)",
    )


def _common(
    p: argparse.ArgumentParser, address: str, shutdown_delay: float, access: str = "json"
) -> None:
    _listeners(p, address)
    _class_options(p)
    g = p.add_argument_group("serving")
    g.add_argument(
        "--default-certificate",
        metavar="NS/NAME",
        help="TLS Secret served to hosts without a certificate of their own "
        "(default: a self-signed certificate made at start)",
    )
    g.add_argument(
        "--configmap",
        type=_ns_name,
        metavar="NS/NAME",
        help="the controller ConfigMap, as ingress-nginx's --configmap: its keys (hsts, "
        "ssl-redirect, proxy-body-size, the timeouts ...) set the defaults, live; a flag "
        "given explicitly wins over its key (in manifest mode: the ConfigMap of that name "
        "in the folder) (default: none: ingress-nginx's defaults)",
    )
    g.add_argument(
        "--proxy-body-size",
        action=_Given,
        type=_size,
        default=1024 * 1024,
        metavar="SIZE",
        help="largest request body, as ingress-nginx's proxy-body-size (8k, 1m, 1g; "
        "0 = unlimited); larger get 413 (default: 1m)",
    )
    g.add_argument(
        "--proxy-buffer-size",
        action=_Given,
        type=_buffer_size,
        default=DEFAULT_HEAD_LIMIT,
        metavar="SIZE",
        help="largest upstream response head, status line and headers, as ingress-nginx's "
        "proxy-buffer-size (up to 1m); larger get 502, the proxy-buffer-size annotation "
        "overrides it (default: 4k)",
    )
    g.add_argument(
        "--client-body-temp-path",
        default="",
        metavar="DIR",
        help="where buffered request bodies over client-body-buffer-size go, as nginx's "
        "client_body_temp_path: each process makes a private folder (mode 0700) in it and "
        "its files have no name (default: $TMPDIR, else /tmp)",
    )
    g.add_argument(
        "--client-body-temp-size",
        type=_size,
        default=1024**3,
        metavar="SIZE",
        help="the most request bodies one process holds in --client-body-temp-path at once; "
        "past it a body that needs the disk gets 503 (default: 1g)",
    )
    g.add_argument(
        "--trusted-proxies",
        type=_cidrs,
        default=(),
        action=_Given,
        metavar="CIDR[,CIDR]",
        help="load balancers or proxies in front of ingressd: from these peers, the "
        "X-Forwarded-For header names the client (for source ranges, limits, X-Real-IP); "
        "from anyone else it is replaced by the peer's address",
    )
    g.add_argument(
        "--use-proxy-protocol",
        action=_GivenTrue,
        nargs=0,
        default=False,
        help="the HTTP and HTTPS ports expect a PROXY protocol header (v1 or v2) on every "
        "connection, as sent by a load balancer (AWS NLB, haproxy send-proxy); its client "
        "address is the client's. A connection without a valid header is closed (default: off)",
    )
    g.add_argument(
        "--enable-ssl-passthrough",
        action="store_true",
        help="on the HTTPS port, read each ClientHello first: a connection whose SNI names "
        'the host of an Ingress annotated ssl-passthrough: "true" goes to that host\'s '
        "backend with its TLS untouched; the others are terminated as usual (default: off)",
    )
    g.add_argument(
        "--tcp-services-configmap",
        type=_ns_name,
        metavar="NS/NAME",
        help="ConfigMap of TCP services, as ingress-nginx's: each key a port to listen on, "
        "each value <namespace>/<service>:<port>[:PROXY][:PROXY] (the first PROXY: clients "
        "send the PROXY protocol; the second: send it to the upstream) (default: none)",
    )
    g.add_argument(
        "--udp-services-configmap",
        type=_ns_name,
        metavar="NS/NAME",
        help="ConfigMap of UDP services: each key a port, each value "
        "<namespace>/<service>:<port> (default: none)",
    )
    g.add_argument(
        "--proxy-stream-timeout",
        type=_seconds,
        default=600.0,
        metavar="SECONDS",
        help="TCP and UDP services: a session idle this long is closed, as ingress-nginx's "
        "proxy-stream-timeout (default: 600)",
    )
    g.add_argument(
        "--proxy-stream-responses",
        type=_count,
        default=1,
        metavar="N",
        help="UDP services: replies expected per datagram before a flow ends, as ingress-nginx's "
        "proxy-stream-responses (0: until idle)",
    )
    g.add_argument(
        "--max-stream-sessions",
        type=_positive,
        default=16384,
        metavar="N",
        help="layer-4 sessions open at once per process (TCP services' and TLS passthrough "
        "connections, UDP flows), as nginx's worker_connections; past it new connections "
        "are closed at once (default: 16384)",
    )
    g.add_argument(
        "--max-stream-sessions-per-port",
        type=_positive,
        default=4096,
        metavar="N",
        help="sessions open at once per TCP service port, and TLS passthrough sessions on "
        "the HTTPS port; past it new connections are closed at once (default: 4096)",
    )
    g.add_argument(
        "--max-udp-flows",
        type=_positive,
        default=4096,
        metavar="N",
        help="UDP services: clients (flows) tracked at once per port; past it the least "
        "recently used flow ends (default: 4096)",
    )
    g.add_argument(
        "--max-connections",
        type=_positive,
        default=16384,
        metavar="N",
        help="open client connections per worker process; at the cap, idle keep-alive "
        "connections are closed to make room, else new ones get 503",
    )
    g.add_argument(
        "--limit-entries",
        type=_positive,
        default=DEFAULT_ENTRIES,
        metavar="N",
        help="clients the limit-rps/-rpm/-connections counters remember, over all Ingresses "
        "and shared by the workers: N x (64 + 4 x workers) bytes; drained clients are "
        "forgotten first, then the least recently seen",
    )
    g.add_argument(
        "--upstream-max-fails",
        type=_count,
        default=3,
        metavar="N",
        help="consecutive failed connections that take an endpoint out of rotation "
        "(passive health; 0 = never)",
    )
    g.add_argument(
        "--upstream-fail-timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="how long such an endpoint stays out, doubled while it keeps failing",
    )
    h = p.add_argument_group(
        "HTTP/2",
        "to clients on the HTTPS port (ALPN h2, then http/1.1); upstreams get HTTP/1.1",
    )
    h.add_argument(
        "--http2",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="offer HTTP/2 by ALPN, as ingress-nginx's use-http2 (default: on)",
    )
    h.add_argument(
        "--http2-max-concurrent-streams",
        type=_positive,
        default=128,
        metavar="N",
        help="streams a client may have open at once; more are refused (REFUSED_STREAM), "
        "as nginx's http2_max_concurrent_streams (default: 128)",
    )
    h.add_argument(
        "--http2-max-header-list-size",
        type=_buffer_size,
        default=32 * 1024,
        metavar="SIZE",
        help="largest decoded request header list (HPACK); more closes the connection "
        "(GOAWAY ENHANCE_YOUR_CALM), as nginx's large_client_header_buffers 4 8k "
        "(at most 1m) (default: 32k)",
    )
    h.add_argument(
        "--http2-max-resets",
        type=_count,
        default=200,
        metavar="N",
        help="streams a client may reset before their response ends, per 10 s; more closes "
        "the connection (rapid reset, CVE-2023-44487; 0 = no limit)",
    )
    h.add_argument(
        "--http2-max-control-frames",
        type=_count,
        default=1000,
        metavar="N",
        help="HTTP/2 control frames a client may send per 10 s: PING, SETTINGS, PRIORITY, "
        "RST_STREAM, unknown types, empty DATA, DATA on a closed stream, HEADERS that open "
        "no stream, and "
        "WINDOW_UPDATE beyond two per DATA frame sent to it; more closes the connection "
        "(0 = no limit)",
    )
    t = p.add_argument_group(
        "timeouts",
        "as ingress-nginx's settings of the same names; a slow upstream gets "
        "504 (or a cut-off response once it has started); a slow client is cut off "
        "without an answer, 408 in the access log, as nginx",
    )
    for flag, default, what in (
        ("proxy-connect", 5.0, "connecting to an upstream"),
        ("proxy-send", 60.0, "an upstream not accepting the request"),
        ("proxy-read", 60.0, "an upstream silent while a response is due"),
        ("client-header", 60.0, "the whole request head of a client"),
        ("client-body", 60.0, "a gap between reads of a request body"),
        ("keepalive", 75.0, "an idle keep-alive client connection before it is closed"),
        (
            "client-send",
            60.0,
            "an HTTP/2 client taking nothing of a response (its flow-control window "
            "closed), as nginx's send_timeout",
        ),
    ):
        t.add_argument(
            f"--{flag}-timeout",
            action=_Given,
            type=_seconds,
            default=default,
            metavar="SECONDS",
            help=what,
        )
    s = p.add_argument_group("shutdown")
    s.add_argument(
        "--shutdown-delay",
        type=_seconds_or_zero,
        default=shutdown_delay,
        metavar="SECONDS",
        help="on SIGTERM, keep accepting this long while /readyz says unready, so load "
        "balancers stop sending first",
    )
    s.add_argument(
        "--shutdown-grace",
        type=_seconds_or_zero,
        default=10.0,
        metavar="SECONDS",
        help="then let open requests and WebSockets finish for up to this long",
    )
    o = p.add_argument_group("logs")
    o.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="the least severe process log messages shown",
    )
    o.add_argument(
        "--log-format",
        default="text",
        choices=logs.FORMATS,
        help="the process log on stderr: text lines, or JSON objects",
    )
    o.add_argument(
        "--access-log",
        default=access,
        choices=access_log.FORMATS,
        help="one line per request on stdout: JSON, a combined-log-like plain line, or none",
    )


def _class_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("which Ingresses")
    g.add_argument(
        "--ingress-class",
        default=None,
        metavar="NAME",
        help="the class to serve: Ingresses with the legacy kubernetes.io/ingress.class "
        "annotation NAME are ours; with --manifests, an IngressClass NAME that the folder "
        f"does not hold is taken as ours (default: {DEFAULT_INGRESS_CLASS}, whose "
        "IngressClass must exist)",
    )
    g.add_argument(
        "--controller-name",
        default=DEFAULT_CONTROLLER,
        metavar="NAME",
        help="spec.controller of the IngressClasses to serve",
    )
    d = p.add_argument_group("default backend and error pages")
    d.add_argument(
        "--default-backend-service",
        type=_ns_name,
        default=None,
        metavar="NS/NAME",
        help="Service (its first port) that serves requests no rule or defaultBackend "
        "takes, and the error pages of custom-http-errors, as ingress-nginx's flag "
        "(default: none; as while it has no ready endpoints, those get ingressd's own 404)",
    )
    d.add_argument(
        "--custom-http-errors",
        type=_http_errors,
        default=(),
        metavar="CODE[,CODE]",
        help="statuses (400-599) answered with the default backend's error page on every "
        "route whose Ingress has no custom-http-errors annotation, as ingress-nginx's "
        "ConfigMap key (default: none)",
    )


def _sources(p: argparse.ArgumentParser, manifests_help: str) -> None:
    """Where the objects come from; none of them means the cluster, as kubectl finds it."""
    g = p.add_argument_group("source (one of)")
    source = g.add_mutually_exclusive_group()
    source.add_argument(
        "--manifests",
        type=Path,
        metavar="DIR",
        help=f"{manifests_help} (default: the cluster)",
    )
    source.add_argument(
        "--kubeconfig",
        type=Path,
        metavar="PATH",
        help="kubeconfig file to use (default: as kubectl finds it: KUBECONFIG, "
        "~/.kube/config, else the Pod's service account)",
    )
    source.add_argument(
        "--in-cluster",
        action="store_true",
        help="use the Pod's service account (as in deploy/)",
    )
    g.add_argument(
        "--watch-namespace",
        metavar="NS",
        help="read only this namespace of the cluster (default: all namespaces)",
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="ingressd", description=DESCRIPTION, formatter_class=_TopFormatter
    )
    top.add_argument("--version", action="version", version=f"ingressd {__version__}, {BUILD}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser(
        "serve",
        formatter_class=_Formatter,
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
    c = s.add_argument_group("cluster mode")
    publish = c.add_mutually_exclusive_group()
    publish.add_argument(
        "--publish-service",
        metavar="NS/NAME",
        help="Service whose load balancer (else cluster) addresses go into Ingress status "
        "(default: status not written)",
    )
    publish.add_argument(
        "--publish-status-address",
        metavar="ADDR[,ADDR]",
        help="addresses (IPs or hostnames) to put into Ingress status (default: none)",
    )
    c.add_argument(
        "--election-id",
        default="ingressd-leader",
        metavar="NAME",
        help="Lease used for leader election, in POD_NAMESPACE",
    )
    # client-go's leader election defaults.
    for flag, default, what in (
        ("lease-duration", 15.0, "how long a leader's Lease holds without renewal"),
        ("renew-deadline", 10.0, "how long the leader keeps trying to renew before it steps down"),
        ("retry-period", 2.0, "how often the Lease is tried or renewed"),
    ):
        c.add_argument(f"--{flag}", type=_seconds, default=default, metavar="SECONDS", help=what)
    c.add_argument(
        "--watch-seconds",
        type=_positive,
        default=WATCH_SECONDS,
        metavar="SECONDS",
        help="a watch is ended by the API server after about this long and resumed",
    )
    c.add_argument(
        "--secret-refresh",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how often the non-TLS Secrets that Ingresses name (auth-secret, "
        "auth-tls-secret, proxy-ssl-secret) are read again",
    )
    s.add_argument(
        "--workers",
        type=_positive,
        default=default_count(),
        metavar="N",
        help="proxy processes, each with its own event loop, sharing the ports (SO_REUSEPORT); "
        "one more process reads the source. 1: a single process does everything "
        f"(default: the CPUs available, here {default_count()})",
    )
    admission_options(s)
    _common(s, "0.0.0.0", shutdown_delay=5.0)
    d = sub.add_parser(
        "demo",
        formatter_class=_Formatter,
        help="start demo upstreams and serve the bundled examples/",
        description="Start an echo upstream for every 127.0.0.1 endpoint of the example "
        "manifests and serve them, on 127.0.0.1.",
    )
    d.add_argument(
        "--manifests",
        type=Path,
        default=Path("examples"),
        metavar="DIR",
        help="folder of example manifests",
    )
    d.add_argument("--workers", type=_positive, default=1, metavar="N", help="proxy processes")
    _common(d, "127.0.0.1", shutdown_delay=0.0, access="plain")
    chk = sub.add_parser(
        "check",
        formatter_class=_Formatter,
        help="report, per Ingress, what ingressd would serve and what it cannot",
        description="Report, per Ingress, which class owns it, its routes and whether their "
        "Services resolve, its TLS Secrets, how each annotation is treated and every problem "
        "the routing table build finds. Reads a folder of manifests, or lists the cluster once "
        "(read-only). Exit code: 0 all clear; 1 an annotation is refused or invalid, or an "
        "Ingress has problems; 2 the input cannot be read.",
    )
    _sources(chk, "folder of Kubernetes YAML, as serve --manifests reads it")
    _class_options(chk)
    chk.add_argument(
        "--configmap",
        type=_ns_name,
        metavar="NS/NAME",
        help="check the controller ConfigMap serve would read: how each key is treated "
        "(default: none)",
    )
    for proto in ("tcp", "udp"):
        chk.add_argument(
            f"--{proto}-services-configmap",
            type=_ns_name,
            metavar="NS/NAME",
            help=f"check the {proto.upper()} services ConfigMap serve would read: each "
            "entry, its Service and ready endpoints (default: none)",
        )
    ports = chk.add_argument_group(
        "serve's ports",
        "the ports serve listens on itself: a TCP/UDP services entry that takes one is a problem",
    )
    for flag, default in (("--http-port", 8080), ("--https-port", 8443), ("--admin-port", 10254)):
        ports.add_argument(
            flag,
            type=_port,
            default=default,
            metavar="PORT",
            help=f"serve's {flag} (default: {default})",
        )
    chk.add_argument(
        "--enable-ssl-passthrough",
        action="store_true",
        help="check as serve --enable-ssl-passthrough would serve: the ssl-passthrough "
        "annotation applies, and what it makes inapplicable is listed (default: off)",
    )
    chk.add_argument(
        "--format", choices=["text", "json"], default="text", help="the report's format"
    )
    chk.add_argument(
        "--all",
        action="store_true",
        help="show every Ingress in detail, not only the ones ingressd would serve",
    )
    chk.set_defaults(log_level="warning")
    from .diff import command as diff

    dif = sub.add_parser(
        "diff", formatter_class=_Formatter, help=diff.HELP, description=diff.DESCRIPTION
    )
    diff.add_arguments(dif)
    _sources(dif, "folder of Kubernetes YAML, as serve --manifests reads it")
    _class_options(dif)
    dif.add_argument(
        "--configmap",
        type=_ns_name,
        metavar="NS/NAME",
        help="the controller ConfigMap serve reads (its keys shape the table) (default: none)",
    )
    add_export(sub, _Formatter, _sources, _class_options, _ns_name)
    return top


def _configmaps(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    names = []
    values = (args.tcp_services_configmap, args.udp_services_configmap)
    for value in (*values, getattr(args, "configmap", None)):
        if value:
            ns, _, name = value.partition("/")
            if (ns, name) not in names:
                names.append((ns, name))
    return tuple(names)


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
        configmaps=_configmaps(args) if hasattr(args, "tcp_services_configmap") else (),
        admission=admission_config(args),
    )


def build_options(args: argparse.Namespace) -> BuildOptions:
    configmap = None
    if getattr(args, "configmap", None):
        ns, _, name = args.configmap.partition("/")
        configmap = (ns, name)
    given: set[str] = getattr(args, "given_flags", set())
    return BuildOptions(
        controller_name=args.controller_name,
        ingress_class=args.ingress_class or DEFAULT_INGRESS_CLASS,
        default_backend_service=args.default_backend_service,
        custom_http_errors=args.custom_http_errors,
        configmap=configmap,
        explicit=tuple((key, flag) for key, flag in CONFIGMAP_FLAGS.items() if flag in given),
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
        build=build_options(args),
        # Only when named: the default class must exist, as in a cluster.
        imply_ingress_class=args.ingress_class is not None,
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
            body_temp_path=args.client_body_temp_path,
            body_temp_size=args.client_body_temp_size,
            max_connections=args.max_connections,
            access_log=args.access_log,
            http2=args.http2,
            http2_max_concurrent_streams=args.http2_max_concurrent_streams,
            http2_max_header_list_size=args.http2_max_header_list_size,
            http2_max_resets=args.http2_max_resets,
            http2_max_control_frames=args.http2_max_control_frames,
            client_send_timeout=args.client_send_timeout,
        ),
        default_certificate=args.default_certificate,
        workers=args.workers,
        shutdown_delay=args.shutdown_delay,
        shutdown_grace=args.shutdown_grace,
        log_format=args.log_format,
        limit_entries=args.limit_entries,
        use_proxy_protocol=args.use_proxy_protocol,
        streams=stream_config(args),
        ssl_passthrough=args.enable_ssl_passthrough,
    )


def stream_refs(args: argparse.Namespace) -> tuple[ConfigMapRef, ...]:
    refs = []
    for protocol, flag, value in (
        ("TCP", "--tcp-services-configmap", args.tcp_services_configmap),
        ("UDP", "--udp-services-configmap", args.udp_services_configmap),
    ):
        if value:
            refs.append(ConfigMapRef.parse(protocol, flag, value))
    return tuple(refs)


def stream_config(args: argparse.Namespace) -> StreamConfig:
    return StreamConfig(
        stream_refs(args),
        StreamSettings(
            connect_timeout=args.proxy_connect_timeout,
            idle_timeout=args.proxy_stream_timeout,
            udp_responses=args.proxy_stream_responses,
            udp_max_flows=args.max_udp_flows,
            max_sessions=args.max_stream_sessions,
            max_sessions_per_listener=args.max_stream_sessions_per_port,
        ),
    )


async def _demo(config: ServeConfig) -> None:
    from .demo import start_demo_upstreams

    assert config.manifests is not None  # demo always serves a folder
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


def _check_input(
    args: argparse.Namespace, options: BuildOptions
) -> tuple[Snapshot, tuple[Problem, ...], tuple[str, ...]]:
    """The objects to check, the loader's problems, and notes on how they were read."""
    if args.manifests is not None:
        from .sources.manifests import ImpliedClass, load_directory

        result = load_directory(args.manifests)
        snapshot = result.store.snapshot()
        notes: tuple[str, ...] = ()
        if args.ingress_class is not None:
            implied = ImpliedClass(options.ingress_class, options.controller_name)
            snapshot = implied.apply(snapshot)
            notes = (implied.note(args.manifests),) if implied.active else ()
        return snapshot, result.problems, notes
    # Imported only here: manifest mode must not pay for the client (see kube/config.py).
    from .kube.kubeclient import connect
    from .sources.kube import ListError, snapshot_once

    cluster = connect(args.kubeconfig, args.in_cluster)  # KubeConfigError: main() says it
    try:
        snapshot = snapshot_once(
            cluster, args.watch_namespace, _configmaps(args), options.configmap
        )
        return snapshot, (), ()
    except ListError as exc:
        raise _Unreadable(str(exc)) from None
    finally:
        cluster.close()


def _read_then_run(args: argparse.Namespace) -> int:
    """check, diff and export: the objects read once, as check reads them, then the
    command run on them."""
    options = build_options(args)
    try:
        snapshot, problems, notes = _check_input(args, options)
    except _Unreadable as exc:
        return _fail(args.command, str(exc), EXIT_USAGE)
    if args.command == "diff":
        from .diff.command import run_diff

        return run_diff(args, snapshot, options)
    if args.command == "export":
        return run_export(args, snapshot, problems, options)
    return _check(args, options, snapshot, problems, notes)


def _check(
    args: argparse.Namespace,
    options: BuildOptions,
    snapshot: Snapshot,
    problems: tuple[Problem, ...],
    notes: tuple[str, ...],
) -> int:
    report = check(
        snapshot,
        options,
        problems,
        notes=notes,
        passthrough=args.enable_ssl_passthrough,
        streams=stream_refs(args),
        # As serve refuses them (app.py): the controller's own ports.
        reserved={
            args.http_port: "--http-port",
            args.https_port: "--https-port",
            args.admin_port: "--admin-port",
        },
    )
    render = render_json if args.format == "json" else render_text
    sys.stdout.write(render(report, args.all))
    return report.exit_code


def _fail(command: str, message: str, code: int) -> int:
    """One line on stderr, and the exit code."""
    print(f"ingressd {command}: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.configure(args.log_level, getattr(args, "log_format", "text"))
    if args.manifests is not None and not args.manifests.is_dir():
        return _fail(args.command, f"{args.manifests} is not a folder", EXIT_USAGE)
    if args.manifests is not None and getattr(args, "admission_port", None):
        return _fail(args.command, "--admission-port needs cluster mode", EXIT_USAGE)
    try:
        if args.command in ("check", "diff", "export"):
            return _read_then_run(args)
        config = config_from(args)
        import uvloop

        coro = _demo(config) if args.command == "demo" else serve(config)
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(coro)
    except NoClusterError as exc:
        return _fail(args.command, f"{exc}; {NO_CLUSTER_HINT[args.command]}", EXIT_USAGE)
    except KubeConfigError as exc:
        return _fail(args.command, str(exc), EXIT_USAGE)
    except ListenError as exc:
        return _fail(args.command, str(exc), EXIT_FAILED)
    except OSError as exc:  # a demo upstream's port, say: the message names it
        return _fail(args.command, exc.strerror or str(exc), EXIT_FAILED)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
