"""The limit table shared by the worker processes (``--workers N``).

The main process creates the table in a memfd (memory with a file
descriptor: its record locks guard the buckets, see ``limits.py``) and hands
the descriptor to each worker it spawns; a worker maps the same memory and
counts its requests in flight in column ``index``. Nothing is named in the
filesystem (where there is no memfd, an unlinked temporary file stands in),
and the memory goes away with the last process holding it.

Handing over: workers are started with the ``spawn`` method, a fresh
interpreter that inherits only the descriptors multiprocessing passes on.
``SharedLimits.handle()`` pickles, while a worker is being spawned, as a
descriptor multiprocessing passes to it (``reduction.DupFd``, as it does for
its own pipes); anywhere else it refuses to pickle.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from multiprocessing import context, reduction
from typing import Any

from .limits import LimitTable, format_table, table_bytes


class SharedLimits:
    """The main process's side: creates the table, clears a dead worker's places."""

    def __init__(self, entries: int, columns: int) -> None:
        self.columns = columns
        self.size = table_bytes(entries, columns)
        self.fd = _anonymous_file()
        try:
            os.ftruncate(self.fd, self.size)
            buf = mmap.mmap(self.fd, self.size)
            format_table(buf, columns)
            # Column 0 is never used from here: this process only reads and clears.
            self.table = LimitTable(buf, self.fd, 0)
        except BaseException:
            os.close(self.fd)
            raise

    def handle(self) -> TableHandle:
        return TableHandle(self.fd, self.size)

    def clear_column(self, column: int) -> None:
        """The worker that counted in ``column`` is gone: its requests are too."""
        self.table.clear_column(column)

    def close(self) -> None:
        self.table.close()
        os.close(self.fd)


class TableHandle:
    """What a worker is given: the table's descriptor, and its size as a check."""

    __slots__ = ("fd", "size")

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size

    def __reduce__(self) -> tuple[Any, ...]:
        if context.get_spawning_popen() is None:
            raise TypeError("a limit table handle is only passed to a process being spawned")
        return (_rebuild, (reduction.DupFd(self.fd), self.size))

    def attach(self, column: int) -> LimitTable:
        """Map the table in this process, counting in ``column``."""
        if os.fstat(self.fd).st_size != self.size:
            raise ValueError("the limit table's descriptor is not the table it was made for")
        return LimitTable(mmap.mmap(self.fd, self.size), self.fd, column)


def _anonymous_file() -> int:
    if hasattr(os, "memfd_create"):  # Linux
        return os.memfd_create("ingressd-limits", os.MFD_CLOEXEC)
    with tempfile.TemporaryFile() as f:  # unlinked already
        return os.dup(f.fileno())


def _rebuild(dup: Any, size: int) -> TableHandle:
    return TableHandle(dup.detach(), size)
