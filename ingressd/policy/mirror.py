"""mirror-target, mirror-host, mirror-request-body: their values.

As ingress-nginx v1.15.1 (``internal/ingress/annotations/mirror/main.go``):
the target is validated as a server name (``parser.ValidateServerName``: letters,
digits and ``-._~/:^$[](){}*+?|&=\\``), the Host of the copies is mirror-host,
else the host name of the target's part before its first ``$``, and the body is
sent unless mirror-request-body is ``off``. nginx.tmpl makes of it ``mirror
/_mirror-UID`` in the location and an internal ``location = /_mirror-UID`` that
does ``proxy_set_header Host ...; proxy_pass TARGET``.

The target comes from an Ingress author, so ingressd narrows it further: only
``http://`` and ``https://`` URLs, a host name or an IPv4 address that
``refused_address`` allows, no variable in the host part (nginx would need a
resolver for it), and only the variables ``proxy/mirror.py`` expands in the
path: those nginx gives a mirror subrequest the main request's value of.

**Stricter than ingress-nginx.** nginx proxies the mirror subrequest wherever
``proxy_pass`` points, resolved or not; ingress-nginx checks nothing about the
address. But the annotation is written by whoever may edit Ingresses in a
namespace, and the copies leave from the controller's pod, which has more
network reach than they do (the node's link-local network, the cloud's metadata
service and its credentials). So the same deny list is applied twice: to a
literal address when the annotation is read, and to every address a host name
resolves to when a copy connects (``proxy/mirror.py``), so that a name pointing,
or re-pointed later (DNS rebinding), at a denied address gets no copy.
Loopback stays allowed, as a literal and resolved: it reaches only the
controller's own pod (its read-only admin port, sidecars), where a mirror
next to the controller is a legitimate set-up.
"""

from __future__ import annotations

import ipaddress
from typing import Final

from ..model.regex import fixed

# The variables a target's path may hold: a mirror subrequest shares them with
# the main request ($uri would be the subrequest's own /_mirror-UID: left out).
VARIABLES: Final = frozenset({"request_uri", "args", "query_string", "is_args", "host", "scheme"})
MAX_TARGET: Final = 2048

# Cloud metadata and platform services a pod can reach that are not link-local
# (169.254.169.254, the usual one, and 169.254.170.2, ECS's, are link-local):
# Alibaba Cloud's, AWS's over IPv6 (IMDS on Nitro), Azure's WireServer.
METADATA: Final = frozenset(
    ipaddress.ip_address(a) for a in ("100.100.100.200", "fd00:ec2::254", "168.63.129.16")
)
# IPv6 addresses that carry an IPv4 one a packet may end up at: RFC 6052's
# well-known NAT64 prefix (IPv4-mapped and 6to4 are read by ipaddress itself).
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_BROADCAST: Final = ipaddress.ip_address("255.255.255.255")

# ingress-nginx's parser.IsValidRegex character set (ValidateServerName).
_NGINX_CHARS = fixed(r"^[/\-._~a-zA-Z0-9:^$\[\](){}*+?|&=\\]*$")
_HOST_NAME = fixed(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}(\.[A-Za-z0-9][A-Za-z0-9-]{0,62})*\.?$")
# What a request target may carry as written (RFC 3986 pchar, "/" and "?"), once
# the variables are taken out.
_TARGET_CHARS = fixed(r"^[A-Za-z0-9\-._~/:?&=+*()!,;@']*$")
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def split_variables(path: str) -> list[tuple[bool, str]]:
    """A target's path as (is_variable, text) pieces: ``$name`` and ``${name}``."""
    pieces: list[tuple[bool, str]] = []
    i, n, start = 0, len(path), 0
    while i < n:
        if path[i] != "$":
            i += 1
            continue
        if i > start:
            pieces.append((False, path[start:i]))
        if path.startswith("{", i + 1):
            end = path.find("}", i + 2)
            if end == -1:
                raise ValueError("an unclosed ${ in the target")
            name, i = path[i + 2 : end], end + 1
        else:
            j = i + 1
            while j < n and path[j] in _NAME_CHARS:
                j += 1
            name, i = path[i + 1 : j], j
        if not name or not all(c in _NAME_CHARS for c in name):
            raise ValueError("a $ that does not name a variable in the target")
        pieces.append((True, name))
        start = i
    if start < n:
        pieces.append((False, path[start:]))
    return pieces


