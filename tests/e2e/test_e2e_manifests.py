"""End to end: editing the manifest folder of a running ``ingressd serve``.

Every test starts its own ingressd (the ``ingressd`` fixture), changes files
while it runs, and checks with curl what is served and with the log what was
reported.
"""

from __future__ import annotations

import time

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from e2e_helpers import (
    RELOAD_DEADLINE,
    CurlResult,
    EchoServers,
    Ingressd,
    IngressdFactory,
    backends,
    nginx_page,
    pem_to_der,
    served_by,
    served_certificate,
    simple,
    time_until,
)
from k8s_objects import certificate, ingress, ingress_class, path, rule, tls_entry, tls_secret


@pytest.fixture
def started(ingressd: IngressdFactory, echo_servers: EchoServers) -> Ingressd:
    """ingressd serving a.test -> web from routes.yaml (backends in backends.yaml)."""
    return ingressd(
        {
            "backends.yaml": backends(echo_servers),
            "routes.yaml": [simple("a", "a.test", "web")],
        }
    )


def test_new_ingress_file_is_served_within_a_second(started: Ingressd) -> None:
    assert started.get("b.test", check=False).status == 404
    started.update({"b.yaml": [simple("b", "b.test", "api")]})
    elapsed = time_until(lambda: served_by(started, "b.test") == "api", "b.test -> api")
    assert elapsed <= RELOAD_DEADLINE, f"new route served after {elapsed:.2f} s"
    assert served_by(started, "a.test") == "web"


def test_changed_backend_is_served_within_a_second(started: Ingressd) -> None:
    assert served_by(started, "a.test") == "web"
    started.update({"routes.yaml": [simple("a", "a.test", "api")]})
    elapsed = time_until(lambda: served_by(started, "a.test") == "api", "a.test -> api")
    assert elapsed <= RELOAD_DEADLINE, f"changed backend served after {elapsed:.2f} s"


def test_deleted_file_takes_its_routes_away(started: Ingressd) -> None:
    started.update({"b.yaml": [simple("b", "b.test", "api")]})
    time_until(lambda: served_by(started, "b.test") == "api", "b.test -> api")
    started.update({"b.yaml": None})
    elapsed = time_until(lambda: started.get("b.test", check=False).status == 404, "b.test 404")
    assert elapsed <= RELOAD_DEADLINE, f"deleted route gone after {elapsed:.2f} s"
    gone = started.get("b.test", "/x", check=False)
    assert gone.body == nginx_page(404)
    started.wait_for_log("404 Not Found: no route for host b.test path /x")
    assert served_by(started, "a.test") == "web"


def test_broken_yaml_keeps_the_last_good_routes(started: Ingressd) -> None:
    routes = started.manifest_dir / "routes.yaml"  # type: ignore[operator]
    started.update({"routes.yaml": "apiVersion: networking.k8s.io/v1\nkind: [Ingress\n"})
    line = started.wait_for_log(f"rejected: {routes}: document 1: YAML syntax error at line 3")
    assert "WARNING" in line
    kept = started.wait_for_log(f"rejected: {routes}: file: the last good version of this file")
    assert "(1 objects) is still in use" in kept
    assert served_by(started, "a.test") == "web"
    problems = started.curl(f"http://127.0.0.1:{started.admin_port}/problems").json()
    assert any(p.startswith(f"{routes}: document 1: YAML syntax") for p in problems["problems"])
    # Fixed again: the new content is served and the problem is reported resolved.
    started.update({"routes.yaml": [simple("a", "a.test", "api")]})
    time_until(lambda: served_by(started, "a.test") == "api", "a.test -> api")
    started.wait_for_log(f"resolved: {routes}: document 1: YAML syntax error")


def test_invalid_regex_skips_only_that_path(started: Ingressd) -> None:
    bad = ingress(
        "bad-regex",
        [
            rule(
                "regex.test",
                path("/(unclosed", "api", path_type="ImplementationSpecific"),
                path("/fine", "api", path_type="ImplementationSpecific"),
            )
        ],
        annotations={"nginx.ingress.kubernetes.io/use-regex": "true"},
    )
    started.update({"bad.yaml": [bad, simple("good", "good.test", "api")]})
    time_until(lambda: served_by(started, "good.test") == "api", "good.test -> api")
    bad_file = started.manifest_dir / "bad.yaml"  # type: ignore[operator]
    line = started.wait_for_log(
        "Ingress default/bad-regex: rules[0].http.paths[0].path '/(unclosed'"
    )
    assert f"rejected: {bad_file}: " in line
    assert "is not a regular expression RE2 can run (missing )" in line
    assert line.endswith("path skipped")
    assert started.get("regex.test", "/x", check=False).status == 404
    fine = started.get("regex.test", "/FINE/x")  # the other path: a case-insensitive regex
    assert fine.json()["service"] == "api"
    assert served_by(started, "a.test") == "web"


