"""End to end: ``ingressd serve --admission-port`` against the API test server.

ingressd runs as a subprocess on a kubeconfig for ``kube_apiserver.KubeApiServer``
(the real wire protocol). Its leader makes the webhook's Secret and sets the
``ValidatingWebhookConfiguration``'s caBundle; the tests then call the webhook
as the API server does: HTTPS to the Service's DNS name, verified against the
CA of that Secret, with real AdmissionReview v1 bodies.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import socket
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from e2e_helpers import (
    LOCALHOST,
    Ingressd,
    free_port,
    raw_exchange,
    scrape,
    simple,
    wait_for,
)
from k8s_objects import endpoint_slice, ingress, ingress_class, path, rule, service
from kube_apiserver import KubeApiServer

from ingressd.kube.webhook_certs import CertBundle, from_secret, issue, secret_data
from ingressd.model.objects import Obj

pytestmark = pytest.mark.timeout(120)

NAMESPACE = "ingressd"
NAME = "ingressd-admission"
SERVICE_DNS = f"{NAME}.{NAMESPACE}.svc"
WEBHOOK_PATH = "/networking/v1/ingresses"
PREFIX = "nginx.ingress.kubernetes.io/"
FAST = ["--lease-duration", "2", "--renew-deadline", "1.5", "--retry-period", "0.25"]


def webhook_configuration() -> Obj:
    """deploy/admission.yaml's object, as the API server stores it before ingressd runs."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": NAME},
        "webhooks": [
            {
                "name": "validate.ingressd.io",
                "clientConfig": {
                    "service": {"namespace": NAMESPACE, "name": NAME, "path": WEBHOOK_PATH}
                },
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Ignore",
                "timeoutSeconds": 2,
            }
        ],
    }


class Replica:
    """One ingressd with the webhook on, and how to call it."""

    def __init__(self, proc: Ingressd, port: int) -> None:
        self.proc = proc
        self.port = port


@pytest.fixture(scope="module")
def apiserver() -> Iterator[KubeApiServer]:
    server = KubeApiServer(tokens={"token-a": "controller-a", "token-b": "controller-b"})
    server.start()
    for obj in (
        ingress_class(),
        ingress_class("nginx", "k8s.io/ingress-nginx"),
        service("web"),
        endpoint_slice("web", ["10.0.0.1"]),
        simple("taken", "taken.test", "web"),
        webhook_configuration(),
    ):
        server.create(obj)
    try:
        yield server
    finally:
        server.stop()


def start_replica(
    server: KubeApiServer, tmp: Path, user: str, *extra: str, port: int = 0
) -> tuple[Ingressd, int]:
    """ingressd as ``user``, with the webhook on ``port`` (a free one if 0)."""
    kubeconfig = server.write_kubeconfig(tmp / f"kubeconfig-{user}", f"token-{user}", NAMESPACE)
    for attempt in range(3):
        chosen = port or free_port()
        proc = Ingressd(
            None,
            tmp / f"ingressd-{user}-{attempt}.log",
            extra_args=[
                "--kubeconfig",
                str(kubeconfig),
                *FAST,
                "--admission-port",
                str(chosen),
                "--admission-cert-refresh",
                "0.3",
                *extra,
            ],
        )
        proc.start()
        # Other test runs share this machine: a port picked for this process may be
        # taken meanwhile, and another ingressd's /readyz answer start(). Ours says
        # it serves, or it exits.
        wait_for(
            lambda p=proc: (
                p.proc is None or p.proc.poll() is not None or "ingressd serving" in p.log()
            ),
            15,
            what="ingressd to serve or exit",
        )
        if proc.proc is not None and proc.proc.poll() is None:
            return proc, chosen
        proc.stop()
    raise AssertionError(f"ingressd did not start in 3 attempts:\n{proc.log()}")


