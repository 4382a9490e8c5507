"""model/nginx_vars.py: the one reader of nginx variables (log-format-upstream,
upstream-hash-by, snippets)."""

from __future__ import annotations

import pytest

from ingressd.model.nginx_vars import VariableError, split_variables, variables


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("plain", ("plain",)),
        ("$host", ("", "host", "")),
        ("${host}-$request_uri!", ("", "host", "-", "request_uri", "!")),
        ("a$http_x_y b", ("a", "http_x_y", " b")),
        ("$a$b", ("", "a", "", "b", "")),
    ],
)
def test_variables_are_split_out(text: str, parts: tuple[str, ...]) -> None:
    assert split_variables(text) == parts
    assert split_variables(text, strict=False) == parts


@pytest.mark.parametrize("text", ["cost: $", "${host", "${}", "${bad-name}", "$-x"])
def test_strict_refuses_a_dollar_without_a_name(text: str) -> None:
    with pytest.raises(VariableError):
        split_variables(text)


def test_lenient_keeps_such_a_dollar_as_text() -> None:
    assert split_variables("5$ ${x", strict=False) == ("5$ ${x",)
    assert split_variables("$ $host", strict=False) == ("$ ", "host", "")


def test_variables_lists_the_names() -> None:
    assert variables(split_variables("$a-${b}c")) == ("a", "b")
