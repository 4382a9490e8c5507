"""End to end: the admin port's probes from start to exit.

What other tests already cover is left to them: /readyz answering 503 until
the cluster source has listed every kind (test_e2e_cluster.py) and draining
with one process (test_e2e_drain.py). Here: manifest mode is ready as soon as
it listens; /healthz answers 200 from the start and through the shutdown
delay (a failing liveness probe would get the pod killed mid-drain) while
/readyz says 503; with worker processes the proxy keeps serving during the
delay; then every port closes and the process exits 0.
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest
from e2e_helpers import (
    LOCALHOST,
    BackgroundLoop,
    EchoServers,
    Ingressd,
    backends,
    raw_exchange,
    simple,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)

DELAY = 1.5


def refused(port: int) -> bool:
    try:
        socket.create_connection((LOCALHOST, port), timeout=1).close()
    except OSError:
        return True
    return False


def test_manifest_mode_is_ready_once_it_listens(
    tmp_path: Path, upstream_loop: BackgroundLoop, curl_binary: str
) -> None:
    echo = EchoServers(upstream_loop, ["web", "api"])
    proc = Ingressd(tmp_path / "manifests", tmp_path / "ingressd.log")
    proc.update({"all.yaml": [*backends(echo), simple("web", "web.test", "web")]})
    try:
        ing = proc.start(until="/healthz")
        # The folder is read before the admin port opens: no window of 503.
        assert ing.admin_status("/readyz") == 200
        assert ing.admin_status("/metrics") == 200
    finally:
        proc.stop()
        echo.close()


def test_probes_through_a_shutdown_with_workers(
    tmp_path: Path, upstream_loop: BackgroundLoop, curl_binary: str
) -> None:
    echo = EchoServers(upstream_loop, ["web", "api"])
    args = ["--workers", "2", "--shutdown-delay", str(DELAY), "--shutdown-grace", "2"]
    proc = Ingressd(tmp_path / "manifests", tmp_path / "ingressd.log", extra_args=args)
    proc.update({"all.yaml": [*backends(echo), simple("web", "web.test", "web")]})
    try:
        ing = proc.start(until="/healthz")
        assert ing.admin_status("/healthz") == 200  # alive before the workers are ready
        wait_for(lambda: ing.admin_status("/readyz") == 200, 10, what="ready")
        assert proc.proc is not None

        proc.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        wait_for(lambda: ing.admin_status("/readyz") == 503, 0.5, 0.02, what="unready")
        # During the delay: alive, still scraped, and the workers still serve.
        assert ing.admin_status("/healthz") == 200
        assert ing.admin_status("/metrics") == 200
        request = b"GET / HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n"
        answer = raw_exchange(ing.http_port, request)
        assert answer.startswith(b"HTTP/1.1 200 OK"), answer[:200]
        assert time.monotonic() - sent < DELAY  # all of that within the delay

        code = proc.proc.wait(DELAY + 10)
        assert code == 0
        assert time.monotonic() - sent >= DELAY
        for port in (ing.http_port, ing.https_port, ing.admin_port):
            assert refused(port), port
    finally:
        proc.stop()
        echo.close()
