"""Change notifications for one folder, from one long-lived thread.

``watchfiles.awatch`` starts a thread task and an anyio task group for every
wait, and cancelling that group formats the task's repr: at a 250 ms tick that
alone kept an idle ingressd at 2-3% of a core, and under load it took as much
from the proxy on the same core. Here one thread blocks in the Rust watcher for
the whole life of the watch and hands each batch to the event loop with
``call_soon_threadsafe``; the loop does nothing between batches and ticks.

The Rust side holds the GIL for a moment once every ``step_ms`` (it checks for
signals and for the stop flag then), so the step is the other cost of an idle
watch; it is also how long a change waits for the next one before it is handed
over, so the caller keeps it short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncGenerator
from pathlib import Path

from watchfiles import Change, DefaultFilter
from watchfiles._rust_notify import RustNotify

log = logging.getLogger("ingressd.manifests")

Changes = set[tuple[Change, str]]

# The end of the stream, posted by the thread as it leaves.
_END = object()


class _Stop:
    """What the Rust watcher polls each step: either the caller's stop or ours.

    Reading an ``asyncio.Event``'s flag from another thread is a plain read of
    a bool; it is only ever set on the loop.
    """

    __slots__ = ("_caller", "_own")

    def __init__(self, caller: asyncio.Event, own: threading.Event) -> None:
        self._caller = caller
        self._own = own

    def is_set(self) -> bool:
        return self._own.is_set() or self._caller.is_set()


async def watch_folder(
    root: Path,
    stop: asyncio.Event,
    *,
    debounce_ms: int,
    step_ms: int,
    tick_ms: int,
    polling: bool,
    poll_delay_ms: int,
) -> AsyncGenerator[Changes, None]:
    """Yield an empty set once the watch is in place, then each batch of changes
    under ``root``, and an empty set every quiet ``tick_ms``.

    Ends when ``stop`` is set (within ``step_ms``); raises what the watcher
    raised (the folder gone before the watch began, say). Changes watchfiles'
    ``DefaultFilter`` drops (editors' swap files, ``.git``, ...) are dropped.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    own = threading.Event()
    halt = _Stop(stop, own)
    keep = DefaultFilter()

    def post(item: object) -> None:
        # The loop may be closing while the thread leaves: nobody is waiting then.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def run() -> None:
        try:
            with RustNotify([str(root)], False, polling, poll_delay_ms, True, False) as notify:
                # A first empty batch: the watch is in place, so the caller can
                # look once for what changed while it was being set up.
                post(set())
                while not halt.is_set():
                    raw = notify.watch(debounce_ms, step_ms, tick_ms, halt)
                    if raw == "stop":
                        break
                    if raw == "timeout":
                        post(set())
                    elif raw == "signal":
                        # Signals go to the main thread; this one is never told of them.
                        continue
                    else:
                        post(raw)
        except BaseException as exc:  # handed to the loop, which decides
            post(exc)
        finally:
            post(_END)

    thread = threading.Thread(target=run, name="ingressd-watch", daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, set)
            changes: Changes = set()
            for code, path in item:
                change = Change(code)
                if keep(change, path):
                    changes.add((change, path))
            if item and not changes:
                log.debug("all %d changes under %s filtered out", len(item), root)
                continue
            yield changes
    finally:
        # Leaving early (the caller returned or was cancelled): the thread sees
        # this within a step and closes the watcher itself.
        own.set()
