"""A realistic traffic mix for locust against any ingressd (or any ingress-nginx).

Every request names its virtual host in an explicit ``Host`` header (and, over
HTTPS, as the TLS SNI name), so the target can be a bare address such as
127.0.0.1. The mix, by weight:

==  =====  ===========================================  =================================
 w  proto  request                                      expected
==  =====  ===========================================  =================================
 4  https  GET  TLS_HOST /                               200 from ``web``
 3  https  GET  TLS_HOST /api/users?page=N               200 from ``api`` (Prefix /api)
 2  https  POST TLS_HOST /api/orders (JSON body)         200 from ``api``, body intact
 1  https  GET  TLS_HOST /healthz                        200 from ``api`` (Exact)
 1  http   GET  TLS_HOST /api/users                      308 to https://TLS_HOST..., not followed
 2  http   GET  BLOG_HOST /blog/posts/N                  200 from ``blog`` as /posts/N (rewrite)
 2  http   GET  <random label>.WILDCARD_DOMAIN /hello    200 from ``web`` (wildcard host)
 2  http   GET  PLAIN_HOST /?q=N                         200 from ``api``
 1  http   GET  BLOG_HOST /about                         404 (no path matches)
 1  http   GET  MISSING_HOST /                           404 (no such host)
==  =====  ===========================================  =================================

Each request is checked (``catch_response=True``): a wrong status code is a
failure, and so, for the 200s, is an answer from the wrong service, at the
wrong path, or without the body that was sent, as the demo's echo upstreams
(``ingressd.echo``) describe it in their JSON. Redirects are never followed,
and certificates are not verified (the demo certificate is self-signed).

Against the demo (the bundled ``examples/`` served with echo upstreams; the
defaults below match it)::

    .venv/bin/ingressd demo                                   # shell 1
    .venv/bin/locust -f loadtests/locustfile.py --headless -u 20 -r 10 -t 30s   # shell 2

Without ``--headless``, locust serves its web UI on http://127.0.0.1:8089.

Environment variables (all optional):

=========================  ==========================  ==========================================
variable                   default                     meaning
=========================  ==========================  ==========================================
``INGRESSD_HTTP``          ``http://127.0.0.1:8080``   plain-HTTP base URL (``--host`` overrides)
``INGRESSD_HTTPS``         ``https://127.0.0.1:8443``  HTTPS base URL
``INGRESSD_TLS_HOST``      ``demo.test``               host with TLS: HTTPS routes and the redirect
``INGRESSD_BLOG_HOST``     ``blog.demo.test``          host with the rewrite of ``/blog(/|$)(.*)``
``INGRESSD_PLAIN_HOST``    ``plain.demo.test``         plain-HTTP host served by ``api``
``INGRESSD_WILDCARD``      ``apps.demo.test``          domain of a ``*.`` wildcard host rule
``INGRESSD_MISSING_HOST``  ``nowhere.test``            a host no Ingress names
``INGRESSD_CHECK_ECHO``    ``1``                       ``0``: check status codes only, for
                                                       upstreams that are not echo servers
``INGRESSD_WAIT``          ``0.1,1``                   think time between tasks, ``MIN,MAX`` s
=========================  ==========================  ==========================================
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from typing import Any
from urllib.parse import urlsplit

import urllib3
from locust import HttpUser, between, task
from locust.clients import ResponseContextManager
from requests.adapters import HTTPAdapter

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


def _env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def _wait(value: str) -> tuple[float, float]:
    low, _, high = value.partition(",")
    return float(low), float(high or low)


HTTP_BASE = _env("INGRESSD_HTTP", "http://127.0.0.1:8080").rstrip("/")
HTTPS_BASE = _env("INGRESSD_HTTPS", "https://127.0.0.1:8443").rstrip("/")
TLS_HOST = _env("INGRESSD_TLS_HOST", "demo.test")
BLOG_HOST = _env("INGRESSD_BLOG_HOST", "blog.demo.test")
PLAIN_HOST = _env("INGRESSD_PLAIN_HOST", "plain.demo.test")
WILDCARD_DOMAIN = _env("INGRESSD_WILDCARD", "apps.demo.test")
MISSING_HOST = _env("INGRESSD_MISSING_HOST", "nowhere.test")
CHECK_ECHO = _env("INGRESSD_CHECK_ECHO", "1").lower() not in ("0", "false", "no", "off")
WAIT = _wait(_env("INGRESSD_WAIT", "0.1,1"))


class SNIFromHostHeader(HTTPAdapter):
    """Send the request's ``Host`` header as the TLS SNI name, as a browser would.

    Without it a request to https://127.0.0.1 carries no SNI and gets the
    default certificate; with it the proxy picks the certificate for the host,
    as ``curl --resolve`` does. Connections are pooled per SNI name.
    """

    def build_connection_pool_key_attributes(
        self, request: Any, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        host = request.headers.get("Host") or ""
        if host_params.get("scheme") == "https" and host and not host.startswith("["):
            pool_kwargs["server_hostname"] = host.partition(":")[0]
        return host_params, pool_kwargs


def check(
    resp: ResponseContextManager,
    status: int,
    *,
    service: str | None = None,
    path: str | None = None,
    expect: dict[str, Any] | None = None,
    redirect: tuple[str, str, str] | None = None,
) -> None:
    """Mark ``resp`` a success or a failure (with a reason locust groups by).

    ``redirect``: the (scheme, host, path) the ``Location`` header must name;
    its port may be anything.
    """
    if resp.status_code != status:
        detail = resp.error if resp.status_code == 0 else resp.text[:120].strip()
        resp.failure(f"status {resp.status_code}, expected {status}: {detail}")
        return
    if redirect is not None:
        location = resp.headers.get("Location", "")
        url = urlsplit(location)
        if (url.scheme, url.hostname, url.path) != redirect:
            want = "{}://{}[:port]{}".format(*redirect)
            resp.failure(f"Location {location!r}, expected {want}")
            return
    if CHECK_ECHO and (service is not None or path is not None or expect):
        try:
            echo = resp.json()
        except ValueError:
            resp.failure(f"not an echo JSON answer: {resp.text[:80]!r}")
            return
        wanted = {"service": service, "path": path, **(expect or {})}
        for key, value in wanted.items():
            if value is None:
                continue
            got = echo
            for part in key.split("."):  # "headers.x-forwarded-proto"
                got = got.get(part) if isinstance(got, dict) else None
            if got != value:
                resp.failure(f"echo {key} is {got!r}, expected {value!r}")
                return
    resp.success()


class IngressdUser(HttpUser):
    """One visitor: browses the TLS site, calls its API, reads the blog, hits the odd 404."""

    host = HTTP_BASE  # relative paths are plain HTTP; --host overrides INGRESSD_HTTP
    wait_time = between(*WAIT)

    def on_start(self) -> None:
        self.client.verify = False  # self-signed demo certificate
        self.client.mount("https://", SNIFromHostHeader())

    def _get(self, base: str, host: str, target: str, *, name: str) -> ResponseContextManager:
        return self.client.get(
            f"{base}{target}",
            headers={"Host": host},
            name=name,
            allow_redirects=False,
            verify=False,  # per request: it beats REQUESTS_CA_BUNDLE even with trust_env
            catch_response=True,
        )

    # -- HTTPS, the TLS host ----------------------------------------------------------

    @task(4)
    def https_home(self) -> None:
        with self._get(HTTPS_BASE, TLS_HOST, "/", name="https / -> web") as resp:
            check(resp, 200, service="web", path="/", expect={"headers.x-forwarded-proto": "https"})

    @task(3)
    def https_api_users(self) -> None:
        page = random.randint(1, 50)
        target = f"/api/users?page={page}"
        with self._get(HTTPS_BASE, TLS_HOST, target, name="https /api/users -> api") as resp:
            check(resp, 200, service="api", path="/api/users", expect={"query": f"page={page}"})

    @task(2)
    def https_api_post_order(self) -> None:
        order = {
            "item": random.choice(["book", "lamp", "mug", "chair"]),
            "quantity": random.randint(1, 9),
            "note": "x" * random.randint(0, 2048),
        }
        body = json.dumps(order).encode()
        with self.client.post(
            f"{HTTPS_BASE}/api/orders",
            data=body,
            headers={"Host": TLS_HOST, "Content-Type": "application/json"},
            name="https /api/orders -> api",
            allow_redirects=False,
            verify=False,
            catch_response=True,
        ) as resp:
            check(
                resp,
                200,
                service="api",
                path="/api/orders",
                expect={
                    "method": "POST",
                    "body_bytes": len(body),
                    "body_sha256": hashlib.sha256(body).hexdigest(),
                },
            )

    @task(1)
    def https_healthz(self) -> None:
        with self._get(HTTPS_BASE, TLS_HOST, "/healthz", name="https /healthz -> api") as resp:
            check(resp, 200, service="api", path="/healthz")

    # -- plain HTTP ----------------------------------------------------------------------

    @task(1)
    def http_to_https_redirect(self) -> None:
        with self._get(
            HTTP_BASE, TLS_HOST, "/api/users", name="http /api/users -> 308 https"
        ) as resp:
            check(resp, 308, redirect=("https", TLS_HOST, "/api/users"))

    @task(2)
    def http_blog_rewrite(self) -> None:
        post = random.randint(1, 20)
        with self._get(
            HTTP_BASE, BLOG_HOST, f"/blog/posts/{post}", name="http /blog/posts/N -> blog /posts/N"
        ) as resp:
            check(resp, 200, service="blog", path=f"/posts/{post}")

    @task(2)
    def http_wildcard_host(self) -> None:
        label = random.choice(["one", "two", "shop", "team-a", "team-b"])
        host = f"{label}.{WILDCARD_DOMAIN}"
        with self._get(HTTP_BASE, host, "/hello", name="http *.wildcard /hello -> web") as resp:
            check(resp, 200, service="web", path="/hello")

    @task(2)
    def http_plain(self) -> None:
        q = random.randint(1, 1000)
        with self._get(HTTP_BASE, PLAIN_HOST, f"/?q={q}", name="http plain / -> api") as resp:
            check(resp, 200, service="api", path="/", expect={"query": f"q={q}"})

    @task(1)
    def http_path_miss(self) -> None:
        with self._get(HTTP_BASE, BLOG_HOST, "/about", name="http blog /about -> 404") as resp:
            check(resp, 404)

    @task(1)
    def http_unknown_host(self) -> None:
        with self._get(HTTP_BASE, MISSING_HOST, "/", name="http unknown host -> 404") as resp:
            check(resp, 404)
