"""decide(): request head + table -> forward, redirect or error response.

Regex and rewrite cases follow ingress-nginx's documented behaviour
(https://kubernetes.github.io/ingress-nginx/user-guide/ingress-path-matching/
and the rewrite example).
"""

from __future__ import annotations

import pytest
from k8s_objects import (
    backend,
    build,
    endpoint_slice,
    ingress,
    path,
    request,
    rule,
    service,
    tls_entry,
    tls_secret,
)

from ingressd.model.table import RouteTable
from ingressd.routing.decide import Forward, Respond, decide

HOST = "example.com"
NGINX = "nginx.ingress.kubernetes.io/"
OURS = "ingressd.io/"


def services(*names: str) -> list:
    """A Service per name, each with one ready endpoint 10.0.0.<n>."""
    objs = []
    for i, name in enumerate(names, start=1):
        objs += [service(name), endpoint_slice(name, [f"10.0.0.{i}"])]
    return objs


def forward(table: RouteTable, host: str, p: str, query: str = "", *, tls: bool = False) -> Forward:
    action = decide(table, request(host, p, query, tls=tls))
    assert isinstance(action, Forward), action
    return action


def respond(table: RouteTable, host: str, p: str, query: str = "", **kw: object) -> Respond:
    action = decide(table, request(host, p, query, **kw), **{"https_port": 443})  # type: ignore[arg-type]
    assert isinstance(action, Respond), action
    return action


def upstream(table: RouteTable, p: str, query: str = "", host: str = HOST) -> str | None:
    """The target sent upstream for ``p``, or None if the request is not forwarded."""
    action = decide(table, request(host, p, query))
    return action.target if isinstance(action, Forward) else None


def reasons(table: RouteTable, obj: str) -> list[str]:
    return [p.reason for p in table.problems if p.obj == obj]


# -- forwarding, 404, 503 ---------------------------------------------------------------


def test_forward_keeps_path_and_query() -> None:
    table = build(ingress("web", [rule(HOST, path("/", "web"))]), *services("web"))
    action = forward(table, HOST, "/a/b", "x=1&y=2")
    assert action.target == "/a/b?x=1&y=2"
    assert action.endpoint.host == "10.0.0.1"
    assert action.endpoint.port == 8080
    assert action.backend.name == "default/web:80"
    assert forward(table, HOST, "/a").target == "/a"


def test_round_robin_through_decide() -> None:
    table = build(
        ingress("web", [rule(HOST, path("/", "web"))]),
        service("web"),
        endpoint_slice("web", ["10.0.0.1", "10.0.0.2"]),
    )
    hosts = [forward(table, HOST, "/").endpoint.host for _ in range(4)]
    assert hosts == ["10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.2"]


def test_no_route_is_404() -> None:
    table = build(ingress("web", [rule(HOST, path("/app", "web"))]), *services("web"))
    r = respond(table, "Other.test:8080", "/x")
    assert r.status == 404
    assert r.body == "404 Not Found: no route for host other.test path /x\n"
    assert respond(table, HOST, "/apps").status == 404


def test_empty_table_is_404() -> None:
    r = respond(RouteTable(), "", "/")
    assert r.status == 404
    assert "(none)" in r.body


def test_missing_service_is_503_naming_it() -> None:
    # A broader route exists, but the missing Service must not fall through to it.
    table = build(
        ingress("web", [rule(HOST, path("/", "web"), path("/api", "api"))]), *services("web")
    )
    r = respond(table, HOST, "/api/x")
    assert r.status == 503
    assert r.body == "503 Service Unavailable: service default/api not found\n"


def test_local_answers_name_the_route_they_answer_for() -> None:
    # For metrics and the access log: the Ingress of a 503 or a redirect; none for a 404.
    table = build(
        ingress("web", [rule(HOST, path("/", "web"), path("/api", "api"))]),
        ingress(
            "tls", [rule("secure.test", path("/", "web"))], tls=[tls_entry(["secure.test"], "s")]
        ),
        *services("web"),
        tls_secret("s", ["secure.test"]),
    )
    missing = respond(table, HOST, "/api/x")
    assert missing.route is not None and missing.route.ingress == "default/web"
    redirect = respond(table, "secure.test", "/")
    assert redirect.status == 308
    assert redirect.route is not None and redirect.route.ingress == "default/tls"
    assert respond(table, "other.test", "/").route is None


