"""The built-in CA and token issuer: what a certificate, a CRL and a token say."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from verifier.admission.ca import (
    ATTESTATION_EXTENSION_OID,
    CertificateOrder,
    LocalCertificateAuthority,
    LocalTokenIssuer,
    attestation_extension,
    audience_refusal,
    new_serial,
    node_uri,
    openid_configuration,
    read_attestation_extension,
)
from verifier.jose import SigningKey, jwks_document, keys_of_jwks, verify_jws

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _ca() -> LocalCertificateAuthority:
    secrets: dict[str, bytes] = {}

    def secret(name: str, make: object) -> bytes:
        if name not in secrets:
            secrets[name] = make()  # type: ignore[operator]
        return secrets[name]

    first = LocalCertificateAuthority.shared(secret, "Test CA", NOW)
    again = LocalCertificateAuthority.shared(secret, "Test CA", NOW)
    assert first.chain == again.chain  # every replica gets the same CA
    return first


def _order(**changes: object) -> CertificateOrder:
    fields: dict[str, object] = {
        "serial": new_serial(),
        "node_id": "node-7.lab",
        "public_key": ec.generate_private_key(ec.SECP256R1()).public_key(),
        "not_before": NOW - timedelta(minutes=1),
        "not_after": NOW + timedelta(minutes=30),
        "ear_digest": hashlib.sha256(b"ear").digest(),
        "trust_status": "affirming",
        "crl_url": "https://verifier.example:8443/ca/crl",
    }
    fields.update(changes)
    return CertificateOrder(**fields)  # type: ignore[arg-type]


def test_certificate_says_what_the_order_says() -> None:
    ca = _ca()
    order = _order()
    certificate = x509.load_der_x509_certificate(ca.issue(order))
    ca_certificate = x509.load_der_x509_certificate(ca.chain[0])
    certificate.verify_directly_issued_by(ca_certificate)
    assert certificate.serial_number == order.serial
    assert certificate.not_valid_after_utc == order.not_after
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [node_uri("node-7.lab")]
    assert san.get_values_for_type(x509.DNSName) == []  # the node chose its id
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [x509.ExtendedKeyUsageOID.CLIENT_AUTH]  # never a server's
    assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    raw = certificate.extensions.get_extension_for_oid(ATTESTATION_EXTENSION_OID).value
    assert read_attestation_extension(raw.value) == (order.ear_digest, "affirming")
    points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert points[0].full_name[0].value == order.crl_url


def test_a_node_cannot_claim_a_host_name() -> None:
    """A node picks its own id at enrollment: one spelled like a host name must not get a
    certificate a TLS client would accept for that host (no DNS SAN, no serverAuth)."""
    der = _ca().issue(_order(node_id="login.bank.example"))
    certificate = x509.load_der_x509_certificate(der)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier("urn:lightgate:node:login.bank.example")]
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.ExtendedKeyUsageOID.SERVER_AUTH not in usages


def test_crl_lists_the_revoked_serials() -> None:
    ca = _ca()
    serials = [new_serial(), new_serial()]
    crl = x509.load_der_x509_crl(ca.crl([(s, NOW) for s in serials], NOW))
    assert crl.is_signature_valid(x509.load_der_x509_certificate(ca.chain[0]).public_key())  # type: ignore[arg-type]
    assert sorted(r.serial_number for r in crl) == sorted(serials)
    assert crl.next_update_utc is not None and crl.next_update_utc > NOW


@pytest.mark.parametrize(
    "broken", [b"", b"\x30", b"\x31\x00", b"\x30\x02\x04\x00", b"\x30\x05\x04\x01\x00\x04\x00"]
)
def test_malformed_attestation_extension_is_refused(broken: bytes) -> None:
    with pytest.raises(ValueError):
        read_attestation_extension(broken)
    assert read_attestation_extension(attestation_extension(b"\x01" * 32, "warning")) == (
        b"\x01" * 32,
        "warning",
    )


def test_tokens_are_at_jwt_signed_with_the_published_keys() -> None:
    key = SigningKey.generate()
    jwks = jwks_document([key.public_key])
    issuer = LocalTokenIssuer(lambda: "https://verifier.example", lambda: key, lambda: jwks)
    token = issuer.issue({"sub": "n1", "aud": "api", "exp": 1})
    verified = verify_jws(token, keys_of_jwks(issuer.jwks()), typ="at+jwt")
    assert json.loads(verified.payload) == {"aud": "api", "exp": 1, "sub": "n1"}
    discovery = openid_configuration(issuer.issuer)
    assert discovery["jwks_uri"] == "https://verifier.example/.well-known/jwks.json"
    assert discovery["issuer"] == "https://verifier.example"


# --- token audiences -----------------------------------------------------------------


@pytest.mark.parametrize(
    "audience", [["payments"], ["payments", "api.example"], ["api.example"] * 2]
)
def test_audiences_that_are_all_allowed_pass(audience: list[str]) -> None:
    assert audience_refusal(audience, ("payments", "api.example")) is None


@pytest.mark.parametrize(
    ("audience", "allowed", "needle"),
    [
        ([], ("payments",), "needs an audience"),
        ([""], ("payments", ""), "1-512 characters, not 0"),
        (["x" * 513], ("x" * 513,), "1-512 characters, not 513"),
        (["payments", "ledger"], ("payments",), "for audience ledger"),
        (["*"], ("payments",), "for audience *"),  # "*" is no wildcard
        (["payments"], ("*",), "for audience payments"),
        (["payments"], (), "admission.token_audiences lists none"),  # closed by default
        (["Payments"], ("payments",), "for audience Payments"),  # compared exactly
    ],
)
def test_audiences_refused(audience: list[str], allowed: tuple[str, ...], needle: str) -> None:
    reason = audience_refusal(audience, allowed)
    assert reason is not None
    assert needle in reason


def test_audience_refusal_names_a_few_unknown_audiences() -> None:
    reason = audience_refusal([f"aud-{n}" for n in range(6)], ("payments",))
    assert reason == "no token is issued for audience aud-0, aud-1, aud-2 and 3 more"
