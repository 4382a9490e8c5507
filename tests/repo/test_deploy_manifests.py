"""deploy/, deploy/example/ and deploy/monitoring/, offline.

Every object is rendered as ``kubectl apply -k`` would send it (a small
kustomize in deploy_objects.py), validated against the Kubernetes OpenAPI
schemas (kubernetes-validate, strict: unknown fields fail) for every
Kubernetes version from MIN_KUBERNETES to the newest the package ships, and
checked for what a schema cannot see: that the objects agree with each other
and with the code (labels and selectors, port names, the controller name, the
Lease name, the command line, the drain budget, the security settings).
"""

from __future__ import annotations

import base64
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from deploy_objects import (
    CLUSTER_SCOPED,
    DEPLOY,
    EXAMPLE,
    MONITORING,
    Access,
    Authorizer,
    KustomizeError,
    container,
    container_args,
    containers,
    find,
    of_kind,
    option,
    pod_spec,
    render,
    split_image,
)
from e2e_helpers import REPO_ROOT
from k8s_objects import endpoint_slice

from ingressd import __version__, workers
from ingressd.cli import parser
from ingressd.control.admission_server import PATH
from ingressd.kube import leader
from ingressd.model.objects import Obj
from ingressd.policy.tls import TLS_SECRET_TYPE
from ingressd.routing.build import DEFAULT_CONTROLLER, BuildOptions, build_table
from ingressd.sources.manifests import load_directory

MIN_KUBERNETES = (1, 30)
# Custom resources: no schema in kubernetes-validate; checked field by field below.
CRD_KINDS = {"PodMonitor"}
MiB = 1024 * 1024
# RSS of one ingressd process holding a table of 10,000 Ingresses (loadtests/routes.py).
PROCESS_RSS_AT_10K = 370 * MiB  # peak per process in loadtests/churn.py --workers 2
HEADROOM = 1.3  # for a worker restarted with the whole state, and incremental builds


@pytest.fixture(scope="module")
def deploy() -> list[Obj]:
    return render(DEPLOY)


@pytest.fixture(scope="module")
def example() -> list[Obj]:
    return render(EXAMPLE)


@pytest.fixture(scope="module")
def monitoring() -> list[Obj]:
    return render(MONITORING)


@pytest.fixture(scope="module")
def deployment(deploy: list[Obj]) -> Obj:
    return find(deploy, "Deployment", "ingressd")


@pytest.fixture(scope="module")
def args(deployment: Obj) -> list[str]:
    return container_args(deployment, "ingressd")


def kubernetes_versions() -> list[str]:
    newest = tuple(int(n) for n in kubernetes_validate.latest_version().split(".")[:2])
    assert newest >= MIN_KUBERNETES
    return [f"1.{minor}" for minor in range(MIN_KUBERNETES[1], newest[1] + 1)]


def schema_errors(obj: Obj) -> list[str]:
    errors = []
    for version in kubernetes_versions():
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            errors.append(f"{version}: {where}: {exc.message}")
    return errors