def test_missing_service_port_is_503() -> None:
    table = build(ingress("web", [rule(HOST, path("/", "web", 81))]), *services("web"))
    r = respond(table, HOST, "/")
    assert r.status == 503
    assert "service default/web has no port 81" in r.body


@pytest.mark.parametrize(
    "slices",
    [
        [],
        [endpoint_slice("web", [("10.0.0.1", False), ("10.0.0.2", False)])],
        [endpoint_slice("web", [], 8080)],
    ],
)
def test_no_ready_endpoints_is_503(slices: list) -> None:
    table = build(ingress("web", [rule(HOST, path("/", "web"))]), service("web"), *slices)
    r = respond(table, HOST, "/")
    assert r.status == 503
    assert r.body == "503 Service Unavailable: no ready endpoints for default/web:80\n"


def test_external_name_is_forwarded_to_dns_name() -> None:
    table = build(
        ingress("web", [rule(HOST, path("/", "ext", 443))]),
        service("ext", [443], external_name="api.example.net"),
    )
    action = forward(table, HOST, "/x")
    assert (action.endpoint.host, action.endpoint.port) == ("api.example.net", 443)


# -- defaultBackend -------------------------------------------------------------------


def default_table() -> RouteTable:
    return build(
        ingress("global", default_backend=backend("global"), created=1),
        ingress(
            "site",
            [rule(HOST, path("/app", "app"))],
            default_backend=backend("site-default"),
            created=2,
        ),
        ingress("plain", [rule("plain.test", path("/app", "app"))], created=3),
        *services("global", "site-default", "app"),
    )


def test_named_host_miss_is_404_not_another_ingress_default() -> None:
    # A path miss on a named host stays with that host, as in ingress-nginx: the
    # table-wide defaultBackend belongs to another Ingress and must not catch it.
    action = decide(default_table(), request("plain.test", "/other"))
    assert isinstance(action, Respond) and action.status == 404


@pytest.mark.parametrize(
    ("host", "p", "endpoint"),
    [
        (HOST, "/app/x", "10.0.0.3"),
        (HOST, "/other", "10.0.0.2"),  # the host's own defaultBackend
        ("plain.test", "/app", "10.0.0.3"),
        ("unknown.test", "/", "10.0.0.1"),  # table-wide defaultBackend
    ],
)
def test_default_backends(host: str, p: str, endpoint: str) -> None:
    table = default_table()
    assert table.problems == ()
    assert forward(table, host, p).endpoint.host == endpoint


def test_default_backend_with_no_ready_endpoints_is_503() -> None:
    table = build(ingress("global", default_backend=backend("global")), service("global"))
    assert respond(table, "any.test", "/").status == 503


# -- regex paths and rewrite-target ---------------------------------------------------

REWRITE = {NGINX + "rewrite-target": "/$2"}


def rewrite_table(**extra_ingresses: dict) -> RouteTable:
    return build(
        ingress(
            "rewrite",
            [rule(HOST, path("/something(/|$)(.*)", "web", path_type="ImplementationSpecific"))],
            annotations=REWRITE,
            created=1,
        ),
        *services("web"),
    )


@pytest.mark.parametrize(
    ("p", "query", "target"),
    [
        ("/something", "", "/"),
        ("/something/", "", "/"),
        ("/something/new", "", "/new"),
        ("/something/new/deeper", "", "/new/deeper"),
        ("/something/new", "a=1&b=2", "/new?a=1&b=2"),
        ("/something", "q", "/?q"),
        ("/SOMETHING/New", "", "/New"),
        ("/Something/x", "", "/x"),
        ("/somethingelse", "", None),  # (/|$) after the prefix does not match "e"
        ("/other", "", None),
    ],
)
def test_rewrite_target_with_capture_groups(p: str, query: str, target: str | None) -> None:
    assert upstream(rewrite_table(), p, query) == target


