"""gRPC's rules for the answers ingressd makes itself (proxy/grpc.py)."""

from __future__ import annotations

import urllib.parse

import pytest

from ingressd.proxy import grpc


@pytest.mark.parametrize(
    ("http_status", "code"),
    [
        # grpc/grpc doc/http-grpc-status-mapping.md
        (400, 13),  # INTERNAL
        (401, 16),  # UNAUTHENTICATED
        (403, 7),  # PERMISSION_DENIED
        (404, 12),  # UNIMPLEMENTED
        (429, 14),  # UNAVAILABLE
        (502, 14),
        (503, 14),
        (504, 14),
        # every other code: UNKNOWN
        (301, 2),
        (408, 2),
        (413, 2),
        (431, 2),
        (500, 2),
    ],
)
def test_http_statuses_map_as_grpcs_table_says(http_status: int, code: int) -> None:
    assert grpc.status_for(http_status) == code


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (b"application/grpc", True),
        (b"application/grpc+proto", True),
        (b"application/grpc+json", True),
        (b"application/grpc;charset=utf-8", True),
        (b"Application/GRPC", True),
        (b" application/grpc ", True),
        (b"application/grpc-web", False),  # gRPC-Web: another protocol
        (b"application/grpc-web+proto", False),
        (b"application/grpcx", False),
        (b"application/json", False),
    ],
)
def test_what_counts_as_a_grpc_request(content_type: bytes, expected: bool) -> None:
    headers = [(b"Host", b"a"), (b"Content-Type", content_type)]
    assert grpc.is_grpc(headers) is expected
    assert not grpc.is_grpc([(b"Host", b"a")])


def test_grpc_message_is_percent_encoded_and_bounded() -> None:
    text = "503 Service Unavailable: 100% of «endpoints» down\n"
    encoded = grpc.encode_message(text)
    assert all(0x20 <= b <= 0x7E for b in encoded)
    assert urllib.parse.unquote(encoded.decode(), errors="strict") == text
    assert b"100%25" in encoded and b"%C2%AB" in encoded
    assert len(grpc.encode_message("x" * 10_000)) == grpc.MAX_MESSAGE


def test_the_status_fields() -> None:
    assert grpc.status_fields(14, "down 100%") == [
        (b"grpc-status", b"14"),
        (b"grpc-message", b"down 100%25"),
    ]
