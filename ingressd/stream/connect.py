"""An accepted socket spliced to the first endpoint that answers (TCP services, passthrough)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from ..model.backend import Endpoint
from .bounds import Claim
from .session_log import SessionLog, SessionRecord
from .splice import Session

log = logging.getLogger("ingressd.stream")

# ingress-nginx's proxy-stream-next-upstream-tries default: endpoints tried
# before a connection is given up (nginx.tmpl: proxy_next_upstream_tries).
NEXT_UPSTREAM_TRIES = 3


@dataclass(frozen=True, slots=True)
class StreamSettings:
    connect_timeout: float = 5.0  # ingress-nginx's proxy-connect-timeout
    # Idle time after which a session is closed: ingress-nginx's
    # proxy-stream-timeout (nginx's proxy_timeout), 600 s.
    idle_timeout: float = 600.0
    # A header from clients (PROXY protocol, a ClientHello) must come within this.
    peek_timeout: float = 5.0
    # UDP: flows kept at once per service (the oldest is dropped past it,
    # --max-udp-flows), and datagrams expected back per datagram sent before a
    # flow ends (ingress-nginx's proxy-stream-responses, nginx's proxy_responses;
    # 0: until idle).
    udp_max_flows: int = 4096
    udp_responses: int = 1
    # Sessions open at once (bounds.py): per process (--max-stream-sessions, as
    # ingress-nginx's max-worker-connections) and per listener
    # (--max-stream-sessions-per-port).
    max_sessions: int = 16384
    max_sessions_per_listener: int = 4096


@dataclass(frozen=True, slots=True)
class Target:
    """Where a session goes and how it is named in metrics and logs."""

    kind: str  # "tcp", "passthrough"
    listen: str
    backend: str
    endpoints: tuple[Endpoint, ...]


_cursor = itertools.count()


async def splice_to(
    conn: socket.socket,
    target: Target,
    client: str,
    settings: StreamSettings,
    sessions: SessionLog,
    preamble: Callable[[socket.socket], bytes] | None = None,
    claim: Claim | None = None,
) -> None:
    """Connect to one of ``target``'s endpoints (round robin, the next on a
    failure), write ``preamble`` to it (a PROXY protocol header), then splice.
    Owns ``conn``: it is closed on every failure. Owns ``claim`` (the session's
    place in the process's SessionTable) too: released when the session ends,
    however it ends."""
    try:
        await _splice_to(conn, target, client, settings, sessions, preamble, claim)
    except BaseException:
        if claim is not None:
            claim.release()  # cancelled while connecting (shutdown), say
        raise


async def _splice_to(
    conn: socket.socket,
    target: Target,
    client: str,
    settings: StreamSettings,
    sessions: SessionLog,
    preamble: Callable[[socket.socket], bytes] | None,
    claim: Claim | None,
) -> None:
    loop = asyncio.get_running_loop()

    def ended(session: Session) -> None:
        if claim is not None:
            claim.release()
        sessions.record(
            loop,
            SessionRecord(
                target.kind,
                target.listen,
                target.backend,
                client,
                chosen,
                200,
                session.from_client,
                session.to_client,
                session.duration,
            ),
        )

    session = Session(loop, settings.idle_timeout, ended)
    chosen = ""
    eps = target.endpoints
    start = next(_cursor)
    for i in range(min(len(eps), NEXT_UPSTREAM_TRIES)):
        ep = eps[(start + i) % len(eps)]
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: session.upstream, ep.host, ep.port),
                settings.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            log.warning(
                "%s %s: upstream %s: %s", target.kind, target.listen, ep, exc or "timed out"
            )
            continue
        chosen = str(ep)
        break
    if not chosen:
        conn.close()
        if claim is not None:
            claim.release()
        sessions.record(
            loop,
            SessionRecord(
                target.kind, target.listen, target.backend, client, "", 502, 0, 0, session.duration
            ),
        )
        return
    up = session.upstream.transport
    assert up is not None
    if preamble is not None:
        up.write(preamble(conn))
    try:
        await loop.connect_accepted_socket(lambda: session.client, conn)
    except OSError:
        conn.close()
        session.client.lost = True
        up.abort()
        session.end()
        return
    if claim is not None:
        claim.session = session
    session.start_timer()
