"""auth-tls-*: values parsed and validated as ingress-nginx does, the CA Secret
resolved (or failing closed), the host's check chosen as createServers chooses it.
The requests themselves are tested end to end (tests/e2e/test_e2e_client_certs.py)."""

from __future__ import annotations

import pytest
from k8s_objects import build, endpoint_slice, ingress, path, request, rule, service

from ingressd.policy import client_tls
from ingressd.policy.annotations import classify, parse_policy
from ingressd.policy.tls import self_signed
from ingressd.routing.client_auth import apply
from ingressd.routing.decide import Forward, Respond, decide

N = "nginx.ingress.kubernetes.io/"
CA_PEM = self_signed(common_name="client CA", dns_names=())[0]


def ca_secret(name: str = "ca", data: dict[str, str] | None = None, namespace: str = "default"):  # type: ignore[no-untyped-def]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {"ca.crt": CA_PEM.decode()} if data is None else data,
    }


@pytest.mark.parametrize(
    ("key", "value", "valid"),
    [
        ("auth-tls-secret", "default/ca", True),
        ("auth-tls-secret", "ca", True),
        ("auth-tls-secret", "a/b/c", False),
        ("auth-tls-secret", "Not_A_Name", False),
        ("auth-tls-verify-client", "on", True),
        ("auth-tls-verify-client", "off", True),
        ("auth-tls-verify-client", "optional", True),
        ("auth-tls-verify-client", "optional_no_ca", True),
        ("auth-tls-verify-client", "On", False),  # nginx's values are lowercase
        ("auth-tls-verify-client", "required", False),
        ("auth-tls-verify-depth", "1", True),
        ("auth-tls-verify-depth", "0", True),  # ingress-nginx: 0 means the default 1
        ("auth-tls-verify-depth", "16", True),
        ("auth-tls-verify-depth", "17", False),
        ("auth-tls-verify-depth", "-1", False),
        ("auth-tls-verify-depth", "two", False),
        ("auth-tls-error-page", "http://www.mysite.com/error-cert.html", True),
        ("auth-tls-error-page", "https://err.test:8443/x", True),
        ("auth-tls-error-page", "/error", True),
        ("auth-tls-error-page", "javascript:alert(1)", False),
        ("auth-tls-error-page", "https://err.test/x?a=1", False),  # redirectRegex has no query
        ("auth-tls-error-page", "https://err.test/a b", False),
        ("auth-tls-pass-certificate-to-upstream", "true", True),
        ("auth-tls-pass-certificate-to-upstream", "yes", False),
        ("auth-tls-match-cn", "CN=alice", True),
        ("auth-tls-match-cn", "CN=(alice|bob)$", True),
        ("auth-tls-match-cn", "alice", False),  # CommonNameAnnotationValidator: "CN=" first
        ("auth-tls-match-cn", "CN=(", False),
        ("auth-tls-match-cn", "CN=(a)\\1", False),  # RE2: no backreferences
    ],
)
def test_values(key: str, value: str, valid: bool) -> None:
    [verdict] = [v for v in classify({N + key: value}) if v.key == N + key]
    assert verdict.status == ("supported" if valid else "invalid"), verdict
    policy, _ = parse_policy({N + key: value, N + "auth-tls-secret": "ca"} | {N + key: value})
    if not valid:
        # access control that cannot be read: the routes answer 503
        assert policy.fail_closed == (503, f"invalid {key} annotation")


def test_the_parsed_reference() -> None:
    policy, messages = parse_policy(
        {
            N + "auth-tls-secret": "default/ca",
            N + "auth-tls-verify-client": "optional_no_ca",
            N + "auth-tls-verify-depth": "0",
            N + "auth-tls-error-page": "https://err.test/x",
            N + "auth-tls-pass-certificate-to-upstream": "true",
            N + "auth-tls-match-cn": "CN=alice",
        }
    )
    ref = policy.client_auth_ref
    assert messages == [] and ref is not None
    assert (ref.namespace, ref.secret, ref.verify, ref.depth) == (
        "default",
        "ca",
        "optional_no_ca",
        1,
    )
    assert (ref.error_page, ref.pass_certificate) == ("https://err.test/x", True)
    assert ref.match_cn is not None and ref.match_cn.matches_bytes(b"CN=alice,O=x")
    assert not ref.match_cn.matches_bytes(b"CN=bob,O=alice")


def test_off_and_without_a_secret_ask_nothing() -> None:
    policy, messages = parse_policy(
        {N + "auth-tls-secret": "ca", N + "auth-tls-verify-client": "off"}
    )
    assert policy.client_auth_ref is None and messages == []
    policy, messages = parse_policy(
        {N + "auth-tls-verify-client": "on", N + "auth-tls-match-cn": "CN=a"}
    )
    assert policy.client_auth_ref is None
    assert messages == [
        "auth-tls-verify-client, auth-tls-match-cn: no effect without auth-tls-secret; "
        "no client certificates"
    ]


