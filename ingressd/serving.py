"""Serving the proxy ports in one process, until told to stop, then draining.

The main process runs it when it proxies itself (``app.py``, ``--workers 1``);
each worker process runs it with its own sockets (``workers.py``). Kept apart
from both so that neither imports the other.
"""

from __future__ import annotations

import asyncio
import socket

from .config import ServeConfig
from .listeners import Listener, ListenError, bind, close
from .policy.tls import CertificateSelector
from .proxy.client_h1 import protocol_factory
from .proxy.state import ProxyState


def proxy_listeners(config: ServeConfig) -> tuple[Listener, Listener]:
    """The HTTP and HTTPS listeners."""
    return (
        Listener("--http-port", config.address, config.http_port),
        Listener("--https-port", config.address, config.https_port),
    )


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
    sockets: tuple[list[socket.socket], list[socket.socket]] | None = None,
) -> None:
    """Listen on the proxy ports until ``stop``, then drain the connections.

    ``sockets``: the HTTP and HTTPS sockets, bound already (and closed here
    whatever happens); else they are bound here (a worker process, with
    SO_REUSEPORT), raising ListenError.
    """
    loop = asyncio.get_running_loop()
    listeners = proxy_listeners(config)
    if sockets is None:
        http = bind(listeners[0], reuse_port=reuse_port)
        try:
            https = bind(listeners[1], reuse_port=reuse_port)
        except ListenError:
            close(http)
            raise
        sockets = (http, https)
    servers: list[asyncio.Server] = []
    pending = [
        (sock, tls, listener)
        for tls, listener, socks in zip((False, True), listeners, sockets, strict=True)
        for sock in socks
    ]
    try:
        for sock, tls, listener in pending:
            try:
                server = await loop.create_server(
                    protocol_factory(state, tls),
                    sock=sock,
                    ssl=selector.default_context if tls else None,
                    backlog=1024,
                )
            except OSError as exc:  # listen() itself can fail
                raise ListenError.from_os(listener, exc) from None
            servers.append(server)
    except BaseException:
        for server in servers:
            server.close()
        close([sock for sock, _, _ in pending[len(servers) :]])
        raise
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
            conn.abort()
        state.pool.close()
        state.h2_pool.close()
        await state.auth.close()
        await asyncio.sleep(0)  # aborted connections report their last requests
        if state.access_log is not None:
            state.access_log.flush()
