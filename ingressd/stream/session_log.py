"""What a finished layer-4 session leaves behind: a metrics record and an access-log line."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _quote

from ..observe.access_log import AccessLog
from ..observe.stats import RequestStats


@dataclass(frozen=True, slots=True)
class SessionRecord:
    kind: str  # "tcp", "udp", "passthrough"
    listen: str  # "tcp/9000", or the passthrough host
    backend: str  # "namespace/service:port"
    client: str  # the client's address (the PROXY protocol's when decoded)
    upstream: str  # "host:port", "" when none was reached
    # nginx's stream $status: 200; 400 bad PROXY header; 502 no upstream; 503
    # refused, too many sessions open (as nginx's limit_conn in a stream block)
    status: int
    bytes_in: int  # from the client
    bytes_out: int  # to the client
    duration: float


class SessionLog:
    """Counts every session in the process's stats and logs it, as nginx's stream access log."""

    def __init__(self, stats: RequestStats, access_log: AccessLog | None) -> None:
        self.stats = stats
        self.access_log = access_log

    def record(self, loop: asyncio.AbstractEventLoop, rec: SessionRecord) -> None:
        self.stats.stream(
            (rec.kind, rec.listen, rec.backend, rec.status), rec.bytes_in, rec.bytes_out
        )
        if self.access_log is not None:
            self.access_log.write_text(loop, self._line(rec))

    def refused(self, loop: asyncio.AbstractEventLoop, rec: SessionRecord) -> None:
        """A connection closed at once for want of a place (bounds.py): counted,
        not access-logged, since a flood of them would be a flood of lines (the
        process log says so, rate-limited)."""
        self.stats.stream(
            (rec.kind, rec.listen, rec.backend, rec.status), rec.bytes_in, rec.bytes_out
        )

    def _line(self, rec: SessionRecord) -> str:
        if self.access_log is not None and self.access_log.format == "plain":
            stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
            return (
                f"{rec.client} [{stamp}] {rec.kind.upper()} {rec.listen} {rec.status} "
                f"{rec.bytes_out} {rec.bytes_in} {rec.duration:.3f} [{rec.backend}] "
                f"{rec.upstream or '-'}\n"
            )
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        return (
            f'{{"time":"{stamp}.{int((now % 1) * 1000):03d}Z","client_addr":{_quote(rec.client)},'
            f'"protocol":"{rec.kind.upper()}","listen":{_quote(rec.listen)},'
            f'"status":{rec.status},"bytes_sent":{rec.bytes_out},'
            f'"bytes_received":{rec.bytes_in},"duration":{rec.duration:.6f},'
            f'"upstream_addr":{_quote(rec.upstream) if rec.upstream else "null"},'
            f'"service":{_quote(rec.backend)}}}\n'
        )
