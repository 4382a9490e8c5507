"""Running ingressd: listeners, admin endpoints, the source, and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from .config import ServeConfig
from .controller import Controller
from .limits import LimitRegistry
from .metrics import Metrics
from .model import RouteTable
from .proxy.server import ProxyState
from .stats import ProxyView
from .tls import CertificateSelector, self_signed

log = logging.getLogger("ingressd")


def admin_app(
    controller: Controller,
    state: ProxyState,
    readiness: Callable[[], str | None] | None = None,
    metrics: Metrics | None = None,
) -> web.Application:
    """``readiness`` returns why the process is not ready yet, or None when it is."""

    def not_ready() -> str | None:
        if not controller.ready:
            return controller.pending
        return readiness() if readiness is not None else None

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        reason = not_ready()
        if reason is None:
            return web.Response(text=f"ready: table generation {controller.generation}\n")
        return web.Response(status=503, text=f"not ready: {reason}\n")

    async def problems(_: web.Request) -> web.Response:
        # The controller's list, not the table's: it also holds what was rejected
        # before a table was built (unparsable files) and unusable certificates.
        return web.json_response(
            {
                "generation": state.table.generation,
                "problems": [str(p) for p in controller.problems],
            }
        )

    async def prometheus(request: web.Request) -> web.Response:
        assert metrics is not None
        body, content_type = await metrics.scrape(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/problems", problems)
    if metrics is not None:
        app.router.add_get("/metrics", prometheus)
    return app


async def serve(
    config: ServeConfig, started: asyncio.Event | None = None, stop: asyncio.Event | None = None
) -> None:
    loop = asyncio.get_running_loop()
    # ``stop`` (SIGTERM, SIGINT) begins the shutdown: /readyz turns unready at
    # once while the listeners keep accepting for --shutdown-delay, so load
    # balancers stop sending before connections are refused; then ``closing``
    # stops the listeners and the source, and connections drain for
    # --shutdown-grace.
    stop = stop or asyncio.Event()
    closing = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Outside the main thread (tests) the caller sets ``stop`` instead.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)

    state = ProxyState(RouteTable(), config.proxy)
    state.limits = LimitRegistry(entries=config.limit_entries)
    selector = CertificateSelector(lambda: state.table, self_signed())
    pool = None
    if config.workers > 1:
        from .workers import WorkerPool

        # The delay is this process's to keep; workers stop accepting when told.
        worker_config = dataclasses.replace(config, shutdown_delay=0.0)
        pool = WorkerPool(worker_config, config.workers, logging.getLogger().getEffectiveLevel())

    def proxy_view() -> ProxyView:
        if pool is not None:
            return pool.totals.view()  # the workers' last reports, summed
        return state.stats.view(len(state.connections))

    # With workers, this process's table is never served: it is built for the
    # status write-back and /problems, and its snapshot is what workers are fed.
    controller = Controller(
        state,
        selector,
        config.build,
        config.default_certificate,
        publish=pool.publish if pool is not None else None,
    )
    run_source = _source(config, controller)

    tasks = []
    proxy = None
    if pool is not None:
        pool.start()
        tasks.append(loop.create_task(pool.supervise(closing)))
    else:
        proxy = loop.create_task(serve_proxy(config, state, selector, closing))
        await until_listening(proxy, state)

    def readiness() -> str | None:
        if stop.is_set():
            return "shutting down"
        if pool is not None and not pool.ready:
            return pool.describe()
        return None

    metrics = Metrics(proxy_view, controller.stats, lambda: state.table)
    runner = web.AppRunner(admin_app(controller, state, readiness, metrics), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, config.address, config.admin_port).start()
    tasks.append(loop.create_task(run_source(closing)))
    log.info(
        "ingressd serving %s: http %s:%d, https %s:%d, admin %s:%d, %s",
        config.manifests or "the cluster",
        config.address,
        config.http_port,
        config.address,
        config.https_port,
        config.address,
        config.admin_port,
        f"{config.workers} worker processes" if pool is not None else "1 process",
    )
    try:
        if started is not None:
            started.set()
        await stop.wait()
        state.draining = True  # responses from now on close their connections
        if pool is not None:
            pool.drain()
        if config.shutdown_delay > 0:
            log.info("shutting down: not ready; still accepting for %.1f s", config.shutdown_delay)
            await asyncio.sleep(config.shutdown_delay)
    finally:
        log.info(
            "shutting down: closing the listeners; draining for up to %.1f s", config.shutdown_grace
        )
        stop.set()
        closing.set()
        # The source goes first: a leader hands its lease over while we drain.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if pool is not None:
            await pool.stop(config.shutdown_grace)
        if proxy is not None:
            await asyncio.gather(proxy, return_exceptions=True)
        await runner.cleanup()


async def until_listening(proxy: asyncio.Task, state: ProxyState) -> None:
    """Wait for the listeners (or for the error that kept them from opening)."""
    while not state.listening and not proxy.done():
        await asyncio.sleep(0.01)
    if proxy.done():
        proxy.result()  # raises what stopped it, e.g. a port in use


async def serve_proxy(
    config: ServeConfig,
    state: ProxyState,
    selector: CertificateSelector,
    stop: asyncio.Event,
    reuse_port: bool = False,
) -> None:
    """Listen on the proxy ports until ``stop``, then drain the connections."""
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(
            state.protocol_factory(False),
            config.address,
            config.http_port,
            reuse_address=True,
            reuse_port=reuse_port or None,
            backlog=1024,
        ),
        await loop.create_server(
            state.protocol_factory(True),
            config.address,
            config.https_port,
            ssl=selector.default_context,
            reuse_address=True,
            reuse_port=reuse_port or None,
            backlog=1024,
        ),
    ]
    state.listening = True
    try:
        await stop.wait()
    finally:
        for server in servers:
            server.close()
        for conn in list(state.connections):
            conn.shutdown()
        deadline = loop.time() + config.shutdown_grace
        while state.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(state.connections):
            conn.transport.abort()  # type: ignore[union-attr]
        state.pool.close()
        await state.auth.close()
        await asyncio.sleep(0)  # aborted connections report their last requests
        if state.access_log is not None:
            state.access_log.flush()


def _source(
    config: ServeConfig, controller: Controller
) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """Set up the configured source; its ``run(stop)`` keeps the table current."""
    if config.cluster is not None:
        from .cluster import ClusterRunner

        return ClusterRunner.from_config(config.cluster, controller).run
    if config.manifests is None:
        raise ValueError("ServeConfig needs manifests or cluster")
    from .sources.manifests import ManifestSource

    source = ManifestSource(
        config.manifests, lambda result: controller.apply(result.store.snapshot(), result.problems)
    )
    source.load()  # the first table exists before the first connection is accepted
    return source.run
