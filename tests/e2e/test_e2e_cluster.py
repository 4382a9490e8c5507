"""End to end: ``ingressd serve --kubeconfig`` against a Kubernetes API server.

The API server is ``kube_apiserver.KubeApiServer``: the REST wire protocol
(HTTPS, bearer tokens, list/watch/410/bookmarks, status subresource, Leases,
Events) for the resources ingressd uses. ingressd runs as a subprocess and
talks to it with the real ``kubernetes`` client through a kubeconfig file, as
it would to a cluster; what it serves is checked with curl, what it writes
back is read from the server's request log.
"""

from __future__ import annotations

import datetime as dt
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest
from deploy_objects import (
    DEPLOY,
    Authorizer,
    api_access,
    container_args,
    find,
    option,
    pod_spec,
    render,
)
from e2e_helpers import (
    RELOAD_DEADLINE,
    EchoServers,
    Ingressd,
    backends,
    echo_backend,
    free_port,
    pem_to_der,
    raw_exchange,
    scrape,
    served_by,
    served_certificate,
    simple,
    time_until,
    wait_for,
)
from k8s_objects import certificate, endpoint_slice, ingress, path, rule, tls_entry, tls_secret
from kube_apiserver import KubeApiServer

from ingressd.kube.webhook_certs import issue, secret_data
from ingressd.model.objects import Obj

pytestmark = pytest.mark.timeout(120)

PUBLISHED = "192.0.2.10"
LEASE_SECONDS = 2.0
# Short lease timings so failover fits in a test; the defaults are client-go's 15/10/2 s.
FAST_LEASE = [
    "--lease-duration",
    str(LEASE_SECONDS),
    "--renew-deadline",
    "1.5",
    "--retry-period",
    "0.25",
]
USERS = ("a", "b")

Start = Callable[..., Ingressd]


@pytest.fixture
def apiserver() -> Iterator[KubeApiServer]:
    tokens = {f"token-{u}": f"controller-{u}" for u in USERS}
    server = KubeApiServer(tokens=tokens, bookmark_interval=0.5)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start(tmp_path: Path, apiserver: KubeApiServer, curl_binary: str) -> Iterator[Start]:
    """``start(user="a", *extra_args, until=, publish=)`` -> ingressd on that user's kubeconfig."""
    started: list[Ingressd] = []

    def run(
        user: str = "a",
        *extra: str,
        until: str = "/readyz",
        publish: tuple[str, ...] = ("--publish-status-address", PUBLISHED),
    ) -> Ingressd:
        kubeconfig = apiserver.write_kubeconfig(
            tmp_path / f"kubeconfig-{user}", f"token-{user}", namespace="ingressd"
        )
        proc = Ingressd(
            None,
            tmp_path / f"ingressd-{user}-{len(started)}.log",
            extra_args=[
                "--kubeconfig",
                str(kubeconfig),
                *publish,
                *FAST_LEASE,
                "--secret-refresh",
                "1",
                *extra,
            ],
        )
        started.append(proc)
        return proc.start(until=until)

    try:
        yield run
    finally:
        for proc in started:
            proc.stop()


def seed(server: KubeApiServer, objs: list[Obj]) -> None:
    for obj in objs:
        server.apply(obj)


def list_requests(server: KubeApiServer, resource: str) -> list[dict[str, str]]:
    """Query strings of the LISTs (not watches) of ``resource`` made so far."""
    return [
        q
        for method, p, q, _ in server.requests
        if method == "GET" and p.endswith(f"/{resource}") and q.get("watch") not in ("true", "1")
    ]


def watch_requests(server: KubeApiServer, resource: str) -> list[dict[str, str]]:
    return [
        q
        for method, p, q, _ in server.requests
        if method == "GET" and p.endswith(f"/{resource}") and q.get("watch") in ("true", "1")
    ]


def status_writers(server: KubeApiServer) -> set[str]:
    return {user for user, _, p in server.writes("/status") if "/ingresses/" in p}


def lease_holder(server: KubeApiServer) -> str:
    lease = server.get("Lease", "ingressd", "ingressd-leader")
    return ((lease or {}).get("spec") or {}).get("holderIdentity") or ""


def published(server: KubeApiServer, name: str, namespace: str = "default") -> list[dict]:
    ing = server.get("Ingress", namespace, name) or {}
    return ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []


# -- the watch feeds the proxy ---------------------------------------------------------------


