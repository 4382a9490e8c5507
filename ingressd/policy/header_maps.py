"""ConfigMaps of headers, named by a setting: read, validated, bounded, encoded once.

ingress-nginx lets four settings name *another* ConfigMap whose keys are header
names and whose values are header values:

- the controller ConfigMap's ``add-headers: NS/NAME``: response headers of every
  route (nginx.tmpl: ``more_set_headers "NAME: VALUE"`` at http level, so every
  status, ingress-nginx's own answers included, replacing the upstream's);
- its ``proxy-set-headers: NS/NAME``: request headers to every upstream
  (nginx.tmpl: ``proxy_set_header NAME VALUE`` in each location);
- the annotation ``custom-headers: NS/NAME``: response headers of one Ingress's
  routes, each name allowed by the ConfigMap key ``global-allowed-response-headers``
  (internal/ingress/annotations/customheaders/main.go; nginx.tmpl
  ``more_set_headers`` with ``$`` kept literal);
- the annotation ``auth-proxy-set-headers: NS/NAME``: headers of the auth-url
  subrequest (internal/ingress/annotations/authreq/main.go; nginx.tmpl
  buildAuthProxySetHeaders).

Everything in such a ConfigMap is an outsider's input: names must be tokens,
values free of control characters, the map bounded in entries and size, and
names that would break framing or forge what ingressd itself sets are refused
with a reason. The result is bytes, encoded once per table build; nothing here
runs per request, except rendering values that hold variables
(``auth-proxy-set-headers``: the auth-url variables, per subrequest as the
auth-url itself; ``add-headers`` and ``proxy-set-headers``: the snippets'
variables, per request of the routes they apply to, as the snippets' headers).

Who reads which map (``references``) is what the cluster source watches, by
name, and the builder records each read so a change replans what used it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, Literal

from ..model.policy import Template
from ..model.regex import fixed
from ..model.snippet import SET, HeaderEdit, Parts, SnippetPolicy
from ..model.variables import unknown
from .annotations import AnnotationError, collect, parse_configmap_ref
from .ext_auth import TemplateError, parse_template

if TYPE_CHECKING:
    from ..model.objects import Snapshot
    from ..model.policy import RoutePolicy

Purpose = Literal["add-headers", "proxy-set-headers", "custom-headers", "auth-proxy-set-headers"]

# Bounds on one map: entries, and bytes of all its header lines together.
MAX_ENTRIES: Final = 64
MAX_BYTES: Final = 16 * 1024
MAX_NAME: Final = 256

# RFC 9110 5.6.2 token, for the ConfigMap keys (ingress-nginx puts them into nginx.tmpl
# unchecked). The annotations' maps are checked as ingress-nginx's parsers check them:
# customheaders/main.go headerRegexp (authreq's ValidHeader is the same), and its
# valueRegexp, which is every printable ASCII character.
_TOKEN = fixed(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_NGINX_NAME = fixed(r"^[a-zA-Z0-9_-]+$")
_NGINX_VALUE = fixed(r"^[\x20-\x7e]+$")
# All control characters but horizontal tab: a CR or LF would split the message.
_CONTROL = fixed(r"[\x00-\x08\x0a-\x1f\x7f]")
# An nginx variable ($name or ${name}), which nginx expands in add-headers and
# proxy-set-headers values; ingressd knows those of model/variables.py.
# Linear on any engine, over a bounded value.
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")

_HOP = "hop-by-hop: it describes one connection, not the message"
_FRAMING = "framing: ingressd sets it from the message's body"
# Names no map may set, and why.
_NEVER: Mapping[str, str] = {
    "connection": _HOP,
    "keep-alive": _HOP,
    "proxy-connection": _HOP,
    "te": _HOP,
    "trailer": _HOP,
    "upgrade": _HOP,
    "transfer-encoding": _FRAMING,
    "content-length": _FRAMING,
    "host": "the Host header is routing's; the upstream-vhost annotation sets what upstreams get",
}
_FORWARDED = (
    "ingressd sets it from the connection (--trusted-proxies decides whose forwarding "
    "headers are believed); a second value would leave upstreams to pick either"
)
_REQUEST_NEVER: Mapping[str, str] = {
    **_NEVER,
    "expect": "ingressd answers Expect: 100-continue itself",
    "x-forwarded-for": _FORWARDED,
    "x-forwarded-host": _FORWARDED,
    "x-forwarded-port": _FORWARDED,
    "x-forwarded-proto": _FORWARDED,
    "x-real-ip": _FORWARDED,
    "x-request-id": _FORWARDED,
    "x-scheme": _FORWARDED,
    "x-original-forwarded-for": _FORWARDED,
    "proxy": 'cleared on every request against httpoxy (nginx.tmpl: proxy_set_header Proxy "")',
}
_AUTH_NEVER: Mapping[str, str] = {
    **_NEVER,
    "expect": "the subrequest has no body",
}
_FORBIDDEN: Mapping[str, Mapping[str, str]] = {
    "add-headers": _NEVER,
    "custom-headers": _NEVER,
    "proxy-set-headers": _REQUEST_NEVER,
    "auth-proxy-set-headers": _AUTH_NEVER,
}

Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class HeaderMap:
    """What one ConfigMap of headers came to.

    ``headers``: (name, value) as sent, in the map's key order (nginx.tmpl ranges
    over the Go map, which is key order), names unique ignoring case; an empty
    value removes the header (headers-more and proxy_set_header both do).
    ``templates``: the same for auth-proxy-set-headers, values as templates.
    ``refused``: one reason per entry left out. ``error``: why none applies.
    """

    headers: Headers = ()
    templates: tuple[tuple[bytes, Template], ...] = ()
    refused: tuple[str, ...] = ()
    error: str | None = None
    # add-headers, proxy-set-headers: entries whose values hold variables, rendered
    # per request (model/snippet.py); the others are in ``headers``, as bytes.
    templated: tuple[tuple[bytes, Parts], ...] = ()


parse_ref = parse_configmap_ref


def parse_global_ref(value: str) -> tuple[str, str] | None:
    """A controller ConfigMap key's ``namespace/name`` (empty: none), as ingress-nginx
    looks it up in its store: by that key, so the namespace is required."""
    if not value.strip():
        return None
    ns, name = parse_ref(value)
    if ns is None:
        raise AnnotationError(f"{value!r} names no namespace: write namespace/name")
    return ns, name


def parse_allowed(value: str) -> frozenset[str]:
    """global-allowed-response-headers: comma-separated header names, kept lowercase."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    if len(names) > MAX_ENTRIES * 4:
        raise AnnotationError(f"more than {MAX_ENTRIES * 4} names")
    for n in names:
        if len(n) > MAX_NAME or not _NGINX_NAME.match(n):
            raise AnnotationError(f"{n[:100]!r} is not a header name (letters, digits, - and _)")
    return frozenset(n.lower() for n in names)


