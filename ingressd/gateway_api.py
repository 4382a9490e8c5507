"""Ingresses as Gateway API objects: ``ingressd export gateway-api``, the pure part.

Input: the routing table ``build_table`` makes for serving (so the export cannot
drift from what ingressd serves: regex hosts, canaries, defaults, the ConfigMap's
headers) and the snapshot it came from (TLS Secrets, Service ports). Output:
plain dicts, the Gateway API objects, and one ``Finding`` per thing that could
not be carried over exactly. Nothing here reads files or writes YAML.

Target: Gateway API v1.2.1 (GATEWAY_API_VERSION). Gateway, HTTPRoute and
GRPCRoute are ``gateway.networking.k8s.io/v1``, ReferenceGrant ``v1beta1``, all
in the standard channel. TLSRoute (``v1alpha2``) and BackendTLSPolicy
(``v1alpha3``) exist only in the experimental channel, and so do redirect status
codes other than 301 and 302: ``ExportOptions.channel`` says which channel the
cluster has, and what it lacks is reported instead of emitted.

Semantics follow ingress-nginx v1.15.1 as ingressd serves it; each mapping
names the place in ingressd (which cites ingress-nginx) it follows.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .model.objects import Obj, Snapshot, object_key
from .model.policy import Canary, RoutePolicy
from .model.table import Route, RouteTable, VirtualHost
from .policy import annotations as ann
from .routing.build import BuildOptions, build_table, ingress_owner
from .stream.passthrough import build_passthrough

GATEWAY_API_VERSION = "v1.2.1"
GROUP = "gateway.networking.k8s.io"
V1 = f"{GROUP}/v1"
Channel = Literal["standard", "experimental"]
Severity = Literal["dropped", "approximated"]

# Gateway API limits (v1.2.1 CRDs): listeners per Gateway, names, header filter sizes.
MAX_LISTENERS = 64
MAX_NAME = 253
MAX_HEADER_EDITS = 16
MAX_RULES = 16  # HTTPRoute and GRPCRoute spec.rules maxItems
MAX_MATCHES = 8  # rules[].matches maxItems
STANDARD_REDIRECT_CODES = (301, 302)
EXPERIMENTAL_REDIRECT_CODES = (301, 302, 303, 307, 308)

_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
_HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PRECISE_HOST = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DOLLAR_REF = re.compile(r"\$\d")
# A Service by its cluster DNS name: name.namespace.svc[.cluster.local]
_SERVICE_HOST = re.compile(r"^([a-z0-9-]{1,63})\.([a-z0-9-]{1,63})\.svc(\.cluster\.local)?$")
_GRPC_SERVICE = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*(\.[A-Za-z_][A-Za-z_0-9]*)*$")
_GRPC_METHOD = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*$")

# What Gateway API v1 cannot say, per annotation (short name), and why. An
# annotation not here and not translated is reported with _NO_FIELD.
_NO_FIELD = "Gateway API v1 has no field for it"
_ACCESS = (
    "access control Gateway API v1 cannot express; the Ingress's routes are not exported, "
    "so nothing is served without it (use the implementation's own policy, then add them)"
)
REASONS: Mapping[str, str] = {
    "auth-type": _ACCESS,
    "auth-secret": _ACCESS,
    "auth-secret-type": _ACCESS,
    "auth-realm": _ACCESS,
    "auth-url": _ACCESS,
    "auth-signin": _ACCESS,
    "auth-method": _ACCESS,
    "enable-global-auth": _ACCESS,
    "satisfy": _ACCESS,
    "whitelist-source-range": _ACCESS,
    "allowlist-source-range": _ACCESS,
    "denylist-source-range": _ACCESS,
    "auth-tls-secret": _ACCESS + " (client certificates: Gateway's frontend TLS validation is "
    "per listener and experimental)",
    "auth-tls-verify-client": _ACCESS,
    "limit-rps": "rate limits are not in Gateway API v1 (implementations have their own "
    "policies, e.g. Envoy Gateway's BackendTrafficPolicy)",
    "limit-rpm": "rate limits are not in Gateway API v1",
    "limit-connections": "connection limits are not in Gateway API v1",
    "global-rate-limit": "rate limits are not in Gateway API v1",
    "limit-rate": "bandwidth limits are not in Gateway API v1",
    "limit-rate-after": "bandwidth limits are not in Gateway API v1",
    "affinity": "cookie session affinity: HTTPRoute's sessionPersistence (GEP-1619) is "
    "experimental in v1.2.1, and its cookie (value, path, SameSite, expiry, what happens when "
    "the endpoint goes) is the implementation's; not emitted",
    "affinity-mode": "session affinity is not exported (see affinity)",
    "session-cookie-name": "session affinity is not exported (see affinity)",
    "upstream-hash-by": "consistent hashing is not in Gateway API v1 (BackendLBPolicy does "
    "not choose endpoints by a request key)",
    "load-balance": "the balancing algorithm is implementation-specific in Gateway API",
    "enable-cors": "Gateway API's CORS filter (HTTPCORSFilter, GEP-1767) arrived in v1.3.0's "
    "experimental channel, after the v1.2.1 target; not emitted: use the implementation's "
    "CORS policy",
    "proxy-connect-timeout": "an nginx connect timeout: Gateway's timeouts.backendRequest "
    "bounds the whole backend exchange, not the connect",
    "proxy-read-timeout": "nginx's proxy_read_timeout bounds the gap between two reads; "
    "Gateway's timeouts.request/backendRequest bound the whole exchange, which would cut "
    "long or streamed responses that nginx keeps",
    "proxy-send-timeout": "nginx's proxy_send_timeout bounds the gap between two writes; "
    "Gateway's timeouts bound the whole exchange",
    "proxy-next-upstream": "retries: v1.2.1's HTTPRoute retry (GEP-1731, experimental) retries "
    "on response codes; nginx's proxy_next_upstream retries on connection errors and timeouts "
    "(and the codes listed) on another endpoint, which the API does not say",
    "proxy-next-upstream-tries": "retries are not exported (see proxy-next-upstream)",
    "service-upstream": "Gateway implementations choose endpoints or the ClusterIP themselves",
    "proxy-body-size": "request body limits are not in Gateway API v1",
    "custom-http-errors": "error pages are not in Gateway API v1",
    "default-backend": "Gateway API has no backend that serves only while the Service has "
    "no endpoints",
    "server-alias": "aliases: add the names to the HTTPRoute's hostnames by hand (their "
    "certificates differ)",
    "from-to-www-redirect": "the www redirect needs a second hostname's route; not exported",
    "configuration-snippet": "snippets become typed policy in ingressd; Gateway API has no "
    "equivalent",
    "server-snippet": "snippets become typed policy in ingressd; Gateway API has no equivalent",
    "ssl-passthrough": "exported as a TLSRoute only with --enable-ssl-passthrough, as serve",
    "enable-opentelemetry": "tracing is implementation configuration, not Gateway API",
    "proxy-redirect-from": "Location rewriting of responses is not in Gateway API v1",
    "proxy-cookie-path": "Set-Cookie rewriting is not in Gateway API v1",
    "proxy-cookie-domain": "Set-Cookie rewriting is not in Gateway API v1",
    "ssl-ciphers": "per-host cipher lists are not in Gateway API v1",
}
# Annotations that only matter beside another one: reported with it, not on their own.
_COMPANIONS: Mapping[str, str] = {
    "permanent-redirect-code": "permanent-redirect",
    "temporal-redirect-code": "temporal-redirect",
    "canary-by-header": "canary",
    "canary-by-header-value": "canary",
    "canary-by-header-pattern": "canary",
    "canary-by-cookie": "canary",
    "canary-weight": "canary",
    "canary-weight-total": "canary",
    "use-regex": "rewrite-target",
    "preserve-trailing-slash": "ssl-redirect",
    "mirror-host": "mirror-target",
    "mirror-request-body": "mirror-target",
}


@dataclass(frozen=True, slots=True)
class ExportOptions:
    gateway_class: str = "ingressd"
    gateway_name: str = "ingressd"
    gateway_namespace: str = "default"
    channel: Channel = "standard"
    passthrough: bool = False  # as serve --enable-ssl-passthrough: TLSRoutes


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing that is not carried over exactly."""

    ingress: str  # "namespace/name"; "" for the whole export
    subject: str  # the annotation's key, or what else it is about ("path /x", "host h")
    severity: Severity  # dropped: not in the output; approximated: in it, differently
    reason: str


