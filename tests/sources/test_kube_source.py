"""Pieces of the cluster source: change coalescing, backoff, trimming, watch lines."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from ingressd.control.debounce import Debouncer
from ingressd.sources.kube import Backoff, _lines, trimmed


async def test_a_burst_becomes_one_call_after_the_holdoff() -> None:
    calls: list[float] = []
    loop = asyncio.get_running_loop()
    d = Debouncer(lambda: calls.append(loop.time()), holdoff=0.05, max_delay=1.0)
    start = loop.time()
    for _ in range(20):
        d.poke()
    await asyncio.sleep(0.2)
    assert len(calls) == 1
    assert calls[0] - start >= 0.05


async def test_a_steady_trickle_still_fires_by_the_max_delay() -> None:
    calls: list[float] = []
    loop = asyncio.get_running_loop()
    d = Debouncer(lambda: calls.append(loop.time()), holdoff=0.1, max_delay=0.25)
    start = loop.time()
    for _ in range(40):  # a poke every 20 ms, for 0.8 s: never 100 ms of quiet
        d.poke()
        await asyncio.sleep(0.02)
    d.cancel()
    assert len(calls) >= 2
    assert calls[0] - start < 0.25 + 0.1


async def test_cancel_drops_the_pending_call() -> None:
    calls: list[int] = []
    d = Debouncer(lambda: calls.append(1), holdoff=0.02)
    d.poke()
    d.cancel()
    await asyncio.sleep(0.08)
    assert calls == []


def test_backoff_grows_is_capped_jittered_and_resets() -> None:
    b = Backoff(base=0.5, cap=4.0)
    delays = [b.next() for _ in range(8)]
    assert 0.25 <= delays[0] <= 0.5
    assert all(d <= 4.0 for d in delays)
    assert delays[-1] >= 2.0  # capped at 4 s, jittered down to no less than half
    b.reset()
    assert b.next() <= 0.5


def test_trimmed_sets_kind_and_drops_bookkeeping() -> None:
    obj = {
        "metadata": {
            "name": "web",
            "managedFields": [{"manager": "kubectl"}],
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{...}",
                "keep": "me",
            },
        }
    }
    out = trimmed(obj, "Ingress", "networking.k8s.io/v1")
    assert out["kind"] == "Ingress" and out["apiVersion"] == "networking.k8s.io/v1"
    assert "managedFields" not in out["metadata"]
    assert out["metadata"]["annotations"] == {"keep": "me"}


class _Chunks:
    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    def stream(self, amt: None, decode_content: bool) -> Iterator[bytes]:
        yield from self.chunks


def test_watch_lines_are_reassembled_across_chunks() -> None:
    stream = _Chunks(b'{"a":', b"1", b'}\n{"b":2}\n\n{"c"', b":3}\n", b'{"partial"')
    assert list(_lines(stream)) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


def test_a_relist_keeps_secrets_fetched_by_name() -> None:
    from ingressd.model.objects import ObjectStore
    from ingressd.sources.kube import REFERENCED

    store = ObjectStore()
    tls = {"kind": "Secret", "metadata": {"name": "tls", "namespace": "a"}}
    named = {"kind": "Secret", "metadata": {"name": "users", "namespace": "a"}}
    store.put(tls)
    store.put(named, origin=REFERENCED)
    store.replace_all("Secret", [], keep_origin=REFERENCED)
    assert store.origin_of("Secret", "a", "tls") is None
    assert store.origin_of("Secret", "a", "users") == REFERENCED


def test_referenced_secrets_come_from_auth_auth_tls_and_proxy_ssl_annotations() -> None:
    from k8s_objects import ingress, snapshot

    from ingressd.sources.kube import referenced_secrets

    a = "nginx.ingress.kubernetes.io/"
    snap = snapshot(
        ingress("one", annotations={a + "auth-secret": "users"}, namespace="shop"),
        ingress("two", annotations={"ingressd.io/proxy-ssl-secret": "certs/upstream-ca"}),
        ingress("three", annotations={a + "auth-secret": "Not Valid!"}),
        ingress("four"),
        ingress("five", annotations={a + "auth-tls-secret": "client-ca"}, namespace="pay"),
    )
    assert referenced_secrets(snap) == {
        ("shop", "users"),
        ("certs", "upstream-ca"),
        ("pay", "client-ca"),  # a CA bundle: usually an Opaque Secret, not watched
    }


def test_trimmed_objects_share_their_strings() -> None:
    """Each watch event is decoded on its own, with new strings for every key and
    value; the store keeps one of each (objects.compact), whichever event brought it."""
    import json

    text = (
        '{"metadata": {"name": "web", "namespace": "default"},'
        ' "spec": {"rules": [{"host": "a.test", "http": {"paths": [{"pathType": "Prefix"}]}}]}}'
    )
    a = trimmed(json.loads(text), "Ingress", "networking.k8s.io/v1")
    b = trimmed(json.loads(text), "Ingress", "networking.k8s.io/v1")
    assert a == b
    (ka,) = [k for k in a if k == "spec"]
    (kb,) = [k for k in b if k == "spec"]
    assert ka is kb
    pa = a["spec"]["rules"][0]["http"]["paths"][0]
    pb = b["spec"]["rules"][0]["http"]["paths"][0]
    assert pa["pathType"] is pb["pathType"]
    assert a["metadata"]["namespace"] is b["metadata"]["namespace"]
