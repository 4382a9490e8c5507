"""Request and response buffering, and mirroring, end to end (issue 19).

One ingressd and one recording origin for the module. The origin notes when
each request's head and body arrived, and when it finished writing a response;
clients send their bodies in pieces (curl reading a pipe, or a raw socket), so
the order of events shows what ingressd did:

- proxy-request-buffering on (ingress-nginx's default): the origin gets the
  request only once the client has sent all of its body, with its length; off:
  as it comes;
- client-body-buffer-size: a larger body goes through an unnamed temporary file
  in ingressd's own directory, gone when the request ends;
- proxy-buffering on: a response is read ahead of a client that does not read;
- mirror-target: the copies arrive; a mirror that hangs or is down changes
  nothing for the client; what was sent, failed and dropped is counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from e2e_helpers import (
    CURL,
    LOCALHOST,
    BackgroundLoop,
    Ingressd,
    echo_backend,
    free_port,
    nginx_page,
    sample_labels,
    scrape,
    serving,
    wait_for,
)
from k8s_objects import ingress, ingress_class, path, rule

A = "nginx.ingress.kubernetes.io/"


@dataclass
class Seen:
    """One request as the origin received it."""

    method: str
    target: str
    headers: dict[str, str]
    head_at: float  # time.monotonic() when its head was read
    body: bytes = b""
    body_at: float = 0.0  # when its body was complete
    sent_at: float = 0.0  # when the whole response was written


@dataclass
class Origin:
    """An HTTP/1.1 origin that records what it receives and when.

    ``GET /big/N`` answers N bytes; anything else a short 200. With ``hang`` it
    reads the request and never answers (until the connection is closed).
    """

    loop: BackgroundLoop
    hang: bool = False
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    open_connections: int = 0

    def __post_init__(self) -> None:
        self.server = self.loop.run(asyncio.start_server(self._handle, LOCALHOST, 0))
        self.port: int = self.server.sockets[0].getsockname()[1]

    def requests(self, prefix: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.target.startswith(prefix)]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self.lock:
            self.open_connections += 1
        try:
            for _ in range(1000):
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
                now = time.monotonic()
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                seen = Seen(method, target, headers, now)
                with self.lock:
                    self.seen.append(seen)
                seen.body = await self._body(reader, headers)
                seen.body_at = time.monotonic()
                if self.hang:
                    await reader.read()  # until ingressd gives up on it
                    return
                if target.startswith("/big/"):
                    size = int(target[5:].partition("?")[0])
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
                    chunk = b"x" * 65536
                    for start in range(0, size, len(chunk)):
                        writer.write(chunk[: size - start])
                        await writer.drain()
                else:
                    if target.startswith("/slow-auth"):
                        await asyncio.sleep(1)  # an auth-url service that takes its time
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                    await writer.drain()
                seen.sent_at = time.monotonic()
        except (asyncio.IncompleteReadError, TimeoutError, OSError, ValueError):
            pass
        finally:
            with self.lock:
                self.open_connections -= 1
            writer.close()

    @staticmethod
    async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    return out
                out += await reader.readexactly(size)
                await reader.readexactly(2)
        length = int(headers.get("content-length", "0"))
        return await reader.readexactly(length) if length else b""

    def close(self) -> None:
        async def _close() -> None:
            self.server.close()

        self.loop.run(_close())


@dataclass
class Env:
    ing: Ingressd
    origin: Origin
    mirror: Origin
    hanging: Origin
    tmpdir: Path
    workdir: Path


def routed(name: str, host: str, service: str, **annotations: str) -> dict:
    return ingress(
        name,
        [rule(host, path("/", service))],
        annotations={A + k.replace("_", "-"): v for k, v in annotations.items()},
    )


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, upstream_loop: BackgroundLoop, curl_binary: str
) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("e2e-buffering")
    tmpdir = work / "tmp"
    tmpdir.mkdir()
    origin = Origin(upstream_loop)
    mirror = Origin(upstream_loop)
    hanging = Origin(upstream_loop, hang=True)
    down = free_port()
    mirror_at = f"http://{LOCALHOST}:{mirror.port}"
    objs = [
        ingress_class(),
        *echo_backend("origin", origin.port),
        routed("buffered", "buffered.test", "origin", client_body_buffer_size="1k"),
        routed("streamed", "streamed.test", "origin", proxy_request_buffering="off"),
        routed(
            "authbuffered",
            "authbuffered.test",
            "origin",
            auth_url=f"http://{LOCALHOST}:{origin.port}/slow-auth",
        ),
        routed(
            "bigbody", "bigbody.test", "origin", proxy_body_size="8m", client_body_buffer_size="4k"
        ),
        routed(
            "readahead",
            "readahead.test",
            "origin",
            proxy_buffering="on",
            proxy_buffers_number="64",
            proxy_buffer_size="1m",
        ),
        routed("noreadahead", "noreadahead.test", "origin"),
        routed(
            "mirrored",
            "mirrored.test",
            "origin",
            mirror_target=mirror_at + "$request_uri",
            mirror_host="copies.example",
            proxy_body_size="4m",
        ),
        routed(
            "mirrornobody",
            "mirrornobody.test",
            "origin",
            mirror_target=mirror_at + "/copy$is_args$args",
            mirror_request_body="off",
        ),
        routed(
            "mirrorhangs",
            "mirrorhangs.test",
            "origin",
            mirror_target=f"http://{LOCALHOST}:{hanging.port}$request_uri",
        ),
        routed(
            "mirrordown",
            "mirrordown.test",
            "origin",
            mirror_target=f"http://{LOCALHOST}:{down}$request_uri",
        ),
    ]
    # ingressd's temporary files go to a directory of the test's own.
    saved = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmpdir)
    try:
        # A small disk budget: 1 MiB bodies fit, 1.6 MB ones do not.
        with serving(work, objs, ["--client-body-temp-size", "1500k"]) as ing:
            yield Env(ing, origin, mirror, hanging, tmpdir, work)
    finally:
        if saved is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved
        origin.close()
        mirror.close()
        hanging.close()


def slow_curl_upload(
    env: Env, host: str, target: str, pieces: list[bytes], *args: str, pause: float = 0.4
) -> tuple[bytes, float]:
    """curl uploading from a pipe written piece by piece (HTTP/1.1: chunked;
    ``--http2``: DATA frames without a length). Returns curl's output and when
    the last piece was written."""
    if "--http2" in args:
        url = f"https://{host}:{env.ing.https_port}{target}"
        where = ["-k", *env.ing.resolve(host)]
    else:
        url = env.ing.http_url(target)
        where = ["-H", f"Host: {host}"]
    proc = subprocess.Popen(
        [CURL, "-sS", "--max-time", "20", *where, *args, "-T", "-", url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    for piece in pieces:
        proc.stdin.write(piece)
        proc.stdin.flush()
        time.sleep(pause)
    last = time.monotonic()
    out, err = proc.communicate(timeout=30)  # closes stdin: the body's end
    assert proc.returncode == 0, err
    return out, last


def slow_raw_upload(
    env: Env, host: str, target: str, pieces: list[bytes], pause: float = 0.4
) -> tuple[bytes, float]:
    """A Content-Length body sent piece by piece on a raw socket. Returns the
    answer and when the last piece began to go: the body cannot have ended
    before. (A time taken after that send lets the origin, in another thread,
    note the request first when this one waits for the CPU or the GIL.)"""
    total = sum(len(p) for p in pieces)
    with socket.create_connection((LOCALHOST, env.ing.http_port), timeout=20) as s:
        s.sendall(
            f"PUT {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {total}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        last = 0.0
        for piece in pieces:
            time.sleep(pause)
            last = time.monotonic()
            s.sendall(piece)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer, last


def until(predicate: object, what: str, timeout: float = 5.0) -> None:
    wait_for(predicate, timeout, what=what)  # type: ignore[arg-type]


def one(origin: Origin, target: str) -> Seen:
    found = origin.requests(target)
    assert len(found) == 1, found
    return found[0]


# -- proxy-request-buffering -----------------------------------------------------------------


def test_buffered_the_origin_gets_a_slow_body_in_one_go_after_the_client_finished(
    env: Env,
) -> None:
    pieces = [bytes([65 + i]) * 3000 for i in range(4)]
    answer, last = slow_raw_upload(env, "buffered.test", "/slow-raw", pieces)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    seen = one(env.origin, "/slow-raw")
    assert seen.head_at >= last, "the origin was connected before the body had ended"
    assert seen.body == b"".join(pieces)
    assert seen.headers["content-length"] == "12000"


def test_buffered_a_chunked_body_reaches_the_origin_with_its_length(env: Env) -> None:
    pieces = [b"a" * 5000, b"b" * 5000, b"c" * 10]
    out, last = slow_curl_upload(env, "buffered.test", "/slow-chunked", pieces)
    assert out == b"ok\n"
    seen = one(env.origin, "/slow-chunked")
    assert seen.head_at >= last
    assert seen.body == b"".join(pieces)
    assert seen.headers["content-length"] == "10010"
    assert "transfer-encoding" not in seen.headers


def test_buffered_an_http2_body_without_length_reaches_the_origin_whole(env: Env) -> None:
    # More than the stream's 64 KiB window: the window must reopen while
    # ingressd buffers, with no upstream to pass the data on to yet.
    pieces = [os.urandom(50_000) for _ in range(3)]
    out, last = slow_curl_upload(env, "buffered.test", "/slow-h2", pieces, "--http2")
    assert out == b"ok\n"
    seen = one(env.origin, "/slow-h2")
    assert seen.head_at >= last
    assert seen.body == b"".join(pieces)
    assert seen.headers["content-length"] == "150000"


def test_buffered_a_body_complete_before_auth_url_answers_goes_with_its_length(
    env: Env,
) -> None:
    r = env.ing.get(
        "authbuffered.test", "/after-auth", "-H", "Transfer-Encoding: chunked", "--data", "abc"
    )
    assert (r.status, r.body) == (200, b"ok\n")
    seen = one(env.origin, "/after-auth")
    assert seen.head_at > one(env.origin, "/slow-auth").head_at
    assert (seen.body, seen.headers["content-length"]) == (b"abc", "3")
    assert "transfer-encoding" not in seen.headers


def test_streamed_the_origin_gets_the_body_as_it_comes(env: Env) -> None:
    pieces = [b"s" * 3000 for _ in range(4)]
    answer, last = slow_raw_upload(env, "streamed.test", "/streamed-raw", pieces)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    seen = one(env.origin, "/streamed-raw")
    assert seen.head_at < last, "proxy-request-buffering off must not wait for the body"
    assert seen.body == b"".join(pieces)
    for target, args in (("/streamed-chunked", ()), ("/streamed-h2", ("--http2",))):
        out, last = slow_curl_upload(env, "streamed.test", target, [b"x" * 100] * 3, *args)
        assert out == b"ok\n"
        seen = one(env.origin, target)
        assert seen.head_at < last
        assert seen.headers["transfer-encoding"] == "chunked"  # HTTP/2: no length given
        assert seen.body == b"x" * 300


def _body_files(pid: int, tmpdir: Path) -> list[str]:
    """ingressd's open files in its temporary directory."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(tmpdir)):
            found.append(target)
    return found


