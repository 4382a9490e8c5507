"""The server name a TLS ClientHello asks for, read without terminating TLS.

For ``--enable-ssl-passthrough``, as ingress-nginx's ``pkg/tcpproxy/tcp.go``
(which parses the first read of the connection, ``parseSNI``): the handshake
message is reassembled from TLS records, up to ``MAX_HELLO`` bytes, and
walked field by field with every length checked against what contains it.
``server_name`` returns None while more bytes are needed, the host name
(lower case; "" when the hello names none), or raises ``NotClientHello`` on
anything that is not a well-formed ClientHello: the connection is then closed.
"""

from __future__ import annotations

# A ClientHello with post-quantum key shares is about 1.8 KB; the protocol
# allows up to 16 MiB, which nobody needs to send before the server speaks.
MAX_HELLO = 16 * 1024
HANDSHAKE = 22
CLIENT_HELLO = 1
SERVER_NAME = 0
HOST_NAME = 0


class NotClientHello(ValueError):
    """The first bytes are not a TLS ClientHello we accept."""


def server_name(data: bytes) -> str | None:
    message = _handshake(data)
    if message is None:
        return None
    return _sni(message)


def _handshake(data: bytes) -> bytes | None:
    """The whole ClientHello handshake message, from as many records as it spans."""
    body = bytearray()
    pos = 0
    need: int | None = None
    while True:
        if len(data) - pos < 5:
            return None
        if data[pos] != HANDSHAKE:
            raise NotClientHello("not a TLS handshake record")
        if data[pos + 1] != 3:
            raise NotClientHello("not a TLS record version")
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if length == 0 or length > 16384 + 2048:
            raise NotClientHello(f"TLS record of {length} bytes")
        if len(data) - pos - 5 < length:
            return None
        body += data[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if need is None and len(body) >= 4:
            if body[0] != CLIENT_HELLO:
                raise NotClientHello("the first handshake message is not a ClientHello")
            need = 4 + int.from_bytes(body[1:4], "big")
            if need > MAX_HELLO:
                raise NotClientHello(f"ClientHello of {need} bytes (at most {MAX_HELLO})")
        if need is not None and len(body) >= need:
            return bytes(body[4:need])


class _Reader:
    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise NotClientHello("ClientHello field past its end")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, size: int) -> _Reader:
        """A length-prefixed field, as a reader bounded to it."""
        length = self.number(size)
        start = self.pos
        self.take(length)
        return _Reader(self.data, start, start + length)

    def done(self) -> bool:
        return self.pos >= self.end


def _sni(hello: bytes) -> str:
    r = _Reader(hello)
    r.take(2 + 32)  # legacy_version, random
    r.vector(1)  # legacy_session_id
    r.vector(2)  # cipher_suites
    r.vector(1)  # legacy_compression_methods
    if r.done():
        return ""  # no extensions (SSL 3.0 style): no name
    extensions = r.vector(2)
    if not r.done():
        raise NotClientHello("bytes after the ClientHello's extensions")
    while not extensions.done():
        kind = extensions.number(2)
        ext = extensions.vector(2)
        if kind != SERVER_NAME:
            continue
        names = ext.vector(2)
        while not names.done():
            name_type = names.number(1)
            name = names.vector(2)
            if name_type == HOST_NAME:
                raw = name.take(name.end - name.pos)
                return _host(raw)
        return ""
    return ""


def _host(raw: bytes) -> str:
    # RFC 6066: an ASCII DNS name, no trailing dot. Anything else cannot name
    # a passthrough host; refusing it beats guessing what was meant.
    if not raw or len(raw) > 253 or not raw.isascii():
        raise NotClientHello("server name is not an ASCII host name")
    text = raw.decode("ascii").lower()
    if not all(c.isalnum() or c in "-._" for c in text):
        raise NotClientHello("server name is not a host name")
    return text
