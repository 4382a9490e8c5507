"""External authentication: the subrequest's headers, variables and sign-in URLs."""

from __future__ import annotations

import pytest

from ingressd.model.policy import ExternalAuth
from ingressd.policy.ext_auth import (
    AuthRequest,
    TemplateError,
    parse_template,
    parse_url_template,
    signin_url,
    subrequest_headers,
    variables,
)


def request(**overrides: object) -> AuthRequest:
    fields: dict[str, object] = {
        "method": "PUT",
        "scheme": "https",
        "host": "Shop.Example:8443",
        "request_uri": "/cart/a%20b?id=7&x=y",
        "client_ip": "10.0.0.9",
        "server_port": "8443",
        "request_id": "rid",
        "headers": [
            (b"Host", b"Shop.Example:8443"),
            (b"Cookie", b"s=1"),
            (b"Content-Length", b"5"),
            (b"X-Original-URL", b"http://forged/"),
            (b"X-Sent-From", b"forged"),
            (b"Authorization", b"Bearer t"),
        ],
    }
    fields.update(overrides)
    return AuthRequest(**fields)  # type: ignore[arg-type]


def test_variables_follow_nginx() -> None:
    v = variables(request())
    assert v["host"] == "shop.example"
    assert v["http_host"] == "Shop.Example:8443"
    assert v["request_uri"] == "/cart/a%20b?id=7&x=y"
    assert v["escaped_request_uri"] == "%2Fcart%2Fa%2520b%3Fid%3D7%26x%3Dy"
    assert (v["uri"], v["args"], v["is_args"]) == ("/cart/a%20b", "id=7&x=y", "?")
    assert (v["scheme"], v["remote_addr"], v["request_method"]) == ("https", "10.0.0.9", "PUT")
    assert variables(request(host="[::1]:80"))["host"] == "[::1]"
    assert variables(request(request_uri="/"))["is_args"] == ""


def test_templates() -> None:
    t = parse_template("https://${host}/x$request_uri")
    assert t.parts == ("https://", "host", "/x", "request_uri", "")
    assert t.render({"host": "a", "request_uri": "/b"}) == "https://a/x/b"
    assert parse_template("plain").render({}) == "plain"
    with pytest.raises(TemplateError, match=r"\$cookie_x is not a variable"):
        parse_template("$cookie_x")
    with pytest.raises(TemplateError):
        parse_url_template("$scheme://auth/")  # the scheme must be written out


def test_subrequest_headers_replace_what_the_client_could_forge() -> None:
    auth = ExternalAuth(url=parse_template("http://auth/"))
    req = request()
    headers = subrequest_headers(auth, req, variables(req))
    names = [n.lower() for n, _ in headers]
    assert "content-length" not in names and "host" not in names
    assert names.count("x-original-url") == 1 and names.count("x-sent-from") == 1
    d = dict(headers)
    assert d["Cookie"] == "s=1" and d["Authorization"] == "Bearer t"
    assert d["X-Original-URL"] == "https://Shop.Example:8443/cart/a%20b?id=7&x=y"
    assert d["X-Original-Method"] == "PUT"
    assert d["X-Auth-Request-Redirect"] == "/cart/a%20b?id=7&x=y"
    assert (d["X-Real-IP"], d["X-Forwarded-For"], d["X-Request-ID"]) == (
        "10.0.0.9",
        "10.0.0.9",
        "rid",
    )
    assert "X-Original-URI" not in d  # only with auth-method
    with_method = ExternalAuth(url=auth.url, method="POST")
    d = dict(subrequest_headers(with_method, req, variables(req)))
    assert (d["X-Original-URI"], d["X-Scheme"]) == ("/cart/a%20b?id=7&x=y", "https")


@pytest.mark.parametrize(
    ("signin", "param", "expected"),
    [
        (
            "https://login/start",
            "rd",
            "https://login/start?rd=https://Shop.Example:8443%2Fcart%2Fa%2520b%3Fid%3D7%26x%3Dy",
        ),
        (
            "https://login/start?a=1",
            "next",
            "https://login/start?a=1&next=https://Shop.Example:8443",
        ),
        ("https://login/start?rd=/home", "rd", "https://login/start?rd=/home"),
        ("https://login/$host?rd=x&y=1", "rd", "https://login/shop.example?rd=x&y=1"),
    ],
)
def test_signin_urls(signin: str, param: str, expected: str) -> None:
    auth = ExternalAuth(
        url=parse_template("http://auth/"), signin=parse_template(signin), signin_param=param
    )
    assert signin_url(auth, variables(request())).startswith(expected)
