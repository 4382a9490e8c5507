"""The admission webhook's certificates (kube/webhook_certs.py): made, judged, kept in a Secret.

Pure functions here; the leader's writes against the API test server are in
tests/e2e/test_e2e_admission.py and tests/e2e/test_e2e_cluster.py (RBAC).
"""

from __future__ import annotations

import base64
import datetime as dt
import ssl

import pytest
from cryptography import x509

from ingressd.kube.webhook_certs import (
    CA_CERT,
    CertBundle,
    ca_bundle,
    dns_names,
    from_secret,
    issue,
    renewal_reason,
    secret_data,
)

SERVICE, NAMESPACE = "ingressd-admission", "ingressd"
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
YEAR = dt.timedelta(days=365)


def test_a_new_bundle_is_good_and_names_the_service() -> None:
    bundle = issue(SERVICE, NAMESPACE, YEAR, NOW)
    assert renewal_reason(bundle, SERVICE, NAMESPACE, NOW) is None
    cert = x509.load_pem_x509_certificate(bundle.cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == list(dns_names(SERVICE, NAMESPACE))
    assert "ingressd-admission.ingressd.svc" in dns_names(SERVICE, NAMESPACE)
    ca = x509.load_pem_x509_certificate(bundle.ca_pem)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # Python's ssl accepts the CA as a trust anchor and the pair as a server identity.
    ssl.create_default_context(cadata=bundle.ca_pem.decode())


@pytest.mark.parametrize(
    ("age", "renew"),
    [(dt.timedelta(days=200), False), (dt.timedelta(days=250), True), (YEAR * 2, True)],
    ids=["two-thirds-left-less-a-bit", "under-a-third-left", "expired"],
)
def test_renewed_once_less_than_a_third_of_the_lifetime_is_left(
    age: dt.timedelta, renew: bool
) -> None:
    bundle = issue(SERVICE, NAMESPACE, YEAR, NOW - age)
    reason = renewal_reason(bundle, SERVICE, NAMESPACE, NOW)
    assert (reason is not None) is renew
    if renew:
        assert "rotated once less than a third of its lifetime is left" in reason  # type: ignore[operator]


def test_an_unusable_bundle_is_renewed_with_the_reason() -> None:
    good = issue(SERVICE, NAMESPACE, YEAR, NOW)
    other = issue(SERVICE, NAMESPACE, YEAR, NOW)
    cases = {
        "no certificate yet": None,
        "not signed by the CA": CertBundle(
            other.ca_pem, other.ca_key_pem, good.cert_pem, good.key_pem
        ),
        "a key does not match": CertBundle(
            good.ca_pem, good.ca_key_pem, good.cert_pem, other.key_pem
        ),
        "does not name ingressd-admission.other.svc": good,
        "unreadable": CertBundle(b"junk", good.ca_key_pem, good.cert_pem, good.key_pem),
    }
    for expected, bundle in cases.items():
        namespace = "other" if "other.svc" in expected else NAMESPACE
        reason = renewal_reason(bundle, SERVICE, namespace, NOW)
        assert reason is not None and expected in reason, (expected, reason)


def test_the_secret_round_trips_and_anything_else_is_no_bundle() -> None:
    bundle = issue(SERVICE, NAMESPACE, YEAR, NOW, previous_ca_pem=b"old")
    secret = {"data": secret_data(bundle)}
    assert from_secret(secret) == bundle
    assert from_secret(None) is None
    assert from_secret({"data": {CA_CERT: secret["data"][CA_CERT]}}) is None
    broken = dict(secret["data"], **{CA_CERT: "not base64!"})
    assert from_secret({"data": broken}) is None
    huge = dict(secret["data"], **{CA_CERT: base64.b64encode(b"x" * 100_000).decode()})
    assert from_secret({"data": huge}) is None


def test_the_ca_bundle_keeps_the_previous_ca_only_while_it_is_valid() -> None:
    old = issue(SERVICE, NAMESPACE, YEAR, NOW - dt.timedelta(days=300))
    new = issue(SERVICE, NAMESPACE, YEAR, NOW, previous_ca_pem=old.ca_pem)
    assert ca_bundle(new, NOW) == new.ca_pem + old.ca_pem
    assert ca_bundle(new, NOW + dt.timedelta(days=100)) == new.ca_pem  # the old one expired
    unreadable = CertBundle(new.ca_pem, new.ca_key_pem, new.cert_pem, new.key_pem, b"junk")
    assert ca_bundle(unreadable, NOW) == new.ca_pem
