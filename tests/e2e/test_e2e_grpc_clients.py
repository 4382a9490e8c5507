"""End to end: grpcio clients through ingressd over TLS to grpcio backends.

A gRPC client speaks HTTP/2 only, negotiated by ALPN: these tests need
ingressd's HTTP/2 client side (``ingressd/proxy/client_h2.py``), and are
skipped, saying so, where it is missing. The gRPC upstream side they cross is
tested on its own in test_e2e_grpc_upstream.py (HTTP/1.1 gRPC calls) and
tests/proxy/test_upstream_h2.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from e2e_helpers import LOCALHOST, Ingressd, wait_for
from grpc_helpers import (
    MESSAGE_OPTIONS,
    SERVICE,
    UPSTREAM,
    GrpcBackend,
    concurrently,
    grpc_ingress,
    grpc_objects,
)
from k8s_objects import certificate, tls_secret

HOSTS = ("grpc.test", "grpcs.test", "down.test", "slow.test")
FRONT = certificate(*HOSTS)  # ingressd's certificate, which the clients trust


def route(name: str, host: str, svc: str, **annotations: str) -> dict:
    """A client of these routes calls /test.Echo/... over TLS (Secret "front")."""
    return grpc_ingress(name, host, svc, prefix=f"/{SERVICE}/", tls="front", **annotations)


@dataclass
class Setup:
    proxy: Ingressd
    main: GrpcBackend
    tls: GrpcBackend
    channels: dict[str, grpc.Channel]

    def channel(self, host: str) -> grpc.Channel:
        if host not in self.channels:
            creds = grpc.ssl_channel_credentials(root_certificates=FRONT[0])
            self.channels[host] = grpc.secure_channel(
                f"{LOCALHOST}:{self.proxy.https_port}",
                creds,
                options=[*MESSAGE_OPTIONS, ("grpc.ssl_target_name_override", host)],
            )
        return self.channels[host]

    def unary(self, host: str, request: bytes, **kwargs: object) -> object:
        call = self.channel(host).unary_unary(f"/{SERVICE}/Unary")
        return call.with_call(request, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("e2e-grpc-clients")
    with (
        GrpcBackend() as main,
        GrpcBackend(cert=UPSTREAM.cert_pem, key=UPSTREAM.key_pem) as tls,
    ):
        objects = [tls_secret("front", HOSTS, pem=FRONT), *grpc_objects(main, tls, route)]
        proc = Ingressd(workdir / "manifests", workdir / "ingressd.log")
        proc.update({"all.yaml": objects})
        with proc:
            channels: dict[str, grpc.Channel] = {}
            try:
                yield Setup(proc, main, tls, channels)
            finally:
                for channel in channels.values():
                    channel.close()


def test_unary_with_metadata_both_ways(setup: Setup) -> None:
    answer, call = setup.unary("grpc.test", b"echo:hi", metadata=(("x-custom", "v1"),))
    assert answer == b"hi"
    assert ("x-init", "yes") in call.initial_metadata()
    trailing = dict(call.trailing_metadata())
    assert (trailing["x-trail"], trailing["x-trail-bin"]) == ("done", b"\x00\xff")
    seen, _ = setup.unary("grpc.test", b"meta", metadata=(("x-custom", "v1"),))
    got = json.loads(seen)
    assert got["x-custom"] == "v1" and got["x-forwarded-proto"] == "https"
    assert got["x-forwarded-for"] == LOCALHOST


def test_status_codes_come_through(setup: Setup) -> None:
    with pytest.raises(grpc.RpcError) as info:
        setup.unary("grpc.test", b"status:5:no such thing")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "no such thing"
    assert dict(info.value.trailing_metadata())["x-trail"] == "done"


def test_server_streaming(setup: Setup) -> None:
    call = setup.channel("grpc.test").unary_stream(f"/{SERVICE}/ServerStream")
    messages = list(call(b"50:1000:0"))
    assert len(messages) == 50 and all(len(m) == 1000 for m in messages)


def test_client_streaming(setup: Setup) -> None:
    call = setup.channel("grpc.test").stream_unary(f"/{SERVICE}/ClientStream")
    answer = json.loads(call(iter([b"x" * 1000] * 100)))
    assert (answer["count"], answer["total"]) == (100, 100_000)


def test_bidirectional_streaming(setup: Setup) -> None:
    call = setup.channel("grpc.test").stream_stream(f"/{SERVICE}/Bidi")
    answers = list(call(iter([b"a", b"b", b"c"])))
    assert answers == [b"re:a", b"re:b", b"re:c"]


def test_a_10_mb_message_each_way(setup: Setup) -> None:
    payload = bytes(range(256)) * (10 * 1024 * 1024 // 256)
    answer, _ = setup.unary("grpc.test", b"echo:" + payload)
    assert answer == payload
    answer, _ = setup.unary("grpc.test", b"big:%d" % len(payload))
    assert len(answer) == len(payload)


def test_deadline_exceeded(setup: Setup) -> None:
    with pytest.raises(grpc.RpcError) as info:
        setup.unary("grpc.test", b"sleep:3", timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    remaining = setup.main.seen.deadlines[-1]
    assert remaining is not None and 0 < remaining <= 0.31  # grpc-timeout reached the backend


def test_cancellation_reaches_the_backend(setup: Setup) -> None:
    call = setup.channel("grpc.test").unary_stream(f"/{SERVICE}/ServerStream")
    stream = call(b"1000:10:0.05")
    next(stream)
    cancelled = len(setup.main.seen.cancelled)
    stream.cancel()
    wait_for(lambda: len(setup.main.seen.cancelled) > cancelled, 5, what="the cancellation")


def test_a_backend_that_is_down_is_unavailable(setup: Setup) -> None:
    with pytest.raises(grpc.RpcError) as info:
        setup.unary("down.test", b"echo:x")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "cannot connect to default/dead" in info.value.details()


def test_no_route_is_unimplemented(setup: Setup) -> None:
    call = setup.channel("grpc.test").unary_unary("/other.Service/Method")
    with pytest.raises(grpc.RpcError) as info:
        call(b"x")
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_read_timeout_is_deadline_exceeded(setup: Setup) -> None:
    with pytest.raises(grpc.RpcError) as info:
        setup.unary("slow.test", b"sleep:3")
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "504 Gateway Timeout" in info.value.details()


def test_a_backend_restarted_mid_stream(setup: Setup) -> None:
    call = setup.channel("grpc.test").unary_stream(f"/{SERVICE}/ServerStream")
    stream = call(b"1000:10:0.05")
    next(stream)
    setup.main.restart()
    with pytest.raises(grpc.RpcError) as info:
        for _ in stream:
            pass
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)
    answer = wait_for(
        lambda: _try(lambda: setup.unary("grpc.test", b"echo:back")[0]),
        10,
        what="a call after the restart",
    )
    assert answer == b"back"


def test_many_concurrent_calls_on_one_client_connection(setup: Setup) -> None:
    results, took = concurrently(lambda i: setup.unary("grpc.test", b"echo:%d" % i)[0], 50)
    assert sorted(results) == sorted(b"%d" % i for i in range(50))
    assert took < 20


def test_grpcs_to_a_tls_backend(setup: Setup) -> None:
    answer, call = setup.unary("grpcs.test", b"echo:secure")
    assert answer == b"secure"
    assert dict(call.trailing_metadata())["x-trail"] == "done"


def _try(fn: object) -> object:
    try:
        return fn()  # type: ignore[operator]
    except grpc.RpcError:
        return None
