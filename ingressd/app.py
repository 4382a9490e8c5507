"""Running ingressd: listeners, admin endpoints, the source, and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from .config import ServeConfig
from .controller import Controller
from .model import RouteTable
from .proxy.server import ProxyState
from .tls import CertificateSelector, self_signed

log = logging.getLogger("ingressd")


def admin_app(controller: Controller, state: ProxyState) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if controller.ready:
            return web.Response(text=f"ready: table generation {controller.generation}\n")
        return web.Response(status=503, text=f"not ready: {controller.pending}\n")

    async def problems(_: web.Request) -> web.Response:
        # The controller's list, not the table's: it also holds what was rejected
        # before a table was built (unparsable files) and unusable certificates.
        return web.json_response(
            {
                "generation": state.table.generation,
                "problems": [str(p) for p in controller.problems],
            }
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/problems", problems)
    return app


async def serve(
    config: ServeConfig, started: asyncio.Event | None = None, stop: asyncio.Event | None = None
) -> None:
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Outside the main thread (tests) the caller sets ``stop`` instead.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)

    state = ProxyState(RouteTable(), config.proxy)
    selector = CertificateSelector(lambda: state.table, self_signed())
    controller = Controller(state, selector, config.build, config.default_certificate)
    run_source = _source(config, controller)

    servers = [
        await loop.create_server(
            state.protocol_factory(False),
            config.address,
            config.http_port,
            reuse_address=True,
            backlog=1024,
        ),
        await loop.create_server(
            state.protocol_factory(True),
            config.address,
            config.https_port,
            ssl=selector.default_context,
            reuse_address=True,
            backlog=1024,
        ),
    ]
    runner = web.AppRunner(admin_app(controller, state), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, config.address, config.admin_port).start()
    watcher = loop.create_task(run_source(stop))
    log.info(
        "ingressd serving %s: http %s:%d, https %s:%d, admin %s:%d",
        config.manifests or "the cluster",
        config.address,
        config.http_port,
        config.address,
        config.https_port,
        config.address,
        config.admin_port,
    )
    if started is not None:
        started.set()
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        # The source goes first: a leader hands its lease over while we drain.
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
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
        await runner.cleanup()


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
