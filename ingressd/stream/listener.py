"""What a TCP and a UDP service listener share: their ConfigMap entry and
backend (both replaced in place as the ConfigMap and the endpoints change),
the settings, where sessions are recorded, the process's session table, and
the record a session leaves.
"""

from __future__ import annotations

from ..model.backend import Backend
from .bounds import SessionTable
from .connect import StreamSettings
from .services import StreamService
from .session_log import SessionLog, SessionRecord


class ServiceListener:
    """The state of one ConfigMap entry's listener; TCPService and UDPService
    add how they receive."""

    kind = ""  # SessionRecord.kind: "tcp", "udp"

    def __init__(
        self,
        spec: StreamService,
        backend: Backend,
        settings: StreamSettings,
        sessions: SessionLog,
        table: SessionTable,
    ) -> None:
        self.spec = spec
        self.backend = backend
        self.settings = settings
        self.sessions = sessions
        self.table = table

    def session(
        self,
        client: str,
        status: int,
        upstream: str = "",
        bytes_in: int = 0,
        bytes_out: int = 0,
        duration: float = 0.0,
    ) -> SessionRecord:
        """A session of this listener, named as nginx's stream log names it.

        The backend is the entry's "namespace/service:port", which is also the
        name services.resolve gives the Backend (routing/build.resolve_service)."""
        spec = self.spec
        return SessionRecord(
            self.kind,
            spec.label,
            spec.backend_name,
            client,
            upstream,
            status,
            bytes_in,
            bytes_out,
            duration,
        )