def test_every_kind_of_change_is_served_within_a_second(
    apiserver: KubeApiServer, echo_servers: EchoServers, start: Start
) -> None:
    seed(apiserver, [*backends(echo_servers), simple("a", "a.test", "web")])
    ing = start()
    assert served_by(ing, "a.test") == "web"

    def within_deadline(change: Callable[[], None], check: Callable[[], bool], what: str) -> None:
        change()
        took = time_until(check, what, timeout=3.0)
        assert took <= RELOAD_DEADLINE, f"{what} took {took:.2f} s"

    # Ingress: create, update, delete.
    within_deadline(
        lambda: apiserver.create(simple("b", "b.test", "api")),
        lambda: served_by(ing, "b.test") == "api",
        "new Ingress served",
    )
    within_deadline(
        lambda: apiserver.update(simple("b", "b.test", "web")),
        lambda: served_by(ing, "b.test") == "web",
        "updated Ingress served",
    )
    within_deadline(
        lambda: apiserver.delete("Ingress", "default", "b"),
        lambda: ing.get("b.test", check=False).status == 404,
        "deleted Ingress gone",
    )
    # EndpointSlice: web's slice now points at api's echo server.
    within_deadline(
        lambda: apiserver.update(
            endpoint_slice(
                "web", ["127.0.0.1"], echo_servers["api"], name=f"web-x{echo_servers['web']}"
            )
        ),
        lambda: served_by(ing, "a.test") == "api",
        "new endpoints used",
    )
    # Service: deleting it makes its routes answer 503; creating it again restores them.
    within_deadline(
        lambda: apiserver.delete("Service", "default", "web"),
        lambda: ing.get("a.test", check=False).status == 503,
        "deleted Service answers 503",
    )
    within_deadline(
        lambda: apiserver.create(echo_backend("web", echo_servers["web"])[0]),
        lambda: served_by(ing, "a.test") == "api",
        "recreated Service served",
    )
    # Secret: a TLS Ingress first uses the default certificate, then the Secret, then its renewal.
    apiserver.create(
        ingress(
            "secure",
            [rule("s.test", path("/", "web"))],
            tls=[tls_entry(["s.test"], "s-tls")],
        )
    )
    first = certificate("s.test")
    second = certificate("s.test", "www.s.test")

    def serves(pem: bytes) -> Callable[[], bool]:
        return lambda: served_certificate(ing.https_port, "s.test") == pem_to_der(pem)

    within_deadline(
        lambda: apiserver.create(tls_secret("s-tls", pem=first)),
        serves(first[0]),
        "new TLS Secret served",
    )
    within_deadline(
        lambda: apiserver.update(tls_secret("s-tls", pem=second)),
        serves(second[0]),
        "renewed TLS Secret served",
    )
    within_deadline(
        lambda: apiserver.delete("Secret", "default", "s-tls"),
        lambda: not serves(second[0])(),
        "deleted TLS Secret no longer served",
    )


def test_lists_and_watches_ask_for_what_they_need(
    apiserver: KubeApiServer, echo_servers: EchoServers, start: Start
) -> None:
    seed(apiserver, [*backends(echo_servers), simple("a", "a.test", "web")])
    opaque = tls_secret("not-tls", secret_type="Opaque")
    apiserver.create(opaque)
    start()
    for resource in ("ingressclasses", "ingresses", "services", "endpointslices", "secrets"):
        # Ready means every kind is listed; each watch follows its list a moment later.
        watches = wait_for(
            lambda r=resource: watch_requests(apiserver, r), 5, what=f"a watch of {resource}"
        )
        assert all(w.get("allowWatchBookmarks") == "true" for w in watches)
        assert all(w.get("resourceVersion") not in (None, "", "0") for w in watches)
    secrets = list_requests(apiserver, "secrets") + watch_requests(apiserver, "secrets")
    assert secrets and all(q.get("fieldSelector") == "type=kubernetes.io/tls" for q in secrets)


def test_not_ready_until_every_kind_is_listed(
    apiserver: KubeApiServer, echo_servers: EchoServers, start: Start
) -> None:
    seed(apiserver, [*backends(echo_servers), simple("a", "a.test", "web")])
    apiserver.stop()
    ing = start(until="/healthz")
    time.sleep(1.0)
    assert ing.admin_status("/readyz") == 503
    assert ing.admin_status("/healthz") == 200
    assert ing.get("a.test", check=False).status == 404  # nothing routed from partial state
    apiserver.start()
    wait_for(lambda: ing.admin_status("/readyz") == 200, 15, what="ready after the API is back")
    assert served_by(ing, "a.test") == "web"


