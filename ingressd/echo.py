"""A small upstream server for demos and tests: it tells you what it received.

Any method, any path:

* a WebSocket upgrade is accepted and every text or binary message is sent back
  unchanged until the client closes;
* anything else gets ``200`` and a JSON description of the request::

    {"service": NAME, "method": "POST", "path": "/raw%2Fpath", "query": "a=1",
     "headers": {"host": "...", ...}, "raw_headers": [["Host", "..."], ...],
     "body_bytes": 5, "body_sha256": "..."}

  ``path`` and ``query`` are exactly as received (percent-escapes kept).
  ``headers`` has lower-cased names, repeated headers joined with ", ";
  ``raw_headers`` keeps every header line with its original case and order.
  The body is read in chunks and only counted and hashed, so uploads of any
  size use bounded memory. Request bodies are not decompressed.

Test helpers, recognised wherever ``/_echo/`` appears in the received path (so
they still work behind a path-rewriting route):

* ``/_echo/bytes/N``: N bytes with Content-Length, byte i being ``i % 256``;
* ``/_echo/chunked/N``: the same bytes with chunked transfer encoding;
* ``/_echo/status/CODE``: that status (200-599) with a short text body; an
  upgrade request to this path is refused with that status too;
* ``/_echo/sleep/MS``: waits MS milliseconds, then answers as usual (the JSON
  echo, or accepting the WebSocket).

Every response carries ``X-Echo-Service: NAME``. Run one by hand with
``python -m ingressd.echo --port 9001 --name foo``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import re
import ssl
import weakref
from dataclasses import dataclass
from http import HTTPStatus

from aiohttp import WSMsgType, web
from yarl import URL

CHUNK = 64 * 1024
# Byte i of every generated body is i % 256; CHUNK is a multiple of 256, so each
# chunk is this same block.
_PATTERN = bytes(range(256)) * (CHUNK // 256)
_SPECIAL = re.compile(r"/_echo/(bytes|chunked|status|sleep)/(\d+)(?:/|$)")

SERVICE_HEADER = "X-Echo-Service"

_NAME: web.AppKey[str] = web.AppKey("echo_name", str)
_SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey(
    "echo_sockets", weakref.WeakSet
)


def pattern_bytes(n: int) -> bytes:
    """The first ``n`` bytes of the generated bodies (for checking them in tests)."""
    full, rest = divmod(n, CHUNK)
    return _PATTERN * full + _PATTERN[:rest]


def _split_target(request: web.BaseRequest) -> tuple[str, str]:
    """(raw path, raw query) of the request target, as the client sent them."""
    target = request.raw_path
    if not target.startswith("/"):  # absolute-form ("http://host/p?q") or "*"
        with contextlib.suppress(ValueError):
            url = URL(target)
            if url.absolute:
                target = url.raw_path_qs
    path, _, query = target.partition("?")
    return path, query


async def _drain(request: web.BaseRequest) -> tuple[int, str]:
    """Read the whole body in chunks; return its length and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_chunked(CHUNK):
        size += len(chunk)
        digest.update(chunk)
    return size, digest.hexdigest()


def _headers(request: web.BaseRequest) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


async def _describe(request: web.BaseRequest, name: str) -> web.Response:
    path, query = _split_target(request)
    size, digest = await _drain(request)
    body = {
        "service": name,
        "method": request.method,
        "path": path,
        "query": query,
        "headers": _headers(request),
        "raw_headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers],
        "body_bytes": size,
        "body_sha256": digest,
    }
    return web.json_response(body, headers={SERVICE_HEADER: name})


async def _stream(
    request: web.BaseRequest, name: str, size: int, chunked: bool
) -> web.StreamResponse:
    await _drain(request)
    resp = web.StreamResponse(
        status=200, headers={SERVICE_HEADER: name, "Content-Type": "application/octet-stream"}
    )
    if chunked:
        resp.enable_chunked_encoding()
    else:
        resp.content_length = size
    await resp.prepare(request)
    if request.method != "HEAD":
        left = size
        while left > 0:
            n = min(left, CHUNK)
            await resp.write(_PATTERN if n == CHUNK else _PATTERN[:n])
            left -= n
    await resp.write_eof()
    return resp


async def _status(request: web.BaseRequest, name: str, code: int) -> web.Response:
    await _drain(request)
    if not 200 <= code <= 599:
        return web.Response(
            status=400, text=f"status {code} must be 200-599\n", headers={SERVICE_HEADER: name}
        )
    try:
        reason = HTTPStatus(code).phrase
    except ValueError:
        reason = ""
    if code in (204, 304):  # no body allowed
        return web.Response(status=code, headers={SERVICE_HEADER: name})
    return web.Response(
        status=code, text=f"{code} {reason}".rstrip() + "\n", headers={SERVICE_HEADER: name}
    )


async def _websocket(request: web.Request, name: str) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=0, heartbeat=None)
    await ws.prepare(request)
    sockets = request.app[_SOCKETS]
    sockets.add(ws)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        sockets.discard(ws)
    return ws


async def _handle(request: web.Request) -> web.StreamResponse:
    name = request.app[_NAME]
    path, _ = _split_target(request)
    special = _SPECIAL.search(path)
    kind, arg = (special.group(1), int(special.group(2))) if special else ("", 0)
    if kind == "status":
        return await _status(request, name, arg)
    if kind == "sleep":
        await asyncio.sleep(arg / 1000)
    if web.WebSocketResponse().can_prepare(request).ok:
        return await _websocket(request, name)
    if kind in ("bytes", "chunked"):
        return await _stream(request, name, arg, chunked=kind == "chunked")
    return await _describe(request, name)


async def _close_sockets(app: web.Application) -> None:
    sockets: weakref.WeakSet[web.WebSocketResponse] = app[_SOCKETS]
    for ws in list(sockets):
        with contextlib.suppress(Exception):
            await ws.close(code=1001, message=b"server shutdown")


def make_app(name: str) -> web.Application:
    """The echo application answering as service ``name``."""
    app = web.Application(
        # 0 disables the request size limit; the body is streamed anyway.
        client_max_size=0,
        handler_args={
            "auto_decompress": False,  # count the bytes that were actually sent
            "max_line_size": 65536,
            "max_field_size": 65536,
            "max_headers": 512,
        },
    )
    app[_NAME] = name
    app[_SOCKETS] = weakref.WeakSet()
    app.router.add_route("*", "/{tail:.*}", _handle)
    app.on_shutdown.append(_close_sockets)
    return app


@dataclass
class EchoServer:
    """A running echo server; ``port`` is the bound port (useful with port 0)."""

    runner: web.AppRunner
    host: str
    port: int
    name: str
    tls: bool = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_echo(
    host: str, port: int, name: str, ssl_context: ssl.SSLContext | None = None
) -> EchoServer:
    """Start an echo server on ``host:port`` (0 picks a free port); HTTPS with ``ssl_context``."""
    runner = web.AppRunner(make_app(name), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1] if runner.addresses else port
    return EchoServer(runner, host, bound, name, tls=ssl_context is not None)


async def _serve(host: str, port: int, name: str) -> None:
    server = await start_echo(host, port, name)
    print(f"echo service {name!r} listening on {server.url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ingressd.echo", description="Echo upstream for demos and tests."
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=9001, help="port (default 9001; 0 picks one)")
    p.add_argument("--name", default="echo", help='service name reported as "service"')
    args = p.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port, args.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
