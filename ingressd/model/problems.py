"""What the pipeline rejected: a file, an object or a setting, and why."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Problem:
    """Something in the input that was rejected, with enough context to fix it."""

    obj: str  # e.g. "Ingress default/web" or a file path
    reason: str
    source: str = ""  # file the object came from, when known
    # (kind, namespace, name) of the object at fault, so a cluster source can
    # attach a Kubernetes Event to it; None for files and other non-objects.
    ref: tuple[str, str, str] | None = field(default=None, compare=False)

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.obj}: {self.reason}"