def test_rewrite_is_applied_to_normalised_path() -> None:
    assert upstream(rewrite_table(), "/x/../something/./new") == "/new"


@pytest.mark.parametrize("prefix", [NGINX, OURS])
def test_rewrite_annotation_prefixes(prefix: str) -> None:
    table = build(
        ingress(
            "rw",
            [rule(HOST, path("/api/(.*)", "web", path_type="ImplementationSpecific"))],
            annotations={prefix + "rewrite-target": "/v2/$1"},
        ),
        *services("web"),
    )
    assert table.problems == ()
    assert upstream(table, "/api/users") == "/v2/users"


def test_ingressd_prefix_wins_over_nginx_prefix() -> None:
    table = build(
        ingress(
            "rw",
            [rule(HOST, path("/api/(.*)", "web", path_type="ImplementationSpecific"))],
            annotations={
                NGINX + "rewrite-target": "/nginx/$1",
                OURS + "rewrite-target": "/ours/$1",
            },
        ),
        *services("web"),
    )
    assert upstream(table, "/api/users") == "/ours/users"


def test_rewrite_target_with_query_appends_client_query() -> None:
    table = build(
        ingress(
            "rw",
            [rule(HOST, path("/(.*)", "web", path_type="ImplementationSpecific"))],
            annotations={NGINX + "rewrite-target": "/index.php?page=$1"},
        ),
        *services("web"),
    )
    assert upstream(table, "/about", "lang=en") == "/index.php?page=about&lang=en"
    assert upstream(table, "/about") == "/index.php?page=about"


def test_use_regex_without_rewrite_keeps_path() -> None:
    table = build(
        ingress(
            "rx",
            [rule(HOST, path("/v[0-9]+/", "web", path_type="ImplementationSpecific"))],
            annotations={NGINX + "use-regex": "true"},
        ),
        *services("web"),
    )
    assert upstream(table, "/v12/items", "a=b") == "/v12/items?a=b"
    assert upstream(table, "/vx/items") is None


def regex_host_table(regex_annotations: dict[str, str]) -> RouteTable:
    """A regex Ingress and a plain one on HOST, plus the plain one alone elsewhere."""
    return build(
        ingress(
            "rx",
            [rule(HOST, path("/re/[0-9]+", "rx", path_type="ImplementationSpecific"))],
            annotations=regex_annotations,
            created=1,
        ),
        ingress(
            "plain",
            [
                rule(
                    h,
                    path("/aaa/bb", "plain"),
                    path("/x.y", "plain"),
                    path("/exact", "plain", path_type="Exact"),
                )
                for h in (HOST, "other.test")
            ],
            created=2,
        ),
        *services("rx", "plain"),
    )


@pytest.mark.parametrize(
    "annotations",
    [{NGINX + "use-regex": "true"}, {NGINX + "rewrite-target": "/"}, {OURS + "use-regex": "true"}],
)
@pytest.mark.parametrize(
    ("host", "p", "served"),
    [
        # On the regex host, Prefix paths of every Ingress are case-insensitive regexes.
        (HOST, "/aaa/bb", "plain"),
        (HOST, "/aaa/bbb", "plain"),
        (HOST, "/AAA/BB/c", "plain"),
        (HOST, "/xzy", "plain"),
        (HOST, "/re/12", "rx"),
        # Exact paths are regexes too (template.go buildLocation: ~* "^/exact").
        (HOST, "/exact", "plain"),
        (HOST, "/exact/more", "plain"),
        (HOST, "/EXACTLY", "plain"),
        # Other hosts keep Prefix semantics.
        ("other.test", "/aaa/bb/c", "plain"),
        ("other.test", "/aaa/bbb", None),
        ("other.test", "/xzy", None),
        ("other.test", "/AAA/bb", None),
    ],
)
def test_regex_mode_spreads_to_host(
    annotations: dict[str, str], host: str, p: str, served: str | None
) -> None:
    table = regex_host_table(annotations)
    assert table.problems == ()
    assert table.find_host(HOST).regex_mode  # type: ignore[union-attr]
    assert not table.find_host("other.test").regex_mode  # type: ignore[union-attr]
    route = table.route_for(host, p)
    assert (route.ingress.split("/")[1] if route else None) == served


