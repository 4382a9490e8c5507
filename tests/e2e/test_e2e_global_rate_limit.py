"""End to end: global-rate-limit, counted per pod across worker processes.

``ingressd serve --workers 2``: every curl is a connection of its own, which the
kernel spreads over the workers (SO_REUSEPORT hashes the client's port), so a
count kept per worker would let more through than the limit.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e_helpers import BackgroundLoop, EchoServers, Ingressd, backends, nginx_page, serving
from k8s_objects import ingress, path, rule

from ingressd.model.objects import Obj

A = "nginx.ingress.kubernetes.io/"


def limited(host: str, **annotations: str) -> Obj:
    return ingress(
        host.split(".")[0],
        [rule(host, path("/", "web"), path("/other", "web"))],
        annotations={A + k.replace("_", "-"): v for k, v in annotations.items()},
    )


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, upstream_loop: BackgroundLoop, curl_binary: str
) -> Iterator[Ingressd]:
    echo = EchoServers(upstream_loop, ["web", "api"])
    objs = [
        *backends(echo),
        limited("byaddr.test", global_rate_limit="5", global_rate_limit_window="1h"),
        limited(
            "bykey.test",
            global_rate_limit="2",
            global_rate_limit_window="1h",
            global_rate_limit_key="$http_x_api_key",
        ),
        limited(
            "ignored.test",
            global_rate_limit="1",
            global_rate_limit_window="1h",
            global_rate_limit_ignored_cidrs="127.0.0.0/8",
        ),
        limited("nowindow.test", global_rate_limit="1"),
    ]
    args = ["--workers", "2", "--access-log", "off"]
    try:
        with serving(tmp_path_factory.mktemp("e2e-global-rate-limit"), objs, args) as proc:
            yield proc
    finally:
        echo.close()


def statuses(proxy: Ingressd, host: str, n: int, *args: str, p: str = "/") -> list[int]:
    return [proxy.get(host, p, *args, check=False).status for _ in range(n)]


def test_the_limit_holds_per_pod_across_workers(proxy: Ingressd) -> None:
    got = statuses(proxy, "byaddr.test", 12)
    assert got == [200] * 5 + [429] * 7
    # The Ingress's paths share the count, as ingress-nginx's namespace is the Ingress.
    r = proxy.get("byaddr.test", "/other", check=False)
    assert r.status == 429
    assert r.body == nginx_page(429)
    proxy.wait_for_log("global rate limit of 5 requests per 3600 s exceeded for $remote_addr")


def test_the_key_decides_what_is_counted(proxy: Ingressd) -> None:
    assert statuses(proxy, "bykey.test", 3, "-H", "X-Api-Key: a") == [200, 200, 429]
    assert statuses(proxy, "bykey.test", 3, "-H", "X-Api-Key: b") == [200, 200, 429]
    # No key at all: counted by the client's address, as global_throttle.lua falls
    # back to $remote_addr; leaving the header out does not escape the limit.
    assert statuses(proxy, "bykey.test", 4) == [200, 200, 429, 429]


def test_ignored_cidrs_and_a_missing_window(proxy: Ingressd) -> None:
    assert statuses(proxy, "ignored.test", 3) == [200] * 3
    assert statuses(proxy, "nowindow.test", 3) == [200] * 3  # off, as in ingress-nginx
