"""proxy/body.py (a buffered request body: memory, then an unnamed temporary
file) and proxy/mirror.py's URL of a copy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingressd.model.policy import Mirror
from ingressd.proxy import body
from ingressd.proxy.body import BodyBuffer, BufferFull
from ingressd.proxy.mirror import MirrorCopy, target_url


@pytest.fixture
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(body.tempfile, "tempdir", None)  # read TMPDIR again
    # DISK is Final (a static once compiled): its state is reset, not the object.
    for name, value in (("directory", None), ("base", ""), ("pid", 0), ("used", 0)):
        monkeypatch.setattr(body.DISK, name, value)
    return tmp_path


def test_memory_first_then_an_unnamed_file(disk: Path) -> None:
    buf = BodyBuffer(10)
    buf.add(b"0123")
    buf.add(b"456789ab")
    assert buf.file is not None and (buf.memory, buf.memory_size) == ([b"0123", b"456789"], 10)
    buf.add(b"cdef")
    assert buf.size == 16 and body.DISK.used == 6
    assert buf.read_file(0, 100) == b"abcdef"
    assert buf.read_file(2, 3) == b"cde"
    assert buf.read_file(6, 3) == b""
    assert buf.read_all(16) == b"0123456789abcdef"
    assert buf.read_all(15) is None
    (directory,) = disk.iterdir()
    assert directory.name.startswith("ingressd-body-")
    assert directory.stat().st_mode & 0o777 == 0o700
    assert list(directory.iterdir()) == []  # the file has no name
    buf.close()
    assert body.DISK.used == 0 and buf.file is None


def test_the_files_go_under_the_temp_path(
    disk: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.mktemp("bodies")
    buf = BodyBuffer(1, str(base))
    buf.add(b"abc")
    (directory,) = base.iterdir()
    assert directory.name.startswith("ingressd-body-") and list(directory.iterdir()) == []
    assert list(disk.iterdir()) == []
    buf.close()


def test_a_body_within_memory_never_touches_the_disk(disk: Path) -> None:
    buf = BodyBuffer(8192)
    buf.add(os.urandom(8192))
    assert buf.file is None and list(disk.iterdir()) == []
    buf.close()


def test_the_process_disk_budget_refuses_more(disk: Path) -> None:
    first = BodyBuffer(0, "", 100)
    first.add(b"x" * 80)
    second = BodyBuffer(0, "", 100)
    with pytest.raises(BufferFull):
        second.add(b"y" * 30)
    first.close()
    second.add(b"y" * 30)  # room again once the first request ended
    second.close()
    assert body.DISK.used == 0


MIRROR = Mirror("http", "m.example", 80, "", "m.example", True)


@pytest.mark.parametrize(
    ("config", "url"),
    [
        (MIRROR, "http://m.example/_mirror?a=1&b=2"),
        (
            Mirror("https", "m.example", 8443, "$request_uri", "m", True),
            "https://m.example:8443/p/x?a=1&b=2",
        ),
        (
            Mirror("http", "m.example", 80, "/copy$is_args$args", "m", True),
            "http://m.example/copy?a=1&b=2",
        ),
        (
            Mirror("http", "m.example", 80, "/${scheme}/${host}$request_uri", "m", True),
            "http://m.example/https/app.example/p/x?a=1&b=2",
        ),
        (Mirror("https", "m.example", 443, "?q=$args", "m", True), "https://m.example/?q=a=1&b=2"),
    ],
)
def test_target_url(config: Mirror, url: str) -> None:
    assert target_url(config, "/p/x?a=1&b=2", "a=1&b=2", "app.example", "https") == url


def test_target_url_without_arguments() -> None:
    config = Mirror("http", "m.example", 80, "/copy$is_args$args", "m", True)
    assert target_url(config, "/p", "", "h", "http") == "http://m.example/copy"
    assert target_url(MIRROR, "/p", "", "h", "http") == "http://m.example/_mirror"


def test_a_copy_keeps_at_most_its_body_limit() -> None:
    copy = MirrorCopy(MIRROR, True)
    copy.body_limit = 10
    copy.keep(b"12345")
    assert copy.body() == b"12345"
    copy.keep(b"678901")
    assert copy.body() is None  # dropped whole, never sent truncated


def test_copies_past_the_bound_are_dropped_not_queued() -> None:
    import asyncio

    from ingressd.observe.stats import RequestStats
    from ingressd.proxy import mirror

    stats = RequestStats()
    mirrors = mirror.Mirrors()
    mirrors.in_flight = mirror.MAX_IN_FLIGHT  # as many copies under way as allowed
    loop = asyncio.new_event_loop()
    try:
        args = ("GET", "/x", "", "h", "http", [(b"Accept", b"*/*")], None)
        mirrors.send(loop, stats, "default/app", MIRROR, *args)
        assert stats.mirrors == {("default/app", "m.example", "dropped"): 1}
        assert not mirrors._tasks and mirrors.in_flight == mirror.MAX_IN_FLIGHT
    finally:
        loop.close()
