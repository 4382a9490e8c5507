"""Access control that ingressd cannot honour fails closed: 403, reported.

Unsupported annotations that narrow who may access a route (ModSecurity
blocking, headers the auth service decides on, digest auth) and refused
snippets holding access-control directives make the routes they cover answer
403 rather than serve without the protection. Those ingress-nginx applies to a
whole server (server-snippet) deny every route of the host; so does client
certificate authentication whose CA Secret cannot be used (503). Every other
unsupported annotation is ignored, with the reason why ignoring it opens nothing.
"""

from __future__ import annotations

import pytest
from k8s_objects import build, endpoint_slice, ingress, path, request, rule, service

from ingressd.check import check, render_text
from ingressd.model.objects import ObjectStore
from ingressd.policy.annotations import DENYING, IGNORED, REFUSED, SUPPORTED, parse_policy
from ingressd.policy.snippet_access import access_directives, modsecurity_blocks
from ingressd.routing.build import BuildOptions
from ingressd.routing.decide import Forward, Respond, decide

NGINX = "nginx.ingress.kubernetes.io/"

# The client-certificate example of ingress-nginx (docs/examples/auth/client-certs/
# ingress.yaml, in tests/data/realworld as in05), on our class and echo Service.
CLIENT_CERTS = {
    NGINX + "auth-tls-verify-client": "on",
    NGINX + "auth-tls-secret": "default/ca-secret",
    NGINX + "auth-tls-verify-depth": "1",
    NGINX + "auth-tls-error-page": "http://www.mysite.com/error-cert.html",
    NGINX + "auth-tls-pass-certificate-to-upstream": "true",
}


def web(name: str, host: str, p: str = "/", annotations: dict[str, str] | None = None) -> dict:
    return ingress(name, [rule(host, path(p, "web"))], annotations=annotations)


def table_of(*ingresses: dict):  # type: ignore[no-untyped-def]
    return build(*ingresses, service("web"), endpoint_slice("web", ["10.0.0.1"]))


def status(table, host: str, p: str = "/") -> int:  # type: ignore[no-untyped-def]
    action = decide(table, request(host, p, tls=True))
    return 200 if isinstance(action, Forward) else action.status


# -- snippets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("snippet", "found"),
    [
        ("deny all;", ("deny",)),
        ("allow 10.0.0.0/8;\ndeny all;", ("allow", "deny")),
        (
            'auth_basic "Staff";\nauth_basic_user_file /etc/htpasswd;',
            ("auth_basic", "auth_basic_user_file"),
        ),
        ("auth_request /_auth;", ("auth_request",)),
        ("satisfy any;", ("satisfy",)),
        ("if ($http_x_key != 'secret') { return 403; }", ("return 403",)),
        ("if ($bad) {\n  return 401 'no';\n}", ("return 401",)),
        ("return 503;", ("return 503",)),
        ("limit_except GET { deny all; }", ("limit_except", "deny")),
        ("access_by_lua_block { if ngx.var.x then ngx.exit(403) end }", ("access_by_lua_block",)),
        (
            "modsecurity on;\nmodsecurity_rules 'SecRuleEngine On';",
            ("modsecurity on", "modsecurity_rules"),
        ),
        ("  DENY   all ;", ()),  # nginx directives are lower case: not a directive
        ('more_set_headers "Request-Id: $req_id";', ()),  # ingress-nginx's own example
        ('add_header X-Deny "deny";', ()),
        ("# deny all;\nproxy_set_header X-A b;", ()),
        ("return 301 https://example.com$request_uri;", ()),
        ("return 200 'ok';", ()),
        ("modsecurity off;", ()),
        ("add_header Content-Security-Policy \"default-src 'self'; deny\";", ()),
        ("", ()),
    ],
)
def test_access_directives_of_snippets(snippet: str, found: tuple[str, ...]) -> None:
    assert access_directives(snippet) == found


def test_a_quoted_semicolon_errs_on_the_side_of_denying() -> None:
    # Not nginx's own reading (quotes group words; this is one add_header), but safe.
    assert access_directives('add_header X "a"; deny all;') == ("deny",)
    assert access_directives("proxy_set_header X 'a; deny all';") == ()


@pytest.mark.parametrize(
    ("rules", "blocks"),
    [
        ("SecRuleEngine On", True),
        ('SecRuleEngine DetectionOnly\nSecRule REQUEST_URI "@contains x" deny', False),
        ("  secruleengine on\n", True),
        ("SecRuleEngine Off", False),
    ],
)
def test_modsecurity_blocks_only_with_the_engine_on(rules: str, blocks: bool) -> None:
    assert modsecurity_blocks(rules) is blocks


