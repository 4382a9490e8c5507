"""objects.compact: the strings of stored objects are held once, whoever made them."""

from __future__ import annotations

import json

import pytest

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


def test_shared_strings_are_freed_with_their_objects() -> None:
    """Names and resourceVersions change all the time: sharing must never keep
    the strings nobody uses any more (immortal interned strings would)."""
    import gc
    import tracemalloc

    from ingressd.model import objects

    gc.collect()
    tracemalloc.start()
    try:
        for i in range(100_000):
            objects.compact({"metadata": {"name": f"app-{i}", "resourceVersion": str(10**9 + i)}})
        gc.collect()
        # The strings made on the line above, if still held (the interning
        # table's own size, which never shrinks, is left out).
        held = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, __file__)])
    finally:
        tracemalloc.stop()
    size = sum(stat.size for stat in held.statistics("filename"))
    assert size < 200_000, f"{size} bytes of strings still held"


def test_the_fallback_table_shares_within_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    from ingressd.model import objects

    monkeypatch.setattr(objects, "SHARE_ENTRIES", 100)
    monkeypatch.setattr(objects, "_table", {})
    monkeypatch.setattr(objects, "share", objects.share_bounded)
    a, b = json.loads('{"key": "value"}'), json.loads('{"key": "value"}')
    assert objects.compact(a)["key"] is objects.compact(b)["key"]
    for i in range(1000):
        objects.share_bounded(f"s{i}")
        assert len(objects._table) <= 100


def test_interning_is_used_where_it_frees_its_strings() -> None:
    import sys

    from ingressd.model import objects

    assert objects.share is (sys.intern if objects.interning_frees() else objects.share_bounded)
    if sys.version_info[:2] == (3, 11) or sys.version_info >= (3, 13):
        assert objects.interning_frees()
