"""Requests for hosts that check client certificates (``auth-tls-*``): the verdict
of ``policy/client_auth.py`` turned into what ingress-nginx answers.

Run only when the table has such a host (``RouteTable.client_auth``), after
``decide``; whatever the route, the host's check comes first, as nginx's
(``ngx_http_process_request`` answers a bad certificate before any location).

**The SNI rule.** A client certificate is asked for in the handshake, by SNI;
a request is for a host by its ``Host``. So a request for a host that checks
client certificates must arrive on a connection whose SNI was that very host,
else 421 Misdirected Request: the handshake under another name (another
tenant's, or an unknown one that got the default certificate) asked for no
certificate, or for one against another CA. nginx answers the same 421
(``ngx_http_set_virtual_server``: "client attempted to request the server name
different from the one that was negotiated", when the Host's server has
``ssl_verify_client``). A connection without SNI asked for no certificate: its
requests are judged as sending none (400 with ``on``, as nginx's 496). Plain
HTTP sent no certificate either: it is redirected to https where the route
says so (``ssl-redirect``), else judged the same.
"""

from __future__ import annotations

from ..model.policy import ClientAuth
from ..model.table import RouteTable
from ..policy.client_auth import Verdict, judge, matches_cn
from .decide import Action, Forward, RequestHead, Respond, normalize_host

_REASONS = {
    # nginx's 495 and 496: both sent as status 400 with a page of their own
    # (proxy/pages.py), the reason only in the log
    495: "400 Bad Request: The SSL certificate error\n",
    496: "400 Bad Request: No required SSL certificate was sent\n",
}


def apply(
    table: RouteTable, head: RequestHead, tls_object: object | None, action: Action
) -> Action:
    """``action`` (what ``decide`` said), or the host's client certificate answer."""
    host = normalize_host(head.host)
    vhost = table.find_host(host)
    auth = vhost.client_auth if vhost is not None else None
    if auth is None:
        return action
    route = action.route
    if not head.tls:
        if isinstance(action, Respond) and action.location is not None:
            return action  # the https redirect (or another) comes first, as in nginx
        return _answer(auth, judge(None, auth), action)
    sni = getattr(tls_object, "ingressd_sni", None)
    if sni is not None and sni != host:
        return Respond(
            421,
            f"421 Misdirected Request: {host} checks client certificates; connect with it "
            "as the TLS server name (SNI)\n",
            route=route,
        )
    verdict = judge(tls_object if sni is not None else None, auth)
    return _answer(auth, verdict, action)


def _answer(auth: ClientAuth, verdict: Verdict, action: Action) -> Action:
    route = action.route
    status = verdict.status
    if status == 421:
        return Respond(
            421,
            "421 Misdirected Request: the host's client certificate settings changed since "
            "this connection was made; connect again\n",
            route=route,
        )
    if status:
        page = auth.ref.error_page
        if page is not None:
            # nginx.tmpl: error_page 495 496 = URL (a 302 to it)
            return Respond(302, f"302 Redirect to {page}\n", location=page, route=route)
        return Respond(status, _REASONS[status], route=route)
    if not matches_cn(auth, verdict):
        return Respond(403, "403 Forbidden: client certificate unauthorized\n", route=route)
    if isinstance(action, Forward):
        return action.copy(request_headers=(*action.request_headers, *verdict.headers(auth)))
    return action


CLIENT_HEADERS = frozenset(
    (b"ssl-client-verify", b"ssl-client-subject-dn", b"ssl-client-issuer-dn", b"ssl-client-cert")
)


def subrequest_headers(
    headers: list[tuple[bytes, bytes]], fwd: Forward
) -> list[tuple[bytes, bytes]]:
    """The client's headers for the auth-url subrequest: on a host that checks client
    certificates, with the ssl-client-* headers ingressd sets in place of the client's
    own (nginx.tmpl sets them in the auth location as in the proxied one)."""
    ours = [h for h in fwd.request_headers if h[0] in CLIENT_HEADERS]
    if not ours:
        return headers
    kept = [h for h in headers if h[0].lower() not in CLIENT_HEADERS]
    return kept + [h for h in ours if h[1]]
