"""pytest plugin: the routing tests, with every ``decide`` answered from a warm routing cache.

Loaded with ``-p routing_cache_shadow`` (``tests/`` on ``PYTHONPATH``) by
``tests/routing/test_routing_cache.py``. Every ``decide`` a test module calls
(its module-level name) first works out the request's routing on a copy of
the table with an empty cache (what decide computes without the cache), then
twice on the table itself, which stores it (the cache admits a key on its
second miss); it checks that the stored answer is that of the cold copy, the
very same route included, and then runs the test's ``decide``, which takes its
routing from the cache. The tests' own assertions then hold for cached
answers too. At the end it prints how many calls it answered that way.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import ingressd.routing.decide as routing_decide
from ingressd.model.table import RouteTable

_decide = routing_decide.decide
_counts = {"calls": 0, "cached": 0}


def _shadow_decide(table: RouteTable, head: Any, *args: Any, **kwargs: Any) -> Any:
    cold = routing_decide.routing(dataclasses.replace(table), head.host, head.path)
    routing_decide.routing(table, head.host, head.path)
    warm = routing_decide.routing(table, head.host, head.path)
    assert warm == cold, (head, warm, cold)
    assert warm[2] is cold[2], (head, warm[2], cold[2])  # the same Route object
    _counts["calls"] += 1
    if table.routing_cache.get((head.host, head.path)) is not None:
        _counts["cached"] += 1
    return _decide(table, head, *args, **kwargs)


def pytest_collection_finish(session: pytest.Session) -> None:
    for item in session.items:
        module = getattr(item, "module", None)
        if module is not None and getattr(module, "decide", None) is _decide:
            module.decide = _shadow_decide


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(
        f"routing cache shadow: {_counts['calls']} decide calls, "
        f"{_counts['cached']} answered from the cache"
    )
