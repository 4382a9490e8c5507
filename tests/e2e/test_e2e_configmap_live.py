"""End to end against the API test server (kube_apiserver.py, the real wire protocol):
the controller ConfigMap is created, then changed live, and what the client or the
upstream sees follows. One API server and one ingressd serve the whole module; each
test sets the ConfigMap it needs and waits until ingressd serves it.

Key groups: client addresses (use-forwarded-headers, forwarded-for-header,
compute-full-forwarded-for, proxy-real-ip-cidr, enable-real-ip, use-proxy-protocol,
proxy-protocol-header-timeout; use-proxy-protocol at start also in manifest mode, with
an ingressd of its own); headers and redirects (server-tokens,
allow-backend-server-header, generate-request-id, proxy-add-original-uri-header,
http-redirect-code, use-http2); the access log (disable-access-log,
enable-access-log-for-default-backend, log-format-upstream, log-format-escape-json,
log-format-escape-none, the enable-access-log annotation); retry-non-idempotent;
upstream-keepalive-time; and, live against the API server, the groups implemented
before (HSTS, TLS, redirects, sizes and timeouts, header names, limit statuses,
blocking, custom-http-errors) that the manifest-mode tests cover one restart each.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import (
    LOCALHOST,
    BackgroundLoop,
    CurlResult,
    EchoServers,
    FaultyUpstream,
    Ingressd,
    IngressdFactory,
    backends,
    curl,
    wait_for,
)
from k8s_objects import endpoint_slice, ingress, path, rule, service, tls_entry, tls_secret
from kube_apiserver import KubeApiServer

from ingressd.echo import SERVICE_HEADER
from ingressd.model.objects import Obj

pytestmark = pytest.mark.timeout(120)

NS, NAME = "ingressd", "ingressd-controller"
CLIENT = "203.0.113.9"


def controller(data: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": NAME, "namespace": NS},
        "data": data,
    }


def site(echo: EchoServers, resetting: int, counting: int) -> list[Obj]:
    """``resetting``: the port of an upstream that closes every connection unanswered;
    ``counting``: one that answers 200 and counts its connections."""
    spread = [
        endpoint_slice("resetting", [LOCALHOST], port, name=f"resetting-{i}")
        for i, port in enumerate((resetting, echo["web"]))
    ]
    return [
        *backends(echo),
        service("resetting"),
        *spread,
        ingress("reset", [rule("reset.test", path("/", "resetting"))]),
        service("counting"),
        endpoint_slice("counting", [LOCALHOST], counting),
        ingress("count", [rule("count.test", path("/", "counting"))]),
        ingress(
            "resetann",
            [rule("resetann.test", path("/", "resetting"))],
            annotations={"nginx.ingress.kubernetes.io/proxy-next-upstream": "error timeout"},
        ),
        tls_secret("secure-tls", ["secure.test"]),
        ingress(
            "secure",
            [rule("secure.test", path("/", "web"))],
            tls=[tls_entry(["secure.test"], "secure-tls")],
        ),
        ingress("plain", [rule("plain.test", path("/", "api"))]),
        ingress(
            "limited",
            [rule("limited.test", path("/", "api"))],
            annotations={
                "nginx.ingress.kubernetes.io/limit-rps": "1",
                "nginx.ingress.kubernetes.io/limit-burst-multiplier": "1",
            },
        ),
    ]


class Cluster:
    """The module's API server and the ingressd that reads it."""

    counting: FaultyUpstream  # count.test's upstream

    def __init__(self, server: KubeApiServer, tmp: Path) -> None:
        self.server = server
        self.tmp = tmp
        # The default backend (web) serves unmatched hosts and the error pages; passive
        # health off, so a failing endpoint keeps its turn (retry-non-idempotent).
        self.ing = self.start(
            "main", "--default-backend-service", "default/web", "--upstream-max-fails", "0"
        )

    def configure(self, data: dict[str, str], ready: Callable[[], bool], what: str) -> None:
        """Set the ConfigMap's data and wait until ingressd serves it."""
        self.server.apply(controller(data))
        wait_for(ready, 10, what=what)

    def problems(self) -> str:
        url = f"http://{LOCALHOST}:{self.ing.admin_port}/problems"
        return curl(url, check=False).body.decode()

    def start(self, name: str, *extra: str) -> Ingressd:
        """Another ingressd on the same API server (stopped by the caller)."""
        kubeconfig = self.server.write_kubeconfig(self.tmp / "kubeconfig", "token", namespace=NS)
        ing = Ingressd(
            None,
            self.tmp / f"ingressd-{name}.log",
            extra_args=["--kubeconfig", str(kubeconfig), "--configmap", f"{NS}/{NAME}", *extra],
            stdout_path=self.tmp / f"stdout-{name}.log",
        )
        return ing.start()

    def access_log(self) -> str:
        """The main ingressd's stdout: its access log."""
        return (self.tmp / "stdout-main.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, upstream_loop: BackgroundLoop, curl_binary: str
) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("configmap-live")
    echo = EchoServers(upstream_loop, ["web", "api"])
    resetting = FaultyUpstream(upstream_loop, "reset")
    counting = FaultyUpstream(upstream_loop, "status:200")
    server = KubeApiServer(tokens={"token": "controller"}, bookmark_interval=0.5)
    server.start()
    found: Cluster | None = None
    try:
        for obj in [*site(echo, resetting.port, counting.port), controller({})]:
            server.apply(obj)
        found = Cluster(server, tmp)
        found.counting = counting
        yield found
    finally:
        if found is not None:
            found.ing.stop()
        server.stop()
        echo.close()
        resetting.close()
        counting.close()


