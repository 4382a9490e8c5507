"""proxy-redirect-from/-to and proxy-cookie-domain/-path: rewriting the upstream's
Location, Refresh and Set-Cookie as nginx's proxy_redirect, proxy_cookie_domain and
proxy_cookie_path do.

ingress-nginx writes them into every location (rootfs/etc/nginx/template/nginx.tmpl):
``proxy_redirect off|default`` when proxy-redirect-from is one of those, else
``proxy_redirect FROM TO`` when proxy-redirect-to is not ``off`` (else nothing);
``proxy_cookie_domain`` and ``proxy_cookie_path`` with the annotation's text as
written ("off", or "FROM TO"). Parsers: internal/ingress/annotations/proxy/main.go,
defaults "off" (the ConfigMap's keys of the same names).

What nginx does with a rule (ngx_http_proxy_module.c, the rewrite handlers):
- a literal FROM matches a value that starts with it (case-sensitive) and is
  replaced by TO, the rest kept; ``~``/``~*`` FROM is a regular expression
  (``~*`` ignoring case) and the whole value becomes TO, ``$1``…``$9`` from it;
- Location is rewritten whole, Refresh from after its ``url=``;
- proxy_cookie_domain compares the whole ``domain=`` attribute, ignoring case
  and a leading ``.`` (of the attribute and of FROM); proxy_cookie_path works on
  the ``path=`` attribute as proxy_redirect on a Location.

``default`` in ingress-nginx is nginx's replacement of the proxy_pass URL, which is
always ``http://upstream_balancer`` there: it matches only a Location naming that
internal upstream, which no upstream sends, so it rewrites nothing here either.
nginx variables in TO (``$host``…) are not expanded by ingressd: such a value is
invalid, rather than sent with a literal ``$host`` in it.
"""

from __future__ import annotations

from ..model.policy import ResponseRewrite, TextRewrite
from ..model.regex import RegexError, RegexMatch, fixed, user_regex

MAX_LENGTH = 2048
# Printable ASCII without blanks; "$" only as $1..$9 (checked separately).
_TEXT = fixed(r"^[!-~]+$")
_VARIABLE = fixed(r"\$([^1-9]|$)")
_DOLLAR_REF = fixed(r"\$([1-9])")


class RewriteError(ValueError):
    pass


def parse_redirect_word(value: str) -> str:
    """proxy-redirect-from / -to: ``off``, ``default`` or a URL prefix (or ``~regex``)."""
    v = value.strip()
    if v in ("off", "default"):
        return v
    _check_text(v)
    return v


def _check_text(v: str) -> None:
    if not v or len(v) > MAX_LENGTH or not _TEXT.match(v):
        raise RewriteError(f"{v[:100]!r} is empty, too long or holds blanks or control characters")
    if v.startswith("~"):
        return  # a regular expression: "$" is its anchor (RE2 checks it in _rule)
    if _VARIABLE.search(v):
        raise RewriteError(
            f"{v[:100]!r} holds an nginx variable; ingressd expands only $1…$9 of a ~ pattern"
        )


def _rule(pattern: str, replacement: str) -> TextRewrite:
    _check_text(replacement)
    if pattern.startswith("~"):
        ignore_case = pattern.startswith("~*")
        text = pattern[2:] if ignore_case else pattern[1:]
        if not text:
            raise RewriteError(f"{pattern!r} has an empty regular expression")
        try:
            regex = user_regex(text, ignore_case=ignore_case)
        except RegexError as exc:
            raise RewriteError(f"not a regular expression RE2 can run: {exc}") from None
        return TextRewrite(b"", replacement.encode("ascii"), regex)
    _check_text(pattern)
    if _DOLLAR_REF.search(replacement):
        raise RewriteError(f"{replacement!r}: $1…$9 need a ~ regular expression to take them from")
    return TextRewrite(pattern.encode("ascii"), replacement.encode("ascii"))


def redirect_rule(source: str, target: str) -> TextRewrite | None:
    """The proxy_redirect ingress-nginx's template writes for these two values."""
    if source in ("off", "default") or target == "off":
        return None
    return _rule(source, target)


def parse_cookie_rule(value: str) -> str:
    """proxy-cookie-domain / -path: ``off`` or ``FROM TO``; validated, kept as text."""
    v = " ".join(value.split())
    if v == "off":
        return v
    parts = v.split(" ")
    if len(parts) != 2:
        raise RewriteError(f"{value[:100]!r} is neither off nor two words, FROM and TO")
    _rule(parts[0].lstrip("."), parts[1])
    return v


