"""The process log (not the access log): ``--log-format text`` or ``json``, on stderr.

Text stays the default: it is what people read in ``ingressd demo`` and in
``kubectl logs``, and the access log, which is what log pipelines usually
parse, is JSON on stdout already, a stream of its own. ``json`` gives one
object per line with time, level, logger and message, plus any ``extra=``
fields a call passes and, in a worker process, its index.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


def rfc3339(when: float) -> str:
    """UTC with milliseconds: 2025-01-02T03:04:05.678Z."""
    ms = int((when - int(when)) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{ms:03d}Z"


class JsonFormatter(logging.Formatter):
    def __init__(self, static: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.static = dict(static or {})

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **self.static,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str)


def configure(level: str | int, fmt: str = "text", worker: int | None = None) -> None:
    """Send the root logger to stderr at ``level`` in ``fmt``; ``worker``: its index."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter({"worker": worker} if worker is not None else None))
    elif fmt == "text":
        name = "%(name)s" if worker is None else f"%(name)s[{worker}]"
        handler.setFormatter(logging.Formatter(TEXT_FORMAT.replace("%(name)s", name)))
    else:
        raise ValueError(f"log format {fmt!r} is not text or json")
    if isinstance(level, str):
        level = level.upper()
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # The HTTP/2 libraries log every frame and header field at DEBUG: a line
    # per field of every request, more than --log-level debug is for.
    for chatty in ("hpack", "h2"):
        logging.getLogger(chatty).setLevel(logging.INFO)
