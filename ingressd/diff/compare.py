"""Comparing two servers' answers to one probe: what is compared, what is normalised.

Pure. Compared: the status; ``Location``; a chosen set of response headers
(by default the CORS headers, ``Strict-Transport-Security`` and
``WWW-Authenticate``, and ``Content-Type`` on redirects and errors, where it
is the proxy's own page); and, where the backend echoes what it received and
both sides answered with the same status, the upstream path, the upstream
Host and which backend answered (the canary-routing outcome).

Normalised, because it differs legitimately:

- headers that are never the same twice or name the server (``Date``,
  ``Server``, request ids, ``Content-Length`` of pages that name the server)
  are simply not in the compared set;
- the port of an absolute ``Location``: each side answers with its own ports
  (ingressd on 8443, a port-forwarded ingress-nginx on 443 behind 8443 ...).
  A port that is the side's own port for that scheme, or the scheme's default
  port, is replaced by ``<http-port>`` / ``<https-port>``, so
  ``https://a.test:8443/x`` from one side and ``https://a.test/x`` from the
  other compare equal. A port that is neither (a redirect to another
  service's port, or to the plain port over https) is kept and compared.
  The price: a side that leaves out its port where it should not (ingressd on
  8443 redirecting to ``https://a.test/x``) is not told apart from one that
  relies on the default; ``strict_ports`` compares ports as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from .client import Address, Answer, Echo
from .probes import Probe

CORS_HEADERS = (
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-expose-headers",
    "access-control-max-age",
)
DEFAULT_HEADERS = (*CORS_HEADERS, "strict-transport-security", "www-authenticate")
# Compared only on redirects and errors: the proxy's own pages.
ERROR_HEADERS = ("content-type",)
_DEFAULT_PORTS = {"http": 80, "https": 443}
ABSENT = "(none)"
NO_ECHO = Echo(None, None, None)  # the backend said nothing of what it received


@dataclass(frozen=True, slots=True)
class Difference:
    field: str  # "status", "location", "header strict-transport-security", "upstream path"
    reference: str
    target: str


def compare(
    probe: Probe,
    reference: Answer,
    target: Answer,
    sides: tuple[Address, Address],
    headers: tuple[str, ...] = DEFAULT_HEADERS,
    *,
    error_headers: tuple[str, ...] = ERROR_HEADERS,
    strict_ports: bool = False,
) -> tuple[Difference, ...]:
    """The differences between the two answers; none when either failed (that is
    an error, reported as one)."""
    if reference.error is not None or target.error is not None:
        return ()
    out: list[Difference] = []

    def differ(field: str, ref: str | None, tgt: str | None) -> None:
        if ref != tgt:
            out.append(
                Difference(field, ABSENT if ref is None else ref, ABSENT if tgt is None else tgt)
            )

    differ("status", str(reference.status), str(target.status))
    ref_location = [location(v, sides[0], strict_ports) for v in reference.values("location")]
    tgt_location = [location(v, sides[1], strict_ports) for v in target.values("location")]
    differ("location", _joined(tuple(ref_location)), _joined(tuple(tgt_location)))
    names = list(dict.fromkeys(h.lower() for h in headers))
    if reference.status >= 300 or target.status >= 300:
        names += [h for h in error_headers if h not in names]
    for name in names:
        differ(f"header {name}", _joined(reference.values(name)), _joined(target.values(name)))
    if probe.same_backend and reference.status == target.status:
        ref, tgt = reference.echo or NO_ECHO, target.echo or NO_ECHO
        if ref is not NO_ECHO or tgt is not NO_ECHO:
            differ("upstream path", ref.path, tgt.path)
            differ("upstream host", ref.host, tgt.host)
            differ("backend", ref.backend, tgt.backend)
    return tuple(out)


def _joined(values: tuple[str, ...]) -> str | None:
    if not values:
        return None
    return ", ".join(v.strip() for v in values)


def location(value: str, side: Address, strict_ports: bool = False) -> str:
    """``value`` with the side's own (or the default) port replaced by a placeholder."""
    value = value.strip()
    if strict_ports:
        return value
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return value
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return value
    effective = port if port is not None else _DEFAULT_PORTS[scheme]
    if effective not in (side.port(scheme), _DEFAULT_PORTS[scheme]):
        return value
    host = parts.hostname
    host = f"[{host}]" if ":" in host else host
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + f"{host}:<{scheme}-port>"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
