"""custom-http-errors and the default-backend stand-in: where an error page comes from.

ingress-nginx (rootfs/etc/nginx/template/nginx.tmpl, controller.go
getBackendServers) does this with nginx's ``error_page``:

- A location with the custom-http-errors annotation gets
  ``proxy_intercept_errors on`` and ``error_page CODE = @custom_UPSTREAM_CODE``
  for each listed code. UPSTREAM is the default-backend annotation's Service
  ("custom-default-backend-NS-NAME") when it has endpoints, else the global
  default backend ("upstream-default-backend"). Without the annotation, the
  ConfigMap's custom-http-errors list applies (http-level ``error_page``, always
  to the global default backend); a location's own list replaces it, as nginx
  inherits ``error_page`` only from a level where none is set.
- ``@custom_UPSTREAM_CODE`` is internal, ``proxy_intercept_errors off`` (an
  error page is never intercepted again: one fetch per request), rewrites the
  URI to ``/`` (the query stays) and proxies there with the client's method and
  headers plus X-Code, X-Format ($http_accept), X-Original-URI ($request_uri),
  X-Namespace, X-Ingress-Name, X-Service-Name, X-Service-Port, X-Request-ID and
  Host. ``error_page CODE =`` without a code: the client gets the error page's
  own status.
- Without --default-backend-service (or when it has no ready endpoints) the
  global default backend is nginx's internal default server, which answers 404
  to everything: a listed status then becomes a 404. ingressd answers its own
  404 there.
- A location whose Service has no endpoints (or does not exist) is sent to the
  default-backend annotation's Service instead, when that has endpoints, with
  X-Code 503 and the same X- headers (not X-Original-URI), its path unchanged.

Only what a route's upstream (or ingressd for it) answers is intercepted, never
a gRPC route's (nginx's grpc_pass is not affected by proxy_intercept_errors),
nor an upgrade (WebSocket) request's.
"""

from __future__ import annotations

from ..model.backend import Backend
from ..model.policy import DEFAULT_POLICY
from ..model.table import Route, RouteTable
from ..policy.upstream_tls import H2_PROTOCOLS
from .decide import Forward, Headers, Respond, origin_headers


def intercepted(table: RouteTable, route: Route, status: int) -> bool:
    """Whether ``status`` answered for ``route`` is replaced by an error page."""
    policy = route.policy
    codes = policy.custom_http_errors
    if codes is None:
        codes = table.custom_http_errors
    return status in codes and policy.backend_protocol not in H2_PROTOCOLS


def error_page(
    table: RouteTable,
    route: Route,
    status: int,
    uri: str,
    query: str,
    accept: bytes | None,
) -> Forward | Respond:
    """Where the error page for ``status`` (``intercepted``) comes from: a Forward
    to the default backend, or ingressd's own 404 when there is none.

    ``uri`` is the request URI as received (path and query), ``query`` its query.
    """
    policy = route.policy
    backend: Backend | None = None
    if policy.custom_http_errors is not None:
        custom = policy.custom_default  # set only while it has endpoints
        if custom is not None:
            backend = custom
    if backend is None and table.fallback is not None:
        backend = table.fallback.backend
    endpoint = backend.pick() if backend is not None else None
    if backend is None or endpoint is None:
        return Respond(
            404,
            f"404 Not Found: no default backend serves the error page for status {status} "
            "(custom-http-errors)\n",
            route=route,
        )
    headers: Headers = (
        (b"X-Code", str(status).encode()),
        (b"X-Format", accept or b""),
        (b"X-Original-URI", uri.encode("latin-1")),
        *origin_headers(route),
    )
    target = "/?" + query if query else "/"
    page = Route("/", "Prefix", backend, route.ingress, DEFAULT_POLICY)
    return Forward(endpoint, backend, target, page, headers)