def test_a_body_over_client_body_buffer_size_goes_through_an_unnamed_temporary_file(
    env: Env,
) -> None:
    pid = env.ing.pid
    payload = os.urandom(600_000)
    pieces = [payload[:300_000], payload[300_000:]]
    seen_during: list[list[str]] = []
    names_during: list[list[str]] = []

    def watch() -> None:
        # While the client is between its two pieces, the first is on disk.
        time.sleep(0.6)
        seen_during.append(_body_files(pid, env.tmpdir))
        names_during.append([p.name for d in env.tmpdir.iterdir() for p in d.iterdir()])

    watcher = threading.Thread(target=watch)
    watcher.start()
    out, _ = slow_curl_upload(env, "bigbody.test", "/big-upload", pieces, pause=1.2)
    watcher.join()
    assert out == b"ok\n"
    seen = one(env.origin, "/big-upload")
    assert hashlib.sha256(seen.body).digest() == hashlib.sha256(payload).digest()
    # One file, open and without a name in a directory of ingressd's own (mode 0700).
    assert len(seen_during[0]) == 1, seen_during
    assert "(deleted)" in seen_during[0][0] or "#" in seen_during[0][0], seen_during
    assert names_during == [[]]
    dirs = list(env.tmpdir.iterdir())
    assert len(dirs) == 1 and dirs[0].name.startswith("ingressd-body-")
    assert dirs[0].stat().st_mode & 0o777 == 0o700
    # Closed when the request ended.
    until(lambda: not _body_files(pid, env.tmpdir), "the temporary file is closed")


