"""nginx's ``$name`` and ``${name}`` in a text, split out once (no per-request parsing).

One reader for every place ingressd takes nginx variables: the access log's
``log-format-upstream`` (observe/log_format.py) and, in time, ``upstream-hash-by``
(policy/chash.py) and the snippets' values (policy/snippets.py), which each
still carry their own. What a name means is the caller's business: this only
splits, so each caller checks the names against what it can render.
"""

from __future__ import annotations

# Characters of a variable name (nginx: letters, digits, underscore).
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class VariableError(ValueError):
    """A ``$`` that nginx would refuse: ``${`` not closed, or no name after it."""


def split_variables(text: str, *, strict: bool = True) -> tuple[str, ...]:
    """``text`` as (literal, name, literal, ..., literal): always an odd count.

    ``strict`` (nginx's own parsing of a directive's value): a ``$`` without a
    name, or ``${`` not closed, raises VariableError. Not strict: such a ``$``
    stays literal text."""
    parts: list[str] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "$":
            literal.append(ch)
            i += 1
            continue
        name, end = _name_at(text, i)
        if name is None:
            if strict:
                raise VariableError(f"no variable name after '$' at {i + 1} in {text[:100]!r}")
            literal.append("$")
            i += 1
            continue
        parts += ["".join(literal), name]
        literal = []
        i = end
    parts.append("".join(literal))
    return tuple(parts)


def _name_at(text: str, at: int) -> tuple[str | None, int]:
    """The name of the variable at ``text[at] == "$"`` and where it ends; None: none."""
    n = len(text)
    if at + 1 < n and text[at + 1] == "{":
        close = text.find("}", at + 2)
        name = text[at + 2 : close] if close > at + 2 else ""
        if name and all(c in NAME_CHARS for c in name):
            return name, close + 1
        return None, at + 1
    j = at + 1
    while j < n and text[j] in NAME_CHARS:
        j += 1
    return (text[at + 1 : j], j) if j > at + 1 else (None, at + 1)


def variables(parts: tuple[str, ...]) -> tuple[str, ...]:
    """The names in ``split_variables``'s result, in order."""
    return parts[1::2]
