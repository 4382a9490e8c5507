#!/usr/bin/env python3
"""Soak test: mixed traffic under Ingress and endpoint churn, every answer checked.

The reliability issue's bounded soak: for --duration seconds (60), a few client
threads send a mix of requests to ingressd in manifest mode while a churn
thread rewrites Ingresses (every 0.5 s: a path added or removed, a backend
changed, an Ingress added or removed) and EndpointSlices (every 2 s: endpoints
moved between upstreams, added, removed, marked not ready, or pointed at a
dead port). The upstreams are three echo servers (``python -m ingressd.echo``)
and bench.py's nginx origin.

Every answer is checked against what the configuration says it should be:
which upstream answers (the echo's name, or the origin's body), the status,
the path the upstream saw (rewrites), the body it received (POSTs), the
session cookie (affinity), the WebSocket echo. Right after a change ingressd
may still serve the previous table, so an answer counts as expected when it
fits any configuration written from --grace seconds before the request was
sent until its answer came. Anything else is an unexpected error: the first
20 are printed with the request and what was expected, all are counted, and
zero of them is the PASS. Also reported: requests and statuses per kind,
p50/p99 latency, ingressd's RSS (its process tree) every 5 s with the growth
over the second half, table generations, CPU, and how long ingressd takes
to stop on SIGTERM at the end.

    .venv/bin/python loadtests/soak.py [--duration S] [--clients N] [--workers W]
        [--ingress-interval S] [--endpoint-interval S] [--grace S] [--seed N]
        [--json FILE] [--save-log FILE]

Needs nginx (and wrk, which bench.py's tool lookup also asks for); exit 0 on
PASS, 1 on FAIL or an error, 2 for missing tools, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import contextlib
import hashlib
import http.client
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from ingressd.model.objects import Obj
from ingressd.policy.tls import self_signed

# bench.py and churn.py are scripts next to this one, not a package.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench
import churn

LOOPBACK = bench.LOOPBACK
NS = "soak"
DOMAIN = "soak.test"
ANNOTATION = "nginx.ingress.kubernetes.io/"
ECHOES = ("echo-a", "echo-b", "echo-c")
ORIGIN = "origin"  # bench.py's nginx origin: "ok\n" on /, 64 KiB on /64k
POOL = tuple(f"svc-{i}" for i in range(6))  # the Services whose endpoints churn
APP_INGRESSES = 40  # plus 10 special ones: 50 Ingresses at the start
SHOP, WILD, REGEX, REWRITE = (f"{h}.{DOMAIN}" for h in ("shop", "*.wild", "regex", "rewrite"))
SECURE, LIMITED, RETRY, STICKY = (f"{h}.{DOMAIN}" for h in ("secure", "limited", "retry", "sticky"))
STATIC = f"static.{DOMAIN}"
STICKY_COOKIE = "SOAKSTICKY"
LIMIT_RPS = 5
SLEEP_MS = 200
REQUEST_TIMEOUT_S = 15.0
SAMPLE_EVERY_S = 5.0
SHUTDOWN_GRACE_S = 2  # ingressd --shutdown-grace: in-flight requests at the end get this long
MAX_SHOWN = 20
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
ECHO_STATUS = re.compile(r"/_echo/status/(\d+)(?:/|$)")
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

# The traffic mix: kind -> weight (one client turn each).
KINDS = {
    "get": 30,  # known routes, and paths and hosts that churn
    "get_new": 12,  # never-seen paths and wildcard hosts that do route
    "get_404": 8,  # unknown hosts and unrouted paths
    "post": 12,  # bodies up to 300 KB, some chunked; the echo's size and SHA-256 checked
    "https": 10,  # TLS with SNI: the TLS host (certificate verified), others
    "websocket": 4,  # upgrade, messages echoed, close; some over TLS
    "slow": 3,  # /_echo/sleep/200
    "disconnect": 3,  # the client goes away mid-request or mid-response
    "sticky": 6,  # affinity cookie kept per client
    "limited": 4,  # limit-rps 5: 503s expected
    "retry": 5,  # proxy-next-upstream with http_503
}
# Endpoint changes, in turn: the first ones put a dead port next to a live
# endpoint, then alone, so that even a short run has both.
ENDPOINT_ACTIONS = (
    "add dead port alongside",
    "dead port only",
    "heal dead port",
    "move endpoint",
    "heal dead port",
    "add endpoint",
    "endpoint not ready",
    "remove endpoint",
    "endpoints ready again",
    "replace endpoints",
)
FAST_KINDS = tuple(k for k in KINDS if k not in ("slow", "websocket", "disconnect"))


class SoakError(bench.BenchError):
    """A failure that makes the soak meaningless; reported and the run stops."""


def say(message: str) -> None:
    print(message, flush=True)


# --- the configuration, as a model the expectations are computed from ---------------------


@dataclass(frozen=True)
class PathRule:
    path: str
    type: str  # Exact, Prefix, or ImplementationSpecific (a regex on regex hosts)
    service: str


@dataclass(frozen=True)
class IngressModel:
    name: str
    host: str
    paths: tuple[PathRule, ...]
    annotations: tuple[tuple[str, str], ...] = ()
    tls: bool = False

    def annotation(self, key: str) -> str | None:
        return dict(self.annotations).get(key)

    @property
    def regex(self) -> bool:
        return (
            self.annotation("use-regex") == "true" or self.annotation("rewrite-target") is not None
        )


@dataclass(frozen=True)
class Endpoint:
    port: int
    ready: bool = True


@dataclass(frozen=True, eq=False)
class State:
    """One configuration as written to the folder: never changed, replaced whole."""

    ingresses: dict[str, IngressModel]
    endpoints: dict[str, tuple[Endpoint, ...]]

    @cached_property
    def hosts(self) -> dict[str, list[IngressModel]]:
        out: dict[str, list[IngressModel]] = {}
        for ing in self.ingresses.values():
            out.setdefault(ing.host, []).append(ing)
        return out


def app_host(i: int) -> str:
    return f"app-{i}.{DOMAIN}"


def initial_state(echo_ports: list[int], origin_port: int) -> State:
    def ing(name: str, host: str, *paths: tuple[str, str, str], **kw: Any) -> IngressModel:
        annotations = tuple(sorted((kw.pop("annotations", None) or {}).items()))
        rules = tuple(PathRule(*p) for p in paths)
        return IngressModel(name, host, rules, annotations, **kw)

    pfx, exact, regex = "Prefix", "Exact", "ImplementationSpecific"
    ingresses = [
        ing(
            f"app-{i}",
            app_host(i),
            ("/", pfx, POOL[i % 6]),
            ("/api", pfx, POOL[(i + 1) % 6]),
            ("/api/v1/exact", exact, POOL[(i + 2) % 6]),
        )
        for i in range(APP_INGRESSES)
    ]
    ingresses += [
        # Two Ingresses merged into one host.
        ing("shop-main", SHOP, ("/", pfx, "svc-0"), ("/cart", exact, "svc-1")),
        ing("shop-api", SHOP, ("/api", pfx, "svc-2")),
        ing("wild", WILD, ("/", pfx, "svc-3")),
        ing(
            "regex",
            REGEX,
            ("/items/[0-9]+$", regex, "svc-4"),
            ("/items", regex, "svc-5"),
            annotations={"use-regex": "true"},
        ),
        ing(
            "rewrite",
            REWRITE,
            ("/svc(/|$)(.*)", regex, "svc-1"),
            annotations={"rewrite-target": "/$2"},
        ),
        ing("secure", SECURE, ("/", pfx, "svc-2"), tls=True),
        ing("limited", LIMITED, ("/", pfx, "svc-3"), annotations={"limit-rps": str(LIMIT_RPS)}),
        ing(
            "retry",
            RETRY,
            ("/", pfx, "svc-5"),
            annotations={
                "proxy-next-upstream": "error timeout http_503",
                "proxy-next-upstream-tries": "3",
            },
        ),
        ing(
            "sticky",
            STICKY,
            ("/", pfx, "svc-4"),
            annotations={"affinity": "cookie", "session-cookie-name": STICKY_COOKIE},
        ),
        ing("static", STATIC, ("/", exact, ORIGIN), ("/64k", exact, ORIGIN)),
    ]
    endpoints = {
        svc: tuple(Endpoint(echo_ports[(i + k) % len(echo_ports)]) for k in range(1 + (i % 2 == 0)))
        for i, svc in enumerate(POOL)
    }
    endpoints[ORIGIN] = (Endpoint(origin_port),)
    return State({i.name: i for i in ingresses}, endpoints)


# --- the configuration as manifest files --------------------------------------------------


class Manifests(churn.ManifestDir):
    """The folder ingressd serves: a file per Ingress, per Service (with its
    EndpointSlices) and for the Secret. Writes go through churn.py's atomic
    write (a dot file renamed over the old one), as JSON Lists."""

    def __init__(self, root: Path) -> None:  # none of ManifestDir's generated cluster
        self.root, self.fmt = root, "json"
        root.mkdir()

    def put(self, name: str, objs: list[Obj]) -> None:
        self.write(f"{name}.json", [self.dump(o) for o in objs])

    def delete(self, name: str) -> None:
        (self.root / f"{name}.json").unlink(missing_ok=True)


def ingress_obj(m: IngressModel) -> Obj:
    annotations = {ANNOTATION + k: v for k, v in m.annotations}
    paths = [
        {
            "path": p.path,
            "pathType": p.type,
            "backend": {"service": {"name": p.service, "port": {"number": 80}}},
        }
        for p in m.paths
    ]
    spec: dict[str, Any] = {
        "ingressClassName": "ingressd",
        "rules": [{"host": m.host, "http": {"paths": paths}}],
    }
    if m.tls:
        spec["tls"] = [{"hosts": [m.host], "secretName": f"{m.name}-tls"}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": m.name, "namespace": NS, "annotations": annotations},
        "spec": spec,
    }


def service_objs(name: str, endpoints: tuple[Endpoint, ...]) -> list[Obj]:
    """The Service and one EndpointSlice per endpoint (each slice has its own port)."""
    objs: list[Obj] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        }
    ]
    for k, ep in enumerate(endpoints):
        objs.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-{k}",
                    "namespace": NS,
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": ep.port, "protocol": "TCP"}],
                "endpoints": [{"addresses": [LOOPBACK], "conditions": {"ready": ep.ready}}],
            }
        )
    return objs


def write_all(files: Manifests, state: State, cert: bytes, key: bytes) -> None:
    ingress_class = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": "ingressd"},
        "spec": {"controller": "ingressd.io/ingress-controller"},
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "secure-tls", "namespace": NS},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(cert).decode(),
            "tls.key": base64.b64encode(key).decode(),
        },
    }
    files.put("00-ingressclass", [ingress_class])
    files.put("secret-secure-tls", [secret])
    for name, eps in state.endpoints.items():
        files.put(f"svc-{name}", service_objs(name, eps))
    for m in state.ingresses.values():
        files.put(f"ing-{m.name}", [ingress_obj(m)])


# --- what an answer should be ---------------------------------------------------------------


@dataclass
class Req:
    kind: str
    method: str
    host: str  # the Host header
    target: str  # path and query, as sent
    body: bytes = b""
    tls: bool = False
    sni: str | None = None
    websocket: bool = False
    pinned: str | None = None  # affinity: the upstream the session cookie names
    want_cookie: bool = False  # affinity: a new session must get a cookie
    min_s: float = 0.0  # the upstream sleeps this long before it answers

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]

    @property
    def host_name(self) -> str:
        return self.host.rsplit(":", 1)[0].lower()

    @cached_property
    def body_sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest() if self.body else EMPTY_SHA256

    def describe(self) -> str:
        scheme = (
            ("wss" if self.tls else "ws") if self.websocket else "https" if self.tls else "http"
        )
        text = f"{self.method} {scheme}://{self.host}{self.target}"
        if self.tls and self.sni != self.host_name:
            text += f" (SNI {self.sni})"
        if self.body:
            text += f" ({len(self.body)} B body)"
        if self.pinned:
            text += f" (session on {self.pinned})"
        return text


@dataclass
class Resp:
    status: int
    headers: dict[str, str]  # lower-case names
    cookies: list[str]  # Set-Cookie values
    body: bytes
    ws_error: str | None = None  # a WebSocket whose messages did not come back intact
    early: bool = False  # answered while the body was still being sent


@dataclass(frozen=True)
class Expect:
    status: int
    services: frozenset[str] | None = None  # who answers; None: ingressd itself
    upstream_path: str | None = None
    note: str = ""

    def describe(self) -> str:
        if self.services is None:
            return f"{self.status} from ingressd" + (f" ({self.note})" if self.note else "")
        who = "|".join(sorted(self.services))
        return f"{self.status} from {who}" + (
            f" path {self.upstream_path}" if self.status == 200 else ""
        )


def lookup(state: State, host: str, path: str) -> tuple[PathRule, IngressModel] | None:
    """The rule that serves ``host`` and ``path``, by the Ingress spec (as ingressd's
    README describes it), written independently of ingressd's router."""
    ings = state.hosts.get(host)
    if ings is None and "." in host:
        ings = state.hosts.get("*." + host.split(".", 1)[1])  # exactly one extra label
    if not ings:
        return None
    rules = [(r, ing) for ing in ings for r in ing.paths]
    if any(ing.regex for ing in ings):  # every path of the host is a regex, longest first
        for r, ing in sorted(rules, key=lambda x: -len(x[0].path)):
            if re.match(r.path, path, re.IGNORECASE):
                return r, ing
        return None
    best: tuple[PathRule, IngressModel] | None = None
    best_key = (-1, False)
    for r, ing in rules:
        if r.type == "Exact":
            ok = path == r.path
        else:
            prefix = r.path.rstrip("/")
            ok = path == prefix or path.startswith(prefix + "/")
        key = (len(r.path.rstrip("/")), r.type == "Exact")  # longest; Exact wins a tie
        if ok and key > best_key:
            best, best_key = (r, ing), key
    return best


