"""configuration-snippet and server-snippet, translated into typed policy.

ingressd never runs raw nginx configuration. But most snippets found on real
Ingresses do a few common things, which ingressd can do itself: this module
reads a snippet as nginx directives (``nginx_conf.py``) and translates

- ``more_set_headers [-s STATUSES] "Name: value"...`` and
  ``more_clear_headers [-s STATUSES] Name... | Prefix-*`` (headers-more),
  ``add_header NAME VALUE [always]``: the response's headers;
- ``proxy_set_header NAME VALUE`` and ``proxy_hide_header NAME``: the request
  to the upstream, and which of its response headers the client sees;
- ``return CODE [TEXT|URL]``, ``return URL`` and ``rewrite REGEX REPLACEMENT
  redirect|permanent``: answers, in the order written;
- ``if ($var)``, ``if ($var = value)``, ``if ($var ~ regex)`` (``!=``, ``~*``,
  ``!~``, ``!~*``) around ``return`` or such a ``rewrite``.

into a ``model.snippet.SnippetPolicy``. Values may use only the variables of
``model/variables.py`` (``$1``…``$9`` after a regex);
regexes run on RE2 (``model/regex.py``). Any other directive, option or
variable refuses the whole snippet, naming it: a snippet is served entirely as
written, or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from ..model.nginx_vars import NAME_CHARS, VariableError, split_variables, variables
from ..model.regex import RegexError, UserRegex, fixed, user_regex
from ..model.snippet import (
    ADD,
    CLEAR,
    REQUEST_ID_VARIABLES,
    SET,
    Answer,
    Condition,
    HeaderEdit,
    Parts,
    SnippetPolicy,
)
from ..model.variables import unknown
from .nginx_conf import ConfError, Statement, Word, parse

Where = Literal["configuration-snippet", "server-snippet"]
TRANSLATED: Final = frozenset({"configuration-snippet", "server-snippet"})

MAX_REGEX: Final = 1024  # characters of one regex

_TOKEN: Final = fixed(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_NAME_CHARS: Final = NAME_CHARS

# Headers whose framing or meaning ingressd owns: a snippet setting or clearing
# them in the response would break the message (or duplicate what ingressd writes).
_RESPONSE_OWN: Final = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"upgrade",
        b"te",
        b"trailer",
        b"date",
        b"location",
    }
)
# Request headers ingress-nginx's location already sets with proxy_set_header
# (nginx.tmpl): nginx would send a snippet's second one as well, two values
# where the upstream expects one; and framing headers the proxy writes itself.
_UPSTREAM_OWN: Final = frozenset(
    {
        b"host",
        b"upgrade",
        b"connection",
        b"x-request-id",
        b"x-real-ip",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-proto",
        b"x-scheme",
        b"x-original-forwarded-for",
        b"proxy",
        b"content-length",
        b"transfer-encoding",
        b"te",
        b"keep-alive",
        b"trailer",
    }
)
_REDIRECT_CODES: Final = frozenset({301, 302, 303, 307, 308})
_IF_OPS: Final = ("=", "!=", "~", "~*", "!~", "!~*")


class Refused(ValueError):
    """Why a snippet is not translated (it names the directive or variable)."""


@dataclass(frozen=True, slots=True)
class Translation:
    """A snippet translated (``policy``) or refused (``refusal``); ``lines`` says,
    one per directive, what each became."""

    policy: SnippetPolicy | None
    lines: tuple[str, ...] = ()
    refusal: str = ""


@dataclass(slots=True)
class _Builder:
    where: Where
    answers: list[Answer] = field(default_factory=list)
    upstream: list[tuple[bytes, Parts]] = field(default_factory=list)
    hide: set[bytes] = field(default_factory=set)
    more: list[HeaderEdit] = field(default_factory=list)
    add: list[HeaderEdit] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def translate(text: str, where: Where) -> Translation:
    """``text`` of a ``where`` annotation, translated or refused."""
    try:
        statements = parse(text)
    except ConfError as exc:
        return Translation(None, (), f"it is not nginx configuration ingressd can read: {exc}")
    b = _Builder(where)
    try:
        if not statements:
            raise Refused("it holds no directive")
        for st in statements:
            _statement(b, st, None)
    except Refused as exc:
        return Translation(None, tuple(b.lines), str(exc))
    policy = SnippetPolicy(
        answers=tuple(b.answers),
        upstream=tuple(b.upstream),
        hide=frozenset(b.hide),
        more=tuple(b.more),
        add=tuple(b.add),
    )
    return Translation(policy, tuple(b.lines))


def _statement(b: _Builder, st: Statement, cond: tuple[Condition, str] | None) -> None:
    name = st.name
    if st.words[0].quoted or not name:
        raise Refused(f"line {st.line}: a quoted directive name is not translated")
    if st.block is not None and name != "if":
        raise Refused(f"directive {name!r} (line {st.line}) is not translated")
    handler = _HANDLERS.get(name)
    if handler is None:
        raise Refused(f"directive {name!r} (line {st.line}) is not translated")
    if cond is not None and name not in ("return", "rewrite"):
        raise Refused(
            f"directive {name!r} inside if (line {st.line}) is not translated: only return "
            "and rewrite ... redirect|permanent are"
        )
    handler(b, st, cond)


def _where(st: Statement) -> str:
    return f"{st.name} (line {st.line})"


# -- values ------------------------------------------------------------------------------


def _template(text: str, st: Statement, *, request_id: bool, captures: bool) -> Parts:
    """nginx's ``$name``/``${name}`` split out; unknown variables refuse the snippet."""
    try:
        parts = split_variables(text, strict=True)
    except VariableError as exc:
        raise Refused(f"{_where(st)}: {exc}") from None
    for name in variables(parts):
        _check_variable(name, st, request_id=request_id, captures=captures)
    return parts