def test_tls_secret_with_mismatched_key_falls_back_to_default(
    ingressd: IngressdFactory, echo_servers: EchoServers
) -> None:
    good_cert, _ = certificate("ok.test")
    mismatched = (certificate("mismatch.test")[0], certificate("other.test")[1])
    ing = ingressd(
        {
            "backends.yaml": backends(echo_servers),
            "tls.yaml": [
                tls_secret("ok-tls", ["ok.test"]),
                tls_secret("mismatch-tls", pem=mismatched),
                simple("ok", "ok.test", "web", tls=[tls_entry(["ok.test"], "ok-tls")]),
                simple(
                    "mismatch",
                    "mismatch.test",
                    "api",
                    tls=[tls_entry(["mismatch.test"], "mismatch-tls")],
                ),
            ],
        }
    )
    line = ing.wait_for_log("Secret default/mismatch-tls: tls.key does not match the certificate")
    assert "rejected: " in line
    assert "hosts mismatch.test use the default certificate" in line

    port = ing.https_port
    cafile = ing.log_path.with_name("ok.pem")
    cafile.write_bytes(good_cert)
    ok = ing.curl(*ing.resolve("ok.test"), "--cacert", str(cafile), ing.https_url("ok.test"))
    assert (ok.status, ok.json()["service"]) == (200, "web")
    assert served_certificate(port, "ok.test") == pem_to_der(good_cert)

    der = served_certificate(port, "mismatch.test")
    assert der == served_certificate(port, "unknown.test")
    cn = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert cn[0].value == "ingressd default certificate"
    fallback: CurlResult = ing.curl(
        *ing.resolve("mismatch.test"), "-k", ing.https_url("mismatch.test")
    )
    assert (fallback.status, fallback.json()["service"]) == (200, "api")


def test_sigterm_stops_cleanly(started: Ingressd) -> None:
    assert served_by(started, "a.test") == "web"
    start = time.monotonic()
    assert started.stop() == 0
    assert time.monotonic() - start < 5
    assert "INFO ingressd: shutting down" in started.log()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_named_class_the_folder_lacks_is_served_as_ours(
    ingressd: IngressdFactory, echo_servers: EchoServers, workers: str
) -> None:
    # Application manifests written for ingress-nginx: no IngressClass, class nginx.
    app = [*backends(echo_servers)[1:], simple("a", "a.test", "web", class_name="nginx")]
    ing = ingressd({"app.yaml": app}, "--ingress-class", "nginx", "--workers", workers)
    assert served_by(ing, "a.test") == "web"
    note = "IngressClass 'nginx' is not in"
    ing.wait_for_log(note)
    # An IngressClass nginx in the folder decides: another controller's, so not ours.
    other = ingress_class("nginx", "k8s.io/ingress-nginx")
    ing.update({"class.yaml": [other]})
    time_until(lambda: ing.get("a.test", check=False).status == 404, "a.test no longer ours")
    ing.wait_for_log("IngressClass 'nginx' is now defined in")
    ing.update(
        {"class.yaml": None, "app.yaml": [*app, simple("b", "b.test", "api", class_name="nginx")]}
    )
    time_until(lambda: served_by(ing, "b.test") == "api", "b.test served")
    assert ing.log().count(note) == 2  # once when taken, again after the folder's went away


def test_the_default_class_is_not_implied(
    ingressd: IngressdFactory, echo_servers: EchoServers
) -> None:
    app = [*backends(echo_servers)[1:], simple("a", "a.test", "web")]  # class ingressd
    ing = ingressd({"app.yaml": app})
    assert ing.get("a.test", check=False).status == 404
    assert "IngressClass 'ingressd' does not exist" in ing.wait_for_log("does not exist")
