"""Regular expressions that outsiders write, run in linear time with bounded memory.

Python's ``re`` backtracks: a ``use-regex`` path ``/(a+)+$`` against a path of
24 a's and a ``!`` took seconds per request, doubling with each character, on
the event loop every other request shares. So every pattern an Ingress or an
annotation supplies runs on RE2 (the ``google-re2`` package): time linear in
the subject whatever the pattern, memory bounded per pattern (``MAX_MEM``).
RE2 refuses what it cannot run that way (backreferences, lookaround,
possessive and atomic groups, huge repetitions); ``RegexError`` says which and
why, and the caller reports it and leaves that one thing out.

Subjects are matched as bytes, one byte per character, as nginx's PCRE matches
a request URI: the proxy decodes request lines as latin-1, so ``str.encode``
with latin-1 gives back the bytes on the wire; the pattern is the UTF-8 of the
manifest's text, as it would stand in nginx.conf.

The patterns our own validators apply to annotation values are compiled here
too (``fixed``): a fixed pattern can still be super-linear on hostile input
(``^https?://[^\\s/?#]+[^\\s]*$`` is quadratic on a long value with a space
in it), and Python's ``$`` also accepts a trailing newline, which RE2's does
not.
"""

from __future__ import annotations

import threading
from typing import Any, Final, final

import re2
from re2 import _re2  # the compiled RE2 class: re2.compile's wrapper costs more than a match

# Per pattern: RE2 fails a compile over this budget and otherwise stays within
# it while matching (its DFA cache gives way to the slower, still linear, NFA).
MAX_MEM: Final = 1 << 20

_UNANCHORED: Final = re2._Anchor.UNANCHORED
_START: Final = re2._Anchor.ANCHOR_START
_BOTH: Final = re2._Anchor.ANCHOR_BOTH
# Characters with a meaning in a pattern; a pattern without them is literal text.
_META: Final = frozenset("\\.^$|?*+()[]{}")

# RE2's messages name the construct; this says what the construct is for.
_UNSUPPORTED_HINTS: Final = (
    ("invalid perl operator: (?<", "lookbehind"),
    ("invalid perl operator: (?=", "lookahead"),
    ("invalid perl operator: (?!", "negative lookahead"),
    ("invalid perl operator: (?>", "an atomic group"),
    ("bad repetition operator: *+", "a possessive quantifier"),
    ("bad repetition operator: ++", "a possessive quantifier"),
    ("bad repetition operator: ?+", "a possessive quantifier"),
    ("invalid repetition size", "a repetition count over 1000"),
    ("pattern too large", f"a pattern that needs more than {MAX_MEM // 1024} KiB"),
)


class RegexError(ValueError):
    """A pattern RE2 cannot run; the message says why."""


def _options(*, ignore_case: bool, latin1: bool) -> Any:
    options = re2.Options()
    options.case_sensitive = not ignore_case
    options.log_errors = False  # errors are raised and reported, not printed to stderr
    options.max_mem = MAX_MEM
    if latin1:
        options.encoding = re2.Options.Encoding.LATIN1
    return options


_USER_OPTIONS: Final = {
    True: _options(ignore_case=True, latin1=True),
    False: _options(ignore_case=False, latin1=True),
}


def _explain(error: str) -> str:
    for fragment, what in _UNSUPPORTED_HINTS:
        if fragment in error:
            return f"{error}: RE2 does not run {what}"
    escape = "invalid escape sequence: \\"
    at = error.find(escape)
    if at >= 0 and error[at + len(escape) : at + len(escape) + 1].isdigit():
        return f"{error}: RE2 does not run a backreference"
    return error


@final
class RegexMatch:
    """The spans of one match, as ``group(n)`` like ``re.Match`` gives them."""

    __slots__ = ("_data", "_encoding", "_spans")

    def __init__(self, data: bytes, spans: list[tuple[int, int]], encoding: str) -> None:
        self._data = data
        self._spans = spans
        self._encoding = encoding

    def group(self, n: int = 0) -> str | None:
        """Group ``n`` (0: the whole match); None when it took no part; IndexError past the last."""
        if not 0 <= n < len(self._spans):
            raise IndexError(f"no group {n}")
        start, end = self._spans[n]
        if start < 0:
            return None
        return self._data[start:end].decode(self._encoding, "surrogatepass")


