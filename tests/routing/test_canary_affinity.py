"""Canary Ingresses and cookie affinity: parsing, building, deciding (no sockets)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from k8s_objects import build, endpoint_slice, ingress, path, rule, service

from ingressd.model.backend import Backend, Endpoint, affinity_value
from ingressd.model.policy import Affinity, Canary
from ingressd.model.table import Route, RouteTable
from ingressd.policy.annotations import classify, parse_policy
from ingressd.routing.decide import (
    Forward,
    RequestHead,
    Respond,
    decide,
    find_cookie,
    session_cookie,
)

NGINX = "nginx.ingress.kubernetes.io/"
OURS = "ingressd.io/"
HOST = "shop.test"


def annotations(prefix: str = NGINX, **values: str) -> dict[str, str]:
    return {prefix + k.replace("_", "-"): v for k, v in values.items()}


def policy(**values: str):  # type: ignore[no-untyped-def]
    return parse_policy(annotations(**values))


def head(
    path: str = "/",
    *headers: tuple[str, str],
    host: str = HOST,
    tls: bool = False,
    method: str = "GET",
) -> RequestHead:
    return RequestHead(
        method=method,
        host=host,
        path=path,
        query="",
        client_ip="192.0.2.1",
        tls=tls,
        headers=[(n.encode(), v.encode()) for n, v in headers],
    )


def forward(table: RouteTable, req: RequestHead) -> Forward:
    action = decide(table, req)
    assert isinstance(action, Forward), action
    return action


def services() -> list:
    """main (one endpoint 10.0.0.1), canary (10.0.1.1), sticky (10.0.2.1 and 10.0.2.2)."""
    return [
        service("main"),
        endpoint_slice("main", ["10.0.0.1"]),
        service("canary"),
        endpoint_slice("canary", ["10.0.1.1"]),
        service("sticky"),
        endpoint_slice("sticky", ["10.0.2.1", "10.0.2.2"]),
    ]


def main_ingress(name: str = "main", p: str = "/", path_type: str = "Prefix", **ann: str):  # type: ignore[no-untyped-def]
    return ingress(
        name,
        [rule(HOST, path(p, "main", path_type=path_type))],
        annotations=annotations(**ann) if ann else None,
        created=1,
    )


def canary_ingress(
    name: str = "main-canary",
    p: str = "/",
    path_type: str = "Prefix",
    *,
    host: str = HOST,
    svc: str = "canary",
    created: int = 2,
    prefix: str = NGINX,
    **ann: str,
):  # type: ignore[no-untyped-def]
    return ingress(
        name,
        [rule(host, path(p, svc, path_type=path_type))],
        annotations=annotations(prefix, canary="true", **ann),
        created=created,
    )


def served(table: RouteTable, req: RequestHead) -> str:
    return forward(table, req).backend.name.split("/")[1].split(":")[0]


def problems(table: RouteTable, name: str) -> list[str]:
    return [p.reason for p in table.problems if p.obj == f"Ingress default/{name}"]


# -- parsing -------------------------------------------------------------------------------


def test_canary_annotations_parse_into_rules() -> None:
    p, messages = policy(
        canary="true",
        canary_by_header="X-Canary",
        canary_by_header_value="yes-please",
        canary_by_header_pattern="^v[0-9]+$",
        canary_by_cookie="canary_cookie",
        canary_weight="30",
        canary_weight_total="1000",
    )
    assert messages == []
    c = p.canary
    assert c is not None
    assert (c.header, c.header_value, c.cookie, c.weight, c.total) == (
        b"x-canary",
        b"yes-please",
        "canary_cookie",
        30,
        1000,
    )
    assert c.header_pattern is not None and c.header_pattern.search("v12")
    assert policy(canary="true")[0].canary == Canary()  # weight 0 of 100
    assert policy(canary="false")[0].canary is None


def test_the_ingressd_prefix_reads_canary_annotations_too() -> None:
    p, messages = parse_policy(annotations(OURS, canary="true", canary_weight="5"))
    assert messages == [] and p.canary == Canary(weight=5)


@pytest.mark.parametrize(
    ("values", "bad", "why"),
    [
        ({"canary_weight": "30"}, "canary-weight", 'without canary: "true"'),
        ({"canary": "false", "canary_by_header": "X-C"}, "canary-by-header", "without canary"),
        ({"canary": "yes", "canary_by_cookie": "c"}, "canary-by-cookie", "without canary"),
        ({"canary": "true", "canary_weight": "101"}, "canary-weight", "more than"),
        (
            {"canary": "true", "canary_weight": "20", "canary_weight_total": "10"},
            "canary-weight",
            "more than canary-weight-total (10)",
        ),
        ({"canary": "true", "canary_weight": "-1"}, "canary-weight", "whole number"),
        ({"canary": "true", "canary_weight_total": "0"}, "canary-weight-total", "at least 1"),
        ({"canary": "true", "canary_by_header": "X Bad"}, "canary-by-header", "header name"),
        (
            {"canary": "true", "canary_by_header_pattern": "(["},
            "canary-by-header-pattern",
            "regular",
        ),
        (
            {"canary": "true", "canary_by_header_value": "a\r\nb"},
            "canary-by-header-value",
            "control",
        ),
        ({"canary": "true", "canary_by_cookie": "a;b"}, "canary-by-cookie", "cookie name"),
    ],
)
def test_invalid_canary_annotations_are_reported_and_ignored(
    values: dict[str, str], bad: str, why: str
) -> None:
    raw = annotations(**values)
    p, messages = parse_policy(raw)
    assert len(messages) == 1 + (values.get("canary") == "yes"), messages
    assert f"{NGINX}{bad}=" in messages[-1] and why in messages[-1]
    verdicts = {v.key: v.status for v in classify(raw)}
    assert verdicts[NGINX + bad] == "invalid"
    # Ignored: the rest of the canary still applies, with the default for this one.
    if p.canary is not None:
        assert p.canary.weight == 0 and p.canary.header_pattern is None
        total = values.get("canary_weight_total", "100")
        assert p.canary.total == (100 if bad == "canary-weight-total" else int(total))
        assert p.canary.header is None


def test_affinity_annotations_parse() -> None:
    p, messages = policy(
        affinity="cookie",
        affinity_mode="persistent",
        session_cookie_name="route",
        session_cookie_path="/shop",
        session_cookie_max_age="3600",
        session_cookie_expires="7200",
        session_cookie_samesite="strict",
        session_cookie_secure="true",
        session_cookie_domain=".shop.test",
        session_cookie_change_on_failure="true",
    )
    assert messages == []
    assert p.affinity == Affinity(
        cookie="route",
        mode="persistent",
        path="/shop",
        max_age=3600,
        expires=7200,
        samesite="Strict",
        secure=True,
        domain=".shop.test",
        change_on_failure=True,
    )
    assert policy(affinity="cookie")[0].affinity == Affinity()
    assert policy(session_cookie_name="x")[0].affinity is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("affinity", "ip"),
        ("affinity-mode", "sticky"),
        ("session-cookie-name", "bad name"),
        ("session-cookie-path", "shop"),
        ("session-cookie-path", "/a;Domain=evil"),
        ("session-cookie-max-age", "1h"),
        ("session-cookie-expires", "-5"),
        ("session-cookie-samesite", "Sometimes"),
        ("session-cookie-secure", "yes"),
        ("session-cookie-domain", "evil.test; Secure"),
        ("session-cookie-change-on-failure", "maybe"),
    ],
)
def test_invalid_affinity_values_are_reported(name: str, value: str) -> None:
    p, messages = parse_policy({NGINX + "affinity": "cookie", NGINX + name: value})
    assert len(messages) == 1 and f"{NGINX}{name}={value!r} is invalid" in messages[0]
    if name == "affinity":
        assert p.affinity is None
    else:
        assert p.affinity == Affinity()  # the default for what was rejected


# -- building -------------------------------------------------------------------------------


def test_a_canary_attaches_to_the_main_route_with_the_same_host_path_and_type() -> None:
    table = build(
        *services(),
        ingress(
            "main",
            [
                rule(
                    HOST,
                    path("/", "main"),
                    path("/api", "main"),
                    path("/exact", "main", path_type="Exact"),
                )
            ],
            created=1,
        ),
        canary_ingress(p="/api", canary_weight="100"),
        canary_ingress("exact-canary", "/exact", "Exact", canary_weight="100"),
    )
    assert table.problems == ()
    vhost = table.exact_hosts[HOST]
    api = vhost.prefix["/api"]
    assert api.canary is not None and api.canary.ingress == "default/main-canary"
    assert api.canary.backend is not None and api.canary.backend.name == "default/canary:80"
    assert api.canary.weight == 100 and api.ingress == "default/main"
    assert vhost.prefix[""].canary is None  # "/" is another route
    assert vhost.exact["/exact"].canary is not None
    # No routes of its own: hosts and routes are the main Ingress's only.
    assert set(table.exact_hosts) == {HOST}
    assert len(vhost.prefix) == 2 and len(vhost.exact) == 1
    assert served(table, head("/api/x")) == "canary"
    assert served(table, head("/other")) == "main"
    assert served(table, head("/exact")) == "canary"


@pytest.mark.parametrize(
    ("canary", "where"),
    [
        (canary_ingress(p="/nothing"), "host shop.test path /nothing (Prefix)"),
        (canary_ingress(host="other.test"), "host other.test path / (Prefix)"),
        (canary_ingress(p="/", path_type="Exact"), "host shop.test path / (Exact)"),
    ],
    ids=["no-such-path", "no-such-host", "exact-vs-prefix"],
)
def test_a_canary_without_a_main_route_is_reported_and_ignored(canary, where: str) -> None:  # type: ignore[no-untyped-def]
    table = build(*services(), main_ingress(), canary)
    assert problems(table, "main-canary") == [f"no main Ingress serves {where}; canary ignored"]
    assert table.exact_hosts[HOST].prefix[""].canary is None
    assert "other.test" not in table.exact_hosts  # the canary makes no host


def test_implementation_specific_canary_attaches_to_prefix_main() -> None:
    # ingress-nginx serves ImplementationSpecific as Prefix, and merges a canary
    # into the main location of the same path and (so converted) pathType.
    table = build(*services(), main_ingress(), canary_ingress(path_type="ImplementationSpecific"))
    assert problems(table, "main-canary") == []
    canary = table.exact_hosts[HOST].prefix[""].canary
    assert canary is not None and canary.ingress == "default/main-canary"


def test_one_canary_per_route_the_oldest() -> None:
    table = build(
        *services(),
        main_ingress(),
        canary_ingress("newer", created=5, canary_weight="100"),
        canary_ingress("older", created=3, svc="sticky", canary_weight="100"),
    )
    assert problems(table, "newer") == [
        "host shop.test path / (Prefix) already has a canary from older Ingress "
        "default/older; this canary is ignored"
    ]
    assert problems(table, "older") == []
    assert table.exact_hosts[HOST].prefix[""].canary.ingress == "default/older"  # type: ignore[union-attr]


def test_canary_annotations_without_canary_true_leave_an_ordinary_ingress() -> None:
    other = ingress(
        "other",
        [rule("other.test", path("/", "canary"))],
        annotations=annotations(canary_weight="50", canary_by_header="X-Canary"),
    )
    table = build(*services(), other)
    reasons = problems(table, "other")
    assert len(reasons) == 2 and all('without canary: "true"' in r for r in reasons)
    route = table.route_for("other.test", "/")
    assert route is not None and route.canary is None and route.backend.name == "default/canary:80"


def test_the_canary_ingress_annotations_and_tls_do_not_apply() -> None:
    canary = canary_ingress(
        canary_weight="100",
        rewrite_target="/elsewhere",
        permanent_redirect="https://canary.example/",
        enable_cors="true",
        affinity="cookie",
    )
    canary["spec"]["tls"] = [{"hosts": [HOST]}]
    canary["spec"]["defaultBackend"] = {"service": {"name": "canary", "port": {"number": 80}}}
    table = build(
        *services(),
        main_ingress(x_forwarded_prefix="/shop", rewrite_target="/v1/$1"),
        canary,
    )
    # The default backend is the only thing reported; other annotations are silently unused.
    assert problems(table, "main-canary") == [
        "defaultBackend of a canary Ingress is not supported; ignored"
    ]
    assert table.exact_hosts[HOST].tls is False and table.default is None
    fwd = forward(table, head("/"))
    assert fwd.backend.name == "default/canary:80"
    # The main route's policy (regex rewrite, x-forwarded-prefix) still applies.
    assert fwd.route.policy.x_forwarded_prefix == b"/shop"
    assert fwd.request_headers == ((b"X-Forwarded-Prefix", b"/shop"),)
    assert fwd.response_headers == ()  # no CORS, no affinity cookie from the canary
    assert fwd.target == "/v1/"


def test_canary_on_a_regex_host() -> None:
    table = build(
        *services(),
        main_ingress(p="/api/(.*)", path_type="ImplementationSpecific", use_regex="true"),
        canary_ingress(p="/api/(.*)", path_type="ImplementationSpecific", canary_weight="100"),
    )
    assert table.problems == ()
    assert served(table, head("/api/users")) == "canary"


# -- deciding: header, then cookie, then weight ----------------------------------------------

CANARY_RULES = {
    "canary_by_header": "X-Canary",
    "canary_by_cookie": "canary",
}


def canary_table(**ann: str) -> RouteTable:
    return build(*services(), main_ingress(), canary_ingress(**ann))


@pytest.mark.parametrize(
    ("ann", "headers", "expected"),
    [
        # header alone: always / never / anything else falls through (weight 0 -> main)
        ({}, [("X-Canary", "always")], "canary"),
        ({}, [("x-canary", "always")], "canary"),  # header names ignore case
        ({}, [("X-Canary", "never")], "main"),
        ({}, [("X-Canary", "Always")], "main"),  # values do not
        ({}, [("X-Canary", "maybe")], "main"),
        ({}, [], "main"),
        # header before cookie
        ({}, [("X-Canary", "never"), ("Cookie", "canary=always")], "main"),
        ({}, [("X-Canary", "always"), ("Cookie", "canary=never")], "canary"),
        # cookie: always / never / other falls through to the weight
        ({}, [("Cookie", "a=1; canary=always; b=2")], "canary"),
        ({}, [("Cookie", "a=1"), ("Cookie", "canary=always")], "canary"),
        ({"canary_weight": "100"}, [("Cookie", "canary=never")], "main"),
        ({"canary_weight": "100"}, [("Cookie", "canary=whatever")], "canary"),
        ({}, [("Cookie", "xcanary=always")], "main"),
        # header value: exact match -> canary; otherwise fall through (always is just a value)
        ({"canary_by_header_value": "v2"}, [("X-Canary", "v2")], "canary"),
        ({"canary_by_header_value": "v2"}, [("X-Canary", "V2")], "main"),
        ({"canary_by_header_value": "v2"}, [("X-Canary", "always")], "main"),
        (
            {"canary_by_header_value": "v2"},
            [("X-Canary", "v3"), ("Cookie", "canary=always")],
            "canary",
        ),
        (
            {"canary_by_header_value": "v2", "canary_weight": "100"},
            [("X-Canary", "v3")],
            "canary",
        ),
        # header pattern: an unanchored search; value wins over pattern when both are set
        ({"canary_by_header_pattern": "beta|gamma"}, [("X-Canary", "user-beta-7")], "canary"),
        ({"canary_by_header_pattern": "^beta"}, [("X-Canary", "user-beta")], "main"),
        ({"canary_by_header_pattern": "beta"}, [("X-Canary", "never")], "main"),
        (
            {"canary_by_header_value": "x", "canary_by_header_pattern": ".*"},
            [("X-Canary", "y")],
            "main",
        ),
    ],
)
def test_canary_precedence(
    ann: dict[str, str], headers: list[tuple[str, str]], expected: str
) -> None:
    table = canary_table(**CANARY_RULES, **ann)
    assert served(table, head("/", *headers)) == expected


def test_weight_zero_never_and_weight_total_always() -> None:
    never = canary_table(canary_weight="0")
    always = canary_table(canary_weight="7", canary_weight_total="7")
    assert {served(never, head("/x")) for _ in range(200)} == {"main"}
    assert {served(always, head("/x")) for _ in range(200)} == {"canary"}


def test_weight_draws_below_weight_go_to_the_canary(monkeypatch: pytest.MonkeyPatch) -> None:
    table = canary_table(canary_weight="30", canary_weight_total="1000")
    draws: list[int] = []

    def randrange(n: int) -> int:
        draws.append(n)
        return draws_plan[len(draws) - 1]

    draws_plan = [0, 29, 30, 999]
    monkeypatch.setattr(random, "randrange", randrange)
    got = [served(table, head("/")) for _ in draws_plan]
    assert got == ["canary", "canary", "main", "main"]
    assert draws == [1000] * 4


def test_weight_share_is_about_right() -> None:
    table = canary_table(canary_weight="25")
    random.seed(1234)
    share = sum(served(table, head("/")) == "canary" for _ in range(4000)) / 4000
    assert 0.22 < share < 0.28


# -- affinity ------------------------------------------------------------------------------

STICKY = ("10.0.2.1", "10.0.2.2")


def sticky_table(p: str = "/app", **ann: str) -> RouteTable:
    ing = ingress(
        "sticky",
        [rule(HOST, path(p, "sticky"))],
        annotations=annotations(affinity="cookie", **ann),
    )
    return build(*services(), ing)


def cookie_of(fwd: Forward) -> str | None:
    values = [v.decode() for n, v in fwd.response_headers if n == b"Set-Cookie"]
    assert len(values) <= 1
    return values[0] if values else None


def test_affinity_sets_a_cookie_and_sticks_to_its_endpoint() -> None:
    table = sticky_table()
    first = forward(table, head("/app/cart"))
    set_cookie = cookie_of(first)
    assert set_cookie is not None
    name_value, *attrs = set_cookie.split("; ")
    name, value = name_value.split("=")
    assert name == "INGRESSCOOKIE"
    assert value == affinity_value("default/sticky:80", first.endpoint)
    assert len(value) == 16 and "10.0.2" not in value  # opaque
    assert attrs == ["Path=/app", "HttpOnly"]
    for _ in range(20):
        again = forward(table, head("/app/x", ("Cookie", f"other=1; INGRESSCOOKIE={value}")))
        assert again.endpoint == first.endpoint
        assert cookie_of(again) is None  # nothing to change
    # Without the cookie, round robin reaches both endpoints.
    seen = {forward(table, head("/app")).endpoint.host for _ in range(4)}
    assert seen == set(STICKY)


@pytest.mark.parametrize("cookie", ["INGRESSCOOKIE=0123456789abcdef", "INGRESSCOOKIE=", "x=1"])
def test_an_unknown_cookie_gets_a_new_endpoint_and_cookie(cookie: str) -> None:
    table = sticky_table()
    fwd = forward(table, head("/app", ("Cookie", cookie)))
    assert fwd.endpoint.host in STICKY
    set_cookie = cookie_of(fwd)
    assert set_cookie is not None
    assert set_cookie.startswith(
        f"INGRESSCOOKIE={affinity_value('default/sticky:80', fwd.endpoint)}; Path=/app"
    )


def test_a_cookie_for_an_endpoint_that_left_picks_again() -> None:
    table = sticky_table()
    gone = affinity_value("default/sticky:80", Endpoint("10.0.2.9", 8080))
    fwd = forward(table, head("/app", ("Cookie", f"INGRESSCOOKIE={gone}")))
    assert cookie_of(fwd) is not None and fwd.endpoint.host in STICKY


def test_cookie_attributes() -> None:
    table = sticky_table(
        session_cookie_name="route",
        session_cookie_path="/",
        session_cookie_max_age="3600",
        session_cookie_domain="shop.test",
        session_cookie_samesite="lax",
        session_cookie_secure="true",
    )
    set_cookie = cookie_of(forward(table, head("/app")))
    assert set_cookie is not None
    assert set_cookie.split("; ")[1:] == [
        "Path=/",
        "Max-Age=3600",
        "Domain=shop.test",
        "SameSite=Lax",
        "Secure",
        "HttpOnly",
    ]


def test_expires_is_a_date_seconds_from_now() -> None:
    route = Route("/", "Prefix", Backend("default/x:80"), "default/x")
    value = session_cookie(Affinity(expires=86400), "abc", route, tls=False, now=0)
    assert value == b"INGRESSCOOKIE=abc; Path=/; Expires=Fri, 02 Jan 1970 00:00:00 GMT; HttpOnly"


@pytest.mark.parametrize(
    ("secure", "tls", "expected"),
    [(None, False, False), (None, True, True), ("true", False, True), ("false", True, False)],
)
def test_secure_follows_the_request_unless_set(
    secure: str | None, tls: bool, expected: bool
) -> None:
    table = sticky_table(
        **({"session_cookie_secure": secure} if secure else {}), ssl_redirect="false"
    )
    set_cookie = cookie_of(forward(table, head("/app", tls=tls)))
    assert set_cookie is not None and ("; Secure" in set_cookie) is expected


def test_regex_paths_default_the_cookie_path_to_root() -> None:
    table = sticky_table("/app(/|$)(.*)", rewrite_target="/$2")
    fwd = forward(table, head("/app/x"))
    assert fwd.target == "/x"
    set_cookie = cookie_of(fwd)
    assert set_cookie is not None and "; Path=/; " in set_cookie


def _sticky_with_canary(**canary: str) -> RouteTable:
    ing = ingress(
        "sticky",
        [rule(HOST, path("/", "sticky"))],
        annotations=annotations(affinity="cookie"),
        created=1,
    )
    return build(*services(), ing, canary_ingress(canary_by_header="X-Canary", **canary))


def _cookie_value(set_cookie: str | None) -> str:
    assert set_cookie is not None and set_cookie.startswith("INGRESSCOOKIE=")
    return set_cookie.split(";", 1)[0]


def test_a_sticky_canary_keeps_the_sessions_it_took() -> None:
    """affinity-canary-behavior "sticky" (the default; balancer.lua
    route_to_alternative_balancer): the canary's backend gets the main's affinity, so a
    session the canary took gets a cookie and stays on the canary without the header."""
    table = _sticky_with_canary()
    to_canary = forward(table, head("/", ("X-Canary", "always")))
    assert to_canary.backend.name == "default/canary:80"
    cookie = _cookie_value(cookie_of(to_canary))
    again = forward(table, head("/", ("Cookie", cookie)))
    assert again.backend.name == "default/canary:80" and cookie_of(again) is None
    # "never" does not move an affinitized session either: the cookie is checked first.
    still = forward(table, head("/", ("Cookie", cookie), ("X-Canary", "never")))
    assert still.backend.name == "default/canary:80"


def test_a_session_on_the_main_backend_stays_there_whatever_the_canary_rules() -> None:
    for behavior in ("sticky", "legacy"):
        table = _sticky_with_canary(affinity_canary_behavior=behavior)
        to_main = forward(table, head("/"))
        assert to_main.backend.name == "default/sticky:80"
        cookie = _cookie_value(cookie_of(to_main))
        kept = forward(table, head("/", ("Cookie", cookie), ("X-Canary", "always")))
        assert kept.backend.name == "default/sticky:80", behavior


def test_a_legacy_canary_is_not_sticky() -> None:
    table = _sticky_with_canary(affinity_canary_behavior="legacy")
    to_canary = forward(table, head("/", ("X-Canary", "always")))
    assert to_canary.backend.name == "default/canary:80" and cookie_of(to_canary) is None
    # Without the header the next request is the main's again (and gets its cookie).
    to_main = forward(table, head("/"))
    assert to_main.backend.name == "default/sticky:80" and cookie_of(to_main) is not None


def test_the_route_without_canary_or_affinity_never_reads_headers() -> None:
    class Untouchable(Sequence[tuple[bytes, bytes]]):
        def __getitem__(self, i):  # type: ignore[no-untyped-def]
            raise AssertionError("headers read")

        def __len__(self) -> int:
            raise AssertionError("headers read")

    table = build(*services(), main_ingress(x_forwarded_prefix="/p"))
    req = head("/")
    req.headers = Untouchable()
    assert forward(table, req).backend.name == "default/main:80"


def test_find_cookie() -> None:
    headers = [(b"Cookie", b"a=1;  b = 2 ;c=3"), (b"cookie", b"d=4")]
    assert [find_cookie(headers, n) for n in ("a", "c", "d", "e")] == ["1", "3", "4", None]
    assert isinstance(decide(build(), head("/")), Respond)
