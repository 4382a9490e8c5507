"""Shared fixtures for the end-to-end tests (see e2e_helpers.py for the machinery).

* ``upstream_loop``: one background asyncio loop per session for upstream servers;
* ``echo_servers``: echo upstreams ``web`` and ``api`` (``.start(name)`` adds more),
  a mapping of service name -> port, closed after the test;
* ``recording_listener``: a raw TCP upstream that records what reaches it;
* ``ingressd``: a factory ``ingressd(files, *extra_args)`` that writes manifests
  and starts ``ingressd serve`` on free ports; everything it started is stopped
  after the test.

Under pytest-xdist (``scripts/test.sh`` runs ``-n 2 --dist loadscope``),
``E2EInOneWorker`` says what must stay in one worker process.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest
from e2e_helpers import (
    CURL,
    BackgroundLoop,
    EchoServers,
    Ingressd,
    IngressdFactory,
    RecordingListener,
)

from ingressd.model.objects import Obj

E2E_SCOPE = "tests/e2e"  # how node ids name the end-to-end tests' folder


@pytest.fixture(scope="session")
def curl_binary() -> str:
    if shutil.which(CURL) is None:
        pytest.fail(f"{CURL} is required by the end-to-end tests (scripts/test.sh installs it)")
    return CURL


@pytest.fixture(scope="session")
def upstream_loop() -> Iterator[BackgroundLoop]:
    loop = BackgroundLoop()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture
def echo_servers(upstream_loop: BackgroundLoop) -> Iterator[EchoServers]:
    servers = EchoServers(upstream_loop, ["web", "api"])
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture
def recording_listener(upstream_loop: BackgroundLoop) -> Iterator[RecordingListener]:
    listener = RecordingListener(upstream_loop)
    try:
        yield listener
    finally:
        listener.close()


@pytest.fixture
def ingressd(tmp_path: Path, curl_binary: str) -> Iterator[IngressdFactory]:
    """``ingressd(files, *extra_args, **kwargs)`` -> a started Ingressd.

    ``files`` maps file names to lists of objects (or raw YAML text).
    """
    started: list[Ingressd] = []

    def start(
        files: Mapping[str, Iterable[Obj] | str] | None = None,
        *extra_args: str,
        **kwargs: object,
    ) -> Ingressd:
        n = len(started)
        proc = Ingressd(
            tmp_path / f"manifests-{n}",
            tmp_path / f"ingressd-{n}.log",
            extra_args=extra_args,
            **kwargs,  # type: ignore[arg-type]
        )
        started.append(proc)
        proc.update(files or {})
        return proc.start()

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(E2EInOneWorker(), "e2e-in-one-worker")


class E2EInOneWorker:
    """``-n N --dist loadscope`` (pytest-xdist), as scripts/test.sh runs the suite.

    xdist's loadscope hands each worker process whole scopes, the biggest first,
    and another only when it is about to run out. The scopes here: every
    end-to-end test together, so they run one after another as without xdist and
    their timing (read timeouts, debounces, drains) meets one test's processes at
    a time, while the other worker runs the unit tests; otherwise one module each,
    so a module-scoped fixture (the wheel, compiled by mypyc, in
    tests/repo/test_dockerfile.py) is made once, not once per worker. (xdist's
    own groups, ``--dist loadgroup``, are not applied under pytest 9.2.)
    """

    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: object) -> object:
        if config.getvalue("dist") != "loadscope":
            return None  # xdist's own
        from xdist.scheduler import LoadScopeScheduling

        class Scheduling(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                module = nodeid.split("::", 1)[0]
                return E2E_SCOPE if module.startswith(E2E_SCOPE + "/") else module

        return Scheduling(config, log)  # type: ignore[arg-type]
