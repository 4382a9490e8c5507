"""A request and its response as the access log reads them (observe/access_log.py,
observe/log_format.py): the proxy's exchange, which observe must not import."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..model.backend import Endpoint


class Forwarded(Protocol):
    """Where a forwarded request went (routing/decide.py's Forward)."""

    @property
    def endpoint(self) -> Endpoint: ...


class Exchange(Protocol):
    """A request and its response as a line reads them: the proxy's exchange
    (proxy/exchange.py), which the log must not import. Its attributes are read in
    place, as before: nothing is copied per request."""

    @property
    def method(self) -> bytes: ...
    @property
    def url(self) -> bytes: ...  # path and query as received
    @property
    def headers(self) -> Sequence[tuple[bytes, bytes]]: ...
    @property
    def host(self) -> bytes | None: ...
    @property
    def protocol(self) -> str: ...  # "HTTP/1.1", "HTTP/2.0", ...
    @property
    def request_id(self) -> bytes | None: ...
    @property
    def forward(self) -> Forwarded | None: ...  # None: answered by the proxy itself
    @property
    def up_start(self) -> float: ...  # 0: no upstream was tried
    @property
    def up_connect(self) -> float: ...
    @property
    def response_started(self) -> bool: ...
    @property
    def sent(self) -> int: ...  # bytes sent to the client

    def real_ip(self) -> str: ...
