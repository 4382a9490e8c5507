"""Leader election on a coordination.k8s.io/v1 Lease, as client-go does it.

Every replica proxies traffic; only the leader writes to the API server
(Ingress status, Events). The holder renews the Lease every ``retry_period``;
the others take it once it has not been renewed for ``lease_duration``,
measured on their own clock from when they last saw it change, so clock skew
between nodes does not matter. Writes carry the resourceVersion that was read,
so when two candidates race, the API server's 409 picks one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import random
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .kubeclient import REQUEST_TIMEOUT, brief

log = logging.getLogger("ingressd.leader")

# The longest a clean shutdown waits to hand the Lease over (part of the drain budget
# that deploy/deployment.yaml's terminationGracePeriodSeconds must cover).
RELEASE_TIMEOUT = 5.0


def default_identity() -> str:
    """POD_NAME-like: unique per process, readable in ``kubectl get lease -o yaml``."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def micro_time(when: dt.datetime | None = None) -> str:
    return (when or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        executor: Executor,
        on_change: Callable[[bool], None] = lambda _: None,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
    ) -> None:
        self.leases = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.executor = executor
        self.on_change = on_change
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.is_leader = False
        # What we last saw of someone else's lease, and when (our monotonic clock).
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                held = await loop.run_in_executor(self.executor, self._try_acquire_or_renew)
            except Exception as exc:
                log.warning("lease %s/%s: %s", self.namespace, self.name, brief(exc))
                held = False
            now = loop.time()
            if held:
                self._renewed_at = now
                self._set(True)
            elif not self.is_leader or now - self._renewed_at > self.renew_deadline:
                # A leader that cannot renew in time must assume someone else has it.
                self._set(False)
            delay = self.retry_period * (1 if self.is_leader else random.uniform(1.0, 1.2))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def release(self) -> None:
        """Hand the lease over at once on a clean shutdown instead of letting it expire."""
        if not self.is_leader:
            return
        self._set(False)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.run_in_executor(self.executor, self._release), RELEASE_TIMEOUT
            )
        except Exception as exc:
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, brief(exc))

    def _set(self, leader: bool) -> None:
        if leader != self.is_leader:
            self.is_leader = leader
            log.info(
                "%s leadership of lease %s/%s (%s)",
                "acquired" if leader else "lost",
                self.namespace,
                self.name,
                self.identity,
            )
            self.on_change(leader)

    # -- blocking calls, run in the executor -----------------------------------------

    def _get(self) -> dict[str, Any] | None:
        try:
            response = self.leases.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        # _preload_content=False: the raw urllib3 response, its body unparsed
        return json.loads(response.data)  # type: ignore[attr-defined]

    def _try_acquire_or_renew(self) -> bool:
        now = dt.datetime.now(dt.UTC)
        lease = self._get()
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, acquired=now, transitions=0),
            }
            return self._write(self.leases.create_namespaced_lease, self.namespace, body)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        mono = time.monotonic()
        record = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"))
        if record != self._observed:
            self._observed = record
            self._observed_at = mono
        if holder and holder != self.identity:
            duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
            if mono < self._observed_at + duration:
                return False  # someone else holds a live lease
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            acquired = spec.get("acquireTime") or micro_time(now)
        else:
            acquired, transitions = micro_time(now), transitions + 1
        lease["spec"] = self._spec(now, acquired=acquired, transitions=transitions)
        # metadata.resourceVersion from the read makes this a compare-and-swap.
        return self._write(self.leases.replace_namespaced_lease, self.name, self.namespace, lease)

    def _spec(
        self, now: dt.datetime, acquired: dt.datetime | str, transitions: int
    ) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_duration)),
            "acquireTime": acquired if isinstance(acquired, str) else micro_time(acquired),
            "renewTime": micro_time(now),
            "leaseTransitions": transitions,
        }

    def _write(self, method: Callable[..., Any], *args: Any) -> bool:
        try:
            method(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status in (409, 422):
                return False  # another candidate wrote first
            raise
        return True

    def _release(self) -> None:
        lease = self._get()
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        spec = lease["spec"]
        spec["holderIdentity"] = ""
        spec["leaseDurationSeconds"] = 1
        spec["renewTime"] = micro_time()
        self._write(self.leases.replace_namespaced_lease, self.name, self.namespace, lease)
