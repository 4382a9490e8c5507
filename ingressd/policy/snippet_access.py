"""Whether a refused snippet annotation restricts access.

ingressd refuses raw nginx configuration (configuration-, server-, auth-snippet)
and serves without it. A snippet that only adds headers loses nothing by that;
one holding access control (``deny all;``, ``auth_basic``, ``return 403;``...)
would leave open what ingress-nginx guards. So such a snippet is access control
that cannot be honoured, and the routes it covers answer 403 instead.

The rule: a statement of the snippet whose directive is one of ``DIRECTIVES``
(``modsecurity`` only as ``modsecurity on``), or ``return`` with a 4xx or 5xx
status. Statements are split the way nginx reads its configuration: ``;``,
``{`` and ``}`` end them, ``#`` starts a comment, quotes group words. A
statement's directive is its first word, so ``add_header X-Deny "deny";`` is
not a ``deny``; a quoted string that itself holds ``; deny all`` errs on the
side of denying. One pass over the text: linear in its length.

ModSecurity rules (modsecurity-snippet) are another language: they block only
when they turn the rule engine on, ingress-nginx's own modsecurity.conf
leaving it in DetectionOnly.
"""

from __future__ import annotations

from typing import Final

from ..model.regex import fixed

# nginx directives that decide who may have a response at all.
DIRECTIVES: Final = frozenset(
    {
        "allow",
        "deny",
        "auth_basic",
        "auth_basic_user_file",
        "auth_request",
        "auth_jwt",
        "auth_jwt_key_file",
        "auth_digest",
        "auth_digest_user_file",
        "satisfy",
        "limit_except",
        "ssl_verify_client",
        "access_by_lua",
        "access_by_lua_block",
        "access_by_lua_file",
        "modsecurity_rules",
        "modsecurity_rules_file",
        "modsecurity_rules_remote",
    }
)

_RULE_ENGINE_ON: Final = fixed(r"(?im)^\s*SecRuleEngine\s+On\b")


def access_directives(snippet: str) -> tuple[str, ...]:
    """The access-control directives of an nginx snippet, in order, each once."""
    found: dict[str, None] = {}
    for words in _statements(snippet):
        name = words[0]
        if name in DIRECTIVES:
            found[name] = None
        elif name == "modsecurity" and words[1:2] == ["on"]:
            found["modsecurity on"] = None
        elif name == "return" and len(words) > 1 and _error_status(words[1]):
            found[f"return {words[1]}"] = None
    return tuple(found)


def modsecurity_blocks(rules: str) -> bool:
    """Whether ModSecurity rules turn the engine on (and so may block requests)."""
    return _RULE_ENGINE_ON.search(rules) is not None


def _error_status(word: str) -> bool:
    return len(word) == 3 and word.isdigit() and word[0] in "45"


def _statements(text: str) -> list[list[str]]:
    """Each statement's words, quotes removed; the statement's block opener included."""
    statements: list[list[str]] = []
    words: list[str] = []
    word: list[str] = []
    quote = ""
    in_word = False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if quote:
            if ch == "\\" and i + 1 < n:
                word.append(text[i + 1])
                i += 2
                continue
            if ch == quote:
                quote = ""
            else:
                word.append(ch)
        elif ch in "\"'":
            quote = ch
            in_word = True
        elif ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif ch in ";{}" or ch.isspace():
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
            if ch in ";{}" and words:
                statements.append(words)
                words = []
        else:
            word.append(ch)
            in_word = True
        i += 1
    if in_word:
        words.append("".join(word))
    if words:
        statements.append(words)
    return statements
