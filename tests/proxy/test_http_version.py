"""What client_h1 infers from llhttp without asking the request's version.

``ClientConnection.on_headers_complete`` takes a request that llhttp would keep
alive and that had no Connection header to be HTTP/1.1, without calling
``get_http_version`` (which formats a new string on every call). That holds
only while llhttp parses no version other than 0.9, 1.0, 1.1 and 2.0, and keeps
alive, without a Connection header, exactly 1.1. These tests pin both facts
for the httptools installed, over every one-digit version.
"""

from __future__ import annotations

import httptools
import pytest


class _Head:
    """What the parser says when the head is complete, where client_h1 asks."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.keep_alive: bool | None = None
        self.version = ""

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        self.version = self.parser.get_http_version()


def _parse(version: str, extra: str = "") -> _Head | None:
    head = _Head()
    try:
        head.parser.feed_data(f"GET / HTTP/{version}\r\nHost: a.test\r\n{extra}\r\n".encode())
    except httptools.HttpParserError:
        return None
    assert head.keep_alive is not None
    return head


VERSIONS = [f"{major}.{minor}" for major in range(10) for minor in range(10)]


def test_llhttp_parses_only_the_four_versions() -> None:
    parsed = {v for v in VERSIONS if _parse(v) is not None}
    assert parsed == {"0.9", "1.0", "1.1", "2.0"}


@pytest.mark.parametrize("version", ["0.9", "1.0", "1.1", "2.0"])
def test_kept_alive_without_connection_header_means_1_1(version: str) -> None:
    head = _parse(version)
    assert head is not None
    assert head.keep_alive is (version == "1.1")
    assert head.version == version


@pytest.mark.parametrize("header", ["Connection", "Proxy-Connection", "proxy-connection"])
@pytest.mark.parametrize("version", ["0.9", "1.0", "2.0"])
def test_keep_alive_header_does_not_make_it_1_1(version: str, header: str) -> None:
    # llhttp reads Proxy-Connection as Connection: the inference needs neither
    # to have come, and client_h1 asks the version when one did.
    head = _parse(version, f"{header}: keep-alive\r\n")
    assert head is not None
    assert head.keep_alive is True
    assert head.version == version
