"""proxy/pages.py and the heads http.py puts on them: ingressd's own answers are
nginx's built-in pages, under ingress-nginx's defaults (server_tokens off).

The expected bytes are written out here as nginx sends them (nginx's
src/http/ngx_http_special_response.c and ngx_http_header_filter_module.c;
tests/e2e/test_e2e_pages.py holds ingressd to a running nginx too).
"""

from __future__ import annotations

import pytest

from ingressd.proxy import http, pages

NGINX_404 = (
    b"<html>\r\n"
    b"<head><title>404 Not Found</title></head>\r\n"
    b"<body>\r\n"
    b"<center><h1>404 Not Found</h1></center>\r\n"
    b"<hr><center>nginx</center>\r\n"
    b"</body>\r\n"
    b"</html>\r\n"
)
NGINX_496 = (
    b"<html>\r\n"
    b"<head><title>400 No required SSL certificate was sent</title></head>\r\n"
    b"<body>\r\n"
    b"<center><h1>400 Bad Request</h1></center>\r\n"
    b"<center>No required SSL certificate was sent</center>\r\n"
    b"<hr><center>nginx</center>\r\n"
    b"</body>\r\n"
    b"</html>\r\n"
)
PADDING_LINE = b"<!-- a padding to disable MSIE and Chrome friendly error page -->\r\n"

# Every status ingressd answers with itself: its status line, then its page's title.
GENERATED = {
    301: (b"HTTP/1.1 301 Moved Permanently", b"301 Moved Permanently"),
    302: (b"HTTP/1.1 302 Moved Temporarily", b"302 Found"),
    303: (b"HTTP/1.1 303 See Other", b"303 See Other"),
    307: (b"HTTP/1.1 307 Temporary Redirect", b"307 Temporary Redirect"),
    308: (b"HTTP/1.1 308 Permanent Redirect", b"308 Permanent Redirect"),
    400: (b"HTTP/1.1 400 Bad Request", b"400 Bad Request"),
    401: (b"HTTP/1.1 401 Unauthorized", b"401 Authorization Required"),
    403: (b"HTTP/1.1 403 Forbidden", b"403 Forbidden"),
    404: (b"HTTP/1.1 404 Not Found", b"404 Not Found"),
    408: (b"HTTP/1.1 408 Request Time-out", b"408 Request Time-out"),
    413: (b"HTTP/1.1 413 Request Entity Too Large", b"413 Request Entity Too Large"),
    414: (b"HTTP/1.1 414 Request-URI Too Large", b"414 Request-URI Too Large"),
    421: (b"HTTP/1.1 421 Misdirected Request", b"421 Misdirected Request"),
    429: (b"HTTP/1.1 429 Too Many Requests", b"429 Too Many Requests"),
    494: (b"HTTP/1.1 400 Bad Request", b"400 Request Header Or Cookie Too Large"),
    495: (b"HTTP/1.1 400 Bad Request", b"400 The SSL certificate error"),
    496: (b"HTTP/1.1 400 Bad Request", b"400 No required SSL certificate was sent"),
    500: (b"HTTP/1.1 500 Internal Server Error", b"500 Internal Server Error"),
    502: (b"HTTP/1.1 502 Bad Gateway", b"502 Bad Gateway"),
    503: (b"HTTP/1.1 503 Service Temporarily Unavailable", b"503 Service Temporarily Unavailable"),
    504: (b"HTTP/1.1 504 Gateway Time-out", b"504 Gateway Time-out"),
}

CHROME = (
    b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/120.0 Safari/537.36"
)
FIREFOX = b"Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
MSIE = b"Mozilla/4.0 (compatible; MSIE 8.0; Windows NT 6.1)"


def test_the_404_and_496_pages_are_nginx_s_bytes() -> None:
    assert pages.page(404) == NGINX_404
    assert pages.page(496) == NGINX_496
    assert pages.wire_status(496) == 400 and pages.wire_status(404) == 404


