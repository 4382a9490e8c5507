"""global-rate-limit: the sliding window in the shared limit table, and its annotations."""

from __future__ import annotations

from typing import Any

import pytest

from ingressd.model.policy import GlobalRateLimit, LimitConfig
from ingressd.policy.annotations import parse_policy
from ingressd.policy.configmap import read_configmap
from ingressd.policy.global_limit import GlobalLimits
from ingressd.policy.limits import (
    ADMITTED,
    REFUSED_RATE,
    WAYS,
    IngressLimiter,
    LimitRegistry,
    Slot,
    private_table,
)

N = "nginx.ingress.kubernetes.io/"


def test_the_sliding_window_of_lua_resty_global_throttle() -> None:
    table = private_table(64)
    bucket, tag = table.locate(table.hasher(7), "k")

    def at(ms: int) -> bool:
        verdict = table.window_admit(7, bucket, tag, ms, 10_000, 3)
        assert verdict in (ADMITTED, REFUSED_RATE)
        return verdict == ADMITTED

    assert [at(ms) for ms in (0, 1, 2, 3, 9_999)] == [True, True, True, False, False]
    # The next window starts with the last one's 3, weighted by what still overlaps.
    assert at(10_000) is False  # 3 * 10/10 + 0 >= 3
    assert [at(15_000), at(15_001), at(15_002)] == [True, True, False]  # 1.5 + n < 3
    assert at(25_000) is True  # the window before had 2: 2 * 0.5 + 0 < 3
    # Two quiet windows later nothing is left of the past.
    assert [at(50_000 + i) for i in range(4)] == [True, True, True, False]


def test_keys_and_zones_count_apart() -> None:
    limits = GlobalLimits()
    registry = LimitRegistry(private_table(256))
    config = GlobalRateLimit(2, 60, ("", "remote_addr", ""), "$remote_addr")

    def admit(ingress: str, key: str, cfg: GlobalRateLimit = config) -> bool:
        return limits.admit(registry, ingress, cfg, key, "192.0.2.1", 100.0)

    assert [admit("ns/a", "k1") for _ in range(3)] == [True, True, False]
    assert admit("ns/a", "k2") and admit("ns/b", "k1")
    # Another process's limiter for the same Ingress and settings counts the same.
    assert not GlobalLimits().admit(registry, "ns/a", config, "k1", "192.0.2.1", 100.0)


def test_an_empty_key_counts_as_the_client_address() -> None:
    """global_throttle.lua: a key that renders empty falls back to $remote_addr, so
    leaving out the header the key is made of does not escape the limit."""
    limits = GlobalLimits()
    registry = LimitRegistry(private_table(256))
    config = GlobalRateLimit(2, 60, ("", "http_x_api_key", ""), "$http_x_api_key")

    def admit(key: str, client: str) -> bool:
        return limits.admit(registry, "ns/a", config, key, client, 100.0)

    assert [admit("", "192.0.2.1") for _ in range(3)] == [True, True, False]
    assert not admit("192.0.2.1", "192.0.2.9")  # the same counter as the address's
    assert admit("", "192.0.2.2")  # another client: its own counter
    assert limits.admit(registry, "ns/a", config, "", "", 100.0)  # nothing to count by


def test_a_full_table_evicts_the_least_recently_seen_key_then_refuses() -> None:
    """Cycling keys must not lift the limit: a new key takes the least recently seen
    entry of its bucket; when every entry holds requests in flight the request is
    refused (nginx answers limit_req's status when it cannot allocate a node)."""
    table = private_table(WAYS)  # one bucket
    registry = LimitRegistry(table)
    limits = GlobalLimits()
    config = GlobalRateLimit(1, 60, ("", "remote_addr", ""), "$remote_addr")

    def admit(key: str) -> bool:
        return limits.admit(registry, "ns/a", config, key, key, 100.0)

    keys = [f"10.0.0.{i}" for i in range(WAYS + 1)]
    assert all(admit(k) for k in keys)  # the ninth evicted the first
    assert [admit(k) for k in keys[1:]] == [False] * WAYS  # the others are remembered
    assert admit(keys[0])  # forgotten: a fresh count

    # Another Ingress's limit-connections places fill the whole bucket.
    full = private_table(WAYS)
    conns = IngressLimiter("ns/b", LimitConfig(connections=1), full)
    slots = [conns.admit(f"10.0.1.{i}", 0.0) for i in range(WAYS)]
    assert all(isinstance(s, Slot) for s in slots)
    registry = LimitRegistry(full)
    refused = [
        limits.admit(registry, "ns/a", config, f"198.51.100.{i}", "x", 100.0) for i in range(3)
    ]
    assert refused == [False] * 3  # fresh keys, one after another: none gets through
    assert limits.table_full
    slots[0].release()  # type: ignore[union-attr]
    assert limits.admit(registry, "ns/a", config, "198.51.100.9", "x", 100.0)
    assert not limits.table_full


