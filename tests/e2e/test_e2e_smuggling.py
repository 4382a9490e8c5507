"""End to end: hostile and malformed HTTP/1.1 requests on raw sockets against a real ingressd.

One ingressd serves the module; its only upstream is a ``RecordingListener``
that keeps every byte it receives. Each case sends one payload on a fresh
connection and checks, in this order:

* **safety** (a plain ``AssertionError``): what reached the upstream parses as
  clean HTTP/1.1 (one framing header, digits-only Content-Length, strict
  chunks); the case's marker, a unique token placed in the smuggled part of
  the payload, never reached the upstream (or, for cases that are rightly
  forwarded, only inside a forwarded body and never in a request head); no
  request reached it that the case does not allow;
* **outcome** (``OutcomeMismatch``): the exact status sequence ingressd
  answered, which requests reached the upstream complete, that ingressd
  closed the connection, and ``Connection: close`` on an error.

Known bugs are ``xfail(strict=True)``; where the bug is only in the outcome
(``raises=OutcomeMismatch``) the safety checks still run and must pass.

A valid head is streamed to the upstream as soon as it is parsed (request
bodies are not buffered), so for an error found later in the *body* the
case's head and the body bytes before the error may reach the upstream, as
an incomplete request on a connection ingressd then aborts (``partial``);
nothing after the error point ever does.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httptools
import pytest
from e2e_helpers import (
    LOCALHOST,
    BackgroundLoop,
    Ingressd,
    RecordingListener,
    echo_backend,
    raw_exchange,
    serving,
)
from k8s_objects import ingress, ingress_class, path, rule

READ_TIMEOUT = 2.0  # per case: every answer here comes in milliseconds, or never
SETTLE = 0.1  # for the upstream listener to read anything still in flight
BODY_LIMIT = 1024 * 1024  # ingressd's default proxy-body-size (1m)

# Every payload is written with this 24-byte placeholder; each run replaces it
# with a unique token of the same length, so lengths computed here stay right.
M = b"MARKERMARKERMARKERMARKER"
H = b"Host: raw.test\r\n"
SMUGGLED = b"GET /" + M + b" HTTP/1.1\r\nHost: raw.test\r\n\r\n"
LAST = b"0\r\n\r\n"


def new_marker() -> bytes:
    marker = b"smuggled" + uuid.uuid4().hex[:16].encode()
    assert len(marker) == len(M)
    return marker


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def post(
    target: bytes,
    headers: bytes,
    body: bytes = b"",
    *,
    version: bytes = b"HTTP/1.1",
    host: bytes = H,
) -> bytes:
    return b"POST " + target + b" " + version + b"\r\n" + host + headers + b"\r\n" + body


def get(target: bytes, headers: bytes = b"", *, version: bytes = b"HTTP/1.1") -> bytes:
    return b"GET " + target + b" " + version + b"\r\n" + H + headers + b"\r\n"


# -- cases ------------------------------------------------------------------------------------

Outcomes = Mapping[tuple[int, ...], tuple[bytes, ...]]


def rejected(*codes: int) -> Outcomes:
    """One error response, nothing forwarded (any one of ``codes``)."""
    return {(code,): () for code in codes}


def forwarded(target: bytes) -> Outcomes:
    """The upstream's 200, the request with ``target`` forwarded complete."""
    return {(200,): (target,)}


@dataclass(frozen=True)
class Case:
    id: str
    payload: bytes  # with the placeholder M where the marker goes
    # accepted status sequences -> targets that must reach the upstream, complete, in order
    outcomes: Outcomes
    partial: bytes | None = None  # target whose head (and body prefix) may be streamed
    marker_in_body: bool = False  # the marker is body data of a forwarded request
    body: bytes | None = None  # expected body of the forwarded request (placeholder M)
    host: bytes | None = None  # expected Host of the forwarded request
    xfail: str | None = None
    outcome_bug: bool = False  # the xfail is an outcome mismatch only: safety still holds

    def param(self) -> object:
        marks = []
        if self.xfail is not None:
            raises = OutcomeMismatch if self.outcome_bug else None
            marks.append(pytest.mark.xfail(strict=True, reason=self.xfail, raises=raises))
        return pytest.param(self, id=self.id, marks=marks)


