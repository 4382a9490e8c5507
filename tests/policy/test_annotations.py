"""Annotation parsing: both prefixes, typed values, refusals, and how build reports them."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from k8s_objects import build, ingress, path, rule, service

from ingressd.model.policy import DEFAULT_POLICY, RoutePolicy
from ingressd.policy.annotations import (
    AnnotationError,
    collect,
    expand_target,
    parse_bool,
    parse_policy,
    parse_rewrite_target,
)

NGINX = "nginx.ingress.kubernetes.io/"
OURS = "ingressd.io/"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("false", False), ("True", True), ("FALSE", False), (" true ", True)],
)
def test_parse_bool(value: str, expected: bool) -> None:
    assert parse_bool(value) is expected


@pytest.mark.parametrize("value", ["", "yes", "no", "on", "truee", "tru"])
def test_parse_bool_rejects(value: str) -> None:
    with pytest.raises(
        AnnotationError, match=re.escape(f'expected "true" or "false", got {value!r}')
    ):
        parse_bool(value)


@pytest.mark.parametrize("value", ["/", "/$1", "/api/$2", "/index.php?page=$1"])
def test_parse_rewrite_target(value: str) -> None:
    assert parse_rewrite_target(value) == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "is empty or contains whitespace"),
        ("/a b", "is empty or contains whitespace"),
        ("/a\r\nX-Injected: 1", "is empty or contains whitespace"),
        ("/a\x00", "is empty or contains whitespace"),
        ("/a\tb", "is empty or contains whitespace"),
        ("new", "must start with /"),
        ("$1", "must start with /"),
    ],
)
def test_parse_rewrite_target_rejects(value: str, message: str) -> None:
    with pytest.raises(AnnotationError, match=re.escape(message)):
        parse_rewrite_target(value)


def test_collect_reads_both_prefixes_and_ignores_others() -> None:
    found = collect(
        {
            NGINX + "rewrite-target": "/a",
            OURS + "use-regex": "true",
            "kubernetes.io/ingress.class": "ingressd",
            "example.com/rewrite-target": "/b",
            "nginx.ingress.kubernetes.io": "x",
        }
    )
    assert found == {
        "rewrite-target": (NGINX + "rewrite-target", "/a"),
        "use-regex": (OURS + "use-regex", "true"),
    }


@pytest.mark.parametrize(
    "annotations",
    [
        {NGINX + "rewrite-target": "/nginx", OURS + "rewrite-target": "/ours"},
        {OURS + "rewrite-target": "/ours", NGINX + "rewrite-target": "/nginx"},
    ],
)
def test_ingressd_prefix_wins_whatever_the_order(annotations: dict[str, str]) -> None:
    assert collect(annotations)["rewrite-target"] == (OURS + "rewrite-target", "/ours")
    policy, messages = parse_policy(annotations)
    assert messages == []
    assert policy.rewrite_target == "/ours"


def test_collect_none() -> None:
    assert collect(None) == {}
    assert parse_policy(None) == (DEFAULT_POLICY, [])


# (annotations, expected policy)
POLICY_CASES = [
    ({}, RoutePolicy()),
    ({NGINX + "rewrite-target": "/$2"}, RoutePolicy(rewrite_target="/$2")),
    ({OURS + "use-regex": "true"}, RoutePolicy(use_regex=True)),
    ({NGINX + "use-regex": "false"}, RoutePolicy(use_regex=False)),
    ({NGINX + "ssl-redirect": "false"}, RoutePolicy(ssl_redirect=False)),
    ({NGINX + "force-ssl-redirect": "true"}, RoutePolicy(force_ssl_redirect=True)),
    (
        {NGINX + "ssl-redirect": "true", OURS + "ssl-redirect": "false"},
        RoutePolicy(ssl_redirect=False),
    ),
    (
        {NGINX + "ssl-redirect": "false", OURS + "ssl-redirect": "true"},
        RoutePolicy(ssl_redirect=True),
    ),
]


@pytest.mark.parametrize(("annotations", "policy"), POLICY_CASES)
def test_parse_policy(annotations: dict[str, str], policy: RoutePolicy) -> None:
    assert parse_policy(annotations) == (policy, [])


@pytest.mark.parametrize(
    ("policy", "regex_paths"),
    [
        (RoutePolicy(), False),
        (RoutePolicy(use_regex=True), True),
        (RoutePolicy(use_regex=False), False),
        (RoutePolicy(rewrite_target="/"), True),
        (RoutePolicy(rewrite_target="/", use_regex=True), True),
        (RoutePolicy(rewrite_target="/", use_regex=False), False),
    ],
)
def test_regex_paths(policy: RoutePolicy, regex_paths: bool) -> None:
    assert policy.regex_paths is regex_paths


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        (
            {NGINX + "ssl-redirect": "yes"},
            f"annotation {NGINX}ssl-redirect='yes' is invalid: "
            'expected "true" or "false", got \'yes\'',
        ),
        (
            {OURS + "use-regex": "maybe"},
            f"annotation {OURS}use-regex='maybe' is invalid: "
            'expected "true" or "false", got \'maybe\'',
        ),
        (
            {NGINX + "rewrite-target": "relative"},
            f"annotation {NGINX}rewrite-target='relative' is invalid: "
            "rewrite target 'relative' must start with /",
        ),
        (
            {NGINX + "configuration-snippet": "proxy_pass http://x;"},
            f"annotation {NGINX}configuration-snippet is refused: "
            "directive 'proxy_pass' (line 1) is not translated; it is not applied",
        ),
        (
            {OURS + "server-snippet": "x"},
            f"annotation {OURS}server-snippet is refused: it is not nginx configuration "
            "ingressd can read: unexpected end of text after 'x' in line 1; it is not applied",
        ),
        (
            {NGINX + "ssl-passthrough": "true"},
            f"annotation {NGINX}ssl-passthrough is not supported by ingressd and is ignored",
        ),
    ],
)
def test_parse_policy_rejections(annotations: dict[str, str], message: str) -> None:
    policy, messages = parse_policy(annotations)
    # A refused server-snippet still takes its host's one place (an empty one).
    assert replace(policy, server_snippet=None) == DEFAULT_POLICY
    assert messages == [message]


def test_invalid_value_keeps_the_other_annotations() -> None:
    policy, messages = parse_policy(
        {NGINX + "ssl-redirect": "nope", NGINX + "rewrite-target": "/x", NGINX + "cors": "1"}
    )
    assert policy == RoutePolicy(rewrite_target="/x")
    assert len(messages) == 2


def test_invalid_ingressd_value_does_not_fall_back_to_nginx_value() -> None:
    policy, messages = parse_policy({NGINX + "ssl-redirect": "false", OURS + "ssl-redirect": "x"})
    assert policy.ssl_redirect is True
    assert messages == [
        f"annotation {OURS}ssl-redirect='x' is invalid: expected \"true\" or \"false\", got 'x'"
    ]


@pytest.mark.parametrize(
    ("annotations", "fragment"),
    [
        ({NGINX + "ssl-redirect": "yes"}, f"{NGINX}ssl-redirect='yes' is invalid"),
        (
            {NGINX + "configuration-snippet": 'more_set_headers "X-Deny: all"; gzip on;'},
            "configuration-snippet is refused",
        ),
        ({NGINX + "no-such-annotation": "x"}, f"{NGINX}no-such-annotation is not supported"),
    ],
)
def test_annotation_problems_reach_the_table(annotations: dict[str, str], fragment: str) -> None:
    table = build(
        ingress("web", [rule("a.test", path("/", "web"))], annotations=annotations),
        service("web"),
    )
    assert [p.obj for p in table.problems] == ["Ingress default/web"]
    assert fragment in table.problems[0].reason
    # The Ingress still routes, with the annotation ignored.
    route = table.route_for("a.test", "/")
    assert route is not None
    assert route.policy == DEFAULT_POLICY


@pytest.mark.parametrize(
    ("pattern", "subject", "target", "expected"),
    [
        (r"^/something(/|$)(.*)", "/something/new", "/$2", "/new"),
        (r"^/something(/|$)(.*)", "/something", "/$2", "/"),
        (r"^/(a)(b)?", "/a", "/$1-$2", "/a-"),
        (r"^/(a)", "/a", "/$1/$5", "/a/"),
        (r"^/(a)", "/a/x", "/$0", "//a"),
        (r"^/(a)", "/a", "/plain", "/plain"),
        (r"^/(a)", "/a", "/$1$1", "/aa"),
    ],
)
def test_expand_target(pattern: str, subject: str, target: str, expected: str) -> None:
    m = re.match(pattern, subject)
    assert m is not None
    assert expand_target(target, m) == expected


@pytest.mark.parametrize(
    ("value", "disabled", "reported"),
    [("true", True, False), ("false", False, False), ("maybe", False, True)],
)
def test_disable_proxy_intercept_errors(value: str, disabled: bool, reported: bool) -> None:
    """disableproxyintercepterrors/main.go: a bool, false by default (an invalid
    value is reported here, and false applies)."""
    policy, messages = parse_policy({NGINX + "disable-proxy-intercept-errors": value})
    assert policy.disable_intercept_errors is disabled
    assert bool(messages) is reported
    assert parse_policy({})[0].disable_intercept_errors is False
