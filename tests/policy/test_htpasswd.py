"""Tests for ingressd.policy.htpasswd (basic-auth credentials)."""

from __future__ import annotations

import base64
import hashlib

import bcrypt
import pytest

from ingressd.policy.htpasswd import (
    MAX_BCRYPT_COST,
    MAX_SHA_CRYPT_ROUNDS,
    Credentials,
    UnsupportedHash,
    make_verifier,
    parse_auth_map,
    parse_htpasswd,
)

# Known vectors, hard-coded.  Made with OpenSSL 3.0 on the development machine:
#   openssl passwd -apr1 -salt saltsalt secret
#   openssl passwd -apr1 -salt x 'p@ss:w0rd'
#   openssl passwd -apr1 -salt utf8 'pässwörd'
#   openssl passwd -apr1 -salt abc ''
#   openssl passwd -1 -salt abcdefgh secret
#   openssl passwd -1 -salt longpw "$(python -c 'print("x"*100)')"
#   openssl passwd -5 -salt saltstring secret
#   openssl passwd -6 -salt saltstring secret
# and with glibc crypt(3) (Python 3.11's crypt.crypt(password, salt)):
#   crypt("Hello world!", "$5$rounds=1000$roundsalt$")
#   crypt("Hello world!", "$6$rounds=1200$roundsalt$")
#   crypt("Hello world!", "$6$$")                          (empty salt)
#   crypt("pässwörd", "$6$rounds=1000$utf8salt$")
#   crypt("", "$5$emptypw$")
# The "toolongsaltstring" vector is from Ulrich Drepper's SHA-crypt specification
# (and matches glibc).
VECTORS: list[tuple[str, str]] = [
    ("secret", "$apr1$saltsalt$LrttParrLPdxvgutaSXWJ0"),
    ("p@ss:w0rd", "$apr1$x$28zJqnFA/xtD4rroLQohx0"),
    ("pässwörd", "$apr1$utf8$08SRQ8YocPyoIM.MkbwRu1"),
    ("", "$apr1$abc$BfqKdn9xFDWJPa3kcp/PH0"),
    ("secret", "$1$abcdefgh$cHJi5PXp/ki/ktXzqlk6I1"),
    ("x" * 100, "$1$longpw$OT8TUeMFGjQvYQ5Igfne71"),
    ("secret", "$5$saltstring$C3o4O1TC6aRHF4FI.QSZMXtHbaj2gSXr4sUc/3NcUi."),
    (
        "secret",
        "$6$saltstring$AIsRs/Ee56G/tC8MEHhvReZTfx8u3rXXMl6eYrjCG9ibix19DxoMBLogdTET5Ukw9Sf7eZTITsuk0Ry5qulYz.",
    ),
    ("Hello world!", "$5$rounds=1000$roundsalt$/yqDx3vwH.0zB1gYhigHVcV..RPt4qKZEGdwBPqmiq8"),
    (
        "Hello world!",
        "$6$rounds=1200$roundsalt$N.Va.XezXCkB4988R1LMh3rLX3oFtwSVeqEGmXmOWAcIQHTEBI2rDATOJ2Lqjdcm0aThnk6IgSXJtHxmYeTxR.",
    ),
    (
        "Hello world!",
        "$6$$.SKR9BCFmNlzTpsFbxLHKPVAMUdqxN8.85WISsmC.fRIPfZ78cePl/wQJcKzjcsDe8rRtdaVxJHS/E1LzWy3./",
    ),
    (
        "pässwörd",
        "$6$rounds=1000$utf8salt$OpZOd7Z6fs247tFRowSK4POjOkwzln6NkNUZLqA2YmUhKK/yOfC/fOG9Qg.bG3dDMOTH4eMGIOSC9BuZWAeA4/",
    ),
    ("", "$5$emptypw$j9q8SS0S/38BPIfLsJXsxKvW/sehZJL1AxFdvBj6YQ2"),
    (
        "This is just a test",
        "$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5",
    ),
]


def _sha(password: str) -> str:
    return "{SHA}" + base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()


def _ssha(password: str, salt: bytes) -> str:
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _bcrypt(password: str, cost: int = 4, prefix: bytes = b"2b") -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost, prefix)).decode()


def _single(hashed: str, user: str = "alice") -> Credentials:
    creds, messages = parse_htpasswd(f"{user}:{hashed}\n")
    assert messages == []
    assert user in creds
    return creds


@pytest.mark.parametrize(("password", "hashed"), VECTORS)
def test_known_vectors(password: str, hashed: str) -> None:
    creds = _single(hashed)
    assert creds.verify("alice", password)
    assert not creds.verify("alice", password + "x")
    assert not creds.verify("alice", "wrong")


