"""Sending the probes to both sides: bounded in concurrency and rate, each request timed out.

Each probe goes to the reference and to ingressd at the same moment, so a
change over time (a reload, a rotating canary) touches both alike. ``rate``
paces the start of probes: each server gets at most that many requests per
second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .client import Address, client_context, send
from .compare import DEFAULT_HEADERS, ERROR_HEADERS, compare
from .probes import Probe
from .report import Result


@dataclass(frozen=True, slots=True)
class Limits:
    concurrency: int = 8  # probes in flight at once
    rate: float = 50.0  # probes started per second
    timeout: float = 10.0  # per request


class _Pacer:
    """Start times at least 1/rate apart, whoever asks."""

    def __init__(self, rate: float) -> None:
        self._gap = 1.0 / rate
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            loop = asyncio.get_running_loop()
            now = loop.time()
            start = max(now, self._next)
            self._next = start + self._gap
        if start > now:
            await asyncio.sleep(start - now)


async def reachable(address: Address, schemes: Sequence[str], timeout: float) -> str | None:
    """None when each port of ``address`` the probes use accepts a connection; else why not."""
    for scheme in schemes:
        port = address.port(scheme)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(address.host, port), timeout)
        except TimeoutError:
            return f"{address.host}:{port} ({scheme}): no connection within {timeout:g} s"
        except OSError as exc:
            return f"{address.host}:{port} ({scheme}): {exc.strerror or exc}"
        writer.close()
    return None


async def run(
    probes: Sequence[Probe],
    reference: Address,
    target: Address,
    limits: Limits,
    headers: tuple[str, ...] = DEFAULT_HEADERS,
    *,
    error_headers: tuple[str, ...] = ERROR_HEADERS,
    strict_ports: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[Result, ...]:
    """Every probe to both sides; the results in the probes' order."""
    context = client_context()
    pacer = _Pacer(limits.rate)
    gate = asyncio.Semaphore(limits.concurrency)
    done = 0

    async def one(probe: Probe) -> Result:
        nonlocal done
        async with gate:
            await pacer.wait()
            ref, tgt = await asyncio.gather(
                send(probe, reference, limits.timeout, context),
                send(probe, target, limits.timeout, context),
            )
        done += 1
        if progress is not None:
            progress(done)
        found = compare(
            probe,
            ref,
            tgt,
            (reference, target),
            headers,
            error_headers=error_headers,
            strict_ports=strict_ports,
        )
        return Result(probe, ref, tgt, found)

    return tuple(await asyncio.gather(*(one(p) for p in probes)))
