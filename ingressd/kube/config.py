"""What cluster mode runs with, and what is wrong when it cannot: plain values, no I/O.

Kept apart from the client (``kubeclient.py``) so that the command line, manifest
mode and the worker processes, which are handed the whole configuration, do not
import the Kubernetes client (about 1.5 s and 50 MiB) unless the cluster is the
source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Watches end on the server after this long (jittered) and are resumed, like
# client-go's reflector, so no single stream lives forever behind a proxy.
WATCH_SECONDS = 300


class KubeConfigError(Exception):
    """No usable kubeconfig or in-cluster configuration; the message is one line
    naming the file (or the service account) and what is wrong with it."""


class NoClusterError(KubeConfigError):
    """Nothing says where a cluster is: no flag, no KUBECONFIG, no ~/.kube/config, not a Pod."""


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    kubeconfig: Path | None = None
    in_cluster: bool = False
    watch_namespace: str | None = None
    publish_service: str | None = None  # "namespace/name"
    publish_status_address: tuple[str, ...] = ()
    election_id: str = "ingressd-leader"
    identity: str | None = None
    # client-go's defaults
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    watch_seconds: int = WATCH_SECONDS
    # Secrets that Ingresses name but the TLS watch does not hold are re-read this often.
    secret_refresh: float = 30.0
    # (namespace, name) of the TCP/UDP services ConfigMaps: watched one by one
    # (a field selector on the name), so RBAC can grant exactly them.
    configmaps: tuple[tuple[str, str], ...] = ()
    # --admission-port: the validating admission webhook (None: off)
    admission: AdmissionConfig | None = None


# The admission webhook's defaults (control/admission_server.py, docs/admission.md).
ADMISSION_NAME = "ingressd-admission"


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    """``serve --admission-port``: the validating admission webhook (cluster mode only)."""

    port: int
    address: str = "0.0.0.0"
    # The Service the API server calls the webhook through, in POD_NAMESPACE: the
    # serving certificate names SERVICE.NAMESPACE.svc.
    service: str = ADMISSION_NAME
    # The Secret holding the CA and the serving certificate, in POD_NAMESPACE.
    secret: str = ADMISSION_NAME
    # The ValidatingWebhookConfiguration whose caBundle the leader sets.
    webhook: str = ADMISSION_NAME
    # Kinds of findings that deny (control/admission.py KINDS); the others warn.
    deny: frozenset[str] = frozenset({"refused", "invalid", "regex", "conflict"})
    # Seconds one review may take before it is answered "allowed" with a warning:
    # under the webhook's timeoutSeconds (2 s in deploy/admission.yaml).
    budget: float = 1.5
    # Reviews being worked on at once; more wait (within their budget) for a turn.
    concurrency: int = 2
    # The largest request body read (HTTP 413 beyond).
    max_body: int = 4 * 1024 * 1024
    # Lifetime of the CA and serving certificate; renewed with a third of it left.
    cert_days: float = 365.0
    # How often every replica reads the Secret (and the leader checks it).
    cert_refresh: float = 30.0
