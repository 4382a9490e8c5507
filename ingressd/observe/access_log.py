"""The access log: one line per request on stdout, as JSON or a combined-log-like line.

Built for the hot path: a JSON line is one f-string whose client-sent values
go through the json module's C string escaper (measured: a third of the cost
of building a dict and ``json.dumps`` of it, 5.5 against 18 µs per line on a
busy 2-core machine); the wall-clock second is formatted once per second;
lines are buffered and written with one ``os.write`` per ``PIPE_BUF`` bytes
(about nine lines), and what is left every ``FLUSH_INTERVAL``. With
``--access-log off`` no ``AccessLog`` exists and nothing is formatted.

Worker processes share stdout: each write is at most ``PIPE_BUF`` bytes
(unless one line is longer) and ends at a line end, so on a pipe, as in a
container, lines from different workers never interleave: POSIX makes such
writes atomic.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from json.encoder import encode_basestring_ascii as _quote

from ..model.log_format import LogFormat
from .exchange_view import Exchange
from .log_format import Line, render

log = logging.getLogger("ingressd.access")

FORMATS = ("json", "plain", "off")
FLUSH_INTERVAL = 0.1  # seconds a line may wait in the buffer
PIPE_BUF = 4096  # writes up to this size are atomic on a pipe (POSIX)


# The usual methods, quoted once rather than per line.
_JSON_METHODS = {m: f'"{m.decode()}"' for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE")}


def _q(value: bytes | None) -> str:
    """A JSON string of client-sent bytes (as Latin-1: every byte survives), or null."""
    return "null" if value is None else _quote(value.decode("latin-1"))


def _plain(value: bytes | None) -> str:
    """Client-sent bytes for a plain line: quotes, backslashes and controls escaped; - if absent."""
    if not value:
        return "-"
    text = value.decode("latin-1")
    if text.isprintable() and text.isascii() and '"' not in text and "\\" not in text:
        return text
    return _quote(text)[1:-1]


def _header(ex: Exchange) -> tuple[bytes | None, bytes | None]:
    """User-Agent and Referer, looked up only when a line is written."""
    agent = referer = None
    for name, value in ex.headers:
        size = len(name)
        if size == 10 and name.lower() == b"user-agent":
            agent = value
        elif size == 7 and name.lower() == b"referer":
            referer = value
    return agent, referer


class AccessLog:
    def __init__(self, fmt: str, fd: int = 1) -> None:
        if fmt not in ("json", "plain"):
            raise ValueError(f"access log format {fmt!r} is not json or plain")
        self.fd = fd
        self.format = fmt
        self.line = self._json if fmt == "json" else self._plain_line
        self._default_line = self.line
        self._format: LogFormat | None = None
        self._lines: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = ""
        self.dropped = 0
        self.broken = False

    def write(
        self,
        loop: asyncio.AbstractEventLoop,
        ex: Exchange,
        status: int,
        duration: float,
        upstream: float | None,
        bytes_in: int,
        ingress: str,
        backend: str,
    ) -> None:
        self.write_text(loop, self.line(ex, status, duration, upstream, bytes_in, ingress, backend))

    def set_format(self, fmt: LogFormat | None) -> None:
        """The ConfigMap's log-format-upstream (None: the --access-log format's own line)."""
        if fmt == self._format:
            return
        self._format = fmt
        self.line = self._default_line if fmt is None else self._custom

    def _custom(
        self,
        ex: Exchange,
        status: int,
        duration: float,
        upstream: float | None,
        bytes_in: int,
        ingress: str,
        backend: str,
    ) -> str:
        assert self._format is not None
        line = Line(ex, status, duration, upstream, bytes_in, ingress, backend, time.time())
        return render(self._format, line)

    def write_text(self, loop: asyncio.AbstractEventLoop, line: str) -> None:
        """A line buffered for writing: a request's, or one made elsewhere (a layer-4
        session's, stream/session_log.py)."""
        size = self._size + len(line)
        if size > PIPE_BUF and self._lines:
            self._write_buffered()  # at most PIPE_BUF bytes, ending at a line end
            size = len(line)
        self._lines.append(line)
        self._size = size
        if self._timer is None:
            self._timer = loop.call_later(FLUSH_INTERVAL, self.flush)

    # -- lines --

    def _stamp_of(self, now: float, fmt: str) -> str:
        """``now`` to the second in ``fmt``, formatted once per second."""
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime(fmt, time.gmtime(second))
        return self._stamp

    def _json(
        self,
        ex: Exchange,
        status: int,
        duration: float,
        upstream: float | None,
        bytes_in: int,
        ingress: str,
        backend: str,
    ) -> str:
        now = time.time()
        stamp = self._stamp_of(now, "%Y-%m-%dT%H:%M:%S")
        path, _, query = ex.url.partition(b"?")
        agent, referer = _header(ex)
        fwd = ex.forward
        if fwd is not None and ex.up_start:
            up_addr = _quote(str(fwd.endpoint))
            up_connect = "%.6f" % ex.up_connect  # noqa: UP031
            up_time = "null" if upstream is None else "%.6f" % upstream  # noqa: UP031
            up_status = str(status) if ex.response_started else "null"
        else:
            up_addr = up_connect = up_time = up_status = "null"
        # %-formatting a float costs half of an f-string's :.6f.
        duration_text = "%.6f" % duration  # noqa: UP031
        # Client-sent values go through the json module's C escaper, called
        # directly where they cannot be None: a call less per field adds up.
        return (
            f'{{"time":"{stamp}.{int((now % 1) * 1000):03d}Z",'
            f'"request_id":{_q(ex.request_id)},'
            f'"client_addr":{_quote(ex.real_ip())},'
            f'"host":{_q(ex.host)},'
            f'"method":{_JSON_METHODS.get(ex.method) or _quote(ex.method.decode("latin-1"))},'
            f'"path":{_quote(path.decode("latin-1"))},"query":{_quote(query.decode("latin-1"))},'
            f'"protocol":"{ex.protocol}",'
            f'"status":{status},"bytes_sent":{ex.sent},"bytes_received":{bytes_in},'
            f'"duration":{duration_text},"upstream_connect_duration":{up_connect},'
            f'"upstream_duration":{up_time},"upstream_addr":{up_addr},'
            f'"upstream_status":{up_status},"ingress":{_quote(ingress)},'
            f'"service":{_quote(backend)},"user_agent":{_q(agent)},"referer":{_q(referer)}}}\n'
        )

    def _plain_line(
        self,
        ex: Exchange,
        status: int,
        duration: float,
        upstream: float | None,
        bytes_in: int,
        ingress: str,
        backend: str,
    ) -> str:
        """ingress-nginx's default format (combined, then the upstream's part), less user."""
        stamp = self._stamp_of(time.time(), "%d/%b/%Y:%H:%M:%S +0000")
        agent, referer = _header(ex)
        fwd = ex.forward
        if fwd is not None and ex.up_start:
            up_addr = str(fwd.endpoint)
            up_time = f"{upstream:.3f}" if upstream is not None else "-"
            up_status = str(status) if ex.response_started else "-"
        else:
            up_addr = up_time = up_status = "-"
        proto = ex.protocol
        return (
            f'{ex.real_ip()} - - [{stamp}] "{_plain(ex.method)} {_plain(ex.url)} {proto}" '
            f'{status} {ex.sent} "{_plain(referer)}" "{_plain(agent)}" {bytes_in} '
            f"{duration:.3f} [{ingress or '-'}] [{backend or '-'}] {up_addr} {up_time} "
            f"{up_status} {_plain(ex.request_id)}\n"
        )

    # -- output --

    def flush(self) -> None:
        """Write what is buffered: every FLUSH_INTERVAL, and when the process stops."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._write_buffered()

    def _write_buffered(self) -> None:
        lines, self._lines, self._size = self._lines, [], 0
        if lines and not self.broken:
            self._write("".join(lines))

    def _write(self, text: str) -> None:
        data = memoryview(text.encode("utf-8", "backslashreplace"))
        while data:
            try:
                written = os.write(self.fd, data)
            except BlockingIOError:
                # A non-blocking stdout that nobody drains: waiting would stall
                # the proxy, so what does not fit is dropped and counted.
                self._drop(bytes(data).count(b"\n"))
                return
            except OSError as exc:
                self.broken = True
                log.warning("access log disabled: writing to stdout failed: %s", exc)
                return
            data = data[written:]

    def _drop(self, lines: int) -> None:
        if not self.dropped:
            log.warning("access log: stdout is full; dropping lines")
        self.dropped += lines