def test_watch_namespace_limits_what_is_read(
    apiserver: KubeApiServer, echo_servers: EchoServers, start: Start
) -> None:
    seed(
        apiserver,
        [
            *backends(echo_servers),
            simple("a", "a.test", "web"),
            *[
                dict(o, metadata={**o["metadata"], "namespace": "other"})
                for o in backends(echo_servers)[1:]
            ],
            simple("o", "o.test", "web", namespace="other"),
        ],
    )
    ing = start("a", "--watch-namespace", "other")
    assert served_by(ing, "o.test") == "web"
    assert ing.get("a.test", check=False).status == 404
    paths = {p for m, p, _, _ in apiserver.requests if m == "GET" and "/ingresses" in p}
    assert paths == {"/apis/networking.k8s.io/v1/namespaces/other/ingresses"}


def htpasswd_secret(name: str, password: str) -> Obj:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        "type": "Opaque",
        "stringData": {"auth": f"alice:{hashed}\n"},
    }


AUTH = {
    "nginx.ingress.kubernetes.io/auth-type": "basic",
    "nginx.ingress.kubernetes.io/auth-secret": "users",
}


def test_secrets_named_by_ingresses_are_read_though_only_tls_secrets_are_watched(
    apiserver: KubeApiServer, echo_servers: EchoServers, start: Start
) -> None:
    seed(
        apiserver,
        [
            *backends(echo_servers),
            htpasswd_secret("users", "first"),
            ingress("private", [rule("p.test", path("/", "web"))], annotations=AUTH),
        ],
    )
    ing = start()

    def status(password: str | None) -> int:
        args = ["-u", f"alice:{password}"] if password else []
        return ing.get("p.test", "/", *args, check=False).status

    wait_for(lambda: status("first") == 200, 5, what="the auth Secret to be read")
    assert status(None) == 401 and status("second") == 401
    # Changed in the cluster: read again within the refresh period (1 s here).
    apiserver.update(htpasswd_secret("users", "second"))
    wait_for(lambda: status("second") == 200, 5, what="the changed Secret")
    assert status("first") == 401
    # Deleted: the routes fail closed.
    apiserver.delete("Secret", "default", "users")
    wait_for(lambda: status("second") == 503, 5, what="the deleted Secret to deny")
    gets = [p for m, p, _, _ in apiserver.requests if m == "GET" and p.endswith("/secrets/users")]
    assert gets, "the Secret was not read by name"


# -- watch edge cases --------------------------------------------------------------------------


def test_a_cut_watch_resumes_from_its_resource_version_without_missing_events(
    apiserver: KubeApiServer, echo_servers: EchoServers, start: Start
) -> None:
    seed(apiserver, [*backends(echo_servers), simple("a", "a.test", "web")])
    ing = start()
    lists_before = len(list_requests(apiserver, "ingresses"))
    watches_before = len(watch_requests(apiserver, "ingresses"))
    apiserver.cut_watches()
    # Changes made while no watch is open must arrive when it resumes.
    apiserver.create(simple("b", "b.test", "api"))
    apiserver.update(simple("a", "a.test", "api"))
    wait_for(lambda: served_by(ing, "b.test") == "api", 10, what="event made during the cut")
    wait_for(lambda: served_by(ing, "a.test") == "api", 10, what="update made during the cut")
    resumed = watch_requests(apiserver, "ingresses")[watches_before:]
    assert resumed, "the watch was not re-established"
    assert resumed[0].get("resourceVersion") not in (None, "", "0")
    # Resumed, not re-listed: a cut is not a reason to fetch everything again.
    assert len(list_requests(apiserver, "ingresses")) == lists_before


def test_too_old_resource_version_relists(
    apiserver: KubeApiServer, echo_servers: EchoServers, start: Start
) -> None:
    seed(apiserver, [*backends(echo_servers), simple("a", "a.test", "web")])
    ing = start()
    lists_before = len(list_requests(apiserver, "ingresses"))
    # Changes, then compaction, while the watches are down: the resourceVersion
    # ingressd resumes from is now too old and the API server answers 410 Gone.
    apiserver.stop()
    apiserver.create(simple("b", "b.test", "api"))
    apiserver.delete("Ingress", "default", "a")
    apiserver.compact()
    apiserver.start()
    wait_for(lambda: served_by(ing, "b.test") == "api", 10, what="object created before re-list")
    wait_for(
        lambda: ing.get("a.test", check=False).status == 404, 10, what="deletion seen by re-list"
    )
    assert len(list_requests(apiserver, "ingresses")) > lists_before
    assert "expired (410); listing again" in ing.log()


def test_traffic_keeps_flowing_while_the_api_server_is_down(
    apiserver: KubeApiServer, echo_servers: EchoServers, start: Start
) -> None:
    seed(apiserver, [*backends(echo_servers), simple("a", "a.test", "web")])
    ing = start()
    apiserver.stop()
    deadline = time.monotonic() + 3.0
    served = 0
    while time.monotonic() < deadline:
        assert served_by(ing, "a.test") == "web"
        assert ing.admin_status("/readyz") == 200
        served += 1
        time.sleep(0.1)
    assert served >= 10
    ing.wait_for_log("watch failed")
    apiserver.start()
    apiserver.create(simple("b", "b.test", "api"))
    wait_for(lambda: served_by(ing, "b.test") == "api", 20, what="changes after the outage")