def echoed(result: CurlResult) -> dict[str, Any]:
    assert result.status == 200, result
    headers: dict[str, Any] = result.json()["headers"]
    return headers


def forwarding(ing: Ingressd, *headers: str, host: str = "plain.test") -> dict[str, Any]:
    args = [arg for h in headers for arg in ("-H", h)]
    return echoed(ing.get(host, "/", *args, check=False))


# -- client addresses -------------------------------------------------------------------

SENT = (
    f"X-Forwarded-For: {CLIENT}",
    "X-Forwarded-Proto: https",
    "X-Forwarded-Port: 8443",
    "X-Forwarded-Host: public.example",
)


def test_client_address_keys_decide_what_the_upstream_is_told(cluster: Cluster) -> None:
    ing = cluster.ing
    # No key: the client's forwarding headers are not believed (the peer is 127.0.0.1).
    cluster.configure({}, lambda: forwarding(ing, *SENT)["x-real-ip"] == LOCALHOST, "defaults")
    h = forwarding(ing, *SENT)
    assert h["x-forwarded-for"] == LOCALHOST
    assert h["x-forwarded-proto"] == "http" and h["x-scheme"] == "http"
    assert h["x-forwarded-port"] == str(ing.http_port)
    assert h["x-forwarded-host"] == "plain.test" and h["host"] == "plain.test"
    assert h["x-original-forwarded-for"] == CLIENT
    assert ing.get("secure.test", "/", "-H", "X-Forwarded-Proto: https", check=False).status == 308

    # use-forwarded-headers: every IPv4 peer believed (proxy-real-ip-cidr's default);
    # X-Forwarded-For is the client alone, as ingress-nginx's $remote_addr.
    cluster.configure(
        {"use-forwarded-headers": "true"},
        lambda: forwarding(ing, *SENT)["x-real-ip"] == CLIENT,
        "use-forwarded-headers",
    )
    h = forwarding(ing, *SENT)
    assert h["x-forwarded-for"] == CLIENT
    assert h["x-forwarded-proto"] == "https" and h["x-scheme"] == "https"
    assert h["x-forwarded-port"] == "8443"
    assert h["x-forwarded-host"] == "public.example" and h["host"] == "public.example"
    # The load balancer terminated TLS: no redirect loop; without the header, redirected.
    assert ing.get("secure.test", "/", "-H", "X-Forwarded-Proto: https").status == 200
    assert ing.get("secure.test", "/", check=False).status == 308
    # Headers it did not send are ingressd's own.
    h = forwarding(ing, f"X-Forwarded-For: {CLIENT}")
    assert (h["x-forwarded-proto"], h["x-forwarded-host"]) == ("http", "plain.test")
    # HTTP/2 the same
    r = curl(
        "-k",
        "--http2",
        *ing.resolve("plain.test"),
        *(arg for s in SENT for arg in ("-H", s)),
        ing.https_url("plain.test"),
    )
    h2 = echoed(r)
    assert (h2["x-real-ip"], h2["x-forwarded-for"]) == (CLIENT, CLIENT)
    assert (h2["x-forwarded-proto"], h2["x-forwarded-port"]) == ("https", "8443")

    # compute-full-forwarded-for: the chain with the peer appended.
    cluster.configure(
        {"use-forwarded-headers": "true", "compute-full-forwarded-for": "true"},
        lambda: forwarding(ing, *SENT)["x-forwarded-for"] == f"{CLIENT}, {LOCALHOST}",
        "compute-full-forwarded-for",
    )
    assert forwarding(ing, *SENT)["x-real-ip"] == CLIENT

    # forwarded-for-header: the client named in another header.
    cluster.configure(
        {"use-forwarded-headers": "true", "forwarded-for-header": "CF-Connecting-IP"},
        lambda: forwarding(ing, "CF-Connecting-IP: 198.51.100.4")["x-real-ip"] == "198.51.100.4",
        "forwarded-for-header",
    )
    assert forwarding(ing, f"X-Forwarded-For: {CLIENT}")["x-real-ip"] == LOCALHOST

    # proxy-real-ip-cidr that leaves the peer out: nothing it says is believed.
    cluster.configure(
        {"use-forwarded-headers": "true", "proxy-real-ip-cidr": "10.0.0.0/8"},
        lambda: forwarding(ing, *SENT)["x-forwarded-proto"] == "http",
        "proxy-real-ip-cidr",
    )
    h = forwarding(ing, *SENT)
    assert (h["x-forwarded-for"], h["x-real-ip"]) == (LOCALHOST, LOCALHOST)
    assert ing.get("secure.test", "/", "-H", "X-Forwarded-Proto: https", check=False).status == 308

    # enable-real-ip: the address believed, the rest of the X-Forwarded-* not.
    cluster.configure(
        {"enable-real-ip": "true"},
        lambda: forwarding(ing, *SENT)["x-real-ip"] == CLIENT,
        "enable-real-ip",
    )
    h = forwarding(ing, *SENT)
    assert h["x-forwarded-for"] == CLIENT
    assert (h["x-forwarded-proto"], h["host"]) == ("http", "plain.test")

    # An invalid value: reported, its default used, the rest applied.
    cluster.configure(
        {"use-forwarded-headers": "true", "proxy-real-ip-cidr": "10.0.0.0/40"},
        lambda: "proxy-real-ip-cidr" in cluster.problems(),
        "the invalid proxy-real-ip-cidr reported",
    )
    assert forwarding(ing, *SENT)["x-real-ip"] == CLIENT  # 0.0.0.0/0 applies


