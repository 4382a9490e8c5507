"""bench.py's gRPC scenario: unary calls over HTTP/2 (TLS, ALPN h2) to a
``backend-protocol: GRPC`` route, ingressd against nginx's ``grpc_pass``.

* The origin is one nginx (1 worker) speaking HTTP/2 in cleartext (h2c, as a
  GRPC backend does) that answers ``/bench.Echo/Unary`` as a gRPC server:
  ``application/grpc``, one framed message, ``grpc-status: 0`` in trailers.
  A grpcio origin would be the bottleneck for both proxies: on the 2-core
  test machine it answers about 6,000 calls/s by itself (h2load straight at a
  grpcio server with a generic handler), which nginx's grpc_pass would hit
  long before its own limit; nginx answers the same calls at over 70,000/s.
* nginx, the reference, is configured like ingress-nginx's gRPC location
  (nginx.tmpl with template.go buildProxyPass for backend-protocol GRPC):
  ``grpc_pass grpc://…`` to an upstream with keepalive, the
  ``grpc_set_header`` lines, ``listen … ssl http2``.
* ingressd serves the same host from an Ingress with ``backend-protocol: GRPC``.
* h2load drives both with the same gRPC request (a framed message, POST,
  ``content-type: application/grpc``, ``te: trailers``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from tools import (
    endpoint_slice,
    h2load_latencies,
    h2load_output,
    ingress,
    parse_h2load,
    percentile,
    service,
)

GRPC_HOST = "grpc.local"
GRPC_PATH = "/bench.Echo/Unary"
REQUEST = b"\x00\x00\x00\x00\x05hello"  # one gRPC message, uncompressed
REPLY = b"\x00\x00\x00\x00\x02ok"
# h2load: connections, and concurrent streams (calls) on each
CLIENTS = 10
STREAMS = 10


def origin_conf(main: str, prefix: Path, port: int) -> str:
    """The gRPC origin: nginx over h2c. ``main``: bench.py's top of nginx.conf.

    The static file is the framed reply; POST gets it too (error_page 405 turns
    it into a GET). The request body is read before the answer (mirror with
    mirror_request_body), as a gRPC server reads its request: answered at once,
    nginx would reset the rest of the request stream after the answer, which
    nginx's grpc_pass, reusing the connection, takes for a broken upstream
    ("upstream sent frame for unknown stream": 502s)."""
    www = prefix / "www" / GRPC_PATH.strip("/").split("/")[0]
    www.mkdir(parents=True, exist_ok=True)
    (www / GRPC_PATH.rsplit("/", 1)[1]).write_bytes(REPLY)
    return main + (
        "    keepalive_requests 1000000;\n"
        "    server {\n"
        f"        listen 127.0.0.1:{port} http2 backlog=4096;\n"
        f"        location = {GRPC_PATH} {{\n"
        f"            root {prefix}/www;\n"
        "            default_type application/grpc;\n"
        "            error_page 405 =200 $uri;\n"
        "            mirror /read-body;\n"
        "            mirror_request_body on;\n"
        "            add_trailer grpc-status 0 always;\n"
        '            add_trailer grpc-message "" always;\n'
        "        }\n"
        "        location = /read-body { internal; return 204; }\n"
        "    }\n"
        "}\n"
    )


# What ingress-nginx's gRPC location sets (nginx.tmpl, $proxySetHeader = grpc_set_header).
GRPC_SET_HEADERS = (
    ("Host", "$http_host"),
    ("X-Request-ID", "$request_id"),
    ("X-Real-IP", "$remote_addr"),
    ("X-Forwarded-For", "$remote_addr"),
    ("X-Forwarded-Host", "$http_host"),
    ("X-Forwarded-Port", "$server_port"),
    ("X-Forwarded-Proto", "$scheme"),
    ("X-Forwarded-Scheme", "$scheme"),
    ("X-Scheme", "$scheme"),
    ("X-Original-Forwarded-For", "$http_x_forwarded_for"),
    ("Proxy", '""'),
)


def proxy_conf(main: str, origin: int, https_port: int, tls: Path) -> str:
    """nginx in front, as ingress-nginx writes a GRPC location: HTTP/2 over TLS
    from the client, grpc_pass to the origin over kept-alive h2c connections."""
    headers = "".join(f"            grpc_set_header {n} {v};\n" for n, v in GRPC_SET_HEADERS)
    # keepalive_requests also caps the requests of an HTTP/2 connection (nginx
    # 1.19.7+): h2load does not reconnect in a timed run, so at 10,000 each of
    # its connections would end, its calls in flight failing, and the rate be
    # capped by the count; ingressd has no such cap.
    return main + (
        "    keepalive_requests 1000000;\n"
        "    ssl_session_cache shared:SSL:10m;\n"
        f"    upstream grpc_origin {{ server 127.0.0.1:{origin}; keepalive 64; }}\n"
        "    server {\n"
        f"        listen 127.0.0.1:{https_port} ssl http2 reuseport backlog=4096;\n"
        f"        server_name {GRPC_HOST};\n"
        f"        ssl_certificate {tls}/tls.crt;\n"
        f"        ssl_certificate_key {tls}/tls.key;\n"
        "        location / {\n"
        "            grpc_pass grpc://grpc_origin;\n"
        "            grpc_connect_timeout 5s;\n"
        "            grpc_send_timeout 60s;\n"
        "            grpc_read_timeout 60s;\n"
        "            grpc_buffer_size 4k;\n"
        "            grpc_next_upstream error timeout;\n"
        f"{headers}"
        "        }\n"
        "    }\n"
        "}\n"
    )


def manifests(origin: int) -> dict[str, dict[str, Any]]:
    """The Ingress (backend-protocol GRPC, TLS with bench.py's Secret), Service
    and EndpointSlice ingressd serves grpc.local from."""
    ns = "bench"
    grpc = {"nginx.ingress.kubernetes.io/backend-protocol": "GRPC"}
    return {
        "ingress-grpc": ingress(
            "bench-grpc", ns, GRPC_HOST, "grpc-origin", 80, grpc, tls_secret="bench-tls"
        ),
        "service-grpc": service("grpc-origin", ns, "grpc"),
        "endpointslice-grpc": endpoint_slice("grpc-origin-1", ns, "grpc-origin", "grpc", origin),
    }


def check(port: int, cert: bytes) -> str | None:
    """One call by hand with a real gRPC client (grpcio): the answer and its
    status must be right (h2load counts any 200 as a success and never reads
    trailers). None when it is; else what went wrong."""
    try:
        import grpc
    except ImportError:
        return None  # grpcio is a test dependency; without it h2load's checks stand
    creds = grpc.ssl_channel_credentials(root_certificates=cert)
    options = [("grpc.ssl_target_name_override", GRPC_HOST)]
    with grpc.secure_channel(f"127.0.0.1:{port}", creds, options=options) as channel:
        call = channel.unary_unary(GRPC_PATH)
        try:
            answer = call(REQUEST[5:], timeout=5)
        except grpc.RpcError as exc:
            return f"{exc.code()}: {exc.details()}"
    return None if answer == REPLY[5:] else f"answered {answer!r}"


def h2load_command(h2load: str, url: str, seconds: int, body: Path, log: Path) -> list[str]:
    return [
        h2load, "-D", str(seconds), "-c", str(CLIENTS), "-m", str(STREAMS), "-t", "1",
        "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
        "-H", f":authority: {GRPC_HOST}", f"--log-file={log}", url,
    ]  # fmt: skip


def run_h2load(h2load: str, port: int, seconds: int, cpus: tuple[int, ...] = ()) -> dict[str, Any]:
    """h2load's numbers for ``seconds`` of calls: requests, rps, p50/p99 (from
    its per-request log), failures and non-2xx statuses. ``cpus``: h2load is
    pinned to these (bench.py's CPU plan)."""
    with tempfile.TemporaryDirectory(prefix="h2load-grpc-") as tmp:
        body, log = Path(tmp) / "request.bin", Path(tmp) / "requests.log"
        body.write_bytes(REQUEST)
        url = f"https://127.0.0.1:{port}{GRPC_PATH}"
        output = h2load_output(h2load_command(h2load, url, seconds, body, log), seconds, cpus)
        latencies = h2load_latencies(log)
    summary = parse_h2load(output)
    return {
        "requests": summary.succeeded,
        "rps": summary.rps,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "socket_errors": {
            "failed": summary.failed,
            "errored": summary.errored,
            "timeout": summary.timeout,
        },
        "non_2xx_3xx": summary.non_2xx_3xx,
    }
