"""upstream-hash-by, session-cookie-conditional-samesite-none and server-alias through
the builder and the decision (no sockets)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from k8s_objects import build, endpoint_slice, ingress, path, rule, service, tls_entry, tls_secret

from ingressd.model.backend import Endpoint
from ingressd.model.table import RouteTable
from ingressd.policy.ewma import EwmaStore
from ingressd.policy.health import EndpointHealth
from ingressd.routing.decide import Forward, RequestHead, decide, retarget

NGINX = "nginx.ingress.kubernetes.io/"
HOST = "shop.test"
ADDRESSES = [f"10.0.0.{i}" for i in range(1, 7)]


def head(
    path: str = "/", query: str = "", *headers: tuple[str, str], host: str = HOST
) -> RequestHead:
    return RequestHead(
        method="GET",
        host=host,
        path=path,
        query=query,
        client_ip="192.0.2.1",
        tls=False,
        headers=[(n.encode(), v.encode()) for n, v in headers],
    )


def table(addresses: list[str] = ADDRESSES, *extra: Any, **ann: str) -> RouteTable:
    return build(
        ingress(
            "shop",
            [rule(HOST, path("/", "shop"))],
            annotations={NGINX + k.replace("_", "-"): v for k, v in ann.items()},
        ),
        service("shop"),
        endpoint_slice("shop", addresses),
        *extra,
    )


def endpoint(t: RouteTable, req: RequestHead, **kw: Any) -> Endpoint:
    action = decide(t, req, **kw)
    assert isinstance(action, Forward), action
    return action.endpoint


URIS = [f"/item/{i}" for i in range(300)]


def test_a_uri_keeps_its_endpoint_and_uris_spread() -> None:
    t = table(upstream_hash_by="$request_uri")
    first = {u: endpoint(t, head(u)) for u in URIS}
    for _ in range(3):
        assert {u: endpoint(t, head(u)) for u in URIS} == first
    spread = Counter(first.values())
    assert set(spread) == {Endpoint(a, 8080) for a in ADDRESSES}
    assert min(spread.values()) >= 15, spread  # 50 each on average
    # The query is part of $request_uri, not of $uri.
    assert len({endpoint(t, head("/item/1", f"v={i}")) for i in range(60)}) > 1
    t = table(upstream_hash_by="$uri")
    assert len({endpoint(t, head("/item/1", f"v={i}")) for i in range(60)}) == 1


def test_a_rebuild_with_the_same_endpoints_keeps_every_key_and_one_more_moves_few() -> None:
    t = table(upstream_hash_by="$request_uri")
    before = {u: endpoint(t, head(u)) for u in URIS}
    same = table(list(reversed(ADDRESSES)), upstream_hash_by="$request_uri")
    assert {u: endpoint(same, head(u)) for u in URIS} == before
    grown = table([*ADDRESSES, "10.0.0.99"], upstream_hash_by="$request_uri")
    after = {u: endpoint(grown, head(u)) for u in URIS}
    moved = [u for u in URIS if after[u] != before[u]]
    assert all(after[u] == Endpoint("10.0.0.99", 8080) for u in moved)
    assert 0.05 <= len(moved) / len(URIS) <= 0.30, len(moved)  # about 1/7


def test_header_and_cookie_keys() -> None:
    t = table(upstream_hash_by="$http_x_user")
    users = {f"u{i}": endpoint(t, head("/", "", ("X-User", f"u{i}"))) for i in range(60)}
    for user, ep in users.items():
        assert endpoint(t, head(f"/other/{user}", "", ("x-user", user))) == ep
    assert len(set(users.values())) > 2
    t = table(upstream_hash_by="$cookie_session")
    sessions = {s: endpoint(t, head("/", "", ("Cookie", f"a=1; session={s}"))) for s in "abcdefgh"}
    for s, ep in sessions.items():
        assert endpoint(t, head("/x", "", ("Cookie", f"session={s}; b=2"))) == ep
    assert len(set(sessions.values())) > 1


def test_subset_keeps_a_key_within_its_subset() -> None:
    t = table(
        upstream_hash_by="$arg_id", upstream_hash_by_subset="true", upstream_hash_by_subset_size="2"
    )
    subsets = [set(ADDRESSES[i : i + 2]) for i in (0, 2, 4)]
    for key in range(20):
        seen = {endpoint(t, head("/", f"id={key}")).host for _ in range(40)}
        assert seen in subsets, seen  # both members of one subset, at random


def test_affinity_wins_over_hashing_and_hashing_over_ewma() -> None:
    t = table(upstream_hash_by="$request_uri", affinity="cookie")
    action = decide(t, head("/a"))
    assert isinstance(action, Forward)
    assert any(n == b"Set-Cookie" for n, _ in action.response_headers)  # the sticky balancer
    t = table(upstream_hash_by="$request_uri", load_balance="ewma")
    ewma = EwmaStore()
    first = {u: endpoint(t, head(u), ewma=ewma) for u in URIS[:50]}
    for ep in set(first.values()):
        ewma.update(ep, 5.0)  # ewma would now steer away from all of these
    assert {u: endpoint(t, head(u), ewma=ewma) for u in URIS[:50]} == first


def test_retries_stay_on_the_hashed_endpoint_and_move_within_a_subset() -> None:
    t = table(upstream_hash_by="$request_uri")
    fwd = decide(t, head("/a"))
    assert isinstance(fwd, Forward)
    # ingress-nginx asks its chash balancer again, which answers the same endpoint.
    assert retarget(fwd, [fwd.endpoint], False) is fwd
    t = table(
        upstream_hash_by="$request_uri",
        upstream_hash_by_subset="true",
        upstream_hash_by_subset_size="3",
    )
    fwd = decide(t, head("/a"))
    assert isinstance(fwd, Forward)
    members = {m for ms in fwd.backend.hash_ring(3).nodes for m in ms if fwd.endpoint in ms}
    nxt = retarget(fwd, [fwd.endpoint], False)
    assert nxt is not None and nxt.endpoint != fwd.endpoint and nxt.endpoint in members
    assert retarget(fwd, sorted(members, key=str), False) is None


def test_an_ejected_endpoint_passes_only_its_own_keys_on() -> None:
    t = table(upstream_hash_by="$request_uri")
    uris = URIS[:97]  # not a multiple of the endpoints: round robin would move every key
    before = {u: endpoint(t, head(u)) for u in uris}
    health = EndpointHealth(max_fails=1)
    dead = Endpoint(ADDRESSES[0], 8080)
    health.failed(dead)
    after = {u: endpoint(t, head(u), health=health) for u in uris}
    assert dead in before.values()
    for u in uris:
        if before[u] == dead:
            assert after[u] != dead
        else:
            assert after[u] == before[u]


def test_rings_are_made_when_the_table_is_built() -> None:
    t = table(upstream_hash_by="$request_uri")
    route = t.exact_hosts[HOST].prefix[""]
    assert not route.plain
    assert 0 in route.backend._rings  # no request needed to make it
    plain = table()
    assert plain.exact_hosts[HOST].prefix[""].backend._rings == {}


CHROME_51 = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/51.0.2704.103 Safari/537.36"
CHROME_120 = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0.0.0 Safari/537.36"


def cookie_of(action: Any) -> str:
    assert isinstance(action, Forward)
    [value] = [v.decode() for n, v in action.response_headers if n == b"Set-Cookie"]
    return value


def test_conditional_samesite_none() -> None:
    ann = {"affinity": "cookie", "session_cookie_samesite": "None"}
    t = table(**ann, session_cookie_conditional_samesite_none="true")
    assert "SameSite" not in cookie_of(decide(t, head("/", "", ("User-Agent", CHROME_51))))
    assert "SameSite=None" in cookie_of(decide(t, head("/", "", ("User-Agent", CHROME_120))))
    assert "SameSite=None" in cookie_of(decide(t, head("/")))
    # Without the annotation every client gets it; it never touches Lax or Strict.
    t = table(**ann)
    assert "SameSite=None" in cookie_of(decide(t, head("/", "", ("User-Agent", CHROME_51))))
    t = table(
        **{**ann, "session_cookie_samesite": "Lax"}, session_cookie_conditional_samesite_none="true"
    )
    assert "SameSite=Lax" in cookie_of(decide(t, head("/", "", ("User-Agent", CHROME_51))))
    # A cookie made for a retry (change-on-failure) asks the same question.
    t = table(
        **ann,
        session_cookie_conditional_samesite_none="true",
        session_cookie_change_on_failure="true",
    )
    headers = [(b"User-Agent", CHROME_51.encode())]
    fwd = decide(t, head("/", "", ("User-Agent", CHROME_51)))
    assert isinstance(fwd, Forward)
    nxt = retarget(fwd, [fwd.endpoint], False, None, headers)
    assert nxt is not None and "SameSite" not in cookie_of(nxt)


# -- server-alias ---------------------------------------------------------------------------


def shop(name: str, host: str, svc: str, created: int, **ann: str) -> Any:
    return ingress(
        name,
        [rule(host, path("/", svc))],
        annotations={NGINX + k.replace("_", "-"): v for k, v in ann.items()},
        created=created,
    )


def svc(name: str, address: str) -> list[Any]:
    return [service(name), endpoint_slice(name, [address])]


def served(t: RouteTable, host: str) -> str | None:
    action = decide(t, head("/", "", host=host))
    return action.backend.name if isinstance(action, Forward) else None


def test_aliases_serve_the_host_and_give_way_to_other_hosts() -> None:
    t = build(
        shop("main", "main.test", "main", 1, server_alias="alias.test, other.test, *.wild.test"),
        shop("younger", "main.test", "main", 2, server_alias="late.test"),
        shop("other", "other.test", "other", 3),
        shop("zzz", "zzz.test", "zzz", 4, server_alias="alias.test, solo.test"),
        *svc("main", "10.0.0.1"),
        *svc("other", "10.0.0.2"),
        *svc("zzz", "10.0.0.3"),
    )
    assert served(t, "alias.test") == "default/main:80"
    assert served(t, "ALIAS.test:8080") == "default/main:80"
    assert served(t, "x.wild.test") == "default/main:80"
    assert served(t, "a.b.wild.test") is None  # one label, as ingressd's wildcards
    assert served(t, "other.test") == "default/other:80"  # another Ingress's host wins
    assert served(t, "solo.test") == "default/zzz:80"
    assert served(t, "late.test") is None  # the older Ingress sets main.test's aliases
    reasons = [p.reason for p in t.problems]
    assert (
        "server-alias other.test of host main.test is ignored: an Ingress has a rule for "
        "other.test, which serves it" in reasons
    )
    assert (
        "server-alias alias.test of host zzz.test is ignored: host main.test names it too and "
        "comes first (nginx keeps the first)" in reasons
    )
    assert (
        "server-alias does not apply to host main.test: the older Ingress default/main sets "
        "its aliases (as in ingress-nginx)" in reasons
    )


def test_an_alias_shares_the_hosts_tls_and_certificate() -> None:
    t = build(
        ingress(
            "main",
            [rule("main.test", path("/", "main"))],
            annotations={NGINX + "server-alias": "www.main.test, elsewhere.test"},
            tls=[tls_entry(["main.test"], "main-tls")],
        ),
        tls_secret("main-tls", ("main.test", "www.main.test")),
        *svc("main", "10.0.0.1"),
    )
    action = decide(t, head("/x", host="www.main.test"))
    assert action.status == 308  # type: ignore[union-attr]
    assert action.location == "https://www.main.test/x"  # type: ignore[union-attr]
    assert t.certificate_for("www.main.test") is t.certificate_for("main.test")
    # A name the certificate does not cover keeps the default one (no 421 either).
    assert t.certificate_for("elsewhere.test") is None