def proxy_v1_get(port: int, host: str, source: str, extra: str = "") -> bytes:
    """A PROXY protocol v1 header naming ``source``, then a GET; the response head."""
    with socket.create_connection((LOCALHOST, port), timeout=5) as sock:
        sock.sendall(
            f"PROXY TCP4 {source} 127.0.0.1 40000 {port}\r\n".encode()
            + f"GET / HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_use_proxy_protocol_is_taken_at_start_and_a_change_needs_a_restart(
    cluster: Cluster,
) -> None:
    # The module's ingressd started without it: set live, it is reported, not half applied.
    ing = cluster.ing
    cluster.configure(
        {"use-proxy-protocol": "true"},
        lambda: "use-proxy-protocol=true needs a restart" in cluster.problems(),
        "restart needed reported",
    )
    assert ing.get("plain.test", "/").status == 200  # plain HTTP still served
    ing.wait_for_log("use-proxy-protocol=true needs a restart")

    # A process started now takes it: the PROXY header's address is the client.
    other = cluster.start("proxy-protocol")
    try:
        got = proxy_v1_get(other.http_port, "plain.test", "198.51.100.20")
        assert got.startswith(b"HTTP/1.1 200"), got[:200]
        assert b'"x-real-ip": "198.51.100.20"' in got or b'"x-real-ip":"198.51.100.20"' in got
        assert other.get("plain.test", "/", check=False, max_time=3).status != 200
        assert (
            "needs a restart"
            not in curl(
                f"http://{LOCALHOST}:{other.admin_port}/problems", check=False
            ).body.decode()
        )

        # With use-forwarded-headers too, the PROXY address stays the client: no header
        # replaces it (ingress-nginx: real_ip_header proxy_protocol).
        spoof = "X-Forwarded-For: 203.0.113.66\r\n"

        def applied() -> bytes | None:
            # server-tokens, set with it, says when the process serves the new settings
            got = proxy_v1_get(other.http_port, "plain.test", "198.51.100.20", spoof)
            return got if b"\r\nServer: ingressd\r\n" in got else None

        cluster.configure(
            {"use-proxy-protocol": "true", "use-forwarded-headers": "true", "server-tokens": "1"},
            lambda: True,
            "use-forwarded-headers",
        )
        got = wait_for(applied, 10, what="use-forwarded-headers in the other process")
        assert b"198.51.100.20" in got and b"203.0.113.66, " not in got
        body = json.loads(got.partition(b"\r\n\r\n")[2])
        assert body["headers"]["x-real-ip"] == "198.51.100.20"
        assert body["headers"]["x-forwarded-for"] == "198.51.100.20"

        # proxy-protocol-header-timeout applies live to new connections.
        cluster.configure(
            {"use-proxy-protocol": "true", "proxy-protocol-header-timeout": "300ms"},
            lambda: "proxy-protocol-header-timeout" not in cluster.problems(),
            "proxy-protocol-header-timeout",
        )

        def closed_within() -> float:
            # The other process applies the ConfigMap a little after the main one
            # reported it: until then its 5 s default holds (a timeout here), so retry.
            with socket.create_connection((LOCALHOST, other.http_port), timeout=3) as sock:
                began = time.monotonic()
                try:
                    assert sock.recv(1) == b""  # no header sent: closed by ingressd
                except TimeoutError:
                    return float("inf")
                return time.monotonic() - began

        wait_for(lambda: closed_within() < 2.0, 15, what="the 300ms header timeout")
    finally:
        other.stop()


