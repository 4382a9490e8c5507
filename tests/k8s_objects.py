"""Builders for the JSON-shaped Kubernetes objects ingressd reads.

Each function returns a plain dict shaped like the API server's JSON, with only
the fields ingressd looks at. Keyword arguments default to the common case (our
IngressClass, namespace "default", a ready endpoint) so a test spells out only
what it is about::

    table = build(
        ingress("web", rules=[rule("a.example", path("/", "web"))]),
        service("web"),
        endpoint_slice("web", ["10.0.0.1"]),
    )
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ingressd.model.objects import SERVICE_NAME_LABEL, Obj, ObjectStore, Snapshot
from ingressd.model.table import RouteTable
from ingressd.policy.tls import TLS_SECRET_TYPE, self_signed
from ingressd.routing.build import (
    DEFAULT_CLASS_ANNOTATION,
    DEFAULT_CONTROLLER,
    LEGACY_CLASS_ANNOTATION,
    BuildOptions,
    build_table,
)
from ingressd.routing.decide import RequestHead

__all__ = [
    "DEFAULT_CLASS_ANNOTATION",
    "LEGACY_CLASS_ANNOTATION",
    "backend",
    "build",
    "certificate",
    "endpoint_slice",
    "ingress",
    "ingress_class",
    "path",
    "request",
    "rule",
    "service",
    "snapshot",
    "timestamp",
    "tls_entry",
    "tls_secret",
]

OUR_CLASS = "ingressd"
_EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

PortRef = int | str


def _meta(name: str, namespace: str | None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta.update({k: v for k, v in extra.items() if v is not None})
    return meta


def timestamp(seconds: int) -> str:
    """An RFC 3339 creationTimestamp ``seconds`` after a fixed epoch."""
    return (_EPOCH + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- IngressClass ------------------------------------------------------------------


def ingress_class(
    name: str = OUR_CLASS, controller: str = DEFAULT_CONTROLLER, *, default: bool = False
) -> Obj:
    annotations = {DEFAULT_CLASS_ANNOTATION: "true"} if default else None
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": _meta(name, None, annotations=annotations),
        "spec": {"controller": controller},
    }


# -- Ingress -----------------------------------------------------------------------


def backend(service: str, port: PortRef = 80) -> dict[str, Any]:
    """An IngressServiceBackend: ``port`` int -> by number, str -> by name."""
    ref = {"number": port} if isinstance(port, int) else {"name": port}
    return {"service": {"name": service, "port": ref}}


def path(
    value: str | None,
    service: str = "web",
    port: PortRef = 80,
    path_type: str | None = "Prefix",
    *,
    raw_backend: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One HTTPIngressPath; ``None`` for ``value`` or ``path_type`` omits the field."""
    p: dict[str, Any] = {
        "backend": dict(raw_backend) if raw_backend is not None else backend(service, port)
    }
    if value is not None:
        p["path"] = value
    if path_type is not None:
        p["pathType"] = path_type
    return p


def rule(host: str | None, *paths: Mapping[str, Any]) -> dict[str, Any]:
    """An IngressRule; ``host=None`` gives a rule that matches every host."""
    r: dict[str, Any] = {}
    if host is not None:
        r["host"] = host
    if paths:
        r["http"] = {"paths": [dict(p) for p in paths]}
    return r


def tls_entry(hosts: Sequence[str] | None, secret: str | None) -> dict[str, Any]:
    t: dict[str, Any] = {}
    if hosts is not None:
        t["hosts"] = list(hosts)
    if secret is not None:
        t["secretName"] = secret
    return t


def ingress(
    name: str,
    rules: Iterable[Mapping[str, Any]] = (),
    *,
    annotations: Mapping[str, str] | None = None,
    tls: Iterable[Mapping[str, Any]] | None = None,
    default_backend: Mapping[str, Any] | None = None,
    namespace: str = "default",
    created: int | str | None = None,
    class_name: str | None = OUR_CLASS,
) -> Obj:
    """An Ingress. ``created`` is a creationTimestamp, or seconds after a fixed epoch."""
    if isinstance(created, int):
        created = timestamp(created)
    spec: dict[str, Any] = {}
    if class_name is not None:
        spec["ingressClassName"] = class_name
    if default_backend is not None:
        spec["defaultBackend"] = dict(default_backend)
    rules = [dict(r) for r in rules]
    if rules:
        spec["rules"] = rules
    if tls is not None:
        spec["tls"] = [dict(t) for t in tls]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": _meta(
            name,
            namespace,
            annotations=dict(annotations) if annotations is not None else None,
            creationTimestamp=created,
        ),
        "spec": spec,
    }