@pytest.fixture(scope="module")
def leader(apiserver: KubeApiServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    tmp = tmp_path_factory.mktemp("admission")
    port = free_port()
    # A TCP services entry on the webhook's port: refused, as one on --http-port is.
    apiserver.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "tcp-services", "namespace": NAMESPACE},
            "data": {str(port): "default/web:80"},
        }
    )
    proc, port = start_replica(
        apiserver, tmp, "a", "--tcp-services-configmap", f"{NAMESPACE}/tcp-services", port=port
    )
    try:
        wait_for(lambda: secret_bundle(apiserver), 15, what="the webhook's Secret")
        wait_for(lambda: serving(port), 15, what="the webhook to listen")
        wait_for(lambda: ca_bundle(apiserver), 15, what="the caBundle")
        yield Replica(proc, port)
    finally:
        proc.stop()


def secret_bundle(server: KubeApiServer) -> CertBundle | None:
    return from_secret(server.get("Secret", NAMESPACE, NAME))


def ca_bundle(server: KubeApiServer) -> bytes:
    vwc = server.get("ValidatingWebhookConfiguration", None, NAME) or {}
    raw = (vwc["webhooks"][0].get("clientConfig") or {}).get("caBundle") or ""
    return base64.b64decode(raw)


def tls_context(server: KubeApiServer) -> ssl.SSLContext:
    """What the API server trusts: the caBundle of the ValidatingWebhookConfiguration."""
    return ssl.create_default_context(cadata=ca_bundle(server).decode())