def test_ignored_cidrs_are_never_counted() -> None:
    limits = GlobalLimits()
    registry = LimitRegistry(private_table(64))
    config = GlobalRateLimit(1, 60, ("", "remote_addr", ""), "$remote_addr", parsed_cidrs())
    for _ in range(3):
        assert limits.admit(registry, "ns/a", config, "10.1.2.3", "10.1.2.3", 1.0)
    assert limits.admit(registry, "ns/a", config, "192.0.2.1", "192.0.2.1", 1.0)
    assert not limits.admit(registry, "ns/a", config, "192.0.2.1", "192.0.2.1", 1.0)


def parsed_cidrs() -> tuple[Any, ...]:
    import ipaddress

    return (ipaddress.ip_network("10.0.0.0/8"),)


def policy(**values: str) -> tuple[Any, list[str]]:
    return parse_policy({N + k.replace("_", "-"): v for k, v in values.items()})


@pytest.mark.parametrize(
    ("window", "seconds"),
    [("1m", 60), ("90s", 90), ("1h30m", 5400), ("1.5h", 5400), ("1500ms", 1), (" 10s ", 10)],
)
def test_the_window_is_a_go_duration(window: str, seconds: int) -> None:
    p, messages = policy(global_rate_limit="10", global_rate_limit_window=window)
    assert messages == [] and p.global_limit.window == seconds
    assert p.global_limit.key == ("", "remote_addr", "")  # the default key


@pytest.mark.parametrize("window", ["1", "1 m", "m", "500ms", "-1m", "1d", "x" * 100])
def test_an_invalid_window_denies_as_ingress_nginx(window: str) -> None:
    # globalratelimit/main.go: LocationDenied, the location answers 503.
    p, messages = policy(global_rate_limit="10", global_rate_limit_window=window)
    assert p.fail_closed == (503, "invalid global-rate-limit-window annotation")
    assert p.global_limit is None and any("503" in m for m in messages)


@pytest.mark.parametrize(
    ("annotations", "expected", "message"),
    [
        ({"global_rate_limit": "5"}, None, "no effect without global-rate-limit-window"),
        ({"global_rate_limit": "0", "global_rate_limit_window": "1m"}, None, "no effect"),
        ({"global_rate_limit_window": "1m"}, None, "no effect without global-rate-limit"),
        (
            {
                "global_rate_limit": "5",
                "global_rate_limit_window": "1m",
                "global_rate_limit_key": "${remote_addr}-$http_x_api_key",
                "global_rate_limit_ignored_cidrs": "10.0.0.0/8, 192.0.2.1",
            },
            (5, 60, ("", "remote_addr", "-", "http_x_api_key", ""), 2),
            None,
        ),
    ],
)
def test_global_rate_limit_annotations(
    annotations: dict[str, str], expected: tuple[Any, ...] | None, message: str | None
) -> None:
    p, messages = policy(**annotations)
    g = p.global_limit
    if expected is None:
        assert g is None
    else:
        assert (g.limit, g.window, g.key, len(g.ignored)) == expected
        assert g.key_text == "$remote_addr-$http_x_api_key"
    if message is None:
        assert messages == []
    else:
        assert any(message in m for m in messages)


@pytest.mark.parametrize(
    "annotations",
    [
        {"global_rate_limit": "lots"},
        {"global_rate_limit": "-1"},
        {"global_rate_limit_key": "$nosuchvar"},
        {"global_rate_limit_ignored_cidrs": "nonsense"},
    ],
)
def test_invalid_values_are_reported(annotations: dict[str, str]) -> None:
    values = {"global_rate_limit": "5", "global_rate_limit_window": "1m", **annotations}
    _, messages = policy(**values)
    assert any("is invalid" in m for m in messages)


def test_the_status_code_key() -> None:
    assert dict(read_configmap({}).config.proxy).get("global_limit_status") is None
    reading = read_configmap({"global-rate-limit-status-code": "503"})
    assert dict(reading.config.proxy)["global_limit_status"] == 503
    memcached = read_configmap({"global-rate-limit-memcached-host": "memcached"})
    assert memcached.verdicts[0].status == "unsupported"
    assert "per pod" in memcached.verdicts[0].reason
