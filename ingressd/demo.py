"""``ingressd demo``: echo upstreams for the bundled example manifests.

Every EndpointSlice endpoint at 127.0.0.1 in the manifest folder gets an echo
server (``ingressd.echo``) on its port, named after the Service it belongs to,
so the example routes have something to answer them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .echo import EchoServer, start_echo
from .model.objects import SERVICE_NAME_LABEL
from .sources.manifests import load_directory

log = logging.getLogger("ingressd.demo")

DEMO_ADDRESS = "127.0.0.1"


def demo_endpoints(manifest_dir: Path) -> list[tuple[str, int, str]]:
    """(address, port, service name) of every 127.0.0.1 endpoint, sorted, unique."""
    snap = load_directory(Path(manifest_dir)).store.snapshot()
    found: set[tuple[str, int, str]] = set()
    for eps in snap.of("EndpointSlice").values():
        labels = (eps.get("metadata") or {}).get("labels") or {}
        service = labels.get(SERVICE_NAME_LABEL)
        if not service:
            continue
        ports: list[int] = []
        for p in eps.get("ports") or []:
            try:
                number = int(p.get("port"))
            except (TypeError, ValueError):
                continue
            if 0 < number < 65536:
                ports.append(number)
        for ep in eps.get("endpoints") or []:
            if DEMO_ADDRESS in (str(a) for a in ep.get("addresses") or []):
                found.update((DEMO_ADDRESS, port, str(service)) for port in ports)
    return sorted(found)


async def start_demo_upstreams(manifest_dir: Path) -> list[EchoServer]:
    """Start one echo server per demo endpoint; all or none (raises OSError)."""
    servers: list[EchoServer] = []
    taken: dict[tuple[str, int], str] = {}
    try:
        for address, port, service in demo_endpoints(manifest_dir):
            owner = taken.get((address, port))
            if owner is not None:
                log.warning(
                    "demo: %s:%d belongs to services %s and %s; the echo server named %s "
                    "answers for both",
                    address,
                    port,
                    owner,
                    service,
                    owner,
                )
                continue
            try:
                server = await start_echo(address, port, service)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"cannot start the demo upstream for service {service} on "
                    f"{address}:{port}: {exc.strerror or exc} (is another demo running?)",
                ) from exc
            taken[(address, port)] = service
            servers.append(server)
    except BaseException:
        for server in servers:
            await server.close()
        raise
    return servers
