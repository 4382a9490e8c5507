"""The test API server (kube_apiserver.py), driven by the real ``kubernetes`` client.

Each test starts its own server on 127.0.0.1 and talks to it through a kubeconfig
with a verified certificate and a bearer token, as the controller will.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from e2e_helpers import wait_for
from k8s_objects import endpoint_slice, ingress, ingress_class, path, rule, service, tls_secret
from kube_apiserver import KubeApiServer
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from ingressd.model.objects import Obj

pytestmark = pytest.mark.timeout(30)

TOKENS = {"token-a": "controller-a", "token-b": "controller-b"}
T = 10  # _request_timeout for every call: no test hangs on a dead socket
MERGE = "application/merge-patch+json"
INGRESS_PATH = "/apis/networking.k8s.io/v1/namespaces/default/ingresses"

Connect = Callable[..., client.ApiClient]


def api_client(server: KubeApiServer, kubeconfig: Path, token: str) -> client.ApiClient:
    server.write_kubeconfig(kubeconfig, token)
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return client.ApiClient(configuration)


@pytest.fixture
def server() -> Iterator[KubeApiServer]:
    with KubeApiServer(tokens=TOKENS, bookmark_interval=0.1) as s:
        yield s


@pytest.fixture
def connect(server: KubeApiServer, tmp_path: Path) -> Iterator[Connect]:
    """``connect(token="token-a")`` -> an ApiClient for ``server``."""
    clients: list[client.ApiClient] = []

    def make(token: str = "token-a") -> client.ApiClient:
        clients.append(api_client(server, tmp_path / f"kubeconfig-{len(clients)}", token))
        return clients[-1]

    yield make
    for api in clients:
        api.close()


@pytest.fixture
def net(connect: Connect) -> client.NetworkingV1Api:
    return client.NetworkingV1Api(connect())


def web(name: str, **kwargs: Any) -> Obj:
    return ingress(name, rules=[rule(f"{name}.example", path("/", name))], **kwargs)


def status_of(e: pytest.ExceptionInfo[ApiException]) -> Obj:
    return json.loads(e.value.body)


def names(objs: Any) -> list[str]:
    return [o.metadata.name for o in objs.items]


# -- lists --------------------------------------------------------------------------------


def test_list_pages_are_a_consistent_snapshot(server: KubeApiServer, net: Any) -> None:
    for name in "ecadb":
        server.create(web(name))
    first = net.list_namespaced_ingress("default", limit=2, _request_timeout=T)
    assert names(first) == ["a", "b"]
    assert first.metadata.remaining_item_count == 3

    server.delete("Ingress", "default", "d")
    server.create(web("bb"))
    server.update(web("e", annotations={"changed": "yes"}))

    seen, page = names(first), first
    while page.metadata.var_continue:
        page = net.list_namespaced_ingress(
            "default", limit=2, _continue=page.metadata.var_continue, _request_timeout=T
        )
        assert page.metadata.resource_version == first.metadata.resource_version
        seen += names(page)
        if "e" in names(page):
            assert page.items[-1].metadata.annotations is None  # e as it was
    assert seen == ["a", "b", "c", "d", "e"]

    now = net.list_namespaced_ingress("default", _request_timeout=T)
    assert names(now) == ["a", "b", "bb", "c", "e"]
    assert now.metadata.var_continue is None
    assert int(now.metadata.resource_version) > int(first.metadata.resource_version)


def test_expired_or_unknown_continue_token_is_410(server: KubeApiServer, net: Any) -> None:
    for name in "abc":
        server.create(web(name))
    page = net.list_namespaced_ingress("default", limit=1, _request_timeout=T)
    server.compact()
    for token in (page.metadata.var_continue, "not-a-token"):
        with pytest.raises(ApiException) as e:
            net.list_namespaced_ingress("default", limit=1, _continue=token, _request_timeout=T)
        assert e.value.status == 410
        assert status_of(e)["reason"] == "Expired"


def test_wire_format_version_and_errors(server: KubeApiServer, connect: Connect) -> None:
    api = connect()
    net = client.NetworkingV1Api(api)
    server.create(web("web"))

    raw = net.list_namespaced_ingress("default", _preload_content=False, _request_timeout=T)
    body = json.loads(raw.data)
    assert (body["kind"], body["apiVersion"]) == ("IngressList", "networking.k8s.io/v1")
    item = body["items"][0]
    assert "kind" not in item and "apiVersion" not in item  # as the real server lists
    assert item["status"] == {"loadBalancer": {}}
    assert set(item["metadata"]) >= {"uid", "resourceVersion", "creationTimestamp", "generation"}

    with pytest.raises(ApiException) as e:
        net.read_namespaced_ingress("missing", "default", _request_timeout=T)
    assert e.value.status == 404
    assert status_of(e) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'ingresses.networking.k8s.io "missing" not found',
        "reason": "NotFound",
        "details": {"name": "missing", "group": "networking.k8s.io", "kind": "ingresses"},
        "code": 404,
    }

    headers = {"Authorization": api.configuration.api_key["BearerToken"]}
    unknown = api.rest_client.request("GET", f"{server.url}/apis/example.com/v1/widgets", headers)
    assert unknown.status == 404
    assert json.loads(unknown.read())["reason"] == "NotFound"

    assert client.VersionApi(api).get_code(_request_timeout=T).git_version.startswith("v1.")


def test_every_kind_through_the_typed_client(server: KubeApiServer, connect: Connect) -> None:
    api = connect()
    server.create(ingress_class())
    server.create(service("web"))
    server.create(service("api", namespace="other"))
    server.create(endpoint_slice("web", ["10.0.0.1"]))
    server.create(endpoint_slice("api", ["10.0.0.2"], namespace="other"))

    assert names(client.NetworkingV1Api(api).list_ingress_class(_request_timeout=T)) == ["ingressd"]
    core = client.CoreV1Api(api)
    assert names(core.list_service_for_all_namespaces(_request_timeout=T)) == ["web", "api"]
    assert names(core.list_namespaced_service("other", _request_timeout=T)) == ["api"]
    status = core.read_namespaced_service_status("web", "default", _request_timeout=T)
    assert status.spec.ports[0].port == 80
    slices = client.DiscoveryV1Api(api).list_endpoint_slice_for_all_namespaces(
        label_selector="kubernetes.io/service-name=api", _request_timeout=T
    )
    assert [s.endpoints[0].addresses for s in slices.items] == [["10.0.0.2"]]
    assert names(client.CoordinationV1Api(api).list_lease_for_all_namespaces()) == []


# -- watches -------------------------------------------------------------------------------


def test_watch_sees_added_modified_deleted(server: KubeApiServer, net: Any) -> None:
    server.create(web("a"))
    w = watch.Watch()
    seen: list[tuple[str, str, int]] = []
    stream = w.stream(
        net.list_namespaced_ingress, "default", timeout_seconds=10, _request_timeout=T
    )
    for event in stream:
        meta = event["object"].metadata
        seen.append((event["type"], meta.name, int(meta.resource_version)))
        if len(seen) == 1:
            assert server.watch_count("Ingress") == 1
            net.create_namespaced_ingress("default", web("b"), _request_timeout=T)
            patch = {"metadata": {"labels": {"x": "y"}}}
            net.patch_namespaced_ingress("a", "default", patch, _content_type=MERGE)
            net.delete_namespaced_ingress("b", "default", _request_timeout=T)
        if event["type"] == "DELETED":
            w.stop()
    assert [(t, n) for t, n, _ in seen] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
    ]
    rvs = [rv for _, _, rv in seen]
    assert rvs == sorted(rvs) and len(set(rvs)) == 4  # the deletion has a version of its own
    wait_for(lambda: server.watch_count("Ingress") == 0, 5, what="the watch to close")


def test_raw_watch_sends_bookmarks(server: KubeApiServer, net: Any) -> None:
    server.create(web("a"))
    server.create(tls_secret("other-kind"))  # moves the global resourceVersion on
    resp = net.list_ingress_for_all_namespaces(
        watch=True,
        allow_watch_bookmarks=True,
        timeout_seconds=5,
        _preload_content=False,
        _request_timeout=T,
    )
    try:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.headers["Transfer-Encoding"] == "chunked"
        events = []
        for line in iter_resp_lines(resp):
            events.append(json.loads(line))
            if events[-1]["type"] == "BOOKMARK":
                break
    finally:
        resp.close()
    added, bookmark = events
    assert added["type"] == "ADDED"
    assert (added["object"]["kind"], added["object"]["apiVersion"]) == (
        "Ingress",
        "networking.k8s.io/v1",
    )
    assert bookmark["object"] == {
        "kind": "Ingress",
        "apiVersion": "networking.k8s.io/v1",
        "metadata": {"resourceVersion": server.resource_version},
    }


def test_watch_from_compacted_resource_version_gets_410(server: KubeApiServer, net: Any) -> None:
    server.create(web("a"))
    old = server.resource_version
    server.create(web("b"))
    server.compact()

    resp = net.list_namespaced_ingress(
        "default",
        watch=True,
        resource_version=old,
        timeout_seconds=5,
        _preload_content=False,
        _request_timeout=T,
    )
    lines = list(iter_resp_lines(resp))  # the server ends the stream after the error
    assert resp.status == 200
    assert len(lines) == 1
    error = json.loads(lines[0])
    assert error["type"] == "ERROR"
    assert error["object"]["code"] == 410
    assert error["object"]["reason"] == "Expired"
    assert error["object"]["message"].startswith(f"too old resource version: {old} (")

    with pytest.raises(ApiException) as e:
        list(
            watch.Watch().stream(
                net.list_namespaced_ingress, "default", resource_version=old, timeout_seconds=5
            )
        )
    assert e.value.status == 410

    # From the current version on there is nothing to replay and nothing wrong.
    events = watch.Watch().stream(
        net.list_namespaced_ingress,
        "default",
        resource_version=server.resource_version,
        timeout_seconds=1,
        _request_timeout=T,
    )
    assert list(events) == []


def test_history_limit_expires_old_resource_versions(tmp_path: Path) -> None:
    with KubeApiServer(tokens=TOKENS, history_limit=2) as small:
        api = api_client(small, tmp_path / "kubeconfig", "token-a")
        net = client.NetworkingV1Api(api)
        for name in "abcd":
            small.create(web(name))  # versions 1-4; 3 and 4 are kept

        def watch_from(rv: str) -> list[tuple[str, str]]:
            events = watch.Watch().stream(
                net.list_namespaced_ingress,
                "default",
                resource_version=rv,
                timeout_seconds=1,
                _request_timeout=T,
            )
            return [(e["type"], e["object"].metadata.name) for e in events]

        assert watch_from("2") == [("ADDED", "c"), ("ADDED", "d")]
        with pytest.raises(ApiException) as e:
            watch_from("1")
        assert e.value.status == 410
        api.close()


def test_cut_watch_ends_abruptly_and_resuming_misses_nothing(
    server: KubeApiServer, net: Any
) -> None:
    server.create(web("a"))
    stream = watch.Watch().stream(
        net.list_namespaced_ingress, "default", timeout_seconds=20, _request_timeout=T
    )
    first = next(stream)
    last_rv = first["object"].metadata.resource_version
    assert server.watch_count("Ingress") == 1

    server.cut_watches()
    assert server.watch_count("Ingress") == 0
    server.create(web("b"))  # all while no watch is open
    server.update(web("a", annotations={"k": "v"}))
    server.delete("Ingress", "default", "b")
    with pytest.raises(urllib3.exceptions.ProtocolError):  # no terminating chunk
        next(stream)

    w = watch.Watch()
    replayed = []
    for event in w.stream(
        net.list_namespaced_ingress,
        "default",
        resource_version=last_rv,
        timeout_seconds=10,
        _request_timeout=T,
    ):
        replayed.append((event["type"], event["object"].metadata.name))
        if len(replayed) == 3:
            w.stop()
    assert replayed == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    watches = [r for r in server.requests if r.query.get("watch") == "true"]
    assert watches[-1].query["resourceVersion"] == last_rv


# -- selectors -----------------------------------------------------------------------------


def test_field_selector_filters_tls_secrets(server: KubeApiServer, connect: Connect) -> None:
    core = client.CoreV1Api(connect())
    server.create(tls_secret("tls-a"))
    server.create(tls_secret("tls-b", namespace="other"))
    server.create(tls_secret("opaque", secret_type="Opaque"))

    def listed(**kwargs: Any) -> list[tuple[str, str]]:
        found = core.list_secret_for_all_namespaces(_request_timeout=T, **kwargs)
        return [(s.metadata.namespace, s.metadata.name) for s in found.items]

    assert listed(field_selector="type=kubernetes.io/tls") == [
        ("default", "tls-a"),
        ("other", "tls-b"),
    ]
    assert listed(field_selector="type!=kubernetes.io/tls") == [("default", "opaque")]
    assert listed(field_selector="type==kubernetes.io/tls,metadata.namespace=other") == [
        ("other", "tls-b")
    ]
    assert any(
        r.path == "/api/v1/secrets" and r.query.get("fieldSelector") == "type=kubernetes.io/tls"
        for r in server.requests
    )
    with pytest.raises(ApiException) as e:
        listed(field_selector="spec.nonsense=1")
    assert (e.value.status, status_of(e)["reason"]) == (400, "BadRequest")

    since = server.resource_version
    server.create(tls_secret("opaque-2", secret_type="Opaque"))
    server.create(tls_secret("tls-c"))
    w = watch.Watch()
    for event in w.stream(
        core.list_secret_for_all_namespaces,
        field_selector="type=kubernetes.io/tls",
        resource_version=since,
        timeout_seconds=5,
        _request_timeout=T,
    ):
        assert (event["type"], event["object"].metadata.name) == ("ADDED", "tls-c")
        w.stop()


# -- writes --------------------------------------------------------------------------------


def test_lease_conflicts(server: KubeApiServer, connect: Connect) -> None:
    leases_a = client.CoordinationV1Api(connect("token-a"))
    leases_b = client.CoordinationV1Api(connect("token-b"))
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "ingressd-leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
    }
    mine = leases_a.create_namespaced_lease("default", lease, _request_timeout=T)
    with pytest.raises(ApiException) as e:
        leases_b.create_namespaced_lease("default", lease, _request_timeout=T)
    assert (e.value.status, status_of(e)["reason"]) == (409, "AlreadyExists")

    theirs = leases_b.read_namespaced_lease("ingressd-leader", "default", _request_timeout=T)
    theirs.spec.holder_identity = "b"
    taken = leases_b.replace_namespaced_lease("ingressd-leader", "default", theirs)
    assert int(taken.metadata.resource_version) > int(mine.metadata.resource_version)

    mine.spec.holder_identity = "a-again"  # from a stale copy
    with pytest.raises(ApiException) as e:
        leases_a.replace_namespaced_lease("ingressd-leader", "default", mine, _request_timeout=T)
    assert (e.value.status, status_of(e)["reason"]) == (409, "Conflict")
    assert "the object has been modified" in status_of(e)["message"]
    assert server.get("Lease", "default", "ingressd-leader")["spec"]["holderIdentity"] == "b"
    assert [(user, method) for user, method, _ in server.writes("/leases")] == [
        ("controller-a", "POST"),
        ("controller-b", "POST"),
        ("controller-b", "PUT"),
        ("controller-a", "PUT"),
    ]


def test_ingress_status_patch_changes_only_status(server: KubeApiServer, connect: Connect) -> None:
    net = client.NetworkingV1Api(connect("token-b"))
    before = server.create(web("web"))
    patch = {
        "metadata": {"labels": {"ignored": "yes"}},
        "spec": {"ingressClassName": "ignored"},
        "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}},
    }
    net.patch_namespaced_ingress_status(
        "web", "default", patch, _content_type=MERGE, _request_timeout=T
    )
    after = server.get("Ingress", "default", "web")
    assert after is not None
    assert after["status"] == patch["status"]
    assert after["spec"] == before["spec"]
    assert "labels" not in after["metadata"]
    assert after["metadata"]["generation"] == 1
    assert server.writes("/status") == [("controller-b", "PATCH", f"{INGRESS_PATH}/web/status")]

    # The same patch again changes nothing, so nothing is written.
    net.patch_namespaced_ingress_status("web", "default", patch, _content_type=MERGE)
    assert server.get("Ingress", "default", "web") == after

    # The client's own choices: a dict goes as a strategic merge patch, a list as a
    # JSON patch.
    hostname = {"status": {"loadBalancer": {"ingress": [{"hostname": "lb.example"}]}}}
    net.patch_namespaced_ingress_status("web", "default", hostname, _request_timeout=T)
    ops = [
        {"op": "test", "path": "/status/loadBalancer/ingress/0/hostname", "value": "lb.example"},
        {"op": "add", "path": "/status/loadBalancer/ingress/-", "value": {"ip": "10.0.0.2"}},
    ]
    result = net.patch_namespaced_ingress_status("web", "default", ops, _request_timeout=T)
    assert result.status.to_dict()["load_balancer"]["ingress"][1]["ip"] == "10.0.0.2"
    failing = [{"op": "test", "path": "/status/loadBalancer/ingress/0/hostname", "value": "x"}]
    with pytest.raises(ApiException) as e:
        net.patch_namespaced_ingress_status("web", "default", failing, _request_timeout=T)
    assert (e.value.status, status_of(e)["reason"]) == (422, "Invalid")


def test_put_on_main_ingress_keeps_status(server: KubeApiServer, net: Any) -> None:
    lb = {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}
    server.create({**web("web"), "status": lb})
    current = server.get("Ingress", "default", "web")
    assert current is not None
    current["spec"]["rules"][0]["host"] = "new.example"
    current["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.9"}]}}
    replaced = net.replace_namespaced_ingress("web", "default", current, _request_timeout=T)
    assert replaced.spec.rules[0].host == "new.example"
    assert replaced.metadata.generation == 2
    stored = server.get("Ingress", "default", "web")
    assert stored is not None and stored["status"] == lb

    # /status takes the status and nothing else.
    stored["spec"]["rules"][0]["host"] = "ignored.example"
    stored["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}
    net.replace_namespaced_ingress_status("web", "default", stored, _request_timeout=T)
    final = server.get("Ingress", "default", "web")
    assert final is not None
    assert final["spec"]["rules"][0]["host"] == "new.example"
    assert final["status"] == stored["status"]
    assert final["metadata"]["generation"] == 2


def test_events_with_generate_name(server: KubeApiServer, connect: Connect) -> None:
    api = connect()
    involved = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "namespace": "default",
        "name": "web",
    }
    core_event = {
        "metadata": {"generateName": "web."},
        "involvedObject": involved,
        "reason": "Sync",
        "message": "Scheduled for sync",
        "type": "Normal",
        "source": {"component": "ingressd"},
        "count": 1,
    }
    core = client.CoreV1Api(api)
    first = core.create_namespaced_event("default", core_event, _request_timeout=T)
    second = core.create_namespaced_event("default", core_event, _request_timeout=T)
    for event in (first, second):
        assert event.metadata.name.startswith("web.") and len(event.metadata.name) == 9
    assert first.metadata.name != second.metadata.name

    new_event = {
        "metadata": {"generateName": "web."},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "ingressd",
        "reportingInstance": "ingressd-0",
        "action": "Sync",
        "reason": "Sync",
        "regarding": involved,
        "type": "Normal",
        "note": "Scheduled for sync",
    }
    client.EventsV1Api(api).create_namespaced_event("default", new_event, _request_timeout=T)

    events = server.events()
    assert [e["apiVersion"] for e in events] == ["v1", "v1", "events.k8s.io/v1"]
    assert events[0]["involvedObject"] == involved
    assert len(core.list_event_for_all_namespaces(_request_timeout=T).items) == 2

    with pytest.raises(ApiException) as e:
        core.create_namespaced_event("default", {**core_event, "metadata": {}})
    assert (e.value.status, status_of(e)["reason"]) == (422, "Invalid")


# -- auth and availability -----------------------------------------------------------------


def test_missing_or_unknown_token_is_401(server: KubeApiServer, connect: Connect) -> None:
    unknown = client.NetworkingV1Api(connect("not-a-token"))
    anonymous_client = connect()
    anonymous_client.configuration.api_key.clear()
    anonymous = client.NetworkingV1Api(anonymous_client)
    for api in (unknown, anonymous):
        with pytest.raises(ApiException) as e:
            api.list_ingress_for_all_namespaces(_request_timeout=T)
        assert e.value.status == 401
        assert status_of(e)["reason"] == "Unauthorized"
    assert [r.user for r in server.requests] == [None, None]


def test_stop_and_start_keep_port_and_state(server: KubeApiServer, net: Any) -> None:
    server.create(web("web"))
    port, version = server.port, server.resource_version
    stream = watch.Watch().stream(
        net.list_namespaced_ingress, "default", timeout_seconds=20, _request_timeout=T
    )
    assert next(stream)["object"].metadata.name == "web"

    server.stop()
    with pytest.raises(urllib3.exceptions.ProtocolError):
        next(stream)
    with pytest.raises(urllib3.exceptions.HTTPError):  # connection refused
        net.list_namespaced_ingress("default", _request_timeout=2)
    server.create(web("while-down"))  # written through another API server, say

    server.start()
    assert server.port == port
    assert names(net.list_namespaced_ingress("default", _request_timeout=T)) == [
        "web",
        "while-down",
    ]
    w = watch.Watch()
    for event in w.stream(
        net.list_namespaced_ingress,
        "default",
        resource_version=version,
        timeout_seconds=10,
        _request_timeout=T,
    ):
        assert (event["type"], event["object"].metadata.name) == ("ADDED", "while-down")
        assert int(event["object"].metadata.resource_version) == int(version) + 1
        w.stop()
