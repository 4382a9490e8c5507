"""What the ``h2`` package alone costs per HTTP/2 request, without sockets or ingressd.

One server-side ``H2Connection`` configured as ``proxy/client_h2.py`` configures
it receives a request's HEADERS frame (a browser-like head), then sends a
response head and a 3-byte body; the client side that makes and reads the
frames is not timed. Prints CPU time per request, with h2's own inbound
checks (its default) and with ingressd's one-pass check instead
(``proxy/h2_head.py``). The floor under ingressd's HTTP/2 cost per request:
compare with ``bench.py``'s h2 scenario (nginx's whole CPU per request).

    .venv/bin/python loadtests/h2cost.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import time

from h2.config import H2Configuration
from h2.connection import H2Connection

from ingressd.proxy.h2_head import checked_request_head

HEAD = [
    (":method", "GET"),
    (":scheme", "https"),
    (":authority", "bench.local"),
    (":path", "/"),
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"),
    ("accept", "text/html,application/xhtml+xml"),
    ("accept-language", "en-US,en;q=0.9"),
    ("accept-encoding", "gzip, deflate, br"),
    ("cookie", "a=1"),
    ("cookie", "b=2"),
    ("referer", "https://bench.local/"),
    ("sec-fetch-mode", "navigate"),
]
RESPONSE = [
    (b":status", b"200"),
    (b"content-length", b"3"),
    (b"date", b"Mon, 07 Dec 2026 12:00:00 GMT"),
    (b"content-type", b"text/plain"),
]


def cost(requests: int, own_checks: bool) -> float:
    """CPU µs per request on the server side."""
    client = H2Connection(H2Configuration(client_side=True))
    fast = (
        {}
        if own_checks
        else {"validate_inbound_headers": False, "normalize_inbound_headers": False}
    )
    server = H2Connection(
        H2Configuration(
            client_side=False, header_encoding=None, validate_outbound_headers=False, **fast
        )
    )
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    spent = 0.0
    for _ in range(requests):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, HEAD, end_stream=True)
        data = client.data_to_send()
        start = time.thread_time()
        event = server.receive_data(data)[0]
        if not own_checks:
            checked_request_head(event.headers)  # type: ignore[attr-defined]
        server.send_headers(event.stream_id, RESPONSE)  # type: ignore[attr-defined]
        server.send_data(event.stream_id, b"ok\n", end_stream=True)  # type: ignore[attr-defined]
        out = server.data_to_send()
        spent += time.thread_time() - start
        client.receive_data(out)
    return spent / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    for label, own in (("h2's inbound checks", True), ("ingressd's one-pass check", False)):
        print(f"h2 per request, {label}: {cost(args.requests, own):.1f} us CPU")


if __name__ == "__main__":
    main()