def expectations(state: State, req: Req, names: dict[int, str]) -> list[Expect]:
    """The answers ``req`` may get while ``state`` is served; ``names``: live
    upstream port -> name (a port not in it is dead)."""
    found = lookup(state, req.host_name, req.path)
    if found is None:
        return [Expect(404, note="no route")]
    rule, ing = found
    if ing.tls and not req.tls:
        return [Expect(308, note="to https")]
    if ing.tls and req.sni != req.host_name:
        # Only a connection given another host's certificate is refused; one on
        # the generated default certificate is routed by Host.
        other = lookup(state, req.sni, "/") if req.sni else None
        if other is not None and other[1].tls:
            return [Expect(421, note="host has its own certificate, SNI named another's")]
    upstream = req.path
    if (target := ing.annotation("rewrite-target")) is not None:
        m = re.match(rule.path, req.path, re.IGNORECASE)
        assert m is not None
        upstream = re.sub(r"\$(\d)", lambda g: m.group(int(g.group(1))) or "", target)
    out = backend_expectations(state, rule.service, req, upstream, names)
    if ing.annotation("limit-rps"):
        out.append(Expect(503, note="limit-rps"))
    return out


def backend_expectations(
    state: State, service: str, req: Req, upstream: str, names: dict[int, str]
) -> list[Expect]:
    ready = [e for e in state.endpoints.get(service, ()) if e.ready]
    if not ready:
        return [Expect(503, note="no endpoints")]
    live = frozenset(names[e.port] for e in ready if e.port in names)
    dead = len(ready) - len(live)
    if not live:
        return [Expect(s, note="dead endpoints only") for s in (502, 503, 504)]
    if req.pinned in live:
        live = frozenset({req.pinned})
    echo_status = ECHO_STATUS.search(req.path)
    status = int(echo_status.group(1)) if echo_status else 101 if req.websocket else 200
    out = [Expect(status, live, upstream)]
    if echo_status and dead:
        # Retried on http_503 onto the dead endpoint: the last try's error is answered.
        out += [Expect(502, note="last try dead"), Expect(504, note="last try dead")]
    return out