@final
class UserRegex:
    """An outsider's pattern, compiled by RE2.

    ``search`` finds the pattern anywhere in the subject, as nginx's ``~*``
    locations and ``ngx.re.match`` do; a pattern anchors itself with ``^``.
    """

    __slots__ = ("_folds", "_literal", "_prefix", "_re", "groups", "pattern")

    def __init__(self, pattern: str, *, ignore_case: bool) -> None:
        try:
            encoded = pattern.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise RegexError(f"not valid text ({exc.reason})") from None
        if b"\0" in encoded:
            raise RegexError("contains a NUL character")
        compiled = _re2.RE2(encoded, _USER_OPTIONS[ignore_case])
        if not compiled.ok():
            raise RegexError(_explain(compiled.error().decode("utf-8", "replace")))
        self._re: Any = compiled
        self.pattern = pattern
        self.groups: int = compiled.NumberOfCapturingGroups()
        # Paths of a regex host are mostly plain words ("^/api", "^/healthz"), and the
        # rest mostly start with some ("^/v[0-9]+/items"): a prefix comparison
        # answers the first outright and the second's misses, several times
        # cheaper than a call into RE2. (ASCII only: RE2 folds nothing else
        # into ASCII letters, and bytes.lower() folds nothing else.)
        self._literal: bytes | None = None
        self._prefix = b""
        self._folds = ignore_case
        rest = pattern[1:]
        plain_start = pattern.startswith("^") and not rest.startswith(("?", "*", "+", "{"))
        if plain_start and rest.isascii() and "|" not in rest:
            cut = next((i for i, ch in enumerate(rest) if ch in _META), len(rest))
            if cut == len(rest):
                self._literal = _fold(rest.encode(), ignore_case)
            else:
                if rest[cut] in "?*{":  # the last letter may be absent
                    cut -= 1
                self._prefix = _fold(rest[: max(cut, 0)].encode(), ignore_case)

    def search(self, text: str) -> RegexMatch | None:
        data = text.encode("latin-1", "replace")
        spans = self._re.Match(_UNANCHORED, data, 0, len(data))
        if spans[0][0] < 0:
            return None
        return RegexMatch(data, spans, "latin-1")

    def matches(self, text: str) -> bool:
        data = text.encode("latin-1", "replace")
        return bool(self._re.Match(_UNANCHORED, data, 0, len(data))[0][0] >= 0)

    def matches_bytes(self, data: bytes) -> bool:
        literal = self._literal
        if literal is not None:
            head = data[: len(literal)]
            return (head.lower() if self._folds else head) == literal
        prefix = self._prefix
        if prefix:
            head = data[: len(prefix)]
            if (head.lower() if self._folds else head) != prefix:
                return False
        return bool(self._re.Match(_UNANCHORED, data, 0, len(data))[0][0] >= 0)

    def __repr__(self) -> str:
        return f"UserRegex({self.pattern!r})"

    # Compiled patterns are values: two of the same text and case rule are one.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UserRegex):
            return NotImplemented
        return self.pattern == other.pattern and self._re.options().case_sensitive == (
            other._re.options().case_sensitive
        )

    def __hash__(self) -> int:
        return hash(self.pattern)


def _fold(data: bytes, ignore_case: bool) -> bytes:
    return data.lower() if ignore_case else data


def user_regex(pattern: str, *, ignore_case: bool) -> UserRegex:
    """Compile an outsider's pattern; RegexError names what RE2 cannot run."""
    return _cached(pattern, ignore_case)


# Ingresses repeat their paths (every host has its "/" and "/api"): equal
# patterns share one compiled object. Bounded, so churn cannot grow it.
_CACHE: dict[tuple[str, bool], UserRegex] = {}
_CACHE_MAX: Final = 4096
_CACHE_LOCK = threading.Lock()  # builds and `ingressd check` may run in other threads


def _cached(pattern: str, ignore_case: bool) -> UserRegex:
    key = (pattern, ignore_case)
    found = _CACHE.get(key)
    if found is None:
        found = UserRegex(pattern, ignore_case=ignore_case)
        with _CACHE_LOCK:
            if len(_CACHE) >= _CACHE_MAX:
                _CACHE.pop(next(iter(_CACHE)))  # the oldest entry: a FIFO is enough here
            _CACHE[key] = found
    return found


_UTF8_OPTIONS: Final = {
    True: _options(ignore_case=True, latin1=False),
    False: _options(ignore_case=False, latin1=False),
}


@final
class FixedRegex:
    """One of our own validators' patterns, on RE2, with ``re``'s three ways to run it.

    These run on annotation values and manifest fields, so on outsider input:
    linear, and ``$`` means the end of the text (Python's also matched before
    a final newline).
    """

    __slots__ = ("_re", "pattern")

    def __init__(self, pattern: str, *, ignore_case: bool) -> None:
        compiled = _re2.RE2(pattern.encode("utf-8"), _UTF8_OPTIONS[ignore_case])
        if not compiled.ok():
            raise RegexError(compiled.error().decode("utf-8", "replace"))
        self._re: Any = compiled
        self.pattern = pattern

    def _run(self, anchor: Any, text: str) -> RegexMatch | None:
        data = text.encode("utf-8", "surrogatepass")
        spans = self._re.Match(anchor, data, 0, len(data))
        if spans[0][0] < 0:
            return None
        return RegexMatch(data, spans, "utf-8")

    def match(self, text: str) -> RegexMatch | None:
        return self._run(_START, text)

    def fullmatch(self, text: str) -> RegexMatch | None:
        return self._run(_BOTH, text)

    def search(self, text: str) -> RegexMatch | None:
        return self._run(_UNANCHORED, text)


def fixed(pattern: str, *, ignore_case: bool = False) -> FixedRegex:
    """Compile one of our validators' patterns on RE2."""
    return FixedRegex(pattern, ignore_case=ignore_case)