def read(data: Any, purpose: Purpose, allowed: frozenset[str] | None = None) -> HeaderMap:
    """A ConfigMap's ``data`` as headers for ``purpose``. ``allowed``: for custom-headers,
    the lowercase names global-allowed-response-headers allows.

    For the ConfigMap keys a bad entry is left out (``refused``) and the rest apply,
    as ingress-nginx renders the others; for the annotations any bad entry makes
    the whole map ``error``, as their parsers deny the location.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return HeaderMap(error="its data is not a map")
    if len(data) > MAX_ENTRIES:
        return HeaderMap(error=f"it holds {len(data)} entries, more than {MAX_ENTRIES}")
    strict = purpose in ("custom-headers", "auth-proxy-set-headers")
    forbidden = _FORBIDDEN[purpose]
    headers: list[tuple[bytes, bytes]] = []
    templates: list[tuple[bytes, Template]] = []
    templated: list[tuple[bytes, Parts]] = []
    refused: list[str] = []
    seen: dict[str, str] = {}
    size = 0
    for key in sorted(str(k) for k in data):
        raw = data.get(key)
        value = raw if isinstance(raw, str) else "" if raw is None else str(raw)
        why = _entry_problem(key, value, purpose, strict, forbidden, allowed)
        lname = key.lower()
        if why is None and lname in seen:
            why = f"the same header as {seen[lname]!r} (names ignore case)"
        if why is None and purpose == "auth-proxy-set-headers":
            try:
                templates.append((key.encode("ascii"), parse_template(value.strip())))
            except TemplateError as exc:
                why = str(exc)
        elif why is None and purpose in ("add-headers", "proxy-set-headers"):
            parts, why = _parts(value.strip())
            if why is None and len(parts) > 1:
                templated.append((key.encode("ascii"), parts))
            elif why is None:
                headers.append((key.encode("ascii"), value.strip().encode("utf-8")))
        elif why is None:
            headers.append((key.encode("ascii"), value.strip().encode("utf-8")))
        if why is not None:
            shown = key if len(key) <= 100 else key[:100] + "..."
            if strict:
                return HeaderMap(error=f"header {shown!r}: {why}")
            refused.append(f"header {shown!r} is left out: {why}")
            continue
        seen[lname] = key
        size += len(key) + len(value.encode("utf-8")) + 4
        if size > MAX_BYTES:
            return HeaderMap(error=f"its headers come to more than {MAX_BYTES} bytes")
    return HeaderMap(tuple(headers), tuple(templates), tuple(refused), None, tuple(templated))


def _parts(value: str) -> tuple[Parts, str | None]:
    """``value`` split at its nginx variables: literal, variable, ... literal; or why not."""
    parts: list[str] = []
    pos = 0
    for m in _VARIABLE.finditer(value):
        name = m.group(1) or m.group(2)
        why = unknown(name)
        if why is not None:
            return (), why
        parts += [value[pos : m.start()], name]
        pos = m.end()
    parts.append(value[pos:])
    return tuple(parts), None


def templates_policy(
    add: tuple[tuple[bytes, Parts], ...], proxy: tuple[tuple[bytes, Parts], ...]
) -> SnippetPolicy | None:
    """The variable entries of add-headers (``add``) and proxy-set-headers (``proxy``)
    as the snippets' edits, which the proxy renders per request; None without any."""
    if not add and not proxy:
        return None
    more = tuple(HeaderEdit(SET, name, name.lower(), parts) for name, parts in add)
    return SnippetPolicy(upstream=proxy, more=more)