def test_regex_routes_tried_longest_path_first() -> None:
    rx = {NGINX + "use-regex": "true"}
    table = build(
        ingress(
            "short",
            [rule(HOST, path("/api", "short", path_type="ImplementationSpecific"))],
            annotations=rx,
            created=1,
        ),
        ingress(
            "long",
            [rule(HOST, path("/api/v[0-9]+/", "long", path_type="ImplementationSpecific"))],
            annotations=rx,
            created=2,
        ),
        ingress("mid", [rule(HOST, path("/api/v1", "mid"))], created=3),
        *services("short", "long", "mid"),
    )
    assert [r.path for r in table.find_host(HOST).regex] == [  # type: ignore[union-attr]
        "/api/v[0-9]+/",
        "/api/v1",
        "/api",
    ]
    assert table.route_for(HOST, "/api/v1/users").ingress == "default/long"  # type: ignore[union-attr]
    assert table.route_for(HOST, "/api/v1").ingress == "default/mid"  # type: ignore[union-attr]
    assert table.route_for(HOST, "/api/x").ingress == "default/short"  # type: ignore[union-attr]


def test_invalid_regex_skips_only_that_path() -> None:
    table = build(
        ingress(
            "bad",
            [rule(HOST, path("/ok", "web"), path("/broken(", "web"))],
            annotations={NGINX + "use-regex": "true"},
            created=1,
        ),
        ingress("good", [rule(HOST, path("/aaa/bb", "web"))], created=2),
        *services("web"),
    )
    problems = reasons(table, "Ingress default/bad")
    assert len(problems) == 1
    assert problems[0].startswith(
        "rules[0].http.paths[1].path '/broken(' is not a regular expression RE2 can run"
    )
    assert problems[0].endswith("path skipped")
    assert reasons(table, "Ingress default/good") == []
    # The Ingress's other path serves, and makes the host a regex host.
    route = table.route_for(HOST, "/ok")
    assert route is not None and route.ingress == "default/bad"
    vhost = table.find_host(HOST)
    assert vhost is not None
    assert vhost.regex_mode
    assert upstream(table, "/aaa/bb/x") == "/aaa/bb/x"
    assert upstream(table, "/aaa/bbb") == "/aaa/bbb"


def test_ingress_with_only_invalid_regexes_leaves_the_host_alone() -> None:
    # (Were it the oldest Ingress with a rule for the host, its use-regex would still
    # make the host a regex host: ingress-nginx's own "/" location carries its
    # annotations.)
    table = build(
        ingress("good", [rule(HOST, path("/aaa/bb", "web"))], created=1),
        ingress(
            "bad",
            [rule(HOST, path("/broken(", "web"))],
            annotations={NGINX + "use-regex": "true"},
            created=2,
        ),
        *services("web"),
    )
    skipped, nothing_left = reasons(table, "Ingress default/bad")
    assert "is not a regular expression RE2 can run" in skipped
    assert nothing_left == "has no usable rules and no defaultBackend"
    vhost = table.find_host(HOST)
    assert vhost is not None
    assert not vhost.regex_mode
    assert upstream(table, "/aaa/bb/x") == "/aaa/bb/x"
    assert upstream(table, "/aaa/bbb") is None


def test_plain_path_invalid_as_regex_on_regex_host_is_skipped() -> None:
    table = build(
        ingress(
            "rx",
            [rule(HOST, path("/re", "web", path_type="ImplementationSpecific"))],
            annotations={NGINX + "use-regex": "true"},
            created=1,
        ),
        ingress("plain", [rule(HOST, path("/c[", "web"), path("/fine", "web"))], created=2),
        *services("web"),
    )
    problems = reasons(table, "Ingress default/plain")
    assert len(problems) == 1
    assert problems[0].startswith("path '/c[' on host example.com is matched as a regular")
    assert upstream(table, "/fine") == "/fine"
    assert upstream(table, "/re") == "/re"