def parse_quantity(text: str) -> int:
    """A memory quantity (``256Mi``, ``1Gi``, ``500M``) in bytes."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "k": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def labels_select(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_labels(workload: Obj) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


# -- the renderer ----------------------------------------------------------------------------


def test_render_applies_namespace_labels_and_image(deploy: list[Obj]) -> None:
    for obj in deploy:
        namespaced = obj["kind"] not in CLUSTER_SCOPED
        assert obj["metadata"].get("namespace") == ("ingressd" if namespaced else None), obj
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "ingressd"
    deployment = find(deploy, "Deployment")
    assert container(deployment, "ingressd")["image"] == f"ingressd:{__version__}"
    # labels without includeSelectors leave selectors alone
    assert "app.kubernetes.io/part-of" not in deployment["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize(
    "extra",
    [
        {"patches": [{"path": "p.yaml"}]},
        {"commonLabels": {"a": "b"}},
        {"labels": [{"pairs": {"a": "b"}, "includeSelectors": True}]},
        {"resources": ["https://example.com/x.yaml"]},
        {"resources": ["../outside.yaml"]},
    ],
)
def test_render_refuses_what_it_does_not_implement(tmp_path: Path, extra: dict) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", **extra}
        )
    )
    with pytest.raises(KustomizeError):
        render(tmp_path)


def test_render_refuses_empty_documents(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [a.yaml]\n"
    )
    ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n"
    (tmp_path / "a.yaml").write_text(f"{ns}---\n# only a comment\n---\n{ns}")
    with pytest.raises(KustomizeError, match="empty"):
        render(tmp_path)


def test_split_image() -> None:
    assert split_image("ingressd") == ("ingressd", None, None)
    assert split_image("reg:5000/team/ingressd:0.1.0") == ("reg:5000/team/ingressd", "0.1.0", None)
    assert split_image("reg:5000/ingressd") == ("reg:5000/ingressd", None, None)
    assert split_image("x:1@sha256:ab") == ("x", "1", "sha256:ab")


# -- schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", [DEPLOY, EXAMPLE, MONITORING], ids=lambda p: p.name)
def test_every_object_is_valid_for_every_supported_kubernetes(folder: Path) -> None:
    objs = render(folder)
    assert objs
    errors = {}
    for obj in objs:
        if obj["kind"] in CRD_KINDS:
            continue
        found = schema_errors(obj)
        if found:
            errors[f"{obj['kind']} {obj['metadata']['name']}"] = found
    assert not errors, errors


def test_schema_validation_is_strict(deployment: Obj) -> None:
    """A misspelt field fails, so the test above would catch one."""
    bad = yaml.safe_load(yaml.safe_dump(deployment))
    container(bad, "ingressd")["securityContext"]["readOnlyRootFileSystem"] = True
    assert any("readOnlyRootFileSystem" in e for e in schema_errors(bad))
    bad = yaml.safe_load(yaml.safe_dump(deployment))
    bad["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "30"
    assert schema_errors(bad)


# -- deploy/: the objects agree with each other ---------------------------------------------------


def test_deployment_selector_service_pdb_and_anti_affinity_select_its_pods(
    deploy: list[Obj], deployment: Obj
) -> None:
    labels = pod_labels(deployment)
    assert labels_select(deployment["spec"]["selector"]["matchLabels"], labels)
    service = find(deploy, "Service", "ingressd")
    assert labels_select(service["spec"]["selector"], labels)
    pdb = find(deploy, "PodDisruptionBudget")
    assert labels_select(pdb["spec"]["selector"]["matchLabels"], labels)
    terms = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    for term in terms["preferredDuringSchedulingIgnoredDuringExecution"]:
        assert labels_select(term["podAffinityTerm"]["labelSelector"]["matchLabels"], labels)


def test_service_ports_reach_the_proxy_listeners(
    deploy: list[Obj], deployment: Obj, args: list[str]
) -> None:
    service = find(deploy, "Service", "ingressd")
    ports = {p["name"]: p["containerPort"] for p in container(deployment, "ingressd")["ports"]}
    parsed = parser().parse_args(args)
    assert ports == {
        "http": parsed.http_port,
        "https": parsed.https_port,
        "admin": parsed.admin_port,
        "admission": parsed.admission_port,
    }
    by_port = {p["port"]: p for p in service["spec"]["ports"]}
    assert set(by_port) == {80, 443}
    for port in by_port.values():
        assert port["targetPort"] in ports, f"no container port named {port['targetPort']}"
    assert ports[by_port[80]["targetPort"]] == parsed.http_port
    assert ports[by_port[443]["targetPort"]] == parsed.https_port
    # Redirects to https name the port clients reach, not the container's.
    assert parsed.https_redirect_port == 443
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["externalTrafficPolicy"] in ("Cluster", "Local")


def test_probes_ask_the_admin_port(deployment: Obj, args: list[str]) -> None:
    c = container(deployment, "ingressd")
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    admin = parser().parse_args(args).admin_port
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path
        assert named.get(get["port"], get["port"]) == admin


def test_hpa_scales_the_deployment_on_cpu(deploy: list[Obj], deployment: Obj) -> None:
    hpa = find(deploy, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        deployment["metadata"]["name"],
    )
    assert hpa["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert hpa["spec"]["minReplicas"] >= 2  # one can drain while another serves
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    # Utilization is a share of the request, which therefore must be set.
    assert container(deployment, "ingressd")["resources"]["requests"]["cpu"]
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    # The HPA owns the count: a replicas field would be re-applied over it.
    assert "replicas" not in deployment["spec"]


def test_pdb_lets_one_pod_go_at_a_time(deploy: list[Obj]) -> None:
    spec = find(deploy, "PodDisruptionBudget")["spec"]
    assert spec.get("maxUnavailable") == 1
    assert "minAvailable" not in spec


def test_pods_run_locked_down(deployment: Obj) -> None:
    pod = pod_spec(deployment)
    assert pod is not None
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in containers(deployment, init=True):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert not sc.get("privileged")
        assert sc.get("runAsUser", 1) > 0
    assert not pod.get("hostNetwork") and not pod.get("hostPID")


def test_only_tmp_is_writable_and_it_is_where_tempfiles_go(deployment: Obj) -> None:
    c = container(deployment, "ingressd")
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
    assert set(mounts) == {"/tmp", "/var/cache/ingressd"}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    # Buffered request bodies: a disk-backed emptyDir of their own, with room for
    # every worker's --client-body-temp-size.
    bodies = volumes[mounts["/var/cache/ingressd"]["name"]]["emptyDir"]
    assert "medium" not in bodies and bodies["sizeLimit"] == "2Gi"
    args = c["args"]
    assert "--client-body-temp-path=/var/cache/ingressd" in args
    assert "--client-body-temp-size=768m" in args and "--workers=2" in args
    # ingressd/policy/tls.py writes through tempfile, which uses TMPDIR when it is set.
    assert "TMPDIR" not in {e["name"] for e in c.get("env") or []}


def test_image_is_pinned_to_the_package_version(deploy: list[Obj], example: list[Obj]) -> None:
    for obj in [*deploy, *example]:
        for c in containers(obj, init=True):
            name, tag, digest = split_image(c["image"])
            assert digest or tag not in (None, "latest"), c["image"]
            if name == "ingressd":
                assert tag == __version__, f"{c['image']}: pyproject says {__version__}"


def test_resources_fit_the_processes_the_args_start(deployment: Obj, args: list[str]) -> None:
    resources = container(deployment, "ingressd")["resources"]
    request = parse_quantity(resources["requests"]["memory"])
    limit = parse_quantity(resources["limits"]["memory"])
    processes = parser().parse_args(args).workers + 1  # the workers and the source process
    assert request <= limit
    assert limit >= processes * PROCESS_RSS_AT_10K * HEADROOM, "too small for 10,000 Ingresses"
    assert "cpu" not in resources.get("limits", {})  # throttling a proxy adds latency


def test_drain_fits_in_the_termination_grace_period(deployment: Obj, args: list[str]) -> None:
    parsed = parser().parse_args(args)
    pod = pod_spec(deployment)
    pre_stop = (container(deployment, "ingressd").get("lifecycle") or {}).get("preStop")
    pre_stop_seconds = 0
    if pre_stop is not None:
        # Only the sleep action: the image need not have a shell.
        assert set(pre_stop) == {"sleep"}, pre_stop
        pre_stop_seconds = pre_stop["sleep"]["seconds"]
    budget = (
        pre_stop_seconds
        + parsed.shutdown_delay
        + leader.RELEASE_TIMEOUT
        + parsed.shutdown_grace
        + (workers.STOP_MARGIN if parsed.workers > 1 else 0)
    )
    assert parsed.shutdown_delay > 0, "no time for load balancers to stop sending"
    assert budget < pod["terminationGracePeriodSeconds"], (
        f"the drain takes up to {budget:g} s, the Pod gets "
        f"{pod['terminationGracePeriodSeconds']} s before SIGKILL"
    )


def test_the_cli_accepts_the_deployment_args(args: list[str]) -> None:
    try:
        parsed = parser().parse_args(args)
    except SystemExit as exc:
        pytest.fail(f"ingressd rejects the Deployment's args {args}: exit {exc.code}")
    assert parsed.command == "serve"
    assert parsed.in_cluster
    assert parsed.manifests is None


def test_the_cli_check_catches_a_bad_arg(args: list[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args([*args, "--shutdown-grace=soon"])


def test_publish_service_is_the_deployed_service(deploy: list[Obj], args: list[str]) -> None:
    service = find(deploy, "Service", "ingressd")
    meta = service["metadata"]
    assert parser().parse_args(args).publish_service == f"{meta['namespace']}/{meta['name']}"


def test_ingress_class_names_the_controller_the_code_serves(
    deploy: list[Obj], args: list[str]
) -> None:
    ingress_class = find(deploy, "IngressClass", "ingressd")
    assert ingress_class["spec"]["controller"] == DEFAULT_CONTROLLER
    assert parser().parse_args(args).controller_name == DEFAULT_CONTROLLER
    # Not the cluster's default class unless someone decides so.
    default = (
        ingress_class["metadata"]
        .get("annotations", {})
        .get("ingressclass.kubernetes.io/is-default-class", "false")
    )
    assert default == "false"


def test_service_account_bindings_and_lease_role_agree(
    deploy: list[Obj], deployment: Obj, args: list[str]
) -> None:
    namespace = deployment["metadata"]["namespace"]
    account = pod_spec(deployment)["serviceAccountName"]
    find(deploy, "ServiceAccount", account)
    for binding in of_kind(deploy, "RoleBinding") + of_kind(deploy, "ClusterRoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": namespace}
        ]
        find(deploy, binding["roleRef"]["kind"], binding["roleRef"]["name"])
    election_id = parser().parse_args(args).election_id
    role = find(deploy, "Role", "ingressd-leader-election")
    assert role["metadata"]["namespace"] == namespace  # POD_NAMESPACE: the Lease's namespace
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert named and all(r["resourceNames"] == [election_id] for r in named)


# -- RBAC, offline (tests/test_e2e_cluster.py checks it against the calls ingressd makes) ------


@pytest.fixture(scope="module")
def rbac(deploy: list[Obj], deployment: Obj) -> Authorizer:
    account = pod_spec(deployment)["serviceAccountName"]
    return Authorizer(deploy, deployment["metadata"]["namespace"], account)


@pytest.mark.parametrize(
    ("access", "allowed"),
    [
        (Access("watch", "networking.k8s.io", "ingresses", "", ""), True),
        (Access("list", "", "secrets", "team-a", ""), True),
        (Access("patch", "networking.k8s.io", "ingresses/status", "team-a", "web"), True),
        (Access("update", "networking.k8s.io", "ingresses/status", "team-a", "web"), False),
        (Access("patch", "networking.k8s.io", "ingresses", "team-a", "web"), False),
        (Access("create", "", "events", "team-a", ""), True),
        (Access("delete", "", "secrets", "team-a", "x"), False),
        # ConfigMaps of headers (custom-headers ...): listed and watched by name, in
        # any namespace; never read one by one (get), never written.
        (Access("list", "", "configmaps", "", ""), True),
        (Access("list", "", "configmaps", "team-a", "headers"), True),
        (Access("watch", "", "configmaps", "team-a", "headers"), True),
        (Access("watch", "", "configmaps", "ingressd", "tcp-services"), True),
        (Access("list", "", "configmaps", "ingressd", "udp-services"), True),
        (Access("get", "", "configmaps", "ingressd", "tcp-services"), False),
        (Access("get", "", "configmaps", "team-a", "headers"), False),
        (Access("update", "", "configmaps", "team-a", "headers"), False),
        (Access("create", "", "configmaps", "team-a", ""), False),
        (Access("create", "coordination.k8s.io", "leases", "ingressd", ""), True),
        (Access("update", "coordination.k8s.io", "leases", "ingressd", "ingressd-leader"), True),
        (Access("update", "coordination.k8s.io", "leases", "ingressd", "other"), False),
        (Access("get", "coordination.k8s.io", "leases", "kube-system", "ingressd-leader"), False),
        (Access("create", "coordination.k8s.io", "leases", "default", ""), False),
        # The admission webhook: its one Secret and its one ValidatingWebhookConfiguration.
        (Access("create", "", "secrets", "ingressd", ""), True),
        (Access("create", "", "secrets", "team-a", ""), False),
        (Access("update", "", "secrets", "ingressd", "ingressd-admission"), True),
        (Access("update", "", "secrets", "ingressd", "other"), False),
        (Access("update", "", "secrets", "team-a", "ingressd-admission"), False),
        (
            Access(
                "patch",
                "admissionregistration.k8s.io",
                "validatingwebhookconfigurations",
                "",
                "ingressd-admission",
            ),
            True,
        ),
        (
            Access(
                "patch", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "x"
            ),
            False,
        ),
        (
            Access(
                "patch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "x"
            ),
            False,
        ),
    ],
    ids=lambda v: (
        f"{v.verb}-{v.resource}-{v.namespace or 'all'}{'-' + v.name if v.name else ''}"
        if isinstance(v, Access)
        else ("allowed" if v else "denied")
    ),
)
def test_rbac_as_the_api_server_would_judge_it(
    rbac: Authorizer, access: Access, allowed: bool
) -> None:
    assert bool(rbac.allowed_by(access)) is allowed


def test_rbac_has_no_wildcards(rbac: Authorizer) -> None:
    assert rbac.grants
    for grant in rbac.grants:
        for field in ("verbs", "apiGroups", "resources"):
            assert "*" not in grant.rule[field], (grant.role, grant.rule)


# -- metrics ---------------------------------------------------------------------------------


def test_pods_are_annotated_for_scraping_the_admin_port(deployment: Obj, args: list[str]) -> None:
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == parser().parse_args(args).admin_port
    assert annotations.get("prometheus.io/path", "/metrics") == "/metrics"


def test_pod_monitor_scrapes_the_controller_pods(monitoring: list[Obj], deployment: Obj) -> None:
    assert not any(o["kind"] in CRD_KINDS for o in render(DEPLOY)), "needs CRDs: keep it optional"
    monitor = find(monitoring, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert labels_select(monitor["spec"]["selector"]["matchLabels"], pod_labels(deployment))
    ports = {p["name"] for p in container(deployment, "ingressd")["ports"]}
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "admin" and endpoint["port"] in ports
    assert endpoint["path"] == "/metrics"


# -- deploy/example/ ---------------------------------------------------------------------------


def demo_tls_secret() -> Obj:
    return yaml.safe_load((REPO_ROOT / "examples" / "tls-secret.yaml").read_text())


def test_example_is_self_consistent(example: list[Obj], deploy: list[Obj]) -> None:
    namespace = find(example, "Namespace")["metadata"]["name"]
    app = find(example, "Deployment", "echo")
    service = find(example, "Service", "echo")
    assert labels_select(service["spec"]["selector"], pod_labels(app))
    c = container(app, "echo")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["command"] == ["python", "-m", "ingressd.echo"]
    assert int(option(c["args"], "--port")) == ports["http"]
    assert option(c["args"], "--host") == "0.0.0.0"
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert all(p["targetPort"] in ports for p in service_ports.values())
    ingresses = of_kind(example, "Ingress")
    assert len(ingresses) == 2
    class_name = find(deploy, "IngressClass")["metadata"]["name"]
    secret = demo_tls_secret()
    assert secret["metadata"]["namespace"] == namespace
    for ing in ingresses:
        assert ing["metadata"]["namespace"] == namespace
        assert ing["spec"]["ingressClassName"] == class_name
        assert [t["secretName"] for t in ing["spec"]["tls"]] == [secret["metadata"]["name"]]
        for rule in ing["spec"]["rules"]:
            assert rule["host"] in ing["spec"]["tls"][0]["hosts"]
            for p in rule["http"]["paths"]:
                ref = p["backend"]["service"]
                assert ref["name"] == service["metadata"]["name"]
                port = ref["port"]
                assert port.get("name") in service_ports or port.get("number") in {
                    sp["port"] for sp in service_ports.values()
                }
    rewrite = [
        i
        for i in ingresses
        if "nginx.ingress.kubernetes.io/rewrite-target" in i["metadata"].get("annotations", {})
    ]
    plain = [i for i in ingresses if i not in rewrite]
    assert [p["path"] for i in rewrite for r in i["spec"]["rules"] for p in r["http"]["paths"]] == [
        "/api(/|$)(.*)"
    ]
    assert [
        p["pathType"] for i in plain for r in i["spec"]["rules"] for p in r["http"]["paths"]
    ] == ["Prefix"]


def test_example_loads_and_builds_without_problems(
    tmp_path: Path, deploy: list[Obj], example: list[Obj]
) -> None:
    """Through ingressd's manifest loader and builder, as `serve --manifests` would."""
    slice_ = endpoint_slice("echo", ["10.0.0.7"], 8080, port_name="http", namespace="demo")
    (tmp_path / "deploy.yaml").write_text(yaml.safe_dump_all(deploy))
    (tmp_path / "example.yaml").write_text(yaml.safe_dump_all([*example, slice_]))
    (tmp_path / "tls.yaml").write_text((REPO_ROOT / "examples" / "tls-secret.yaml").read_text())
    loaded = load_directory(tmp_path)
    assert loaded.problems == ()
    snapshot = loaded.store.snapshot()
    table = build_table(snapshot, BuildOptions())
    assert table.problems == ()
    assert sorted(table.ingresses) == [("demo", "echo"), ("demo", "echo-api")]
    secret = snapshot.get("Secret", "demo", "demo-tls")
    assert secret is not None and secret["type"] == TLS_SECRET_TYPE
    assert base64.b64decode(secret["data"]["tls.crt"]).startswith(b"-----BEGIN CERTIFICATE")