def table(*extra, annotations: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return build(
        ingress(
            "mtls",
            [rule("mtls.test", path("/", "web"))],
            annotations={N + "auth-tls-secret": "ca"} if annotations is None else annotations,
            created=1,
        ),
        service("web"),
        endpoint_slice("web", ["10.0.0.1"]),
        *extra,
    )


@pytest.mark.parametrize(
    ("objs", "reason"),
    [
        ((), "auth-tls-secret default/ca not found"),
        ((ca_secret(data={"tls.crt": "x"}),), "auth-tls-secret default/ca: has no ca.crt"),
        ((ca_secret(data={"ca.crt": "not pem"}),), "auth-tls-secret default/ca: ca.crt is not PEM"),
        (
            (ca_secret(data={"ca.crt": CA_PEM.decode(), "ca.crl": "junk"}),),
            "auth-tls-secret default/ca: ca.crl is not a PEM CRL",
        ),
    ],
)
def test_an_unusable_secret_fails_closed(objs: tuple, reason: str) -> None:
    t = table(*objs, ingress("more", [rule("mtls.test", path("/more", "web"))], created=2))
    assert not t.client_auth
    for p in ("/", "/more"):  # the whole host
        action = decide(t, request("mtls.test", p, tls=True))
        assert isinstance(action, Respond) and action.status == 503, action
        assert reason in action.body
    assert any(reason in p.reason and p.reason.endswith("answers 503") for p in t.problems)


def test_another_namespace_is_refused() -> None:
    t = table(ca_secret(namespace="elsewhere"), annotations={N + "auth-tls-secret": "elsewhere/ca"})
    action = decide(t, request("mtls.test", "/", tls=True))
    assert isinstance(action, Respond) and action.status == 503
    assert "is in another namespace than the Ingress (default)" in action.body


def test_the_oldest_ingress_with_a_ca_decides_the_host() -> None:
    """controller.go createServers: a later Ingress cannot change the server's
    CertificateAuth; one without auth-tls does not clear it."""
    t = table(
        ca_secret(),
        ca_secret("other"),
        ingress("plain", [rule("mtls.test", path("/plain", "web"))], created=0),
        ingress(
            "younger",
            [rule("mtls.test", path("/young", "web"))],
            annotations={N + "auth-tls-secret": "other", N + "auth-tls-verify-client": "optional"},
            created=2,
        ),
    )
    vhost = t.find_host("mtls.test")
    assert vhost is not None and vhost.client_auth is not None
    assert (vhost.client_auth.secret, vhost.client_auth.ref.verify) == ("default/ca", "on")
    [problem] = [p for p in t.problems if "auth-tls" in p.reason]
    assert problem.obj == "Ingress default/younger"
    assert problem.reason == (
        "auth-tls-* of this Ingress do not apply to host mtls.test: client certificates "
        "there are checked as older Ingress default/mtls says (server-wide, as in ingress-nginx)"
    )


def test_catch_all_rules_cannot_ask_for_certificates() -> None:
    t = build(
        ingress(
            "hostless", [rule(None, path("/", "web"))], annotations={N + "auth-tls-secret": "ca"}
        ),
        ca_secret(),
        service("web"),
        endpoint_slice("web", ["10.0.0.1"]),
    )
    action = decide(t, request("anything.test", "/", tls=True))
    assert isinstance(action, Respond) and action.status == 403
    assert [p.reason for p in t.problems] == [
        "auth-tls-secret on rules without a host is not supported by ingressd; "
        "its routes without a host answer 403"
    ]


def test_requests_are_judged_only_on_hosts_that_check() -> None:
    t = table(ca_secret(), ingress("web", [rule("web.test", path("/", "web"))], created=3))
    assert t.client_auth
    head = request("web.test", "/", tls=True)
    action = decide(t, head)
    assert apply(t, head, None, action) is action  # another host: untouched
    head = request("mtls.test", "/", tls=True)
    answer = apply(t, head, None, decide(t, head))  # no SNI: no certificate was asked for
    # nginx's 496, sent as 400 with its own page (proxy/pages.py)
    assert isinstance(answer, Respond) and answer.status == 496
    assert "No required SSL certificate was sent" in answer.body


def test_a_plain_http_request_is_judged_as_without_a_certificate() -> None:
    t = table(
        ca_secret(),
        annotations={N + "auth-tls-secret": "ca", N + "auth-tls-verify-client": "optional"},
    )
    head = request("mtls.test", "/")
    action = apply(t, head, None, decide(t, head))
    assert isinstance(action, Forward)
    assert (b"ssl-client-verify", b"NONE") in action.request_headers
    assert (b"ssl-client-cert", b"") in action.request_headers  # the client's own dropped


def test_client_certificates_work_here() -> None:
    # The in-memory handshake behind every auth-tls host (else they answer 503).
    assert client_tls.available() is None


def test_a_server_alias_is_checked_as_its_host() -> None:
    """server-alias names get everything the host has: the client certificate check too
    (the SNI callback and the requests find the same VirtualHost)."""
    t = table(
        ca_secret(),
        annotations={N + "auth-tls-secret": "ca", N + "server-alias": "alias.test"},
    )
    vhost = t.find_host("alias.test")
    assert vhost is not None and vhost.client_auth is not None
    head = request("alias.test", "/", tls=True)
    answer = apply(t, head, None, decide(t, head))
    assert isinstance(answer, Respond) and answer.status == 496


def test_where_certificates_cannot_be_asked_for_the_host_fails_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_tls, "available", lambda: "client certificates cannot be checked")
    t = table(ca_secret())
    assert not t.client_auth
    action = decide(t, request("mtls.test", "/", tls=True))
    assert isinstance(action, Respond) and action.status == 503
    assert "client certificates cannot be checked" in action.body
