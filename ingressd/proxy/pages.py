"""The pages of ingressd's own answers: nginx's built-in ones, byte for byte.

ingress-nginx answers its redirects and errors (ssl-redirect, app-root, the
no-route 404 of its default server, 403 of a denied source, 503 of a backend
without endpoints, 502/504 of a failed upstream, 413, 401, limits, 421...)
with nginx's built-in pages: ``Content-Type: text/html`` and a short HTML
body, the same for every request of that status. These are those pages, made
once at import, as nginx's ``src/http/ngx_http_special_response.c`` makes
them (``ngx_http_error_pages``) under ingress-nginx's default
``server_tokens off`` (nginx.tmpl: ``server_tokens {{ if
$cfg.ShowServerTokens }}on{{ else }}off{{ end }}``), whose footer is
``ngx_http_error_tail`` (``<hr><center>nginx</center>``), not the one naming the
version; with the status lines' reason phrases of nginx's
``ngx_http_header_filter_module.c`` (``ngx_http_status_lines``: "302 Moved
Temporarily", "503 Service Temporarily Unavailable", "504 Gateway Time-out").

A request without a route is answered the same: ingress-nginx's catch-all
server, without ``--default-backend-service``, proxies it to its internal
server on port 8181, whose ``location /`` is ``return 404`` (nginx.tmpl:
"backend for when default-backend-service is not configured"), so the client
sees nginx's 404 page.

Why ingressd answered (the route, the upstream that failed, the limit) is for
operators, not clients: ``Exchange.respond`` logs it (``ingressd.proxy``) and
the client gets only the page. ingress-nginx has no response header for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

# ngx_http_status_lines: the reason phrases nginx sends. A status it has none for
# goes out as "HTTP/1.1 418 " (ngx_http_header_filter formats "%03ui ").
REASONS: Final[dict[int, bytes]] = {
    200: b"OK",
    201: b"Created",
    202: b"Accepted",
    204: b"No Content",
    206: b"Partial Content",
    301: b"Moved Permanently",
    302: b"Moved Temporarily",
    303: b"See Other",
    304: b"Not Modified",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
    400: b"Bad Request",
    401: b"Unauthorized",
    402: b"Payment Required",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Not Allowed",
    406: b"Not Acceptable",
    408: b"Request Time-out",
    409: b"Conflict",
    410: b"Gone",
    411: b"Length Required",
    412: b"Precondition Failed",
    413: b"Request Entity Too Large",
    414: b"Request-URI Too Large",
    415: b"Unsupported Media Type",
    416: b"Requested Range Not Satisfiable",
    421: b"Misdirected Request",
    429: b"Too Many Requests",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Temporarily Unavailable",
    504: b"Gateway Time-out",
    505: b"HTTP Version Not Supported",
    507: b"Insufficient Storage",
}

# The statuses ngx_http_error_pages has a page for, by its title where that is not
# the status line's phrase (302's page says "Found", 401's "Authorization Required").
_TITLES: Final[dict[int, bytes]] = {
    301: b"301 Moved Permanently",
    302: b"302 Found",
    303: b"303 See Other",
    307: b"307 Temporary Redirect",
    308: b"308 Permanent Redirect",
    400: b"400 Bad Request",
    401: b"401 Authorization Required",
    402: b"402 Payment Required",
    403: b"403 Forbidden",
    404: b"404 Not Found",
    405: b"405 Not Allowed",
    406: b"406 Not Acceptable",
    408: b"408 Request Time-out",
    409: b"409 Conflict",
    410: b"410 Gone",
    411: b"411 Length Required",
    412: b"412 Precondition Failed",
    413: b"413 Request Entity Too Large",
    414: b"414 Request-URI Too Large",
    415: b"415 Unsupported Media Type",
    416: b"416 Requested Range Not Satisfiable",
    421: b"421 Misdirected Request",
    429: b"429 Too Many Requests",
    500: b"500 Internal Server Error",
    501: b"501 Not Implemented",
    502: b"502 Bad Gateway",
    503: b"503 Service Temporarily Unavailable",
    504: b"504 Gateway Time-out",
    505: b"505 HTTP Version Not Supported",
    507: b"507 Insufficient Storage",
}

# nginx's own codes for a bad request, answered with status 400 and a page of
# their own: the page's title, then the line under its heading.
_OWN_CODES: Final[dict[int, tuple[bytes, bytes]]] = {
    494: (b"400 Request Header Or Cookie Too Large", b"Request Header Or Cookie Too Large"),
    495: (b"400 The SSL certificate error", b"The SSL certificate error"),
    496: (b"400 No required SSL certificate was sent", b"No required SSL certificate was sent"),
    497: (
        b"400 The plain HTTP request was sent to HTTPS port",
        b"The plain HTTP request was sent to HTTPS port",
    ),
}

# ngx_http_error_tail: the footer under server_tokens off.
_TAIL: Final = b"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"

# ngx_http_msie_padding: added to a 4xx/5xx page for MSIE and Chrome, whose own
# "friendly" page would otherwise replace a short one (msie_padding on, nginx's
# default, which ingress-nginx keeps).
PADDING: Final = b"<!-- a padding to disable MSIE and Chrome friendly error page -->\r\n" * 6


def _page(title: bytes, heading: bytes, extra: bytes = b"") -> bytes:
    return (
        b"<html>\r\n<head><title>"
        + title
        + b"</title></head>\r\n<body>\r\n<center><h1>"
        + heading
        + b"</h1></center>\r\n"
        + extra
        + _TAIL
    )


def _pages() -> dict[int, bytes]:
    pages = {status: _page(title, title) for status, title in _TITLES.items()}
    for code, (title, line) in _OWN_CODES.items():
        pages[code] = _page(title, b"400 Bad Request", b"<center>" + line + b"</center>\r\n")
    pages[498] = pages[404]  # "canceled": the 404 page, as in ngx_http_error_pages
    return pages


PAGES: Final[dict[int, bytes]] = _pages()
# With the padding, for the statuses that get it (4xx and 5xx).
_PADDED: Final[dict[int, bytes]] = {s: p + PADDING for s, p in PAGES.items() if s >= 400}

# nginx's codes sent as another status (ngx_http_special_response_handler sets
# err_status 400 for 494-497).
_WIRE: Final[dict[int, int]] = {494: 400, 495: 400, 496: 400, 497: 400}


def wire_status(code: int) -> int:
    """The status sent for ``code``: 400 for nginx's own 494-497, else the code."""
    return _WIRE.get(code, code)


def page(code: int, padded: bool = False) -> bytes:
    """nginx's page for ``code`` (b"" for a status nginx has none for: sent
    without a body or Content-Type); ``padded``: for a client ``wants_padding``
    says nginx pads for."""
    if padded:
        found = _PADDED.get(code)
        if found is not None:
            return found
    return PAGES.get(code, b"")


def wants_padding(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether nginx pads its error pages for this request's User-Agent (the first,
    as nginx keeps): MSIE (not Opera) or Chrome, as ngx_http_process_user_agent
    classes browsers, case-sensitively; a Gecko/ browser is not Chrome."""
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"user-agent":
            if b"Opera" in value:
                return False
            msie = value.find(b"MSIE ")
            if msie >= 0 and msie + 7 < len(value):
                return True
            return b"Gecko/" not in value and b"Chrome/" in value
    return False


def has_content_type(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """An answer that brings its own body says so with a Content-Type (a
    snippet's ``return 200 "text"``): it is sent as is, not replaced by a page."""
    return any(len(n) == 12 and n.lower() == b"content-type" for n, _ in headers)