def _entry_problem(
    key: str,
    value: str,
    purpose: Purpose,
    strict: bool,
    forbidden: Mapping[str, str],
    allowed: frozenset[str] | None,
) -> str | None:
    if len(key) > MAX_NAME or not (_NGINX_NAME if strict else _TOKEN).match(key):
        what = "letters, digits, - and _" if strict else "an HTTP token"
        return f"the name is not a header name ({what})"
    lname = key.lower()
    if lname in forbidden:
        return f"it must not be set: {forbidden[lname]}"
    if _CONTROL.search(value):
        return "the value holds a control character"
    if purpose == "custom-headers":
        if not _NGINX_VALUE.match(value):
            return "the value is empty or not printable ASCII (as ingress-nginx requires)"
        if allowed is None or lname not in allowed:
            return "it is not listed in the controller ConfigMap's global-allowed-response-headers"
    return None


def merge(first: Headers, then: Headers) -> Headers:
    """``first``, less what ``then`` sets again (ignoring case), then ``then``: a
    location's more_set_headers run after the http level's, and win."""
    if not first:
        return then
    names = {n.lower() for n, _ in then}
    return (*(h for h in first if h[0].lower() not in names), *then)


# -- what Ingresses and the controller ConfigMap name -----------------------------------------

ANNOTATIONS: Final = ("custom-headers", "auth-proxy-set-headers")
GLOBAL_KEYS: Final = ("add-headers", "proxy-set-headers")


def ingress_refs(ing: Mapping[str, Any]) -> Iterable[tuple[str, str, str]]:
    """(annotation, namespace, name) of each header ConfigMap ``ing`` names."""
    meta = ing.get("metadata") or {}
    found = collect(meta.get("annotations"))
    for short in ANNOTATIONS:
        if short in found:
            try:
                ns, name = parse_ref(found[short][1])
            except AnnotationError:
                continue  # reported by the builder
            yield short, ns or str(meta.get("namespace") or "default"), name


