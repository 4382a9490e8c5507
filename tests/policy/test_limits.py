"""limit-rps, limit-rpm, limit-connections: nginx's arithmetic with an injected clock,
the annotations, the registry across rebuilds, and (in process, against a real
echo upstream) that every way an exchange can end gives its connection place back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from collections.abc import AsyncIterator, Callable

import pytest
from k8s_objects import build, endpoint_slice, ingress, path, rule, service

from ingressd.echo import start_echo
from ingressd.model.policy import LimitConfig
from ingressd.policy.annotations import parse_policy
from ingressd.policy.limits import (
    EXEMPT_CACHE,
    WAYS,
    ConnLimiter,
    IngressLimiter,
    LimitRegistry,
    RateLimiter,
    Slot,
)
from ingressd.proxy.client_h1 import protocol_factory
from ingressd.proxy.pages import page
from ingressd.proxy.settings import ProxySettings
from ingressd.proxy.state import ProxyState

NGINX = "nginx.ingress.kubernetes.io/"
IP = "192.0.2.7"


def burst_of(limiter: RateLimiter, now: float, n: int = 20) -> int:
    """How many of ``n`` requests at the same instant are allowed."""
    return sum(limiter.allow(IP, now) for _ in range(n))


# -- the leaky bucket ----------------------------------------------------------------------


def test_rps_with_burst_multiplier_5() -> None:
    limiter = IngressLimiter("default/web", LimitConfig(rps=1)).rates[0][0]
    assert [limiter.allow(IP, 100.0) for _ in range(7)] == [True] * 6 + [False]
    assert not limiter.allow(IP, 100.999)
    assert limiter.allow(IP, 101.0)  # one request drained in one second
    assert not limiter.allow(IP, 101.0)


def test_rps_2_multiplier_1_allows_three_at_once() -> None:
    # burst = 2 * 1: the first request starts at excess 0, then 1 and 2 fit.
    limiter = RateLimiter(2, 1, burst=2)
    assert burst_of(limiter, 0.0, 10) == 3
    assert burst_of(limiter, 0.499, 10) == 0  # half a second frees the next one
    assert burst_of(limiter, 0.5, 10) == 1


def test_rpm_uses_nginx_truncated_rate() -> None:
    # nginx stores 2 r/m as 2 * 1000 // 60 = 33 thousandths per second, not 33.33.
    limiter = RateLimiter(2, 60, burst=2)
    assert limiter.rate == 33
    assert burst_of(limiter, 0.0) == 3
    assert not limiter.allow(IP, 30.0)  # 33 * 30 = 990 < 1000 drained
    assert limiter.allow(IP, 30.4)  # 33 * 30.4 = 1003
    assert not limiter.allow(IP, 30.4)


def test_decay_matches_nginx_step_by_step() -> None:
    # excess = max(0, excess - rate * ms // 1000 + 1000), allowed while <= burst * 1000
    limiter = RateLimiter(2, 1, burst=2)  # rate 2000, burst 2000
    steps = [
        (0.0, 0, True),  # a new client starts at 0
        (0.1, 800, True),  # 0 - 200 + 1000
        (0.2, 1600, True),  # 800 - 200 + 1000
        (0.3, 2400, False),  # over 2000: rejected, nothing recorded
        (0.5, 2000, True),  # 1600 - 600 + 1000, measured from the last accepted request
        (0.5004, 3000, False),  # same millisecond: no decay
        (10.0, 0, True),  # long idle: 2000 - 19000 + 1000 < 0 -> 0, not 1000
    ]
    for now, excess, allowed in steps:
        ms = int(now * 1000)
        assert limiter.check(IP, ms) == excess, now
        assert limiter.allow(IP, now) is allowed, now


def test_rps_and_rpm_together_account_all_or_nothing() -> None:
    lim = IngressLimiter("default/web", LimitConfig(rps=10, rpm=3, burst_multiplier=1))
    results = [lim.admit(IP, 0.0) for _ in range(6)]
    assert results[:4] == [None] * 4
    assert all(isinstance(r, str) and "3 requests per minute" in r for r in results[4:])
    rps = lim.rates[0][0]
    assert rps.check(IP, 0) == 4000  # the rejected requests were not counted per second


def test_refusal_names_limit_client_and_ingress() -> None:
    lim = IngressLimiter("shop/front", LimitConfig(rps=1, burst_multiplier=1))
    assert lim.admit("1.2.3.4", 0.0) is None
    assert lim.admit("1.2.3.4", 0.0) is None
    assert lim.admit("1.2.3.4", 0.0) == (
        "503 Service Unavailable: rate limit of 1 requests per second exceeded "
        "for 1.2.3.4 on Ingress shop/front\n"
    )
    assert lim.admit("1.2.3.5", 0.0) is None  # per client address


def test_allowlist_is_exempt_from_every_limit() -> None:
    allow = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))
    lim = IngressLimiter(
        "default/web", LimitConfig(rps=1, connections=1, burst_multiplier=1, allowlist=allow)
    )
    for ip in ("127.0.0.1", "127.9.9.9", "2001:db8::1"):
        assert all(lim.admit(ip, 0.0) is None for _ in range(50))
    assert isinstance(lim.admit("10.0.0.1", 0.0), Slot)
    refused = lim.admit("10.0.0.1", 0.0)  # within the rate's burst, over the connections
    assert isinstance(refused, str) and "concurrent" in refused
    assert len(lim.rates[0][0]) == 1  # only the limited client is remembered
    for i in range(5000):  # what the allow-list said is remembered, within bounds
        lim.admit(f"127.0.{i >> 8}.{i & 255}", 0.0)
    assert 0 < len(lim._exempt_cache) <= EXEMPT_CACHE


# -- concurrency ---------------------------------------------------------------------------


def test_connection_counts_never_leak_or_go_negative() -> None:
    lim = IngressLimiter("default/web", LimitConfig(connections=2))
    a, b = lim.admit(IP, 0.0), lim.admit(IP, 0.0)
    assert isinstance(a, Slot) and isinstance(b, Slot)
    refused = lim.admit(IP, 0.0)
    assert isinstance(refused, str) and "limit of 2 concurrent requests" in refused
    assert lim.conns is not None and lim.conns.count(IP) == 2
    a.release()
    a.release()  # idempotent: the second release does nothing
    assert lim.conns.count(IP) == 1
    c = lim.admit(IP, 0.0)
    assert isinstance(c, Slot)
    b.release()
    c.release()
    assert lim.conns.count(IP) == 0 and len(lim.conns) == 0

    conns = ConnLimiter(1)
    conns.release("never-acquired")
    assert conns.count("never-acquired") == 0 and len(conns) == 0
    assert conns.acquire(IP) and not conns.acquire(IP)


# -- bounded memory ------------------------------------------------------------------------


def test_table_stays_bounded_under_a_scan_of_distinct_addresses() -> None:
    limiter = RateLimiter(1, 1, burst=5, cap=100_000)
    table = limiter.table
    assert table.capacity == 100_000
    keys = [f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}" for i in range(200_000)]
    for key in keys:  # all at once: nothing has drained, the oldest go
        limiter.allow(key, 0.0)
    # Each bucket of WAYS entries keeps the WAYS clients it saw last (a keyed hash
    # picks the bucket, so buckets fill unevenly; the table never holds more).
    by_bucket: dict[int, list[str]] = {}
    for key in keys:
        by_bucket.setdefault(table.locate(limiter._hasher, key)[0], []).append(key)
    kept = {key for bucket in by_bucket.values() for key in bucket[-WAYS:]}
    assert 0.99 * table.capacity < len(kept) == len(limiter) <= table.capacity
    assert limiter.check("10.3.13.63", 0) == 1000  # the newest is still there
    for key in keys[::101]:
        assert limiter.check(key, 0) == (1000 if key in kept else 0), key  # 0: forgotten


def test_drained_clients_are_forgotten_as_new_ones_arrive() -> None:
    limiter = RateLimiter(10, 1, burst=50)
    for i in range(200_000):  # one new client per millisecond
        limiter.allow(f"k{i}", i / 1000)
    # A client's bucket is as good as new 100 ms (1000 / rate) after its request.
    assert len(limiter) <= 110


def test_forgetting_a_drained_client_changes_nothing() -> None:
    kept, fresh = RateLimiter(2, 1, burst=1), RateLimiter(2, 1, burst=1)
    kept.allow(IP, 0.0)
    kept.allow(IP, 0.0)  # excess 1000
    # Drained enough to forget (rate * 1 s = 2000 >= 1000 + 1000): same as never seen.
    kept.allow("other", 1.0)  # a new key triggers the expiry check
    assert len(kept) == 1
    assert [kept.allow(IP, 1.0) for _ in range(3)] == [fresh.allow(IP, 1.0) for _ in range(3)]


# -- annotations ---------------------------------------------------------------------------


def policy(**annotations: str):  # type: ignore[no-untyped-def]
    return parse_policy({NGINX + k.replace("_", "-"): v for k, v in annotations.items()})


def test_limit_annotations_make_a_config() -> None:
    p, messages = policy(
        limit_rps="5",
        limit_rpm="100",
        limit_connections="3",
        limit_burst_multiplier="2",
        limit_allowlist="10.0.0.0/8, 192.0.2.1",
        limit_whitelist="172.16.0.0/12",
    )
    assert messages == []
    assert p.limits == LimitConfig(
        rps=5,
        rpm=100,
        connections=3,
        burst_multiplier=2,
        allowlist=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.0.2.1/32")),
    )
    assert policy(limit_rps="1", limit_whitelist="10.0.0.1")[0].limits.allowlist == (  # type: ignore[union-attr]
        ipaddress.ip_network("10.0.0.1/32"),
    )
    # Without a limit, the multiplier and allow-list do nothing.
    assert policy(limit_burst_multiplier="2", limit_allowlist="10.0.0.1")[0].limits is None


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "", "ten", "²", "5r/s"])
@pytest.mark.parametrize("name", ["limit-rps", "limit-rpm", "limit-connections"])
def test_invalid_limits_are_reported_and_not_applied(name: str, value: str) -> None:
    p, messages = parse_policy({NGINX + name: value})
    assert p.limits is None
    assert messages == [
        f"annotation {NGINX}{name}={value!r} is invalid: {value!r} is not a whole number "
        "greater than 0; the Ingress is served without this limit"
    ]


def test_invalid_multiplier_and_allowlist_fall_back() -> None:
    p, messages = policy(limit_rps="2", limit_burst_multiplier="0", limit_allowlist="nope")
    assert p.limits == LimitConfig(rps=2)  # multiplier 5, nobody exempt
    assert "limit-allowlist='nope' is invalid" in messages[0]
    assert messages[0].endswith("; no client is exempt from the limits")
    assert "limit-burst-multiplier='0' is invalid" in messages[1]
    assert messages[1].endswith("; the default multiplier 5 applies")
    # An invalid allowlist does not fall back to the older limit-whitelist.
    p, _ = policy(limit_rps="2", limit_allowlist="nope", limit_whitelist="10.0.0.1")
    assert p.limits is not None and p.limits.allowlist == ()


def test_invalid_value_is_a_problem_naming_the_ingress() -> None:
    table = build(
        ingress("web", [rule("a.test", path("/", "web"))], annotations={NGINX + "limit-rps": "0"}),
        service("web"),
        endpoint_slice("web", ["10.0.0.1"]),
    )
    assert [str(p) for p in table.problems] == [
        f"Ingress default/web: annotation {NGINX}limit-rps='0' is invalid: '0' is not a whole "
        "number greater than 0; the Ingress is served without this limit"
    ]
    route = table.route_for("a.test", "/")
    assert route is not None and route.policy.limits is None


# -- the registry: per Ingress, across rebuilds ---------------------------------------------


def limited_table(**limits: str):  # type: ignore[no-untyped-def]
    notes = {NGINX + k.replace("_", "-"): v for k, v in limits.items()}
    return build(
        ingress("web", [rule("a.test", path("/a", "web"), path("/b", "api"))], annotations=notes),
        ingress("other", [rule("b.test", path("/", "web"))]),
        service("web"),
        service("api"),
        endpoint_slice("web", ["10.0.0.1"]),
        endpoint_slice("api", ["10.0.0.2"]),
    )


def test_registry_shares_limits_per_ingress_and_survives_rebuilds() -> None:
    registry = LimitRegistry()
    table = limited_table(limit_rps="1", limit_burst_multiplier="1")
    a, b = table.route_for("a.test", "/a"), table.route_for("a.test", "/b")
    assert a is not None and b is not None and a.backend is not b.backend
    assert table.route_for("b.test", "/").policy.limits is None  # type: ignore[union-attr]
    lim = registry.get(a.ingress, a.policy.limits)  # type: ignore[arg-type]
    assert registry.get(b.ingress, b.policy.limits) is lim  # type: ignore[arg-type]

    rebuilt = limited_table(limit_rps="1", limit_burst_multiplier="1")
    registry.retain(rebuilt)
    again = rebuilt.route_for("a.test", "/a")
    assert again is not None and again.policy.limits is not a.policy.limits
    assert registry.get(again.ingress, again.policy.limits) is lim  # type: ignore[arg-type]

    changed = limited_table(limit_rps="2")
    registry.retain(changed)
    assert len(registry) == 0  # the old settings' counters are dropped
    new = changed.route_for("a.test", "/a")
    assert registry.get(new.ingress, new.policy.limits) is not lim  # type: ignore[union-attr,arg-type]

    registry.retain(limited_table())  # annotations removed
    assert len(registry) == 0


# -- in process: every ending releases its place --------------------------------------------


class Proxy:
    def __init__(self, state: ProxyState, port: int) -> None:
        self.state = state
        self.port = port

    def limiter(self, host: str) -> IngressLimiter:
        route = self.state.table.route_for(host, "/")
        assert route is not None and route.policy.limits is not None
        return self.state.limits.get(route.ingress, route.policy.limits)

    def in_flight(self, host: str) -> int:
        conns = self.limiter(host).conns
        assert conns is not None
        return conns.count("127.0.0.1")

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def request(self, host: str, target: str, extra: str = "") -> bytes:
        reader, writer = await self.open()
        try:
            head = f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
            writer.write(head.encode())
            return await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()


async def eventually(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    echo = await start_echo("127.0.0.1", 0, "web")

    async def hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()  # accepts, then closes without an answer

    closer = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    refused = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    refused_port = refused.sockets[0].getsockname()[1]
    refused.close()
    await refused.wait_closed()

    def limited(name: str, svc: str, **more: str) -> dict:
        notes = {NGINX + "limit-connections": "1", **{NGINX + k: v for k, v in more.items()}}
        return ingress(name, [rule(f"{name}.test", path("/", svc))], annotations=notes)

    table = build(
        limited("ok", "web"),
        limited("slow", "web", **{"proxy-read-timeout": "1"}),
        limited("closer", "closer"),
        limited("refused", "refused"),
        service("web"),
        service("closer"),
        service("refused"),
        endpoint_slice("web", ["127.0.0.1"], echo.port),
        endpoint_slice("closer", ["127.0.0.1"], closer.sockets[0].getsockname()[1]),
        endpoint_slice("refused", ["127.0.0.1"], refused_port),
    )
    assert not table.problems, table.problems
    state = ProxyState(table, ProxySettings())
    server = await asyncio.get_running_loop().create_server(
        protocol_factory(state, False), "127.0.0.1", 0
    )
    try:
        yield Proxy(state, server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for conn in list(state.connections):
            conn.transport.abort()  # type: ignore[union-attr]
        state.pool.close()
        closer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)
        await echo.close()


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


async def test_every_ending_gives_the_place_back(
    proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    # A response, twice in a row: the first one's place is free again.
    for _ in range(2):
        assert status(await proxy.request("ok.test", "/")) == 200
        assert proxy.in_flight("ok.test") == 0

    # While a request is in flight the next is refused.
    _, writer = await proxy.open()
    writer.write(b"GET /_echo/sleep/1000 HTTP/1.1\r\nHost: ok.test\r\n\r\n")
    await eventually(lambda: proxy.in_flight("ok.test") == 1)
    refused = await proxy.request("ok.test", "/")
    assert status(refused) == 503 and refused.endswith(b"\r\n\r\n" + page(503))
    assert "limit of 1 concurrent requests" in caplog.text  # the reason: the log's
    # The client gives up with a reset (after a mere half-close it would still be
    # waiting for its answer).
    writer.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
    )
    writer.transport.abort()
    await eventually(lambda: proxy.in_flight("ok.test") == 0)
    assert status(await proxy.request("ok.test", "/")) == 200

    # Upstream failures and timeouts.
    assert status(await proxy.request("refused.test", "/")) == 502  # cannot connect
    assert proxy.in_flight("refused.test") == 0
    assert status(await proxy.request("closer.test", "/")) == 502  # closed without answering
    assert proxy.in_flight("closer.test") == 0
    assert status(await proxy.request("slow.test", "/_echo/sleep/1500")) == 504
    assert proxy.in_flight("slow.test") == 0

    # A body too large for the route is refused before any place is taken.
    big = await proxy.request("ok.test", "/", "Content-Length: 2000000\r\n")
    assert status(big) == 413 and proxy.in_flight("ok.test") == 0


async def test_a_websocket_holds_its_place_until_it_closes(proxy: Proxy) -> None:
    reader, writer = await proxy.open()
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: ok.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert status(head) == 101
    assert proxy.in_flight("ok.test") == 1
    assert status(await proxy.request("ok.test", "/")) == 503
    writer.close()
    await eventually(lambda: proxy.in_flight("ok.test") == 0)
    assert status(await proxy.request("ok.test", "/")) == 200


def test_a_refusal_says_whether_limit_conn_or_limit_req_refused() -> None:
    """For the ConfigMap's limit-conn-status-code and limit-req-status-code."""
    lim = IngressLimiter("default/web", LimitConfig(rps=1, connections=1, burst_multiplier=1))
    slot = lim.admit(IP, 0.0)
    assert isinstance(slot, Slot)
    refused = lim.admit(IP, 0.0)
    assert isinstance(refused, str) and "concurrent" in refused and lim.refused_conns
    slot.release()
    for _ in range(3):
        refused = lim.admit(IP, 0.0)
        if isinstance(refused, str):
            break
        assert isinstance(refused, Slot)
        refused.release()
    assert isinstance(refused, str) and "rate limit" in refused and not lim.refused_conns
