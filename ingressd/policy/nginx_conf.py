"""nginx configuration syntax, as snippet annotations carry it: read, never run.

``parse`` turns the text of a ``configuration-snippet`` or ``server-snippet``
into statements (a directive's words, and the block an ``if`` opens), the way
nginx's own reader cuts them (src/core/ngx_conf_file.c ``ngx_conf_read_token``):

- whitespace separates words; ``;`` ends a statement, ``{`` opens its block and
  ``}`` closes it; ``#`` at the start of a word comments out the rest of the line;
- a word starting with ``"`` or ``'`` runs to the matching quote, and must then
  be followed by whitespace, ``;``, ``{`` or ``)`` (nginx: "unexpected ...");
- a backslash makes the next character part of the word; when the word is
  built ``\\"``, ``\\'`` and ``\\\\`` become the character, ``\\t``, ``\\r`` and ``\\n``
  the control character, and any other ``\\x`` stays as it is (regexes keep
  their ``\\.``);
- ``{`` right after ``$`` belongs to the word (``${name}``).

Everything is bounded (text length, words, word length, nesting), and the
result is plain data: nothing is executed, no file is read, no name resolved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MAX_TEXT: Final = 32 * 1024  # characters of snippet text
MAX_WORDS: Final = 2048  # words in all
MAX_WORD: Final = 4096  # characters in one word
MAX_DEPTH: Final = 4  # nested blocks


class ConfError(ValueError):
    """The text is not nginx configuration nginx would read (or exceeds a bound)."""


@dataclass(frozen=True, slots=True)
class Word:
    text: str  # quotes removed, escapes applied
    quoted: bool  # written between quotes (a quoted "(" is no parenthesis)


@dataclass(frozen=True, slots=True)
class Statement:
    words: tuple[Word, ...]  # the directive name first
    block: tuple[Statement, ...] | None  # the statements of its { } block, if it has one
    line: int  # where it starts, from 1

    @property
    def name(self) -> str:
        return self.words[0].text

    @property
    def args(self) -> tuple[str, ...]:
        return tuple(w.text for w in self.words[1:])


_SPACE: Final = " \t\r\n"
_SIMPLE_ESCAPES: Final = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}


def _unescape(raw: str) -> str:
    if "\\" not in raw:
        return raw
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        ch = raw[i]
        if ch == "\\" and i + 1 < n and raw[i + 1] in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[raw[i + 1]])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


class _Reader:
    __slots__ = ("i", "line", "n", "text", "words")

    def __init__(self, text: str) -> None:
        self.text = text
        self.n = len(text)
        self.i = 0
        self.line = 1
        self.words = 0

    def fail(self, what: str) -> ConfError:
        return ConfError(f"{what} in line {self.line}")

    def block(self, depth: int) -> tuple[tuple[Statement, ...], bool]:
        """Statements up to a closing ``}`` (True) or the end of the text (False)."""
        statements: list[Statement] = []
        words: list[Word] = []
        start = self.line
        text, n = self.text, self.n
        while True:
            # Between words.
            while self.i < n and text[self.i] in _SPACE:
                if text[self.i] == "\n":
                    self.line += 1
                self.i += 1
            if self.i >= n:
                if words:
                    raise self.fail(f"unexpected end of text after {words[0].text!r}")
                return tuple(statements), False
            ch = text[self.i]
            if ch == "#":
                end = text.find("\n", self.i)
                self.i = n if end < 0 else end
                continue
            if ch == ";":
                if not words:
                    raise self.fail('unexpected ";"')
                self.i += 1
                statements.append(Statement(tuple(words), None, start))
                words = []
                continue
            if ch == "{":
                if not words:
                    raise self.fail('unexpected "{"')
                if depth + 1 > MAX_DEPTH:
                    raise self.fail(f"blocks nested deeper than {MAX_DEPTH}")
                self.i += 1
                inner, closed = self.block(depth + 1)
                if not closed:
                    raise self.fail('unexpected end of text, expecting "}"')
                statements.append(Statement(tuple(words), inner, start))
                words = []
                continue
            if ch == "}":
                if words:
                    raise self.fail('unexpected "}"')
                if depth == 0:
                    raise self.fail('unexpected "}"')
                self.i += 1
                return tuple(statements), True
            if not words:
                start = self.line
            words.append(self.word())
            self.words += 1
            if self.words > MAX_WORDS:
                raise ConfError(f"more than {MAX_WORDS} words")

    def word(self) -> Word:
        text, n = self.text, self.n
        begin = self.i
        ch = text[begin]
        if ch in "\"'":
            quote = ch
            i = begin + 1
            while i < n and text[i] != quote:
                if text[i] == "\\":
                    i += 1
                elif text[i] == "\n":
                    self.line += 1
                i += 1
            if i >= n:
                raise self.fail("unterminated quoted string")
            raw = text[begin + 1 : i]
            self.i = i + 1
            if self.i < n and text[self.i] not in _SPACE + ";{)":
                raise self.fail(f"unexpected {text[self.i]!r} after a quoted string")
            return self._word(raw, True)
        i = begin
        variable = False
        while i < n:
            ch = text[i]
            if ch == "{" and variable:
                i += 1
                continue
            variable = ch == "$"
            if ch == "\\" and i + 1 < n:
                if text[i + 1] == "\n":
                    self.line += 1
                i += 2
                continue
            if ch in _SPACE or ch in ";{":
                break
            i += 1
        self.i = i
        return self._word(text[begin:i], False)

    def _word(self, raw: str, quoted: bool) -> Word:
        if len(raw) > MAX_WORD:
            raise self.fail(f"a word longer than {MAX_WORD} characters")
        return Word(_unescape(raw), quoted)


def parse(text: str) -> tuple[Statement, ...]:
    """The statements of ``text``; ConfError when nginx would not read it."""
    if len(text) > MAX_TEXT:
        raise ConfError(f"longer than {MAX_TEXT} characters")
    if "\x00" in text:
        raise ConfError("contains a NUL character")
    reader = _Reader(text)
    statements, closed = reader.block(0)
    assert not closed
    return statements