class _Webhook(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 verified as the API server dials the Service: SNI and SAN
    ``SERVICE.NAMESPACE.svc``."""

    def __init__(self, port: int, context: ssl.SSLContext, name: str = SERVICE_DNS) -> None:
        super().__init__(LOCALHOST, port, context=context, timeout=10)
        self.name = name

    def connect(self) -> None:
        sock = socket.create_connection((LOCALHOST, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.name)  # type: ignore[attr-defined]


def serving(port: int) -> bool:
    """A TLS handshake completes (before the first certificate, the port refuses)."""
    try:
        served_certificate(port)
    except OSError:
        return False
    return True


def served_certificate(port: int) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((LOCALHOST, port), 5) as sock,
        ctx.wrap_socket(sock, server_hostname=SERVICE_DNS) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def pem_der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


def call(
    server: KubeApiServer,
    port: int,
    body: bytes,
    *,
    content_type: str = "application/json",
    method: str = "POST",
) -> tuple[int, bytes]:
    conn = _Webhook(port, tls_context(server))
    try:
        conn.request(method, WEBHOOK_PATH, body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def admission_review(obj: Obj, operation: str = "CREATE") -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "Ingress"},
            "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "ingresses"},
            "requestKind": {"group": "networking.k8s.io", "version": "v1", "kind": "Ingress"},
            "requestResource": {
                "group": "networking.k8s.io",
                "version": "v1",
                "resource": "ingresses",
            },
            "name": meta["name"],
            "namespace": meta.get("namespace", "default"),
            "operation": operation,
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": obj,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def huge_ingress() -> Obj:
    """A real Ingress of 5 MiB (an annotation), over the webhook's 4 MiB body bound."""
    return simple("huge", "huge.test", "web", annotations={"team/notes": "x" * (5 * 1024 * 1024)})


def without_uid() -> dict[str, Any]:
    body = admission_review(simple("nouid", "nouid.test", "web"))
    del body["request"]["uid"]
    return body


def reviewed(server: KubeApiServer, port: int, obj: Obj) -> dict[str, Any]:
    body = admission_review(obj)
    status, raw = call(server, port, json.dumps(body).encode())
    assert status == 200, raw
    answer = json.loads(raw)
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == body["request"]["uid"]
    return answer["response"]


# -- certificates ---------------------------------------------------------------------------


def test_the_leader_creates_the_secret_and_sets_the_ca_bundle(
    apiserver: KubeApiServer, leader: Replica
) -> None:
    bundle = secret_bundle(apiserver)
    assert bundle is not None
    secret = apiserver.get("Secret", NAMESPACE, NAME)
    assert secret is not None and secret["type"] == "Opaque"
    assert ca_bundle(apiserver) == bundle.ca_pem
    # Verified as the API server verifies it: the CA of the caBundle, SAN SERVICE.NS.svc.
    conn = _Webhook(leader.port, tls_context(apiserver))
    conn.connect()
    assert conn.sock.getpeercert()["subjectAltName"]  # type: ignore[union-attr]
    conn.close()
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        _Webhook(leader.port, tls_context(apiserver), name="other.ingressd.svc").connect()
    writers = {u for u, _, p in apiserver.writes("/secrets")}
    assert writers == {"controller-a"}


def test_a_second_replica_reuses_the_secret_and_an_expiring_one_is_rotated(
    apiserver: KubeApiServer, leader: Replica, tmp_path: Path
) -> None:
    first = apiserver.get("Secret", NAMESPACE, NAME)
    assert first is not None
    # With worker processes, as deployed: the webhook is the main process's, beside the
    # store, and the workers only proxy.
    replica, port = start_replica(apiserver, tmp_path, "b", "--workers", "2")
    try:
        wait_for(lambda: serving(port), 15, what="the second replica's webhook")
        served = served_certificate(port)
        assert served == pem_der(from_secret(first).cert_pem)  # type: ignore[union-attr]
        again = apiserver.get("Secret", NAMESPACE, NAME)
        assert again is not None
        assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
        assert not [w for w in apiserver.writes("/secrets") if w[0] == "controller-b"]

        # A certificate with less than a third of its lifetime left: the leader replaces it
        # (a new CA too, the old one kept in the caBundle while valid), and both replicas
        # serve the new one without a restart.
        now = dt.datetime.now(dt.UTC)
        old = issue(NAME, NAMESPACE, dt.timedelta(days=3), now=now - dt.timedelta(days=2.5))
        again["data"] = secret_data(old)
        apiserver.update(again)
        wait_for(
            lambda: (b := secret_bundle(apiserver)) is not None and b.ca_pem != old.ca_pem,
            15,
            what="the rotation",
        )
        new = secret_bundle(apiserver)
        assert new is not None and new.previous_ca_pem == old.ca_pem
        wait_for(
            lambda: ca_bundle(apiserver) == new.ca_pem + new.previous_ca_pem,
            10,
            what="the caBundle with both CAs",
        )
        for p in (leader.port, port):
            wait_for(
                lambda p=p: served_certificate(p) == pem_der(new.cert_pem),
                10,
                what=f"port {p} to serve the new certificate",
            )
        # The second replica, with workers, reviews too.
        answer = reviewed(apiserver, port, simple("second", "taken.test", "web"))
        assert answer["allowed"] is False and "default/taken" in answer["status"]["message"]
        assert not [w for w in apiserver.writes("/secrets") if w[0] == "controller-b"]
    finally:
        replica.stop()


# -- reviews --------------------------------------------------------------------------------


def test_a_clean_ingress_is_allowed(apiserver: KubeApiServer, leader: Replica) -> None:
    answer = reviewed(apiserver, leader.port, simple("fresh", "fresh.test", "web"))
    assert answer["allowed"] is True and "warnings" not in answer


def test_an_unsupported_annotation_is_allowed_with_a_warning(
    apiserver: KubeApiServer, leader: Replica
) -> None:
    obj = simple(
        "warned", "warned.test", "web", annotations={PREFIX + "enable-modsecurity": "true"}
    )
    answer = reviewed(apiserver, leader.port, obj)
    assert answer["allowed"] is True
    assert answer["warnings"][0].startswith("ingressd: unsupported: ")


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (
            simple("snippet", "s.test", "web", annotations={PREFIX + "server-snippet": "x y;"}),
            "refused: annotation nginx.ingress.kubernetes.io/server-snippet",
        ),
        (
            ingress(
                "regex",
                [rule("r.test", path("/(?<=a)b", "web", path_type="ImplementationSpecific"))],
                annotations={PREFIX + "use-regex": "true"},
            ),
            "regex: ",
        ),
        (
            simple("second", "taken.test", "web"),
            "host 'taken.test' and path '/' (Prefix) are already defined in Ingress default/taken",
        ),
    ],
    ids=["refused-annotation", "invalid-regex", "conflict"],
)
def test_what_ingressd_would_refuse_is_denied(
    apiserver: KubeApiServer, leader: Replica, obj: Obj, expected: str
) -> None:
    answer = reviewed(apiserver, leader.port, obj)
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 400
    assert expected in answer["status"]["message"]


