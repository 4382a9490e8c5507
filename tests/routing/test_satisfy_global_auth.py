"""satisfy (the access phase under "any" and "all"), global auth and no-auth-locations
as the routing table and decide() apply them."""

from __future__ import annotations

import base64

import pytest
from k8s_objects import build, endpoint_slice, ingress, path, rule, service

from ingressd.model.objects import Obj
from ingressd.routing.build import BuildOptions
from ingressd.routing.decide import SATISFIED, Forward, RequestHead, Respond, decide

N = "nginx.ingress.kubernetes.io/"
GOOD = b"Basic " + base64.b64encode(b"alice:s3cret")
SECRET: Obj = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "htpasswd", "namespace": "default"},
    "type": "Opaque",
    "stringData": {"auth": "alice:{PLAIN}s3cret\n"},
}
BASIC = {"auth-type": "basic", "auth-secret": "htpasswd"}
AUTH_URL = {"auth-url": "http://auth.example/check"}


def table(annotations: dict[str, str], *paths: str, extra: tuple[Obj, ...] = (), **opts: object):  # type: ignore[no-untyped-def]
    return build(
        ingress(
            "web",
            [rule("a.example", *(path(p, "web") for p in paths or ("/",)))],
            annotations={N + k: v for k, v in annotations.items()},
        ),
        service("web"),
        endpoint_slice("web", ["10.0.0.1"]),
        SECRET,
        *extra,
        **opts,  # type: ignore[arg-type]
    )


def req(client: str = "192.0.2.1", authorization: bytes | None = None, p: str = "/") -> RequestHead:
    headers = [(b"Host", b"a.example")]
    if authorization is not None:
        headers.append((b"Authorization", authorization))
    return RequestHead(
        method="GET",
        host="a.example",
        path=p,
        query="",
        client_ip=client,
        tls=False,
        headers=headers,
    )


IN, OUT = "192.0.2.1", "198.51.100.7"
ALLOW = {"whitelist-source-range": "192.0.2.0/24"}


# (annotations, client, credentials) -> what decide() answers: "forward" with the
# Forward's access (SATISFIED, None, or the pending denial's status), or the status.
@pytest.mark.parametrize(
    ("annotations", "client", "creds", "expected"),
    [
        # satisfy all (the default): every check must pass.
        ({**ALLOW, **BASIC}, IN, GOOD, ("forward", None)),
        ({**ALLOW, **BASIC}, IN, None, 401),
        ({**ALLOW, **BASIC}, OUT, GOOD, 403),
        # satisfy any: one that allows suffices.
        ({"satisfy": "any", **ALLOW, **BASIC}, IN, None, ("forward", SATISFIED)),
        ({"satisfy": "any", **ALLOW, **BASIC}, OUT, GOOD, ("forward", SATISFIED)),
        ({"satisfy": "any", **ALLOW, **BASIC}, OUT, b"Basic eDp5", 401),  # 401 over 403
        ({"satisfy": "any", **ALLOW}, OUT, None, 403),
        # A deny-list alone declines for other clients: nothing denied them.
        ({"satisfy": "any", "denylist-source-range": OUT}, IN, None, ("forward", None)),
        (
            {"satisfy": "any", "denylist-source-range": OUT, **BASIC},
            OUT,
            GOOD,
            ("forward", SATISFIED),
        ),
        # With auth-url the denial waits for the auth service, which may still allow.
        ({"satisfy": "any", **ALLOW, **AUTH_URL}, IN, None, ("forward", SATISFIED)),
        ({"satisfy": "any", **ALLOW, **AUTH_URL}, OUT, None, ("forward", 403)),
        ({"satisfy": "any", **ALLOW, **BASIC, **AUTH_URL}, OUT, None, ("forward", 401)),
        ({"satisfy": "any", **AUTH_URL}, OUT, None, ("forward", None)),
        # satisfy all with auth-url: address and Basic first, then the auth service.
        ({**ALLOW, **AUTH_URL}, OUT, None, 403),
        ({**ALLOW, **AUTH_URL}, IN, None, ("forward", None)),
    ],
)
def test_the_access_phase(
    annotations: dict[str, str], client: str, creds: bytes | None, expected: object
) -> None:
    action = decide(table(annotations), req(client, creds))
    if isinstance(expected, int):
        assert isinstance(action, Respond) and action.status == expected, action
        if expected == 401:
            assert action.headers == ((b"WWW-Authenticate", b'Basic realm=""'),)
        return
    assert isinstance(action, Forward), action
    access = action.access
    got = access if access is None or access is SATISFIED else access.status
    assert ("forward", got) == expected


