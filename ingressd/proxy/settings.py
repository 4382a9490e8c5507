"""The proxy's settings: timeouts, limits and sizes, from the command line."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..model.log_format import LogFormat
from ..model.policy import IPNetwork

# proxy_buffer_size in ingress-nginx's configuration (proxy-buffer-size): the
# response's status line and headers must fit in it, else 502 "upstream sent
# too big header".
DEFAULT_HEAD_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class ProxySettings:
    https_redirect_port: int = 443
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    send_timeout: float = 60.0
    client_header_timeout: float = 60.0
    client_body_timeout: float = 60.0
    keepalive_timeout: float = 75.0
    # ingress-nginx's proxy-body-size default; 0 = unlimited. Larger bodies get 413.
    max_body_size: int = 1024 * 1024
    # ingress-nginx's proxy-buffer-size default: an upstream response head
    # (status line and headers) larger than this is a 502.
    proxy_buffer_size: int = DEFAULT_HEAD_LIMIT
    # proxy-request-buffering (nginx's default on): a request body is read whole
    # before the upstream is connected; client-body-buffer-size of it in memory,
    # the rest in a temporary file (proxy/body.py). ingress-nginx's defaults.
    request_buffering: bool = True
    client_body_buffer_size: int = 8 * 1024
    # --client-body-temp-path ("": $TMPDIR) and --client-body-temp-size: where the
    # rest of a buffered body goes, and how much of it one process may hold.
    body_temp_path: str = ""
    body_temp_size: int = 1024**3
    # proxy-buffering (off in ingress-nginx): on, the upstream's response is read
    # ahead of a slow client up to proxy-buffers-number x proxy-buffer-size, and
    # read again once what waits for the client is down to proxy-busy-buffers-size
    # (0: nginx's default, two buffers).
    proxy_buffering: bool = False
    proxy_buffers_number: int = 4
    proxy_busy_buffers_size: int = 0
    max_request_line: int = 8192
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    # Passive health: consecutive connection failures that eject an endpoint,
    # and for how long at first (doubling while it keeps failing); 0: never.
    max_fails: int = 3
    fail_timeout: float = 10.0
    # Peers whose X-Forwarded-For is believed (--trusted-proxies, or the ConfigMap's
    # proxy-real-ip-cidr under use-forwarded-headers or enable-real-ip).
    trusted_proxies: tuple[IPNetwork, ...] = ()
    # The header a trusted peer names the client in, lowercase (forwarded-for-header;
    # nginx's real_ip_header).
    real_ip_header: bytes = b"x-forwarded-for"
    # A trusted peer's X-Forwarded-For is passed on with the peer appended
    # (--trusted-proxies; the ConfigMap's compute-full-forwarded-for); False: the
    # client it names alone, as ingress-nginx's X-Forwarded-For $remote_addr.
    full_forwarded_for: bool = True
    # A trusted peer's X-Forwarded-Proto, -Port and -Host are passed on, and its
    # X-Forwarded-Proto decides the HTTPS redirect (use-forwarded-headers).
    forwarded_headers: bool = False
    # Set by those keys: behind a PROXY protocol header its address is the client,
    # never a header's (proxy/peer.py trusted_for).
    proxy_protocol_is_client: bool = False
    # --use-proxy-protocol: how long a connection's PROXY header may take, from the
    # accept (the ConfigMap's proxy-protocol-header-timeout, 5 s as in ingress-nginx).
    proxy_protocol_timeout: float = 5.0
    # server-tokens: every response carries "Server: ingressd" (off, as ingress-nginx:
    # none at all); allow-backend-server-header: the upstream's own Server is passed
    # instead, which in ingress-nginx works only with server-tokens on (its
    # more_clear_headers Server otherwise clears it: kubernetes/ingress-nginx#6733).
    server_tokens: bool = False
    backend_server_header: bool = False
    # generate-request-id: a request without X-Request-ID gets one ($req_id); off:
    # none, and the upstream gets no X-Request-ID (nginx.tmpl's map $req_id).
    generate_request_id: bool = True
    # proxy-add-original-uri-header: the upstream gets X-Original-URI: $request_uri.
    original_uri_header: bool = False
    # The access log under the ConfigMap: disable-access-log (no lines at all),
    # enable-access-log-for-default-backend (requests no Ingress rule takes, answered
    # by the default backend or ingressd's own 404, are left out unless on, as
    # ingress-nginx's default server location's access_log off), log-format-upstream.
    access_log_off: bool = False
    log_default_backend: bool = False
    log_format: LogFormat | None = None
    # Open client connections per process (--max-connections; ingress-nginx's
    # max-worker-connections default). At the cap an idle keep-alive connection
    # is closed to make room, else the new one gets a 503 and is closed.
    max_connections: int = 16384
    # "json", "plain" or "off" (the command line's default is json)
    access_log: str = "off"
    # HTTP/2 on the TLS port, offered by ALPN before http/1.1 (ingress-nginx's
    # use-http2, on by default; --no-http2).
    http2: bool = True
    # Streams a client may have open at once: more are refused (REFUSED_STREAM),
    # nginx's http2_max_concurrent_streams.
    http2_max_concurrent_streams: int = 128
    # The decoded request header list (HPACK), as nginx bounds it by
    # large_client_header_buffers (4 x 8k): past it, GOAWAY ENHANCE_YOUR_CALM.
    http2_max_header_list_size: int = 32 * 1024
    # Streams a client may reset before their response ended, per 10 s (rapid
    # reset, CVE-2023-44487); more: GOAWAY ENHANCE_YOUR_CALM. 0: no limit.
    http2_max_resets: int = 200
    # PING, SETTINGS, PRIORITY, empty DATA and unknown frames a client may send
    # per 10 s; more: GOAWAY ENHANCE_YOUR_CALM. 0: no limit.
    http2_max_control_frames: int = 1000
    # nginx's send_timeout: an HTTP/2 stream (or connection) whose client takes
    # nothing of the response this long (a closed flow-control window) is reset.
    client_send_timeout: float = 60.0
    # The controller ConfigMap's hide-headers (nginx's proxy_hide_header): upstream
    # response headers never passed to clients, lowercase.
    hide_headers: frozenset[bytes] = frozenset()
    # Statuses answered to requests refused by limit-rps/-rpm (nginx's limit_req_status)
    # and by limit-connections (limit_conn_status): the ConfigMap's limit-req-status-code
    # and limit-conn-status-code; 503 as in ingress-nginx.
    limit_req_status: int = 503
    limit_conn_status: int = 503
    # The ConfigMap's global-rate-limit-status-code: requests global-rate-limit refuses.
    global_limit_status: int = 429
    # Requests one HTTP/1.1 client connection may make; its last response then says
    # Connection: close (nginx's keepalive_requests; the ConfigMap's keep-alive-requests).
    # 0: no limit, ingressd's default.
    keepalive_requests: int = 0
    # Request header lines whose name is of this class or above (proxy/http.py
    # name_class) are dropped, as nginx does with ingress-nginx's defaults
    # (underscores_in_headers off, ignore_invalid_headers on): NAME_UNDERSCORE (1).
    # NAME_INVALID (2): enable-underscores-in-headers; NAME_KEEP_ALL (3):
    # ignore-invalid-headers off.
    drop_names_from: int = 1
    # Request URIs (path and query, as sent, lowercase) never written to the access
    # log: the ConfigMap's skip-access-log-urls (nginx's map $request_uri $loggable).
    skip_log_uris: frozenset[bytes] = frozenset()
    # The upstream keep-alive pool: idle connections kept per endpoint, how long one
    # stays idle, and how many requests one carries before it is closed
    # (upstream-keepalive-connections, -timeout, -requests).
    upstream_keepalive_connections: int = 64
    upstream_keepalive_timeout: float = 60.0
    upstream_keepalive_requests: int = 10_000
    # upstream-keepalive-time: how long one upstream connection is reused, from its
    # connect (1 h, as ingress-nginx); the request under way then is its last.
    upstream_keepalive_time: float = 3600.0

    def __reduce__(self) -> tuple[type[ProxySettings], tuple[object, ...]]:
        # Pickled to every worker process (in ServeConfig). Compiled by mypyc,
        # a frozen dataclass has no __setstate__ that can bypass its frozen
        # __setattr__, so the default pickling (a bare instance, then its
        # fields set one by one) fails to load; built anew from the field
        # values in order it loads on either build.
        return (ProxySettings, tuple(getattr(self, f.name) for f in fields(self)))
