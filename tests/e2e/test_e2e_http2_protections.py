"""End to end: HTTP/2's protections (issue 15), each with raw frames or a
client that misbehaves on purpose, over TLS to a real ``ingressd serve``.

Every test runs a prober beside the misbehaving connection: another client
that keeps asking for a page while the attack goes on, and must be answered
every time. Limits and timeouts are ingressd's defaults except the timeouts,
shortened so that the tests take seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import (
    BackgroundLoop,
    EchoServers,
    Ingressd,
    echo_backend,
    sample_labels,
    scrape,
)
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from h2_client import H2Client, RawH2, continuation
from hyperframe.frame import (
    DataFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from k8s_objects import ingress, ingress_class, path, rule

HOST = "p.h2.test"
TIMEOUT = 2  # --client-send-timeout, --client-header-timeout, --client-body-timeout
KEEPALIVE = 3
MiB = 1 << 20
CALM = ErrorCodes.ENHANCE_YOUR_CALM


class StallingUpstream:
    """Reads a request's head, then never reads its body (holds it 30 s)."""

    def __init__(self, loop: BackgroundLoop) -> None:
        self._loop = loop
        self.heads = 0
        self._server = loop.run(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port: int = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            self.heads += 1
            await asyncio.sleep(30)
        writer.close()

    def close(self) -> None:
        async def _close() -> None:
            self._server.close()

        self._loop.run(_close())


class EndlessUpstream:
    """Answers with a 1 GiB body, as fast as it is taken, and notes when
    ingressd drops its connection."""

    def __init__(self, loop: BackgroundLoop) -> None:
        self._loop = loop
        self.sent = 0
        self.dropped_at: float | None = None
        self._server = loop.run(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port: int = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chunk = b"x" * 65536
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (1 << 30))
            for _ in range((1 << 30) // len(chunk)):
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), 30)
                self.sent += len(chunk)
        except Exception:
            pass
        self.dropped_at = time.monotonic()
        writer.close()

    def close(self) -> None:
        async def _close() -> None:
            self._server.close()

        self._loop.run(_close())


def manifests(echo: EchoServers, stalling: int, endless: int) -> list[dict]:
    return [
        ingress_class(),
        *echo_backend("web", echo["web"]),
        *echo_backend("stall", stalling),
        *echo_backend("endless", endless),
        ingress(
            "p",
            [rule(HOST, path("/", "web"), path("/stall", "stall"), path("/endless", "endless"))],
            annotations={"nginx.ingress.kubernetes.io/proxy-body-size": "0"},
        ),
    ]


class Env:
    def __init__(self, ing: Ingressd, stalling: StallingUpstream, endless: EndlessUpstream) -> None:
        self.ing = ing
        self.stalling = stalling
        self.endless = endless

    def client(self, **kwargs: object) -> H2Client:
        return H2Client(self.ing.https_port, HOST, **kwargs)  # type: ignore[arg-type]

    def raw(self) -> RawH2:
        return RawH2(self.ing.https_port, HOST)


def start(
    work: Path, loop: BackgroundLoop, *extra: str
) -> tuple[Ingressd, EchoServers, StallingUpstream, EndlessUpstream]:
    echo = EchoServers(loop, ["web"])
    stalling = StallingUpstream(loop)
    endless = EndlessUpstream(loop)
    proc = Ingressd(
        work / "manifests",
        work / "ingressd.log",
        extra_args=[
            "--client-send-timeout", str(TIMEOUT),
            "--client-header-timeout", str(TIMEOUT),
            "--client-body-timeout", str(TIMEOUT),
            "--keepalive-timeout", str(KEEPALIVE),
            *extra,
        ],
    )  # fmt: skip
    proc.update({"all.yaml": manifests(echo, stalling.port, endless.port)})
    proc.start()
    return proc, echo, stalling, endless


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, upstream_loop: BackgroundLoop, curl_binary: str
) -> Iterator[Env]:
    proc, echo, stalling, endless = start(
        tmp_path_factory.mktemp("e2e-http2-protections"), upstream_loop
    )
    try:
        yield Env(proc, stalling, endless)
    finally:
        proc.stop()
        echo.close()
        stalling.close()
        endless.close()