# -- which annotations deny ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "reason", "host_wide"),
    [
        (
            {
                NGINX + "enable-modsecurity": "true",
                NGINX + "modsecurity-snippet": "SecRuleEngine On",
            },
            "modsecurity-snippet is not supported by ingressd",
            False,
        ),
        (
            {NGINX + "auth-type": "digest", NGINX + "auth-secret": "users"},
            "auth-type 'digest' is not supported by ingressd",
            False,
        ),
        (
            {NGINX + "configuration-snippet": "deny all;"},
            "configuration-snippet holds access control ingressd cannot apply",
            False,
        ),
        (
            {NGINX + "server-snippet": "location /admin { return 403; }"},
            "server-snippet holds access control ingressd cannot apply",
            True,
        ),
        (
            {NGINX + "auth-url": "http://auth/check", NGINX + "auth-snippet": "deny 10.0.0.0/8;"},
            "auth-snippet holds access control ingressd cannot apply",
            False,
        ),
    ],
)
def test_access_control_that_cannot_be_honoured_denies(
    annotations: dict[str, str], reason: str, host_wide: bool
) -> None:
    policy, messages = parse_policy(annotations)
    assert policy.fail_closed == (403, reason)
    assert policy.host_fail_closed == ((403, reason) if host_wide else None)
    where = "every route of its hosts answers" if host_wide else "its routes answer"
    assert any(m.endswith(f"; {where} 403 rather than serve without it") for m in messages)


@pytest.mark.parametrize(
    "annotations",
    [
        {NGINX + "auth-tls-verify-client": "on"},  # without a secret: no effect in ingress-nginx
        {NGINX + "auth-proxy-set-headers": "ns/cm"},  # without auth-url
        {NGINX + "auth-snippet": "deny all;"},  # without auth-url
        {NGINX + "modsecurity-snippet": "SecRuleEngine DetectionOnly"},
        {NGINX + "enable-modsecurity": "false", NGINX + "modsecurity-snippet": "SecRuleEngine On"},
        {NGINX + "enable-modsecurity": "true", NGINX + "enable-owasp-core-rules": "true"},
        # refused (gzip is not translated), and nothing in it narrows access
        {NGINX + "configuration-snippet": 'more_set_headers "Request-Id: $req_id"; gzip on;'},
        {NGINX + "stream-snippet": "server { listen 9000; deny all; }"},
    ],
)
def test_what_does_not_narrow_access_is_ignored(annotations: dict[str, str]) -> None:
    policy, messages = parse_policy(annotations)
    assert policy.fail_closed is None and policy.host_fail_closed is None
    assert messages and not any("403" in m for m in messages)


# ingress-nginx v1.15.1's annotations (docs/user-guide/nginx-configuration/annotations.md,
# internal/ingress/annotations/*), and a few older ones users still carry.
INGRESS_NGINX = """
app-root affinity affinity-mode affinity-canary-behavior auth-realm auth-secret
auth-secret-type auth-type auth-tls-secret auth-tls-verify-depth
auth-tls-verify-client auth-tls-error-page auth-tls-pass-certificate-to-upstream
auth-tls-match-cn auth-url auth-cache-key auth-cache-duration auth-keepalive
auth-keepalive-share-vars auth-keepalive-requests auth-keepalive-timeout
auth-proxy-set-headers auth-snippet enable-global-auth backend-protocol canary
canary-by-header canary-by-header-value canary-by-header-pattern canary-by-cookie
canary-weight canary-weight-total client-body-buffer-size configuration-snippet
custom-http-errors custom-headers default-backend enable-cors cors-allow-origin
cors-allow-methods cors-allow-headers cors-expose-headers cors-allow-credentials
cors-max-age force-ssl-redirect from-to-www-redirect http2-push-preload
limit-connections limit-rps limit-rpm limit-burst-multiplier limit-rate
limit-rate-after limit-allowlist limit-whitelist global-rate-limit
global-rate-limit-window global-rate-limit-key global-rate-limit-ignored-cidrs
permanent-redirect permanent-redirect-code temporal-redirect temporal-redirect-code
preserve-trailing-slash proxy-body-size proxy-cookie-domain proxy-cookie-path
proxy-connect-timeout proxy-send-timeout proxy-read-timeout proxy-next-upstream
proxy-next-upstream-timeout proxy-next-upstream-tries proxy-request-buffering
proxy-redirect-from proxy-redirect-to proxy-http-version proxy-ssl-secret
proxy-ssl-ciphers proxy-ssl-name proxy-ssl-protocols proxy-ssl-verify
proxy-ssl-verify-depth proxy-ssl-server-name enable-rewrite-log rewrite-target satisfy
server-alias server-snippet service-upstream session-cookie-name session-cookie-path
session-cookie-domain session-cookie-change-on-failure session-cookie-samesite
session-cookie-conditional-samesite-none session-cookie-expires session-cookie-max-age
session-cookie-secure ssl-redirect ssl-passthrough stream-snippet upstream-hash-by
upstream-hash-by-subset upstream-hash-by-subset-size x-forwarded-prefix load-balance
upstream-vhost denylist-source-range whitelist-source-range allowlist-source-range
proxy-buffering proxy-buffers-number proxy-buffer-size proxy-busy-buffers-size
proxy-max-temp-file-size ssl-ciphers ssl-prefer-server-ciphers connection-proxy-header
enable-access-log enable-opentelemetry opentelemetry-trust-incoming-span
opentelemetry-operation-name use-regex enable-modsecurity enable-owasp-core-rules
modsecurity-transaction-id modsecurity-snippet mirror-request-body mirror-target
mirror-host fastcgi-index fastcgi-params-configmap use-port-in-redirects
disable-proxy-intercept-errors
""".split()  # noqa: SIM905


