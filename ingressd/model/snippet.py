"""What a translated snippet does, as data, and how it is carried out per request.

``policy/snippets.py`` translates the nginx directives of a
``configuration-snippet`` or ``server-snippet`` into a ``SnippetPolicy``;
``routing/decide.py`` answers its ``return`` and ``rewrite ... redirect``
statements (``answer``) and the proxy applies its headers (``SnippetPlan``:
the request headers to the upstream, and the edits of the response).

Values are templates: literal text and the variables of model/variables.py
(and ``$1``…``$9`` after a regex), resolved per request from ``RequestVars``
by that module's one resolver. Nothing else is ever looked up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

from .regex import RegexMatch, UserRegex
from .variables import REQUEST_ID_VARIABLES, RequestVars, value
from .variables import VARIABLES as TABLE

# Template: literal, variable, literal, variable, ..., literal (odd length).
Parts = tuple[str, ...]
Headers = list[tuple[bytes, bytes]]

# The variables a snippet may use (model/variables.py; and $1..$9 after a regex).
# $req_id and $request_id name the request id, known only once the request is
# proxied: they are allowed in header values, not in return or rewrite.
VARIABLES: Final = frozenset(TABLE)


# Response edits, in the order nginx's header filters make them.
SET: Final = 0  # more_set_headers: replaces every header of the name
CLEAR: Final = 1  # more_clear_headers: removes them (a name ending in "*": a prefix)
ADD: Final = 2  # add_header: appends one

# add_header applies to these statuses only, unless "always"
# (ngx_http_headers_filter_module.c ngx_http_headers_filter).
ADD_HEADER_STATUSES: Final = frozenset({200, 201, 204, 206, 301, 302, 303, 304, 307, 308})


@dataclass(frozen=True, slots=True)
class HeaderEdit:
    kind: int  # SET, CLEAR or ADD
    name: bytes  # as written (a CLEAR prefix without its "*")
    lname: bytes  # lowercase, for matching
    value: Parts = ("",)  # SET and ADD; an empty value clears (SET) or adds nothing (ADD)
    prefix: bool = False  # CLEAR "X-Foo-*"
    statuses: frozenset[int] | None = None  # more_*_headers -s; None: every status
    always: bool = False  # add_header ... always

    def applies(self, status: int) -> bool:
        if self.kind == ADD:
            return self.always or status in ADD_HEADER_STATUSES
        return self.statuses is None or status in self.statuses

    def matches(self, lname: bytes) -> bool:
        return lname.startswith(self.lname) if self.prefix else lname == self.lname


@dataclass(frozen=True, slots=True)
class Condition:
    """An ``if`` condition: ``($var)`` (op ""), ``=``/``!=`` a value, or a regex."""

    variable: str
    op: str  # "", "=", "!=", "~", "~*", "!~", "!~*"
    operand: Parts = ("",)
    regex: UserRegex | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """``return`` or ``rewrite ... redirect|permanent``, maybe under an ``if``."""

    status: int
    text: Parts  # the Location when ``redirect``, else the body
    redirect: bool
    regex: UserRegex | None = None  # rewrite: searched in $uri; None: return
    args: bool = True  # rewrite: the request's arguments are appended
    condition: Condition | None = None


@dataclass(frozen=True, slots=True)
class SnippetPolicy:
    """A snippet's directives, translated, by what they act on."""

    answers: tuple[Answer, ...] = ()  # rewrite phase, in order: the first that applies answers
    upstream: tuple[tuple[bytes, Parts], ...] = ()  # proxy_set_header
    hide: frozenset[bytes] = frozenset()  # proxy_hide_header, lowercase
    more: tuple[HeaderEdit, ...] = ()  # more_set_headers, more_clear_headers, in order
    add: tuple[HeaderEdit, ...] = ()  # add_header


@dataclass(frozen=True, slots=True)
class SnippetPlan:
    """The headers a route's snippets set, server-snippet and configuration-snippet
    together, as nginx inherits them into ingress-nginx's location:

    - ``more_*_headers``: the server's first, then the location's (headers-more
      merges the parent's commands before the child's);
    - ``add_header`` and ``proxy_hide_header``: the location's, or the server's
      when the location has none (nginx inherits these arrays only whole);
    - ``proxy_set_header``: the location's only. ingress-nginx's location sets
      its own, so nginx never inherits the server's.
    """

    upstream: tuple[tuple[bytes, Parts], ...]
    hide: frozenset[bytes]
    more: tuple[HeaderEdit, ...]
    add: tuple[HeaderEdit, ...]
    # $req_id or $request_id appears in a value: the request needs its id even
    # when answered here, before any upstream was asked.
    request_id: bool = False


def _uses_request_id(parts: Parts) -> bool:
    return any(parts[i] in REQUEST_ID_VARIABLES for i in range(1, len(parts), 2))


def plan(
    server: SnippetPolicy | None,
    location: SnippetPolicy | None,
    http: SnippetPolicy | None = None,
    first: tuple[tuple[bytes, Parts], ...] = (),
) -> SnippetPlan | None:
    """What the two snippets do to a route's headers; None when nothing. ``http``:
    the entries of the controller ConfigMap's add-headers and proxy-set-headers maps
    whose values hold variables (policy/header_maps.py): nginx.tmpl's http-level
    more_set_headers, merged before the server's, and proxy_set_header lines that
    come before the configuration-snippet's in the location. ``first``: the
    location's own proxy_set_header lines with variables (x-forwarded-prefix),
    before all of those."""
    upstream = location.upstream if location is not None else ()
    if http is not None and http.upstream:
        upstream = http.upstream + upstream
    if first:
        upstream = first + upstream
    hide = location.hide if location is not None and location.hide else frozenset()
    if not hide and server is not None:
        hide = server.hide
    more = (server.more if server is not None else ()) + (
        location.more if location is not None else ()
    )
    if http is not None and http.more:
        more = http.more + more
    add = location.add if location is not None and location.add else ()
    if not add and server is not None:
        add = server.add
    if not (upstream or hide or more or add):
        return None
    request_id = any(_uses_request_id(e.value) for e in (*more, *add)) or any(
        _uses_request_id(parts) for _, parts in upstream
    )
    return SnippetPlan(upstream, hide, more, add, request_id)