def parse_target(value: str) -> tuple[str, str, int, str]:
    """mirror-target -> (scheme, host, port, path with variables); ValueError if refused."""
    v = value.strip()
    if not v:
        raise ValueError("the target is empty")
    if len(v) > MAX_TARGET:
        raise ValueError(f"the target is longer than {MAX_TARGET} characters")
    lower = v[:8].lower()
    if lower.startswith("http://"):
        scheme, rest = "http", v[7:]
    elif lower.startswith("https://"):
        scheme, rest = "https", v[8:]
    else:
        raise ValueError(f"{v[:200]!r} is not an http:// or https:// URL")
    if not _NGINX_CHARS.match(v):
        raise ValueError(f"{v[:200]!r} holds characters ingress-nginx does not accept in it")
    cut = len(rest)
    for sep in "/?$":
        at = rest.find(sep)
        if at != -1:
            cut = min(cut, at)
    authority, path = rest[:cut], rest[cut:]
    host, port = _authority(authority, scheme)
    pieces = split_variables(path)
    for is_var, name in pieces:
        if is_var and name not in VARIABLES:
            raise ValueError(
                f"variable ${name} is not supported in mirror-target (only "
                + ", ".join("$" + n for n in sorted(VARIABLES))
                + ")"
            )
    if not _TARGET_CHARS.match("".join(t for is_var, t in pieces if not is_var)):
        raise ValueError(f"the path {path[:200]!r} is not valid in a URL")
    return scheme, host, port, path


def _authority(authority: str, scheme: str) -> tuple[str, int]:
    if not authority:
        raise ValueError("the target has no host (a variable in the host is not supported)")
    if "$" in authority:
        raise ValueError("a variable in the target's host is not supported")
    host, sep, port_text = (
        authority.rpartition(":")
        if authority.count(":") == 1
        else (
            authority,
            "",
            "",
        )
    )
    if not sep:
        host = authority
    port = 443 if scheme == "https" else 80
    if sep:
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            raise ValueError(f"{authority!r}: the port is not a number from 1 to 65535")
        port = int(port_text)
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        if not _HOST_NAME.match(host) or len(host) > 253:
            raise ValueError(f"{host!r} is not a host name or an IPv4 address") from None
        return host, port
    why = refused_address(addr)
    if why is not None:
        raise ValueError(f"{host}: {why}")
    return host, port


def refused_address(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a mirror copy may not go to ``addr`` (None: it may): link-local (the
    cloud metadata service at 169.254.169.254 and the node's link-local network),
    the other metadata addresses, unspecified, multicast or broadcast; an IPv6
    address by the IPv4 address it embeds too (IPv4-mapped, NAT64, 6to4)."""
    if isinstance(addr, ipaddress.IPv6Address):
        embedded = addr.ipv4_mapped or addr.sixtofour
        if embedded is None and addr in _NAT64:
            embedded = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if embedded is not None:
            why = refused_address(embedded)
            if why is not None:
                return f"{why} ({embedded}, within {addr})"
    if addr in METADATA:
        return "a cloud metadata address"
    if addr.is_link_local:
        return "a link-local address (the cloud metadata service)"
    if addr.is_unspecified or addr.is_multicast or addr == _BROADCAST:
        return "an unspecified, multicast or broadcast address"
    return None


def parse_host(value: str) -> str:
    """mirror-host: a host name (with an optional port): the Host of the copies."""
    v = value.strip()
    name, _, port = v.rpartition(":") if ":" in v else (v, "", "")
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{value!r} is not a host name with an optional :port")
    if not _HOST_NAME.match(name) or len(name) > 253:
        raise ValueError(f"{value!r} is not a host name with an optional :port")
    return v
