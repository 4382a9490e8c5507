"""Talking to the API server: configuration, the client, error text.

The configuration is found as kubectl finds it (``--kubeconfig``, else
``KUBECONFIG``, else ``~/.kube/config``, else the Pod's service account) and
checked here before the client reads it, so that what is wrong comes out as
one line naming the file: missing, unreadable, not YAML, not a kubeconfig, no
current context, a context naming a cluster that is not there. The file is
the user's own, but it is parsed within the same bounds as a manifest.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.exceptions import SSLError as URLLibSSLError

from . import yamlsafe
from .config import KubeConfigError, NoClusterError

# Plain safe YAML, as the client reads it; libyaml's parser when PyYAML has it.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
SERVICE_ACCOUNT_NAMESPACE = SERVICE_ACCOUNT / "namespace"
SERVICE_ACCOUNT_TOKEN = SERVICE_ACCOUNT / "token"
CONNECT_TIMEOUT = 10.0
# (connect, read) for every call that is not a watch
REQUEST_TIMEOUT = (CONNECT_TIMEOUT, 20.0)
# A kubeconfig with embedded certificates is a few KiB; a large merged one, some hundreds.
MAX_KUBECONFIG_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Cluster:
    """A configured API client and the namespace the controller lives in."""

    api: client.ApiClient
    namespace: str  # for the Lease and as the default for --publish-service
    # Where the configuration came from, for messages: "kubeconfig PATH (context C)".
    origin: str = ""

    @property
    def server(self) -> str:
        return str(self.api.configuration.host)

    def describe(self) -> str:
        """ "the API server https://… (kubeconfig PATH, context C)" """
        return f"the API server {self.server}" + (f" ({self.origin})" if self.origin else "")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.api.close()


def connect(kubeconfig: Path | None = None, in_cluster: bool = False) -> Cluster:
    """Configure the client as kubectl would: explicit file, KUBECONFIG, ~/.kube, in-cluster."""
    conf = client.Configuration()
    default_file = Path("~/.kube/config").expanduser()
    # Read at call time: the client's own default is fixed when it is imported.
    env = os.environ.get("KUBECONFIG") or ""
    if in_cluster:
        namespace, origin = _in_cluster(conf, "--in-cluster")
    elif kubeconfig is not None:
        namespace, origin = _from_files([kubeconfig], conf)
    elif env:
        paths = [Path(p).expanduser() for p in env.split(os.pathsep) if p]
        present = [p for p in paths if p.exists()]
        if not present:
            # kubectl skips missing files in KUBECONFIG, but none at all is a mistake.
            raise KubeConfigError(
                f"kubeconfig {env} (KUBECONFIG): no such file" + ("s" if len(paths) > 1 else "")
            )
        namespace, origin = _from_files(present, conf)
    elif default_file.exists():
        namespace, origin = _from_files([default_file], conf)
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        namespace, origin = _in_cluster(conf, "in-cluster")
    else:
        raise NoClusterError(
            f"no Kubernetes cluster configured: no --kubeconfig, KUBECONFIG is not set, "
            f"{default_file} does not exist, and this is not a Pod (KUBERNETES_SERVICE_HOST "
            "is not set)"
        )
    # The client's own urllib3 retries would hide outages from our backoff.
    conf.retries = False
    namespace = os.environ.get("POD_NAMESPACE") or namespace
    return Cluster(client.ApiClient(conf), namespace, origin)


def _in_cluster(conf: client.Configuration, how: str) -> tuple[str, str]:
    if not os.environ.get("KUBERNETES_SERVICE_HOST") or not os.environ.get(
        "KUBERNETES_SERVICE_PORT"
    ):
        raise KubeConfigError(
            f"{how}: not running in a Pod (KUBERNETES_SERVICE_HOST and "
            "KUBERNETES_SERVICE_PORT are not set)"
        )
    try:
        config.load_incluster_config(client_configuration=conf)
    except config.ConfigException as exc:
        # "Service token file does not exist." and the like: name the file.
        raise KubeConfigError(
            f"{how}: the service account in {SERVICE_ACCOUNT} is not usable: {exc}"
        ) from None
    namespace = "default"
    with contextlib.suppress(OSError):
        namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or namespace
    return namespace, "in-cluster service account"


def _from_files(paths: list[Path], conf: client.Configuration) -> tuple[str, str]:
    """Check the kubeconfig files, merge them as kubectl does, configure ``conf``."""
    docs = [(path, _read_kubeconfig(path)) for path in paths]
    # kubectl: the first file that sets current-context decides it; for clusters,
    # users and contexts, the first file that defines a name wins.
    current = next((d.get("current-context") for _, d in docs if d.get("current-context")), None)
    named = " and ".join(str(p) for p in paths)
    where = f"kubeconfig {named}"
    if not current:
        raise KubeConfigError(f"{where}: no current-context is set (kubectl config use-context)")
    contexts = _by_name(docs, "contexts")
    context = contexts.get(current)
    if context is None:
        raise KubeConfigError(f"{where}: current-context {current!r} is not among its contexts")
    cluster_name = context.get("cluster")
    clusters = _by_name(docs, "clusters")
    if not cluster_name or cluster_name not in clusters:
        raise KubeConfigError(
            f"{where}: context {current!r} names cluster {cluster_name!r}, which is not defined"
        )
    server = clusters[cluster_name].get("server")
    if not isinstance(server, str) or not server:
        raise KubeConfigError(f"{where}: cluster {cluster_name!r} has no server")
    user = context.get("user")
    if user and user not in _by_name(docs, "users"):
        raise KubeConfigError(
            f"{where}: context {current!r} names user {user!r}, which is not defined"
        )
    try:
        # The context is passed: the client lets the last file's current-context win.
        # persist_config=False: never write to the user's file (token refreshes).
        config.load_kube_config(
            config_file=os.pathsep.join(str(p) for p in paths),
            context=current,
            client_configuration=conf,
            persist_config=False,
        )
    except Exception as exc:  # the client raises whatever its parsing met
        raise KubeConfigError(f"{where}: {_client_message(exc)}") from None
    namespace = context.get("namespace")
    origin = f"{where}, context {current}"
    return (namespace if isinstance(namespace, str) and namespace else "default"), origin


def _read_kubeconfig(path: Path) -> dict[str, Any]:
    where = f"kubeconfig {path}"
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_KUBECONFIG_BYTES + 1)
    except FileNotFoundError:
        raise KubeConfigError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise KubeConfigError(f"{where}: is a directory, not a file") from None
    except OSError as exc:
        raise KubeConfigError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    if len(raw) > MAX_KUBECONFIG_BYTES:
        raise KubeConfigError(f"{where}: larger than {MAX_KUBECONFIG_BYTES // 1024 // 1024} MiB")
    try:
        text = raw.decode("utf-8-sig")
        docs = list(yamlsafe.load_all(text, _Loader))
    except UnicodeDecodeError as exc:
        raise KubeConfigError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise KubeConfigError(f"{where}: not YAML: {_yaml_problem(exc)}") from None
    docs = [d for d in docs if d is not None]
    if not docs:
        raise KubeConfigError(f"{where}: is empty")
    doc = docs[0]
    if len(docs) > 1 or not isinstance(doc, dict):
        what = f"{len(docs)} YAML documents" if len(docs) > 1 else f"a YAML {_kind(doc)}"
        raise KubeConfigError(
            f"{where}: not a kubeconfig ({what}, not one mapping with clusters, contexts and users)"
        )
    kind = doc.get("kind")
    if kind is not None and kind != "Config":
        raise KubeConfigError(f"{where}: not a kubeconfig (kind {kind!r}, not Config)")
    if not any(k in doc for k in ("clusters", "contexts", "users", "current-context")):
        raise KubeConfigError(
            f"{where}: not a kubeconfig (none of clusters, contexts, users, current-context)"
        )
    for section in ("clusters", "contexts", "users"):
        entries = doc.get(section)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise KubeConfigError(f"{where}: {section} is not a list")
        for i, entry in enumerate(entries):
            inner = section[:-1]  # "cluster", "context", "user"
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("name"), str)
                or not isinstance(entry.get(inner), dict | None)
            ):
                raise KubeConfigError(
                    f"{where}: {section}[{i}] is not a mapping with a name and a {inner}"
                )
    current = doc.get("current-context")
    if current is not None and not isinstance(current, str):
        raise KubeConfigError(f"{where}: current-context is not a string")
    return doc


def _kind(value: Any) -> str:
    names: dict[type, str] = {list: "list", str: "string"}
    return names.get(type(value), type(value).__name__)


def _by_name(docs: list[tuple[Path, dict[str, Any]]], section: str) -> dict[str, dict[str, Any]]:
    inner = section[:-1]
    found: dict[str, dict[str, Any]] = {}
    for _, doc in docs:
        for entry in doc.get(section) or ():
            found.setdefault(entry["name"], entry.get(inner) or {})
    return found


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem or 'invalid YAML'}"
    return str(exc)


def _client_message(exc: BaseException) -> str:
    text = str(exc).removeprefix("Invalid kube-config file. ")
    return text or type(exc).__name__


def brief(exc: BaseException) -> str:
    """One line for a log: the HTTP status, the address that did not answer, or the
    exception without its traceback."""
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    reason = getattr(exc, "reason", None)  # urllib3 wraps the cause in MaxRetryError
    if isinstance(reason, BaseException) and not isinstance(exc, ApiException):
        exc = reason
    conn = getattr(exc, "conn", None)
    where = f"{conn.host}:{conn.port}" if conn is not None else "the API server"
    if isinstance(exc, ConnectTimeoutError):
        return f"cannot connect to {where}: timed out"
    if isinstance(exc, NewConnectionError):
        text = str(exc).rpartition("Failed to establish a new connection: ")[2]
        return f"cannot connect to {where}: {text}"
    if isinstance(exc, URLLibSSLError):
        return f"TLS with {where} failed: {str(exc)[:200]}"
    text = str(exc)
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