def test_every_ingress_nginx_annotation_is_classified() -> None:
    kinds = [set(SUPPORTED), set(REFUSED), set(DENYING), set(IGNORED)]
    for i, a in enumerate(kinds):
        for b in kinds[i + 1 :]:
            assert a.isdisjoint(b)
    classified = set().union(*kinds)
    assert sorted(set(INGRESS_NGINX) - classified) == []
    # ... and nothing is classified that ingress-nginx does not have.
    assert sorted((set(DENYING) | set(IGNORED)) - set(INGRESS_NGINX)) == []


# -- through the table ---------------------------------------------------------------------


def test_client_certificate_example_checks_its_whole_host() -> None:
    """auth-tls-* is server-wide in ingress-nginx: the host's other Ingresses too."""
    table = table_of(
        ingress(
            "nginx-test",
            [rule("certs.test", path("/", "web"))],
            annotations=CLIENT_CERTS,
            created=1,
        ),
        ingress("other-paths", [rule("certs.test", path("/public", "web"))], created=2),
        web("elsewhere", "plain.test"),
        ca_secret("ca-secret"),
    )
    assert table.client_auth
    auth = table.find_host("certs.test").client_auth  # type: ignore[union-attr]
    assert auth is not None and auth.secret == "default/ca-secret"
    assert auth.ref.pass_certificate and auth.ref.error_page is not None
    assert table.find_host("plain.test").client_auth is None  # type: ignore[union-attr]
    assert not [p for p in table.problems if "auth-tls" in p.reason]


def test_client_certificate_example_without_its_secret_denies_its_whole_host() -> None:
    table = table_of(
        ingress(
            "nginx-test",
            [rule("certs.test", path("/", "web"))],
            annotations=CLIENT_CERTS,
            created=1,
        ),
        ingress("other-paths", [rule("certs.test", path("/public", "web"))], created=2),
        web("elsewhere", "plain.test"),
    )
    assert status(table, "certs.test", "/") == 503
    assert status(table, "certs.test", "/public/x") == 503  # the host's other Ingress too
    assert status(table, "plain.test") == 200
    action = decide(table, request("certs.test", "/", tls=True))
    assert isinstance(action, Respond)
    assert action.body == (
        "503 Service Unavailable: auth-tls-secret default/ca-secret not found "
        "on Ingress default/nginx-test\n"
    )
    [problem] = [p for p in table.problems if "auth-tls-secret" in p.reason]
    assert problem.obj == "Ingress default/nginx-test"
    assert problem.reason == (
        "auth-tls-secret default/ca-secret not found; every route of its hosts answers 503"
    )


def test_a_configuration_snippet_denies_only_its_own_routes() -> None:
    table = table_of(
        web("guarded", "shop.test", "/admin", {NGINX + "configuration-snippet": "deny all;"}),
        web("shop", "shop.test", "/"),
    )
    assert status(table, "shop.test", "/admin") == 403
    assert status(table, "shop.test", "/") == 200


def test_a_server_snippet_denies_the_whole_host() -> None:
    snippet = "location /admin {\n  allow 10.0.0.0/8;\n  deny all;\n}"
    table = table_of(
        web("guarded", "shop.test", "/admin", {NGINX + "server-snippet": snippet}),
        web("shop", "shop.test", "/"),
        web("blog", "blog.test", "/"),
    )
    assert status(table, "shop.test", "/admin") == 403
    assert status(table, "shop.test", "/") == 403
    assert status(table, "blog.test", "/") == 200


def test_check_reports_the_client_certificate_example() -> None:
    from k8s_objects import ingress_class

    def report_of(*extra: dict):  # type: ignore[no-untyped-def]
        store = ObjectStore()
        for obj in (
            ingress("nginx-test", [rule("certs.test", path("/", "web"))], annotations=CLIENT_CERTS),
            service("web"),
            endpoint_slice("web", ["10.0.0.1"]),
            ingress_class(),
            *extra,
        ):
            store.put(obj)
        report = check(store.snapshot(), BuildOptions(ingress_class="ingressd"))
        [ours] = [i for i in report.ingresses if i.name == "nginx-test"]
        return report, ours

    report, ours = report_of(ca_secret("ca-secret"))
    assert {a.key.removeprefix(NGINX): a.status for a in ours.annotations} == {
        k.removeprefix(NGINX): "supported" for k in CLIENT_CERTS
    }
    assert not ours.problems and report.exit_code == 0
    # without the Secret: a problem, 503, exit code 1
    report, ours = report_of()
    assert any("auth-tls-secret default/ca-secret not found" in p for p in ours.problems)
    assert report.exit_code == 1
    assert "every route of its hosts answers 503" in render_text(report)


def ca_secret(name: str) -> dict:
    from ingressd.policy.tls import self_signed

    cert_pem, _ = self_signed(common_name="client CA", dns_names=())
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        "stringData": {"ca.crt": cert_pem.decode()},
    }