def test_another_class_is_allowed_untouched(apiserver: KubeApiServer, leader: Replica) -> None:
    obj = simple(
        "theirs",
        "taken.test",
        "web",
        class_name="nginx",
        annotations={PREFIX + "server-snippet": "x y;"},
    )
    answer = reviewed(apiserver, leader.port, obj)
    assert answer["allowed"] is True and "warnings" not in answer


@pytest.mark.parametrize(
    ("body", "content_type", "method", "status", "says"),
    [
        (b"{not json", "application/json", "POST", 400, "malformed AdmissionReview: not JSON"),
        (b'{"apiVersion": "v1", "kind": "Pod"}', "application/json", "POST", 400, "not an"),
        (b"[" * 5000 + b"]" * 5000, "application/json", "POST", 400, "malformed"),
        (b"{}", "text/plain", "POST", 415, "text/plain is not application/json"),
        (b"", "application/json", "GET", 405, "method GET not allowed"),
        (
            json.dumps(admission_review(huge_ingress())).encode(),
            "application/json",
            "POST",
            413,
            "over 4194304",
        ),
        (json.dumps(without_uid()).encode(), "application/json", "POST", 400, "request.uid"),
    ],
    ids=[
        "not-json",
        "not-a-review",
        "too-deep",
        "content-type",
        "method",
        "oversized",
        "review-without-uid",
    ],
)
def test_bad_requests_get_a_clear_error(
    apiserver: KubeApiServer,
    leader: Replica,
    body: bytes,
    content_type: str,
    method: str,
    status: int,
    says: str,
) -> None:
    got, raw = call(apiserver, leader.port, body, content_type=content_type, method=method)
    assert got == status
    assert says in raw.decode()


def test_answers_are_counted_by_result_in_metrics(
    apiserver: KubeApiServer, leader: Replica
) -> None:
    """After the reviews above (on the leader): one of each result but "unchecked"."""
    before = scrape(leader.proc.admin_port)

    def count(result: str, samples: Any = None) -> float:
        key = ("ingressd_admission_reviews_total", (("result", result),))
        return (samples or scrape(leader.proc.admin_port))[key]

    assert count("unchecked", before) == 0
    reviewed(apiserver, leader.port, simple("counted", "counted.test", "web"))
    snippet = {PREFIX + "server-snippet": "x y;"}
    reviewed(apiserver, leader.port, simple("denied", "d.test", "web", annotations=snippet))
    modsec = {PREFIX + "enable-modsecurity": "true"}
    reviewed(apiserver, leader.port, simple("warned", "w.test", "web", annotations=modsec))
    call(apiserver, leader.port, b"{}", content_type="text/plain")
    after = scrape(leader.proc.admin_port)
    for result in ("allowed", "denied", "warned", "rejected"):
        assert count(result, after) == count(result, before) + 1, result


def test_a_tcp_service_on_the_webhook_port_is_refused(leader: Replica) -> None:
    answer = raw_exchange(
        leader.proc.admin_port, b"GET /problems HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    problems = json.loads(answer.partition(b"\r\n\r\n")[2])["problems"]
    assert any(f"TCP port '{leader.port}'" in p and "--admission-port" in p for p in problems), (
        problems
    )


def test_a_review_over_its_time_budget_is_allowed_with_a_warning(
    apiserver: KubeApiServer, leader: Replica, tmp_path: Path
) -> None:
    """A replica whose reviews cannot finish in --admission-timeout: a host 3,000 Ingresses
    share takes the builder a good part of a second to merge, against 5 ms. Last in this
    module: the other reviews do not pay for those Ingresses."""
    for i in range(3000):
        apiserver.create(ingress(f"busy-{i}", [rule("busy.test", path(f"/p{i}", "web"))]))
    replica, port = start_replica(apiserver, tmp_path, "b", "--admission-timeout", "0.005")
    try:
        wait_for(lambda: serving(port), 15, what="the replica's webhook")
        snippet = {PREFIX + "server-snippet": "x y;"}  # would deny, if checked in time
        obj = ingress("late", [rule("busy.test", path("/late", "web"))], annotations=snippet)
        answer = reviewed(apiserver, port, obj)
        assert answer["allowed"] is True
        assert answer["warnings"] == [
            "ingressd: not checked: the review took longer than its 0.005 s; allowed "
            "(failurePolicy Ignore)"
        ]
    finally:
        replica.stop()