def cookie_rule(value: str, domain: bool) -> TextRewrite | None:
    if value == "off":
        return None
    source, target = value.split(" ")
    if domain:
        # nginx drops a leading "." of the pattern and compares whole names.
        source = source.lstrip(".")
        if source.startswith("~"):
            return _rule(source, target)
        _check_text(source)
        _check_text(target)
        return TextRewrite(source.lower().encode("ascii"), target.encode("ascii"))
    return _rule(source, target)


def response_rewrite(
    redirect_from: str, redirect_to: str, cookie_domain: str, cookie_path: str
) -> tuple[ResponseRewrite | None, list[str]]:
    """The rules for a route, None when every one is off (the usual case: nothing
    is looked at per response), and what is wrong with the values taken together
    (each was validated alone): such a rule is left out."""
    errors: list[str] = []
    redirect = domain = path = None
    try:
        redirect = redirect_rule(redirect_from, redirect_to)
    except RewriteError as exc:
        errors.append(
            f"proxy-redirect-from {redirect_from!r} and proxy-redirect-to {redirect_to!r} "
            f"are invalid together: {exc}; the upstream's Location is not rewritten"
        )
    try:
        domain = cookie_rule(cookie_domain, True)
        path = cookie_rule(cookie_path, False)
    except RewriteError as exc:  # validated by parse_cookie_rule; belt and braces
        errors.append(f"proxy-cookie-*: {exc}")
    rewrite = ResponseRewrite(redirect, domain, path)
    if rewrite == ResponseRewrite():
        return None, errors
    return rewrite, errors


# -- per response --------------------------------------------------------------------------


def _expand(replacement: bytes, match: RegexMatch) -> bytes:
    if b"$" not in replacement:
        return replacement
    text = replacement.decode("ascii")

    def group(n: int) -> str:
        try:
            return match.group(n) or ""
        except IndexError:
            return ""

    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "$" and i + 1 < len(text) and "1" <= text[i + 1] <= "9":
            out.append(group(int(text[i + 1])))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out).encode("latin-1", "replace")


def rewrite_value(rule: TextRewrite, value: bytes) -> bytes | None:
    """``value`` rewritten by one proxy_redirect/proxy_cookie_path rule; None: no match."""
    if rule.regex is not None:
        match = rule.regex.search(value.decode("latin-1"))
        if match is None:
            return None
        return _expand(rule.replacement, match)
    if not value.startswith(rule.prefix):
        return None
    return rule.replacement + value[len(rule.prefix) :]


def _rewrite_domain(rule: TextRewrite, value: bytes) -> bytes | None:
    dot = b"." if value.startswith(b".") else b""
    name = value[len(dot) :]
    if rule.regex is not None:
        found = rewrite_value(rule, name)
        return None if found is None else dot + found
    if name.lower() != rule.prefix:
        return None
    return dot + rule.replacement


def _rewrite_cookie(rewrite: ResponseRewrite, value: bytes) -> bytes:
    parts = value.split(b";")
    changed = False
    for i in range(1, len(parts)):
        part = parts[i]
        attr = part.lstrip(b" \t")
        lead = part[: len(part) - len(attr)]
        low = attr[:7].lower()
        if rewrite.cookie_domain is not None and low == b"domain=":
            found = _rewrite_domain(rewrite.cookie_domain, attr[7:])
            if found is not None:
                parts[i] = lead + attr[:7] + found
                changed = True
        elif rewrite.cookie_path is not None and low[:5] == b"path=":
            found = rewrite_value(rewrite.cookie_path, attr[5:])
            if found is not None:
                parts[i] = lead + attr[:5] + found
                changed = True
    return b";".join(parts) if changed else value


def _rewrite_refresh(rule: TextRewrite, value: bytes) -> bytes:
    at = value.lower().find(b"url=")
    if at < 0:
        return value
    start = at + 4
    found = rewrite_value(rule, value[start:])
    return value if found is None else value[:start] + found


Headers = list[tuple[bytes, bytes]]


def apply(rewrite: ResponseRewrite, headers: Headers) -> Headers:
    """The upstream's response headers with the route's rules applied."""
    out = []
    redirect = rewrite.redirect
    cookies = rewrite.cookie_domain is not None or rewrite.cookie_path is not None
    for name, value in headers:
        low = name.lower()
        if redirect is not None and low == b"location":
            found = rewrite_value(redirect, value)
            if found is not None:
                value = found
        elif redirect is not None and low == b"refresh":
            value = _rewrite_refresh(redirect, value)
        elif cookies and low == b"set-cookie":
            value = _rewrite_cookie(rewrite, value)
        out.append((name, value))
    return out
