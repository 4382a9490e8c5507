"""``auth-type: basic``: credentials from a Secret, checked before forwarding.

As in ingress-nginx, the Secret (``auth-secret``: ``name`` or ``namespace/name``,
the Ingress's namespace only) holds an htpasswd file under the key ``auth``
(``auth-secret-type: auth-file``, the default) or one user per key with its
hash as value (``auth-map``). A Secret that is missing or unusable denies the
Ingress's routes (503), never opens them; bad or missing credentials get 401
with ``WWW-Authenticate: Basic realm="..."``; the Authorization header is not
passed to the upstream.

Hashes such as bcrypt cost milliseconds of CPU on the event loop, so a
successful check is remembered (bounded, by a digest of user and password) and
a client repeating its credentials on every request costs one dict lookup.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import replace
from typing import TYPE_CHECKING

from ..model.policy import BasicAuth
from .htpasswd import parse_auth_map, parse_htpasswd
from .tls import TLSError, secret_value

if TYPE_CHECKING:
    from ..model.objects import Snapshot
    from ..model.policy import RoutePolicy

CACHE_SIZE = 4096


def allows(auth: BasicAuth, authorization: bytes | None) -> bool:
    """Whether an Authorization header carries valid Basic credentials for ``auth``."""
    if authorization is None:
        return False
    scheme, _, token = authorization.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return False
    ok = auth._ok
    key = hashlib.sha256(token.strip()).digest()
    if key in ok:
        ok.move_to_end(key)
        return True
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return False
    if not sep:
        return False
    if not auth.credentials.verify(
        user.decode("utf-8", "replace"), password.decode("utf-8", "replace")
    ):
        return False
    ok[key] = None
    if len(ok) > CACHE_SIZE:
        ok.popitem(last=False)
    return True


def resolve(snap: Snapshot, namespace: str, policy: RoutePolicy) -> tuple[RoutePolicy, list[str]]:
    """The policy with its credentials loaded, or failing closed; and what to report."""
    ref = policy.auth
    if ref is None:
        return policy, []
    ns, name = ref.secret
    ns = ns or namespace
    where = f"auth-secret {ns}/{name}"
    if ns != namespace:
        return _deny(policy, f"{where} is in another namespace than the Ingress ({namespace})")
    secret = snap.get("Secret", ns, name)
    if secret is None:
        return _deny(policy, f"{where} not found")
    messages: list[str]
    try:
        if ref.secret_type == "auth-map":
            data = {k: _text(secret_value(secret, k)) for k in _keys(secret)}
            credentials, messages = parse_auth_map({k: v for k, v in data.items() if v})
        else:
            text = _text(secret_value(secret, "auth"))
            if text is None:
                return _deny(policy, f"{where} has no key 'auth' (an htpasswd file)")
            credentials, messages = parse_htpasswd(text)
    except TLSError as exc:  # secret_value: data that is not base64
        return _deny(policy, f"{where}: {exc}")
    messages = [f"{where}: {m}" for m in messages]
    if not credentials:
        denied, more = _deny(policy, f"{where} holds no usable credentials")
        return denied, messages + more
    realm = ref.realm.replace("\\", "\\\\").replace('"', '\\"')
    auth = BasicAuth(credentials, f'Basic realm="{realm}"'.encode("latin-1", "replace"))
    return replace(policy, basic_auth=auth), messages


def _deny(policy: RoutePolicy, reason: str) -> tuple[RoutePolicy, list[str]]:
    if policy.fail_closed is None:
        policy = replace(policy, fail_closed=(503, reason))
    return policy, [f"{reason}; its routes answer 503"]


def _keys(secret: dict) -> list[str]:
    keys: set[str] = set()
    for part in ("data", "stringData"):
        values = secret.get(part) or {}
        if isinstance(values, dict):
            keys.update(str(k) for k in values)
    return sorted(keys)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")
