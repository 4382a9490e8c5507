"""Basic-auth credentials as ingress-nginx's ``auth-type: basic`` reads them.

The credentials come from a Secret, either as an htpasswd file
(``auth-secret-type: auth-file``, key ``auth``) or as a map of user to hash
(``auth-secret-type: auth-map``).  nginx's ``auth_basic`` accepts these hashes:

* ``$apr1$`` (Apache MD5) and ``$1$`` (MD5-crypt): implemented here;
* ``$5$`` / ``$6$`` (SHA-256/512-crypt, with ``rounds=``): implemented here;
* ``$2a$`` / ``$2b$`` / ``$2y$`` (bcrypt): via the ``bcrypt`` package;
* ``{PLAIN}``, ``{SHA}`` and ``{SSHA}``: implemented here;
* traditional DES crypt (13 characters): reported as unsupported, it is
  insecure (8-character passwords, 12-bit salt); re-create with bcrypt.

Entries that cannot be used are skipped and reported in the returned messages,
which never contain the hash itself.  So that a hostile Secret cannot make each
request burn seconds of CPU, bcrypt costs above :data:`MAX_BCRYPT_COST` and
SHA-crypt rounds above :data:`MAX_SHA_CRYPT_ROUNDS` are refused at parse time.

Deviation from nginx: a password containing a NUL character never matches
(libc's crypt() would silently cut it at the NUL).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import bcrypt

MAX_BCRYPT_COST = 14
MAX_SHA_CRYPT_ROUNDS = 1_000_000

_ITOA64 = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

_MD5_CRYPT = re.compile(r"^(\$apr1\$|\$1\$)([^$]{0,8})\$([./0-9A-Za-z]{22})$")
_SHA_CRYPT = re.compile(
    r"^\$([56])\$(?:rounds=([0-9]{1,10})\$)?([^$]{0,16})\$([./0-9A-Za-z]{43}|[./0-9A-Za-z]{86})$"
)
_BCRYPT = re.compile(r"^\$2[aby]\$([0-9]{2})\$[./0-9A-Za-z]{53}$")
_DES = re.compile(r"^[./0-9A-Za-z]{13}$")

# Recognised but unsupported schemes: prefix -> name used in messages.
_UNSUPPORTED_PREFIXES = (
    ("$y$", "yescrypt"),
    ("$gy$", "gost-yescrypt"),
    ("$7$", "scrypt"),
    ("$argon2", "Argon2"),
    ("$sha1$", "SHA1-crypt"),
    ("$md5", "Sun MD5-crypt"),
    ("$3$", "NT hash"),
    ("$2x$", "bcrypt $2x$"),
    ("_", "BSDi extended DES crypt"),
)


class _Verifier(Protocol):
    def check(self, password: bytes) -> bool: ...


class UnsupportedHash(ValueError):
    """A hash that cannot (or, by policy, will not) be verified."""


# -- MD5-crypt ($1$) and Apache's variant ($apr1$) ---------------------------


def _to64(value: int, n: int) -> bytes:
    out = bytearray()
    for _ in range(n):
        out.append(_ITOA64[value & 0x3F])
        value >>= 6
    return bytes(out)


def md5_crypt(password: bytes, salt: bytes, magic: bytes = b"$1$") -> bytes:
    """Poul-Henning Kamp's MD5-crypt; Apache's apr1 differs only in ``magic``.

    Returns the 22-character digest part (without magic and salt).
    """
    salt = salt.split(b"$", 1)[0][:8]
    ctx = hashlib.md5(password + magic + salt)
    alt = hashlib.md5(password + salt + password).digest()
    remaining = len(password)
    while remaining > 0:
        ctx.update(alt[: min(16, remaining)])
        remaining -= 16
    i = len(password)
    while i:
        ctx.update(b"\0" if i & 1 else password[:1])
        i >>= 1
    final = _stretch(hashlib.md5, ctx.digest(), password, salt, 1000)
    order = ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5))
    return _encode_triples(final, order) + _to64(final[11], 2)


def _stretch(new: Callable[[], Any], digest: bytes, p: bytes, s: bytes, rounds: int) -> bytes:
    """The rounds MD5-crypt and SHA-crypt share: alternate password and digest,
    adding the salt unless the round is a multiple of 3, the password unless of 7."""
    for i in range(rounds):
        round_ctx = new()
        round_ctx.update(p if i & 1 else digest)
        if i % 3:
            round_ctx.update(s)
        if i % 7:
            round_ctx.update(p)
        round_ctx.update(digest if i & 1 else p)
        digest = round_ctx.digest()
    return digest


def _encode_triples(digest: bytes, order: Iterable[tuple[int, int, int]]) -> bytes:
    return b"".join(_to64((digest[a] << 16) | (digest[b] << 8) | digest[c], 4) for a, b, c in order)


# -- SHA-crypt ($5$, $6$), Ulrich Drepper's specification --------------------

SHA_CRYPT_DEFAULT_ROUNDS = 5000
_SHA_CRYPT_MIN_ROUNDS = 1000
_SHA_CRYPT_MAX_ROUNDS = 999_999_999

_SHA256_ORDER = (
    (0, 10, 20),
    (21, 1, 11),
    (12, 22, 2),
    (3, 13, 23),
    (24, 4, 14),
    (15, 25, 5),
    (6, 16, 26),
    (27, 7, 17),
    (18, 28, 8),
    (9, 19, 29),
)
_SHA512_ORDER = (
    (0, 21, 42),
    (22, 43, 1),
    (44, 2, 23),
    (3, 24, 45),
    (25, 46, 4),
    (47, 5, 26),
    (6, 27, 48),
    (28, 49, 7),
    (50, 8, 29),
    (9, 30, 51),
    (31, 52, 10),
    (53, 11, 32),
    (12, 33, 54),
    (34, 55, 13),
    (56, 14, 35),
    (15, 36, 57),
    (37, 58, 16),
    (59, 17, 38),
    (18, 39, 60),
    (40, 61, 19),
    (62, 20, 41),
)


def _repeat(data: bytes, length: int) -> bytes:
    return (data * (length // len(data) + 1))[:length]


def sha_crypt(password: bytes, salt: bytes, rounds: int, variant: int) -> bytes:
    """SHA-256-crypt (``variant`` 5) or SHA-512-crypt (6).

    ``rounds`` is clamped as the specification says.  Returns the digest part
    (43 or 86 characters, without magic, rounds and salt).
    """
    order: tuple[tuple[int, int, int], ...]
    if variant == 5:
        new, size, order = hashlib.sha256, 32, _SHA256_ORDER
    elif variant == 6:
        new, size, order = hashlib.sha512, 64, _SHA512_ORDER
    else:
        raise ValueError(f"unknown SHA-crypt variant {variant}")
    rounds = max(_SHA_CRYPT_MIN_ROUNDS, min(_SHA_CRYPT_MAX_ROUNDS, rounds))
    salt = salt[:16]
    plen = len(password)

    alt = new(password + salt + password).digest()
    ctx = new(password + salt)
    remaining = plen
    while remaining > size:
        ctx.update(alt)
        remaining -= size
    ctx.update(alt[:remaining])
    i = plen
    while i > 0:
        ctx.update(alt if i & 1 else password)
        i >>= 1
    digest_a = ctx.digest()

    p_bytes = _repeat(new(password * plen).digest(), plen) if plen else b""
    s_bytes = _repeat(new(salt * (16 + digest_a[0])).digest(), len(salt)) if salt else b""

    c = _stretch(new, digest_a, p_bytes, s_bytes, rounds)
    out = bytearray(_encode_triples(c, order))
    if variant == 5:
        out += _to64((c[31] << 8) | c[30], 3)
    else:
        out += _to64(c[63], 2)
    return bytes(out)


# -- verifiers -----------------------------------------------------------------


@dataclass(frozen=True)
class _Md5CryptVerifier:
    magic: bytes
    salt: bytes
    expected: bytes

    def check(self, password: bytes) -> bool:
        return hmac.compare_digest(md5_crypt(password, self.salt, self.magic), self.expected)


@dataclass(frozen=True)
class _ShaCryptVerifier:
    variant: int
    rounds: int
    salt: bytes
    expected: bytes

    def check(self, password: bytes) -> bool:
        computed = sha_crypt(password, self.salt, self.rounds, self.variant)
        return hmac.compare_digest(computed, self.expected)


@dataclass(frozen=True)
class _BcryptVerifier:
    hashed: bytes

    def check(self, password: bytes) -> bool:
        # libc's bcrypt only looks at the first 72 bytes; bcrypt>=5 refuses longer input.
        try:
            return bcrypt.checkpw(password[:72], self.hashed)
        except ValueError:
            return False


@dataclass(frozen=True)
class _ShaVerifier:
    expected: bytes
    salt: bytes = b""

    def check(self, password: bytes) -> bool:
        return hmac.compare_digest(hashlib.sha1(password + self.salt).digest(), self.expected)


@dataclass(frozen=True)
class _PlainVerifier:
    expected: bytes

    def check(self, password: bytes) -> bool:
        return hmac.compare_digest(password, self.expected)


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise UnsupportedHash("invalid base64 in {SHA}/{SSHA} hash") from None


def make_verifier(hashed: str) -> _Verifier:
    """Build a verifier for one hash, or raise :class:`UnsupportedHash`.

    The exception message names the scheme but never contains the hash.
    """
    if hashed.startswith("{PLAIN}"):
        return _PlainVerifier(hashed[len("{PLAIN}") :].encode("utf-8"))
    if hashed.startswith("{SHA}"):
        digest = _b64decode(hashed[len("{SHA}") :])
        if len(digest) != 20:
            raise UnsupportedHash("malformed {SHA} hash (expected 20 bytes of SHA-1)")
        return _ShaVerifier(digest)
    if hashed.startswith("{SSHA}"):
        raw = _b64decode(hashed[len("{SSHA}") :])
        if len(raw) <= 20:
            raise UnsupportedHash("malformed {SSHA} hash (expected SHA-1 digest and a salt)")
        return _ShaVerifier(raw[:20], raw[20:])
    if hashed.startswith(("$apr1$", "$1$")):
        m = _MD5_CRYPT.match(hashed)
        if m is None:
            raise UnsupportedHash("malformed MD5-crypt ($apr1$/$1$) hash")
        magic, salt_text, digest_text = m.groups()
        return _Md5CryptVerifier(magic.encode(), salt_text.encode("utf-8"), digest_text.encode())
    if hashed.startswith(("$5$", "$6$")):
        m = _SHA_CRYPT.match(hashed)
        if m is None:
            raise UnsupportedHash("malformed SHA-crypt ($5$/$6$) hash")
        variant, rounds_text, salt_text, digest_text = m.groups()
        if (variant == "5") != (len(digest_text) == 43):
            raise UnsupportedHash("malformed SHA-crypt ($5$/$6$) hash")
        rounds = int(rounds_text) if rounds_text is not None else SHA_CRYPT_DEFAULT_ROUNDS
        if rounds > MAX_SHA_CRYPT_ROUNDS:
            raise UnsupportedHash(
                f"SHA-crypt rounds {rounds} exceed the limit of {MAX_SHA_CRYPT_ROUNDS}"
            )
        return _ShaCryptVerifier(
            int(variant), rounds, salt_text.encode("utf-8"), digest_text.encode()
        )
    if hashed.startswith(("$2a$", "$2b$", "$2y$")):
        m = _BCRYPT.match(hashed)
        if m is None:
            raise UnsupportedHash("malformed bcrypt hash")
        cost = int(m.group(1))
        if cost < 4:
            raise UnsupportedHash(f"bcrypt cost {cost} is below the minimum of 4")
        if cost > MAX_BCRYPT_COST:
            raise UnsupportedHash(f"bcrypt cost {cost} exceeds the limit of {MAX_BCRYPT_COST}")
        return _BcryptVerifier(hashed.encode("ascii"))
    if _DES.match(hashed):
        raise UnsupportedHash(
            "unsupported hash format (traditional DES crypt is insecure); "
            "re-create the entry with bcrypt (htpasswd -B)"
        )
    for prefix, name in _UNSUPPORTED_PREFIXES:
        if hashed.startswith(prefix):
            raise UnsupportedHash(
                f"unsupported hash format ({name}); re-create the entry with bcrypt (htpasswd -B)"
            )
    raise UnsupportedHash(
        "unsupported hash format; use bcrypt (htpasswd -B), $apr1$, $1$, $5$, $6$, "
        "{SHA}, {SSHA} or {PLAIN}"
    )


# -- credentials ---------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Credentials:
    """Users and their password verifiers; build with :func:`parse_htpasswd`
    or :func:`parse_auth_map`."""

    _entries: Mapping[str, _Verifier] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_entries", MappingProxyType(dict(self._entries)))

    @property
    def users(self) -> frozenset[str]:
        return frozenset(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, user: object) -> bool:
        return user in self._entries

    def verify(self, user: str, password: str) -> bool:
        """True if ``password`` is right for ``user``.

        An unknown user still costs one hash computation (against the first
        entry, result discarded), so response times do not tell which users exist.
        """
        pw = password.encode("utf-8", "surrogateescape")
        verifier = self._entries.get(user)
        if verifier is None:
            if self._entries:
                next(iter(self._entries.values())).check(pw)
            return False
        ok = verifier.check(pw)
        return ok and b"\0" not in pw


def _add(
    entries: dict[str, _Verifier],
    messages: list[str],
    where: str,
    user: str,
    hashed: str,
) -> None:
    """Add one entry; ``where`` prefixes messages ("line 3: " or "")."""
    if not user:
        messages.append(f"{where}empty user name, entry skipped")
        return
    who = f"{where}user {user!r}"
    if ":" in user:
        messages.append(f"{who}: user name contains ':', entry skipped")
        return
    if not hashed:
        messages.append(f"{who}: empty password hash, entry skipped")
        return
    if user in entries:
        messages.append(f"{who}: duplicate user, the first entry wins")
        return
    try:
        entries[user] = make_verifier(hashed)
    except UnsupportedHash as e:
        messages.append(f"{who}: {e}, entry skipped")


def parse_htpasswd(text: str) -> tuple[Credentials, list[str]]:
    """Parse an htpasswd file (``user:hash`` or ``user:hash:comment`` lines).

    Blank lines and ``#`` comments are ignored.  Returns the credentials and
    messages about skipped lines (malformed, unsupported, duplicates).
    """
    entries: dict[str, _Verifier] = {}
    messages: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"line {number}: "
        if ":" not in line:
            messages.append(f"{where}malformed entry (expected user:hash), skipped")
            continue
        user, rest = line.split(":", 1)
        # nginx: the hash ends at the next ':'; what follows is a comment.
        hashed = rest.split(":", 1)[0].strip()
        _add(entries, messages, where, user.strip(), hashed)
    return Credentials(entries), messages


def parse_auth_map(data: Mapping[str, str]) -> tuple[Credentials, list[str]]:
    """Parse ingress-nginx's ``auth-map`` form: user -> hash."""
    entries: dict[str, _Verifier] = {}
    messages: list[str] = []
    for user in sorted(data):
        _add(entries, messages, "", user.strip(), str(data[user]).strip())
    return Credentials(entries), messages
