"""global-rate-limit: requests per window per key, counted per pod.

ingress-nginx (annotations/globalratelimit/main.go, lua/global_throttle.lua)
counts these in memcached, shared by every controller pod, with
lua-resty-global-throttle's sliding window: ``global-rate-limit`` requests per
``global-rate-limit-window`` per value of ``global-rate-limit-key`` (default
``$remote_addr``), a request allowed while the last window's count, weighted by
how much of it still overlaps, plus this window's stays under the limit;
clients in ``global-rate-limit-ignored-cidrs`` are never counted, the rest get
``global-rate-limit-status-code`` (429). Without memcached configured
ingress-nginx enforces nothing. A key that renders empty falls back to the
client's address (``global_throttle.lua``: ``if not key_value or key_value ==
""`` then ``ngx.var.remote_addr``): leaving out the header a key is made of
does not escape the limit.

ingressd has no memcached. It counts with the same sliding window in the limit
table its worker processes share (policy/limits.py, as limit-rps does), so the
limit holds per pod: with R replicas behind a load balancer a key may make up
to R times the limit. Counters are per Ingress (its paths together), as
ingress-nginx's namespace is the Ingress's UID.

**A full table fails closed.** global_throttle.lua fails open when memcached
errs (``-- fail open``: the request goes ahead); ingressd's table is local
memory an outsider can fill by cycling keys (many addresses, or a key from a
header), so its failure must not lift the limit. As nginx's limit_req zone
(``ngx_http_limit_req_lookup``: ``ngx_http_limit_req_expire(ctx, 0)`` drops the
least recently used nodes, and when it still cannot allocate the request gets
the limit's status), a new key takes a free or drained entry of its bucket, else
the least recently seen one without requests in flight (``LimitTable._allocate``);
only when every entry of the bucket holds requests in flight is the request
refused with ``global-rate-limit-status-code``, counted in
``ingressd_limit_table_full_total`` and logged at most every 10 s.
"""

from __future__ import annotations

import hashlib
import ipaddress

from ..model.policy import GlobalRateLimit
from .limits import ADMITTED, NO_ROOM, LimitRegistry

_MASK63 = (1 << 63) - 1
MAX_LIMITERS = 4096


def zone_id(ingress: str, config: GlobalRateLimit) -> int:
    """The same in every process for the same Ingress and settings (as limits.zone_id)."""
    digest = hashlib.blake2b(f"global\0{ingress}\0{config!r}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "little") & _MASK63) | 1


class GlobalLimits:
    """The global-rate-limit counters of a process, in the shared limit table."""

    __slots__ = ("_zones", "table_full")

    def __init__(self) -> None:
        self._zones: dict[tuple[str, GlobalRateLimit], int] = {}
        # Whether the last refusal was for want of room in the table (not the limit).
        self.table_full = False

    def admit(
        self,
        registry: LimitRegistry,
        ingress: str,
        config: GlobalRateLimit,
        key: str,
        client_ip: str,
        now: float,
    ) -> bool:
        """Whether the request of ``key`` may go ahead at ``now`` (seconds); counted if so.

        False also when the table has no room to count it (``table_full`` says so)."""
        self.table_full = False
        if not key:
            key = client_ip  # global_throttle.lua: an empty key is $remote_addr
            if not key:
                return True  # nothing to count by, as nginx leaves an empty key alone
        if config.ignored:
            try:
                addr = ipaddress.ip_address(client_ip)
            except ValueError:
                addr = None
            if addr is not None and any(addr in net for net in config.ignored):
                return True
        table = registry.table
        zone = self._zones.get((ingress, config))
        if zone is None:
            if len(self._zones) >= MAX_LIMITERS:
                self._zones.clear()  # a zone is worked out again the same
            zone = self._zones[(ingress, config)] = zone_id(ingress, config)
        bucket, tag = table.locate(table.hasher(zone), key)
        verdict = table.window_admit(
            zone, bucket, tag, int(now * 1000), config.window * 1000, config.limit
        )
        if verdict == NO_ROOM:
            # Refused, unlike global_throttle.lua's fail-open (see the module docstring).
            table.no_room(int(now * 1000))
            self.table_full = True
            return False
        return verdict == ADMITTED
