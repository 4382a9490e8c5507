"""objects.compact: the strings of stored objects are held once, whoever made them."""

from __future__ import annotations

import json

from ingressd.model.objects import SHARE_DEPTH, SHARE_MAX, compact


def test_compact_is_an_equal_copy_with_shared_strings() -> None:
    text = '{"metadata": {"name": "web", "labels": {"app": "web"}}, "spec": {"ports": [80, "x"]}}'
    a, b = json.loads(text), json.loads(text)
    # json.loads makes new strings per document: the two do not share them.
    assert a["metadata"]["name"] is not b["metadata"]["name"]
    ca, cb = compact(a), compact(b)
    assert ca == a and cb == b
    assert ca is not a and ca["metadata"] is not a["metadata"]  # dicts and lists are copied
    assert ca["spec"]["ports"] is not a["spec"]["ports"]
    (ka,) = [k for k in ca if k == "metadata"]
    (kb,) = [k for k in cb if k == "metadata"]
    assert ka is kb
    assert ca["metadata"]["name"] is cb["metadata"]["name"]
    assert ca["spec"]["ports"][1] is cb["spec"]["ports"][1]


def test_compact_leaves_long_strings_and_other_values_alone() -> None:
    long = "x" * (SHARE_MAX + 1)
    value = {"data": long, "n": 12345, "ok": True, "none": None, 1: "int key"}
    out = compact(value)
    assert out == value
    assert out["data"] is long


def test_compact_is_bounded_in_depth() -> None:
    deep: dict = {}
    inner = deep
    for _ in range(10_000):  # far deeper than the recursion limit
        inner["a"] = {}
        inner = inner["a"]
    out = compact(deep)
    node = out
    for _ in range(SHARE_DEPTH):
        node = node["a"]
    # Below the bound the value is the original, not copied.
    walk = deep
    for _ in range(SHARE_DEPTH):
        walk = walk["a"]
    assert node is walk