def failed_reconnects(ing: Ingressd) -> int:
    """How many times the Ingress watch has failed and backed off so far."""
    return ing.log().count("Ingress watch failed")


def test_changes_are_served_promptly_after_each_of_repeated_api_server_restarts(
    apiserver: KubeApiServer, echo_servers: EchoServers, start: Start
) -> None:
    # Each outage lasts until several reconnects have failed. The backoff
    # starts over once a list or watch succeeds again, so the fifth outage is
    # retried as quickly as the first (it used to grow to its 30 s cap).
    seed(apiserver, [*backends(echo_servers), simple("a", "a.test", "web")])
    ing = start()
    for i in range(1, 6):
        before = failed_reconnects(ing)
        apiserver.stop()
        # Three failures: the Ingress watch's delay has doubled twice (the next is
        # 1-2 s); without the reset it would grow from there, outage after outage.
        wait_for(
            lambda b=before: failed_reconnects(ing) >= b + 3,
            10,
            what=f"three failed reconnects in outage {i}",
        )
        apiserver.start()
        name = f"after-restart-{i}"
        apiserver.create(simple(name, f"{name}.test", "api"))
        wait_for(
            lambda n=name: served_by(ing, f"{n}.test") == "api",
            10,  # well under the 30 s cap, whatever the jitter
            what=f"an Ingress created after restart {i}",
        )


# -- writing back: status, events, leadership ------------------------------------------------


def test_status_is_published_once_and_only_when_it_differs(
    apiserver: KubeApiServer, echo_servers: EchoServers, start: Start
) -> None:
    seed(
        apiserver,
        [
            *backends(echo_servers),
            simple("a", "a.test", "web"),
            simple("theirs", "t.test", "web", class_name="other"),
        ],
    )
    start()
    wait_for(lambda: published(apiserver, "a") == [{"ip": PUBLISHED}], 10, what="status")
    assert published(apiserver, "theirs") == []
    writes = len(apiserver.writes("/status"))
    # More rebuilds, nothing to change: no more status writes.
    for i in range(5):
        apiserver.create(simple(f"x{i}", f"x{i}.test", "web"))
    wait_for(lambda: published(apiserver, "x4") == [{"ip": PUBLISHED}], 10, what="status of x4")
    time.sleep(0.5)
    assert len(apiserver.writes("/status")) == writes + 5
    # Someone edits the status: it is put back.
    changed = apiserver.get("Ingress", "default", "a")
    assert changed is not None
    changed["status"] = {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}
    apiserver.update(changed)
    wait_for(lambda: published(apiserver, "a") == [{"ip": PUBLISHED}], 10, what="status restored")


def test_rejected_ingresses_get_one_warning_event_each(
    apiserver: KubeApiServer, echo_servers: EchoServers, start: Start
) -> None:
    bad_regex = ingress(
        "bad-regex",
        [
            rule(
                "r.test",
                path("/(unclosed", "web", path_type="ImplementationSpecific"),
                path("/fine", "web", path_type="ImplementationSpecific"),
            )
        ],
        annotations={"nginx.ingress.kubernetes.io/use-regex": "true"},
    )
    seed(
        apiserver,
        [*backends(echo_servers), simple("a", "a.test", "web"), simple("m", "m.test", "nope")],
    )
    apiserver.create(bad_regex)
    ing = start()
    assert served_by(ing, "a.test") == "web"

    def warnings() -> list[dict]:
        return [e for e in apiserver.events() if e.get("type") == "Warning"]

    wait_for(lambda: len(warnings()) >= 2, 10, what="two Warning events")
    # More rebuilds must not repeat them.
    for i in range(3):
        apiserver.create(simple(f"x{i}", f"x{i}.test", "web"))
    wait_for(lambda: served_by(ing, "x2.test") == "web", 5, what="later rebuilds")
    time.sleep(1.0)
    events = {(e["involvedObject"]["name"], e["reason"]): e for e in warnings()}
    assert len(warnings()) == 2, [e["message"] for e in warnings()]
    assert set(events) == {("bad-regex", "InvalidRegex"), ("m", "BackendUnavailable")}
    regex_event = events[("bad-regex", "InvalidRegex")]
    assert "not a regular expression RE2 can run" in regex_event["message"]
    assert (
        regex_event["involvedObject"]["uid"]
        == apiserver.get("Ingress", "default", "bad-regex")["metadata"]["uid"]
    )
    assert "default/nope" in events[("m", "BackendUnavailable")]["message"]


