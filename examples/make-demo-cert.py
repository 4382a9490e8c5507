#!/usr/bin/env python3
"""Regenerate examples/tls-secret.yaml: a self-signed demo certificate.

    .venv/bin/python examples/make-demo-cert.py    # with ingressd installed (README)

The certificate is for ``demo.test`` and ``*.demo.test`` (EC P-256, valid from
yesterday for 100 years). Its private key ends up in the repository, so it is
public demo material: never use it, or this script's output, in production.
"""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

from ingressd.policy.tls import self_signed

NAMES = ("demo.test", "*.demo.test")
OUT = Path(__file__).resolve().parent / "tls-secret.yaml"

HEADER = """\
# TLS certificate for the demo: it names demo.test and *.demo.test, so it covers
# demo.test and any one-label name under it (secure.demo.test, blog.demo.test),
# but not x.apps.demo.test: a wildcard stands for exactly one label.
#
# A Secret of type kubernetes.io/tls holds the PEM certificate (tls.crt) and its
# private key (tls.key), base64-encoded under data:. Ingresses name it in
# spec.tls[].secretName; it must live in the Ingress's namespace.
#
# THIS KEY IS PUBLIC DEMO MATERIAL: it is committed to the repository, so anyone
# can impersonate these hosts with it. Never use it for anything real.
# Self-signed, EC P-256, valid for 100 years; regenerate with
#     python examples/make-demo-cert.py
"""


def make_certificate() -> tuple[bytes, bytes]:
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=1)
    return self_signed(
        NAMES[0],
        NAMES,
        days=100 * 365 + 25,
        organization="ingressd demo (public key material)",
        not_before=start,
    )


def render(cert_pem: bytes, key_pem: bytes) -> str:
    crt = base64.b64encode(cert_pem).decode()
    key = base64.b64encode(key_pem).decode()
    return (
        HEADER
        + "apiVersion: v1\n"
        + "kind: Secret\n"
        + "metadata:\n"
        + "  name: demo-tls\n"
        + "  namespace: demo\n"
        + "type: kubernetes.io/tls\n"
        + "data:\n"
        + f"  tls.crt: {crt}\n"
        + f"  tls.key: {key}\n"
    )


def main() -> None:
    OUT.write_text(render(*make_certificate()))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
