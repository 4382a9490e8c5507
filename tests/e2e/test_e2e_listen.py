"""A listener that cannot be bound ends the start, whatever the command and process model.

Each case holds a real port with a real listener, runs the real ``ingressd``
on it in a session of its own, and checks: exit code 1, one line naming the
address and the option, no traceback, nothing logged as serving, and no
process of that session left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import LOCALHOST, REPO_ROOT, echo_backend, free_port, manifest_text, wait_for
from k8s_objects import ingress, ingress_class, path, rule

from ingressd.cli import parser
from ingressd.config import ServeConfig
from ingressd.model.objects import ObjectStore
from ingressd.workers import WorkerPool

FLAGS = ("--http-port", "--https-port", "--admin-port")
RUN_TIMEOUT = 60.0


@contextlib.contextmanager
def occupied() -> Iterator[int]:
    """A port held by a plain listener (no SO_REUSEPORT), as another program would."""
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        s.listen()
        yield s.getsockname()[1]


def session_processes(sid: int) -> list[int]:
    """Processes still alive in session ``sid`` (the ingressd we started and its children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...; comm may hold spaces and parentheses.
        fields = stat.rpartition(")")[2].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append(int(entry.name))
    return found


def manifests(tmp_path: Path) -> Path:
    folder = tmp_path / "manifests"
    folder.mkdir()
    objs = [
        ingress_class(),
        *echo_backend("web", free_port()),  # demo starts its echo upstream on this free port
        ingress("web", [rule("web.test", path("/", "web"))]),
    ]
    (folder / "all.yaml").write_text(manifest_text(objs))
    return folder


def run_ingressd(args: list[str], tmp_path: Path) -> tuple[int, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingressd", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        raise AssertionError(
            f"ingressd {args[0]} did not exit within {RUN_TIMEOUT:.0f} s"
        ) from None
    finally:
        try:
            wait_for(lambda: not session_processes(proc.pid), 10, what="no process left behind")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)  # if the assertion failed, still stop them
    return proc.returncode, err.decode(errors="replace")


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("flag", FLAGS)
@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_port_in_use_is_one_line_exit_1_and_nothing_left(
    tmp_path: Path, command: str, flag: str, workers: int
) -> None:
    for _ in range(3):
        with occupied() as port:
            ports = {f: port if f == flag else free_port() for f in FLAGS}
            args = [command, "--manifests", str(manifests(tmp_path)), "--address", LOCALHOST]
            args += [a for f, p in ports.items() for a in (f, str(p))]
            args += ["--workers", str(workers), "--shutdown-delay", "5"]
            code, err = run_ingressd(args, tmp_path)
        lines = [line for line in err.splitlines() if "cannot listen" in line]
        # A free port can be taken again before ingressd binds it (by the demo's own
        # upstreams, or anyone's): only a clash on the port held here is the case.
        if not any(f":{p} (" in line for line in lines for p in ports.values() if p != port):
            break
    assert code == 1, err
    assert lines == [
        f"ingressd {command}: cannot listen on {LOCALHOST}:{port} ({flag}): address already in use"
    ], err
    assert "Traceback" not in err, err
    assert "serving" not in err, err  # said only once every port is bound
    assert "worker 0 started" not in err, err  # nothing was started


def test_an_unresolvable_address_names_the_flag(tmp_path: Path) -> None:
    args = ["serve", "--manifests", str(manifests(tmp_path)), "--workers", "1"]
    args += ["--address", "no-such-host.invalid", "--http-port", str(free_port())]
    code, err = run_ingressd(args, tmp_path)
    assert code == 1, err
    assert "ingressd serve: cannot listen on no-such-host.invalid:" in err, err
    assert "(--admin-port): cannot resolve the address" in err, err  # the first one bound


@pytest.mark.parametrize("value", ["0", "65536", "99999", "-1", "http"])
@pytest.mark.parametrize("flag", [*FLAGS, "--https-redirect-port"])
def test_port_numbers_are_checked_by_the_parser(flag: str, value: str) -> None:
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(["serve", "--manifests", ".", flag, value])
    assert exc.value.code == 2


def test_port_bounds_are_accepted() -> None:
    args = parser().parse_args(["serve", "--http-port", "1", "--https-port", "65535"])
    assert (args.http_port, args.https_port) == (1, 65535)


async def test_a_worker_that_cannot_bind_stops_the_pool_instead_of_restarting(
    tmp_path: Path,
) -> None:
    # The main process holds the ports before starting workers, so this takes
    # another program binding in between: here, nobody holds them for the pool.
    with occupied() as port:
        config = ServeConfig(
            manifests=tmp_path, address=LOCALHOST, http_port=port, https_port=free_port()
        )
        pool = WorkerPool(config, 2)
        told = asyncio.Event()
        pool.on_fatal = told.set
        stop = asyncio.Event()
        pool.start()
        try:
            store = ObjectStore()
            store.put(ingress_class())
            pool.publish(store.snapshot())  # workers bind once they have a table
            supervising = asyncio.create_task(pool.supervise(stop))
            await asyncio.wait_for(told.wait(), 30)
            assert pool.fatal == (
                f"cannot listen on {LOCALHOST}:{port} (--http-port): address already in use"
            )
            await asyncio.wait_for(supervising, 5)  # returned: no restarts
        finally:
            stop.set()
            started = time.monotonic()
            await pool.stop(2.0)
            assert time.monotonic() - started < 30
    assert all(w.process is None for w in pool._workers)
