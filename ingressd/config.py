"""What ``ingressd serve`` runs with: plain values, no I/O.

Kept apart from the modules that use them so the command line and manifest
mode do not import the Kubernetes client (about 1.5 s and 50 MiB) unless the
cluster is the source. Cluster mode's own settings are ``kube/config.py``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .kube.config import ClusterConfig
from .policy.limits import DEFAULT_ENTRIES
from .proxy.settings import ProxySettings
from .routing.build import BuildOptions
from .stream.manager import StreamConfig


@dataclass(frozen=True, slots=True)
class ServeConfig:
    # Exactly one source: a folder of manifests, or the cluster.
    manifests: Path | None = None
    cluster: ClusterConfig | None = None
    address: str = "0.0.0.0"
    http_port: int = 8080
    https_port: int = 8443
    admin_port: int = 10254
    build: BuildOptions = field(default_factory=BuildOptions)
    # Manifest mode, --ingress-class given: an IngressClass of that name that the
    # folder does not hold is taken as ours (sources/manifests.py ImpliedClass).
    imply_ingress_class: bool = False
    proxy: ProxySettings = field(default_factory=ProxySettings)
    default_certificate: str | None = None
    # SIGTERM: seconds of accepting while unready, then of draining what is open.
    shutdown_delay: float = 0.0
    shutdown_grace: float = 10.0
    # Proxy processes; 1 = this process proxies too (no worker processes).
    workers: int = 1
    # The process log's format, "text" or "json" (observe/logs.py); workers set theirs up from it.
    log_format: str = "text"
    # Clients the limit-* counters remember, over all Ingresses (policy/limits.py); shared by
    # the workers.
    limit_entries: int = DEFAULT_ENTRIES
    # The HTTP and HTTPS ports read a PROXY protocol header (v1 or v2) first, whose
    # client address is then the client's (--use-proxy-protocol).
    use_proxy_protocol: bool = False
    # The TCP and UDP services ConfigMaps (--tcp-services-configmap, --udp-services-configmap).
    streams: StreamConfig = field(default_factory=StreamConfig)
    # TLS connections whose SNI names an ssl-passthrough Ingress host are spliced to
    # its backend, not terminated (--enable-ssl-passthrough).
    ssl_passthrough: bool = False
