"""Objects in, live table out: build, warm TLS, swap, report what changed."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from ..model.globals import GlobalConfig
from ..model.objects import Snapshot
from ..model.problems import Problem
from ..model.table import RouteTable, TLSCertificate
from ..observe import tracing
from ..observe.stats import RebuildStats
from ..policy.tls import CertificateSelector, TLSError, load_certificate
from ..proxy.settings import ProxySettings
from ..proxy.state import ProxyState
from ..routing.build import BuildOptions, TableBuilder
from ..stream.manager import StreamServices
from ..stream.passthrough import PassthroughRouter

log = logging.getLogger("ingressd.controller")
_PASSTHROUGH_IGNORED = "annotation nginx.ingress.kubernetes.io/ssl-passthrough is not supported"


class Controller:
    """Turns each new snapshot of objects into the table every connection uses."""

    def __init__(
        self,
        state: ProxyState,
        selector: CertificateSelector | None,
        options: BuildOptions,
        default_certificate: str | None = None,  # "namespace/name" of a TLS Secret
        *,
        report: bool = True,  # log problems and tables (workers leave it to the main process)
        publish: Callable[[Snapshot, tuple[Problem, ...]], None] | None = None,
        streams: StreamServices | None = None,
        passthrough: PassthroughRouter | None = None,
        serving: bool = True,  # this process proxies (not the main process of --workers)
    ) -> None:
        self.report = report
        self.serving = serving
        self._importing = False  # OpenTelemetry is being imported (observe/tracing.py)
        # The TCP/UDP services' listeners, made to match each snapshot (main process only)
        self.streams = streams
        # --enable-ssl-passthrough: the hosts whose TLS the TLS port splices (every process)
        self.passthrough = passthrough
        # --workers: called with each applied snapshot, to feed the worker processes
        self.publish = publish
        self.state = state
        # The settings from the command line; each table's ConfigMap settings go
        # over them (those no explicit flag overrides), swapped in with the table.
        self.base_settings = state.settings
        # Whether the HTTP and HTTPS listeners read the PROXY protocol (set by serve
        # once they are made; None: not known). They keep it until a restart, so a
        # ConfigMap that says otherwise is reported, never half applied.
        self.proxy_protocol: bool | None = None
        self._config: GlobalConfig | None = None
        self.selector = selector
        self.options = options
        self.default_certificate = default_certificate
        self.generation = 0
        self.ready = False
        # Why not ready yet, for /readyz; the source may say more than the default.
        self.pending = "no routing table yet"
        # The snapshot and table of the last apply, for write-back to the cluster.
        self.last: tuple[Snapshot | None, RouteTable | None] = (None, None)
        # Everything rejected by the last apply: files, objects, certificates.
        self.problems: tuple[Problem, ...] = ()
        self._reported: set[str] = set()
        # Kept between applies: a change rebuilds only what it touches.
        self._builder = TableBuilder(options)
        self.heap = HeapPolicy()
        self.stats = RebuildStats()  # for /metrics

    def apply(self, snapshot: Snapshot, source_problems: Iterable[Problem] = ()) -> RouteTable:
        started = time.perf_counter()
        try:
            table = self._apply(snapshot, source_problems)
        except Exception:
            self.stats.failed(time.perf_counter() - started)
            raise
        self.stats.succeeded(time.perf_counter() - started)
        self.stats.problems = len(self.problems)
        if self.report:
            self._log(table)
        return table

    def _apply(self, snapshot: Snapshot, source_problems: Iterable[Problem]) -> RouteTable:
        self.generation += 1
        source_problems = tuple(source_problems)
        if self.publish is not None:
            # First: the workers build their tables while this process builds its own.
            self.publish(snapshot, source_problems)
        if self._builder.opts != self.options:
            self._builder = TableBuilder(self.options)
        table = self._builder.build(snapshot, generation=self.generation)
        problems = [*source_problems, *table.problems]
        if self.passthrough is not None:
            # The builder, which knows no flags, calls the annotation ignored.
            problems = [p for p in problems if _PASSTHROUGH_IGNORED not in p.reason]
        if self.selector is not None:
            self.selector.configure(table.config.tls)
            problems += self._prepare_tls(snapshot, table)
        if self.streams is not None:
            problems += self.streams.apply(snapshot)
        if self.passthrough is not None:
            problems += self.passthrough.apply(snapshot)
        problems += self._proxy_protocol_problems(table.config)
        if table.config is not self._config:
            self._config = table.config
            self.state.apply_settings(settings_for(self.base_settings, table.config))
        self._trace(snapshot, table)
        # One store: connections read ``state.table`` once per request, so each
        # request sees either the old table or the new one, never a mix.
        self.state.table = table
        if len(self.state.limits):  # else nothing to forget, and retain walks every route
            self.state.limits.retain(table)  # limiters of Ingresses gone or changed
        if self.selector is not None:
            self.selector.prune()
        self.ready = True
        self.last = (snapshot, table)
        self.problems = tuple(problems)
        self.heap.settle(self._builder)  # once the last table is let go
        return table

    def _proxy_protocol_problems(self, config: GlobalConfig) -> list[Problem]:
        wanted = config.use_proxy_protocol
        running = self.proxy_protocol
        if running is None or wanted is None or wanted == running:
            return []
        ref = self.options.configmap
        ns, name = ref if ref is not None else ("", "")
        how = "with" if running else "without"
        reason = (
            f"use-proxy-protocol={str(wanted).lower()} needs a restart: the HTTP and HTTPS "
            f"ports were started {how} the PROXY protocol and keep it until ingressd restarts"
        )
        return [Problem(f"ConfigMap {ns}/{name}", reason, "", ("ConfigMap", ns, name))]

    def _trace(self, snapshot: Snapshot, table: RouteTable) -> None:
        """OpenTelemetry under this table's ConfigMap, before the table serves:
        on while the ConfigMap or some Ingress asks for it (observe/tracing.py)."""
        config = table.config.tracing
        # Annotations are looked at only where spans could be exported at all.
        asked = bool(config.collector_host) and not config.enabled and tracing.annotated(snapshot)
        # The first table waits (nothing is served before it); later ones do not.
        if self.serving and self.ready and tracing.must_import(config, asked):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                # Turned on while serving: OpenTelemetry is imported in a thread (the
                # better part of a second) and tracing starts with the latest table.
                if not self._importing:
                    self._importing = True
                    tracing.import_then(lambda: loop.call_soon_threadsafe(self._imported))
                return
        state = self.state
        state.tracing = tracing.update(
            state.tracing,
            config,
            asked,
            serve=self.serving,
            report=self.report,
            counts=state.stats.spans,
        )

    def _imported(self) -> None:
        self._importing = False
        snapshot, table = self.last
        if snapshot is not None and table is not None:
            self._trace(snapshot, table)

    def _log(self, table: RouteTable) -> None:
        problems = list(self.problems)
        self._report(problems)
        hosts = len(table.exact_hosts) + len(table.wildcard_hosts) + (table.catch_all is not None)
        log.info(
            "routing table generation %d: %d hosts, %d TLS hosts, %d problems",
            table.generation,
            hosts,
            len(table.certificates),
            len(problems),
        )

    def _prepare_tls(self, snapshot: Snapshot, table: RouteTable) -> list[Problem]:
        """Create SSL contexts before the swap so no handshake waits on them."""
        assert self.selector is not None
        problems = []
        for used in {c.secret: c for c in table.certificates.values()}.values():
            try:
                self.selector.check(used)
            except (OSError, ValueError) as exc:
                problems.append(Problem(f"Secret {used.secret}", f"cannot load certificate: {exc}"))
        if self.default_certificate:
            ns, _, name = self.default_certificate.partition("/")
            secret = snapshot.get("Secret", ns, name)
            cert: TLSCertificate | None = None
            if secret is None:
                problems.append(
                    Problem(
                        f"Secret {self.default_certificate}",
                        "--default-certificate not found; using a generated one",
                    )
                )
            else:
                try:
                    cert = load_certificate(secret)
                except TLSError as exc:
                    problems.append(
                        Problem(
                            f"Secret {self.default_certificate}",
                            f"--default-certificate unusable: {exc}",
                        )
                    )
            self.selector.set_default(cert)
        return problems

    def _report(self, problems: list[Problem]) -> None:
        """Log each problem once while it lasts, and say when it is gone."""
        current = {str(p) for p in problems}
        for text in sorted(current - self._reported):
            log.warning("rejected: %s", text)
        for text in sorted(self._reported - current):
            log.info("resolved: %s", text)
        self._reported = current


def settings_for(base: ProxySettings, config: GlobalConfig) -> ProxySettings:
    """The proxy's settings under the controller ConfigMap: its keys over the
    command line's defaults (policy/configmap.py leaves out those a flag given
    explicitly overrides). Annotations still win per route."""
    if not config.proxy:
        return base
    changes: dict[str, Any] = dict(config.proxy)
    return replace(base, **changes)


class HeapPolicy:
    """When to move the long-lived heap out of the collector's sight (``gc.freeze``).

    Why: a full collection walks every tracked object, and with 10,000
    Ingresses the store, the builder's state and the table are ~700,000 of them:
    each full pass took about half a second, on the event loop, stalling
    every request. They live until a later change replaces them, and none is
    part of a reference cycle, so reference counting frees them, frozen or not.

    Only after a builder's first (from-scratch) build, though: that is when
    nearly the whole heap is new, and before traffic (the first table comes
    before the process is ready). A freeze also keeps whatever else is alive
    then, such as open connections, from ever being collected should it later
    become cyclic garbage, so later, incremental builds (which make little
    new) do not freeze; and each freeze first hands the previous one back for a
    full collection.
    """

    def __init__(self) -> None:
        self.builder: TableBuilder | None = None  # the builder last frozen after
        self.freezes = 0

    def settle(self, builder: TableBuilder) -> None:
        """After a swap: freeze what is alive if this was a new builder's first build."""
        if builder is self.builder:
            return
        self.builder = builder
        if self.freezes:
            gc.unfreeze()
        # First collect, so garbage that already is cyclic is freed, not frozen.
        gc.collect()
        gc.freeze()
        self.freezes += 1
