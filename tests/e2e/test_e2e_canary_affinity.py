"""End to end: canary Ingresses and cookie affinity, through the proxy.

One ingressd serves a main Ingress for every host, one canary Ingress per
canary behaviour, and a sticky Service with two endpoints (two echo servers on
127.0.0.1, one EndpointSlice each, since a slice's port is shared by its
endpoints). The echo servers answer JSON naming themselves as "service".
"""

from __future__ import annotations

import asyncio
import http.client
import json
from collections import Counter
from collections.abc import Iterator, Mapping

import pytest
from e2e_helpers import LOCALHOST, BackgroundLoop, EchoServers, Ingressd, echo_backend
from k8s_objects import endpoint_slice, ingress, ingress_class, path, rule, service

from ingressd.model.objects import Obj

A = "nginx.ingress.kubernetes.io/"

CANARIES = {
    "header.test": {"canary-by-header": "X-Canary"},
    "value.test": {"canary-by-header": "X-Canary", "canary-by-header-value": "v2"},
    "pattern.test": {"canary-by-header": "X-Canary", "canary-by-header-pattern": "beta|gamma"},
    "cookie.test": {"canary-by-cookie": "use_canary"},
    "weight30.test": {"canary-weight": "30"},
    "weight0.test": {"canary-weight": "0"},
    "weight100.test": {"canary-weight": "100"},
    "orphan.test": {"canary-weight": "100"},  # no main Ingress serves this host
}


def canary(host: str, rules: Mapping[str, str]) -> Obj:
    return ingress(
        host.split(".")[0] + "-canary",
        [rule(host, path("/", "canary"))],
        annotations={A + "canary": "true", **{A + k: v for k, v in rules.items()}},
        created=2,
    )


def sticky(host: str, service_name: str, **extra: str) -> Obj:
    return ingress(
        host.split(".")[0],
        [rule(host, path("/", service_name))],
        annotations={
            A + "affinity": "cookie",
            **{A + k.replace("_", "-"): v for k, v in extra.items()},
        },
    )


class CookieUpstream:
    """A raw upstream whose responses carry their own Set-Cookie and CORS header."""

    RESPONSE = (
        b"HTTP/1.1 200 OK\r\nSet-Cookie: app=upstream; Path=/\r\n"
        b"Access-Control-Allow-Origin: https://from-upstream.example\r\n"
        b"Content-Length: 3\r\n\r\nok\n"
    )

    def __init__(self, loop: BackgroundLoop) -> None:
        self._loop = loop
        self._server = loop.run(asyncio.start_server(self._handle, LOCALHOST, 0))
        self.port: int = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(1000):
                await reader.readuntil(b"\r\n\r\n")  # GETs without a body
                writer.write(self.RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        async def _close() -> None:
            self._server.close()
            await self._server.wait_closed()

        self._loop.run(_close(), timeout=10)


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, upstream_loop: BackgroundLoop, curl_binary: str
) -> Iterator[Ingressd]:
    workdir = tmp_path_factory.mktemp("e2e-canary-affinity")
    echo = EchoServers(upstream_loop, ["main", "canary", "sticky-a", "sticky-b"])
    raw = CookieUpstream(upstream_loop)
    objs = [
        ingress_class(),
        *echo_backend("main", echo["main"]),
        *echo_backend("canary", echo["canary"]),
        service("sticky"),
        endpoint_slice("sticky", [LOCALHOST], echo["sticky-a"], name="sticky-a"),
        endpoint_slice("sticky", [LOCALHOST], echo["sticky-b"], name="sticky-b"),
        *echo_backend("cookies", raw.port),
        ingress(
            "main",
            [rule(host, path("/", "main")) for host in CANARIES if host != "orphan.test"],
            created=1,
        ),
        *(canary(host, rules) for host, rules in CANARIES.items()),
        sticky("sticky.test", "sticky"),
        sticky("cookies.test", "cookies", session_cookie_max_age="60"),
    ]
    proc = Ingressd(workdir / "manifests", workdir / "ingressd.log")
    proc.update({"all.yaml": objs})
    try:
        yield proc.start()
    finally:
        proc.stop()
        raw.close()
        echo.close()


def served(
    proxy: Ingressd, host: str, n: int = 1, headers: Mapping[str, str] | None = None
) -> Counter[str]:
    """Which echo service answered each of ``n`` requests, over one keep-alive connection."""
    conn = http.client.HTTPConnection(LOCALHOST, proxy.http_port, timeout=10)
    counts: Counter[str] = Counter()
    try:
        for _ in range(n):
            conn.request("GET", "/", headers={"Host": host, **(headers or {})})
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200, body
            counts[json.loads(body)["service"]] += 1
    finally:
        conn.close()
    return counts