def global_refs(data: Any) -> Iterable[tuple[str, str, str]]:
    """(key, namespace, name) of each header ConfigMap the controller ConfigMap names."""
    if not isinstance(data, dict):
        return
    for key in GLOBAL_KEYS:
        value = data.get(key)
        if isinstance(value, str):
            try:
                ref = parse_global_ref(value)
            except AnnotationError:
                continue
            if ref is not None:
                yield key, *ref


def references(
    snapshot: Snapshot, controller: tuple[str, str] | None = None
) -> set[tuple[str, str]]:
    """(namespace, name) of every header ConfigMap named by an Ingress or by the
    controller ConfigMap ``controller``: what cluster mode watches, by name."""
    wanted: set[tuple[str, str]] = set()
    for ing in snapshot.of("Ingress").values():
        wanted.update((ns, name) for _, ns, name in ingress_refs(ing))
    if controller is not None:
        cm = snapshot.get("ConfigMap", *controller)
        if cm is not None:
            wanted.update((ns, name) for _, ns, name in global_refs(cm.get("data")))
    return wanted


# -- an Ingress's maps, into its policy ------------------------------------------------------


def resolve(
    snap: Snapshot, namespace: str, policy: RoutePolicy, allowed: frozenset[str]
) -> tuple[RoutePolicy, list[str]]:
    """The policy with its custom-headers and auth-proxy-set-headers maps read (through
    ``snap``, which records the reads), or failing closed; and what to report.

    As ingress-nginx's parsers (NewLocationDenied): a map that is missing or holds a
    bad entry, or a custom-headers name global-allowed-response-headers does not
    allow, denies the Ingress's routes (503). Only maps of the Ingress's own
    namespace are read (the annotation's documentation; ingress-nginx's
    allow-cross-namespace-resources defaults to false).
    """
    messages: list[str] = []
    ref = policy.custom_headers
    if ref is not None:
        found, error = _lookup(snap, namespace, ref, "custom-headers", allowed)
        if error is not None:
            policy, messages = _deny(policy, messages, error)
        else:
            policy = replace(
                policy,
                response_headers=merge(policy.response_headers, found.headers),
                header_templates=_without(policy.header_templates, found.headers),
            )
    ref = policy.auth_proxy_headers
    auth = policy.external_auth
    if ref is not None and auth is not None:
        found, error = _lookup(snap, namespace, ref, "auth-proxy-set-headers", None)
        if error is not None:
            policy, messages = _deny(policy, messages, error)
        else:
            policy = replace(policy, external_auth=replace(auth, proxy_set_headers=found.templates))
    return policy, messages


def _without(templates: SnippetPolicy | None, headers: Headers) -> SnippetPolicy | None:
    """add-headers' variable entries less those custom-headers sets again: the
    location's more_set_headers run after the http level's, and win."""
    if templates is None or not templates.more:
        return templates
    names = {n.lower() for n, _ in headers}
    more = tuple(e for e in templates.more if e.lname not in names)
    if len(more) == len(templates.more):
        return templates
    return templates_policy(tuple((e.name, e.value) for e in more), templates.upstream)


def _lookup(
    snap: Snapshot,
    namespace: str,
    ref: tuple[str | None, str],
    purpose: Purpose,
    allowed: frozenset[str] | None,
) -> tuple[HeaderMap, str | None]:
    ns = ref[0] or namespace
    where = f"{purpose} ConfigMap {ns}/{ref[1]}"
    if ns != namespace:
        return HeaderMap(), f"{where} is in another namespace than the Ingress ({namespace})"
    cm = snap.get("ConfigMap", ns, ref[1])
    if cm is None:
        return HeaderMap(), f"{where} not found"
    found = read(cm.get("data"), purpose, allowed)
    if found.error is not None:
        return found, f"{where}: {found.error}"
    return found, None


def _deny(policy: RoutePolicy, messages: list[str], reason: str) -> tuple[RoutePolicy, list[str]]:
    if policy.fail_closed is None:
        policy = replace(policy, fail_closed=(503, reason))
    return policy, [*messages, f"{reason}; its routes answer 503"]
