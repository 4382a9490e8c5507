"""End to end: backend-protocol GRPC and GRPCS, ingressd in front of real grpcio servers.

The calls are made as an HTTP/1.1 client of a gRPC route makes them (gRPC's
framing in chunked bodies, trailers in the last chunk), which nginx's
grpc_pass serves too: every part of ingressd's gRPC upstream side is real
here (HTTP/2 to grpcio, multiplexing, flow control, trailers, cancellation,
status mapping). The same calls from a grpcio client over HTTP/2 are in
test_e2e_grpc_clients.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import h2.errors
import pytest
from e2e_helpers import LOCALHOST, BackgroundLoop, Ingressd, wait_for
from grpc_helpers import (
    UPSTREAM,
    GrpcBackend,
    GrpcProcess,
    H1Call,
    concurrently,
    grpc_ingress,
    grpc_objects,
    grpcs_ingress,
    h1_call,
)
from h2_server import H2Server, Request, ServerConn
from k8s_objects import endpoint_slice, service
from upstream_certs import issue, secret

OTHER_CA = issue("someone else", ca=True)
# made with: openssl passwd -apr1 -salt ingressd s3cret
HTPASSWD = "alice:$apr1$ingressd$m4HkBhyUtf1klMXB92KPJ.\n"


@dataclass
class Setup:
    proxy: Ingressd
    main: GrpcBackend
    canary: GrpcBackend
    tls: GrpcBackend

    def call(
        self, host: str, method: str, messages: list[bytes], headers: dict | None = None
    ) -> object:
        return h1_call(self.proxy.http_port, host, method, messages, headers)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("e2e-grpc")
    with (
        GrpcBackend() as main,
        GrpcBackend() as canary,
        GrpcBackend(cert=UPSTREAM.cert_pem, key=UPSTREAM.key_pem) as tls,
    ):
        objects = [
            *grpc_objects(main, tls, proxy_ssl_server_name="on"),
            service("grpc2"),
            endpoint_slice("grpc2", [LOCALHOST], canary.port),
            service("noready"),
            endpoint_slice("noready", [(LOCALHOST, False)], main.port),
            secret("other-ca", ca_crt=OTHER_CA.cert_pem),
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "htpasswd", "namespace": "default"},
                "type": "Opaque",
                "stringData": {"auth": HTPASSWD},
            },
            grpc_ingress(
                "grpc-canary", "grpc.test", "grpc2", canary="true", canary_by_header="x-canary"
            ),
            grpc_ingress("noready", "noready.test", "noready"),
            grpc_ingress("small", "small.test", "grpc", proxy_body_size="1k"),
            grpc_ingress("deny", "deny.test", "grpc", whitelist_source_range="10.0.0.0/8"),
            grpc_ingress("auth", "auth.test", "grpc", auth_type="basic", auth_secret="htpasswd"),
            grpc_ingress("limited", "limited.test", "grpc", limit_rps="1"),
            grpc_ingress("vhost", "vhost.test", "grpc", upstream_vhost="inside.svc"),
            grpcs_ingress("grpcs-wrong", "wrongca.test", "other-ca"),
            grpc_ingress("plain-to-tls", "plaintotls.test", "grpctls"),
        ]
        proc = Ingressd(workdir / "manifests", workdir / "ingressd.log")
        proc.update({"all.yaml": objects})
        with proc:
            yield Setup(proc, main, canary, tls)


# -- calls ---------------------------------------------------------------------------------


def test_unary_with_status_metadata_and_trailers(setup: Setup) -> None:
    r = setup.call("grpc.test", "Unary", [b"echo:hello"])
    assert r.status == 200, r
    assert r.header("content-type") == "application/grpc"
    assert r.messages == [b"hello"]
    assert r.header("x-init") == "yes"  # initial metadata
    # Trailers, passed through: the status and custom metadata, binary included.
    assert (r.grpc_status, r.trailer("x-trail"), r.trailer("x-trail-bin")) == (0, "done", "AP8")


def test_an_error_status_in_a_trailers_only_response(setup: Setup) -> None:
    # grpcio fails the call before any message: one HEADERS frame that ends the
    # stream, holding the status and the trailing metadata. It reaches the
    # client as an empty response whose trailers hold them.
    r = setup.call("grpc.test", "Unary", [b"status:5:no such thing"])
    assert (r.status, r.header("content-type"), r.messages) == (200, "application/grpc", [])
    assert (r.trailer("grpc-status"), r.trailer("grpc-message")) == ("5", "no such thing")
    assert r.trailer("x-trail") == "done" and r.header("grpc-status") is None


def test_the_status_after_messages_comes_in_the_trailers(setup: Setup) -> None:
    r = setup.call("grpc.test", "ServerStream", [b"2:10:0"])
    assert len(r.messages) == 2 and r.header("grpc-status") is None
    assert (r.trailer("grpc-status"), r.trailer("x-trail")) == ("0", "done")


def test_the_request_carries_metadata_and_the_forwarding_headers(setup: Setup) -> None:
    r = setup.call(
        "grpc.test",
        "Unary",
        [b"meta"],
        {"x-custom": "v1", "X-Request-ID": "rid-7", "Connection": "x-hop", "x-hop": "no"},
    )
    (seen,) = r.messages
    got = json.loads(seen)
    assert got["x-custom"] == "v1"
    assert got["x-request-id"] == "rid-7"
    assert (got["x-forwarded-for"], got["x-real-ip"]) == (LOCALHOST, LOCALHOST)
    assert (got["x-forwarded-proto"], got["x-scheme"]) == ("http", "http")
    assert got["x-forwarded-host"] == "grpc.test"
    assert got["x-forwarded-port"] == str(setup.proxy.http_port)
    # Connection-specific fields never reach an HTTP/2 upstream, nor what Connection named.
    for name in ("connection", "x-hop", "transfer-encoding", "keep-alive", "host"):
        assert name not in got, got


def test_server_streaming(setup: Setup) -> None:
    r = setup.call("grpc.test", "ServerStream", [b"20:3000:0"])
    assert r.grpc_status == 0
    assert len(r.messages) == 20 and all(len(m) == 3000 for m in r.messages)
    assert [m.split(b":")[0] for m in r.messages] == [b"%d" % i for i in range(20)]


def test_client_streaming(setup: Setup) -> None:
    messages = [bytes([i]) * 10_000 for i in range(50)]
    r = setup.call("grpc.test", "ClientStream", messages)
    assert r.grpc_status == 0
    got = json.loads(r.messages[0])
    assert (got["count"], got["total"]) == (50, 500_000)


def test_bidirectional_streaming_interleaves(setup: Setup) -> None:
    call = H1Call(setup.proxy.http_port, "grpc.test", "Bidi")
    try:
        for i in range(5):
            # Each answer arrives before the next message is sent: the request
            # body and the response stream both ways at once.
            call.send(b"m%d" % i)
            assert call.read_message() == b"re:m%d" % i
        call.end()
        rest = call.finish()
    finally:
        call.close()
    assert rest.messages == [] and rest.grpc_status == 0


def test_a_10_mb_message_each_way(setup: Setup) -> None:
    size = 10 * 1024 * 1024
    payload = bytes(range(256)) * (size // 256)
    r = setup.call("grpc.test", "Unary", [b"echo:" + payload])
    assert r.grpc_status == 0, r.grpc_message
    assert r.messages == [payload]
    r = setup.call("grpc.test", "Unary", [b"big:%d" % size])
    assert r.grpc_status == 0 and len(r.messages[0]) == size


def test_canary_by_header_applies_to_grpc_routes(setup: Setup) -> None:
    before = (len(setup.main.seen.metadata), len(setup.canary.seen.metadata))
    assert setup.call("grpc.test", "Unary", [b"echo:x"], {"x-canary": "always"}).grpc_status == 0
    assert setup.call("grpc.test", "Unary", [b"echo:x"]).grpc_status == 0
    after = (len(setup.main.seen.metadata), len(setup.canary.seen.metadata))
    assert after == (before[0] + 1, before[1] + 1)


def test_many_concurrent_calls_share_the_upstream_connection(setup: Setup) -> None:
    results, took = concurrently(
        lambda _: setup.call("grpc.test", "Unary", [b"sleep:0.3"]).grpc_status, 20
    )
    assert results == [0] * 20
    assert took < 10  # concurrent, not one after another (20 x 0.3 s)


# -- deadlines and cancellation ---------------------------------------------------------------


def test_grpc_timeout_is_passed_on_and_the_deadline_is_the_servers(setup: Setup) -> None:
    r = setup.call("grpc.test", "Unary", [b"sleep:3"], {"grpc-timeout": "300m"})
    assert r.grpc_status == 4, (r.grpc_status, r.grpc_message)  # DEADLINE_EXCEEDED
    remaining = setup.main.seen.deadlines[-1]
    assert remaining is not None and 0 < remaining <= 0.3


def test_a_client_that_goes_away_cancels_the_call_upstream(setup: Setup) -> None:
    call = H1Call(setup.proxy.http_port, "grpc.test", "ServerStream")
    call.send(b"1000:10:0.05")
    call.end()
    assert call.read_message() is not None
    cancelled = len(setup.main.seen.cancelled)
    call.close()  # the client goes: RST_STREAM CANCEL upstream
    wait_for(
        lambda: len(setup.main.seen.cancelled) > cancelled, 5, what="the backend's cancellation"
    )
    assert setup.main.seen.cancelled[-1] == "ServerStream"


def test_a_backend_restarted_mid_stream(setup: Setup) -> None:
    backend = setup.main
    call = H1Call(setup.proxy.http_port, "grpc.test", "ServerStream")
    call.send(b"1000:10:0.05")
    call.end()
    assert call.read_message() is not None
    backend.restart()  # stopped at once: grpcio ends its calls with UNAVAILABLE
    while call.read_message() is not None:
        pass
    r = call.finish()
    call.close()
    assert r.grpc_status == 14, (r.grpc_status, r.grpc_message)
    # The restarted backend serves the next call, on a new connection.
    r = wait_for(
        lambda: (r := setup.call("grpc.test", "Unary", [b"echo:again"])).grpc_status == 0 and r,
        10,
        what="a call to the restarted backend",
    )
    assert r.messages == [b"again"]


def test_a_backend_that_dies_mid_stream_cuts_the_response(setup: Setup) -> None:
    # No trailers, no GOAWAY: the connection just ends. The client's response
    # must not look complete: it is cut off, then the next call fails cleanly.
    backend = GrpcProcess()
    try:
        setup.proxy.update(
            {
                "dying.yaml": [
                    service("dying"),
                    endpoint_slice("dying", [LOCALHOST], backend.port),
                    grpc_ingress("dying", "dying.test", "dying"),
                ]
            }
        )
        wait_for(
            lambda: setup.call("dying.test", "Unary", [b"echo:x"]).grpc_status == 0,
            5,
            what="the dying.test route",
        )
        call = H1Call(setup.proxy.http_port, "dying.test", "ServerStream")
        call.send(b"1000:10:0.05")
        call.end()
        assert call.read_message() is not None
        backend.kill()
        with pytest.raises((EOFError, ConnectionResetError)):
            while call.read_message() is not None:
                pass
        call.close()
        r = setup.call("dying.test", "Unary", [b"echo:x"])
        assert r.grpc_status == 14 and "cannot connect" in (r.grpc_message or ""), r
    finally:
        backend.kill()
        setup.proxy.update({"dying.yaml": None})


def test_a_refused_stream_is_sent_again(setup: Setup, upstream_loop: BackgroundLoop) -> None:
    # REFUSED_STREAM: the upstream did not process the call, so ingressd sends
    # it again on another stream, POST as it is, and the client never knows.
    seen: list[int] = []

    def refuse_first(conn: ServerConn, stream_id: int, req: Request) -> None:
        seen.append(stream_id)
        if len(seen) == 1:
            conn.h2.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            conn.flush()
            return
        conn.respond(stream_id, req.body, [(b"grpc-status", b"0")])

    server = upstream_loop.run(H2Server(refuse_first).start())
    try:
        setup.proxy.update(
            {
                "refusing.yaml": [
                    service("refusing"),
                    endpoint_slice("refusing", [LOCALHOST], server.port),
                    grpc_ingress("refusing", "refusing.test", "refusing"),
                ]
            }
        )
        # Until the route is live, ingressd answers 404 as UNIMPLEMENTED (12).
        r = wait_for(
            lambda: (r := setup.call("refusing.test", "Unary", [b"again"])).grpc_status != 12 and r,
            5,
            what="the refusing.test route",
        )
        assert (r.grpc_status, r.messages, len(seen)) == (0, [b"again"], 2)
    finally:
        setup.proxy.update({"refusing.yaml": None})
        upstream_loop.run(server.close())


def test_a_graceful_restart_lets_calls_under_way_finish(setup: Setup) -> None:
    backend = setup.main
    assert setup.call("grpc.test", "Unary", [b"echo:warm"]).grpc_status == 0
    call = H1Call(setup.proxy.http_port, "grpc.test", "Unary")
    call.send(b"sleep:1")
    call.end()
    time.sleep(0.3)
    stopper = threading.Thread(target=backend.stop, args=(5,))
    stopper.start()  # GOAWAY: no new calls on that connection, this one finishes
    r = call.finish()
    call.close()
    stopper.join(10)
    assert (r.grpc_status, r.messages) == (0, [b"slept"])
    backend.restart()
    r = wait_for(
        lambda: (r := setup.call("grpc.test", "Unary", [b"echo:after"])).grpc_status == 0 and r,
        10,
        what="a call after the restart",
    )
    assert r.messages == [b"after"]


# -- ingressd's own answers, as gRPC statuses -------------------------------------------------


@pytest.mark.parametrize(
    ("host", "code", "words"),
    [
        ("down.test", 14, "502 Bad Gateway: cannot connect to default/dead:80"),
        ("noready.test", 14, "503 Service Unavailable"),
        ("nowhere.test", 12, "404"),
        ("deny.test", 7, "403"),
        ("auth.test", 16, "401"),
        ("wrongca.test", 14, "certificate verify failed"),
        ("plaintotls.test", 14, "does not speak HTTP/2"),
    ],
)
def test_answers_made_here_are_grpc_statuses(
    setup: Setup, host: str, code: int, words: str
) -> None:
    r = setup.call(host, "Unary", [b"echo:x"])
    # As a gRPC server answers: HTTP 200, application/grpc, no message, the
    # status in the trailers.
    assert (r.status, r.header("content-type"), r.body) == (200, "application/grpc", b""), r
    assert r.trailer("grpc-status") == str(code), (r.grpc_status, r.grpc_message)
    assert words in (r.grpc_message or ""), r.grpc_message


def test_a_read_timeout_is_deadline_exceeded(setup: Setup) -> None:
    r = setup.call("slow.test", "Unary", [b"sleep:3"])
    assert (r.status, r.grpc_status) == (200, 4), r.grpc_message
    assert "504 Gateway Timeout" in (r.grpc_message or "")
    assert "upstream did not answer in time" in (r.grpc_message or "")


def test_a_body_over_proxy_body_size_is_refused(setup: Setup) -> None:
    r = setup.call("small.test", "Unary", [b"echo:" + b"x" * 4096])
    assert r.grpc_status == 2 and "413" in (r.grpc_message or "")  # UNKNOWN, by gRPC's table


def test_rate_limits_answer_unavailable(setup: Setup) -> None:
    codes = [setup.call("limited.test", "Unary", [b"echo:x"]).grpc_status for _ in range(12)]
    assert 0 in codes and 14 in codes, codes


def test_basic_auth_passes_with_credentials(setup: Setup) -> None:
    r = setup.call("auth.test", "Unary", [b"echo:in"], {"Authorization": "Basic YWxpY2U6czNjcmV0"})
    assert (r.grpc_status, r.messages) == (0, [b"in"])


def test_plain_http_answers_are_unchanged_for_requests_that_are_not_grpc(setup: Setup) -> None:
    r = setup.proxy.get("nowhere.test", check=False)
    assert r.status == 404 and r.header("grpc-status") is None


# -- GRPCS --------------------------------------------------------------------------------------


def test_grpcs_to_a_tls_backend_verified_with_the_secrets_ca(setup: Setup) -> None:
    r = setup.call("grpcs.test", "Unary", [b"echo:secure"])
    assert (r.grpc_status, r.messages) == (0, [b"secure"]), r.grpc_message
    r = setup.call("grpcs.test", "ServerStream", [b"3:100:0"])
    assert len(r.messages) == 3 and r.trailer("x-trail") == "done"
