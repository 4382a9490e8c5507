"""ingress-nginx's TCP and UDP services ConfigMaps, read into listen specs.

The format (``internal/ingress/controller/controller.go`` getStreamServices,
``docs/user-guide/exposing-tcp-udp-services.md``): each key is a port to
listen on, each value ``<namespace>/<service>:<port>[:PROXY][:PROXY]``, the
port a Service port's number or name. The first ``PROXY`` decodes the PROXY
protocol from clients, the second sends it to the upstream; both only for TCP,
as there. A bad entry is a problem of its own; the others serve. Ports the
controller itself listens on are refused, as ingress-nginx refuses its
reserved ports.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..model.backend import Backend
from ..model.objects import Snapshot
from ..model.problems import Problem
from ..routing.build import resolve_service

# A DNS-1123 label, as Kubernetes names namespaces and Services.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
# An IANA service name (a Service port's name).
_PORT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?\Z")


@dataclass(frozen=True, slots=True)
class StreamService:
    """One entry: listen on ``port`` (``protocol``), forward to a Service port."""

    protocol: str  # "TCP" or "UDP"
    port: int
    namespace: str
    service: str
    service_port: int | str
    decode_proxy: bool = False  # clients send a PROXY protocol header
    encode_proxy: bool = False  # send one to the upstream

    @property
    def label(self) -> str:
        """How metrics and logs name the listener: "tcp/9000"."""
        return f"{self.protocol.lower()}/{self.port}"

    @property
    def backend_name(self) -> str:
        return f"{self.namespace}/{self.service}:{self.service_port}"

    def resolve(self, snapshot: Snapshot) -> Backend:
        return resolve_service(snapshot, self.namespace, self.service, self.service_port)


@dataclass(frozen=True, slots=True)
class ConfigMapRef:
    """``--tcp-services-configmap NS/NAME`` or its UDP twin."""

    protocol: str
    namespace: str
    name: str
    flag: str

    @classmethod
    def parse(cls, protocol: str, flag: str, value: str) -> ConfigMapRef:
        namespace, sep, name = value.partition("/")
        if not sep or not _NAME.match(namespace) or not _NAME.match(name):
            raise ValueError(f"{flag}: {value!r} is not NAMESPACE/NAME")
        return cls(protocol, namespace, name, flag)

    def __str__(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name}"


def read_services(
    ref: ConfigMapRef, snapshot: Snapshot, reserved: Mapping[int, str]
) -> tuple[list[StreamService], list[Problem]]:
    """The ConfigMap's entries, and a problem for each one that cannot serve.

    ``reserved``: ports the controller listens on itself, with the option
    that chose each.
    """
    cm = snapshot.get("ConfigMap", ref.namespace, ref.name)
    if cm is None:
        return [], []  # as ingress-nginx: no ConfigMap, no stream services
    origin = snapshot.origin(cm)
    data = cm.get("data") or {}
    if not isinstance(data, dict):
        return [], [_problem(ref, origin, "data is not a map")]
    entries: list[StreamService] = []
    problems: list[Problem] = []
    for key in sorted(data, key=str):
        try:
            entries.append(parse_entry(ref.protocol, str(key), data[key], reserved))
        except ValueError as exc:
            problems.append(_problem(ref, origin, f"{ref.protocol} port {str(key)[:20]!r}: {exc}"))
    return entries, problems


def parse_entry(
    protocol: str, key: str, value: object, reserved: Mapping[int, str]
) -> StreamService:
    if not key.isascii() or not key.isdigit() or not 1 <= int(key) <= 65535:
        raise ValueError("not a port number (1-65535)")
    port = int(key)
    if port in reserved:
        raise ValueError(f"port {port} is the controller's own ({reserved[port]})")
    if not isinstance(value, str):
        raise ValueError("the value is not a string")
    parts = value.split(":")
    if len(parts) < 2 or len(parts) > 4:
        raise ValueError(f"{value[:100]!r} is not <namespace>/<service>:<port>[:PROXY][:PROXY]")
    namespace, sep, name = parts[0].partition("/")
    if not sep or not _NAME.match(namespace) or not _NAME.match(name):
        raise ValueError(f"{parts[0][:100]!r} is not <namespace>/<service>")
    svc_port: int | str
    if parts[1].isascii() and parts[1].isdigit():
        svc_port = int(parts[1])
        if not 1 <= svc_port <= 65535:
            raise ValueError(f"service port {svc_port} out of range")
    elif _PORT_NAME.match(parts[1]):
        svc_port = parts[1]
    else:
        raise ValueError(f"{parts[1][:40]!r} is not a port number or name")
    flags = [p.upper() for p in parts[2:]]
    for flag in flags:
        # ingress-nginx ignores anything else silently; a typo here would
        # leave the PROXY protocol off unseen, so it is reported.
        if flag not in ("PROXY", ""):
            raise ValueError(f"{flag[:20]!r} is not PROXY")
    decode = len(flags) >= 1 and flags[0] == "PROXY"
    encode = len(flags) == 2 and flags[1] == "PROXY"
    if protocol == "UDP" and (decode or encode):
        # ingress-nginx: "Proxy Protocol is only compatible with TCP Services".
        raise ValueError("the PROXY protocol applies to TCP services only")
    return StreamService(protocol, port, namespace, name, svc_port, decode, encode)


def _problem(ref: ConfigMapRef, origin: str, reason: str) -> Problem:
    return Problem(
        f"ConfigMap {ref.namespace}/{ref.name}",
        f"{ref.flag}: {reason}",
        origin,
        ("ConfigMap", ref.namespace, ref.name),
    )


def configmaps(refs: Iterable[ConfigMapRef]) -> set[tuple[str, str]]:
    return {(r.namespace, r.name) for r in refs}
