"""Snippets translated into typed policy: what each directive becomes, what is
refused and why, and the order nginx would run them in beside the annotations."""

from __future__ import annotations

from pathlib import Path

import pytest
from k8s_objects import build, endpoint_slice, ingress, path, request, rule, service

from ingressd.model.snippet import ADD, CLEAR, SET, RequestVars, answer, edit_response
from ingressd.model.snippet import plan as snippet_plan
from ingressd.model.table import RouteTable
from ingressd.policy.annotations import parse_policy
from ingressd.policy.snippets import translate
from ingressd.routing.decide import Forward, RequestHead, Respond, decide
from ingressd.sources.manifests import load_file

NGINX = "nginx.ingress.kubernetes.io/"
REALWORLD = Path(__file__).resolve().parents[1] / "data" / "realworld" / "manifests"


def lines(text: str, where: str = "configuration-snippet") -> list[str]:
    result = translate(text, where)  # type: ignore[arg-type]
    assert result.refusal == "", result.refusal
    return list(result.lines)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'more_set_headers "Request-Id: $req_id";',
            [
                "more_set_headers (line 1): response header Request-Id: $req_id (every status; "
                "replaces any other)"
            ],
        ),
        (
            "more_set_headers -s '404 500' 'X-A: 1' X-B;",
            [
                "more_set_headers (line 1): response header X-A: 1 (status 404 500; replaces any "
                "other)",
                "more_set_headers (line 1): response header X-B removed (status 404 500)",
            ],
        ),
        (
            "more_clear_headers 'X-Powered-By' X-Hidden-*;",
            [
                "more_clear_headers (line 1): response header X-Powered-By removed (every status)",
                "more_clear_headers (line 1): response headers X-Hidden-* removed (every status)",
            ],
        ),
        (
            "add_header Strict-Transport-Security 'max-age=31536000' always;",
            [
                "add_header (line 1): response header Strict-Transport-Security: max-age=31536000 "
                "added on every status"
            ],
        ),
        (
            "add_header X-Frame-Options SAMEORIGIN;",
            [
                "add_header (line 1): response header X-Frame-Options: SAMEORIGIN added on 2xx and "
                "3xx responses (nginx's list)"
            ],
        ),
        (
            "proxy_set_header X-Client $http_x_client;\nproxy_set_header Accept-Encoding '';",
            [
                "proxy_set_header (line 1): upstream request header X-Client: $http_x_client "
                "(replaces the client's; not sent when empty)",
                "proxy_set_header (line 2): upstream request header Accept-Encoding not sent",
            ],
        ),
        (
            "proxy_hide_header X-Powered-By;",
            [
                "proxy_hide_header (line 1): the upstream's response header X-Powered-By is not "
                "passed on"
            ],
        ),
        (
            "return 301 https://x.example$request_uri;",
            ["return (line 1): answers 301, Location https://x.example$request_uri"],
        ),
        (
            "return https://x.example/;",
            ["return (line 1): answers 302, Location https://x.example/"],
        ),
        ("return 200 'ok';", ["return (line 1): answers 200 with the text 'ok'"]),
        ("return 403;", ["return (line 1): answers 403"]),
        (
            "rewrite ^/old/(.*)$ /new/$1 permanent;",
            [
                "rewrite (line 1): paths matching '^/old/(.*)$' answer 301, Location /new/$1 (the "
                "request's arguments appended)"
            ],
        ),
        (
            "rewrite ^ https://x.example/? ;",
            [
                "rewrite (line 1): paths matching '^' answer 302, Location https://x.example/ "
                "(without the request's arguments)"
            ],
        ),
        (
            'if ($http_user_agent ~* "(bot|crawler)") {\n  return 403;\n}',
            ["return (line 2): when $http_user_agent ~* '(bot|crawler)': answers 403"],
        ),
        (
            "if ($host != 'www.a.example') { rewrite ^/(.*)$ https://www.a.example/$1 permanent; }",
            [
                "rewrite (line 1): when $host != 'www.a.example': paths matching '^/(.*)$' answer "
                "301, Location https://www.a.example/$1 (the request's arguments appended)"
            ],
        ),
        (
            "if ($http_x_debug) { return 404; }",
            ["return (line 1): when $http_x_debug is set: answers 404"],
        ),
    ],
)
def test_translated(text: str, expected: list[str]) -> None:
    assert lines(text) == expected


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        ("proxy_pass http://127.0.0.1:8080;", "directive 'proxy_pass' (line 1) is not translated"),
        ("add_header X 1;\nlua_code_cache off;", "directive 'lua_code_cache' (line 2)"),
        ("set $a 1;", "directive 'set' (line 1)"),
        ("location /a { return 403; }", "directive 'location' (line 1)"),
        ("include /etc/passwd;", "directive 'include' (line 1)"),
        ('more_set_headers "X: $document_root";', "variable $document_root in more_set_headers"),
        ("return 200 $req_id;", "the request id is known only in header values"),
        ("more_set_headers -t text/html 'X: 1';", "option -t is not translated"),
        (
            "more_set_headers 'Content-Length: 1';",
            "response header Content-Length is not translated",
        ),
        ("more_clear_headers Content-*;", "would clear headers ingressd writes itself"),
        ("proxy_set_header Host x;", "request header Host is not translated"),
        ("proxy_set_header X-Forwarded-Proto https;", "would send the upstream two of them"),
        ("rewrite ^/a /b;", "rewrite with no flag and a replacement that is not a URL"),
        ("rewrite ^/a /b last;", "rewrite with flag last"),
        ("rewrite (a)\\1 /b permanent;", "cannot run on RE2"),
        ("return 444;", "444 (close the connection)"),
        ("add_header X-$host 1;", "'X-$host' is not a header name"),
        ("return 99;", "status '99' is not translated"),
        ("if (-f /etc/passwd) { return 403; }", "condition '-f' is not translated"),
        ("if ($a) { if ($b) { return 403; } }", "variable $a in if"),
        ("if ($host) { if ($host) { return 403; } }", "directive 'if' inside if"),
        ("if ($host) { add_header X 1; }", "directive 'add_header' inside if"),
        ("return 301 /x/$1;", "$1 names no capture"),
        ('add_header X "a\rb";', "control character"),
        ("", "it holds no directive"),
        ("add_header X", "not nginx configuration ingressd can read"),
    ],
)
def test_refused(text: str, refusal: str) -> None:
    result = translate(text, "configuration-snippet")
    assert result.policy is None
    assert refusal in result.refusal