def test_a_body_over_proxy_body_size_is_refused_while_buffering(env: Env) -> None:
    # buffered.test has the default proxy-body-size (1m); chunked: no length ahead.
    before = len(env.origin.requests("/too-big"))
    proc = subprocess.run(
        [
            CURL,
            "-sS",
            "-o",
            os.devnull,
            "-w",
            "%{http_code}",
            "-H",
            "Host: buffered.test",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "@-",
            env.ing.http_url("/too-big"),
        ],
        input=b"z" * (1024 * 1024 + 1),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.stdout == b"413", proc
    assert len(env.origin.requests("/too-big")) == before  # never reached the origin
    until(lambda: not _body_files(env.ing.pid, env.tmpdir), "no temporary file left open")


def test_bodies_past_the_disk_budget_are_refused_with_503(env: Env) -> None:
    big = env.workdir / "1600k.bin"
    big.write_bytes(b"d" * 1_600_000)
    r = env.ing.get("bigbody.test", "/over-budget", "--data-binary", f"@{big}", check=False)
    assert (r.status, r.body) == (503, nginx_page(503))
    env.ing.wait_for_log("--client-body-temp-size")
    assert not env.origin.requests("/over-budget")
    until(lambda: not _body_files(env.ing.pid, env.tmpdir), "no temporary file left open")
    # What the refused body had taken of the budget is free again.
    big.write_bytes(b"d" * 600_000)
    r = env.ing.get("bigbody.test", "/within-budget", "--data-binary", f"@{big}")
    assert r.status == 200
    assert len(one(env.origin, "/within-budget").body) == 600_000


# -- proxy-buffering -------------------------------------------------------------------------


def _unread_download(env: Env, host: str, size: int) -> tuple[socket.socket, str]:
    s = socket.create_connection((LOCALHOST, env.ing.http_port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    target = f"/big/{size}?{host}"
    s.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return s, target


def test_proxy_buffering_reads_the_response_ahead_of_a_client_that_does_not_read(
    env: Env,
) -> None:
    size = 48 * 1024 * 1024  # over what the kernel's socket buffers hold on both sides
    on, on_target = _unread_download(env, "readahead.test", size)
    off, off_target = _unread_download(env, "noreadahead.test", size)
    try:
        until(
            lambda: (
                bool(env.origin.requests(on_target))
                and env.origin.requests(on_target)[0].sent_at > 0
            ),
            "the origin finished its response with proxy-buffering on",
            timeout=20,
        )
        time.sleep(1)
        unbuffered = env.origin.requests(off_target)
        assert unbuffered and unbuffered[0].sent_at == 0, "off: the origin must be held back"
    finally:
        on.close()
        off.close()


# -- mirror ----------------------------------------------------------------------------------


def test_mirror_copies_arrive_with_method_uri_host_and_body(env: Env) -> None:
    r = env.ing.get(
        "mirrored.test", "/m1?q=1", "-X", "POST", "--data-binary", "copy me", "-H", "X-Who: me"
    )
    assert (r.status, r.body) == (200, b"ok\n")
    until(lambda: bool(env.mirror.requests("/m1")), "the mirror copy arrived", timeout=5)
    real = one(env.origin, "/m1?q=1")
    copy = one(env.mirror, "/m1?q=1")
    assert (copy.method, copy.body, copy.headers["x-who"]) == ("POST", b"copy me", "me")
    assert copy.headers["host"] == "copies.example"
    assert real.headers["host"] == "mirrored.test"


def test_mirror_request_body_off_sends_no_body(env: Env) -> None:
    r = env.ing.get("mirrornobody.test", "/m2?a=b", "--data-binary", "secret")
    assert r.status == 200
    until(lambda: bool(env.mirror.requests("/copy")), "the mirror copy arrived", timeout=5)
    copy = one(env.mirror, "/copy?a=b")
    assert copy.body == b""
    assert copy.headers["host"] == LOCALHOST  # the target's host name, as ingress-nginx
    assert one(env.origin, "/m2?a=b").body == b"secret"


def test_a_mirror_that_hangs_does_not_delay_the_response(env: Env) -> None:
    for i in range(3):
        r = env.ing.get("mirrorhangs.test", f"/h{i}", "--data-binary", "x", max_time=5)
        assert (r.status, r.body) == (200, b"ok\n")
    # The responses were all answered while the mirror still holds every copy.
    until(lambda: len(env.hanging.requests("/h")) == 3, "the copies reached the mirror")
    assert env.hanging.open_connections >= 3
    assert all(s.sent_at == 0 for s in env.hanging.requests("/h"))


def test_a_mirror_that_is_down_changes_nothing_and_is_counted(env: Env) -> None:
    for i in range(2):
        r = env.ing.get("mirrordown.test", f"/d{i}")
        assert (r.status, r.body) == (200, b"ok\n")
    labels = sample_labels(
        namespace="default", ingress="mirrordown", target=LOCALHOST, result="failed"
    )
    until(
        lambda: scrape(env.ing.admin_port).get(("ingressd_mirror_requests_total", labels)) == 2,
        "two failed copies counted",
    )


def test_mirror_copies_are_counted_sent_and_dropped(env: Env) -> None:
    big = env.workdir / "big.bin"
    big.write_bytes(b"b" * (1024 * 1024 + 1))  # over the 1 MiB a copy may carry
    r = env.ing.get("mirrored.test", "/m-big", "--data-binary", f"@{big}")
    assert r.status == 200
    assert len(one(env.origin, "/m-big").body) == 1024 * 1024 + 1

    def count(result: str) -> float | None:
        labels = sample_labels(
            namespace="default", ingress="mirrored", target=LOCALHOST, result=result
        )
        return scrape(env.ing.admin_port).get(("ingressd_mirror_requests_total", labels))

    until(lambda: count("dropped") == 1, "the copy with too large a body dropped")
    until(lambda: (count("sent") or 0) >= 1, "sent copies counted")
    assert not env.mirror.requests("/m-big")


def test_buffered_expect_100_continue_is_answered_by_ingressd(env: Env) -> None:
    """As nginx: the 100 Continue comes from ingressd, which then reads the body;
    the origin, which gets the body whole, never sees the Expect."""
    with socket.create_connection((LOCALHOST, env.ing.http_port), timeout=5) as s:
        s.sendall(
            b"PUT /expect HTTP/1.1\r\nHost: buffered.test\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        interim = s.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n"), interim
        assert not env.origin.requests("/expect")
        s.sendall(b"hello")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer
    seen = one(env.origin, "/expect")
    assert seen.body == b"hello"
    assert "expect" not in seen.headers