def _get(values: RequestVars, name: str, match: RegexMatch | None) -> str:
    """A variable's value: ``$1``..``$9`` from ``match``, the others from model/variables.py."""
    if name.isdigit():
        if match is None:
            return ""
        try:
            return _escape(match.group(int(name)) or "")
        except IndexError:
            return ""
    return value(name, values)


# What a capture may not hold as it is in a URL: nginx escapes captures copied into
# a redirect; controls, spaces and non-ASCII never go into a Location raw.
_URL_UNSAFE: Final = frozenset([chr(c) for c in range(0x21)] + [chr(c) for c in range(0x7F, 0x100)])


def _escape(text: str) -> str:
    if not any(c in _URL_UNSAFE or c == '"' for c in text):
        return text
    return "".join(f"%{ord(c) & 0xFF:02X}" if c in _URL_UNSAFE or c == '"' else c for c in text)


def render(parts: Parts, values: RequestVars, match: RegexMatch | None = None) -> str:
    if len(parts) == 1:
        return parts[0]
    out = [parts[0]]
    for i in range(1, len(parts), 2):
        out.append(_get(values, parts[i], match))
        out.append(parts[i + 1])
    return "".join(out)


# All but tab. A one-byte class: linear on any engine.
_CONTROL: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def _header_value(parts: Parts, values: RequestVars) -> bytes:
    """A rendered header value; control characters (a decoded $uri may hold a CR)
    are escaped rather than let them split the message."""
    data = render(parts, values).encode("latin-1", "replace")
    if _CONTROL.search(data) is not None:
        data = _CONTROL.sub(lambda m: b"%%%02X" % m.group()[0], data)
    return data


def _test(cond: Condition, values: RequestVars) -> tuple[bool, RegexMatch | None]:
    subject = _get(values, cond.variable, None)
    op = cond.op
    if op == "":
        return subject != "" and subject != "0", None
    if op == "=" or op == "!=":
        equal = subject == render(cond.operand, values)
        return equal == (op == "="), None
    regex = cond.regex
    assert regex is not None
    found = regex.search(subject)
    if op.startswith("!"):
        return found is None, None
    return found is not None, found


def answer(
    snippet: SnippetPolicy, values: RequestVars
) -> tuple[int, str, str | None, tuple[tuple[bytes, bytes], ...]] | None:
    """(status, body, Location or None, headers) of the first of the snippet's
    answers that applies, in the snippet's order; None when none does."""
    for a in snippet.answers:
        match: RegexMatch | None = None
        if a.condition is not None:
            holds, match = _test(a.condition, values)
            if not holds:
                continue
        if a.regex is not None:
            match = a.regex.search(values.uri)
            if match is None:
                continue
        text = render(a.text, values, match)
        if not a.redirect:
            # ingress-nginx's default_type is text/html (nginx.tmpl)
            headers = ((b"Content-Type", b"text/html"),) if text else ()
            if not text and a.status >= 400:
                text = f"{a.status} {_phrase(a.status)}\n"
                headers = ()
            return a.status, text, None, headers
        if a.regex is not None and a.args and values.query:
            # rewrite: the request's arguments follow, after "&" when the
            # replacement has its own (a replacement ending in "?" has args False).
            text += ("&" if "?" in text else "?") + values.query
        if not text.startswith(("http://", "https://")):
            # nginx makes a relative Location absolute (absolute_redirect on):
            # scheme and host, and the port with use-port-in-redirects
            # (port_in_redirect, off by default in ingress-nginx).
            sep = "" if text.startswith("/") else "/"
            text = f"{values.scheme}://{values.host}{values.redirect_port}{sep}{text}"
        location = text.encode("latin-1", "replace").decode("latin-1")
        location = "".join(c if " " < c < "\x7f" else f"%{ord(c):02X}" for c in location)
        return a.status, f"{a.status} Redirect to {location}\n", location, ()
    return None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def upstream_headers(p: SnippetPlan, values: RequestVars) -> tuple[tuple[bytes, bytes], ...]:
    """proxy_set_header's headers for the upstream request; an empty value is sent
    as empty, which the proxy takes as "do not send" (nginx drops it too)."""
    return tuple((name, _header_value(parts, values)) for name, parts in p.upstream)


def hide(p: SnippetPlan, headers: Headers) -> Headers:
    """The upstream's response headers less those proxy_hide_header names."""
    if not p.hide:
        return headers
    return [(n, v) for n, v in headers if n.lower() not in p.hide]


def edit_response(p: SnippetPlan, status: int, headers: Headers, values: RequestVars) -> Headers:
    """more_set_headers / more_clear_headers, then add_header, as nginx runs its
    filters (headers-more's before the headers module's)."""
    out = headers
    for e in p.more:
        if not e.applies(status):
            continue
        out = [(n, v) for n, v in out if not e.matches(n.lower())]
        if e.kind == SET:
            value = _header_value(e.value, values)
            if value:
                out.append((e.name, value))
    for e in p.add:
        if e.applies(status):
            value = _header_value(e.value, values)
            if value:
                out.append((e.name, value))
    return out