class OutcomeMismatch(AssertionError):
    """ingressd answered differently from what the case expects; nothing was smuggled."""


CHUNKED_SMUGGLE = chunk(SMUGGLED) + LAST  # a chunked body whose data is a request
CL_TE_BODY = LAST + SMUGGLED  # chunked says: empty body, then SMUGGLED

CASES = [
    # -- positive controls: the harness sees what is forwarded ----------------------------
    Case(
        "control-content-length",
        post(b"/ok-cl", b"Content-Length: 30\r\nConnection: close\r\n", b"hello " + M),
        forwarded(b"/ok-cl"),
        marker_in_body=True,
        body=b"hello " + M,
    ),
    Case(
        "control-chunked",
        post(
            b"/ok-chunked",
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n",
            chunk(b"hello ") + chunk(M) + LAST,
        ),
        forwarded(b"/ok-chunked"),
        marker_in_body=True,
        body=b"hello " + M,
    ),
    # -- CL.TE and TE.CL --------------------------------------------------------------------
    Case(
        "cl-te",
        post(
            b"/cl-te",
            b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(CL_TE_BODY),
            CL_TE_BODY,
        ),
        rejected(400),
    ),
    Case(
        "te-cl",
        post(b"/te-cl", b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", CHUNKED_SMUGGLE),
        rejected(400),
    ),
    # -- TE.TE obfuscations (with a Content-Length, as an attacker sends them) ----------------
    Case(
        "te-xchunked",
        post(b"/tete", b"Content-Length: 4\r\nTransfer-Encoding: xchunked\r\n", CHUNKED_SMUGGLE),
        rejected(400),
    ),
    Case(
        "te-xchunked-without-cl",
        post(b"/tete", b"Transfer-Encoding: xchunked\r\n", CHUNKED_SMUGGLE),
        rejected(400),
    ),
    Case(
        "te-chunked-identity",
        post(b"/tete", b"Transfer-Encoding: chunked, identity\r\n", CHUNKED_SMUGGLE),
        rejected(400),
    ),
    Case(
        "te-line-leading-space",
        post(b"/tete", b"Content-Length: 4\r\n Transfer-Encoding: chunked\r\n", CL_TE_BODY),
        rejected(400),
    ),
    Case(
        "te-line-leading-tab",
        post(b"/tete", b"Content-Length: 4\r\n\tTransfer-Encoding: chunked\r\n", CL_TE_BODY),
        rejected(400),
    ),
    Case(
        "te-tab-value-with-cl",
        post(b"/tete", b"Content-Length: 4\r\nTransfer-Encoding:\tchunked\r\n", CL_TE_BODY),
        rejected(400),
    ),
    Case(
        # A tab is optional whitespace: this is plain chunked, forwarded as such.
        "te-tab-value-alone",
        post(b"/te-tab", b"Transfer-Encoding:\tchunked\r\nConnection: close\r\n", CHUNKED_SMUGGLE),
        forwarded(b"/te-tab"),
        marker_in_body=True,
        body=SMUGGLED,
    ),
    Case(
        "te-space-before-colon",
        post(b"/tete", b"Content-Length: 4\r\nTransfer-Encoding : chunked\r\n", CL_TE_BODY),
        rejected(400),
    ),
    Case(
        "te-two-headers-identity-chunked",
        post(
            b"/tete",
            b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n",
            CHUNKED_SMUGGLE,
        ),
        rejected(400),
    ),
    Case(
        "te-two-headers-chunked-x",
        post(b"/tete", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n", CL_TE_BODY),
        rejected(400),
    ),
    Case(
        # Codings are case-insensitive (RFC 9112 7): this is chunked, and it is
        # forwarded as "chunked" with the request in its data left as data.
        "te-uppercase-chunked",
        post(b"/te-upper", b"Transfer-Encoding: CHUNKED\r\nConnection: close\r\n", CHUNKED_SMUGGLE),
        forwarded(b"/te-upper"),
        marker_in_body=True,
        body=SMUGGLED,
    ),
    Case(
        "te-bare-lf-before-name",
        post(b"/tete", b"X-A: b\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n", CL_TE_BODY),
        rejected(400),
    ),
    Case(
        "te-in-http-1.0-with-cl",
        post(
            b"/te10",
            b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
            CL_TE_BODY,
            version=b"HTTP/1.0",
        ),
        rejected(400),
    ),
    Case(
        # RFC 9112 6.1: faulty framing, close after; nginx answers 400. Forwarding
        # it re-framed and then closing is safe too.
        "te-in-http-1.0",
        post(b"/te10", b"Transfer-Encoding: chunked\r\n", chunk(M) + LAST, version=b"HTTP/1.0"),
        {(400,): (), (200,): (b"/te10",)},
        marker_in_body=True,
        body=M,
    ),
    Case(
        "te-in-http-1.0-keep-alive",
        post(
            b"/te10",
            b"Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n",
            LAST + SMUGGLED,
            version=b"HTTP/1.0",
        ),
        {(400,): (), (200,): (b"/te10",)},
    ),
    # -- Content-Length -----------------------------------------------------------------------
    Case(
        "cl-two-different",
        post(b"/cl", b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!" + SMUGGLED),
        rejected(400),
    ),
    Case(
        # RFC 9110 8.6 allows folding identical values; refusing is safe too.
        "cl-two-identical",
        post(b"/cl", b"Content-Length: 24\r\nContent-Length: 24\r\nConnection: close\r\n", M),
        {(400,): (), (200,): (b"/cl",)},
        marker_in_body=True,
        body=M,
    ),
    Case(
        "cl-list-identical",
        post(b"/cl", b"Content-Length: 24, 24\r\nConnection: close\r\n", M),
        {(400,): (), (200,): (b"/cl",)},
        marker_in_body=True,
        body=M,
    ),
    Case(
        "cl-plus-sign", post(b"/cl", b"Content-Length: +5\r\n", b"hello" + SMUGGLED), rejected(400)
    ),
    Case(
        # Trailing whitespace is not part of a field value: forwarded as "24".
        "cl-trailing-space",
        post(b"/cl-space", b"Content-Length: 24 \r\nConnection: close\r\n", M),
        forwarded(b"/cl-space"),
        marker_in_body=True,
        body=M,
    ),
    Case(
        "cl-inner-space",
        post(b"/cl", b"Content-Length: 5 6\r\n", b"hello" + SMUGGLED),
        rejected(400),
    ),
    Case("cl-hex", post(b"/cl", b"Content-Length: 0x5\r\n", b"hello" + SMUGGLED), rejected(400)),
    Case("cl-comma", post(b"/cl", b"Content-Length: 5,6\r\n", b"hello" + SMUGGLED), rejected(400)),
    Case(
        "cl-negative", post(b"/cl", b"Content-Length: -1\r\n", b"hello" + SMUGGLED), rejected(400)
    ),
    Case(
        "cl-overflow",
        post(b"/cl", b"Content-Length: 99999999999999999999999\r\n", b"hello" + SMUGGLED),
        rejected(400),
    ),
    Case(
        "cl-over-proxy-body-size",
        post(b"/cl", b"Content-Length: %d\r\n" % (BODY_LIMIT + 1), b"hello" + SMUGGLED),
        rejected(413),
    ),
    Case(
        # small.test has proxy-body-size 1k: the first 1 KiB is streamed, then 413.
        "chunked-over-proxy-body-size",
        post(
            b"/big",
            b"Transfer-Encoding: chunked\r\n",
            chunk(b"a" * 1024) + chunk(b"b" * 16) + chunk(M) + LAST,
            host=b"Host: small.test\r\n",
        ),
        rejected(413),
        partial=b"/big",
    ),
    # -- line endings and folding -----------------------------------------------------------
    Case("bare-lf-request-line", b"GET /" + M + b" HTTP/1.1\n" + H + b"\r\n", rejected(400)),
    Case(
        "bare-lf-headers",
        b"GET /" + M + b" HTTP/1.1\r\nHost: raw.test\nX-A: b\n\n",
        rejected(400),
    ),
    Case("bare-cr-request-line", b"GET /" + M + b" HTTP/1.1\r" + H + b"\r\n", rejected(400)),
    Case(
        "bare-cr-header-line",
        b"GET /" + M + b" HTTP/1.1\r\nHost: raw.test\rX-A: b\r\n\r\n",
        rejected(400),
    ),
    Case("obs-fold-space", get(b"/" + M, b"X-Folded: a\r\n b\r\n"), rejected(400)),
    Case("obs-fold-tab", get(b"/" + M, b"X-Folded: a\r\n\tb\r\n"), rejected(400)),
    # -- header names and values ------------------------------------------------------------
    Case("space-before-colon", get(b"/" + M, b"X-Foo : a\r\n"), rejected(400)),
    Case(
        "host-space-before-colon",
        b"GET /" + M + b" HTTP/1.1\r\nHost : raw.test\r\n\r\n",
        rejected(400),
    ),
    Case("name-with-space", get(b"/" + M, b"Foo Bar: a\r\n"), rejected(400)),
    Case("name-with-at", get(b"/" + M, b"Foo@: a\r\n"), rejected(400)),
    Case("empty-name", get(b"/" + M, b": a\r\n"), rejected(400)),
    Case("nul-in-value", get(b"/" + M, b"X-A: a\x00b\r\n"), rejected(400)),
    Case("cr-in-value", get(b"/" + M, b"X-A: a\rb\r\n"), rejected(400)),
    Case("nul-in-target", get(b"/" + M + b"\x00x"), rejected(400)),
    # -- limits ---------------------------------------------------------------------------------
    Case("request-line-over-8k", get(b"/" + M + b"a" * (8 * 1024)), rejected(414)),
    Case(
        "101-headers",
        get(b"/" + M, b"".join(b"X-H%d: v\r\n" % i for i in range(100))),
        rejected(400),
    ),
    Case(
        "headers-over-32k",
        get(b"/" + M, b"".join(b"X-H%d: %b\r\n" % (i, b"v" * 4000) for i in range(9))),
        rejected(400),
    ),
    # -- chunked bodies -------------------------------------------------------------------------
    Case(
        "chunk-size-not-hex",
        post(b"/chunk", b"Transfer-Encoding: chunked\r\n", chunk(b"hello") + b"zz\r\n" + M + LAST),
        rejected(400),
        partial=b"/chunk",
    ),
    Case(
        "chunk-size-overflow",
        post(b"/chunk", b"Transfer-Encoding: chunked\r\n", b"ffffffffffffffffff\r\n" + M + LAST),
        rejected(400),
        partial=b"/chunk",
    ),
    Case(
        "chunk-size-junk",
        post(b"/chunk", b"Transfer-Encoding: chunked\r\n", b"5 x\r\nhello\r\n" + M + LAST),
        rejected(400),
        partial=b"/chunk",
    ),
    Case(
        "chunk-size-bare-lf",
        post(b"/chunk", b"Transfer-Encoding: chunked\r\n", b"5\nhello\n0\n\n" + SMUGGLED),
        rejected(400),
        partial=b"/chunk",
    ),
    Case(
        "chunk-data-missing-crlf",
        post(b"/chunk", b"Transfer-Encoding: chunked\r\n", b"5\r\nhelloXX" + SMUGGLED + LAST),
        rejected(400),
        partial=b"/chunk",
    ),
    Case(
        "chunk-size-shorter-than-data",
        post(b"/chunk", b"Transfer-Encoding: chunked\r\n", b"3\r\nhello\r\n" + LAST + SMUGGLED),
        rejected(400),
        partial=b"/chunk",
    ),
    # -- requests hidden behind a body or after the last request -----------------------------
    Case(
        # The 5-byte body is followed by what a chunked reader would see as the
        # end of the body and a second request: ingressd sees an invalid request.
        "request-hidden-after-short-body",
        post(b"/short", b"Content-Length: 5\r\n", b"hello" + LAST + SMUGGLED),
        {(200, 400): (b"/short",)},
        body=b"hello",
    ),
    Case(
        "request-after-connection-close",
        get(b"/first", b"Connection: close\r\n") + SMUGGLED,
        {(200,): (b"/first",)},
    ),
    Case(
        "pipelined-absolute-form-empty-authority",
        get(b"/a") + b"GET http:///" + M + b" HTTP/1.1\r\n" + H + b"\r\n",
        {(200, 400): (b"/a",)},
    ),
    # -- Host and the request target -------------------------------------------------------
    Case(
        "absolute-form-other-host",
        b"GET http://other.test/" + M + b" HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n",
        rejected(404),
    ),
    Case(
        # The authority replaces Host (RFC 9112 3.2.2): forwarded with one Host.
        "absolute-form-routes-by-authority",
        b"GET http://raw.test/abs HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
        forwarded(b"/abs"),
        host=b"raw.test",
    ),
    Case(
        "absolute-form-empty-authority",
        b"GET http:///" + M + b" HTTP/1.1\r\n" + H + b"\r\n",
        rejected(400),
    ),
    Case("missing-host", b"GET /" + M + b" HTTP/1.1\r\n\r\n", rejected(400)),
    Case("two-identical-hosts", get(b"/" + M, H), rejected(400)),
    Case("two-different-hosts", get(b"/" + M, b"Host: other.test\r\n"), rejected(400)),
    # -- HTTP versions -----------------------------------------------------------------------
    Case("http-1.2", get(b"/" + M, version=b"HTTP/1.2"), rejected(400, 505)),
    Case(
        "http-2.0-on-plain-connection",
        get(b"/" + M, b"Connection: close\r\n", version=b"HTTP/2.0"),
        rejected(400, 505),
    ),
    # Kept alive by a (Proxy-)Connection header: client_h1 must still ask the
    # version (it infers 1.1 only from keep-alive without either header).
    Case(
        "http-2.0-connection-keep-alive",
        get(b"/" + M, b"Connection: keep-alive\r\n", version=b"HTTP/2.0"),
        rejected(400, 505),
    ),
    Case(
        "http-2.0-proxy-connection-keep-alive",
        get(b"/" + M, b"Proxy-Connection: keep-alive\r\n", version=b"HTTP/2.0"),
        rejected(400, 505),
    ),
    Case("http-2.0-no-connection-header", get(b"/" + M, version=b"HTTP/2.0"), rejected(400, 505)),
    Case("http-2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SMUGGLED, rejected(400, 505)),
    Case("http-0.9-request", b"GET /" + M + b"\r\n\r\n", rejected(400)),
    Case("lowercase-http-version", get(b"/" + M, version=b"http/1.1"), rejected(400, 505)),
    # -- methods -----------------------------------------------------------------------------
    Case("method-invalid-char", b"G@T /" + M + b" HTTP/1.1\r\n" + H + b"\r\n", rejected(400, 501)),
    Case("method-lowercase", b"get /" + M + b" HTTP/1.1\r\n" + H + b"\r\n", rejected(400, 501)),
    Case(
        "connect",
        b"CONNECT raw.test:80 HTTP/1.1\r\nHost: raw.test:80\r\n\r\n" + SMUGGLED,
        rejected(405, 501),
    ),
    # -- upgrades ----------------------------------------------------------------------------
    Case(
        # The upstream answers 200, not 101: the bytes after the head are never
        # passed on, and the connection closes after the response.
        "h2c-upgrade-then-smuggled",
        get(
            b"/up",
            b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
        )
        + SMUGGLED,
        forwarded(b"/up"),
    ),
    Case(
        "websocket-upgrade-then-smuggled",
        get(
            b"/ws",
            b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        )
        + SMUGGLED,
        forwarded(b"/ws"),
    ),
    Case(
        "h2c-upgrade-with-body",
        post(
            b"/up",
            b"Connection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 5\r\n",
            b"hello" + SMUGGLED,
        ),
        {(200,): (b"/up",), (400,): ()},
        body=b"hello",
    ),
]


def test_at_least_35_cases() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 35


# -- the module's ingressd ----------------------------------------------------------------------


@dataclass
class Env:
    ingressd: Ingressd
    recorder: RecordingListener


def manifests(recorder_port: int) -> list[dict]:
    return [
        ingress_class(),
        *echo_backend("raw", recorder_port),
        ingress("hostile", [rule("raw.test", path("/", "raw"))]),
        ingress(
            "small-bodies",
            [rule("small.test", path("/", "raw"))],
            annotations={"nginx.ingress.kubernetes.io/proxy-body-size": "1k"},
        ),
    ]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, upstream_loop: BackgroundLoop) -> Iterator[Env]:
    workdir: Path = tmp_path_factory.mktemp("e2e-smuggling")
    recorder = RecordingListener(upstream_loop)
    try:
        # A short grace: connections that known bugs leave open must not stall teardown.
        with serving(workdir, manifests(recorder.port), ["--shutdown-grace", "1"]) as proc:
            env = Env(proc, recorder)
            sentinel(env)  # the pool now holds an upstream connection
            yield env
    finally:
        recorder.close()


# -- talking and looking --------------------------------------------------------------------------


def exchange(port: int, payload: bytes, timeout: float = READ_TIMEOUT) -> tuple[bytes, bool]:
    """Send ``payload``; everything read, and whether ingressd closed within ``timeout``.

    (``raw_exchange`` reads until close or timeout alike; here the difference matters.)
    """
    deadline = time.monotonic() + timeout
    out = b""
    with socket.create_connection((LOCALHOST, port), timeout=timeout) as s:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(payload)
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                data = s.recv(65536)
            except TimeoutError:
                return out, False
            except ConnectionResetError:
                return out, True
            if not data:
                return out, True
            out += data
    return out, False


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]


def responses(data: bytes) -> list[Response]:
    """The responses in ``data``, parsed by httptools (a cut-off last one counts)."""
    got: list[Response] = []

    class Callbacks:
        def on_header(self, name: bytes, value: bytes) -> None:
            got[-1].headers.append((name.lower(), value))

        def on_message_begin(self) -> None:
            got.append(Response(0, []))

        def on_headers_complete(self) -> None:
            got[-1].status = parser.get_status_code()

    parser = httptools.HttpResponseParser(Callbacks())
    try:
        parser.feed_data(data)
    except httptools.HttpParserError as exc:
        raise AssertionError(f"ingressd's answer is not HTTP ({exc}): {data[:500]!r}") from None
    return got


@dataclass
class Upstream:
    """One request as the upstream received it."""

    head: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]  # names lowercased
    body: bytes | None  # None: the request never completed


_REQUEST_LINE = re.compile(rb"([A-Z]+) (\S+) HTTP/1\.1")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEX = re.compile(rb"[0-9a-fA-F]{1,15}")


def parse_upstream(data: bytes) -> list[Upstream]:
    """Strictly parse one upstream connection's bytes, as a strict server would.

    Anything that is not clean HTTP/1.1 framing fails: that is what a desync
    between ingressd and the upstream would look like.
    """
    out: list[Upstream] = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"an unterminated head reached the upstream: {data[:500]!r}"
        lines = head.split(b"\r\n")
        line = _REQUEST_LINE.fullmatch(lines[0])
        assert line, f"not a request line upstream: {lines[0][:300]!r}"
        headers = []
        for raw in lines[1:]:
            name, colon, value = raw.partition(b":")
            assert colon and _TOKEN.fullmatch(name), f"bad header line upstream: {raw[:300]!r}"
            assert not set(value) & {0, 10, 13}, f"bad header value upstream: {raw[:300]!r}"
            headers.append((name.lower(), value.strip(b" \t")))
        te = [v for n, v in headers if n == b"transfer-encoding"]
        cl = [v for n, v in headers if n == b"content-length"]
        assert not (te and cl) and len(te) <= 1 and len(cl) <= 1, f"ambiguous framing: {head!r}"
        if te:
            assert te == [b"chunked"], f"Transfer-Encoding upstream: {te}"
            body, data = _dechunk(rest)
        elif cl:
            assert cl[0].isdigit(), f"Content-Length upstream: {cl[0]!r}"
            n = int(cl[0])
            body, data = (rest[:n], rest[n:]) if len(rest) >= n else (None, b"")
        else:
            body, data = b"", rest
        out.append(Upstream(head, line[2], headers, body))
    return out


def _dechunk(data: bytes) -> tuple[bytes | None, bytes]:
    """(body, rest) of a chunked body at the start of ``data``; body None if cut off."""
    body = b""
    while True:
        size_line, sep, rest = data.partition(b"\r\n")
        if not sep:
            return None, b""
        assert _HEX.fullmatch(size_line), f"bad chunk size upstream: {size_line[:100]!r}"
        size = int(size_line, 16)
        if size == 0:
            if len(rest) < 2:
                return None, b""
            assert rest.startswith(b"\r\n"), f"trailers upstream: {rest[:100]!r}"
            return body, rest[2:]
        if len(rest) < size + 2:
            return None, b""
        assert rest[size : size + 2] == b"\r\n", f"chunk not ended by CRLF: {rest[:100]!r}"
        body += rest[:size]
        data = rest[size + 2 :]


def received_since(recorder: RecordingListener, mark: list[int]) -> list[bytes]:
    """What each upstream connection received after ``mark`` (``since`` per connection):
    each begins at a message boundary, so each parses on its own."""
    return [data[mark[i] if i < len(mark) else 0 :] for i, data in enumerate(recorder.received)]


def sentinel(env: Env) -> bytes:
    """A plain request that must reach the upstream; returns its target."""
    target = f"/sentinel-{uuid.uuid4().hex}".encode()
    answer = raw_exchange(env.ingressd.http_port, get(target, b"Connection: close\r\n"))
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"recorded\n"), answer[:300]
    return target


