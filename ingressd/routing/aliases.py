"""``server-alias``: more names for a host, decided over all Ingresses as ingress-nginx does.

ingress-nginx (``internal/ingress/controller/controller.go`` createServers):
the aliases of a host are those of the oldest Ingress with a rule for the host
that has any (a younger one's are skipped with a warning); an alias equal to
the host, or to a host some Ingress has a rule for, is dropped (that host's
own server serves the name). The template then writes the aliases into the
host's ``server_name``, so the alias gets everything the host has: routes,
TLS and its redirect, certificate. Two hosts naming the same alias make nginx
warn of a "conflicting server name" and keep the first server block, the
servers being sorted by host name: the host that sorts first keeps it.

Aliases are exact names or ``*.suffix`` (one label, as ingressd matches
wildcard hosts); nginx's regular-expression and trailing-wildcard names are
refused when the annotation is parsed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ..model.table import TLSCertificate, VirtualHost


@dataclass(frozen=True, slots=True)
class AliasClaim:
    """One Ingress's server-alias, with the rule hosts it applies to."""

    ingress: str  # "namespace/name"
    hosts: tuple[str, ...]
    aliases: tuple[str, ...]
    ref: object = None  # the caller's handle, handed back with each problem


@dataclass(slots=True)
class Aliases:
    """What the aliases add to the table."""

    exact: dict[str, VirtualHost] = field(default_factory=dict)
    wildcard: dict[str, VirtualHost] = field(default_factory=dict)  # by suffix, as the table
    certificates: dict[str, TLSCertificate] = field(default_factory=dict)
    problems: list[tuple[AliasClaim, str]] = field(default_factory=list)


def resolve(
    claims: Iterable[AliasClaim],
    is_rule_host: Callable[[str], bool],
    vhost_of: Callable[[str], VirtualHost | None],
    certificates: Mapping[str, TLSCertificate],
) -> Aliases:
    """The aliases in force; ``claims`` oldest Ingress first."""
    out = Aliases()
    owners: dict[str, AliasClaim] = {}
    for claim in claims:
        for host in claim.hosts:
            if not host:
                continue  # the catch-all server already answers every name
            first = owners.setdefault(host, claim)
            if first is not claim:
                out.problems.append(
                    (
                        claim,
                        f"server-alias does not apply to host {host}: the older Ingress "
                        f"{first.ingress} sets its aliases (as in ingress-nginx)",
                    )
                )
    taken: dict[str, str] = {}  # alias -> the host that has it
    for host in sorted(owners):
        claim = owners[host]
        vhost = vhost_of(host)
        if vhost is None:
            continue  # nothing routed for the host: nothing to serve under another name
        cert = certificates.get(host)
        for alias in claim.aliases:
            if alias == host:
                continue
            reason = None
            if is_rule_host(alias):
                reason = f"an Ingress has a rule for {alias}, which serves it"
            elif alias in taken:
                reason = f"host {taken[alias]} names it too and comes first (nginx keeps the first)"
            if reason is not None:
                out.problems.append(
                    (claim, f"server-alias {alias} of host {host} is ignored: {reason}")
                )
                continue
            taken[alias] = host
            if alias.startswith("*."):
                out.wildcard[alias[2:]] = vhost
            else:
                out.exact[alias] = vhost
            # The host's certificate answers for the alias where it covers it; else
            # the alias gets the default one (and, by SNI, no misdirection check).
            if cert is not None and alias not in certificates and cert.covers(alias):
                out.certificates[alias] = cert
    return out