@pytest.mark.parametrize("prefix", [b"2a", b"2b"])
def test_bcrypt(prefix: bytes) -> None:
    creds = _single(_bcrypt("s3cret", prefix=prefix))
    assert creds.verify("alice", "s3cret")
    assert not creds.verify("alice", "s3cre")
    assert not creds.verify("alice", "")


def test_bcrypt_2y_as_written_by_apache_htpasswd() -> None:
    creds = _single("$2y$" + _bcrypt("s3cret")[4:])
    assert creds.verify("alice", "s3cret")
    assert not creds.verify("alice", "wrong")


def test_bcrypt_long_password_uses_first_72_bytes_like_libc() -> None:
    creds = _single(_bcrypt("a" * 72))
    assert creds.verify("alice", "a" * 72)
    assert creds.verify("alice", "a" * 100)
    assert not creds.verify("alice", "a" * 71)


def test_sha() -> None:
    creds = _single(_sha("secret"))
    assert creds.verify("alice", "secret")
    assert not creds.verify("alice", "Secret")


def test_ssha() -> None:
    creds = _single(_ssha("secret", b"\x01\x02salt\xff"))
    assert creds.verify("alice", "secret")
    assert not creds.verify("alice", "secret2")


def test_plain() -> None:
    creds = _single("{PLAIN}hunter2")
    assert creds.verify("alice", "hunter2")
    assert not creds.verify("alice", "hunter")
    assert not creds.verify("alice", "")


def test_nul_in_password_never_matches() -> None:
    creds = _single("{PLAIN}ab")
    assert not creds.verify("alice", "ab\x00")
    assert not creds.verify("alice", "a\x00b")


def test_unknown_user_is_rejected_and_still_hashes() -> None:
    calls: list[bytes] = []

    class Counting:
        def check(self, password: bytes) -> bool:
            calls.append(password)
            return True

    creds = Credentials({"alice": Counting()})
    assert not creds.verify("bob", "whatever")
    assert calls == [b"whatever"]
    assert Credentials().verify("bob", "whatever") is False


def test_unknown_user_with_real_file() -> None:
    creds, _ = parse_htpasswd("alice:$apr1$saltsalt$LrttParrLPdxvgutaSXWJ0\n")
    assert not creds.verify("bob", "secret")
    assert not creds.verify("", "secret")
    assert not creds.verify("Alice", "secret")


def test_comments_blank_lines_whitespace_and_crlf() -> None:
    text = (
        "# generated by htpasswd\r\n"
        "\r\n"
        "   \r\n"
        "alice:$apr1$saltsalt$LrttParrLPdxvgutaSXWJ0\r\n"
        "  # indented comment\r\n"
        f"  bob:{_sha('pw')}  \r\n"
        "carol:{PLAIN}c:this is an nginx comment field\r\n"
    )
    creds, messages = parse_htpasswd(text)
    assert messages == []
    assert creds.users == {"alice", "bob", "carol"}
    assert len(creds) == 3
    assert creds.verify("alice", "secret")
    assert creds.verify("bob", "pw")
    assert creds.verify("carol", "c")
    assert not creds.verify("carol", "c:this is an nginx comment field")


def test_malformed_lines_are_reported_with_line_numbers_and_skipped() -> None:
    text = "\n".join(
        [
            "alice:{PLAIN}a",
            "justsometextwithoutcolon",
            ":{PLAIN}nouser",
            "dave:",
            "erin:$apr1$saltsalt$tooshort",
            "frank:{SHA}not*base64",
            "gina:{SSHA}" + base64.b64encode(b"x" * 20).decode(),
            "bob:{PLAIN}b",
        ]
    )
    creds, messages = parse_htpasswd(text)
    assert creds.users == {"alice", "bob"}
    assert len(messages) == 6
    for number, message in zip(range(2, 8), messages, strict=True):
        assert message.startswith(f"line {number}: "), message
    assert "malformed entry" in messages[0]
    assert "justsometextwithoutcolon" not in messages[0]
    assert "empty user name" in messages[1]
    assert "empty password hash" in messages[2]
    assert "malformed MD5-crypt" in messages[3]
    assert "base64" in messages[4]
    assert "malformed {SSHA}" in messages[5]
    for message in messages:
        assert "tooshort" not in message
        assert "not*base64" not in message


def test_duplicates_first_wins() -> None:
    text = "alice:{PLAIN}first\nbob:{PLAIN}b\nalice:{PLAIN}second\n"
    creds, messages = parse_htpasswd(text)
    assert creds.verify("alice", "first")
    assert not creds.verify("alice", "second")
    assert messages == ["line 3: user 'alice': duplicate user, the first entry wins"]


