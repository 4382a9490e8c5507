"""End to end: passive health. An endpoint that keeps refusing connections is
left out of rotation, tried again after the backoff, and back in once it answers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_helpers import (
    LOCALHOST,
    BackgroundLoop,
    EchoServers,
    Ingressd,
    backends,
    free_port,
    nginx_page,
)
from e2e_helpers import serving as serving_objs
from k8s_objects import endpoint_slice, ingress, path, rule, service

from ingressd.echo import start_echo
from ingressd.model.objects import Obj

A = "nginx.ingress.kubernetes.io/"
NO_RETRY = {A + "proxy-next-upstream": "off"}  # so every failure shows as a 502


def spread(name: str, ports: list[int]) -> list[Obj]:
    slices = [
        endpoint_slice(name, [LOCALHOST], port, name=f"{name}-{i}") for i, port in enumerate(ports)
    ]
    return [service(name), *slices]


@dataclass
class Setup:
    proxy: Ingressd
    dead: int
    loop: BackgroundLoop


@pytest.fixture
def setup(tmp_path: Path, upstream_loop: BackgroundLoop, curl_binary: str) -> Iterator[Setup]:
    echo = EchoServers(upstream_loop, ["web", "api"])
    dead, dead2 = free_port(), free_port()
    objs = [
        *backends(echo),
        *spread("flaky", [dead, echo["web"]]),
        *spread("gone", [dead2]),
        ingress("flaky", [rule("flaky.test", path("/", "flaky"))], annotations=NO_RETRY),
        ingress("gone", [rule("gone.test", path("/", "gone"))], annotations=NO_RETRY),
    ]
    args = ["--upstream-max-fails", "3", "--upstream-fail-timeout", "1"]
    try:
        with serving_objs(tmp_path, objs, args) as proc:
            yield Setup(proc, dead, upstream_loop)
    finally:
        echo.close()


def statuses(proxy: Ingressd, host: str, n: int) -> list[int]:
    return [proxy.get(host, "/", check=False).status for _ in range(n)]


def test_a_refusing_endpoint_is_ejected_and_readmitted(setup: Setup) -> None:
    proxy = setup.proxy
    first = statuses(proxy, "flaky.test", 12)
    # Round robin sends every other request to the dead endpoint until its
    # third failure ejects it; then the live one takes everything.
    assert first.count(502) == 3
    assert first[6:] == [200] * 6
    proxy.wait_for_log("ejected after 3 failed connections")
    # It comes back to life; after the backoff it is tried again, and stays.
    revived = setup.loop.run(start_echo(LOCALHOST, setup.dead, "revived"))
    try:
        time.sleep(1.3)
        served = [proxy.get("flaky.test", "/").json()["service"] for _ in range(8)]
        assert served.count("revived") == 4 and served.count("web") == 4
    finally:
        setup.loop.run(revived.close())


def test_when_every_endpoint_is_ejected_they_are_tried_anyway(setup: Setup) -> None:
    codes = statuses(setup.proxy, "gone.test", 6)
    assert codes == [502] * 6  # connection refused each time, never a 503 for "no endpoints"
    assert setup.proxy.get("gone.test", "/", check=False).body == nginx_page(502)
    setup.proxy.wait_for_log("GET gone.test/: 502 Bad Gateway: cannot connect")
