"""What the leader writes back to the cluster: Ingress status and Warning Events.

Both are computed from the same snapshot and table the proxy serves, and both
are written only when they would change something: status when the published
addresses differ from what the Ingress already says, an Event once per
problem while the problem lasts (not on every rebuild).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ..model.objects import Obj, Snapshot
from ..model.problems import Problem
from ..model.table import RouteTable
from .kubeclient import REQUEST_TIMEOUT, brief

log = logging.getLogger("ingressd.status")

Address = dict[str, str]  # {"ip": ...} or {"hostname": ...}

# Problem text -> Event reason, first match wins; the message carries the detail.
_REASONS: tuple[tuple[str, str], ...] = (
    ("cannot listen on", "PortUnavailable"),  # a TCP/UDP services port (stream/manager.py)
    ("regular expression", "InvalidRegex"),
    ("service ", "BackendUnavailable"),
    ("already served by", "PathConflict"),
    ("is listed twice", "PathConflict"),
    ("TLS", "InvalidTLS"),
    ("certificate", "InvalidTLS"),
    ("annotation", "InvalidAnnotation"),
    ("IngressClass", "UnknownIngressClass"),
)


def event_reason(problem: Problem) -> str:
    # Annotation problems name their annotation first; their text may well mention a
    # service or certificates ("the authentication service", "client certificates").
    if problem.reason.startswith("annotation "):
        return "InvalidAnnotation"
    for text, reason in _REASONS:
        if text in problem.reason:
            return reason
    return "Rejected"


def address(value: str) -> Address:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return {"hostname": value}
    return {"ip": value}


def service_addresses(service: Obj) -> list[Address]:
    """Where a Service is reached from outside: its load balancer, else its IPs."""
    spec = service.get("spec") or {}
    lb = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    found = [
        {k: entry[k] for k in ("ip", "hostname") if entry.get(k)}
        for entry in lb
        if isinstance(entry, dict)
    ]
    found = [a for a in found if a]
    if not found:
        ips = spec.get("clusterIPs") or [spec.get("clusterIP")]
        found = [{"ip": ip} for ip in ips if ip and ip != "None"]
    found += [{"ip": ip} for ip in spec.get("externalIPs") or []]
    return normalized(found)


def normalized(addresses: Iterable[Any]) -> list[Address]:
    """Comparable form of status.loadBalancer.ingress: only ip/hostname, sorted, unique."""
    seen = {(a.get("ip") or "", a.get("hostname") or "") for a in addresses if isinstance(a, dict)}
    return [
        {k: v for k, v in (("ip", ip), ("hostname", host)) if v}
        for ip, host in sorted(seen, key=lambda a: (not a[0], a))  # IPs first
        if ip or host
    ]


def current_addresses(ingress: Obj) -> list[Address]:
    lb = ((ingress.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return normalized(lb)


class Writeback:
    """Leader-only writes, run in ``executor`` so the loop never waits on the API."""

    def __init__(
        self,
        api: client.ApiClient,
        executor: Executor,
        identity: str,
        controller_name: str,
        publish_service: tuple[str, str] | None = None,
        publish_addresses: Sequence[str] = (),
    ) -> None:
        self.networking = client.NetworkingV1Api(api)
        self.core = client.CoreV1Api(api)
        self.executor = executor
        self.identity = identity
        self.controller_name = controller_name
        self.publish_service = publish_service
        self.publish_addresses = normalized(address(a) for a in publish_addresses)
        # (ingress uid, problem text) already reported by this process as leader
        self._reported: set[tuple[str, str]] = set()

    @property
    def publishes_status(self) -> bool:
        return self.publish_service is not None or bool(self.publish_addresses)

    async def sync(
        self, snapshot: Snapshot, table: RouteTable, problems: Iterable[Problem]
    ) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self._sync, snapshot, table, tuple(problems))

    def forget(self) -> None:
        """After losing leadership: a later term reports current problems afresh."""
        self._reported.clear()

    # -- blocking, in the executor -------------------------------------------------------

    def _sync(self, snapshot: Snapshot, table: RouteTable, problems: tuple[Problem, ...]) -> None:
        if self.publishes_status:
            try:
                desired = self._desired()
            except Exception as exc:
                log.warning("cannot read --publish-service: %s; status not updated", brief(exc))
            else:
                self._update_status(snapshot, table, desired)
        self._report(snapshot, problems)

    def _desired(self) -> list[Address]:
        if self.publish_service is None:
            return self.publish_addresses
        ns, name = self.publish_service
        try:
            response = self.core.read_namespaced_service(
                name, ns, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 404:
                log.warning("--publish-service %s/%s not found; status not updated", ns, name)
                return []
            raise
        # _preload_content=False: the raw urllib3 response, its body unparsed
        return service_addresses(json.loads(response.data))  # type: ignore[attr-defined]

    def _update_status(self, snapshot: Snapshot, table: RouteTable, desired: list[Address]) -> None:
        if not desired:
            return  # never wipe addresses because a load balancer is still pending
        for ns, name in table.ingresses:
            ingress = snapshot.get("Ingress", ns, name)
            if ingress is None or current_addresses(ingress) == desired:
                continue
            body = {"status": {"loadBalancer": {"ingress": desired}}}
            try:
                self.networking.patch_namespaced_ingress_status(
                    name,
                    ns,
                    body,
                    _content_type="application/merge-patch+json",
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            except ApiException as exc:
                if exc.status != 404:  # deleted meanwhile: nothing to do
                    log.warning("status of Ingress %s/%s not updated: %s", ns, name, brief(exc))
                continue
            log.info(
                "status of Ingress %s/%s: %s",
                ns,
                name,
                ", ".join(a.get("ip") or a.get("hostname", "") for a in desired),
            )

    def _report(self, snapshot: Snapshot, problems: tuple[Problem, ...]) -> None:
        current: dict[tuple[str, str], tuple[Obj, Problem]] = {}
        for problem in problems:
            # Ingresses, and the TCP/UDP services ConfigMaps (stream/services.py).
            if problem.ref is None or problem.ref[0] not in ("Ingress", "ConfigMap"):
                continue
            kind, ns, name = problem.ref
            ingress = snapshot.get(kind, ns, name)
            if ingress is None:
                continue
            uid = (ingress.get("metadata") or {}).get("uid") or f"{ns}/{name}"
            current[(uid, problem.reason)] = (ingress, problem)
        # Forget what was fixed, so it is reported again if it comes back.
        self._reported &= current.keys()
        for key, (ingress, problem) in current.items():
            if key in self._reported:
                continue
            try:
                self._create_event(ingress, problem)
            except Exception as exc:
                log.warning("cannot create Event for %s: %s", problem.obj, brief(exc))
                continue
            self._reported.add(key)

    def _create_event(self, ingress: Obj, problem: Problem) -> None:
        meta = ingress.get("metadata") or {}
        ns, name = meta.get("namespace") or "default", meta.get("name") or ""
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": ns},
            "involvedObject": {
                "apiVersion": ingress.get("apiVersion") or "networking.k8s.io/v1",
                "kind": ingress.get("kind") or "Ingress",
                "namespace": ns,
                "name": name,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": "Warning",
            "reason": event_reason(problem),
            "message": problem.reason[:1024],
            "source": {"component": "ingressd"},
            "reportingComponent": self.controller_name,
            "reportingInstance": self.identity,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self.core.create_namespaced_event(
            ns,
            event,  # type: ignore[arg-type]  # the client serialises a plain dict as is
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
