"""Request paths that a use-regex path matches, for probes.

A pattern is walked as Python's parser reads it (RE2's syntax, which routes
run on, is the same for what paths use: literals, classes, repeats, groups,
alternation). Each sample is then checked against the route's own compiled
RE2 matcher by the caller, so a construct read differently here only loses a
sample, never yields a wrong one. The walk is bounded: repeats are taken at
their minimum (or one more), and a sample longer than ``MAX_LENGTH`` is given up.
"""

from __future__ import annotations

import re._constants as sre_c  # type: ignore[import-not-found]
import re._parser as sre_parse  # type: ignore[import-not-found]
from typing import Any

MAX_LENGTH = 512
# Characters a request path carries as they are: samples use only these.
_PATH_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~/!$&'()*+,;=:@%"
)
# Preferred picks for a class or "." (in this order): a letter, a digit, then anything safe.
_PREFERRED = "a0b1z9-_./"


class _GiveUp(Exception):
    """The pattern holds something this walk does not sample."""


def samples(pattern: str, count: int = 2) -> tuple[str, ...]:
    """Up to ``count`` distinct paths ``pattern`` should match (variant 0: every
    repeat at its minimum, the first alternative; variant 1: one more repeat, the
    last alternative). Empty when the pattern cannot be walked."""
    try:
        parsed = sre_parse.parse(pattern, sre_c.SRE_FLAG_IGNORECASE)
    except (sre_c.error, RecursionError, OverflowError, ValueError):
        return ()
    out: list[str] = []
    for variant in range(count):
        try:
            text = _walk(parsed, variant, {})
        except (_GiveUp, RecursionError):
            continue
        if not text.startswith("/"):
            text = "/" + text
        if text not in out and all(ch in _PATH_SAFE for ch in text):
            out.append(text)
    return tuple(out)


def _walk(items: Any, variant: int, groups: dict[int, str]) -> str:
    parts: list[str] = []
    for op, arg in items:
        parts.append(_one(op, arg, variant, groups))
        if sum(map(len, parts)) > MAX_LENGTH:
            raise _GiveUp
    return "".join(parts)


def _one(op: Any, arg: Any, variant: int, groups: dict[int, str]) -> str:
    name = str(op)
    if name == "LITERAL":
        return chr(arg)
    if name == "NOT_LITERAL":
        return next(c for c in _PREFERRED if ord(c) != arg)
    if name == "ANY":
        return "a"
    if name == "IN":
        return _pick(arg)
    if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
        low, high, body = arg
        times = low if variant == 0 or (high != sre_c.MAXREPEAT and high <= low) else low + 1
        if times > 64:
            raise _GiveUp
        return "".join(_walk(body, variant, groups) for _ in range(times))
    if name == "SUBPATTERN":
        group, _add, _del, body = arg
        text = _walk(body, variant, groups)
        if group is not None:
            groups[group] = text
        return text
    if name == "BRANCH":
        _, branches = arg
        branch = branches[0] if variant == 0 else branches[-1]
        return _walk(branch, variant, groups)
    if name == "AT":
        return ""  # anchors (^, $, \b) take no characters
    if name == "GROUPREF":
        return groups.get(arg, "")
    if name == "ATOMIC_GROUP":
        return _walk(arg, variant, groups)
    raise _GiveUp  # lookaround, conditionals: RE2 refuses them anyway


def _pick(items: Any) -> str:
    """A character of a class: a preferred one it allows, else its first allowed."""
    negate = any(str(op) == "NEGATE" for op, _ in items)
    for candidate in _PREFERRED:
        if _in_class(items, ord(candidate)) != negate:
            return candidate
    if negate:
        raise _GiveUp
    for op, arg in items:
        if str(op) == "LITERAL":
            return chr(arg)
        if str(op) == "RANGE":
            return chr(arg[0])
    raise _GiveUp


def _in_class(items: Any, code: int) -> bool:
    for op, arg in items:
        name = str(op)
        if name == "LITERAL" and arg == code:
            return True
        if name == "RANGE" and arg[0] <= code <= arg[1]:
            return True
        if name == "CATEGORY" and _category(str(arg), code):
            return True
    return False


def _category(name: str, code: int) -> bool:
    ch = chr(code)
    if name.endswith("NOT_DIGIT"):
        return not ch.isdigit()
    if name.endswith("DIGIT"):
        return ch.isdigit()
    if name.endswith("NOT_WORD"):
        return not (ch.isalnum() or ch == "_")
    if name.endswith("WORD"):
        return ch.isalnum() or ch == "_"
    if name.endswith("NOT_SPACE"):
        return not ch.isspace()
    return False
