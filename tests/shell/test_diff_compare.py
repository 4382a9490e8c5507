"""``ingressd diff``: comparing two answers, normalising them, reading echoes,
addresses and the report (pure functions; the live servers are in
tests/e2e/test_e2e_diff.py)."""

from __future__ import annotations

import json
import shlex

import pytest

from ingressd.diff.client import Address, Answer, Echo, read_echo, request_bytes
from ingressd.diff.compare import Difference, compare, location
from ingressd.diff.probes import Probe
from ingressd.diff.report import Report, Result, curl, render_json, render_text

REF = Address("10.0.0.1", 80, 443)  # an ingress-nginx on the standard ports
OURS = Address("127.0.0.1", 8080, 8443)
SIDES = (REF, OURS)
PROBE = Probe("GET", "http", "a.test", "/x", why=("Prefix /x: the path",), ingress="default/a")


def answer(status: int = 200, *headers: tuple[str, str], echo: Echo | None = None) -> Answer:
    return Answer(status, tuple((n.lower(), v) for n, v in headers), echo)


# -- Location ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "ours"),
    [
        ("https://a.test/x", "https://a.test:8443/x"),  # each side's own HTTPS port
        ("https://a.test:443/x", "https://a.test:8443/x"),
        ("http://a.test/x", "http://a.test:8080/x"),
        ("https://a.test/x?q=1", "https://a.test/x?q=1"),  # the default port on both
    ],
)
def test_location_ports_of_each_side_compare_equal(ref: str, ours: str) -> None:
    assert location(ref, REF) == location(ours, OURS)
    assert (
        compare(PROBE, answer(308, ("Location", ref)), answer(308, ("Location", ours)), SIDES) == ()
    )


def test_location_other_ports_are_kept() -> None:
    # ingressd redirecting https to its plain port: a real difference.
    assert location("https://a.test:8080/x", OURS) == "https://a.test:8080/x"
    assert location("https://a.test:8443/x", OURS) == "https://a.test:<https-port>/x"
    found = compare(
        PROBE,
        answer(308, ("Location", "https://a.test/x")),
        answer(308, ("Location", "https://a.test:9999/x")),
        SIDES,
    )
    assert found == (
        Difference("location", "https://a.test:<https-port>/x", "https://a.test:9999/x"),
    )


def test_location_strict_ports_and_odd_values() -> None:
    assert location("https://a.test:8443/x", OURS, strict_ports=True) == "https://a.test:8443/x"
    assert location("/relative", OURS) == "/relative"
    assert location("https://a.test:notaport/", OURS) == "https://a.test:notaport/"
    assert location("ftp://a.test:21/", OURS) == "ftp://a.test:21/"
    strict = compare(
        PROBE,
        answer(308, ("Location", "https://a.test/x")),
        answer(308, ("Location", "https://a.test:8443/x")),
        SIDES,
        strict_ports=True,
    )
    assert [d.field for d in strict] == ["location"]


# -- fields -----------------------------------------------------------------------------


def test_status_and_chosen_headers_differ() -> None:
    found = compare(
        PROBE,
        answer(401, ("WWW-Authenticate", 'Basic realm="a"'), ("Date", "Mon"), ("Server", "nginx")),
        answer(403, ("WWW-Authenticate", 'Basic realm="b"'), ("Date", "Tue"), ("Server", "x")),
        SIDES,
    )
    assert [d.field for d in found] == ["status", "header www-authenticate"]


def test_content_type_only_on_redirects_and_errors() -> None:
    ok = compare(
        PROBE,
        answer(200, ("Content-Type", "text/html")),
        answer(200, ("Content-Type", "a/b")),
        SIDES,
    )
    assert ok == ()
    err = compare(
        PROBE,
        answer(404, ("Content-Type", "text/html")),
        answer(404, ("Content-Type", "a/b")),
        SIDES,
    )
    assert [d.field for d in err] == ["header content-type"]


def test_configured_headers() -> None:
    ref = answer(200, ("X-Frame-Options", "DENY"), ("Strict-Transport-Security", "max-age=1"))
    ours = answer(200, ("Strict-Transport-Security", "max-age=2"))
    assert [d.field for d in compare(PROBE, ref, ours, SIDES)] == [
        "header strict-transport-security"
    ]
    picked = compare(PROBE, ref, ours, SIDES, ("x-frame-options",))
    assert picked == (Difference("header x-frame-options", "DENY", "(none)"),)


def test_echo_fields_when_both_sides_were_proxied() -> None:
    ref = answer(200, echo=Echo("/v2/x", "a.test", "api"))
    ours = answer(200, echo=Echo("/x", "a.test", "web"))
    assert [d.field for d in compare(PROBE, ref, ours, SIDES)] == ["upstream path", "backend"]
    # A weighted canary: which backend answered may differ per request.
    weighted = Probe("GET", "http", "a.test", "/x", same_backend=False)
    assert compare(weighted, ref, ours, SIDES) == ()
    # Different statuses: the status says it; what the upstream got is not compared.
    assert [d.field for d in compare(PROBE, answer(503), ours, SIDES)] == ["status"]


