"""End to end: --trusted-proxies. Behind a trusted load balancer, X-Forwarded-For
names the client for source ranges, rate limits and X-Real-IP; from anyone else
it is ignored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import BackgroundLoop, EchoServers, Ingressd, backends, serving
from k8s_objects import ingress, path, rule

A = "nginx.ingress.kubernetes.io/"


def objs(echo: EchoServers) -> list:
    return [
        *backends(echo),
        ingress("open", [rule("open.test", path("/", "web"))]),
        ingress(
            "office",
            [rule("office.test", path("/", "web"))],
            annotations={A + "allowlist-source-range": "203.0.113.0/24"},
        ),
    ]


@pytest.fixture
def trusting(tmp_path: Path, upstream_loop: BackgroundLoop, curl_binary: str) -> Iterator[Ingressd]:
    echo = EchoServers(upstream_loop, ["web", "api"])
    try:
        # 127.0.0.1 (curl here) plays the load balancer; 10.0.0.0/8 is an inner proxy tier.
        args = ["--trusted-proxies", "127.0.0.1/32, 10.0.0.0/8"]
        with serving(tmp_path, objs(echo), args) as proc:
            yield proc
    finally:
        echo.close()


def test_the_client_behind_trusted_proxies_is_found(trusting: Ingressd) -> None:
    xff = "198.51.100.7, 203.0.113.9, 10.1.2.3"
    h = trusting.get("open.test", "/", "-H", f"X-Forwarded-For: {xff}").json()["headers"]
    # The rightmost address that is not a trusted proxy is the client.
    assert h["x-real-ip"] == "203.0.113.9"
    assert h["x-forwarded-for"] == f"{xff}, 127.0.0.1"
    # Source ranges judge that client, not the load balancer.
    r = trusting.get("office.test", "/", "-H", f"X-Forwarded-For: {xff}", check=False)
    assert r.status == 200
    r = trusting.get("office.test", "/", "-H", "X-Forwarded-For: 192.0.2.1", check=False)
    assert r.status == 403
    # No header: the peer itself is the client.
    h = trusting.get("open.test", "/").json()["headers"]
    assert (h["x-real-ip"], h["x-forwarded-for"]) == ("127.0.0.1", "127.0.0.1")
    # Garbage in the chain stops the walk at the last address that made sense.
    h = trusting.get("open.test", "/", "-H", "X-Forwarded-For: nonsense, 10.9.9.9")
    assert h.json()["headers"]["x-real-ip"] == "10.9.9.9"


def test_without_trust_the_header_opens_nothing(
    tmp_path: Path, upstream_loop: BackgroundLoop, curl_binary: str
) -> None:
    echo = EchoServers(upstream_loop, ["web", "api"])
    try:
        with serving(tmp_path, objs(echo)) as proc:
            r = proc.get("office.test", "/", "-H", "X-Forwarded-For: 203.0.113.9", check=False)
            assert r.status == 403
    finally:
        echo.close()