# -- the cases ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", [case.param() for case in CASES])
def test_hostile_request(env: Env, case: Case) -> None:
    marker = new_marker()
    payload = case.payload.replace(M, marker)
    mark = env.recorder.mark()
    answer, closed = exchange(env.ingressd.http_port, payload)
    after = sentinel(env)  # also proves the upstream is still reachable and recorded
    time.sleep(SETTLE)
    per_connection = received_since(env.recorder, mark)

    # Safety: clean framing upstream, the marker never in a head, nothing unexpected.
    seen = [request for data in per_connection for request in parse_upstream(data)]
    assert [r.target for r in seen].count(after) == 1, seen
    requests = [r for r in seen if r.target != after]
    for request in requests:
        assert marker not in request.head, f"smuggled request reached the upstream: {request}"
    if not case.marker_in_body:
        leaked = b"".join(per_connection)
        assert marker not in leaked, f"the marker reached the upstream: {leaked[:3000]!r}"
    allowed = {t for targets in case.outcomes.values() for t in targets} | {case.partial}
    unexpected = [r for r in requests if r.target.replace(marker, M) not in allowed]
    assert not unexpected, f"requests reached the upstream: {unexpected}"

    # Outcome: the answer, what was forwarded complete, the connection closed.
    got = responses(answer)
    statuses = tuple(r.status for r in got)
    if statuses not in case.outcomes:
        raise OutcomeMismatch(
            f"statuses {statuses} (closed: {closed}), expected one of {list(case.outcomes)}: "
            f"{answer[:600]!r}"
        )
    complete = [r.target for r in requests if r.body is not None]
    if complete != list(case.outcomes[statuses]):
        raise OutcomeMismatch(f"forwarded {complete}, expected {case.outcomes[statuses]}")
    cut_off = [r.target for r in requests if r.body is None]
    if cut_off and (case.partial is None or set(cut_off) != {case.partial}):
        raise OutcomeMismatch(f"incomplete requests reached the upstream: {cut_off}")
    if not closed:
        raise OutcomeMismatch(f"the connection was not closed within {READ_TIMEOUT} s")
    if got[-1].status >= 400 and (b"connection", b"close") not in got[-1].headers:
        raise OutcomeMismatch(f"no Connection: close on the error: {got[-1].headers}")
    forwarded_ok = [r for r in requests if r.body is not None]
    if case.body is not None and forwarded_ok:
        assert forwarded_ok[0].body == case.body.replace(M, marker), forwarded_ok[0]
    if case.host is not None:
        hosts = [v for n, v in forwarded_ok[0].headers if n == b"host"]
        assert hosts == [case.host], forwarded_ok[0].headers


# -- last: nothing above made ingressd log an error -------------------------------------------


def test_no_errors_logged(env: Env) -> None:
    log = env.ingressd.log()
    assert "ingressd serving" in log
    bad = [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line]
    assert bad == [], "\n".join(bad[:20])
