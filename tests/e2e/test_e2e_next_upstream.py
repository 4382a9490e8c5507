"""End to end: proxy-next-upstream, -tries and -timeout, and session-cookie-change-on-failure.

Each Service mixes a misbehaving upstream (a refused port, one that resets,
stalls, answers garbage or an error status) with a healthy echo upstream, and
every upstream counts the requests that reached it, so the tests see how many
tries a request took and where it ended.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_helpers import (
    LOCALHOST,
    BackgroundLoop,
    EchoServers,
    FaultyUpstream,
    Ingressd,
    backends,
    free_port,
    serving,
)
from k8s_objects import endpoint_slice, ingress, path, rule, service

from ingressd.model.backend import Endpoint, affinity_value
from ingressd.model.objects import Obj

A = "nginx.ingress.kubernetes.io/"


def spread(name: str, ports: list[int]) -> list[Obj]:
    """Service ``name`` with one ready endpoint per port, all on 127.0.0.1."""
    slices = [
        endpoint_slice(name, [LOCALHOST], port, name=f"{name}-{i}") for i, port in enumerate(ports)
    ]
    return [service(name), *slices]


def annotated(host: str, svc: str, **annotations: str) -> Obj:
    return ingress(
        host.split(".")[0],
        [rule(host, path("/", svc))],
        annotations={A + k.replace("_", "-"): v for k, v in annotations.items()},
    )


@dataclass
class Setup:
    proxy: Ingressd
    faulty: dict[str, FaultyUpstream]
    echo: EchoServers
    dead: int  # a port nothing listens on

    def hits(self, *names: str) -> int:
        return sum(self.faulty[n].requests for n in names)


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, upstream_loop: BackgroundLoop, curl_binary: str
) -> Iterator[Setup]:
    modes = {
        "e503": "status:503",
        "d503": "status:503",
        "x503": "status:503",
        "y503": "status:503",
        "z503": "status:503",
        "reset": "reset",
        "reset2": "reset",
        "reset3": "reset",
        "reset4": "reset",
        "stall": "stall",
        "stallA": "stall",
        "stallB": "stall",
        "stallC": "stall",
        "stallD": "stall",
        "garbage": "garbage",
    }
    faulty = {name: FaultyUpstream(upstream_loop, mode) for name, mode in modes.items()}
    echo = EchoServers(upstream_loop, ["web", "api"])
    web = echo["web"]
    dead = free_port()
    p = {name: f.port for name, f in faulty.items()}
    objs = [
        *backends(echo),
        *spread("halfdead", [dead, web]),
        *spread("halfdead2", [dead, web]),
        *spread("flaky", [p["e503"], web]),
        *spread("flaky2", [p["d503"], web]),
        *spread("all503", [p["x503"], p["y503"], p["z503"]]),
        *spread("resetting", [p["reset"], web]),
        *spread("resetting2", [p["reset2"], web]),
        *spread("resetting3", [p["reset3"], web]),
        *spread("resetting4", [p["reset4"], web]),
        *spread("stalled", [p["stall"], web]),
        *spread("stalls", [p["stallA"], p["stallB"]]),
        *spread("stalls2", [p["stallC"], p["stallD"]]),
        *spread("garbled", [p["garbage"], web]),
        *spread("sticky", [dead, web]),
        annotated("halfdead.test", "halfdead"),
        annotated("off.test", "halfdead2", proxy_next_upstream="off"),
        annotated("flaky.test", "flaky", proxy_next_upstream="error timeout http_503"),
        annotated("flakydefault.test", "flaky2"),
        annotated(
            "all503.test", "all503", proxy_next_upstream="http_503", proxy_next_upstream_tries="2"
        ),
        annotated("reset.test", "resetting"),
        annotated("resetpost.test", "resetting2", proxy_next_upstream="error non_idempotent"),
        annotated("resetput.test", "resetting3", proxy_body_size="8m"),
        annotated("resetstream.test", "resetting4", proxy_request_buffering="off"),
        annotated("stall.test", "stalled", proxy_read_timeout="1"),
        annotated(
            "stalllimit.test", "stalls", proxy_read_timeout="1", proxy_next_upstream_timeout="1"
        ),
        annotated("stalltwo.test", "stalls2", proxy_read_timeout="1"),
        annotated("garbage.test", "garbled", proxy_next_upstream="error timeout invalid_header"),
        annotated(
            "sticky.test", "sticky", affinity="cookie", session_cookie_change_on_failure="true"
        ),
        annotated("stickykeep.test", "sticky", affinity="cookie"),
    ]
    try:
        # Passive health off: these tests count tries, which ejection would change.
        off = ["--upstream-max-fails", "0"]
        with serving(tmp_path_factory.mktemp("e2e-next-upstream"), objs, off) as proc:
            yield Setup(proc, faulty, echo, dead)
    finally:
        echo.close()
        for f in faulty.values():
            f.close()


def statuses(proxy: Ingressd, host: str, n: int, *args: str) -> list[int]:
    return [proxy.get(host, "/", *args, check=False).status for _ in range(n)]


def test_a_refused_endpoint_is_skipped_by_default(setup: Setup) -> None:
    assert statuses(setup.proxy, "halfdead.test", 6) == [200] * 6
    off = statuses(setup.proxy, "off.test", 6)
    assert sorted(set(off)) == [200, 502]
    assert off.count(502) == 3  # round robin over two endpoints, no second try


def test_error_statuses_are_retried_only_when_listed(setup: Setup) -> None:
    before = setup.hits("e503")
    assert statuses(setup.proxy, "flaky.test", 6) == [200] * 6
    assert setup.hits("e503") - before == 3
    # Without http_503 the upstream's 503 is the answer.
    assert sorted(set(statuses(setup.proxy, "flakydefault.test", 6))) == [200, 503]


def test_tries_bound_the_attempts_and_the_last_answer_is_passed_on(setup: Setup) -> None:
    before = setup.hits("x503", "y503", "z503")
    r = setup.proxy.get("all503.test", "/", check=False)
    assert r.status == 503
    assert r.text == "503 from a faulty upstream\n"
    assert setup.hits("x503", "y503", "z503") - before == 2


def test_a_request_that_reached_an_upstream_is_repeated_only_if_idempotent(setup: Setup) -> None:
    assert statuses(setup.proxy, "reset.test", 4) == [200] * 4
    before = setup.hits("reset")
    posts = statuses(setup.proxy, "reset.test", 4, "--data-binary", "x=1")
    assert posts.count(502) == 2
    assert setup.hits("reset") - before == 2  # each POST tried once


def test_non_idempotent_allows_repeating_posts_with_their_body(
    setup: Setup, tmp_path: Path
) -> None:
    body = bytes(range(256)) * 40  # 10 KiB
    data = tmp_path / "body.bin"
    data.write_bytes(body)
    for _ in range(4):
        r = setup.proxy.get("resetpost.test", "/", "--data-binary", f"@{data}")
        assert r.status == 200
        echoed = r.json()
        assert echoed["method"] == "POST"
        assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert setup.hits("reset2") == 2


def test_an_idempotent_upload_is_sent_again_in_full(setup: Setup, tmp_path: Path) -> None:
    data = tmp_path / "upload.bin"
    payload = hashlib.sha256(b"seed").digest() * 1000  # 32000 bytes
    data.write_bytes(payload)
    chunked = ("-H", "Transfer-Encoding: chunked")
    # Round robin: the first and third, or the second and fourth, PUT reach the
    # resetting endpoint first (endpoints are in address order).
    for host in ("resetput.test", "resetstream.test"):
        for extra in ((), (), chunked, chunked):
            r = setup.proxy.get(host, "/", "-X", "PUT", "--data-binary", f"@{data}", *extra)
            assert r.status == 200
            assert r.json()["body_sha256"] == hashlib.sha256(payload).hexdigest()
    assert setup.hits("reset3") == 2
    assert setup.hits("reset4") == 2
    # Streamed (proxy-request-buffering off), a body too large to keep for a
    # second try (64 KiB) is not sent again.
    data.write_bytes(payload * 3)  # 96000 bytes
    codes = [
        setup.proxy.get(
            "resetstream.test", "/", "-X", "PUT", "--data-binary", f"@{data}", check=False
        ).status
        for _ in range(2)
    ]
    assert sorted(codes) == [200, 502]
    assert setup.hits("reset4") == 3


def test_a_buffered_body_of_any_size_is_sent_again(setup: Setup, tmp_path: Path) -> None:
    """proxy-request-buffering on (the default): the body is read whole, so a try
    that failed can be repeated with all of it, memory or temporary file."""
    data = tmp_path / "upload.bin"
    payload = os.urandom(3 * 1024 * 1024 + 17)  # most of it past client-body-buffer-size
    data.write_bytes(payload)
    before = setup.hits("reset3")
    for extra in ((), ("-H", "Transfer-Encoding: chunked")):
        for _ in range(2):  # one of the two reaches the resetting endpoint first
            r = setup.proxy.get(
                "resetput.test", "/", "-X", "PUT", "--data-binary", f"@{data}", *extra
            )
            assert r.status == 200
            got = r.json()
            assert got["body_bytes"] == len(payload)
            assert got["body_sha256"] == hashlib.sha256(payload).hexdigest()
            assert got["headers"]["content-length"] == str(len(payload))
    assert setup.hits("reset3") - before == 2


def test_a_stalled_upstream_times_out_and_the_next_answers(setup: Setup) -> None:
    before = setup.hits("stall")
    assert statuses(setup.proxy, "stall.test", 2) == [200, 200]
    assert setup.hits("stall") - before == 1


def test_next_upstream_timeout_bounds_the_time_for_all_tries(setup: Setup) -> None:
    r = setup.proxy.get("stalllimit.test", "/", check=False, max_time=10)
    assert r.status == 504
    assert setup.hits("stallA", "stallB") == 1
    r = setup.proxy.get("stalltwo.test", "/", check=False, max_time=10)
    assert r.status == 504
    assert setup.proxy.wait_for_log("GET stalltwo.test/: 504").endswith("(2 tries)")
    assert setup.hits("stallC", "stallD") == 2


def test_invalid_response_heads_are_retried_with_invalid_header(setup: Setup) -> None:
    before = setup.hits("garbage")
    assert statuses(setup.proxy, "garbage.test", 4) == [200] * 4
    assert setup.hits("garbage") - before == 2


def test_session_cookie_change_on_failure(setup: Setup) -> None:
    name = "default/sticky:80"
    dead = affinity_value(name, Endpoint(LOCALHOST, setup.dead))
    web = affinity_value(name, Endpoint(LOCALHOST, setup.echo["web"]))
    cookie = f"Cookie: INGRESSCOOKIE={dead}"
    # The session moves to an endpoint that answers, and the cookie says so.
    r = setup.proxy.get("sticky.test", "/", "-H", cookie)
    assert r.status == 200
    assert (r.header("Set-Cookie") or "").startswith(f"INGRESSCOOKIE={web};")
    # Without change-on-failure the session stays on its endpoint, which fails.
    r = setup.proxy.get("stickykeep.test", "/", "-H", cookie, check=False)
    assert r.status == 502
    assert setup.proxy.wait_for_log("GET stickykeep.test/: 502").endswith("(3 tries)")
    assert r.header("Set-Cookie") is None
    # A new session is never pinned to the endpoint that failed it.
    for _ in range(4):
        r = setup.proxy.get("stickykeep.test", "/")
        assert r.status == 200
        assert (r.header("Set-Cookie") or "").startswith(f"INGRESSCOOKIE={web};")