def test_server_snippet_proxy_set_header_does_nothing_as_in_ingress_nginx() -> None:
    result = translate("proxy_set_header X-A 1;", "server-snippet")
    assert result.policy is not None and result.policy.upstream == ()
    assert "no effect, as in ingress-nginx" in result.lines[0]


# -- carried out ---------------------------------------------------------------------------


def values(
    path: str = "/", query: str = "", headers: list[tuple[bytes, bytes]] | None = None
) -> RequestVars:
    return RequestVars(
        "a.test", "a.test:8080", path, path, query, "http", "10.0.0.1", "GET", headers or [], "rid"
    )


def test_header_edits_follow_nginx_filter_order() -> None:
    policy = translate(
        "add_header X-Add a;\nmore_set_headers 'X-Up: mine' 'X-Id: $req_id';\n"
        "more_clear_headers X-Secret-*;\nadd_header X-Err e always;",
        "configuration-snippet",
    ).policy
    assert policy is not None
    assert [e.kind for e in policy.more] == [SET, SET, CLEAR]
    assert [e.kind for e in policy.add] == [ADD, ADD]
    plan = snippet_plan(None, policy)
    assert plan is not None
    upstream = [(b"X-Up", b"theirs"), (b"x-up", b"2"), (b"X-Secret-Key", b"k"), (b"Keep", b"1")]
    out = edit_response(plan, 200, upstream, values())
    assert out == [
        (b"Keep", b"1"),
        (b"X-Up", b"mine"),
        (b"X-Id", b"rid"),
        (b"X-Add", b"a"),
        (b"X-Err", b"e"),
    ]
    out = edit_response(plan, 502, [], values())
    assert out == [(b"X-Up", b"mine"), (b"X-Id", b"rid"), (b"X-Err", b"e")]


def test_server_and_location_snippets_combine_as_nginx_inherits() -> None:
    server = translate(
        "more_set_headers 'X-S: s';\nadd_header X-SA 1;\nproxy_hide_header X-H;",
        "server-snippet",
    ).policy
    location = translate("more_set_headers 'X-S: l';\nadd_header X-LA 1;", "configuration-snippet")
    plan = snippet_plan(server, location.policy)
    assert plan is not None
    # headers-more: the server's, then the location's; add_header: the location's alone;
    # proxy_hide_header: inherited, the location having none.
    assert edit_response(plan, 200, [], values()) == [(b"X-S", b"l"), (b"X-LA", b"1")]
    assert plan.hide == frozenset({b"x-h"})


