"""The echo upstream, the demo upstreams and the bundled example manifests."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from yarl import URL

from ingressd.demo import demo_endpoints, start_demo_upstreams
from ingressd.echo import EchoServer, pattern_bytes, start_echo

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = aiohttp.ClientTimeout(total=20)


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    server = await start_echo("127.0.0.1", 0, "foo")
    try:
        yield server
    finally:
        await asyncio.wait_for(server.close(), 10)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=TIMEOUT, auto_decompress=False) as s:
        yield s


async def test_binds_a_free_port(echo: EchoServer) -> None:
    assert echo.port > 0
    assert echo.url == f"http://127.0.0.1:{echo.port}"


async def test_json_echo(echo: EchoServer, session: aiohttp.ClientSession) -> None:
    body = b"hello world" * 1000
    url = URL(f"{echo.url}/a%2Fb/./c%20d?x=1%202&y", encoded=True)
    async with session.post(url, data=body, headers={"X-Test": "yes"}) as resp:
        assert resp.status == 200
        assert resp.headers["X-Echo-Service"] == "foo"
        got = await resp.json()
    assert got["service"] == "foo"
    assert got["method"] == "POST"
    assert got["path"] == "/a%2Fb/./c%20d"
    assert got["query"] == "x=1%202&y"
    assert got["headers"]["x-test"] == "yes"
    assert got["headers"]["host"] == f"127.0.0.1:{echo.port}"
    assert ["X-Test", "yes"] in got["raw_headers"]
    assert got["body_bytes"] == len(body)
    assert got["body_sha256"] == hashlib.sha256(body).hexdigest()


async def test_any_method_and_empty_body(echo: EchoServer, session: aiohttp.ClientSession) -> None:
    for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND"):
        async with session.request(method, f"{echo.url}/x") as resp:
            assert resp.status == 200
            got = await resp.json()
        assert got["method"] == method
        assert got["body_bytes"] == 0
        assert got["body_sha256"] == hashlib.sha256(b"").hexdigest()


async def test_large_streamed_upload(echo: EchoServer, session: aiohttp.ClientSession) -> None:
    # Bigger than aiohttp's default 1 MiB client_max_size, sent chunked.
    chunk = bytes(range(256)) * 256
    count = 48  # 3 MiB

    async def gen() -> AsyncIterator[bytes]:
        for _ in range(count):
            yield chunk

    async with session.put(f"{echo.url}/upload", data=gen()) as resp:
        assert resp.status == 200
        got = await resp.json()
    assert got["body_bytes"] == len(chunk) * count
    assert got["body_sha256"] == hashlib.sha256(chunk * count).hexdigest()
    assert got["headers"]["transfer-encoding"] == "chunked"


async def test_gzip_body_is_not_decompressed(
    echo: EchoServer, session: aiohttp.ClientSession
) -> None:
    body = b"\x1f\x8bnot really gzip"
    headers = {"Content-Encoding": "gzip"}
    async with session.post(f"{echo.url}/", data=body, headers=headers) as resp:
        got = await resp.json()
    assert got["body_bytes"] == len(body)


@pytest.mark.parametrize("size", [0, 1, 65536, 65536 * 3 + 17])
async def test_bytes(echo: EchoServer, session: aiohttp.ClientSession, size: int) -> None:
    async with session.get(f"{echo.url}/_echo/bytes/{size}") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(size)
        assert "Transfer-Encoding" not in resp.headers
        data = await resp.read()
    assert data == pattern_bytes(size)


async def test_chunked(echo: EchoServer, session: aiohttp.ClientSession) -> None:
    size = 65536 * 2 + 5
    async with session.get(f"{echo.url}/_echo/chunked/{size}") as resp:
        assert resp.status == 200
        assert "Content-Length" not in resp.headers
        assert resp.headers["Transfer-Encoding"] == "chunked"
        data = await resp.read()
    assert len(data) == size
    assert data == pattern_bytes(size)


async def test_special_path_anywhere_in_path(
    echo: EchoServer, session: aiohttp.ClientSession
) -> None:
    async with session.get(f"{echo.url}/some/prefix/_echo/bytes/10") as resp:
        assert await resp.read() == pattern_bytes(10)
    async with session.get(f"{echo.url}/_echo/bytesx/10") as resp:
        assert (await resp.json())["path"] == "/_echo/bytesx/10"


async def test_status(echo: EchoServer, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{echo.url}/_echo/status/418") as resp:
        assert resp.status == 418
        assert "418" in await resp.text()
    async with session.get(f"{echo.url}/_echo/status/204") as resp:
        assert resp.status == 204
        assert await resp.read() == b""
    async with session.get(f"{echo.url}/_echo/status/99") as resp:
        assert resp.status == 400


async def test_sleep(echo: EchoServer, session: aiohttp.ClientSession) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with session.get(f"{echo.url}/_echo/sleep/200") as resp:
        assert resp.status == 200
        got = await resp.json()
    assert loop.time() - start >= 0.19
    assert got["path"] == "/_echo/sleep/200"


async def test_websocket_echo(echo: EchoServer, session: aiohttp.ClientSession) -> None:
    async with session.ws_connect(f"{echo.url}/ws", timeout=aiohttp.ClientWSTimeout(10)) as ws:
        await ws.send_str("hello")
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.TEXT
        assert msg.data == "hello"
        payload = bytes(range(256)) * 40
        await ws.send_bytes(payload)
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.BINARY
        assert msg.data == payload
        await ws.close()


async def test_close_ends_open_websockets(session: aiohttp.ClientSession) -> None:
    server = await start_echo("127.0.0.1", 0, "ws")
    try:
        ws = await session.ws_connect(f"{server.url}/", timeout=aiohttp.ClientWSTimeout(10))
    finally:
        await asyncio.wait_for(server.close(), 10)
    msg = await ws.receive(timeout=10)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await ws.close()


async def test_websocket_refused_by_status_path(
    echo: EchoServer, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await session.ws_connect(f"{echo.url}/_echo/status/403")
    assert info.value.status == 403


# ---------------------------------------------------------------- demo


def test_demo_endpoints_of_examples() -> None:
    assert demo_endpoints(EXAMPLES) == [
        ("127.0.0.1", 18081, "web"),
        ("127.0.0.1", 18082, "api"),
        ("127.0.0.1", 18083, "blog"),
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_start_demo_upstreams(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    port = _free_port()
    (tmp_path / "eps.yaml").write_text(
        textwrap.dedent(
            f"""\
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: one
              namespace: demo
              labels:
                kubernetes.io/service-name: one
            addressType: IPv4
            ports:
              - name: http
                port: {port}
            endpoints:
              - addresses: ["127.0.0.1"]
              - addresses: ["10.0.0.1"]
            """
        )
    )
    assert demo_endpoints(tmp_path) == [("127.0.0.1", port, "one")]
    servers = await start_demo_upstreams(tmp_path)
    try:
        assert [(s.host, s.port, s.name) for s in servers] == [("127.0.0.1", port, "one")]
        async with session.get(f"http://127.0.0.1:{port}/") as resp:
            assert (await resp.json())["service"] == "one"
        # The port is now taken: a second start fails cleanly.
        with pytest.raises(OSError, match="service one"):
            await start_demo_upstreams(tmp_path)
    finally:
        for s in servers:
            await asyncio.wait_for(s.close(), 10)


# ---------------------------------------------------------------- examples


def _example_documents() -> list[tuple[str, dict]]:
    docs = []
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert files, "no example manifests found"
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


def test_example_documents_are_well_formed() -> None:
    for name, doc in _example_documents():
        assert isinstance(doc, dict), name
        assert isinstance(doc.get("apiVersion"), str) and doc["apiVersion"], name
        assert isinstance(doc.get("kind"), str) and doc["kind"], name
        assert isinstance(doc.get("metadata", {}).get("name"), str), name
        if doc["kind"] == "Ingress":
            for rule in doc["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    assert path["pathType"] in ("Exact", "Prefix", "ImplementationSpecific")
                    assert path["path"].startswith("/")
                    port = path["backend"]["service"]["port"]
                    assert ("number" in port) != ("name" in port)
        if doc["kind"] == "EndpointSlice":
            assert doc["addressType"] == "IPv4"
            assert doc["metadata"]["labels"]["kubernetes.io/service-name"]


def test_examples_build_without_problems() -> None:
    from ingressd.routing.build import build_table
    from ingressd.sources.manifests import load_directory

    loaded = load_directory(EXAMPLES)
    assert loaded.problems == ()
    table = build_table(loaded.store.snapshot())
    assert [str(p) for p in table.problems] == []
    assert table.route_for("demo.test", "/api/users").backend.name == "demo/api:http"
    assert table.route_for("demo.test", "/healthz").backend.name == "demo/api:80"
    assert table.route_for("demo.test", "/healthz/x").backend.name == "demo/web:80"
    assert table.route_for("blog.demo.test", "/blog/posts/1").backend.name == "demo/blog:8080"
    assert table.route_for("x.apps.demo.test", "/").backend.name == "demo/web:80"
    assert table.route_for("plain.demo.test", "/ws").backend.name == "demo/web:80"
    assert table.route_for("plain.demo.test", "/").backend.name == "demo/api:http"
    cert = table.certificate_for("demo.test")
    assert cert is not None and cert.covers("secure.demo.test")
    assert cert.not_after > 4_000_000_000  # far in the future (2096+)