# -- Service and EndpointSlice -------------------------------------------------------


def service(
    name: str,
    ports: Iterable[int | tuple[str, int] | Mapping[str, Any]] = (80,),
    *,
    namespace: str = "default",
    external_name: str | None = None,
) -> Obj:
    """A Service. Ports: ``80``, ``("http", 80)`` or a full ServicePort dict."""
    spec_ports = []
    for p in ports:
        if isinstance(p, int):
            spec_ports.append({"port": p})
        elif isinstance(p, tuple):
            spec_ports.append({"name": p[0], "port": p[1]})
        else:
            spec_ports.append(dict(p))
    spec: dict[str, Any] = {"ports": spec_ports}
    if external_name is not None:
        spec["type"] = "ExternalName"
        spec["externalName"] = external_name
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, namespace), "spec": spec}


def endpoint_slice(
    service: str,
    addresses: Iterable[str | tuple[str, bool | None]],
    port: int = 8080,
    *,
    port_name: str | None = None,
    namespace: str = "default",
    name: str | None = None,
) -> Obj:
    """An EndpointSlice of ``service`` with one port.

    Each address is ``"10.0.0.1"`` (ready) or ``("10.0.0.1", ready)`` where
    ``ready`` is True, False, or None to leave the condition out.
    """
    endpoints = []
    for a in addresses:
        address, ready = (a, True) if isinstance(a, str) else a
        ep: dict[str, Any] = {"addresses": [address]}
        if ready is not None:
            ep["conditions"] = {"ready": ready}
        endpoints.append(ep)
    ep_port: dict[str, Any] = {"port": port, "protocol": "TCP"}
    if port_name is not None:
        ep_port["name"] = port_name
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": _meta(
            name or f"{service}-{port_name or 'x'}{port}",
            namespace,
            labels={SERVICE_NAME_LABEL: service},
        ),
        "addressType": "IPv4",
        "ports": [ep_port],
        "endpoints": endpoints,
    }


# -- TLS Secrets -----------------------------------------------------------------------


@functools.cache
def certificate(*dns_names: str, days: int = 365) -> tuple[bytes, bytes]:
    """A self-signed (cert PEM, key PEM) for ``dns_names``; cached per argument list."""
    return self_signed(common_name=dns_names[0], dns_names=dns_names, days=days)


def tls_secret(
    name: str,
    hosts: Sequence[str] = ("a.example.com",),
    *,
    namespace: str = "default",
    pem: tuple[bytes, bytes] | None = None,
    string_data: bool = False,
    secret_type: str = TLS_SECRET_TYPE,
) -> Obj:
    """A TLS Secret holding a self-signed certificate for ``hosts`` (or ``pem``)."""
    cert_pem, key_pem = pem if pem is not None else certificate(*hosts)
    secret: Obj = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(name, namespace),
        "type": secret_type,
    }
    if string_data:
        secret["stringData"] = {"tls.crt": cert_pem.decode(), "tls.key": key_pem.decode()}
    else:
        secret["data"] = {
            "tls.crt": base64.b64encode(cert_pem).decode(),
            "tls.key": base64.b64encode(key_pem).decode(),
        }
    return secret


# -- building --------------------------------------------------------------------------


def snapshot(*objs: Obj) -> Snapshot:
    """A snapshot holding ``objs``, inserted in the order given."""
    store = ObjectStore()
    for obj in objs:
        store.put(obj)
    return store.snapshot()


def build(
    *objs: Obj,
    with_class: bool = True,
    options: BuildOptions | None = None,
    now: float | None = None,
) -> RouteTable:
    """Build a table from ``objs``, plus our IngressClass unless ``with_class=False``."""
    if with_class:
        objs = (ingress_class(), *objs)
    return build_table(snapshot(*objs), options or BuildOptions(), now=now)


def annotated_table(*objs: Obj, **annotations: str) -> RouteTable:
    """A table of Ingress ``web`` (a.example, ``/`` -> Service web, one endpoint)
    with ``annotations`` (``auth_type="basic"`` for ``nginx.ingress.kubernetes.io/auth-type``)."""
    prefix = "nginx.ingress.kubernetes.io/"
    return build(
        ingress(
            "web",
            [rule("a.example", path("/", "web"))],
            annotations={prefix + k.replace("_", "-"): v for k, v in annotations.items()},
        ),
        service("web"),
        endpoint_slice("web", ["10.0.0.1"]),
        *objs,
    )


def request(
    host: str, path: str = "/", query: str = "", *, tls: bool = False, method: str = "GET"
) -> RequestHead:
    return RequestHead(
        method=method, host=host, path=path, query=query, client_ip="192.0.2.1", tls=tls
    )