@pytest.mark.parametrize("code", sorted(GENERATED))
def test_every_generated_status_has_nginx_s_line_and_page(code: int) -> None:
    line, title = GENERATED[code]
    status = pages.wire_status(code)
    assert http.status_line(status) == line + b"\r\n"
    body = pages.page(code)
    heading = b"400 Bad Request" if code in (494, 495, 496) else title
    assert body.startswith(
        b"<html>\r\n<head><title>" + title + b"</title></head>\r\n<body>\r\n"
        b"<center><h1>" + heading + b"</h1></center>\r\n"
    )
    assert body.endswith(b"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
    answer = http.local_response(status, body, keep_alive=True)
    head, _, sent = answer.partition(b"\r\n\r\n")
    assert sent == body
    assert b"\r\nContent-Type: text/html\r\n" in head
    assert head.endswith(b"\r\nContent-Length: %d" % len(body))


def test_head_gets_the_head_of_the_page_without_it() -> None:
    answer = http.local_response(404, pages.page(404), keep_alive=True, head_only=True)
    assert answer.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"\r\nContent-Type: text/html\r\nContent-Length: 146\r\n" in answer
    assert answer.endswith(b"\r\n\r\n")


def test_a_redirect_has_its_page_and_location() -> None:
    answer = http.local_response(
        308, pages.page(308), keep_alive=True, location="https://example.test/"
    )
    assert answer.startswith(b"HTTP/1.1 308 Permanent Redirect\r\n")
    assert b"\r\nLocation: https://example.test/\r\n" in answer
    assert answer.endswith(
        b"<center><h1>308 Permanent Redirect</h1></center>\r\n" + NGINX_404[-46:]
    )


def test_a_status_nginx_has_no_page_for_goes_bare() -> None:
    # nginx: "HTTP/1.1 418 " (no phrase), no Content-Type, an empty body
    assert pages.page(418) == b"" and pages.page(418, padded=True) == b""
    answer = http.local_response(418, pages.page(418), keep_alive=True)
    assert answer.startswith(b"HTTP/1.1 418 \r\n")
    assert b"Content-Type" not in answer
    assert b"\r\nContent-Length: 0\r\n" in answer


def test_a_body_with_its_own_content_type_is_sent_as_is() -> None:
    # a snippet's return 200 "text" (ingress-nginx's default_type text/html)
    answer = http.local_response(
        200, b"hello", keep_alive=True, headers=((b"Content-Type", b"text/html"),)
    )
    assert answer.count(b"Content-Type") == 1 and answer.endswith(b"\r\n\r\nhello")
    assert pages.has_content_type(((b"content-type", b"x"),))
    assert not pages.has_content_type(((b"Location", b"/"),))


def test_204_has_neither_body_nor_length() -> None:
    answer = http.local_response(204, pages.page(204), keep_alive=True)
    assert answer.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert b"Content-Length" not in answer and b"Content-Type" not in answer


@pytest.mark.parametrize(
    ("agent", "padded"),
    [
        (CHROME, True),
        (MSIE, True),
        (FIREFOX, False),  # Gecko/ comes first in nginx's checks
        (b"Opera/9.80 (compatible; MSIE 8.0)", False),  # Opera is never MSIE
        (b"curl/8.0", False),
        (b"MSIE 8", False),  # "MSIE " must have room for a version after it
        (b"chrome/120", False),  # case-sensitive, as ngx_strstrn
    ],
)
def test_msie_and_chrome_get_nginx_s_padding(agent: bytes, padded: bool) -> None:
    headers = [(b"Host", b"x"), (b"User-Agent", agent), (b"user-agent", CHROME)]
    assert pages.wants_padding(headers) is padded  # the first User-Agent decides
    page = pages.page(404, pages.wants_padding(headers))
    assert page == NGINX_404 + (PADDING_LINE * 6 if padded else b"")


def test_padding_is_for_errors_only() -> None:
    assert pages.page(301, padded=True) == pages.page(301)
    assert pages.page(503, padded=True) == pages.page(503) + PADDING_LINE * 6
    assert not pages.wants_padding([])


def test_an_upstream_s_reason_phrase_is_kept_and_an_empty_one_is_nginx_s() -> None:
    assert http.status_line(302, b"Found") == b"HTTP/1.1 302 Found\r\n"
    assert http.status_line(302, b"Moved Temporarily") == b"HTTP/1.1 302 Moved Temporarily\r\n"
    assert http.status_line(302) == b"HTTP/1.1 302 Moved Temporarily\r\n"
    assert http.status_line(422) == b"HTTP/1.1 422 \r\n"
    assert http.status_line(200, b"Fine") == b"HTTP/1.1 200 Fine\r\n"
    assert http.status_line(100) == b"HTTP/1.1 100 Continue\r\n"
