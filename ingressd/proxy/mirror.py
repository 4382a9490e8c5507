"""mirror-target: a copy of each request of a route, sent fire-and-forget.

As nginx's ``mirror`` in ingress-nginx's template (``nginx.tmpl``: ``mirror
/_mirror-UID; mirror_request_body on|off;`` and the internal ``location =
/_mirror-UID { proxy_set_header Host MIRROR-HOST; proxy_pass TARGET; }``,
``internal/ingress/annotations/mirror/main.go``): the copy carries the
client's method and headers, the Host mirror-host says (else the target's host
name), the body unless mirror-request-body is off, and goes to the target with
its variables expanded; its response is read no further than its head and
dropped. It never holds up the real request: it is sent once the request may go
upstream (after access checks, limits and auth-url, as nginx's precontent
phase) and its body is complete, on its own task, and nothing of it reaches the
client. nginx does hold the client's *next* request on a keep-alive connection
until the mirror answers; ingressd does not.

Bounded per process: ``MAX_IN_FLIGHT`` copies at once (more are dropped, not
queued), bodies of at most ``MAX_BODY`` bytes (a larger one's copy is dropped
whole, never sent truncated), ``TIMEOUT`` seconds per copy. Counted per
Ingress and result in ``ingressd_mirror_requests_total``: ``sent`` (the mirror
answered), ``failed`` (refused, reset, timed out), ``dropped`` (not sent),
``denied`` (the target's name resolved to an address the deny list refuses).

Where the copy connects is checked when it connects: every address the
target's host name resolves to must pass ``policy.mirror.refused_address``
(the list a literal address in the annotation is held to), else no connection
is made at all (a name resolving to an allowed and a denied address is denied
whole: which one a retry would use is the resolver's choice). The check sits in
the connector's resolver, so what aiohttp caches and connects to is what was
checked; a name re-pointed later (DNS rebinding) is checked again at its next
resolution. ingress-nginx checks nothing here (see ``policy/mirror.py``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from typing import TYPE_CHECKING, Any, Final

from ..model.policy import Mirror
from ..observe.stats import RequestStats
from ..policy.mirror import refused_address, split_variables

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("ingressd.proxy")

MAX_IN_FLIGHT: Final = 256
MAX_BODY: Final = 1024 * 1024
TIMEOUT: Final = 60.0
CONNECT_TIMEOUT: Final = 5.0
DENIED_LOG_EVERY: Final = 10.0  # seconds between two warnings of denied copies
# Request headers not copied: framing (aiohttp frames the copy itself) and Host.
_NOT_COPIED: Final = frozenset({b"host", b"content-length", b"transfer-encoding", b"expect"})


class MirrorCopy:
    """What one exchange keeps for its copy until it is sent."""

    __slots__ = ("armed", "body_limit", "config", "parts", "size", "with_body")

    def __init__(self, config: Mirror, with_body: bool) -> None:
        self.config = config
        self.with_body = with_body
        self.body_limit = MAX_BODY
        self.parts: list[bytes] | None = []
        self.size = 0
        self.armed = False  # cleared to go; sent when the body ends

    def keep(self, data: bytes) -> None:
        parts = self.parts
        if parts is None:
            return
        self.size += len(data)
        if self.size > self.body_limit:
            self.parts = None  # too large: the copy will be dropped
        else:
            parts.append(data)

    def body(self) -> bytes | None:
        parts = self.parts
        return None if parts is None else b"".join(parts)


def target_url(config: Mirror, request_uri: str, args: str, host: str, scheme: str) -> str:
    """The copy's URL: the target with its variables expanded. A target without a
    path gets nginx's: the mirror location's own URI (ingressd names it
    ``/_mirror``, nginx ``/_mirror-<Ingress UID>``), and the request's arguments."""
    base = f"{config.scheme}://{config.host}"
    default_port = 443 if config.scheme == "https" else 80
    if config.port != default_port:
        base += f":{config.port}"
    if not config.path:
        return base + "/_mirror" + ("?" + args if args else "")
    values = {
        "request_uri": request_uri,
        "args": args,
        "query_string": args,
        "is_args": "?" if args else "",
        "host": host,
        "scheme": scheme,
    }
    out = [values[text] if is_var else text for is_var, text in split_variables(config.path)]
    path = "".join(out)
    if not path.startswith("/"):  # a request target starts with one
        path = "/" + path
    return base + path


