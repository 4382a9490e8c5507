"""The webhook listener's time budget and concurrency bound (control/admission_server.py).

In process, over real HTTPS on 127.0.0.1 with a certificate from
kube/webhook_certs.py, verified as the API server verifies it. The review is
the real one, held in its thread until the test lets it go: how long a build
takes depends on the machine and the build (compiled or not), and the budget's
handling must not.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import json
import socket
import ssl
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from k8s_objects import ingress, ingress_class, path, rule, service, snapshot
from test_admission import admission_review

from ingressd.control import admission
from ingressd.control.admission_server import AdmissionServer
from ingressd.kube.config import AdmissionConfig
from ingressd.kube.webhook_certs import issue
from ingressd.routing.build import BuildOptions

NAME = "ingressd-admission.ingressd.svc"


@pytest.fixture
async def server() -> AsyncIterator[tuple[AdmissionServer, ssl.SSLContext]]:
    config = AdmissionConfig(port=0, address="127.0.0.1", budget=0.01, concurrency=1)
    snap = snapshot(
        ingress_class(), service("web"), ingress("old", [rule("busy.test", path("/p", "web"))])
    )
    srv = AdmissionServer(config, lambda: snap, BuildOptions)
    bundle = issue("ingressd-admission", "ingressd", dt.timedelta(days=1))
    await srv.load(bundle.cert_pem, bundle.key_pem)
    try:
        yield srv, ssl.create_default_context(cadata=bundle.ca_pem.decode())
    finally:
        await srv.close()


def _post(port: int, ctx: ssl.SSLContext, body: dict[str, Any]) -> dict[str, Any]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
    sock = socket.create_connection(("127.0.0.1", port), 30)
    conn.sock = ctx.wrap_socket(sock, server_hostname=NAME)
    try:
        payload = json.dumps(body).encode()
        conn.request(
            "POST", "/networking/v1/ingresses", payload, {"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        assert response.status == 200
        answer: dict[str, Any] = json.loads(response.read())["response"]
        return answer
    finally:
        conn.close()


async def post(srv: AdmissionServer, ctx: ssl.SSLContext, obj: Any, op: str = "CREATE") -> Any:
    return await asyncio.to_thread(_post, srv.port, ctx, admission_review(obj, operation=op))


async def test_a_review_over_its_budget_is_allowed_with_a_warning_and_keeps_its_slot(
    server: tuple[AdmissionServer, ssl.SSLContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, ctx = server
    go_on = threading.Event()
    review = admission.review

    def held_review(*args: Any) -> Any:
        go_on.wait(30)  # a review slower than its budget
        return review(*args)

    monkeypatch.setattr(admission, "review", held_review)
    # Would be denied (a refused annotation) if it were checked in time.
    late = ingress(
        "new",
        [rule("busy.test", path("/x", "web"))],
        annotations={"nginx.ingress.kubernetes.io/server-snippet": "x y;"},
    )
    first = await post(srv, ctx, late)
    assert first["allowed"] is True
    assert first["warnings"] == [
        "ingressd: not checked: the review took longer than its 0.01 s; allowed "
        "(failurePolicy Ignore)"
    ]
    # Its thread is still building: the one slot stays taken until it is done, so
    # reviews never pile up in threads however many time out.
    assert srv._slots is not None and srv._slots.locked()
    second = await post(srv, ctx, late)
    assert second["allowed"] is True
    assert "1 other reviews took the whole 0.01 s" in second["warnings"][0]
    # Meanwhile the loop answers what needs no build (not an Ingress CREATE/UPDATE).
    deleted = await post(srv, ctx, late, op="DELETE")
    assert deleted == {"uid": deleted["uid"], "allowed": True}
    assert srv._slots.locked()
    # Once the review is done, the slot is free again.
    go_on.set()
    for _ in range(600):
        if not srv._slots.locked():
            break
        await asyncio.sleep(0.05)
    assert not srv._slots.locked()
    assert srv.results == {"allowed": 1, "warned": 0, "denied": 0, "unchecked": 2, "rejected": 0}


async def test_the_port_refuses_connections_until_there_is_a_certificate() -> None:
    # Refused at once, so the API server moves on (failurePolicy Ignore) instead of
    # waiting out its timeoutSeconds on a port that never answers.
    config = AdmissionConfig(port=0, address="127.0.0.1")
    srv = AdmissionServer(config, lambda: None, BuildOptions)
    try:
        with pytest.raises(ConnectionRefusedError):
            await asyncio.to_thread(socket.create_connection, ("127.0.0.1", srv.port), 5)
        bundle = issue("ingressd-admission", "ingressd", dt.timedelta(days=1))
        await srv.load(bundle.cert_pem, bundle.key_pem)
        ctx = ssl.create_default_context(cadata=bundle.ca_pem.decode())
        # Listed, and not yet synced: allowed, saying it was not checked.
        answer = await post(srv, ctx, ingress("new", [rule("a.test", path("/", "web"))]))
        assert answer["allowed"] is True
        assert "ingressd has not read the cluster yet" in answer["warnings"][0]
    finally:
        await srv.close()
