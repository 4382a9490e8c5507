"""The TCP and UDP services' listeners, opened and closed as their ConfigMaps change.

Runs in the process that builds and reports (the main process): one owner
for every UDP flow (a worker restarted would otherwise move flows between
sockets), and a port in use is reported where problems are reported. Each
rebuild (``Controller``) calls ``apply`` with the new snapshot: entries gone
close their listener, new ones open, the others keep their listener and take
the new endpoints. A port that cannot be had is a problem of its own, tried
again at the next change; the other entries serve.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..model.backend import Backend
from ..model.objects import Snapshot
from ..model.problems import Problem
from .bounds import SessionTable
from .connect import StreamSettings
from .services import ConfigMapRef, StreamService, read_services
from .session_log import SessionLog
from .tcp import TCPService
from .udp import UDPService

log = logging.getLogger("ingressd.stream")


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """What ``--tcp-services-configmap`` and ``--udp-services-configmap`` name."""

    refs: tuple[ConfigMapRef, ...] = ()
    settings: StreamSettings = field(default_factory=StreamSettings)


class StreamServices:
    def __init__(
        self,
        config: StreamConfig,
        address: str,
        reserved: Mapping[int, str],
        sessions: SessionLog,
        table: SessionTable,
    ) -> None:
        self.config = config
        self.address = address
        self.reserved = dict(reserved)
        self.sessions = sessions
        self.table = table
        self.listeners: dict[tuple[str, int], TCPService | UDPService] = {}
        self.stopping = False  # shutting down: no listener opens any more
        self.loop = asyncio.get_running_loop()
        self._opening: set[asyncio.Task[object]] = set()

    def apply(self, snapshot: Snapshot) -> list[Problem]:
        """Listeners made to match ``snapshot``'s ConfigMaps; the problems found."""
        if self.stopping:
            return []  # a rebuild racing the shutdown must not listen again
        problems: list[Problem] = []
        wanted: dict[tuple[str, int], tuple[StreamService, ConfigMapRef]] = {}
        for ref in self.config.refs:
            entries, found = read_services(ref, snapshot, self.reserved)
            problems += found
            for spec in entries:
                wanted[(spec.protocol, spec.port)] = (spec, ref)
        for key in list(self.listeners):
            current = self.listeners[key]
            new = wanted.get(key)
            if new is None or new[0].decode_proxy != current.spec.decode_proxy:
                current.close()
                del self.listeners[key]
                log.info("stream service %s closed", current.spec.label)
        for key, (spec, ref) in wanted.items():
            backend = spec.resolve(snapshot)
            if backend.error is not None:
                # As ingress-nginx (getStreamServices): an entry whose Service
                # cannot be found gets no listener.
                problems.append(_problem(ref, snapshot, f"{spec.label}: {backend.error}"))
                if key in self.listeners:
                    self.listeners.pop(key).close()
                continue
            existing = self.listeners.get(key)
            if existing is not None:
                existing.spec = spec
                existing.backend = backend
                continue
            try:
                self.listeners[key] = self._open(spec, backend)
            except OSError as exc:
                reason = exc.strerror or str(exc)
                problems.append(
                    _problem(
                        ref,
                        snapshot,
                        f"{spec.label}: cannot listen on {self._where(spec.port)}: "
                        f"{reason[:1].lower()}{reason[1:]}",
                    )
                )
                continue
            log.info("stream service %s -> %s listening", spec.label, backend.name)
        return problems

    def _where(self, port: int) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{port}"

    def _open(self, spec: StreamService, backend: Backend) -> TCPService | UDPService:
        udp = spec.protocol == "UDP"
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        try:
            if not udp:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.address, spec.port))
            sock.setblocking(False)
            settings = self.config.settings
            if udp:
                service = UDPService(spec, backend, settings, self.sessions, self.table)
                # A coroutine only to resolve addresses: with a bound socket
                # it does no I/O, and the transport is there within this turn.
                task = self.loop.create_task(
                    self.loop.create_datagram_endpoint(lambda: service, sock=sock)
                )
                self._opening.add(task)  # held: the loop keeps only a weak reference
                task.add_done_callback(self._opening.discard)
                return service
            return TCPService(spec, backend, sock, settings, self.sessions, self.table)
        except BaseException:
            sock.close()
            raise

    def stop(self) -> None:
        """Shutting down: the TCP ports stop accepting while their sessions
        go on (the table drains them); UDP flows end now (a datagram has no
        session to finish)."""
        self.stopping = True
        for listener in self.listeners.values():
            if isinstance(listener, TCPService):
                listener.stop()
            else:
                listener.close()

    def close(self) -> None:
        for listener in self.listeners.values():
            listener.close()
        self.listeners.clear()


def _problem(ref: ConfigMapRef, snapshot: Snapshot, reason: str) -> Problem:
    cm = snapshot.get("ConfigMap", ref.namespace, ref.name)
    origin = snapshot.origin(cm) if cm is not None else ""
    return Problem(
        str(ref), f"{ref.flag}: {reason}", origin, ("ConfigMap", ref.namespace, ref.name)
    )