# -- headers and redirects --------------------------------------------------------------


def tls_version(ing: Ingressd) -> str:
    """The HTTP version curl --http2 ends up speaking over TLS (ALPN)."""
    args = ("-k", "--http2", "-o", "/dev/null", "-w", "%{http_version}")
    return curl(*args, *ing.resolve("plain.test"), ing.https_url("plain.test")).write_out


def test_header_keys_change_what_clients_and_upstreams_see(cluster: Cluster) -> None:
    ing = cluster.ing
    cluster.configure({}, lambda: ing.get("plain.test", "/").header("Server") is None, "defaults")
    # Defaults: no Server header (neither the upstream's nor ingressd's), a request id
    # made for a request without one, no X-Original-URI, 308 to HTTPS, h2 offered.
    assert ing.get("secure.test", "/", check=False).header("Server") is None  # ingressd's 308
    h = echoed(ing.get("plain.test", "/a?b=1"))
    assert len(h["x-request-id"]) == 32 and "x-original-uri" not in h
    assert ing.get("secure.test", "/", check=False).status == 308
    assert tls_version(ing) == "2"

    cluster.configure(
        {
            "server-tokens": "true",
            "generate-request-id": "false",
            "proxy-add-original-uri-header": "true",
            "http-redirect-code": "301",
            "use-http2": "false",
        },
        lambda: ing.get("plain.test", "/").header("Server") == "ingressd",
        "server-tokens",
    )
    assert ing.get("secure.test", "/", check=False).header("Server") == "ingressd"  # its 301
    h = echoed(ing.get("plain.test", "/a?b=1"))
    assert "x-request-id" not in h  # not made up: only the client's is passed on
    assert h["x-original-uri"] == "/a?b=1"
    assert echoed(ing.get("plain.test", "/", "-H", "X-Request-ID: mine"))["x-request-id"] == "mine"
    redirect = ing.get("secure.test", "/p", check=False)
    assert redirect.status == 301 and redirect.header("Location").endswith("/p")
    assert tls_version(ing) == "1.1"
    over_tls = curl("-k", "--http2", *ing.resolve("plain.test"), ing.https_url("plain.test"))
    assert over_tls.header("Server") == "ingressd"

    # allow-backend-server-header: the upstream's own (aiohttp's) Server is passed on.
    cluster.configure(
        {"server-tokens": "true", "allow-backend-server-header": "true"},
        lambda: "aiohttp" in (ing.get("plain.test", "/").header("Server") or ""),
        "allow-backend-server-header",
    )
    assert ing.get("secure.test", "/", check=False).header("Server") == "ingressd"  # its 308
    assert tls_version(ing) == "2"  # use-http2 back to its default
    h2 = curl("-k", "--http2", *ing.resolve("plain.test"), ing.https_url("plain.test"))
    assert "aiohttp" in (h2.header("server") or "")
    # without server-tokens it does nothing, as in ingress-nginx (#6733)
    cluster.configure(
        {"allow-backend-server-header": "true"},
        lambda: ing.get("plain.test", "/").header("Server") is None,
        "allow-backend-server-header alone",
    )


