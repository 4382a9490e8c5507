"""End to end: limit-rps, limit-rpm, limit-connections and their allow-list, with curl.

One ingressd serves one Ingress per behaviour (each on its own host) in front
of the echo upstreams. curl connects from 127.0.0.1, so that is the client
address every limit counts.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from e2e_helpers import BackgroundLoop, Ingressd, nginx_page, serving_echo, simple
from k8s_objects import ingress, path, rule

from ingressd.model.objects import Obj

A = "nginx.ingress.kubernetes.io/"


def limited(host: str, *paths: tuple[str, str], **annotations: str) -> Obj:
    return ingress(
        host.split(".")[0],
        [rule(host, *(path(p, svc) for p, svc in paths or [("/", "web")]))],
        annotations={A + k.replace("_", "-"): v for k, v in annotations.items()},
    )


INGRESSES = [
    limited("rps.test", limit_rps="2", limit_burst_multiplier="1"),
    limited("conn.test", limit_connections="2"),
    limited(
        "allow.test",
        limit_rps="1",
        limit_burst_multiplier="1",
        limit_connections="1",
        limit_allowlist="10.0.0.0/8, 127.0.0.1",
    ),
    limited("shared.test", ("/a", "web"), ("/b", "api"), limit_rpm="1", limit_burst_multiplier="1"),
    limited("bad.test", limit_rps="0"),
    limited("plain.test"),
]


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, upstream_loop: BackgroundLoop, curl_binary: str
) -> Iterator[Ingressd]:
    with serving_echo(tmp_path_factory.mktemp("e2e-limits"), upstream_loop, INGRESSES) as proc:
        yield proc


def statuses(proxy: Ingressd, host: str, n: int, target: str = "/") -> list[int]:
    """Statuses of ``n`` requests sent back to back by one curl on one connection."""
    r = proxy.get(host, f"{target}?n=[1-{n}]", "-o", "/dev/null", "-w", "%{http_code}\\n")
    return [int(line) for line in r.write_out.split()]


def concurrently(proxy: Ingressd, host: str, n: int, target: str) -> list[int]:
    """Statuses of ``n`` curls started together (each waits for the others to be ready)."""
    barrier = threading.Barrier(n, timeout=10)

    def one(_: int) -> int:
        barrier.wait()
        return proxy.get(host, target, max_time=10).status

    with ThreadPoolExecutor(n) as pool:
        return sorted(pool.map(one, range(n)))


def test_rate_limit_allows_the_burst_then_503_until_it_drains(proxy: Ingressd) -> None:
    # rate 2/s, burst 2 * 1: the first request starts the bucket at 0, two more
    # fit in the burst; the next frees up 0.5 s after the third.
    got = statuses(proxy, "rps.test", 10)
    assert got == [200] * 3 + [503] * 7, got
    r = proxy.get("rps.test", "/")
    assert (r.status, r.body) == (503, nginx_page(503))
    proxy.wait_for_log(
        "GET rps.test/: 503 Service Unavailable: rate limit of 2 requests per second exceeded "
        "for 127.0.0.1 on Ingress default/rps"
    )
    time.sleep(1.0)
    assert proxy.get("rps.test", "/").status == 200


def test_hosts_without_limits_are_never_limited(proxy: Ingressd) -> None:
    assert statuses(proxy, "plain.test", 30) == [200] * 30
    # An invalid limit is reported and the Ingress serves without it.
    assert statuses(proxy, "bad.test", 30) == [200] * 30
    assert re.search(
        r"Ingress default/bad: annotation nginx.ingress.kubernetes.io/limit-rps='0' is invalid: "
        r".*; the Ingress is served without this limit",
        proxy.log(),
    )


def test_connection_limit_counts_requests_in_flight(proxy: Ingressd) -> None:
    got = concurrently(proxy, "conn.test", 4, "/_echo/sleep/1000")
    assert got == [200, 200, 503, 503]
    r = proxy.get("conn.test", "/")  # both places are free again
    assert r.status == 200
    assert concurrently(proxy, "conn.test", 2, "/_echo/sleep/300") == [200, 200]
    assert proxy.get("conn.test", "/_echo/status/502").status == 502  # an upstream error
    assert statuses(proxy, "conn.test", 5) == [200] * 5  # nothing leaked


def test_allowlisted_client_is_never_limited(proxy: Ingressd) -> None:
    assert statuses(proxy, "allow.test", 20) == [200] * 20
    assert concurrently(proxy, "allow.test", 3, "/_echo/sleep/300") == [200, 200, 200]


def test_paths_of_one_ingress_share_limits_across_rebuilds(proxy: Ingressd) -> None:
    # rpm 1, burst 1 * 1: two requests, then one a minute, counted per Ingress.
    assert proxy.get("shared.test", "/a").json()["service"] == "web"
    assert proxy.get("shared.test", "/b").json()["service"] == "api"
    assert proxy.get("shared.test", "/a").status == 503
    # A rebuild (another Ingress added) keeps the counters.
    generation = ready_generation(proxy)
    proxy.update({"more.yaml": [simple("more", "more.test", "web")]})
    proxy.wait_for(lambda: ready_generation(proxy) > generation, what="a new routing table")
    assert proxy.get("more.test", "/").status == 200
    r = proxy.get("shared.test", "/b")
    assert (r.status, r.body) == (503, nginx_page(503))
    proxy.wait_for_log(
        "GET shared.test/b: 503 Service Unavailable: rate limit of 1 requests per minute"
    )


def ready_generation(proxy: Ingressd) -> int:
    answer = proxy.curl(f"http://127.0.0.1:{proxy.admin_port}/readyz").text
    return int(answer.rsplit(" ", 1)[1])