def configmap(data: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ingressd-controller", "namespace": "default"},
        "data": data,
    }


OPTIONS = BuildOptions(configmap=("default", "ingressd-controller"))
GLOBAL = {"global-auth-url": "http://global.example/check"}


def auth_of(t, p: str = "/") -> str | None:  # type: ignore[no-untyped-def]
    action = decide(t, req(IN, GOOD, p))
    assert isinstance(action, Forward), action
    auth = action.route.policy.external_auth
    return None if auth is None else auth.url.text


def test_global_auth_applies_to_routes_without_their_own() -> None:
    t = table({}, extra=(configmap(GLOBAL),), options=OPTIONS)
    assert auth_of(t) == "http://global.example/check"
    own = table(AUTH_URL, extra=(configmap(GLOBAL),), options=OPTIONS)
    assert auth_of(own) == "http://auth.example/check"
    off = table({"enable-global-auth": "false"}, extra=(configmap(GLOBAL),), options=OPTIONS)
    assert auth_of(off) is None
    # Without the ConfigMap's URL the annotation changes nothing.
    assert auth_of(table({"enable-global-auth": "true"})) is None


def test_no_auth_locations_drop_every_authentication_of_their_paths() -> None:
    paths = ("/", "/.well-known/acme-challenge", "/public/x")
    t = table({**BASIC, **AUTH_URL}, *paths)  # the default list: ACME challenges
    challenge = decide(t, req(OUT, None, "/.well-known/acme-challenge/tok"))
    assert isinstance(challenge, Forward)
    assert challenge.route.policy.external_auth is None
    assert challenge.route.policy.basic_auth is None
    assert b"authorization" not in {n.lower() for n, _ in challenge.route.upstream_headers}
    denied = decide(t, req(OUT, None, "/public/x"))
    assert isinstance(denied, Respond) and denied.status == 401
    listed = table(
        {**BASIC, **AUTH_URL},
        *paths,
        extra=(configmap({**GLOBAL, "no-auth-locations": "/public"}),),
        options=OPTIONS,
    )
    assert auth_of(listed, "/public/x") is None
    assert isinstance(decide(listed, req(OUT, None, "/public/x")), Forward)
    # ACME is no longer in the list: authenticated like any other path.
    acme = decide(listed, req(OUT, None, "/.well-known/acme-challenge/tok"))
    assert isinstance(acme, Respond) and acme.status == 401
    # Global auth on a route of an Ingress without annotations is dropped the same way.
    plain = build(
        ingress("web", [rule("a.example", path("/", "web"), path("/public", "web"))]),
        service("web"),
        endpoint_slice("web", ["10.0.0.1"]),
        configmap({**GLOBAL, "no-auth-locations": "/public"}),
        options=OPTIONS,
    )
    assert auth_of(plain, "/public") is None and auth_of(plain, "/") is not None


def test_auth_signin_redirects_basic_auth_s_401_too() -> None:
    """nginx.tmpl: "error_page 401 = <sign-in location>" covers the location's every
    401: Basic auth, checked before the subrequest, redirects to the sign-in page too."""
    signin = {**BASIC, **AUTH_URL, "auth-signin": "https://login.example/start"}
    action = decide(table(signin), req(IN, None, "/page"))
    assert isinstance(action, Respond) and action.status == 302
    assert action.location == "https://login.example/start?rd=http://a.example%2Fpage"
    # Valid credentials go on to the auth service; without auth-signin: the 401.
    assert isinstance(decide(table(signin), req(IN, GOOD, "/page")), Forward)
    plain = decide(table({**BASIC, **AUTH_URL}), req(IN, None, "/page"))
    assert isinstance(plain, Respond) and plain.status == 401