def _check_variable(name: str, st: Statement, *, request_id: bool, captures: bool) -> None:
    if name.isdigit():
        if captures and len(name) == 1:
            return
        raise Refused(f"{_where(st)}: ${name} names no capture of a regex before it")
    if unknown(name) is not None:
        raise Refused(
            f"variable ${name} in {_where(st)} is not one ingressd resolves "
            "(see docs/reference/snippets.md)"
        )
    if name in REQUEST_ID_VARIABLES and not request_id:
        raise Refused(
            f"variable ${name} in {_where(st)}: the request id is known only in header values"
        )


def _shown(parts: Parts) -> str:
    out = [parts[0]]
    for i in range(1, len(parts), 2):
        out.append("$" + parts[i])
        out.append(parts[i + 1])
    return "".join(out)


def _header_name(text: str, st: Statement, own: frozenset[bytes], what: str) -> bytes:
    if not _TOKEN.match(text) or "$" in text:
        # ("$" is a token character, but a variable in a name is not translated)
        raise Refused(f"{_where(st)}: {text!r} is not a header name")
    if text.lower().encode() in own:
        raise Refused(f"{_where(st)}: {what} {text} is not translated: {_OWN_WHY[what]}")
    return text.encode("latin-1")


_OWN_WHY: Final = {
    "response header": "ingressd writes it itself (framing, Date, redirects)",
    "request header": "ingress-nginx's location already sets it (nginx.tmpl), so nginx "
    "would send the upstream two of them; or the proxy frames the request with it",
}


def _literal_ok(text: str, st: Statement) -> None:
    if any((c < " " and c != "\t") or c == "\x7f" for c in text):
        raise Refused(f"{_where(st)}: a value holds a control character")


def _regex(text: str, st: Statement, *, ignore_case: bool) -> UserRegex:
    if len(text) > MAX_REGEX:
        raise Refused(f"{_where(st)}: a regex longer than {MAX_REGEX} characters")
    if not text:
        raise Refused(f"{_where(st)}: an empty regex")
    try:
        return user_regex(text, ignore_case=ignore_case)
    except RegexError as exc:
        raise Refused(f"{_where(st)}: regex {text!r} cannot run on RE2: {exc}") from None


# -- headers -----------------------------------------------------------------------------


def _statuses(args: list[str], st: Statement) -> tuple[frozenset[int] | None, list[str]]:
    """headers-more's options: ``-s "404 500"`` kept, ``-t`` refused."""
    statuses: set[int] | None = None
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-s" and i + 1 < len(args):
            for code in args[i + 1].split():
                if not (code.isascii() and code.isdigit() and 100 <= int(code) <= 599):
                    raise Refused(f"{_where(st)}: -s {code!r} is not a status code")
                statuses = (statuses or set()) | {int(code)}
            i += 2
            continue
        if arg.startswith("-"):
            raise Refused(f"{_where(st)}: option {arg} is not translated (only -s status codes is)")
        rest.append(arg)
        i += 1
    return (frozenset(statuses) if statuses is not None else None), rest


def _on(statuses: frozenset[int] | None) -> str:
    return "every status" if statuses is None else "status " + " ".join(map(str, sorted(statuses)))


def _more_set_headers(b: _Builder, st: Statement, cond: object) -> None:
    statuses, specs = _statuses(list(st.args), st)
    if not specs:
        raise Refused(f"{_where(st)}: no header given")
    for spec in specs:
        name, _, value = spec.partition(":")
        name, value = name.strip(), value.strip()
        raw = _header_name(name, st, _RESPONSE_OWN, "response header")
        _literal_ok(value, st)
        parts = _template(value, st, request_id=True, captures=False)
        b.more.append(HeaderEdit(SET, raw, raw.lower(), parts, statuses=statuses))
        if parts == ("",):
            b.lines.append(f"{_where(st)}: response header {name} removed ({_on(statuses)})")
        else:
            b.lines.append(
                f"{_where(st)}: response header {name}: {_shown(parts)} ({_on(statuses)}; "
                "replaces any other)"
            )


