"""server-tokens and allow-backend-server-header in proxy/http.py: which Server
header a response carries."""

from __future__ import annotations

from ingressd.proxy import http


def test_server_tokens_and_the_backend_s_server_header() -> None:
    """server-tokens: ingressd's Server on every head (its own answers included);
    allow-backend-server-header: the upstream's instead, never added to trailers."""
    upstream = [(b"Server", b"app/1"), (b"X", b"y")]
    try:
        http.set_server_header(False, True)  # without server-tokens: none at all
        assert b"Server" not in http.date_line() + http.local_response(404, b"", keep_alive=True)
        assert http.split_response(upstream)[0] == [(b"X", b"y")]
        http.set_server_header(True, False)
        assert http.date_line().endswith(b"\r\nServer: ingressd\r\n")
        assert http.split_response(upstream)[0] == [(b"X", b"y")]
        http.set_server_header(True, True)
        assert b"Server" not in http.date_line()
        assert http.split_response(upstream)[0] == upstream
        assert http.split_response([(b"X", b"y")])[0] == [(b"X", b"y"), (b"Server", b"ingressd")]
        assert http.response_headers([(b"grpc-status", b"0")]) == [(b"grpc-status", b"0")]
        assert b"\r\nServer: ingressd\r\n" in http.local_response(404, b"", keep_alive=True)
        assert http.server_value(local=True) == b"ingressd"
        assert http.server_value(local=False) is None
    finally:
        http.set_server_header(False, False)