def test_one_leader_writes_and_the_other_takes_over_when_it_dies(
    apiserver: KubeApiServer, echo_servers: EchoServers, start: Start
) -> None:
    seed(
        apiserver,
        [*backends(echo_servers), simple("a", "a.test", "web"), simple("m", "m.test", "nope")],
    )
    first = start("a")
    second = start("b")
    wait_for(lambda: published(apiserver, "a") == [{"ip": PUBLISHED}], 10, what="status")
    wait_for(apiserver.events, 10, what="the Warning event")
    assert served_by(first, "a.test") == served_by(second, "a.test") == "web"
    time.sleep(1.0)  # both have been running for several retry periods
    writers = status_writers(apiserver)
    assert len(writers) == 1
    assert {user for user, _, _ in apiserver.writes("/events")} == writers
    assert len(apiserver.events()) == 1
    leader_user = writers.pop()
    leader, follower = (first, second) if leader_user == "controller-a" else (second, first)
    other_user = "controller-b" if leader_user == "controller-a" else "controller-a"
    holder = lease_holder(apiserver)
    assert holder
    assert scrape(leader.admin_port)[("ingressd_leader", ())] == 1
    assert scrape(follower.admin_port)[("ingressd_leader", ())] == 0

    leader.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    leader.proc.wait(5)  # type: ignore[union-attr]
    killed = time.monotonic()
    wait_for(
        lambda: lease_holder(apiserver) not in ("", holder),
        LEASE_SECONDS * 3,
        what="the follower to take the lease",
    )
    took = time.monotonic() - killed
    # The lease cannot be taken before it expires; it is taken at the next retry after.
    assert took <= LEASE_SECONDS + 1.0, f"takeover took {took:.2f} s"
    apiserver.create(simple("late", "late.test", "web"))
    wait_for(lambda: published(apiserver, "late") == [{"ip": PUBLISHED}], 10, what="new status")
    assert status_writers(apiserver) == {leader_user, other_user}
    assert served_by(follower, "late.test") == "web"
    assert scrape(follower.admin_port)[("ingressd_leader", ())] == 1


def test_a_clean_shutdown_hands_the_lease_over_at_once(
    apiserver: KubeApiServer, echo_servers: EchoServers, start: Start
) -> None:
    seed(apiserver, [*backends(echo_servers), simple("a", "a.test", "web")])
    first = start("a")
    wait_for(lambda: lease_holder(apiserver), 10, what="a leader")
    second = start("b")
    holder = lease_holder(apiserver)
    assert first.stop() == 0
    stopped = time.monotonic()
    wait_for(
        lambda: lease_holder(apiserver) not in ("", holder), 5, what="the lease to be handed over"
    )
    assert time.monotonic() - stopped < LEASE_SECONDS
    assert served_by(second, "a.test") == "web"


# -- RBAC in deploy/ matches the calls ingressd makes ------------------------------------------

# Options of the deployed command line that decide which API calls ingressd makes;
# the test runs ingressd with these as deployed. The others only shape serving.
API_OPTIONS = {
    "--publish-service",
    "--election-id",
    "--watch-namespace",
    "--controller-name",
    "--tcp-services-configmap",
    "--udp-services-configmap",
    "--configmap",
    # The admission webhook's objects (the Secret, the ValidatingWebhookConfiguration)
    "--admission-port",  # on, at a free port in the test
    "--admission-service",
    "--admission-secret",
    "--admission-webhook",
}
SERVING_OPTIONS = {
    "serve",
    "--in-cluster",  # replaced by the test's kubeconfig
    "--https-redirect-port",
    "--workers",
    "--shutdown-delay",
    "--shutdown-grace",
    "--access-log",
    "--log-format",
    "--client-body-temp-path",
    "--client-body-temp-size",
}
# Paths every authenticated user may read (the system:discovery ClusterRole).
DISCOVERY = {"/version", "/api", "/apis"}


