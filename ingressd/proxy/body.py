"""A request body read whole before the upstream is connected
(proxy-request-buffering: on, nginx's default).

As nginx's ``client_body_buffer_size``: the first ``memory_limit`` bytes are
kept in memory; the rest goes to a temporary file, bounded by the route's
proxy-body-size (checked by the exchange before a byte is stored). The files
live in a directory of this process's own, made on first use with mode 0700
(``tempfile.mkdtemp``), and are opened unnamed (``tempfile.TemporaryFile``:
``O_TMPFILE`` on Linux, else unlinked at once): no path an outsider could name
or race for, and the kernel frees the space when the file is closed, at the end
of the request, or when the process dies.

The directory is under ``--client-body-temp-path`` (nginx's
``client_body_temp_path``; by default ``$TMPDIR``). All the bodies a process
holds on disk together are bounded too (``--client-body-temp-size``): past
it a body that needs the disk is refused (503) rather than fill the node's
disk, where nginx would fail with a 500 once the disk is full. The file is
written and read on the event loop, as nginx does without ``aio``: page-cache
writes of at most a socket read each.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
from typing import IO, Final

# What one read of the file sends on to the upstream.
FEED_CHUNK: Final = 64 * 1024


class BufferFull(Exception):
    """The process's bodies on disk would pass --client-body-temp-size."""


class _Disk:
    """The process's temporary directory, made on first use, and what it holds."""

    __slots__ = ("base", "directory", "pid", "used")

    def __init__(self) -> None:
        self.directory: str | None = None
        self.base = ""
        self.pid = 0
        self.used = 0

    def open(self, base: str) -> IO[bytes]:
        pid = os.getpid()
        if self.directory is None or self.pid != pid or self.base != base:
            # A worker process makes its own, not its parent's.
            self.directory = tempfile.mkdtemp(prefix=f"ingressd-body-{pid}-", dir=base or None)
            self.base = base
            self.pid = pid
            atexit.register(_remove, self.directory)
        return tempfile.TemporaryFile(dir=self.directory)


def _remove(directory: str) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(directory)  # empty: its files were unnamed


DISK: Final = _Disk()


class BodyBuffer:
    """One request's body: memory first, then a temporary file."""

    __slots__ = (
        "disk_limit",
        "file",
        "file_size",
        "memory",
        "memory_limit",
        "memory_size",
        "temp_path",
    )

    def __init__(self, memory_limit: int, temp_path: str = "", disk_limit: int = 1024**3) -> None:
        self.memory: list[bytes] = []
        self.memory_size = 0
        self.memory_limit = memory_limit
        self.temp_path = temp_path
        self.disk_limit = disk_limit
        self.file: IO[bytes] | None = None
        self.file_size = 0

    @property
    def size(self) -> int:
        return self.memory_size + self.file_size

    def add(self, data: bytes) -> None:
        """Keep ``data``; raises BufferFull, or OSError when the disk fails."""
        room = self.memory_limit - self.memory_size
        if self.file is None and len(data) <= room:
            self.memory.append(data)
            self.memory_size += len(data)
            return
        if self.file is None and room > 0:
            self.memory.append(data[:room])
            self.memory_size += room
            data = data[room:]
        if DISK.used + len(data) > self.disk_limit:
            raise BufferFull(
                "the request bodies buffered on disk by this process would pass "
                f"{self.disk_limit} bytes (--client-body-temp-size)"
            )
        if self.file is None:
            self.file = DISK.open(self.temp_path)
        self.file.write(data)
        self.file_size += len(data)
        DISK.used += len(data)

    def read_file(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes of the file part from ``offset`` (b"" at its end)."""
        f = self.file
        if f is None or offset >= self.file_size:
            return b""
        f.seek(offset)
        return f.read(min(size, self.file_size - offset))

    def read_all(self, limit: int) -> bytes | None:
        """The whole body, if it is at most ``limit`` bytes (for a mirror copy)."""
        if self.size > limit:
            return None
        return b"".join(self.memory) + self.read_file(0, self.file_size)

    def close(self) -> None:
        f = self.file
        if f is not None:
            self.file = None
            DISK.used -= self.file_size
            f.close()
        self.memory = []
