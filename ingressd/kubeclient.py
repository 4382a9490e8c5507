"""Talking to the API server: configuration, the client, error text."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .config import KubeConfigError

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
CONNECT_TIMEOUT = 10.0
# (connect, read) for every call that is not a watch
REQUEST_TIMEOUT = (CONNECT_TIMEOUT, 20.0)


@dataclass(frozen=True, slots=True)
class Cluster:
    """A configured API client and the namespace the controller lives in."""

    api: client.ApiClient
    namespace: str  # for the Lease and as the default for --publish-service

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.api.close()


def connect(kubeconfig: Path | None = None, in_cluster: bool = False) -> Cluster:
    """Configure the client as kubectl would: explicit file, KUBECONFIG, ~/.kube, in-cluster."""
    conf = client.Configuration()
    namespace = "default"
    # Read at call time: the client's own default is fixed when it is imported.
    path = str(kubeconfig) if kubeconfig else os.environ.get("KUBECONFIG") or ""
    default_file = Path("~/.kube/config").expanduser()
    try:
        if in_cluster or (
            not path and not default_file.exists() and os.environ.get("KUBERNETES_SERVICE_HOST")
        ):
            config.load_incluster_config(client_configuration=conf)
            with contextlib.suppress(OSError):
                namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or namespace
        else:
            path = path or str(default_file)
            config.load_kube_config(config_file=path, client_configuration=conf)
            _, active = config.list_kube_config_contexts(config_file=path)
            namespace = (active or {}).get("context", {}).get("namespace") or namespace
    except (config.ConfigException, OSError) as exc:
        raise KubeConfigError(f"no usable Kubernetes configuration: {exc}") from None
    # The client's own urllib3 retries would hide outages from our backoff.
    conf.retries = False
    namespace = os.environ.get("POD_NAMESPACE") or namespace
    return Cluster(client.ApiClient(conf), namespace)


def brief(exc: BaseException) -> str:
    """One line for a log: the HTTP status, or the exception without its traceback."""
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    text = str(exc)
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