@dataclass(frozen=True, slots=True)
class Export:
    objects: tuple[dict[str, Any], ...]  # sorted by kind, namespace, name
    findings: tuple[Finding, ...]  # sorted
    ingresses: tuple[str, ...]  # "namespace/name" of every Ingress exported, in part or whole

    @property
    def dropped(self) -> bool:
        return any(f.severity == "dropped" for f in self.findings)

    def summary(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for obj in self.objects:
            kinds[obj["kind"]] = kinds.get(obj["kind"], 0) + 1
        return {
            "gateway_api": GATEWAY_API_VERSION,
            "ingresses": len(self.ingresses),
            "objects": dict(sorted(kinds.items())),
            "dropped": sum(f.severity == "dropped" for f in self.findings),
            "approximated": sum(f.severity == "approximated" for f in self.findings),
        }


# -- names -------------------------------------------------------------------------------


def dns_name(*parts: str, limit: int = MAX_NAME) -> str:
    """A DNS subdomain name (RFC 1123, at most ``limit`` characters) from ``parts``:
    the same parts always give the same name, and a name cut short ends in a digest
    of the whole, so that two long names stay apart."""
    raw = "-".join(p for p in parts if p).lower().replace("*", "wildcard")
    labels = [re.sub(r"[^a-z0-9-]+", "-", label).strip("-") for label in raw.split(".")]
    name = ".".join(label for label in labels if label) or "x"
    if len(name) > limit:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        name = name[: limit - 9].rstrip("-.") + "-" + digest
    return name


def dns_label(*parts: str) -> str:
    """A name without dots, at most 63 characters: listener names."""
    return dns_name(*(p.replace(".", "-") for p in parts), limit=63)


# -- the plan ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Listener:
    name: str
    host: str  # "" for the HTTP listener: every host
    protocol: str  # HTTP, HTTPS, TLS
    port: int
    secret: tuple[str, str] | None = None  # HTTPS: (namespace, name)
    gateway: str = ""


@dataclass(slots=True)
class _Work:
    """What the translation collects as it goes."""

    options: ExportOptions
    snapshot: Snapshot
    objects: list[dict[str, Any]] = field(default_factory=list)
    findings: set[Finding] = field(default_factory=set)
    # (namespace of the referent, kind, name) <- (from kind, from namespace)
    grants: set[tuple[str, str, str, str, str]] = field(default_factory=set)
    tls_policies: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # annotation keys of an Ingress that some mapping carried over
    translated: dict[str, set[str]] = field(default_factory=dict)
    canaries: set[str] = field(default_factory=set)  # canary Ingresses folded into a main's
    names: set[tuple[str, str, str]] = field(default_factory=set)  # (kind, namespace, name)

    def find(self, ingress: str, subject: str, severity: Severity, reason: str) -> None:
        self.findings.add(Finding(ingress, subject, severity, reason))

    def done(self, ingress: str, short: str) -> None:
        self.translated.setdefault(ingress, set()).add(short)


def export(
    snapshot: Snapshot, build: BuildOptions, options: ExportOptions = ExportOptions()
) -> Export:
    """The Gateway API objects for the Ingresses ingressd would serve from ``snapshot``."""
    table = build_table(snapshot, build)
    work = _Work(options, snapshot)
    secrets = _tls_secrets(snapshot, table)
    passthrough: dict[str, str] = {}
    if options.passthrough:
        pt, _ = build_passthrough(snapshot, build)
        passthrough = {host: backend.name for host, backend in pt.hosts.items()}
    listeners = _listeners(work, table, secrets, passthrough)
    groups = _route_groups(table)
    exported: set[str] = set()
    for (ingress, host), routes in sorted(groups.items()):
        ing = _ingress_obj(snapshot, ingress)
        if ing is None:
            continue
        exported.add(ingress)
        vhost = table.find_host(host) if host else table.catch_all
        _export_group(work, ing, ingress, host, vhost, routes, listeners)
    for host, backend in sorted(passthrough.items()):
        _tls_route(work, host, backend, listeners)
    exported |= work.canaries
    for ingress in sorted(exported):
        ing = _ingress_obj(snapshot, ingress)
        if ing is not None:
            _annotations(work, ingress, ing)
    for ing in snapshot.of("Ingress").values():
        key = _ingress_key(ing)
        if key not in exported and ingress_owner(snapshot, build, ing).ours:
            work.find(
                key,
                "Ingress",
                "dropped",
                "ingressd serves no route of it (`ingressd check` says why), so neither "
                "does the export",
            )
    if build.default_backend_service:
        work.find(
            "",
            "--default-backend-service",
            "dropped",
            "the fallback for requests no rule takes: Gateway implementations answer 404; "
            "add an HTTPRoute with no hostnames to the Service if wanted",
        )
    work.objects += _gateways(work, listeners)
    work.objects += _reference_grants(work)
    work.objects += work.tls_policies.values()
    objects = tuple(sorted(work.objects, key=_object_order))
    return Export(
        objects, tuple(sorted(work.findings, key=_finding_order)), tuple(sorted(exported))
    )


def _object_order(obj: dict[str, Any]) -> tuple[int, str, str]:
    kinds = ("Gateway", "ReferenceGrant", "HTTPRoute", "GRPCRoute", "TLSRoute", "BackendTLSPolicy")
    meta = obj["metadata"]
    return (kinds.index(obj["kind"]), meta.get("namespace", ""), meta["name"])


def _finding_order(f: Finding) -> tuple[str, str, str, str]:
    return (f.ingress, f.subject, f.severity, f.reason)


def _ingress_obj(snapshot: Snapshot, key: str) -> Obj | None:
    ns, _, name = key.partition("/")
    return snapshot.get("Ingress", ns, name) or (
        snapshot.get("Ingress", "", name) if ns == "default" else None
    )


def _namespace(ing: Obj) -> str:
    return object_key(ing)[0] or "default"


def _ingress_key(ing: Obj) -> str:
    return f"{_namespace(ing)}/{object_key(ing)[1]}"


# -- listeners and Gateways ------------------------------------------------------------------


def _tls_secrets(snapshot: Snapshot, table: RouteTable) -> dict[str, tuple[str, str] | None]:
    """host -> (namespace, Secret) for every TLS host of the table; None: the Ingress
    names no Secret (the default certificate). The oldest Ingress's entry wins, as
    the builder takes its certificates (controller.go: the first Ingress that names it)."""
    tls_hosts = {h for h, v in _vhosts(table) if v.tls and h}
    found: dict[str, tuple[str, str] | None] = {}
    served = {r.ingress for _, v in _vhosts(table) for r in _routes_of(v)}
    for ing in sorted(snapshot.of("Ingress").values(), key=_age):
        if _ingress_key(ing) not in served:
            continue
        spec = _mapping(ing.get("spec"))
        rules = _list(spec.get("rules"))
        rule_hosts = [str(r.get("host") or "").lower() for r in rules if isinstance(r, dict)]
        for entry in _list(spec.get("tls")):
            if not isinstance(entry, dict):
                continue
            hosts = [str(h).lower() for h in entry.get("hosts") or []] or rule_hosts
            secret = entry.get("secretName")
            for host in hosts:
                if host in tls_hosts and found.get(host) is None:
                    found[host] = (_namespace(ing), str(secret)) if secret else None
    return {h: found.get(h) for h in sorted(tls_hosts)}


def _mapping(value: Any) -> dict[str, Any]:
    # The builder validated what it served, but shapes are still not trusted here.
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _age(ing: Obj) -> tuple[str, tuple[str, str]]:
    meta = ing.get("metadata") or {}
    return (str(meta.get("creationTimestamp") or ""), object_key(ing))


def _listeners(
    work: _Work,
    table: RouteTable,
    secrets: Mapping[str, tuple[str, str] | None],
    passthrough: Mapping[str, str],
) -> dict[tuple[str, str], _Listener]:
    """(protocol, host) -> listener; ("HTTP", "") is the one HTTP listener. Past
    MAX_LISTENERS, listeners go to more Gateways (name-2, name-3 ...), each with
    its own HTTP listener."""
    out: dict[tuple[str, str], _Listener] = {}
    extra: list[_Listener] = []
    for host in sorted(passthrough):
        extra.append(_Listener(dns_label("tls", host), host, "TLS", 443))
        if work.options.channel != "experimental":
            work.find(
                "",
                f"host {host}",
                "dropped",
                "ssl-passthrough needs TLSRoute, in the experimental channel only "
                "(--channel experimental)",
            )
            extra.pop()
    for host, secret in secrets.items():
        if host in passthrough:
            continue  # the TLS listener takes its port 443 connections
        if secret is None:
            work.find(
                "",
                f"host {host}",
                "dropped",
                "TLS without a secretName (ingressd's default certificate): an HTTPS "
                "listener needs a certificateRef; its HTTPS routes are not exported",
            )
            continue
        extra.append(_Listener(dns_label("https", host), host, "HTTPS", 443, secret))
    names: set[str] = set()
    per = MAX_LISTENERS - 1
    chunks = [extra[i : i + per] for i in range(0, len(extra), per)] or [[]]
    for i, chunk in enumerate(chunks):
        gw = (
            work.options.gateway_name if i == 0 else dns_name(work.options.gateway_name, str(i + 1))
        )
        http = _Listener("http", "", "HTTP", 80, gateway=gw)
        if i == 0:
            out[("HTTP", "")] = http
        out[("HTTP", f"\0{gw}")] = http
        for listener in chunk:
            if listener.name in names:  # two hosts that clean to the same label
                listener.name = dns_label(
                    listener.name, hashlib.sha256(listener.host.encode()).hexdigest()[:8]
                )
            names.add(listener.name)
            listener.gateway = gw
            out[(listener.protocol, listener.host)] = listener
    return out


def _gateways(work: _Work, listeners: Mapping[tuple[str, str], _Listener]) -> list[dict[str, Any]]:
    opts = work.options
    by_gateway: dict[str, list[_Listener]] = {}
    for (proto, host), listener in listeners.items():
        if proto == "HTTP" and host == "":
            continue  # the first Gateway's, listed again under its name
        by_gateway.setdefault(listener.gateway, []).append(listener)
    out = []
    for gw, members in sorted(by_gateway.items()):
        specs = []
        for listener in sorted(members, key=lambda x: (x.protocol != "HTTP", x.name)):
            spec: dict[str, Any] = {
                "name": listener.name,
                "port": listener.port,
                "protocol": listener.protocol,
                "allowedRoutes": {"namespaces": {"from": "All"}},
            }
            if listener.host:
                spec["hostname"] = listener.host
            if listener.protocol == "HTTPS" and listener.secret is not None:
                ns, name = listener.secret
                ref: dict[str, Any] = {"group": "", "kind": "Secret", "name": name}
                if ns != opts.gateway_namespace:
                    ref["namespace"] = ns
                    work.grants.add((ns, "Secret", name, "Gateway", opts.gateway_namespace))
                spec["tls"] = {"mode": "Terminate", "certificateRefs": [ref]}
            if listener.protocol == "TLS":
                spec["tls"] = {"mode": "Passthrough"}
                spec["allowedRoutes"]["kinds"] = [{"group": GROUP, "kind": "TLSRoute"}]
            specs.append(spec)
        out.append(
            {
                "apiVersion": V1,
                "kind": "Gateway",
                "metadata": {"name": gw, "namespace": opts.gateway_namespace},
                "spec": {"gatewayClassName": opts.gateway_class, "listeners": specs},
            }
        )
    return out


def _parent(work: _Work, listener: _Listener) -> dict[str, Any]:
    return {
        "group": GROUP,
        "kind": "Gateway",
        "name": listener.gateway,
        "namespace": work.options.gateway_namespace,
        "sectionName": listener.name,
    }


def _reference_grants(work: _Work) -> list[dict[str, Any]]:
    """One ReferenceGrant per (namespace, referent kind, referring kind and namespace)."""
    grouped: dict[tuple[str, str, str, str], set[str]] = {}
    for ns, kind, name, from_kind, from_ns in work.grants:
        grouped.setdefault((ns, kind, from_kind, from_ns), set()).add(name)
    out = []
    for (ns, kind, from_kind, from_ns), names in sorted(grouped.items()):
        out.append(
            {
                "apiVersion": f"{GROUP}/v1beta1",
                "kind": "ReferenceGrant",
                "metadata": {
                    "name": dns_name("ingressd", from_ns, from_kind, kind),
                    "namespace": ns,
                },
                "spec": {
                    "from": [{"group": GROUP, "kind": from_kind, "namespace": from_ns}],
                    "to": [{"group": "", "kind": kind, "name": n} for n in sorted(names)],
                },
            }
        )
    return out


# -- routes ------------------------------------------------------------------------------------


def _vhosts(table: RouteTable) -> Iterator[tuple[str, VirtualHost]]:
    for host, vhost in sorted(table.exact_hosts.items()):
        yield host, vhost
    for suffix, vhost in sorted(table.wildcard_hosts.items()):
        yield "*." + suffix, vhost
    if table.catch_all is not None:
        yield "", table.catch_all


def _routes_of(vhost: VirtualHost) -> Iterator[Route]:
    """A host's routes in the order the Gateway's rules keep: regex ones in nginx's
    order (VirtualHost.order), the others exact first, then the longest prefix."""
    if vhost.regex_mode:
        yield from vhost.regex
    else:
        yield from (vhost.exact[k] for k in sorted(vhost.exact))
        yield from (vhost.prefix[k] for k in sorted(vhost.prefix, key=lambda k: (-len(k), k)))
    if vhost.default is not None:
        yield vhost.default


def _route_groups(table: RouteTable) -> dict[tuple[str, str], list[tuple[Route, bool]]]:
    """(Ingress, host) -> its routes, each with whether it is a defaultBackend."""
    groups: dict[tuple[str, str], list[tuple[Route, bool]]] = {}
    for host, vhost in _vhosts(table):
        for route in _routes_of(vhost):
            default = route is vhost.default
            groups.setdefault((route.ingress, host), []).append((route, default))
    if table.default is not None:
        groups.setdefault((table.default.ingress, ""), []).append((table.default, True))
    return groups


def _access_blocked(policy: RoutePolicy) -> list[str]:
    """Why the routes cannot be exported without opening them: access control."""
    why = []
    if policy.fail_closed is not None or policy.host_fail_closed is not None:
        status, reason = policy.fail_closed or policy.host_fail_closed  # type: ignore[misc]
        why.append(f"ingressd answers {status} here ({reason})")
    if policy.auth is not None or policy.basic_auth is not None:
        why.append("auth-type basic")
    if policy.external_auth is not None:
        why.append("auth-url")
    if policy.allow_source is not None or policy.deny_source is not None:
        why.append("source ranges")
    if policy.client_auth_ref is not None or policy.client_auth is not None:
        why.append("client certificates (auth-tls-*)")
    if policy.blocked:
        why.append("the ConfigMap's block-user-agents/block-referers")
    return why


def _export_group(
    work: _Work,
    ing: Obj,
    ingress: str,
    host: str,
    vhost: VirtualHost | None,
    routes: list[tuple[Route, bool]],
    listeners: Mapping[tuple[str, str], _Listener],
) -> None:
    blocked = sorted({why for route, _ in routes for why in _access_blocked(route.policy)})
    if blocked:
        work.find(
            ingress,
            f"host {host or '*'}",
            "dropped",
            f"routes not exported: {', '.join(blocked)} cannot be expressed in Gateway API "
            "v1, and exporting them would serve without it",
        )
        return
    if host.startswith("*."):
        work.find(
            ingress,
            f"host {host}",
            "approximated",
            f"Gateway's wildcard hostname matches one or more labels (a.b{host[1:]} too); "
            "the Ingress's matches exactly one",
        )
    regex_mode = vhost is not None and vhost.regex_mode
    if regex_mode and vhost is not None and len({r.ingress for r in vhost.regex}) > 1:
        work.find(
            ingress,
            f"host {host or '*'}",
            "approximated",
            "its regex paths come from several Ingresses: nginx tries them longest first "
            "across all of them; Gateway API orders RegularExpression matches of different "
            "HTTPRoutes as the implementation likes",
        )
    grpc = routes[0][0].policy.backend_protocol in ("GRPC", "GRPCS")
    https = listeners.get(("HTTPS", host)) if host else None
    http = listeners[("HTTP", "")]
    tls_host = https is not None or bool(vhost and vhost.tls)
    serving: list[dict[str, Any]] = []  # the HTTPS listener's rules, and HTTP's unless redirected
    plain: list[dict[str, Any]] = []  # the HTTP listener's rules
    # app-root: "/" itself, when the route serving it is this Ingress's (decide.py
    # _before_backend); it answers before the HTTPS redirect, so on both listeners.
    root = vhost.match("/") or vhost.default if vhost is not None else None
    if root is not None and root.ingress == ingress and root.policy.app_root is not None:
        if "$" in root.policy.app_root:
            # nginx renders its variables per request; ReplaceFullPath is literal.
            work.find(ingress, "app-root", "dropped", "RequestRedirect takes no nginx variables")
        else:
            rule = _app_root(work, ingress, root.policy.app_root)
            if grpc:
                work.find(ingress, "app-root", "dropped", "a gRPC route answers no redirect")
            else:
                serving.append(rule)
                plain.append(rule)
    for route, default in routes:
        match = _path_match(work, ingress, route, default, regex_mode, grpc)
        if match is None:
            continue
        rules = _rules(work, ingress, route, match, grpc)
        serving += rules
        policy = route.policy
        if policy.redirect is None and (
            policy.force_ssl_redirect or (policy.ssl_redirect and tls_host)
        ):
            plain.append(_https_redirect(work, ingress, route, default, match, grpc))
        else:
            plain += rules
    base = dns_name(object_key(ing)[1], host)
    ns = _namespace(ing)
    kind = "GRPCRoute" if grpc else "HTTPRoute"
    on_https = [_parent(work, https)] if https is not None else []
    if serving and plain == serving:
        parents = [_parent(work, http), *on_https]
        _emit_route(work, kind, ns, base, host, parents, serving, ingress)
        return
    if serving and on_https:
        _emit_route(work, kind, ns, base, host, on_https, serving, ingress)
    name = dns_name(base, "http") if on_https else base
    # gRPC rules stay in a GRPCRoute; the redirects made for them are HTTPRoute rules.
    redirects = [r for r in plain if _is_redirect(r)] if grpc else plain
    others = [r for r in plain if not _is_redirect(r)] if grpc else []
    if redirects:
        _emit_route(work, "HTTPRoute", ns, name, host, [_parent(work, http)], redirects, ingress)
    if others:
        other = dns_name(name, "grpc") if redirects else name
        _emit_route(work, kind, ns, other, host, [_parent(work, http)], others, ingress)


def _app_root(work: _Work, ingress: str, target: str) -> dict[str, Any]:
    """app-root (annotations/rewrite: ``if ($uri = /) return 302 $scheme://$http_host<app-root>``)."""
    work.done(ingress, "app-root")
    work.find(
        ingress,
        "app-root",
        "approximated",
        "nginx's redirect drops the request's query string; Gateway API leaves it to the "
        "implementation",
    )
    return {
        "matches": [{"path": {"type": "Exact", "value": "/"}}],
        "filters": [
            {
                "type": "RequestRedirect",
                "requestRedirect": {
                    "path": {"type": "ReplaceFullPath", "replaceFullPath": target},
                    "statusCode": 302,
                },
            }
        ],
    }


def _is_redirect(rule: dict[str, Any]) -> bool:
    return any(f["type"] == "RequestRedirect" for f in rule.get("filters", ()))


def _emit_route(
    work: _Work,
    kind: str,
    ns: str,
    name: str,
    host: str,
    parents: list[dict[str, Any]],
    rules: list[dict[str, Any]],
    ingress: str,
) -> None:
    if kind == "GRPCRoute":
        rules = [_grpc_rule(r) for r in rules]
    # A rule list past maxItems goes to more routes of the same host: their rules
    # keep the same precedence (Gateway API merges the rules of a host's routes).
    chunks = [rules[i : i + MAX_RULES] for i in range(0, len(rules), MAX_RULES)]
    for i, chunk in enumerate(chunks):
        spec: dict[str, Any] = {"parentRefs": parents, "rules": chunk}
        if host:
            spec["hostnames"] = [host]
        wanted = name if i == 0 else dns_name(name, str(i + 1))
        if (kind, ns, wanted) in work.names:
            # Ingress "a" with host "b.c" and Ingress "a-b.c" without one, say.
            tag = hashlib.sha256(f"{ingress} {host} {i}".encode()).hexdigest()[:8]
            wanted = dns_name(wanted, tag)
        work.names.add((kind, ns, wanted))
        work.objects.append(
            {
                "apiVersion": V1,
                "kind": kind,
                "metadata": {
                    "name": wanted,
                    "namespace": ns,
                    "annotations": {"ingressd.io/exported-from": f"Ingress {ingress}"},
                },
                "spec": spec,
            }
        )


def _grpc_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """An HTTPRoute rule as a GRPCRoute's: the method match _path_match put aside."""
    out: dict[str, Any] = {}
    matches = []
    for m in rule.get("matches", ()):
        g: dict[str, Any] = {}
        if m.get("method") is not None:
            g["method"] = m["method"]
        if m.get("headers"):
            g["headers"] = m["headers"]
        if g:
            matches.append(g)
    if matches:
        out["matches"] = matches
    filters = [f for f in rule.get("filters", ()) if f["type"] in _GRPC_FILTERS]
    if filters:
        out["filters"] = filters
    if rule.get("backendRefs"):
        out["backendRefs"] = rule["backendRefs"]
    return out


_GRPC_FILTERS = frozenset({"RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror"})


def _regex_value(route: Route) -> str:
    """nginx's ``location ~* "^<path>"``, a case-insensitive search from the start,
    as a pattern that means the same under a full-match engine (Envoy's RE2) and a
    searching one (NGINX Gateway Fabric): anchored, and open at the end."""
    pattern = route.regex.pattern if route.regex is not None else "^" + route.path
    if not pattern.startswith("^"):
        pattern = "^" + pattern
    return "(?i)" + pattern + ("" if pattern.endswith(".*") else ".*")


def _bad_path(path: str) -> str | None:
    """Why Gateway API refuses ``path`` as an Exact/PathPrefix value (the CRD's CEL rules)."""
    if not path.startswith("/"):
        return "does not start with /"
    for bad in ("//", "/./", "/../", "%2f", "%2F", "#"):
        if bad in path:
            return f"holds {bad!r}"
    if path.endswith("/..") or path.endswith("/."):
        return "ends in /. or /.."
    if len(path) > 1024:
        return "is longer than 1024 characters"
    return None


def _path_match(
    work: _Work, ingress: str, route: Route, default: bool, regex_mode: bool, grpc: bool
) -> dict[str, Any] | None:
    """The rule's match for the route, as ingressd serves it (model/table.py
    VirtualHost): a regex host's paths are all case-insensitive regexes; otherwise
    Exact is exact and Prefix (and ImplementationSpecific, served as Prefix) match
    whole path elements, as Gateway's PathPrefix does."""
    if grpc:
        return _grpc_match(work, ingress, route, default)
    if default and regex_mode:
        # Beside regexes a PathPrefix may be preferred (their order is the
        # implementation's): a catch-all regex, listed last, keeps the default last.
        return {"path": {"type": "RegularExpression", "value": "/.*"}}
    if default:
        return {"path": {"type": "PathPrefix", "value": "/"}}
    if regex_mode:
        work.find(
            ingress,
            f"path {route.path}",
            "approximated",
            "its host is in regex mode (use-regex or rewrite-target on some Ingress of it): "
            "exported as a RegularExpression match, whose syntax and semantics are "
            "implementation-specific in Gateway API; written for RE2 with (?i)",
        )
        return {"path": {"type": "RegularExpression", "value": _regex_value(route)}}
    bad = _bad_path(route.path)
    if bad is not None:
        work.find(ingress, f"path {route.path}", "dropped", f"Gateway API refuses it: it {bad}")
        return None
    if route.path_type == "Exact":
        return {"path": {"type": "Exact", "value": route.path}}
    return {"path": {"type": "PathPrefix", "value": route.path}}


def _grpc_match(work: _Work, ingress: str, route: Route, default: bool) -> dict[str, Any] | None:
    """A gRPC path as a GRPCRoute method match: / (everything), /pkg.Service (its
    methods), /pkg.Service/Method (Exact)."""
    if default or route.path in ("", "/"):
        return {}
    parts = route.path.strip("/").split("/")
    exact = route.path_type == "Exact"
    if len(parts) == 1 and _GRPC_SERVICE.match(parts[0]) and not exact:
        return {"method": {"type": "Exact", "service": parts[0]}}
    if len(parts) == 2 and _GRPC_SERVICE.match(parts[0]) and _GRPC_METHOD.match(parts[1]):
        return {"method": {"type": "Exact", "service": parts[0], "method": parts[1]}}
    work.find(
        ingress,
        f"path {route.path}",
        "dropped",
        "a gRPC route's path must be /, /package.Service or /package.Service/Method for a "
        "GRPCRoute method match",
    )
    return None


def _https_redirect(
    work: _Work, ingress: str, route: Route, default: bool, match: dict[str, Any], grpc: bool
) -> dict[str, Any]:
    """ssl-redirect / force-ssl-redirect (decide.py _https_redirect, after
    lua_ingress.lua redirect_to_https): the http-redirect-code, 308 by default."""
    policy = route.policy
    work.done(ingress, "force-ssl-redirect" if policy.force_ssl_redirect else "ssl-redirect")
    status = _redirect_code(work, ingress, "ssl-redirect", 308)
    if policy.preserve_trailing_slash:
        work.done(ingress, "preserve-trailing-slash")
    else:
        work.find(
            ingress,
            "ssl-redirect",
            "approximated",
            "ingress-nginx drops one trailing / from the redirect's path "
            "(/a/ -> https://host/a); Gateway's RequestRedirect keeps the path as it is",
        )
    if grpc:  # the redirect is an HTTPRoute rule: the path, not the gRPC method
        path = "/" if default or _bad_path(route.path) else route.path
        kind = "Exact" if route.path_type == "Exact" and not default else "PathPrefix"
        match = {"path": {"type": kind, "value": path}}
    rule: dict[str, Any] = {"matches": [match]} if match else {}
    redirect = {"scheme": "https", "statusCode": status}
    rule["filters"] = [{"type": "RequestRedirect", "requestRedirect": redirect}]
    return rule


def _redirect_code(work: _Work, ingress: str, subject: str, code: int) -> int:
    allowed = (
        EXPERIMENTAL_REDIRECT_CODES
        if work.options.channel == "experimental"
        else STANDARD_REDIRECT_CODES
    )
    if code in allowed:
        return code
    near = 301 if code in (301, 308) else 302
    if near not in allowed or code < 300:
        near = 302
    work.find(
        ingress,
        subject,
        "approximated",
        f"status {code} is not in the {work.options.channel} channel's statusCode enum "
        f"{list(allowed)}: {near} emitted"
        + (", which lets clients change POST to GET" if code in (307, 308) else ""),
    )
    return near


def _rules(
    work: _Work, ingress: str, route: Route, match: dict[str, Any], grpc: bool
) -> list[dict[str, Any]]:
    policy = route.policy
    if policy.redirect is not None:
        found = _redirect_rule(work, ingress, policy, match)
        return [found] if found else []
    filters = _filters(work, ingress, route, grpc)
    main = _backend_ref(work, ingress, route.backend.name, _namespace_of(ingress))
    if main is None:
        return []
    canary = route.canary
    out: list[dict[str, Any]] = []
    refs = [main]
    if canary is not None and canary.backend is not None:
        cref = _backend_ref(work, ingress, canary.backend.name, _namespace_of(ingress))
        if cref is not None:
            out += _canary_rules(work, ingress, canary, match, filters, main, cref)
            if canary.weight > 0:
                refs = [
                    {**main, "weight": max(canary.total - canary.weight, 0)},
                    {**cref, "weight": canary.weight},
                ]
            work.done(ingress, "canary")
            work.done(canary.ingress, "canary")
            work.canaries.add(canary.ingress)
    rule: dict[str, Any] = {"matches": [match]} if match else {}
    if filters:
        rule["filters"] = filters
    rule["backendRefs"] = refs
    out.append(rule)
    return out


def _namespace_of(ingress: str) -> str:
    return ingress.partition("/")[0] or "default"


def _redirect_rule(
    work: _Work, ingress: str, policy: RoutePolicy, match: dict[str, Any]
) -> dict[str, Any]:
    """permanent-redirect / temporal-redirect (annotations/redirect/redirect.go; nginx.tmpl
    ``return CODE URL``): the Location is the URL itself. The request's path is
    dropped, so the path is replaced whole ("/" when the URL has none), unless the
    URL ends in $request_uri, which keeps it (and the query) as Gateway does."""
    code, url = policy.redirect  # type: ignore[misc]
    # ingress-nginx reads temporal-redirect first (annotations/redirect/redirect.go).
    temporal = _has(work, ingress, "temporal-redirect")
    subject = "temporal-redirect" if temporal else "permanent-redirect"
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    keep_path = False
    if authority.endswith("$request_uri") and not slash:
        authority, keep_path = authority[: -len("$request_uri")], True
    elif path.endswith("$request_uri") and path[: -len("$request_uri")].strip("/") == "":
        path, keep_path = "", True
    hostport = authority.rpartition("@")[2]
    host, colon, port = hostport.partition(":")
    redirect: dict[str, Any] = {"scheme": scheme.lower(), "hostname": host.lower()}
    if colon and port.isdigit() and 0 < int(port) < 65536:
        redirect["port"] = int(port)
    path = "/" + path
    path, _, query = path.partition("?")
    rule: dict[str, Any] = {"matches": [match]} if match else {}
    why = None
    if "$" in url.replace("$request_uri", "", 1 if keep_path else 0):
        why = "nginx variables in the URL have no Gateway API form"
    elif not _PRECISE_HOST.match(redirect["hostname"]) or (colon and "port" not in redirect):
        why = f"{hostport!r} is not a host name and port Gateway API takes"
    elif query:
        why = "RequestRedirect cannot set a query string"
    elif not keep_path and _bad_path(path) is not None:
        why = f"path {path!r} is not one Gateway API takes"
    if why is not None:
        work.find(ingress, subject, "dropped", f"{url!r}: {why}; its rule is not exported")
        return {}
    if not keep_path:
        redirect["path"] = {"type": "ReplaceFullPath", "replaceFullPath": path}
        work.find(
            ingress,
            subject,
            "approximated",
            "nginx's return drops the request's query string; Gateway API leaves it to the "
            "implementation (most keep it)",
        )
    redirect["statusCode"] = _redirect_code(work, ingress, subject, code)
    # Beside temporal-redirect, permanent-redirect does nothing in ingress-nginx either.
    work.done(ingress, "temporal-redirect")
    work.done(ingress, "permanent-redirect")
    rule["filters"] = [{"type": "RequestRedirect", "requestRedirect": redirect}]
    return rule


def _has(work: _Work, ingress: str, short: str) -> bool:
    ing = _ingress_obj(work.snapshot, ingress)
    annotations = ((ing or {}).get("metadata") or {}).get("annotations") or {}
    return any(k.rpartition("/")[2] == short for k in annotations)


def _filters(work: _Work, ingress: str, route: Route, grpc: bool) -> list[dict[str, Any]]:
    policy = route.policy
    filters: list[dict[str, Any]] = []
    rewrite: dict[str, Any] = {}
    target = policy.rewrite_target
    if route.rewrite and target is not None:
        if grpc:
            work.find(ingress, "rewrite-target", "dropped", "GRPCRoute has no URL rewrite")
        elif _DOLLAR_REF.search(target):
            work.find(
                ingress,
                "rewrite-target",
                "dropped",
                f"{target!r} uses capture groups: Gateway API v1 rewrites only a whole path "
                "or a matched prefix; the backend receives the request's own path",
            )
        elif (route.regex is not None and policy.regex_paths) or route.path_type == "Exact":
            # nginx's rewrite replaces the whole URI (decide.py rewrite()).
            rewrite["path"] = {"type": "ReplaceFullPath", "replaceFullPath": target}
            work.done(ingress, "rewrite-target")
        else:
            # use-regex "false": the matched prefix is replaced (decide.py rewrite()),
            # as ReplacePrefixMatch replaces a PathPrefix match.
            rewrite["path"] = {"type": "ReplacePrefixMatch", "replacePrefixMatch": target}
            work.done(ingress, "rewrite-target")
    if policy.upstream_vhost is not None:
        vhost = policy.upstream_vhost.decode("latin-1").lower()
        if _PRECISE_HOST.match(vhost) and not grpc:
            rewrite["hostname"] = vhost
            work.done(ingress, "upstream-vhost")
        else:
            work.find(
                ingress,
                "upstream-vhost",
                "dropped",
                "URLRewrite.hostname takes a plain host name (no port, no variables)"
                + ("; GRPCRoute has no URLRewrite" if grpc else ""),
            )
    if rewrite:
        filters.append({"type": "URLRewrite", "urlRewrite": rewrite})
    request: dict[str, list[Any]] = {}
    if (
        policy.x_forwarded_prefix is not None
        and route.rewrite
        and "path" in rewrite
        and b"$" in policy.x_forwarded_prefix
    ):
        work.find(
            ingress,
            "x-forwarded-prefix",
            "dropped",
            "RequestHeaderModifier sets a literal value; nginx renders this one's variables",
        )
    elif policy.x_forwarded_prefix is not None and route.rewrite and "path" in rewrite:
        request.setdefault("set", []).append(
            {"name": "X-Forwarded-Prefix", "value": policy.x_forwarded_prefix.decode("latin-1")}
        )
        work.done(ingress, "x-forwarded-prefix")
    for name, value in policy.proxy_set_headers:
        _header_edit(work, ingress, "ConfigMap proxy-set-headers", request, name, value)
    if request:
        filters.append({"type": "RequestHeaderModifier", "requestHeaderModifier": request})
    response: dict[str, list[Any]] = {}
    for name, value in policy.response_headers:
        _header_edit(work, ingress, "custom-headers", response, name, value)
    if response:
        filters.append({"type": "ResponseHeaderModifier", "responseHeaderModifier": response})
        work.done(ingress, "custom-headers")
    if policy.header_templates is not None:
        work.find(
            ingress,
            "custom-headers",
            "dropped",
            "header values with nginx variables ($remote_addr ...) have no Gateway API form",
        )
    if policy.mirror is not None:
        mirror = _mirror(work, ingress, policy)
        if mirror is not None:
            filters.append(mirror)
    _backend_tls(work, ingress, route)
    return filters


def _header_edit(
    work: _Work, ingress: str, subject: str, into: dict[str, list[Any]], name: bytes, value: bytes
) -> None:
    text = name.decode("latin-1")
    if not _HEADER_NAME.match(text) or len(text) > 256 or len(value) > 4096:
        work.find(ingress, subject, "dropped", f"header {text!r} does not fit Gateway API's limits")
        return
    if sum(len(v) for v in into.values()) >= MAX_HEADER_EDITS:
        work.find(
            ingress, subject, "dropped", f"header {text!r}: more than {MAX_HEADER_EDITS} headers"
        )
        return
    if value:
        into.setdefault("set", []).append({"name": text, "value": value.decode("latin-1")})
    else:
        into.setdefault("remove", []).append(text)  # an empty value only removes (model/policy.py)


def _mirror(work: _Work, ingress: str, policy: RoutePolicy) -> dict[str, Any] | None:
    """mirror-target as RequestMirror (annotations/mirror/main.go): only a Service
    by its cluster name, with the request's own URI ($request_uri), can be a backendRef."""
    m = policy.mirror
    assert m is not None
    found = _SERVICE_HOST.match(m.host.lower())
    why = None
    if found is None:
        why = (
            f"{m.host} is not a Service's cluster name (name.namespace.svc); "
            "RequestMirror takes a Service"
        )
    elif m.path != "$request_uri":
        sent = m.path or "(the mirror location's)"
        why = f"the mirror's path {sent!r} is not the request's own ($request_uri)"
    elif m.scheme == "https":
        why = "an https mirror would need a BackendTLSPolicy for the mirror Service"
    if why is not None:
        work.find(ingress, "mirror-target", "dropped", why)
        return None
    assert found is not None
    if not m.request_body:
        work.find(
            ingress,
            "mirror-request-body",
            "approximated",
            "Gateway's RequestMirror always sends the body",
        )
    if m.host_header.lower() != m.host.lower():
        work.find(
            ingress, "mirror-host", "approximated", "RequestMirror sends the request's own Host"
        )
    svc, ns = found.group(1), found.group(2)
    ref: dict[str, Any] = {"group": "", "kind": "Service", "name": svc, "port": m.port}
    own = _namespace_of(ingress)
    if ns != own:
        ref["namespace"] = ns
        work.grants.add((ns, "Service", svc, "HTTPRoute", own))
    work.done(ingress, "mirror-target")
    return {"type": "RequestMirror", "requestMirror": {"backendRef": ref}}


def _backend_ref(work: _Work, ingress: str, label: str, own: str) -> dict[str, Any] | None:
    """``namespace/service:port`` (Backend.name) as a backendRef; a port by name is
    looked up in the Service, as Gateway API takes numbers only."""
    where, _, port = label.rpartition(":")
    ns, _, svc = where.partition("/")
    ns = ns or "default"
    number: int | None = int(port) if port.isdigit() else None
    if number is None:
        service = work.snapshot.get("Service", ns, svc) or (
            work.snapshot.get("Service", "", svc) if ns == "default" else None
        )
        for sp in ((service or {}).get("spec") or {}).get("ports") or []:
            if isinstance(sp, dict) and sp.get("name") == port and isinstance(sp.get("port"), int):
                number = sp["port"]
        if number is None:
            work.find(
                ingress,
                f"backend {label}",
                "dropped",
                f"port {port!r} is a name and Service {ns}/{svc} does not resolve it; "
                "Gateway API backendRefs need the number",
            )
            return None
    ref: dict[str, Any] = {"group": "", "kind": "Service", "name": svc, "port": number}
    if ns != own:
        ref["namespace"] = ns
        work.grants.add((ns, "Service", svc, "HTTPRoute", own))
    return ref


def _canary_rules(
    work: _Work,
    ingress: str,
    canary: Canary,
    match: dict[str, Any],
    filters: list[dict[str, Any]],
    main: dict[str, Any],
    cref: dict[str, Any],
) -> list[dict[str, Any]]:
    """The canary's header and cookie (decide.py _to_canary, after balancer.lua):
    header first, then cookie, then weight. Gateway API prefers the rule with more
    header matches, then the first listed: the header rules come before the cookie
    rules, and both before the weighted rule, which has none."""
    out: list[dict[str, Any]] = []

    def rule(header: dict[str, Any], ref: dict[str, Any]) -> None:
        m = {**match, "headers": [header]}
        r: dict[str, Any] = {"matches": [m]}
        if filters:
            r["filters"] = filters
        r["backendRefs"] = [ref]
        out.append(r)

    if canary.header is not None:
        name = canary.header.decode("latin-1")
        if canary.header_value is not None:
            rule(
                {"type": "Exact", "name": name, "value": canary.header_value.decode("latin-1")},
                cref,
            )
        elif canary.header_pattern is not None:
            rule(
                {"type": "RegularExpression", "name": name, "value": canary.header_pattern.pattern},
                cref,
            )
            work.find(
                ingress,
                "canary-by-header-pattern",
                "approximated",
                "a RegularExpression header match is implementation-specific (nginx searched "
                "the value with PCRE, unanchored)",
            )
        else:
            rule({"type": "Exact", "name": name, "value": "always"}, cref)
            rule({"type": "Exact", "name": name, "value": "never"}, main)
    if canary.cookie is not None:
        work.find(
            ingress,
            "canary-by-cookie",
            "approximated",
            "Gateway API has no cookie match: a RegularExpression match on the Cookie header "
            "(implementation-specific) stands in",
        )
        cookie = re.escape(canary.cookie)
        for value, ref in (("always", cref), ("never", main)):
            rule(
                {
                    "type": "RegularExpression",
                    "name": "Cookie",
                    "value": f"(^|.*;\\s*){cookie}={value}(\\s*;.*|$)",
                },
                ref,
            )
    return out


def _backend_tls(work: _Work, ingress: str, route: Route) -> None:
    """backend-protocol HTTPS/GRPCS with proxy-ssl-* (annotations/proxyssl):
    a BackendTLSPolicy (v1alpha3, experimental in v1.2.1) for the Service."""
    policy = route.policy
    protocol = policy.backend_protocol
    if protocol == "AUTO_HTTP":
        work.find(
            ingress,
            "backend-protocol",
            "dropped",
            "AUTO_HTTP (the client's scheme) has no Gateway API form",
        )
        return
    if protocol not in ("HTTPS", "GRPCS"):
        if protocol in ("HTTP", "GRPC"):
            work.done(ingress, "backend-protocol")
        return
    if work.options.channel != "experimental":
        work.find(
            ingress,
            "backend-protocol",
            "dropped",
            f"{protocol}: TLS to the backend needs BackendTLSPolicy, in the experimental "
            "channel only in v1.2.1 (--channel experimental)",
        )
        return
    where, _, _port = route.backend.name.rpartition(":")
    ns, _, svc = where.partition("/")
    ns = ns or "default"
    ssl = policy.proxy_ssl
    hostname = (ssl.name if ssl is not None and ssl.name else None) or f"{svc}.{ns}.svc"
    validation: dict[str, Any] = {"hostname": hostname}
    if ssl is not None and ssl.verify:
        # BackendTLSPolicy takes CA certificates from a ConfigMap (ca.crt), not a Secret.
        validation["caCertificateRefs"] = [{"group": "", "kind": "ConfigMap", "name": ssl.secret}]
        work.find(
            ingress,
            "proxy-ssl-secret",
            "approximated",
            f"BackendTLSPolicy reads the CA from a ConfigMap: create ConfigMap {ns}/{ssl.secret} "
            f"with the ca.crt of Secret {ssl.namespace or ns}/{ssl.secret}",
        )
        work.done(ingress, "proxy-ssl-verify")
        work.done(ingress, "proxy-ssl-secret")
    else:
        validation["wellKnownCACertificates"] = "System"
        work.find(
            ingress,
            "backend-protocol",
            "approximated",
            "ingress-nginx does not verify the backend's certificate without proxy-ssl-verify; "
            "BackendTLSPolicy always does (against the system CAs here)",
        )
    if ssl is not None and ssl.name:
        work.done(ingress, "proxy-ssl-name")
    if ssl is not None and not ssl.server_name:
        work.find(
            ingress,
            "proxy-ssl-server-name",
            "approximated",
            "BackendTLSPolicy always sends SNI (the hostname)",
        )
    work.done(ingress, "backend-protocol")
    obj = {
        "apiVersion": f"{GROUP}/v1alpha3",
        "kind": "BackendTLSPolicy",
        "metadata": {"name": dns_name(svc, "backend-tls"), "namespace": ns},
        "spec": {
            "targetRefs": [{"group": "", "kind": "Service", "name": svc}],
            "validation": validation,
        },
    }
    key = (ns, svc)
    known = work.tls_policies.get(key)
    if known is not None and known != obj:
        work.find(
            ingress,
            "backend-protocol",
            "dropped",
            f"Service {ns}/{svc} already has another BackendTLSPolicy from another Ingress",
        )
        return
    work.tls_policies[key] = obj


def _tls_route(
    work: _Work, host: str, backend: str, listeners: Mapping[tuple[str, str], _Listener]
) -> None:
    """ssl-passthrough: a TLSRoute (v1alpha2, experimental) for the host's backend of /."""
    listener = listeners.get(("TLS", host))
    if listener is None:
        return
    ns = backend.rpartition(":")[0].partition("/")[0] or "default"
    ref = _backend_ref(work, "", backend, ns)
    if ref is None:
        return
    work.objects.append(
        {
            "apiVersion": f"{GROUP}/v1alpha2",
            "kind": "TLSRoute",
            "metadata": {"name": dns_name("passthrough", host), "namespace": ns},
            "spec": {
                "parentRefs": [_parent(work, listener)],
                "hostnames": [host],
                "rules": [{"backendRefs": [ref]}],
            },
        }
    )


# -- the annotations' report ----------------------------------------------------------------


def _annotations(work: _Work, ingress: str, ing: Obj) -> None:
    """Every annotation of an exported Ingress that no mapping carried over, with why."""
    meta = ing.get("metadata") or {}
    done = work.translated.get(ingress, set())
    mentioned = {f.subject for f in work.findings if f.ingress == ingress}
    for verdict in ann.classify(meta.get("annotations")):
        short = verdict.key.rpartition("/")[2]
        if verdict.status == "overridden":
            continue
        if verdict.status != "supported":
            reason = f"ingressd does not serve it either: {verdict.reason}"
            work.find(ingress, short, "dropped", reason)
            continue
        if short == "ssl-passthrough" and work.options.passthrough:
            continue
        lead = _COMPANIONS.get(short, short)
        if lead in done or short in done or lead in mentioned or short in mentioned:
            continue
        if short in ("ssl-redirect", "force-ssl-redirect", "use-regex", "preserve-trailing-slash"):
            continue  # carried by how the routes were made (listeners, regex matches)
        reason = REASONS.get(short) or REASONS.get(lead) or _reason_by_family(short)
        work.find(ingress, short, "dropped", reason)


def _reason_by_family(short: str) -> str:
    for prefix, reason in (
        ("auth-", _ACCESS),
        ("session-cookie-", "session affinity is not exported (see affinity)"),
        ("cors-", REASONS["enable-cors"]),
        ("limit-", "rate limits are not in Gateway API v1"),
        ("global-rate-limit", "rate limits are not in Gateway API v1"),
        (
            "proxy-ssl-",
            "backend TLS settings beyond the CA and hostname are not in BackendTLSPolicy",
        ),
        ("proxy-", "nginx proxy tuning: Gateway API v1 has no field for it"),
        ("opentelemetry-", REASONS["enable-opentelemetry"]),
        ("upstream-hash-by", REASONS["upstream-hash-by"]),
    ):
        if short.startswith(prefix):
            return reason
    return _NO_FIELD


def iter_findings(export_: Export, ingress: str) -> Iterable[Finding]:
    return (f for f in export_.findings if f.ingress == ingress)
