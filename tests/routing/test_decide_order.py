"""The order annotations apply in: ingress-nginx's nginx phases.

app-root, CORS preflights and redirects answer in nginx's rewrite phase, before
the HTTPS redirect (Lua, end of the rewrite phase) and before access checks
(the access phase); deny rules come before allow rules. ingressd adds one rule
of its own: a route whose access annotation is invalid answers 503 (ingress-nginx's
answer for a location it denies) before all.
"""

from __future__ import annotations

from k8s_objects import annotated_table, request

from ingressd.routing.decide import Forward, RequestHead, Respond, decide

A = "nginx.ingress.kubernetes.io/"


table = annotated_table


def head(p: str = "/", method: str = "GET", origin: str | None = None) -> RequestHead:
    h = request("a.example", p, method=method)
    h.origin = origin
    return h


def test_redirects_come_before_https_and_access_checks() -> None:
    t = table(
        permanent_redirect="https://new.example/",
        force_ssl_redirect="true",
        allowlist_source_range="10.0.0.0/8",
    )
    action = decide(t, head())
    assert isinstance(action, Respond)
    assert (action.status, action.location) == (301, "https://new.example/")


def test_app_root_comes_before_the_redirect_annotations() -> None:
    t = table(app_root="/app", temporal_redirect="https://t.example/")
    root, other = decide(t, head("/")), decide(t, head("/x"))
    assert isinstance(root, Respond) and (root.status, root.location) == (
        302,
        "http://a.example/app",
    )
    assert isinstance(other, Respond) and other.status == 302
    assert other.location == "https://t.example/"


def test_preflight_is_answered_before_access_checks() -> None:
    t = table(enable_cors="true", denylist_source_range="192.0.2.0/24")
    pre = decide(t, head(method="OPTIONS", origin="https://x.example"))
    assert isinstance(pre, Respond) and pre.status == 204
    get = decide(t, head(origin="https://x.example"))
    assert isinstance(get, Respond) and get.status == 403  # request() comes from 192.0.2.1


def test_https_redirect_comes_before_access_checks() -> None:
    t = table(force_ssl_redirect="true", denylist_source_range="192.0.2.0/24")
    action = decide(t, head())
    assert isinstance(action, Respond) and action.status == 308


def test_deny_beats_allow() -> None:
    t = table(allowlist_source_range="192.0.2.0/24", denylist_source_range="192.0.2.1")
    action = decide(t, head())
    assert isinstance(action, Respond) and action.status == 403
    t = table(allowlist_source_range="192.0.2.0/24", denylist_source_range="192.0.2.9")
    assert isinstance(decide(t, head()), Forward)


def test_an_invalid_access_annotation_answers_before_everything() -> None:
    t = table(allowlist_source_range="nope", permanent_redirect="https://new.example/")
    action = decide(t, head())
    assert isinstance(action, Respond) and action.status == 503
    assert "invalid allowlist-source-range annotation on Ingress default/web" in action.body
