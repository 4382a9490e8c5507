"""What Gateway API objects mean for one request, read from the spec (v1.2.1), for tests.

An independent reading of the Gateway API specification's routing rules, so that
tests can say what an emitted HTTPRoute does with a request and compare it with
what ingressd's own decision (routing/decide.py) does with it:

- listener: port 80 for http; for https the listener whose hostname matches the
  SNI, an exact name before a wildcard (Gateway API: "most specific");
- route hostnames: exact, or ``*.suffix`` matching ONE OR MORE labels;
- among the matching rules of the routes attached (HTTPRoute spec "Matching
  precedence"): an Exact path first, then the longest PathPrefix (whole path
  elements; a trailing "/" of the value ignored), then (implementation-specific
  here: listing order) RegularExpression; then the most header matches; then the
  oldest route, then namespace/name; then the first rule in listing order;
- RegularExpression (path and header) as a full match (Envoy's RE2 semantics);
- RequestRedirect: the Location is built from scheme, hostname, port (dropped when
  the scheme changes and no port is given) and path modifier; the query is kept;
  statusCode defaults to 302. URLRewrite: ReplaceFullPath / ReplacePrefixMatch
  ("/foo" replaced by "/xyz": "/foo/bar" -> "/xyz/bar", by "/": "/bar").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GwRequest:
    host: str
    path: str
    scheme: str = "http"
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)  # names lowercase


@dataclass
class GwResult:
    status: int | None = None  # a redirect's status; None: forwarded
    location: str | None = None
    backends: list[tuple[str, str, int, int]] = field(default_factory=list)  # ns, svc, port, weight
    upstream_path: str = ""
    upstream_host: str = ""
    request_set: dict[str, str] = field(default_factory=dict)
    response_set: dict[str, str] = field(default_factory=dict)
    response_remove: list[str] = field(default_factory=list)
    mirror: tuple[str, str, int] | None = None
    route: str = ""  # namespace/name of the route whose rule matched

    def backend(self) -> tuple[str, str, int]:
        """The one backend a request goes to (weights 0 left out); fails when several."""
        live = [(ns, svc, port) for ns, svc, port, w in self.backends if w > 0]
        assert len(live) == 1, self.backends
        return live[0]


def _host_matches(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return pattern == host


def _listener(objects: Iterable[Mapping[str, Any]], req: GwRequest) -> tuple[str, str] | None:
    port = 443 if req.scheme == "https" else 80
    found: list[tuple[int, str, str]] = []
    for obj in objects:
        if obj["kind"] != "Gateway":
            continue
        for lst in obj["spec"]["listeners"]:
            if lst["port"] != port or lst["protocol"] not in ("HTTP", "HTTPS"):
                continue
            hostname = lst.get("hostname")
            if hostname is None or _host_matches(hostname, req.host):
                rank = 0 if hostname == req.host else 1 if hostname else 2
                found.append((rank, obj["metadata"]["name"], lst["name"]))
    if not found:
        return None
    _, gw, name = min(found)
    return gw, name


def _path_rank(match: Mapping[str, Any], path: str) -> tuple[int, int] | None:
    """(class, -length) of a match for ``path``; lower wins. None: no match."""
    p = match.get("path", {"type": "PathPrefix", "value": "/"})
    kind, value = p.get("type", "PathPrefix"), p.get("value", "/")
    if kind == "Exact":
        return (0, 0) if path == value else None
    if kind == "PathPrefix":
        prefix = value.rstrip("/")
        if path == prefix or path.startswith(prefix + "/") or prefix == "":
            return (1, -len(prefix))
        return None
    return (2, 0) if re.fullmatch(value, path) else None


def _headers_match(match: Mapping[str, Any], headers: Mapping[str, str]) -> bool:
    for h in match.get("headers", ()):
        value = headers.get(h["name"].lower())
        if value is None:
            return False
        if h.get("type", "Exact") == "Exact":
            if value != h["value"]:
                return False
        elif not re.fullmatch(h["value"], value):
            return False
    return True


def evaluate(objects: list[Mapping[str, Any]], req: GwRequest) -> GwResult | None:
    """What the HTTPRoutes in ``objects`` do with ``req``; None: no rule (404)."""
    listener = _listener(objects, req)
    if listener is None:
        return None
    candidates = []
    for order, obj in enumerate(objects):
        if obj["kind"] != "HTTPRoute":
            continue
        spec = obj["spec"]
        if not any(
            (p["name"], p.get("sectionName")) == listener for p in spec.get("parentRefs", ())
        ):
            continue
        hostnames = spec.get("hostnames") or []
        if hostnames and not any(_host_matches(h, req.host) for h in hostnames):
            continue
        meta = obj["metadata"]
        for index, rule in enumerate(spec.get("rules", ())):
            for match in rule.get("matches") or [{}]:
                rank = _path_rank(match, req.path)
                if rank is None or not _headers_match(match, req.headers):
                    continue
                key = (*rank, -len(match.get("headers", ())), meta["namespace"], meta["name"])
                candidates.append(((*key, index, order), obj, rule, match))
    if not candidates:
        return None
    _, obj, rule, match = min(candidates, key=lambda c: c[0])
    return _apply(obj, rule, match, req)


def _modified(modifier: Mapping[str, Any] | None, match: Mapping[str, Any], path: str) -> str:
    if modifier is None:
        return path
    if modifier["type"] == "ReplaceFullPath":
        return modifier["replaceFullPath"]
    prefix = match["path"]["value"].rstrip("/")
    rest = path[len(prefix) :]
    new = modifier["replacePrefixMatch"].rstrip("/") + rest
    return new or "/"


def _apply(
    obj: Mapping[str, Any], rule: Mapping[str, Any], match: Mapping[str, Any], req: GwRequest
) -> GwResult:
    meta = obj["metadata"]
    out = GwResult(route=f"{meta['namespace']}/{meta['name']}")
    out.upstream_path, out.upstream_host = req.path, req.host
    for f in rule.get("filters", ()):
        kind = f["type"]
        if kind == "RequestRedirect":
            r = f["requestRedirect"]
            scheme = r.get("scheme", req.scheme)
            host = r.get("hostname", req.host)
            port = r.get("port")
            well_known = {"http": 80, "https": 443}
            suffix = f":{port}" if port is not None and port != well_known[scheme] else ""
            path = _modified(r.get("path"), match, req.path)
            query = f"?{req.query}" if req.query else ""
            out.status = r.get("statusCode", 302)
            out.location = f"{scheme}://{host}{suffix}{path}{query}"
            return out
        if kind == "URLRewrite":
            r = f["urlRewrite"]
            out.upstream_path = _modified(r.get("path"), match, req.path)
            out.upstream_host = r.get("hostname", req.host)
        elif kind == "RequestHeaderModifier":
            for h in f["requestHeaderModifier"].get("set", ()):
                out.request_set[h["name"]] = h["value"]
        elif kind == "ResponseHeaderModifier":
            m = f["responseHeaderModifier"]
            for h in m.get("set", ()):
                out.response_set[h["name"]] = h["value"]
            out.response_remove += m.get("remove", [])
        elif kind == "RequestMirror":
            ref = f["requestMirror"]["backendRef"]
            out.mirror = (ref.get("namespace", meta["namespace"]), ref["name"], ref["port"])
    for ref in rule.get("backendRefs", ()):
        ns = ref.get("namespace", meta["namespace"])
        out.backends.append((ns, ref["name"], ref["port"], ref.get("weight", 1)))
    return out
