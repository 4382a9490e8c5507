"""``serve``'s admission webhook options (docs/admission.md): parsed here, run by
``control/admission_server.py`` in cluster mode."""

from __future__ import annotations

import argparse

from .control.admission import DEFAULT_DENY, KIND_HELP, KINDS, parse_deny
from .kube.config import ADMISSION_NAME, AdmissionConfig

_DEFAULTS = AdmissionConfig(port=0)


def _port(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (1-65535)")
    return int(value)


def _deny(value: str) -> frozenset[str]:
    try:
        return parse_deny(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} must be a positive number")
    return number


def _name(value: str) -> str:
    # A DNS-1123 label: what a Service and a Secret name may be.
    if not value or len(value) > 63 or not all(c.isalnum() or c == "-" for c in value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a Kubernetes object name")
    if value != value.lower() or value[0] == "-" or value[-1] == "-":
        raise argparse.ArgumentTypeError(f"{value!r} is not a Kubernetes object name")
    return value


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "admission webhook (cluster mode)",
        "a validating webhook for Ingresses on its own TLS port (as ingress-nginx's "
        "--validating-webhook); its certificate is made and rotated by ingressd in a Secret "
        "(docs/admission.md)",
    )
    g.add_argument(
        "--admission-port",
        type=_port,
        metavar="PORT",
        help="serve AdmissionReviews for Ingresses on this HTTPS port (default: off)",
    )
    g.add_argument(
        "--admission-address",
        metavar="ADDR",
        help="address of the webhook's port (default: --address)",
    )
    g.add_argument(
        "--admission-deny",
        type=_deny,
        default=DEFAULT_DENY,
        metavar="KINDS",
        help="what denies an Ingress, comma-separated (none: nothing); the other kinds "
        "come back as warnings. "
        + "; ".join(f"{k}: {KIND_HELP[k]}" for k in KINDS)
        + f" (default: {','.join(k for k in KINDS if k in DEFAULT_DENY)})",
    )
    g.add_argument(
        "--admission-timeout",
        type=_positive,
        default=_DEFAULTS.budget,
        metavar="SECONDS",
        help="a review not done by then is allowed with a warning; keep it under the "
        "webhook's timeoutSeconds",
    )
    for flag, what in (
        (
            "service",
            "Service the API server calls the webhook through (the certificate "
            "names SERVICE.POD_NAMESPACE.svc)",
        ),
        ("secret", "Secret, in POD_NAMESPACE, holding the webhook's CA and certificate"),
        ("webhook", "ValidatingWebhookConfiguration whose caBundle the leader sets"),
    ):
        g.add_argument(
            f"--admission-{flag}",
            type=_name,
            default=ADMISSION_NAME,
            metavar="NAME",
            help=what,
        )
    g.add_argument(
        "--admission-cert-days",
        type=_positive,
        default=_DEFAULTS.cert_days,
        metavar="DAYS",
        help="lifetime of the webhook's CA and certificate; renewed with a third of it left",
    )
    g.add_argument(
        "--admission-cert-refresh",
        type=_positive,
        default=_DEFAULTS.cert_refresh,
        metavar="SECONDS",
        help="how often the Secret is read (and, by the leader, checked)",
    )


def admission_config(args: argparse.Namespace) -> AdmissionConfig | None:
    port = getattr(args, "admission_port", None)
    if port is None:
        return None
    return AdmissionConfig(
        port=port,
        address=args.admission_address or args.address,
        service=args.admission_service,
        secret=args.admission_secret,
        webhook=args.admission_webhook,
        deny=args.admission_deny,
        budget=args.admission_timeout,
        cert_days=args.admission_cert_days,
        cert_refresh=args.admission_cert_refresh,
    )