def test_failed_requests_are_errors_not_differences() -> None:
    assert compare(PROBE, Answer(error="Connection refused"), answer(200), SIDES) == ()


# -- echoes -----------------------------------------------------------------------------


def test_read_echo_of_ingressd_echo() -> None:
    body = json.dumps(
        {"service": "web", "path": "/a%2Fb", "query": "q=1", "headers": {"host": "a.test"}}
    ).encode()
    assert read_echo((), body) == Echo("/a%2Fb?q=1", "a.test", "web")
    assert read_echo((), b'{"other": 1}') is None
    assert read_echo((), b"{not json") is None
    assert read_echo((), b"") is None


def test_read_echo_of_ingress_nginx_e2e_echo() -> None:
    body = (
        b"\n\nHostname: echo-5d6f7-abcde\n\nPod Information:\n\t-no pod information available-\n\n"
        b"Request Information:\n\tclient_address=10.0.0.5\n\tmethod=GET\n\treal path=/new/x\n"
        b"\tquery=a=1\n\trequest_version=1.1\n\trequest_scheme=http\n\n"
        b"Request Headers:\n\taccept=*/*\n\thost=a.test\n\tx-forwarded-for=10.0.0.1\n"
    )
    # The pod name is no backend identity (replicas): left out.
    assert read_echo((), body) == Echo("/new/x?a=1", "a.test", None)


# -- addresses, requests, the report ------------------------------------------------------


def test_address_parse() -> None:
    assert Address.parse("127.0.0.1:8080,8443") == Address("127.0.0.1", 8080, 8443)
    assert Address.parse("nginx.local:80") == Address("nginx.local", 80, 443)
    assert Address.parse("[::1]:8080,8443") == Address("::1", 8080, 8443)
    for bad in ("127.0.0.1:8080", "127.0.0.1", ":80,443", "h:0,443", "h:80,x"):
        with pytest.raises(ValueError):
            Address.parse(bad)


def test_request_bytes_as_the_probe_says() -> None:
    probe = Probe(
        "OPTIONS",
        "https",
        "a.test",
        "/a/../b?x=%2F",
        headers=(("Origin", "https://ui.test"),),
        cookies=(("c", "always"), ("d", "1")),
    )
    wire = request_bytes(probe).decode()
    assert wire.startswith(
        "OPTIONS /a/../b?x=%2F HTTP/1.1\r\nHost: a.test\r\nOrigin: https://ui.test\r\n"
    )
    assert "Cookie: c=always; d=1\r\n" in wire and wire.endswith("Connection: close\r\n\r\n")


def test_curl_command_line() -> None:
    probe = Probe(
        "OPTIONS",
        "https",
        "a.test",
        "/x",
        headers=(("Origin", "https://o"),),
        cookies=(("c", "1"),),
    )
    args = shlex.split(curl(probe, OURS))
    assert args[:2] == ["curl", "-sS"]
    assert "--connect-to" in args and "a.test:443:127.0.0.1:8443" in args
    assert args[-1] == "https://a.test/x" and "-k" in args and "--path-as-is" in args
    assert args[args.index("-X") : args.index("-X") + 2] == ["-X", "OPTIONS"]
    assert "Origin: https://o" in args and "c=1" in args


def test_curl_to_an_ipv6_address() -> None:
    probe = Probe("GET", "http", "a.test", "/")
    assert "a.test:80:[::1]:8080" in shlex.split(curl(probe, Address("::1", 8080, 8443)))


def test_served_ingresses_without_probes_are_named() -> None:
    report = Report(
        REF, OURS, (Result(PROBE, answer(), answer(), ()),), 1, 0, served=("default/a", "x/b")
    )
    assert report.not_probed == ("x/b",)
    assert report.summary()["ingresses_not_probed"] == ["x/b"]
    assert "Not probed (1 served Ingresses without a route to probe" in render_text(report)


def test_report_exit_codes_and_rendering() -> None:
    same = Result(PROBE, answer(200), answer(200), ())
    differing = Result(PROBE, answer(308), answer(301), (Difference("status", "308", "301"),))
    failed = Result(PROBE, Answer(error="timed out"), answer(200), ())
    assert Report(REF, OURS, (same,), 1, 0).exit_code == 0
    report = Report(REF, OURS, (same, differing), 5, 3, {"POST": 2})
    assert report.exit_code == 1
    assert Report(REF, OURS, (differing, failed), 2, 0).exit_code == 2
    text = render_text(report)
    assert (
        "Ingress default/a: 1 difference\n  status: reference '308', ingressd '301' | GET" in text
    )
    assert "curl -sS" in text and "not sent (--unsafe-methods sends them): POST (2 probes)" in text
    assert text.rstrip().endswith("exit code 1")
    doc = json.loads(render_json(report))
    assert doc["summary"]["probes_over_bound"] == 3 and doc["summary"]["methods_sent"] == ["GET"]
    [entry] = doc["ingresses"]
    assert entry["differences"][0]["curl_ingressd"].endswith("http://a.test/x")