class AddressDenied(OSError):
    """The target's name resolved to an address a copy may not go to."""


def checked_resolver(inner: Any) -> Any:
    """An aiohttp resolver that answers what ``inner`` (an aiohttp
    ``AbstractResolver``) resolves, or raises AddressDenied when any of the
    addresses is one the deny list refuses."""
    from aiohttp.abc import AbstractResolver

    class CheckedResolver(AbstractResolver):
        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[Any]:
            results = await inner.resolve(host, port, family)
            for result in results:
                try:
                    addr = ipaddress.ip_address(result["host"])
                except ValueError:
                    raise AddressDenied(f"{host} resolved to {result['host']!r}") from None
                why = refused_address(addr)
                if why is not None:
                    raise AddressDenied(f"{host} resolved to {addr}: {why}")
            return results

        async def close(self) -> None:
            await inner.close()

    return CheckedResolver()


class Mirrors:
    """One process's mirror copies: their HTTP client, how many are under way.

    ``resolver``: the aiohttp resolver names are resolved with (aiohttp's
    default one when None), whose answers are checked before any connection.
    """

    def __init__(self, resolver: Any = None) -> None:
        self._resolver = resolver
        self._denied_logged = -DENIED_LOG_EVERY
        self.in_flight = 0
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            import aiohttp

            # ssl=False: nginx's proxy_ssl_verify is off by default for the mirror
            # location too.
            inner = self._resolver if self._resolver is not None else aiohttp.DefaultResolver()
            connector = aiohttp.TCPConnector(
                ssl=False,
                limit=MAX_IN_FLIGHT,
                keepalive_timeout=30,
                resolver=checked_resolver(inner),
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    def dropped(self, stats: RequestStats, ingress: str, config: Mirror) -> None:
        stats.mirror(ingress, config.host, "dropped")

    def send(
        self,
        loop: asyncio.AbstractEventLoop,
        stats: RequestStats,
        ingress: str,
        config: Mirror,
        method: str,
        request_uri: str,
        args: str,
        host: str,
        scheme: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes | None,
    ) -> None:
        if self.in_flight >= MAX_IN_FLIGHT:
            stats.mirror(ingress, config.host, "dropped")
            return
        url = target_url(config, request_uri, args, host, scheme)
        copied = [
            (n.decode("latin-1"), v.decode("latin-1"))
            for n, v in headers
            if n.lower() not in _NOT_COPIED
        ]
        copied.append(("Host", config.host_header))
        self.in_flight += 1
        task = loop.create_task(self._run(stats, ingress, config, method, url, copied, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self,
        stats: RequestStats,
        ingress: str,
        config: Mirror,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
    ) -> None:
        import aiohttp
        import yarl

        result = "failed"
        try:
            timeout = aiohttp.ClientTimeout(total=TIMEOUT, connect=CONNECT_TIMEOUT)
            async with self._client().request(
                method,
                yarl.URL(url, encoded=True),
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=timeout,
            ):
                result = "sent"  # the head is enough; the body is dropped with the connection
        except asyncio.CancelledError:
            raise
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, AddressDenied):
                result = "denied"
                self._denied(ingress, exc.os_error)
            else:
                log.debug("mirror copy to %s failed: %s", url, exc)
        except Exception as exc:  # any failure of a copy is the copy's alone
            log.debug("mirror copy to %s failed: %s", url, exc)
        finally:
            self.in_flight -= 1
            stats.mirror(ingress, config.host, result)

    def _denied(self, ingress: str, exc: AddressDenied) -> None:
        now = time.monotonic()
        if now - self._denied_logged >= DENIED_LOG_EVERY:
            self._denied_logged = now
            log.warning(
                "mirror-target of Ingress %s: %s; no copy sent (counted as denied in "
                "ingressd_mirror_requests_total)",
                ingress,
                exc,
            )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None
