"""Controller and the collector: builds make no cyclic garbage, and freezing leaks nothing.

No timings here: what is checked is that successive changes leave the heap
(objects tracked by the collector, frozen or not, and traced memory) about the
size it was.
"""

from __future__ import annotations

import dataclasses
import gc
import tracemalloc
from collections.abc import Iterator

import pytest
from k8s_objects import (
    endpoint_slice,
    ingress,
    ingress_class,
    path,
    rule,
    service,
    tls_entry,
    tls_secret,
)

from ingressd.control.controller import Controller
from ingressd.model.objects import Obj, ObjectStore
from ingressd.model.table import RouteTable
from ingressd.policy.tls import CertificateSelector, self_signed
from ingressd.proxy.settings import ProxySettings
from ingressd.proxy.state import ProxyState
from ingressd.routing.build import BuildOptions, TableBuilder

SIZE = 300
CHANGES = 200


def app(i: int, extra: int | None = None) -> Obj:
    host = f"app-{i}.test"
    paths = [
        path("/", f"svc-{i}"),
        path("/api", f"svc-{i}"),
        path("/healthz", f"svc-{i}", path_type="Exact"),
    ]
    if extra is not None:
        paths.append(path(f"/added-{extra}", f"svc-{i}"))
    tls = [tls_entry([host], f"tls-{i}")] if i % 10 == 5 else None
    return ingress(f"app-{i}", [rule(host, *paths)], tls=tls, created=i)


def cluster() -> ObjectStore:
    store = ObjectStore()
    store.put(ingress_class())
    for i in range(SIZE):
        store.put(app(i))
        store.put(service(f"svc-{i}"))
        store.put(endpoint_slice(f"svc-{i}", [f"10.0.{i // 250}.{i % 250 + 1}"]))
        if i % 10 == 5:
            store.put(tls_secret(f"tls-{i}", [f"app-{i}.test"]))
    return store


def change(store: ObjectStore, k: int) -> None:
    """One of the changes a cluster sees: an Ingress edited, endpoints moving, a Secret renewed."""
    i = (k * 7) % SIZE
    if k % 3 == 0:
        store.put(app(i, extra=k))
    elif k % 3 == 1:
        store.put(endpoint_slice(f"svc-{i}", [f"10.1.{k % 250}.{i % 250 + 1}"]))
    else:
        i = i - i % 10 + 5
        pem = self_signed(f"app-{i}.test", (f"app-{i}.test",)) if k % 30 == 2 else None
        secret = tls_secret(f"tls-{i}", [f"app-{i}.test"], pem=pem)
        secret["metadata"]["resourceVersion"] = str(k)
        store.put(secret)


@pytest.fixture
def frozen_heap_restored() -> Iterator[None]:
    # Freezing is process-wide: give the test session its collector back.
    yield
    gc.unfreeze()
    gc.collect()


def controller() -> Controller:
    state = ProxyState(RouteTable(), ProxySettings())
    selector = CertificateSelector(lambda: state.table, self_signed())
    return Controller(state, selector, BuildOptions())


def heap() -> tuple[int, int]:
    """(objects the collector tracks, frozen included; bytes traced)."""
    gc.collect()
    return len(gc.get_objects()) + gc.get_freeze_count(), tracemalloc.get_traced_memory()[0]


def test_builds_make_no_cyclic_garbage() -> None:
    """What builds let go of is freed by reference counting: so freezing it is safe."""
    store = cluster()
    builder = TableBuilder()
    builder.build(store.snapshot())
    gc.collect()
    gc.disable()
    try:
        for k in range(CHANGES):
            change(store, k)
            builder.build(store.snapshot())
        found = gc.collect()
    finally:
        gc.enable()
    assert found == 0


def test_changes_applied_with_the_heap_frozen_every_time_leave_it_as_it_was(
    frozen_heap_restored: None,
) -> None:
    tracemalloc.start()  # from the start: what changes replace must have been traced
    try:
        store = cluster()
        ctl = controller()
        # Freeze after every apply, and never hand the frozen heap back: whatever
        # a build leaves behind would then stay for good.
        ctl.apply(store.snapshot())
        for k in range(SIZE):  # every Ingress changed once: caches and sizes settle
            change(store, k)
            ctl.apply(store.snapshot())
            gc.freeze()
        objects, traced = heap()
        for k in range(SIZE, SIZE + CHANGES):
            change(store, k)
            table = ctl.apply(store.snapshot())
            gc.freeze()
        more_objects, more_traced = heap()
    finally:
        tracemalloc.stop()
    last_edit = max(k for k in range(SIZE, SIZE + CHANGES) if k % 3 == 0)
    route = table.route_for(f"app-{last_edit * 7 % SIZE}.test", f"/added-{last_edit}/x")
    assert route is not None and route.path == f"/added-{last_edit}"
    assert more_objects - objects < 1000, "objects kept by changes"
    assert more_traced - traced < 256 * 1024, "memory kept by changes"


def test_the_heap_is_frozen_after_full_builds_only(frozen_heap_restored: None) -> None:
    store = cluster()
    ctl = controller()
    ctl.apply(store.snapshot())  # the first build made everything: frozen
    assert ctl.heap.freezes == 1
    assert gc.get_freeze_count() > SIZE * 10
    for k in range(0, 90, 3):  # incremental builds make little: no freeze
        change(store, k)
        ctl.apply(store.snapshot())
    assert ctl.heap.freezes == 1
    # New options mean a new builder, whose first build is from scratch: the
    # last freeze is handed back for a full collection, then all is frozen anew.
    gc.unfreeze()
    everything = len(gc.get_objects())
    gc.freeze()
    ctl.options = dataclasses.replace(ctl.options, ingress_class="other")
    ctl.apply(store.snapshot())
    assert ctl.heap.freezes == 2
    assert gc.get_freeze_count() == pytest.approx(everything, rel=0.1)
