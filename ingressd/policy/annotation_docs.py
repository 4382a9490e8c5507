"""What each annotation ingressd reads does, for the annotations reference.

The reference page (docs/reference/annotations.md) is generated from this table
and from annotations.py's own registries (scripts/gen_docs.py): the names and
statuses come from the code, the words from here. A test fails when an annotation
ingressd supports or refuses has no entry here, or an entry names one it does not.
Text is Markdown, written for that page (links are relative to docs/reference/).
"""

# Prose for readers: typographic dashes, ellipses and multiplication signs are meant.
# ruff: noqa: RUF001

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AnnotationDoc:
    name: str  # without prefix
    default: str  # ingress-nginx's default as the annotation would spell it; "" for none
    behaviour: str  # Markdown


def _doc(name: str, default: str, *behaviour: str) -> AnnotationDoc:
    return AnnotationDoc(name, default, "".join(behaviour))


# (group title, its annotations), in the order the reference lists them.
GROUPS: tuple[tuple[str, tuple[AnnotationDoc, ...]], ...] = (
    (
        "Rewrites and redirects",
        (
            _doc(
                "rewrite-target",
                "",
                "as in ingress-nginx: the Ingress's paths become regular expressions (anchored at "
                "the start, case-insensitive; see [Routing](../serving.md#routing)) and the "
                "target, with `$1`…`$9` from the capture groups, replaces the path; the query "
                "string is kept. A path equal to the target is not rewritten (nor made a regex). "
                'With an explicit `use-regex: "false"` the paths stay Prefix/Exact and the target '
                "replaces just the matched prefix.",
            ),
            _doc(
                "use-regex",
                "false",
                "paths are regular expressions; as in ingress-nginx this applies to every path of "
                "the same host (see [Routing](../serving.md#routing)). They run on RE2 "
                "(`google-re2`): linear in the request path whatever the pattern (a backtracking "
                "engine takes seconds for `/(a+)+$` against 24 a's and a `!`), matched on the "
                "bytes of the URI as nginx's PCRE does. What RE2 cannot run (backreferences, "
                "lookaround, possessive quantifiers, atomic groups, repetitions over 1000) is "
                "reported with its path and why, and only that path is left out.",
            ),
            _doc(
                "ssl-redirect",
                "true",
                "default `true`: 308 to https for TLS hosts (every rule host of an Ingress with "
                "`spec.tls`, as in ingress-nginx; see [TLS](../serving.md#tls)). As in "
                "ingress-nginx (`lua_ingress.lua`) the Location is the request URI, query "
                "included, less one trailing `/` (`/` gives `https://host`, `/docs/` gives "
                "`/docs`, `/docs/?p=2` keeps its slash)",
            ),
            _doc(
                "force-ssl-redirect",
                "false",
                "redirect to https even without `spec.tls`; the same trailing-slash rule",
            ),
            _doc(
                "preserve-trailing-slash",
                "false",
                '`"true"`: the https redirect keeps the trailing `/` (default `false`)',
            ),
            _doc(
                "app-root",
                "",
                "a request for `/` is redirected (302) to this path (`$scheme://$http_host` and "
                "it, as nginx.tmpl writes it); it may hold nginx [variables](variables.md) "
                "(`/app/$arg_lang`), rendered per request",
            ),
            _doc(
                "permanent-redirect",
                "",
                "every request is redirected to this absolute URL, with 301 or "
                "`permanent-redirect-code`. The URL may hold nginx [variables](variables.md), "
                "rendered per request as nginx's `return` renders them: "
                "`https://new.example.com$request_uri` keeps path and query; `$host`, `$scheme`, "
                "`$uri`, `$args`, `$arg_NAME`, `$http_NAME`, `$cookie_NAME`… (an unknown one "
                "makes the value invalid, reported with its name). ingress-nginx v1.15.1's "
                "validator admits no `$` here unless its annotation validation is off "
                "(the controller flag `enable-annotation-validation`)",
            ),
            _doc("permanent-redirect-code", "301", "the code of `permanent-redirect` (300–308)"),
            _doc(
                "temporal-redirect",
                "",
                "every request is redirected to this absolute URL with 302 or "
                "`temporal-redirect-code` (checked before `permanent-redirect`, as in "
                "ingress-nginx); nginx [variables](variables.md) as in `permanent-redirect`",
            ),
            _doc("temporal-redirect-code", "302", "the code for `temporal-redirect` (300–308)"),
            _doc(
                "from-to-www-redirect",
                "false",
                "`www.host` redirects (308) to `host`, or `host` to `www.host` when the rule names"
                " the www form; path and query kept; the host's certificate serves the other name "
                "when it covers it",
            ),
            _doc(
                "x-forwarded-prefix",
                "",
                "sets `X-Forwarded-Prefix` to this value on requests that are rewritten "
                "(`rewrite-target` set and different from the path), replacing the client's, as "
                "ingress-nginx's buildProxyPass does; elsewhere it adds nothing and a client's "
                "header passes through, as with nginx. It may hold nginx "
                "[variables](variables.md) (`/$http_x_tenant`), rendered per request",
            ),
            _doc(
                "use-port-in-redirects",
                "false",
                '`"true"`: nginx\'s `port_in_redirect on` for the redirects ingressd makes '
                "absolute itself: a snippet's relative `return`/`rewrite … redirect` and the 301 "
                "to a location's trailing `/` name the port the client connected to, unless it is"
                " the scheme's own (80, 443). Default `false`, as ingress-nginx: the snippet's "
                "then name none, and the trailing-`/` one keeps the port of the client's `Host` "
                "(which behind a load balancer on 80/443 comes to the same). Absolute redirects "
                "(the HTTPS one, `app-root`, `permanent-redirect`) are not affected, as in nginx",
            ),
        ),
    ),
    (
        "Hosts and upstreams",
        (
            _doc(
                "server-alias",
                "",
                "more names for the Ingress's hosts (comma-separated; exact names, or "
                "`*.example.com` matching one label as wildcard hosts do): a request for an alias "
                "is served as one for the host, its routes, TLS redirect and certificate (when the"
                " certificate covers the alias; else the default one). As in ingress-nginx "
                "(`createServers`): a host's aliases come from the oldest Ingress with a rule for "
                "it that has any (a younger one's are reported and ignored); an alias that is the "
                "host itself is dropped, and one that is another Ingress's rule host is reported "
                "and left to that host; two hosts naming the same alias: the one first in name "
                "order keeps it (nginx keeps the first server of a conflicting name), the other is"
                " reported. nginx's regular-expression (`~^…`) and trailing-wildcard "
                "(`www.example.*`) names are reported and not served; any other malformed name "
                "makes the annotation invalid. At most 100 names",
            ),
            _doc(
                "upstream-vhost",
                "",
                "the `Host` the upstream receives: `host[:port]`, or one made of nginx "
                "[variables](variables.md) (`${arg_tenant}.internal`, `$host`), rendered per "
                "request as nginx.tmpl's `proxy_set_header Host` renders it; "
                "`X-Forwarded-Host` keeps the client's",
            ),
            _doc(
                "backend-protocol",
                "HTTP",
                "`HTTP` (default), `HTTPS` (TLS 1.2+ to the upstream, not verified unless "
                "`proxy-ssl-verify` says so), `AUTO_HTTP` (TLS only when the client's request came"
                " over TLS), `GRPC` (HTTP/2 cleartext with prior knowledge), `GRPCS` (HTTP/2 over "
                "TLS, ALPN `h2`, with `proxy-ssl-*`; see [gRPC "
                "backends](../serving.md#grpc-backends)), any case; an unknown value is reported "
                "and HTTP used. `FCGI` (and `AJP`) are not spoken: the Ingress's routes answer 502"
                " saying so, rather than talk HTTP/1.1 to such a server. A TLS handshake or "
                "verification failure answers 502 `TLS to upstream ADDR failed: …`",
            ),
            _doc(
                "proxy-ssl-secret",
                "",
                "`namespace/name` (or `name`) of a Secret in the Ingress's own namespace (as "
                "ingress-nginx's default `allow-cross-namespace-resources: false`): `ca.crt` "
                "verifies the upstream (with `proxy-ssl-verify`), `tls.crt` + `tls.key` are the "
                "client certificate for mTLS. Missing, unreadable or in another namespace: the "
                "routes answer 503 naming it. In cluster mode ingressd watches only "
                "`kubernetes.io/tls` Secrets, so a CA-only Secret must have that type too (with "
                "empty `tls.crt`/`tls.key`); manifest mode reads any type. As in ingress-nginx, "
                "the other `proxy-ssl-*` annotations do nothing without it (reported), and it does"
                " nothing with backend-protocol `HTTP` or `GRPC` (reported)",
            ),
            _doc(
                "proxy-ssl-verify",
                "off",
                "`on`/`off` (default off): verify the upstream's certificate chain against "
                "`ca.crt` and its name against `proxy-ssl-name`; without a `ca.crt` it has no "
                "effect, as in ingress-nginx (reported)",
            ),
            _doc(
                "proxy-ssl-verify-depth",
                "1",
                "intermediate CAs allowed in the upstream's chain (default 1), checked after the "
                "handshake",
            ),
            _doc(
                "proxy-ssl-name",
                "",
                "the name verified and, with `proxy-ssl-server-name: on`, sent as SNI (a host name"
                " or IP, no nginx variables). Default: the endpoint's address (an `ExternalName`'s"
                " host name); ingress-nginx's is `upstream_balancer`",
            ),
            _doc(
                "proxy-ssl-server-name",
                "off",
                "`on`/`off` (default off): send SNI (`proxy-ssl-name`, else the endpoint's host "
                "name; never for an IP address)",
            ),
            _doc(
                "service-upstream",
                "false",
                '`"true"`: send to the Service\'s `spec.clusterIP` and Service port instead of its '
                "EndpointSlice endpoints (kube-proxy balances). A headless Service or one without "
                "a clusterIP is reported and its routes answer 503 (ingress-nginx falls back to "
                "the endpoints)",
            ),
            _doc(
                "connection-proxy-header",
                "",
                "the `Connection` header sent to the upstream, replacing ingress-nginx's "
                "`$connection_upgrade` (`upgrade` beside the client's `Upgrade`, else none), on "
                "WebSocket requests too, as `proxy_set_header Connection VALUE` does: "
                "`keep-alive`, `close`… (comma-separated tokens; anything else is invalid). With "
                "`close` in it the upstream connection is not reused. gRPC routes speak HTTP/2 "
                "upstream, which has no `Connection` header: none is sent",
            ),
            _doc(
                "proxy-cookie-domain",
                "off",
                "`off` (default) or `FROM TO`: nginx's `proxy_cookie_domain` on the upstream's "
                "`Set-Cookie`: a `domain=` attribute equal to FROM (ignoring case and a leading "
                "`.`) becomes TO; `~regex` FROM as above. ConfigMap key of the same name",
            ),
            _doc(
                "proxy-cookie-path",
                "off",
                "`off` (default) or `FROM TO`: `proxy_cookie_path`: a `path=` attribute starting "
                "with FROM gets TO in its place; `~regex` FROM as above",
            ),
            _doc(
                "proxy-http-version",
                "1.1",
                "`1.1` (default) or `1.0`: the request line sent to the upstream (`GET / "
                "HTTP/1.0`), as `proxy_http_version`. With `1.0` no upstream connection is reused"
                " (nginx keeps none alive: ingress-nginx sends no `Connection` header, and an "
                "HTTP/1.0 server closes), a response without length ends when the upstream "
                "closes, and a chunked request body (HTTP/1.0 has none) is read whole before the "
                "upstream is asked and sent with its `Content-Length`, as nginx forces request "
                "buffering without HTTP/1.1. nginx spools such a body to a file; ingressd holds "
                "it in memory, so it is bounded by `proxy-body-size`, and by 16 MiB when that is "
                "larger or `0`: past it, 413 and nothing is sent. gRPC routes speak HTTP/2 "
                "whatever it says. ConfigMap key of the same name",
            ),
            _doc(
                "proxy-redirect-from",
                "off",
                "with `proxy-redirect-to`, nginx's `proxy_redirect FROM TO` on the upstream's "
                "`Location` and `Refresh` (`url=` part) headers: a value starting with FROM "
                "(case-sensitive) gets TO in place of it, the rest kept; `~regex` (`~*` ignoring "
                "case, on RE2) replaces the whole value with TO, `$1`…`$9` from the match. `off` "
                "(default, also the ConfigMap key's) and `default` rewrite nothing: "
                "ingress-nginx's `default` is nginx's replacement of its `proxy_pass "
                "http://upstream_balancer`, which no upstream names. nginx variables in TO "
                "(`$host`…) are not expanded: such a value is invalid, and the route serves "
                "without rewriting. Applied only to the upstream's responses, not to ingressd's "
                "own answers",
            ),
            _doc(
                "proxy-redirect-to",
                "off",
                "the TO above; `off` (default) turns the rewrite off, as in nginx.tmpl",
            ),
            _doc(
                "proxy-ssl-ciphers",
                "",
                "OpenSSL cipher list for TLS 1.2 to the upstream (nginx's `proxy_ssl_ciphers`; "
                "ingress-nginx's validator: letters, digits, `+:_-!`); a list OpenSSL matches no "
                "cipher with is invalid. As in nginx.tmpl, it applies only with a "
                "`proxy-ssl-secret` holding a `ca.crt` (else reported); default `DEFAULT`",
            ),
            _doc(
                "proxy-ssl-protocols",
                "",
                "the TLS versions to the upstream (`TLSv1.2 TLSv1.3`), as `proxy_ssl_protocols`: "
                "from the lowest to the highest listed. ingress-nginx's older names (`SSLv2`, "
                "`SSLv3`, `TLSv1`, `TLSv1.1`) are accepted and left out: ingressd speaks TLS 1.2+"
                " only, and a list of nothing else is invalid. With a `proxy-ssl-secret` holding "
                "a `ca.crt`, as above; default TLS 1.2 and 1.3 (ingress-nginx's default `TLSv1 "
                "TLSv1.1 TLSv1.2` leaves 1.3 out)",
            ),
            _doc(
                "ssl-ciphers",
                "",
                "the OpenSSL cipher list (TLS 1.2; TLS 1.3 suites are not named by it, as with "
                "nginx's `ssl_ciphers`) of handshakes whose SNI names one of the Ingress's hosts,"
                " with its own certificate or the default one: the SNI callback switches to a "
                "context with the list (OpenSSL then negotiates from it). Server-wide as in "
                "ingress-nginx (`controller.go`): the oldest Ingress of a host that sets it wins,"
                " a younger one's differing list is reported. A list OpenSSL matches no cipher "
                "with is invalid (ingress-nginx's validator: letters, digits, `+:_-!`). Hosts "
                "without it, and handshakes without SNI, keep the ConfigMap's `ssl-ciphers`",
            ),
            _doc(
                "ssl-prefer-server-ciphers",
                "",
                '`"true"`: the server\'s cipher order, which is what ingressd uses on every host '
                'anyway. `"false"` is reported as unsupported and the server\'s order kept: '
                "Python's SNI switch takes the new context's certificate and ciphers but not its "
                "options (OpenSSL keeps the listener's; nginx copies them with `SSL_set_options`,"
                " which `ssl` does not offer)",
            ),
            _doc(
                "custom-headers",
                "",
                "`name` or `namespace/name` (the Ingress's namespace only) of a ConfigMap of "
                "response headers for the Ingress's routes, set as ingress-nginx's "
                "`more_set_headers`: on every status, ingressd's own answers included, replacing "
                "the upstream's header of that name (and the ConfigMap key `add-headers`'s). Each"
                " name must be listed in the controller ConfigMap's "
                "`global-allowed-response-headers`; names are letters, digits, `-` and `_`, "
                "values printable ASCII, `$` literal. A ConfigMap that is missing, in another "
                "namespace, or holds a name not allowed or a bad entry makes the routes answer "
                "503, as in ingress-nginx; see "
                "[ConfigMaps of headers](configmap.md#configmaps-of-headers)",
            ),
            _doc(
                "enable-access-log",
                "true",
                "`\"false\"`: the route's requests are left out of the access log (nginx's "
                "`access_log off` in its location; default `true`)",
            ),
        ),
    ),
    (
        "Sizes and timeouts",
        (
            _doc(
                "proxy-buffer-size",
                "4k",
                "largest upstream response head, status line and headers (`4k`, `16k`; up to "
                '`1m`); a larger one is a 502 "upstream sent too big header", as nginx\'s '
                "`proxy_buffer_size`. Default `4k` (`--proxy-buffer-size`), as in ingress-nginx. "
                "ingressd streams bodies, so it does not use the size for body buffers",
            ),
            _doc(
                "proxy-body-size",
                "1m",
                "largest request body (`8k`, `1m`, `1g`; `0` = unlimited); larger bodies get 413, "
                "by Content-Length before anything is forwarded, or as a chunked body grows. "
                "Default `1m` (`--proxy-body-size`), as in ingress-nginx",
            ),
            _doc(
                "proxy-connect-timeout", "5", "seconds to connect to the upstream (default 5) → 504"
            ),
            _doc(
                "proxy-read-timeout",
                "60",
                "seconds the upstream may stay silent (default 60) → 504",
            ),
            _doc(
                "proxy-send-timeout",
                "60",
                "seconds the upstream may refuse the request body (default 60) → 504",
            ),
            _doc(
                "client-body-buffer-size",
                "8k",
                "the part of a buffered request body kept in memory (`8k` by default, as "
                "ingress-nginx; up to `16m`); the rest goes to an unnamed temporary file. See "
                "[Buffering](../serving.md#buffering)",
            ),
            _doc(
                "proxy-buffering",
                "off",
                "`off` (default, as ingress-nginx) or `on`: the upstream's response is read ahead"
                " of a slow client up to `proxy-buffers-number` x `proxy-buffer-size` before the "
                "upstream is paused, in memory. See [Buffering](../serving.md#buffering)",
            ),
            _doc(
                "proxy-buffers-number",
                "4",
                'with `proxy-buffering: "on"`, the number of `proxy-buffer-size` buffers a '
                "response may fill ahead of its client (default 4, up to 64)",
            ),
            _doc(
                "proxy-busy-buffers-size",
                "",
                'with `proxy-buffering: "on"`, what may still wait for the client when reading '
                "the upstream resumes (default: two buffers, as nginx); it must be at least one "
                "buffer and less than all of them but one, as nginx checks, else it is reported "
                "and ignored",
            ),
            _doc(
                "proxy-max-temp-file-size",
                "1024m",
                "only `0`: ingressd never writes a response to a temporary file, which is nginx's"
                " behaviour with `0`; any other size is reported as not supported (the read-ahead"
                " stays in the memory buffers)",
            ),
            _doc(
                "proxy-request-buffering",
                "on",
                "`on` (default, as nginx) or `off`: `on` reads the whole request body (within "
                "`proxy-body-size`) before the upstream is connected, and sends it with its "
                "length; `off` streams it as it comes. gRPC routes always stream (nginx's "
                "`grpc_pass` does). See [Buffering](../serving.md#buffering)",
            ),
        ),
    ),
    (
        "Load balancing and retries",
        (
            _doc(
                "load-balance",
                "round_robin",
                "`round_robin` (default) or `ewma`: as ingress-nginx's EWMA balancer, each request"
                " goes to the faster of two random endpoints, scored by a moving average of "
                "upstream response time (connect included; decayed over 10 s, so an idle endpoint "
                "is tried again). A new endpoint starts at its peers' average; a failed connect or"
                " timeout counts as a response that took the timeout. Averages are kept per "
                "endpoint address across rebuilds, forgotten after 10 minutes unseen. `chash`, "
                "`chashsubset`, `sticky_balanced`, `sticky_persistent` are reported as unsupported"
                " and round_robin serves (`upstream-hash-by` is how ingress-nginx's chash "
                "balancers are asked for); cookie `affinity`, then `upstream-hash-by`, take "
                "precedence, as in ingress-nginx (`balancer.lua`)",
            ),
            _doc(
                "upstream-hash-by",
                "",
                "consistent hashing: each request goes to the endpoint its key hashes to, so a key"
                " keeps its endpoint across requests, worker processes and rebuilds, and an "
                "endpoint added or removed moves only about 1/N of the keys. The ring is "
                "ingress-nginx's (lua-resty-balancer's `resty.chash`: 160 CRC-32 points per "
                "`address:port`), so a key lands where ingress-nginx would put it; it depends on "
                "the endpoints alone and is made when the table is built, once per endpoint set "
                "and process (0.5 ms for 10 endpoints, 6 ms for 100, 80 ms for 1,000; at most "
                "163,840 points, fewer per endpoint beyond 1,024). Per request: the key rendered, "
                "its CRC-32 and a binary search, under 1 µs (`hotpath.py --upstream-hash-by "
                "'$request_uri'`: 9.0 µs of CPU against 7.4 for a route without annotations); "
                "routes without it do not pay for it. The key is text and the nginx "
                "[variables](variables.md) ingressd renders (`$uri` is the normalised path, after "
                "`rewrite-target`; `$remote_addr` the client as `--trusted-proxies` decides it; "
                "not `$req_id`), as `$var` or `${var}` (`$host$request_uri`, `${request_uri}-x`);"
                " at most 4 KiB of it is hashed. "
                "ingress-nginx's validator applies (letters, digits, `-_${}` only). A variable "
                "ingressd does not know makes the value invalid (reported; the route is balanced "
                "as without it), where ingress-nginx would hash it as empty text and send every "
                "request to one endpoint. Cookie `affinity` wins over it and it wins over "
                "`load-balance`, as in ingress-nginx; a canary's requests are balanced round "
                "robin. A retry (`proxy-next-upstream`) goes to the same endpoint again, as in "
                "ingress-nginx, whose balancer answers the same key with the same endpoint "
                "(kubernetes/ingress-nginx#10730); an endpoint ejected by passive health passes "
                "its keys to the next endpoint on the ring, and only those",
            ),
            _doc(
                "upstream-hash-by-subset",
                "false",
                '`"true"`: the key picks a subset of endpoints, and the request one of its members'
                " at random, as ingress-nginx's chashsubset balancer (consecutive subsets of the "
                "endpoints, the last filled up with the first ones). A retry goes to a member of "
                "the subset not tried yet. Without `upstream-hash-by` it does nothing (reported)",
            ),
            _doc(
                "upstream-hash-by-subset-size",
                "3",
                "endpoints per subset, 1 to 256 (default 3; `0` is 3, as in ingress-nginx)",
            ),
            _doc(
                "proxy-next-upstream",
                "error timeout",
                "when a failed try is repeated on the next endpoint not yet tried (in address "
                "order after the one that failed; the round-robin turn is not taken): `error` "
                "(connect refused or failed, connection broken before a response), `timeout` "
                "(connect, send or read), `invalid_header` (a response that is not HTTP), "
                "`http_500`, `http_502`, `http_503`, `http_504`, `http_403`, `http_404`, "
                "`http_429` (the upstream's status; after the last try it is passed on as it is), "
                "`non_idempotent`, or `off`. Default `error timeout`. A request that reached an "
                "upstream is repeated only if its method is idempotent (GET, HEAD, OPTIONS, PUT, "
                "DELETE, TRACE) or `non_idempotent` is given, and only if its body (kept up to 64 "
                "KiB) can be sent again; a response already on its way to the client is never "
                "retried",
            ),
            _doc(
                "proxy-next-upstream-tries",
                "3",
                "tries in all, the first included (default 3; `0`: as many as there are endpoints)",
            ),
            _doc(
                "proxy-next-upstream-timeout",
                "0",
                "seconds from the first try after which no new try starts (default `0`: no limit)",
            ),
        ),
    ),
    (
        "Rate and connection limits",
        (
            _doc(
                "limit-rps",
                "",
                "requests per second per client address, as nginx's `limit_req` (leaky bucket, "
                "millisecond clock) with `burst` = rate × `limit-burst-multiplier`, `nodelay`: a "
                "client may send rate × multiplier + 1 requests at once, then the rate; the rest "
                "get 503. Counted per Ingress (all its paths together) and per connection address,"
                " never `X-Forwarded-For`; counters survive rebuilds. Requests answered by "
                "ingressd itself (redirects, preflights, 403 by source range, 413, 503 without "
                "endpoints) are not counted. Counted per pod: all worker processes share the "
                "counters, as nginx's workers share a zone. Memory is bounded: one table of "
                "`--limit-entries` clients (default 262,144) for all Ingresses, each address "
                "hashed to a bucket of 8; a full bucket forgets a drained client first, then its "
                "least recently seen one (nginx does the same when its zone is full); a bucket "
                "whose entries all hold requests in flight refuses the request (the limit's "
                "status, `ingressd_limit_table_full_total`), never lets it through. An invalid "
                "value (not a whole number ≥ 1) is reported and the Ingress serves without the "
                "limit, where ingress-nginx rejects the whole Ingress",
            ),
            _doc(
                "limit-rpm",
                "",
                "as `limit-rps`, per minute (rate `n`/60 per second, truncated to thousandths as "
                "nginx does); with `limit-rps` both apply, and a request refused by one is counted"
                " by neither",
            ),
            _doc(
                "limit-connections",
                "",
                "requests in flight per client address and Ingress (nginx's `limit_conn`), over "
                "all worker processes; over it, 503. A request holds its place until its response "
                "is complete or it fails, a WebSocket until it closes. An address whose bucket of "
                "the limit table is full of clients with requests in flight gets 503 too, as nginx"
                " answers when its zone cannot hold another. A client that only half-closes its "
                "connection keeps its place until the upstream answers (nginx treats that as an "
                "abort)",
            ),
            _doc(
                "limit-burst-multiplier",
                "5",
                "default 5; invalid values are reported and 5 applies",
            ),
            _doc(
                "limit-allowlist",
                "",
                "comma-separated CIDRs or addresses exempt from the three limits; an invalid list "
                "is reported and nobody is exempt",
            ),
            _doc(
                "limit-whitelist",
                "",
                "the older name of `limit-allowlist` (which wins if both are set)",
            ),
            _doc(
                "limit-rate",
                "0",
                "kilobytes per second per response, as ingress-nginx's `limit_rate Nk` (`0`, the "
                "default: no limit): once the response has sent `limit-rate-after` kilobytes, it "
                "may send at most rate × (seconds since the request began + 1) more, nginx's "
                "formula (so the first second is a burst). Past that ingressd stops reading that "
                "response from its upstream until the average is back under the rate: the one "
                "response slows down, every other request and connection goes on (over HTTP/2 "
                "upstreams only its stream waits). The pause does not count against "
                "`proxy-read-timeout`. ConfigMap key of the same name",
            ),
            _doc(
                "limit-rate-after",
                "0",
                "kilobytes a response sends at full speed before `limit-rate` applies (default "
                "`0`)",
            ),
            _doc(
                "global-rate-limit",
                "",
                "requests allowed per `global-rate-limit-window` per value of "
                "`global-rate-limit-key`, with ingress-nginx's sliding window "
                "(lua-resty-global-throttle: the last window's count, weighted by how much of it "
                "still overlaps, plus this window's must stay under the limit); the rest get 429 "
                "(the ConfigMap's `global-rate-limit-status-code`). Counted per Ingress, all its "
                "paths together. **Per pod**: ingress-nginx keeps these counters in memcached "
                "shared by every controller pod; ingressd has no memcached and counts them in the"
                " table its worker processes share (as `limit-rps`), so with R replicas a key may"
                " make up to R times the limit (ingress-nginx without "
                "`global-rate-limit-memcached-host` enforces nothing). Requests ingressd answers "
                "itself before the limits (redirects, 403 by source range…) are not counted. `0`,"
                " or no window: off, as in ingress-nginx (reported); an invalid number is "
                "reported and ignored. **A full table fails closed**: a new key takes a drained "
                "entry of its bucket, else the least recently seen one (as nginx's `limit_req` "
                "zone); when every entry of the bucket holds requests in flight the request is "
                "refused with the status code, counted in `ingressd_limit_table_full_total` and "
                "logged (ingress-nginx lets requests through when memcached fails: an outsider "
                "who fills the table by cycling keys must not lift the limit)",
            ),
            _doc(
                "global-rate-limit-ignored-cidrs",
                "",
                "comma-separated CIDRs or addresses whose requests are never counted nor refused",
            ),
            _doc(
                "global-rate-limit-key",
                "$remote_addr",
                "what is counted: text and nginx variables as for `upstream-hash-by` (default "
                "`$remote_addr`, the client as `--trusted-proxies` decides it; `$http_x_api_key`,"
                " `$remote_addr$uri`…). A request whose key renders empty is counted by its "
                "client address, as ingress-nginx's `global_throttle.lua` does (leaving out a "
                "header does not escape the limit). An invalid key is reported and "
                "`$remote_addr` used",
            ),
            _doc(
                "global-rate-limit-window",
                "",
                "a Go duration (`1m`, `90s`, `1h30m`), in whole seconds from 1 s to a year; "
                "invalid: the routes answer 503, as ingress-nginx denies the location",
            ),
        ),
    ),
    (
        "Source addresses",
        (
            _doc(
                "allowlist-source-range",
                "",
                "comma-separated CIDRs or addresses; other clients get 403. Checked against the "
                "connection's address, never `X-Forwarded-For`. An invalid list answers 503 to "
                "everyone, as ingress-nginx denies the location",
            ),
            _doc(
                "whitelist-source-range",
                "",
                "the older name of `allowlist-source-range` (which wins if both are set)",
            ),
            _doc(
                "denylist-source-range",
                "",
                "clients in these ranges get 403; checked before the allow-list. An invalid list "
                "answers 503 to everyone",
            ),
        ),
    ),
    (
        "CORS",
        (
            _doc(
                "enable-cors",
                "false",
                "CORS answered by ingressd: `OPTIONS` preflights get 204 with the CORS headers "
                "without reaching the upstream; other responses get `Access-Control-Allow-Origin` "
                "(and `-Credentials`, `-Expose-Headers`), replacing the upstream's",
            ),
            _doc(
                "cors-allow-origin",
                "*",
                "`*` (default) or a list of `scheme://host[:port]`, `scheme://*.host` matching one"
                " label; a matching `Origin` is echoed back, others get no CORS headers",
            ),
            _doc(
                "cors-allow-methods",
                "GET, PUT, POST, DELETE, PATCH, OPTIONS",
                "default `GET, PUT, POST, DELETE, PATCH, OPTIONS`",
            ),
            _doc(
                "cors-allow-headers",
                "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization",
                "default "
                "`DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization`",
            ),
            _doc("cors-expose-headers", "", "default none"),
            _doc("cors-allow-credentials", "true", "default `true`"),
            _doc("cors-max-age", "1728000", "seconds, default `1728000`"),
        ),
    ),
    (
        "Canary",
        (
            _doc(
                "canary",
                "false",
                '`"true"`: this Ingress is a canary. It makes no routes of its own: each of its '
                "paths becomes the alternative backend of the main Ingress's route with the same "
                "host, path and pathType (none: reported, canary ignored; one canary per route, "
                "the oldest). Requests keep the main route's policy (redirects, CORS, rewrite, "
                "limits…) and only change backend; the canary's other annotations, TLS and default"
                " backend do not apply",
            ),
            _doc(
                "canary-by-header",
                "",
                "a request with this header goes to the canary when its value is `always`, to the "
                "main backend when `never`; other values fall through to the cookie, then the "
                "weight",
            ),
            _doc(
                "canary-by-header-value",
                "",
                "with `canary-by-header`: the request goes to the canary when the header equals "
                "this value (case-sensitive); otherwise it falls through",
            ),
            _doc(
                "canary-by-header-pattern",
                "",
                "with `canary-by-header`: the request goes to the canary when this regular "
                "expression matches (anywhere, case-sensitively) in the header value; used when no"
                " `canary-by-header-value` is set. It runs on RE2 (linear time); a pattern RE2 "
                "cannot run is reported as invalid",
            ),
            _doc(
                "canary-by-cookie",
                "",
                "checked after the header: cookie value `always` → canary, `never` → main backend,"
                " anything else falls through to the weight",
            ),
            _doc(
                "canary-weight",
                "0",
                "share of the remaining requests sent to the canary, out of `canary-weight-total` "
                '(default 0). `canary-*` annotations without `canary: "true"`, or a weight above '
                "the total, are reported and ignored",
            ),
            _doc("canary-weight-total", "100", "default 100"),
            _doc(
                "affinity-canary-behavior",
                "sticky",
                "on the canary Ingress, beside the main Ingress's `affinity: cookie` "
                "(balancer.lua `route_to_alternative_balancer`): `sticky` (default): the canary's"
                " backend gets the main's affinity, so a request the canary takes gets the "
                "session cookie and its session stays on the canary; `legacy`: requests the "
                "canary takes get no cookie and each is judged by the canary's rules again. "
                "Either way a session on the main backend stays there, whatever the canary's "
                "header, cookie or weight say",
            ),
        ),
    ),
    (
        "Session affinity",
        (
            _doc(
                "affinity",
                "",
                "`cookie`: sticky sessions. A request whose session cookie names a ready endpoint "
                "of the route's Service goes there; otherwise an endpoint is picked round-robin "
                "and the response gets `Set-Cookie` (value: an opaque hash of the endpoint, not "
                "its address; `HttpOnly`). Not applied to requests a canary takes",
            ),
            _doc(
                "affinity-mode",
                "balanced",
                "`balanced` (default) or `persistent`: both keep a session on its endpoint while "
                "that endpoint is ready",
            ),
            _doc("session-cookie-name", "INGRESSCOOKIE", "default `INGRESSCOOKIE`"),
            _doc(
                "session-cookie-path",
                "",
                "default: the Ingress path, or `/` when paths are regular expressions "
                "(`use-regex`, `rewrite-target`)",
            ),
            _doc("session-cookie-max-age", "", "seconds, sent as `Max-Age`"),
            _doc("session-cookie-expires", "", "seconds from now, sent as an `Expires` date"),
            _doc("session-cookie-samesite", "", "`None`, `Lax` or `Strict`"),
            _doc(
                "session-cookie-secure",
                "",
                "`Secure` attribute; default: set when the request came over HTTPS",
            ),
            _doc("session-cookie-domain", "", "`Domain` attribute"),
            _doc(
                "session-cookie-conditional-samesite-none",
                "false",
                '`"true"`: `SameSite=None` (from `session-cookie-samesite`) is left out of the '
                "cookie for user agents known to reject such cookies, by ingress-nginx's list "
                "(`same_site.lua`: Chrome 40–69 by `Chrome/4`, `/5`, `/6`, iOS 12 on iPhone and "
                "iPad, Safari on macOS 10.14); other clients, and clients without a `User-Agent`, "
                "get it",
            ),
            _doc(
                "session-cookie-change-on-failure",
                "false",
                "when a request of an established session is retried (`proxy-next-upstream`), "
                "`true` moves the session to the endpoint that answers and sends the new cookie; "
                "by default (`false`) the retry goes to the session's own endpoint again, as in "
                "ingress-nginx",
            ),
        ),
    ),
    (
        "Default backend and error pages",
        (
            _doc(
                "default-backend",
                "",
                "the name of a Service in the Ingress's namespace (its first port, as in "
                "ingress-nginx). While it has ready endpoints it stands in for a route Service of "
                "this Ingress that has none (or does not exist): the request goes to it unchanged,"
                " with `X-Code: 503`, `X-Format` (the `Accept` header), `X-Namespace`, "
                "`X-Ingress-Name`, `X-Service-Name`, `X-Service-Port` and `X-Request-ID`, and its "
                "answer is the client's. It also serves this Ingress's `custom-http-errors` pages."
                " As in ingress-nginx it does **not** serve the Ingress's unmatched paths (those "
                "go to `--default-backend-service`, see [Default backend and error "
                "pages](../serving.md#default-backend-and-error-pages)). A Service that does not "
                "exist or has no ports is reported and the annotation ignored",
            ),
            _doc(
                "custom-http-errors",
                "",
                "comma-separated statuses (400–599): when the upstream answers one of them (or "
                "ingressd does for the route: no endpoints, a failed upstream, limits, auth…), the"
                " response is the error page of the `default-backend` annotation's Service when it"
                " has endpoints, else of `--default-backend-service`, fetched with `X-Code` and "
                "the other headers of `default-backend` plus `X-Original-URI`; the upstream's own "
                "body is dropped unread. Replaces the global list (`--custom-http-errors`) for "
                "this Ingress's routes. Not for gRPC routes or WebSocket upgrades. See [Default "
                "backend and error pages](../serving.md#default-backend-and-error-pages)",
            ),
            _doc(
                "disable-proxy-intercept-errors",
                "false",
                '`"true"`: the upstream\'s own answers reach the client as they are, even with a '
                "status `custom-http-errors` lists (nginx's `proxy_intercept_errors off`); the "
                "error pages still replace ingressd's own answers (502, 503, 504), as nginx's "
                "`error_page` does for nginx's own. ConfigMap key of the same name: the default",
            ),
        ),
    ),
    (
        "Authentication",
        (
            _doc(
                "auth-type",
                "",
                "`basic` (HTTP Basic authentication before anything is forwarded: 401 with "
                "`WWW-Authenticate`; the `Authorization` header is not passed upstream). `digest` "
                "is not supported: the routes answer 403 rather than serve unprotected; any other "
                "value is invalid and, like any invalid auth annotation, makes the routes answer "
                "503",
            ),
            _doc(
                "auth-secret",
                "",
                "`name` or `namespace/name` (the Ingress's namespace only) of the Secret with the "
                "credentials; missing or unusable → the routes answer 503. Hashes: bcrypt, "
                "`$apr1$`, `$1$`, `$5$`, `$6$`, `{SHA}`, `{SSHA}`, `{PLAIN}`. In cluster mode the "
                "Secret is read by name (only TLS Secrets are watched), when an Ingress first "
                "names it and every 30 s after",
            ),
            _doc(
                "auth-secret-type",
                "auth-file",
                "`auth-file` (default: an htpasswd file under the key `auth`) or `auth-map` (one "
                "key per user, its hash as value)",
            ),
            _doc(
                "auth-realm",
                "",
                "the realm in the `WWW-Authenticate` challenge (default empty, as in "
                "ingress-nginx)",
            ),
            _doc(
                "auth-url",
                "",
                "external authentication: before forwarding, ingressd sends a subrequest (the "
                "client's headers, no body) to this `http://` or `https://` URL, adding "
                "`X-Original-URL`, `X-Original-Method`, `X-Sent-From: nginx-ingress-controller`, "
                "`X-Auth-Request-Redirect`, `X-Real-IP`, `X-Forwarded-For` and `X-Request-ID`. "
                "2xx: the request goes on; 401 (with the service's `WWW-Authenticate`) and 403 are"
                " returned to the client; any other status, a redirect, or no answer within the "
                "route's connect/read timeouts: 500. The URL may use `$host`, `$http_host`, "
                "`$best_http_host`, `$scheme`, `$pass_access_scheme`, `$request_uri`, "
                "`$escaped_request_uri`, `$uri`, `$args`, `$is_args`, `$request_method`, "
                "`$remote_addr`, `$server_port`; anything else is invalid. As in ingress-nginx the"
                " auth service's certificate is not verified. Invalid values of any `auth-*` "
                "annotation make the routes answer 503",
            ),
            _doc(
                "auth-method",
                "GET",
                "the subrequest's method (default `GET`); when set, `X-Original-URI` and "
                "`X-Scheme` are sent too",
            ),
            _doc(
                "auth-response-headers",
                "",
                "comma-separated headers copied from the auth service's 2xx response to the "
                "upstream request. They replace what the client sent, and one the auth service did"
                " not send is removed, so a client cannot forge it",
            ),
            _doc(
                "auth-signin",
                "",
                "on a 401 from the auth service, redirect (302) here instead, with `rd=` the "
                "original URL (`scheme://host` + the escaped request URI) unless the URL has an "
                "`rd` parameter already. Variables as for `auth-url`",
            ),
            _doc("auth-signin-redirect-param", "rd", "the name of that parameter (default `rd`)"),
            _doc(
                "auth-request-redirect",
                "",
                "the `X-Auth-Request-Redirect` value (default: the request URI); variables as for "
                "`auth-url`",
            ),
            _doc(
                "auth-always-set-cookie",
                "false",
                "the auth service's `Set-Cookie` reaches the client on every response, denials "
                "included; by default only on 2xx and redirects (nginx's `add_header`)",
            ),
            _doc(
                "auth-proxy-set-headers",
                "",
                "`name` or `namespace/name` (the Ingress's namespace only) of a ConfigMap whose "
                "entries are headers set on the `auth-url` subrequest, each replacing any header "
                "of its name (an empty value removes it). Names: letters, digits, `-` and `_`, as"
                " ingress-nginx checks them; values may use the `auth-url` variables. A ConfigMap"
                " that is missing, in another namespace, or holds a bad entry makes the routes "
                "answer 503 (fail closed, as ingress-nginx's `LocationDenied`); see [ConfigMaps "
                "of headers](configmap.md#configmaps-of-headers). No effect without `auth-url`",
            ),
            _doc(
                "auth-cache-duration",
                "",
                "how long answers are kept, by status: comma-separated nginx `proxy_cache_valid` "
                "lines, `[code ...] time ...` (`200 202 5m, 401 30s`; `any 1m`; times in `ms`, "
                "`s`, `m`, `h`, `d`, `w`, `M`, `y`, summed; a line with no code means 200, 301 "
                "and 302), the first line naming a status wins. Default `200 202 401 5m` "
                "(ingress-nginx's): other statuses are not cached. Without `auth-cache-key` it "
                "does nothing (reported); invalid: the routes answer 503, as ingress-nginx denies"
                " the location",
            ),
            _doc(
                "auth-cache-key",
                "",
                "remember the auth service's answers per key, as ingress-nginx's `proxy_cache` on"
                " the auth location: text and nginx variables (those of `auth-url`, and "
                "`$remote_user`, `$http_NAME`, `$cookie_NAME`, `$arg_NAME`; at most 1 KiB), e.g. "
                "`$remote_user$http_authorization`. An entry is kept per host, Ingress path, auth"
                " URL and method and rendered key, hashed (SHA-256; a rendered key over 16 KiB is"
                " not cached: the service is asked), so a client can neither grow the cache nor "
                "pick another's entry; a cached 401 or 403 stays a denial, and a failure to get "
                "an answer is never cached. As nginx's cache: only `GET`/`HEAD` subrequests (not "
                "with `auth-method: POST`), no answer carrying `Set-Cookie` or `Vary`, "
                "`Cache-Control: no-store`/`no-cache`/`private` and `max-age` (or "
                "`X-Accel-Expires`, `Expires`) honoured. Per worker process (nginx's is shared by"
                " its workers), at most 10,000 entries and 8 MiB, least recently used out first. "
                "An invalid key is reported and nothing is cached",
            ),
            _doc(
                "auth-keepalive",
                "0",
                "idle connections kept to the auth service (default 0: each subrequest opens a "
                "connection and sends `Connection: close`, as nginx's `auth_request` does). With "
                "N > 0 connections are reused, as ingress-nginx's `upstream` block with "
                "`keepalive N`: at most N idle ones per auth service are kept (more are closed, "
                "the least recently used first). Turned off (reported), as in ingress-nginx, when"
                " the URL's host or port has a variable or `-requests`/`-timeout` is not above 0."
                ' ingress-nginx honours it only with `use-http2: "false"` (its Lua subrequests '
                "cannot run on HTTP/2 connections); ingressd honours it always, and answers as "
                "without it (any 2xx allows, the service's `WWW-Authenticate` is passed on)",
            ),
            _doc(
                "auth-keepalive-requests",
                "1000",
                "subrequests one connection carries before it is closed (default 1000)",
            ),
            _doc(
                "auth-keepalive-share-vars",
                "false",
                'with `auth-keepalive`: `"true"` gives the subrequest the request\'s '
                "`X-Request-ID` (the one the upstream gets); by default (`false`) the subrequest "
                "has variables of its own, so a request id of its own unless the client sent "
                "`X-Request-ID`, as ingress-nginx's `ngx.location.capture` without "
                "`share_all_vars`",
            ),
            _doc("auth-keepalive-timeout", "60", "seconds an idle connection is kept (default 60)"),
            _doc(
                "enable-global-auth",
                "true",
                "`\"false\"`: this Ingress's routes do not ask the ConfigMap's `global-auth-url` "
                "(default `true`). An Ingress's own `auth-url` always wins over the global one "
                "(template.go `shouldApplyGlobalAuth`)",
            ),
            _doc(
                "satisfy",
                "all",
                "`all` (default): the allow/deny lists (`allowlist-source-range`, "
                "`denylist-source-range`) and the authentication (`auth-type: basic`, `auth-url`)"
                " must all pass. `any`: one that allows suffices, as nginx's `satisfy any`, in "
                "nginx's order: an address in the allow-list passes without credentials and "
                "without asking the auth service; else valid Basic credentials pass without "
                "asking it; else the auth service decides. A check that has nothing to say (an "
                "address in no list when only a deny-list is set) does not count. When none "
                "allows, the answer is 401 if any of them answered 401 (the challenges of Basic "
                "auth and of the auth service together; `auth-signin` turns it into the sign-in "
                "redirect), else 403; an auth service that fails answers 500, as with `all`. "
                "Case-sensitive, as ingress-nginx's validator; another value is reported and "
                "`all` applies",
            ),
        ),
    ),
    (
        "Client certificates",
        (
            _doc(
                "auth-tls-secret",
                "",
                "client certificate authentication (mutual TLS), server-wide as in ingress-nginx: "
                "`name` or `namespace/name` (the Ingress's namespace only) of a Secret of any type"
                " holding the CA bundle under `ca.crt` and optionally a CRL under `ca.crl` "
                "(revocation is then checked along the whole chain, as nginx's `ssl_crl`: each CA "
                "of a client's chain needs its CRL). The oldest Ingress of a host whose Secret is "
                "usable sets the check for every route of the host; a handshake whose SNI names "
                "the host asks for a client certificate. Missing or invalid certificate: 400 (`No "
                "required SSL certificate was sent`, `The SSL certificate error`), never a failed "
                "handshake, as nginx answers at HTTP level; the upstream gets `ssl-client-verify` "
                "(`SUCCESS`, `NONE` or `FAILED:reason`), `ssl-client-subject-dn`, "
                "`ssl-client-issuer-dn` (RFC 4514), the client's own headers of those names (and "
                "`ssl-client-cert`) dropped; so does the `auth-url` subrequest, as in nginx.tmpl. "
                "A Secret missing, without `ca.crt`, not PEM, or in another namespace: every route"
                " of the Ingress's hosts answers 503 (reported). In cluster mode the Secret is "
                "read by name (only TLS Secrets are watched), when an Ingress first names it and "
                "every 30 s after (`--secret-refresh`). Requests must come under their own SNI "
                "name: see [TLS](../serving.md#tls). On rules without a host: 403 (there is no SNI"
                " name to ask under)",
            ),
            _doc(
                "auth-tls-verify-client",
                "on",
                "`on` (default: a certificate is required), `optional` (none passes with "
                "`ssl-client-verify: NONE`; a bad one is 400), `optional_no_ca` (a certificate "
                "whose only fault is an unknown or untrusted issuer passes with `FAILED:…`; others"
                " are 400), `off` (nothing asked, no headers set, as in ingress-nginx)",
            ),
            _doc(
                "auth-tls-verify-depth",
                "1",
                "nginx's `ssl_verify_depth`: 1 (default; `0` too) lets the CA sign the client "
                "certificate directly, 2 allows one intermediate the client sends along, and so on"
                " up to 16; a longer chain is 400",
            ),
            _doc(
                "auth-tls-error-page",
                "",
                "a URL (`https://host/path`, as ingress-nginx's pattern: no query) the client is "
                "redirected to (302) instead of the 400s, as `error_page 495 496 = URL`",
            ),
            _doc(
                "auth-tls-pass-certificate-to-upstream",
                "false",
                '`"true"`: the upstream also gets `ssl-client-cert`, the client\'s certificate in '
                "PEM, URL-encoded as nginx's `$ssl_client_escaped_cert`",
            ),
            _doc(
                "auth-tls-match-cn",
                "",
                "`CN=regex`: searched (RE2, case-sensitive) in the client's subject DN "
                "(`CN=alice,O=org`), as nginx.tmpl's `$ssl_client_s_dn !~ …`; no match (or no "
                "certificate) answers 403 `client certificate unauthorized`",
            ),
        ),
    ),
    (
        "Snippets",
        (
            _doc(
                "configuration-snippet",
                "",
                "translated, never run as configuration: its common directives are translated into"
                " the same typed policy as the other annotations (see [Snippets](snippets.md)); a "
                "snippet using anything else is refused as a whole, with the directive or variable"
                " named, and the Ingress serves without it — unless it holds access control (see "
                "[Snippets](snippets.md#refused-snippets-with-access-control)): then its routes "
                "answer 403",
            ),
            _doc(
                "server-snippet",
                "",
                "as `configuration-snippet`, for every route of the host: as in ingress-nginx, "
                "which keeps one per server, the oldest Ingress's with a rule for the host applies"
                " (one refused still takes the place, applying nothing); a refused one holding "
                "access control makes every route of the Ingress's hosts answer 403",
            ),
            _doc(
                "auth-snippet",
                "",
                "raw configuration is never injected (it is used only beside `auth-url`)",
            ),
            _doc(
                "stream-snippet",
                "",
                "raw configuration is never injected (TCP/UDP servers of its own: it never "
                "restricts an HTTP route)",
            ),
        ),
    ),
    (
        "nginx modules ingressd does not have",
        (
            _doc(
                "enable-modsecurity",
                "",
                "ingressd embeds no ModSecurity; ingress-nginx's `modsecurity.conf` runs "
                "`DetectionOnly`, which logs and blocks nothing",
            ),
            _doc(
                "enable-owasp-core-rules",
                "",
                "as `enable-modsecurity`: the OWASP rules run `DetectionOnly` unless "
                "`modsecurity-snippet` turns the engine on",
            ),
            _doc(
                "enable-rewrite-log",
                "",
                "nginx's `rewrite_log` traces its rewrite module, which ingressd does not have: "
                "`rewrite-target`'s result is the path the upstream gets (in the access log's "
                "upstream request)",
            ),
            _doc(
                "fastcgi-index",
                "",
                "ingressd does not speak FastCGI (`backend-protocol: FCGI` answers 502)",
            ),
            _doc(
                "fastcgi-params-configmap",
                "",
                "as `fastcgi-index`",
            ),
            _doc(
                "http2-push-preload",
                "",
                "HTTP/2 server push is gone: browsers dropped it (Chrome 106, Firefox 132) and "
                "nginx 1.25.1 removed `http2_push_preload`; `Link` headers pass through. Not a "
                "failure for `ingressd check` (below)",
            ),
            _doc(
                "modsecurity-snippet",
                "",
                "ingressd embeds no ModSecurity. Rules that would block (`SecRuleEngine On`, "
                'unless `enable-modsecurity: "false"`) are access control that cannot be '
                "honoured: the routes answer 403 (a problem; `ingressd check` fails). Otherwise "
                "it is listed as refused without failing",
            ),
            _doc(
                "modsecurity-transaction-id",
                "",
                "ModSecurity's audit-log id; `X-Request-ID` already ties a request to its log line",
            ),
        ),
    ),
    (
        "Mirroring",
        (
            _doc(
                "mirror-host",
                "",
                "the `Host` of the copies (default: the target's host name, as ingress-nginx)",
            ),
            _doc(
                "mirror-request-body",
                "on",
                "`on` (default) or `off`: whether the copies carry the request body (an invalid "
                "value is reported and `on` applies, as in ingress-nginx)",
            ),
            _doc(
                "mirror-target",
                "",
                "a copy of each request goes to this `http://` or `https://` URL, fire-and-forget"
                " (nginx's `mirror`); see [Mirroring](../serving.md#mirroring). Anything but an "
                "http(s) URL is"
                " refused (reported, nothing mirrored), as are variables other than "
                "`$request_uri`, `$args`, `$query_string`, `$is_args`, `$host`, `$scheme`, a "
                "variable in the host part, and link-local (cloud metadata), other cloud "
                "metadata, unspecified, multicast or broadcast addresses; a host name resolving "
                "to one of those when a copy connects gets no copy (`denied`), which "
                "ingress-nginx does not check",
            ),
        ),
    ),
    (
        "Tracing",
        (
            _doc(
                "enable-opentelemetry",
                "false",
                '`"true"`: the Ingress\'s requests are traced (a server span each, exported to the'
                " ConfigMap's `otlp-collector-host`), whatever the ConfigMap's "
                '`enable-opentelemetry`; `"false"`: not traced, and a client\'s `traceparent` '
                "passes to the upstream untouched. See [Tracing](../operations.md#tracing)",
            ),
            _doc(
                "opentelemetry-operation-name",
                "",
                'beside `enable-opentelemetry: "true"` only: the span name, text with '
                "`$request_method`, `$uri`, `$host`, `$scheme`, `$namespace`, `$ingress_name`, "
                "`$service_name`, `$service_port`, `$location_path` (up to 256 characters; "
                "another variable makes it invalid). Default: the ConfigMap's, else `METHOD path`",
            ),
            _doc(
                "opentelemetry-trust-incoming-span",
                "true",
                'beside `enable-opentelemetry: "true"` only (as in ingress-nginx): `"false"` '
                "starts a new trace for every request and does not forward the client's "
                "`traceparent`/`tracestate`; default: the ConfigMap's (`true`)",
            ),
        ),
    ),
)

DOCS: Mapping[str, AnnotationDoc] = {doc.name: doc for _, docs in GROUPS for doc in docs}