def test_answers_in_order_with_captures_and_arguments() -> None:
    policy = translate(
        "rewrite ^/old/(.*)$ /new/$1 permanent;\n"
        "if ($http_x_go ~ ^(dev|prod)$) { return 302 https://$1.example$request_uri; }\n"
        "return 200 'fallback $host';",
        "configuration-snippet",
    ).policy
    assert policy is not None
    status, _, location, _ = answer(policy, values("/old/a b", "x=1"))  # type: ignore[misc]
    assert (status, location) == (301, "http://a.test/new/a%20b?x=1")
    found = answer(policy, values("/p", "", [(b"X-Go", b"prod")]))
    assert found is not None and found[:1] == (302,) and found[2] == "https://prod.example/p"
    found = answer(policy, values("/p"))
    assert found == (200, "fallback a.test", None, ((b"Content-Type", b"text/html"),))


def table_with(annotations: dict[str, str]) -> RouteTable:
    return build(
        ingress("web", [rule("a.test", path("/", "web"))], annotations=annotations),
        service("web"),
        endpoint_slice("web", ["10.0.0.1"]),
    )


def head(path: str = "/") -> RequestHead:
    return request("a.test", path)


def test_snippet_answers_before_the_redirect_annotations_and_access() -> None:
    # nginx.tmpl: the configuration-snippet comes before "return <permanent-redirect>",
    # rewrite-phase directives run before the Lua HTTPS redirect and the access phase.
    table = table_with(
        {
            NGINX + "configuration-snippet": "return 410;",
            NGINX + "permanent-redirect": "https://new.example/",
            NGINX + "force-ssl-redirect": "true",
            NGINX + "allowlist-source-range": "10.9.9.9",
        }
    )
    action = decide(table, head())
    assert isinstance(action, Respond) and action.status == 410


def test_server_snippet_answers_before_app_root() -> None:
    table = table_with(
        {
            NGINX + "server-snippet": "rewrite ^/$ /server permanent;",
            NGINX + "app-root": "/app",
        }
    )
    action = decide(table, head("/"))
    assert isinstance(action, Respond) and action.location == "http://a.test/server"


def test_cors_preflight_answers_before_the_configuration_snippet() -> None:
    table = table_with(
        {NGINX + "configuration-snippet": "return 410;", NGINX + "enable-cors": "true"}
    )
    preflight = request("a.test", "/", method="OPTIONS")
    preflight.origin = "https://x.example"
    action = decide(table, preflight)
    assert isinstance(action, Respond) and action.status == 204


def test_translated_access_control_is_honoured_not_denied() -> None:
    # Refused before, and so a 403 for everyone; now the snippet itself applies.
    snippet = 'if ($http_x_token != "s3cret") { return 403; }'
    policy, messages = parse_policy({NGINX + "configuration-snippet": snippet})
    assert policy.fail_closed is None and messages == []
    table = table_with({NGINX + "configuration-snippet": snippet})
    denied = decide(table, head())
    assert isinstance(denied, Respond) and denied.status == 403
    allowed = request("a.test", "/")
    allowed.headers = [(b"X-Token", b"s3cret")]
    assert isinstance(decide(table, allowed), Forward)


def test_realworld_snippets_translate() -> None:
    """Every snippet annotation of the real Ingresses in tests/data/realworld."""
    found = {}
    objects = [obj for file in sorted(REALWORLD.glob("*.yaml")) for obj in load_file(file)[0]]
    assert len(objects) >= 67
    for obj in objects:
        for key, value in ((obj.get("metadata") or {}).get("annotations") or {}).items():
            short = key.rpartition("/")[2]
            if short in ("configuration-snippet", "server-snippet"):
                found[f"{obj['metadata']['name']} {short}"] = translate(value, short).refusal
    assert found == {"nginx-configuration-snippet configuration-snippet": ""}


def test_the_oldest_server_snippet_of_a_host_applies_even_when_refused() -> None:
    # ingress-nginx keeps one server-snippet per server, the first Ingress's in
    # creation order; a younger Ingress's does nothing there.
    def table(older: str) -> RouteTable:
        return build(
            ingress(
                "old",
                [rule("a.test", path("/", "web"))],
                annotations={NGINX + "server-snippet": older},
                created=1,
            ),
            ingress(
                "young",
                [rule("a.test", path("/y", "web"))],
                annotations={NGINX + "server-snippet": "return 418;"},
                created=2,
            ),
            service("web"),
            endpoint_slice("web", ["10.0.0.1"]),
        )

    for uri in ("/", "/y"):
        action = decide(table("return 410;"), head(uri))
        assert isinstance(action, Respond) and action.status == 410, uri
        # The older one refused (gzip is not translated): nothing applies, not the younger's.
        assert isinstance(decide(table("gzip on;"), head(uri)), Forward), uri