@pytest.mark.parametrize(
    ("p", "target"),
    [
        ("/old", "/new"),
        ("/old/x", "/new/x"),
        ("/old/x/y", "/new/x/y"),
        ("/oldx", None),
        ("/OLD/x", None),
    ],
)
def test_use_regex_false_rewrite_replaces_prefix(p: str, target: str | None) -> None:
    table = build(
        ingress(
            "rw",
            [rule(HOST, path("/old", "web"))],
            annotations={NGINX + "rewrite-target": "/new", NGINX + "use-regex": "false"},
        ),
        *services("web"),
    )
    assert table.problems == ()
    assert not table.find_host(HOST).regex_mode  # type: ignore[union-attr]
    assert upstream(table, p) == target


@pytest.mark.parametrize(
    ("p", "target"),
    [("/old", "/new"), ("/old/x", "/new/x"), ("/OLD/x/y", "/new/x/y"), ("/re/1", "/re/1")],
)
def test_use_regex_false_rewrite_on_host_in_regex_mode(p: str, target: str) -> None:
    # Another Ingress makes the host's paths regexes (ingress-nginx's matching),
    # but the opted-out Ingress keeps its prefix-replacing rewrite.
    table = build(
        ingress(
            "rx",
            [rule(HOST, path("/re/[0-9]+", "web", path_type="ImplementationSpecific"))],
            annotations={NGINX + "use-regex": "true"},
            created=1,
        ),
        ingress(
            "rw",
            [rule(HOST, path("/old", "web"))],
            annotations={NGINX + "rewrite-target": "/new", NGINX + "use-regex": "false"},
            created=2,
        ),
        *services("web"),
    )
    assert table.problems == ()
    assert table.find_host(HOST).regex_mode  # type: ignore[union-attr]
    assert upstream(table, p) == target


@pytest.mark.parametrize(
    ("route_path", "path_type", "rewrite_target", "p", "target"),
    [
        ("/", "Prefix", "/app", "/x/y", "/app/x/y"),
        ("/", "Prefix", "/app/", "/", "/app/"),
        ("/old/", "Prefix", "/", "/old/x", "/x"),
        ("/old", "Prefix", "/", "/old", "/"),
        ("/health", "Exact", "/status", "/health", "/status"),
    ],
)
def test_non_regex_rewrite_variants(
    route_path: str, path_type: str, rewrite_target: str, p: str, target: str
) -> None:
    table = build(
        ingress(
            "rw",
            [rule(HOST, path(route_path, "web", path_type=path_type))],
            annotations={OURS + "rewrite-target": rewrite_target, OURS + "use-regex": "false"},
        ),
        *services("web"),
    )
    assert upstream(table, p) == target


# -- SSL redirect -----------------------------------------------------------------------


def tls_table(annotations: dict[str, str] | None = None, tls_hosts: tuple = (HOST,)) -> RouteTable:
    return build(
        ingress(
            "web",
            [rule(HOST, path("/", "web")), rule("plain.test", path("/", "web"))],
            tls=[tls_entry(list(tls_hosts), "cert")] if tls_hosts else None,
            annotations=annotations,
        ),
        tls_secret("cert", [HOST]),
        *services("web"),
    )


@pytest.mark.parametrize(
    ("header", "p", "query", "port", "location"),
    [
        # lua_ingress.lua drops one trailing "/" of the request URI: "/" leaves nothing.
        (HOST, "/", "", 443, f"https://{HOST}"),
        (HOST, "/a/b", "x=1&y", 443, f"https://{HOST}/a/b?x=1&y"),
        (HOST + ":8080", "/a", "", 443, f"https://{HOST}/a"),
        ("Example.COM", "/a", "", 8443, f"https://{HOST}:8443/a"),
        (HOST, "/a/b", "q=1", 8443, f"https://{HOST}:8443/a/b?q=1"),
    ],
)
def test_http_to_tls_host_redirects(
    header: str, p: str, query: str, port: int, location: str
) -> None:
    table = tls_table()
    assert table.problems == ()
    action = decide(table, request(header, p, query), https_port=port)
    assert action == Respond(308, "308 Permanent Redirect\n", location=location)


