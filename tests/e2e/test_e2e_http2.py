"""End to end: HTTP/2 from clients over TLS (issue 15), with real clients.

curl ``--http2`` and nghttp/h2load (Debian's nghttp2-client) against
``ingressd serve``, and the ``h2`` package as a client where a test needs to
shape frames (split cookies, trailers, holding windows): ALPN, SNI, the
HTTP/1.1 fallback, the request mapping nginx does (``:authority`` as Host,
cookies joined, no connection-specific fields), bodies both ways with bounded
memory, trailers, informational responses, many multiplexed streams, and the
same routing, annotations, limits, access log and metrics as HTTP/1.1.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import (
    LOCALHOST,
    BackgroundLoop,
    EchoServers,
    Ingressd,
    RecordingListener,
    echo_backend,
    nginx_page,
    pem_to_der,
    sample_labels,
    scrape,
    wait_for,
)
from h2.settings import SettingCodes
from h2_client import H2Client, tls_socket
from k8s_objects import certificate, ingress, ingress_class, path, rule, tls_entry, tls_secret

from ingressd.echo import pattern_bytes

A = "nginx.ingress.kubernetes.io/"
HOST = "h2.test"
NGHTTP = "/usr/bin/nghttp"
H2LOAD = "/usr/bin/h2load"
MiB = 1 << 20


class TrailerUpstream(RecordingListener):
    """Answers every request with a chunked body and trailer fields (as a
    gRPC server over HTTP/1.1 would send its status)."""

    RESPONSE = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
        b"Trailer: x-status, x-message\r\n\r\n"
        b"6\r\nhello \r\n5\r\nworld\r\n0\r\nx-status: 0\r\nx-message: all good\r\n\r\n"
    )


def objects(echo: EchoServers, trailers: int, recording: int) -> list[dict]:
    return [
        ingress_class(),
        *echo_backend("web", echo["web"]),
        *echo_backend("api", echo["api"]),
        *echo_backend("trailers", trailers),
        *echo_backend("recorded", recording),
        tls_secret("h2-tls", [HOST]),
        ingress(
            "h2",
            [rule(HOST, path("/", "web"), path("/api", "api"))],
            tls=[tls_entry([HOST], "h2-tls")],
            annotations={A + "proxy-body-size": "0"},
        ),
        ingress(
            "rewrite",
            [rule("rw.h2.test", path("/blog(/|$)(.*)", "web"))],
            annotations={A + "rewrite-target": "/$2"},
        ),
        ingress(
            "auth",
            [rule("auth.h2.test", path("/", "web"))],
            annotations={
                A + "auth-type": "basic",
                A + "auth-secret": "htpasswd",
                A + "auth-realm": "Staff",
            },
        ),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "htpasswd", "namespace": "default"},
            "type": "Opaque",
            # made with: openssl passwd -apr1 -salt ingressd s3cret
            "stringData": {"auth": "alice:$apr1$ingressd$m4HkBhyUtf1klMXB92KPJ.\n"},
        },
        ingress(
            "limited",
            [rule("limit.h2.test", path("/", "web"))],
            annotations={A + "limit-connections": "2"},
        ),
        ingress(
            "moved",
            [rule("moved.h2.test", path("/", "web"))],
            annotations={A + "permanent-redirect": "https://elsewhere.example/"},
        ),
        ingress(
            "movedvars",
            [rule("movedvars.h2.test", path("/", "web"))],
            annotations={A + "permanent-redirect": "https://$scheme.example$request_uri#$host"},
        ),
        ingress("trailers", [rule("trailers.h2.test", path("/", "trailers"))]),
        ingress("recorded", [rule("rec.h2.test", path("/", "recorded"))]),
    ]


class Env:
    def __init__(self, ing: Ingressd, stdout: Path, recording: RecordingListener) -> None:
        self.ing = ing
        self.stdout = stdout
        self.recording = recording

    def client(self, sni: str = HOST, **kwargs: object) -> H2Client:
        return H2Client(self.ing.https_port, sni, **kwargs)  # type: ignore[arg-type]

    def url(self, host: str, path: str) -> str:
        return self.ing.https_url(host, path)

    def curl(
        self, host: str, path: str, *args: str, **kwargs: object
    ) -> subprocess.CompletedProcess:
        """curl over HTTP/2 with SNI ``host``; -w prints the HTTP version."""
        cmd = [
            "/usr/bin/curl", "-sS", "-k", "--http2", *self.ing.resolve(host),
            "--max-time", "60", *args, self.url(host, path),
        ]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, timeout=90, check=False, **kwargs)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, upstream_loop: BackgroundLoop, curl_binary: str
) -> Iterator[Env]:
    for tool in (NGHTTP, H2LOAD):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is required (scripts/test.sh installs nghttp2-client)")
    work = tmp_path_factory.mktemp("e2e-http2")
    echo = EchoServers(upstream_loop, ["web", "api"])
    trailers = TrailerUpstream(upstream_loop)
    recording = RecordingListener(upstream_loop)
    stdout = work / "access.log"
    proc = Ingressd(
        work / "manifests",
        work / "ingressd.log",
        extra_args=["--access-log", "json"],
        stdout_path=stdout,
    )
    proc.update({"all.yaml": objects(echo, trailers.port, recording.port)})
    try:
        yield Env(proc.start(), stdout, recording)
    finally:
        proc.stop()
        echo.close()
        trailers.close()
        recording.close()


def echoed(body: bytes) -> dict:
    return json.loads(body)


# -- ALPN, SNI, fallback ----------------------------------------------------------------


def test_curl_gets_http2_by_alpn_with_the_sni_certificate(env: Env) -> None:
    out = env.curl(HOST, "/api/users?x=1", "-w", "\n%{http_version}")
    body, _, version = out.stdout.rpartition(b"\n")
    assert out.returncode == 0, out.stderr
    assert version == b"2"
    got = echoed(body)
    assert (got["service"], got["path"], got["query"]) == ("api", "/api/users", "x=1")
    with env.client() as c:
        assert c.alpn == "h2"
        assert c.sock.getpeercert(binary_form=True) == pem_to_der(certificate(HOST)[0])


def test_a_client_offering_only_http11_gets_http11_with_the_same_routing(env: Env) -> None:
    out = env.curl(HOST, "/api/users", "--http1.1", "-w", "\n%{http_version}")
    body, _, version = out.stdout.rpartition(b"\n")
    assert (out.returncode, version) == (0, b"1.1"), out.stderr
    assert echoed(body)["service"] == "api"
    sock = tls_socket(env.ing.https_port, HOST, alpn=("http/1.1",))
    try:
        assert sock.selected_alpn_protocol() == "http/1.1"
        sock.sendall(b"GET /api/x HTTP/1.1\r\nHost: h2.test\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b'"service": "api"' in answer


def test_no_http2_offers_only_http11(tmp_path: Path, upstream_loop: BackgroundLoop) -> None:
    echo = EchoServers(upstream_loop, ["web"])
    proc = Ingressd(tmp_path / "m", tmp_path / "log", extra_args=["--no-http2"])
    proc.update(
        {
            "all.yaml": [
                ingress_class(),
                *echo_backend("web", echo["web"]),
                ingress("web", [rule(HOST, path("/", "web"))]),
            ]
        }
    )
    try:
        proc.start()
        out = subprocess.run(
            ["/usr/bin/curl", "-sS", "-k", "--http2", *proc.resolve(HOST), "-o", "/dev/null",
             "-w", "%{http_version} %{http_code}", proc.https_url(HOST, "/")],
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        assert out.stdout == b"1.1 200", out.stderr
    finally:
        proc.stop()
        echo.close()


# -- request mapping --------------------------------------------------------------------


def test_request_mapping_as_nginx_does(env: Env) -> None:
    with env.client() as c:
        r = c.get(
            "/api/map?q=1",
            HOST,
            headers=[
                ("cookie", "a=1"),
                ("cookie", "b=2"),
                ("te", "trailers"),
                ("x-forwarded-for", "203.0.113.9"),
                ("x-custom", "kept"),
            ],
        )
    assert r.status == 200
    got = echoed(r.body)
    headers = got["headers"]
    assert headers["host"] == HOST  # :authority is the Host
    assert headers["cookie"] == "a=1; b=2"  # split cookie fields joined, as nginx
    assert "te" not in headers
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-original-forwarded-for"] == "203.0.113.9"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-custom"] == "kept"
    assert (got["method"], got["path"], got["query"]) == ("GET", "/api/map", "q=1")
    assert "transfer-encoding" not in headers and "content-length" not in headers


def test_authority_and_host_together_get_400_as_nginx(env: Env) -> None:
    with env.client() as c:
        r = c.get("/", HOST, headers=[("host", HOST)])
        assert (r.status, r.body) == (400, nginx_page(400))
        env.ing.wait_for_log("duplicate host header")
        # The connection goes on.
        assert c.get("/api/after", HOST).status == 200


def test_body_without_content_length_arrives_with_its_length(env: Env) -> None:
    body = bytes(range(256)) * 400
    with env.client() as c:
        sid = c.request("/api/up", HOST, method="POST", end=False)
        c.send_body_all(sid, body)
        chunked = c.response(sid)
        sid = c.request(
            "/api/up", HOST, method="POST", headers=[("content-length", str(len(body)))], end=False
        )
        c.send_body_all(sid, body)
        sized = c.response(sid)
    for r in (chunked, sized):
        assert r.status == 200
        got = echoed(r.body)
        assert got["body_bytes"] == len(body)
        assert got["body_sha256"] == hashlib.sha256(body).hexdigest()
    # proxy-request-buffering on (the default): read whole, then sent with its
    # length (test_e2e_buffering.py: streamed, it goes chunked).
    assert echoed(chunked.body)["headers"]["content-length"] == str(len(body))
    assert "transfer-encoding" not in echoed(chunked.body)["headers"]
    assert echoed(sized.body)["headers"]["content-length"] == str(len(body))


def test_content_length_without_a_body_is_400_and_not_forwarded(env: Env) -> None:
    mark = env.recording.mark()
    with env.client() as c:
        r = c.get("/x", "rec.h2.test", method="POST", headers=[("content-length", "5")])
        assert r.status == 400
    assert b"POST" not in env.recording.since(mark)


def test_content_length_mismatch_is_never_forwarded_as_is(env: Env) -> None:
    """More DATA than content-length, or less: h2 treats the request as
    malformed (a connection error, RFC 9113 5.4): the upstream never gets a
    complete request, and nothing answers for it."""
    for sent in (b"0123456789ABCDEF", b"0123"):
        before = env.recording.requests
        mark = env.recording.mark()
        with env.client(sni="rec.h2.test") as c:
            sid = c.request(
                "/len", "rec.h2.test", method="POST", headers=[("content-length", "10")], end=False
            )
            c.send_body(sid, sent, end=True)
            c.until(lambda: c.closed or c.terminated is not None, 5, "the connection's end")
            assert c.responses[sid].status == 0
        time.sleep(0.3)
        received = env.recording.since(mark)
        # At most the head and the bytes up to the error, never 10 bytes of body.
        assert b"0123456789" not in received
        # The recording upstream answers only whole requests: none came.
        assert env.recording.requests - before <= 1


# -- bodies, trailers, interim responses --------------------------------------------------


def test_large_bodies_both_ways_with_bounded_memory(env: Env, tmp_path: Path) -> None:
    size = 64 * MiB
    upload = tmp_path / "up.bin"
    with upload.open("wb") as f:
        for i in range(size // MiB):
            f.write(hashlib.sha256(str(i).encode()).digest() * (MiB // 32))
    digest = hashlib.sha256(upload.read_bytes()).hexdigest()
    before = env.ing.peak_rss_kib()
    out = env.curl(HOST, "/api/upload", "--data-binary", f"@{upload}", "-H", "Content-Type: x/y")
    assert out.returncode == 0, out.stderr
    got = echoed(out.stdout)
    assert (got["body_bytes"], got["body_sha256"]) == (size, digest)
    down = tmp_path / "down.bin"
    out = env.curl(HOST, f"/_echo/bytes/{size}", "-o", str(down), "-w", "%{http_version}")
    assert (out.returncode, out.stdout) == (0, b"2"), out.stderr
    assert down.stat().st_size == size
    assert (
        hashlib.sha256(down.read_bytes()).digest() == hashlib.sha256(pattern_bytes(size)).digest()
    )
    grown = env.ing.peak_rss_kib() - before
    assert grown < 48 * 1024, f"ingressd's peak memory grew {grown} KiB for 64 MiB each way"


def test_upstream_trailers_reach_the_client(env: Env) -> None:
    with env.client(sni="trailers.h2.test") as c:
        r = c.get("/t", "trailers.h2.test", headers=[("te", "trailers")])
    assert (r.status, r.body) == (200, b"hello world")
    assert r.trailers == [(b"x-status", b"0"), (b"x-message", b"all good")]
    names = [n for n, _ in r.headers]
    assert b"transfer-encoding" not in names and b"trailer" not in names
    # nghttp sees them as a trailing HEADERS frame that ends the stream.
    out = subprocess.run(
        [NGHTTP, "-v", "-H", ":authority: trailers.h2.test", env.url(LOCALHOST, "/t")],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    text = out.stdout.decode()
    assert out.returncode == 0, text
    after_data = text[text.index("recv DATA frame") :]
    assert "x-status: 0" in after_data and "x-message: all good" in after_data, text
    assert "END_STREAM | END_HEADERS" in after_data, text


def test_interim_responses_are_informational_headers(env: Env) -> None:
    with env.client() as c:
        sid = c.request(
            "/api/expect", HOST, method="POST",
            headers=[("expect", "100-continue"), ("content-length", "4")], end=False,
        )  # fmt: skip
        c.until(lambda: c.responses[sid].informational, 5, "100 Continue")
        c.send_body(sid, b"data", end=True)
        r = c.response(sid)
    assert r.informational == [100]
    assert (r.status, echoed(r.body)["body_bytes"]) == (200, 4)


def test_head_204_and_local_answers(env: Env) -> None:
    with env.client() as c:
        head = c.get("/_echo/bytes/1000", HOST, method="HEAD")
        assert (head.status, head.header(b"content-length"), head.body) == (200, b"1000", b"")
        empty = c.get("/_echo/status/204", HOST)
        assert (empty.status, empty.body, empty.ended) == (204, b"", True)
        missing = c.get("/", "nowhere.h2.test")
        assert (missing.status, missing.body) == (404, nginx_page(404))
        assert missing.header(b"content-type") == b"text/html"
        moved = c.get("/x", "moved.h2.test")
        assert (moved.status, moved.header(b"location")) == (301, b"https://elsewhere.example/")
        assert (moved.header(b"content-type"), moved.body) == (b"text/html", nginx_page(301))
        names = [n for n, _ in moved.headers]
        assert b"connection" not in names
        # nginx's pages over HTTP/2 too: HEAD has the page's length and no body;
        # Chrome gets nginx's padding.
        head = c.get("/", "nowhere.h2.test", method="HEAD")
        length = str(len(nginx_page(404))).encode()
        assert (head.status, head.header(b"content-length"), head.body) == (404, length, b"")
        chrome = c.get("/", "nowhere.h2.test", headers=[("user-agent", "x Chrome/120.0 y")])
        assert chrome.body.startswith(nginx_page(404)) and b"friendly error page" in chrome.body


def test_redirect_variables_over_http2(env: Env) -> None:
    got = env.curl(
        "movedvars.h2.test", "/a/b?c=1", "-o", "/dev/null",
        "-w", "%{http_version} %{response_code} %header{location}",
    )  # fmt: skip
    assert got.stdout.decode() == "2 301 https://https.example/a/b?c=1#movedvars.h2.test"


# -- many streams -------------------------------------------------------------------------


def test_nghttp_multiplexes_many_streams(env: Env) -> None:
    """nghttp sends 200 requests on one connection at once (no SNI: the
    default certificate may serve any host)."""
    paths = [f"/api/n{i}" for i in range(200)]
    urls = [env.url(LOCALHOST, p) for p in paths]
    out = subprocess.run(
        [NGHTTP, "-n", "-s", "-H", f":authority: {HOST}", *urls],
        capture_output=True,
        timeout=60,
        check=False,
    )
    text = out.stdout.decode()
    assert out.returncode == 0, text + out.stderr.decode()
    codes = {}
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[-1] in paths:
            codes[fields[-1]] = fields[-3]
    assert codes == dict.fromkeys(paths, "200"), text[-3000:]


def test_a_thousand_concurrent_streams_on_one_connection(env: Env) -> None:
    """h2load asks for 1,000 streams at once on one connection; ingressd's
    SETTINGS cap them at 128 at a time, and all 1,000 are served."""
    out = subprocess.run(
        [H2LOAD, "-n", "1000", "-c", "1", "-m", "1000", "-H", f":authority: {HOST}",
         env.url(LOCALHOST, "/api/many")],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    text = out.stdout.decode()
    assert "Application protocol: h2" in text, text + out.stderr.decode()
    assert "1000 succeeded, 0 failed, 0 errored, 0 timeout" in text, text
    assert "status codes: 1000 2xx" in text, text


# -- the same annotations, limits, logs and metrics -------------------------------------------


def test_annotations_apply_over_http2(env: Env) -> None:
    with env.client(sni="auth.h2.test") as c:
        denied = c.get("/", "auth.h2.test")
        assert denied.status == 401
        assert denied.header(b"www-authenticate") == b'Basic realm="Staff"'
        allowed = c.get("/", "auth.h2.test", headers=[("authorization", "Basic YWxpY2U6czNjcmV0")])
        assert allowed.status == 200
        rewritten = c.get("/blog/posts/1", "rw.h2.test")
        assert echoed(rewritten.body)["path"] == "/posts/1"


def test_limit_connections_counts_streams_as_requests(env: Env) -> None:
    with env.client(sni="limit.h2.test") as c:
        sids = [c.request("/_echo/sleep/1000", "limit.h2.test") for _ in range(6)]
        statuses = sorted(c.response(sid).status for sid in sids)
    assert statuses.count(200) == 2 and statuses.count(503) == 4, statuses


def test_access_log_and_metrics_for_http2(env: Env) -> None:
    labels = sample_labels(
        namespace="default", ingress="h2", service="api", method="GET",
        status_class="2xx",
    )  # fmt: skip
    key = ("ingressd_requests_total", labels)
    before = scrape(env.ing.admin_port).get(key, 0.0)
    with env.client() as c:
        r = c.get("/api/logged?z=9", HOST, headers=[("user-agent", "h2-test/1")])
    assert r.status == 200

    def line() -> dict | None:
        for text in env.stdout.read_text().splitlines():
            record = json.loads(text)
            if record.get("path") == "/api/logged":
                return record
        return None

    record = wait_for(line, 5, what="the access log line")
    assert record["protocol"] == "HTTP/2.0"
    assert (record["status"], record["query"], record["host"]) == (200, "z=9", HOST)
    assert record["user_agent"] == "h2-test/1"
    assert record["bytes_sent"] >= len(r.body)
    assert record["ingress"] == "default/h2"
    wait_for(lambda: scrape(env.ing.admin_port).get(key, 0.0) >= before + 1, 5, what="the counter")


def test_websocket_stays_on_http11(env: Env) -> None:
    with env.client(validate=False) as c:
        c.until(lambda: c.conn.remote_settings.max_concurrent_streams == 128, 5, "SETTINGS")
        assert c.conn.remote_settings.get(SettingCodes.ENABLE_CONNECT_PROTOCOL, 0) == 0
        r = c.get("/", HOST, method="CONNECT", pseudo=[(b":protocol", b"websocket")])
        assert r.status == 405


def test_streams_of_a_connection_are_not_held_up_by_a_slow_one(env: Env) -> None:
    """A slow upstream on one stream, a fast one beside it: the fast one is
    answered first, on the same connection."""
    with env.client() as c:
        slow = c.request("/_echo/sleep/1500", HOST)
        fast = c.request("/api/fast", HOST)
        c.until(lambda: c.responses[fast].done, 5, "the fast stream")
        assert not c.responses[slow].done
        assert c.responses[fast].status == 200
        assert c.response(slow).status == 200


def test_concurrent_clients(env: Env) -> None:
    errors: list[str] = []

    def run(i: int) -> None:
        try:
            with env.client() as c:
                sids = [c.request(f"/api/c{i}/{k}", HOST) for k in range(20)]
                for sid in sids:
                    r = c.response(sid)
                    if r.status != 200:
                        errors.append(f"{i}: {r.status}")
        except Exception as exc:
            errors.append(f"{i}: {exc}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors


def test_many_large_responses_at_once_on_one_connection(env: Env) -> None:
    """A hundred streams with data at once: the transport's buffer, not the
    number of streams, says how much is framed in one go (framing a frame for
    each of them before writing once would look like a client that does not
    read, and drop it)."""
    size = 300_000
    with env.client(settings={SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20}) as c:
        c.conn.increment_flow_control_window(1 << 30)
        c.flush()
        sids = [c.request(f"/_echo/bytes/{size}", HOST) for _ in range(100)]
        for sid in sids:
            r = c.response(sid, timeout=30)
            assert (r.status, len(r.body)) == (200, size)
        assert not c.closed
