"""Shared fixtures for the end-to-end tests (see e2e_helpers.py for the machinery).

* ``upstream_loop``: one background asyncio loop per session for upstream servers;
* ``echo_servers``: echo upstreams ``web`` and ``api`` (``.start(name)`` adds more),
  a mapping of service name -> port, closed after the test;
* ``recording_listener``: a raw TCP upstream that records what reaches it;
* ``ingressd``: a factory ``ingressd(files, *extra_args)`` that writes manifests
  and starts ``ingressd serve`` on free ports; everything it started is stopped
  after the test.
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