def test_deploy_rbac_allows_exactly_the_calls_ingressd_makes(
    apiserver: KubeApiServer,
    echo_servers: EchoServers,
    start: Start,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every call ingressd makes is allowed by deploy/, and every permission there is used.

    ingressd runs with the deployed Deployment's API-relevant args and its
    namespace (POD_NAMESPACE) and is made to do everything it ever asks the API
    for: list and watch the five kinds, read the --publish-service Service,
    patch Ingress status, create Events, read Secrets that Ingresses name
    (auth-secret, proxy-ssl-secret), create, read, renew and release its
    Lease, and, for the admission webhook, create its Secret, set the caBundle
    and rotate an expiring certificate. Each recorded request is then judged
    against the rendered RBAC objects as the API server's RBAC authorizer would.
    """
    objs = render(DEPLOY)
    deployment = find(objs, "Deployment", "ingressd")
    namespace = deployment["metadata"]["namespace"]
    rbac = Authorizer(objs, namespace, pod_spec(deployment)["serviceAccountName"])
    deployed = container_args(deployment, "ingressd")
    flags = {arg.partition("=")[0] for arg in deployed}
    assert flags <= API_OPTIONS | SERVING_OPTIONS, f"new options to classify: {flags}"
    api_args = [
        arg if not arg.startswith("--admission-port") else f"--admission-port={free_port()}"
        for arg in deployed
        if arg.partition("=")[0] in API_OPTIONS
    ]
    secret_name = option(deployed, "--admission-secret")
    apiserver.create(
        find(objs, "ValidatingWebhookConfiguration", option(deployed, "--admission-webhook"))
    )
    publish_ns, _, publish_name = (option(deployed, "--publish-service") or "").partition("/")
    assert publish_name, "the Deployment publishes a Service's address"
    monkeypatch.setenv("POD_NAMESPACE", namespace)  # the downward API's value

    lb = echo_backend(publish_name, echo_servers["web"])[0]
    lb["metadata"]["namespace"] = publish_ns
    lb["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}]}}
    seed(apiserver, [*backends(echo_servers), simple("a", "a.test", "web"), lb])
    apiserver.create(simple("m", "m.test", "nope"))  # a Warning Event
    # Secrets named by Ingresses: read by name (get).
    apiserver.create(htpasswd_secret("users", "pw"))
    apiserver.create(ingress("private", [rule("p.test", path("/", "web"))], annotations=AUTH))
    upstream_tls = {"nginx.ingress.kubernetes.io/proxy-ssl-secret": "default/upstream-ca"}
    apiserver.create(ingress("mtls", [rule("t.test", path("/", "api"))], annotations=upstream_tls))
    # A ConfigMap of headers named by an Ingress: listed and watched by name.
    apiserver.create(header_configmap("default", "headers", {"X-Team": "a"}))
    custom = {"nginx.ingress.kubernetes.io/custom-headers": "headers"}
    apiserver.create(ingress("custom", [rule("c.test", path("/", "api"))], annotations=custom))
    ing = start("a", *api_args, "--admission-cert-refresh", "0.3", publish=())
    # The admission webhook: its Secret is created (create), the caBundle set (get,
    # patch); an expiring certificate is replaced (get, update).
    wait_for(lambda: apiserver.get("Secret", namespace, secret_name), 10, what="the Secret")
    wait_for(
        lambda: any(
            m == "PATCH" and "validatingwebhookconfigurations" in p
            for m, p, _, _ in apiserver.requests
        ),
        10,
        what="the caBundle",
    )
    expiring = apiserver.get("Secret", namespace, secret_name)
    now = dt.datetime.now(dt.UTC)
    old = issue("x", namespace, dt.timedelta(days=3), now=now - dt.timedelta(days=2.5))
    expiring["data"] = secret_data(old)
    apiserver.update(expiring)
    wait_for(
        lambda: (
            (apiserver.get("Secret", namespace, secret_name) or {}).get("data", {}).get("ca.crt")
            not in (None, expiring["data"]["ca.crt"])
        ),
        10,
        what="the rotation",
    )
    wait_for(lambda: published(apiserver, "a") == [{"ip": "203.0.113.5"}], 10, what="status")
    wait_for(apiserver.events, 10, what="an Event")
    wait_for(
        lambda: ing.get("p.test", "/", "-u", "alice:pw", check=False).status == 200,
        10,
        what="the auth Secret",
    )
    wait_for(
        lambda: any(p.endswith("/secrets/upstream-ca") for _, p, _, _ in apiserver.requests),
        10,
        what="the proxy-ssl Secret to be read",
    )
    wait_for(
        lambda: any(
            q.get("fieldSelector") == "metadata.name=headers" and q.get("watch") == "true"
            for _, p, q, _ in apiserver.requests
            if p.endswith("/namespaces/default/configmaps")
        ),
        10,
        what="the ConfigMap of headers to be watched",
    )
    assert lease_holder(apiserver)
    assert ing.stop() == 0  # releases the Lease: an update

    used: set[tuple[str, int, tuple[str, str, str]]] = set()
    calls = [r for r in apiserver.requests if r.user == "controller-a"]
    assert calls
    for method, url_path, query, _ in calls:
        access = api_access(method, url_path, query)
        if access is None:
            assert url_path in DISCOVERY, f"{method} {url_path}: not an API resource"
            continue
        allowed = rbac.allowed_by(access)
        assert allowed, f"deploy/rbac.yaml does not allow {access} ({method} {url_path})"
        permission = (access.verb, access.group, access.resource)
        used.update((g.role, g.index, permission) for g in allowed)
    granted = {(g.role, g.index, p) for g in rbac.grants for p in g.permissions()}
    assert not granted - used, f"granted but never used: {sorted(granted - used)}"


def test_tcp_services_configmap_is_watched_by_name_and_served_live(
    apiserver: KubeApiServer, echo_servers: EchoServers, start: Start
) -> None:
    """Cluster mode reads exactly the named ConfigMap (by a field selector on its
    name, which RBAC resourceNames can grant), and its changes open and close
    listeners live; a bad entry is a Warning Event on the ConfigMap."""
    first, second = free_port(), free_port()

    def configmap(data: dict[str, str]) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "tcp-services", "namespace": "ingressd"},
            "data": data,
        }

    seed(apiserver, [*backends(echo_servers), configmap({str(first): "default/web:80"})])
    apiserver.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "unrelated", "namespace": "ingressd"},
            "data": {"secret-ish": "not ours to read"},
        }
    )
    ing = start("a", "--tcp-services-configmap", "ingressd/tcp-services")
    request = b"GET /x HTTP/1.1\r\nHost: tcp\r\nConnection: close\r\n\r\n"

    def answers(port: int) -> bool:
        try:
            return raw_exchange(port, request, timeout=2).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    wait_for(lambda: answers(first), 5, what="the TCP service from the ConfigMap")
    apiserver.update(
        configmap({str(first): "default/web:80", str(second): "default/api:80", "x": "bad"})
    )
    wait_for(lambda: answers(second), 5, what="a port added to the ConfigMap")

    def warning() -> list[dict]:
        return [e for e in apiserver.events() if e["involvedObject"]["kind"] == "ConfigMap"]

    wait_for(warning, 10, what="a Warning Event on the ConfigMap")
    [event] = warning()
    assert event["involvedObject"]["name"] == "tcp-services"
    assert "TCP port 'x': not a port number" in event["message"]
    apiserver.delete("ConfigMap", "ingressd", "tcp-services")
    wait_for(lambda: not answers(first) and not answers(second), 5, what="the ports closed")
    # Only the named ConfigMap was ever asked for.
    asked = [
        q for method, p, q, _ in apiserver.requests if method == "GET" and p.endswith("/configmaps")
    ]
    assert asked and all(q.get("fieldSelector") == "metadata.name=tcp-services" for q in asked)
    assert all(
        "/namespaces/ingressd/" in p for _, p, _, _ in apiserver.requests if "configmaps" in p
    )
    assert ing.proc is not None and ing.proc.poll() is None


def test_controller_configmap_is_watched_by_name_and_applied_live(
    apiserver: KubeApiServer, echo_servers: EchoServers, start: Start
) -> None:
    """--configmap: the controller ConfigMap is read by name as the other kinds are
    watched; its keys change what clients see without a restart, and a bad value is
    a Warning Event on the ConfigMap while its default serves."""

    def controller(data: dict[str, str]) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "ingressd-controller", "namespace": "ingressd"},
            "data": data,
        }

    secure = ingress(
        "secure",
        [rule("secure.test", path("/", "web"))],
        tls=[tls_entry(["secure.test"], "secure-tls")],
    )
    seed(
        apiserver,
        [
            *backends(echo_servers),
            tls_secret("secure-tls", ["secure.test"]),
            secure,
            controller({"hsts-max-age": "60", "ssl-redirect": "false", "keep-alive": "x"}),
        ],
    )
    ing = start("a", "--configmap", "ingressd/ingressd-controller")

    def hsts() -> str | None:
        r = ing.curl("-k", *ing.resolve("secure.test"), ing.https_url("secure.test"), check=False)
        assert r.status == 200
        return r.header("Strict-Transport-Security")

    wait_for(lambda: hsts() == "max-age=60; includeSubDomains", 5, what="the ConfigMap's HSTS")
    assert ing.get("secure.test", "/", check=False).status == 200  # ssl-redirect: false

    def warning() -> list[dict]:
        return [e for e in apiserver.events() if e["involvedObject"]["kind"] == "ConfigMap"]

    wait_for(warning, 10, what="a Warning Event on the ConfigMap")
    [event] = warning()
    assert event["involvedObject"]["name"] == "ingressd-controller"
    assert "keep-alive='x' is invalid" in event["message"]
    apiserver.update(controller({"hsts": "false"}))
    wait_for(lambda: hsts() is None, 5, what="hsts: false applied live")
    assert ing.get("secure.test", "/", check=False).status == 308
    apiserver.delete("ConfigMap", "ingressd", "ingressd-controller")
    wait_for(lambda: hsts() == DEFAULT_HSTS, 5, what="the defaults once it is deleted")
    asked = [
        q for method, p, q, _ in apiserver.requests if method == "GET" and p.endswith("/configmaps")
    ]
    assert asked
    assert all(q.get("fieldSelector") == "metadata.name=ingressd-controller" for q in asked)
    assert ing.proc is not None and ing.proc.poll() is None


DEFAULT_HSTS = "max-age=31536000; includeSubDomains"


def header_configmap(namespace: str, name: str, data: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }


def test_configmaps_of_headers_are_watched_by_name_and_applied_live(
    apiserver: KubeApiServer, echo_servers: EchoServers, start: Start
) -> None:
    """add-headers, custom-headers and auth-proxy-set-headers name ConfigMaps that
    ingressd watches by name while they are named: an edit is served within the
    reload deadline, a missing auth map denies until it appears (and again once it
    is deleted), and no other ConfigMap is ever read."""
    auth = f"http://127.0.0.1:{echo_servers['api']}/auth"  # the echo server allows all
    seed(
        apiserver,
        [
            *backends(echo_servers),
            header_configmap(
                "ingressd",
                "ingressd-controller",
                {"add-headers": "ingressd/response", "global-allowed-response-headers": "X-Team"},
            ),
            header_configmap("ingressd", "response", {"X-Global": "one", "Upgrade": "h2c"}),
            header_configmap("default", "team", {"X-Team": "a"}),
            header_configmap("default", "unrelated", {"X-Team": "never read"}),
            ingress(
                "team",
                [rule("team.test", path("/", "web"))],
                annotations={"nginx.ingress.kubernetes.io/custom-headers": "team"},
            ),
            ingress(
                "guarded",
                [rule("guarded.test", path("/", "web"))],
                annotations={
                    "nginx.ingress.kubernetes.io/auth-url": auth,
                    "nginx.ingress.kubernetes.io/auth-proxy-set-headers": "auth-headers",
                },
            ),
        ],
    )
    ing = start("a", "--configmap", "ingressd/ingressd-controller")

    def team() -> tuple[list[str], list[str]]:
        r = ing.get("team.test", "/", check=False)
        return r.header_values("X-Team"), r.header_values("X-Global")

    # Listed before the first table was served: no window without the headers.
    assert team() == (["a"], ["one"])
    assert ing.get("guarded.test", "/", check=False).status == 503  # fails closed

    apiserver.update(header_configmap("default", "team", {"X-Team": "b"}))
    time_until(lambda: team() == (["b"], ["one"]), "the custom-headers edit", RELOAD_DEADLINE)
    apiserver.update(header_configmap("ingressd", "response", {"X-Global": "two"}))
    time_until(lambda: team() == (["b"], ["two"]), "the add-headers edit", RELOAD_DEADLINE)

    def guarded() -> int:
        return ing.get("guarded.test", "/", check=False).status

    apiserver.create(header_configmap("default", "auth-headers", {"X-From": "ingressd"}))
    time_until(lambda: guarded() == 200, "the auth map to appear", RELOAD_DEADLINE)
    apiserver.delete("ConfigMap", "default", "auth-headers")
    time_until(lambda: guarded() == 503, "the auth map to go", RELOAD_DEADLINE)

    # Problems are Warning Events: a refused entry on its map, a missing map on what names it.
    def warnings(kind: str, name: str) -> list[str]:
        return [
            e["message"]
            for e in apiserver.events()
            if (e["involvedObject"]["kind"], e["involvedObject"]["name"]) == (kind, name)
        ]

    wait_for(lambda: warnings("ConfigMap", "response"), 10, what="an Event on the map")
    assert any("header 'Upgrade' is left out" in m for m in warnings("ConfigMap", "response"))
    wait_for(lambda: warnings("Ingress", "guarded"), 10, what="an Event on the Ingress")
    assert any(
        "auth-proxy-set-headers ConfigMap default/auth-headers not found" in m
        for m in warnings("Ingress", "guarded")
    )

    # Every ConfigMap request named its ConfigMap; the unrelated one was never asked for.
    asked = [
        (p, q.get("fieldSelector"))
        for method, p, q, _ in apiserver.requests
        if method == "GET" and p.endswith("/configmaps")
    ]
    assert asked and all(
        selector and selector.startswith("metadata.name=") for _, selector in asked
    )
    names = {(p.split("/")[-2], selector.partition("=")[2]) for p, selector in asked}  # type: ignore[union-attr]
    assert names == {
        ("ingressd", "ingressd-controller"),
        ("ingressd", "response"),
        ("default", "team"),
        ("default", "auth-headers"),
    }
