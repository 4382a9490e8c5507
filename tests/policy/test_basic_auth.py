"""auth-type basic: annotations, the Secret, and the decision, without sockets."""

from __future__ import annotations

import base64

import bcrypt
import pytest
from k8s_objects import annotated_table, request

from ingressd.policy.basic_auth import allows
from ingressd.routing.decide import Forward, RequestHead, Respond, decide

A = "nginx.ingress.kubernetes.io/"
HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()


def secret(name: str = "users", namespace: str = "default", **data: str) -> dict:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "data": encoded,
    }


table = annotated_table


def head(user: str | None = None, password: str = "") -> RequestHead:
    h = request("a.example", "/")
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode())
        h.headers = [(b"Host", b"a.example"), (b"Authorization", b"Basic " + token)]
    return h


def test_valid_credentials_pass_and_authorization_is_not_forwarded() -> None:
    t = table(secret(auth=f"alice:{HASH}\n"), auth_type="basic", auth_secret="users")
    action = decide(t, head("alice", "s3cret"))
    assert isinstance(action, Forward)
    assert (b"Authorization", b"") in action.request_headers  # removed upstream
    assert t.problems == ()


@pytest.mark.parametrize(
    ("user", "password"), [(None, ""), ("alice", "wrong"), ("bob", "s3cret"), ("alice", "")]
)
def test_missing_or_bad_credentials_get_401_with_the_realm(user: str | None, password: str) -> None:
    t = table(
        secret(auth=f"alice:{HASH}\n"),
        auth_type="basic",
        auth_secret="default/users",
        auth_realm="Staff only",
    )
    action = decide(t, head(user, password))
    assert isinstance(action, Respond) and action.status == 401
    assert action.headers == ((b"WWW-Authenticate", b'Basic realm="Staff only"'),)


def test_auth_map_form() -> None:
    t = table(
        secret(alice=HASH, bob="{PLAIN}pw"),
        auth_type="basic",
        auth_secret="users",
        auth_secret_type="auth-map",
    )
    assert isinstance(decide(t, head("bob", "pw")), Forward)
    assert isinstance(decide(t, head("alice", "s3cret")), Forward)


@pytest.mark.parametrize(
    ("objs", "annotations", "reason"),
    [
        ((), {"auth_type": "basic", "auth_secret": "users"}, "auth-secret default/users not found"),
        (
            (secret(namespace="other", auth=f"a:{HASH}"),),
            {"auth_type": "basic", "auth_secret": "other/users"},
            "in another namespace",
        ),
        (
            (secret(other=f"a:{HASH}"),),
            {"auth_type": "basic", "auth_secret": "users"},
            "has no key 'auth'",
        ),
        (
            (secret(auth="a:not-a-hash\n"),),
            {"auth_type": "basic", "auth_secret": "users"},
            "holds no usable credentials",
        ),
        ((), {"auth_type": "basic"}, "auth-type basic without auth-secret"),
    ],
)
def test_an_unusable_secret_fails_closed(objs: tuple, annotations: dict, reason: str) -> None:
    t = table(*objs, **annotations)
    action = decide(t, head("a", "x"))
    assert isinstance(action, Respond) and action.status == 503
    assert reason in action.body or any(reason in p.reason for p in t.problems)


@pytest.mark.parametrize(
    ("annotations", "status"),
    [
        # digest is access control ingressd does not implement: 403 (unsupported)
        ({"auth_type": "digest", "auth_secret": "users"}, 403),
        ({"auth_type": "basic", "auth_secret": "Bad Name!"}, 503),
        ({"auth_type": "basic", "auth_secret": "users", "auth_secret_type": "map"}, 503),
        ({"auth_type": "bearer", "auth_secret": "users"}, 503),
        ({"auth_type": "basic", "auth_secret": "users", "auth_realm": "x\ny"}, 503),
    ],
)
def test_invalid_auth_annotations_fail_closed(annotations: dict, status: int) -> None:
    t = table(secret(auth=f"a:{HASH}"), **annotations)
    action = decide(t, head("a", "s3cret"))
    assert isinstance(action, Respond) and action.status == status


def test_auth_secret_without_auth_type_is_reported() -> None:
    t = table(secret(auth=f"a:{HASH}"), auth_secret="users")
    assert isinstance(decide(t, head()), Forward)  # as in ingress-nginx: no authentication
    assert any("no effect without auth-type" in p.reason for p in t.problems)


def test_a_successful_check_is_remembered() -> None:
    t = table(secret(auth=f"alice:{HASH}\n"), auth_type="basic", auth_secret="users")
    route = t.route_for("a.example", "/")
    assert route is not None and route.policy.basic_auth is not None
    auth = route.policy.basic_auth
    token = b"Basic " + base64.b64encode(b"alice:s3cret")
    assert allows(auth, token) and len(auth._ok) == 1
    assert allows(auth, token) and len(auth._ok) == 1
    assert not allows(auth, b"Basic " + base64.b64encode(b"alice:nope"))
    assert not allows(auth, b"Bearer abc") and not allows(auth, b"Basic !!!")