# lua_ingress.lua: the redirect takes $request_uri (query included) and drops its last
# character when that is "/", unless preserve-trailing-slash; the same for ssl-redirect
# and force-ssl-redirect.
TRAILING_SLASH = [
    # (path, query, Location path and query without / with preserve-trailing-slash)
    ("/", "", "", "/"),
    ("/a/", "", "/a", "/a/"),
    ("/a/b/", "", "/a/b", "/a/b/"),
    ("/a//", "", "/a/", "/a//"),
    ("/a", "", "/a", "/a"),
    ("/a/", "x=1", "/a/?x=1", "/a/?x=1"),
    ("/a", "next=/b/", "/a?next=/b", "/a?next=/b/"),
]


@pytest.mark.parametrize(
    "annotations",
    [{}, {NGINX + "force-ssl-redirect": "true"}],
    ids=["ssl-redirect", "force-ssl-redirect"],
)
@pytest.mark.parametrize(("p", "query", "dropped", "kept"), TRAILING_SLASH)
def test_https_redirect_and_trailing_slash(
    annotations: dict[str, str], p: str, query: str, dropped: str, kept: str
) -> None:
    tls_hosts = (HOST,) if not annotations else ()  # force-ssl-redirect needs no spec.tls
    for preserve, expected in ((None, dropped), ("false", dropped), ("true", kept)):
        extra = {} if preserve is None else {NGINX + "preserve-trailing-slash": preserve}
        table = tls_table({**annotations, **extra}, tls_hosts=tls_hosts)
        assert table.problems == ()
        action = decide(table, request(HOST, p, query), https_port=443)
        assert isinstance(action, Respond), action
        assert (action.status, action.location) == (308, f"https://{HOST}{expected}"), preserve


def test_preserve_trailing_slash_is_a_supported_annotation() -> None:
    from ingressd.policy.annotations import classify, parse_policy

    [verdict] = classify({NGINX + "preserve-trailing-slash": "true"})
    assert verdict.status == "supported"
    assert parse_policy({NGINX + "preserve-trailing-slash": "true"})[0].preserve_trailing_slash
    policy, messages = parse_policy({NGINX + "preserve-trailing-slash": "keep"})
    assert policy.preserve_trailing_slash is False
    assert messages == [
        f"annotation {NGINX}preserve-trailing-slash='keep' is invalid: "
        'expected "true" or "false", got \'keep\''
    ]


def test_https_request_is_not_redirected() -> None:
    action = forward(tls_table(), HOST, "/a", "q=1", tls=True)
    assert action.target == "/a?q=1"


def test_every_rule_host_of_an_ingress_with_tls_is_redirected() -> None:
    # As ingress-nginx (controller.go createServers): plain.test, a rule host of
    # the same Ingress, gets the default certificate and so the redirect.
    assert respond(tls_table(), "plain.test", "/a").status == 308


def test_host_of_an_ingress_without_tls_is_not_redirected() -> None:
    table = build(
        ingress("secure", [rule(HOST, path("/", "web"))], tls=[tls_entry([HOST], "cert")]),
        ingress("open", [rule("plain.test", path("/", "web"))]),
        tls_secret("cert", [HOST]),
        *services("web"),
    )
    assert forward(table, "plain.test", "/a").target == "/a"


@pytest.mark.parametrize("prefix", [NGINX, OURS])
def test_ssl_redirect_false_disables_redirect(prefix: str) -> None:
    table = tls_table({prefix + "ssl-redirect": "false"})
    assert table.problems == ()
    assert forward(table, HOST, "/a").target == "/a"


@pytest.mark.parametrize(
    ("annotations", "host", "tls_hosts", "redirected"),
    [
        ({NGINX + "force-ssl-redirect": "true"}, "plain.test", (), True),
        ({NGINX + "force-ssl-redirect": "true"}, HOST, (), True),
        ({NGINX + "force-ssl-redirect": "false"}, "plain.test", (), False),
        (
            {NGINX + "force-ssl-redirect": "true", NGINX + "ssl-redirect": "false"},
            "plain.test",
            (),
            True,
        ),
        ({}, "plain.test", (HOST,), True),  # a rule host of an Ingress with TLS
        ({}, HOST, (), False),
    ],
)
def test_force_ssl_redirect(
    annotations: dict[str, str], host: str, tls_hosts: tuple, redirected: bool
) -> None:
    table = tls_table(annotations, tls_hosts)
    action = decide(table, request(host, "/p", "q=1"))
    if redirected:
        assert action == Respond(308, "308 Permanent Redirect\n", location=f"https://{host}/p?q=1")
        assert isinstance(decide(table, request(host, "/p", tls=True)), Forward)
    else:
        assert isinstance(action, Forward)