class Prober:
    """Another client, asking for a page every 50 ms on connections of its
    own while a test misbehaves: every answer must be a 200."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.statuses: list[int | str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with H2Client(self.port, HOST) as c:
                    for _ in range(5):
                        self.statuses.append(c.get("/probe", HOST, timeout=5).status)
                        if self._stop.wait(0.05):
                            return
            except Exception as exc:
                self.statuses.append(repr(exc))

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # a few probes after the attack too
        self._stop.set()
        self._thread.join(15)
        assert self.statuses, "the prober got no answer at all"
        assert all(s == 200 for s in self.statuses), self.statuses


def wait_closed(raw: RawH2, timeout: float = 5.0) -> None:
    raw.until_closed(timeout)


# -- concurrent streams ---------------------------------------------------------------------


def test_max_concurrent_streams_advertised_and_refused_beyond(env: Env) -> None:
    with Prober(env.ing.https_port), env.raw() as raw:
        settings = [f for f in raw.read(2) if isinstance(f, SettingsFrame)]
        assert settings and settings[0].settings[SettingCodes.MAX_CONCURRENT_STREAMS] == 128
        # Extended CONNECT (WebSocket over HTTP/2) is not offered.
        assert settings[0].settings.get(SettingCodes.ENABLE_CONNECT_PROTOCOL, 0) == 0
        raw.send(SettingsFrame(0, flags=["ACK"]).serialize())
        # 130 slow requests at once: 128 are taken, two refused.
        sids = list(range(1, 261, 2))
        raw.send(b"".join(raw.get(sid, "/_echo/sleep/1500", HOST) for sid in sids))
        deadline = time.monotonic() + 10
        answered: set[int] = set()
        while len(answered) < 128 and time.monotonic() < deadline:
            for f in raw.read(0.5):
                if isinstance(f, HeadersFrame):
                    answered.add(f.stream_id)
        assert raw.resets() == {257: ErrorCodes.REFUSED_STREAM, 259: ErrorCodes.REFUSED_STREAM}
        assert answered == set(sids[:128])
        assert raw.goaway() is None and not raw.closed


# -- header blocks --------------------------------------------------------------------------


def test_header_list_over_the_bound_closes_the_connection(env: Env) -> None:
    """HPACK decoding is bounded (32 KiB by default): a small block that
    decodes to 36 KiB (one 3 KiB field, indexed twelve times) is refused
    with GOAWAY ENHANCE_YOUR_CALM, as nginx refuses a header over its buffers."""
    with Prober(env.ing.https_port), env.raw() as raw:
        big = b"v" * 3000
        head = [
            (b":method", b"GET"), (b":scheme", b"https"), (b":authority", HOST.encode()),
            (b":path", b"/"), *[(b"x-big", big)] * 12,
        ]  # fmt: skip
        frame = raw.headers_frame(1, head)
        assert len(frame.data) < 4096  # small on the wire
        raw.send(frame.serialize())
        wait_closed(raw)
        goaway = raw.goaway()
        assert goaway is not None and goaway.error_code == CALM
    # Under the bound, the same fields are served.
    with env.client() as c:
        assert c.get("/", HOST, headers=[("x-big", "v" * 3000)] * 3).status == 200


def test_continuation_flood_is_cut(env: Env) -> None:
    """CVE-2024-27316: a header block that never ends. Cut in bytes (16 KiB
    CONTINUATION frames) and in frames (empty ones), with GOAWAY
    ENHANCE_YOUR_CALM, long before it could grow."""
    before = env.ing.peak_rss_kib()
    for payload in (b"\x00" * 16384, b""):
        with Prober(env.ing.https_port), env.raw() as raw:
            start = raw.headers_frame(1, [(b":method", b"GET")], end_headers=False)
            raw.send(start.serialize())
            for _ in range(1000):
                if not raw.send(continuation(1, payload)):
                    break
            wait_closed(raw)
            goaway = raw.goaway()
            assert goaway is not None and goaway.error_code == CALM, raw.frames
    # 16 MB of CONTINUATION were sent: what came after the bound was discarded.
    assert env.ing.peak_rss_kib() - before < 8 * 1024


# -- rapid reset, floods ----------------------------------------------------------------------


def test_rapid_reset_closes_the_connection(env: Env) -> None:
    """CVE-2023-44487: streams opened and reset at once, by the thousand. Past
    200 resets of unanswered streams in 10 s: GOAWAY ENHANCE_YOUR_CALM, and
    the streams taken up before that are a fraction of those sent."""
    key = ("ingressd_requests_total", sample_labels(
        namespace="default", ingress="p", service="web", method="GET", status_class="4xx"
    ))  # fmt: skip
    before = scrape(env.ing.admin_port).get(key, 0.0)
    with Prober(env.ing.https_port), env.raw() as raw:
        sid = 1
        for _ in range(100):
            batch = b""
            for _ in range(20):
                batch += raw.get(sid, "/_echo/sleep/5000", HOST)
                batch += RstStreamFrame(sid, error_code=ErrorCodes.CANCEL).serialize()
                sid += 2
            if not raw.send(batch):
                break
        wait_closed(raw)
        goaway = raw.goaway()
        assert goaway is not None and goaway.error_code == CALM
    # Each stream taken up and reset is logged as 499: the 200 allowed, and
    # what arrived in the same reads (nginx's cap: 2 x 128 new streams a read).
    time.sleep(1.5)  # the counts reach /metrics
    taken = scrape(env.ing.admin_port).get(key, 0.0) - before
    assert 200 <= taken <= 200 + 2 * 128, taken


@pytest.mark.parametrize("kind", ["ping", "settings", "empty-data"])
def test_control_frame_floods_close_the_connection(env: Env, kind: str) -> None:
    """PING, SETTINGS and empty DATA floods: past 1,000 in 10 s, GOAWAY
    ENHANCE_YOUR_CALM."""
    with Prober(env.ing.https_port), env.raw() as raw:
        if kind == "ping":
            frame = PingFrame(0, opaque_data=b"12345678").serialize()
        elif kind == "settings":
            frame = SettingsFrame(0, settings={SettingCodes.MAX_FRAME_SIZE: 16384}).serialize()
        else:
            raw.send(raw.headers_frame(1, _post(), end_stream=False).serialize())
            frame = DataFrame(1, data=b"").serialize()
        for _ in range(10):
            if not raw.send(frame * 500):
                break
        wait_closed(raw)
        goaway = raw.goaway()
        assert goaway is not None and goaway.error_code == CALM


@pytest.mark.parametrize(
    "kind",
    [
        "window-update",
        "window-update-reset-stream",
        "empty-data-reset-stream",
        "end-stream-data-reset-stream",
        "data-reset-stream",
        "rst-reset-stream",
        "headers-reset-stream",
    ],
)
def test_window_update_and_late_frame_floods_close_the_connection(env: Env, kind: str) -> None:
    """WINDOW_UPDATE frames (on the connection, or on a stream gone), and DATA
    (empty or not, with END_STREAM or not), RST_STREAM or HEADERS frames on a
    stream the client reset, to which h2 gives no event (it drops them, or
    answers each with RST_STREAM): control frames all, past 1,000 in 10 s
    GOAWAY ENHANCE_YOUR_CALM (nginx: "http2 flood detected")."""
    with Prober(env.ing.https_port), env.raw() as raw:
        if kind == "window-update":
            frame = WindowUpdateFrame(0, window_increment=1).serialize()
        else:
            raw.send(raw.get(1, "/_echo/sleep/5000", HOST))
            raw.send(RstStreamFrame(1, error_code=ErrorCodes.CANCEL).serialize())
            if kind == "window-update-reset-stream":
                frame = WindowUpdateFrame(1, window_increment=1).serialize()
            elif kind == "empty-data-reset-stream":
                frame = DataFrame(1, data=b"").serialize()
            elif kind == "end-stream-data-reset-stream":
                frame = DataFrame(1, data=b"", flags=["END_STREAM"]).serialize()
            elif kind == "data-reset-stream":
                frame = DataFrame(1, data=b"x").serialize()
            elif kind == "headers-reset-stream":  # trailers for a stream gone
                frame = raw.headers_frame(1, [(b"x-t", b"1")]).serialize()
            else:
                frame = RstStreamFrame(1, error_code=ErrorCodes.CANCEL).serialize()
        for _ in range(10):
            if not raw.send(frame * 500):
                break
        wait_closed(raw)
        goaway = raw.goaway()
        assert goaway is not None and goaway.error_code == CALM, (
            raw.frames[-3:],
            env.ing.log()[-3000:],
        )


def test_window_updates_acknowledging_a_download_are_not_a_flood(env: Env) -> None:
    """A client that acknowledges every DATA frame with a WINDOW_UPDATE for the
    stream and one for the connection sends far more than 1,000 in 10 s on a large
    download: those are earned by the data sent, and the download completes."""
    size = 24 * MiB
    with env.raw() as raw:
        raw.send(raw.get(1, f"/_echo/bytes/{size}", HOST))
        got = sent = 0
        ended = False
        deadline = time.monotonic() + 60
        while not ended and not raw.closed and time.monotonic() < deadline:
            acks = b""
            for f in raw.read(1.0):
                if isinstance(f, DataFrame) and f.stream_id == 1:
                    got += len(f.data)
                    ended = "END_STREAM" in f.flags
                    if f.flow_controlled_length and not ended:
                        n = f.flow_controlled_length
                        acks += WindowUpdateFrame(1, window_increment=n).serialize()
                        acks += WindowUpdateFrame(0, window_increment=n).serialize()
                        sent += 2
            if acks:
                raw.send(acks)
        assert raw.goaway() is None and ended and got == size, (got, raw.goaway())
        assert sent > 1000  # more than the control-frame allowance, all earned


def _post() -> list[tuple[bytes, bytes]]:
    return [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", HOST.encode()),
            (b":path", b"/")]  # fmt: skip


def test_a_client_that_never_reads_is_dropped(
    tmp_path: Path, upstream_loop: BackgroundLoop
) -> None:
    """With the flood limit off, a client sending PINGs and never reading
    what they ask for: what waits to be sent is bounded (1 MiB past the
    transport's own buffer), then the connection is dropped."""
    proc, echo, stalling, endless = start(
        tmp_path, upstream_loop, "--http2-max-control-frames", "0"
    )
    try:
        before = proc.peak_rss_kib()
        with Prober(proc.https_port), RawH2(proc.https_port, HOST) as raw:
            ping = PingFrame(0, opaque_data=b"12345678").serialize() * 20000  # 340 KB
            sent = 0
            for _ in range(600):  # up to 200 MB of PINGs, 17 bytes of answer each
                if not raw.send(ping):
                    break
                sent += len(ping)
            assert raw.closed, f"still open after {sent} bytes of PING"
        grown = proc.peak_rss_kib() - before
        assert grown < 32 * 1024, f"ingressd's peak memory grew {grown} KiB"
    finally:
        proc.stop()
        for server in (echo, stalling, endless):
            server.close()


# -- flow control and stalls --------------------------------------------------------------------


def test_zero_window_stream_is_reset_and_its_upstream_freed(env: Env) -> None:
    """A client that opens no window for a response: after
    --client-send-timeout its stream is reset (CANCEL), and the upstream
    connection serving it is dropped."""
    with (
        Prober(env.ing.https_port),
        env.client(settings={SettingCodes.INITIAL_WINDOW_SIZE: 0}) as c,
    ):
        sid = c.request("/endless", HOST)
        c.until(lambda: c.responses[sid].status == 200, 5, "the response head")
        start = time.monotonic()
        r = c.response(sid, timeout=TIMEOUT + 5)
        assert r.reset == ErrorCodes.CANCEL and r.body == b""
        assert TIMEOUT - 0.5 <= time.monotonic() - start <= TIMEOUT + 3
        # Other streams of the same connection carry on (a small answer fits no
        # window... so it is headers only: a HEAD).
        assert c.get("/", HOST, method="HEAD").status == 200
    deadline = time.monotonic() + 5
    while env.endless.dropped_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert env.endless.dropped_at is not None, "the upstream connection was not freed"
    assert env.endless.sent < 8 * MiB  # paused, not read into memory


def test_a_silent_request_body_is_reset_without_an_answer(env: Env) -> None:
    """--client-body-timeout over HTTP/2, as nginx: the stream is reset
    (PROTOCOL_ERROR), no 408 is answered; the connection's other streams go on."""
    with env.client() as c:
        sid = c.request(
            "/", HOST, method="POST", headers=[("content-length", "100")], body=b"abc", end=False
        )
        start = time.monotonic()
        r = c.response(sid, timeout=TIMEOUT + 5)
        assert (r.reset, r.status, r.body) == (ErrorCodes.PROTOCOL_ERROR, 0, b""), r
        assert TIMEOUT - 0.5 <= time.monotonic() - start <= TIMEOUT + 3
        assert c.get("/", HOST, method="HEAD").status == 200
    env.ing.wait_for_log("request body timeout")


def test_slow_stream_reader_does_not_stall_the_others(env: Env) -> None:
    """One stream's client takes nothing (its stream window stays shut) while
    the upstream could send 1 GiB: ingressd pauses that upstream, holds a
    bounded amount, and answers the connection's other streams meanwhile."""
    before = env.ing.peak_rss_kib()
    sent_before = env.endless.sent
    with Prober(env.ing.https_port), env.client(auto_ack=False) as c:
        # The connection's window is wide open: only the stream's stays shut.
        c.conn.increment_flow_control_window(1 << 30)
        c.flush()
        slow = c.request("/endless", HOST)
        c.until(lambda: len(c.responses[slow].body) >= 65535, 5, "the first window's worth")
        time.sleep(0.5)
        c.auto_ack = True
        for i in range(5):
            assert c.get(f"/other/{i}", HOST).status == 200
        assert len(c.responses[slow].body) == 65535 and not c.responses[slow].done
    assert env.endless.sent - sent_before < 8 * MiB
    assert env.ing.peak_rss_kib() - before < 16 * 1024


def test_request_body_backpressure_holds_the_client_window(env: Env) -> None:
    """An upstream that reads no body: ingressd stops acknowledging DATA, so
    the client's window shuts and it can send only a bounded amount; the
    connection's other streams are served all along."""
    before = env.ing.peak_rss_kib()
    with Prober(env.ing.https_port), env.client() as c:
        sid = c.request("/stall", HOST, method="POST", end=False)
        body = b"b" * (128 * MiB)
        with pytest.raises(AssertionError, match="window stayed closed"):
            c.send_body_all(sid, body, timeout=4)
        assert c.conn.local_flow_control_window(sid) == 0
        # The same connection still serves other requests.
        assert c.get("/", HOST).status == 200
    assert env.ing.peak_rss_kib() - before < 32 * 1024


# -- timeouts -------------------------------------------------------------------------------------


def test_idle_connection_gets_goaway_after_the_keepalive_timeout(env: Env) -> None:
    with env.client() as c:
        assert c.get("/", HOST).status == 200
        start = time.monotonic()
        c.until(lambda: c.terminated is not None, KEEPALIVE + 3, "GOAWAY")
        assert c.terminated.error_code == ErrorCodes.NO_ERROR  # type: ignore[union-attr]
        assert KEEPALIVE - 0.5 <= time.monotonic() - start <= KEEPALIVE + 2
        c.until(lambda: c.closed, 3, "the close")


@pytest.mark.parametrize("partial", ["frame", "header-block"])
def test_slow_partial_frames_are_cut_after_the_header_timeout(env: Env, partial: str) -> None:
    with Prober(env.ing.https_port), env.raw() as raw:
        raw.read(1)  # SETTINGS
        if partial == "frame":
            raw.send(b"\x00\x00\x20\x01")  # 4 bytes of a HEADERS frame's 9-byte header
        else:
            raw.send(raw.headers_frame(1, [(b":method", b"GET")], end_headers=False).serialize())
        start = time.monotonic()
        wait_closed(raw, TIMEOUT + 4)
        assert time.monotonic() - start >= TIMEOUT - 0.5
        goaway = raw.goaway()
        assert goaway is not None and goaway.error_code == ErrorCodes.PROTOCOL_ERROR


def test_a_client_sending_whole_frames_steadily_is_not_cut_by_the_header_timeout(
    env: Env,
) -> None:
    """Reads end wherever TCP cuts them, often inside a frame; a client that keeps
    completing frames (WINDOW_UPDATEs here, which no flood limit counts) is not
    slow, however long it goes on: the timeout is per frame, not per
    connection. (A ping flood under load was cut by this timeout instead of
    by what its test was about.)"""
    frame = WindowUpdateFrame(0, window_increment=1).serialize()
    with Prober(env.ing.https_port), env.raw() as raw:
        raw.read(1)  # SETTINGS
        raw.send(frame[:5])
        deadline = time.monotonic() + TIMEOUT + 1.5
        while time.monotonic() < deadline:
            time.sleep(0.2)
            # The rest of the last frame, a whole one, and the start of another.
            assert raw.send(frame[5:] + frame + frame[:5]), "closed while sending"
            raw.read(0.01)
        raw.send(frame[5:] + raw.get(1, "/", HOST))
        deadline = time.monotonic() + 5
        while not any(isinstance(f, HeadersFrame) and f.stream_id == 1 for f in raw.frames):
            assert not raw.closed and time.monotonic() < deadline, raw.goaway()
            raw.read(0.5)
        assert raw.goaway() is None


def test_graceful_shutdown_finishes_streams_under_way(
    tmp_path: Path, upstream_loop: BackgroundLoop
) -> None:
    """SIGTERM: GOAWAY naming the last stream taken; that stream is answered,
    a stream opened after the GOAWAY is refused, then the connection closes
    and ingressd exits 0."""
    proc, echo, stalling, endless = start(tmp_path, upstream_loop, "--shutdown-grace", "10")
    try:
        with RawH2(proc.https_port, HOST) as raw:
            raw.send(raw.get(1, "/_echo/sleep/1500", HOST))
            time.sleep(0.3)
            proc.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            deadline = time.monotonic() + 5
            while raw.goaway() is None and time.monotonic() < deadline:
                raw.read(0.2)
            first = raw.goaway()
            assert first is not None
            assert (first.last_stream_id, first.error_code) == (1, ErrorCodes.NO_ERROR)
            raw.send(raw.get(3, "/", HOST))
            wait_closed(raw, 10)
            assert raw.resets().get(3) == ErrorCodes.REFUSED_STREAM
            heads = [f for f in raw.frames if isinstance(f, HeadersFrame) and f.stream_id == 1]
            ends = [
                f
                for f in raw.frames
                if f.stream_id == 1 and "END_STREAM" in getattr(f, "flags", set())
            ]
            assert heads and ends, raw.frames
        assert proc.proc.wait(10) == 0  # type: ignore[union-attr]
    finally:
        proc.stop()
        for server in (echo, stalling, endless):
            server.close()
