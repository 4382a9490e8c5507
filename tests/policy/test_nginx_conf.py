"""nginx's configuration syntax as snippets carry it: a table of valid and
invalid texts, and properties over generated ones (the reader and the
translator never fail otherwise than by saying so, and never touch the system)."""

from __future__ import annotations

import builtins
import contextlib
import importlib
import os
import socket
import subprocess
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingressd.model.snippet import RequestVars, answer, edit_response, upstream_headers
from ingressd.model.snippet import plan as snippet_plan
from ingressd.policy import nginx_conf
from ingressd.policy.nginx_conf import MAX_DEPTH, MAX_TEXT, MAX_WORDS, ConfError, parse
from ingressd.policy.snippets import translate


def shape(text: str) -> list[object]:
    """Statements as nested lists: words (quoted ones marked), then the block's."""

    def one(s: nginx_conf.Statement) -> object:
        words = [f"'{w.text}'" if w.quoted else w.text for w in s.words]
        return words if s.block is None else [*words, [one(b) for b in s.block]]

    return [one(s) for s in parse(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("  # only a comment\n", []),
        ("a;", [["a"]]),
        ("a b  c ;d;", [["a", "b", "c"], ["d"]]),
        (
            'more_set_headers "Request-Id: $req_id";',
            [["more_set_headers", "'Request-Id: $req_id'"]],
        ),
        ("add_header 'X-A' 'b c';", [["add_header", "'X-A'", "'b c'"]]),
        # escapes: \" \' \\ become the character, \t \r \n control characters, others stay
        (r'a "x\"y" \\z;', [["a", "'x\"y'", "\\z"]]),
        (r'a "\t\n";', [["a", "'\t\n'"]]),
        (r"rewrite ^/a\.b$ /c;", [["rewrite", r"^/a\.b$", "/c"]]),
        # a word may hold quotes, # and } in its middle; ${name} keeps its braces
        ('a b"c d#e f};', [["a", 'b"c', "d#e", "f}"]]),
        ("a ${host}x;", [["a", "${host}x"]]),
        ("a # comment ; b\n c;", [["a", "c"]]),
        ("if ($a) { return 403; }", [["if", "($a)", [["return", "403"]]]]),
        ('if ($a = "x") { return 403; }', [["if", "($a", "=", "'x'", ")", [["return", "403"]]]]),
        ("location /a { location /b { x; } }", [["location", "/a", [["location", "/b", [["x"]]]]]]),
        ("a;\n\n b\n c;", [["a"], ["b", "c"]]),
        ("x {}", [["x", []]]),
    ],
)
def test_valid(text: str, expected: list[object]) -> None:
    assert shape(text) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("a", "unexpected end of text after 'a' in line 1"),
        (";", 'unexpected ";" in line 1'),
        ("a;\n;", 'unexpected ";" in line 2'),
        ("{ a; }", 'unexpected "{" in line 1'),
        ("}", 'unexpected "}" in line 1'),
        ("a }", 'unexpected "}"'),
        ("a { b; ", 'expecting "}"'),
        ('a "b', "unterminated quoted string"),
        ('a "b"c;', "unexpected 'c' after a quoted string"),
        ("a\x00;", "NUL"),
        ("a" * (MAX_TEXT + 1), "longer than"),
        ("a " * (MAX_WORDS + 1) + ";", f"more than {MAX_WORDS} words"),
        ("a {" * (MAX_DEPTH + 1) + "}" * (MAX_DEPTH + 1), "nested deeper"),
        ("a " + "b" * 5000 + ";", "a word longer than"),
    ],
)
def test_invalid(text: str, error: str) -> None:
    with pytest.raises(ConfError, match=None) as info:
        parse(text)
    assert error in str(info.value)


# -- properties ---------------------------------------------------------------------------

_DIRECTIVES = [
    "more_set_headers",
    "more_clear_headers",
    "add_header",
    "proxy_set_header",
    "proxy_hide_header",
    "return",
    "rewrite",
    "if",
    "set",
    "proxy_pass",
    "include",
    "lua_code_cache",
    "content_by_lua_block",
    "deny",
]
_WORDS = st.one_of(
    st.sampled_from(
        [
            "$host",
            "$http_x_a",
            "$request_uri",
            "$req_id",
            "$1",
            "${uri}",
            "$document_root",
            "-s",
            "-t",
            "404",
            "301",
            "444",
            "always",
            "permanent",
            "redirect",
            "last",
            "^/a(.*)$",
            "(a+)+$",
            "(?<=x)",
            "(",
            ")",
            "($host",
            "~*",
            "=",
            "!~",
            "X-A:",
            "X-*",
            "/etc/passwd",
            "http://127.0.0.1:1/",
            "https://x.example$request_uri",
        ]
    ),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
)


def _quoted(word: str) -> str:
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def _statement(draw: st.DrawFn, depth: int = 0) -> str:
    name = draw(st.sampled_from(_DIRECTIVES))
    words = [draw(_WORDS) for _ in range(draw(st.integers(0, 4)))]
    args = " ".join(_quoted(w) if draw(st.booleans()) else w for w in words)
    if name == "if" or (depth < 2 and draw(st.integers(0, 9)) == 0):
        inner = "".join(draw(st.lists(_statement(depth + 1), max_size=2))) if depth < 2 else ""
        return f"{name} ({args}) {{ {inner} }}\n"
    return f"{name} {args};\n"


