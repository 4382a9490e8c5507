"""The server name of a ClientHello: real hellos from Python's ssl (OpenSSL), cut and mangled."""

from __future__ import annotations

import ssl

import pytest

from ingressd.stream.sni import MAX_HELLO, NotClientHello, server_name


def client_hello(host: str | None, alpn: tuple[str, ...] = ()) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=host)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def records(message: bytes, size: int) -> bytes:
    """The handshake message re-cut into TLS records of ``size`` bytes."""
    out = b""
    for i in range(0, len(message), size):
        part = message[i : i + size]
        out += b"\x16\x03\x01" + len(part).to_bytes(2, "big") + part
    return out


def test_the_name_of_real_hellos() -> None:
    assert server_name(client_hello("Pass.Example.test")) == "pass.example.test"
    assert server_name(client_hello("a.test", ("h2", "http/1.1"))) == "a.test"
    assert server_name(client_hello(None)) == ""  # no SNI: terminated as usual


def test_incomplete_hellos_ask_for_more() -> None:
    hello = client_hello("a.test")
    for cut in range(len(hello)):
        assert server_name(hello[:cut]) is None, cut
    # What follows the hello (nothing should, but) does not matter.
    assert server_name(hello + b"\x17\x03\x03") == "a.test"


def test_a_hello_spread_over_records() -> None:
    hello = client_hello("spread.test")
    message = hello[5:]
    for size in (1, 7, 100):
        data = records(message, size)
        assert server_name(data) == "spread.test"
        assert server_name(data[:-1]) is None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda h: b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        lambda h: b"\x17" + h[1:],  # application data first
        lambda h: h[:1] + b"\x02" + h[2:],  # SSL 2 style version
        lambda h: h[:5] + b"\x02" + h[6:],  # a ServerHello
        lambda h: h[:3] + b"\x00\x00" + h[5:],  # an empty record
        lambda h: h[:3] + b"\xff\xff" + h[5:],  # a record past the maximum
        # the handshake length says more than the ClientHello bound
        lambda h: h[:6] + (MAX_HELLO).to_bytes(3, "big") + h[9:],
    ],
)
def test_garbage_is_refused(mangle) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NotClientHello):
        server_name(mangle(client_hello("a.test")))


def test_lengths_inside_the_hello_are_checked() -> None:
    hello = bytearray(client_hello("a.test"))
    # The session id's length byte (after 5 + 4 + 2 + 32 bytes) made wrong: what
    # follows no longer lines up, and the walk fails rather than guess.
    hello[5 + 4 + 2 + 32] = 0xFF
    with pytest.raises(NotClientHello):
        server_name(bytes(hello))
    # The handshake message said to be shorter than its fields: they run past it.
    hello = bytearray(client_hello("a.test"))
    length = int.from_bytes(hello[6:9], "big")
    hello[6:9] = (length - 10).to_bytes(3, "big")
    with pytest.raises(NotClientHello, match="past its end"):
        server_name(bytes(hello))


def test_names_that_are_not_host_names_are_refused() -> None:
    hello = client_hello("a.test")
    bad = hello.replace(b"a.test", b"a/test")
    with pytest.raises(NotClientHello, match="not a host name"):
        server_name(bad)
    bad = hello.replace(b"a.test", b"a\xfftest")
    with pytest.raises(NotClientHello, match="ASCII"):
        server_name(bad)