def mismatch(exp: Expect, req: Req, resp: Resp, elapsed: float) -> str | None:
    """Why ``resp`` is not ``exp``; None when it is."""
    if resp.status != exp.status:
        return f"status {resp.status}"
    echo = resp.headers.get("x-echo-service")
    if exp.services is None:
        if echo:
            return f"answered by upstream {echo}, not by ingressd"
        location = resp.headers.get("location", "")
        if exp.status == 308 and not location.startswith(f"https://{req.host_name}"):
            return f"redirect to {location!r}"
        return None
    if resp.status == 101:
        return resp.ws_error
    if ORIGIN in exp.services and echo is None:
        want = bench.BIG_BODY if exp.upstream_path == "/64k" else bench.SMALL_BODY
        if resp.body != want:
            return f"origin body of {len(resp.body)} B differs: {resp.body[:80]!r}"
        return None
    if echo not in exp.services:
        return f"answered by {echo or 'no echo'}"
    if resp.status != 200:
        return None  # the upstream's own status, passed on
    try:
        data = json.loads(resp.body)
    except ValueError:
        return f"body is not the echo's JSON: {resp.body[:80]!r}"
    got = {k: data.get(k) for k in ("service", "method", "path", "query", "body_bytes")}
    want = {
        "service": echo,
        "method": req.method,
        "path": exp.upstream_path,
        "query": req.query,
        "body_bytes": len(req.body),
    }
    if got != want:
        return f"echo saw {got}, expected {want}"
    if data.get("body_sha256") != req.body_sha256:
        return "the upstream received a different body (SHA-256)"
    if req.want_cookie and not any(c.startswith(f"{STICKY_COOKIE}=") for c in resp.cookies):
        return "no session cookie for a new session"
    if elapsed < req.min_s:
        return f"answered in {elapsed * 1000:.0f} ms, before the upstream's {SLEEP_MS} ms sleep"
    return None


class History:
    """Every configuration written, with the time it was written (before the rename)."""

    def __init__(self, state: State) -> None:
        self.lock = threading.Lock()
        self.times = [-math.inf]
        self.states = [state]

    def add(self, when: float, state: State) -> None:
        with self.lock:
            self.times.append(when)
            self.states.append(state)

    def latest(self) -> State:
        with self.lock:
            return self.states[-1]

    def window(self, start: float, end: float) -> list[tuple[State, float]]:
        """The states in force at some time in [start, end], oldest first, each with
        the time it was replaced (inf: not yet)."""
        with self.lock:
            first = max(0, bisect.bisect_right(self.times, start) - 1)
            last = bisect.bisect_right(self.times, end)
            times = [*self.times[first + 1 : last], math.inf]
            return list(zip(self.states[first:last], times, strict=True))


@dataclass
class Stats:
    t_start: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    latency_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    unexpected: Counter[str] = field(default_factory=Counter)
    details: list[dict[str, Any]] = field(default_factory=list)
    early: int = 0  # answers read after sending the body failed (connection closed)
    older: int = 0  # answers that fit only a configuration already replaced
    max_lag_ms: float = 0.0  # how long replaced, when the request was sent

    def record(
        self,
        req: Req,
        label: str,
        elapsed: float,
        problem: dict[str, Any] | None = None,
        lag: float | None = None,
        early: bool = False,
    ) -> None:
        with self.lock:
            self.requests[req.kind] += 1
            self.early += early
            self.statuses[req.kind][label] += 1
            self.latency_ms[req.kind].append(elapsed * 1000)
            if lag is not None:
                self.older += 1
                self.max_lag_ms = max(self.max_lag_ms, lag * 1000)
            if problem is None:
                return
            self.unexpected[req.kind] += 1
            n = sum(self.unexpected.values())
            if n <= MAX_SHOWN:
                self.details.append(problem)
                say(
                    f"UNEXPECTED #{n} t={problem['t']:.2f}s [{req.kind}] {problem['request']}: "
                    f"{problem['got']}; expected {problem['expected']}"
                )


class Checker:
    def __init__(self, history: History, names: dict[int, str], grace: float, stats: Stats) -> None:
        self.history, self.names, self.grace, self.stats = history, names, grace, stats

    def classify(
        self, req: Req, resp: Resp | None, error: str | None, t0: float, t1: float
    ) -> None:
        elapsed = t1 - t0
        candidates = self.history.window(t0 - self.grace, t1)
        reasons: list[str] = []
        if resp is not None:
            for index in range(len(candidates) - 1, -1, -1):  # newest first
                state, replaced = candidates[index]
                for exp in expectations(state, req, self.names):
                    why = mismatch(exp, req, resp, elapsed)
                    if why is None:
                        newest = index == len(candidates) - 1
                        lag = None if newest else max(0.0, t0 - replaced)
                        self.stats.record(req, str(resp.status), elapsed, lag=lag, early=resp.early)
                        return
                    reasons.append(why)
        expected = sorted(
            {e.describe() for s, _ in candidates for e in expectations(s, req, self.names)}
        )
        if resp is not None:
            got = f"{resp.status} ({'; '.join(dict.fromkeys(reasons))})"
            body = resp.body[:200].decode("latin-1")
        else:
            got, body = f"no answer: {error}", ""
        problem = {
            "t": t0 - self.stats.t_start,
            "kind": req.kind,
            "request": req.describe(),
            "got": got,
            "body": body,
            "headers": resp.headers if resp is not None else {},
            "expected": " or ".join(expected),
            "elapsed_ms": round(elapsed * 1000, 1),
            "configurations": len(candidates),
        }
        self.stats.record(req, str(resp.status) if resp else "no answer", elapsed, problem)


# --- clients ------------------------------------------------------------------------------


class TLSConnection(http.client.HTTPConnection):
    """HTTPS to 127.0.0.1 with any SNI name (http.client sends the host it connects to)."""

    def __init__(self, port: int, sni: str, context: ssl.SSLContext) -> None:
        super().__init__(LOOPBACK, port, timeout=REQUEST_TIMEOUT_S)
        self.sni, self.context = sni, context

    def connect(self) -> None:
        super().connect()
        self.sock = self.context.wrap_socket(self.sock, server_hostname=self.sni)


def chunks(body: bytes, rng: random.Random) -> Iterator[bytes]:
    at = 0
    while at < len(body):
        n = rng.randint(1, 16384)
        yield body[at : at + n]
        at += n


def send(
    conn: http.client.HTTPConnection,
    req: Req,
    headers: dict[str, str],
    chunked: bool,
    rng: random.Random,
) -> Resp:
    hdrs = {"Host": req.host, **headers}
    early = False
    try:
        if req.method == "GET":
            conn.request("GET", req.target, headers=hdrs)
        elif chunked:
            hdrs["Transfer-Encoding"] = "chunked"
            body = chunks(req.body, rng)
            conn.request(req.method, req.target, body=body, headers=hdrs, encode_chunked=True)
        else:
            conn.request(req.method, req.target, body=req.body, headers=hdrs)
    except (BrokenPipeError, ConnectionResetError):
        # An answer that needs no body (a redirect, 404, 503) may come before the
        # body is sent, and the connection then closes: read it, as curl and
        # browsers do.
        if conn.sock is None:
            raise
        early = True
    r = conn.getresponse()
    body = r.read()
    headers = {k.lower(): v for k, v in r.getheaders()}
    return Resp(r.status, headers, r.headers.get_all("Set-Cookie") or [], body, early=early)


