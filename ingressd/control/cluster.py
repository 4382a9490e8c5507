"""Cluster mode: watch → debounce → build and swap → (leader only) write back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

from ..kube.config import AdmissionConfig, ClusterConfig
from ..kube.kubeclient import Cluster, connect
from ..kube.leader import LeaderElector, default_identity
from ..kube.status import Writeback
from ..model.objects import Snapshot
from ..policy import header_maps
from ..sources.kube import KubeSource, SecretFetcher
from .admission_server import AdmissionServer, CertificateKeeper, lifetime
from .controller import Controller
from .debounce import Debouncer

log = logging.getLogger("ingressd.cluster")

# Status is re-checked this often even without changes, so a load balancer
# address that arrives later (or an edited status) is published.
RESYNC_SECONDS = 30.0
# At start, how long the first table waits for the ConfigMaps of headers that the
# listed objects name (else auth-proxy-set-headers routes would deny and others
# serve without their headers until the lists come in).
HEADER_MAPS_WAIT = 5.0


class ClusterRunner:
    """Feeds the controller from the API server and writes back as the leader."""

    def __init__(self, config: ClusterConfig, controller: Controller, cluster: Cluster) -> None:
        self.config = config
        self.controller = controller
        self.cluster = cluster
        self.identity = config.identity or default_identity()
        # Blocking client calls (lease, status, events) share a few threads;
        # watches have threads of their own in KubeSource.
        self.executor = ThreadPoolExecutor(4, thread_name_prefix="kube")
        self.source = KubeSource(
            cluster,
            self._changed,
            config.watch_namespace,
            config.watch_seconds,
            configmaps=config.configmaps,
        )
        self.debouncer = Debouncer(self._rebuild)
        publish = None
        if config.publish_service:
            ns, _, name = config.publish_service.rpartition("/")
            publish = (ns or cluster.namespace, name)
        self.writeback = Writeback(
            cluster.api,
            self.executor,
            self.identity,
            controller.options.controller_name,
            publish,
            config.publish_status_address,
        )
        self.elector = LeaderElector(
            cluster.api,
            cluster.namespace,
            config.election_id,
            self.identity,
            self.executor,
            on_change=self._leadership,
            lease_duration=config.lease_duration,
            renew_deadline=config.renew_deadline,
            retry_period=config.retry_period,
        )
        controller.stats.leader = False  # /metrics: ingressd_leader
        self._dirty = asyncio.Event()
        self.secrets = SecretFetcher(cluster, self.source.store, self._changed)
        self._secrets_due = asyncio.Event()
        self._wanted: set[tuple[str, str]] = set()
        self.admission: AdmissionServer | None = None
        self.certificates: CertificateKeeper | None = None
        if config.admission is not None:
            self._admission(config.admission)

    def _admission(self, admission: AdmissionConfig) -> None:
        """--admission-port: its socket is bound here, before anything starts."""
        from ..kube.webhook_certs import WebhookCertificates

        source = self.source

        def snapshot() -> Snapshot | None:
            return source.store.snapshot() if source.synced.is_set() else None

        self.admission = AdmissionServer(
            admission, snapshot, lambda: self.controller.options, self.config.watch_namespace
        )
        certs = WebhookCertificates(
            self.cluster.api,
            self.cluster.namespace,
            admission.secret,
            admission.webhook,
            admission.service,
            lifetime(admission),
        )
        self.certificates = CertificateKeeper(self.admission, certs, self.executor)

    @classmethod
    def from_config(cls, config: ClusterConfig, controller: Controller) -> ClusterRunner:
        return cls(config, controller, connect(config.kubeconfig, config.in_cluster))

    async def run(self, stop: asyncio.Event) -> None:
        self.controller.pending = "waiting for the initial lists from the API server"
        log.info("reading %s", self.cluster.describe())
        self.source.start()
        if not self.writeback.publishes_status:
            log.info(
                "Ingress status is not published (no --publish-service or --publish-status-address)"
            )
        tasks = [
            asyncio.create_task(self.elector.run(stop), name="leader-election"),
            asyncio.create_task(self._writer(stop), name="writeback"),
            asyncio.create_task(self._fetch_secrets(stop), name="secrets"),
        ]
        if self.certificates is not None:
            elector = self.elector
            keeper = self.certificates.run(stop, lambda: elector.is_leader)
            tasks.append(asyncio.create_task(keeper, name="admission-certificates"))
        try:
            synced = asyncio.create_task(self.source.synced.wait())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait([synced, stopping], return_when=asyncio.FIRST_COMPLETED)
            synced.cancel()
            stopping.cancel()
            if self.source.synced.is_set():
                self._watch_header_maps(self.source.store.snapshot())
                await self.source.wait_referenced(HEADER_MAPS_WAIT)
                self._rebuild()
            await stop.wait()
        finally:
            self.debouncer.cancel()
            self.source.stop()
            await self.elector.release()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.admission is not None:
                await self.admission.close()
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.cluster.close()

    def _changed(self) -> None:
        self.debouncer.poke()

    def _rebuild(self) -> None:
        snapshot = self.source.store.snapshot()
        self.controller.apply(snapshot)
        self._dirty.set()
        self._watch_header_maps(snapshot)
        wanted = self.secrets.wanted(snapshot)
        if wanted != self._wanted:
            self._wanted = wanted
            self._secrets_due.set()

    def _watch_header_maps(self, snapshot: Snapshot) -> None:
        """Watch the ConfigMaps of headers the objects name (policy/header_maps.py);
        one that comes in later makes a rebuild of its own."""
        wanted = header_maps.references(snapshot, self.controller.options.configmap)
        self.source.watch_referenced(wanted)

    async def _fetch_secrets(self, stop: asyncio.Event) -> None:
        """Read the Secrets Ingresses name, at once when the set changes, else periodically."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._secrets_due.wait(), self.config.secret_refresh)
            self._secrets_due.clear()
            wanted = self._wanted
            if not wanted and not self.secrets.held:
                continue
            try:
                fetched = await loop.run_in_executor(self.executor, self.secrets.fetch, wanted)
            except Exception:
                log.exception("reading referenced Secrets failed")
                continue
            self.secrets.apply(self._wanted, fetched)

    def _leadership(self, leader: bool) -> None:
        self.controller.stats.leader = leader
        if self.certificates is not None:
            self.certificates.wake.set()  # a new leader checks the certificate at once
        if leader:
            self._dirty.set()
        else:
            self.writeback.forget()

    async def _writer(self, stop: asyncio.Event) -> None:
        """One write-back at a time, coalescing rebuilds that happen meanwhile."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), RESYNC_SECONDS)
            self._dirty.clear()
            snapshot, table = self.controller.last
            if not self.elector.is_leader or table is None or snapshot is None:
                continue
            try:
                await self.writeback.sync(snapshot, table, self.controller.problems)
            except Exception:
                log.exception("write-back failed")