def test_redirect_only_applies_to_routes_of_ingress_that_wants_it() -> None:
    table = build(
        ingress("secure", [rule(HOST, path("/", "web"))], tls=[tls_entry([HOST], "cert")]),
        ingress(
            "open",
            [rule(HOST, path("/.well-known", "web"))],
            annotations={NGINX + "ssl-redirect": "false"},
        ),
        tls_secret("cert", [HOST]),
        *services("web"),
    )
    assert respond(table, HOST, "/x").status == 308
    assert forward(table, HOST, "/.well-known/acme").target == "/.well-known/acme"


def test_redirect_for_wildcard_tls_host() -> None:
    table = build(
        ingress(
            "web",
            [rule("*.example.com", path("/", "web"))],
            tls=[tls_entry(["*.example.com"], "cert")],
        ),
        tls_secret("cert", ["*.example.com"]),
        *services("web"),
    )
    assert table.problems == ()
    assert respond(table, "a.example.com", "/x").location == "https://a.example.com/x"


def test_redirect_when_tls_secret_missing_uses_default_certificate() -> None:
    table = build(
        ingress("web", [rule(HOST, path("/", "web"))], tls=[tls_entry([HOST], "missing")]),
        *services("web"),
    )
    assert len(table.problems) == 1
    assert respond(table, HOST, "/").status == 308


# -- X-Forwarded-Prefix -------------------------------------------------------------------------


XFP = NGINX + "x-forwarded-prefix"
TARGET = NGINX + "rewrite-target"


@pytest.mark.parametrize(
    ("annotations", "route_path", "p", "header"),
    [
        # template.go buildProxyPass writes it beside the rewrite, and only there.
        ({XFP: "/shop"}, "/app", "/app/x", None),
        ({XFP: "/shop", TARGET: "/$1"}, "/app/(.*)", "/app/x", b"/shop"),
        (
            {XFP: "/shop", TARGET: "/v1/$1", NGINX + "use-regex": "true"},
            "/app/(.*)",
            "/app/x",
            b"/shop",
        ),
        # A target equal to the path rewrites nothing: no header either.
        ({XFP: "/shop", TARGET: "/app/(.*)"}, "/app/(.*)", "/app/x", None),
        # ingressd's prefix replacement (use-regex "false") is a rewrite too.
        ({XFP: "/shop", TARGET: "/v1", NGINX + "use-regex": "false"}, "/app", "/app/x", b"/shop"),
        ({TARGET: "/$1"}, "/app/(.*)", "/app/x", None),
    ],
)
def test_x_forwarded_prefix_only_with_a_rewrite(
    annotations: dict[str, str], route_path: str, p: str, header: bytes | None
) -> None:
    table = build(
        ingress(
            "xfp",
            [rule(HOST, path(route_path, "web", path_type="ImplementationSpecific"))],
            annotations=annotations,
        ),
        *services("web"),
    )
    assert table.problems == ()
    action = forward(table, HOST, p)
    sent = dict(action.request_headers).get(b"X-Forwarded-Prefix")
    assert sent == header


def test_rewrite_target_equal_to_the_path_rewrites_nothing() -> None:
    # buildProxyPass: "if the path in the ingress rule is equals to the target: no special
    # rewrite".
    table = build(
        ingress(
            "same",
            [rule(HOST, path("/app", "web"))],
            annotations={NGINX + "rewrite-target": "/app"},
        ),
        *services("web"),
    )
    assert forward(table, HOST, "/app/deep/x").target == "/app/deep/x"
    # The host is a regex host all the same: ingress-nginx's own "/" location carries
    # the Ingress's annotations, and "/" differs from the target.
    vhost = table.find_host(HOST)
    assert vhost is not None and vhost.regex_mode
