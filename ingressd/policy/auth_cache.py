"""auth-cache-key and auth-cache-duration: external-auth answers remembered per key.

As ingress-nginx (nginx.tmpl, the auth location): with ``auth-cache-key`` the
subrequest goes through nginx's ``proxy_cache``, keyed by
``sha1(server name + auth location + the rendered key)``, and kept for as long as
``proxy_cache_valid`` (``auth-cache-duration``, by default ``200 202 401 5m``)
says for its status. What nginx's cache adds is followed too: only GET and HEAD
subrequests are cached (``proxy_cache_methods``); an answer with Set-Cookie,
``Cache-Control: no-store, no-cache or private``, ``Vary`` or an expiry in the
past is not; ``X-Accel-Expires`` and ``Cache-Control: max-age`` set the time
instead of the list. ingressd keeps no variants of a Vary answer: it asks again.

The key is built from request variables a client chooses, so it is bounded
(a longer one is not cached: the service is asked) and hashed (SHA-256): a
client can neither grow the cache's memory nor pick another client's entry.
An entry holds the answer's status, so a cached 401 or 403 stays a denial; a
failure to get an answer is never cached. The cache is per worker process
(nginx's is shared by its workers), bounded in entries and bytes, least
recently used first out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from ..model.policy import Template

# ingress-nginx's DefaultCacheDuration (internal/ingress/annotations/authreq/main.go).
DEFAULT_DURATION = "200 202 401 5m"
MAX_KEY = 16 * 1024  # characters of a rendered key; longer: not cached
MAX_ENTRIES = 10_000
MAX_BYTES = 8 * 1024 * 1024
MAX_ENTRY_BYTES = 8 * 1024  # an answer whose kept headers are larger is not cached
MAX_SECONDS = 365 * 86400

# nginx's time units (http://nginx.org/en/docs/syntax.html), as authreq's durationRegex.
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_UNITS_CASED = {"M": 30 * 86400, "y": 365 * 86400}
_TIME = re.compile(r"^(\d{1,9})(ms|s|m|h|d|w|M|y)$")
_STATUS = re.compile(r"^\d{3}$")


class DurationError(ValueError):
    pass


def _seconds(text: str) -> float | None:
    m = _TIME.match(text)
    if m is None:
        return None
    unit = m.group(2)
    return int(m.group(1)) * _UNITS_CASED.get(unit, _UNITS.get(unit, 0))


def parse_durations(value: str) -> tuple[tuple[frozenset[int], float], ...]:
    """auth-cache-duration: comma-separated ``[code ...] time [time ...]`` lines.

    As authreq.ParseStringToCacheDurations: empty means the default; a code after
    a time, or no time, is invalid. nginx's ``any`` stands for every status, and
    a line with times only means 200, 301 and 302 (proxy_cache_valid)."""
    lines: list[tuple[frozenset[int], float]] = []
    items = [v.strip() for v in value.split(",") if v.strip()] or [DEFAULT_DURATION]
    if len(items) > 32:
        raise DurationError("more than 32 durations")
    for item in items:
        codes: set[int] = set()
        anything = False
        total = 0.0
        seen_time = False
        for word in item.split():
            if _STATUS.match(word):
                if seen_time:
                    raise DurationError(f"{item!r}: a status code after the time")
                code = int(word)
                if not 100 <= code <= 599:
                    raise DurationError(f"{item!r}: {word} is not an HTTP status")
                codes.add(code)
            elif word == "any":
                if seen_time:
                    raise DurationError(f"{item!r}: any after the time")
                anything = True
            else:
                seconds = _seconds(word)
                if seconds is None:
                    raise DurationError(
                        f"{item!r}: {word[:20]!r} is neither a status code nor a time like 5m"
                    )
                seen_time = True
                total += seconds
        if not seen_time:
            raise DurationError(f"{item!r} has no time (like 5m)")
        if anything:
            codes = set()
        elif not codes:
            codes = {200, 301, 302}
        lines.append((frozenset(codes), min(total, MAX_SECONDS)))
    return tuple(lines)


DEFAULT_DURATIONS = parse_durations("")


def valid_for(durations: Sequence[tuple[frozenset[int], float]], status: int) -> float:
    """Seconds ``status`` is cached by the durations (nginx ngx_http_file_cache_valid)."""
    for codes, seconds in durations:
        if not codes or status in codes:
            return seconds
    return 0.0


def lifetime(
    status: int,
    headers: Sequence[tuple[str, str]],
    durations: Sequence[tuple[frozenset[int], float]],
    now: float,
) -> float:
    """Seconds an answer may be reused; 0: not cached (nginx's upstream cache rules)."""
    accel = cache_control = expires = None
    for name, value in headers:
        low = name.lower()
        if low in ("set-cookie", "vary"):
            return 0.0
        if low == "x-accel-expires" and accel is None:
            accel = value.strip()
        elif low == "cache-control":
            cache_control = f"{cache_control}, {value}" if cache_control else value
        elif low == "expires" and expires is None:
            expires = value
    if accel is not None:
        return float(min(int(accel), MAX_SECONDS)) if accel.isdigit() else 0.0
    if cache_control is not None:
        max_age: float | None = None
        for directive in cache_control.lower().split(","):
            name, _, arg = directive.strip().partition("=")
            if name in ("no-store", "no-cache", "private"):
                return 0.0
            if name == "max-age":
                arg = arg.strip().strip('"')
                if not arg.isdigit():
                    return 0.0
                max_age = float(min(int(arg), MAX_SECONDS))
        if max_age is not None:
            return max_age
    if expires is not None:
        try:
            when = parsedate_to_datetime(expires).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return 0.0
        return max(0.0, min(when - time.time(), MAX_SECONDS))
    return valid_for(durations, status)


# -- the key ----------------------------------------------------------------------------

# Beyond the URL variables (ext_auth.VARIABLES): the ones cache keys are made of.
_PREFIXES = ("http_", "cookie_", "arg_")
KEY_VARIABLES = frozenset({"remote_user", "http_cookie"})


def key_variable(name: str) -> bool:
    """Whether ``name`` is a variable only a cache key may use."""
    if name in KEY_VARIABLES:
        return True
    for prefix in _PREFIXES:
        rest = name[len(prefix) :]
        if name.startswith(prefix) and rest and rest.replace("_", "").isalnum():
            return True
    return False


def _header(headers: Sequence[tuple[bytes, bytes]], name: str) -> str:
    """nginx's $http_NAME: the header's values (name: lowercase, "-" as "_"), joined."""
    wanted = name.encode("latin-1")
    found = [v.decode("latin-1") for n, v in headers if n.lower().replace(b"-", b"_") == wanted]
    return ("; " if wanted == b"cookie" else ", ").join(found)


def _cookie(headers: Sequence[tuple[bytes, bytes]], name: str) -> str:
    for n, v in headers:
        if n.lower() != b"cookie":
            continue
        for part in v.decode("latin-1").split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                return value
    return ""


def _arg(query: str, name: str) -> str:
    low = name.lower()
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key.lower() == low:
            return value
    return ""


def _remote_user(headers: Sequence[tuple[bytes, bytes]]) -> str:
    """nginx's $remote_user: the user of Basic credentials in Authorization."""
    for n, v in headers:
        if n.lower() == b"authorization":
            scheme, _, token = v.strip().partition(b" ")
            if scheme.lower() != b"basic":
                return ""
            try:
                decoded = base64.b64decode(token.strip(), validate=True)
            except (binascii.Error, ValueError):
                return ""
            return decoded.partition(b":")[0].decode("latin-1")
    return ""


def render_key(
    template: Template,
    values: Mapping[str, str],
    headers: Sequence[tuple[bytes, bytes]],
    query: str,
) -> str:
    parts = template.parts
    out: list[str] = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            out.append(part)
        elif part in values:
            out.append(values[part])
        elif part == "remote_user":
            out.append(_remote_user(headers))
        elif part.startswith("http_"):
            out.append(_header(headers, part[5:]))
        elif part.startswith("cookie_"):
            out.append(_cookie(headers, part[7:]))
        elif part.startswith("arg_"):
            out.append(_arg(query, part[4:]))
    return "".join(out)


def cache_key(scope: str, rendered: str) -> bytes | None:
    """The entry's key: a digest of where (host and location) and the rendered key;
    None when the rendered key is too long to be cached."""
    if len(rendered) > MAX_KEY:
        return None
    return hashlib.sha256(f"{scope}\0{rendered}".encode("utf-8", "surrogatepass")).digest()


# -- the store ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """What is kept of an auth service's answer: its status and the headers used."""

    status: int
    headers: tuple[tuple[str, str], ...]

    def size(self) -> int:
        return 64 + sum(len(n) + len(v) for n, v in self.headers)


class AuthCache:
    """Answers by key until they expire; bounded, least recently used out first."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[bytes, tuple[float, Answer]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, now: float) -> Answer | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, answer = entry
        if now >= expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return answer

    def put(self, key: bytes, answer: Answer, expires: float) -> None:
        size = answer.size()
        if size > MAX_ENTRY_BYTES:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (expires, answer)
        self.bytes += size
        while self._entries and (
            len(self._entries) > self.max_entries or self.bytes > self.max_bytes
        ):
            self._drop(next(iter(self._entries)))

    def _drop(self, key: bytes) -> None:
        _, answer = self._entries.pop(key)
        self.bytes -= answer.size()
