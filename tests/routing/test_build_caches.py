"""What builds no longer redo: certificates parsed once per content, annotations once per
build, affinity cookie values only for backends that use them."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from k8s_objects import build, endpoint_slice, ingress, path, rule, service, tls_secret

from ingressd.model.backend import Backend, Endpoint, affinity_value
from ingressd.policy import tls
from ingressd.policy.tls import (
    ALWAYS,
    TLSError,
    load_certificate,
    load_certificate_span,
    self_signed,
)

NOW = dt.datetime(2030, 6, 1, tzinfo=dt.UTC)
PEM = self_signed("a.test", ("a.test",), days=10, not_before=NOW - dt.timedelta(days=1))


def count_parses(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    parse = tls._parse_key_pair

    def counted(*args: Any) -> Any:
        calls.append(args)
        return parse(*args)

    monkeypatch.setattr(tls, "_parse_key_pair", counted)
    monkeypatch.setattr(tls, "_pairs", type(tls._pairs)())
    return calls


def test_a_certificate_is_parsed_once_per_content(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_parses(monkeypatch)
    now = NOW.timestamp()
    first = load_certificate(tls_secret("one", pem=PEM), now=now)
    second = load_certificate(tls_secret("two", namespace="ns", pem=PEM), now=now)
    assert len(calls) == 1
    assert (first.secret, second.secret) == ("default/one", "ns/two")
    assert first.dns_names == second.dns_names == ("a.test",)
    load_certificate(tls_secret("three", pem=self_signed("b.test", ("b.test",))))
    assert len(calls) == 2


def test_a_cached_failure_names_each_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_parses(monkeypatch)
    mismatched = (PEM[0], self_signed("b.test", ("b.test",))[1])
    for name in ("one", "two"):
        with pytest.raises(TLSError) as caught:
            load_certificate(tls_secret(name, pem=mismatched))
        assert str(caught.value) == (
            f"Secret default/{name}: tls.key does not match the certificate in tls.crt"
        )
        assert caught.value.span == ALWAYS
    assert len(calls) == 1


def test_the_span_an_answer_holds_for() -> None:
    secret = tls_secret("one", pem=PEM)
    start, end = (NOW - dt.timedelta(days=1)).timestamp(), (NOW + dt.timedelta(days=9)).timestamp()
    cert, span = load_certificate_span(secret, now=NOW.timestamp())
    assert span == (start, end) and cert.not_after == end
    assert load_certificate_span(secret, now=end)[1] == (start, end)  # the last valid second
    with pytest.raises(TLSError, match="expired") as expired:
        load_certificate_span(secret, now=end + 1)
    assert expired.value.span == (math.nextafter(end, math.inf), math.inf)
    with pytest.raises(TLSError, match="not valid before") as early:
        load_certificate_span(secret, now=start - 1)
    assert early.value.span == (-math.inf, math.nextafter(start, -math.inf))


def test_ingresses_with_the_same_annotations_share_one_policy() -> None:
    annotations = {"nginx.ingress.kubernetes.io/limit-rps": "x"}  # invalid: reported
    table = build(
        *(ingress(n, [rule(f"{n}.test", path("/", "s"))], annotations=annotations) for n in "ab"),
        service("s"),
    )
    a, b = (table.route_for(f"{n}.test", "/") for n in "ab")
    assert a is not None and b is not None and a.policy is b.policy
    # In ingress-nginx's order: same second (none here), "namespace/name" descending
    assert [p.obj for p in table.problems] == ["Ingress default/b", "Ingress default/a"]
    assert all("limit-rps" in p.reason for p in table.problems)


def test_affinity_values_are_made_on_first_use_and_stay_the_same() -> None:
    table = build(
        ingress("web", [rule("a.test", path("/", "s"))]),
        service("s"),
        endpoint_slice("s", ["10.0.0.1", "10.0.0.2"]),
    )
    route = table.route_for("a.test", "/")
    assert route is not None
    backend = route.backend
    assert backend._affinity is None  # no route with affinity asked yet
    values = backend.affinity_values
    assert values == {ep: affinity_value("default/s:80", ep) for ep in backend.endpoints}
    assert {backend.by_affinity[v]: v for v in values.values()} == dict(values)
    assert backend.affinity_values is values
    assert Backend("none").affinity_values == {} and Backend("none").by_affinity == {}
    assert Endpoint("10.0.0.1", 8080) in values