_SNIPPETS = st.one_of(
    st.lists(_statement(), max_size=5).map("".join),
    # the grammar with garbage spliced in anywhere
    st.tuples(
        st.lists(_statement(), max_size=4).map("".join), st.text(max_size=40), st.integers()
    ).map(lambda t: t[0][: t[2] % (len(t[0]) + 1)] + t[1] + t[0][t[2] % (len(t[0]) + 1) :]),
    st.text(alphabet="abc$;{}()\"'\\# \n\t~*!=^", max_size=80),
)


@contextlib.contextmanager
def sealed() -> Iterator[list[str]]:
    """Files, processes, sockets and eval made to fail loudly while a snippet is
    read: reading one must need none of them."""
    touched: list[str] = []

    def forbid(what: str) -> Callable[..., object]:
        def call(*args: object, **kwargs: object) -> object:
            touched.append(what)
            raise AssertionError(f"the snippet reader called {what}")

        return call

    targets = [
        (builtins, "open"),
        (os, "open"),
        (os, "system"),
        (subprocess, "Popen"),
        (socket, "socket"),
        (socket, "getaddrinfo"),
        (builtins, "eval"),
        (builtins, "exec"),
        (importlib, "import_module"),
    ]
    saved = [(obj, name, getattr(obj, name)) for obj, name in targets]
    try:
        for obj, name in targets:
            setattr(obj, name, forbid(f"{obj.__name__}.{name}"))
        yield touched
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


@settings(max_examples=400, deadline=None)
@given(text=_SNIPPETS, where=st.sampled_from(["configuration-snippet", "server-snippet"]))
def test_any_text_is_read_or_refused_and_nothing_else(text: str, where: str) -> None:
    with sealed() as touched:
        with contextlib.suppress(ConfError):
            parse(text)
        result = translate(text, where)  # type: ignore[arg-type]
    assert not touched
    # Translated, or refused with a reason; never both, never an exception.
    assert (result.policy is None) == bool(result.refusal)


_TRANSLATED = {
    "more_set_headers",
    "more_clear_headers",
    "add_header",
    "proxy_set_header",
    "proxy_hide_header",
    "return",
    "rewrite",
    "if",
}


def _names(statements: tuple[nginx_conf.Statement, ...]) -> Iterator[str]:
    for s in statements:
        yield s.name
        if s.block is not None:
            yield from _names(s.block)


@settings(max_examples=300, deadline=None)
@given(_SNIPPETS)
def test_a_translated_snippet_holds_only_translated_directives(text: str) -> None:
    result = translate(text, "configuration-snippet")
    if result.policy is None:
        return
    names = set(_names(parse(text)))
    assert names <= _TRANSLATED
    assert names  # an empty snippet is refused


def test_the_seal_catches_what_it_forbids() -> None:
    with sealed() as touched:
        with pytest.raises(AssertionError):
            open("/etc/hostname")  # noqa: SIM115
        with pytest.raises(AssertionError):
            socket.socket()
    assert touched == ["builtins.open", "socket.socket"]


# -- translated snippets, carried out on any request ---------------------------------------

_NAME = st.from_regex(r"\AX-[A-Za-z0-9]{1,8}\Z")
_VALUE = st.lists(
    st.one_of(
        st.sampled_from(
            ["${host}", "${uri}", "${request_uri}", "${http_x_in}", "${args}", "${req_id}"]
        ),
        st.text(alphabet="abc 012/-", min_size=1, max_size=6),
    ),
    min_size=1,
    max_size=4,
).map("".join)


@st.composite
def _valid_statement(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 7))
    name, value = draw(_NAME), draw(_VALUE)
    if kind == 0:
        return f'more_set_headers "{name}: {value}";'
    if kind == 1:
        return f"more_clear_headers {name} {name}-*;"
    if kind == 2:
        return f'add_header {name} "{value}"{draw(st.sampled_from(["", " always"]))};'
    if kind == 3:
        return f'proxy_set_header {name} "{value}";'
    if kind == 4:
        return f"proxy_hide_header {name};"
    if kind == 5:
        return f"rewrite ^/r(.*)$ /new$1{draw(st.sampled_from(['', '?']))} permanent;"
    if kind == 6:
        return 'if ($http_x_in ~* "^(a|b)") { return 302 /to/$1$is_args$args; }'
    return 'if ($request_uri = "/x") { return 418 "short and stout"; }'


_REQUEST_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=20)


@settings(max_examples=300, deadline=None)
@given(
    text=st.lists(_valid_statement(), min_size=1, max_size=6).map("\n".join),
    path=_REQUEST_TEXT,
    header=_REQUEST_TEXT,
    status=st.sampled_from([200, 204, 301, 404, 500]),
)
def test_translated_snippets_never_write_a_control_character(
    text: str, path: str, header: str, status: int
) -> None:
    result = translate(text, "configuration-snippet")
    assert result.policy is not None, result.refusal
    values = RequestVars(
        "h.test",
        "h.test",
        "/" + path,
        "/" + path,  # as decoded: it may hold CR, LF, NUL
        "q=" + path,
        "http",
        "127.0.0.1",
        "GET",
        [(b"X-In", header.encode("latin-1"))],
        "id",
    )
    plan = snippet_plan(None, result.policy)
    written: list[tuple[bytes, bytes]] = []
    if plan is not None:
        written += upstream_headers(plan, values)
        written += edit_response(plan, status, [(b"X-Up", b"1")], values)
    found = answer(result.policy, values)
    if found is not None:
        _, _, location, headers = found
        written += headers
        if location is not None:
            written.append((b"Location", location.encode("latin-1")))
    for name, value in written:
        assert not any(b < 0x20 and b != 0x09 for b in value), (name, value)