def _more_clear_headers(b: _Builder, st: Statement, cond: object) -> None:
    statuses, names = _statuses(list(st.args), st)
    if not names:
        raise Refused(f"{_where(st)}: no header given")
    for spec in names:
        for name in spec.split():
            prefix = name.endswith("*")
            bare = name[:-1] if prefix else name
            if prefix and (not bare or "*" in bare):
                raise Refused(f"{_where(st)}: {name!r}: only a trailing * after a name is taken")
            raw = _header_name(bare, st, _RESPONSE_OWN, "response header")
            if prefix and any(own.startswith(raw.lower()) for own in _RESPONSE_OWN):
                raise Refused(f"{_where(st)}: {name} would clear headers ingressd writes itself")
            b.more.append(HeaderEdit(CLEAR, raw, raw.lower(), prefix=prefix, statuses=statuses))
            what = f"headers {bare}*" if prefix else f"header {bare}"
            b.lines.append(f"{_where(st)}: response {what} removed ({_on(statuses)})")


def _add_header(b: _Builder, st: Statement, cond: object) -> None:
    args = st.args
    if len(args) not in (2, 3) or (len(args) == 3 and args[2] != "always"):
        raise Refused(f"{_where(st)}: expected add_header NAME VALUE [always]")
    raw = _header_name(args[0], st, _RESPONSE_OWN, "response header")
    _literal_ok(args[1], st)
    parts = _template(args[1], st, request_id=True, captures=False)
    always = len(args) == 3
    b.add.append(HeaderEdit(ADD, raw, raw.lower(), parts, always=always))
    on = "every status" if always else "2xx and 3xx responses (nginx's list)"
    b.lines.append(f"{_where(st)}: response header {args[0]}: {_shown(parts)} added on {on}")


def _proxy_set_header(b: _Builder, st: Statement, cond: object) -> None:
    args = st.args
    if len(args) != 2:
        raise Refused(f"{_where(st)}: expected proxy_set_header NAME VALUE")
    raw = _header_name(args[0], st, _UPSTREAM_OWN, "request header")
    _literal_ok(args[1], st)
    parts = _template(args[1], st, request_id=True, captures=False)
    if b.where == "server-snippet":
        # ingress-nginx's locations set their own proxy_set_header, and nginx
        # inherits the server's only into a location that sets none.
        b.lines.append(
            f"{_where(st)}: no effect, as in ingress-nginx (its locations set their own "
            "proxy_set_header, so nginx does not inherit the server's)"
        )
        return
    b.upstream.append((raw, parts))
    if parts == ("",):
        b.lines.append(f"{_where(st)}: upstream request header {args[0]} not sent")
    else:
        b.lines.append(
            f"{_where(st)}: upstream request header {args[0]}: {_shown(parts)} "
            "(replaces the client's; not sent when empty)"
        )


def _proxy_hide_header(b: _Builder, st: Statement, cond: object) -> None:
    args = st.args
    if len(args) != 1:
        raise Refused(f"{_where(st)}: expected proxy_hide_header NAME")
    raw = _header_name(args[0], st, _RESPONSE_OWN, "response header")
    b.hide.add(raw.lower())
    b.lines.append(f"{_where(st)}: the upstream's response header {args[0]} is not passed on")


# -- answers -----------------------------------------------------------------------------


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://", "$scheme"))


def _code(text: str, st: Statement) -> int:
    if not (text.isascii() and text.isdigit()) or not 200 <= int(text) <= 599:
        raise Refused(f"{_where(st)}: status {text!r} is not translated (200-599 are)")
    if int(text) == 444:
        raise Refused(f"{_where(st)}: 444 (close the connection) is not translated")
    return int(text)


def _when(cond: tuple[Condition, str] | None) -> str:
    return f"when {cond[1]}: " if cond is not None else ""


def _return(b: _Builder, st: Statement, cond: tuple[Condition, str] | None) -> None:
    args = st.args
    captures = cond is not None and cond[0].regex is not None
    if len(args) == 1 and _is_url(args[0]):
        status, text = 302, args[0]
    elif len(args) in (1, 2):
        status = _code(args[0], st)
        text = args[1] if len(args) == 2 else ""
    else:
        raise Refused(f"{_where(st)}: expected return CODE [TEXT|URL] or return URL")
    redirect = status in _REDIRECT_CODES and bool(text)
    if redirect:
        _literal_ok(text, st)
    parts = _template(text, st, request_id=False, captures=captures)
    condition = cond[0] if cond is not None else None
    b.answers.append(Answer(status, parts, redirect, condition=condition))
    if redirect:
        effect = f"answers {status}, Location {_shown(parts)}"
    elif text:
        effect = f"answers {status} with the text {_shown(parts)!r}"
    else:
        effect = f"answers {status}"
    scope = " (every route of the host)" if b.where == "server-snippet" else ""
    b.lines.append(f"{_where(st)}: {_when(cond)}{effect}{scope}")


