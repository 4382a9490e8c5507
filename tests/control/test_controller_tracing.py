"""The controller turns OpenTelemetry tracing on and off with the ConfigMap (and the
Ingresses that ask for it), live, and never imports OpenTelemetry on its event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

import pytest
from k8s_objects import ingress, ingress_class, path, rule

from ingressd.control.controller import Controller
from ingressd.model.objects import Obj, ObjectStore
from ingressd.model.table import RouteTable
from ingressd.observe import tracing
from ingressd.proxy.settings import ProxySettings
from ingressd.proxy.state import ProxyState
from ingressd.routing.build import BuildOptions

CM = ("ingressd", "controller")


def configmap(data: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CM[1], "namespace": CM[0]},
        "data": data,
    }


COLLECTOR = {"otlp-collector-host": "127.0.0.1", "otlp-collector-port": "9"}


@pytest.fixture
def store() -> ObjectStore:
    s = ObjectStore()
    s.put(ingress_class())
    s.put(ingress("web", [rule("a.test", path("/", "web"))]))
    return s


@pytest.fixture
def controller() -> Iterator[Controller]:
    c = Controller(ProxyState(RouteTable(), ProxySettings()), None, BuildOptions(configmap=CM))
    yield c
    if c.state.tracing is not None:
        c.state.tracing.shutdown()


def test_on_off_and_by_annotation(controller: Controller, store: ObjectStore) -> None:
    controller.apply(store.snapshot())
    assert controller.state.tracing is None
    store.put(configmap({**COLLECTOR, "enable-opentelemetry": "true"}))
    controller.apply(store.snapshot())
    first = controller.state.tracing
    assert first is not None
    controller.apply(store.snapshot())  # the same settings: the same tracer
    assert controller.state.tracing is first
    store.put(configmap(COLLECTOR))  # off in the ConfigMap, no Ingress asks
    controller.apply(store.snapshot())
    assert controller.state.tracing is None and first.closed
    notes = {"nginx.ingress.kubernetes.io/enable-opentelemetry": "true"}
    store.put(ingress("traced", [rule("b.test", path("/", "web"))], annotations=notes))
    controller.apply(store.snapshot())
    assert controller.state.tracing is not None  # one Ingress asks: the tracer runs


async def test_the_first_table_waits_for_its_tracer(
    controller: Controller, store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracing, "must_import", lambda *_: True)
    store.put(configmap({**COLLECTOR, "enable-opentelemetry": "true"}))
    controller.apply(store.snapshot())  # nothing served yet: imported here
    assert controller.state.tracing is not None


def test_the_main_process_of_workers_runs_no_tracer(store: ObjectStore) -> None:
    state = ProxyState(RouteTable(), ProxySettings())
    c = Controller(state, None, BuildOptions(configmap=CM), serving=False)
    store.put(configmap({**COLLECTOR, "enable-opentelemetry": "true"}))
    c.apply(store.snapshot())
    assert state.tracing is None


async def test_opentelemetry_is_imported_off_the_event_loop(
    controller: Controller, store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in a process that has not imported OpenTelemetry yet (this one has).
    imported = False
    monkeypatch.setattr(tracing, "must_import", lambda *_: not imported)
    threads: list[str] = []
    release = threading.Event()
    real = tracing.import_then

    def import_then(done: Callable[[], object]) -> None:
        threads.append("import")

        def finished() -> object:
            nonlocal imported
            release.wait(5)  # the import takes its time
            imported = True  # as sys.modules holds them now
            return done()

        real(finished)

    monkeypatch.setattr(tracing, "import_then", import_then)
    controller.apply(store.snapshot())  # serving, untraced
    store.put(configmap({**COLLECTOR, "enable-opentelemetry": "true"}))
    controller.apply(store.snapshot())
    controller.apply(store.snapshot())  # one import at a time
    assert controller.state.tracing is None  # not yet: importing
    release.set()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if controller.state.tracing is not None:
            break
    assert controller.state.tracing is not None
    assert threads == ["import"]
