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