# -- the access log ----------------------------------------------------------------------


def test_access_log_keys_decide_which_lines_are_written_and_how(cluster: Cluster) -> None:
    ing = cluster.ing
    marks = iter(range(1000))

    def request(host: str, *args: str) -> str:
        """A request with a path of its own, to find its line by."""
        target = f"/mark-{next(marks)}"
        ing.get(host, target, *args, check=False)
        return target

    def logged(target: str) -> str | None:
        lines = cluster.access_log().splitlines()
        found = [line for line in lines if f"{target} " in line or f'"{target}"' in line]
        return found[0] if found else None

    def appears(target: str) -> str | None:
        """``target``'s line, if it is written within a second (the log flushes every 100 ms)."""
        deadline = time.monotonic() + 1.0
        while (found := logged(target)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return found

    def written(target: str) -> str:
        return wait_for(lambda: logged(target), 5, what=f"the line of {target}")

    def not_written(target: str, after: str) -> None:
        written(after)  # a later request's line is there: this one's would be too
        assert logged(target) is None

    # Defaults: json lines; what no rule takes (the default backend's) is left out, as
    # ingress-nginx.
    cluster.configure({}, lambda: appears(request("plain.test")) is not None, "a json line")
    line = json.loads(written(request("plain.test")))
    assert line["ingress"] == "default/plain" and line["status"] == 200
    not_written(request("nowhere.test"), after=request("plain.test"))

    cluster.configure(
        {"enable-access-log-for-default-backend": "true"},
        lambda: appears(request("nowhere.test")) is not None,
        "enable-access-log-for-default-backend",
    )
    line = json.loads(written(request("nowhere.test")))  # served by the default backend
    assert line["ingress"] == "" and line["service"] == "default/web:80"

    # log-format-upstream with the escaping keys
    fmt = '$remote_addr "$request" $status [$proxy_upstream_name] "$http_x_note" $http_x_none'
    cluster.configure(
        {"log-format-upstream": fmt},
        lambda: (appears(request("plain.test")) or "").startswith("127.0.0.1 "),
        "log-format-upstream",
    )
    target = request("plain.test", "-H", 'X-Note: say "hi"')
    assert written(target) == (
        f'127.0.0.1 "GET {target} HTTP/1.1" 200 [default/api:80] "say \\x22hi\\x22" -'
    )
    cluster.configure(
        {"log-format-upstream": fmt, "log-format-escape-json": "true"},
        lambda: '\\"' in (appears(request("plain.test", "-H", 'X-Note: "')) or ""),
        "log-format-escape-json",
    )
    target = request("plain.test", "-H", 'X-Note: say "hi"')
    assert written(target).endswith('[default/api:80] "say \\"hi\\"" ')
    cluster.configure(
        {"log-format-upstream": fmt, "log-format-escape-none": "true"},
        lambda: '""' in (appears(request("plain.test", "-H", 'X-Note: "')) or ""),
        "log-format-escape-none",
    )
    # An unknown variable: reported, the default line used.
    cluster.configure(
        {"log-format-upstream": "$remote_addr $geoip2_city"},
        lambda: (appears(request("plain.test")) or "").startswith("{"),
        "the default line back",
    )
    assert "$geoip2_city is not a variable ingressd logs" in cluster.problems()

    # The enable-access-log annotation: that route's requests only.
    quiet = ingress(
        "quiet",
        [rule("quiet.test", path("/", "web"))],
        annotations={"nginx.ingress.kubernetes.io/enable-access-log": "false"},
    )
    cluster.server.apply(quiet)
    wait_for(lambda: ing.get("quiet.test", "/", check=False).status == 200, 10, what="quiet")
    not_written(request("quiet.test"), after=request("plain.test"))

    # disable-access-log: nothing at all.
    def unlogged() -> bool:
        return appears(request("plain.test")) is None

    cluster.configure({"disable-access-log": "true"}, unlogged, "disable-access-log")
    quiet_path = request("plain.test")
    cluster.configure({}, lambda: appears(request("plain.test")) is not None, "on again")
    assert logged(quiet_path) is None


# -- the other key groups, live against the API server -----------------------------------


def https(ing: Ingressd, host: str, *args: str) -> CurlResult:
    return curl("-k", *ing.resolve(host), *args, ing.https_url(host, "/x"), check=False)


def test_hsts_keys(cluster: Cluster) -> None:
    ing = cluster.ing
    default = "max-age=31536000; includeSubDomains"
    cluster.configure(
        {}, lambda: https(ing, "secure.test").header("Strict-Transport-Security") == default, "hsts"
    )
    assert https(ing, "plain.test").header("Strict-Transport-Security") is None
    cluster.configure(
        {"hsts-max-age": "600", "hsts-include-subdomains": "false", "hsts-preload": "true"},
        lambda: (
            https(ing, "secure.test").header("Strict-Transport-Security") == "max-age=600; preload"
        ),
        "hsts-max-age, -include-subdomains, -preload",
    )
    cluster.configure(
        {"hsts": "false"},
        lambda: https(ing, "secure.test").header("Strict-Transport-Security") is None,
        "hsts: false",
    )


def test_tls_keys(cluster: Cluster) -> None:
    ing = cluster.ing

    def handshake(*args: str) -> int:
        return https(ing, "secure.test", *args).status

    cluster.configure({}, lambda: handshake("--tls-max", "1.2") == 200, "TLS 1.2 by default")
    cluster.configure(
        {"ssl-protocols": "TLSv1.3"},
        lambda: handshake("--tls-max", "1.2") == 0,
        "ssl-protocols: TLSv1.3",
    )
    assert handshake("--tlsv1.3") == 200
    aes = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
    chacha = "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
    assert handshake("--tls-max", "1.2", "--ciphers", aes) == 0  # still TLSv1.3 only
    cluster.configure(
        {"ssl-ciphers": "ECDHE+CHACHA20"},
        lambda: handshake("--tls-max", "1.2", "--ciphers", chacha) == 200,
        "ssl-ciphers",
    )
    assert handshake("--tls-max", "1.2", "--ciphers", aes) == 0


def test_redirect_keys(cluster: Cluster) -> None:
    ing = cluster.ing
    cluster.configure({}, lambda: ing.get("secure.test", "/", check=False).status == 308, "308")
    assert ing.get("plain.test", "/").status == 200  # no TLS of its own: no redirect
    cluster.configure(
        {"force-ssl-redirect": "true"},
        lambda: ing.get("plain.test", "/", check=False).status == 308,
        "force-ssl-redirect",
    )
    # no-tls-redirect-locations: Ingress paths (here every one is "/") starting with one
    cluster.configure(
        {"force-ssl-redirect": "true", "no-tls-redirect-locations": "/"},
        lambda: ing.get("plain.test", "/", check=False).status == 200,
        "no-tls-redirect-locations",
    )
    assert ing.get("secure.test", "/x").status == 200
    cluster.configure(
        {"ssl-redirect": "false"},
        lambda: ing.get("secure.test", "/", check=False).status == 200,
        "ssl-redirect: false",
    )


def test_size_and_timeout_keys(cluster: Cluster) -> None:
    ing = cluster.ing

    def post(size: int) -> int:
        return ing.get("plain.test", "/", "--data-binary", "a" * size, check=False).status

    cluster.configure({}, lambda: post(2000) == 200, "proxy-body-size's default")
    cluster.configure(
        {"proxy-body-size": "1k", "proxy-read-timeout": "1", "large-client-header-buffers": "2 1k"},
        lambda: post(2000) == 413,
        "proxy-body-size",
    )
    assert post(1000) == 200
    assert ing.get("plain.test", "/_echo/sleep/2500", check=False).status == 504
    long_line = ing.get("plain.test", "/" + "a" * 1100, check=False)
    assert long_line.status == 414
    big = [arg for n in "ABC" for arg in ("-H", f"X-{n}: " + "b" * 900)]
    assert ing.get("plain.test", "/", *big, check=False).status in (400, 431)
    cluster.configure({}, lambda: post(2000) == 200, "the defaults back")
    assert ing.get("plain.test", "/_echo/sleep/1500").status == 200


def test_header_name_and_hidden_header_keys(cluster: Cluster) -> None:
    ing = cluster.ing
    cluster.configure(
        {}, lambda: "my_header" not in forwarding(ing, "My_Header: x"), "underscores dropped"
    )
    assert ing.get("plain.test", "/").header(SERVICE_HEADER) == "api"
    cluster.configure(
        {"enable-underscores-in-headers": "true", "hide-headers": SERVICE_HEADER},
        lambda: forwarding(ing, "My_Header: x").get("my_header") == "x",
        "enable-underscores-in-headers",
    )
    assert ing.get("plain.test", "/").header(SERVICE_HEADER) is None


def test_limit_status_keys(cluster: Cluster) -> None:
    ing = cluster.ing

    def refused() -> set[int]:
        statuses = [ing.get("limited.test", "/", check=False).status for _ in range(6)]
        return {s for s in statuses if s != 200}

    cluster.configure({}, lambda: refused() == {503}, "limit-req-status-code's default")
    cluster.configure(
        {"limit-req-status-code": "429"}, lambda: refused() == {429}, "limit-req-status-code"
    )


def test_blocking_keys(cluster: Cluster) -> None:
    ing = cluster.ing
    cluster.configure({}, lambda: ing.get("plain.test", "/").status == 200, "open")
    cluster.configure(
        {"block-user-agents": "~*bot", "block-referers": "http://spam.test/"},
        lambda: ing.get("plain.test", "/", "-A", "SomeBot/1", check=False).status == 403,
        "block-user-agents",
    )
    assert ing.get("plain.test", "/", "-e", "http://spam.test/", check=False).status == 403
    assert ing.get("plain.test", "/", "-A", "curl").status == 200
    cluster.configure(
        {"block-cidrs": "127.0.0.0/8"},
        lambda: ing.get("plain.test", "/", check=False).status == 403,
        "block-cidrs",
    )
    cluster.configure(
        {"whitelist-source-range": "10.0.0.0/8"},
        lambda: ing.get("plain.test", "/", check=False).status == 403,
        "whitelist-source-range",
    )
    cluster.configure(
        {"whitelist-source-range": "127.0.0.1/32"},
        lambda: ing.get("plain.test", "/", check=False).status == 200,
        "whitelist-source-range allowing the client",
    )
    cluster.configure(
        {"denylist-source-range": "127.0.0.1"},
        lambda: ing.get("plain.test", "/", check=False).status == 403,
        "denylist-source-range",
    )
    # An invalid access key denies every route (503) rather than serve open.
    cluster.configure(
        {"denylist-source-range": "127.0.0.999"},
        lambda: ing.get("plain.test", "/", check=False).status == 503,
        "an invalid denylist-source-range",
    )


def test_custom_http_errors_key(cluster: Cluster) -> None:
    ing = cluster.ing
    cluster.configure(
        {}, lambda: ing.get("plain.test", "/_echo/status/418", check=False).status == 418, "none"
    )

    def from_default_backend() -> bool:
        r = ing.get("plain.test", "/_echo/status/418", check=False)
        return r.header(SERVICE_HEADER) == "web" and r.json()["headers"].get("x-code") == "418"

    cluster.configure({"custom-http-errors": "418"}, from_default_backend, "custom-http-errors")
    assert ing.get("plain.test", "/_echo/status/500", check=False).status == 500


def test_retry_non_idempotent_key(cluster: Cluster) -> None:
    """An upstream that closes the connection after reading a POST: by default the
    POST is not sent again (502 on that endpoint's turns); retry-non-idempotent sends
    it to the next endpoint, on a route whose proxy-next-upstream annotation does not
    say non_idempotent too (template.go buildNextUpstream)."""
    ing = cluster.ing

    def posts(host: str) -> list[int]:
        args = ("--data-binary", "x=1")
        return [ing.get(host, "/", *args, check=False).status for _ in range(4)]

    cluster.configure({}, lambda: 502 in posts("reset.test"), "POSTs not retried")
    assert 502 in posts("resetann.test")
    cluster.configure(
        {"retry-non-idempotent": "true"},
        lambda: posts("reset.test") == [200] * 4,
        "retry-non-idempotent",
    )
    assert posts("resetann.test") == [200] * 4


def test_upstream_keepalive_time_key(cluster: Cluster) -> None:
    """A connection older than upstream-keepalive-time carries the request under way,
    then is closed (nginx's keepalive_time); by default (1h) it is kept."""
    ing = cluster.ing
    upstream = cluster.counting

    def new_connections(pause: float) -> int:
        before = upstream.connections
        ing.get("count.test", "/")
        time.sleep(pause)
        ing.get("count.test", "/")  # reuses it: its age is checked when it is done
        ing.get("count.test", "/")
        return upstream.connections - before

    cluster.configure({}, lambda: new_connections(0) <= 1, "one connection reused")
    assert new_connections(1.2) == 0  # the one made above, still kept
    cluster.configure(
        {"upstream-keepalive-time": "1s"},
        lambda: new_connections(1.2) >= 1,
        "upstream-keepalive-time",
    )


def test_use_proxy_protocol_is_taken_at_start_in_manifest_mode(
    ingressd: IngressdFactory, echo_servers: EchoServers
) -> None:
    """The folder is read before the ports listen: its ConfigMap's use-proxy-protocol
    decides how they start; a change is reported as needing a restart."""
    cm = {**controller({"use-proxy-protocol": "true"})}
    cm["metadata"] = {"name": "controller", "namespace": "ingressd"}
    objs = [*backends(echo_servers), ingress("plain", [rule("plain.test", path("/", "api"))])]
    ing = ingressd({"all.yaml": [*objs, cm]}, "--configmap", "ingressd/controller")
    got = proxy_v1_get(ing.http_port, "plain.test", "198.51.100.30")
    assert got.startswith(b"HTTP/1.1 200") and b"198.51.100.30" in got
    cm["data"] = {"use-proxy-protocol": "false"}
    ing.update({"all.yaml": [*objs, cm]})
    ing.wait_for_log("use-proxy-protocol=false needs a restart", 10)
    got = proxy_v1_get(ing.http_port, "plain.test", "198.51.100.31")
    assert got.startswith(b"HTTP/1.1 200")  # the port still reads the PROXY header