def only(proxy: Ingressd, host: str, headers: Mapping[str, str] | None = None) -> str:
    counts = served(proxy, host, 10, headers)
    assert len(counts) == 1, counts
    return next(iter(counts))


def test_canary_by_header_always_and_never(proxy: Ingressd) -> None:
    assert only(proxy, "header.test", {"X-Canary": "always"}) == "canary"
    assert only(proxy, "header.test", {"X-Canary": "never"}) == "main"
    assert only(proxy, "header.test", {"X-Canary": "sometimes"}) == "main"
    assert only(proxy, "header.test") == "main"
    # curl too: the header decides, whatever else the request carries
    r = proxy.get("header.test", "/deep/path?q=1", "-H", "X-Canary: always")
    assert (r.json()["service"], r.json()["path"], r.json()["query"]) == (
        "canary",
        "/deep/path",
        "q=1",
    )


def test_canary_by_header_value_and_pattern(proxy: Ingressd) -> None:
    assert only(proxy, "value.test", {"X-Canary": "v2"}) == "canary"
    assert only(proxy, "value.test", {"X-Canary": "V2"}) == "main"
    assert only(proxy, "value.test", {"X-Canary": "always"}) == "main"
    assert only(proxy, "pattern.test", {"X-Canary": "user-gamma-3"}) == "canary"
    assert only(proxy, "pattern.test", {"X-Canary": "alpha"}) == "main"


def test_canary_by_cookie(proxy: Ingressd) -> None:
    assert only(proxy, "cookie.test", {"Cookie": "a=1; use_canary=always"}) == "canary"
    assert only(proxy, "cookie.test", {"Cookie": "use_canary=never"}) == "main"
    assert only(proxy, "cookie.test", {"Cookie": "use_canary=yes"}) == "main"
    assert only(proxy, "cookie.test") == "main"


def test_canary_by_weight(proxy: Ingressd) -> None:
    assert only(proxy, "weight0.test") == "main"
    assert only(proxy, "weight100.test") == "canary"
    counts = served(proxy, "weight30.test", 400)
    assert set(counts) <= {"main", "canary"}
    # 30% of 400 is 120, with a standard deviation of about 9: this is over 4 of them.
    assert 80 <= counts["canary"] <= 160, counts


def test_a_canary_without_its_main_ingress_is_reported(proxy: Ingressd) -> None:
    proxy.wait_for_log("no main Ingress serves host orphan.test path / (Prefix); canary ignored")
    assert proxy.get("orphan.test", "/", check=False).status == 404
    # Nothing else is reported: the other canaries found their main routes.
    assert proxy.log().count("rejected:") == 1, proxy.log()


def test_affinity_cookie_sticks_to_one_endpoint(proxy: Ingressd) -> None:
    first = proxy.get("sticky.test", "/cart")
    set_cookie = first.header("Set-Cookie")
    assert set_cookie is not None
    name_value, *attributes = set_cookie.split("; ")
    name, _, value = name_value.partition("=")
    assert name == "INGRESSCOOKIE" and len(value) == 16 and "127.0.0.1" not in value
    assert attributes == ["Path=/", "HttpOnly"]
    server = first.json()["service"]
    assert server in ("sticky-a", "sticky-b")
    cookie = {"Cookie": f"{name}={value}"}
    assert served(proxy, "sticky.test", 20, cookie) == Counter({server: 20})
    again = proxy.get("sticky.test", "/", "-H", f"Cookie: {name}={value}")
    assert again.json()["service"] == server and again.header("Set-Cookie") is None
    # Without the cookie, round robin reaches both endpoints.
    assert set(served(proxy, "sticky.test", 10)) == {"sticky-a", "sticky-b"}
    # A cookie that names no endpoint gets a new one.
    other = proxy.get("sticky.test", "/", "-H", f"Cookie: {name}=0000000000000000")
    assert other.header("Set-Cookie") is not None


def test_the_upstreams_own_cookies_and_headers_are_kept(proxy: Ingressd) -> None:
    r = proxy.get("cookies.test", "/")
    assert r.body == b"ok\n"
    cookies = r.header_values("Set-Cookie")
    assert cookies[0] == "app=upstream; Path=/"
    assert len(cookies) == 2 and cookies[1].startswith("INGRESSCOOKIE=")
    assert cookies[1].endswith("; Path=/; Max-Age=60; HttpOnly")
    # Not a CORS route: the upstream's own CORS header passes untouched.
    assert r.header("Access-Control-Allow-Origin") == "https://from-upstream.example"