# -- the admission webhook (deploy/admission.yaml, docs/admission.md) -------------------------


def test_admission_webhook_reaches_the_deployed_listener_with_the_deployed_names(
    deploy: list[Obj], deployment: Obj, args: list[str]
) -> None:
    parsed = parser().parse_args(args)
    assert parsed.admission_port is not None
    vwc = find(deploy, "ValidatingWebhookConfiguration", parsed.admission_webhook)
    assert "namespace" not in vwc["metadata"]  # cluster-scoped
    namespace = deployment["metadata"]["namespace"]
    (hook,) = vwc["webhooks"]
    # As the brief of the webhook asks, and as failurePolicy Ignore is documented.
    assert hook["failurePolicy"] == "Ignore"
    assert hook["timeoutSeconds"] == 2
    assert parsed.admission_timeout < hook["timeoutSeconds"]
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["matchPolicy"] == "Equivalent"
    assert hook["rules"] == [
        {
            "apiGroups": ["networking.k8s.io"],
            "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["ingresses"],
        }
    ]
    assert "caBundle" not in hook["clientConfig"]  # set by the leader
    ref = hook["clientConfig"]["service"]
    assert ref == {
        "namespace": namespace,
        "name": parsed.admission_service,
        "path": PATH,
        "port": 443,
    }
    # The Service: the pods' admission port, under the name the certificate carries.
    svc = find(deploy, "Service", parsed.admission_service)
    assert svc["metadata"]["namespace"] == namespace
    assert labels_select(svc["spec"]["selector"], pod_labels(deployment))
    (port,) = svc["spec"]["ports"]
    named = {p["name"]: p["containerPort"] for p in container(deployment, "ingressd")["ports"]}
    assert port["port"] == 443 and named[port["targetPort"]] == parsed.admission_port


def test_admission_rbac_names_exactly_the_deployed_secret_and_webhook(
    rbac: Authorizer, deployment: Obj, args: list[str]
) -> None:
    parsed = parser().parse_args(args)
    namespace = deployment["metadata"]["namespace"]
    for verb in ("get", "update"):
        assert rbac.allowed_by(Access(verb, "", "secrets", namespace, parsed.admission_secret))
    vwc = "validatingwebhookconfigurations"
    group = "admissionregistration.k8s.io"
    for verb in ("get", "patch"):
        assert rbac.allowed_by(Access(verb, group, vwc, "", parsed.admission_webhook))
    named = [
        g.rule
        for g in rbac.grants
        if "secrets" in g.rule["resources"] and "update" in g.rule["verbs"]
    ]
    assert named and all(r.get("resourceNames") == [parsed.admission_secret] for r in named)
    hooks = [g.rule for g in rbac.grants if vwc in g.rule["resources"]]
    assert hooks and all(r.get("resourceNames") == [parsed.admission_webhook] for r in hooks)
