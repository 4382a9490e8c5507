"""Serving the proxy ports in one process, until told to stop, then draining.

The main process runs it when it proxies itself (``app.py``, ``--workers 1``);
each worker process runs it with its own sockets (``workers.py``). Kept apart
from both so that neither imports the other.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

from .config import ServeConfig
from .listeners import Listener, ListenError, bind, close
from .policy.tls import CertificateSelector
from .proxy.client_h1 import protocol_factory
from .proxy.state import ProxyState
from .stream.accept import Acceptor, Handler
from .stream.bounds import SessionTable
from .stream.connect import StreamSettings, Target, splice_to
from .stream.passthrough import PassthroughRouter
from .stream.peek import PeekError, peek, read_proxy_header
from .stream.proxyproto import HEADER_TIMEOUT, MAX_HEADER, ProxyProtocolError
from .stream.session_log import SessionLog, SessionRecord
from .stream.sni import MAX_HELLO, NotClientHello, server_name

log = logging.getLogger("ingressd.proxy")


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
    passthrough: PassthroughRouter | None = None,
    table: SessionTable | None = None,
) -> None:
    """Listen on the proxy ports until ``stop``, then drain the connections.

    ``sockets``: the HTTP and HTTPS sockets, bound already (and closed here
    whatever happens); else they are bound here (a worker process, with
    SO_REUSEPORT), raising ListenError. ``passthrough``: with
    --enable-ssl-passthrough, the hosts whose TLS connections are spliced.
    ``table``: the process's layer-4 sessions (one is made here if None), which
    the drain waits for as for HTTP connections.
    """
    loop = asyncio.get_running_loop()
    if table is None:
        table = session_table(config, state)
    listeners = proxy_listeners(config)
    if sockets is None:
        http = bind(listeners[0], reuse_port=reuse_port)
        try:
            https = bind(listeners[1], reuse_port=reuse_port)
        except ListenError:
            close(http)
            raise
        sockets = (http, https)
    servers: list[asyncio.AbstractServer | Acceptor] = []
    pending = [
        (sock, tls, listener)
        for tls, listener, socks in zip((False, True), listeners, sockets, strict=True)
        for sock in socks
    ]
    try:
        for sock, tls, listener in pending:
            peeking = tls and passthrough is not None
            if config.use_proxy_protocol or peeking:
                # The first bytes are read before HTTP or TLS owns the connection:
                # the PROXY protocol header, the ClientHello for passthrough.
                handle = _handover(
                    state,
                    selector,
                    tls,
                    config.use_proxy_protocol,
                    passthrough if tls else None,
                    config.streams.settings,
                    table,
                    f"https/{config.https_port}",
                )
                try:
                    acceptor = Acceptor(sock, handle, max_pending=config.proxy.max_connections)
                except OSError as exc:
                    raise ListenError.from_os(listener, exc) from None
                servers.append(acceptor)
                continue
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
        for opened in servers:
            opened.close()
        close([sock for sock, _, _ in pending[len(servers) :]])
        raise
    state.listening = True
    acceptors = [opened for opened in servers if isinstance(opened, Acceptor)]
    try:
        await stop.wait()
    finally:
        # No new connections; those accepted (HTTP, TLS, passthrough sessions,
        # handshakes and peeks under way) get the grace to finish.
        for opened in servers:
            if isinstance(opened, Acceptor):
                opened.stop()
            else:
                opened.close()
        for conn in list(state.connections):
            conn.shutdown()
        deadline = loop.time() + config.shutdown_grace
        while loop.time() < deadline and (
            state.connections or table.total or any(a.pending for a in acceptors)
        ):
            await asyncio.sleep(0.05)
        for acceptor in acceptors:
            acceptor.close()
        table.abort()
        for conn in list(state.connections):
            conn.abort()
        state.pool.close()
        state.h2_pool.close()
        await state.auth.close()
        await state.mirrors.close()
        await asyncio.sleep(0)  # aborted connections report their last requests
        if state.access_log is not None:
            state.access_log.flush()
        tracing = state.tracing
        if tracing is not None:
            # The last spans are exported (a thread: it may wait on the collector).
            state.tracing = None
            await loop.run_in_executor(None, tracing.shutdown)


def _handover(
    state: ProxyState,
    selector: CertificateSelector,
    tls: bool,
    proxy_protocol: bool,
    passthrough: PassthroughRouter | None,
    settings: StreamSettings,
    table: SessionTable,
    listener: str,
) -> Handler:
    """Each connection's first bytes read, then the connection handed on.

    --use-proxy-protocol: the PROXY header (bounded in size and time; no valid
    header, no connection), whose client address is then the client's.
    --enable-ssl-passthrough (the TLS port): the ClientHello peeked at, not
    consumed; a passthrough host's connection is spliced to its backend as it
    came, any other terminated here as without passthrough.
    """
    loop = asyncio.get_running_loop()
    sessions = SessionLog(state.stats, state.access_log)

    async def handle(conn: socket.socket) -> None:
        # proxy-protocol-header-timeout, read per connection: a change applies at once.
        wait = state.settings.proxy_protocol_timeout if proxy_protocol else HEADER_TIMEOUT
        deadline = loop.time() + wait
        source: str | None = None
        if proxy_protocol:
            try:
                header = await read_proxy_header(loop, conn, MAX_HEADER, deadline)
            except (PeekError, ProxyProtocolError, OSError) as exc:
                log.info("client %s: PROXY protocol: %s: connection closed", _peer(conn), exc)
                conn.close()
                return
            if header.source is not None:
                source = header.source[0]
        if passthrough is not None and passthrough.table.hosts:
            try:
                host = await peek(loop, conn, MAX_HELLO, deadline, server_name)
            except (PeekError, NotClientHello, OSError) as exc:
                log.info("client %s: TLS: %s: connection closed", source or _peer(conn), exc)
                conn.close()
                return
            backend = passthrough.backend_for(host) if host else None
            if backend is not None:
                client = source or _peer(conn)
                if not backend.endpoints:
                    conn.close()
                    sessions.record(
                        loop,
                        SessionRecord("passthrough", host, backend.name, client, "", 502, 0, 0, 0),
                    )
                    return
                claim = table.claim(listener)
                if claim is None:
                    conn.close()
                    sessions.refused(
                        loop,
                        SessionRecord("passthrough", host, backend.name, client, "", 503, 0, 0, 0),
                    )
                    return
                target = Target("passthrough", host, backend.name, backend.endpoints)
                await splice_to(conn, target, client, settings, sessions, claim=claim)
                return
        try:
            await loop.connect_accepted_socket(
                protocol_factory(state, tls, source),
                conn,
                ssl=selector.default_context if tls else None,
            )
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            # A failed TLS handshake: the transport closed the socket already.
            log.debug("client %s: %s", source or _peer(conn), exc)
            conn.close()

    return handle


def session_table(config: ServeConfig, state: ProxyState) -> SessionTable:
    """The process's table of layer-4 sessions, bounded as configured."""
    settings = config.streams.settings
    return SessionTable(
        settings.max_sessions, settings.max_sessions_per_listener, state.stats.stream_open
    )


def _peer(conn: socket.socket) -> str:
    try:
        return str(conn.getpeername()[0])
    except OSError:
        return "?"