def ws_frame(opcode: int, payload: bytes, mask: bytes) -> bytes:
    """A final, masked client frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    keys = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(n, "big")
    return head + mask + masked


def ws_read(raw: churn.RawClient) -> tuple[int, bytes]:
    """(opcode, payload) of one server frame, read with churn.py's socket reader."""
    b0, b1 = raw._exactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", raw._exactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", raw._exactly(8))[0]
    mask = raw._exactly(4) if b1 & 0x80 else b""
    payload = raw._exactly(n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return b0 & 0x0F, payload


def read_head(raw: churn.RawClient) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and (Content-Length) body of an HTTP answer on a raw socket."""
    lines = raw._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if status != 101 and "content-length" in headers:
        body = raw._exactly(int(headers["content-length"]))
    return status, headers, body


@dataclass
class Context:
    """What every client shares."""

    http_port: int
    https_port: int
    history: History
    checker: Checker
    stats: Stats
    verify: ssl.SSLContext  # trusts only the TLS host's certificate
    no_verify: ssl.SSLContext
    recent: deque[tuple[str, str]]  # (host, path) that churn added or removed lately
    recent_lock: threading.Lock
    stop: threading.Event


class Client(threading.Thread):
    """One client: a turn is one kind of traffic, picked by KINDS' weights."""

    def __init__(self, index: int, ctx: Context, seed: int) -> None:
        super().__init__(name=f"client-{index}", daemon=True)
        self.ctx, self.rng = ctx, random.Random(seed * 1000 + index)
        self.http = http.client.HTTPConnection(LOOPBACK, ctx.http_port, timeout=REQUEST_TIMEOUT_S)
        self.secure: TLSConnection | None = None
        self.secure_uses = 0
        self.cookie: str | None = None
        self.pinned: str | None = None
        self.session_left = 0
        self.crashed: str | None = None

    def run(self) -> None:
        kinds, weights = list(KINDS), list(KINDS.values())
        try:
            while not self.ctx.stop.is_set():
                kind = self.rng.choices(kinds, weights)[0]
                getattr(self, f"do_{kind}")()
        except Exception as exc:  # a bug of the soak itself: reported, never hidden
            self.crashed = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.http.close()
            if self.secure is not None:
                self.secure.close()

    # -- choosing what to ask for ---------------------------------------------------------

    def token(self) -> str:
        return f"{self.rng.getrandbits(64):016x}"

    def recent(self) -> tuple[str, str] | None:
        with self.ctx.recent_lock:
            return self.rng.choice(self.ctx.recent) if self.ctx.recent else None

    def app(self) -> str:
        host = app_host(self.rng.randrange(APP_INGRESSES))
        if self.rng.random() < 0.1:  # matching ignores case and the port
            host = f"{host.upper()}:{self.ctx.http_port}"
        return host

    def known(self) -> tuple[str, str]:
        rng, n = self.rng, self.rng.randrange(1000)
        r = rng.random()
        if r < 0.3 and (recent := self.recent()) is not None:
            host, base = recent  # base: "" for a whole host
            target = base + rng.choice(["", "/x", f"/{n}", f"?n={n}"])
            return host, target if target.startswith("/") else "/" + target
        if r < 0.6:
            return self.app(), rng.choice(
                ["/", "/api", f"/api/users/{n}", "/api/v1/exact", "/api/v1/exact/more",
                 "/apix", f"/static/{n}.css", f"/?page={n}"]
            )  # fmt: skip
        return rng.choice(
            [
                (SHOP, rng.choice(["/", "/cart", "/cart/x", "/api/orders", f"/api/orders/{n}"])),
                (REGEX, rng.choice([f"/items/{n}", f"/ITEMS/{n}", "/items/abc", "/itemsfoo"])),
                (REWRITE, rng.choice([f"/svc/{n}", "/svc", f"/svc/a/b?x={n}", "/SVC/up"])),
                (STATIC, rng.choice(["/", "/64k"])),
                (SECURE, f"/{n}"),  # plain HTTP: redirected
                (f"w{n % 20}.wild.{DOMAIN}", "/"),
            ]
        )

    def new(self) -> tuple[str, str]:
        t, rng = self.token(), self.rng
        return rng.choice(
            [
                (self.app(), f"/r/{t}/{t[:4]}?q={t}"),
                (self.app(), f"/api/{t}"),
                (f"{t}.wild.{DOMAIN}", f"/{t}"),
                (SHOP, f"/{t}"),
                (REWRITE, f"/svc/{t}?{t[:6]}"),
                (REGEX, f"/items/{t}"),
            ]
        )

    def not_found(self) -> tuple[str, str]:
        t, rng = self.token(), self.rng
        return rng.choice(
            [
                (f"{t}.unknown.test", "/"),
                (f"{t}.{DOMAIN}", f"/{t}"),
                (f"{t[:8]}.{t[8:]}.wild.{DOMAIN}", "/"),  # two labels under a wildcard
                (f"wild.{DOMAIN}", "/"),
                (STATIC, f"/{t}"),
                (REGEX, f"/other/{t}"),
                (REWRITE, f"/svcx{t}"),
            ]
        )

    # -- sending --------------------------------------------------------------------------

    def exchange(
        self,
        conn: http.client.HTTPConnection,
        req: Req,
        headers: dict[str, str] | None = None,
        chunked: bool = False,
    ) -> Resp | None:
        t0 = time.monotonic()
        resp, error = None, None
        try:
            resp = send(conn, req, headers or {}, chunked, self.rng)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            conn.close()
            error = f"{type(exc).__name__}: {exc}"
        self.ctx.checker.classify(req, resp, error, t0, time.monotonic())
        return resp

    def get(self, kind: str, host: str, target: str) -> None:
        self.exchange(self.http, Req(kind, "GET", host, target))

    def do_get(self) -> None:
        self.get("get", *self.known())

    def do_get_new(self) -> None:
        self.get("get_new", *self.new())

    def do_get_404(self) -> None:
        self.get("get_404", *self.not_found())

    def do_post(self) -> None:
        rng = self.rng
        host, target = rng.choice(
            [self.known(), self.known(), self.new(), (SHOP, "/api/orders"), (RETRY, "/orders")]
        )
        if host == STATIC:  # nginx does not take POSTs for its static file
            host = self.app()
        r = rng.random()
        size = (
            0 if r < 0.05 else rng.randint(1, 2000) if r < 0.65
            else rng.randint(2000, 60000) if r < 0.95 else rng.randint(100_000, 300_000)
        )  # fmt: skip
        method = rng.choice(["POST", "POST", "PUT", "PATCH"])
        req = Req("post", method, host, target, body=rng.randbytes(size))
        self.exchange(self.http, req, {"Content-Type": "application/octet-stream"},
                      chunked=size > 0 and rng.random() < 0.25)  # fmt: skip

    def do_https(self) -> None:
        rng, r, n = self.rng, self.rng.random(), self.rng.randrange(1000)
        if r < 0.7:  # the TLS host, its certificate verified; kept alive, renewed now and then
            if self.secure is None or self.secure_uses >= 25:
                if self.secure is not None:
                    self.secure.close()
                self.secure = TLSConnection(self.ctx.https_port, SECURE, self.ctx.verify)
                self.secure_uses = 0
            self.secure_uses += 1
            target = rng.choice(["/", f"/account/{n}", f"/{self.token()}", f"/?n={n}"])
            self.exchange(self.secure, Req("https", "GET", SECURE, target, tls=True, sni=SECURE))
            return
        host = app_host(n % APP_INGRESSES)
        # A host without a certificate of its own, on the default one; or the TLS
        # host asked for on such a connection (routed by Host, the default
        # certificate being nobody's).
        req = Req("https", "GET", host if r < 0.9 else SECURE, f"/api/{n}", tls=True, sni=host)
        conn = TLSConnection(self.ctx.https_port, host, self.ctx.no_verify)
        try:
            self.exchange(conn, req)
        finally:
            conn.close()

    def do_websocket(self) -> None:
        rng = self.rng
        tls = rng.random() < 0.2
        host, target = (SECURE, "/ws") if tls else self.known()
        if host == STATIC:  # nginx answers an upgrade request like any GET
            host, target = self.app(), rng.choice(["/ws", "/api/ws"])
        req = Req("websocket", "GET", host, target, tls=tls, sni=SECURE if tls else None,
                  websocket=True)  # fmt: skip
        key = base64.b64encode(rng.randbytes(16)).decode()
        head = (
            f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        raw = churn.RawClient(self.ctx.https_port if tls else self.ctx.http_port, 0)
        t0 = time.monotonic()
        resp, error = None, None
        try:
            sock = socket.create_connection((LOOPBACK, raw.port), timeout=REQUEST_TIMEOUT_S)
            raw.sock = self.ctx.verify.wrap_socket(sock, server_hostname=SECURE) if tls else sock
            raw.sock.sendall(head.encode())
            status, headers, body = read_head(raw)
            resp = Resp(status, headers, [], body)
            if status == 101:
                resp.ws_error = self.ws_echo(raw, key, headers)
        except (OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            raw.close()
        self.ctx.checker.classify(req, resp, error, t0, time.monotonic())

    def ws_echo(self, raw: churn.RawClient, key: str, headers: dict[str, str]) -> str | None:
        """Messages sent and echoed back, then the close handshake; what went wrong."""
        rng = self.rng
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            return f"Sec-WebSocket-Accept {headers.get('sec-websocket-accept')!r}"
        assert raw.sock is not None
        for _ in range(rng.randint(1, 4)):
            size = rng.choice([0, 5, 125, 126, 3000, 70000])
            opcode, payload = rng.choice(
                [(1, self.token().encode() * (size // 16 + 1)), (2, rng.randbytes(size))]
            )
            payload = payload[:size]
            raw.sock.sendall(ws_frame(opcode, payload, rng.randbytes(4)))
            got = ws_read(raw)
            if got != (opcode, payload):
                return f"sent opcode {opcode} {size} B, got opcode {got[0]} {len(got[1])} B"
        raw.sock.sendall(ws_frame(8, struct.pack("!H", 1000), rng.randbytes(4)))
        opcode, _ = ws_read(raw)
        return None if opcode == 8 else f"opcode {opcode} instead of the close echo"

    def do_slow(self) -> None:
        rng = self.rng
        base = rng.choice(["", "/api", "/x"])
        host = self.app()
        if (recent := self.recent()) is not None and rng.random() < 0.3:
            host, base = recent
        req = Req("slow", "GET", host, f"{base}/_echo/sleep/{SLEEP_MS}", min_s=SLEEP_MS / 1000)
        self.exchange(self.http, req)

    def do_disconnect(self) -> None:
        """The client goes away: before the head is complete, mid-upload, while the
        upstream sleeps (with a FIN or a RST), or mid-download."""
        rng = self.rng
        host = self.app()
        variant = rng.randrange(5)
        req = Req("disconnect", "GET", host, "/")
        t0 = time.monotonic()
        with (
            contextlib.suppress(OSError),
            socket.create_connection(
                (LOOPBACK, self.ctx.http_port), timeout=REQUEST_TIMEOUT_S
            ) as sock,
        ):
            if variant == 0:
                sock.sendall(f"GET /api/{self.token()} HTTP/1.1\r\nHost: {host}\r\nX-Pa".encode())
            elif variant == 1:
                sock.sendall(
                    f"POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100000\r\n\r\n"
                    .encode() + rng.randbytes(10000)
                )  # fmt: skip
            elif variant in (2, 3):
                sock.sendall(f"GET /_echo/sleep/300 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            else:
                sock.sendall(f"GET /_echo/bytes/2000000 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                sock.settimeout(0.5)  # a short error answer leaves the connection open
                got = 0
                while got < 65536 and (chunk := sock.recv(65536)):
                    got += len(chunk)
            time.sleep(0.05)
            if variant == 3:  # RST instead of FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.ctx.stats.record(req, "aborted", time.monotonic() - t0)

    def do_sticky(self) -> None:
        if self.session_left <= 0:  # a new session
            self.cookie, self.pinned, self.session_left = None, None, self.rng.randint(5, 30)
        self.session_left -= 1
        target = self.rng.choice(["/", f"/cart/{self.rng.randrange(100)}"])
        req = Req("sticky", "GET", STICKY, target, pinned=self.pinned,
                  want_cookie=self.cookie is None)  # fmt: skip
        headers = {"Cookie": f"{STICKY_COOKIE}={self.cookie}"} if self.cookie else {}
        resp = self.exchange(self.http, req, headers)
        if resp is None or resp.status != 200:
            return
        for c in resp.cookies:
            if c.startswith(f"{STICKY_COOKIE}="):
                self.cookie = c.split(";", 1)[0].split("=", 1)[1]
                self.pinned = resp.headers.get("x-echo-service")

    def do_limited(self) -> None:
        for _ in range(self.rng.randint(1, 4)):
            self.get("limited", LIMITED, f"/{self.rng.randrange(100)}")

    def do_retry(self) -> None:
        if self.rng.random() < 0.5:
            self.get("retry", RETRY, "/_echo/status/503")
        else:
            self.get("retry", RETRY, f"/orders/{self.rng.randrange(100)}")


# --- churn --------------------------------------------------------------------------------


class Churner(threading.Thread):
    """Rewrites Ingresses every ``ingress_every`` s and endpoints every ``endpoints_every`` s."""

    def __init__(
        self,
        ctx: Context,
        files: Manifests,
        echo_ports: list[int],
        dead_port: int,
        opts: Options,
    ) -> None:
        super().__init__(name="churn", daemon=True)
        self.ctx, self.files = ctx, files
        self.echo_ports, self.dead_port = echo_ports, dead_port
        self.ingress_every, self.endpoints_every = opts.ingress_interval, opts.endpoint_interval
        self.rng = random.Random(opts.seed)
        self.actions: Counter[str] = Counter()
        self.seq = 0
        self.endpoint_turn = 0
        self.error: str | None = None

    def run(self) -> None:
        start = time.monotonic()
        next_ing, next_ep = start + self.ingress_every, start + self.endpoints_every
        try:
            while not self.ctx.stop.wait(max(0.0, min(next_ing, next_ep) - time.monotonic())):
                now = time.monotonic()
                if now >= next_ing:
                    self.change_ingress()
                    next_ing = max(next_ing + self.ingress_every, now)
                if now >= next_ep:
                    self.change_endpoints()
                    next_ep = max(next_ep + self.endpoints_every, now)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            raise

    def commit(self, state: State, action: str, writes: list[tuple[str, list[Obj] | None]]) -> None:
        # Recorded before the rename: from then on requests may meet the new state.
        self.ctx.history.add(time.monotonic(), state)
        for name, objs in writes:
            if objs is None:
                self.files.delete(name)
            else:
                self.files.put(name, objs)
        self.actions[action] += 1

    def remember(self, host: str, path: str) -> None:
        with self.ctx.recent_lock:
            self.ctx.recent.append((host, path))

    def change_ingress(self) -> None:
        rng, state = self.rng, self.ctx.history.latest()
        ings = dict(state.ingresses)
        self.seq += 1
        churned = [
            (m, p) for m in ings.values() if m.name.startswith("app-")
            for p in m.paths if p.path.startswith("/c")
        ]  # fmt: skip
        added = [m for m in ings.values() if m.name.startswith("new-")]
        r = rng.random()
        action = (
            "add path" if r < 0.3 else "remove path" if r < 0.5
            else "change backend" if r < 0.8 else "add ingress" if r < 0.9 else "remove ingress"
        )  # fmt: skip
        if action == "add path" and len(churned) >= 30:
            action = "remove path"
        elif action == "remove path" and not churned:
            action = "add path"
        elif action == "add ingress" and len(added) >= 5:
            action = "remove ingress"
        elif action == "remove ingress" and not added:
            action = "add ingress"
        if action == "add path":
            m = ings[f"app-{rng.randrange(APP_INGRESSES)}"]
            rule = PathRule(f"/c{self.seq}", "Prefix", rng.choice(POOL))
            ings[m.name] = m = replace(m, paths=(*m.paths, rule))
            host, path = m.host, rule.path
        elif action == "remove path":
            m, rule = rng.choice(churned)
            ings[m.name] = m = replace(m, paths=tuple(p for p in m.paths if p != rule))
            host, path = m.host, rule.path
        elif action == "change backend":
            m = ings[f"app-{rng.randrange(APP_INGRESSES)}"]
            paths = tuple(
                replace(p, service=rng.choice([s for s in POOL if s != p.service]))
                if p.path == "/api" else p
                for p in m.paths
            )  # fmt: skip
            ings[m.name] = m = replace(m, paths=paths)
            host, path = m.host, "/api"
        elif action == "add ingress":
            name = f"new-{self.seq}"
            ings[name] = m = IngressModel(
                name, f"{name}.{DOMAIN}", (PathRule("/", "Prefix", rng.choice(POOL)),)
            )
            host, path = m.host, ""
        else:
            m = rng.choice(added)
            del ings[m.name]
            self.commit(State(ings, state.endpoints), "remove ingress", [(f"ing-{m.name}", None)])
            self.remember(m.host, "")
            return
        self.commit(State(ings, state.endpoints), action, [(f"ing-{m.name}", [ingress_obj(m)])])
        self.remember(host, path)

    def change_endpoints(self) -> None:
        """The next action of ENDPOINT_ACTIONS, on a Service it applies to."""
        rng, state = self.rng, self.ctx.history.latest()
        action = ENDPOINT_ACTIONS[self.endpoint_turn % len(ENDPOINT_ACTIONS)]
        self.endpoint_turn += 1
        order = rng.sample(POOL, len(POOL))
        for svc in order:
            eps = self.endpoint_change(action, list(state.endpoints[svc]))
            if eps is not None:
                break
        else:
            action, svc = "replace endpoints", order[0]
            eps = self.endpoint_change(action, [])
        assert eps is not None
        endpoints = {**state.endpoints, svc: tuple(eps)}
        self.commit(
            State(state.ingresses, endpoints), action, [(f"svc-{svc}", service_objs(svc, eps))]
        )

    def endpoint_change(self, action: str, eps: list[Endpoint]) -> list[Endpoint] | None:
        """``eps`` after ``action``; None when it does not apply to them."""
        rng, dead = self.rng, self.dead_port
        live = [i for i, e in enumerate(eps) if e.port != dead]
        has_dead = len(live) < len(eps)
        spare = [p for p in self.echo_ports if all(e.port != p for e in eps)]
        if action == "add dead port alongside":
            return None if has_dead or not live else [*eps, Endpoint(dead)]
        if action == "dead port only":
            return None if has_dead else [Endpoint(dead)]
        if action == "heal dead port":
            if not has_dead:
                return None
            return [eps[i] for i in live] + [Endpoint(rng.choice(spare or self.echo_ports))]
        if action == "move endpoint":
            if not live or not spare:
                return None
            k = rng.choice(live)
            eps[k] = Endpoint(rng.choice(spare), eps[k].ready)
            return eps
        if action == "add endpoint":
            return [*eps, Endpoint(rng.choice(spare))] if spare else None
        if action == "remove endpoint":
            if len(eps) < 2:
                return None
            eps.pop(rng.randrange(len(eps)))
            return eps
        if action == "endpoint not ready":
            ready = [i for i, e in enumerate(eps) if e.ready]
            if len(ready) < 2:
                return None
            k = rng.choice(ready)
            eps[k] = replace(eps[k], ready=False)
            return eps
        if action == "endpoints ready again":
            return [replace(e, ready=True) for e in eps] if any(not e.ready for e in eps) else None
        return [Endpoint(p) for p in rng.sample(self.echo_ports, rng.randint(1, 3))]


# --- running ------------------------------------------------------------------------------


@dataclass
class Options:
    duration: float
    clients: int
    workers: int
    ingress_interval: float
    endpoint_interval: float
    grace: float
    seed: int


def start_upstreams(
    stack: contextlib.ExitStack, tools: bench.Tools, workdir: Path
) -> tuple[list[int], int, list[int]]:
    """The echo servers and the nginx origin: (echo ports, origin port, pids)."""
    ports = bench.free_ports(len(ECHOES) + 1)
    pids = []
    for name, port in zip(ECHOES, ports[:-1], strict=True):
        log = workdir / f"{name}.log"
        cmd = [sys.executable, "-m", "ingressd.echo", "--port", str(port), "--name", name]
        proc = bench.start_server(stack, cmd, log)
        bench.wait_ready(proc, lambda p=port: bench.port_open(p), name, log)
        pids.append(proc.pid)
    origin = workdir / "origin"
    (origin / "www").mkdir(parents=True)
    (origin / "www" / "64k").write_bytes(bench.BIG_BODY)
    nginx = bench.start_nginx(stack, tools, origin, bench.origin_conf(origin, ports[-1]), ports[-1])
    pids.append(nginx.pid)
    return ports[:-1], ports[-1], pids


def sanity_check(ctx: Context) -> None:
    """A few requests before the soak: a broken setup should fail here, clearly."""
    probe = Client(99, ctx, 0)
    try:
        for kind, host, target, tls in (
            ("setup", app_host(0), "/", False),
            ("setup", STATIC, "/64k", False),
            ("setup", SECURE, "/", True),
        ):
            conn: http.client.HTTPConnection = (
                TLSConnection(ctx.https_port, host, ctx.verify) if tls else probe.http
            )
            resp = probe.exchange(conn, Req(kind, "GET", host, target, tls=tls, sni=host))
            conn.close()
            if resp is None or resp.status != 200:
                status = resp.status if resp else "no answer"
                raise SoakError(f"setup check: {host}{target} answered {status}")
    finally:
        probe.http.close()
    if ctx.stats.unexpected:
        raise SoakError(f"setup checks failed: {ctx.stats.details}")


@dataclass
class Result:
    opts: Options
    stats: Stats
    actions: Counter[str] = field(default_factory=Counter)
    setup: dict[str, Any] = field(default_factory=dict)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (s since start, MiB)
    peak_rss_mib: float = 0.0
    generations: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0
    problems_end: list[str] = field(default_factory=list)
    shutdown: dict[str, Any] = field(default_factory=dict)
    log_errors: list[str] = field(default_factory=list)


def quick_stop_wrapper(workdir: Path, ingressd: str) -> Path:
    """``ingressd`` with --shutdown-delay 0 and a short --shutdown-grace (churn.py's
    startup, reused here, takes no extra arguments): the soak ends promptly."""
    wrapper = workdir / "ingressd"
    args = f"--shutdown-delay 0 --shutdown-grace {SHUTDOWN_GRACE_S}"
    wrapper.write_text(f'#!/bin/sh\nexec "{ingressd}" "$@" {args}\n')
    wrapper.chmod(0o755)
    return wrapper


def run(tools: bench.Tools, opts: Options, save_log: Path | None) -> Result:
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ingressd-soak-")))
        # A dead port: bound, never listening, so connections to it are refused
        # and no other process can take it meanwhile.
        dead = stack.enter_context(socket.socket())
        dead.bind((LOOPBACK, 0))
        dead_port = dead.getsockname()[1]
        echo_ports, origin_port, upstream_pids = start_upstreams(stack, tools, workdir)
        names = {p: n for p, n in zip(echo_ports, ECHOES, strict=True)} | {origin_port: ORIGIN}
        cert, key = self_signed(common_name=SECURE, dns_names=(SECURE,), days=30)
        state = initial_state(echo_ports, origin_port)
        files = Manifests(workdir / "manifests")
        write_all(files, state, cert, key)
        say(
            f"upstreams: {', '.join(f'{n} :{p}' for p, n in names.items())}, dead port "
            f":{dead_port}; {len(state.ingresses)} Ingresses, {len(state.endpoints)} Services"
        )

        ports = bench.free_ports(3)
        log = workdir / "ingressd.log"
        if save_log is not None:
            stack.callback(lambda: log.exists() and shutil.copyfile(log, save_log))
        wrapped = replace(tools, ingressd=str(quick_stop_wrapper(workdir, tools.ingressd)))
        ingressd, ready_s = churn.start_ingressd(
            stack, wrapped, files.root, ports, opts.workers, log
        )
        admin = churn.admin_state(ports[2])
        idle_s, _ = churn.wait_idle(ingressd.pid)
        result = Result(opts, Stats(time.monotonic()))
        result.setup = {
            "ports": {"http": ports[0], "https": ports[1], "admin": ports[2]},
            "echo_ports": echo_ports,
            "origin_port": origin_port,
            "dead_port": dead_port,
            "ingresses": len(state.ingresses),
            "ready_s": ready_s,
            "idle_after_ready_s": idle_s,
            "problems_at_start": admin.get("problems", []),
            "rss_after_ready_mib": churn.tree_memory_mib(ingressd.pid)["rss_mib"],
        }
        say(
            f"ingressd --workers {opts.workers} ready after {ready_s:.1f} s: table generation "
            f"{admin.get('generation')}, {len(admin.get('problems', []))} problems, "
            f"RSS {result.setup['rss_after_ready_mib']:.1f} MiB"
        )
        for p in admin.get("problems", [])[:5]:
            say(f"  problem: {p}")

        verify = ssl.create_default_context(cadata=cert.decode())
        no_verify = ssl.create_default_context()
        no_verify.check_hostname, no_verify.verify_mode = False, ssl.CERT_NONE
        history = History(state)
        stats = Stats(time.monotonic())  # for the setup checks only
        ctx = Context(
            http_port=ports[0],
            https_port=ports[1],
            history=history,
            checker=Checker(history, names, opts.grace, stats),
            stats=stats,
            verify=verify,
            no_verify=no_verify,
            recent=deque(maxlen=40),
            recent_lock=threading.Lock(),
            stop=threading.Event(),
        )
        stack.callback(ctx.stop.set)  # on errors and Ctrl-C the threads end too
        sanity_check(ctx)
        result.stats = ctx.stats = ctx.checker.stats = stats = Stats(time.monotonic())

        clients = [Client(i, ctx, opts.seed) for i in range(opts.clients)]
        churner = Churner(ctx, files, echo_ports, dead_port, opts)
        gen_before = churn.admin_state(ports[2]).get("generation", 0)
        cpu_before = bench.tree_cpu_seconds(ingressd.pid)
        up_before = sum(bench.tree_cpu_seconds(p) for p in upstream_pids)
        own_before = time.process_time()
        start = stats.t_start = time.monotonic()
        result.rss.append((0.0, churn.tree_memory_mib(ingressd.pid)["rss_mib"]))
        say(
            f"soak: {opts.duration:g} s, {opts.clients} clients; churn: Ingresses every "
            f"{opts.ingress_interval:g} s, endpoints every {opts.endpoint_interval:g} s; "
            f"grace {opts.grace:g} s"
        )
        for t in (*clients, churner):
            t.start()
        end, next_sample = start + opts.duration, start + SAMPLE_EVERY_S
        try:
            while (now := time.monotonic()) < end:
                time.sleep(max(0.0, min(next_sample, end) - now))
                if time.monotonic() >= next_sample:
                    next_sample += SAMPLE_EVERY_S
                    progress(result, ingressd, ports[2], churner, start)
        finally:
            ctx.stop.set()
            for t in (*clients, churner):
                t.join(timeout=REQUEST_TIMEOUT_S + 5)
        result.elapsed_s = time.monotonic() - start
        if ingressd.poll() is not None:
            raise SoakError(f"ingressd exited ({ingressd.returncode}):\n{bench._tail(log)}")
        crashed = [f"{t.name}: {t.crashed}" for t in clients if t.crashed]
        if churner.error:
            crashed.append(f"churn: {churner.error}")
        if crashed or any(t.is_alive() for t in (*clients, churner)):
            raise SoakError(f"soak threads failed or hung: {crashed}")
        mem = churn.tree_memory_mib(ingressd.pid)
        result.rss.append((result.elapsed_s, mem["rss_mib"]))
        result.peak_rss_mib = mem["peak_rss_mib"]
        cpu = bench.tree_cpu_seconds(ingressd.pid) - cpu_before
        result.cpu = {
            "ingressd_s": cpu,
            "ingressd_core_share": cpu / result.elapsed_s,
            "upstreams_s": sum(bench.tree_cpu_seconds(p) for p in upstream_pids) - up_before,
            "soak_client_s": time.process_time() - own_before,
        }
        admin = churn.admin_state(ports[2])
        result.generations = {
            "before": gen_before,
            "after": admin.get("generation", 0),
            "during": admin.get("generation", 0) - gen_before,
        }
        result.problems_end = admin.get("problems", [])
        result.actions = churner.actions
        # Stopped here rather than by the stack, to see it go: connections still
        # open (clients that went away mid-request) may hold it up to the grace.
        stop_start = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(ingressd.pid, signal.SIGTERM)
        try:
            code: int | None = ingressd.wait(timeout=SHUTDOWN_GRACE_S + 10)
        except subprocess.TimeoutExpired:
            code = None
        result.shutdown = {"seconds": time.monotonic() - stop_start, "exit_code": code}
        result.log_errors = [
            line
            for line in log.read_text(errors="replace").splitlines()
            if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")
        ]
    return result


def progress(
    result: Result,
    ingressd: subprocess.Popen[bytes],
    admin_port: int,
    churner: Churner,
    start: float,
) -> None:
    t = time.monotonic() - start
    if ingressd.poll() is not None:
        raise SoakError(f"ingressd exited ({ingressd.returncode}) during the soak")
    rss = churn.tree_memory_mib(ingressd.pid)["rss_mib"]
    result.rss.append((t, rss))
    s = result.stats
    with s.lock:
        total, unexpected = sum(s.requests.values()), sum(s.unexpected.values())
    gen = churn.admin_state(admin_port).get("generation")
    say(
        f"  t={t:5.1f}s  requests {total:6d} ({total / t:5.0f}/s)  unexpected {unexpected}  "
        f"changes {sum(churner.actions.values()):3d}  generation {gen}  RSS {rss:.1f} MiB"
    )


# --- reporting ----------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    return churn.percentile(sorted(values), p)


def rss_summary(samples: list[tuple[float, float]]) -> dict[str, Any]:
    """Start, max and end of the sampled RSS, and how it moved over the second half:
    end minus the sample nearest the middle, and a least-squares slope."""
    end_t = samples[-1][0]
    mid = min(samples, key=lambda s: abs(s[0] - end_t / 2))
    half = [s for s in samples if s[0] >= mid[0]]
    slope = math.nan
    if len(half) >= 2:
        mx = sum(t for t, _ in half) / len(half)
        my = sum(v for _, v in half) / len(half)
        var = sum((t - mx) ** 2 for t, _ in half)
        if var:
            slope = sum((t - mx) * (v - my) for t, v in half) / var * 60
    values = [v for _, v in samples]
    return {
        "start_mib": values[0],
        "max_mib": max(values),
        "end_mib": values[-1],
        "growth_mib": values[-1] - values[0],
        "second_half_from_s": mid[0],
        "second_half_growth_mib": values[-1] - mid[1],
        "second_half_slope_mib_per_min": slope,
        "samples": [[round(t, 1), round(v, 2)] for t, v in samples],
    }


def summarize(result: Result) -> dict[str, Any]:
    s = result.stats
    fast = [v for k in FAST_KINDS for v in s.latency_ms.get(k, [])]
    statuses: Counter[str] = Counter()
    for c in s.statuses.values():
        statuses.update(c)
    total = sum(s.requests.values())
    unexpected = sum(s.unexpected.values())
    return {
        "pass": unexpected == 0,
        "unexpected": unexpected,
        "requests": total,
        "requests_per_s": total / result.elapsed_s if result.elapsed_s else math.nan,
        "kinds": {
            k: {
                "requests": s.requests.get(k, 0),
                "unexpected": s.unexpected.get(k, 0),
                "p50_ms": pct(s.latency_ms.get(k, []), 50),
                "p99_ms": pct(s.latency_ms.get(k, []), 99),
                "statuses": dict(sorted(s.statuses.get(k, Counter()).items())),
            }
            for k in KINDS
        },
        "statuses": dict(sorted(statuses.items())),
        "latency_ms": {"kinds": list(FAST_KINDS), "p50": pct(fast, 50), "p99": pct(fast, 99)},
        "answers_after_send_failed": s.early,
        "older_configuration_answers": s.older,
        "older_configuration_max_lag_ms": s.max_lag_ms,
        "unexpected_by_kind": dict(s.unexpected),
        "unexpected_details": s.details,
        "changes": dict(result.actions),
        "generations": result.generations,
        "rss": {**rss_summary(result.rss), "peak_hwm_mib": result.peak_rss_mib},
        "cpu": result.cpu,
        "problems_end": result.problems_end,
        "shutdown": result.shutdown,
        "ingressd_log_errors": len(result.log_errors),
        "ingressd_log_error_lines": result.log_errors[:20],
    }


def report(result: Result, summary: dict[str, Any]) -> None:
    say("\n== results ==")
    say(f"{'kind':<11} {'requests':>8} {'unexpected':>10} {'p50 ms':>8} {'p99 ms':>8}  statuses")
    for kind, k in summary["kinds"].items():
        statuses = " ".join(f"{code}:{n}" for code, n in k["statuses"].items())
        say(
            f"{kind:<11} {k['requests']:>8} {k['unexpected']:>10} {k['p50_ms']:>8.1f} "
            f"{k['p99_ms']:>8.1f}  {statuses}"
        )
    lat = summary["latency_ms"]
    say(
        f"{'total':<11} {summary['requests']:>8} {summary['unexpected']:>10}   "
        f"({summary['requests_per_s']:.0f} req/s over {result.elapsed_s:.1f} s)"
    )
    say(f"statuses     {' '.join(f'{c}:{n}' for c, n in summary['statuses'].items())}")
    say(
        f"latency      p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms "
        "(all kinds but slow, websocket and disconnect)"
    )
    changes = summary["changes"]
    ing = sum(n for a, n in changes.items() if "path" in a or "ingress" in a or "backend" in a)
    say(
        f"churn        {ing} Ingress changes, {sum(changes.values()) - ing} endpoint changes: "
        + ", ".join(f"{a} {n}" for a, n in sorted(changes.items()))
    )
    g = summary["generations"]
    say(f"tables       {g['during']} generations during the soak ({g['before']} -> {g['after']})")
    say(
        f"older config {summary['older_configuration_answers']} answers fit only a configuration "
        f"already replaced (allowed for {result.opts.grace:g} s; at most "
        f"{summary['older_configuration_max_lag_ms']:.0f} ms after it was replaced)"
    )
    say(
        f"early answer {summary['answers_after_send_failed']} answers read after sending the "
        "body failed (ingressd answered without reading it and closed)"
    )
    r = summary["rss"]
    say(
        f"ingressd RSS start {r['start_mib']:.1f} MiB, max {r['max_mib']:.1f}, end "
        f"{r['end_mib']:.1f} (peak HWM {r['peak_hwm_mib']:.1f}); second half (from "
        f"t={r['second_half_from_s']:.0f}s) {r['second_half_growth_mib']:+.1f} MiB, "
        f"slope {r['second_half_slope_mib_per_min']:+.2f} MiB/min"
    )
    say("  samples    " + "  ".join(f"{t:.0f}s:{v:.1f}" for t, v in r["samples"]))
    c = summary["cpu"]
    say(
        f"CPU          ingressd {c['ingressd_s']:.1f} s ({c['ingressd_core_share'] * 100:.0f}% of "
        f"one core), upstreams {c['upstreams_s']:.1f} s, soak clients {c['soak_client_s']:.1f} s"
    )
    if summary["problems_end"]:
        say(f"problems     {len(summary['problems_end'])} at the end (/problems):")
        for p in summary["problems_end"][:5]:
            say(f"  {p}")
    stop = summary["shutdown"]
    say(
        f"shutdown     SIGTERM -> exit in {stop['seconds']:.1f} s, exit code {stop['exit_code']} "
        f"(--shutdown-delay 0 --shutdown-grace {SHUTDOWN_GRACE_S})"
    )
    say(f"ingressd log {summary['ingressd_log_errors']} ERROR/Traceback lines")
    for line in summary["ingressd_log_error_lines"][:5]:
        say(f"  {line[:300]}")
    if summary["unexpected"]:
        say(f"\nfirst {len(summary['unexpected_details'])} unexpected answers:")
        for d in summary["unexpected_details"]:
            say(
                f"  t={d['t']:.2f}s [{d['kind']}] {d['request']}\n    got {d['got']}"
                f" in {d['elapsed_ms']} ms\n    expected {d['expected']}"
                + (f"\n    body {d['body'][:160]!r}" if d["body"] else "")
            )
    say("\n== verdict ==")
    say(
        f"{'PASS' if summary['pass'] else 'FAIL'}  zero unexpected errors   "
        f"{summary['unexpected']} in {summary['requests']} requests"
    )


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add: Callable[..., Any] = p.add_argument
    add("--duration", type=float, default=60.0, help="seconds of traffic and churn (60)")
    add("--clients", type=int, default=6, help="client threads (6)")
    add("--workers", type=int, default=1, help="ingressd serve --workers (1)")
    add("--ingress-interval", type=float, default=0.5, help="seconds between Ingress changes")
    add("--endpoint-interval", type=float, default=2.0, help="seconds between endpoint changes")
    add("--grace", type=float, default=2.0,
        help="an answer may fit a configuration replaced this long before (2 s)")  # fmt: skip
    add("--seed", type=int, default=1, help="random seed (1)")
    add("--json", type=Path, metavar="FILE", help="also write every number here")
    add("--save-log", type=Path, metavar="FILE", help="copy ingressd's log here at the end")
    args = p.parse_args(argv)
    if min(args.duration, args.ingress_interval, args.endpoint_interval) <= 0:
        p.error("--duration and the intervals must be > 0")
    if args.clients < 1 or args.workers < 1 or args.grace < 0:
        p.error("--clients and --workers must be >= 1, --grace >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    opts = Options(
        duration=args.duration,
        clients=args.clients,
        workers=args.workers,
        ingress_interval=args.ingress_interval,
        endpoint_interval=args.endpoint_interval,
        grace=args.grace,
        seed=args.seed,
    )
    tools = bench.find_tools()
    env = bench.environment(tools)
    say(
        f"soak: {env['cpu_count']} CPUs, load {' '.join(env['loadavg'])}; "
        f"{env['ingressd']} ({env['ingressd_commit']}), {env['nginx']}"
    )
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, bench._interrupt)
    try:
        result = run(tools, opts, args.save_log)
    except KeyboardInterrupt:
        print("\ninterrupted; processes stopped, temporary files removed", file=sys.stderr)
        return 130
    except bench.BenchError as exc:
        print(f"\nERROR: {exc}", file=sys.stderr)
        return 1
    summary = summarize(result)
    report(result, summary)
    if args.json:
        data = {"options": asdict(opts), "environment": env, **summary}
        args.json.write_text(json.dumps(churn._finite(data), indent=2) + "\n")
        say(f"\nwrote {args.json}")
    return 0 if summary["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
