"""Running ingressd: binding the ports, admin endpoints, the source, workers, and shutdown.

The proxy ports themselves are served by ``serving.py``, in this process
(``--workers 1``) or in each worker process (``workers.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from .config import ServeConfig
from .control.controller import Controller
from .listeners import Listener, ListenError, bind, bind_all, close
from .model.table import RouteTable
from .observe.metrics import Metrics
from .observe.stats import ProxyView, with_streams
from .policy.limits import LimitRegistry
from .policy.tls import CertificateSelector, self_signed
from .proxy.state import ProxyState
from .serving import proxy_listeners, serve_proxy, session_table, until_listening
from .stream.manager import StreamServices
from .stream.passthrough import PassthroughRouter
from .stream.session_log import SessionLog

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


def admin_listener(config: ServeConfig) -> Listener:
    return Listener("--admin-port", config.address, config.admin_port)


async def serve(
    config: ServeConfig, started: asyncio.Event | None = None, stop: asyncio.Event | None = None
) -> None:
    """Run until ``stop`` (or SIGTERM/SIGINT), then drain and return.

    Raises KubeConfigError when the cluster configuration is unusable and
    ListenError when a listener cannot be bound (then nothing was started: no
    worker process, no watch), or later when a worker cannot bind its ports.
    """
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
    # With workers, this process serves no TLS: it only checks certificates.
    selector = CertificateSelector(
        lambda: state.table,
        self_signed(),
        http2=config.proxy.http2,
        serving=config.workers <= 1,
    )
    pool = None
    if config.workers > 1:
        from .workers import WorkerPool

        # The delay is this process's to keep; workers stop accepting when told.
        worker_config = dataclasses.replace(config, shutdown_delay=0.0)
        pool = WorkerPool(worker_config, config.workers, logging.getLogger().getEffectiveLevel())
        pool.on_fatal = stop.set  # a worker cannot bind its ports: give up

    def proxy_view() -> ProxyView:
        if pool is not None:
            # The workers' last reports, summed, and this process's stream sessions.
            return with_streams(pool.totals.view(), state.stats.streams, state.stats.stream_open)
        return state.stats.view(len(state.connections))

    passthrough = PassthroughRouter(config.build) if config.ssl_passthrough else None
    # This process's layer-4 sessions (TCP services; passthrough too without workers).
    table = session_table(config, state)
    # The TCP/UDP services listen in this process, whether or not workers proxy
    # HTTP (stream/manager.py says why).
    streams = None
    if config.streams.refs:
        reserved = {
            config.http_port: "--http-port",
            config.https_port: "--https-port",
            config.admin_port: "--admin-port",
        }
        if config.cluster is not None and config.cluster.admission is not None:
            reserved[config.cluster.admission.port] = "--admission-port"
        sessions = SessionLog(state.stats, state.access_log)
        streams = StreamServices(config.streams, config.address, reserved, sessions, table)
    # With workers, this process's table is never served: it is built for the
    # status write-back and /problems, and its snapshot is what workers are fed.
    controller = Controller(
        state,
        selector,
        config.build,
        config.default_certificate,
        publish=pool.publish if pool is not None else None,
        streams=streams,
        passthrough=passthrough,
        serving=pool is None,
    )
    # The configuration is checked first (an unusable kubeconfig is a usage
    # error), then every port is bound, before any process, watch or listener
    # starts: a port in use ends the start here, with nothing to clean up.
    run_source = _source(config, controller)
    config = await _proxy_protocol_at_start(config, controller, run_source)
    if pool is not None:
        pool.config = dataclasses.replace(pool.config, use_proxy_protocol=config.use_proxy_protocol)
    controller.proxy_protocol = config.use_proxy_protocol
    unowned: list[socket.socket] = []  # bound here, not (yet) handed to a server
    tasks: list[asyncio.Task] = []
    proxy = None
    runner = None
    started_serving = False
    try:
        admin = bind(admin_listener(config))
        unowned += admin
        if pool is not None:
            # Held, not listening (the kernel gives connections to listening
            # sockets only), so no other program takes the ports the workers
            # will bind with SO_REUSEPORT.
            unowned += bind_all(list(proxy_listeners(config)), reuse_port=True)
            pool.start()
            tasks.append(loop.create_task(pool.supervise(closing)))
        else:
            http_listener, https_listener = proxy_listeners(config)
            http = bind(http_listener)
            unowned += http
            https = bind(https_listener)
            for sock in http:
                unowned.remove(sock)  # serve_proxy owns them from here on
            proxy = loop.create_task(
                serve_proxy(
                    config,
                    state,
                    selector,
                    closing,
                    sockets=(http, https),
                    passthrough=passthrough,
                    table=table,
                )
            )
            await until_listening(proxy, state)

        def readiness() -> str | None:
            if stop.is_set():
                return "shutting down"
            if pool is not None and not pool.ready:
                return pool.describe()
            return None

        webhook = getattr(getattr(run_source, "__self__", None), "admission", None)
        metrics = Metrics(
            proxy_view,
            controller.stats,
            lambda: state.table,
            admission=webhook.results.copy if webhook is not None else None,
        )
        runner = web.AppRunner(admin_app(controller, state, readiness, metrics), access_log=None)
        await runner.setup()
        for sock in admin:
            await web.SockSite(runner, sock).start()
            unowned.remove(sock)
        tasks.append(loop.create_task(run_source(closing)))
        log.info(
            "ingressd serving %s: http %s, https %s, admin %s, %s",
            config.manifests or "the cluster",
            *(
                f"{lis.address}:{lis.port}"
                for lis in (*proxy_listeners(config), admin_listener(config))
            ),
            f"{config.workers} worker processes" if pool is not None else "1 process",
        )
        started_serving = True
        if started is not None:
            started.set()
        await stop.wait()
        state.draining = True  # responses from now on close their connections
        if pool is not None:
            pool.drain()
        if config.shutdown_delay > 0 and (pool is None or pool.fatal is None):
            log.info("shutting down: not ready; still accepting for %.1f s", config.shutdown_delay)
            await asyncio.sleep(config.shutdown_delay)
    finally:
        if started_serving:
            log.info(
                "shutting down: closing the listeners; draining for up to %.1f s",
                config.shutdown_grace,
            )
        stop.set()
        closing.set()
        deadline = loop.time() + config.shutdown_grace
        if streams is not None:
            streams.stop()  # with the HTTP ports: no new sessions, those open go on
        # The source goes first: a leader hands its lease over while we drain.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if pool is not None:
            await pool.stop(config.shutdown_grace)
        if proxy is not None:
            await asyncio.gather(proxy, return_exceptions=True)
        # TCP services' sessions (serve_proxy drained this table too, if it ran here).
        await table.drain(deadline)
        if streams is not None:
            streams.close()
        table.abort()
        await asyncio.sleep(0)  # aborted sessions are counted and logged
        if state.access_log is not None:
            state.access_log.flush()
        if runner is not None:
            await runner.cleanup()
        close(unowned)
    if pool is not None and pool.fatal is not None:
        raise ListenError(pool.fatal)


async def _proxy_protocol_at_start(
    config: ServeConfig, controller: Controller, run_source: Callable[..., Any]
) -> ServeConfig:
    """The ConfigMap's use-proxy-protocol, taken before the listeners are made: the
    PROXY protocol is read before HTTP or TLS owns a connection, so switching it
    means other listeners, and the ports keep what they start with (a later change
    is reported as needing a restart: Controller._proxy_protocol_problems).
    --use-proxy-protocol given explicitly wins."""
    ref = config.build.configmap
    if ref is None or any(key == "use-proxy-protocol" for key, _ in config.build.explicit):
        return config
    wanted: bool | None = None
    if config.cluster is None:
        # Manifest mode: the folder was read already (the first table exists).
        table = controller.last[1]
        wanted = table.config.use_proxy_protocol if table is not None else None
    else:
        runner = getattr(run_source, "__self__", None)
        cluster = getattr(runner, "cluster", None)
        if cluster is not None:
            wanted = await asyncio.to_thread(_read_proxy_protocol, cluster, ref, config)
    if wanted is None or wanted == config.use_proxy_protocol:
        return config
    log.info("use-proxy-protocol=%s from ConfigMap %s/%s", str(wanted).lower(), *ref)
    return dataclasses.replace(config, use_proxy_protocol=wanted)


def _read_proxy_protocol(cluster: Any, ref: tuple[str, str], config: ServeConfig) -> bool | None:
    """The cluster's ConfigMap's use-proxy-protocol, read once (10 s at most); None
    when it is not set or cannot be read (the listeners then go by the flag, and
    the watch reports a value that differs as needing a restart)."""
    from kubernetes import client as kube

    from .policy.configmap import read_configmap

    try:
        # A list by name, as the watch reads it (RBAC grants list and watch on it only)
        found = kube.CoreV1Api(cluster.api).list_namespaced_config_map(
            ref[0], field_selector=f"metadata.name={ref[1]}", _request_timeout=10
        )
    except Exception as exc:  # forbidden, unreachable: the flag decides
        log.warning("ConfigMap %s/%s not read before listening: %s", *ref, str(exc)[:200])
        return None
    if not found.items:
        return None
    reading = read_configmap(found.items[0].data, dict(config.build.explicit))
    return reading.config.use_proxy_protocol


def _source(
    config: ServeConfig, controller: Controller
) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """Set up the configured source; its ``run(stop)`` keeps the table current."""
    if config.cluster is not None:
        from .control.cluster import ClusterRunner

        return ClusterRunner.from_config(config.cluster, controller).run
    if config.manifests is None:
        raise ValueError("ServeConfig needs manifests or cluster")
    from .sources.manifests import LoadResult, ManifestSource

    root = config.manifests
    implied = None
    if config.imply_ingress_class:
        from .sources.manifests import ImpliedClass

        implied = ImpliedClass(config.build.ingress_class, config.build.controller_name)
    said = False

    def on_load(result: LoadResult) -> None:
        nonlocal said
        snapshot = result.store.snapshot()
        if implied is not None:
            snapshot = implied.apply(snapshot)
            if implied.active != said:  # said once, and again only when it changes
                said = implied.active
                if said:
                    log.info("%s", implied.note(root))
                else:
                    log.info("IngressClass %r is now defined in %s", implied.name, root)
        controller.apply(snapshot, result.problems)

    source = ManifestSource(root, on_load)
    source.load()  # the first table exists before the first connection is accepted
    return source.run
