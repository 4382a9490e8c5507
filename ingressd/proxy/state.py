"""What every client connection of a process shares: the live routing table,
the upstream pool, the settings, and the per-process machinery around them."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from typing import Final

from ..model.table import RouteTable
from ..observe.access_log import AccessLog
from ..observe.stats import RequestStats
from ..observe.tracing import Tracing
from ..policy import ext_auth
from ..policy.ewma import EwmaStore
from ..policy.global_limit import GlobalLimits
from ..policy.health import EndpointHealth
from ..policy.limits import LimitRegistry
from . import http
from .mirror import Mirrors
from .settings import ProxySettings
from .streams import Connection, Outgoing
from .upstream_h1 import UpstreamPool
from .upstream_h2 import H2Pool

log: Final = logging.getLogger("ingressd.proxy")

# Upstream timeouts are whole seconds (as ingress-nginx's annotations): checking
# them four times a second is precise enough and costs nothing per request.
SWEEP_INTERVAL: Final = 0.25
# At the connection cap: how many open connections are looked at for an idle
# one (bounded: under a flood of new connections, each must stay cheap), and
# how often the cap is logged.
ROOM_SEARCH: Final = 64
CAP_LOG_EVERY: Final = 10.0

# X-Request-ID when the client sent none: 32 hex digits like nginx's $request_id,
# a random per-process prefix (workers are spawned, so each draws its own) and a
# counter, so unique without a syscall each.
_HEX_BYTE: Final = tuple(b"%02x" % i for i in range(256))


class _RequestIds:
    """The counter's last two hex digits come from a table and the rest is
    formatted once per 256 ids: one concatenation per request, where
    %-formatting the whole id cost about four times as much."""

    def __init__(self) -> None:
        self.prefix = os.urandom(8).hex().encode()
        self.count = int.from_bytes(os.urandom(4))
        self.stem = b""

    def next(self) -> bytes:
        count = self.count = self.count + 1
        low = count & 0xFF
        if low == 0 or not self.stem:
            self.stem = b"%b%014x" % (self.prefix, count >> 8)
        return self.stem + _HEX_BYTE[low]


_IDS: Final = _RequestIds()


def new_request_id() -> bytes:
    return _IDS.next()


class ProxyState:
    """What every connection shares: the live table, the pool, the settings."""

    def __init__(self, table: RouteTable, settings: ProxySettings) -> None:
        self.table = table  # replaced whole on every rebuild: one atomic store
        self.settings = settings
        self.pool = UpstreamPool(connect_timeout=settings.connect_timeout)
        self.apply_settings(settings)
        # HTTP/2 upstreams (backend-protocol GRPC, GRPCS): multiplexed connections
        self.h2_pool = H2Pool(connect_timeout=settings.connect_timeout)
        self.connections: set[Connection] = set()
        self.listening = False  # the proxy ports are open
        self.draining = False  # shutting down: no new keep-alive
        # limit-* counters by Ingress: they outlive the tables (Controller prunes them)
        self.limits = LimitRegistry()
        # global-rate-limit counters: in the same table as limit-* (counted per pod)
        self.global_limits = GlobalLimits()
        # load-balance: ewma response-time averages by endpoint: they outlive the tables
        self.ewma = EwmaStore()
        # passive health: failing endpoints by address; outlives the tables too
        self.health = EndpointHealth(settings.max_fails, settings.fail_timeout)
        self.auth = ext_auth.AuthClient()  # auth-url subrequests
        self.mirrors = Mirrors()  # mirror-target copies
        # Counted per request, read at scrape time (observe/stats.py, observe/metrics.py)
        self.stats = RequestStats()
        self.access_log = AccessLog(settings.access_log) if settings.access_log != "off" else None
        if self.access_log is not None:
            self.access_log.set_format(settings.log_format)
        # OpenTelemetry (observe/tracing.py): None while no route is traced, so an
        # untraced request pays one attribute test. Set by the controller per table.
        self.tracing: Tracing | None = None
        # Exchanges waiting on an upstream, checked for timeouts by one sweep
        # every SWEEP_INTERVAL rather than a timer per request.
        self.waiting: set[Outgoing] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._cap_logged = -CAP_LOG_EVERY  # when the connection cap was last logged

    def apply_settings(self, settings: ProxySettings) -> None:
        """New settings (the controller ConfigMap's, with each table): read per request
        from ``settings``, and the upstream pool's limits set on the live pool."""
        self.settings = settings
        http.set_server_header(settings.server_tokens, settings.backend_server_header)
        access = getattr(self, "access_log", None)  # None before __init__ made it
        if access is not None:
            access.set_format(settings.log_format)
        pool = self.pool
        pool.max_idle = settings.upstream_keepalive_connections
        pool.idle_timeout = settings.upstream_keepalive_timeout
        pool.max_requests = settings.upstream_keepalive_requests
        pool.max_age = settings.upstream_keepalive_time

    def make_room(self) -> bool:
        """At the connection cap: close an idle keep-alive connection, if one of
        the first few looked at is idle (a client sees the same as after its
        keep-alive timeout). False when none is: the new connection is refused."""
        now = time.monotonic()
        if now - self._cap_logged >= CAP_LOG_EVERY:
            self._cap_logged = now
            log.warning(
                "%d client connections open, the --max-connections of this process: "
                "closing idle ones, refusing new ones with 503 while none is idle",
                len(self.connections),
            )
        for conn in itertools.islice(self.connections, ROOM_SEARCH):
            if conn.idle:
                conn.close()
                self.connections.discard(conn)
                return True
        return False

    def watch(self, ex: Outgoing) -> None:
        self.waiting.add(ex)
        if self._sweeper is None:
            loop = ex.client.loop
            self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for ex in list(self.waiting):
            ex.check_timeout(now)
        self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep, loop) if self.waiting else None
