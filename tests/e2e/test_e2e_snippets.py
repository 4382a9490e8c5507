"""End to end: snippets translated into policy, through the proxy with curl.

One ingressd serves one Ingress per behaviour (each on its own host) in front
of the echo upstreams, which answer with the request they received (and send
``X-Echo-Service``, which the header directives remove).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e_helpers import BackgroundLoop, Ingressd, nginx_page, serving_echo
from k8s_objects import ingress, path, rule

from ingressd.model.objects import Obj

A = "nginx.ingress.kubernetes.io/"


def snippet(host: str, text: str, key: str = "configuration-snippet", **more: str) -> Obj:
    annotations = {A + key: text, **{A + k.replace("_", "-"): v for k, v in more.items()}}
    return ingress(host.split(".")[0], [rule(host, path("/", "web"))], annotations=annotations)


INGRESSES = [
    # ingress-nginx's own example (docs/examples/customization/configuration-snippets)
    snippet("reqid.test", 'more_set_headers "Request-Id: $req_id";'),
    snippet(
        "headers.test",
        'more_set_headers "X-Host: $host" "X-Uri: $request_uri";\n'
        "more_clear_headers X-Echo-*;\n"
        "more_set_headers -s 404 'X-Missing: yes';\n"
        "add_header X-Ok yes;\n"
        "add_header X-Always a always;\n",
    ),
    snippet(
        "upstream.test",
        'proxy_set_header X-From-Snippet "v-$remote_addr";\n'
        "proxy_set_header X-Agent $http_user_agent;\n"
        'proxy_set_header X-Drop "";\n'
        "proxy_hide_header X-Echo-Service;\n",
    ),
    snippet("text.test", 'return 200 "hello $host\\n";'),
    snippet(
        "redirects.test",
        "rewrite ^/old/(.*)$ /new/$1 permanent;\n"
        "rewrite ^/noargs/(.*)$ https://other.example/$1? redirect;\n"
        "if ($request_uri ~ ^/away) { return 302 https://elsewhere.example$request_uri; }\n",
    ),
    snippet(
        "guard.test",
        'if ($http_x_block ~* "^yes$") { return 403; }\n'
        'if ($host = "guard.test") { set $x 1; }\n',  # refused: set is not translated
    ),
    snippet(
        "cond.test",
        'if ($http_x_block ~* "^yes$") { return 403; }\n'
        'if ($request_uri ~ "^/private") { return 404 "gone"; }\n',
    ),
    # the snippet answers before permanent-redirect (nginx.tmpl puts it first)
    snippet("first.test", "return 410;", permanent_redirect="https://new.example/"),
    # header directives apply to ingressd's own answers too
    snippet(
        "local.test",
        "add_header X-Ok yes;\nmore_set_headers 'X-M: m' 'X-Id: $req_id';\nreturn 302 /elsewhere;",
    ),
    # refused as a whole: none of it applies
    snippet("refused.test", 'more_set_headers "X-Partial: 1"; gzip on;'),
    # server-snippet: the oldest Ingress of the host gives it to every route of the host
    ingress(
        "srv-a",
        [rule("srv.test", path("/", "web"))],
        annotations={
            A + "server-snippet": 'more_set_headers "X-Server: a";\n'
            "rewrite ^/moved$ https://new.example/ permanent;\n"
        },
        created=1,
    ),
    ingress(
        "srv-b",
        [rule("srv.test", path("/b", "web"))],
        annotations={A + "server-snippet": 'more_set_headers "X-Server: b";'},
        created=2,
    ),
]


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, upstream_loop: BackgroundLoop, curl_binary: str
) -> Iterator[Ingressd]:
    with serving_echo(tmp_path_factory.mktemp("e2e-snippets"), upstream_loop, INGRESSES) as proc:
        yield proc


def test_more_set_headers_request_id_is_the_one_the_upstream_got(proxy: Ingressd) -> None:
    r = proxy.get("reqid.test", "/")
    assert r.status == 200
    assert r.header("Request-Id") == r.json()["headers"]["x-request-id"]
    r = proxy.get("reqid.test", "/", "-H", "X-Request-ID: abc123")
    assert r.header("Request-Id") == "abc123"


def test_response_headers_set_cleared_and_added(proxy: Ingressd) -> None:
    r = proxy.get("headers.test", "/x?a=1")
    assert r.status == 200
    assert r.header("X-Host") == "headers.test"
    assert r.header("X-Uri") == "/x?a=1"
    assert r.header("X-Echo-Service") is None  # more_clear_headers X-Echo-*
    assert r.header("X-Missing") is None  # -s 404 only
    assert (r.header("X-Ok"), r.header("X-Always")) == ("yes", "a")
    r = proxy.get("headers.test", "/_echo/status/404", check=False)
    assert r.status == 404
    assert r.header("X-Missing") == "yes"
    assert r.header("X-Ok") is None  # add_header: 2xx/3xx only, unless always
    assert r.header("X-Always") == "a"
    assert r.header("X-Host") == "headers.test"


def test_proxy_set_header_and_hide_header(proxy: Ingressd) -> None:
    r = proxy.get("upstream.test", "/", "-A", "probe/1.0", "-H", "X-Drop: 1")
    seen = r.json()["headers"]
    assert seen["x-from-snippet"] == "v-127.0.0.1"
    assert seen["x-agent"] == "probe/1.0"
    assert "x-drop" not in seen  # proxy_set_header X-Drop "": not sent
    assert r.header("X-Echo-Service") is None


def test_return_with_text(proxy: Ingressd) -> None:
    r = proxy.get("text.test", "/anything")
    assert (r.status, r.text, r.header("Content-Type")) == (200, "hello text.test\n", "text/html")


def test_rewrite_redirects_and_if_return(proxy: Ingressd) -> None:
    r = proxy.get("redirects.test", "/old/a/b?x=1", check=False)
    assert (r.status, r.header("Location")) == (301, "http://redirects.test/new/a/b?x=1")
    r = proxy.get("redirects.test", "/noargs/p?x=1", check=False)
    assert (r.status, r.header("Location")) == (302, "https://other.example/p")
    r = proxy.get("redirects.test", "/away/p?q=2", check=False)
    assert (r.status, r.header("Location")) == (302, "https://elsewhere.example/away/p?q=2")
    r = proxy.get("redirects.test", "/stays")
    assert (r.status, r.json()["path"]) == (200, "/stays")


def test_if_return_guards(proxy: Ingressd) -> None:
    assert proxy.get("cond.test", "/", "-H", "X-Block: YES", check=False).status == 403
    r = proxy.get("cond.test", "/private/x", check=False)
    assert (r.status, r.text) == (404, "gone")
    assert proxy.get("cond.test", "/", "-H", "X-Block: no").status == 200


def test_a_refused_snippet_with_access_control_denies(proxy: Ingressd) -> None:
    # "set" is not translated, so the whole snippet is refused; it holds "return 403",
    # which cannot be honoured alone: the route answers 403 for everyone.
    r = proxy.get("guard.test", "/", check=False)
    assert (r.status, r.body) == (403, nginx_page(403))
    proxy.wait_for_log("GET guard.test/: 403 Forbidden: configuration-snippet holds access control")


def test_snippet_answers_before_permanent_redirect(proxy: Ingressd) -> None:
    r = proxy.get("first.test", "/", check=False)
    assert (r.status, r.header("Location")) == (410, None)


def test_a_refused_snippet_applies_nothing(proxy: Ingressd) -> None:
    r = proxy.get("refused.test", "/")
    assert (r.status, r.header("X-Partial")) == (200, None)


def test_server_snippet_is_the_oldest_ingress_s_for_the_whole_host(proxy: Ingressd) -> None:
    for uri in ("/", "/b/x"):
        r = proxy.get("srv.test", uri)
        assert (r.status, r.header("X-Server")) == (200, "a"), uri
    r = proxy.get("srv.test", "/moved", check=False)
    assert (r.status, r.header("Location")) == (301, "https://new.example/")


def test_header_directives_apply_to_answers_made_here(proxy: Ingressd) -> None:
    r = proxy.get("local.test", "/x", check=False)
    assert (r.status, r.header("Location")) == (302, "http://local.test/elsewhere")
    assert (r.header("X-Ok"), r.header("X-M")) == ("yes", "m")
    assert len(r.header("X-Id") or "") == 32  # a request id, though no upstream was asked


def test_over_http2_the_return_text_has_one_content_type(proxy: Ingressd) -> None:
    host = "text.test"
    r = proxy.curl("-k", "--http2", *proxy.resolve(host), proxy.https_url(host, "/"))
    assert (r.status, r.text) == (200, "hello text.test\n")
    assert r.header_values("content-type") == ["text/html"]
    r = proxy.get(host, "/")
    assert r.header_values("Content-Type") == ["text/html"]
