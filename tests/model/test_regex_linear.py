"""Every regular expression an Ingress or annotation supplies runs in linear time (RE2).

The pathological cases run in a subprocess under a generous deadline: a
backtracking engine needs about 2^100 steps for them and would never finish,
RE2 needs microseconds, and the subprocess is killed either way, so no timing
is asserted and a regression cannot hang the test run.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from k8s_objects import build, endpoint_slice, ingress, path, request, rule, service

from ingressd.model.regex import RegexError, user_regex
from ingressd.policy import annotations as annotations_module
from ingressd.policy import cors as cors_module
from ingressd.policy.annotations import classify, expand_target, parse_policy
from ingressd.routing import build as build_module
from ingressd.routing.decide import Forward, Respond, decide

NGINX = "nginx.ingress.kubernetes.io/"
HOST = "example.com"
TESTS = Path(__file__).resolve().parents[1]  # the shared helpers
DEADLINE = 60  # seconds; RE2 needs well under one (most of it is the interpreter starting)
EVIL = "/(a+)+$"  # exponential on a backtracking engine when the subject ends in a non-'a'


def run_bounded(code: str) -> str:
    """Run ``code`` in a fresh interpreter (this checkout's ingressd); its stdout."""
    prelude = f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n"
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_pathological_use_regex_path_is_linear() -> None:
    out = run_bounded(
        f"""
        from k8s_objects import build, endpoint_slice, ingress, path, request, rule, service
        from ingressd.routing.decide import decide
        table = build(
            ingress(
                "evil",
                [rule("{HOST}", path({EVIL!r}, "web", path_type="ImplementationSpecific"),
                      path("/other", "web"))],
                annotations={{"{NGINX}use-regex": "true"}},
            ),
            service("web"), endpoint_slice("web", ["10.0.0.1"]),
        )
        assert table.problems == (), table.problems
        for n in (24, 100, 1000):
            action = decide(table, request("{HOST}", "/" + "a" * n + "!"))
            print(n, action.status)
        print(decide(table, request("{HOST}", "/" + "a" * 100)).__class__.__name__)
        """
    )
    assert out.splitlines() == ["24 404", "100 404", "1000 404", "Forward"]


def test_pathological_canary_header_pattern_is_linear() -> None:
    out = run_bounded(
        f"""
        from k8s_objects import build, endpoint_slice, ingress, path, rule, service
        from ingressd.routing.decide import RequestHead, decide
        canary = {{"{NGINX}canary": "true", "{NGINX}canary-by-header": "X-Canary",
                  "{NGINX}canary-by-header-pattern": {EVIL[1:]!r}}}
        table = build(
            ingress("main", [rule("{HOST}", path("/", "main"))], created=1),
            ingress("main-canary", [rule("{HOST}", path("/", "canary"))], annotations=canary,
                    created=2),
            service("main"), endpoint_slice("main", ["10.0.0.1"]),
            service("canary"), endpoint_slice("canary", ["10.0.0.2"]),
        )
        assert table.problems == (), table.problems
        for value in (b"a" * 100 + b"!", b"a" * 100):
            head = RequestHead("GET", "{HOST}", "/", "", "192.0.2.1", False,
                               headers=[(b"X-Canary", value)])
            print(decide(table, head).backend.name)
        """
    )
    assert out.splitlines() == ["default/main:80", "default/canary:80"]


def test_hostile_redirect_url_is_validated_in_linear_time() -> None:
    # ^https?://[^\s/?#]+[^\s]*$ on Python's re: quadratic (200,000 characters: minutes).
    out = run_bounded(
        f"""
        from ingressd.policy.annotations import parse_policy
        policy, messages = parse_policy(
            {{"{NGINX}permanent-redirect": "http://" + "a" * 200_000 + " x"}}
        )
        print(policy.redirect, len(messages), "is not an absolute http(s) URL" in messages[0])
        """
    )
    assert out == "None 1 True"


# -- what RE2 cannot run is reported, and only that path is left out ------------------------

UNSUPPORTED = [
    ("/(a)\\1", "a backreference"),
    ("/a(?=b)", "lookahead"),
    ("/a(?!b)", "negative lookahead"),
    ("/(?<=a)b", "lookbehind"),
    ("/a++", "a possessive quantifier"),
    ("/(?>a)b", "an atomic group"),
    ("/a{2000}", "a repetition count over 1000"),
]


@pytest.mark.parametrize(("pattern", "why"), UNSUPPORTED)
def test_unsupported_regex_path_is_reported_and_skipped(pattern: str, why: str) -> None:
    table = build(
        ingress(
            "rx",
            [rule(HOST, path("/ok", "web"), path(pattern, "web", path_type="Prefix"))],
            annotations={NGINX + "use-regex": "true"},
        ),
        service("web"),
        endpoint_slice("web", ["10.0.0.1"]),
    )
    [problem] = table.problems
    assert problem.obj == "Ingress default/rx"
    assert problem.reason.startswith(
        f"rules[0].http.paths[1].path {pattern!r} is not a regular expression RE2 can run ("
    )
    assert f"RE2 does not run {why}" in problem.reason
    assert problem.reason.endswith("; path skipped")
    assert isinstance(decide(table, request(HOST, "/ok/x")), Forward)


def test_unsupported_rewrite_path_of_the_docs_kind_is_reported() -> None:
    table = build(
        ingress(
            "rw",
            [rule(HOST, path("/api(?=/v1)(.*)", "web", path_type="ImplementationSpecific"))],
            annotations={NGINX + "rewrite-target": "/$1"},
        ),
        service("web"),
        endpoint_slice("web", ["10.0.0.1"]),
    )
    assert [p.reason.split(" (")[0] for p in table.problems] == [
        "rules[0].http.paths[0].path '/api(?=/v1)(.*)' is not a regular expression RE2 can run",
        "has no usable rules and no defaultBackend",
    ]
    assert isinstance(decide(table, request(HOST, "/api/v1")), Respond)


def test_unsupported_canary_header_pattern_is_an_invalid_annotation() -> None:
    annotations = {
        NGINX + "canary": "true",
        NGINX + "canary-by-header": "X-Canary",
        NGINX + "canary-by-header-pattern": "^(?!internal)",
    }
    [verdict] = [v for v in classify(annotations) if v.key.endswith("pattern")]
    assert verdict.status == "invalid"
    assert "not a regular expression RE2 can run" in verdict.reason
    assert "negative lookahead" in verdict.reason
    policy, _ = parse_policy(annotations)
    assert policy.canary is not None and policy.canary.header_pattern is None


def test_regex_error_carries_re2s_reason() -> None:
    with pytest.raises(RegexError, match="missing \\)"):
        user_regex("/(", ignore_case=True)
    with pytest.raises(RegexError, match="NUL"):
        user_regex("/a\0", ignore_case=True)


# -- our own validators run on RE2 too ------------------------------------------------------


@pytest.mark.parametrize("module", [annotations_module, cors_module, build_module])
def test_no_backtracking_validator_left(module: object) -> None:
    """Module-level patterns applied to outsider input are RE2's. _DOLLAR_REF runs per
    request on the Ingress's own rewrite target; "\\$(\\d)" is linear on any engine."""
    stdlib = {
        name
        for name, value in vars(module).items()
        if isinstance(value, re.Pattern) and name != "_DOLLAR_REF"
    }
    assert stdlib == set()


def test_realm_with_trailing_newline_is_invalid() -> None:
    # Python's "$" matched before a final newline: the realm reached WWW-Authenticate.
    policy, messages = parse_policy(
        {NGINX + "auth-type": "basic", NGINX + "auth-secret": "s", NGINX + "auth-realm": "x\n"}
    )
    assert any("auth-realm" in m and "is invalid" in m for m in messages)
    assert policy.fail_closed is not None


# -- RE2 routes what Python's re routed, for the patterns real Ingresses use -----------------

# Paths of use-regex / rewrite-target Ingresses in tests/data/realworld/manifests (the
# ingress-nginx docs' examples and public repositories), and their usual neighbours.
REAL_PATTERNS = [
    "/something(/|$)(.*)",  # docs/examples/rewrite (in24, in41)
    "/foo/.*",  # docs/user-guide/ingress-path-matching (in34, in50)
    "/foo/bar/(.+)",  # ingress-path-matching (in36, in52)
    "/foo/bar/bar",  # ingress-path-matching (in37, in53)
    "/foo/bar/[A-Z0-9]{3}",  # ingress-path-matching (in37, in53)
    "/?(.*)",  # nasirnjs tls-regex-rewrite (ex03, ex04)
    "/be/?(.*)",  # nasirnjs tls-regex-rewrite (ex03, ex04)
    "/",  # rewrite-target / (ex02)
    "/app",  # killercoda rewrite-prefix (ex05)
    "/api(/|$)(.*)",  # README and deploy/example
    "/blog(/|$)(.*)",  # examples/
    "/v[0-9]+/items",  # loadtests/routes.py
    "/(api|admin)/v\\d+/(.*)",
    "/static/.*\\.(css|js|png)$",
    "/users/([^/]+)/posts/(\\d+)",
    "/(?P<section>[a-z]+)/(?<item>\\w+)",
]
SUBJECTS = [
    "/",
    "/something",
    "/something/",
    "/something/new",
    "/SOMETHING/New/x",
    "/somethingelse",
    "/foo/bar/bar",
    "/foo/bar/ABC",
    "/foo/bar/abc",
    "/foo/bar/ab",
    "/foo/x",
    "/foo",
    "/be",
    "/be/x/y",
    "/app/anything",
    "/api",
    "/api/v1/users?x",
    "/apiv2",
    "/blog/posts/1",
    "/v12/items/7",
    "/v/items",
    "/admin/v3/a/b",
    "/static/site.CSS",
    "/static/x.jsx",
    "/users/ann/posts/42",
    "/users//posts/1",
    "/docs/page_1",
    "/caf\xc3\xa9/x",  # UTF-8 on the wire, as the proxy decodes it (latin-1)
]


def _python_re(pattern: str, subject: str) -> tuple[str | None, ...] | None:
    m = re.compile("^" + pattern.replace("(?<item>", "(?P<item>"), re.IGNORECASE).search(subject)
    return None if m is None else (m.group(0), *m.groups())


def _re2(pattern: str, subject: str) -> tuple[str | None, ...] | None:
    compiled = user_regex("^" + pattern, ignore_case=True)
    m = compiled.search(subject)
    if m is None:
        return None
    return tuple(m.group(i) for i in range(compiled.groups + 1))


@pytest.mark.parametrize("pattern", REAL_PATTERNS)
def test_re2_agrees_with_python_re_on_real_patterns(pattern: str) -> None:
    for subject in SUBJECTS:
        assert _re2(pattern, subject) == _python_re(pattern, subject), subject


@settings(max_examples=300, deadline=None)
@given(
    pattern=st.sampled_from(REAL_PATTERNS),
    subject=st.text(alphabet="/abefoprsvABCR019.-_", max_size=24).map(lambda s: "/" + s),
)
def test_re2_agrees_with_python_re_on_any_path(pattern: str, subject: str) -> None:
    assert _re2(pattern, subject) == _python_re(pattern, subject)


@pytest.mark.parametrize(
    ("pattern", "subject", "target", "expected"),
    [
        (r"^/something(/|$)(.*)", "/something/new", "/$2", "/new"),
        (r"^/something(/|$)(.*)", "/something", "/$2", "/"),
        (r"^/(a)(b)?", "/a", "/$1-$2", "/a-"),
        (r"^/(a)", "/a", "/$1/$5", "/a/"),
        (r"^/(a)", "/a/x", "/$0", "//a"),
        (r"^/(a)", "/a", "/$1$1", "/aa"),
    ],
)
def test_rewrite_target_expands_re2_groups(
    pattern: str, subject: str, target: str, expected: str
) -> None:
    m = user_regex(pattern, ignore_case=True).search(subject)
    assert m is not None
    assert expand_target(target, m) == expected


def test_rewrite_through_decide_uses_re2_groups() -> None:
    table = build(
        ingress(
            "rw",
            [rule(HOST, path("/something(/|$)(.*)", "web", path_type="ImplementationSpecific"))],
            annotations={NGINX + "use-regex": "true", NGINX + "rewrite-target": "/$2"},
        ),
        service("web"),
        endpoint_slice("web", ["10.0.0.1"]),
    )
    action = decide(table, request(HOST, "/Something/new/page", "q=1"))
    assert isinstance(action, Forward)
    assert action.target == "/new/page?q=1"


@settings(max_examples=500, deadline=None)
@given(
    pattern=st.one_of(
        st.sampled_from(REAL_PATTERNS),
        st.text(alphabet="/aAbB.?*+{}2[]-|", max_size=8),
    ),
    ignore_case=st.booleans(),
    subject=st.text(alphabet="/aAbBcé.?-", max_size=10).map(lambda s: "/" + s),
)
def test_shortcuts_agree_with_re2(pattern: str, ignore_case: bool, subject: str) -> None:
    """matches_bytes answers literal and prefixed patterns without RE2: the same answers."""
    try:
        compiled = user_regex("^" + pattern, ignore_case=ignore_case)
    except RegexError:
        return
    data = subject.encode("latin-1")
    assert compiled.matches_bytes(data) is (compiled.search(subject) is not None)
    assert compiled.matches(subject) is (compiled.search(subject) is not None)