def _rewrite(b: _Builder, st: Statement, cond: tuple[Condition, str] | None) -> None:
    args = st.args
    if len(args) not in (2, 3):
        raise Refused(f"{_where(st)}: expected rewrite REGEX REPLACEMENT [redirect|permanent]")
    pattern, replacement = args[0], args[1]
    flag = args[2] if len(args) == 3 else ""
    if flag == "permanent":
        status = 301
    elif flag == "redirect" or (flag == "" and _is_url(replacement)):
        status = 302
    else:
        what = f"flag {flag}" if flag else "no flag and a replacement that is not a URL"
        raise Refused(
            f"{_where(st)}: rewrite with {what} changes the URI inside nginx; only "
            "rewrite ... redirect|permanent (or to a URL) is translated"
        )
    regex = _regex(pattern, st, ignore_case=False)
    args_kept = not replacement.endswith("?")
    if not args_kept:
        replacement = replacement[:-1]
    _literal_ok(replacement, st)
    parts = _template(replacement, st, request_id=False, captures=True)
    condition = cond[0] if cond is not None else None
    b.answers.append(Answer(status, parts, True, regex, args_kept, condition))
    kept = "the request's arguments appended" if args_kept else "without the request's arguments"
    scope = " (every route of the host)" if b.where == "server-snippet" else ""
    b.lines.append(
        f"{_where(st)}: {_when(cond)}paths matching {pattern!r} answer {status}, Location "
        f"{_shown(parts)} ({kept}){scope}"
    )


def _if(b: _Builder, st: Statement, cond: tuple[Condition, str] | None) -> None:
    if cond is not None:
        raise Refused(f"{_where(st)}: an if inside an if is not translated")
    if st.block is None:
        raise Refused(f"{_where(st)}: if without a block")
    words = _condition_words(st)
    var = words[0]
    if var.quoted or not var.text.startswith("$"):
        raise Refused(
            f"{_where(st)}: condition {var.text!r} is not translated (only $variable tests are)"
        )
    name = var.text[1:]
    if name.startswith("{") and name.endswith("}"):
        name = name[1:-1]
    if not name or any(c not in _NAME_CHARS for c in name) or name.isdigit():
        raise Refused(f"{_where(st)}: invalid variable {var.text!r}")
    _check_variable(name, st, request_id=False, captures=False)
    if len(words) == 1:
        condition = Condition(name, "")
        shown = f"${name} is set"
    elif len(words) == 3 and words[1].text in _IF_OPS and not words[1].quoted:
        op, operand = words[1].text, words[2].text
        if op in ("=", "!="):
            _literal_ok(operand, st)
            parts = _template(operand, st, request_id=False, captures=False)
            condition = Condition(name, op, parts)
        else:
            regex = _regex(operand, st, ignore_case=op.endswith("*"))
            condition = Condition(name, op, regex=regex)
        shown = f"${name} {op} {operand!r}"
    else:
        written = " ".join(w.text for w in words)
        raise Refused(f"{_where(st)}: condition {written!r} is not translated")
    if not st.block:
        raise Refused(f"{_where(st)}: an empty if block")
    for inner in st.block:
        _statement(b, inner, (condition, shown))


def _condition_words(st: Statement) -> list[Word]:
    """The condition between ``(`` and ``)``, as ngx_http_rewrite_if takes it apart."""
    words = list(st.words[1:])
    if not words or words[0].quoted or not words[0].text.startswith("("):
        raise Refused(f"{_where(st)}: invalid condition")
    first = words[0].text[1:]
    words = ([Word(first, False)] if first else []) + words[1:]
    if not words:
        raise Refused(f"{_where(st)}: invalid condition")
    last = words[-1]
    if last.text == ")" and not last.quoted:
        words = words[:-1]
    elif not last.quoted and last.text.endswith(")"):
        words[-1] = Word(last.text[:-1], False)
    else:
        raise Refused(f"{_where(st)}: invalid condition")
    if not words or not words[0].text:
        raise Refused(f"{_where(st)}: invalid condition")
    return words


_HANDLERS: Final = {
    "more_set_headers": _more_set_headers,
    "more_clear_headers": _more_clear_headers,
    "add_header": _add_header,
    "proxy_set_header": _proxy_set_header,
    "proxy_hide_header": _proxy_hide_header,
    "return": _return,
    "rewrite": _rewrite,
    "if": _if,
}