@pytest.mark.parametrize(
    ("hashed", "expected"),
    [
        ("abJnggxhB/yWI", "traditional DES crypt"),
        ("_J9..CCCCXBrJUJV154M", "BSDi extended DES"),
        ("$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7", "yescrypt"),
        ("$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo", "Argon2"),
        ("$2x$04$" + "a" * 53, "bcrypt $2x$"),
        ("mysecretpassword", "unsupported hash format"),
        ("$9$whatever$hash", "unsupported hash format"),
    ],
)
def test_unsupported_formats_are_reported_without_leaking_the_hash(
    hashed: str, expected: str
) -> None:
    creds, messages = parse_htpasswd(f"x:{{PLAIN}}y\nalice:{hashed}\n")
    assert "alice" not in creds
    assert len(messages) == 1
    (message,) = messages
    assert message.startswith("line 2: user 'alice': ")
    assert expected in message
    assert hashed not in message
    # no fragment of the hash body either
    assert hashed[-8:] not in message
    assert not creds.verify("alice", hashed)


def test_des_message_recommends_bcrypt() -> None:
    with pytest.raises(UnsupportedHash, match="bcrypt"):
        make_verifier("abJnggxhB/yWI")


def test_bcrypt_cost_cap() -> None:
    assert MAX_BCRYPT_COST == 14
    # A syntactically valid bcrypt hash with cost 15 (never computed: refused at parse time).
    low = _bcrypt("pw")
    too_expensive = low[:4] + "15" + low[6:]
    at_limit = low[:4] + "14" + low[6:]
    creds, messages = parse_htpasswd(f"alice:{too_expensive}\nbob:{at_limit}\n")
    assert "alice" not in creds
    assert "bob" in creds
    assert len(messages) == 1
    assert "bcrypt cost 15 exceeds the limit of 14" in messages[0]
    assert too_expensive not in messages[0]


def test_bcrypt_cost_below_minimum() -> None:
    low = _bcrypt("pw")
    creds, messages = parse_htpasswd(f"alice:{low[:4]}03{low[6:]}\n")
    assert "alice" not in creds
    assert "below the minimum" in messages[0]


def test_sha_crypt_rounds_cap() -> None:
    assert MAX_SHA_CRYPT_ROUNDS == 1_000_000
    body = "C3o4O1TC6aRHF4FI.QSZMXtHbaj2gSXr4sUc/3NcUi."
    text = (
        f"alice:$5$rounds=1000001$saltstring${body}\n"
        f"bob:$5$rounds=1000000$saltstring${body}\n"
        f"carol:$6$rounds=999999999$saltstring${body * 2}\n"
    )
    creds, messages = parse_htpasswd(text)
    assert creds.users == {"bob"}
    assert len(messages) == 2
    assert messages[0].startswith("line 1: user 'alice': SHA-crypt rounds 1000001 exceed")
    assert messages[1].startswith("line 3: user 'carol': SHA-crypt rounds 999999999 exceed")


def test_sha_crypt_digest_length_must_match_variant() -> None:
    body = "C3o4O1TC6aRHF4FI.QSZMXtHbaj2gSXr4sUc/3NcUi."
    creds, messages = parse_htpasswd(f"alice:$6$saltstring${body}\n")
    assert "alice" not in creds
    assert "malformed SHA-crypt" in messages[0]


def test_auth_map() -> None:
    data = {
        "alice": "$apr1$saltsalt$LrttParrLPdxvgutaSXWJ0",
        "bob": _bcrypt("bobpw"),
        "carol": _ssha("carolpw", b"NaCl"),
        "dave": " {PLAIN}davepw\n",
        "erin": "abJnggxhB/yWI",
        "": "{PLAIN}x",
        "fr:ank": "{PLAIN}x",
    }
    creds, messages = parse_auth_map(data)
    assert creds.users == {"alice", "bob", "carol", "dave"}
    assert creds.verify("alice", "secret")
    assert creds.verify("bob", "bobpw")
    assert creds.verify("carol", "carolpw")
    assert creds.verify("dave", "davepw")
    assert not creds.verify("bob", "secret")
    assert not creds.verify("erin", "anything")
    assert len(messages) == 3
    assert any(m.startswith("user 'erin': ") and "DES" in m for m in messages)
    assert any("empty user name" in m for m in messages)
    assert any("contains ':'" in m for m in messages)
    assert all("abJnggxhB/yWI" not in m for m in messages)


def test_credentials_is_frozen_and_read_only() -> None:
    creds, _ = parse_htpasswd("alice:{PLAIN}a\n")
    with pytest.raises(AttributeError):
        creds._entries = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        creds._entries["bob"] = creds._entries["alice"]  # type: ignore[index]
